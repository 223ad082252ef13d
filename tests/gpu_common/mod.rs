//! Helpers shared by the CUDA backend's test binaries (tests/gpu.rs and tests/gpu_model.rs):
//! the relative error of two outputs, random inputs, and the small model configuration the
//! in-memory test models start from.
#![allow(dead_code)]

use wv::config::ModelConfig;
use wv::sampler::Rng;
use wv::weights::{DenseData, DenseMatrix, Linear};

/// The relative L2 error of `a` against the reference `b` (every value of `a` must be finite).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut num = 0f64;
    let mut den = 0f64;
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite(), "non-finite output {x}");
        num += ((x - y) as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// `n` uniform values in [-scale, scale).
pub fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) as f32) * scale)
        .collect()
}

/// A one-layer model configuration; the in-memory test models start from it.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        vocab_size: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        bos_token_id: 1,
        eos_token_id: 2,
        quant: None,
    }
}

/// A dense f32 `[o, i]` linear layer with random weights in ±0.2, no bias.
pub fn dense(rng: &mut Rng, o: usize, i: usize) -> Linear {
    Linear::Dense {
        w: DenseMatrix {
            out_features: o,
            in_features: i,
            data: DenseData::F32(rand_vec(rng, o * i, 0.2)),
        },
        bias: None,
    }
}
