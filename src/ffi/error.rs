//! The one status scheme: every `wv_status` code, its name, the mapping from the engine's
//! [`ErrorKind`], and the thread-local last-error message behind `wv_last_error`.
//!
//! Codes are never renumbered and never reused; new ones are only appended.

use crate::error::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

/// A status code returned by most wv functions. `WV_OK` (0) is success; every other value is
/// one of the `WV_*` constants below. Codes are never renumbered.
pub type wv_status = i32;

/// Success.
pub const WV_OK: i32 = 0;
/// An argument can never work: a NULL pointer where none is allowed, invalid UTF-8, a value
/// out of range, a bad `struct_size`, a bad device string.
pub const WV_ERR_INVALID_ARGUMENT: i32 = 1;
/// A file could not be opened, read or written.
pub const WV_ERR_IO: i32 = 2;
/// A file was read but its contents are wrong (bad JSON, bad tensor header, wrong shape, a
/// corrupt or foreign saved session).
pub const WV_ERR_MODEL_FORMAT: i32 = 3;
/// Well-formed but not supported (unknown architecture, unsupported quantisation, a struct
/// from a newer header that sets fields this library does not know).
pub const WV_ERR_UNSUPPORTED: i32 = 4;
/// A host or device allocation failed.
pub const WV_ERR_OUT_OF_MEMORY: i32 = 5;
/// The GPU is unusable (no driver, no such device, a failed launch).
pub const WV_ERR_DEVICE: i32 = 6;
/// The session's context is full (or the prompt does not fit in it).
pub const WV_ERR_CONTEXT_FULL: i32 = 7;
/// The call was cancelled (`wv_session_cancel`, `wv_stream_cancel`, or a progress callback
/// that returned non-zero).
pub const WV_ERR_CANCELLED: i32 = 8;
/// The session (or stream) is in use by another call, on another thread or further up this
/// thread's stack (a callback calling back into its own session). Nothing was done; retry later.
pub const WV_ERR_BUSY: i32 = 9;
/// A bug in wv: a caught panic or a broken invariant. `wv_last_error` has the details.
pub const WV_ERR_INTERNAL: i32 = 10;
/// `wv_stream_next`: generation finished normally (end of sequence, `max_tokens`, a stop
/// string) and every token has been delivered. Not an error; `wv_last_error` is not changed.
pub const WV_DONE: i32 = 11;
/// `wv_stream_next`: no token arrived within the timeout. Not an error; call again.
/// `wv_last_error` is not changed.
pub const WV_TIMEOUT: i32 = 12;
/// A caller-supplied buffer is too small. The required size has been written to the
/// size out-parameter (the one exception to "out-parameters are written only on WV_OK");
/// nothing was written to the buffer.
pub const WV_ERR_BUFFER_TOO_SMALL: i32 = 13;

/// The status for an engine error kind (the discriminants are the codes).
pub(crate) fn status_of(kind: ErrorKind) -> wv_status {
    match kind {
        ErrorKind::InvalidArgument => WV_ERR_INVALID_ARGUMENT,
        ErrorKind::Io => WV_ERR_IO,
        ErrorKind::ModelFormat => WV_ERR_MODEL_FORMAT,
        ErrorKind::Unsupported => WV_ERR_UNSUPPORTED,
        ErrorKind::OutOfMemory => WV_ERR_OUT_OF_MEMORY,
        ErrorKind::Device => WV_ERR_DEVICE,
        ErrorKind::ContextFull => WV_ERR_CONTEXT_FULL,
        ErrorKind::Cancelled => WV_ERR_CANCELLED,
        ErrorKind::Busy => WV_ERR_BUSY,
        ErrorKind::Internal => WV_ERR_INTERNAL,
    }
}

/// The stable short name of a status (the engine's `ErrorKind::name` for the error codes).
fn status_name(status: wv_status) -> &'static CStr {
    match status {
        WV_OK => c"ok",
        WV_ERR_INVALID_ARGUMENT => c"invalid argument",
        WV_ERR_IO => c"i/o error",
        WV_ERR_MODEL_FORMAT => c"model format error",
        WV_ERR_UNSUPPORTED => c"unsupported",
        WV_ERR_OUT_OF_MEMORY => c"out of memory",
        WV_ERR_DEVICE => c"device error",
        WV_ERR_CONTEXT_FULL => c"context full",
        WV_ERR_CANCELLED => c"cancelled",
        WV_ERR_BUSY => c"busy",
        WV_ERR_INTERNAL => c"internal error",
        WV_DONE => c"done",
        WV_TIMEOUT => c"timeout",
        WV_ERR_BUFFER_TOO_SMALL => c"buffer too small",
        _ => c"unknown status",
    }
}

/// A failure on its way out of an export: a status and the message for `wv_last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub status: wv_status,
    pub message: String,
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

impl FfiError {
    pub fn new(status: wv_status, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::new(WV_ERR_INVALID_ARGUMENT, message)
    }
    pub fn internal(message: impl Into<String>) -> FfiError {
        FfiError::new(WV_ERR_INTERNAL, message)
    }
    pub fn busy(what: &str) -> FfiError {
        FfiError::new(WV_ERR_BUSY, format!("{what} is in use by another call"))
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError {
            status: status_of(e.kind),
            message: e.message,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Record `message` as this thread's last error (interior NULs become U+FFFD).
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    // try_with: during thread teardown the slot may already be gone; then there is no one
    // left on this thread to read the message anyway.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = c);
}

/// The message of the last failed call on this thread, or "" if none failed yet. The string
/// stays valid until the next failing call on this thread; copy it if you need it longer.
/// Successful calls leave it unchanged (like `errno`), so check the status first.
#[no_mangle]
pub extern "C" fn wv_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// A short, stable, static name for a status ("ok", "invalid argument", "context full", ...);
/// "unknown status" for a value that is not a `WV_*` code. Never NULL.
#[no_mangle]
pub extern "C" fn wv_status_name(status: wv_status) -> *const c_char {
    status_name(status).as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_error_kinds_and_names() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::Io,
            ErrorKind::ModelFormat,
            ErrorKind::Unsupported,
            ErrorKind::OutOfMemory,
            ErrorKind::Device,
            ErrorKind::ContextFull,
            ErrorKind::Cancelled,
            ErrorKind::Busy,
            ErrorKind::Internal,
        ];
        for (i, k) in kinds.iter().enumerate() {
            assert_eq!(status_of(*k), i as i32 + 1);
            assert_eq!(*k as i32, status_of(*k));
            assert_eq!(status_name(status_of(*k)).to_str().unwrap(), k.name());
        }
        assert_eq!(status_name(99).to_str().unwrap(), "unknown status");
        assert_eq!(status_name(-1).to_str().unwrap(), "unknown status");
    }

    #[test]
    fn last_error_is_per_thread() {
        set_last_error("boom\0here");
        let read = || {
            unsafe { CStr::from_ptr(wv_last_error()) }
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(read(), "boom\u{FFFD}here");
        std::thread::spawn(move || assert_eq!(read(), ""))
            .join()
            .unwrap();
    }
}
