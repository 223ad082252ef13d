//! Op-level access to the kernels, for the GPU test suites (tests/gpu.rs, tests/gpu_model.rs): each function uploads
//! host inputs, runs one kernel or one product path, and returns the result on the host, so
//! every op can be compared with the CPU backend's on random inputs.

use super::blas::Blas;
use super::device::{Args, DevBuf, Gpu};
use super::ffi::CUdeviceptr;
use super::forward::{plan_attention, Ops, PrefillBufs};
use super::kernels::{Kernels, Partials};
use super::weights::{rope_table, DevMat, GemvKind, LinearGroup, RopeTable};
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
        let mut g = LinearGroup::upload(&self.gpu, lins, what)?;
        if !self.tma.load(std::sync::atomic::Ordering::Relaxed) {
            for m in &mut g.members {
                if let DevMat::Q4(q) = &mut m.mat {
                    q.tma = None;
                }
            }
        }
        Ok(g)
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
            let ok = g.members.iter().all(|m| match &m.mat {
                DevMat::Q4(q) => {
                    kind == GemvKind::Classic
                        || (q.gs % 64 == 0
                            && (kind == GemvKind::Wide || (q.small_zeros && q.k % 64 == 0)))
                }
                DevMat::F16(_) => true,
            });
            if ok {
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
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let rows = x.len() / h;
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
        self.k.residual_rmsnorm(
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
        )?;
        Ok((
            self.read_f32(&xd, rows * h)?,
            self.read_f16(&out, (rows - row0) * h)?,
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
    /// does). Output `[t, nh hd]` (f16 → f32).
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
    ) -> Result<Vec<f32>> {
        let (qd, kd, vd) = (self.up(q)?, self.up(&to_f16(kc))?, self.up(&to_f16(vc))?);
        let dpos = self.up(&[pos as i32])?;
        let (chunk, nch) = plan_attention(pos + t + if device_pos { 100 } else { 0 }, t, slots);
        let po = self.poisoned(t * nch * nh * hd)?;
        let pml = self.poisoned(t * nch * nh * 2)?;
        let out = self.gpu.alloc(t * nh * hd * 2, "test out")?;
        let p = if device_pos { (0, dpos.ptr) } else { (pos, 0) };
        self.k.attention(
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
        )?;
        self.read_f16(&out, t * nh * hd)
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

    /// silu(gate) · up from gate|up slabs `[t, 2f]` (+bias).
    pub fn silu_mul(
        &self,
        slabs: &[Vec<f32>],
        bias: Option<&[f32]>,
        f: usize,
        t: usize,
    ) -> Result<Vec<f32>> {
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
        self.k.silu_mul(
            &self.gpu,
            p,
            bd.as_ref().map_or(0, |b| b.ptr),
            out.ptr,
            f,
            t,
        )?;
        self.read_f16(&out, t * f)
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

    /// Time `f` with CUDA events: (median ms over `reps` runs after `warm` warm-ups).
    pub fn time_ms(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f32> {
        for _ in 0..warm {
            f()?;
        }
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let (a, b) = (self.gpu.event()?, self.gpu.event()?);
            a.record()?;
            f()?;
            b.record()?;
            v.push(b.since(&a)?);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Ok(v[v.len() / 2])
    }

    /// Mean time of `f` (ms) over `reps` calls queued back to back between one pair of events,
    /// so that the host's launch latency is not counted (after `warm` calls).
    pub fn time_ms_chain(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f32> {
        for _ in 0..warm {
            f()?;
        }
        let (a, b) = (self.gpu.event()?, self.gpu.event()?);
        a.record()?;
        for _ in 0..reps {
            f()?;
        }
        b.record()?;
        Ok(b.since(&a)? / reps.max(1) as f32)
    }

    /// Time (ms) of one `read_sweep` over `bytes` with `blocks_per_sm` blocks of 256, queued
    /// back to back over four buffers in turn (so that L2 does not serve repeated reads).
    pub fn read_sweep_chain(&self, bytes: usize, blocks_per_sm: usize) -> Result<f32> {
        let bufs = (0..4)
            .map(|_| self.gpu.alloc(bytes, "bandwidth test"))
            .collect::<Result<Vec<_>>>()?;
        for b in &bufs {
            self.gpu.memset_u32(b.ptr, 0x3c00_3c00, bytes / 4)?;
        }
        let out = self.gpu.alloc(4, "bandwidth test")?;
        let turn = std::cell::Cell::new(0usize);
        self.time_ms_chain(4, 40, || {
            let i = turn.get();
            turn.set(i + 1);
            self.read_sweep(bufs[i % 4].ptr, bytes, blocks_per_sm, out.ptr)
        })
    }

    /// One `read_sweep` launch over the `bytes` at `buf` (a device buffer of at least that
    /// many bytes) with `blocks_per_sm` blocks of 256; `out` is a u32 it may write.
    fn read_sweep(
        &self,
        buf: CUdeviceptr,
        bytes: usize,
        blocks_per_sm: usize,
        out: CUdeviceptr,
    ) -> Result<()> {
        let mut args = Args::new();
        args.ptr(buf).i64((bytes / 16) as i64).ptr(out);
        let blocks = (self.gpu.sms * blocks_per_sm) as u32;
        // SAFETY: buf holds bytes / 16 16-byte words (the callers' buffers); out one u32.
        self.gpu
            .launch(&self.k.read_sweep, (blocks, 1, 1), 256, 0, &mut args)
    }

    /// Device-to-device copy bandwidth (bytes read + written per second) over `bytes`.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64> {
        let a = self.gpu.alloc(bytes, "bandwidth test")?;
        let b = self.gpu.alloc(bytes, "bandwidth test")?;
        self.gpu.memset_u32(a.ptr, 0x3c00_3c00, bytes / 4)?;
        let ms = self.time_ms(3, 20, || self.gpu.copy_dtod(b.ptr, a.ptr, bytes))?;
        Ok(2.0 * bytes as f64 / (ms as f64 * 1e-3))
    }

    /// Read bandwidth (bytes read per second) of a plain streaming kernel over `bytes`
    /// (`read_sweep`: 16-byte loads, 8 in flight per thread), with `blocks_per_sm` blocks of 256.
    pub fn read_bandwidth(&self, bytes: usize, blocks_per_sm: usize) -> Result<f64> {
        let a = self.gpu.alloc(bytes, "bandwidth test")?;
        let out = self.gpu.alloc(4, "bandwidth test")?;
        self.gpu.memset_u32(a.ptr, 0x3c00_3c00, bytes / 4)?;
        let ms = self.time_ms(3, 20, || {
            self.read_sweep(a.ptr, bytes, blocks_per_sm, out.ptr)
        })?;
        Ok(bytes as f64 / (ms as f64 * 1e-3))
    }

    /// Registers and local memory per thread of the decode GEMV kernels.
    pub fn gemv_kernels(&self) -> Vec<(&'static str, Option<(i32, i32)>)> {
        [&self.k.gemv_q4l, &self.k.gemv_q4w]
            .into_iter()
            .map(|k| (k.name, k.resources(&self.gpu)))
            .collect()
    }

    /// Median time of the decode GEMV of one group (for kernel benchmarks): (ms, bytes read).
    /// Four copies of the weights take turns, so that the L2 cache (50 MB on an H100) does not
    /// serve repeated reads.
    pub fn time_gemv(&self, lins: &[&Linear], reps: usize) -> Result<(f32, usize)> {
        self.time_gemv_with(lins, reps, false)
    }

    /// [`Self::time_gemv`], or with `chain` the mean over launches queued back to back
    /// ([`Self::time_ms_chain`]: no host launch latency between them).
    pub fn time_gemv_with(
        &self,
        lins: &[&Linear],
        reps: usize,
        chain: bool,
    ) -> Result<(f32, usize)> {
        let gs = (0..4)
            .map(|_| self.upload(lins, "bench weights"))
            .collect::<Result<Vec<_>>>()?;
        let g = &gs[0];
        let x: Vec<f16> = (0..g.k)
            .map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
            .collect();
        let xd = self.up(&x)?;
        let part = self.gpu.alloc(g.s_decode * g.n_total * 4, "bench out")?;
        let ops = Ops {
            gpu: &self.gpu,
            k: &self.k,
            blas: None,
            pd: None,
            qgemm: false,
        };
        let turn = std::cell::Cell::new(0usize);
        let f = || {
            let i = turn.get();
            turn.set(i + 1);
            ops.linear(
                &gs[i % gs.len()],
                xd.ptr,
                1,
                (part.ptr, g.s_decode * g.n_total),
                PrefillBufs::default(),
            )
            .map(|_| ())
        };
        let ms = if chain {
            self.time_ms_chain(5, reps, f)?
        } else {
            self.time_ms(5, reps, f)?
        };
        Ok((ms, g.bytes()))
    }

    /// Blocks per SM of each loaded fused prefill kernel (the occupancy API's figure for its
    /// threads and shared memory).
    pub fn gemm_q4_blocks_per_sm(&self) -> Vec<(&'static str, usize)> {
        use crate::backend::cuda::gemm_q4 as g4;
        [
            (
                "gemm_q4_wgmma",
                self.k.gemm_q4.as_ref(),
                g4::GEMM_Q4_THREADS,
                g4::GEMM_Q4_SMEM,
            ),
            (
                "gemm_q4_tma",
                self.k.gemm_q4_tma.as_ref(),
                g4::GEMM_Q4_TMA_THREADS,
                g4::GEMM_Q4_TMA_SMEM,
            ),
        ]
        .into_iter()
        .filter_map(|(name, f, threads, smem)| Some((name, self.gpu.occupancy(f?, threads, smem)?)))
        .collect()
    }

    /// Timings of prefill's parts on 13B shapes (ms): dequantisation, the cuBLAS product and
    /// attention, for `t` tokens after `pos` cached ones; then the elementwise kernels and
    /// cuBLAS on every product shape of a layer ([`Self::time_prefill_elementwise`],
    /// [`Self::time_prefill_products`]).
    pub fn time_prefill_parts(&self, t: usize, pos: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::new();
        let m = crate::weights::Linear::Gptq(random_gptq(
            4,
            5120,
            13824,
            Some(128),
            false,
            1,
            false,
            3,
        ));
        let g = self.upload(&[&m], "bench weights")?;
        let DevMat::Q4(q) = &g.members[0].mat else {
            return Ok(out);
        };
        let deq = self.gpu.alloc(q.k * q.n * 2, "bench dequant")?;
        let ms = self.time_ms(3, 10, || self.k.dequant_q4(&self.gpu, q, deq.ptr, 0, q.n))?;
        out.push((
            format!(
                "dequant 5120x13824 ({:.0} GB/s written+read)",
                (q.k * q.n * 2 + g.bytes()) as f64 / (ms as f64 * 1e-3) / 1e9
            ),
            ms,
        ));
        let x = self.gpu.alloc(t * q.k * 2, "bench x")?;
        self.gpu.memset_u32(x.ptr, 0x3c00_3c00, t * q.k / 2)?;
        let y = self.gpu.alloc(t * q.n * 4, "bench y")?;
        if let Some(b) = &self.blas {
            let ms = self.time_ms(3, 10, || {
                b.gemm(false, x.ptr, deq.ptr, y.ptr, t, q.n, q.k, q.n)
            })?;
            out.push((
                format!(
                    "cuBLAS {t}x5120x13824 ({:.0} TFLOP/s)",
                    2.0 * (t * q.k * q.n) as f64 / (ms as f64 * 1e-3) / 1e12
                ),
                ms,
            ));
        }
        // Timed whatever the token limit on its use (the comparison that set the limit).
        if self.k.gemm_q4_fits(q) {
            let ms = self.time_ms(3, 10, || {
                self.k.gemm_q4(&self.gpu, q, x.ptr, y.ptr, t, q.n, 1)
            })?;
            out.push((
                format!(
                    "gemm_q4 (default kernel) {t}x5120x13824 straight from 4 bits ({:.0} TFLOP/s)",
                    2.0 * (t * q.k * q.n) as f64 / (ms as f64 * 1e-3) / 1e12
                ),
                ms,
            ));
            // Every 13B product of a layer (the prefill's products without dequantisation), on
            // each variant of the kernel.
            let variants: &[(&str, bool)] = if self.has_gemm_q4_tma() {
                &[("gemm_q4_tma", true), ("gemm_q4_wgmma", false)]
            } else {
                &[("gemm_q4_wgmma", false)]
            };
            for &(kname, tma) in variants {
                self.set_gemm_q4_tma(tma);
                let mut total = 0f32;
                for (name, k, n) in LAYER_13B_PRODUCTS {
                    let m = crate::weights::Linear::Gptq(random_gptq(
                        4,
                        k,
                        n,
                        Some(128),
                        false,
                        1,
                        false,
                        7,
                    ));
                    let g = self.upload(&[&m], "bench weights")?;
                    let DevMat::Q4(q) = &g.members[0].mat else {
                        continue;
                    };
                    let x = self.gpu.alloc(t * k * 2, "bench x")?;
                    self.gpu.memset_u32(x.ptr, 0x3c00_3c00, t * k / 2)?;
                    let split = self.k.gemm_q4_splits(&self.gpu, q, t);
                    let y = self.gpu.alloc(split * t * n * 4, "bench y")?;
                    let ms = self.time_ms(3, 10, || {
                        self.k.gemm_q4(&self.gpu, q, x.ptr, y.ptr, t, n, split)
                    })?;
                    total += ms;
                    out.push((
                        format!(
                            "{kname} {name} {t}x{k}x{n} in {split} split(s) ({:.0} TFLOP/s)",
                            2.0 * (t * k * n) as f64 / (ms as f64 * 1e-3) / 1e12
                        ),
                        ms,
                    ));
                }
                out.push((
                    format!("{kname} one 13B layer's products (x40 for the model)"),
                    total,
                ));
            }
            self.set_gemm_q4_tma(true);
        }
        let ms = self.time_ms(1, 3, || {
            self.k
                .gemm(&self.gpu, false, x.ptr, deq.ptr, y.ptr, t, q.n, q.k, q.n)
        })?;
        out.push((format!("wv SIMT GEMM {t}x5120x13824"), ms));
        let (nh, hd) = (40, 128);
        let n = pos + t;
        let qd = self.gpu.alloc(t * nh * hd * 4, "bench q")?;
        self.gpu.memset_u32(qd.ptr, 0x3c00_0000, t * nh * hd)?;
        let kv = self.gpu.alloc(n * nh * hd * 2, "bench kv")?;
        self.gpu.memset_u32(kv.ptr, 0x3c00_3c00, n * nh * hd / 2)?;
        let slots = (t * 4).max(64);
        let (chunk, nch) = plan_attention(n, t, slots);
        let po = self.gpu.alloc(slots * nh * hd * 4, "bench po")?;
        let pml = self.gpu.alloc(slots * nh * 2 * 4, "bench pml")?;
        let o = self.gpu.alloc(t * nh * hd * 2, "bench out")?;
        let ms = self.time_ms(2, 5, || {
            self.k.attention(
                &self.gpu,
                qd.ptr,
                kv.ptr,
                kv.ptr,
                (po.ptr, pml.ptr),
                o.ptr,
                (pos, 0),
                t,
                (nh, nh, hd),
                (chunk, nch),
            )
        })?;
        out.push((format!("attention t={t} pos={pos} (40 heads x 128)"), ms));
        // The two prefill kernel families side by side, whatever WV_CUDA_ATTN_TC says.
        for (tc, name) in [
            (true, "tensor-core attn_prefill_tc_128"),
            (false, "SIMT attn_prefill_64"),
        ] {
            let ms = self.time_ms(2, 10, || {
                self.k.attention_prefill(
                    &self.gpu,
                    qd.ptr,
                    kv.ptr,
                    kv.ptr,
                    o.ptr,
                    pos,
                    t,
                    (nh, nh, hd),
                    tc,
                )
            })?;
            let n_scores = (0..t).map(|i| pos + i + 1).sum::<usize>() * nh;
            out.push((
                format!(
                    "attention {name} t={t} pos={pos} ({:.0} TFLOP/s)",
                    4.0 * (n_scores * hd) as f64 / (ms as f64 * 1e-3) / 1e12
                ),
                ms,
            ));
        }
        out.extend(self.time_prefill_elementwise(t, pos)?);
        out.extend(self.time_prefill_products(t)?);
        Ok(out)
    }

    /// `copies` buffers of `bytes` each, filled with small finite values (f32 0.0078125, or
    /// f16 ≈ 0.0078 pairs), that benchmarks take in turn so that the 50 MB L2 cache of an H100
    /// does not serve repeated reads.
    fn bench_bufs(&self, bytes: usize, copies: usize) -> Result<Vec<DevBuf>> {
        (0..copies)
            .map(|_| {
                let b = self.gpu.alloc(bytes, "bench buffer")?;
                self.gpu.memset_u32(b.ptr, 0x3c00_0000, bytes.div_ceil(4))?;
                Ok(b)
            })
            .collect()
    }

    /// Timings of prefill's elementwise kernels on 13B shapes (hidden 5120, 40 heads x 128, FFN
    /// 13824) for `t` tokens at `pos`: qkv_rope, silu_mul and residual_rmsnorm (with one slab
    /// of delta, as prefill), each with the bandwidth it reaches (bytes read + written). Inputs
    /// rotate over copies of at least 150 MB in all, so they come from memory, not L2.
    pub fn time_prefill_elementwise(&self, t: usize, pos: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::new();
        let (h, nh, hd, f) = (5120usize, 40usize, 128usize, 13824usize);
        let copies = |bytes: usize| (150usize << 20).div_ceil(bytes).max(2);
        let gbs = |bytes: usize, ms: f32| bytes as f64 / (ms as f64 * 1e-3) / 1e9;
        let turn = std::cell::Cell::new(0usize);
        let next = |n: usize| {
            let i = turn.get();
            turn.set(i + 1);
            i % n
        };
        // qkv_rope: part f32 [t, 3 * 5120] → q f32 [t, 5120], K and V f16 into a cache.
        let ld = 3 * h;
        let parts = self.bench_bufs(t * ld * 4, copies(t * ld * 4))?;
        let q = self.gpu.alloc(t * h * 4, "bench q")?;
        let cap = pos + t;
        let kc = self.bench_bufs(cap * h * 2, 1)?;
        let vc = self.bench_bufs(cap * h * 2, 1)?;
        let rows = cap.max(4096);
        let tab = self.up(&rope_table(hd, 10000.0, rows))?;
        let rope = RopeTable {
            ptr: tab.ptr,
            positions: rows,
        };
        let ms = self.time_ms(3, 20, || {
            let p = Partials {
                ptr: parts[next(parts.len())].ptr,
                s: 1,
                sstride: t * ld,
                ld,
            };
            self.k.qkv_rope(
                &self.gpu,
                p,
                0,
                q.ptr,
                kc[0].ptr,
                vc[0].ptr,
                rope,
                (pos, 0),
                t,
                (nh, nh, hd),
            )
        })?;
        let bytes = t * ld * 4 + t * h * 4 + 2 * t * h * 2 + t * hd * 4;
        out.push((
            format!(
                "qkv_rope t={t} 40+40+40 heads x 128 ({:.0} GB/s)",
                gbs(bytes, ms)
            ),
            ms,
        ));
        drop(parts);
        // silu_mul: part f32 [t, 2 * 13824] → f16 [t, 13824].
        let parts = self.bench_bufs(t * 2 * f * 4, copies(t * 2 * f * 4))?;
        let o = self.gpu.alloc(t * f * 2, "bench out")?;
        let ms = self.time_ms(3, 20, || {
            let p = Partials {
                ptr: parts[next(parts.len())].ptr,
                s: 1,
                sstride: t * 2 * f,
                ld: 2 * f,
            };
            self.k.silu_mul(&self.gpu, p, 0, o.ptr, f, t)
        })?;
        let bytes = t * 2 * f * 4 + t * f * 2;
        out.push((
            format!("silu_mul t={t} F=13824 ({:.0} GB/s)", gbs(bytes, ms)),
            ms,
        ));
        drop(parts);
        // residual_rmsnorm: x f32 [t, 5120] += delta (one slab), normalised to f16.
        let n = copies(2 * t * h * 4);
        let xs = self.bench_bufs(t * h * 4, n)?;
        let ds = self.bench_bufs(t * h * 4, n)?;
        let w = self.bench_bufs(h * 4, 1)?;
        let o = self.gpu.alloc(t * h * 2, "bench out")?;
        let ms = self.time_ms(3, 20, || {
            let i = next(n);
            let d = Partials {
                ptr: ds[i].ptr,
                s: 1,
                sstride: t * h,
                ld: h,
            };
            self.k.residual_rmsnorm(
                &self.gpu,
                xs[i].ptr,
                Some(d),
                0,
                w[0].ptr,
                1e-5,
                o.ptr,
                h,
                0,
                t,
            )
        })?;
        let bytes = 3 * t * h * 4 + t * h * 2 + h * 4;
        out.push((
            format!(
                "residual_rmsnorm t={t} H=5120 with a delta ({:.0} GB/s)",
                gbs(bytes, ms)
            ),
            ms,
        ));
        Ok(out)
    }

    /// cuBLAS on the exact product shapes of a 13B layer at `t` tokens (X f16 `[t, k]` times a
    /// dequantised f16 `[k, n]`, as prefill runs them): q|k|v (n 15360, k 5120), o (5120, 5120),
    /// gate|up (27648, 5120), down (5120, 13824), with f32 output (what the forward pass uses)
    /// and with f16 output, and their TFLOP/s. Empty without cuBLAS.
    pub fn time_prefill_products(&self, t: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::new();
        let Some(b) = &self.blas else {
            return Ok(out);
        };
        // (name, N, K)
        let shapes = LAYER_13B_PRODUCTS.map(|(name, k, n)| (name, n, k));
        let max_kn = shapes.iter().map(|s| s.1 * s.2).max().unwrap_or(0);
        let max_k = shapes.iter().map(|s| s.2).max().unwrap_or(0);
        let max_n = shapes.iter().map(|s| s.1).max().unwrap_or(0);
        // Random operands: constant ones draw less power and run faster than real weights.
        let mut rng = crate::sampler::Rng::new(5);
        let mut random_f16 = |n: usize, scale: f32| -> Vec<f16> {
            (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                    f16::from_f32((2.0 * u - 1.0) * scale)
                })
                .collect()
        };
        let w = self.up(&random_f16(max_kn, 0.02))?;
        let x = self.up(&random_f16(t * max_k, 1.0))?;
        let y = self.gpu.alloc(t * max_n * 4, "bench y")?;
        let mut total = [0f32; 2];
        for (name, n, k) in shapes {
            for (i, f16_out) in [false, true].into_iter().enumerate() {
                let ms = self.time_ms(3, 20, || {
                    if f16_out {
                        b.gemm_f16(false, x.ptr, w.ptr, y.ptr, t, n, k, n)
                    } else {
                        b.gemm(false, x.ptr, w.ptr, y.ptr, t, n, k, n)
                    }
                })?;
                total[i] += ms;
                out.push((
                    format!(
                        "cuBLAS {name} {t}x{k}x{n} {} out ({:.0} TFLOP/s)",
                        if f16_out { "f16" } else { "f32" },
                        2.0 * (t * k * n) as f64 / (ms as f64 * 1e-3) / 1e12
                    ),
                    ms,
                ));
            }
        }
        for (i, what) in ["f32", "f16"].into_iter().enumerate() {
            out.push((
                format!("cuBLAS one 13B layer's products, {what} out (x40 for the model)"),
                total[i],
            ));
        }
        Ok(out)
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
