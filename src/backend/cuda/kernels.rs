//! Typed launch wrappers, one per kernel of `kernels/*.cu` (whose opening comments give each
//! kernel's layout and launch shape), and the cuBLAS products used by prefill.

use super::device::{Args, Gpu, Kernel};
use super::ffi::CUdeviceptr;
pub use super::fusion::{Epilogue, Fusion, Prologue};
use super::module::Modules;
use super::weights::{GemvKind, Q4Dev, RopeTable, MAX_X_SLICE};
use crate::error::{Error, Result};
use std::sync::Arc;

mod attention;
mod sample;

/// Every kernel, looked up once.
pub struct Kernels {
    gemv_q4: Kernel,
    pub gemv_q4w: Kernel,
    pub gemv_q4l: Kernel,
    gemv_q4l_norm: Kernel,
    /// Which decode steps are fused into the products (see [`Fusion`]).
    pub fusion: Fusion,
    /// Decode attention planned for the position's bucket of keys, not the whole cache
    /// (`forward::attention_keys`; `WV_CUDA_ATT_BUCKETS=0` turns it off).
    pub att_buckets: bool,
    /// `gemv_q4l`'s shared-memory weight ring, in batches (0: none).
    ring: usize,
    gemv_q4l_attn_resid: Kernel,
    gemv_q4l_silu_resid: Kernel,
    gemv_f16: Kernel,
    /// Decode's products on the integer tensor cores and their input digits (sm_90a GPUs;
    /// used where `WV_CUDA_GEMV=mma` asks and the weights allow, see `gemv_mma.rs`).
    pub gemv_q4m: Option<Kernel>,
    pub quant_digits: Option<Kernel>,
    /// `gemv_q4m` with decode's glue folded in (gemv_mma.cu's epilogues: the residual add and
    /// the next input's digits; RoPE and the KV write; SiLU · up), loaded with it; decode runs
    /// a layer on them where [`Self::mma_fuse`] and the layer allow (forward.rs).
    pub gemv_q4m_resid: Option<Kernel>,
    pub gemv_q4m_rope: Option<Kernel>,
    pub gemv_q4m_silu: Option<Kernel>,
    /// Whether decode layers on `gemv_q4m` use the fused variants (on by default;
    /// `WV_CUDA_MMA_FUSE=0` runs the separate norm, RoPE and SiLU kernels between the
    /// products: on the unit-major layout the fused ones are faster, 363 against 288–312
    /// tokens/s after 32 tokens on an H200; on wv's rows level — docs/cuda.md).
    pub mma_fuse: bool,
    /// Units per block that each fused `gemv_q4m` product asks L2 for of the next one's, and
    /// how many of its own copies may still be in flight when it asks
    /// (`WV_CUDA_MMA_PREFETCH=UNITS[,LAG]`; `gemv_mma::Prefetch`).
    pub mma_prefetch: (usize, usize),
    /// Whether fused decode layers run a short context's attention in q|k|v's epilogue
    /// (`WV_CUDA_MMA_ATTN=0` keeps the attention kernels; decode_mma.rs).
    pub mma_attn: bool,
    dequant_q4: Kernel,
    /// Prefill products straight from the 4-bit weights on the warpgroup tensor cores (sm_90a
    /// GPUs; `WV_CUDA_QGEMM=0` turns it off: dequantise for cuBLAS instead).
    pub gemm_q4: Option<Kernel>,
    /// The same product with its tiles copied by the Tensor Memory Accelerator and the stages
    /// handed over by mbarriers (`gemm_q4_tma`; `WV_CUDA_QGEMM_TMA=0` keeps `gemm_q4_wgmma`):
    /// used where the tensors allow it (see [`Self::gemm_q4`]).
    pub gemm_q4_tma: Option<Kernel>,
    /// Its variants for passes of at most 64 and 32 tokens (token tiles of 64 / 32 instead of
    /// 128, so that a short prompt's tensor work is in proportion to its tokens;
    /// `WV_CUDA_QGEMM_SMALL=0` keeps the 128-token tiles): loaded with it.
    pub gemm_q4_tma64: Option<Kernel>,
    pub gemm_q4_tma32: Option<Kernel>,
    /// Token tiles up to which K is split for a full wave (`gemm_q4_split_small`), else by
    /// the 128-token tiles' rule (`gemm_q4_split_count`): 32 (`WV_CUDA_QGEMM_SMALL_SPLIT`;
    /// 0 none, 64 both small tiles). H200, 13B: TTFT 5.4 against 6.6 ms at 16 and 32 tokens,
    /// but 6.7 against 6.4 at 64.
    pub gemm_q4_small_split: usize,
    /// The most tokens a pass may have for the fused product (`WV_CUDA_QGEMM_MAX_T`): above it
    /// cuBLAS's faster tensor-core rate pays for the dequantisation (H100, 13B, `gemm_q4_tma`:
    /// TTFT 2.5x shorter at 32–128 tokens, 21% shorter at 512; a 1,500-token prompt is ~4%
    /// slower with its 1,024-token pass fused).
    pub gemm_q4_max_t: usize,
    gemm_kn: Kernel,
    gemm_nk: Kernel,
    embed: Kernel,
    residual_rmsnorm: Kernel,
    residual_rmsnorm4: Kernel,
    residual_add: Kernel,
    qkv_rope: Kernel,
    qkv_rope4: Kernel,
    silu_mul: Kernel,
    silu_mul4: Kernel,
    gather_cols: Kernel,
    attn_partial: Kernel,
    attn_partial_wide: Kernel,
    attn_combine: Kernel,
    attn_prefill_64: Kernel,
    attn_prefill_32: Kernel,
    attn_prefill_tc_64: Kernel,
    attn_prefill_tc_128: Kernel,
    /// Prefill attention on the tensor cores where the head size allows (`WV_CUDA_ATTN_TC=0`:
    /// always the SIMT kernels).
    attn_tc: bool,
    argmax: Kernel,
    penalty: Kernel,
    sample_topk: Kernel,
    /// Every layer of a decode step in one cooperative launch (see `persistent.rs`).
    pub decode_layers: Kernel,
    /// A read-bandwidth probe (benchmarks only).
    pub read_sweep: Kernel,
    _modules: Modules,
}

/// The arguments every 4-bit decode GEMV starts with (kernels/gemv.cu): the matrix, the input
/// `x` (f16; 0 when a prologue makes it), the output slabs, the shapes and the split.
fn q4_args(q: &Q4Dev, x: CUdeviceptr, out: CUdeviceptr, gpb: usize, ldo: usize) -> Result<Args> {
    let r = q.rows()?;
    let mut a = Args::new();
    a.ptr(r.qw.ptr)
        .ptr(r.scales.ptr)
        .ptr(r.zeros.ptr)
        .ptr(x)
        .ptr(q.perm.as_ref().map_or(0, |p| p.ptr))
        .ptr(out);
    a.int(q.k)
        .int(q.n)
        .int(q.groups)
        .int(q.gs)
        .int(gpb)
        .int(ldo);
    Ok(a)
}

/// The most candidates `sample_topk` sorts (top-k above it, or more ties, sample on the host).
pub const SAMPLE_CAP: usize = 2048;

/// Units per block a fused `gemv_q4m` product asks L2 for of the next one's, and its copies
/// that may still be in flight then (`Kernels::mma_prefetch`).
const MMA_PREFETCH: (usize, usize) = (4, 0);

/// Batches in `gemv_q4l`'s per-warp shared-memory weight ring (`WV_CUDA_GEMV_RING`; 0 = the
/// weights go through registers). Default 2: on an H100 the ring streams a large matrix at 80%
/// of copy bandwidth against 69% through registers (ptxas issues register loads late), and
/// decodes 241 against 232 tokens/s; 3 batches (2 blocks per SM) measured slower.
pub fn gemv_ring() -> usize {
    std::env::var("WV_CUDA_GEMV_RING")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&r| r <= 4)
        .unwrap_or(2)
}

/// Bytes of `gemv_q4l`'s weight ring (8 warps x 8 rows x 32 lanes x 16 bytes per batch).
pub(super) fn ring_bytes(ring: usize) -> usize {
    ring * 8 * 8 * 32 * 16
}

/// The most dynamic shared memory a `gemv_q4l` block may ask for with a ring of `ring`
/// batches: the ring, the largest x slice and the attention prologue's weights.
pub fn gemv_smem_need(ring: usize) -> usize {
    if ring == 0 {
        return 0;
    }
    ring_bytes(ring) + MAX_X_SLICE * 2 + 16 * 1024
}

pub use super::gemm_q4::{
    gemm_q4_split_count, GEMM_Q4_MAX_SPLIT, GEMM_Q4_MAX_T, GEMM_Q4_SMEM, GEMM_Q4_TMA_SMEM,
};

/// A sublayer's output as S partial slabs: element (s, t, n) at `ptr + 4*(s*sstride + t*ld + n)`.
#[derive(Clone, Copy, Debug)]
pub struct Partials {
    pub ptr: CUdeviceptr,
    pub s: usize,
    pub sstride: usize,
    pub ld: usize,
}

/// float4 chunks of a row one thread of `residual_rmsnorm4` holds (RMS4_NPT in norm.cu).
const RMS4_NPT: usize = 6;

/// (blocks, threads) of a 1-D grid-stride launch over `items`: 256-thread blocks, at most one
/// resident wave (8 per SM), for large counts (prefill); 64-thread blocks for small ones
/// (decode), so that the work still spreads over many SMs.
fn grid_1d(gpu: &Gpu, items: usize) -> (u32, u32) {
    if items >= gpu.sms * 512 {
        (items.div_ceil(256).min(gpu.sms * 8) as u32, 256)
    } else {
        (items.div_ceil(64).max(1) as u32, 64)
    }
}

/// Whether every non-null pointer is a multiple of its alignment.
fn aligned(ptrs: &[(CUdeviceptr, u64)]) -> bool {
    ptrs.iter().all(|&(p, a)| p % a == 0)
}

impl Kernels {
    pub fn load(gpu: &Arc<Gpu>) -> Result<Kernels> {
        let m = Modules::load(gpu)?;
        let qgemm = std::env::var("WV_CUDA_QGEMM").map_or(true, |v| v != "0");
        let tma = qgemm
            && std::env::var("WV_CUDA_QGEMM_TMA").map_or(true, |v| v != "0")
            && gpu.has_tensor_maps();
        let tma_small = tma && std::env::var("WV_CUDA_QGEMM_SMALL").map_or(true, |v| v != "0");
        let mut k = Kernels {
            gemv_q4: m.get("gemv.cu", "gemv_q4")?,
            gemv_q4w: m.get("gemv.cu", "gemv_q4w")?,
            gemv_q4l: m.get("gemv.cu", "gemv_q4l")?,
            gemv_q4l_norm: m.get("gemv.cu", "gemv_q4l_norm")?,
            gemv_q4l_attn_resid: m.get("gemv.cu", "gemv_q4l_attn_resid")?,
            gemv_q4l_silu_resid: m.get("gemv.cu", "gemv_q4l_silu_resid")?,
            gemv_f16: m.get("gemv.cu", "gemv_f16")?,
            gemv_q4m: m.get_opt("gemv_mma.cu", "gemv_q4m")?,
            quant_digits: m.get_opt("gemv_mma.cu", "quant_digits")?,
            gemv_q4m_resid: m.get_opt("gemv_mma.cu", "gemv_q4m_resid")?,
            gemv_q4m_rope: m.get_opt("gemv_mma.cu", "gemv_q4m_rope")?,
            gemv_q4m_silu: m.get_opt("gemv_mma.cu", "gemv_q4m_silu")?,
            mma_fuse: std::env::var("WV_CUDA_MMA_FUSE").map_or(true, |v| v != "0"),
            mma_attn: std::env::var("WV_CUDA_MMA_ATTN").map_or(true, |v| v != "0"),
            mma_prefetch: std::env::var("WV_CUDA_MMA_PREFETCH")
                .ok()
                .and_then(|v| {
                    let (u, lag) = v.split_once(',').unwrap_or((&v, "0"));
                    Some((
                        u.parse::<usize>().ok()?.min(4096),
                        lag.parse::<usize>().ok()?,
                    ))
                })
                .unwrap_or(MMA_PREFETCH),
            dequant_q4: m.get("dequant.cu", "dequant_q4")?,
            gemm_q4_max_t: std::env::var("WV_CUDA_QGEMM_MAX_T")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(GEMM_Q4_MAX_T),
            gemm_q4: if qgemm {
                m.get_opt("gemm_q4.cu", "gemm_q4_wgmma")?
            } else {
                None
            },
            gemm_q4_tma: if tma {
                m.get_opt("gemm_q4.cu", "gemm_q4_tma")?
            } else {
                None
            },
            gemm_q4_tma64: if tma_small {
                m.get_opt("gemm_q4.cu", "gemm_q4_tma64")?
            } else {
                None
            },
            gemm_q4_tma32: if tma_small {
                m.get_opt("gemm_q4.cu", "gemm_q4_tma32")?
            } else {
                None
            },
            gemm_q4_small_split: std::env::var("WV_CUDA_QGEMM_SMALL_SPLIT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(32),
            gemm_kn: m.get("gemm.cu", "gemm_f16_kn")?,
            gemm_nk: m.get("gemm.cu", "gemm_f16_nk")?,
            embed: m.get("norm.cu", "embed")?,
            residual_rmsnorm: m.get("norm.cu", "residual_rmsnorm")?,
            residual_rmsnorm4: m.get("norm.cu", "residual_rmsnorm4")?,
            residual_add: m.get("norm.cu", "residual_add")?,
            qkv_rope: m.get("elementwise.cu", "qkv_rope")?,
            qkv_rope4: m.get("elementwise.cu", "qkv_rope4")?,
            silu_mul: m.get("elementwise.cu", "silu_mul")?,
            silu_mul4: m.get("elementwise.cu", "silu_mul4")?,
            gather_cols: m.get("elementwise.cu", "gather_cols")?,
            attn_partial: m.get("attention.cu", "attn_partial")?,
            attn_partial_wide: m.get("attention.cu", "attn_partial_wide")?,
            attn_combine: m.get("attention.cu", "attn_combine")?,
            attn_prefill_64: m.get("attention.cu", "attn_prefill_64")?,
            attn_prefill_32: m.get("attention.cu", "attn_prefill_32")?,
            attn_prefill_tc_64: m.get("attention.cu", "attn_prefill_tc_64")?,
            attn_prefill_tc_128: m.get("attention.cu", "attn_prefill_tc_128")?,
            attn_tc: std::env::var("WV_CUDA_ATTN_TC").map_or(true, |v| v != "0"),
            fusion: Fusion::from_env(),
            att_buckets: std::env::var("WV_CUDA_ATT_BUCKETS").map_or(true, |v| v != "0"),
            ring: m.ring,
            argmax: m.get("sample.cu", "argmax_f32")?,
            penalty: m.get("sample.cu", "repetition_penalty")?,
            sample_topk: m.get("sample.cu", "sample_topk")?,
            decode_layers: m.get("decode.cu", "decode_layers")?,
            read_sweep: m.get("elementwise.cu", "read_sweep")?,
            _modules: m,
        };
        // The fused products need their shared memory allowed (else they are not used); the
        // TMA one also needs gemm_q4_wgmma, its fallback.
        let allow = |f: &mut Option<Kernel>, bytes: usize| -> Result<()> {
            match f {
                Some(k) if gpu.max_smem_optin >= bytes => gpu.allow_smem(k, bytes),
                _ => {
                    *f = None;
                    Ok(())
                }
            }
        };
        allow(&mut k.gemm_q4, GEMM_Q4_SMEM)?;
        let (mw, mst) = super::gemv_mma::shape();
        let mma_smem = super::gemv_mma::smem_of(mw, mst);
        allow(&mut k.gemv_q4m, mma_smem)?;
        allow(&mut k.gemv_q4m_resid, mma_smem)?;
        allow(&mut k.gemv_q4m_rope, mma_smem)?;
        allow(&mut k.gemv_q4m_silu, mma_smem)?;
        if k.gemv_q4m.is_none() {
            k.quant_digits = None;
            k.gemv_q4m_resid = None;
            k.gemv_q4m_rope = None;
            k.gemv_q4m_silu = None;
        }
        if k.gemm_q4.is_none() {
            k.gemm_q4_tma = None;
        }
        allow(&mut k.gemm_q4_tma, GEMM_Q4_TMA_SMEM)?;
        if k.gemm_q4_tma.is_none() {
            k.gemm_q4_tma64 = None;
            k.gemm_q4_tma32 = None;
        }
        allow(&mut k.gemm_q4_tma64, super::gemm_q4::tma_smem(64))?;
        allow(&mut k.gemm_q4_tma32, super::gemm_q4::tma_smem(32))?;
        if k.ring > 0 {
            // The ring plus the largest x slice and attention weights need the opt-in limit
            // (Modules::load compiled without the ring where the GPU's limit is smaller).
            let want = gemv_smem_need(k.ring);
            for f in [
                &k.gemv_q4l,
                &k.gemv_q4l_norm,
                &k.gemv_q4l_attn_resid,
                &k.gemv_q4l_silu_resid,
            ] {
                gpu.allow_smem(f, want)?;
            }
        }
        Ok(k)
    }

    /// `out[s*ldo + n] = Σ_{k in slab s} x[k] W[k, n]` (decode, one token).
    #[allow(clippy::too_many_arguments)]
    pub fn gemv_q4(
        &self,
        gpu: &Gpu,
        q: &Q4Dev,
        x: CUdeviceptr,
        out: CUdeviceptr,
        s: usize,
        gpb: usize,
        ldo: usize,
        kind: GemvKind,
    ) -> Result<()> {
        let mut smem = gpb.min(q.groups) * q.gs * 2;
        debug_assert!(smem <= MAX_X_SLICE * 2);
        let mut a = q4_args(q, x, out, gpb, ldo)?;
        // gemv_q4w / gemv_q4l (need gs % 64 == 0; q4l zeros < 64): 8 warps per 128 columns;
        // gemv_q4: 4 warps per 512.
        let (kernel, cols, threads) = match kind {
            GemvKind::Lean => {
                debug_assert!(q.gs % 64 == 0 && q.k % 64 == 0 && q.small_zeros);
                // No prologue or epilogue inputs (see gemv_q4l_fused).
                a.ptr(0).ptr(0).ptr(0).i32(0).i32(0).i64(0).f32(0.0);
                a.ptr(0).ptr(0).ptr(0).ptr(0);
                smem += ring_bytes(self.ring);
                (&self.gemv_q4l, 128, 256)
            }
            GemvKind::Wide => {
                debug_assert!(q.gs % 64 == 0);
                (&self.gemv_q4w, 128, 256)
            }
            GemvKind::Classic => (&self.gemv_q4, 512, 128),
            // Ops::linear runs these itself (quant_digits, then gemv_q4m).
            GemvKind::Mma => return Err(Error::internal("gemv_q4 called for a gemv_q4m group")),
        };
        // SAFETY (all three kernels): qw/scales/zeros/perm are q's device buffers of the shapes the
        // kernel header gives; x holds q.k f16 values, out has s slabs of ldo >= q.n floats from
        // the given column; smem is the x slice of gpb groups (<= MAX_X_SLICE f16).
        gpu.launch(
            kernel,
            (q.n.div_ceil(cols) as u32, s as u32, 1),
            threads,
            smem as u32,
            &mut a,
        )
    }

    /// `gemv_q4l` with its input made by a fused prologue and, for [`Epilogue::Residual`], the
    /// slabs summed into the residual stream by the last block of each column tile (decode;
    /// see kernels/gemv.cu). `gpb` groups per block, `s` slabs into `out` (row stride `ldo`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemv_q4l_fused(
        &self,
        gpu: &Gpu,
        q: &Q4Dev,
        out: CUdeviceptr,
        s: usize,
        gpb: usize,
        ldo: usize,
        pro: Prologue,
        epi: Epilogue,
    ) -> Result<()> {
        debug_assert!(q.gs % 64 == 0 && q.k % 64 == 0 && q.small_zeros);
        let gpb = gpb.min(q.groups);
        let mut smem = gpb * q.gs * 2;
        let mut a = q4_args(q, 0, out, gpb, ldo)?;
        let kernel = match (pro, epi) {
            (
                Prologue::Norm {
                    x,
                    w,
                    ss,
                    tiles,
                    eps,
                },
                Epilogue::None,
            ) => {
                a.ptr(x).ptr(w).ptr(ss).int(tiles).i32(0).i64(0).f32(eps);
                &self.gemv_q4l_norm
            }
            (Prologue::Attention { po, pml, nch, nh }, Epilogue::Residual { .. }) => {
                debug_assert!(q.perm.is_none());
                smem += gpb * nch * 4;
                a.ptr(po).ptr(pml).ptr(0).int(nch).int(nh).i64(0).f32(0.0);
                &self.gemv_q4l_attn_resid
            }
            (Prologue::Silu { part, bias }, Epilogue::Residual { .. }) => {
                a.ptr(part.ptr)
                    .ptr(bias)
                    .ptr(0)
                    .int(part.s)
                    .i32(0)
                    .i64(part.sstride as i64)
                    .f32(0.0);
                &self.gemv_q4l_silu_resid
            }
            _ => return Err(Error::internal("no gemv_q4l variant for this fusion")),
        };
        match epi {
            Epilogue::None => a.ptr(0).ptr(0).ptr(0).ptr(0),
            Epilogue::Residual {
                counters,
                x,
                bias,
                ss,
            } => a.ptr(counters).ptr(x).ptr(bias).ptr(ss),
        };
        smem += ring_bytes(self.ring);
        let limit = if self.ring > 0 {
            gpu.max_smem_optin
        } else {
            48 * 1024
        };
        if smem > limit {
            return Err(Error::internal("fused GEMV shared memory over the limit"));
        }
        // SAFETY: as gemv_q4 for the product; the prologue and epilogue pointers are the live
        // scratch buffers the enum variants name, of the sizes their docs give; counters holds
        // ceil(q.n / 128) zeros (each launch leaves them zero); smem is the x slice plus, for the
        // attention prologue, gpb * nch floats.
        gpu.launch(
            kernel,
            (q.n.div_ceil(128) as u32, s as u32, 1),
            256,
            smem as u32,
            &mut a,
        )
    }

    /// Dense `[n, k]` f16 matrix times x, K split into `s` chunks of `kc`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemv_f16(
        &self,
        gpu: &Gpu,
        w: CUdeviceptr,
        k: usize,
        n: usize,
        x: CUdeviceptr,
        out: CUdeviceptr,
        s: usize,
        kc: usize,
        ldo: usize,
    ) -> Result<()> {
        let mut a = Args::new();
        a.ptr(w)
            .ptr(x)
            .ptr(out)
            .int(k)
            .int(n)
            .int(kc.max(8))
            .int(ldo);
        gpu.launch(
            &self.gemv_f16,
            (n.div_ceil(8) as u32, s as u32, 1),
            256,
            0,
            &mut a,
        )
    }

    /// Columns [c0, c1) of a 4-bit matrix to f16 `[k, c1-c0]`, rows in the checkpoint's order.
    pub fn dequant_q4(
        &self,
        gpu: &Gpu,
        q: &Q4Dev,
        out: CUdeviceptr,
        c0: usize,
        c1: usize,
    ) -> Result<()> {
        let total = (q.k / 8) * (c1 - c0);
        let blocks = total.div_ceil(256).min(gpu.sms * 32).max(1);
        let r = q.rows()?;
        let mut a = Args::new();
        a.ptr(r.qw.ptr)
            .ptr(r.scales.ptr)
            .ptr(r.zeros.ptr)
            .ptr(q.perm.as_ref().map_or(0, |p| p.ptr))
            .ptr(out);
        a.int(q.k).int(q.n).int(q.gs).int(c0).int(c1);
        gpu.launch(&self.dequant_q4, (blocks as u32, 1, 1), 256, 0, &mut a)
    }

    /// The SIMT fallback product: `Y[t, n] (row stride ldy) = X[t, :] · B[:, n]`, B either
    /// `[k, n]` (`nk == false`) or `[n, k]`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        gpu: &Gpu,
        nk: bool,
        x: CUdeviceptr,
        w: CUdeviceptr,
        y: CUdeviceptr,
        t: usize,
        n: usize,
        k: usize,
        ldy: usize,
    ) -> Result<()> {
        let mut a = Args::new();
        a.ptr(x).ptr(w).ptr(y).int(t).int(n).int(k).int(ldy);
        let f = if nk { &self.gemm_nk } else { &self.gemm_kn };
        gpu.launch(
            f,
            (n.div_ceil(64) as u32, t.div_ceil(64) as u32, 1),
            256,
            0,
            &mut a,
        )
    }

    pub fn embed(
        &self,
        gpu: &Gpu,
        tokens: CUdeviceptr,
        table: CUdeviceptr,
        x: CUdeviceptr,
        t: usize,
        h: usize,
    ) -> Result<()> {
        let mut a = Args::new();
        a.ptr(tokens).ptr(table).ptr(x).int(h);
        // SAFETY: tokens holds t ids below the table's rows (checked by the caller), table is
        // [vocab][h] f16 and x [t][h] f32, both from the allocator (256-byte aligned): a
        // thread's four elements start at a multiple of 4, so its 8- and 16-byte accesses are
        // aligned where h % 4 == 0 (the kernel reads one element at a time otherwise).
        gpu.launch(
            &self.embed,
            (t as u32, h.div_ceil(1024) as u32, 1),
            256,
            0,
            &mut a,
        )
    }

    /// Rows `row0 .. row0+rows` of x: add `delta` (+bias) in place when given, then RMSNorm
    /// into `out` (f16, `rows` rows) and, when `digits` is not 0 and the kernel can (one row,
    /// `h % 128 == 0`, `residual_rmsnorm4`), also as `gemv_q4m`'s input digits there. Returns
    /// whether it wrote the digits.
    #[allow(clippy::too_many_arguments)]
    pub fn residual_rmsnorm(
        &self,
        gpu: &Gpu,
        x: CUdeviceptr,
        delta: Option<Partials>,
        bias: CUdeviceptr,
        w: CUdeviceptr,
        eps: f32,
        out: CUdeviceptr,
        h: usize,
        row0: usize,
        rows: usize,
        digits: CUdeviceptr,
    ) -> Result<bool> {
        // Decode: the slabs of one row are summed by many blocks first, then one block norms.
        let delta = match delta {
            Some(p) if rows == 1 && p.s > 1 => {
                let mut a = Args::new();
                a.ptr(x + (row0 * h * 4) as u64)
                    .ptr(p.ptr + (row0 * p.ld * 4) as u64)
                    .int(p.s)
                    .i64(p.sstride as i64)
                    .int(p.ld);
                a.ptr(bias).int(h).int(1);
                gpu.launch(
                    &self.residual_add,
                    (h.div_ceil(256).min(gpu.sms * 8) as u32, 1, 1),
                    256,
                    0,
                    &mut a,
                )?;
                None
            }
            d => d,
        };
        let d = delta.unwrap_or(Partials {
            ptr: 0,
            s: 0,
            sstride: 0,
            ld: 0,
        });
        let mut a = Args::new();
        a.ptr(x)
            .ptr(d.ptr)
            .int(d.s)
            .i64(d.sstride as i64)
            .int(d.ld)
            .ptr(if delta.is_some() { bias } else { 0 });
        a.ptr(w).f32(eps).ptr(out).int(h).int(row0);
        // residual_rmsnorm4 (16-byte steps, the row in registers) when the shapes allow.
        let h4 = h / 4;
        let v4 = h % 4 == 0
            && h4 <= RMS4_NPT * 1024
            && aligned(&[(x, 16), (w, 16), (out, 8)])
            && (delta.is_none()
                || (aligned(&[(d.ptr, 16), (bias, 16)]) && d.ld % 4 == 0 && d.sstride % 4 == 0));
        let with_digits = digits != 0 && v4 && rows == 1 && h % 128 == 0;
        let (f, block) = if v4 {
            let need = h4.div_ceil(RMS4_NPT).div_ceil(32) * 32;
            // Before a gemv_q4m product (digits), 256 threads: a 1,024-thread block (60
            // registers each) cannot sit beside that product's blocks, so it waited for an SM to
            // empty and held up the next product's launch (H200, 13B: 319.8 against 305.8
            // tokens/s; gemv_q4l's decode is 347.0 with 1,024 against 341.4 with 256).
            let want = if rows >= gpu.sms || with_digits {
                256
            } else {
                1024
            };
            let block = want.min(h4.div_ceil(32) * 32).max(need).min(1024);
            a.ptr(if with_digits { digits } else { 0 });
            (&self.residual_rmsnorm4, block)
        } else {
            (&self.residual_rmsnorm, if h >= 4096 { 1024 } else { 256 })
        };
        // SAFETY: x holds the rows of the residual stream, delta its slabs, w and bias h floats,
        // out `rows` rows of h f16; digits (when passed) room for h / 128 blocks (Scratch::digits).
        gpu.launch(f, (rows as u32, 1, 1), block as u32, 0, &mut a)?;
        Ok(with_digits)
    }

    /// Sum the q|k|v slabs (+bias), rotate q and k with the RoPE table at positions pos..pos+t
    /// (or *dpos.. when `dpos != 0`), write q (f32) and K, V (f16) into this layer's cache.
    /// Positions must be below `rope.positions` (the kernel writes NaN for q and k past it).
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope(
        &self,
        gpu: &Gpu,
        p: Partials,
        bias: CUdeviceptr,
        q: CUdeviceptr,
        kc: CUdeviceptr,
        vc: CUdeviceptr,
        rope: RopeTable,
        (pos, dpos): (usize, CUdeviceptr),
        t: usize,
        (nh, nkv, hd): (usize, usize, usize),
    ) -> Result<()> {
        debug_assert!(dpos != 0 || pos + t <= rope.positions);
        debug_assert!(hd % 2 == 0 && p.ld == (nh + 2 * nkv) * hd);
        // qkv_rope4: 4 pairs per step (16-byte loads) when the head size and alignment allow.
        let v4 = hd % 8 == 0
            && p.sstride % 4 == 0
            && aligned(&[
                (p.ptr, 16),
                (bias, 16),
                (q, 16),
                (kc, 8),
                (vc, 8),
                (rope.ptr, 16),
            ]);
        let (f, v) = if v4 {
            (&self.qkv_rope4, 4)
        } else {
            (&self.qkv_rope, 1)
        };
        let items = t * (nh + 2 * nkv) * (hd / 2 / v);
        if items > i32::MAX as usize {
            return Err(Error::internal(format!(
                "qkv_rope: {items} work items do not fit an int"
            )));
        }
        let mut a = Args::new();
        a.ptr(p.ptr)
            .int(p.s)
            .i64(p.sstride as i64)
            .ptr(bias)
            .ptr(q)
            .ptr(kc)
            .ptr(vc)
            .ptr(rope.ptr);
        a.int(rope.positions)
            .int(pos)
            .ptr(dpos)
            .int(nh)
            .int(nkv)
            .int(hd)
            .int(t);
        let (blocks, threads) = grid_1d(gpu, items);
        gpu.launch(f, (blocks, 1, 1), threads, 0, &mut a)
    }

    /// `out[t, i] = x[t, perm[i]]` for `t` rows of `k` f16: an act-order matrix's input in its
    /// sorted row order (prefill's fused product).
    pub fn gather_cols(
        &self,
        gpu: &Gpu,
        x: CUdeviceptr,
        perm: CUdeviceptr,
        out: CUdeviceptr,
        k: usize,
        t: usize,
    ) -> Result<()> {
        if k == 0 || t == 0 {
            return Ok(());
        }
        if t * k > i32::MAX as usize {
            return Err(Error::internal("gather_cols over more than 2^31 elements"));
        }
        // A row staged in shared memory where it fits the default 48 KiB (every LLaMA width up
        // to 24,576 inputs), else one element per step.
        let staged = k % 8 == 0 && k * 2 <= 48 * 1024 && aligned(&[(x, 16), (perm, 16), (out, 16)]);
        let mut a = Args::new();
        a.ptr(x)
            .ptr(perm)
            .ptr(out)
            .int(k)
            .int(t)
            .int(staged as usize);
        let (grid, threads, smem) = if staged {
            (t as u32, 256, k * 2)
        } else {
            let (blocks, threads) = grid_1d(gpu, t * k);
            (blocks, threads, 0)
        };
        // SAFETY: x and out hold t rows of k f16 (distinct buffers; staged: 16-byte aligned rows
        // as k % 8 == 0, and k * 2 bytes of shared memory), perm k indices below k (a
        // permutation made at upload), 16-byte aligned when staged.
        gpu.launch(
            &self.gather_cols,
            (grid, 1, 1),
            threads,
            smem as u32,
            &mut a,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn silu_mul(
        &self,
        gpu: &Gpu,
        p: Partials,
        bias: CUdeviceptr,
        out: CUdeviceptr,
        f: usize,
        t: usize,
        digits: CUdeviceptr,
    ) -> Result<bool> {
        let mut a = Args::new();
        a.ptr(p.ptr)
            .int(p.s)
            .i64(p.sstride as i64)
            .ptr(bias)
            .ptr(out)
            .int(f)
            .int(t);
        // silu_mul4: 4 columns per step (16-byte loads) when the width and alignment allow.
        let v4 = f % 4 == 0
            && p.sstride % 4 == 0
            && t * f / 4 <= i32::MAX as usize
            && aligned(&[(p.ptr, 16), (bias, 16), (out, 8)]);
        let with_digits = digits != 0 && v4 && t == 1 && f % 128 == 0;
        let (k, items) = if v4 {
            a.ptr(if with_digits { digits } else { 0 });
            (&self.silu_mul4, t * f / 4)
        } else {
            (&self.silu_mul, t * f)
        };
        // (grid_1d's blocks are 64 or 256 threads: a warp's chunks are one 128-input block.)
        let (blocks, threads) = grid_1d(gpu, items);
        gpu.launch(k, (blocks, 1, 1), threads, 0, &mut a)?;
        Ok(with_digits)
    }
}
