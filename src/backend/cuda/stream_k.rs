//! The decode GEMV's even split ("stream-K", `gemv_q4l_sk` in kernels/gemv.cu).
//!
//! `gemv_q4l` gives each block one 128-column tile and a run of whole groups of K. On 13B's
//! shapes that leaves SMs unevenly loaded: gate|up is 216 tiles of one block each, and its
//! 10 KiB x slice lets only two blocks share an SM, so 84 SMs stream two blocks' weights and 48
//! one. `gemv_q4l_sk` instead cuts the product's units (tile × batch of 64 inputs, tile by tile)
//! into as many equal contiguous ranges as blocks fit on the GPU at once. A range covers at most
//! two tiles; a tile's contributors write slabs 0, 1, … in block order and the block holding a
//! tile's last unit zeroes the rest, so every slab's content is fixed by the grid
//! (deterministic) and consumers sum `slabs` of them as they do `gemv_q4l`'s.

/// A product's stream-K launch: `grid` blocks, `slabs` partial slabs at most per tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamK {
    pub grid: usize,
    pub slabs: usize,
    /// Most units (batches of 64 inputs) in one block's range: its x rows are 64 per unit.
    pub max_units: usize,
}

impl StreamK {
    /// The split of a `k` × `n` 4-bit product (k % 64 == 0) over `grid` blocks, or `None` when
    /// a block's range could span more than two tiles (more tiles than blocks) or k is not a
    /// whole number of batches.
    pub fn plan(k: usize, n: usize, grid: usize) -> Option<StreamK> {
        if k == 0 || k % 64 != 0 || n == 0 || grid == 0 {
            return None;
        }
        let (tiles, nbt) = (n.div_ceil(128), k / 64);
        if tiles > grid {
            return None;
        }
        let units = tiles * nbt;
        // At least one unit a block, so that a tile's contributors are consecutive blocks.
        let grid = grid.min(units);
        let mut slabs = 1;
        let mut max_units = 0;
        for t in 0..tiles {
            // Contributors of tile t: the blocks from the one holding its first unit to the one
            // holding its last.
            let first = block_of(t * nbt, units, grid);
            let last = block_of((t + 1) * nbt - 1, units, grid);
            slabs = slabs.max(last - first + 1);
        }
        for i in 0..grid {
            let (u0, u1) = range(i, units, grid);
            max_units = max_units.max(u1 - u0);
        }
        Some(StreamK {
            grid,
            slabs,
            max_units,
        })
    }

    /// Dynamic shared memory of a block: the weight ring, then its x rows (f16).
    pub fn smem(&self, ring_bytes: usize) -> usize {
        ring_bytes + self.max_units * 64 * 2
    }
}

/// Block i's units: [i·U/G, (i+1)·U/G) (the kernel's integer arithmetic).
pub fn range(i: usize, units: usize, grid: usize) -> (usize, usize) {
    (i * units / grid, (i + 1) * units / grid)
}

/// The block whose range holds unit u: the largest i with i·U/G <= u (the kernel's formula).
pub fn block_of(u: usize, units: usize, grid: usize) -> usize {
    ((u + 1) * grid - 1) / units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_unit_once_within_two_tiles() {
        // 13B's four products on 132 SMs x 3 blocks, a small model, and uneven widths.
        for (k, n, grid) in [
            (5120, 15360, 396),
            (5120, 5120, 396),
            (5120, 27648, 396),
            (13824, 5120, 396),
            (128, 200, 16),
            (512, 384, 396),
            (640, 392, 7),
            (64, 128, 5),
        ] {
            let p = StreamK::plan(k, n, grid).unwrap();
            let grid = p.grid;
            let (tiles, nbt) = (n.div_ceil(128), k / 64);
            let units = tiles * nbt;
            let mut seen = vec![0u8; units];
            let mut per_tile = vec![Vec::new(); tiles];
            for i in 0..grid {
                let (u0, u1) = range(i, units, grid);
                assert!(u1 - u0 <= p.max_units);
                for (u, s) in seen.iter_mut().enumerate().take(u1).skip(u0) {
                    *s += 1;
                    assert_eq!(block_of(u, units, grid), i, "unit {u} of {k}x{n}");
                }
                if u1 > u0 {
                    let (t0, t1) = (u0 / nbt, (u1 - 1) / nbt);
                    assert!(t1 <= t0 + 1, "block {i} spans tiles {t0}..={t1}");
                    for (t, v) in per_tile.iter_mut().enumerate().take(t1 + 1).skip(t0) {
                        // The slab the kernel writes: its index among the tile's blocks.
                        v.push(i - block_of(t * nbt, units, grid));
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1));
            for v in per_tile {
                // Slabs 0, 1, ... in block order, all below the plan's count.
                assert_eq!(v, (0..v.len()).collect::<Vec<_>>());
                assert!(v.len() <= p.slabs);
            }
        }
        // 13B gate|up on an H100: 44 units a block at most, 3 slabs.
        let gu = StreamK::plan(5120, 27648, 396).unwrap();
        assert_eq!((gu.max_units, gu.slabs), (44, 3));
        // More tiles than blocks, or K not whole batches: no plan.
        assert_eq!(StreamK::plan(5120, 65536, 396), None);
        assert_eq!(StreamK::plan(5100, 5120, 396), None);
    }
}
