//! Launchers of decode's products on the integer tensor cores (kernels/gemv_mma.cu,
//! `WV_CUDA_GEMV=mma`): a product's f16 input also as two int8 digits per value — written by
//! the decode norm, attention combine or SiLU beside their output (common.cuh's `warp_digits`),
//! else by `quant_digits` — and `gemv_q4m`, which streams the weights with one block per SM
//! into a shared-memory ring that it fills before it waits for the previous kernel.
//!
//! The plan: a product's U = (N / 128) x (K / 128) units (128 columns x 128 inputs) are split
//! into one equal contiguous range per SM (at most one block per unit), in tile-major order;
//! the blocks that share a column tile each write one slab of it (slab = block - the tile's
//! first block), so the consumers sum S slabs (S the most blocks any tile has) in a fixed
//! order: deterministic, as the other decode kernels are. A block may hold at most
//! [`MMA_SEGMENTS`] tiles; a matrix whose plan needs more, or whose shapes the kernel does not
//! take, decodes on `gemv_q4l`. Measured (docs/cuda.md, thirteenth session): far more accurate
//! than the f16 GEMVs, but slower in the step until the glue kernels between the products are
//! folded into it.

use super::device::{Args, Gpu, Kernel};
use super::ffi::CUdeviceptr;
use super::weights::Q4Dev;
use crate::error::Result;

/// Consumer warps of a `gemv_q4m` block and its ring stages (MW and MST in gemv_mma.cu; the
/// stages a multiple of the warps): `WV_CUDA_MMA_SHAPE=WxS`, default [`default_shape`]. Read
/// once per process: the module is compiled with it and every launch sized by it.
pub fn shape() -> (usize, usize) {
    static SHAPE: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *SHAPE.get_or_init(|| {
        std::env::var("WV_CUDA_MMA_SHAPE")
            .ok()
            .and_then(|v| {
                let (w, s) = v.split_once('x')?;
                Some((w.parse::<usize>().ok()?, s.parse::<usize>().ok()?))
            })
            .filter(|&(w, s)| {
                (MMA_SEGMENTS..=16).contains(&w) && s % w == 0 && smem_of(w, s) <= 227 * 1024
            })
            .unwrap_or_else(|| default_shape(unit_major()))
    })
}

/// The measured best shape for each layout (H200, 13B; one block per SM in both):
/// - wv's layout: 6x24 (304 tokens/s against 259 for 6x12, where two blocks fit on an SM, and
///   292–293 for 8x24 and 12x24; thirteenth session);
/// - the unit-major copies, fused layers: 10x20 (359.6–363.7 tokens/s against 331–333 for 6x24,
///   345–351 for 8x24, 361–362 for 8x16, 363.5 for 9x18, 338–343 for 12x12, 12x24 and 16x16,
///   273–277 for 10x10 and 8x8, where two blocks fit; fifteenth session).
pub fn default_shape(unit_major: bool) -> (usize, usize) {
    if unit_major {
        (10, 20)
    } else {
        (6, 24)
    }
}
/// Whether `gemv_q4m` reads each matrix's unit-major copy: by default, where the GPU loads
/// the kernels that read it ([`super::weights::Loaded::of`]: sm_90), which then hold the
/// matrices only in it; `WV_CUDA_MMA_LAYOUT=rows` keeps wv's row layout (the module is
/// compiled with MMA_UNIT_MAJOR=1 only here). Decode ran 4.7% faster on it after a short
/// context and prefill 2.6% at 512 tokens, with less memory (docs/cuda.md, fifteenth
/// session). Read once per process.
pub fn unit_major() -> bool {
    static UNIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNIT.get_or_init(|| std::env::var("WV_CUDA_MMA_LAYOUT").map_or(true, |v| v != "rows"))
}

/// Bytes of one unit of the unit-major layout: 16 packed rows of 128 words, 128 f16 scales, 128
/// zero points.
pub const UNIT_BYTES: usize = 16 * 128 * 4 + 128 * 2 + 128;

/// The unit-major copy of a 4-bit matrix in wv's layout (`qw` `[k / 8][n]`, `scales` and
/// `zeros` `[k / gs][n]`; k, n and gs multiples of 128): unit u = t * (k / 128) + kb (column tile
/// t, 128-input block kb) holds packed rows 16 kb .. 16 kb + 15 of columns 128 t .. 128 t + 127
/// (row-major, little-endian words), then those columns' scales and zeros of group 128 kb / gs.
pub fn unit_major_copy(
    qw: &[u32],
    scales: &[half::f16],
    zeros: &[u8],
    k: usize,
    n: usize,
    gs: usize,
) -> Vec<u8> {
    let (kbs, tiles) = (k / 128, n / 128);
    let mut out = vec![0u8; kbs * tiles * UNIT_BYTES];
    // Units written in parallel, whole ranges per thread, on the CPU pool's thread count
    // (`WV_THREADS`): a 13B model's 6.5 GB of copies take seconds on one core.
    let threads = crate::backend::cpu::pool::threads().clamp(1, 64);
    let per = (kbs * tiles).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (i, part) in out.chunks_mut(per * UNIT_BYTES).enumerate() {
            scope.spawn(move || {
                for (j, unit) in part.chunks_exact_mut(UNIT_BYTES).enumerate() {
                    let u = i * per + j;
                    let (t, kb) = (u / kbs, u % kbs);
                    let (words, rest) = unit.split_at_mut(16 * 128 * 4);
                    for r in 0..16 {
                        let row = &qw[(kb * 16 + r) * n + t * 128..][..128];
                        for (c, w) in row.iter().enumerate() {
                            words[(r * 128 + c) * 4..][..4].copy_from_slice(&w.to_le_bytes());
                        }
                    }
                    let g = kb * 128 / gs;
                    let (sc, zr) = rest.split_at_mut(256);
                    for c in 0..128 {
                        sc[2 * c..][..2]
                            .copy_from_slice(&scales[g * n + t * 128 + c].to_bits().to_le_bytes());
                    }
                    zr.copy_from_slice(&zeros[g * n + t * 128..][..128]);
                }
            });
        }
    });
    out
}

/// Column tiles one block may hold (MSEG).
pub const MMA_SEGMENTS: usize = 3;
/// Dynamic shared memory of a `gemv_q4m` block of `warps` consumers and `stages` stages: the
/// weight ring, the scales and zeros ring, the warps' tile partials, the mbarriers and 1 KiB
/// of alignment.
pub fn smem_of(warps: usize, stages: usize) -> usize {
    stages * (8192 + 384) + MMA_SEGMENTS * warps * 512 + 16 * stages + 1024
}
/// Bytes of the input digits of one 128-input block: 64 words and (xs, Σ digits).
pub const DIGITS_PER_BLOCK: usize = 256 + 8;

/// Whether `gemv_q4m` takes a `k` x `n` matrix of group size `gs` at all: K, N and the group
/// size multiples of 128, on a compute capability 9.0 GPU (where gemv_mma.cu is loaded; not
/// with `WV_CUDA_SM90A=0`).
pub fn dims_fit(gpu_cc: (i32, i32), k: usize, n: usize, gs: usize) -> bool {
    gpu_cc == (9, 0)
        && std::env::var("WV_CUDA_SM90A").map_or(true, |v| v != "0")
        && k % 128 == 0
        && n % 128 == 0
        && gs % 128 == 0
        && k % gs == 0
}

/// Whether `gemv_q4m` takes `q`: [`dims_fit`], and what it reads 16-byte aligned.
pub fn shapes_fit(gpu_cc: (i32, i32), q: &Q4Dev) -> bool {
    dims_fit(gpu_cc, q.k, q.n, q.gs)
        && weights_of(q) % 16 == 0
        && q.rows
            .as_ref()
            .is_none_or(|r| r.scales.ptr % 16 == 0 && r.zeros.ptr % 16 == 0)
}

/// Whether a `k` x `n` matrix of group size `gs` may be held only in the unit-major layout on
/// `gpu`: `gemv_q4m` takes its shape and plans it (see [`takes`]).
pub fn unit_fits(gpu: &Gpu, k: usize, n: usize, gs: usize) -> bool {
    dims_fit(gpu.cc, k, n, gs) && slabs(gpu.sms, k, n).is_some()
}

/// The block of `p` whose units hold unit `u` of `units` (as `unit_block` in gemv_mma.cu).
fn unit_block(u: usize, p: usize, units: usize) -> usize {
    ((u + 1) * p - 1) / units
}

/// Blocks of a `k` x `n` product on `sms` SMs: one per SM, at most one per unit (so that every
/// block holds at least one unit and the blocks of a tile write consecutive slabs).
pub fn blocks(sms: usize, k: usize, n: usize) -> usize {
    sms.min((k / 128) * (n / 128))
}

/// The slabs a `k` x `n` product leaves on `sms` SMs: the most blocks any column tile has, or
/// `None` where a block would hold more than [`MMA_SEGMENTS`] tiles.
pub fn slabs(sms: usize, k: usize, n: usize) -> Option<usize> {
    let (kb, tiles) = (k / 128, n / 128);
    let units = kb * tiles;
    let sms = blocks(sms, k, n);
    if units == 0 || sms == 0 {
        return None;
    }
    for b in 0..sms {
        let (u0, u1) = (units * b / sms, units * (b + 1) / sms);
        if u1 > u0 && (u1 - 1) / kb - u0 / kb + 1 > MMA_SEGMENTS {
            return None;
        }
    }
    (0..tiles)
        .map(|t| unit_block((t + 1) * kb - 1, sms, units) - unit_block(t * kb, sms, units) + 1)
        .max()
}

/// Whether `gemv_q4m` takes `q` on `gpu`'s SMs.
pub fn takes(gpu: &Gpu, q: &Q4Dev) -> bool {
    weights_of(q) != 0
        && shapes_fit(gpu.cc, q)
        && slabs(gpu.sms, q.k, q.n).is_some()
        && (!unit_major() || q.units.is_some())
}

/// What `gemv_q4m` reads as `qw`: the unit-major copy under [`unit_major`], else the matrix's
/// words (0 for neither: [`takes`] refuses it).
fn weights_of(q: &Q4Dev) -> CUdeviceptr {
    match (&q.units, unit_major(), &q.rows) {
        (Some(u), true, _) => u.ptr,
        (_, _, Some(r)) => r.qw.ptr,
        _ => 0,
    }
}

/// `quant_digits`: `x` (f16 `[k]`, through `perm` when given) as digits at `digits` (room for
/// `k / 128` blocks: the words, then the (xs, Σ) pairs).
pub fn quant_digits(
    gpu: &Gpu,
    f: &Kernel,
    x: CUdeviceptr,
    perm: CUdeviceptr,
    digits: CUdeviceptr,
    k: usize,
) -> Result<()> {
    let kbs = k / 128;
    let mut a = Args::new();
    a.ptr(x)
        .ptr(perm)
        .ptr(digits)
        .ptr(digits + (kbs * 256) as u64)
        .int(k);
    // SAFETY: x holds k f16 values (perm, when not 0, k indices below k); digits has room for
    // k / 128 blocks of 256 bytes and then k / 128 float2 (the caller's scratch, 8-byte aligned).
    gpu.launch(f, (kbs.div_ceil(4) as u32, 1, 1), 128, 0, &mut a)
}

/// What a `gemv_q4m` launch does once a column tile's slabs are written (gemv_mma.cu's
/// variants; the epilogues' buffers are device pointers, 0 for NULL).
#[derive(Clone, Copy, Debug)]
pub enum MmaEpilogue {
    /// `gemv_q4m`: the slabs only (the tile's first block zeroes the slabs no block writes).
    None,
    /// `gemv_q4m_resid` (o, down; n = hidden): `x` f32 `[n]` += Σ slabs (+ `bias`), `ss` f32
    /// `[n / 128]` its per-tile sums of squares, and — when `norm_w` (the next RMSNorm's f32
    /// weight) is not 0 — the digits of x ∘ norm_w at `digits_out` (room for n / 128 blocks).
    Resid {
        counters: CUdeviceptr,
        x: CUdeviceptr,
        bias: CUdeviceptr,
        ss: CUdeviceptr,
        norm_w: CUdeviceptr,
        digits_out: CUdeviceptr,
    },
    /// `gemv_q4m_rope` (q|k|v, head dim 128): v = r Σ slabs (+ `bias`), r = 1 / RMS from `ss`
    /// (the k / 128 tiles a `Resid` launch left; 0: r = 1), q heads rotated into `q` f32
    /// `[nh * 128]`, k heads rotated and v heads into the layer's caches `kc`, `vc` (f16
    /// `[capacity][nkv * 128]`) at `*dpos`, or `pos` when `dpos` is 0; when `att_digits` is not
    /// 0, also the attention over keys 0 ..= that position, as o's input digits there (room for
    /// nh blocks; `counters` then holds at least [`HEAD_COUNTERS`] + nh zeroed counters, and
    /// nh / nkv <= [`ATT_GROUP_MAX`]).
    Rope {
        counters: CUdeviceptr,
        ss: CUdeviceptr,
        eps: f32,
        bias: CUdeviceptr,
        q: CUdeviceptr,
        kc: CUdeviceptr,
        vc: CUdeviceptr,
        rope: CUdeviceptr,
        npos: usize,
        pos: usize,
        dpos: CUdeviceptr,
        nh: usize,
        nkv: usize,
        att_digits: CUdeviceptr,
    },
    /// `gemv_q4m_silu` (gate|up = [gate f | up f], n = 2f): g, u = r Σ slabs (+ `bias`), r as
    /// for `Rope`; the digits of silu(g) · u at `digits_out` (room for f / 128 blocks).
    Silu {
        counters: CUdeviceptr,
        ss: CUdeviceptr,
        eps: f32,
        bias: CUdeviceptr,
        digits_out: CUdeviceptr,
    },
}

/// Where `gemv_q4m_rope`'s fused attention counts each head's tiles in its `counters`
/// (MMA_HEAD_CTR in gemv_mma.cu): the tile counters come before.
pub const HEAD_COUNTERS: usize = 512;
/// The most query heads per KV head the fused attention takes (its list of heads a block
/// completes holds MMA_ATT_LIST = 32 >= 3 tiles x 8 heads).
pub const ATT_GROUP_MAX: usize = 8;

/// The epilogue parameters every `gemv_q4m` variant takes, in its order (MMA_PARAMS after
/// `S`); 0 where the variant does not use one.
#[derive(Default)]
struct EpiArgs {
    counters: CUdeviceptr,
    resid: CUdeviceptr,
    bias: CUdeviceptr,
    ss: CUdeviceptr,
    norm_w: CUdeviceptr,
    xq_out: CUdeviceptr,
    eps: f32,
    q: CUdeviceptr,
    kc: CUdeviceptr,
    vc: CUdeviceptr,
    rope: CUdeviceptr,
    npos: usize,
    pos: usize,
    dpos: CUdeviceptr,
    nh: usize,
    nkv: usize,
}

impl MmaEpilogue {
    fn args(self) -> EpiArgs {
        match self {
            MmaEpilogue::None => EpiArgs::default(),
            MmaEpilogue::Resid {
                counters,
                x,
                bias,
                ss,
                norm_w,
                digits_out,
            } => EpiArgs {
                counters,
                resid: x,
                bias,
                ss,
                norm_w,
                xq_out: digits_out,
                ..EpiArgs::default()
            },
            MmaEpilogue::Rope {
                counters,
                ss,
                eps,
                bias,
                q,
                kc,
                vc,
                rope,
                npos,
                pos,
                dpos,
                nh,
                nkv,
                att_digits,
            } => EpiArgs {
                counters,
                xq_out: att_digits,
                ss,
                eps,
                bias,
                q,
                kc,
                vc,
                rope,
                npos,
                pos,
                dpos,
                nh,
                nkv,
                ..EpiArgs::default()
            },
            MmaEpilogue::Silu {
                counters,
                ss,
                eps,
                bias,
                digits_out,
            } => EpiArgs {
                counters,
                ss,
                eps,
                bias,
                xq_out: digits_out,
                ..EpiArgs::default()
            },
        }
    }
}

/// What a `gemv_q4m` block asks L2 for once its own copies are issued: the first `units` units
/// of the same block of the next product on `gemv_q4m` (its unit-major copy at `ptr`, `total`
/// units over `blocks` blocks), so that the SM's share of DRAM keeps streaming while its ring
/// drains and the next launch's first copies hit L2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prefetch {
    ptr: CUdeviceptr,
    total: usize,
    blocks: usize,
    units: usize,
    lag: usize,
}

impl Prefetch {
    /// Nothing asked for.
    pub const NONE: Prefetch = Prefetch {
        ptr: 0,
        total: 0,
        blocks: 0,
        units: 0,
        lag: 0,
    };

    /// The first `units` units per block of `next` — a matrix a fused layer runs on `gemv_q4m`
    /// (`decode_mma::plan` found it so: its group was planned on it at upload) — from its
    /// unit-major copy on `gpu` (else nothing: the row layout's units are not contiguous),
    /// asked for once all but the block's last `lag` copies have landed.
    pub fn of(gpu: &Gpu, next: &Q4Dev, (units, lag): (usize, usize)) -> Prefetch {
        match (&next.units, unit_major()) {
            (Some(u), true) if units > 0 => Prefetch {
                ptr: u.ptr,
                total: (next.k / 128) * (next.n / 128),
                blocks: blocks(gpu.sms, next.k, next.n),
                units,
                lag,
            },
            _ => Prefetch::NONE,
        }
    }
}

/// `gemv_q4m` (`f`: the variant `epi` names): `out` slabs (row stride `ldo`, `s` of them) = the
/// digits' input · `q`, then the epilogue; `pf` what its blocks ask L2 for at their end.
#[allow(clippy::too_many_arguments)]
pub fn gemv_q4m(
    gpu: &Gpu,
    f: &Kernel,
    q: &Q4Dev,
    digits: CUdeviceptr,
    out: CUdeviceptr,
    ldo: usize,
    s: usize,
    epi: MmaEpilogue,
    pf: Prefetch,
) -> Result<()> {
    let kbs = q.k / 128;
    let mut a = Args::new();
    // (The scales and zeros are read from the unit-major copy where the matrix has one.)
    let (scales, zeros) = q
        .rows
        .as_ref()
        .map_or((0, 0), |r| (r.scales.ptr, r.zeros.ptr));
    a.ptr(weights_of(q))
        .ptr(scales)
        .ptr(zeros)
        .ptr(digits)
        .ptr(digits + (kbs * 256) as u64)
        .ptr(out)
        .int(q.k)
        .int(q.n)
        .int(q.gs)
        .int(ldo)
        .int(s);
    // counters, resid, ebias, ss, normw, xq_out, eps, qout, kc, vc, rope, npos, pos, dpos, nh, nkv
    let e = epi.args();
    a.ptr(e.counters)
        .ptr(e.resid)
        .ptr(e.bias)
        .ptr(e.ss)
        .ptr(e.norm_w)
        .ptr(e.xq_out)
        .f32(e.eps)
        .ptr(e.q)
        .ptr(e.kc)
        .ptr(e.vc)
        .ptr(e.rope)
        .int(e.npos)
        .int(e.pos)
        .ptr(e.dpos)
        .int(e.nh)
        .int(e.nkv)
        .ptr(pf.ptr)
        .int(pf.total)
        .int(pf.blocks)
        .int(pf.units)
        .int(pf.lag)
        .ptr(gpu.timeline());
    // SAFETY: qw, scales and zeros are q's [k / 8][n], [groups][n] and [groups][n] buffers
    // (16-byte aligned, k, n and gs multiples of 128: checked by `takes`) — or, under
    // `unit_major()` (and only then is the module compiled to read it), qw is q's unit-major
    // copy of (k / 128) (n / 128) units, which `takes` requires; the digits are
    // quant_digits' (or a kernel's warp_digits) output for q.k inputs; out has s slabs of
    // ldo >= q.n floats from the given column, s at least `slabs(gpu.sms, q.k, q.n)` (the
    // plan); the dynamic shared memory is smem_of(shape()), allowed at load. The epilogue's
    // buffers are as `MmaEpilogue` documents them (forward.rs passes the scratch's counters —
    // zeroed, at least n / 128 of them — residual stream, sums of squares, the other digits
    // buffer, and the layer's caches with a position inside them), and `f` is its variant.
    // The prefetch only names addresses (a unit-major copy of `total` units, `Prefetch::of`),
    // which L2 may fetch early: nothing is written through it. The timeline, when set, is a
    // zeroed buffer of timeline::BYTES (its ticket word, then the records the kernel wraps).
    let (warps, stages) = shape();
    gpu.launch(
        f,
        (blocks(gpu.sms, q.k, q.n) as u32, 1, 1),
        (32 * (warps + 1)) as u32,
        smem_of(warps, stages) as u32,
        &mut a,
    )
}

/// Rows (within a packed row of 8) of the bytes of a digit word: e = 0 the even nibbles' rows,
/// e = 1 the odd ones' (gemv.cu's POS).
const WORD_ROWS: [[usize; 4]; 2] = [[0, 4, 1, 5], [2, 6, 3, 7]];

/// The values a digits buffer holds (`words`: 64 per 128-input block, then `sums`: (xs, Σ)
/// per block, as f32 pairs), for a `k`-vector: `xs (hi + lo / 256)` in input order (tests).
pub fn decode_digits(words: &[u32], sums: &[f32], k: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; k];
    for b in 0..k / 128 {
        let xs = sums[2 * b];
        for t in 0..4 {
            for s in 0..4 {
                for (e, rows) in WORD_ROWS.iter().enumerate() {
                    let hi = words[b * 64 + (t * 4 + s) * 2 + e].to_le_bytes();
                    let lo = words[b * 64 + ((4 + t) * 4 + s) * 2 + e].to_le_bytes();
                    for j in 0..4 {
                        let v = hi[j] as i8 as f32 + lo[j] as i8 as f32 / 256.0;
                        x[b * 128 + 8 * (4 * s + t) + rows[j]] = xs * v;
                    }
                }
            }
        }
    }
    x
}

/// The digits of `x` (`k % 128 == 0`) as the kernels make them (quant_digits, warp_digits):
/// the reference the device's are checked against, and the round trip's other half (tests).
pub fn encode_digits(x: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let blocks = x.len() / 128;
    let (mut words, mut sums) = (vec![0u32; blocks * 64], vec![0.0f32; blocks * 2]);
    for b in 0..blocks {
        let v = &x[b * 128..(b + 1) * 128];
        let mx = v.iter().fold(0.0f32, |m, a| m.max(a.abs()));
        let inv = if mx > 0.0 { 127.0 / mx } else { 0.0 };
        let mut part = 0.0f32;
        for t in 0..4 {
            for s in 0..4 {
                for (e, rows) in WORD_ROWS.iter().enumerate() {
                    let (mut hi, mut lo) = ([0u8; 4], [0u8; 4]);
                    for j in 0..4 {
                        let y = v[8 * (4 * s + t) + rows[j]] * inv;
                        let h = y.round_ties_even();
                        let l = ((y - h) * 256.0).round_ties_even().clamp(-128.0, 127.0);
                        hi[j] = h as i8 as u8;
                        lo[j] = l as i8 as u8;
                        part += h + l / 256.0;
                    }
                    words[b * 64 + (t * 4 + s) * 2 + e] = u32::from_le_bytes(hi);
                    words[b * 64 + ((4 + t) * 4 + s) * 2 + e] = u32::from_le_bytes(lo);
                }
            }
        }
        sums[2 * b] = mx / 127.0;
        sums[2 * b + 1] = part;
    }
    (words, sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_layout_dims_are_whole_units_of_whole_groups_on_sm90() {
        // 13B's products: K and N multiples of 128, g128 and one group.
        for (k, n, gs) in [(5120, 15360, 128), (13824, 5120, 128), (5120, 27648, 5120)] {
            assert!(dims_fit((9, 0), k, n, gs), "{k}x{n} g{gs}");
            // Only on compute capability 9.0 (gemv_mma.cu is sm_90a).
            assert!(!dims_fit((8, 9), k, n, gs));
            assert!(!dims_fit((10, 0), k, n, gs));
        }
        // Partial units or groups that split a unit (g64) stay in the row layout.
        assert!(!dims_fit((9, 0), 5120, 5120 + 64, 128));
        assert!(!dims_fit((9, 0), 5120 + 64, 5120, 128));
        assert!(!dims_fit((9, 0), 5120, 5120, 64));
        // A group that does not divide K.
        assert!(!dims_fit((9, 0), 640, 256, 256));
    }

    #[test]
    fn default_shapes_are_ones_the_kernel_takes_at_one_block_per_sm() {
        for unit in [false, true] {
            let (w, s) = default_shape(unit);
            assert!((MMA_SEGMENTS..=16).contains(&w), "{unit}: {w} warps");
            assert_eq!(s % w, 0, "{unit}: {s} stages for {w} warps");
            let smem = smem_of(w, s);
            assert!(smem <= 227 * 1024, "{unit}: {smem} bytes");
            // Two blocks per SM were slower in both layouts: the default leaves room for one.
            assert!(
                2 * smem > 227 * 1024,
                "{unit}: two blocks of {smem} bytes fit"
            );
        }
    }

    #[test]
    fn digits_round_trip_within_the_last_digit() {
        // Values over several magnitudes, a zero block, and the ±max ends of the range.
        let mut x: Vec<f32> = (0..512)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 10f32.powi(i % 5 - 2))
            .collect();
        x[128..256].iter_mut().for_each(|v| *v = 0.0);
        x[300] = -40.0;
        let (w, s) = encode_digits(&x);
        let y = decode_digits(&w, &s, x.len());
        for b in 0..4 {
            let mx = x[b * 128..(b + 1) * 128]
                .iter()
                .fold(0.0f32, |m, a| m.max(a.abs()));
            for i in b * 128..(b + 1) * 128 {
                // Within half a step of the low digit: mx / 127 / 512.
                assert!(
                    (x[i] - y[i]).abs() <= mx / 127.0 / 512.0 * 1.01 + 1e-12,
                    "{i}: {} {}",
                    x[i],
                    y[i]
                );
            }
            let sum: f32 = y[b * 128..(b + 1) * 128].iter().sum::<f32>();
            assert!((sum - s[2 * b] * s[2 * b + 1]).abs() <= 1e-4 * (1.0 + sum.abs()));
        }
        assert!(y[128..256].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn epilogues_put_each_buffer_in_its_kernel_parameter() {
        let e = MmaEpilogue::Resid {
            counters: 1,
            x: 2,
            bias: 3,
            ss: 4,
            norm_w: 5,
            digits_out: 6,
        }
        .args();
        let got = (
            e.counters, e.resid, e.bias, e.ss, e.norm_w, e.xq_out, e.q, e.rope,
        );
        assert_eq!(got, (1, 2, 3, 4, 5, 6, 0, 0));
        let e = MmaEpilogue::Rope {
            counters: 1,
            ss: 2,
            eps: 0.5,
            bias: 3,
            q: 4,
            kc: 5,
            vc: 6,
            rope: 7,
            npos: 8,
            pos: 9,
            dpos: 10,
            nh: 11,
            nkv: 12,
            att_digits: 13,
        }
        .args();
        assert_eq!((e.counters, e.ss, e.eps, e.bias, e.q), (1, 2, 0.5, 3, 4));
        assert_eq!((e.kc, e.vc, e.rope, e.npos, e.pos), (5, 6, 7, 8, 9));
        assert_eq!(
            (e.dpos, e.nh, e.nkv, e.resid, e.xq_out),
            (10, 11, 12, 0, 13)
        );
        let e = MmaEpilogue::Silu {
            counters: 1,
            ss: 2,
            eps: 0.25,
            bias: 3,
            digits_out: 4,
        }
        .args();
        assert_eq!(
            (e.counters, e.ss, e.eps, e.bias, e.xq_out),
            (1, 2, 0.25, 3, 4)
        );
        assert_eq!((e.resid, e.norm_w, e.q, e.kc), (0, 0, 0, 0));
        let e = MmaEpilogue::None.args();
        assert_eq!((e.counters, e.ss, e.npos, e.eps), (0, 0, 0, 0.0));
    }

    #[test]
    fn unit_major_copy_holds_each_word_scale_and_zero_once_where_the_kernel_reads_it() {
        // Two column tiles, four 128-input blocks; groups of 128 and of 256 (a group's scales
        // repeated in each of its units).
        let (k, n) = (512usize, 256usize);
        let qw: Vec<u32> = (0..k / 8 * n)
            .map(|i| (i as u32).wrapping_mul(2654435761))
            .collect();
        for gs in [128usize, 256] {
            let groups = k / gs;
            let scales: Vec<half::f16> = (0..groups * n)
                .map(|i| half::f16::from_f32(i as f32 * 0.25 + 1.0))
                .collect();
            let zeros: Vec<u8> = (0..groups * n).map(|i| (i * 7 % 16) as u8).collect();
            let out = unit_major_copy(&qw, &scales, &zeros, k, n, gs);
            let kbs = k / 128;
            assert_eq!(out.len(), kbs * (n / 128) * UNIT_BYTES);
            for row in 0..k / 8 {
                for col in 0..n {
                    let u = (col / 128) * kbs + row / 16;
                    let at = u * UNIT_BYTES + ((row % 16) * 128 + col % 128) * 4;
                    let w = u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
                    assert_eq!(w, qw[row * n + col], "word {row} {col}");
                }
            }
            for kb in 0..kbs {
                for col in 0..n {
                    let base = ((col / 128) * kbs + kb) * UNIT_BYTES + 16 * 128 * 4;
                    let g = kb * 128 / gs;
                    let s =
                        u16::from_le_bytes(out[base + 2 * (col % 128)..][..2].try_into().unwrap());
                    assert_eq!(
                        s,
                        scales[g * n + col].to_bits(),
                        "scale {kb} {col} (gs {gs})"
                    );
                    assert_eq!(
                        out[base + 256 + col % 128],
                        zeros[g * n + col],
                        "zero {kb} {col}"
                    );
                }
            }
        }
    }

    /// The plan against a count by enumeration: for each unit its block (the kernel's ranges
    /// `[U b / P, U (b + 1) / P)`), per tile the distinct blocks, per block the distinct tiles.
    fn enumerate(sms: usize, k: usize, n: usize) -> (usize, usize) {
        let (kb, tiles) = (k / 128, n / 128);
        let units = kb * tiles;
        let sms = blocks(sms, k, n);
        let mut owner = vec![0usize; units];
        for b in 0..sms {
            for o in &mut owner[units * b / sms..units * (b + 1) / sms] {
                *o = b;
            }
        }
        let per_tile = (0..tiles)
            .map(|t| {
                let mut bs: Vec<usize> = owner[t * kb..(t + 1) * kb].to_vec();
                bs.dedup();
                bs.len()
            })
            .max()
            .unwrap_or(0);
        let per_block = (0..sms)
            .map(|b| {
                let mut ts: Vec<usize> = (0..units)
                    .filter(|&u| owner[u] == b)
                    .map(|u| u / kb)
                    .collect();
                ts.dedup();
                ts.len()
            })
            .max()
            .unwrap_or(0);
        (per_tile, per_block)
    }

    #[test]
    fn plans_match_an_enumeration() {
        // The 13B products (q|k|v, o, gate|up, down) on 132 and 114 SMs, and small shapes.
        for sms in [132, 114, 78, 7] {
            for (k, n) in [
                (5120, 15360),
                (5120, 5120),
                (5120, 27648),
                (13824, 5120),
                (128, 128),
                (256, 1024),
            ] {
                let (per_tile, per_block) = enumerate(sms, k, n);
                let want = (per_block <= MMA_SEGMENTS).then_some(per_tile);
                assert_eq!(slabs(sms, k, n), want, "{sms} SMs, {k} x {n}");
            }
        }
        // Every 13B product fits an H100's or H200's 132 SMs.
        for (k, n) in [(5120, 15360), (5120, 5120), (5120, 27648), (13824, 5120)] {
            assert!(slabs(132, k, n).is_some());
        }
        assert_eq!(slabs(0, 5120, 5120), None);
        assert_eq!(slabs(4, 0, 128), None);
    }
}
