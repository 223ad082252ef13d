//! Launches of kernels/attention.cu: decode attention (split over key chunks, then combined)
//! and prefill attention (tensor-core FlashAttention-2 tiles, or the SIMT kernels).

use super::Kernels;
use crate::backend::cuda::device::{Args, Gpu};
use crate::backend::cuda::ffi::CUdeviceptr;
use crate::error::Result;

impl Kernels {
    /// Attention of `t` queries at positions pos.. (or *dpos) over the cache, split in `nch`
    /// chunks of `chunk` keys; `po`/`pml` are the partial buffers (t*nch*nh*hd and t*nch*nh*2
    /// floats).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        gpu: &Gpu,
        q: CUdeviceptr,
        kc: CUdeviceptr,
        vc: CUdeviceptr,
        (po, pml): (CUdeviceptr, CUdeviceptr),
        out: CUdeviceptr,
        (pos, dpos): (usize, CUdeviceptr),
        t: usize,
        (nh, nkv, hd): (usize, usize, usize),
        (chunk, nch): (usize, usize),
        digits: CUdeviceptr,
    ) -> Result<bool> {
        let scale = 1.0 / (hd as f32).sqrt();
        if t > 1 && dpos == 0 {
            // Prefill: query tiles share K/V tiles in shared memory; no partials.
            return self
                .attention_prefill(gpu, q, kc, vc, out, pos, t, (nh, nkv, hd), self.attn_tc)
                .map(|_| false);
        }
        let smem = (4 * hd + 8) * 4;
        let mut a = Args::new();
        a.ptr(q)
            .ptr(kc)
            .ptr(vc)
            .ptr(po)
            .ptr(pml)
            .int(pos)
            .ptr(dpos)
            .int(nh)
            .int(nkv)
            .int(hd)
            .int(chunk)
            .int(nch)
            .f32(scale);
        gpu.launch(
            if hd <= 128 {
                &self.attn_partial
            } else {
                &self.attn_partial_wide
            },
            (nh as u32, nch as u32, t as u32),
            128,
            smem as u32,
            &mut a,
        )?;
        if out == 0 {
            // The combine is fused into the next product (Prologue::Attention).
            return Ok(false);
        }
        let with_digits = digits != 0 && t == 1 && hd == 128;
        let mut a = Args::new();
        a.ptr(po).ptr(pml).ptr(out).int(nch).int(nh).int(hd);
        a.ptr(if with_digits { digits } else { 0 });
        // SAFETY: po / pml hold nch chunks of t x nh heads (attn_partial's output), out t rows of
        // nh * hd f16, digits (when passed) room for nh * hd / 128 blocks (Scratch::digits).
        gpu.launch(&self.attn_combine, (nh as u32, t as u32, 1), 128, 0, &mut a)?;
        Ok(with_digits)
    }

    /// Whether the tensor-core prefill kernels take head size `hd`.
    pub fn attn_tc_fits(hd: usize) -> bool {
        hd % 16 == 0 && hd <= 128
    }

    /// Prefill attention (`t > 1` queries at host position `pos`) straight into `out`: on the
    /// tensor cores (`attn_prefill_tc_*`) when `tc` and the head size fits, else the SIMT
    /// kernels (`attn_prefill_64/32`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_prefill(
        &self,
        gpu: &Gpu,
        q: CUdeviceptr,
        kc: CUdeviceptr,
        vc: CUdeviceptr,
        out: CUdeviceptr,
        pos: usize,
        t: usize,
        (nh, nkv, hd): (usize, usize, usize),
        tc: bool,
    ) -> Result<()> {
        let scale = 1.0 / (hd as f32).sqrt();
        let mut a = Args::new();
        a.ptr(q)
            .ptr(kc)
            .ptr(vc)
            .ptr(out)
            .int(pos)
            .int(t)
            .int(nh)
            .int(nkv)
            .int(hd)
            .f32(scale);
        if tc && Self::attn_tc_fits(hd) {
            // Blocks of 4 warps x 16 queries; K and V tiles of 64 keys, rows padded to HD + 8
            // f16 (HD = 64 or 128: a smaller head is zero-padded). 34 KB at most: no opt-in.
            let (f, hd_max) = if hd <= 64 {
                (&self.attn_prefill_tc_64, 64)
            } else {
                (&self.attn_prefill_tc_128, 128)
            };
            let smem = 2 * 64 * (hd_max + 8) * 2;
            return gpu.launch(
                f,
                (nh as u32, t.div_ceil(64) as u32, 1),
                128,
                smem as u32,
                &mut a,
            );
        }
        let (kt, qt, f) = if hd <= 128 {
            (64, 16, &self.attn_prefill_64)
        } else {
            (32, 8, &self.attn_prefill_32)
        };
        let smem = qt * hd * 4
            + kt * (hd / 2 + 1) * 4
            + kt * (hd / 2) * 4
            + qt * (kt + 1) * 4
            + 3 * qt * 4;
        gpu.launch(
            f,
            (nh as u32, t.div_ceil(qt) as u32, 1),
            128,
            smem as u32,
            &mut a,
        )
    }
}
