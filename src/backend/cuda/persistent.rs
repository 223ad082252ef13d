//! The persistent decode kernel (`kernels/decode.cu`): every layer of a decode step in one
//! cooperative launch whose work is ordered by readiness flags (each batch of a product waits
//! for its own inputs, not for the whole grid), so that the products follow one another without
//! draining the GPU and ramping up again (see the kernel's opening comment).
//!
//! This module decides whether a model can use it ([`eligible`]: every product one 4-bit
//! matrix on the lean GEMV path, no biases, head size 128), computes the schedule — which
//! block computes which (128-column tile, batch of 64 inputs) units of each product
//! ([`schedule`]: contiguous runs of equal length, "stream-K") — sizes the kernel's shared
//! memory and output slots, uploads the tables, and launches it.
//!
//! It is opt-in (`WV_CUDA_PERSIST=1`, or `CudaBackend::set_persistent`). With grid barriers
//! between its phases (third session) it decoded the 13B model at 171–200 tokens/s on an H100
//! against 241 for one kernel per step, and 214 against 326 on an H200: the phases' tails and
//! the barriers cost more than the launches they replace. Ordered by readiness flags instead
//! (tenth session) it decodes at 255 against 351 on an H200: the slowest contributors of the
//! tiles a product needs still set its pace (docs/cuda.md, "Tenth session").

use super::device::{Args, DevBuf, Gpu, Kernel};
use super::ffi::CUdeviceptr;
use super::scratch::SS_TILES;
use super::weights::{DevMat, DevWeights, GemvKind, LinearGroup, Q4Dev};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Segments a block may have per product (`PD_MAXSEG`).
pub const MAXSEG: usize = 8;
/// The head size the kernel's attention is written for (`PD_HD`).
const HD: usize = 128;
/// Batches in each warp's weight ring (`WV_PD_RD`, passed to the kernel's compilation):
/// `WV_CUDA_PD_RD` (2 to 6) for experiments, else 3.
pub fn ring_depth() -> usize {
    std::env::var("WV_CUDA_PD_RD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(3, |v| v.clamp(2, 6))
}
/// Both half blocks' attention scratch (`2 * PD_ATT_FLOATS` floats).
const ATT_BYTES: usize = 2 * (128 + 64 + 4 * 128 + 4 + 128) * 4;
/// `PdShared`: the warps' sums (8 x 128 floats), each warp's batch inputs (8 x 32 words) and two
/// counters, rounded up to 16 bytes.
const SHARED_BYTES: usize = ((8 * 128 + 8 * 32) * 4 + 8usize).div_ceil(16) * 16;
/// The most key chunks of a persistent decode step (the o product's combine keeps one chunk
/// weight per lane).
pub const MAX_CHUNKS: usize = 32;
/// The most blocks per SM the kernel is compiled for (`WV_PD_MINB`).
const MAX_PER_SM: usize = 2;

/// One product's schedule over `blocks` blocks.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// `[blocks][MAXSEG]` segments (tile, first batch, batches, slot); 0 batches ends a list.
    pub segs: Vec<[i32; 4]>,
    /// Slots (blocks contributing) per 128-column tile.
    pub tslots: Vec<i32>,
}

/// Spread the `ceil(n / 128) * k / 64` units of a `k x n` product over `blocks` blocks: block b
/// takes units `[U b / B, U (b + 1) / B)` (tile-major), cut at tile boundaries into segments;
/// a tile's segments get slots 0, 1, … in block order. `None` when a block would need more
/// than [`MAXSEG`] segments or a value does not fit an `int`.
pub fn schedule(k: usize, n: usize, blocks: usize) -> Option<Schedule> {
    if k == 0 || k % 64 != 0 || n == 0 || blocks == 0 {
        return None;
    }
    let nbt = k / 64;
    let tiles = n.div_ceil(128);
    let units = tiles.checked_mul(nbt)?;
    i32::try_from(units).ok()?;
    let mut segs = vec![[0i32; 4]; blocks.checked_mul(MAXSEG)?];
    let mut tslots = vec![0i32; tiles];
    let bp = blocks.min(units);
    for b in 0..bp {
        let (mut u, end) = (units * b / bp, units * (b + 1) / bp);
        let mut s = 0;
        while u < end {
            if s == MAXSEG {
                return None;
            }
            let (t, j0) = (u / nbt, u % nbt);
            let len = (nbt - j0).min(end - u);
            segs[b * MAXSEG + s] = [t as i32, j0 as i32, len as i32, tslots[t]];
            tslots[t] += 1;
            s += 1;
            u += len;
        }
    }
    Some(Schedule { segs, tslots })
}

/// The shapes the kernel is launched with.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub layers: usize,
    pub hidden: usize,
    pub qkv_n: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub gs: usize,
}

impl Dims {
    /// (K, N) of product m: q|k|v, o, gate|up, down.
    fn kn(&self, m: usize) -> (usize, usize) {
        match m {
            0 => (self.hidden, self.qkv_n),
            1 => (self.heads * HD, self.hidden),
            2 => (self.hidden, 2 * self.ffn),
            _ => (self.ffn, self.hidden),
        }
    }
}

/// The group's one 4-bit matrix when decode runs it on `gemv_q4l` (K and group size multiples
/// of 64, zero points below 64) and it has no bias.
fn lean(g: &LinearGroup) -> Option<&Q4Dev> {
    match (g.members.as_slice(), g.gemv, &g.bias) {
        ([m], GemvKind::Lean, None) => match &m.mat {
            DevMat::Q4(q) => Some(q),
            DevMat::F16(_) => None,
        },
        _ => None,
    }
}

/// The most 128-column output tiles of a layer's four products together (the tile counters,
/// `Scratch::counters`).
const MAX_TILES: usize = 1024;

/// The model-shape part of [`eligible`]: head size 128, query heads a multiple of the KV heads,
/// at most [`SS_TILES`] hidden tiles (the sums-of-squares buffers) and [`MAX_TILES`] output
/// tiles for the four products together.
fn shapes_fit(c: &ModelConfig) -> bool {
    let (h, nh, nkv) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads);
    if nh == 0 || c.head_dim() != HD || nkv == 0 || nh % nkv != 0 || h.div_ceil(128) > SS_TILES {
        return false;
    }
    let tiles = (nh + 2 * nkv) + 2 * h.div_ceil(128) + (2 * c.intermediate_size).div_ceil(128);
    tiles <= MAX_TILES
}

/// Whether the persistent kernel can run this model: head size 128, every layer's four products
/// lean 4-bit matrices of the same group size with the usual shapes (gate|up = [gate, up]), no
/// act-order on o, and the shape limits of `shapes_fit`.
pub fn eligible(c: &ModelConfig, w: &DevWeights) -> Option<Dims> {
    if !shapes_fit(c) || w.layers.is_empty() {
        return None;
    }
    let (h, nh, nkv) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads);
    let d = Dims {
        layers: w.layers.len(),
        hidden: h,
        qkv_n: (nh + 2 * nkv) * HD,
        ffn: c.intermediate_size,
        heads: nh,
        kv_heads: nkv,
        gs: lean(&w.layers[0].qkv)?.gs,
    };
    for l in &w.layers {
        let ms = [
            lean(&l.qkv)?,
            lean(&l.o)?,
            lean(&l.gate_up)?,
            lean(&l.down)?,
        ];
        for (m, q) in ms.iter().enumerate() {
            if (q.k, q.n) != d.kn(m) || q.gs != d.gs {
                return None;
            }
        }
        if ms[1].perm.is_some() {
            return None;
        }
    }
    Some(d)
}

/// The kernel, its schedule and tables, for one model on one GPU.
pub struct Persistent {
    kernel: Kernel,
    pub dims: Dims,
    /// Blocks launched (blocks per SM × SMs; all resident).
    pub blocks: usize,
    smem: usize,
    /// int4 `[blocks][4][MAXSEG]`
    sched: DevBuf,
    /// int: slots per tile, the four products' tiles one after another.
    tslots: DevBuf,
    /// `PdLayer [layers]`: per layer 4 x (qw, scales, zeros, perm), norm_in, norm_post.
    layer_table: DevBuf,
    /// Floats of output slots for q|k|v, o and down one after another (`part_a`; o's start at
    /// `part_o`, down's at `part_down`) and for gate|up (`part_b`).
    pub part_a: usize,
    pub part_b: usize,
    part_o: usize,
    part_down: usize,
    /// Set when a launch or capture failed: decode goes back to one kernel per step.
    failed: AtomicBool,
    /// u64 `[1 + 5 layers + 5 blocks]`: phase end times (`WV_CUDA_PD_TRACE=1`; diagnostics).
    trace: Option<DevBuf>,
    /// Segments per (block, product), for the trace.
    seg_counts: Vec<usize>,
}

/// The buffers one launch works in (see `Scratch` and `CudaState`).
pub struct PdBuffers {
    /// f32 `[hidden]`: the residual stream (embedded token in, last layer's output out).
    pub x: CUdeviceptr,
    /// f32 `[SS_TILES]`: per-tile sums of squares of x as a layer's input.
    pub ss: CUdeviceptr,
    pub part_a: CUdeviceptr,
    pub part_b: CUdeviceptr,
    /// f32 [qkv_n + 2 ffn]: q|k|v's output, then gate|up's (their tiles' slots summed).
    pub fin: CUdeviceptr,
    /// f32 [>= nch, heads, 128] and [>= nch, heads, 2]
    pub att_o: CUdeviceptr,
    pub att_ml: CUdeviceptr,
    /// i32 [>= the four products' tiles, at most 1024], zeros (left zeroed).
    pub counters: CUdeviceptr,
    /// f32 `[SS_TILES]` (the sums of squares after o's residual add), then i32
    /// [`Persistent::flag_words`] (the readiness flags, zeroed here before each launch).
    pub sync: CUdeviceptr,
    /// [token, position] of the step.
    pub dpos: CUdeviceptr,
    pub kc: CUdeviceptr,
    pub vc: CUdeviceptr,
    /// Bytes from one layer's cache to the next.
    pub layer_stride: usize,
    pub rope: CUdeviceptr,
    /// Keys per chunk and chunks (fixed by the cache's capacity).
    pub chunk: usize,
    pub nch: usize,
}

impl Persistent {
    /// Plan the kernel for this model, or `None` when it cannot run it (or the driver lacks
    /// cooperative launches and occupancy queries).
    pub fn new(
        gpu: &Arc<Gpu>,
        kernel: Kernel,
        c: &ModelConfig,
        w: &DevWeights,
    ) -> Result<Option<Persistent>> {
        let Some(dims) = eligible(c, w) else {
            return Ok(None);
        };
        if gpu.drv.cuLaunchKernelEx.is_none() {
            return Ok(None);
        }
        // WV_CUDA_PD_PER_SM caps the blocks per SM (experiments).
        let most = std::env::var("WV_CUDA_PD_PER_SM")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(MAX_PER_SM, |v| v.clamp(1, MAX_PER_SM));
        for per_sm in (1..=most).rev() {
            let blocks = per_sm * gpu.sms;
            let Some(scheds) = (0..4)
                .map(|m| {
                    let (k, n) = dims.kn(m);
                    schedule(k, n, blocks)
                })
                .collect::<Option<Vec<_>>>()
            else {
                return Ok(None);
            };
            // The ring (8 warps x depth x 4 KiB), the products' shared memory, the attention
            // scratch (kernels/decode.cu: pd_smem).
            let smem = 8 * ring_depth() * 4096 + SHARED_BYTES + ATT_BYTES;
            if smem > gpu.max_smem_optin {
                continue;
            }
            gpu.allow_smem(&kernel, smem)?;
            let occ = gpu.occupancy(&kernel, 256, smem).unwrap_or(0);
            crate::log::log(
                crate::log::Level::Debug,
                &format!("persistent decode: {per_sm} blocks per SM wanted, {occ} fit with {smem} bytes of shared memory"),
            );
            if occ < per_sm {
                continue;
            }
            return Ok(Some(Self::upload(
                gpu, kernel, dims, w, blocks, smem, &scheds,
            )?));
        }
        Ok(None)
    }

    fn upload(
        gpu: &Arc<Gpu>,
        kernel: Kernel,
        dims: Dims,
        w: &DevWeights,
        blocks: usize,
        smem: usize,
        scheds: &[Schedule],
    ) -> Result<Persistent> {
        let what = "the persistent decode kernel's tables";
        let mut sched = Vec::with_capacity(blocks * 4 * MAXSEG * 4);
        for b in 0..blocks {
            for s in scheds {
                for seg in &s.segs[b * MAXSEG..(b + 1) * MAXSEG] {
                    sched.extend_from_slice(seg);
                }
            }
        }
        let tslots: Vec<i32> = scheds
            .iter()
            .flat_map(|s| s.tslots.iter().copied())
            .collect();
        let mut table: Vec<u64> = Vec::with_capacity(w.layers.len() * 18);
        for l in &w.layers {
            for g in [&l.qkv, &l.o, &l.gate_up, &l.down] {
                let q = lean(g)
                    .ok_or_else(|| Error::internal("persistent plan of a non-4-bit layer"))?;
                let r = q.rows()?;
                table.extend_from_slice(&[
                    r.qw.ptr,
                    r.scales.ptr,
                    r.zeros.ptr,
                    q.perm.as_ref().map_or(0, |p| p.ptr),
                ]);
            }
            table.extend_from_slice(&[l.input_norm.ptr, l.post_norm.ptr]);
        }
        let slots = |m: usize| {
            let (_, n) = dims.kn(m);
            scheds[m].tslots.iter().copied().max().unwrap_or(0) as usize * n
        };
        Ok(Persistent {
            kernel,
            dims,
            blocks,
            smem,
            sched: gpu.upload(&sched, what)?,
            tslots: gpu.upload(&tslots, what)?,
            layer_table: gpu.upload(&table, what)?,
            part_a: slots(0) + slots(1) + slots(3),
            part_b: slots(2),
            part_o: slots(0),
            part_down: slots(0) + slots(1),
            failed: AtomicBool::new(false),
            seg_counts: (0..blocks)
                .flat_map(|b| {
                    scheds.iter().map(move |s| {
                        s.segs[b * MAXSEG..(b + 1) * MAXSEG]
                            .iter()
                            .take_while(|g| g[2] > 0)
                            .count()
                    })
                })
                .collect(),
            trace: if std::env::var("WV_CUDA_PD_TRACE").is_ok_and(|v| v == "1") {
                Some(gpu.alloc((1 + 5 * dims.layers + 5 * blocks) * 8, what)?)
            } else {
                None
            },
        })
    }

    /// Segments block b has in product m (diagnostics).
    fn segs_of(&self, b: usize, m: usize) -> usize {
        self.seg_counts.get(b * 4 + m).copied().unwrap_or(0)
    }

    /// Whether decode should use it (no earlier launch of it failed).
    pub fn usable(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// After a failed launch or capture: decode goes back to one kernel per step.
    pub fn disable(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Words of readiness flags a launch needs (kernels/decode.cu, PdFlags' layout): x tiles
    /// and their count per layer input (L + 1), and per layer q|k|v tiles, heads, x tiles after
    /// o and their count, gate|up tiles and their count.
    pub fn flag_words(&self) -> usize {
        let d = &self.dims;
        let t = d.hidden.div_ceil(128);
        (d.layers + 1) * (t + 1)
            + d.layers * (d.qkv_n.div_ceil(128) + d.heads + t + 1 + (2 * d.ffn).div_ceil(128) + 1)
    }

    /// Enqueue every layer of one decode step (the flags' reset, then the kernel).
    pub fn launch(&self, gpu: &Gpu, eps: f32, b: &PdBuffers) -> Result<()> {
        let d = &self.dims;
        if b.nch > MAX_CHUNKS || b.chunk == 0 {
            return Err(Error::internal("persistent decode: too many key chunks"));
        }
        let flags = b.sync + 4 * SS_TILES as u64;
        gpu.memset_u32(flags, 0, self.flag_words())?;
        let mut a = Args::new();
        a.ptr(self.layer_table.ptr)
            .ptr(self.sched.ptr)
            .ptr(self.tslots.ptr)
            .int(d.layers)
            .int(d.hidden)
            .int(d.qkv_n)
            .int(d.ffn)
            .int(d.heads)
            .int(d.kv_heads)
            .int(d.gs)
            .f32(eps)
            .ptr(b.x)
            .ptr(b.ss)
            .ptr(b.sync)
            .ptr(b.part_a)
            .ptr(b.part_a + 4 * self.part_o as u64)
            .ptr(b.part_b)
            .ptr(b.part_a + 4 * self.part_down as u64)
            .ptr(b.fin)
            .ptr(b.fin + 4 * d.qkv_n as u64)
            .ptr(b.att_o)
            .ptr(b.att_ml)
            .int(b.chunk)
            .int(b.nch)
            .ptr(b.kc)
            .ptr(b.vc)
            .i64((b.layer_stride / 2) as i64)
            .ptr(b.rope)
            .ptr(b.dpos)
            .ptr(b.counters)
            .ptr(flags)
            .ptr(self.trace.as_ref().map_or(0, |t| t.ptr));
        // SAFETY: the tables were made for this model and block count; the buffers have the
        // sizes PdBuffers documents (part_a / part_b at least self.part_a / part_b floats, sync
        // SS_TILES floats then flag_words() ints, just zeroed), the caches hold the layers'
        // [capacity, kv_dim] f16 rows with chunk * nch >= capacity, and dpos[0] < capacity <=
        // the RoPE table's rows (checked by the backend). Cooperative: all blocks are resident,
        // so waiting on flags raised by work earlier in every block's order cannot deadlock.
        gpu.launch_cooperative(
            &self.kernel,
            self.blocks as u32,
            256,
            self.smem as u32,
            &mut a,
        )
    }
}

impl Persistent {
    /// With `WV_CUDA_PD_TRACE=1`: warp 0 of block 0's time per phase of the last step (µs,
    /// summed over the layers), and for the middle layer when warp 0 of each block ended each
    /// phase after the layer began (quantiles over the blocks, by the block's segment count).
    /// Printed to stderr; synchronises the stream.
    pub fn print_trace(&self, gpu: &Gpu) -> Result<()> {
        let Some(t) = &self.trace else {
            return Ok(());
        };
        gpu.sync()?;
        let nl = self.dims.layers;
        // kernels/decode.cu, pd_mark: start, 5 phase ends per layer, then the middle layer's
        // phase ends per block. Differences are signed: warps run phases at their own pace.
        let mut v = vec![0u64; 1 + 5 * nl + 5 * self.blocks];
        t.read(&mut v)?;
        let us = |a: u64, b: u64| (a as i64 - b as i64) as f64 / 1000.0;
        let names = ["qkv", "attn", "o", "gate_up", "down"];
        let mut sums = [0f64; 5];
        let mut prev = v[0];
        for l in 0..nl {
            for (p, s) in sums.iter_mut().enumerate() {
                let now = v[1 + 5 * l + p];
                *s += us(now, prev);
                prev = now;
            }
        }
        let l = nl / 2;
        let start = if l == 0 { v[0] } else { v[5 * l] };
        for (ph, name) in names.iter().enumerate() {
            let base = 1 + 5 * nl + ph * self.blocks;
            let mut d: Vec<(f64, usize)> = (0..self.blocks)
                .map(|b| {
                    // The phase's product (attention has none).
                    let m = [Some(0), None, Some(1), Some(2), Some(3)][ph];
                    let segs = m.map_or(0, |m| self.segs_of(b, m));
                    (us(v[base + b], start), segs)
                })
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            let q = |f: f64| d[((d.len() - 1) as f64 * f) as usize].0;
            let mean_by = |k: usize| {
                let x: Vec<f64> = d.iter().filter(|e| e.1 == k).map(|e| e.0).collect();
                if x.is_empty() {
                    f64::NAN
                } else {
                    x.iter().sum::<f64>() / x.len() as f64
                }
            };
            eprintln!(
                "  layer {l} {name}: block ends min {:.1} p10 {:.1} p50 {:.1} p90 {:.1} max {:.1} µs after the layer began; mean with 1/2 segments {:.1}/{:.1}",
                q(0.0), q(0.1), q(0.5), q(0.9), q(1.0), mean_by(1), mean_by(2)
            );
        }
        let parts: Vec<String> = names
            .iter()
            .zip(sums)
            .map(|(n, s)| format!("{n} {s:.0}"))
            .collect();
        eprintln!(
            "persistent step {:.0} µs (block 0): {}",
            us(v[5 * nl], v[0]),
            parts.join(", ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit of every tile is computed exactly once, each block's work is within one
    /// batch of the others', and a tile's slots are 0..tslots in order.
    #[test]
    fn schedule_covers_every_unit_once() {
        for &(k, n, blocks) in &[
            (5120, 15360, 396),
            (5120, 5120, 396),
            (5120, 27648, 396),
            (13824, 5120, 396),
            (5120, 5120, 264),
            (256, 768, 396),
            (128, 100, 7),
            (640, 1000, 13),
        ] {
            let s = schedule(k, n, blocks).expect("schedulable");
            let (nbt, tiles) = (k / 64, n.div_ceil(128));
            let mut seen = vec![0u32; tiles * nbt];
            let mut slots: Vec<Vec<i32>> = vec![Vec::new(); tiles];
            let mut work = Vec::new();
            for b in 0..blocks {
                let mut total = 0;
                for seg in &s.segs[b * MAXSEG..(b + 1) * MAXSEG] {
                    let [t, j0, len, slot] = *seg;
                    if len == 0 {
                        break;
                    }
                    for j in j0..j0 + len {
                        seen[t as usize * nbt + j as usize] += 1;
                    }
                    slots[t as usize].push(slot);
                    total += len;
                }
                work.push(total);
            }
            assert!(seen.iter().all(|&c| c == 1), "{k}x{n} over {blocks}");
            for (t, sl) in slots.iter().enumerate() {
                assert_eq!(*sl, (0..s.tslots[t]).collect::<Vec<_>>());
            }
            let busy: Vec<i32> = work.iter().copied().filter(|&w| w > 0).collect();
            let (lo, hi) = (busy.iter().min().unwrap(), busy.iter().max().unwrap());
            assert!(hi - lo <= 1, "{k}x{n} over {blocks}: {lo}..{hi}");
            assert!(busy.len() == blocks.min(tiles * nbt));
        }
    }

    fn config(hidden: usize, heads: usize, kv_heads: usize, ffn: usize) -> ModelConfig {
        ModelConfig {
            hidden_size: hidden,
            intermediate_size: ffn,
            num_hidden_layers: 2,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            vocab_size: 32000,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            bos_token_id: 1,
            eos_token_id: 2,
            quant: None,
        }
    }

    /// The shape limits `eligible` applies before looking at the weights: LLaMA-13B and
    /// LLaMA-70B-like GQA fit; a head size other than 128, heads not a multiple of the KV heads,
    /// more than SS_TILES hidden tiles or more than 1024 output tiles together do not.
    #[test]
    fn shapes_fit_the_kernel_limits() {
        assert!(shapes_fit(&config(5120, 40, 40, 13824))); // 13B: 120 + 80 + 216 tiles
        assert!(shapes_fit(&config(8192, 64, 8, 28672))); // 80 + 128 + 448
        assert!(!shapes_fit(&config(4096, 64, 64, 11008))); // head size 64
        assert!(!shapes_fit(&config(5120, 40, 16, 13824))); // 40 heads over 16 KV heads
        assert!(!shapes_fit(&config(5120, 40, 0, 13824)));
        assert!(!shapes_fit(&config(0, 0, 0, 0)));
        // 257 hidden tiles (SS_TILES is 256): 257 heads of 128.
        assert!(!shapes_fit(&config(257 * 128, 257, 257, 128)));
        // Output tiles: 120 + 80 + 2F/128, at most 1024: F = 52,736 is 824 tiles (1,024
        // in all); one more tile of 128 columns of gate|up (64 of F) is over.
        assert!(shapes_fit(&config(5120, 40, 40, 52736)));
        assert!(!shapes_fit(&config(5120, 40, 40, 52736 + 64)));
    }

    #[test]
    fn schedule_refuses_what_the_kernel_cannot_take() {
        assert!(schedule(100, 128, 4).is_none()); // K not a multiple of 64
        assert!(schedule(0, 128, 4).is_none());
        // One block over 20 tiles would need 20 segments.
        assert!(schedule(64, 20 * 128, 1).is_none());
        assert!(schedule(64, 8 * 128, 1).is_some());
    }
}
