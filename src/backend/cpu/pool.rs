//! Splitting work over the CPU's cores.
//!
//! [`parallel_for`] cuts `0..n` into contiguous ranges and runs them on a persistent pool of
//! worker threads (started on first use, one per core less the caller, who works too). A decode
//! step makes hundreds of small matrix products, so spawning threads for each would cost more
//! than the arithmetic. Small jobs run inline, and so does a job that arrives while the pool is
//! busy with another session's job (sessions on different threads never wait for each other).

use parking_lot::{Condvar, Mutex};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

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
    if t == 1 || work < (1 << 16) {
        f(0..n);
        return;
    }
    // Several ranges per thread so that uneven ranges balance out.
    let parts = (t * 4).min(n);
    let chunk = n.div_ceil(parts);
    let parts = n.div_ceil(chunk);
    let task = |i: usize| f(i * chunk..((i + 1) * chunk).min(n));
    match pool() {
        Some(p) => p.run(parts, &task),
        None => (0..parts).for_each(task),
    }
}

/// A type-erased job: `f(i)` for every task index `i < n_tasks`.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n_tasks: usize,
}
// SAFETY: the pointee is Sync, and `Pool::run` keeps it alive until every worker is done.
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    generation: u64,
    /// Workers still inside the current job.
    active: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    next: AtomicUsize,
    panicked: AtomicUsize,
}

struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    /// Held by the caller whose job is running.
    busy: Mutex<()>,
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = threads().saturating_sub(1);
        if workers == 0 {
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                active: 0,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            next: AtomicUsize::new(0),
            panicked: AtomicUsize::new(0),
        });
        let mut started = 0;
        for i in 0..workers {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wv-cpu-{i}"))
                .spawn(move || worker(&s));
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(Pool {
            shared,
            workers: started,
            busy: Mutex::new(()),
        })
    })
    .as_ref()
}

fn drain(s: &Shared, job: Job) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.n_tasks {
            break;
        }
        // SAFETY: `Pool::run` does not return before every worker has left this job.
        let f = unsafe { &*job.f };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))).is_err() {
            s.panicked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = s.state.lock();
            while st.generation == seen {
                s.wake.wait(&mut st);
            }
            seen = st.generation;
            match st.job {
                Some(j) => j,
                None => continue,
            }
        };
        drain(s, job);
        let mut st = s.state.lock();
        st.active -= 1;
        if st.active == 0 {
            s.done.notify_all();
        }
    }
}

impl Pool {
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let Some(_guard) = self.busy.try_lock() else {
            // Another session's job is running: do this one here rather than wait.
            (0..n_tasks).for_each(f);
            return;
        };
        let s = &*self.shared;
        // SAFETY: erase the borrow's lifetime; we wait below until no worker uses it.
        let f: *const (dyn Fn(usize) + Sync + '_) = f;
        let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
        let job = Job { f, n_tasks };
        s.next.store(0, Ordering::Relaxed);
        s.panicked.store(0, Ordering::Relaxed);
        {
            let mut st = s.state.lock();
            st.job = Some(job);
            st.active = self.workers;
            st.generation += 1;
            s.wake.notify_all();
        }
        drain(s, job);
        let mut st = s.state.lock();
        while st.active > 0 {
            s.done.wait(&mut st);
        }
        st.job = None;
        drop(st);
        if s.panicked.load(Ordering::Relaxed) > 0 {
            panic!("a CPU worker task panicked");
        }
    }
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

    /// Copy `src` into elements `i .. i + src.len()`.
    ///
    /// # Safety
    /// That range must be in bounds of the buffer this pointer came from, and no other thread
    /// may access it during the parallel region.
    #[inline]
    pub unsafe fn copy_from(&self, i: usize, src: &[T])
    where
        T: Copy,
    {
        // SAFETY: forwarded to the caller; `src` cannot overlap a range only this thread owns.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(i), src.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_every_index_once_even_from_many_threads() {
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for n in [1usize, 7, 64, 1000] {
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        parallel_for(n, 1 << 20, |r| {
                            for i in r {
                                hits[i].fetch_add(1, Ordering::Relaxed);
                            }
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }
}
