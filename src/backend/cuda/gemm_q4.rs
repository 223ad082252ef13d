//! Launchers of prefill's fused 4-bit products (kernels/gemm_q4.cu): `gemm_q4_tma` (tiles by the
//! Tensor Memory Accelerator, where the tensors allow it) and `gemm_q4_wgmma` (per-thread
//! `cp.async`), the policy of when prefill uses them, and how K is split into slabs.

use super::device::{Args, Gpu};
use super::ffi::{self, CUdeviceptr};
use super::kernels::Kernels;
use super::weights::Q4Dev;
use crate::error::{Error, Result};

/// One stage of either fused kernel's ring (QT_STAGE_BYTES in gemm_q4.cu): an X tile (16 KiB),
/// a weight tile (4 KiB), 128 scales and 128 zeros.
const GEMM_Q4_STAGE_BYTES: usize = 16384 + 4096 + 256 + 128;

/// Dynamic shared memory of a `gemm_q4_wgmma` block (QG_SMEM in gemm_q4.cu): 4 stages plus
/// 1 KiB for alignment.
pub const GEMM_Q4_SMEM: usize = 4 * GEMM_Q4_STAGE_BYTES + 1024;

/// Dynamic shared memory of a `gemm_q4_tma` block (QT_SMEM in gemm_q4.cu): 5 stages, 10
/// mbarriers, 1 KiB of alignment slack.
pub const GEMM_Q4_TMA_SMEM: usize = 5 * GEMM_Q4_STAGE_BYTES + 2 * 5 * 8 + 1024;

/// Threads of a `gemm_q4_tma` block (QT_THREADS: two consumer warpgroups and a producer warp).
pub const GEMM_Q4_TMA_THREADS: u32 = 288;

/// Stages of the small-token-tile variants `gemm_q4_tma64` / `gemm_q4_tma32` (QT_STAGES_SMALL).
const TMA_SMALL_STAGES: usize = 8;

/// Dynamic shared memory of a `gemm_q4_tma` variant for token tiles of `tt` (QT_SMEM_T in
/// gemm_q4.cu): 5 stages for 128-token tiles, 8 for smaller ones, each an X tile of `tt` x 64
/// f16, the weight tile, scales and zeros; 2 mbarriers per stage and 1 KiB of alignment slack.
pub fn tma_smem(tt: usize) -> usize {
    let stages = if tt >= 128 { 5 } else { TMA_SMALL_STAGES };
    stages * (tt * 128 + 4096 + 256 + 128) + 2 * stages * 8 + 1024
}

/// The token tile of a pass of `t` tokens on `gemm_q4_tma` (32, 64 or 128), given which small
/// variants are loaded: the tensor cores' work in proportion to the tokens, so that a short
/// prompt (a chat turn) streams the weights instead of computing on padding.
pub fn tma_tile(t: usize, has64: bool, has32: bool) -> usize {
    if t <= 32 && has32 {
        32
    } else if t <= 64 && has64 {
        64
    } else {
        128
    }
}

/// Output features per `gemm_q4_wgmma` block (QG_FEAT), its threads (QG_THREADS) and the
/// blocks that fit on one SM.
pub(super) const GEMM_Q4_FEAT: usize = 128;
pub const GEMM_Q4_THREADS: u32 = 256;
const GEMM_Q4_PER_SM: usize = 2;
/// Blocks per SM that [`gemm_q4_split_small`] plans a small-token-tile launch for: 3 fit
/// (68 KiB of shared memory each at 32 tokens), and planning for 4 splits K further, so more
/// and shorter pipelines stream at once. H200, 13B, time to first token (ninth session, three
/// alternating rounds): 5.0 against 5.3–5.4 ms at 16 tokens planned for 2 per SM, 5.2 against
/// 5.4–5.5 at 32; planned for 3: 5.2 / 5.3–5.4.
const GEMM_Q4_SMALL_PER_SM: usize = 4;

/// K splits for a `gemm_q4_wgmma` launch of `tiles` blocks on `slots` resident ones over
/// `stages` stages of 64 inputs: 1, or up to 4 when under 70% of the last
/// wave would be busy and a split fills it clearly better (by 15 points). Each split keeps at
/// least 8 stages. The consumers read every slab, so splitting must win clearly: splitting
/// 13B's gate|up (82% of its last wave busy) cost SiLU more than it saved.
pub fn gemm_q4_split_count(tiles: usize, slots: usize, stages: usize) -> usize {
    let slots = slots.max(1);
    let eff = |s: usize| {
        let b = (tiles * s).max(1);
        b as f64 / (b.div_ceil(slots) * slots) as f64
    };
    let mut best = 1;
    if eff(1) < 0.7 {
        for s in 2..=4 {
            if stages >= 8 * s && eff(s) > eff(best) + 0.15 {
                best = s;
            }
        }
    }
    best
}

/// K splits for a small-token-tile launch (`gemm_q4_tma64` / `_32`, a short prompt) of
/// `tiles` blocks: enough for a full wave of `slots`, at most [`GEMM_Q4_MAX_SPLIT`], each
/// split at least 4 stages. Such a pass streams the weights with little work per byte, so
/// its blocks are latency-bound pipelines: more of them, each on a shorter range of K, stream
/// more at once (the consumers' sums of the slabs are over a few rows only).
pub fn gemm_q4_split_small(tiles: usize, slots: usize, stages: usize) -> usize {
    let mut s = slots.div_ceil(tiles.max(1)).clamp(1, GEMM_Q4_MAX_SPLIT);
    while s > 1 && stages < 4 * s {
        s -= 1;
    }
    s
}

/// Default of [`Kernels::gemm_q4_max_t`].
pub const GEMM_Q4_MAX_T: usize = 512;

/// The most K splits (output slabs) of one fused-product launch (4 for 128-token tiles, 8 on
/// the small ones).
pub const GEMM_Q4_MAX_SPLIT: usize = 8;

/// Whether `gemm_q4_tma` can take a matrix of width `n` over tensors at `ptrs`: the tensor
/// maps' row strides must be multiples of 16 bytes (the zeros' rows are `n` bytes) and their
/// bases 16-byte aligned.
fn tma_takes(n: usize, ptrs: &[CUdeviceptr]) -> bool {
    n % 16 == 0 && ptrs.iter().all(|p| p % 16 == 0)
}

impl Kernels {
    /// Whether `gemm_q4_wgmma` is loaded and can run `q` (K and the group size multiples of 64;
    /// an act-order matrix takes its input gathered into its sorted row order, see
    /// [`Self::gather_cols`]).
    pub fn gemm_q4_fits(&self, q: &Q4Dev) -> bool {
        self.gemm_q4.is_some()
            && q.k % 64 == 0
            && q.gs % 64 == 0
            && q.n % 4 == 0
            && q.k <= i32::MAX as usize
    }

    /// Whether prefill should run `q` on the fused product for a pass of `t` tokens: it fits and
    /// t is within `gemm_q4_max_t` (above it dequantisation + cuBLAS is faster).
    pub fn gemm_q4_takes(&self, q: &Q4Dev, t: usize) -> bool {
        t <= self.gemm_q4_max_t && self.gemm_q4_fits(q)
    }

    /// The token tile `t` tokens of `q` run in: a small one on `gemm_q4_tma64` / `_32` where
    /// the matrix takes the TMA kernels and they are loaded, else 128.
    fn token_tile(&self, q: &Q4Dev, t: usize) -> usize {
        if self.gemm_q4_tma.is_none() || q.tma.is_none() {
            return 128;
        }
        tma_tile(
            t,
            self.gemm_q4_tma64.is_some(),
            self.gemm_q4_tma32.is_some(),
        )
    }

    /// K splits for `gemm_q4_wgmma` on `t` tokens of `q`: 1, or up to [`GEMM_Q4_MAX_SPLIT`] when
    /// the tiles would leave much of the last wave of two blocks per SM idle (13B's o and down
    /// at 512 tokens: 160 tiles on 264 slots → 3 splits).
    pub fn gemm_q4_splits(&self, gpu: &Gpu, q: &Q4Dev, t: usize) -> usize {
        let tt = self.token_tile(q, t);
        let tiles = t.div_ceil(tt) * q.n.div_ceil(GEMM_Q4_FEAT);
        if tt <= self.gemm_q4_small_split {
            gemm_q4_split_small(tiles, GEMM_Q4_SMALL_PER_SM * gpu.sms.max(1), q.k / 64)
        } else {
            gemm_q4_split_count(tiles, GEMM_Q4_PER_SM * gpu.sms.max(1), q.k / 64)
        }
    }

    /// `y[t*ldo + n] = Σ_k x[t*q.k + k] W[k, n]` for t < `t`, straight from the 4-bit weights
    /// (prefill; where [`Self::gemm_q4_fits`]; k in q's sorted row order, so an act-order
    /// matrix's caller gathers x first), into `split` slabs of `y` (`t * ldo` floats
    /// apart; see [`Self::gemm_q4_splits`]).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_q4(
        &self,
        gpu: &Gpu,
        q: &Q4Dev,
        x: CUdeviceptr,
        y: CUdeviceptr,
        t: usize,
        ldo: usize,
        split: usize,
    ) -> Result<()> {
        let f = match &self.gemm_q4 {
            Some(f) if self.gemm_q4_fits(q) => f,
            _ => {
                return Err(Error::internal(
                    "gemm_q4 launched for weights it does not take",
                ))
            }
        };
        let split = split.clamp(1, GEMM_Q4_MAX_SPLIT);
        // gemm_q4_tma (or its small-token-tile variant) where the weights' maps were made at
        // upload and x's map encodes, else gemm_q4_wgmma: the operands differ (four tensor
        // maps, or the four pointers), the rest of the parameters does not.
        let mut a = Args::new();
        let tt = self.token_tile(q, t);
        let tma = match (&self.gemm_q4_tma, &q.tma) {
            (Some(ft), Some(w)) if x % 16 == 0 => {
                let ft = match tt {
                    32 => self.gemm_q4_tma32.as_ref().unwrap_or(ft),
                    64 => self.gemm_q4_tma64.as_ref().unwrap_or(ft),
                    _ => ft,
                };
                x_map(gpu, q.k, x, t, tt).ok().map(|xm| (ft, xm, w))
            }
            _ => None,
        };
        let on_maps = tma.is_some();
        let (kernel, threads, smem, tt) = match tma {
            Some((ft, xm, w)) => {
                a.map(xm);
                for m in w.iter() {
                    a.map(*m);
                }
                (ft, GEMM_Q4_TMA_THREADS, tma_smem(tt), tt)
            }
            None => {
                let r = q.rows()?;
                a.ptr(r.qw.ptr).ptr(r.scales.ptr).ptr(r.zeros.ptr).ptr(x);
                (f, GEMM_Q4_THREADS, GEMM_Q4_SMEM, 128)
            }
        };
        let grid = (
            t.div_ceil(tt) as u32,
            q.n.div_ceil(GEMM_Q4_FEAT) as u32,
            split as u32,
        );
        a.ptr(y)
            .int(t)
            .int(q.k)
            .int(q.n)
            .int(q.gs)
            .int(ldo)
            .i64((t * ldo) as i64);
        if on_maps {
            // Which geometry the maps describe: wv's rows (0) or the unit-major copy (1).
            a.int(q.units_only() as usize);
        }
        // SAFETY: the operands are q's device buffers of the shapes gemv.cu gives (the kernel
        // reads no permutation: x is in q's sorted row order) and x (t rows of q.k f16, 16-byte aligned rows: q.k % 64 == 0), as
        // pointers or as tensor maps with their true extents (the copies zero-fill past them);
        // y has `split` slabs of t rows of ldo >= q.n floats from the given column (the
        // caller's scratch holds them); the dynamic shared memory is the kernel's stages (and
        // mbarriers), allowed at load.
        gpu.launch(kernel, grid, threads, smem as u32, &mut a)
    }
}

/// `gemm_q4_tma`'s map of the input X `[t][k]` f16: boxes of 64 inputs x `tt` tokens (the
/// kernel's token tile) with the 128-byte swizzle (made per launch: x and t change).
fn x_map(gpu: &Gpu, k: usize, x: CUdeviceptr, t: usize, tt: usize) -> Result<ffi::CUtensorMap> {
    let k = k as u64;
    gpu.tensor_map(
        ffi::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        x,
        &[k, t as u64],
        &[k * 2],
        &[64, tt as u32],
        ffi::CU_TENSOR_MAP_SWIZZLE_128B,
    )
}

/// `gemm_q4_tma`'s maps of `q`'s weights in wv's row layout, made once at upload: qw
/// `[q.k / 8][q.n]` u32 in 128 x 8 boxes, scales `[groups][q.n]` f16 and zeros `[groups][q.n]`
/// u8 in 128 x 1 boxes. `None` where the matrix has no rows, the driver has no tensor maps or
/// refuses one, or the tensors do not suit the TMA (`tma_takes`): the matrix then runs on
/// `gemm_q4_wgmma`.
pub fn weight_maps(gpu: &Gpu, q: &Q4Dev) -> Option<Box<[ffi::CUtensorMap; 3]>> {
    let r = q.rows.as_ref()?;
    if !gpu.has_tensor_maps() || !tma_takes(q.n, &[r.qw.ptr, r.scales.ptr, r.zeros.ptr]) {
        return None;
    }
    let (k, n, g) = (q.k as u64, q.n as u64, q.groups as u64);
    let none = ffi::CU_TENSOR_MAP_SWIZZLE_NONE;
    let map = |dtype, ptr, dims: [u64; 2], row: u64, boxd: [u32; 2]| {
        gpu.tensor_map(dtype, ptr, &dims, &[row], &boxd, none).ok()
    };
    Some(Box::new([
        map(
            ffi::CU_TENSOR_MAP_DATA_TYPE_UINT32,
            r.qw.ptr,
            [n, k / 8],
            n * 4,
            [128, 8],
        )?,
        map(
            ffi::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            r.scales.ptr,
            [n, g],
            n * 2,
            [128, 1],
        )?,
        map(
            ffi::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            r.zeros.ptr,
            [n, g],
            n,
            [128, 1],
        )?,
    ]))
}

/// One tensor map's geometry: (byte offset, element dims innermost first, byte strides of the
/// outer dims, box).
pub type MapShape = (u64, Vec<u64>, Vec<u64>, Vec<u32>);

/// The geometry of `gemm_q4_tma`'s maps over a unit-major copy (`gemv_mma::unit_major_copy`:
/// unit (t, kb) of 8,576 bytes at (t · k/128 + kb) · 8,576 — 16 rows of 128 words, then 128
/// f16 scales at 8,192 and 128 u8 zeros at 8,448), for the weights, the scales and the zeros.
/// The weights' box is the row layout's 128 x 8 (half a unit's rows: coordinates (0, 8 · (k0 /
/// 64 % 2), k0 / 128, n0 / 128)), the scales' and zeros' one unit's 128 (coordinates (0, k0 /
/// 128, n0 / 128)).
pub fn unit_map_shapes(k: usize, n: usize) -> [MapShape; 3] {
    use super::gemv_mma::UNIT_BYTES;
    let (kbs, tiles, unit) = ((k / 128) as u64, (n / 128) as u64, UNIT_BYTES as u64);
    let tile = kbs * unit;
    [
        (
            0,
            vec![128, 16, kbs, tiles],
            vec![512, unit, tile],
            vec![128, 8, 1, 1],
        ),
        (
            8192,
            vec![128, kbs, tiles],
            vec![unit, tile],
            vec![128, 1, 1],
        ),
        (
            8448,
            vec![128, kbs, tiles],
            vec![unit, tile],
            vec![128, 1, 1],
        ),
    ]
}

/// `gemm_q4_tma`'s maps over the unit-major copy at `units` of a `k` x `n` matrix (see
/// [`unit_map_shapes`]); the kernel is told which geometry it reads (`unit`). `None` where the
/// driver has no tensor maps or refuses one.
pub fn unit_maps(
    gpu: &Gpu,
    k: usize,
    n: usize,
    units: CUdeviceptr,
) -> Option<Box<[ffi::CUtensorMap; 3]>> {
    if !gpu.has_tensor_maps() || units % 16 != 0 {
        return None;
    }
    let dtypes = [
        ffi::CU_TENSOR_MAP_DATA_TYPE_UINT32,
        ffi::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        ffi::CU_TENSOR_MAP_DATA_TYPE_UINT8,
    ];
    let none = ffi::CU_TENSOR_MAP_SWIZZLE_NONE;
    let [w, s, z] = unit_map_shapes(k, n);
    let map = |i: usize, (off, dims, strides, boxd): MapShape| {
        gpu.tensor_map(dtypes[i], units + off, &dims, &strides, &boxd, none)
            .ok()
    };
    Some(Box::new([map(0, w)?, map(1, s)?, map(2, z)?]))
}

#[cfg(test)]
mod tests {
    use super::{gemm_q4_split_count, tma_takes};

    /// The box a tensor map of `shape` over `bytes` copies at `coords` (element size `es`;
    /// what the TMA would write to shared memory, in order, innermost dimension first).
    fn fetch(bytes: &[u8], shape: &super::MapShape, coords: &[u64], es: usize) -> Vec<u8> {
        let (off, dims, strides, boxd) = shape;
        assert!(dims.len() == coords.len() && boxd.len() == coords.len());
        let mut out = Vec::new();
        // Boxes here are at most 2-D beyond the innermost dimension's extent of 1.
        let outer: usize = boxd[1..].iter().map(|&b| b as usize).product();
        for o in 0..outer {
            // Coordinates of this row of the box (only dimension 1 ever spans more than 1).
            let mut at = *off as usize + coords[0] as usize * es;
            for d in 1..dims.len() {
                let c = coords[d] as usize + if d == 1 { o } else { 0 };
                assert!((c as u64) < dims[d], "box past dimension {d}");
                at += c * strides[d - 1] as usize;
            }
            out.extend_from_slice(&bytes[at..at + boxd[0] as usize * es]);
        }
        out
    }

    #[test]
    fn unit_maps_copy_the_boxes_the_row_maps_copy() {
        use crate::backend::cuda::gemv_mma::unit_major_copy;
        // Two column tiles, four 128-input blocks, group size 256 (a group spans two units).
        let (k, n, gs) = (512usize, 256usize, 256usize);
        let qw: Vec<u32> = (0..k / 8 * n)
            .map(|i| (i as u32).wrapping_mul(2654435761))
            .collect();
        let scales: Vec<half::f16> = (0..k / gs * n)
            .map(|i| half::f16::from_f32(i as f32 * 0.25))
            .collect();
        let zeros: Vec<u8> = (0..k / gs * n).map(|i| (i * 7 % 251) as u8).collect();
        let units = unit_major_copy(&qw, &scales, &zeros, k, n, gs);
        let [w, sc, z] = super::unit_map_shapes(k, n);
        for n0 in (0..n).step_by(128) {
            for k0 in (0..k).step_by(64) {
                // The kernel's coordinates (gemm_q4.cu, unit = 1).
                let (tile, kb, half_rows) = (
                    (n0 / 128) as u64,
                    (k0 / 128) as u64,
                    ((k0 >> 3) & 15) as u64,
                );
                let got = fetch(&units, &w, &[0, half_rows, kb, tile], 4);
                let mut want = Vec::new();
                for r in k0 / 8..k0 / 8 + 8 {
                    for c in n0..n0 + 128 {
                        want.extend_from_slice(&qw[r * n + c].to_le_bytes());
                    }
                }
                assert_eq!(got, want, "weights at k0 {k0}, n0 {n0}");
                let g = k0 / gs;
                let got = fetch(&units, &sc, &[0, kb, tile], 2);
                let want: Vec<u8> = (n0..n0 + 128)
                    .flat_map(|c| scales[g * n + c].to_bits().to_le_bytes())
                    .collect();
                assert_eq!(got, want, "scales at k0 {k0}, n0 {n0}");
                let got = fetch(&units, &z, &[0, kb, tile], 1);
                assert_eq!(
                    got,
                    zeros[g * n + n0..g * n + n0 + 128].to_vec(),
                    "zeros at k0 {k0}, n0 {n0}"
                );
            }
        }
        // What the driver requires of the maps: 16-byte strides and offsets, boxes of at
        // most 256 per dimension whose innermost row is a multiple of 16 bytes.
        for ((off, _, strides, boxd), es) in [w, sc, z].iter().zip([4u64, 2, 1]) {
            assert_eq!(off % 16, 0);
            assert!(strides.iter().all(|s| s % 16 == 0));
            assert!(boxd.iter().all(|&b| (1..=256).contains(&b)));
            assert_eq!(boxd[0] as u64 * es % 16, 0);
        }
    }

    #[test]
    fn tma_takes_aligned_widths_of_16() {
        assert!(tma_takes(5120, &[0x1000, 0x2010, 0x3000]));
        // The zeros' rows (n bytes) must be 16-byte multiples.
        assert!(!tma_takes(392, &[0x1000, 0x2000, 0x3000]));
        assert!(!tma_takes(136, &[0x1000]));
        // Every base must be 16-byte aligned.
        assert!(!tma_takes(5120, &[0x1000, 0x2008, 0x3000]));
    }

    #[test]
    fn small_passes_take_small_token_tiles() {
        use super::{tma_smem, tma_tile, GEMM_Q4_TMA_SMEM};
        assert_eq!(tma_tile(1, true, true), 32);
        assert_eq!(tma_tile(32, true, true), 32);
        assert_eq!(tma_tile(33, true, true), 64);
        assert_eq!(tma_tile(64, true, true), 64);
        assert_eq!(tma_tile(65, true, true), 128);
        assert_eq!(tma_tile(20, true, false), 64);
        assert_eq!(tma_tile(20, false, false), 128);
        // The 128-token variant's memory is the constant the kernels were sized by; the small
        // ones fit two (64) and three (32) blocks in an SM's 228 KiB.
        assert_eq!(tma_smem(128), GEMM_Q4_TMA_SMEM);
        assert!(2 * tma_smem(64) <= 228 * 1024 && 3 * tma_smem(32) <= 228 * 1024);
    }

    #[test]
    fn short_prompts_split_k_for_a_full_wave() {
        use super::gemm_q4_split_small;
        // H200 (132 SMs, planned for 4 blocks each: 528 slots), 13B at 16 tokens: q|k|v 120
        // tiles -> 5, o and down 40 -> 8 (the cap), gate|up 216 -> 3; never more than the
        // cap, never under 4 stages a split.
        let slots = super::GEMM_Q4_SMALL_PER_SM * 132;
        assert_eq!(gemm_q4_split_small(120, slots, 80), 5);
        assert_eq!(gemm_q4_split_small(40, slots, 80), super::GEMM_Q4_MAX_SPLIT);
        assert_eq!(gemm_q4_split_small(216, slots, 80), 3);
        assert_eq!(gemm_q4_split_small(600, slots, 80), 1);
        assert_eq!(gemm_q4_split_small(120, 264, 80), 3);
        assert_eq!(gemm_q4_split_small(300, 264, 80), 1);
        assert_eq!(gemm_q4_split_small(2, 264, 80), super::GEMM_Q4_MAX_SPLIT);
        assert_eq!(gemm_q4_split_small(2, 264, 10), 2);
        assert_eq!(gemm_q4_split_small(2, 264, 3), 1);
    }

    #[test]
    fn gemm_q4_splits_fill_the_last_wave() {
        // H100 (132 SMs, 2 blocks each), 13B at 512 tokens: o and down (4 x 40 tiles) split
        // in 3 (480 blocks: 91% of two waves busy instead of 61% of one); q|k|v (480 tiles,
        // 91%) and gate|up (864, 82%) are not split.
        assert_eq!(gemm_q4_split_count(160, 264, 80), 3);
        assert_eq!(gemm_q4_split_count(160, 264, 216), 3);
        assert_eq!(gemm_q4_split_count(480, 264, 80), 1);
        assert_eq!(gemm_q4_split_count(864, 264, 80), 1);
        // Too few stages to split (each split keeps 8), or only into 2, which fills no better.
        assert_eq!(gemm_q4_split_count(160, 264, 12), 1);
        assert_eq!(gemm_q4_split_count(160, 264, 16), 1);
        assert_eq!(gemm_q4_split_count(160, 264, 24), 3);
        // A tiny grid on a big GPU: splitting cannot fill it clearly better.
        assert_eq!(gemm_q4_split_count(2, 264, 80), 1);
        // Never more than the most slabs the scratch plans for.
        assert!(gemm_q4_split_count(30, 264, 1000) <= super::GEMM_Q4_MAX_SPLIT);
    }
}
