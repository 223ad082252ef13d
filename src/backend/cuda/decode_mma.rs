//! A decode layer on `gemv_q4m`'s fused variants (kernels/gemv_mma.cu): six launches — q|k|v,
//! the attention's two kernels, o, gate|up, down — instead of the unfused path's twelve (the
//! residual adds, the norms, RoPE and SiLU ride in the products' last blocks per tile); four
//! where the step's keys fit [`FUSED_ATTENTION_KEYS`], q|k|v's epilogue then running the
//! attention too (the block that completes a head's q, k and v tiles). Each product's blocks
//! also ask L2 for the next product's first units once their own copies have landed
//! ([`Prefetch`]).
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

use super::device::{Gpu, Kernel};
use super::ffi::CUdeviceptr;
use super::gemv_mma::{self, MmaEpilogue, Prefetch};
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

/// What a fused layer runs: the kernels and the layer's four matrices, found once by [`plan`].
pub struct LayerPlan<'a> {
    rope: &'a Kernel,
    resid: &'a Kernel,
    silu: &'a Kernel,
    plain: &'a Kernel,
    /// Where the norm before the first fused layer of a run cannot write the digits itself.
    pub quant_digits: &'a Kernel,
    qkv: &'a Q4Dev,
    o: &'a Q4Dev,
    gate_up: &'a Q4Dev,
    down: &'a Q4Dev,
    /// q|k|v's epilogue may run the attention (`Kernels::mma_attn`, the heads fit its
    /// counters), where a step's keys fit [`FUSED_ATTENTION_KEYS`].
    attention: bool,
}

/// The most keys (the attention bucket's, `forward::attention_keys`) for which q|k|v's
/// epilogue runs the attention: one block per head, its warps over the keys, instead of the
/// two attention kernels between q|k|v and o. Measured on an H200 (13B, sixteenth session):
/// 2.9% faster after 32 tokens, 6% slower after 200 (buckets of 256 keys then), so at most
/// two of its warps' batches of keys.
pub const FUSED_ATTENTION_KEYS: usize = super::forward::MIN_ATTENTION_KEYS;

/// Whether decode runs layer `l` on the fused `gemv_q4m` variants, and with what: they are
/// loaded and wanted (`Kernels::mma_fuse`), every product is one 4-bit matrix on `gemv_q4m`
/// without act-order, heads of 128 (a q|k|v tile is a head), gate|up = [gate, up], and the
/// tiles fit the scratch's counters and sums of squares.
pub fn plan<'a>(k: &'a Kernels, c: &ModelConfig, l: &'a DevLayer) -> Option<LayerPlan<'a>> {
    let (h, hd) = (c.hidden_size, c.head_dim());
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    let p = LayerPlan {
        rope: k.gemv_q4m_rope.as_ref()?,
        resid: k.gemv_q4m_resid.as_ref()?,
        silu: k.gemv_q4m_silu.as_ref()?,
        plain: k.gemv_q4m.as_ref()?,
        quant_digits: k.quant_digits.as_ref()?,
        qkv: lone_q4m(&l.qkv)?,
        o: lone_q4m(&l.o)?,
        gate_up: lone_q4m(&l.gate_up)?,
        down: lone_q4m(&l.down)?,
        attention: k.mma_attn
            && nkv > 0
            && nh % nkv == 0
            && nh / nkv <= gemv_mma::ATT_GROUP_MAX
            && nh + 2 * nkv <= gemv_mma::HEAD_COUNTERS
            && gemv_mma::HEAD_COUNTERS + nh <= super::scratch::COUNTERS,
    };
    let fits = k.mma_fuse
        && hd == 128
        && h % 128 == 0
        && h / 128 <= SS_TILES
        && p.qkv.k == h
        && p.qkv.n == (nh + 2 * nkv) * hd
        && p.qkv.n / 128 <= super::scratch::COUNTERS
        && p.o.k == nh * hd
        && p.o.n == h
        && p.gate_up.k == h
        && p.gate_up.n == 2 * p.down.k
        && p.gate_up.n / 256 <= super::scratch::COUNTERS
        && p.down.n == h;
    fits.then_some(p)
}

impl LayerPlan<'_> {
    /// What the previous layer's down asks L2 for: this layer's q|k|v (see [`Prefetch`]).
    pub fn prefetch_qkv(&self, gpu: &Gpu, k: &Kernels) -> Prefetch {
        Prefetch::of(gpu, self.qkv, k.mma_prefetch)
    }
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
    /// What down's blocks ask L2 for: the next layer's q|k|v ([`LayerPlan::prefetch_qkv`]).
    pub next_pf: Prefetch,
}

/// Enqueue layer `l` as `p` planned it (see the module doc); returns the digits buffer the next
/// layer's q|k|v reads (valid when `io.next_norm` was given).
#[allow(clippy::too_many_arguments)]
pub fn layer(
    gpu: &Gpu,
    k: &Kernels,
    c: &ModelConfig,
    l: &DevLayer,
    p: &LayerPlan<'_>,
    sc: &Scratch,
    rope: RopeTable,
    io: &LayerIo,
) -> Result<CUdeviceptr> {
    let dbg = debug_bits();
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    // The attention in q|k|v's epilogue where the keys fit (see `FUSED_ATTENTION_KEYS`), and
    // whether it runs there (not when debug bit 1 skips the attention).
    let fused_att = p.attention && io.att.0 * io.att.1 <= FUSED_ATTENTION_KEYS;
    let att_in_qkv = fused_att && dbg & 1 == 0;
    // One product on the variant its epilogue names.
    let run = |q: &Q4Dev, g: &LinearGroup, din, epi, pf| -> Result<()> {
        let (f, epi) = match epi {
            _ if dbg & 2 != 0 => (p.plain, MmaEpilogue::None),
            MmaEpilogue::None => (p.plain, epi),
            MmaEpilogue::Resid { .. } => (p.resid, epi),
            MmaEpilogue::Rope { .. } => (p.rope, epi),
            MmaEpilogue::Silu { .. } => (p.silu, epi),
        };
        gemv_mma::gemv_q4m(gpu, f, q, din, sc.part.ptr, g.n_total, g.s_decode, epi, pf)
    };
    // Each product's blocks ask L2 for the next product's first units (`Prefetch`).
    let pf = |q: &Q4Dev| Prefetch::of(gpu, q, k.mma_prefetch);
    let bias = |g: &LinearGroup| g.bias.as_ref().map_or(0, |b| b.ptr);
    let eps = c.rms_norm_eps;
    // The digits alternate between two buffers, each product's input in one and its output
    // in the other: q|k|v reads `a`; o's input (the attention's output) goes to `b` when
    // q|k|v's epilogue makes it (its own input still being read), else into `a`.
    let a = io.digits_in;
    let b = if a == sc.digits.ptr {
        sc.digits2.ptr
    } else {
        sc.digits.ptr
    };
    let (din, dother) = if att_in_qkv { (b, a) } else { (a, b) };
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
        att_digits: if att_in_qkv { din } else { 0 },
    };
    run(p.qkv, g, a, epi, pf(p.o))?;
    // The attention (unless q|k|v's epilogue ran it); its combine writes o's input digits
    // into din (q|k|v has read them).
    let dims = (nh, nkv, c.head_dim());
    let made = dbg & 1 != 0
        || fused_att
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
    run(p.o, &l.o, din, resid(&l.o, l.post_norm.ptr), pf(p.gate_up))?;
    // gate|up: r, SiLU · up as down's input into din.
    let g = &l.gate_up;
    let epi = MmaEpilogue::Silu {
        counters,
        ss: sc.ss.ptr,
        eps,
        bias: bias(g),
        digits_out: din,
    };
    run(p.gate_up, g, dother, epi, pf(p.down))?;
    // down: the next layer's input into dother.
    run(
        p.down,
        &l.down,
        din,
        resid(&l.down, io.next_norm),
        io.next_pf,
    )?;
    Ok(dother)
}
