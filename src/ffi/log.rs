//! The host's log callback: `wv_set_log_callback`, installed as the engine's process-wide log
//! sink (see `crate::log`).

use super::error::{wv_status, FfiError};
use super::ffi::UserData;
use super::panic::guard;
use crate::log::{set_sink, Level};
use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};

/// Log level: errors only.
pub const WV_LOG_ERROR: i32 = 0;
/// Log level: warnings and errors.
pub const WV_LOG_WARN: i32 = 1;
/// Log level: informational messages (backend chosen, load time, CPU fallback) and above.
pub const WV_LOG_INFO: i32 = 2;
/// Log level: everything.
pub const WV_LOG_DEBUG: i32 = 3;

/// Receives wv's log messages: `level` is a `WV_LOG_*` value, `message` a NUL-terminated UTF-8
/// line without a trailing newline, valid only during the call. May be called from any thread
/// that is inside a wv call (including stream worker threads), concurrently. It must not call
/// `wv_set_log_callback`; messages that wv logs while the callback runs on the same thread are
/// dropped.
pub type wv_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: i32, message: *const c_char)>;

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn level_from_c(level: i32) -> Option<Level> {
    match level {
        WV_LOG_ERROR => Some(Level::Error),
        WV_LOG_WARN => Some(Level::Warn),
        WV_LOG_INFO => Some(Level::Info),
        WV_LOG_DEBUG => Some(Level::Debug),
        _ => None,
    }
}

/// Send wv's log messages at `level` or more severe (`WV_LOG_ERROR` .. `WV_LOG_DEBUG`) to
/// `callback`, with `user_data` passed back as is; NULL `callback` silences wv (the default).
/// Process-wide: replaces any earlier callback. `WV_ERR_INVALID_ARGUMENT` for a bad level;
/// `WV_ERR_BUSY` when called from inside the log callback.
#[no_mangle]
pub unsafe extern "C" fn wv_set_log_callback(
    callback: wv_log_callback,
    user_data: *mut c_void,
    level: i32,
) -> wv_status {
    guard(|| {
        if IN_CALLBACK.try_with(Cell::get).unwrap_or(false) {
            return Err(FfiError::busy(
                "the log callback (wv_set_log_callback was called from inside it)",
            ));
        }
        let max = level_from_c(level).ok_or_else(|| {
            FfiError::invalid(format!(
                "log level {level} is not one of WV_LOG_ERROR (0) .. WV_LOG_DEBUG (3)"
            ))
        })?;
        let Some(cb) = callback else {
            set_sink(None);
            return Ok(());
        };
        let ud = UserData(user_data);
        set_sink(Some((
            max,
            Box::new(move |lvl: Level, msg: &str| {
                // Drop a message logged by a wv call made from the callback itself (or during
                // thread teardown, when the flag is gone).
                if IN_CALLBACK.try_with(|f| f.replace(true)).unwrap_or(true) {
                    return;
                }
                let line = CString::new(msg.trim_end_matches('\n').replace('\0', "\u{FFFD}"))
                    .unwrap_or_default();
                // SAFETY: the caller promised a valid function for as long as it is installed.
                unsafe { cb(ud.get(), lvl as i32, line.as_ptr()) };
                let _ = IN_CALLBACK.try_with(|f| f.set(false));
            }),
        )));
        Ok(())
    })
}
