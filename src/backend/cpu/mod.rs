//! The CPU backend: the reference implementation, what CI tests, and the fallback everywhere.
//!
//! f32 arithmetic throughout; GPTQ weights stay packed and are dequantised inside the matrix
//! products ([`matmul`]); work is spread over all cores ([`pool`]). Each session's [`CpuState`]
//! holds its KV cache, grown as positions are filled, up to the session's context length.

pub mod matmul;
pub mod ops;
pub mod pool;

use super::{Backend, BackendState, DeviceKind};
use crate::error::{Error, Result};
use crate::weights::{DenseRef, HostWeights};
use std::any::Any;
use std::sync::Arc;

/// The CPU backend over host weights.
pub struct CpuBackend {
    weights: Arc<HostWeights>,
    /// [head_dim / 2]
    inv_freq: Vec<f32>,
}

/// One session's KV cache on the CPU.
pub struct CpuState {
    capacity: usize,
    /// Per layer: [filled positions, kv_dim]
    k: Vec<Vec<f32>>,
    /// Per layer: [filled positions, kv_dim]
    v: Vec<Vec<f32>>,
}

impl BackendState for CpuState {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 4).sum()
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl CpuBackend {
    pub fn new(weights: Arc<HostWeights>) -> CpuBackend {
        let c = &weights.config;
        let inv_freq = ops::rope_inv_freq(c.head_dim(), c.rope_theta);
        CpuBackend { weights, inv_freq }
    }
    pub fn weights(&self) -> &Arc<HostWeights> {
        &self.weights
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }
    fn describe(&self) -> String {
        format!("cpu ({} threads)", pool::threads())
    }
    fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }
    fn decode_weight_bytes(&self) -> usize {
        self.weights.decode_bytes()
    }
    fn new_state(&self, context_length: usize) -> Result<Box<dyn BackendState>> {
        let n = self.weights.config.num_hidden_layers;
        Ok(Box::new(CpuState {
            capacity: context_length,
            k: vec![Vec::new(); n],
            v: vec![Vec::new(); n],
        }))
    }

    fn forward(
        &self,
        state: &mut dyn BackendState,
        tokens: &[u32],
        pos: usize,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let st = super::state_as::<CpuState>(state, "CPU")?;
        let w = &*self.weights;
        let c = &w.config;
        let (h, kvd, hd) = (c.hidden_size, c.kv_dim(), c.head_dim());
        super::check_forward(c, st.capacity, st.k[0].len() / kvd, tokens, pos, n_logits)?;
        let t = tokens.len();
        let end = pos + t;
        // x: [t, hidden] — the residual stream.
        let mut x = Vec::with_capacity(t * h);
        for &tok in tokens {
            let row = tok as usize * h..(tok as usize + 1) * h;
            match &w.embed_exact {
                Some(e) => x.extend_from_slice(&e[row]),
                None => x.extend(w.embed[row].iter().map(|v| v.to_f32())),
            }
        }
        let (mut xn, mut q, mut k, mut v, mut att, mut o) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let (mut gate, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
        for (li, l) in w.layers.iter().enumerate() {
            ops::rmsnorm(&x, &l.input_norm, c.rms_norm_eps, &mut xn);
            matmul::linear(&xn, t, &l.q, &mut q); // [t, hidden]
            matmul::linear(&xn, t, &l.k, &mut k); // [t, kv_dim]
            matmul::linear(&xn, t, &l.v, &mut v); // [t, kv_dim]
            ops::rope(&mut q, c.num_attention_heads, hd, pos, &self.inv_freq);
            ops::rope(&mut k, c.num_key_value_heads, hd, pos, &self.inv_freq);
            // Keep the cache exactly `pos` positions long, then append.
            for (cache, new) in [(&mut st.k[li], &k), (&mut st.v[li], &v)] {
                cache.truncate(pos * kvd);
                cache.try_reserve(t * kvd).map_err(|_| {
                    Error::oom(format!("could not grow the KV cache to {end} positions"))
                })?;
                cache.extend_from_slice(new);
            }
            ops::attention(
                &q,
                &st.k[li],
                &st.v[li],
                t,
                pos,
                c.num_attention_heads,
                c.num_key_value_heads,
                hd,
                &mut att,
            );
            matmul::linear(&att, t, &l.o, &mut o);
            ops::add(&mut x, &o);
            ops::rmsnorm(&x, &l.post_attention_norm, c.rms_norm_eps, &mut xn);
            matmul::linear(&xn, t, &l.gate, &mut gate);
            matmul::linear(&xn, t, &l.up, &mut up);
            ops::silu_mul(&mut gate, &up);
            matmul::linear(&gate, t, &l.down, &mut down);
            ops::add(&mut x, &down);
        }
        let last = &x[(t - n_logits) * h..];
        ops::rmsnorm(last, &w.final_norm, c.rms_norm_eps, &mut xn);
        logits.clear();
        logits.resize(n_logits * c.vocab_size, 0.0);
        let head = match &w.lm_head_exact {
            Some(e) => DenseRef::F32(e),
            None => DenseRef::F16(w.lm_head()),
        };
        matmul::dense_matmul(&xn, n_logits, head, h, c.vocab_size, logits);
        Ok(())
    }
}
