//! Argument helpers shared by every export: checked handles, strings, slices, out-parameters,
//! growable options structs and the two-call buffer pattern. Nothing here trusts the caller:
//! each check turns misuse into an [`FfiError`] with a message that names the argument.

use super::error::{FfiError, FfiResult, WV_ERR_BUFFER_TOO_SMALL, WV_ERR_UNSUPPORTED};
use crate::session::NO_TOKEN;
use std::ffi::{c_char, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The token value passed for "no token" (text released without a new token).
pub(crate) const C_NO_TOKEN: i32 = -1;

/// `struct_size` values above this are taken as garbage, not as a newer header's struct.
const MAX_STRUCT_SIZE: usize = 4096;

/// Tags every handle so that a freed, doubly freed or mistyped pointer is reported (best
/// effort: a pointer whose memory was already returned to the allocator cannot be checked
/// reliably).
pub(crate) struct Magic(AtomicU64);

/// The tag a handle gets when the caller frees it while wv still holds references to it.
const RELEASED: u64 = 0x7776_6672_6565_6421;

impl Magic {
    pub const fn new(tag: u64) -> Magic {
        Magic(AtomicU64::new(tag))
    }
}

impl Drop for Magic {
    fn drop(&mut self) {
        // Volatile so that the store is not elided before the memory is freed.
        // SAFETY: the pointer is to our own live field.
        unsafe { ptr::write_volatile(self.0.as_ptr(), 0) };
    }
}

/// A C handle: an `Arc<T>` whose raw pointer the caller holds (one reference); calls take
/// their own reference for their duration, so a handle freed during a call (from its own
/// callback, say) stays alive until the call returns.
pub(crate) trait Handle: Send + Sync + Sized + 'static {
    const MAGIC: u64;
    /// The C type name, for messages.
    const TYPE: &'static str;
    fn magic(&self) -> &Magic;
}

/// Give a new handle to the caller.
pub(crate) fn into_handle<T: Handle>(value: T) -> *mut T {
    Arc::into_raw(Arc::new(value)).cast_mut()
}

/// Take a reference to the object behind a caller's handle.
///
/// # Safety
/// `p` is NULL or a pointer returned by [`into_handle`] for this `T`.
pub(crate) unsafe fn clone_handle<T: Handle>(p: *const T, name: &str) -> FfiResult<Arc<T>> {
    if p.is_null() {
        return Err(FfiError::invalid(format!("{name} is NULL")));
    }
    match (*p).magic().0.load(Ordering::Acquire) {
        m if m == T::MAGIC => {}
        RELEASED => {
            return Err(FfiError::invalid(format!(
                "{name}: this {} has already been freed",
                T::TYPE
            )))
        }
        _ => {
            return Err(FfiError::invalid(format!(
                "{name} is not a valid {} pointer",
                T::TYPE
            )))
        }
    }
    Arc::increment_strong_count(p);
    Ok(Arc::from_raw(p))
}

/// Drop the caller's reference. NULL is a no-op; a second free of the same handle (while wv
/// still holds it) is detected and ignored, with a message in `wv_last_error`.
///
/// # Safety
/// As for [`clone_handle`].
pub(crate) unsafe fn free_handle<T: Handle>(p: *const T) {
    if p.is_null() {
        return;
    }
    let released =
        (*p).magic()
            .0
            .compare_exchange(T::MAGIC, RELEASED, Ordering::AcqRel, Ordering::Acquire);
    if released.is_err() {
        super::error::set_last_error(&format!(
            "{}_free: not a live {} (freed twice?); ignored",
            T::TYPE,
            T::TYPE
        ));
        return;
    }
    drop(Arc::from_raw(p));
}

/// A required input string: not NULL, valid UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    arg_opt_str(p, name)?.ok_or_else(|| FfiError::invalid(format!("{name} is NULL")))
}

/// An optional input string: NULL gives `None`; otherwise it must be valid UTF-8.
///
/// # Safety
/// As for [`arg_str`].
pub(crate) unsafe fn arg_opt_str<'a>(p: *const c_char, name: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p)
        .to_str()
        .map(Some)
        .map_err(|e| FfiError::invalid(format!("{name} is not valid UTF-8 ({e})")))
}

/// An input array of `n` elements; NULL is allowed when `n` is 0.
///
/// # Safety
/// `p` is NULL or points to `n` readable elements that outlive `'a`.
pub(crate) unsafe fn arg_slice<'a, T>(p: *const T, n: usize, name: &str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(FfiError::invalid(format!(
            "{name} is NULL but its length is {n}"
        )));
    }
    if n > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(FfiError::invalid(format!("{name}: length {n} is absurd")));
    }
    Ok(std::slice::from_raw_parts(p, n))
}

/// Check that a required out-parameter is not NULL (before doing any work).
pub(crate) fn check_out<T>(p: *mut T, name: &str) -> FfiResult<()> {
    if p.is_null() {
        Err(FfiError::invalid(format!("{name} is NULL")))
    } else {
        Ok(())
    }
}

/// Read a growable options struct whose first field is `uint32_t struct_size`.
///
/// `first_size` is the size of the struct's first published version. Older (smaller) sizes
/// are read up to their size and the rest keeps `defaults`; a newer (larger) size is accepted
/// when every byte past what this library knows is zero (fields left at their "unset" value),
/// and is `WV_ERR_UNSUPPORTED` otherwise, since ignoring a set field would be silent misuse.
///
/// # Safety
/// `p` is non-NULL and points to at least `struct_size` readable bytes.
pub(crate) unsafe fn read_options<T: Copy>(
    p: *const T,
    first_size: usize,
    defaults: T,
    what: &str,
) -> FfiResult<T> {
    let size = check_struct_size(p.cast::<u32>().read_unaligned(), first_size, what)?;
    let mut out = defaults;
    let known = size.min(size_of::<T>());
    ptr::copy_nonoverlapping(p.cast::<u8>(), ptr::addr_of_mut!(out).cast::<u8>(), known);
    if size > size_of::<T>() {
        let extra =
            std::slice::from_raw_parts(p.cast::<u8>().add(size_of::<T>()), size - size_of::<T>());
        if extra.iter().any(|&b| b != 0) {
            return Err(FfiError::new(
                WV_ERR_UNSUPPORTED,
                format!(
                    "{what}.struct_size is {size}: it comes from a newer wv.h and sets fields this \
                     library (which knows {} bytes) does not support",
                    size_of::<T>()
                ),
            ));
        }
    }
    Ok(out)
}

/// Fill a growable output struct whose first field is `uint32_t struct_size` (set by the
/// caller): the bytes this library knows are written (struct_size itself is left alone), and
/// any bytes beyond them, up to struct_size, are zeroed.
///
/// # Safety
/// `p` is non-NULL and points to at least `struct_size` writable bytes.
pub(crate) unsafe fn write_sized_out<T: Copy>(
    p: *mut T,
    value: &T,
    first_size: usize,
    what: &str,
) -> FfiResult<()> {
    let size = check_struct_size(p.cast::<u32>().read_unaligned(), first_size, what)?;
    let known = size.min(size_of::<T>());
    let skip = size_of::<u32>();
    ptr::copy_nonoverlapping(
        ptr::from_ref(value).cast::<u8>().add(skip),
        p.cast::<u8>().add(skip),
        known - skip,
    );
    if size > known {
        ptr::write_bytes(p.cast::<u8>().add(known), 0, size - known);
    }
    Ok(())
}

fn check_struct_size(size: u32, first_size: usize, what: &str) -> FfiResult<usize> {
    let size = size as usize;
    if size < first_size {
        return Err(FfiError::invalid(format!(
            "{what}.struct_size is {size}, smaller than the first version of {what} ({first_size} bytes); \
             set it to sizeof({what}) or call {what}_init"
        )));
    }
    if size > MAX_STRUCT_SIZE {
        return Err(FfiError::invalid(format!(
            "{what}.struct_size is {size}, which is absurd (uninitialised?); set it to sizeof({what})"
        )));
    }
    Ok(size)
}

/// The two-call buffer pattern. With `buf` NULL (and `capacity` 0) this is a size query:
/// `*out_count = src.len()` and `WV_OK`. With a buffer of at least `src.len()` elements, `src`
/// is copied and `*out_count = src.len()`. With a smaller buffer nothing is copied,
/// `*out_count` receives the required count, and the result is `WV_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `out_count` is non-NULL (checked by the caller); `buf` is NULL or has `capacity` writable
/// elements.
pub(crate) unsafe fn copy_out<T: Copy>(
    src: &[T],
    buf: *mut T,
    capacity: usize,
    out_count: *mut usize,
    what: &str,
) -> FfiResult<()> {
    if buf.is_null() {
        if capacity != 0 {
            return Err(FfiError::invalid(format!(
                "{what}: the buffer is NULL but its capacity is {capacity}"
            )));
        }
        *out_count = src.len();
        return Ok(());
    }
    if capacity < src.len() {
        *out_count = src.len();
        return Err(FfiError::new(
            WV_ERR_BUFFER_TOO_SMALL,
            format!(
                "{what}: the buffer holds {capacity} but {} are needed",
                src.len()
            ),
        ));
    }
    ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len());
    *out_count = src.len();
    Ok(())
}

/// Token ids from C (`int32_t`): negative ids are invalid. Range against the vocabulary is
/// checked by the engine.
pub(crate) fn tokens_from_c(ids: &[i32], name: &str) -> FfiResult<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(i, &t)| {
            u32::try_from(t)
                .map_err(|_| FfiError::invalid(format!("{name}[{i}] = {t} is not a token id")))
        })
        .collect()
}

/// A token id for C: `NO_TOKEN` becomes -1.
pub(crate) fn token_to_c(id: u32) -> i32 {
    if id == NO_TOKEN {
        C_NO_TOKEN
    } else {
        i32::try_from(id).unwrap_or(C_NO_TOKEN)
    }
}

/// A count for C as `uint32_t`, saturating.
pub(crate) fn u32_sat(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `Send`/`Sync` wrapper for a caller's `user_data` pointer: wv never dereferences it, only
/// hands it back to the caller's callback (which the contract says may run on another thread).
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub *mut std::ffi::c_void);
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

impl UserData {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub fn get(self) -> *mut std::ffi::c_void {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::WV_ERR_INVALID_ARGUMENT;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Opts {
        struct_size: u32,
        a: u32,
        b: u64,
    }

    #[test]
    fn options_sizes() {
        let d = Opts {
            struct_size: 0,
            a: 7,
            b: 9,
        };
        let o = Opts {
            struct_size: 16,
            a: 1,
            b: 2,
        };
        assert_eq!(unsafe { read_options(&o, 16, d, "opts") }.unwrap(), o);
        let small = Opts {
            struct_size: 8,
            ..o
        };
        let e = unsafe { read_options(&small, 16, d, "opts") }.unwrap_err();
        assert_eq!(e.status, WV_ERR_INVALID_ARGUMENT);
        // An older, smaller version (first version 8 bytes): only the prefix is read.
        let r = unsafe { read_options(&small, 8, d, "opts") }.unwrap();
        assert_eq!(
            r,
            Opts {
                struct_size: 8,
                a: 1,
                b: 9
            }
        );
        // A newer, larger struct: zero extra bytes are fine, non-zero ones are unsupported.
        let mut big = [0u64; 4];
        big[0] = 32 | (1u64 << 32);
        big[1] = 2;
        let r = unsafe { read_options(big.as_ptr().cast::<Opts>(), 16, d, "opts") }.unwrap();
        assert_eq!((r.a, r.b), (1, 2));
        big[3] = 1;
        let e = unsafe { read_options(big.as_ptr().cast::<Opts>(), 16, d, "opts") }.unwrap_err();
        assert_eq!(e.status, WV_ERR_UNSUPPORTED);
        big[0] = 1 << 20;
        let e = unsafe { read_options(big.as_ptr().cast::<Opts>(), 16, d, "opts") }.unwrap_err();
        assert_eq!(e.status, WV_ERR_INVALID_ARGUMENT);
    }

    #[test]
    fn sized_out_and_copy_out() {
        let mut big = [0xffu8; 24];
        big[..4].copy_from_slice(&24u32.to_ne_bytes());
        let v = Opts {
            struct_size: 99,
            a: 3,
            b: 4,
        };
        unsafe { write_sized_out(big.as_mut_ptr().cast::<Opts>(), &v, 16, "info") }.unwrap();
        assert_eq!(u32::from_ne_bytes(big[..4].try_into().unwrap()), 24);
        assert_eq!(u32::from_ne_bytes(big[4..8].try_into().unwrap()), 3);
        assert!(big[16..].iter().all(|&b| b == 0));

        let src = [1, 2, 3];
        let mut n = 0usize;
        unsafe { copy_out(&src, ptr::null_mut(), 0, &mut n, "x") }.unwrap();
        assert_eq!(n, 3);
        let mut buf = [0; 2];
        n = 0;
        let e = unsafe { copy_out(&src, buf.as_mut_ptr(), 2, &mut n, "x") }.unwrap_err();
        assert_eq!((e.status, n, buf), (WV_ERR_BUFFER_TOO_SMALL, 3, [0, 0]));
        let mut buf = [0; 4];
        unsafe { copy_out(&src, buf.as_mut_ptr(), 4, &mut n, "x") }.unwrap();
        assert_eq!((n, buf), (3, [1, 2, 3, 0]));
        assert!(unsafe { copy_out(&src, ptr::null_mut(), 5, &mut n, "x") }.is_err());
    }

    #[test]
    fn tokens() {
        assert_eq!(tokens_from_c(&[0, 5], "t").unwrap(), vec![0, 5]);
        assert!(tokens_from_c(&[1, -3], "t").is_err());
        assert_eq!(token_to_c(NO_TOKEN), -1);
        assert_eq!(token_to_c(12), 12);
    }
}
