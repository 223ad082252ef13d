//! Splitting work over the CPU's cores.
//!
//! [`parallel_for`] cuts `0..n` into one contiguous range per thread and runs them on scoped
//! threads (the calling thread takes the first). Small jobs run inline: spawning costs tens of
//! microseconds, more than a tiny model's whole matrix product.

use std::ops::Range;
use std::sync::OnceLock;

/// Threads to use: `WV_THREADS` if set, else the number of cores.
pub fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("WV_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Run `f` over `0..n` split into contiguous ranges, in parallel when `work` (a rough count of
/// multiply-adds for the whole job) is worth it.
pub fn parallel_for<F>(n: usize, work: usize, f: F)
where
    F: Fn(Range<usize>) + Sync,
{
    let t = threads().min(n).max(1);
    if t == 1 || work < (1 << 18) {
        f(0..n);
        return;
    }
    let chunk = n.div_ceil(t);
    std::thread::scope(|s| {
        let f = &f;
        for i in 1..t {
            let r = (i * chunk).min(n)..((i + 1) * chunk).min(n);
            if !r.is_empty() {
                s.spawn(move || f(r));
            }
        }
        f(0..chunk.min(n));
    });
}

/// A raw pointer that may cross threads. Users promise that threads write disjoint elements.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
// SAFETY: only used by parallel_for callers that write disjoint index sets (see each use).
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// # Safety
    /// `i` must be in bounds of the buffer this pointer came from, and no other thread may
    /// access element `i` during the parallel region.
    #[inline]
    pub unsafe fn write(&self, i: usize, v: T) {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.add(i).write(v) }
    }
}
