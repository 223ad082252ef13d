//! The forward pass on the GPU.
//!
//! Per layer (T tokens at positions pos..pos+T):
//!   residual_rmsnorm (adds the previous layer's down-projection into the f32 residual stream,
//!   normalises to f16) → q|k|v product → qkv_rope (sums the partial slabs, RoPE, writes K and V
//!   into the f16 cache) → attention (split over the keys, then combined) → o product →
//!   residual_rmsnorm → gate|up product → silu_mul → down product; then the final norm of the
//!   rows whose logits are wanted and the lm_head.
//! Decode layers whose products all run on `gemv_q4m` (`WV_CUDA_GEMV=mma`) take six launches
//! instead: the glue rides in the products' last blocks (decode_mma.rs).
//! Products: decode (T = 1) runs the GEMV kernels, split over K into S partial slabs that the
//! next kernel sums; prefill passes of up to 512 tokens multiply straight from the 4-bit weights
//! on Hopper's tensor cores (the fused product: `gemm_q4_tma` or `gemm_q4_wgmma`,
//! kernels/gemm_q4.cu, launched by gemm_q4.rs) where it is loaded and takes the matrix; longer passes (and other GPUs) dequantise each 4-bit matrix to f16
//! scratch (in column pieces, the scratch allocated by the first pass that needs it) and multiply
//! with cuBLAS (or wv's SIMT kernel without cuBLAS), in chunks of at most [`PREFILL_CHUNK`] tokens.

use super::decode_mma;
use super::ffi::CUdeviceptr;
use super::gemv_mma;
use super::kernels::{Epilogue, Partials, Prologue};
pub use super::linear::{slabs, Ops, PrefillBufs};
use super::persistent::PdBuffers;
use super::scratch::{Scratch, SS_TILES};
use super::state::CudaState;
use super::weights::{DevLayer, DevMat, DevWeights, GemvKind, LinearGroup, Q4Dev};
use crate::config::ModelConfig;
use crate::error::Result;

/// The most tokens one prefill pass processes (longer prompts go in chunks; each pass
/// dequantises every 4-bit matrix once). Sessions feed prompts in chunks of this size too
/// (`Backend::prefill_chunk`). Measured on an H100 (13B): 1,500-token prompts prefill at 17,100
/// tokens/s with 1,024 against 14,300 with 512 and 9,400 with 256 (the sessions' chunk before),
/// 512-token prompts equally fast with 512 or 1,024, for 0.15 GiB more scratch.
/// `WV_CUDA_PREFILL_CHUNK` overrides it (64..=4096).
pub const PREFILL_CHUNK: usize = 1024;

/// [`PREFILL_CHUNK`], or `WV_CUDA_PREFILL_CHUNK`.
pub fn prefill_chunk() -> usize {
    std::env::var("WV_CUDA_PREFILL_CHUNK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(PREFILL_CHUNK, |v| v.clamp(64, 4096))
}
/// Prompts of at most this many tokens run as decode steps (GEMV beats dequantise + GEMM).
pub const SMALL_T: usize = 4;
/// The keys a decode step's attention plan covers at position `pos` of a cache of `capacity`
/// (with `buckets`, [`Kernels::att_buckets`](super::kernels::Kernels::att_buckets)): the next
/// power of two above the position, at least [`MIN_ATTENTION_KEYS`], at most the capacity (one
/// captured graph per such bucket: up to 5 for a 2,048-position session); else the capacity. A
/// plan sized by the capacity alone made a short context in a long session pay for every chunk (empty chunks' blocks, and o's prologue
/// combining all of them). Empty chunks contribute exact zeros, so both plans give the same
/// logits bit for bit.
pub fn attention_keys(capacity: usize, pos: usize, buckets: bool) -> usize {
    if !buckets {
        return capacity;
    }
    (pos + 1)
        .next_power_of_two()
        .max(MIN_ATTENTION_KEYS)
        .min(capacity)
}

/// The smallest attention bucket: 128 keys, the most for which the fused decode layers run the
/// attention in q|k|v's epilogue (`decode_mma::FUSED_ATTENTION_KEYS`; 2.9% faster after 32
/// tokens, 6% slower at 200–264 keys than the attention kernels on an H200).
pub const MIN_ATTENTION_KEYS: usize = 128;

/// Chunking of the keys for attention: (keys per chunk, chunks), so that `t * chunks` fits in
/// `slots` partial results.
pub fn plan_attention(n_keys_max: usize, t: usize, slots: usize) -> (usize, usize) {
    let nch_max = (slots / t.max(1)).max(1);
    let chunk = n_keys_max.div_ceil(nch_max).div_ceil(64).max(1) * 64;
    (chunk, n_keys_max.div_ceil(chunk).max(1))
}

/// Whether a prefill pass of `t` tokens dequantises any 4-bit matrix (one that the
/// fused product does not take, or all of them where it is off or absent).
fn needs_dequant(ops: &Ops, w: &DevWeights, t: usize, xg: Option<usize>) -> bool {
    w.layers
        .iter()
        .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
        .flat_map(|g| g.members.iter())
        .any(|m| match &m.mat {
            DevMat::Q4(q) => !ops.fused_q4(q, t, xg),
            DevMat::F16(_) => false,
        })
}

/// Whether decode can run layer `l` with the fused `gemv_q4l_*` kernels: every product one
/// 4-bit member on `gemv_q4l`, the o product's input split by heads (group size = head dim, no
/// act-order) with its attention weights fitting in shared memory, gate|up = [gate, up].
fn fusable(c: &ModelConfig, l: &DevLayer, nch: usize) -> bool {
    fn one(g: &LinearGroup) -> Option<&Q4Dev> {
        match (g.members.as_slice(), g.gemv) {
            ([m], GemvKind::Lean) => match &m.mat {
                DevMat::Q4(q) => Some(q),
                DevMat::F16(_) => None,
            },
            _ => None,
        }
    }
    let (h, hd) = (c.hidden_size, c.head_dim());
    let (Some(_), Some(o), Some(gu), Some(dn)) =
        (one(&l.qkv), one(&l.o), one(&l.gate_up), one(&l.down))
    else {
        return false;
    };
    let gpb = l.o.members[0].per_block.min(o.groups);
    o.perm.is_none()
        && o.gs == hd
        && o.k == c.num_attention_heads * hd
        && o.n == h
        && gpb * o.gs * 2 + gpb * nch * 4 <= 48 * 1024
        && gu.n == 2 * dn.k
        && dn.n == h
        && h.div_ceil(128) <= SS_TILES
}

/// Where a pass's position comes from.
#[derive(Clone, Copy)]
pub enum Pos {
    /// Prefill: the position and the attention chunking as launch parameters.
    Host(usize),
    /// Decode: the position read from device memory, the chunking fixed by the cache's
    /// capacity, so the launches are the same at every step (and can be captured once).
    Device {
        ptr: CUdeviceptr,
        chunk: usize,
        nch: usize,
    },
}

/// Enqueue a pass over `t` tokens already on the device at `tokens`; leave the logits of the
/// last `logit_rows` in `sc.logits` (`[logit_rows, vocab]`).
#[allow(clippy::too_many_arguments)]
pub fn enqueue(
    ops: &Ops<'_>,
    c: &ModelConfig,
    w: &DevWeights,
    sc: &Scratch,
    st: &CudaState,
    tokens: CUdeviceptr,
    t: usize,
    pos: Pos,
    logit_rows: usize,
) -> Result<()> {
    let (gpu, k) = (ops.gpu, ops.k);
    debug_assert!(t >= 1 && t <= sc.rows.max(1) && logit_rows <= t);
    let (h, eps) = (c.hidden_size, c.rms_norm_eps);
    let dims = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    k.embed(gpu, tokens, w.embed.ptr, sc.x.ptr, t, h)?;
    if let (Some(pd), Pos::Device { ptr, chunk, nch }, 1, Some(a), Some(b), Some(fin), Some(sync)) =
        (ops.pd, pos, t, &sc.pd_a, &sc.pd_b, &sc.pd_fin, &sc.pd_sync)
    {
        // Every layer in one launch (persistent.rs), then the final norm and the lm_head.
        pd.launch(
            gpu,
            eps,
            &PdBuffers {
                x: sc.x.ptr,
                ss: sc.ss.ptr,
                part_a: a.ptr,
                part_b: b.ptr,
                fin: fin.ptr,
                att_o: sc.att_o.ptr,
                att_ml: sc.att_ml.ptr,
                counters: sc.counters.ptr,
                sync: sync.ptr,
                dpos: ptr,
                kc: st.k.ptr,
                vc: st.v.ptr,
                layer_stride: st.layer_stride,
                rope: w.rope.ptr,
                chunk,
                nch,
            },
        )?;
        return final_logits(ops, c, w, sc, None, t, logit_rows);
    }
    let bufs = sc.prefill_bufs();
    let mut prev: Option<(Partials, CUdeviceptr)> = None;
    // The residual stream is complete and sc.ss holds its per-tile sums of squares (the last
    // product had a residual epilogue).
    let mut ss_valid = false;
    let (p_arg, att) = match pos {
        Pos::Host(p) => ((p, 0), plan_attention(p + t, t, sc.att_slots)),
        Pos::Device { ptr, chunk, nch } => ((0, ptr), (chunk, nch)),
    };
    // The products' partial slabs: the buffer and the floats it holds (Ops::linear's cap).
    let part = (sc.part.ptr, sc.part.bytes / 4);
    // Where the kernel making a decode product's input also writes it as gemv_q4m's digits.
    let digits_for = |g: &LinearGroup| {
        if t == 1 && g.gemv == GemvKind::Mma && !g.has_act_order() {
            sc.digits.ptr
        } else {
            0
        }
    };
    let made = |digits_made: bool| PrefillBufs {
        digits_made,
        ..bufs
    };
    // Decode layers on gemv_q4m's fused variants (decode_mma.rs), and where the previous one
    // left this layer's input digits (x complete, its sums of squares in sc.ss).
    let mma: Vec<Option<decode_mma::LayerPlan>> = w
        .layers
        .iter()
        .map(|l| {
            if t == 1 {
                decode_mma::plan(k, c, l)
            } else {
                None
            }
        })
        .collect();
    let mut mma_in: Option<CUdeviceptr> = None;
    for (li, l) in w.layers.iter().enumerate() {
        if let Some(plan) = &mma[li] {
            let (digits_in, ss_in) = match mma_in {
                Some(d) => (d, sc.ss.ptr),
                None => {
                    // The norm before the first fused layer of a run makes normed digits.
                    let (d, b) = prev.map_or((None, 0), |(p, b)| (Some(p), b));
                    let digits = sc.digits.ptr;
                    let made = k.residual_rmsnorm(
                        gpu,
                        sc.x.ptr,
                        d,
                        b,
                        l.input_norm.ptr,
                        eps,
                        sc.xh.ptr,
                        h,
                        0,
                        t,
                        digits,
                    )?;
                    if !made {
                        gemv_mma::quant_digits(gpu, plan.quant_digits, sc.xh.ptr, 0, digits, h)?;
                    }
                    (digits, 0)
                }
            };
            let next = mma.get(li + 1).is_some_and(|n| n.is_some());
            let io = decode_mma::LayerIo {
                digits_in,
                ss_in,
                next_norm: if next {
                    w.layers[li + 1].input_norm.ptr
                } else {
                    0
                },
                kc: st.k.at(li * st.layer_stride),
                vc: st.v.at(li * st.layer_stride),
                pos: p_arg,
                att,
                next_pf: match mma.get(li + 1) {
                    Some(Some(n)) => n.prefetch_qkv(gpu, k),
                    _ => gemv_mma::Prefetch::NONE,
                },
            };
            let out = decode_mma::layer(gpu, k, c, l, plan, sc, w.rope_table(), &io)?;
            mma_in = next.then_some(out);
            prev = None;
            ss_valid = true;
            continue;
        }
        mma_in = None;
        // Decode may fuse the layer's steps into its products (see kernels/gemv.cu and
        // `Fusion`): the attention combine into o, SiLU · up into down, the residual adds into
        // o's and down's last blocks, the RMSNorms into q|k|v's and gate|up's prologues.
        let can = t == 1 && k.fusion.active(att.1) && fusable(c, l, att.1);
        let fuse_attn = can && k.fusion.attn;
        let fuse_silu = can && k.fusion.silu;
        let fuse_norm = can && k.fusion.norm;
        let p = if fuse_norm && ss_valid {
            // The previous layer left x complete and its per-tile sums of squares in sc.ss.
            let q = l.qkv.members[0].q4()?;
            k.gemv_q4l_fused(
                gpu,
                q,
                sc.part.ptr,
                l.qkv.s_decode,
                l.qkv.members[0].per_block,
                l.qkv.n_total,
                Prologue::Norm {
                    x: sc.x.ptr,
                    w: l.input_norm.ptr,
                    ss: sc.ss.ptr,
                    tiles: h.div_ceil(128),
                    eps,
                },
                Epilogue::None,
            )?;
            slabs(&l.qkv, sc.part.ptr, t)
        } else {
            let (d, b) = prev.map_or((None, 0), |(p, b)| (Some(p), b));
            let dig = k.residual_rmsnorm(
                gpu,
                sc.x.ptr,
                d,
                b,
                l.input_norm.ptr,
                eps,
                sc.xh.ptr,
                h,
                0,
                t,
                digits_for(&l.qkv),
            )?;
            ops.linear(&l.qkv, sc.xh.ptr, t, part, made(dig))?
        };
        let kc = st.k.at(li * st.layer_stride);
        let vc = st.v.at(li * st.layer_stride);
        let bias = l.qkv.bias.as_ref().map_or(0, |b| b.ptr);
        k.qkv_rope(
            gpu,
            p,
            bias,
            sc.q.ptr,
            kc,
            vc,
            w.rope_table(),
            p_arg,
            t,
            dims,
        )?;
        let att_dig = k.attention(
            gpu,
            sc.q.ptr,
            kc,
            vc,
            (sc.att_o.ptr, sc.att_ml.ptr),
            if fuse_attn { 0 } else { sc.xh.ptr },
            p_arg,
            t,
            dims,
            att,
            digits_for(&l.o),
        )?;
        let counters = sc.counters.ptr;
        let residual = |g: &LinearGroup| Epilogue::Residual {
            counters,
            x: sc.x.ptr,
            bias: g.bias.as_ref().map_or(0, |b| b.ptr),
            ss: sc.ss.ptr,
        };
        let (o, gu, dn) = (&l.o, &l.gate_up, &l.down);
        // Where gate|up's product leaves its output (the fused norm path writes slabs).
        let mut gu_out = slabs(gu, sc.part.ptr, t);
        if fuse_attn {
            // o: the attention combine in its prologue, the residual add after.
            let pro = Prologue::Attention {
                po: sc.att_o.ptr,
                pml: sc.att_ml.ptr,
                nch: att.1,
                nh: dims.0,
            };
            let m = &o.members[0];
            let q = m.q4()?;
            k.gemv_q4l_fused(
                gpu,
                q,
                sc.part.ptr,
                o.s_decode,
                m.per_block,
                o.n_total,
                pro,
                residual(o),
            )?;
            if fuse_norm {
                let pro = Prologue::Norm {
                    x: sc.x.ptr,
                    w: l.post_norm.ptr,
                    ss: sc.ss.ptr,
                    tiles: h.div_ceil(128),
                    eps,
                };
                let m = &gu.members[0];
                let q = m.q4()?;
                k.gemv_q4l_fused(
                    gpu,
                    q,
                    sc.part.ptr,
                    gu.s_decode,
                    m.per_block,
                    gu.n_total,
                    pro,
                    Epilogue::None,
                )?;
            } else {
                let dig = k.residual_rmsnorm(
                    gpu,
                    sc.x.ptr,
                    None,
                    0,
                    l.post_norm.ptr,
                    eps,
                    sc.xh.ptr,
                    h,
                    0,
                    t,
                    digits_for(gu),
                )?;
                gu_out = ops.linear(gu, sc.xh.ptr, t, part, made(dig))?;
            }
        } else {
            let p = ops.linear(o, sc.xh.ptr, t, part, made(att_dig))?;
            let bias = o.bias.as_ref().map_or(0, |b| b.ptr);
            let dig = k.residual_rmsnorm(
                gpu,
                sc.x.ptr,
                Some(p),
                bias,
                l.post_norm.ptr,
                eps,
                sc.xh.ptr,
                h,
                0,
                t,
                digits_for(gu),
            )?;
            gu_out = ops.linear(gu, sc.xh.ptr, t, part, made(dig))?;
        }
        let gu_bias = gu.bias.as_ref().map_or(0, |b| b.ptr);
        if fuse_silu {
            // down: SiLU · up in its prologue, the residual add (and the next norm's sums of
            // squares) after; its slabs go to part2 while its prologue reads gate|up's in part.
            let pro = Prologue::Silu {
                part: gu_out,
                bias: gu_bias,
            };
            let m = &dn.members[0];
            let q = m.q4()?;
            k.gemv_q4l_fused(
                gpu,
                q,
                sc.part2.ptr,
                dn.s_decode,
                m.per_block,
                dn.n_total,
                pro,
                residual(dn),
            )?;
            prev = None;
            ss_valid = true;
        } else {
            let dig = k.silu_mul(
                gpu,
                gu_out,
                gu_bias,
                sc.xh.ptr,
                c.intermediate_size,
                t,
                digits_for(dn),
            )?;
            let p = ops.linear(dn, sc.xh.ptr, t, part, made(dig))?;
            prev = Some((p, dn.bias.as_ref().map_or(0, |b| b.ptr)));
            ss_valid = false;
        }
    }
    final_logits(ops, c, w, sc, prev, t, logit_rows)
}

/// The final norm of the last `logit_rows` of the residual stream (after adding `prev`, the
/// last product's slabs and bias, when given) and the lm_head, into `sc.logits`.
fn final_logits(
    ops: &Ops<'_>,
    c: &ModelConfig,
    w: &DevWeights,
    sc: &Scratch,
    prev: Option<(Partials, CUdeviceptr)>,
    t: usize,
    logit_rows: usize,
) -> Result<()> {
    let (gpu, k) = (ops.gpu, ops.k);
    let (h, eps) = (c.hidden_size, c.rms_norm_eps);
    if logit_rows == 0 {
        return Ok(());
    }
    let (d, b) = prev.map_or((None, 0), |(p, b)| (Some(p), b));
    k.residual_rmsnorm(
        gpu,
        sc.x.ptr,
        d,
        b,
        w.final_norm.ptr,
        eps,
        sc.xh.ptr,
        h,
        t - logit_rows,
        logit_rows,
        0,
    )?;
    let v = c.vocab_size;
    if logit_rows == 1 {
        k.gemv_f16(
            gpu,
            w.lm_head().ptr,
            h,
            v,
            sc.xh.ptr,
            sc.logits.ptr,
            1,
            h.div_ceil(8) * 8,
            v,
        )
    } else {
        ops.gemm(
            true,
            sc.xh.ptr,
            w.lm_head().ptr,
            sc.logits.ptr,
            logit_rows,
            v,
            h,
            v,
        )
    }
}

/// Prefill: run `tokens` at positions `pos..`, logits of the last `logit_rows` in `sc.logits`.
#[allow(clippy::too_many_arguments)]
pub fn run_pass(
    ops: &Ops<'_>,
    c: &ModelConfig,
    w: &DevWeights,
    sc: &mut Scratch,
    st: &CudaState,
    tokens: &[u32],
    pos: usize,
    logit_rows: usize,
) -> Result<()> {
    // The dequantisation scratch only once a pass needs it: passes that the fused product takes
    // whole (short prompts on sm_90a) never do.
    let t = tokens.len();
    let xg = sc.prefill_bufs().xg.map(|(_, cap)| cap);
    if t > 1 && sc.deq.is_none() && sc.deq_elems > 0 && needs_dequant(ops, w, t, xg) {
        sc.deq = Some(
            ops.gpu
                .alloc(sc.deq_elems * 2, "dequantised weights for prefill")?,
        );
    }
    let sc = &*sc;
    sc.tokens.write(tokens)?;
    enqueue(
        ops,
        c,
        w,
        sc,
        st,
        sc.tokens.ptr,
        tokens.len(),
        Pos::Host(pos),
        logit_rows,
    )
}

/// The most captured decode steps kept (one per recently used session cache and attention
/// bucket: 4 buckets for a 2,048-position session).
const MAX_GRAPHS: usize = 16;

/// Decode one token at `pos`; its logits are left in `sc.logits`. With `use_graph`, the step is
/// captured once per session cache and attention bucket ([`attention_keys`]) and replayed
/// after that.
#[allow(clippy::too_many_arguments)]
pub fn decode_step(
    ops: &Ops<'_>,
    c: &ModelConfig,
    w: &DevWeights,
    sc: &mut Scratch,
    st: &CudaState,
    token: u32,
    pos: usize,
    use_graph: bool,
) -> Result<()> {
    let r = decode_step_with(ops, c, w, sc, st, token, pos, use_graph);
    if let (Ok(()), Some(p)) = (&r, ops.pd) {
        if pos % 16 == 0 {
            p.print_trace(ops.gpu)?;
        }
    }
    match (r, ops.pd) {
        (Err(e), Some(p)) => {
            // The persistent kernel could not be launched or captured here (a driver without
            // cooperative launches in graphs, say): one kernel per step from now on.
            crate::log::log(
                crate::log::Level::Warn,
                &format!("persistent decode kernel failed ({e}); using one kernel per step"),
            );
            p.disable();
            sc.graphs.clear();
            let plain = Ops { pd: None, ..*ops };
            decode_step_with(&plain, c, w, sc, st, token, pos, use_graph)
        }
        (r, _) => r,
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_step_with(
    ops: &Ops<'_>,
    c: &ModelConfig,
    w: &DevWeights,
    sc: &mut Scratch,
    st: &CudaState,
    token: u32,
    pos: usize,
    use_graph: bool,
) -> Result<()> {
    // The step's [token, position] set on the stream (no host wait: a step enqueued ahead of
    // its call, `CudaBackend::forward_sample`, is fed the token the previous one chose).
    ops.gpu.memset_u32(sc.step.ptr, token, 1)?;
    ops.gpu.memset_u32(sc.step.ptr + 4, pos as u32, 1)?;
    // The persistent kernel combines at most MAX_CHUNKS chunks of keys.
    let slots = if ops.pd.is_some() {
        super::persistent::MAX_CHUNKS.min(sc.att_slots)
    } else {
        sc.att_slots
    };
    let keys = attention_keys(st.capacity, pos, ops.k.att_buckets);
    let (chunk, nch) = plan_attention(keys, 1, slots);
    let p = Pos::Device {
        ptr: sc.step.ptr + 4,
        chunk,
        nch,
    };
    if !use_graph {
        return enqueue(ops, c, w, sc, st, sc.step.ptr, 1, p, 1);
    }
    let key = (st.k.ptr, st.v.ptr, st.capacity, keys);
    if let Some(i) = sc.graphs.iter().position(|(k, _)| *k == key) {
        return ops.gpu.replay(&sc.graphs[i].1);
    }
    let g = {
        let scr: &Scratch = sc;
        ops.gpu
            .capture(|| enqueue(ops, c, w, scr, st, scr.step.ptr, 1, p, 1))?
    };
    if sc.graphs.len() >= MAX_GRAPHS {
        sc.graphs.remove(0);
    }
    ops.gpu.replay(&g)?;
    sc.graphs.push((key, g));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{attention_keys, plan_attention};

    #[test]
    fn attention_plans_grow_with_the_position() {
        // A 2,048-position session: 128 keys (2 chunks of 64) up to position 127, then 256,
        // 512, 1,024 and 2,048; a small session never exceeds its capacity.
        assert_eq!(attention_keys(2048, 0, true), 128);
        assert_eq!(attention_keys(2048, 127, true), 128);
        assert_eq!(attention_keys(2048, 128, true), 256);
        assert_eq!(attention_keys(2048, 255, true), 256);
        assert_eq!(attention_keys(2048, 256, true), 512);
        assert_eq!(attention_keys(2048, 1500, true), 2048);
        assert_eq!(attention_keys(64, 40, true), 64);
        assert_eq!(attention_keys(2048, 0, false), 2048);
        assert_eq!(plan_attention(256, 1, 128), (64, 4));
        assert_eq!(plan_attention(2048, 1, 128), (64, 32));
        // Every plan covers the position's keys.
        for pos in [0usize, 63, 127, 128, 255, 256, 1000, 2047] {
            let (chunk, nch) = plan_attention(attention_keys(2048, pos, true), 1, 128);
            assert!(chunk * nch > pos, "pos {pos}: {chunk} x {nch}");
        }
    }
}
