//! Generation with a callback: `wv_generate` (raw prompt text) and `wv_chat` (one user turn
//! in the Vicuna template), and the options they share with the stream API.

use super::error::{wv_status, FfiError, FfiResult};
use super::ffi::{arg_slice, arg_str, read_options, token_to_c, UserData};
use super::panic::{guard, guard_value};
use super::session::{wv_session, Busy};
use crate::error::Result;
use crate::sampler::GenerateOptions;
use crate::session::{GenerateStats, Session};
use std::ffi::{c_char, c_void};
use std::mem::size_of;
use std::ptr;

/// `wv_generate_options.seed`: draw a seed from the clock (the default).
pub const WV_SEED_RANDOM: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/// The token value a callback (or `wv_stream_next`) gets for text released without a new
/// token: the tail held back by a stop-string check or an unfinished UTF-8 character, sent
/// when generation ends.
///
/// (Written into the header by hand, in `cbindgen.toml`, so that the macro is parenthesised.)
pub const WV_NO_TOKEN: i32 = -1;

/// Most stop strings accepted in one call.
const MAX_STOP_STRINGS: usize = 1024;

/// Called on the generating thread for every generated token. `token` is its id
/// (`WV_NO_TOKEN` for trailing text released without a token); `text` is the UTF-8 that this
/// token completes (possibly empty: a token may end in the middle of a character, and text
/// that could begin a stop string is held back), `text_len` bytes long. `text` is also
/// NUL-terminated for convenience, but may contain a NUL byte, so use `text_len`. It is valid
/// only during the call. Return 0 to go on; any other value stops generation (the call then
/// returns `WV_OK`). The callback may call `wv_session_cancel` and any function on other
/// sessions; calling into its own session gets `WV_ERR_BUSY`.
pub type wv_token_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        token: i32,
        text: *const c_char,
        text_len: usize,
    ) -> i32,
>;

/// Settings for one generation call. Initialise with `wv_generate_options_init` (the model
/// card's defaults), then change what you need. Zero-initialised fields mean "off": 0
/// `temperature` is greedy, 0 `top_k`, `top_p` and `repetition_penalty` disable those, 0
/// `max_tokens` is no limit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct wv_generate_options {
    /// `sizeof(wv_generate_options)`: set by `wv_generate_options_init`; lets the struct grow.
    pub struct_size: u32,
    /// The most tokens to generate; 0 means no limit (until end of sequence, a stop string or
    /// a full context). Default 512.
    pub max_tokens: u32,
    /// Sampling temperature; 0 means greedy: the arg-max of the model's logits, with
    /// `top_k`, `top_p` and `repetition_penalty` not applied (for greedy decoding with a
    /// repetition penalty, use `top_k` = 1 and any temperature > 0). Default 0.7.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables. Default 40.
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches top_p, in (0, 1]; 0 or 1
    /// disables. Default 0.95.
    pub top_p: f32,
    /// Penalty for tokens already in the session (> 0; 1 or 0 disables; not applied when
    /// greedy). Default 1.1.
    pub repetition_penalty: f32,
    /// Seed of the sampler's generator; `WV_SEED_RANDOM` (the default) seeds from the clock.
    pub seed: u64,
    /// Stop strings (UTF-8, non-empty): generation stops when one appears, and it is never
    /// passed to the callback, not even in part. May be NULL when `n_stop` is 0. Copied.
    pub stop: *const *const c_char,
    /// Number of strings in `stop`.
    pub n_stop: usize,
}

const GENERATE_OPTIONS_V1: usize = size_of::<wv_generate_options>();

impl wv_generate_options {
    fn defaults() -> wv_generate_options {
        let d = GenerateOptions::default();
        wv_generate_options {
            struct_size: GENERATE_OPTIONS_V1 as u32,
            max_tokens: d.max_tokens as u32,
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            repetition_penalty: d.repetition_penalty,
            seed: WV_SEED_RANDOM,
            stop: ptr::null(),
            n_stop: 0,
        }
    }
}

/// Fill `opts` with the model card's defaults (max_tokens 512, temperature 0.7, top_k 40,
/// top_p 0.95, repetition_penalty 1.1, a random seed, no stop strings) and set its
/// `struct_size`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wv_generate_options_init(opts: *mut wv_generate_options) {
    guard_value((), || {
        if !opts.is_null() {
            opts.write_unaligned(wv_generate_options::defaults());
        }
    })
}

/// Read and check a caller's generation options (NULL: the defaults).
///
/// # Safety
/// `p` is NULL or points to a `wv_generate_options` of at least its `struct_size` bytes whose
/// strings are valid for the call.
pub(crate) unsafe fn generate_options(p: *const wv_generate_options) -> FfiResult<GenerateOptions> {
    let o = if p.is_null() {
        wv_generate_options::defaults()
    } else {
        read_options(
            p,
            GENERATE_OPTIONS_V1,
            wv_generate_options::defaults(),
            "wv_generate_options",
        )?
    };
    if o.n_stop > MAX_STOP_STRINGS {
        return Err(FfiError::invalid(format!(
            "wv_generate_options.n_stop is {}; at most {MAX_STOP_STRINGS} stop strings are allowed",
            o.n_stop
        )));
    }
    let ptrs = arg_slice(o.stop, o.n_stop, "wv_generate_options.stop")?;
    let mut stop = Vec::with_capacity(ptrs.len());
    for (i, &s) in ptrs.iter().enumerate() {
        stop.push(arg_str(s, &format!("wv_generate_options.stop[{i}]"))?.to_string());
    }
    let g = GenerateOptions {
        max_tokens: if o.max_tokens == 0 {
            usize::MAX
        } else {
            o.max_tokens as usize
        },
        temperature: o.temperature,
        top_k: o.top_k as usize,
        top_p: if o.top_p == 0.0 { 1.0 } else { o.top_p },
        repetition_penalty: if o.repetition_penalty == 0.0 {
            1.0
        } else {
            o.repetition_penalty
        },
        seed: (o.seed != WV_SEED_RANDOM).then_some(o.seed),
        stop,
    };
    g.validate()
        .map_err(|e| FfiError::from(e.context("wv_generate_options")))?;
    let mut g = g;
    if g.temperature == 0.0 {
        // Greedy is the arg-max of the model's own logits (what transformers' argmax gives);
        // greedy with a penalty is top_k = 1 at any temperature.
        g.repetition_penalty = 1.0;
    }
    Ok(g)
}

/// Which entry point a generation came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Raw prompt text (`wv_generate`).
    Raw,
    /// A user turn in the chat template (`wv_chat`).
    Chat,
}

/// Run one generation on an engine session.
pub(crate) fn run(
    session: &mut Session,
    mode: Mode,
    text: &str,
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32, &str) -> bool,
) -> Result<GenerateStats> {
    match mode {
        Mode::Raw => session.generate(text, opts, on_token),
        Mode::Chat => session.chat(text, opts, on_token),
    }
}

/// Calls a C token callback with NUL-terminated copies of the text.
pub(crate) struct TokenCallback {
    callback: wv_token_callback,
    user_data: UserData,
    buf: Vec<u8>,
}

impl TokenCallback {
    pub fn new(callback: wv_token_callback, user_data: *mut c_void) -> TokenCallback {
        TokenCallback {
            callback,
            user_data: UserData(user_data),
            buf: Vec::new(),
        }
    }

    /// Deliver one token; false means the callback asked to stop.
    pub fn call(&mut self, id: u32, text: &str) -> bool {
        let Some(cb) = self.callback else {
            return true;
        };
        self.buf.clear();
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(0);
        // SAFETY: the caller promised a valid function; the pointer and length describe
        // `buf`, which outlives the call.
        unsafe {
            cb(
                self.user_data.get(),
                token_to_c(id),
                self.buf.as_ptr().cast::<c_char>(),
                text.len(),
            ) == 0
        }
    }
}

unsafe fn generate_impl(
    session: *mut wv_session,
    mode: Mode,
    text: *const c_char,
    text_name: &str,
    opts: *const wv_generate_options,
    on_token: wv_token_callback,
    user_data: *mut c_void,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        let text = arg_str(text, text_name)?;
        let opts = generate_options(opts)?;
        let mut cb = TokenCallback::new(on_token, user_data);
        let mut s = busy.lock()?;
        run(&mut s, mode, text, &opts, &mut |id, t| cb.call(id, t))?;
        Ok(())
    })
}

/// Append raw prompt text to the session (BOS first in an empty session) and generate,
/// calling `on_token` for each token (NULL: generate without being told, the tokens are still
/// added to the session). `opts` NULL means the defaults. Returns `WV_OK` when generation
/// ends by end of sequence, `max_tokens`, a stop string, or a non-zero callback return; the
/// generated tokens stay in the session, so the next call continues the text.
///
/// Errors: `WV_ERR_INVALID_ARGUMENT` (NULL session or prompt, bad UTF-8, bad options),
/// `WV_ERR_CONTEXT_FULL` (the prompt does not fit, nothing is added; or the context filled up
/// during generation, the tokens generated so far are kept), `WV_ERR_CANCELLED`,
/// `WV_ERR_BUSY`, `WV_ERR_DEVICE`, `WV_ERR_INTERNAL`.
#[no_mangle]
pub unsafe extern "C" fn wv_generate(
    session: *mut wv_session,
    prompt: *const c_char,
    opts: *const wv_generate_options,
    on_token: wv_token_callback,
    user_data: *mut c_void,
) -> wv_status {
    generate_impl(
        session,
        Mode::Raw,
        prompt,
        "prompt",
        opts,
        on_token,
        user_data,
    )
}

/// Add one user turn in the Vicuna v1.1 template ("{system} USER: {message} ASSISTANT:", BOS
/// first, the previous reply closed with `</s>`) and generate the assistant's reply, as
/// `wv_generate` does (same callback, options and errors).
#[no_mangle]
pub unsafe extern "C" fn wv_chat(
    session: *mut wv_session,
    user_message: *const c_char,
    opts: *const wv_generate_options,
    on_token: wv_token_callback,
    user_data: *mut c_void,
) -> wv_status {
    generate_impl(
        session,
        Mode::Chat,
        user_message,
        "user_message",
        opts,
        on_token,
        user_data,
    )
}
