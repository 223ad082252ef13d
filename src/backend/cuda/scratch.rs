//! Per-pass GPU buffers: [`Scratch`] holds everything a forward pass of up to `rows` tokens
//! writes besides the KV cache (residual stream, product inputs and partial slabs, attention
//! partials, logits, sampling buffers, captured decode graphs), allocated once per session (the
//! prefill-only dequantisation scratch on first use, so sessions of short passes never hold it).

use super::device::{DevBuf, Gpu, Graph};
use super::forward::PrefillBufs;
use super::gemv_mma::DIGITS_PER_BLOCK;
use super::persistent::Persistent;
use super::weights::DevWeights;
use crate::config::ModelConfig;
use crate::error::Result;
use std::sync::Arc;

/// The most f16 elements of dequantised weights held at once in prefill (`WV_CUDA_DEQ_MB` =
/// millions of elements overrides it). 160 M covers every 13B matrix in one piece (gate|up is
/// 141.6 M): narrower pieces leave cuBLAS too few output tiles (measured on an H100: 64 M,
/// 7,400 tokens/s at 512; 128 M, 8,900).
pub const DEQ_CAP: usize = 160 << 20;

fn deq_cap() -> usize {
    std::env::var("WV_CUDA_DEQ_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(DEQ_CAP, |m| m.clamp(1, 1024) << 20)
}

/// Column tiles of 128 a fused decode GEMV may have (ints in `Scratch::counters`).
pub const COUNTERS: usize = 1024;

/// 128-column tiles of the residual stream whose sums of squares the fused decode and the
/// persistent kernel keep (the hidden size may be at most 128 × this).
pub const SS_TILES: usize = 256;

/// Buffers for passes of up to `rows` tokens.
pub struct Scratch {
    pub rows: usize,
    pub tokens: DevBuf,
    /// f32 [rows, hidden]: the residual stream.
    pub x: DevBuf,
    /// f16 [rows, widest input]: the current product's input.
    pub xh: DevBuf,
    /// A decode product's input as `gemv_q4m` reads it (gemv_mma.cu's quant_digits): room for
    /// the widest input's 128-input blocks.
    pub digits: DevBuf,
    /// The same again: the fused `gemv_q4m` decode writes the next product's digits here while
    /// it reads its own input's from `digits` (and the other way round the next product).
    pub digits2: DevBuf,
    /// f32: partial slabs of the current product.
    pub part: DevBuf,
    /// f32: the down product's slabs in fused decode (it reads gate|up's from `part`).
    pub part2: DevBuf,
    /// i32 `[1024]`: zeros; the fused GEMVs' per-tile completion counters (left zeroed).
    pub counters: DevBuf,
    /// f32 `[SS_TILES]`: per-tile sums of squares of the residual stream (fused decode).
    pub ss: DevBuf,
    /// f32 [rows, heads*head_dim]: queries after RoPE.
    pub q: DevBuf,
    /// Attention partials: `att_slots` (query, chunk) pairs of [heads, head_dim] and [heads, 2].
    pub att_slots: usize,
    pub att_o: DevBuf,
    pub att_ml: DevBuf,
    /// f32 [rows, vocab]
    pub logits: DevBuf,
    /// f16 dequantised weights (prefill only; allocated by the first pass that needs it).
    pub deq: Option<DevBuf>,
    pub deq_elems: usize,
    /// f16 [rows, widest input]: an act-order matrix's prefill input in its sorted row order
    /// (only for models with act-order 4-bit matrices).
    pub xg: Option<DevBuf>,
    /// Device sampling: penalised logits, token ids, the chosen id.
    pub logits2: DevBuf,
    pub ids: Option<DevBuf>,
    pub ids_cap: usize,
    /// What `ids` holds (or will, once the stream reaches it): the last history written, so
    /// that a history that only grew is appended on the stream instead of written again.
    pub ids_held: Vec<u32>,
    pub out_id: DevBuf,
    /// Decode: [token, position] on the device (what a captured step reads).
    pub step: DevBuf,
    /// Captured decode steps, per session cache (K and V addresses, capacity) and the keys their
    /// attention plan covers ([`attention_keys`](super::forward::attention_keys)).
    pub graphs: Vec<((u64, u64, usize, usize), Graph)>,
    /// A decode step enqueued ahead of its call (`CudaBackend::forward_sample`): the session
    /// cache's K address, the position and the token it was fed; `logits` holds (or will hold)
    /// its logits. Cleared by every other use of the scratch.
    pub ahead: Option<(u64, usize, u32)>,
    /// The session cache (K address) of the last `forward_sample`, 0 after any other use: a
    /// step is enqueued ahead only for a session decoding consecutive tokens (sessions taking
    /// turns would each find its step spoilt by the other's).
    pub last_decode: u64,
    /// How many `forward_sample` calls found their step already enqueued ahead (diagnostics:
    /// [`CudaBackend::decode_ahead_hits`](super::CudaBackend::decode_ahead_hits)).
    pub ahead_hits: u64,
    /// The persistent decode kernel's output slots (f32), and its f32 `[SS_TILES]` sums of squares
    /// after o then i32 readiness flags (`Persistent::flag_words`; zeroed by each launch).
    pub pd_a: Option<DevBuf>,
    pub pd_b: Option<DevBuf>,
    /// f32 [q|k|v width + gate|up width]: the persistent kernel's summed products.
    pub pd_fin: Option<DevBuf>,
    pub pd_sync: Option<DevBuf>,
}

impl Scratch {
    /// Discard the decode step enqueued ahead and the record of the last session decoding
    /// (any use of the scratch other than that session's next `forward_sample`).
    pub fn forget_ahead(&mut self) {
        self.ahead = None;
        self.last_decode = 0;
    }

    /// The prefill buffers [`Ops::linear`](super::forward::Ops::linear) takes, as far as allocated.
    pub fn prefill_bufs(&self) -> PrefillBufs<'_> {
        PrefillBufs {
            deq: self.deq.as_ref().map(|d| (d, self.deq_elems)),
            xg: self.xg.as_ref().map(|d| (d, d.bytes / 2)),
            digits: Some(self.digits.ptr),
            digits_made: false,
        }
    }

    pub fn new(
        gpu: &Arc<Gpu>,
        c: &ModelConfig,
        w: &DevWeights,
        rows: usize,
        pd: Option<&Persistent>,
    ) -> Result<Scratch> {
        let h = c.hidden_size;
        let qd = c.num_attention_heads * c.head_dim();
        let wmax = h.max(c.intermediate_size).max(qd);
        // Prefill's products leave [rows, n] (the fused product's K splits of a narrower matrix
        // only where they fit: Ops::linear's `cap`).
        let part = (w.max_s_times_n()).max(rows * w.max_n());
        // Decode only (prefill attention needs no partials): up to 128 chunks of keys.
        let att_slots = 128;
        let what = "scratch buffers";
        // Enough for pieces of at least 64 columns of the widest input, at most DEQ_CAP.
        let deq_elems = if rows > 1 {
            w.max_q4_elems().min(deq_cap().max(wmax * 64))
        } else {
            0
        };
        Ok(Scratch {
            rows,
            tokens: gpu.alloc(rows * 4, what)?,
            x: gpu.alloc(rows * h * 4, what)?,
            xh: gpu.alloc(rows * wmax * 2, what)?,
            digits: gpu.alloc(wmax.div_ceil(128) * DIGITS_PER_BLOCK, what)?,
            digits2: gpu.alloc(wmax.div_ceil(128) * DIGITS_PER_BLOCK, what)?,
            part: gpu.alloc(part * 4, what)?,
            part2: gpu.alloc(w.max_s_times_n() * 4, what)?,
            counters: {
                let b = gpu.alloc(COUNTERS * 4, what)?;
                b.write(&[0u32; COUNTERS])?;
                b
            },
            ss: gpu.alloc(SS_TILES * 4, what)?,
            q: gpu.alloc(rows * qd * 4, what)?,
            att_slots,
            att_o: gpu.alloc(att_slots * qd * 4, what)?,
            att_ml: gpu.alloc(att_slots * c.num_attention_heads * 2 * 4, what)?,
            logits: gpu.alloc(rows * c.vocab_size * 4, what)?,
            // Allocated by the first pass that dequantises (see needs_dequant).
            deq: None,
            deq_elems,
            xg: if rows > 1 && w.has_act_order() {
                Some(gpu.alloc(rows * wmax * 2, what)?)
            } else {
                None
            },
            logits2: gpu.alloc(c.vocab_size * 4, what)?,
            ids: None,
            ids_cap: 0,
            ids_held: Vec::new(),
            out_id: gpu.alloc(4, what)?,
            step: gpu.alloc(8, what)?,
            graphs: Vec::new(),
            ahead: None,
            last_decode: 0,
            ahead_hits: 0,
            pd_a: match pd {
                Some(p) => Some(gpu.alloc(p.part_a.max(1) * 4, what)?),
                None => None,
            },
            pd_b: match pd {
                Some(p) => Some(gpu.alloc(p.part_b.max(1) * 4, what)?),
                None => None,
            },
            pd_fin: match pd {
                Some(p) => Some(gpu.alloc((p.dims.qkv_n + 2 * p.dims.ffn) * 4, what)?),
                None => None,
            },
            pd_sync: match pd {
                Some(p) => Some(gpu.alloc((SS_TILES + p.flag_words()) * 4, what)?),
                None => None,
            },
        })
    }
}
