//! Sessions: `wv_session_new` / `_free`, cancellation, and the conversation's tokens (count,
//! reset, truncate, get, set).
//!
//! A `wv_session` is used by one call at a time. Each call first claims the session's busy
//! flag (never blocking): a second concurrent call, or a callback calling back into its own
//! session, gets `WV_ERR_BUSY` instead of a deadlock. `wv_session_cancel` does not claim it:
//! it only sets the engine's cancel flag, so it works from any thread and from callbacks.

use super::error::{wv_status, FfiError, FfiResult};
use super::ffi::{
    arg_opt_str, arg_slice, check_out, clone_handle, copy_out, free_handle, into_handle,
    read_options, token_to_c, tokens_from_c, Handle, Magic,
};
use super::model::wv_model;
use super::panic::{guard, guard_value};
use crate::session::{Session, SessionOptions};
use std::ffi::c_char;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// One conversation on a model (opaque): its tokens and its KV cache. Used by one call at a
/// time (a concurrent call gets `WV_ERR_BUSY`); `wv_session_cancel` may be called from any
/// thread at any time.
pub struct wv_session {
    magic: Magic,
    busy: AtomicBool,
    session: Mutex<Session>,
    cancel: Arc<AtomicBool>,
    context_length: usize,
}

impl Handle for wv_session {
    const MAGIC: u64 = 0x7776_5f73_6573_7321;
    const TYPE: &'static str = "wv_session";
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

impl wv_session {
    /// Set the engine's cancel flag: the running call stops before its next decode step or
    /// prefill chunk.
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Exclusive use of a session, for one call or for the life of a stream. Released on drop.
pub(crate) struct Busy {
    session: Arc<wv_session>,
}

impl Busy {
    /// Claim the session, or fail at once with `WV_ERR_BUSY`.
    pub fn claim(session: Arc<wv_session>) -> FfiResult<Busy> {
        if session
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(FfiError::busy(
                "the session (a call on another thread, an open wv_stream, or the call whose callback this is)",
            ));
        }
        Ok(Busy { session })
    }

    /// Claim the session behind a caller's handle.
    ///
    /// # Safety
    /// As for `clone_handle`.
    pub unsafe fn claim_handle(p: *const wv_session) -> FfiResult<Busy> {
        Busy::claim(clone_handle(p, "session")?)
    }

    pub fn handle(&self) -> &Arc<wv_session> {
        &self.session
    }

    /// The engine session. Only the holder of a `Busy` locks it, so this never waits.
    pub fn lock(&self) -> FfiResult<MutexGuard<'_, Session>> {
        lock_session(&self.session)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.session.busy.store(false, Ordering::Release);
    }
}

/// Lock the engine session of a handle whose busy flag the caller holds (directly, or through
/// a stream that owns the `Busy`).
pub(crate) fn lock_session(s: &wv_session) -> FfiResult<MutexGuard<'_, Session>> {
    match s.session.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(_)) => Err(FfiError::internal(
            "an earlier call on this session failed with an internal error; call wv_session_reset \
             (or free the session) before using it again",
        )),
        Err(TryLockError::WouldBlock) => Err(FfiError::busy("the session")),
    }
}

/// Options for `wv_session_new`. Initialise with `wv_session_options_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct wv_session_options {
    /// `sizeof(wv_session_options)`: set by `wv_session_options_init`; lets the struct grow.
    pub struct_size: u32,
    /// Positions the KV cache holds; 0 means the model's full context. Memory is
    /// `kv_bytes_per_token` (see `wv_model_info`) times this.
    pub context_length: u32,
    /// The chat system line used by `wv_chat`; NULL means Vicuna's ("A chat between a curious
    /// user and an artificial intelligence assistant. ..."); "" means none. Copied.
    pub system_prompt: *const c_char,
}

const SESSION_OPTIONS_V1: usize = size_of::<wv_session_options>();

impl wv_session_options {
    fn defaults() -> wv_session_options {
        wv_session_options {
            struct_size: SESSION_OPTIONS_V1 as u32,
            context_length: 0,
            system_prompt: ptr::null(),
        }
    }
}

/// Fill `opts` with the defaults (full context, Vicuna's system prompt) and set its
/// `struct_size`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wv_session_options_init(opts: *mut wv_session_options) {
    guard_value((), || {
        if !opts.is_null() {
            opts.write_unaligned(wv_session_options::defaults());
        }
    })
}

/// Make a session on `model` (`opts` may be NULL for the defaults). The session keeps the
/// model's weights alive. Free it with `wv_session_free`.
///
/// Errors: `WV_ERR_INVALID_ARGUMENT` (NULLs, a context longer than the model's or shorter
/// than 2, bad UTF-8 or `struct_size`), `WV_ERR_OUT_OF_MEMORY`, `WV_ERR_DEVICE`.
#[no_mangle]
pub unsafe extern "C" fn wv_session_new(
    model: *const wv_model,
    opts: *const wv_session_options,
    out_session: *mut *mut wv_session,
) -> wv_status {
    guard(|| {
        let m = clone_handle(model, "model")?;
        check_out(out_session, "out_session")?;
        let o = if opts.is_null() {
            wv_session_options::defaults()
        } else {
            read_options(
                opts,
                SESSION_OPTIONS_V1,
                wv_session_options::defaults(),
                "wv_session_options",
            )?
        };
        let system_prompt =
            arg_opt_str(o.system_prompt, "wv_session_options.system_prompt")?.map(str::to_string);
        let so = SessionOptions {
            context_length: o.context_length as usize,
            system_prompt,
        };
        let session = Session::new(m.model.clone(), &so)?;
        let handle = wv_session {
            magic: Magic::new(wv_session::MAGIC),
            busy: AtomicBool::new(false),
            cancel: session.cancel_handle(),
            context_length: session.context_length(),
            session: Mutex::new(session),
        };
        *out_session = into_handle(handle);
        Ok(())
    })
}

/// Free a session. NULL is a no-op. A call still running on it (this is allowed from that
/// call's own callback) and an open `wv_stream` keep it alive until they end; the handle
/// itself must not be used again.
#[no_mangle]
pub unsafe extern "C" fn wv_session_free(session: *mut wv_session) {
    guard_value((), || free_handle(session))
}

/// Cancel the call running on `session`, from any thread (or from its own callback): it
/// returns `WV_ERR_CANCELLED` within one decode step or one prefill chunk, keeping the tokens
/// generated so far. Never blocks and never returns `WV_ERR_BUSY`. With no call running it has
/// no effect (the next call starts uncancelled).
#[no_mangle]
pub unsafe extern "C" fn wv_session_cancel(session: *mut wv_session) -> wv_status {
    guard(|| {
        clone_handle(session, "session")?.cancel();
        Ok(())
    })
}

/// Forget the conversation (the KV cache memory is kept for reuse). Also recovers a session
/// on which an earlier call failed with `WV_ERR_INTERNAL`.
#[no_mangle]
pub unsafe extern "C" fn wv_session_reset(session: *mut wv_session) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        let s = &busy.handle().session;
        let mut g = match s.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => {
                s.clear_poison();
                p.into_inner()
            }
            Err(TryLockError::WouldBlock) => return Err(FfiError::busy("the session")),
        };
        g.reset();
        Ok(())
    })
}

/// Keep only the first `n_tokens` tokens of the conversation (undo the last turn, say).
/// `WV_ERR_INVALID_ARGUMENT` if the session holds fewer.
#[no_mangle]
pub unsafe extern "C" fn wv_session_truncate(
    session: *mut wv_session,
    n_tokens: usize,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        busy.lock()?.truncate(n_tokens)?;
        Ok(())
    })
}

/// The number of tokens in the conversation (BOS, prompts and replies), into `*out_count`.
#[no_mangle]
pub unsafe extern "C" fn wv_session_token_count(
    session: *mut wv_session,
    out_count: *mut usize,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        check_out(out_count, "out_count")?;
        *out_count = busy.lock()?.tokens().len();
        Ok(())
    })
}

/// The session's context length in tokens (what it was made with), into `*out_length`.
/// Does not need the session to be idle.
#[no_mangle]
pub unsafe extern "C" fn wv_session_context_length(
    session: *mut wv_session,
    out_length: *mut usize,
) -> wv_status {
    guard(|| {
        let s = clone_handle(session, "session")?;
        check_out(out_length, "out_length")?;
        *out_length = s.context_length;
        Ok(())
    })
}

/// Copy the conversation's token ids into `tokens` (two-call pattern: pass NULL and 0 to get
/// the count in `*out_count`; a non-NULL buffer smaller than the count gives
/// `WV_ERR_BUFFER_TOO_SMALL` with the count in `*out_count`).
#[no_mangle]
pub unsafe extern "C" fn wv_session_get_tokens(
    session: *mut wv_session,
    tokens: *mut i32,
    capacity: usize,
    out_count: *mut usize,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        check_out(out_count, "out_count")?;
        let ids: Vec<i32> = busy
            .lock()?
            .tokens()
            .iter()
            .map(|&t| token_to_c(t))
            .collect();
        copy_out(&ids, tokens, capacity, out_count, "wv_session_get_tokens")
    })
}

/// Replace the conversation with `n_tokens` token ids (BOS is not added). The KV cache is
/// filled by the next generation call. `WV_ERR_CONTEXT_FULL` if they do not fit,
/// `WV_ERR_INVALID_ARGUMENT` for an id outside the vocabulary.
#[no_mangle]
pub unsafe extern "C" fn wv_session_set_tokens(
    session: *mut wv_session,
    tokens: *const i32,
    n_tokens: usize,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        let ids = tokens_from_c(arg_slice(tokens, n_tokens, "tokens")?, "tokens")?;
        busy.lock()?.set_tokens(ids)?;
        Ok(())
    })
}
