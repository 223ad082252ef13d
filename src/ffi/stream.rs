//! The pull-style stream, for hosts that cannot take callbacks on another thread (a game's
//! frame loop, Node): `wv_stream_begin` starts generation on a worker thread that feeds a
//! bounded queue, `wv_stream_next` takes the next token (blocking, polling or with a timeout),
//! `wv_stream_free` cancels and joins.
//!
//! The queue is bounded, so a host that stops pulling pauses generation rather than letting
//! tokens pile up. The session is claimed (busy) from `begin` until the stream has ended and
//! the end was returned by `next`, or the stream is freed.

use super::error::{
    wv_status, FfiError, FfiResult, WV_DONE, WV_ERR_CANCELLED, WV_ERR_OUT_OF_MEMORY, WV_OK,
    WV_TIMEOUT,
};
use super::ffi::{
    arg_str, check_out, clone_handle, free_handle, into_handle, token_to_c, Handle, Magic,
};
use super::generate::{generate_options, run, wv_generate_options, Mode};
use super::panic::{guard, guard_status, guard_value, panic_error_message};
use super::session::{lock_session, wv_session, Busy};
use crate::session::StopReason;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Tokens the worker may run ahead of the host before it waits.
const QUEUE_TOKENS: usize = 64;
/// Stack of the worker thread (the main thread's usual size).
const WORKER_STACK: usize = 8 << 20;

/// A generation in progress on a session, read with `wv_stream_next` (opaque).
pub struct wv_stream {
    magic: Magic,
    session: Arc<wv_session>,
    /// Set by cancel and free: the worker stops at its next token (or before it starts).
    stop: Arc<AtomicBool>,
    /// True once the session has been given back. Cancelling takes this lock and cancels the
    /// session only while it is still ours, so a late cancel never hits the next user's call.
    released: Mutex<bool>,
    inner: Mutex<Inner>,
}

struct Inner {
    rx: Option<Receiver<Item>>,
    worker: Option<JoinHandle<()>>,
    /// The session claim, released when the end has been read or the stream is dropped.
    busy: Option<Busy>,
    /// The text of the last token returned, NUL-terminated.
    text: Vec<u8>,
    /// How the generation ended, once `next` has seen it (returned again by later calls).
    end: Option<FfiResult<()>>,
}

enum Item {
    Token(u32, String),
    End(FfiResult<()>),
}

impl Handle for wv_stream {
    const MAGIC: u64 = 0x7776_5f73_7472_6561;
    const TYPE: &'static str = "wv_stream";
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

impl wv_stream {
    fn cancel(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        if !*released {
            self.session.cancel();
        }
    }
}

/// Wait for the worker (which has ended or is about to) and give the session back.
fn finish(inner: &mut Inner, released: &Mutex<bool>) {
    // Dropping the receiver first wakes a worker blocked on a full queue.
    drop(inner.rx.take());
    if let Some(w) = inner.worker.take() {
        let _ = w.join();
    }
    let mut r = released.lock().unwrap_or_else(|p| p.into_inner());
    *r = true;
    drop(inner.busy.take());
}

impl Drop for wv_stream {
    fn drop(&mut self) {
        self.cancel();
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        finish(inner, &self.released);
    }
}

fn worker(
    session: Arc<wv_session>,
    mode: Mode,
    text: String,
    opts: crate::GenerateOptions,
    stop: Arc<AtomicBool>,
    tx: std::sync::mpsc::SyncSender<Item>,
) {
    let cancelled = || FfiError::new(WV_ERR_CANCELLED, "cancelled");
    let result = catch_unwind(AssertUnwindSafe(|| -> FfiResult<()> {
        if stop.load(Ordering::SeqCst) {
            return Err(cancelled());
        }
        let mut s = lock_session(&session)?;
        let mut on_token = |id: u32, t: &str| {
            !stop.load(Ordering::SeqCst) && tx.send(Item::Token(id, t.to_string())).is_ok()
        };
        let stats = run(&mut s, mode, &text, &opts, &mut on_token)?;
        if stats.stop_reason == StopReason::Callback {
            // Only a cancel (or a dropped stream) makes our callback say stop.
            return Err(cancelled());
        }
        Ok(())
    }));
    let end = result.unwrap_or_else(|p| Err(FfiError::internal(panic_error_message(p.as_ref()))));
    let _ = tx.send(Item::End(end));
}

unsafe fn begin_impl(
    session: *mut wv_session,
    mode: Mode,
    text: *const c_char,
    text_name: &str,
    opts: *const wv_generate_options,
    out_stream: *mut *mut wv_stream,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        check_out(out_stream, "out_stream")?;
        let text = arg_str(text, text_name)?.to_string();
        let opts = generate_options(opts)?;
        drop(busy.lock()?); // report a broken session now rather than from wv_stream_next
        let (tx, rx) = sync_channel(QUEUE_TOKENS);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = busy.handle().clone();
        let (s2, stop2) = (handle.clone(), stop.clone());
        let w = std::thread::Builder::new()
            .name("wv-stream".into())
            .stack_size(WORKER_STACK)
            .spawn(move || worker(s2, mode, text, opts, stop2, tx))
            .map_err(|e| {
                FfiError::new(
                    WV_ERR_OUT_OF_MEMORY,
                    format!("could not start the generation thread: {e}"),
                )
            })?;
        let stream = wv_stream {
            magic: Magic::new(wv_stream::MAGIC),
            session: handle,
            stop,
            released: Mutex::new(false),
            inner: Mutex::new(Inner {
                rx: Some(rx),
                worker: Some(w),
                busy: Some(busy),
                text: vec![0],
                end: None,
            }),
        };
        *out_stream = into_handle(stream);
        Ok(())
    })
}

/// Start generating from raw prompt text, as `wv_generate` would, on a worker thread; read
/// the tokens with `wv_stream_next`. On success `*out_stream` receives the stream, to be freed
/// with `wv_stream_free`. The session is busy (`WV_ERR_BUSY` for any other call on it, except
/// `wv_session_cancel`) until `wv_stream_next` has returned the end of the stream or the stream
/// is freed. Errors: as `wv_generate` for the arguments; generation errors (context full,
/// cancelled, ...) come from `wv_stream_next`.
#[no_mangle]
pub unsafe extern "C" fn wv_stream_begin(
    session: *mut wv_session,
    prompt: *const c_char,
    opts: *const wv_generate_options,
    out_stream: *mut *mut wv_stream,
) -> wv_status {
    begin_impl(session, Mode::Raw, prompt, "prompt", opts, out_stream)
}

/// Start a chat turn, as `wv_chat` would, on a worker thread; otherwise as `wv_stream_begin`.
#[no_mangle]
pub unsafe extern "C" fn wv_stream_begin_chat(
    session: *mut wv_session,
    user_message: *const c_char,
    opts: *const wv_generate_options,
    out_stream: *mut *mut wv_stream,
) -> wv_status {
    begin_impl(
        session,
        Mode::Chat,
        user_message,
        "user_message",
        opts,
        out_stream,
    )
}

/// Take the next token of a stream. `timeout_ms` < 0 waits as long as it takes, 0 only polls,
/// > 0 waits at most that many milliseconds.
///
/// Returns:
/// - `WV_OK`: a token; `*out_token` is its id (`WV_NO_TOKEN` for trailing text without a
///   token), `*out_text` its text (UTF-8, NUL-terminated, `*out_len` bytes, possibly empty),
///   valid until the next `wv_stream_next` or `wv_stream_free` on this stream.
/// - `WV_TIMEOUT`: nothing yet; call again. Out-parameters untouched.
/// - `WV_DONE`: generation ended normally and every token has been returned.
/// - an error (`WV_ERR_CONTEXT_FULL`, `WV_ERR_CANCELLED`, `WV_ERR_DEVICE`, ...): generation
///   failed after the tokens already returned; `wv_last_error` says why.
///
/// After `WV_DONE` or an error, the session is free again and later calls return the same
/// status. Each out-parameter may be NULL if not wanted. `WV_ERR_BUSY` if another thread is
/// inside `wv_stream_next` on the same stream.
#[no_mangle]
pub unsafe extern "C" fn wv_stream_next(
    stream: *mut wv_stream,
    timeout_ms: i32,
    out_token: *mut i32,
    out_text: *mut *const c_char,
    out_len: *mut usize,
) -> wv_status {
    guard_status(|| {
        let st = clone_handle(stream, "stream")?;
        let mut inner = match st.inner.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => return Err(FfiError::busy("the stream")),
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if let Some(end) = &inner.end {
            return end.clone().map(|()| WV_DONE);
        }
        let Some(rx) = inner.rx.as_ref() else {
            return Err(FfiError::internal("the stream has no generation thread"));
        };
        let lost = || FfiError::internal("the generation thread ended without a result");
        let item = match timeout_ms {
            t if t < 0 => rx.recv().map_err(|_| lost()),
            0 => match rx.try_recv() {
                Ok(item) => Ok(item),
                Err(TryRecvError::Empty) => return Ok(WV_TIMEOUT),
                Err(TryRecvError::Disconnected) => Err(lost()),
            },
            t => match rx.recv_timeout(Duration::from_millis(t as u64)) {
                Ok(item) => Ok(item),
                Err(RecvTimeoutError::Timeout) => return Ok(WV_TIMEOUT),
                Err(RecvTimeoutError::Disconnected) => Err(lost()),
            },
        };
        let end = match item {
            Ok(Item::Token(id, text)) => {
                inner.text.clear();
                inner.text.extend_from_slice(text.as_bytes());
                inner.text.push(0);
                if !out_token.is_null() {
                    *out_token = token_to_c(id);
                }
                if !out_text.is_null() {
                    *out_text = inner.text.as_ptr().cast::<c_char>();
                }
                if !out_len.is_null() {
                    *out_len = text.len();
                }
                return Ok(WV_OK);
            }
            Ok(Item::End(end)) => end,
            Err(e) => Err(e),
        };
        finish(&mut inner, &st.released);
        inner.end = Some(end.clone());
        end.map(|()| WV_DONE)
    })
}

/// Cancel a stream's generation, from any thread: `wv_stream_next` returns the tokens already
/// queued and then `WV_ERR_CANCELLED` (or `WV_DONE` if generation had already ended).
#[no_mangle]
pub unsafe extern "C" fn wv_stream_cancel(stream: *mut wv_stream) -> wv_status {
    guard(|| {
        clone_handle(stream, "stream")?.cancel();
        Ok(())
    })
}

/// Cancel the stream's generation if it is still running, wait for its thread, release the
/// session and free the stream. NULL is a no-op. Tokens already generated stay in the session.
#[no_mangle]
pub unsafe extern "C" fn wv_stream_free(stream: *mut wv_stream) {
    guard_value((), || {
        if let Ok(st) = clone_handle(stream, "stream") {
            // Stop now, even if a wv_stream_next on another thread keeps the stream alive.
            st.cancel();
        }
        free_handle(stream)
    })
}
