//! The backend interface: where the weights live and where the arithmetic runs.
//!
//! A [`Backend`] owns a model's weights in the layout its kernels read and runs the forward pass;
//! a [`BackendState`] is one session's KV cache and scratch space on that backend. The engine
//! above (sessions, sampling, chat, the C API) only speaks this interface, so the CPU backend
//! ([`cpu`], the reference, always present) and the CUDA backend ([`cuda`]) are interchangeable.
//!
//! The contract of [`Backend::forward`]: the tokens go to positions `pos .. pos + tokens.len()`
//! of the state's cache, every earlier position `0 .. pos` must already be filled by an earlier
//! call, and the logits of the last `n_logits` positions are returned. Prefill passes many tokens
//! at once (a batch, never token by token); decode passes one.

pub mod cpu;
pub mod cuda;

use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use std::any::Any;

/// Which kind of device a backend runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// One session's state on a backend: the KV cache and scratch buffers.
pub trait BackendState: Send {
    /// The most positions the cache can hold (the session's context length).
    fn capacity(&self) -> usize;
    /// Bytes this state holds (host or device), for reports.
    fn bytes(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Sampling parameters a backend may apply on the device (see [`Backend::forward_sample`]).
#[derive(Debug, Clone, Copy)]
pub struct DeviceSampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    /// A uniform random number in [0, 1) drawn by the host's seeded generator.
    pub uniform: f64,
    /// The caller will not decode the token this call returns (the last of a generation), so
    /// no step is enqueued ahead for it (the CUDA backend's decode ahead; nor after the model's
    /// end-of-sequence token, where a generation stops).
    pub last: bool,
}

impl DeviceSampling {
    /// A generation's settings, and its draw: from `rng` — a copy of the generation's
    /// generator, which the caller keeps only if the device samples — unless greedy (no draw).
    pub fn draw(
        opts: &crate::sampler::GenerateOptions,
        rng: &mut crate::sampler::Rng,
        last: bool,
    ) -> DeviceSampling {
        DeviceSampling {
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            repetition_penalty: opts.repetition_penalty,
            uniform: if opts.temperature == 0.0 {
                0.0
            } else {
                rng.uniform()
            },
            last,
        }
    }
}

/// A device that can run the model.
pub trait Backend: Send + Sync {
    fn kind(&self) -> DeviceKind;
    /// A line that says what the device is ("cpu: 16 threads", "cuda:0 NVIDIA H100 ...").
    fn describe(&self) -> String;
    /// Bytes of weights this backend holds.
    fn weight_bytes(&self) -> usize;
    /// Bytes of weights one decode step reads: all it holds but an untied embedding table, of
    /// which a step reads one row (`wv bench`'s roofline counts these).
    fn decode_weight_bytes(&self) -> usize {
        self.weight_bytes()
    }
    /// Make a state whose cache holds `context_length` positions.
    fn new_state(&self, context_length: usize) -> Result<Box<dyn BackendState>>;
    /// Run `tokens` at positions `pos..` and write the logits of the last `n_logits` positions
    /// into `logits` as `[n_logits, vocab]` (cleared and resized by the callee).
    fn forward(
        &self,
        state: &mut dyn BackendState,
        tokens: &[u32],
        pos: usize,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()>;
    /// Peak device memory in use since the backend was made, where the device can tell.
    fn peak_device_bytes(&self) -> Option<usize> {
        None
    }
    /// Tokens per `forward` call that a session should use when it feeds a long prompt (the
    /// granularity of cancellation). 256 by default; a GPU backend asks for more, because each
    /// call streams (and, for 4-bit weights, dequantises) every weight once.
    fn prefill_chunk(&self) -> usize {
        256
    }
    /// GPU time per operation since the last call, as (name, launches, milliseconds), when the
    /// backend is profiling (CUDA: `WV_CUDA_PROFILE=1`); `None` otherwise.
    fn profile_report(&self) -> Option<Vec<(String, usize, f64)>> {
        None
    }
    /// Decode one token and sample the next on the device. `history` is the session's tokens
    /// (for the repetition penalty). Backends that cannot sample on the device return `None`,
    /// and the engine samples on the host from [`Backend::forward`]'s logits.
    fn forward_sample(
        &self,
        _state: &mut dyn BackendState,
        _token: u32,
        _pos: usize,
        _history: &[u32],
        _sampling: &DeviceSampling,
    ) -> Option<Result<u32>> {
        None
    }
}

/// A session state as the backend's own type, or an internal error naming the backend.
pub fn state_as<'s, T: 'static>(
    state: &'s mut dyn BackendState,
    backend: &str,
) -> Result<&'s mut T> {
    state.as_any_mut().downcast_mut::<T>().ok_or_else(|| {
        Error::internal(format!(
            "a foreign session state was passed to the {backend} backend"
        ))
    })
}

/// The checks every backend makes before [`Backend::forward`]: a non-empty batch, no more
/// logits than tokens, positions inside the cache's `capacity`, no gap after the `filled`
/// positions, and token ids inside the vocabulary.
pub fn check_forward(
    config: &ModelConfig,
    capacity: usize,
    filled: usize,
    tokens: &[u32],
    pos: usize,
    n_logits: usize,
) -> Result<()> {
    let t = tokens.len();
    if t == 0 || n_logits > t {
        return Err(Error::invalid(format!(
            "forward: {t} tokens, {n_logits} logits requested"
        )));
    }
    if pos.checked_add(t).is_none_or(|e| e > capacity) {
        return Err(Error::new(
            ErrorKind::ContextFull,
            format!(
                "positions {pos}..{} exceed the context length {capacity}",
                pos.saturating_add(t)
            ),
        ));
    }
    if pos > filled {
        return Err(Error::internal(format!(
            "forward at position {pos} but the cache holds {filled} positions"
        )));
    }
    if let Some(&tok) = tokens.iter().find(|&&x| x as usize >= config.vocab_size) {
        return Err(Error::invalid(format!(
            "token id {tok} is out of range (vocab {})",
            config.vocab_size
        )));
    }
    Ok(())
}
