'use strict';
// wv for Node: a thin binding of wv's C API (wv.h) through koffi.
//
//   const { load } = require('wv');
//   const model = await load('models/kjv-tiny');
//   const session = model.session();
//   for await (const piece of session.chat('Who made the heaven?', { temperature: 0, signal }))
//     process.stdout.write(piece);
//
// Nothing blocks the event loop for long: the model loads on a worker thread, and generation
// runs on wv's own thread (the pull-style stream, wv_stream_*), whose tokens are taken with
// wv_stream_next called asynchronously (on koffi's worker threads) with a short timeout. No
// JavaScript is ever called from a foreign thread.

const path = require('node:path');
const { Worker } = require('node:worker_threads');
const native = require('./lib/native.js');

const { koffi, WvError, errorOf, OK, INVALID_ARGUMENT, CANCELLED, DONE, TIMEOUT } = native;

/** How long one asynchronous wv_stream_next waits for a token before it is called again. */
const POLL_MS = 50;

/** Frees handles that were never closed, when their owner is garbage collected (a safety net). */
const registry = new FinalizationRegistry(({ free, handle }) => {
  try {
    free.async(handle, () => {});
  } catch {}
});

/** Status codes of wv.h, by name. */
const Status = Object.freeze(Object.fromEntries(native.STATUS_CODES.map((code, i) => [code.replace(/^WV_(ERR_)?/, ''), i])));

function cancelledError(op, signal) {
  const reason = signal.reason;
  const why = reason instanceof Error ? reason.message : String(reason);
  return new WvError(CANCELLED, `${op}: cancelled: ${why}`, { op, cause: reason });
}

function checkString(op, what, s) {
  if (typeof s !== 'string') throw new WvError(INVALID_ARGUMENT, `${op}: invalid argument: ${what} must be a string`, { op });
  if (s.includes('\0')) throw new WvError(INVALID_ARGUMENT, `${op}: invalid argument: ${what} contains a NUL character`, { op });
  return s;
}

function checkCount(op, what, n) {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new WvError(INVALID_ARGUMENT, `${op}: invalid argument: ${what} must be an integer from 0 to 2^32-1`, { op });
  }
  return n;
}

/**
 * Loads the GPTQ (or dense) LLaMA checkpoint in the folder `dir` on a worker thread.
 * Options: `device` ('auto', 'cpu', 'cuda', 'cuda:N'), `signal` (an AbortSignal that aborts
 * the load), `onProgress(fraction)`. Rejects with a WvError: WV_ERR_IO for a missing folder,
 * WV_ERR_MODEL_FORMAT, WV_ERR_UNSUPPORTED (also for a libwv of another ABI), WV_ERR_DEVICE,
 * WV_ERR_CANCELLED, ...
 */
async function load(dir, options = {}) {
  const op = 'wv_load';
  const c = native.library();
  checkString(op, 'the model folder', dir);
  const device = checkString(op, 'the device', options.device ?? 'auto');
  const { signal, onProgress } = options;
  if (signal?.aborted) throw cancelledError(op, signal);
  const abort = new SharedArrayBuffer(4);
  const worker = new Worker(path.join(__dirname, 'lib', 'load-worker.js'), {
    workerData: { file: c.file, dir, device, abort, progress: typeof onProgress === 'function' },
  });
  const onAbort = () => Atomics.store(new Int32Array(abort), 0, 1);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await new Promise((resolve, reject) => {
      worker.on('message', (m) => {
        if (m.progress !== undefined) {
          try {
            onProgress(m.progress);
          } catch {}
        } else {
          resolve(m);
        }
      });
      worker.on('error', reject);
      worker.on('exit', (code) => reject(new Error(`the load worker exited (${code})`)));
    });
    if (result.status !== OK) {
      if (result.status === CANCELLED && signal?.aborted) throw cancelledError(op, signal);
      throw errorOf(result.status, op, result.message);
    }
    return new Model(c, result.handle);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    worker.terminate().catch(() => {});
  }
}

/** Shared by Model and Session: a handle, borrowed by calls, freed when closed and unused. */
class Handle {
  constructor(c, handle, what, free) {
    this.c = c;
    this.handle = handle;
    this.what = what;
    this.free = free;
    this.users = 0;
    this.closed = false;
  }
  acquire(op) {
    if (this.closed) {
      const e = new WvError(INVALID_ARGUMENT, `${op}: invalid argument: the ${this.what} is closed`, { op });
      e.closed = true;
      throw e;
    }
    this.users++;
    return this.handle;
  }
  release() {
    if (--this.users === 0 && this.closed) this.dispose();
  }
  /** Run fn(handle, library) with the handle held open for the call. */
  use(op, fn) {
    const h = this.acquire(op);
    try {
      return fn(h, this.c);
    } finally {
      this.release();
    }
  }
  dispose() {
    // Off the main thread: freeing a model or a session can release gigabytes.
    if (this.handle !== null) this.free.async(this.handle, () => {});
    this.handle = null;
  }
}

/** A loaded model: immutable, shared by any number of sessions. */
class Model {
  #h;
  constructor(c, handle) {
    this.#h = new Handle(c, handle, 'model', c.wv_model_free);
    registry.register(this, { free: c.wv_model_free, handle }, this.#h);
  }

  #call(op, fn) {
    return this.#h.use(op, fn);
  }

  /** What the model is (wv_model_info). */
  get info() {
    return this.#call('wv_model_get_info', (h, c) => {
      const info = { struct_size: koffi.sizeof(c.types.modelInfo) };
      c.check('wv_model_get_info', c.wv_model_get_info(h, info));
      return {
        contextLength: info.context_length,
        vocabSize: info.vocab_size,
        layers: info.n_layers,
        hiddenSize: info.hidden_size,
        heads: info.n_heads,
        kvHeads: info.n_kv_heads,
        quantBits: info.quant_bits,
        quantGroupSize: info.quant_group_size,
        quantActOrder: info.quant_act_order !== 0,
        bosToken: info.bos_token,
        eosToken: info.eos_token,
        device: info.device,
        deviceDescription: info.device_description,
        weightBytes: Number(info.weight_bytes),
        kvBytesPerToken: Number(info.kv_bytes_per_token),
      };
    });
  }

  /** A new session (conversation) on this model. */
  session(options = {}) {
    const op = 'wv_session_new';
    return this.#call(op, (h, c) => {
      const so = c.defaults(c.wv_session_options_init, c.types.sessionOptions);
      so.context_length = checkCount(op, 'contextLength', options.contextLength ?? 0);
      if (options.systemPrompt !== undefined && options.systemPrompt !== null) {
        so.system_prompt = checkString(op, 'systemPrompt', options.systemPrompt);
      }
      const out = [null];
      c.check(op, c.wv_session_new(h, so, out));
      return new Session(c, out[0]);
    });
  }

  /** Token ids of `text`; `addSpecial` (default true) adds BOS as the tokenizer config says. */
  tokenize(text, { addSpecial = true } = {}) {
    const op = 'wv_tokenize';
    checkString(op, 'the text', text);
    return this.#call(op, (h, c) => {
      const n = [0];
      c.check(op, c.wv_tokenize(h, text, addSpecial, null, 0, n));
      const ids = new Int32Array(n[0]);
      if (n[0] > 0) c.check(op, c.wv_tokenize(h, text, addSpecial, ids, ids.length, n));
      return Array.from(ids.subarray(0, n[0]));
    });
  }

  /** The text of token ids (special tokens skipped). */
  detokenize(ids) {
    const op = 'wv_detokenize';
    const arr = Int32Array.from(ids);
    return this.#call(op, (h, c) => {
      const n = [0];
      c.check(op, c.wv_detokenize(h, arr, arr.length, null, 0, n));
      const buf = Buffer.alloc(n[0]);
      c.check(op, c.wv_detokenize(h, arr, arr.length, buf, buf.length, n));
      return buf.toString('utf8', 0, n[0] - 1);
    });
  }

  /** The vocabulary string of one token id ('▁Hello', '<0x0A>', '</s>'). */
  tokenPiece(id) {
    const op = 'wv_token_to_piece';
    return this.#call(op, (h, c) => {
      const n = [0];
      c.check(op, c.wv_token_to_piece(h, id, null, 0, n));
      const buf = Buffer.alloc(n[0]);
      c.check(op, c.wv_token_to_piece(h, id, buf, buf.length, n));
      return buf.toString('utf8', 0, n[0] - 1);
    });
  }

  /** True once close() was called. */
  get closed() {
    return this.#h.closed;
  }

  /** Frees the model (off the main thread). Sessions made from it stay usable. Idempotent. */
  close() {
    if (this.#h.closed) return;
    this.#h.closed = true;
    registry.unregister(this.#h);
    if (this.#h.users === 0) this.#h.dispose();
  }
}

function generateOptions(c, op, options) {
  const o = c.defaults(c.wv_generate_options_init, c.types.generateOptions);
  if (options.maxTokens !== undefined) o.max_tokens = checkCount(op, 'maxTokens', options.maxTokens);
  if (options.temperature !== undefined) o.temperature = options.temperature;
  if (options.topK !== undefined) o.top_k = checkCount(op, 'topK', options.topK);
  if (options.topP !== undefined) o.top_p = options.topP;
  if (options.repetitionPenalty !== undefined) o.repetition_penalty = options.repetitionPenalty;
  if (options.seed !== undefined) o.seed = BigInt(options.seed);
  if (options.stop !== undefined) {
    const stop = Array.isArray(options.stop) ? options.stop : [options.stop];
    stop.forEach((s) => checkString(op, 'a stop string', s));
    o.stop = stop.length ? stop : null;
    o.n_stop = stop.length;
  }
  return o;
}

/** One conversation on a model: its tokens and KV cache. One generation at a time. */
class Session {
  #h;
  constructor(c, handle) {
    this.#h = new Handle(c, handle, 'session', c.wv_session_free);
    registry.register(this, { free: c.wv_session_free, handle }, this.#h);
  }

  #call(op, fn) {
    return this.#h.use(op, fn);
  }

  /**
   * Appends raw prompt text (BOS first in an empty session) and generates, yielding the text
   * of each token as it arrives (empty pieces are skipped). Options: maxTokens (512),
   * temperature (0.7; 0 is greedy), topK (40), topP (0.95), repetitionPenalty (1.1), seed (random),
   * stop (strings never yielded, not even in part), signal (an AbortSignal: aborting cancels the
   * generation through wv_session_cancel and the loop throws a WvError with code
   * 'WV_ERR_CANCELLED' whose cause is the signal's reason, yielding nothing after the abort).
   * Breaking out of the loop stops the
   * generation without an error. The tokens generated stay in the session either way.
   */
  generate(prompt, options = {}) {
    return this.#stream('wv_stream_begin', prompt, options);
  }

  /** One user turn in the Vicuna v1.1 template, yielding the assistant's reply as generate() does. */
  chat(message, options = {}) {
    return this.#stream('wv_stream_begin_chat', message, options);
  }

  async *#stream(op, text, options) {
    const { signal } = options;
    if (signal?.aborted) throw cancelledError(op, signal);
    checkString(op, 'the prompt', text);
    const h = this.#h.acquire(op);
    const c = this.#h.c;
    let stream = null;
    let ended = false;
    const onAbort = () => {
      if (!ended) c.wv_session_cancel(h);
    };
    try {
      const opts = generateOptions(c, op, options);
      const out = [null];
      c.check(op, c[op](h, text, opts, out));
      stream = out[0];
      signal?.addEventListener('abort', onAbort, { once: true });
      const token = [0];
      const ptr = [null];
      const len = [0];
      for (;;) {
        const status = await new Promise((resolve, reject) => {
          c.wv_stream_next.async(stream, POLL_MS, token, ptr, len, (err, st) => (err ? reject(err) : resolve(st)));
        });
        // Aborted: yield nothing more (finally cancels the stream and waits for it).
        if (signal?.aborted) throw cancelledError(op, signal);
        if (status === OK) {
          // Copied now: the text lives until the next wv_stream_next.
          if (len[0] > 0) yield koffi.decode.string(ptr[0], len[0]);
          continue;
        }
        if (status === TIMEOUT) continue;
        ended = true;
        if (status === DONE) return;
        // The end is sticky: asked again on this thread, wv_stream_next returns it at once and
        // sets this thread's wv_last_error.
        c.wv_stream_next(stream, 0, [0], [null], [0]);
        if (status === CANCELLED && signal?.aborted) throw cancelledError('wv_stream_next', signal);
        throw errorOf(status, 'wv_stream_next', c.wv_last_error());
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (stream !== null) {
        if (ended) {
          c.wv_stream_free(stream);
        } else {
          // Cancels the generation and waits for wv's thread: off the main thread.
          await new Promise((resolve) => c.wv_stream_free.async(stream, () => resolve()));
        }
      }
      this.#h.release();
    }
  }

  /** Cancels the generation running on this session, if any (it then throws WV_ERR_CANCELLED). */
  cancel() {
    if (!this.#h.closed) this.#h.c.wv_session_cancel(this.#h.handle);
  }

  /** Forgets the conversation. */
  reset() {
    this.#call('wv_session_reset', (h, c) => c.check('wv_session_reset', c.wv_session_reset(h)));
  }

  /** Keeps only the first `n` tokens of the conversation. */
  truncate(n) {
    const op = 'wv_session_truncate';
    if (!Number.isInteger(n) || n < 0) throw new WvError(INVALID_ARGUMENT, `${op}: invalid argument: n must be a non-negative integer`, { op });
    this.#call(op, (h, c) => c.check(op, c.wv_session_truncate(h, n)));
  }

  /** Tokens in the conversation (BOS, prompts and replies). */
  get tokenCount() {
    return this.#call('wv_session_token_count', (h, c) => {
      const n = [0];
      c.check('wv_session_token_count', c.wv_session_token_count(h, n));
      return Number(n[0]);
    });
  }

  /** The session's context length in tokens. */
  get contextLength() {
    return this.#call('wv_session_context_length', (h, c) => {
      const n = [0];
      c.check('wv_session_context_length', c.wv_session_context_length(h, n));
      return Number(n[0]);
    });
  }

  /** The conversation's token ids. */
  tokens() {
    const op = 'wv_session_get_tokens';
    return this.#call(op, (h, c) => {
      const n = [0];
      c.check(op, c.wv_session_get_tokens(h, null, 0, n));
      const ids = new Int32Array(n[0]);
      if (n[0] > 0) c.check(op, c.wv_session_get_tokens(h, ids, ids.length, n));
      return Array.from(ids.subarray(0, n[0]));
    });
  }

  /** Replaces the conversation with these token ids (BOS is not added). */
  setTokens(ids) {
    const op = 'wv_session_set_tokens';
    const arr = Int32Array.from(ids);
    this.#call(op, (h, c) => c.check(op, c.wv_session_set_tokens(h, arr, arr.length)));
  }

  /** The session's state (system prompt and tokens), for restoreState(). */
  saveState() {
    const op = 'wv_session_save_state';
    return this.#call(op, (h, c) => {
      const n = [0];
      c.check(op, c.wv_session_save_state(h, null, 0, n));
      const buf = Buffer.alloc(n[0]);
      c.check(op, c.wv_session_save_state(h, buf, buf.length, n));
      return buf.subarray(0, n[0]);
    });
  }

  /** Replaces the conversation with a state from saveState() or saveFile(). */
  restoreState(state) {
    const op = 'wv_session_restore_state';
    const buf = ArrayBuffer.isView(state)
      ? Buffer.from(state.buffer, state.byteOffset, state.byteLength)
      : Buffer.from(state);
    this.#call(op, (h, c) => c.check(op, c.wv_session_restore_state(h, buf, buf.length)));
  }

  /** Saves the session's state to a file (a quick synchronous write of a few kilobytes). */
  saveFile(file) {
    const op = 'wv_session_save_file';
    checkString(op, 'the path', file);
    this.#call(op, (h, c) => c.check(op, c.wv_session_save_file(h, file)));
  }

  /** Restores a state saved by saveFile(). */
  restoreFile(file) {
    const op = 'wv_session_restore_file';
    checkString(op, 'the path', file);
    this.#call(op, (h, c) => c.check(op, c.wv_session_restore_file(h, file)));
  }

  /** True once close() was called. */
  get closed() {
    return this.#h.closed;
  }

  /**
   * Frees the session (off the main thread). A generation still running on it is cancelled
   * (its loop throws WV_ERR_CANCELLED) and the memory goes when it has stopped. Idempotent.
   */
  close() {
    if (this.#h.closed) return;
    this.#h.closed = true;
    registry.unregister(this.#h);
    if (this.#h.users === 0) this.#h.dispose();
    else this.#h.c.wv_session_cancel(this.#h.handle);
  }
}

if (typeof Symbol.dispose === 'symbol') {
  Model.prototype[Symbol.dispose] = Model.prototype.close;
  Session.prototype[Symbol.dispose] = Session.prototype.close;
}

/** libwv's version ('0.1.0'). */
function version() {
  return native.library().wv_version();
}

/** The ABI version of the libwv in use (major << 16 | minor). */
function abiVersion() {
  return native.library().wv_abi_version();
}

/** The path libwv was opened from. */
function libraryPath() {
  return native.library().file;
}

module.exports = {
  load,
  Model,
  Session,
  WvError,
  Status,
  version,
  abiVersion,
  libraryPath,
  HEADER_ABI_VERSION: native.HEADER_ABI_VERSION,
  SEED_RANDOM: 0xffffffffffffffffn,
};
