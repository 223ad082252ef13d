//! Matrix products on the CPU, with GPTQ weights dequantised inside the product.
//!
//! `linear(x, W)` computes `y[t, n] = Σ_k x[t, k] · W[k, n] (+ bias[n])` for a batch of `t`
//! tokens. The output columns are split over the cores; each thread walks its columns in blocks
//! of `NB`, dequantises a tile of `W` (one packed word row at a time, scales and zeros of the
//! block precomputed per group) into f32 registers/L1 and multiplies it into all `t` rows at once,
//! so prefill reads each weight once per batch, not once per token.

use super::pool::{parallel_for, SharedMut};
use crate::weights::{read_bits, DenseRef, GptqMatrix, Linear};

/// Output columns per block.
const NB: usize = 64;

/// `y = x · W (+ bias)`: x is [t, in], y is [t, out] (resized by the callee).
pub fn linear(x: &[f32], t: usize, w: &Linear, y: &mut Vec<f32>) {
    let (inf, outf) = (w.in_features(), w.out_features());
    debug_assert_eq!(x.len(), t * inf);
    y.clear();
    y.resize(t * outf, 0.0);
    match w {
        Linear::Gptq(g) => gptq_matmul(x, t, g, y),
        Linear::Dense { w, .. } => dense_matmul(x, t, w.data.as_ref(), inf, outf, y),
    }
    if let Some(b) = w.bias() {
        for row in y.chunks_exact_mut(outf) {
            for (o, b) in row.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
}

/// `y[t, n] = Σ_k x[t, k] · w[n, k]` for a row-major `[out, in]` f16/f32 matrix `w`
/// (the Hugging Face layout of dense linears and of the lm_head).
pub fn dense_matmul(x: &[f32], t: usize, w: DenseRef<'_>, inf: usize, outf: usize, y: &mut [f32]) {
    let out = SharedMut(y.as_mut_ptr());
    parallel_for(outf, t * inf * outf, |cols| {
        let mut row = vec![0f32; inf];
        for n in cols {
            match w {
                DenseRef::F16(v) => {
                    for (r, s) in row.iter_mut().zip(&v[n * inf..(n + 1) * inf]) {
                        *r = s.to_f32();
                    }
                }
                DenseRef::F32(v) => row.copy_from_slice(&v[n * inf..(n + 1) * inf]),
            }
            for ti in 0..t {
                let xr = &x[ti * inf..(ti + 1) * inf];
                let d = dot(xr, &row);
                // SAFETY: each thread owns the columns `cols`; (ti, n) is written once.
                unsafe { out.write(ti * outf + n, d) };
            }
        }
    });
}

/// A dot product with several independent accumulators (so the compiler vectorises it).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (pa, pb) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for i in 0..8 {
            acc[i] += pa[i] * pb[i];
        }
    }
    let mut s = 0f32;
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s + acc.iter().sum::<f32>()
}

fn gptq_matmul(x: &[f32], t: usize, g: &GptqMatrix, y: &mut [f32]) {
    let (inf, outf) = (g.in_features, g.out_features);
    let n_blocks = outf.div_ceil(NB);
    let out = SharedMut(y.as_mut_ptr());
    parallel_for(n_blocks, t * inf * outf, |blocks| {
        let mut acc = vec![0f32; t * NB];
        let mut scale = vec![0f32; g.n_groups * NB];
        let mut zero = vec![0f32; g.n_groups * NB];
        // One dequantised row of the tile: [NB]
        let mut wrow = [0f32; NB];
        for b in blocks {
            let n0 = b * NB;
            let nb = NB.min(outf - n0);
            for gi in 0..g.n_groups {
                for j in 0..nb {
                    scale[gi * NB + j] = g.scales[gi * outf + n0 + j];
                    zero[gi * NB + j] = g.zero(gi, n0 + j);
                }
            }
            acc[..t * NB].iter_mut().for_each(|a| *a = 0.0);
            let bits = g.bits as usize;
            let fast = 32 % bits == 0;
            let vpw = 32 / bits;
            let mask = (1u32 << bits) - 1;
            for k in 0..inf {
                let gk = g.g_idx[k] as usize;
                let (sc, ze) = (&scale[gk * NB..gk * NB + nb], &zero[gk * NB..gk * NB + nb]);
                if fast {
                    let r = k / vpw;
                    let shift = (k % vpw) * bits;
                    let words = &g.qweight[r * outf + n0..r * outf + n0 + nb];
                    for j in 0..nb {
                        let q = (words[j] >> shift) & mask;
                        wrow[j] = (q as f32 - ze[j]) * sc[j];
                    }
                } else {
                    for j in 0..nb {
                        let q = read_bits(&g.qweight, outf, k, n0 + j, g.bits);
                        wrow[j] = (q as f32 - ze[j]) * sc[j];
                    }
                }
                for ti in 0..t {
                    let xv = x[ti * inf + k];
                    if xv == 0.0 {
                        continue;
                    }
                    let a = &mut acc[ti * NB..ti * NB + nb];
                    for j in 0..nb {
                        a[j] += xv * wrow[j];
                    }
                }
            }
            for ti in 0..t {
                for j in 0..nb {
                    // SAFETY: block b's columns n0..n0+nb belong to this thread alone.
                    unsafe { out.write(ti * outf + n0 + j, acc[ti * NB + j]) };
                }
            }
        }
    });
}
