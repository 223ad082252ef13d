//! Weights on the GPU, repacked at upload into the layouts the kernels read fastest.
//!
//! - 4-bit GPTQ matrices ([`Q4Host`]): act-order rows sorted by group (the activation is gathered
//!   through `perm` to match), each packed word's nibbles reordered so that one `lop3` yields two
//!   consecutive rows as an f16 pair (see `kernels/gemv.cu`), scales as f16 and zero points as
//!   bytes. Layers that share an input (q|k|v, gate|up) are concatenated along the output when
//!   their row order agrees, so one launch computes them all.
//! - Everything else (2-, 3- and 8-bit GPTQ, shapes the 4-bit kernel does not take, dense
//!   f16/bf16/f32 layers): dequantised or converted on the host to a dense f16 `[out, in]` matrix.
//!
//! The host-side repacking lives in repack.rs (plain Rust, unit-tested on the CPU against the
//! reference product); this file holds the device-side types, the decode plan and the upload.

use super::device::{DevBuf, Gpu};
use super::ffi::{self, CUdeviceptr};
pub use super::repack::{dense_f16, repack_q4, Q4Host, POS};
use crate::backend::cpu::pool::{parallel_for, SharedMut};
use crate::error::Result;
use crate::weights::{HostWeights, Linear};
use std::sync::Arc;

/// The largest x slice (in f16 elements) one GEMV block stages in shared memory.
pub const MAX_X_SLICE: usize = 24 * 1024;

/// wv's row layout of a 4-bit matrix (gemv.cu): what `gemv_q4l` and the other GEMVs, the
/// fused prefill product, the dequantisation for cuBLAS and the persistent kernel read.
pub struct Q4Rows {
    pub qw: DevBuf,     // u32 [k / 8][n], nibbles reordered (repack.rs)
    pub scales: DevBuf, // f16 [groups][n]
    pub zeros: DevBuf,  // u8 [groups][n], offset included
}

/// A 4-bit matrix on the device: in wv's row layout ([`Q4Rows`]), in the unit-major layout
/// (`units`, what `gemv_q4m` reads in that layout, the sm_90 default), or — where
/// decode runs the matrix on `gemv_q4m` and prefill on `gemm_q4_tma` — in the unit-major
/// layout only ([`Self::units_only`]).
pub struct Q4Dev {
    pub k: usize,
    pub n: usize,
    pub groups: usize,
    pub gs: usize,
    /// `None` when the matrix is held only as `units`.
    pub rows: Option<Q4Rows>,
    pub perm: Option<DevBuf>,
    /// Every zero point is below 64 (what `gemv_q4l` needs; 4-bit zeros are at most 16).
    pub small_zeros: bool,
    /// `gemm_q4_tma`'s tensor maps of the weights, scales and zeros, made once at upload (see
    /// `gemm_q4::weight_maps`) over `rows`, or over `units` when the matrix has no rows; `None`
    /// where the driver cannot make them or the matrix does not suit the TMA: prefill then
    /// runs it on `gemm_q4_wgmma` (a matrix without rows always has them).
    pub tma: Option<Box<[ffi::CUtensorMap; 3]>>,
    /// The unit-major copy `gemv_q4m` reads (`gemv_mma::unit_major`)
    /// (`gemv_mma::unit_major_copy`): `u8 [n / 128][k / 128][8,576]`.
    pub units: Option<DevBuf>,
}

impl Q4Dev {
    /// wv's row layout, or an internal error for a matrix held only in the unit-major layout
    /// (the kernels that read rows are never planned for one).
    pub fn rows(&self) -> Result<&Q4Rows> {
        self.rows.as_ref().ok_or_else(|| {
            crate::Error::internal(
                "a kernel that reads wv's row layout was planned for a matrix held only in the unit-major layout",
            )
        })
    }

    /// Whether the matrix is held only in the unit-major layout.
    pub fn units_only(&self) -> bool {
        self.rows.is_none()
    }
}

/// A dense f16 `[n, k]` matrix on the device.
pub struct F16Dev {
    pub k: usize,
    pub n: usize,
    pub w: DevBuf,
}

pub enum DevMat {
    Q4(Q4Dev),
    F16(F16Dev),
}

impl DevMat {
    pub fn n(&self) -> usize {
        match self {
            DevMat::Q4(q) => q.n,
            DevMat::F16(d) => d.n,
        }
    }
    pub fn bytes(&self) -> usize {
        match self {
            DevMat::Q4(q) => {
                q.rows
                    .as_ref()
                    .map_or(0, |r| r.qw.bytes + r.scales.bytes + r.zeros.bytes)
                    + q.units.as_ref().map_or(0, |u| u.bytes)
                    + q.perm.as_ref().map_or(0, |p| p.bytes)
            }
            DevMat::F16(d) => d.w.bytes,
        }
    }
}

impl Member {
    /// The member's 4-bit matrix (an internal error for a dense one).
    pub fn q4(&self) -> Result<&Q4Dev> {
        match &self.mat {
            DevMat::Q4(q) => Ok(q),
            DevMat::F16(_) => Err(crate::Error::internal(
                "a dense matrix where a 4-bit one was planned",
            )),
        }
    }
}

/// One member of a [`LinearGroup`]: a matrix and its first output column in the group.
pub struct Member {
    pub mat: DevMat,
    pub col0: usize,
    /// Groups per GEMV block (4-bit) or the K chunk per block (dense), for decode.
    pub per_block: usize,
}

/// Linear layers sharing one input, their outputs side by side: `[T, n_total]`.
pub struct LinearGroup {
    pub k: usize,
    pub n_total: usize,
    pub members: Vec<Member>,
    /// `[n_total]` f32, when any member has a bias (zeros elsewhere).
    pub bias: Option<DevBuf>,
    /// Partial slabs in decode (split over K).
    pub s_decode: usize,
    /// The decode kernel for the 4-bit members.
    pub gemv: GemvKind,
}

impl LinearGroup {
    pub fn bytes(&self) -> usize {
        self.members.iter().map(|m| m.mat.bytes()).sum::<usize>()
            + self.bias.as_ref().map_or(0, |b| b.bytes)
    }

    /// Upload `lins` (all with `k` inputs) as one group, as `loaded` allows.
    pub fn upload(
        gpu: &Arc<Gpu>,
        lins: &[&Linear],
        what: &str,
        loaded: Loaded,
    ) -> Result<LinearGroup> {
        let k = lins[0].in_features();
        let n_total: usize = lins.iter().map(|l| l.out_features()).sum();
        let mut q4: Vec<Option<Q4Host>> = lins
            .iter()
            .map(|l| match l {
                Linear::Gptq(m) if std::env::var_os("WV_CUDA_NO_Q4").is_none() => repack_q4(m),
                _ => None,
            })
            .collect();
        let mut mats: Vec<DevMat> = Vec::new();
        if q4.iter().all(|q| q.is_some()) && lins.len() > 1 {
            let parts: Vec<&Q4Host> = q4.iter().flatten().collect();
            let f = parts[0];
            if parts
                .iter()
                .all(|p| p.k == f.k && p.gs == f.gs && p.groups == f.groups && p.perm == f.perm)
            {
                let owned: Vec<Q4Host> = q4.into_iter().flatten().collect();
                let cat = Q4Host::concat(&owned).expect("checked compatible");
                drop(owned);
                mats.push(DevMat::Q4(upload_q4(gpu, &cat, what, loaded)?));
                q4 = Vec::new();
            }
        }
        if mats.is_empty() {
            for (l, q) in lins.iter().zip(q4) {
                mats.push(match q {
                    Some(q) => DevMat::Q4(upload_q4(gpu, &q, what, loaded)?),
                    None => {
                        let w = dense_f16(l);
                        DevMat::F16(F16Dev {
                            k,
                            n: l.out_features(),
                            w: gpu.upload(&w, what)?,
                        })
                    }
                });
            }
        }
        let bias = if lins.iter().any(|l| l.bias().is_some()) {
            let mut b = Vec::with_capacity(n_total);
            for l in lins {
                match l.bias() {
                    Some(v) => b.extend_from_slice(v),
                    None => b.resize(b.len() + l.out_features(), 0.0),
                }
            }
            Some(gpu.upload(&b, what)?)
        } else {
            None
        };
        let gemv = GemvKind::choose(&mats, gpu, loaded.mma);
        if !gemv.takes(&mats, gpu, loaded.mma) {
            return Err(crate::Error::internal(format!(
                "{what}: a matrix held only in the unit-major layout needs gemv_q4m for every member of its group"
            )));
        }
        let (s_decode, per_block) = gemv.plan(gpu.sms, k, n_total, &mats);
        let mut col0 = 0;
        let members = mats
            .into_iter()
            .zip(per_block)
            .map(|(mat, per_block)| {
                let m = Member {
                    col0,
                    per_block,
                    mat,
                };
                col0 += m.mat.n();
                m
            })
            .collect();
        Ok(LinearGroup {
            k,
            n_total,
            members,
            bias,
            s_decode,
            gemv,
        })
    }

    /// Whether any member is a 4-bit matrix with an act-order permutation.
    pub fn has_act_order(&self) -> bool {
        self.members
            .iter()
            .any(|m| matches!(&m.mat, DevMat::Q4(q) if q.perm.is_some()))
    }

    /// Whether every member allows decode on `kind` (`mma_loaded`: whether `gemv_q4m` is).
    pub fn allows(&self, kind: GemvKind, gpu: &Gpu, mma_loaded: bool) -> bool {
        let mats: Vec<&DevMat> = self.members.iter().map(|m| &m.mat).collect();
        kind.takes(&mats, gpu, mma_loaded)
    }

    /// Run decode on `kind` instead of the kernel chosen at upload (tests; the caller checks
    /// that the weights allow it): the split follows.
    pub fn set_gemv(&mut self, gpu: &Gpu, kind: GemvKind) {
        if kind == self.gemv {
            return;
        }
        let mats: Vec<&DevMat> = self.members.iter().map(|m| &m.mat).collect();
        let (s, per) = kind.plan(gpu.sms, self.k, self.n_total, &mats);
        for (m, p) in self.members.iter_mut().zip(per) {
            m.per_block = p;
        }
        self.s_decode = s;
        self.gemv = kind;
    }
}

/// `Some((groups, group size))` per 4-bit matrix, `None` per dense one (what [`plan_decode`]
/// takes).
fn shapes_of<'a>(mats: impl Iterator<Item = &'a DevMat>) -> Vec<Option<(usize, usize)>> {
    mats.map(|m| match m {
        DevMat::Q4(q) => Some((q.groups, q.gs)),
        DevMat::F16(_) => None,
    })
    .collect()
}

/// Which decode kernel runs a group's 4-bit members (see `kernels/gemv.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvKind {
    /// `gemv_q4`: 4 warps on 512 columns; any group size that is a multiple of 8.
    Classic,
    /// `gemv_q4w`: 8 warps on 128 columns, K split over the warps; gs % 64 == 0.
    Wide,
    /// `gemv_q4l`: as `Wide` with about half the instructions per weight; gs % 64 == 0,
    /// K % 64 == 0 and every zero point below 64.
    Lean,
    /// `gemv_q4m` (kernels/gemv_mma.cu): the integer tensor cores, one block per SM; K, N and
    /// gs multiples of 128, on sm_90a GPUs (`WV_CUDA_GEMV=mma`; see `gemv_mma.rs`).
    Mma,
}

impl GemvKind {
    /// [`plan_decode`]'s `wide` for this kernel: 0 for `gemv_q4`, else the blocks per SM the
    /// plan aims at for the 128-column kernels (`WV_CUDA_GEMV_BPS`; default 3 for `gemv_q4l`,
    /// 2 for `gemv_q4w`: the residency their register use allows).
    fn plan_wide(self) -> usize {
        if self == GemvKind::Classic {
            return 0;
        }
        std::env::var("WV_CUDA_GEMV_BPS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(if self == GemvKind::Lean { 3 } else { 2 })
            .clamp(1, 16)
    }

    /// The decode split for this kernel: S slabs over K and each member's groups (4-bit) or
    /// K elements (dense) per block ([`plan_decode`]; for `gemv_q4m` its own plan, the
    /// members' most slabs, per block unused).
    fn plan(
        self,
        sms: usize,
        k: usize,
        n_total: usize,
        mats: &[impl std::borrow::Borrow<DevMat>],
    ) -> (usize, Vec<usize>) {
        if self == GemvKind::Mma {
            let s = mats
                .iter()
                .filter_map(|m| match m.borrow() {
                    DevMat::Q4(q) => super::gemv_mma::slabs(sms, q.k, q.n),
                    DevMat::F16(_) => None,
                })
                .max()
                .unwrap_or(1);
            return (s, vec![0; mats.len()]);
        }
        let shapes = shapes_of(mats.iter().map(|m| m.borrow()));
        plan_decode(sms, k, n_total, &shapes, self.plan_wide())
    }

    /// Whether this kernel takes every member of a group: the one eligibility rule ([`Self::choose`]
    /// and [`LinearGroup::allows`] ask it). `mma_loaded`: whether `gemv_q4m` is loaded.
    pub fn takes(
        self,
        mats: &[impl std::borrow::Borrow<DevMat>],
        gpu: &Gpu,
        mma_loaded: bool,
    ) -> bool {
        let q4 = || {
            mats.iter().filter_map(|m| match m.borrow() {
                DevMat::Q4(q) => Some(q),
                DevMat::F16(_) => None,
            })
        };
        // Every kernel but gemv_q4m reads wv's row layout.
        let rows = q4().all(|q| !q.units_only());
        match self {
            GemvKind::Classic => rows,
            GemvKind::Wide => rows && q4().all(|q| q.gs % 64 == 0),
            GemvKind::Lean => {
                rows && q4().all(|q| q.gs % 64 == 0 && q.small_zeros && q.k % 64 == 0)
            }
            GemvKind::Mma => {
                mma_loaded
                    && !mats.is_empty()
                    && mats.iter().all(|m| match m.borrow() {
                        DevMat::Q4(q) => super::gemv_mma::takes(gpu, q),
                        DevMat::F16(_) => false,
                    })
            }
        }
    }

    /// The fastest kernel every 4-bit member allows; `WV_CUDA_GEMV=1` (classic) or `=wide`
    /// asks for an older one, `=mma` for `gemv_q4m` where every member allows it and it is
    /// loaded (`mma_loaded`); a group holding a matrix only in the unit-major layout always
    /// decodes on `gemv_q4m`.
    pub fn choose(mats: &[DevMat], gpu: &Gpu, mma_loaded: bool) -> GemvKind {
        let want = std::env::var("WV_CUDA_GEMV").unwrap_or_default();
        let takes = |k: GemvKind| k.takes(mats, gpu, mma_loaded);
        let units_only = mats
            .iter()
            .any(|m| matches!(m, DevMat::Q4(q) if q.units_only()));
        if (want == "mma" || units_only) && takes(GemvKind::Mma) {
            GemvKind::Mma
        } else if want == "1" || want == "classic" || !takes(GemvKind::Wide) {
            GemvKind::Classic
        } else if want == "wide" || !takes(GemvKind::Lean) {
            GemvKind::Wide
        } else {
            GemvKind::Lean
        }
    }
}

/// Choose the decode split: S slabs over K, and for each member its groups per block (4-bit,
/// `Some((groups, gs))`) or K elements per block (dense, `None`). Aims at about four blocks
/// per multiprocessor (`gemv_q4`, `wide` = 0), or for `gemv_q4w` (128 columns per block) at
/// most `wide` blocks per multiprocessor, with groups per block a multiple of 4.
pub fn plan_decode(
    sms: usize,
    k: usize,
    n_total: usize,
    members: &[Option<(usize, usize)>],
    wide: usize,
) -> (usize, Vec<usize>) {
    if wide > 0 && members.iter().any(|m| m.is_some()) {
        let per_cols = (wide * sms.max(1) / n_total.div_ceil(128).max(1)).max(1);
        let mut per: Vec<usize> = Vec::with_capacity(members.len());
        let mut s = 1;
        for m in members {
            match *m {
                Some((groups, gs)) => {
                    let gpb = (groups.div_ceil(per_cols).div_ceil(4) * 4)
                        .min(groups)
                        .min((MAX_X_SLICE / gs).max(1));
                    s = s.max(groups.div_ceil(gpb));
                    per.push(gpb);
                }
                None => per.push(0),
            }
        }
        let s = s.clamp(1, 64);
        for (m, p) in members.iter().zip(per.iter_mut()) {
            if m.is_none() {
                *p = k.div_ceil(s).div_ceil(8) * 8;
            }
        }
        return (s, per);
    }
    let target = 4 * sms.max(1);
    let max_groups = members
        .iter()
        .map(|m| m.map_or(0, |(g, _)| g))
        .max()
        .unwrap_or(0);
    let s0 = if max_groups > 0 {
        let col_blocks = n_total.div_ceil(512).max(1);
        target.div_ceil(col_blocks).clamp(1, max_groups)
    } else {
        let row_blocks = n_total.div_ceil(8).max(1);
        target.div_ceil(row_blocks).clamp(1, k.div_ceil(512).max(1))
    }
    .min(64);
    // Per-member blocks, then the slabs actually needed.
    let mut per: Vec<usize> = Vec::with_capacity(members.len());
    let mut s = if max_groups > 0 { 1 } else { s0 };
    for m in members {
        match *m {
            Some((groups, gs)) => {
                let gpb = groups.div_ceil(s0).min((MAX_X_SLICE / gs).max(1));
                s = s.max(groups.div_ceil(gpb));
                per.push(gpb);
            }
            None => per.push(0),
        }
    }
    let s = s.clamp(1, 64);
    for (m, p) in members.iter().zip(per.iter_mut()) {
        if m.is_none() {
            *p = k.div_ceil(s).div_ceil(8) * 8;
        }
    }
    (s, per)
}

/// Upload a repacked 4-bit matrix: only its unit-major copy where `loaded` (the sm_90
/// default, `gemv_mma::unit_major`) lets decode run it on `gemv_q4m` and prefill on `gemm_q4_tma`
/// (and the driver makes the copy's tensor maps), else wv's row layout with its tensor maps.
fn upload_q4(gpu: &Arc<Gpu>, q: &Q4Host, what: &str, loaded: Loaded) -> Result<Q4Dev> {
    let mut d = Q4Dev {
        k: q.k,
        n: q.n,
        groups: q.groups,
        gs: q.gs,
        rows: None,
        perm: match &q.perm {
            Some(p) => Some(gpu.upload(p, what)?),
            None => None,
        },
        small_zeros: q.zeros.iter().all(|&z| z < 64),
        tma: None,
        units: None,
    };
    if loaded.units && super::gemv_mma::unit_fits(gpu, q.k, q.n, q.gs) {
        let units = super::gemv_mma::unit_major_copy(&q.qw, &q.scales, &q.zeros, q.k, q.n, q.gs);
        let units = gpu.upload(&units, what)?;
        if let Some(maps) = super::gemm_q4::unit_maps(gpu, q.k, q.n, units.ptr) {
            d.tma = Some(maps);
            d.units = Some(units);
            return Ok(d);
        }
    }
    d.rows = Some(Q4Rows {
        qw: gpu.upload(&q.qw, what)?,
        scales: gpu.upload(&q.scales, what)?,
        zeros: gpu.upload(&q.zeros, what)?,
    });
    d.tma = super::gemm_q4::weight_maps(gpu, &d);
    Ok(d)
}

/// What the loaded kernels let an upload do.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// `gemv_q4m` is loaded (`WV_CUDA_GEMV=mma` chooses it only then).
    pub mma: bool,
    /// A matrix may be held only in the unit-major layout: `gemv_mma::unit_major` (unless
    /// `WV_CUDA_MMA_LAYOUT=rows`), with `gemv_q4m`, `gemm_q4_wgmma` and `gemm_q4_tma` loaded
    /// (prefill passes then run on the fused product only: [`Self::prefill_chunk`]).
    pub units: bool,
}

impl Loaded {
    /// From the kernels loaded for this GPU.
    pub fn of(k: &super::kernels::Kernels) -> Loaded {
        let mma = k.gemv_q4m.is_some();
        Loaded {
            mma,
            units: super::gemv_mma::unit_major()
                && mma
                && k.gemm_q4.is_some()
                && k.gemm_q4_tma.is_some()
                && k.gemm_q4_max_t >= MIN_UNIT_PASS,
        }
    }

    /// The longest prefill pass for weights that hold a matrix only in the unit-major layout
    /// (which the dequantisation for cuBLAS does not read): `chunk` capped at `fused_max_t`,
    /// the longest pass the fused product takes ([`Self::of`] allows the layout only where
    /// that is at least [`MIN_UNIT_PASS`]).
    pub fn prefill_chunk(chunk: usize, units_only: bool, fused_max_t: usize) -> usize {
        if units_only {
            chunk.min(fused_max_t.max(MIN_UNIT_PASS))
        } else {
            chunk
        }
    }
}

/// The shortest prefill pass [`Loaded::units`] accepts as the fused product's limit.
pub const MIN_UNIT_PASS: usize = 64;

/// One decoder layer on the device.
pub struct DevLayer {
    pub input_norm: DevBuf,
    pub post_norm: DevBuf,
    pub qkv: LinearGroup,
    pub o: LinearGroup,
    pub gate_up: LinearGroup,
    pub down: LinearGroup,
}

/// Every weight of the model on the device.
pub struct DevWeights {
    /// [vocab, hidden] f16
    pub embed: DevBuf,
    /// [vocab, hidden] f16; `None` when tied to `embed`.
    pub lm_head: Option<DevBuf>,
    pub final_norm: DevBuf,
    /// The RoPE table f32 `[rope_positions, head_dim / 2, 2]` (see [`rope_table`]).
    pub rope: DevBuf,
    /// Rows of `rope`: the model's `max_position_embeddings` (the backend refuses later positions).
    pub rope_positions: usize,
    pub layers: Vec<DevLayer>,
}

/// A RoPE table on the device, as `qkv_rope` reads it.
#[derive(Clone, Copy, Debug)]
pub struct RopeTable {
    /// f32 `[positions, head_dim / 2, 2]`
    pub ptr: CUdeviceptr,
    pub positions: usize,
}

/// The RoPE table for positions `0..positions`: f32 `[positions, head_dim / 2, 2]`, the (cos, sin)
/// of position p and pair j at `(p * head_dim / 2 + j) * 2`, computed as the CPU backend's
/// `ops::rope` does (and transformers): the f32 angle `f32(p) * inv_freq[j]`, cos and sin in f64,
/// rounded to f32.
pub fn rope_table(head_dim: usize, theta: f32, positions: usize) -> Vec<f32> {
    let inv = crate::backend::cpu::ops::rope_inv_freq(head_dim, theta);
    let half = inv.len();
    let mut tab = vec![0f32; positions * half * 2];
    let out = SharedMut(tab.as_mut_ptr());
    parallel_for(positions, positions * half * 32, |range| {
        for p in range {
            for (j, &f) in inv.iter().enumerate() {
                let a = (p as f32 * f) as f64;
                let i = (p * half + j) * 2;
                // SAFETY: row p belongs to this range alone; i + 1 < positions * half * 2.
                unsafe {
                    out.write(i, a.cos() as f32);
                    out.write(i + 1, a.sin() as f32);
                }
            }
        }
    });
    tab
}

impl DevWeights {
    /// Upload every weight, as `loaded` allows (see [`LinearGroup::upload`]).
    pub fn upload(gpu: &Arc<Gpu>, host: &HostWeights, loaded: Loaded) -> Result<DevWeights> {
        let c = &host.config;
        let rope_positions = c.max_position_embeddings;
        let tab = rope_table(c.head_dim(), c.rope_theta, rope_positions);
        let embed = gpu.upload(&host.embed, "the token embeddings")?;
        let lm_head = match &host.lm_head {
            Some(l) => Some(gpu.upload(l, "the lm_head")?),
            None => None,
        };
        let final_norm = gpu.upload(&host.final_norm, "the final norm")?;
        let rope = gpu.upload(&tab, "the RoPE table")?;
        drop(tab);
        let mut layers = Vec::with_capacity(host.layers.len());
        for (i, l) in host.layers.iter().enumerate() {
            let what = format!("layer {i}");
            layers.push(DevLayer {
                input_norm: gpu.upload(&l.input_norm, &what)?,
                post_norm: gpu.upload(&l.post_attention_norm, &what)?,
                qkv: LinearGroup::upload(gpu, &[&l.q, &l.k, &l.v], &what, loaded)?,
                o: LinearGroup::upload(gpu, &[&l.o], &what, loaded)?,
                gate_up: LinearGroup::upload(gpu, &[&l.gate, &l.up], &what, loaded)?,
                down: LinearGroup::upload(gpu, &[&l.down], &what, loaded)?,
            });
        }
        Ok(DevWeights {
            embed,
            lm_head,
            final_norm,
            rope,
            rope_positions,
            layers,
        })
    }

    /// The RoPE table for `qkv_rope`.
    pub fn rope_table(&self) -> RopeTable {
        RopeTable {
            ptr: self.rope.ptr,
            positions: self.rope_positions,
        }
    }

    pub fn lm_head(&self) -> &DevBuf {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    pub fn bytes(&self) -> usize {
        let mut b =
            self.embed.bytes + self.lm_head.as_ref().map_or(0, |l| l.bytes) + self.final_norm.bytes;
        for l in &self.layers {
            b += l.input_norm.bytes + l.post_norm.bytes;
            b += l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes();
        }
        b
    }

    /// How many 4-bit matrices are held only in the unit-major layout (where any is, prefill
    /// passes are capped: [`Loaded::prefill_chunk`]), and how many 4-bit matrices there are.
    pub fn units_only(&self) -> (usize, usize) {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .flat_map(|g| g.members.iter())
            .filter_map(|m| match &m.mat {
                DevMat::Q4(q) => Some(q.units_only() as usize),
                DevMat::F16(_) => None,
            })
            .fold((0, 0), |(units, all), u| (units + u, all + 1))
    }

    /// Bytes a decode step reads: every layer, the norms and the lm_head (not the embeddings).
    pub fn decode_bytes(&self) -> usize {
        self.bytes()
            - if self.lm_head.is_some() {
                self.embed.bytes
            } else {
                0
            }
    }

    /// The widest group output and the widest input (for scratch sizes).
    pub fn max_n(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                l.qkv
                    .n_total
                    .max(l.o.n_total)
                    .max(l.gate_up.n_total)
                    .max(l.down.n_total)
            })
            .max()
            .unwrap_or(0)
    }
    /// Whether any 4-bit matrix has an act-order permutation.
    pub fn has_act_order(&self) -> bool {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .any(LinearGroup::has_act_order)
    }
    pub fn max_s_times_n(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .map(|g| g.s_decode * g.n_total)
            .max()
            .unwrap_or(0)
    }
    /// The most elements one 4-bit member dequantises into (for the prefill scratch).
    pub fn max_q4_elems(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .flat_map(|g| g.members.iter())
            .map(|m| {
                if let DevMat::Q4(q) = &m.mat {
                    q.k * q.n
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_only_weights_prefill_in_passes_the_fused_product_takes() {
        // Row layout: the chunk as asked (1,024-token passes dequantise for cuBLAS).
        assert_eq!(Loaded::prefill_chunk(1024, false, 512), 1024);
        // Unit-only matrices: nothing dequantises them, so every pass fits the fused product.
        assert_eq!(Loaded::prefill_chunk(1024, true, 512), 512);
        assert_eq!(Loaded::prefill_chunk(300, true, 512), 300);
        // Never below the floor Loaded::of requires of the fused product's limit.
        assert_eq!(Loaded::prefill_chunk(1024, true, 0), MIN_UNIT_PASS);
    }

    #[test]
    fn decode_plan_fits() {
        // 13B shapes on 132 SMs: x slices fit shared memory, S within bounds, enough blocks.
        for (k, n) in [
            (5120usize, 15360usize),
            (5120, 5120),
            (5120, 27648),
            (13824, 5120),
        ] {
            let (s, per) = plan_decode(132, k, n, &[Some((k / 128, 128))], 0);
            assert!(
                per[0] * 128 <= MAX_X_SLICE && (1..=64).contains(&s),
                "{k}x{n}: S {s}, gpb {}",
                per[0]
            );
            assert_eq!(s, (k / 128).div_ceil(per[0]));
            assert!(
                s * n.div_ceil(512) >= 264,
                "{k}x{n}: only {} blocks",
                s * n.div_ceil(512)
            );
        }
        // The wide kernel: 128 columns per block, every block resident (<= 2 per SM).
        for (k, n) in [
            (5120usize, 15360usize),
            (5120, 5120),
            (5120, 27648),
            (13824, 5120),
        ] {
            let (s, per) = plan_decode(132, k, n, &[Some((k / 128, 128))], 2);
            assert!(per[0] * 128 <= MAX_X_SLICE && (1..=64).contains(&s));
            assert_eq!(s, (k / 128).div_ceil(per[0]));
            assert!(s * n.div_ceil(128) <= 264, "{k}x{n}: S {s}");
        }
        // One group of the whole input (group_size -1), and a dense member beside a 4-bit one.
        let (s, per) = plan_decode(132, 4096, 64, &[Some((1, 4096)), None], 0);
        assert_eq!((s, per[0]), (1, 1));
        assert_eq!(per[1] % 8, 0);
        assert!(per[1] >= 4096);
    }
}
