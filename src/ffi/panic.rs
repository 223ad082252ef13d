//! The panic boundary. Every export runs its body through one of these functions, so a panic
//! (a bug in wv) never unwinds into the host: it becomes `WV_ERR_INTERNAL` with the panic's
//! message in `wv_last_error`, and failures become their status with their message.

use super::error::{set_last_error, wv_status, FfiResult, WV_ERR_INTERNAL, WV_OK};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic with no message)".to_string()
    }
}

/// The message recorded for a caught panic.
pub(crate) fn panic_error_message(payload: &(dyn Any + Send)) -> String {
    format!(
        "internal error (a panic in wv, please report it): {}",
        panic_message(payload)
    )
}

/// Run an export whose body returns a status of its own on success (`WV_OK`, `WV_DONE`, ...).
/// Errors set the thread's last error; panics become `WV_ERR_INTERNAL`.
pub(crate) fn guard_status(f: impl FnOnce() -> FfiResult<wv_status>) -> wv_status {
    // AssertUnwindSafe: nothing the closure touches is observed after a panic except through
    // the session mutex, whose poisoning is checked (see session.rs).
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_error_message(payload.as_ref()));
            WV_ERR_INTERNAL
        }
    }
}

/// Run an export that returns `WV_OK` on success.
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> wv_status {
    guard_status(|| f().map(|()| WV_OK))
}

/// Run an export that returns a plain value (or nothing); a panic records its message as the
/// last error and returns `fallback`.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(&panic_error_message(payload.as_ref()));
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::{wv_last_error, FfiError, WV_ERR_CONTEXT_FULL};
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        unsafe { CStr::from_ptr(wv_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panics_become_internal_errors() {
        let st = guard(|| panic!("kaboom {}", 42));
        assert_eq!(st, WV_ERR_INTERNAL);
        assert!(last().contains("kaboom 42"), "{}", last());
        let st = guard(|| std::panic::panic_any(7u8));
        assert_eq!(st, WV_ERR_INTERNAL);
        assert!(last().contains("no message"));
        assert_eq!(guard_value(5, || -> i32 { panic!("static str") }), 5);
        assert!(last().contains("static str"));
    }

    #[test]
    fn errors_and_success() {
        assert_eq!(
            guard(|| Err(FfiError::new(WV_ERR_CONTEXT_FULL, "full up"))),
            WV_ERR_CONTEXT_FULL
        );
        assert_eq!(last(), "full up");
        assert_eq!(guard(|| Ok(())), WV_OK);
        assert_eq!(last(), "full up", "success leaves the last error alone");
        assert_eq!(guard_status(|| Ok(11)), 11);
    }
}
