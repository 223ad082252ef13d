// Types of wv's Node binding.

/** The name of a wv status code (wv.h): WvError.code. */
export type StatusCode =
  | 'WV_OK'
  | 'WV_ERR_INVALID_ARGUMENT'
  | 'WV_ERR_IO'
  | 'WV_ERR_MODEL_FORMAT'
  | 'WV_ERR_UNSUPPORTED'
  | 'WV_ERR_OUT_OF_MEMORY'
  | 'WV_ERR_DEVICE'
  | 'WV_ERR_CONTEXT_FULL'
  | 'WV_ERR_CANCELLED'
  | 'WV_ERR_BUSY'
  | 'WV_ERR_INTERNAL'
  | 'WV_DONE'
  | 'WV_TIMEOUT'
  | 'WV_ERR_BUFFER_TOO_SMALL';

/** wv's status codes by name: Status.CANCELLED === 8 (WvError.status). */
export declare const Status: Readonly<{
  OK: 0; INVALID_ARGUMENT: 1; IO: 2; MODEL_FORMAT: 3; UNSUPPORTED: 4; OUT_OF_MEMORY: 5;
  DEVICE: 6; CONTEXT_FULL: 7; CANCELLED: 8; BUSY: 9; INTERNAL: 10; DONE: 11; TIMEOUT: 12;
  BUFFER_TOO_SMALL: 13;
}>;

/** A failed wv call. `message` includes wv_last_error()'s text. */
export declare class WvError extends Error {
  readonly name: 'WvError';
  /** The status's name, e.g. 'WV_ERR_CANCELLED'. */
  readonly code: StatusCode;
  /** The status's number (wv_status), e.g. 8. */
  readonly status: number;
  /** The wv function that failed, e.g. 'wv_load'. */
  readonly op?: string;
}

export interface LoadOptions {
  /** 'auto' (default: the GPU when usable, else the CPU), 'cpu', 'cuda' or 'cuda:N'. */
  device?: string;
  /** Aborts the load: it then rejects with WV_ERR_CANCELLED. */
  signal?: AbortSignal;
  /** Called with the fraction of the weights loaded (0 to 1). */
  onProgress?: (fraction: number) => void;
}

export interface ModelInfo {
  contextLength: number;
  vocabSize: number;
  layers: number;
  hiddenSize: number;
  heads: number;
  kvHeads: number;
  /** GPTQ bits per weight; 0 for a dense checkpoint. */
  quantBits: number;
  /** GPTQ group size; -1 for one group; 0 when dense. */
  quantGroupSize: number;
  quantActOrder: boolean;
  bosToken: number;
  eosToken: number;
  /** 'cpu' or 'cuda'. */
  device: string;
  deviceDescription: string;
  weightBytes: number;
  kvBytesPerToken: number;
}

export interface SessionOptions {
  /** Positions the KV cache holds; 0 or absent: the model's full context. */
  contextLength?: number;
  /** The chat system line; absent or null: Vicuna's; '': none. */
  systemPrompt?: string | null;
}

/** Generation settings; absent fields take the model card's defaults. */
export interface GenerateOptions {
  /** The most tokens to generate; 0 means no limit. Default 512. */
  maxTokens?: number;
  /** 0 is greedy decoding. Default 0.7. */
  temperature?: number;
  /** 0 disables. Default 40. */
  topK?: number;
  /** 0 or 1 disables. Default 0.95. */
  topP?: number;
  /** 0 or 1 disables. Default 1.1. */
  repetitionPenalty?: number;
  /** The sampler's seed; SEED_RANDOM (the default) seeds from the clock. */
  seed?: number | bigint;
  /** Stop strings: generation stops at one; it is never yielded, not even in part. */
  stop?: string | string[];
  /** Aborting cancels the generation: the loop throws a WvError with code 'WV_ERR_CANCELLED'. */
  signal?: AbortSignal;
}

/** A loaded model: immutable, shared by any number of sessions. */
export declare class Model {
  private constructor();
  readonly info: ModelInfo;
  readonly closed: boolean;
  /** A new session (conversation) on this model. */
  session(options?: SessionOptions): Session;
  tokenize(text: string, options?: { addSpecial?: boolean }): number[];
  detokenize(ids: ArrayLike<number>): string;
  tokenPiece(id: number): string;
  /** Frees the model; sessions made from it stay usable. Idempotent. */
  close(): void;
}

/** One conversation on a model. One generation at a time (another one throws WV_ERR_BUSY). */
export declare class Session {
  private constructor();
  /** Appends raw prompt text and generates, yielding the text of each token as it arrives. */
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  /** One user turn in the Vicuna v1.1 template; yields the assistant's reply. */
  chat(message: string, options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  /** Cancels the running generation, if any. */
  cancel(): void;
  reset(): void;
  truncate(n: number): void;
  readonly tokenCount: number;
  readonly contextLength: number;
  readonly closed: boolean;
  tokens(): number[];
  setTokens(ids: ArrayLike<number>): void;
  saveState(): Buffer;
  restoreState(state: Uint8Array | ArrayBuffer): void;
  saveFile(path: string): void;
  restoreFile(path: string): void;
  /** Frees the session, cancelling a running generation. Idempotent. */
  close(): void;
}

/** Loads a checkpoint folder on a worker thread. */
export declare function load(dir: string, options?: LoadOptions): Promise<Model>;
/** libwv's version, e.g. '0.1.0'. */
export declare function version(): string;
/** The ABI version of the libwv in use (major << 16 | minor). */
export declare function abiVersion(): number;
/** Where libwv was opened from. */
export declare function libraryPath(): string;
/** The ABI version this binding was written for (major << 16 | minor). */
export declare const HEADER_ABI_VERSION: number;
/** GenerateOptions.seed: seed from the clock. */
export declare const SEED_RANDOM: bigint;
