//! A second stream beside the main one, for work that no kernel of a pass waits for: decode's
//! L2 prefetches of the next product's weights (`l2_prefetch_q4`, kernels/gemv.cu).
//!
//! [`SideStream::fork`] makes the side stream's next launch wait for everything enqueued on the
//! main stream so far; [`SideStream::join`] makes the main stream's next work wait for the side
//! stream. Under stream capture these are graph edges: a captured decode step becomes a graph
//! with a branch per fork, all joined before the capture ends (which requires it).

use super::device::{Args, Gpu, Kernel};
use super::ffi::{self, CUevent, CUstream};
use crate::error::{Error, Result};
use std::sync::Arc;

pub struct SideStream {
    gpu: Arc<Gpu>,
    stream: CUstream,
    /// Recorded on the main stream by `fork`, on the side stream by `join` (an event may be
    /// recorded again once waited on: the wait takes the state at the time of the call).
    fork_ev: CUevent,
    join_ev: CUevent,
}

// SAFETY: driver handles usable from any thread with the context current; the backend
// serialises stream work behind its lock.
unsafe impl Send for SideStream {}
// SAFETY: as above.
unsafe impl Sync for SideStream {}

impl SideStream {
    /// A side stream, or an error where the driver lacks `cuStreamWaitEvent`.
    pub fn new(gpu: &Arc<Gpu>) -> Result<SideStream> {
        let d = gpu.drv;
        if d.cuStreamWaitEvent.is_none() {
            return Err(Error::device("this CUDA driver has no cuStreamWaitEvent"));
        }
        let mut stream = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the context is current (the caller bound it).
        gpu.check(
            unsafe { (d.cuStreamCreate)(&mut stream, ffi::CU_STREAM_NON_BLOCKING) },
            "cuStreamCreate (side stream)",
        )?;
        let mut s = SideStream {
            gpu: gpu.clone(),
            stream,
            fork_ev: std::ptr::null_mut(),
            join_ev: std::ptr::null_mut(),
        };
        for e in [&mut s.fork_ev, &mut s.join_ev] {
            // SAFETY: valid out-pointer. On failure Drop destroys what was made.
            gpu.check(
                unsafe { (d.cuEventCreate)(e, ffi::CU_EVENT_DISABLE_TIMING) },
                "cuEventCreate (side stream)",
            )?;
        }
        Ok(s)
    }

    fn wait(&self, waiter: CUstream, ev: CUevent, recorder: CUstream, what: &str) -> Result<()> {
        let d = self.gpu.drv;
        let wait = d
            .cuStreamWaitEvent
            .ok_or_else(|| Error::device("no cuStreamWaitEvent"))?;
        // SAFETY: live event and streams of this context.
        self.gpu
            .check(unsafe { (d.cuEventRecord)(ev, recorder) }, what)?;
        // SAFETY: as above.
        self.gpu.check(unsafe { wait(waiter, ev, 0) }, what)
    }

    /// The side stream's next launches wait for the main stream's work so far.
    pub fn fork(&self) -> Result<()> {
        self.wait(
            self.stream,
            self.fork_ev,
            self.gpu.stream,
            "side stream fork",
        )
    }

    /// The main stream's next work waits for the side stream's work so far.
    pub fn join(&self) -> Result<()> {
        self.wait(
            self.gpu.stream,
            self.join_ev,
            self.stream,
            "side stream join",
        )
    }

    /// Launch `f` on the side stream (no programmatic dependent launch: it waits for its whole
    /// predecessor, as a graph edge from a fork does).
    pub fn launch(&self, f: &Kernel, blocks: u32, block: u32, args: &mut Args) -> Result<()> {
        if blocks == 0 {
            return Ok(());
        }
        let mut ptrs = args.ptrs();
        // SAFETY: f is a function of a loaded module; ptrs point at one 8-byte slot per kernel
        // parameter holding its value in the low bytes, as the kernel expects.
        let r = unsafe {
            (self.gpu.drv.cuLaunchKernel)(
                f.func,
                blocks,
                1,
                1,
                block,
                1,
                1,
                0,
                self.stream,
                ptrs.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.gpu.check(
            r,
            &format!("launch of {} on the side stream ({blocks} blocks)", f.name),
        )
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        let d = self.gpu.drv;
        // SAFETY: handles made in `new` (null ones skipped), destroyed once.
        unsafe {
            let _ = self.gpu.bind();
            (d.cuStreamSynchronize)(self.stream);
            for e in [self.fork_ev, self.join_ev] {
                if !e.is_null() {
                    (d.cuEventDestroy_v2)(e);
                }
            }
            (d.cuStreamDestroy_v2)(self.stream);
        }
    }
}
