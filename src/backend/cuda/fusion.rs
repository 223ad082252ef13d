//! Which decode steps run inside the products (the `gemv_q4l_*` prologues and epilogues of
//! kernels/gemv.cu) instead of as kernels of their own, and what those need.

use super::ffi::CUdeviceptr;
use super::kernels::Partials;

/// Which decode steps run inside the products (`gemv_q4l_*` prologues and epilogues) instead
/// of as kernels of their own. `WV_CUDA_FUSE`: `0` none, `1` all, or letters: `a` the attention
/// combine and o's residual add, `s` SiLU · up and down's residual add, `n` the RMSNorms (only
/// after a residual epilogue). `WV_CUDA_FUSE_MIN_CHUNKS`: fuse only when the decode attention
/// has at least this many key chunks of 64 (the session's context is long enough).
///
/// Default `a` from 8 chunks (contexts over 448): measured on an H100 (13B, 128 decoded tokens)
/// it is the only fusion that pays: 211 against 184 tokens/s after 1,500 tokens, 224 against
/// 222 after 512, but 234 against 238 after 32, where the combine is cheap. `s` and `n` put two
/// GEMVs back to back, so the second cannot start and prefetch its weights while a small kernel
/// runs: all fusions measured 224 tokens/s after 32 and 203 after 1,500.
#[derive(Clone, Copy, Debug)]
pub struct Fusion {
    pub attn: bool,
    pub silu: bool,
    pub norm: bool,
    pub min_chunks: usize,
}

impl Fusion {
    pub fn from_env() -> Fusion {
        let v = std::env::var("WV_CUDA_FUSE").unwrap_or_else(|_| "a".into());
        let all = v == "1" || v == "all";
        let min_chunks = std::env::var("WV_CUDA_FUSE_MIN_CHUNKS")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(8);
        Fusion {
            attn: all || v.contains('a'),
            silu: all || v.contains('s'),
            norm: all || v.contains('n'),
            min_chunks,
        }
    }

    /// Whether to fuse anything for a decode attention of `nch` key chunks.
    pub fn active(&self, nch: usize) -> bool {
        nch >= self.min_chunks
    }
}

/// How a fused decode GEMV (`gemv_q4l_*`) makes its f16 input.
#[derive(Clone, Copy, Debug)]
pub enum Prologue {
    /// RMSNorm of the residual stream `x` (f32 `[K]`) with weight `w` (f32 `[K]`), from the
    /// `tiles` per-tile sums of squares in `ss` (left by a [`Epilogue::Residual`]).
    Norm {
        x: CUdeviceptr,
        w: CUdeviceptr,
        ss: CUdeviceptr,
        tiles: usize,
        eps: f32,
    },
    /// The decode attention's combine: `nch` chunk partials `po` `[nch, nh, hd]` and (max, sum)
    /// `pml` `[nch, nh, 2]`; head dim = the group size, no act-order permutation.
    Attention {
        po: CUdeviceptr,
        pml: CUdeviceptr,
        nch: usize,
        nh: usize,
    },
    /// SiLU(gate) · up from the gate|up product's slabs (gate at column k, up at K + k) plus an
    /// optional bias `[2K]` (0 for none).
    Silu { part: Partials, bias: CUdeviceptr },
}

/// What a fused decode GEMV does after the product.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue {
    /// Leave the slabs for the next kernel.
    None,
    /// The last block of each 128-column tile adds the tile's slabs (+ `bias`, 0 for none) into
    /// the residual stream `x` (f32 `[N]`) and writes the tile's sum of squares into `ss[tile]`;
    /// `counters` are ceil(N / 128) zeroed ints (left zeroed).
    Residual {
        counters: CUdeviceptr,
        x: CUdeviceptr,
        bias: CUdeviceptr,
        ss: CUdeviceptr,
    },
}
