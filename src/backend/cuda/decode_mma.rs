//! A decode layer on `gemv_q4m`'s fused variants (kernels/gemv_mma.cu): six launches — q|k|v,
//! the attention's two kernels, o, gate|up, down — instead of the unfused path's twelve (the
//! residual adds, the norms, RoPE and SiLU ride in the products' last blocks per tile).
//!
//! The RMSNorm is split: a residual epilogue (o, down) leaves the per-tile sums of squares in
//! `Scratch::ss` and the digits of x ∘ w (the norm's weight, not yet its 1 / RMS), and the next
//! product (q|k|v, gate|up) scales its sums by r = 1 / RMS when it finishes its tiles —
//! RMSNorm(x) · W = r ((x ∘ w) · W). The digits alternate between `Scratch::digits` and
//! `digits2`: a product writes the next one's input into the buffer it does not read.
//!
//! Layers this path does not take (an act-order q|k|v, a product on another kernel, a head size
//! other than 128) run the unfused path; forward.rs hands over between the two through the
//! residual stream: a fused layer leaves x complete and its sums of squares in `Scratch::ss`
//! (as `gemv_q4l`'s residual epilogues do), and, when the next layer is fused too, its input's
//! digits.

use super::device::Gpu;
use super::ffi::CUdeviceptr;
use super::gemv_mma::{self, MmaEpilogue};
use super::kernels::Kernels;
use super::scratch::{Scratch, SS_TILES};
use super::weights::{DevLayer, DevMat, GemvKind, LinearGroup, Q4Dev, RopeTable};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Measurement only (`WV_CUDA_MMA_DEBUG`, read once; wrong logits): bit 1 skips the attention
/// (o reads the digits left from before), bit 2 runs the products without their epilogues
/// (plain `gemv_q4m`), so that a step's time can be split between the products, their
/// epilogues and the attention.
fn debug_bits() -> u32 {
    static BITS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *BITS.get_or_init(|| {
        std::env::var("WV_CUDA_MMA_DEBUG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// The one 4-bit matrix of a group on `gemv_q4m` without a row permutation, if it is that.
pub fn lone_q4m(g: &LinearGroup) -> Option<&Q4Dev> {
    match (g.members.as_slice(), g.gemv) {
        ([m], GemvKind::Mma) => match &m.mat {
            DevMat::Q4(q) if q.perm.is_none() && m.col0 == 0 => Some(q),
            _ => None,
        },
        _ => None,
    }
}

/// Whether decode runs layer `l` on the fused `gemv_q4m` variants: they are loaded and wanted
/// (`Kernels::mma_fuse`), every product is one 4-bit matrix on `gemv_q4m` without act-order,
/// heads of 128 (a q|k|v tile is a head), gate|up = [gate, up], and the tiles fit the scratch's
/// counters and sums of squares.
pub fn takes(k: &Kernels, c: &ModelConfig, l: &DevLayer) -> bool {
    let loaded =
        k.gemv_q4m_resid.is_some() && k.gemv_q4m_rope.is_some() && k.gemv_q4m_silu.is_some();
    let (h, hd) = (c.hidden_size, c.head_dim());
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    let (Some(qkv), Some(o), Some(gu), Some(dn)) = (
        lone_q4m(&l.qkv),
        lone_q4m(&l.o),
        lone_q4m(&l.gate_up),
        lone_q4m(&l.down),
    ) else {
        return false;
    };
    k.mma_fuse
        && loaded
        && hd == 128
        && h % 128 == 0
        && h / 128 <= SS_TILES
        && qkv.k == h
        && qkv.n == (nh + 2 * nkv) * hd
        && qkv.n / 128 <= super::scratch::COUNTERS
        && o.k == nh * hd
        && o.n == h
        && gu.k == h
        && gu.n == 2 * dn.k
        && gu.n / 256 <= super::scratch::COUNTERS
        && dn.n == h
}

/// Where one fused layer reads and leaves things.
pub struct LayerIo {
    /// The digits of this layer's q|k|v input (x ∘ input_norm, or already normed).
    pub digits_in: CUdeviceptr,
    /// The per-tile sums of squares of x whose 1 / RMS q|k|v applies (0: the input was normed
    /// already, as the unfused norm before the first fused layer does).
    pub ss_in: CUdeviceptr,
    /// The next layer's input norm weight (0 when the next layer is not fused or there is none:
    /// no digits are made for it).
    pub next_norm: CUdeviceptr,
    /// This layer's key and value caches.
    pub kc: CUdeviceptr,
    pub vc: CUdeviceptr,
    /// The position (host value, or the device pointer decode reads it from).
    pub pos: (usize, CUdeviceptr),
    /// The attention's key chunking (chunk, chunks).
    pub att: (usize, usize),
}

/// Enqueue layer `l` (see the module doc); returns the digits buffer the next layer's q|k|v
/// reads (valid when `io.next_norm` was given).
#[allow(clippy::too_many_arguments)]
pub fn layer(
    gpu: &Gpu,
    k: &Kernels,
    c: &ModelConfig,
    l: &DevLayer,
    sc: &Scratch,
    rope: RopeTable,
    io: &LayerIo,
) -> Result<CUdeviceptr> {
    let (Some(f_rope), Some(f_resid), Some(f_silu), Some(f_plain)) = (
        &k.gemv_q4m_rope,
        &k.gemv_q4m_resid,
        &k.gemv_q4m_silu,
        &k.gemv_q4m,
    ) else {
        return Err(Error::internal("fused gemv_q4m layer without its kernels"));
    };
    let dbg = debug_bits();
    // One product on the variant its epilogue names.
    let run = |g: &LinearGroup, din, epi| -> Result<()> {
        let (f, epi) = match epi {
            _ if dbg & 2 != 0 => (f_plain, MmaEpilogue::None),
            MmaEpilogue::None => (f_plain, epi),
            MmaEpilogue::Resid { .. } => (f_resid, epi),
            MmaEpilogue::Rope { .. } => (f_rope, epi),
            MmaEpilogue::Silu { .. } => (f_silu, epi),
        };
        gemv_mma::gemv_q4m(gpu, f, q4(g)?, din, sc.part.ptr, g.n_total, g.s_decode, epi)
    };
    fn q4(g: &LinearGroup) -> Result<&Q4Dev> {
        lone_q4m(g).ok_or_else(|| Error::internal("fused gemv_q4m layer on another kernel"))
    }
    let bias = |g: &LinearGroup| g.bias.as_ref().map_or(0, |b| b.ptr);
    let eps = c.rms_norm_eps;
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    let din = io.digits_in;
    let dother = if din == sc.digits.ptr {
        sc.digits2.ptr
    } else {
        sc.digits.ptr
    };
    let counters = sc.counters.ptr;
    // q|k|v: r, RoPE, q out, K and V into the caches.
    let g = &l.qkv;
    let epi = MmaEpilogue::Rope {
        counters,
        ss: io.ss_in,
        eps,
        bias: bias(g),
        q: sc.q.ptr,
        kc: io.kc,
        vc: io.vc,
        rope: rope.ptr,
        npos: rope.positions,
        pos: io.pos.0,
        dpos: io.pos.1,
        nh,
        nkv,
    };
    run(g, din, epi)?;
    // The attention; its combine writes o's input digits into din (q|k|v has read them).
    let dims = (nh, nkv, c.head_dim());
    let made = dbg & 1 != 0
        || k.attention(
            gpu,
            sc.q.ptr,
            io.kc,
            io.vc,
            (sc.att_o.ptr, sc.att_ml.ptr),
            sc.xh.ptr,
            io.pos,
            1,
            dims,
            io.att,
            din,
        )?;
    if !made {
        return Err(Error::internal("the attention combine made no digits"));
    }
    // o and down: the residual add, its sums of squares, the next input (x ∘ norm_w) into
    // dother.
    let resid = |g: &LinearGroup, norm_w| MmaEpilogue::Resid {
        counters,
        x: sc.x.ptr,
        bias: bias(g),
        ss: sc.ss.ptr,
        norm_w,
        digits_out: dother,
    };
    run(&l.o, din, resid(&l.o, l.post_norm.ptr))?;
    // gate|up: r, SiLU · up as down's input into din.
    let g = &l.gate_up;
    let epi = MmaEpilogue::Silu {
        counters,
        ss: sc.ss.ptr,
        eps,
        bias: bias(g),
        digits_out: din,
    };
    run(g, dother, epi)?;
    // down: the next layer's input into dother.
    run(&l.down, din, resid(&l.down, io.next_norm))?;
    Ok(dother)
}
