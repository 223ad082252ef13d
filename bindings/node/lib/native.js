'use strict';
// The C API through koffi: finding libwv, checking its ABI, and the declarations of the
// functions and structs of wv.h (ABI 1.0) that the binding uses. Used by the main thread and by
// the load worker.

const fs = require('node:fs');
const path = require('node:path');
const koffi = require('koffi');

/** The ABI of the wv.h these declarations were written from (major << 16 | minor). */
const HEADER_ABI_MAJOR = 1;
const HEADER_ABI_MINOR = 0;
const HEADER_ABI_VERSION = (HEADER_ABI_MAJOR << 16) | HEADER_ABI_MINOR;

const STATUS_CODES = Object.freeze([
  'WV_OK', 'WV_ERR_INVALID_ARGUMENT', 'WV_ERR_IO', 'WV_ERR_MODEL_FORMAT', 'WV_ERR_UNSUPPORTED',
  'WV_ERR_OUT_OF_MEMORY', 'WV_ERR_DEVICE', 'WV_ERR_CONTEXT_FULL', 'WV_ERR_CANCELLED',
  'WV_ERR_BUSY', 'WV_ERR_INTERNAL', 'WV_DONE', 'WV_TIMEOUT', 'WV_ERR_BUFFER_TOO_SMALL',
]);
const STATUS_NAMES = Object.freeze([
  'ok', 'invalid argument', 'i/o error', 'model format error', 'unsupported', 'out of memory',
  'device error', 'context full', 'cancelled', 'busy', 'internal error', 'done', 'timeout',
  'buffer too small',
]);
const OK = 0, INVALID_ARGUMENT = 1, IO = 2, UNSUPPORTED = 4, CANCELLED = 8, DONE = 11, TIMEOUT = 12;

/** A failed wv call: `code` is the status's name ('WV_ERR_IO', ...), `status` its number. */
class WvError extends Error {
  constructor(status, message, options = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'WvError';
    this.status = status;
    this.code = STATUS_CODES[status] ?? `WV_STATUS_${status}`;
    if (options.op) this.op = options.op;
  }
}

function errorOf(status, op, message) {
  const name = STATUS_NAMES[status] ?? 'unknown status';
  return new WvError(status, `${op}: ${name}${message ? `: ${message}` : ''}`, { op });
}

const LIBRARY_NAME =
  process.platform === 'darwin' ? 'libwv.dylib' : process.platform === 'win32' ? 'wv.dll' : 'libwv.so';

/**
 * Where libwv is looked for, in order: WV_LIBRARY_PATH (the library file or its folder; nothing
 * else is tried when it is set), the repository's target/release when this package is used
 * from a checkout of wv, the dynamic linker's search (LD_LIBRARY_PATH, the ld.so cache,
 * /usr/lib), and /usr/local/lib.
 */
function candidates() {
  const env = process.env.WV_LIBRARY_PATH;
  if (env) {
    let p = env;
    try {
      if (fs.statSync(p).isDirectory()) p = path.join(p, LIBRARY_NAME);
    } catch {}
    return { paths: [p], explicit: true };
  }
  const paths = [];
  const dev = path.resolve(__dirname, '..', '..', '..', 'target', 'release', LIBRARY_NAME);
  if (fs.existsSync(dev)) paths.push(dev);
  paths.push(LIBRARY_NAME, path.join('/usr/local/lib', LIBRARY_NAME));
  return { paths, explicit: false };
}

function abiString(v) {
  return `${v >>> 16}.${v & 0xffff}`;
}

// Opens libwv at `file`, checks its ABI and declares its functions.
function open(file) {
  const lib = koffi.load(file);
  let abi;
  try {
    abi = lib.func('uint32_t wv_abi_version(void)')();
  } catch (e) {
    lib.unload();
    throw errorOf(IO, 'dlopen', `${file} has no wv_abi_version: not libwv (${e.message})`);
  }
  if (abi >>> 16 !== HEADER_ABI_MAJOR || (abi & 0xffff) < HEADER_ABI_MINOR) {
    lib.unload();
    const err = errorOf(UNSUPPORTED, 'wv_abi_version',
      `${file} has ABI version ${abiString(abi)}, but this binding was built for ` +
      `${abiString(HEADER_ABI_VERSION)} (it needs the same major and at least that minor): ` +
      'use a matching libwv');
    err.abiMismatch = true;
    throw err;
  }
  try {
    return declare(lib, file);
  } catch (e) {
    lib.unload();
    throw errorOf(IO, 'dlopen', `${file} lacks a function of ABI ${abiString(HEADER_ABI_VERSION)}: ${e.message}`);
  }
}

let typesDeclared = null;
function types() {
  if (typesDeclared) return typesDeclared;
  const progress = koffi.proto('int32_t wv_progress_callback(void *user_data, float fraction)');
  typesDeclared = {
    progress,
    loadOptions: koffi.struct('wv_load_options', {
      struct_size: 'uint32_t',
      device: 'const char *',
      progress: koffi.pointer(progress),
      progress_user_data: 'void *',
    }),
    modelInfo: koffi.struct('wv_model_info', {
      struct_size: 'uint32_t',
      context_length: 'uint32_t',
      vocab_size: 'uint32_t',
      n_layers: 'uint32_t',
      hidden_size: 'uint32_t',
      n_heads: 'uint32_t',
      n_kv_heads: 'uint32_t',
      quant_bits: 'uint32_t',
      quant_group_size: 'int32_t',
      quant_act_order: 'uint32_t',
      bos_token: 'int32_t',
      eos_token: 'int32_t',
      device: 'const char *',
      device_description: 'const char *',
      weight_bytes: 'uint64_t',
      kv_bytes_per_token: 'uint64_t',
    }),
    sessionOptions: koffi.struct('wv_session_options', {
      struct_size: 'uint32_t',
      context_length: 'uint32_t',
      system_prompt: 'const char *',
    }),
    generateOptions: koffi.struct('wv_generate_options', {
      struct_size: 'uint32_t',
      max_tokens: 'uint32_t',
      temperature: 'float',
      top_k: 'uint32_t',
      top_p: 'float',
      repetition_penalty: 'float',
      seed: 'uint64_t',
      stop: 'const char **',
      n_stop: 'size_t',
    }),
  };
  return typesDeclared;
}

function declare(lib, file) {
  const t = types();
  const f = (proto) => lib.func(proto);
  const c = {
    file,
    lib,
    types: t,
    wv_abi_version: f('uint32_t wv_abi_version(void)'),
    wv_version: f('const char *wv_version(void)'),
    wv_last_error: f('const char *wv_last_error(void)'),
    // The *_init functions write the library's own sizeof, which a newer library may have
    // grown: they get ample scratch space (see defaults()).
    wv_load_options_init: f('void wv_load_options_init(void *opts)'),
    wv_session_options_init: f('void wv_session_options_init(void *opts)'),
    wv_generate_options_init: f('void wv_generate_options_init(void *opts)'),
    wv_load: f('int32_t wv_load(const char *dir, const wv_load_options *opts, _Out_ void **out)'),
    wv_model_free: f('void wv_model_free(void *model)'),
    wv_model_get_info: f('int32_t wv_model_get_info(void *model, _Inout_ wv_model_info *info)'),
    wv_session_new: f('int32_t wv_session_new(void *model, const wv_session_options *opts, _Out_ void **out)'),
    wv_session_free: f('void wv_session_free(void *session)'),
    wv_session_cancel: f('int32_t wv_session_cancel(void *session)'),
    wv_session_reset: f('int32_t wv_session_reset(void *session)'),
    wv_session_truncate: f('int32_t wv_session_truncate(void *session, size_t n)'),
    wv_session_token_count: f('int32_t wv_session_token_count(void *session, _Out_ size_t *n)'),
    wv_session_context_length: f('int32_t wv_session_context_length(void *session, _Out_ size_t *n)'),
    wv_session_get_tokens: f('int32_t wv_session_get_tokens(void *session, _Out_ int32_t *tokens, size_t cap, _Out_ size_t *n)'),
    wv_session_set_tokens: f('int32_t wv_session_set_tokens(void *session, const int32_t *tokens, size_t n)'),
    wv_stream_begin: f('int32_t wv_stream_begin(void *session, const char *prompt, const wv_generate_options *opts, _Out_ void **out)'),
    wv_stream_begin_chat: f('int32_t wv_stream_begin_chat(void *session, const char *message, const wv_generate_options *opts, _Out_ void **out)'),
    wv_stream_next: f('int32_t wv_stream_next(void *stream, int32_t timeout_ms, _Out_ int32_t *token, _Out_ void **text, _Out_ size_t *len)'),
    wv_stream_free: f('void wv_stream_free(void *stream)'),
    wv_tokenize: f('int32_t wv_tokenize(void *model, const char *text, bool add_special, _Out_ int32_t *tokens, size_t cap, _Out_ size_t *n)'),
    wv_detokenize: f('int32_t wv_detokenize(void *model, const int32_t *tokens, size_t n, _Out_ uint8_t *text, size_t cap, _Out_ size_t *size)'),
    wv_token_to_piece: f('int32_t wv_token_to_piece(void *model, int32_t token, _Out_ uint8_t *piece, size_t cap, _Out_ size_t *size)'),
    wv_session_save_state: f('int32_t wv_session_save_state(void *session, _Out_ uint8_t *buf, size_t cap, _Out_ size_t *size)'),
    wv_session_save_file: f('int32_t wv_session_save_file(void *session, const char *path)'),
    wv_session_restore_state: f('int32_t wv_session_restore_state(void *session, const uint8_t *data, size_t size)'),
    wv_session_restore_file: f('int32_t wv_session_restore_file(void *session, const char *path)'),
  };
  c.defaults = (init, type) => {
    const scratch = Buffer.alloc(1024);
    init(scratch);
    return { ...koffi.decode(scratch, type), struct_size: koffi.sizeof(type) };
  };
  /** Throws a WvError for a failed status (call it on the thread that made the call). */
  c.check = (op, status) => {
    if (status !== OK) throw errorOf(status, op, c.wv_last_error());
  };
  return c;
}

let native = null;

/** libwv, opened on first use (a failure is retried by the next call). */
function library() {
  if (native) return native;
  const { paths, explicit } = candidates();
  const tried = [];
  for (const p of paths) {
    try {
      native = open(p);
      return native;
    } catch (e) {
      if (e instanceof WvError && e.abiMismatch) throw e;
      tried.push(e instanceof WvError ? e.message : `${p}: ${e.message}`);
    }
  }
  const hint = explicit
    ? `WV_LIBRARY_PATH is ${process.env.WV_LIBRARY_PATH}`
    : 'set WV_LIBRARY_PATH to libwv or its folder, or install it in /usr/local/lib';
  const err = errorOf(IO, 'dlopen', `cannot open libwv (${hint}): ${tried.join('; ')}`);
  err.libraryNotFound = true;
  throw err;
}

module.exports = {
  koffi,
  library,
  open,
  WvError,
  errorOf,
  STATUS_CODES,
  STATUS_NAMES,
  HEADER_ABI_VERSION,
  LIBRARY_NAME,
  OK,
  INVALID_ARGUMENT,
  IO,
  UNSUPPORTED,
  CANCELLED,
  DONE,
  TIMEOUT,
};
