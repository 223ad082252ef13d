//! The persistent decode kernel's work-queue variant (`kernels/decode_flow.cu`, opt-in with
//! `WV_CUDA_PERSIST=1 WV_CUDA_PD_FLOW=1`): every warp takes the step's units of work (a product
//! tile × a chunk of inputs, or an attention head × a chunk of keys) from one counter in
//! dependency order, instead of each block holding a static share of every product
//! (`decode.cu`), so that warps served faster take more and no product waits for its slowest
//! block (see the kernel's opening comment).
//!
//! This module plans it for a model the persistent kernel takes and that has no act-order
//! permutation: the tile orders (which tiles of a product come first: those its consumers need
//! first), the output slots, the blocks that fit; and launches it.

use super::device::{Args, DevBuf, Gpu, Kernel};
use super::persistent::{Dims, PdBuffers};
use super::weights::DevWeights;
use crate::error::Result;
use std::sync::Arc;

/// Batches of 64 inputs per product unit (`DF_CB`, passed to the kernel's compilation):
/// `WV_CUDA_PD_CB` (1 to 16) for experiments, else 8.
pub fn unit_batches() -> usize {
    std::env::var("WV_CUDA_PD_CB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(8, |v| v.clamp(1, 16))
}
/// The head size the kernel's attention is written for.
const HD: usize = 128;

/// Whether decode asks for the work-queue variant (`WV_CUDA_PD_FLOW=1`).
pub fn requested() -> bool {
    std::env::var("WV_CUDA_PD_FLOW").is_ok_and(|v| v == "1")
}

/// The tile order of each product (q|k|v: each head's q tile then, for the first head of a KV
/// group, its k and v tiles; gate|up: gate and up tiles interleaved by the columns down reads
/// first; o and down: in order), one after another.
pub fn tile_orders(d: &Dims) -> Vec<i32> {
    let t = d.hidden.div_ceil(128);
    let grp = d.heads / d.kv_heads;
    let mut v = Vec::new();
    for h in 0..d.heads {
        v.push(h as i32);
        if h % grp == 0 {
            v.push((d.heads + h / grp) as i32);
            v.push((d.heads + d.kv_heads + h / grp) as i32);
        }
    }
    v.extend(0..t as i32);
    let gt = (2 * d.ffn).div_ceil(128);
    let mut gu: Vec<(usize, usize)> = (0..gt)
        .map(|i| {
            // The first input of down that the tile's columns feed (a tile across the gate|up
            // boundary feeds input 0 through its up columns).
            let c = i * 128;
            let first = if c >= d.ffn {
                c - d.ffn
            } else if c + 128 > d.ffn {
                0
            } else {
                c
            };
            (first, i)
        })
        .collect();
    gu.sort();
    v.extend(gu.iter().map(|&(_, i)| i as i32));
    v.extend(0..t as i32);
    v
}

/// Chunks of [`unit_batches`] batches per tile of a K-input product.
fn chunks(k: usize) -> usize {
    (k / 64).div_ceil(unit_batches())
}

/// The work-queue kernel's plan for one model on one GPU.
pub struct FlowPlan {
    kernel: Kernel,
    /// Blocks of 128 threads launched (all resident).
    pub blocks: usize,
    smem: usize,
    /// int: the four products' tile orders ([`tile_orders`]).
    torder: DevBuf,
    /// Floats of slots: q|k|v, o, down one after another (the persistent kernel's `part_a`) and
    /// gate|up (`part_b`); where o's and down's start.
    pub part_a: usize,
    pub part_b: usize,
    part_o: usize,
    part_down: usize,
}

impl FlowPlan {
    /// `None` when the model has an act-order product, the counters would not fit, or not
    /// every block would be resident.
    pub fn new(
        gpu: &Arc<Gpu>,
        kernel: Kernel,
        d: &Dims,
        w: &DevWeights,
        ring_depth: usize,
    ) -> Result<Option<FlowPlan>> {
        let has_perm = w.layers.iter().any(|l| {
            [&l.qkv, &l.o, &l.gate_up, &l.down].iter().any(|g| {
                g.members
                    .iter()
                    .any(|m| m.q4().is_ok_and(|q| q.perm.is_some()))
            })
        });
        let t = d.hidden.div_ceil(128);
        let (qt, gt) = (d.qkv_n.div_ceil(128), (2 * d.ffn).div_ceil(128));
        // Scratch::counters: every product's tiles, then one per head.
        if has_perm || qt + 2 * t + gt + d.heads > 1024 || d.heads * HD != d.hidden {
            return Ok(None);
        }
        // Per warp: the ring and its scales and zeros, the unit's inputs (DF_WARP_SMEM).
        let smem = 4 * (ring_depth * (4096 + 512) + unit_batches() * 128);
        if smem > gpu.max_smem_optin {
            return Ok(None);
        }
        gpu.allow_smem(&kernel, smem)?;
        let per_sm = gpu.occupancy(&kernel, 128, smem).unwrap_or(0).min(3);
        if per_sm == 0 {
            return Ok(None);
        }
        let slots = |k: usize, n: usize| chunks(k) * n;
        let (sq, so, sd) = (
            slots(d.hidden, d.qkv_n),
            slots(d.heads * HD, d.hidden),
            slots(d.ffn, d.hidden),
        );
        crate::log::log(
            crate::log::Level::Debug,
            &format!("persistent decode (work queue): {per_sm} blocks of 128 per SM with {smem} bytes of shared memory"),
        );
        Ok(Some(FlowPlan {
            kernel,
            blocks: per_sm * gpu.sms,
            smem,
            torder: gpu.upload(&tile_orders(d), "the work-queue kernel's tile orders")?,
            part_a: sq + so + sd,
            part_b: slots(d.hidden, 2 * d.ffn),
            part_o: sq,
            part_down: sq + so,
        }))
    }

    /// Enqueue the kernel (the flags, queue counter included, were just zeroed).
    pub fn launch(
        &self,
        gpu: &Gpu,
        d: &Dims,
        layer_table: u64,
        eps: f32,
        b: &PdBuffers,
        flags: u64,
    ) -> Result<()> {
        let mut a = Args::new();
        a.ptr(layer_table)
            .ptr(self.torder.ptr)
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
            .ptr(b.att_out)
            .int(b.chunk)
            .int(b.nch)
            .ptr(b.kc)
            .ptr(b.vc)
            .i64((b.layer_stride / 2) as i64)
            .ptr(b.rope)
            .ptr(b.dpos)
            .ptr(b.counters)
            .ptr(flags);
        // SAFETY: as Persistent::launch (same buffers and layer table; part_a / part_b hold at
        // least this plan's slots, att_out nh·128 floats, the counters every product's tiles
        // and one per head, the flags flag_words() ints with the queue counter last, zeroed);
        // cooperative, so every warp is resident and a unit waits only for units taken before
        // it: no deadlock.
        gpu.launch_cooperative(
            &self.kernel,
            self.blocks as u32,
            128,
            self.smem as u32,
            &mut a,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile of every product appears once in its order; q|k|v puts each KV group's k and
    /// v tiles right after its first head's q tile; gate|up interleaves gate and up.
    #[test]
    fn tile_orders_cover_every_tile_once() {
        let d = Dims {
            layers: 1,
            hidden: 512,
            qkv_n: (4 + 2 * 2) * 128,
            ffn: 704,
            heads: 4,
            kv_heads: 2,
            gs: 128,
        };
        let v = tile_orders(&d);
        let (qt, t, gt) = (8usize, 4usize, 11usize);
        assert_eq!(v.len(), qt + t + gt + t);
        assert_eq!(&v[..qt], &[0, 4, 6, 1, 2, 5, 7, 3]);
        let mut gu: Vec<i32> = v[qt + t..qt + t + gt].to_vec();
        assert_eq!(&gu[..4], &[0, 5, 6, 1]); // gate col 0, up col 0 (tile 5 starts at 704-64), …
        gu.sort();
        assert_eq!(gu, (0..gt as i32).collect::<Vec<_>>());
        assert_eq!(&v[qt..qt + t], &[0, 1, 2, 3]);
    }
}
