//! One GPU: its primary context, one stream, device memory with accounting, and launches.
//!
//! Every driver call goes through [`Gpu::check`], which turns a failure into an
//! [`Error`] of kind `Device` (or `OutOfMemory` for allocations) naming the call.
//! [`DevBuf`] frees its memory on drop, so an error half-way through a load or a session's
//! creation frees everything taken so far.

pub use super::args::{Args, Kernel};
use super::ffi::{self, CUcontext, CUdevice, CUdeviceptr, CUevent, CUresult, CUstream, Driver};
use crate::error::{Error, Result};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

mod handles;
pub use handles::{fmt_bytes, DevBuf, Event, Graph};

/// The device, its context and stream. Shared (`Arc`) by the backend, its buffers and states.
pub struct Gpu {
    pub drv: &'static Driver,
    pub ordinal: usize,
    pub dev: CUdevice,
    ctx: CUcontext,
    pub stream: CUstream,
    pub name: String,
    pub cc: (i32, i32),
    pub sms: usize,
    pub total_mem: usize,
    pub max_smem_optin: usize,
    /// Bytes wv holds on the device now, and the most it has held.
    used: AtomicUsize,
    peak: AtomicUsize,
    /// Synchronise after every launch (WV_CUDA_SYNC=1): errors then name the kernel.
    pub sync_each: bool,
    /// A stream capture is in progress (no synchronisation allowed).
    capturing: AtomicBool,
    /// Launch with programmatic dependent launch (sm_90+, WV_CUDA_PDL=0 turns it off): each
    /// kernel may start while its predecessor finishes (see kernels/common.cuh).
    pdl: bool,
    /// Per-launch timing (WV_CUDA_PROFILE=1; PDL is then off so kernels do not overlap):
    /// events around each eager launch, drained by [`Gpu::profile_report`].
    profile: Option<parking_lot::Mutex<Profile>>,
    /// Measurement only: the decode products' per-block timeline buffer (0: none; timeline.rs).
    timeline: std::sync::atomic::AtomicU64,
}

/// Launch timings gathered while profiling: (name, start, end) per launch, events reused.
#[derive(Default)]
struct Profile {
    marks: Vec<(&'static str, usize, usize)>,
    events: Vec<CUevent>,
    used: usize,
}

// SAFETY: CUDA driver handles may be used from any thread once the context is made current there
// (every entry point calls `bind`); the backend serialises stream work behind a lock.
unsafe impl Send for Gpu {}
// SAFETY: as above.
unsafe impl Sync for Gpu {}

/// The rank of a tensor map of `dims` (innermost first), `strides` (the outer dimensions'
/// byte strides) and box `boxd`: 1 to 5, with rank - 1 strides and a box of the same rank, else
/// an internal error (what [`Gpu::tensor_map`] hands the driver must hold that many values).
fn map_rank(dims: &[u64], strides: &[u64], boxd: &[u32]) -> Result<usize> {
    let rank = dims.len();
    if !(1..=5).contains(&rank) || strides.len() + 1 != rank || boxd.len() != rank {
        return Err(Error::internal(format!(
            "tensor map of rank {rank} with {} strides and a box of rank {}",
            strides.len(),
            boxd.len()
        )));
    }
    Ok(rank)
}

impl Gpu {
    /// Open device `ordinal`: load the driver, initialise, retain the primary context, make a stream.
    pub fn open(ordinal: usize) -> Result<Arc<Gpu>> {
        let drv = ffi::driver().map_err(|e| Error::device(format!("cuda:{ordinal}: {e}")))?;
        let chk = |r: CUresult, what: &str| -> Result<()> {
            if r == ffi::CUDA_SUCCESS {
                Ok(())
            } else {
                Err(Error::device(format!(
                    "cuda:{ordinal}: {what} failed: {}",
                    ffi::driver_error_text(drv, r)
                )))
            }
        };
        // SAFETY: plain driver calls with valid out-pointers.
        unsafe {
            chk(
                (drv.cuInit)(0),
                "cuInit (is an NVIDIA GPU present and the driver loaded?)",
            )?;
            let mut n = 0;
            chk((drv.cuDeviceGetCount)(&mut n), "cuDeviceGetCount")?;
            if n <= 0 {
                return Err(Error::device(format!(
                    "cuda:{ordinal}: the driver sees no CUDA GPU"
                )));
            }
            if ordinal >= n as usize {
                return Err(Error::device(format!(
                    "cuda:{ordinal}: no such GPU (the driver sees {n})"
                )));
            }
            let mut dev = 0;
            chk((drv.cuDeviceGet)(&mut dev, ordinal as i32), "cuDeviceGet")?;
            let mut name = [0 as std::ffi::c_char; 256];
            chk(
                (drv.cuDeviceGetName)(name.as_mut_ptr(), 255, dev),
                "cuDeviceGetName",
            )?;
            let name = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let attr = |a| -> Result<i32> {
                let mut v = 0;
                chk(
                    (drv.cuDeviceGetAttribute)(&mut v, a, dev),
                    "cuDeviceGetAttribute",
                )?;
                Ok(v)
            };
            let cc = (
                attr(ffi::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(ffi::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            );
            let sms = attr(ffi::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
            let smem = attr(ffi::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?;
            let optin = attr(ffi::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .unwrap_or(smem)
                .max(smem);
            let mut total = 0usize;
            chk(
                (drv.cuDeviceTotalMem_v2)(&mut total, dev),
                "cuDeviceTotalMem",
            )?;
            let mut ctx = std::ptr::null_mut();
            chk(
                (drv.cuDevicePrimaryCtxRetain)(&mut ctx, dev),
                "cuDevicePrimaryCtxRetain",
            )?;
            if let Err(e) = chk((drv.cuCtxSetCurrent)(ctx), "cuCtxSetCurrent") {
                (drv.cuDevicePrimaryCtxRelease_v2)(dev);
                return Err(e);
            }
            let mut stream = std::ptr::null_mut();
            if let Err(e) = chk(
                (drv.cuStreamCreate)(&mut stream, ffi::CU_STREAM_NON_BLOCKING),
                "cuStreamCreate",
            ) {
                (drv.cuDevicePrimaryCtxRelease_v2)(dev);
                return Err(e);
            }
            let sync_each = std::env::var("WV_CUDA_SYNC").is_ok_and(|v| v != "0" && !v.is_empty());
            let profile = std::env::var("WV_CUDA_PROFILE").is_ok_and(|v| v != "0" && !v.is_empty());
            Ok(Arc::new(Gpu {
                drv,
                ordinal,
                dev,
                ctx,
                stream,
                name,
                cc,
                sms,
                total_mem: total,
                max_smem_optin: optin as usize,
                used: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                sync_each,
                capturing: AtomicBool::new(false),
                pdl: !profile
                    && cc.0 >= 9
                    && drv.cuLaunchKernelEx.is_some()
                    && std::env::var("WV_CUDA_PDL").map_or(true, |v| v != "0"),
                profile: profile.then(|| parking_lot::Mutex::new(Profile::default())),
                timeline: std::sync::atomic::AtomicU64::new(0),
            }))
        }
    }

    /// The timeline buffer `gemv_q4m` launches stamp (0: none; timeline.rs).
    pub fn timeline(&self) -> CUdeviceptr {
        self.timeline.load(Ordering::Relaxed)
    }

    /// Set the timeline buffer (timeline.rs; 0 turns it off).
    pub fn set_timeline(&self, buf: CUdeviceptr) {
        self.timeline.store(buf, Ordering::Relaxed);
    }

    /// Make this GPU's context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        // SAFETY: ctx is the retained primary context, live while self is.
        self.check(
            unsafe { (self.drv.cuCtxSetCurrent)(self.ctx) },
            "cuCtxSetCurrent",
        )
    }

    /// A driver result as a `Result`.
    pub fn check(&self, r: CUresult, what: &str) -> Result<()> {
        if r == ffi::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(Error::device(format!(
                "cuda:{}: {what} failed: {}",
                self.ordinal,
                ffi::driver_error_text(self.drv, r)
            )))
        }
    }

    pub fn sync(&self) -> Result<()> {
        // SAFETY: the stream is live while self is.
        self.check(
            unsafe { (self.drv.cuStreamSynchronize)(self.stream) },
            "cuStreamSynchronize (a kernel failed)",
        )
    }

    /// (free, total) device memory, as the driver reports it.
    pub fn mem_info(&self) -> (usize, usize) {
        let (mut f, mut t) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        unsafe { (self.drv.cuMemGetInfo_v2)(&mut f, &mut t) };
        (f, t)
    }

    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Allocate `bytes` of device memory for `what`. Out of memory is `OutOfMemory` with sizes.
    pub fn alloc(self: &Arc<Self>, bytes: usize, what: &str) -> Result<DevBuf> {
        let size = bytes.max(256);
        self.bind()?;
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: valid out-pointer; the context is current (callers bind first).
        let r = unsafe { (self.drv.cuMemAlloc_v2)(&mut ptr, size) };
        if r == ffi::CUDA_ERROR_OUT_OF_MEMORY {
            let (free, total) = self.mem_info();
            return Err(Error::oom(format!(
                "cuda:{}: out of GPU memory allocating {} for {what} (wv holds {}; the device has {} free of {})",
                self.ordinal,
                fmt_bytes(bytes),
                fmt_bytes(self.used_bytes()),
                fmt_bytes(free),
                fmt_bytes(total)
            )));
        }
        self.check(r, &format!("cuMemAlloc of {bytes} bytes for {what}"))?;
        let now = self.used.fetch_add(size, Ordering::Relaxed) + size;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(DevBuf {
            ptr,
            bytes,
            size,
            gpu: self.clone(),
        })
    }

    /// Allocate and fill from a host slice (synchronous).
    pub fn upload<T: Copy>(self: &Arc<Self>, data: &[T], what: &str) -> Result<DevBuf> {
        let bytes = std::mem::size_of_val(data);
        let b = self.alloc(bytes, what)?;
        b.write(data)?;
        Ok(b)
    }

    /// Launch `f` with `args` on the stream.
    pub fn launch(
        &self,
        f: &Kernel,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &mut Args,
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mark = self.profile_mark()?;
        let attr = self
            .pdl
            .then_some(ffi::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
        let r = self.launch_inner(f, grid, block, smem, args, attr, "launch");
        self.profile_done(mark, f.name)?;
        r
    }

    /// Launch `f` cooperatively (`CU_LAUNCH_ATTRIBUTE_COOPERATIVE`: every block resident at
    /// once, or the launch fails), for kernels whose blocks wait for one another.
    pub fn launch_cooperative(
        &self,
        f: &Kernel,
        blocks: u32,
        block: u32,
        smem: u32,
        args: &mut Args,
    ) -> Result<()> {
        if self.drv.cuLaunchKernelEx.is_none() {
            return Err(Error::device("this CUDA driver has no cuLaunchKernelEx"));
        }
        let mark = self.profile_mark()?;
        let r = self.launch_inner(
            f,
            (blocks, 1, 1),
            block,
            smem,
            args,
            Some(ffi::CU_LAUNCH_ATTRIBUTE_COOPERATIVE),
            "cooperative launch",
        );
        self.profile_done(mark, f.name)?;
        r
    }

    /// Blocks of `block` threads with `smem` bytes of dynamic shared memory that fit on one SM
    /// (`None` when the driver cannot say).
    pub fn occupancy(&self, f: &Kernel, block: u32, smem: usize) -> Option<usize> {
        let occ = self.drv.cuOccupancyMaxActiveBlocksPerMultiprocessor?;
        let mut n = 0;
        // SAFETY: valid out-pointer and a function of a loaded module.
        let r = unsafe { occ(&mut n, f.func, block as i32, smem) };
        (r == 0 && n > 0).then_some(n as usize)
    }

    /// Start timing one operation when profiling (outside stream capture).
    pub fn profile_mark(&self) -> Result<Option<usize>> {
        let Some(p) = &self.profile else {
            return Ok(None);
        };
        if self.capturing.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut p = p.lock();
        let i = self.profile_event(&mut p)?;
        Ok(Some(i))
    }

    /// Finish the operation started by `mark` under `name`.
    pub fn profile_done(&self, mark: Option<usize>, name: &'static str) -> Result<()> {
        let (Some(i), Some(p)) = (mark, &self.profile) else {
            return Ok(());
        };
        let mut p = p.lock();
        let j = self.profile_event(&mut p)?;
        p.marks.push((name, i, j));
        Ok(())
    }

    /// Record the next pooled event on the stream; its index.
    fn profile_event(&self, p: &mut Profile) -> Result<usize> {
        if p.used == p.events.len() {
            let mut e = std::ptr::null_mut();
            // SAFETY: valid out-pointer.
            self.check(
                unsafe { (self.drv.cuEventCreate)(&mut e, 0) },
                "cuEventCreate",
            )?;
            p.events.push(e);
        }
        let i = p.used;
        p.used += 1;
        // SAFETY: live event and stream.
        self.check(
            unsafe { (self.drv.cuEventRecord)(p.events[i], self.stream) },
            "cuEventRecord",
        )?;
        Ok(i)
    }

    /// Per-operation GPU time since the last report, as (name, launches, total ms), longest
    /// first; `None` unless profiling. Synchronises the stream.
    pub fn profile_report(&self) -> Result<Option<Vec<(String, usize, f64)>>> {
        let Some(p) = &self.profile else {
            return Ok(None);
        };
        self.sync()?;
        let mut p = p.lock();
        let mut rows: Vec<(String, usize, f64)> = Vec::new();
        for &(name, i, j) in &p.marks {
            let mut ms = 0f32;
            // SAFETY: both events were recorded and the stream is synchronised.
            self.check(
                unsafe { (self.drv.cuEventElapsedTime)(&mut ms, p.events[i], p.events[j]) },
                "cuEventElapsedTime",
            )?;
            match rows.iter_mut().find(|r| r.0 == name) {
                Some(r) => {
                    r.1 += 1;
                    r.2 += ms as f64;
                }
                None => rows.push((name.to_string(), 1, ms as f64)),
            }
        }
        p.marks.clear();
        p.used = 0;
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(Some(rows))
    }

    /// Launch on the stream: with launch attribute `attr` (set to 1) through
    /// `cuLaunchKernelEx` where given and the driver has it, else `cuLaunchKernel`; `what`
    /// names the launch in an error.
    #[allow(clippy::too_many_arguments)]
    fn launch_inner(
        &self,
        f: &Kernel,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &mut Args,
        attr: Option<u32>,
        what: &str,
    ) -> Result<()> {
        let mut ptrs = args.ptrs();
        let r = if let (Some(id), Some(ex)) = (attr, self.drv.cuLaunchKernelEx) {
            let mut attr = ffi::CUlaunchAttribute {
                id,
                pad: 0,
                value: [1, 0, 0, 0, 0, 0, 0, 0],
            };
            let cfg = ffi::CUlaunchConfig {
                grid: [grid.0, grid.1, grid.2],
                block: [block, 1, 1],
                shared_mem: smem,
                stream: self.stream,
                attrs: &mut attr,
                num_attrs: 1,
            };
            // SAFETY: as below; cfg and attr outlive the call.
            unsafe { ex(&cfg, f.func, ptrs.as_mut_ptr(), std::ptr::null_mut()) }
        } else {
            // SAFETY: f is a function of a loaded module; ptrs point at one 8-byte slot per
            // kernel parameter, holding its value in the low bytes (little-endian), as the
            // kernel expects.
            unsafe {
                (self.drv.cuLaunchKernel)(
                    f.func,
                    grid.0,
                    grid.1,
                    grid.2,
                    block,
                    1,
                    1,
                    smem,
                    self.stream,
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
        };
        self.check(
            r,
            &format!(
                "{what} of {} (grid {grid:?}, block {block}, smem {smem})",
                f.name
            ),
        )?;
        if self.sync_each && !self.capturing.load(Ordering::Relaxed) {
            self.sync()
                .map_err(|e| e.context(format!("after kernel {}", f.name)))?;
        }
        Ok(())
    }

    /// Whether this driver can capture and replay CUDA graphs.
    pub fn has_graphs(&self) -> bool {
        let d = self.drv;
        d.cuStreamBeginCapture_v2.is_some()
            && d.cuStreamEndCapture.is_some()
            && d.cuGraphInstantiateWithFlags.is_some()
            && d.cuGraphLaunch.is_some()
            && d.cuGraphExecDestroy.is_some()
            && d.cuGraphDestroy.is_some()
    }

    /// Capture the launches `f` makes on the stream into a graph (nothing runs until replayed).
    pub fn capture(self: &Arc<Self>, f: impl FnOnce() -> Result<()>) -> Result<Graph> {
        let d = self.drv;
        let (Some(begin), Some(end), Some(inst), Some(destroy)) = (
            d.cuStreamBeginCapture_v2,
            d.cuStreamEndCapture,
            d.cuGraphInstantiateWithFlags,
            d.cuGraphDestroy,
        ) else {
            return Err(Error::device("this CUDA driver has no graph API"));
        };
        // SAFETY: live stream; thread-local capture mode leaves other threads unaffected.
        self.check(
            unsafe { begin(self.stream, ffi::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) },
            "cuStreamBeginCapture",
        )?;
        self.capturing.store(true, Ordering::Relaxed);
        let r = f();
        self.capturing.store(false, Ordering::Relaxed);
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the capture begun above (always, also after a failed launch).
        let re = unsafe { end(self.stream, &mut graph) };
        let result = r
            .and_then(|_| self.check(re, "cuStreamEndCapture"))
            .and_then(|_| {
                let mut exec = std::ptr::null_mut();
                // SAFETY: graph is the captured graph; exec an out-pointer.
                self.check(unsafe { inst(&mut exec, graph, 0) }, "cuGraphInstantiate")?;
                Ok(Graph {
                    exec,
                    gpu: self.clone(),
                })
            });
        if !graph.is_null() {
            // SAFETY: the instantiated executable does not need the graph.
            unsafe { destroy(graph) };
        }
        result
    }

    /// Replay a captured graph on the stream.
    pub fn replay(&self, g: &Graph) -> Result<()> {
        let launch = self
            .drv
            .cuGraphLaunch
            .ok_or_else(|| Error::device("no cuGraphLaunch"))?;
        let mark = self.profile_mark()?;
        // SAFETY: live executable graph and stream.
        self.check(unsafe { launch(g.exec, self.stream) }, "cuGraphLaunch")?;
        self.profile_done(mark, "decode_graph")?;
        if self.sync_each {
            self.sync().map_err(|e| e.context("after a graph replay"))?;
        }
        Ok(())
    }

    pub fn memset_u32(&self, buf: CUdeviceptr, value: u32, count: usize) -> Result<()> {
        // SAFETY: callers pass a pointer into a live allocation of at least count words.
        self.check(
            unsafe { (self.drv.cuMemsetD32Async)(buf, value, count, self.stream) },
            "cuMemsetD32Async",
        )
    }

    pub fn copy_dtod(&self, dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> Result<()> {
        // SAFETY: callers pass ranges inside live allocations.
        self.check(
            unsafe { (self.drv.cuMemcpyDtoDAsync_v2)(dst, src, bytes, self.stream) },
            "cuMemcpyDtoDAsync",
        )
    }

    /// Copy `out.len()` elements from device address `src` into `out`, waiting for the stream.
    pub fn download<T: Copy>(&self, src: CUdeviceptr, out: &mut [T]) -> Result<()> {
        let bytes = std::mem::size_of_val(out);
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: out is a writable host buffer of `bytes`; src a live device range; we
        // synchronise before returning, so the async copy is complete before `out` is used.
        unsafe {
            self.check(
                (self.drv.cuMemcpyDtoHAsync_v2)(
                    out.as_mut_ptr() as *mut c_void,
                    src,
                    bytes,
                    self.stream,
                ),
                "cuMemcpyDtoHAsync",
            )?;
        }
        self.sync()
    }

    /// Whether this driver can make tensor maps ([`Self::tensor_map`]).
    pub fn has_tensor_maps(&self) -> bool {
        self.drv.cuTensorMapEncodeTiled.is_some()
    }

    /// A tensor map (`cuTensorMapEncodeTiled`) of rank `dims.len()` (1 to 5) over `ptr`: `dims`
    /// elements per dimension, innermost first; `strides` the byte strides of the outer
    /// dimensions (rank - 1 of them); `boxd` the box copied per request. An error where the
    /// driver has no tensor maps or refuses these values (alignment, limits).
    pub fn tensor_map(
        &self,
        dtype: i32,
        ptr: CUdeviceptr,
        dims: &[u64],
        strides: &[u64],
        boxd: &[u32],
        swizzle: i32,
    ) -> Result<ffi::CUtensorMap> {
        let rank = map_rank(dims, strides, boxd)?;
        let f = self
            .drv
            .cuTensorMapEncodeTiled
            .ok_or_else(|| Error::device("this CUDA driver has no cuTensorMapEncodeTiled"))?;
        let mut m = ffi::CUtensorMap { opaque: [0; 16] };
        let elem = [1u32; 5];
        // SAFETY: m is a writable CUtensorMap; dims, strides, boxd and elem hold rank, rank - 1,
        // rank and at least rank values (checked above); the driver checks the values and
        // returns an error code for ones it cannot encode.
        let r = unsafe {
            f(
                &mut m,
                dtype,
                rank as u32,
                ptr as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxd.as_ptr(),
                elem.as_ptr(),
                0,
                swizzle,
                ffi::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                0,
            )
        };
        self.check(r, "cuTensorMapEncodeTiled")?;
        Ok(m)
    }

    /// Let `f` launch with up to `bytes` of dynamic shared memory (above the default 48 KiB).
    pub fn allow_smem(&self, f: &Kernel, bytes: usize) -> Result<()> {
        // SAFETY: a function of a loaded module; the attribute takes a byte count.
        self.check(
            unsafe {
                (self.drv.cuFuncSetAttribute)(
                    f.func,
                    ffi::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
            },
            &format!(
                "cuFuncSetAttribute({}, max dynamic shared memory {bytes})",
                f.name
            ),
        )
    }

    /// A pair of events for timing (tests and benchmarks).
    pub fn event(&self) -> Result<Event<'_>> {
        let mut e = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check(
            unsafe { (self.drv.cuEventCreate)(&mut e, 0) },
            "cuEventCreate",
        )?;
        Ok(Event { e, gpu: self })
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: every DevBuf holds an Arc<Gpu>, so no allocation outlives this; the stream
        // and the context reference were made in `open`.
        unsafe {
            (self.drv.cuCtxSetCurrent)(self.ctx);
            (self.drv.cuStreamSynchronize)(self.stream);
            if let Some(p) = &self.profile {
                for &e in &p.lock().events {
                    (self.drv.cuEventDestroy_v2)(e);
                }
            }
            (self.drv.cuStreamDestroy_v2)(self.stream);
            (self.drv.cuDevicePrimaryCtxRelease_v2)(self.dev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::map_rank;

    #[test]
    fn tensor_maps_need_matching_ranks_of_one_to_five() {
        // gemm_q4_tma's maps: X and the row layout's 2-D, the unit-major copy's 3-D and 4-D.
        assert_eq!(map_rank(&[5120, 512], &[10240], &[64, 128]).unwrap(), 2);
        assert_eq!(
            map_rank(&[128, 40, 40], &[8576, 343040], &[128, 1, 1]).unwrap(),
            3
        );
        assert_eq!(
            map_rank(&[128, 16, 40, 40], &[512, 8576, 343040], &[128, 8, 1, 1]).unwrap(),
            4
        );
        // Strides for every outer dimension, a box of the tensor's rank, at most 5 dimensions.
        for (dims, strides, boxd) in [
            (vec![128u64, 40], vec![], vec![128u32, 1]),
            (vec![128, 40], vec![512, 8576], vec![128, 1]),
            (vec![128, 40], vec![512], vec![128]),
            (vec![], vec![], vec![]),
            (vec![1; 6], vec![16; 5], vec![1; 6]),
        ] {
            let e = map_rank(&dims, &strides, &boxd).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::Internal, "{e}");
            assert!(e.to_string().contains("tensor map of rank"), "{e}");
        }
    }
}
