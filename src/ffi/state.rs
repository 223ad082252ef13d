//! Saving and restoring a session's state (its conversation: system prompt and tokens) to a
//! caller's buffer or a file. The bytes carry a header with a magic number, the format and
//! ABI versions and the model's fingerprint, and a checksum; restoring refills the KV cache
//! lazily on the next generation call.

use super::error::{wv_status, FfiError, FfiResult, WV_ERR_MODEL_FORMAT};
use super::ffi::{arg_slice, arg_str, check_out, copy_out};
use super::panic::guard;
use super::session::{wv_session, Busy};
use crate::error::Error;
use std::ffi::c_char;
use std::io::Write;
use std::path::Path;

/// Larger files are not session states (the largest context's tokens take 16 MiB).
const MAX_STATE_FILE: u64 = 256 << 20;

/// Save the session's state into `buf`, in the two-call pattern: with `buf` NULL and
/// `capacity` 0, `*out_size` receives the size in bytes and the result is `WV_OK`; with a
/// buffer that large the state is written; with a smaller one nothing is written, `*out_size`
/// receives the size needed, and the result is `WV_ERR_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn wv_session_save_state(
    session: *mut wv_session,
    buf: *mut u8,
    capacity: usize,
    out_size: *mut usize,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        check_out(out_size, "out_size")?;
        let bytes = busy.lock()?.save_state();
        copy_out(&bytes, buf, capacity, out_size, "wv_session_save_state")
    })
}

/// Save the session's state to the file at `path` (UTF-8), replacing it. The file is written
/// under a temporary name and renamed, so a failed save leaves an existing file intact.
/// `WV_ERR_IO` if it cannot be written.
#[no_mangle]
pub unsafe extern "C" fn wv_session_save_file(
    session: *mut wv_session,
    path: *const c_char,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        let path = Path::new(arg_str(path, "path")?);
        let bytes = busy.lock()?.save_state();
        write_atomically(path, &bytes)
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> FfiResult<()> {
    let name = path
        .file_name()
        .ok_or_else(|| FfiError::invalid(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".wv-tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FfiError::from(Error::io(path, e))
    })
}

/// Restore a state saved by `wv_session_save_state` or `wv_session_save_file`, replacing the
/// session's conversation (and its system prompt). On any error the session is unchanged.
///
/// Errors: `WV_ERR_MODEL_FORMAT` (not a wv session state, corrupt, truncated, or saved by a
/// library of another ABI major version or state format), `WV_ERR_INVALID_ARGUMENT` (NULLs,
/// or saved with a different model), `WV_ERR_CONTEXT_FULL` (more tokens than this session's
/// context holds).
#[no_mangle]
pub unsafe extern "C" fn wv_session_restore_state(
    session: *mut wv_session,
    data: *const u8,
    size: usize,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        let bytes = arg_slice(data, size, "data")?;
        busy.lock()?.restore_state(bytes)?;
        Ok(())
    })
}

/// Restore a state from the file at `path` (UTF-8), as `wv_session_restore_state` does;
/// `WV_ERR_IO` if the file cannot be read.
#[no_mangle]
pub unsafe extern "C" fn wv_session_restore_file(
    session: *mut wv_session,
    path: *const c_char,
) -> wv_status {
    guard(|| {
        let busy = Busy::claim_handle(session)?;
        let path = Path::new(arg_str(path, "path")?);
        let io = |e| FfiError::from(Error::io(path, e));
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_STATE_FILE {
            return Err(FfiError::new(
                WV_ERR_MODEL_FORMAT,
                format!(
                    "{}: {len} bytes is too large to be a wv session state",
                    path.display()
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        busy.lock()?
            .restore_state(&bytes)
            .map_err(|e| e.context(path.display()))?;
        Ok(())
    })
}
