//! Handles a [`Gpu`] hands out, each released on drop: instantiated graphs, events and device
//! memory (with the GPU's accounting of what wv holds).

use super::Gpu;
use crate::backend::cuda::ffi::{CUdeviceptr, CUevent, CUgraphExec};
use crate::error::{Error, Result};
use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An instantiated CUDA graph, destroyed on drop.
pub struct Graph {
    pub(super) exec: CUgraphExec,
    pub(super) gpu: Arc<Gpu>,
}

// SAFETY: an executable graph is a handle usable from any thread with the context current.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        if let Some(d) = self.gpu.drv.cuGraphExecDestroy {
            // SAFETY: created by cuGraphInstantiate, destroyed once.
            unsafe {
                let _ = self.gpu.bind();
                d(self.exec);
            }
        }
    }
}

/// A CUDA event (for timing).
pub struct Event<'a> {
    pub(super) e: CUevent,
    pub(super) gpu: &'a Gpu,
}

impl Event<'_> {
    pub fn record(&self) -> Result<()> {
        // SAFETY: live event and stream.
        self.gpu.check(
            unsafe { (self.gpu.drv.cuEventRecord)(self.e, self.gpu.stream) },
            "cuEventRecord",
        )
    }
    /// Milliseconds from `start` to this event (waits for this event).
    pub fn since(&self, start: &Event<'_>) -> Result<f32> {
        let mut ms = 0f32;
        // SAFETY: live events.
        unsafe {
            self.gpu.check(
                (self.gpu.drv.cuEventSynchronize)(self.e),
                "cuEventSynchronize",
            )?;
            self.gpu.check(
                (self.gpu.drv.cuEventElapsedTime)(&mut ms, start.e, self.e),
                "cuEventElapsedTime",
            )?;
        }
        Ok(ms)
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        // SAFETY: the event was created by cuEventCreate.
        unsafe { (self.gpu.drv.cuEventDestroy_v2)(self.e) };
    }
}

/// Device memory, freed on drop.
pub struct DevBuf {
    pub ptr: CUdeviceptr,
    /// Bytes asked for.
    pub bytes: usize,
    /// Bytes allocated (at least 256).
    pub(super) size: usize,
    pub(super) gpu: Arc<Gpu>,
}

impl DevBuf {
    /// Address of byte `offset`.
    pub fn at(&self, offset: usize) -> CUdeviceptr {
        debug_assert!(offset <= self.bytes);
        self.ptr + offset as u64
    }
    /// Copy a host slice into the start of this buffer (synchronous).
    pub fn write<T: Copy>(&self, data: &[T]) -> Result<()> {
        self.write_at(0, data)
    }
    pub fn write_at<T: Copy>(&self, offset: usize, data: &[T]) -> Result<()> {
        let bytes = std::mem::size_of_val(data);
        if offset + bytes > self.bytes {
            return Err(Error::internal(format!(
                "upload of {bytes} bytes at {offset} overflows a buffer of {}",
                self.bytes
            )));
        }
        if bytes == 0 {
            return Ok(());
        }
        // On the stream (ordered after earlier work there), then wait: `data` may be freed next.
        // SAFETY: the range is inside this allocation; data is a readable host slice that
        // outlives the copy (we synchronise before returning).
        self.gpu.check(
            unsafe {
                (self.gpu.drv.cuMemcpyHtoDAsync_v2)(
                    self.at(offset),
                    data.as_ptr() as *const c_void,
                    bytes,
                    self.gpu.stream,
                )
            },
            "cuMemcpyHtoDAsync",
        )?;
        self.gpu.sync()
    }
    /// Copy the buffer's first `out.len()` elements to the host.
    pub fn read<T: Copy>(&self, out: &mut [T]) -> Result<()> {
        if std::mem::size_of_val(out) > self.bytes {
            return Err(Error::internal("download larger than the buffer"));
        }
        self.gpu.download(self.ptr, out)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: ptr came from cuMemAlloc and is freed once; the context is made current
        // first, as the drop may run on any thread.
        unsafe {
            let _ = self.gpu.bind();
            (self.gpu.drv.cuMemFree_v2)(self.ptr);
        }
        self.gpu.used.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// "1.23 GiB"
pub fn fmt_bytes(b: usize) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} bytes")
    }
}
