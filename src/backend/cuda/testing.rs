//! Op-level access to the kernels, for the GPU test suites (tests/gpu.rs, tests/gpu_model.rs): each function uploads
//! host inputs, runs one kernel or one product path, and returns the result on the host, so
//! every op can be compared with the CPU backend's on random inputs.

use super::blas::Blas;
use super::device::{Args, DevBuf, Gpu};
use super::ffi::CUdeviceptr;
use super::forward::{plan_attention, Ops, PrefillBufs};
use super::kernels::{Kernels, Partials};
use super::weights::{rope_table, DevMat, GemvKind, LinearGroup, Loaded, RopeTable};
use crate::error::Result;
use crate::weights::{GptqMatrix, Linear};
use half::f16;
use std::sync::Arc;

/// The four products of one 13B layer: (name, inputs K, outputs N).
pub const LAYER_13B_PRODUCTS: [(&str, usize, usize); 4] = [
    ("q|k|v", 5120, 15360),
    ("o", 5120, 5120),
    ("gate|up", 5120, 27648),
    ("down", 13824, 5120),
];

mod timing;
/// A GPU with the kernels loaded.
pub struct OpHarness {
    pub gpu: Arc<Gpu>,
    k: Kernels,
    blas: Option<Blas>,
    /// Whether matrices this harness uploads keep their `gemm_q4_tma` maps (else prefill's
    /// fused product runs them on `gemm_q4_wgmma`, as for a matrix whose maps the driver
    /// refused): the two kernels compared in one process.
    tma: std::sync::atomic::AtomicBool,
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// `OpHarness::residual_rmsnorm`'s results: the residual stream after the add, the norm's f16
/// output, and the digits written beside it (when the kernel made them).
pub type NormOut = (Vec<f32>, Vec<f32>, Option<Vec<f32>>);

impl OpHarness {
    /// Whether prefill's fused 4-bit product (`gemm_q4_wgmma`) is loaded on this GPU.
    pub fn has_gemm_q4(&self) -> bool {
        self.k.gemm_q4.is_some()
    }

    /// The GPU's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.gpu.cc
    }

    /// Whether its TMA variant (`gemm_q4_tma`) is loaded too.
    /// A digits buffer for a `k`-vector (when `k % 128 == 0`): what the decode kernels that
    /// make a `gemv_q4m` input write beside it.
    fn digits_buf(&self, k: usize) -> Result<Option<DevBuf>> {
        if k % 128 != 0 || k == 0 {
            return Ok(None);
        }
        Ok(Some(self.gpu.alloc(
            k / 128 * crate::backend::cuda::gemv_mma::DIGITS_PER_BLOCK,
            "test digits",
        )?))
    }

    /// The values a digits buffer holds, when `written` (see [`Self::digits_buf`]).
    fn read_digits(
        &self,
        buf: &Option<DevBuf>,
        k: usize,
        written: bool,
    ) -> Result<Option<Vec<f32>>> {
        let Some(b) = buf.as_ref().filter(|_| written) else {
            return Ok(None);
        };
        // k / 128 blocks of 64 words, then k / 128 (xs, Σ) pairs.
        let mut words = vec![0u32; k / 2 + k / 64];
        b.read(&mut words)?;
        let sums: Vec<f32> = words[k / 2..].iter().map(|&w| f32::from_bits(w)).collect();
        Ok(Some(crate::backend::cuda::gemv_mma::decode_digits(
            &words[..k / 2],
            &sums,
            k,
        )))
    }

    /// Whether `gemv_q4m` (decode on the integer tensor cores) loaded.
    pub fn has_gemv_q4m(&self) -> bool {
        self.k.gemv_q4m.is_some() && self.k.quant_digits.is_some()
    }

    pub fn has_gemm_q4_tma(&self) -> bool {
        self.k.gemm_q4_tma.is_some()
    }

    /// Whether its small-token-tile variants (`gemm_q4_tma64`, `gemm_q4_tma32`) are loaded.
    pub fn has_gemm_q4_tma_small(&self) -> bool {
        self.k.gemm_q4_tma64.is_some() && self.k.gemm_q4_tma32.is_some()
    }

    /// Let the fused product use `gemm_q4_tma` where it can (the default) or not, for the
    /// matrices uploaded from now on.
    pub fn set_gemm_q4_tma(&self, on: bool) {
        self.tma.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Upload a group of linear layers as the model loader does, without the TMA maps when
    /// [`Self::set_gemm_q4_tma`] turned them off.
    fn upload(&self, lins: &[&Linear], what: &str) -> Result<LinearGroup> {
        // Only with the TMA maps may a matrix be held in the unit-major layout alone.
        let mut loaded = Loaded::of(&self.k);
        loaded.units &= self.tma.load(std::sync::atomic::Ordering::Relaxed);
        let mut g = LinearGroup::upload(&self.gpu, lins, what, loaded)?;
        if !self.tma.load(std::sync::atomic::Ordering::Relaxed) {
            for m in &mut g.members {
                if let DevMat::Q4(q) = &mut m.mat {
                    q.tma = None;
                }
            }
        }
        Ok(g)
    }

    /// Upload a group keeping wv's row layout (what the dequantisation reads), whatever the
    /// default layout (timings of the dequantising prefill).
    fn upload_rows(&self, lins: &[&Linear], what: &str) -> Result<LinearGroup> {
        let loaded = Loaded {
            units: false,
            ..Loaded::of(&self.k)
        };
        LinearGroup::upload(&self.gpu, lins, what, loaded)
    }

    pub fn new(ordinal: usize) -> Result<OpHarness> {
        let gpu = Gpu::open(ordinal)?;
        let k = Kernels::load(&gpu)?;
        let blas = Blas::new(&gpu);
        Ok(OpHarness {
            gpu,
            k,
            blas,
            tma: std::sync::atomic::AtomicBool::new(true),
        })
    }

    pub fn has_blas(&self) -> bool {
        self.blas.is_some()
    }

    fn up<T: Copy>(&self, v: &[T]) -> Result<DevBuf> {
        self.gpu.upload(v, "test input")
    }

    /// A buffer of `n` f32 filled with NaN (so unwritten outputs show).
    fn poisoned(&self, n: usize) -> Result<DevBuf> {
        let b = self.gpu.alloc(n.max(1) * 4, "test output")?;
        self.gpu.memset_u32(b.ptr, 0x7fc0_0000, n.max(1))?;
        Ok(b)
    }

    fn read_f32(&self, b: &DevBuf, n: usize) -> Result<Vec<f32>> {
        let mut v = vec![0f32; n];
        b.read(&mut v)?;
        Ok(v)
    }

    fn read_f16(&self, b: &DevBuf, n: usize) -> Result<Vec<f32>> {
        let mut v = vec![0u16; n];
        b.read(&mut v)?;
        Ok(v.into_iter().map(|x| f16::from_bits(x).to_f32()).collect())
    }

    fn sum_slabs(p: &[f32], part: Partials, t: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; t * n];
        for s in 0..part.s {
            for ti in 0..t {
                for j in 0..n {
                    y[ti * n + j] += p[s * part.sstride + ti * part.ld + j];
                }
            }
        }
        y
    }

    /// `x [t, k] · W (+ bias)` for the linears `lins` (one group: outputs side by side), through
    /// the decode path (`t == 1`) or the prefill path (cuBLAS when `use_blas`, else wv's GEMM;
    /// `deq_elems` caps the dequantisation buffer to force pieces). x is rounded to f16.
    /// Also returns whether every member took the 4-bit path.
    pub fn linear(
        &self,
        lins: &[&Linear],
        x: &[f32],
        t: usize,
        use_blas: bool,
        deq_elems: Option<usize>,
    ) -> Result<(Vec<f32>, bool)> {
        self.linear_with(lins, x, t, use_blas, deq_elems, None)
    }

    /// [`Self::linear`] with the decode kernel forced to `kind` (when the weights allow it).
    pub fn linear_with(
        &self,
        lins: &[&Linear],
        x: &[f32],
        t: usize,
        use_blas: bool,
        deq_elems: Option<usize>,
        kind: Option<GemvKind>,
    ) -> Result<(Vec<f32>, bool)> {
        let mut g = self.upload(lins, "test weights")?;
        if let Some(kind) = kind {
            if g.allows(kind, &self.gpu, self.k.gemv_q4m.is_some()) {
                g.set_gemv(&self.gpu, kind);
            }
        }
        let all_q4 = g.members.iter().all(|m| matches!(m.mat, DevMat::Q4(_)));
        let xd = self.up(&to_f16(x))?;
        let elems = if t == 1 {
            g.s_decode * g.n_total
        } else {
            // gemm_q4_wgmma may split K into slabs.
            crate::backend::cuda::kernels::GEMM_Q4_MAX_SPLIT * t * g.n_total
        };
        let part = self.poisoned(elems)?;
        let max_q4 = g
            .members
            .iter()
            .map(|m| {
                if let DevMat::Q4(q) = &m.mat {
                    q.k * q.n
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        let deq_n = deq_elems.unwrap_or(max_q4).min(max_q4);
        let deq = if t > 1 && deq_n > 0 {
            Some(self.gpu.alloc(deq_n * 2, "test dequant")?)
        } else {
            None
        };
        // Room for an act-order matrix's gathered input (the fused product's).
        let xg = if t > 1 && g.has_act_order() {
            Some(self.gpu.alloc(t * g.k * 2, "test gather")?)
        } else {
            None
        };
        let digits = self.gpu.alloc(
            g.k.div_ceil(128) * crate::backend::cuda::gemv_mma::DIGITS_PER_BLOCK,
            "test digits",
        )?;
        let ops = Ops {
            gpu: &self.gpu,
            k: &self.k,
            blas: if use_blas { self.blas.as_ref() } else { None },
            pd: None,
            // The fused 4-bit product on the default path; "wv-gemm" and "pieces" keep
            // testing dequantisation.
            qgemm: use_blas && deq_elems.is_none(),
        };
        let p = ops.linear(
            &g,
            xd.ptr,
            t,
            (part.ptr, elems),
            PrefillBufs {
                deq: deq.as_ref().map(|d| (d, deq_n)),
                xg: xg.as_ref().map(|b| (b, t * g.k)),
                digits: Some(digits.ptr),
                digits_made: false,
            },
        )?;
        let host = self.read_f32(&part, elems)?;
        let mut y = Self::sum_slabs(&host, p, t, g.n_total);
        if let Some(b) = &g.bias {
            let bh = self.read_f32(b, g.n_total)?;
            for row in y.chunks_exact_mut(g.n_total) {
                for (o, b) in row.iter_mut().zip(&bh) {
                    *o += b;
                }
            }
        }
        Ok((y, all_q4))
    }

    /// `gather_cols`: rows `t` of `x` (f16-rounded, `[t, perm.len()]`) in the order of `perm`.
    pub fn gather_cols(&self, x: &[f32], perm: &[i32], t: usize) -> Result<Vec<f32>> {
        let k = perm.len();
        let xd = self.up(&to_f16(x))?;
        let pd = self.up(perm)?;
        let out = self.gpu.alloc(t * k * 2, "test output")?;
        self.k
            .gather_cols(&self.gpu, xd.ptr, pd.ptr, out.ptr, k, t)?;
        self.read_f16(&out, t * k)
    }

    /// Whether a prefill pass of `t` tokens runs every 4-bit matrix of `lins` (one group) on
    /// the fused product (act-order ones with their input gathered), as [`Self::linear`] does.
    pub fn prefill_fused(&self, lins: &[&Linear], t: usize) -> Result<bool> {
        let g = self.upload(lins, "test weights")?;
        let ops = Ops {
            gpu: &self.gpu,
            k: &self.k,
            blas: self.blas.as_ref(),
            pd: None,
            qgemm: true,
        };
        Ok(g.members.iter().all(|m| match &m.mat {
            DevMat::Q4(q) => ops.fused_q4(q, t, Some(t * g.k)),
            DevMat::F16(_) => true,
        }))
    }

    /// Whether any 4-bit matrix of `lins` (one group), uploaded as the loader does, is held
    /// only in the unit-major layout (the sm_90 default): the dequantising prefill
    /// paths then refuse it.
    pub fn units_only(&self, lins: &[&Linear]) -> Result<bool> {
        let g = self.upload(lins, "test weights")?;
        Ok(g.members
            .iter()
            .any(|m| matches!(&m.mat, DevMat::Q4(q) if q.units_only())))
    }

    /// Whether every 4-bit matrix of `lins` (one group), uploaded as the loader does, has its
    /// `gemm_q4_tma` maps (made at upload where the driver and the tensors allow).
    pub fn tma_maps_made(&self, lins: &[&Linear]) -> Result<bool> {
        let g = self.upload(lins, "test weights")?;
        Ok(g.members.iter().all(|m| match &m.mat {
            DevMat::Q4(q) => q.tma.is_some(),
            DevMat::F16(_) => true,
        }))
    }

    /// The 4-bit dequantisation kernel: W `[k, n]` in the checkpoint's row order, or `None` when
    /// the matrix does not take the 4-bit path.
    pub fn dequant(&self, m: &GptqMatrix) -> Result<Option<Vec<f32>>> {
        let g = self.upload(&[&Linear::Gptq(m.clone())], "test weights")?;
        let DevMat::Q4(q) = &g.members[0].mat else {
            return Ok(None);
        };
        let out = self.gpu.alloc(q.k * q.n * 2, "test dequant")?;
        // Two pieces, to test the column offsets.
        let half = (q.n / 2).max(1);
        let tmp = self.gpu.alloc(q.k * q.n * 2, "test dequant")?;
        self.k.dequant_q4(&self.gpu, q, out.ptr, 0, half)?;
        self.k.dequant_q4(&self.gpu, q, tmp.ptr, half, q.n)?;
        let a = self.read_f16(&out, q.k * half)?;
        let b = self.read_f16(&tmp, q.k * (q.n - half))?;
        let mut w = vec![0f32; q.k * q.n];
        for r in 0..q.k {
            w[r * q.n..r * q.n + half].copy_from_slice(&a[r * half..(r + 1) * half]);
            w[r * q.n + half..(r + 1) * q.n]
                .copy_from_slice(&b[r * (q.n - half)..(r + 1) * (q.n - half)]);
        }
        Ok(Some(w))
    }

    /// Embedding rows of `tokens` from an f16 `[vocab, h]` table.
    pub fn embed(&self, table: &[f16], h: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        let (tb, td) = (self.up(table)?, self.up(tokens)?);
        let x = self.poisoned(tokens.len() * h)?;
        self.k
            .embed(&self.gpu, td.ptr, tb.ptr, x.ptr, tokens.len(), h)?;
        self.read_f32(&x, tokens.len() * h)
    }

    /// x += Σ slabs (+bias), then RMSNorm (f16 out). Returns (new x, normalised rows row0..).
    #[allow(clippy::too_many_arguments)]
    pub fn residual_rmsnorm(
        &self,
        x: &[f32],
        slabs: &[Vec<f32>],
        bias: Option<&[f32]>,
        w: &[f32],
        eps: f32,
        h: usize,
        row0: usize,
    ) -> Result<NormOut> {
        let rows = x.len() / h;
        let dig = self.digits_buf(h)?;
        let xd = self.up(x)?;
        let flat: Vec<f32> = slabs.concat();
        let dd = self.up(&flat)?;
        let bd = match bias {
            Some(b) => Some(self.up(b)?),
            None => None,
        };
        let wd = self.up(w)?;
        let out = self.gpu.alloc((rows - row0) * h * 2, "test out")?;
        let delta = if slabs.is_empty() {
            None
        } else {
            Some(Partials {
                ptr: dd.ptr,
                s: slabs.len(),
                sstride: rows * h,
                ld: h,
            })
        };
        let made = self.k.residual_rmsnorm(
            &self.gpu,
            xd.ptr,
            delta,
            bd.as_ref().map_or(0, |b| b.ptr),
            wd.ptr,
            eps,
            out.ptr,
            h,
            row0,
            rows - row0,
            dig.as_ref().map_or(0, |b| b.ptr),
        )?;
        Ok((
            self.read_f32(&xd, rows * h)?,
            self.read_f16(&out, (rows - row0) * h)?,
            self.read_digits(&dig, h, made)?,
        ))
    }

    /// The attention input: q|k|v slabs `[t, (nh + 2 nkv) hd]` → (q `[t, nh hd]`, the K and V
    /// caches `[capacity, nkv hd]` with positions pos..pos+t written, others zero), with a RoPE
    /// table of `table_rows` positions (as the weights make it) and the position read from device
    /// memory when `device_pos` (as decode does).
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope(
        &self,
        slabs: &[Vec<f32>],
        bias: Option<&[f32]>,
        t: usize,
        pos: usize,
        (nh, nkv, hd): (usize, usize, usize),
        theta: f32,
        capacity: usize,
        table_rows: usize,
        device_pos: bool,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let ld = (nh + 2 * nkv) * hd;
        let pd = self.up(&slabs.concat())?;
        let bd = match bias {
            Some(b) => Some(self.up(b)?),
            None => None,
        };
        let tab = self.up(&rope_table(hd, theta, table_rows))?;
        let rope = RopeTable {
            ptr: tab.ptr,
            positions: table_rows,
        };
        let dpos = self.up(&[pos as i32])?;
        let q = self.poisoned(t * nh * hd)?;
        let kvd = nkv * hd;
        let kc = self.up(&vec![0u16; capacity * kvd])?;
        let vc = self.up(&vec![0u16; capacity * kvd])?;
        let p = Partials {
            ptr: pd.ptr,
            s: slabs.len(),
            sstride: t * ld,
            ld,
        };
        self.k.qkv_rope(
            &self.gpu,
            p,
            bd.as_ref().map_or(0, |b| b.ptr),
            q.ptr,
            kc.ptr,
            vc.ptr,
            rope,
            if device_pos { (0, dpos.ptr) } else { (pos, 0) },
            t,
            (nh, nkv, hd),
        )?;
        Ok((
            self.read_f32(&q, t * nh * hd)?,
            self.read_f16(&kc, capacity * kvd)?,
            self.read_f16(&vc, capacity * kvd)?,
        ))
    }

    /// Attention of `t` queries at pos.. over caches `[pos + t, nkv hd]` (rounded to f16), with
    /// `slots` partial results (which sets the chunking). With `device_pos` the position is read
    /// from device memory and the chunking is planned for a cache 100 positions longer (as decode
    /// does). Output `[t, nh hd]` (f16 → f32), and the digits the combine wrote beside it
    /// (decode with head size 128: `gemv_q4m`'s input).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        t: usize,
        pos: usize,
        (nh, nkv, hd): (usize, usize, usize),
        slots: usize,
        device_pos: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (qd, kd, vd) = (self.up(q)?, self.up(&to_f16(kc))?, self.up(&to_f16(vc))?);
        let dpos = self.up(&[pos as i32])?;
        let dig = self.digits_buf(nh * hd)?;
        let (chunk, nch) = plan_attention(pos + t + if device_pos { 100 } else { 0 }, t, slots);
        let po = self.poisoned(t * nch * nh * hd)?;
        let pml = self.poisoned(t * nch * nh * 2)?;
        let out = self.gpu.alloc(t * nh * hd * 2, "test out")?;
        let p = if device_pos { (0, dpos.ptr) } else { (pos, 0) };
        let made = self.k.attention(
            &self.gpu,
            qd.ptr,
            kd.ptr,
            vd.ptr,
            (po.ptr, pml.ptr),
            out.ptr,
            p,
            t,
            (nh, nkv, hd),
            (chunk, nch),
            dig.as_ref().map_or(0, |b| b.ptr),
        )?;
        Ok((
            self.read_f16(&out, t * nh * hd)?,
            self.read_digits(&dig, nh * hd, made)?,
        ))
    }

    /// Prefill attention (`t > 1`, host position) through a chosen kernel family: the
    /// tensor-core kernels when `tc` (and the head size fits, see [`Kernels::attn_tc_fits`]),
    /// else the SIMT ones, whatever `WV_CUDA_ATTN_TC` says. Output `[t, nh hd]` (f16 → f32);
    /// rows the kernel fails to write read as NaN.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_prefill(
        &self,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        t: usize,
        pos: usize,
        (nh, nkv, hd): (usize, usize, usize),
        tc: bool,
    ) -> Result<Vec<f32>> {
        let (qd, kd, vd) = (self.up(q)?, self.up(&to_f16(kc))?, self.up(&to_f16(vc))?);
        let out = self.gpu.alloc(t * nh * hd * 2, "test out")?;
        self.gpu
            .memset_u32(out.ptr, 0x7e00_7e00, (t * nh * hd).div_ceil(2))?;
        self.k.attention_prefill(
            &self.gpu,
            qd.ptr,
            kd.ptr,
            vd.ptr,
            out.ptr,
            pos,
            t,
            (nh, nkv, hd),
            tc,
        )?;
        self.read_f16(&out, t * nh * hd)
    }

    /// silu(gate) · up from gate|up slabs `[t, 2f]` (+bias), and the digits written beside it
    /// (decode, `f % 128 == 0`: `gemv_q4m`'s input).
    pub fn silu_mul(
        &self,
        slabs: &[Vec<f32>],
        bias: Option<&[f32]>,
        f: usize,
        t: usize,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let dig = self.digits_buf(f)?;
        let pd = self.up(&slabs.concat())?;
        let bd = match bias {
            Some(b) => Some(self.up(b)?),
            None => None,
        };
        let out = self.gpu.alloc(t * f * 2, "test out")?;
        let p = Partials {
            ptr: pd.ptr,
            s: slabs.len(),
            sstride: t * 2 * f,
            ld: 2 * f,
        };
        let made = self.k.silu_mul(
            &self.gpu,
            p,
            bd.as_ref().map_or(0, |b| b.ptr),
            out.ptr,
            f,
            t,
            dig.as_ref().map_or(0, |b| b.ptr),
        )?;
        Ok((
            self.read_f16(&out, t * f)?,
            self.read_digits(&dig, f, made)?,
        ))
    }

    /// The arg-max of `v` after the repetition penalty `p` over `ids` (1.0: none).
    /// The `sample_topk` kernel's raw output for logits `v` (`u32::MAX`: too many ties).
    pub fn sample_topk(
        &self,
        v: &[f32],
        temperature: f32,
        k: usize,
        top_p: f32,
        u: f64,
    ) -> Result<u32> {
        let vd = self.up(v)?;
        let out = self.gpu.alloc(4, "test out")?;
        self.k.sample_topk(
            &self.gpu,
            vd.ptr,
            v.len(),
            1.0 / temperature,
            k,
            top_p,
            u,
            out.ptr,
        )?;
        let mut r = [0u32];
        out.read(&mut r)?;
        Ok(r[0])
    }

    pub fn argmax(&self, v: &[f32], ids: &[u32], p: f32) -> Result<u32> {
        let vd = self.up(v)?;
        let out = self.gpu.alloc(4, "test out")?;
        let mut src = vd.ptr;
        let v2 = self.up(v)?;
        let idd = self.up(if ids.is_empty() { &[0u32][..] } else { ids })?;
        if p != 1.0 && !ids.is_empty() {
            self.k
                .penalty(&self.gpu, vd.ptr, v2.ptr, idd.ptr, ids.len(), v.len(), p)?;
            src = v2.ptr;
        }
        self.k.argmax(&self.gpu, src, v.len(), out.ptr)?;
        let mut r = [0u32];
        out.read(&mut r)?;
        Ok(r[0])
    }
}

/// A random GPTQ matrix: `bits`-bit values, groups of `group` rows (`None`: one group), rows in a
/// random act-order permutation when `act_order`, zeros stored with `zero_offset` added back on
/// read (1: `gptq` v1), an optional bias.
#[allow(clippy::too_many_arguments)]
pub fn random_gptq(
    bits: u32,
    k: usize,
    n: usize,
    group: Option<usize>,
    act_order: bool,
    zero_offset: i32,
    bias: bool,
    seed: u64,
) -> GptqMatrix {
    let mut rng = crate::sampler::Rng::new(seed);
    let gs = group.unwrap_or(k);
    let n_groups = k.div_ceil(gs);
    let qweight: Vec<u32> = (0..k * bits as usize / 32 * n)
        .map(|_| rng.next_u64() as u32)
        .collect();
    let qzeros: Vec<u32> = (0..n_groups * (n * bits as usize / 32))
        .map(|_| rng.next_u64() as u32)
        .collect();
    let scales: Vec<f32> = (0..n_groups * n)
        .map(|_| f16::from_f64(0.004 + 0.012 * rng.uniform()).to_f32())
        .collect();
    let mut g_idx: Vec<u32> = (0..k).map(|i| (i / gs) as u32).collect();
    if act_order {
        // Fisher–Yates over the rows.
        for i in (1..k).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            g_idx.swap(i, j);
        }
    }
    let bias = bias.then(|| (0..n).map(|_| (rng.uniform() - 0.5) as f32).collect());
    GptqMatrix {
        bits,
        in_features: k,
        out_features: n,
        n_groups,
        qweight,
        qzeros,
        zero_offset,
        scales,
        act_order: act_order && n_groups > 1,
        g_idx,
        bias,
    }
}
