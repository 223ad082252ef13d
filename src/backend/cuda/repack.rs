//! Host-side repacking of 4-bit GPTQ matrices into the layout the CUDA kernels read fastest
//! ([`Q4Host`]: act-order rows sorted by group with the permutation kept for the activation,
//! each packed word's nibbles reordered so that one `lop3` yields two consecutive rows as an
//! f16 pair, scales as f16, zero points as bytes), concatenation of layers that share an input,
//! and the dense f16 fallback for every other layer ([`dense_f16`]). Plain Rust, unit-tested on
//! the CPU against the checkpoint's dequantised values; weights.rs uploads the results.

use super::weights::MAX_X_SLICE;
use crate::backend::cpu::pool::{parallel_for, SharedMut};
use crate::weights::{DenseData, GptqMatrix, Linear};
use half::f16;

/// Nibble `p` of a repacked word holds row `8r + POS[p]` of its column.
pub const POS: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// A 4-bit matrix in the kernels' layout, on the host.
#[derive(Debug, Clone)]
pub struct Q4Host {
    pub k: usize,
    pub n: usize,
    pub groups: usize,
    /// Sorted rows per group (a multiple of 8).
    pub gs: usize,
    /// [k/8, n]
    pub qw: Vec<u32>,
    /// [groups, n]
    pub scales: Vec<f16>,
    /// [groups, n]: the real zero point.
    pub zeros: Vec<u8>,
    /// Sorted row i is the checkpoint's row `perm[i]`; `None` for the identity.
    pub perm: Option<Vec<i32>>,
}

/// Repack a GPTQ matrix for the 4-bit kernels, or `None` when it does not fit them (other bit
/// widths, an output width not a multiple of 4, groups of unequal size, huge single groups).
pub fn repack_q4(m: &GptqMatrix) -> Option<Q4Host> {
    let (k, n) = (m.in_features, m.out_features);
    if m.bits != 4 || n % 4 != 0 || k % 8 != 0 || k == 0 || n == 0 || m.n_groups == 0 {
        return None;
    }
    // Row order: stable sort by group (identity when g_idx is already monotone).
    let monotone = m.g_idx.windows(2).all(|w| w[0] <= w[1]);
    let perm: Option<Vec<i32>> = if monotone {
        None
    } else {
        let mut p: Vec<i32> = (0..k as i32).collect();
        p.sort_by_key(|&i| m.g_idx[i as usize]);
        Some(p)
    };
    // Every group must be one run of `gs` sorted rows (the last may be shorter).
    let mut counts = vec![0usize; m.n_groups];
    for &g in &m.g_idx {
        counts[g as usize] += 1;
    }
    let gs = counts[0];
    let groups = m.n_groups;
    if gs == 0 || gs % 8 != 0 || gs > MAX_X_SLICE {
        return None;
    }
    let last = groups - 1;
    if counts[..last].iter().any(|&c| c != gs) || counts[last] == 0 || counts[last] > gs {
        return None;
    }
    // With every group a run of `gs` rows, sorted row i is in group i / gs.
    let src_q = |kk: usize, col: usize| (m.qweight[(kk / 8) * n + col] >> (4 * (kk % 8))) & 15;
    let rows = k / 8;
    let mut qw = vec![0u32; rows * n];
    let out = SharedMut(qw.as_mut_ptr());
    parallel_for(rows, rows * n * 8, |range| {
        for r in range {
            for col in 0..n {
                let w = match &perm {
                    None => {
                        let old = m.qweight[r * n + col];
                        let mut w = 0u32;
                        for (p, &src) in POS.iter().enumerate() {
                            w |= ((old >> (4 * src)) & 15) << (4 * p);
                        }
                        w
                    }
                    Some(pm) => {
                        let mut w = 0u32;
                        for (p, &src) in POS.iter().enumerate() {
                            w |= src_q(pm[8 * r + src] as usize, col) << (4 * p);
                        }
                        w
                    }
                };
                // SAFETY: row r belongs to this range alone.
                unsafe { out.write(r * n + col, w) };
            }
        }
    });
    let mut scales = Vec::with_capacity(groups * n);
    let mut zeros = Vec::with_capacity(groups * n);
    for g in 0..groups {
        for col in 0..n {
            scales.push(f16::from_f32(m.scales[g * n + col]));
            let z = m.zero(g, col);
            if !(0.0..=255.0).contains(&z) {
                return None;
            }
            zeros.push(z as u8);
        }
    }
    Some(Q4Host {
        k,
        n,
        groups,
        gs,
        qw,
        scales,
        zeros,
        perm,
    })
}

impl Q4Host {
    /// Concatenate matrices with the same rows (K, groups, order) along the output.
    pub fn concat(parts: &[Q4Host]) -> Option<Q4Host> {
        let first = parts.first()?;
        if parts.iter().any(|p| {
            p.k != first.k || p.gs != first.gs || p.groups != first.groups || p.perm != first.perm
        }) {
            return None;
        }
        let n: usize = parts.iter().map(|p| p.n).sum();
        let rows = first.k / 8;
        let mut qw = vec![0u32; rows * n];
        let out = SharedMut(qw.as_mut_ptr());
        parallel_for(rows, rows * n, |range| {
            for r in range {
                let mut c = r * n;
                for p in parts {
                    let src = &p.qw[r * p.n..(r + 1) * p.n];
                    // SAFETY: row r of the output (n words from r*n, inside qw) belongs to this
                    // range alone.
                    unsafe { out.copy_from(c, src) };
                    c += p.n;
                }
            }
        });
        let mut scales = Vec::with_capacity(first.groups * n);
        let mut zeros = Vec::with_capacity(first.groups * n);
        for g in 0..first.groups {
            for p in parts {
                scales.extend_from_slice(&p.scales[g * p.n..(g + 1) * p.n]);
                zeros.extend_from_slice(&p.zeros[g * p.n..(g + 1) * p.n]);
            }
        }
        Some(Q4Host {
            k: first.k,
            n,
            groups: first.groups,
            gs: first.gs,
            qw,
            scales,
            zeros,
            perm: first.perm.clone(),
        })
    }

    /// `y = x · W` exactly as `gemv_q4` computes it, in f32 (a host model of the kernel's
    /// indexing, for tests; x is in the checkpoint's row order).
    pub fn reference_gemv(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; self.n];
        for (col, yv) in y.iter_mut().enumerate() {
            let mut acc = 0f32;
            for g in 0..self.groups {
                let s = self.scales[g * self.n + col].to_f32();
                let z = self.zeros[g * self.n + col] as f32;
                let mut ga = 0f32;
                for i in g * self.gs..((g + 1) * self.gs).min(self.k) {
                    let r = i / 8;
                    let p = POS
                        .iter()
                        .position(|&v| v == i % 8)
                        .expect("POS is a permutation");
                    let q = ((self.qw[r * self.n + col] >> (4 * p)) & 15) as f32;
                    let row = self.perm.as_ref().map_or(i, |pm| pm[i] as usize);
                    ga += (q - z) * x[row];
                }
                acc += ga * s;
            }
            *yv = acc;
        }
        y
    }
}

/// A dense matrix as f16 `[out, in]` (GPTQ dequantised on the host when needed).
pub fn dense_f16(l: &Linear) -> Vec<f16> {
    match l {
        Linear::Dense { w, .. } => match &w.data {
            DenseData::F16(v) => v.clone(),
            DenseData::F32(v) => v.iter().map(|&x| f16::from_f32(x)).collect(),
        },
        Linear::Gptq(m) => {
            let (k, n) = (m.in_features, m.out_features);
            let mut out = vec![f16::ZERO; n * k];
            let o = SharedMut(out.as_mut_ptr());
            parallel_for(n, n * k * 4, |cols| {
                let mut zero = vec![0f32; m.n_groups];
                for col in cols {
                    for (g, z) in zero.iter_mut().enumerate() {
                        *z = m.zero(g, col);
                    }
                    for kk in 0..k {
                        let g = m.g_idx[kk] as usize;
                        let w = m.scales[g * n + col] * (m.q(kk, col) as f32 - zero[g]);
                        // SAFETY: row `col` of the output belongs to this range alone.
                        unsafe { o.write(col * k + kk, f16::from_f32(w)) };
                    }
                }
            });
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::matmul;
    use crate::backend::cuda::testing::random_gptq;

    fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    }

    /// The repacked layout, read the way gemv_q4 reads it, gives the CPU backend's product.
    #[test]
    fn repack_matches_cpu_product() {
        let cases = [
            (256, 96, Some(128), false, 1),
            (256, 64, Some(32), true, 1),
            (512, 128, Some(64), true, 0),
            (96, 32, None, false, 1),
            (32, 32, Some(128), false, 1),
        ];
        for (i, &(k, n, g, act, off)) in cases.iter().enumerate() {
            let m = random_gptq(4, k, n, g, act, off, false, 7 + i as u64);
            let q = repack_q4(&m).expect("4-bit matrices take the fast path");
            assert_eq!(q.perm.is_some(), act, "case {i}");
            let x: Vec<f32> = (0..k)
                .map(|j| ((j * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let mut want = Vec::new();
            matmul::linear(&x, 1, &Linear::Gptq(m.clone()), &mut want);
            let got = q.reference_gemv(&x);
            let e = rel_l2(&got, &want);
            assert!(e < 1e-3, "case {i}: rel L2 {e}");
        }
    }

    /// What gemm_q4_wgmma (and the GEMVs) rely on: in every packed word, `(w >> 4c) & 0x000f000f`
    /// holds rows 2c (low half) and 2c + 1 (high half) of the word's 8 rows, so one `lop3` makes
    /// a wgmma / mma A fragment's pair; scale * (q - zero) is the checkpoint's value.
    #[test]
    fn packed_word_pairs_are_consecutive_rows() {
        let (k, n) = (256, 48);
        let m = random_gptq(4, k, n, Some(64), false, 1, false, 11);
        let q = repack_q4(&m).expect("4-bit");
        assert!(q.perm.is_none());
        for r in 0..k / 8 {
            for col in 0..n {
                let w = q.qw[r * n + col];
                let g = r * 8 / q.gs;
                let s = q.scales[g * n + col].to_f32();
                let z = q.zeros[g * n + col] as f32;
                for c in 0..4 {
                    let v = (w >> (4 * c)) & 0x000f_000f;
                    for (half, q4) in [(0, v & 0xf), (1, v >> 16)] {
                        let row = 8 * r + 2 * c + half;
                        let got = s * (q4 as f32 - z);
                        let want = m.dequant(row, col);
                        assert!(
                            (got - want).abs() <= want.abs() * 1e-3 + 1e-6,
                            "row {row} col {col}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn concat_keeps_columns() {
        let a = random_gptq(4, 256, 64, Some(128), false, 1, false, 1);
        let b = random_gptq(4, 256, 32, Some(128), false, 1, false, 2);
        let (qa, qb) = (repack_q4(&a).unwrap(), repack_q4(&b).unwrap());
        let cat = Q4Host::concat(&[qa.clone(), qb.clone()]).unwrap();
        let x: Vec<f32> = (0..256).map(|j| (j as f32 * 0.37).sin()).collect();
        let mut want = qa.reference_gemv(&x);
        want.extend(qb.reference_gemv(&x));
        assert_eq!(cat.reference_gemv(&x), want);
    }

    #[test]
    fn other_widths_take_the_dense_path() {
        for bits in [2, 3, 8] {
            let m = random_gptq(bits, 128, 64, Some(32), false, 1, false, bits as u64);
            assert!(repack_q4(&m).is_none());
            let d = dense_f16(&Linear::Gptq(m.clone()));
            for (kk, nn) in [(0, 0), (127, 63), (64, 5)] {
                let want = m.dequant(kk, nn);
                let got = d[nn * 128 + kk].to_f32();
                assert!(
                    (got - want).abs() <= want.abs() * 1e-3 + 1e-6,
                    "{bits}-bit ({kk},{nn}): {got} vs {want}"
                );
            }
        }
    }
}
