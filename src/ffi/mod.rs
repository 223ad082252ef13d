//! The stable C API: `include/wv.h`, generated from this module by cbindgen
//! (`cbindgen.toml`; `tests/capi.rs` fails when the checked-in header is stale and rewrites it
//! with `WV_UPDATE_HEADER=1`). The contract every function keeps is written in the header's
//! opening comment and in `docs/c-api.md`; in short:
//!
//! - Every export is thin: it checks its arguments (`ffi.rs`), calls the engine, and maps the
//!   result onto the one status scheme (`error.rs`), all inside a panic boundary (`panic.rs`).
//! - Out-parameters are written only on `WV_OK` (the one exception: the size out-parameter of
//!   the two-call buffer pattern on `WV_ERR_BUFFER_TOO_SMALL`). Errors leave a message for
//!   `wv_last_error`, which is thread-local.
//! - Handles are `Arc`s: the caller holds one reference, each call takes its own for its
//!   duration, sessions hold their model and streams their session.
//! - A session is claimed by one call at a time without blocking (`WV_ERR_BUSY` otherwise);
//!   cancellation only sets a flag and never takes the claim.
//!
//! Files: `error` (status codes, last error), `panic` (the boundary), `ffi` (argument helpers),
//! and one file per area: `model`, `session`, `generate`, `stream`, `tokenize`, `state`, `log`.

#![allow(non_camel_case_types)]
// Each export's safety contract is the header's (documented once, for every function).
#![allow(clippy::missing_safety_doc)]

// The order of these declarations is the order of the header's sections.
mod error;

mod model;

mod session;

mod generate;

mod stream;

mod tokenize;

mod state;

mod log;

#[allow(clippy::module_inception)]
mod ffi;
mod panic;

pub use self::error::*;
pub use self::generate::*;
pub use self::log::*;
pub use self::model::*;
pub use self::session::*;
pub use self::state::*;
pub use self::stream::*;
pub use self::tokenize::*;

use std::ffi::c_char;

/// The ABI major version: changes only when the ABI breaks.
pub const WV_ABI_VERSION_MAJOR: u32 = 1;
/// The ABI minor version: grows when functions, constants or struct fields are added.
pub const WV_ABI_VERSION_MINOR: u32 = 0;
/// The ABI version this header describes: `major << 16 | minor`. Compare with
/// `wv_abi_version()` at run time: the library is usable when the majors are equal and the
/// library's minor is at least the header's.
pub const WV_ABI_VERSION: u32 = (WV_ABI_VERSION_MAJOR << 16) | WV_ABI_VERSION_MINOR;

/// The ABI version of the loaded library: `major << 16 | minor` (see `WV_ABI_VERSION`).
#[no_mangle]
pub extern "C" fn wv_abi_version() -> u32 {
    WV_ABI_VERSION
}

/// The library's version ("0.1.0"), a static string.
#[no_mangle]
pub extern "C" fn wv_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast::<c_char>()
}

#[cfg(test)]
mod tests {
    #[test]
    fn abi_version_matches_the_engine() {
        assert_eq!(super::WV_ABI_VERSION, crate::ABI_VERSION);
        let v = unsafe { std::ffi::CStr::from_ptr(super::wv_version()) };
        assert_eq!(v.to_str().unwrap(), crate::VERSION);
    }
}
