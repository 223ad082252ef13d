//! The transformer's element-wise and attention ops, in f32, on the CPU.
//!
//! These are the reference semantics for every backend (Hugging Face `LlamaForCausalLM`):
//! RMSNorm `x · rsqrt(mean(x²) + eps) · w`; RoPE in the rotate-half layout with angles computed
//! as transformers computes them (f32 inverse frequencies times f32 positions); causal softmax
//! attention with grouped KV heads; SiLU(gate) · up.

use super::pool::{parallel_for, SharedMut};

/// RMSNorm of each row of `x` ([t, dim]) into `out`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    let dim = w.len();
    out.clear();
    out.resize(x.len(), 0.0);
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / dim as f64;
        let r = (1.0 / (ss + eps as f64).sqrt()) as f32;
        for ((o, &v), &wi) in or.iter_mut().zip(xr).zip(w) {
            *o = v * r * wi;
        }
    }
}

/// The RoPE inverse frequencies for a head of `head_dim`: [head_dim / 2], computed in f32 as
/// transformers does (`1 / base ** (arange(0, d, 2) / d)`).
pub fn rope_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            1.0f32 / theta.powf(e)
        })
        .collect()
}

/// Rotate each head of `x` ([t, n_heads · head_dim]) in place, row `i` at position `pos + i`.
pub fn rope(x: &mut [f32], n_heads: usize, head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    let width = n_heads * head_dim;
    let mut cs = vec![(0f32, 0f32); half];
    for (i, row) in x.chunks_exact_mut(width).enumerate() {
        let p = (pos + i) as f32;
        for (c, &f) in cs.iter_mut().zip(inv_freq) {
            let a = (p * f) as f64;
            *c = (a.cos() as f32, a.sin() as f32);
        }
        for h in row.chunks_exact_mut(head_dim) {
            for j in 0..half {
                let (c, s) = cs[j];
                let (a, b) = (h[j], h[j + half]);
                h[j] = a * c - b * s;
                h[j + half] = b * c + a * s;
            }
        }
    }
}

/// Causal attention for `t` new queries at positions `pos..pos+t`.
///
/// - `q`: [t, n_heads · head_dim]
/// - `k_cache`, `v_cache`: [≥ pos + t, n_kv_heads · head_dim], positions `0..pos+t` filled
/// - `out`: [t, n_heads · head_dim]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    t: usize,
    pos: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    out: &mut Vec<f32>,
) {
    let width = n_heads * head_dim;
    let kv_width = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    out.clear();
    out.resize(t * width, 0.0);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let o = SharedMut(out.as_mut_ptr());
    let work = n_heads * t * (pos + t) * head_dim * 2;
    parallel_for(n_heads * t, work, |items| {
        let mut scores = vec![0f32; pos + t];
        let mut acc = vec![0f32; head_dim];
        for item in items {
            let (h, ti) = (item / t, item % t);
            let kvh = h / group;
            let qv = &q[ti * width + h * head_dim..ti * width + (h + 1) * head_dim];
            let n_keys = pos + ti + 1;
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores[..n_keys].iter_mut().enumerate() {
                let kv =
                    &k_cache[j * kv_width + kvh * head_dim..j * kv_width + (kvh + 1) * head_dim];
                *s = super::matmul::dot(qv, kv) * scale;
                max = max.max(*s);
            }
            let mut sum = 0f32;
            for s in scores[..n_keys].iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (j, &s) in scores[..n_keys].iter().enumerate() {
                let vv =
                    &v_cache[j * kv_width + kvh * head_dim..j * kv_width + (kvh + 1) * head_dim];
                let p = s / sum;
                for (a, &v) in acc.iter_mut().zip(vv) {
                    *a += p * v;
                }
            }
            for (d, &a) in acc.iter().enumerate() {
                // SAFETY: item (h, ti) owns out[ti, h·head_dim .. (h+1)·head_dim] alone.
                unsafe { o.write(ti * width + h * head_dim + d, a) };
            }
        }
    });
}

/// `gate[i] = silu(gate[i]) · up[i]`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let s = *g / (1.0 + (-*g).exp());
        *g = s * u;
    }
}

/// `x += y`
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
