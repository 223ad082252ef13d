//! Launches of kernels/sample.cu: the device's greedy choice, top-k / top-p sampling and the
//! repetition penalty, so that one token id crosses to the host per step.

use super::{Kernels, SAMPLE_CAP};
use crate::backend::cuda::device::{Args, Gpu};
use crate::backend::cuda::ffi::CUdeviceptr;
use crate::error::Result;

impl Kernels {
    pub fn argmax(&self, gpu: &Gpu, v: CUdeviceptr, n: usize, out: CUdeviceptr) -> Result<()> {
        let mut a = Args::new();
        a.ptr(v).int(n).ptr(out);
        gpu.launch(&self.argmax, (1, 1, 1), 1024, 0, &mut a)
    }

    /// Temperature, top-k (1..=SAMPLE_CAP), top-p and the draw with `u` over `v` (see
    /// kernels/sample.cu): `out[0]` = the id, or `u32::MAX` when too many values tie.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_topk(
        &self,
        gpu: &Gpu,
        v: CUdeviceptr,
        n: usize,
        inv_t: f32,
        k: usize,
        top_p: f32,
        u: f64,
        out: CUdeviceptr,
    ) -> Result<()> {
        debug_assert!((1..=SAMPLE_CAP).contains(&k));
        let mut a = Args::new();
        a.ptr(v).int(n).f32(inv_t).int(k).f32(top_p).f64(u).ptr(out);
        // SAFETY: v holds n floats, out one u32; one block, its shared memory static.
        gpu.launch(&self.sample_topk, (1, 1, 1), 1024, 0, &mut a)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn penalty(
        &self,
        gpu: &Gpu,
        src: CUdeviceptr,
        dst: CUdeviceptr,
        ids: CUdeviceptr,
        n_ids: usize,
        vocab: usize,
        p: f32,
    ) -> Result<()> {
        let mut a = Args::new();
        a.ptr(src).ptr(dst).ptr(ids).int(n_ids).int(vocab).f32(p);
        gpu.launch(
            &self.penalty,
            (n_ids.div_ceil(256).clamp(1, 1024) as u32, 1, 1),
            256,
            0,
            &mut a,
        )
    }
}
