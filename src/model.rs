//! [`Model`]: the immutable, shared half of the engine — configuration, tokenizer and the
//! weights on one backend. Load it once, wrap it in an `Arc`, and make as many
//! [`crate::Session`]s on it as you like, from any threads.

use crate::backend::{cpu::CpuBackend, Backend, DeviceKind};
use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::loader::TensorStore;
use crate::log::{log, Level};
use crate::tokenizer::Tokenizer;
use crate::weights::HostWeights;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which device to load on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The GPU when one is usable, else the CPU (with a log line saying why).
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl DeviceRequest {
    /// Parse "auto", "cpu", "cuda" or "cuda:N".
    pub fn parse(s: &str) -> Result<DeviceRequest> {
        match s {
            "auto" | "" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown device {s:?} (expected auto, cpu, cuda or cuda:N)"
                    ))
                }),
        }
    }
}

/// Load progress: called with (fraction done 0..=1); return false to cancel the load.
pub type ProgressFn<'a> = dyn FnMut(f32) -> bool + 'a;

/// Options for [`Model::load`].
#[derive(Default)]
pub struct LoadOptions<'a> {
    pub device: DeviceRequest,
    pub progress: Option<Box<ProgressFn<'a>>>,
}

/// A loaded model: config, tokenizer and weights on a backend. Immutable; share it in an `Arc`.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub backend: Box<dyn Backend>,
    /// The folder it was loaded from.
    pub dir: PathBuf,
    /// A hash of the config and tokenizer vocabulary, written into saved sessions so that a
    /// session is only restored on the model that made it.
    pub fingerprint: u64,
    /// Bytes of checkpoint tensor data.
    pub checkpoint_bytes: u64,
}

impl Model {
    /// Load a checkpoint folder.
    pub fn load(dir: &Path, mut opts: LoadOptions<'_>) -> Result<Arc<Model>> {
        let t0 = std::time::Instant::now();
        let config = ModelConfig::from_dir(dir)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::format(format!(
                "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
                dir.display(),
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let store = TensorStore::open_dir(dir)?;
        let mut progress = |done: usize, total: usize| -> bool {
            match opts.progress.as_mut() {
                Some(p) => p(done as f32 / total as f32),
                None => true,
            }
        };
        let host = HostWeights::load(&store, &config, &mut progress)?;
        let checkpoint_bytes = store.data_bytes;
        drop(store);
        let backend = make_backend(host, opts.device)?;
        log(
            Level::Info,
            &format!(
                "loaded {} on {} in {:.2}s",
                dir.display(),
                backend.describe(),
                t0.elapsed().as_secs_f64()
            ),
        );
        let fingerprint = fingerprint(&config, &tokenizer);
        Ok(Arc::new(Model {
            config,
            tokenizer,
            backend,
            dir: dir.to_path_buf(),
            fingerprint,
            checkpoint_bytes,
        }))
    }

    pub fn device_kind(&self) -> DeviceKind {
        self.backend.kind()
    }

    /// One forward pass over exactly `tokens` (no BOS added) in a fresh cache; returns the
    /// logits of the last `last_n` positions, [last_n, vocab].
    pub fn logits(&self, tokens: &[u32], last_n: usize) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::invalid("no tokens given"));
        }
        if last_n == 0 || last_n > tokens.len() {
            return Err(Error::invalid(format!(
                "--last {last_n}: must be between 1 and the number of tokens ({})",
                tokens.len()
            )));
        }
        if tokens.len() > self.config.max_position_embeddings {
            return Err(Error::new(
                ErrorKind::ContextFull,
                format!(
                    "{} tokens exceed the model's context of {}",
                    tokens.len(),
                    self.config.max_position_embeddings
                ),
            ));
        }
        let mut state = self.backend.new_state(tokens.len())?;
        let mut out = Vec::new();
        self.backend
            .forward(state.as_mut(), tokens, 0, last_n, &mut out)?;
        Ok(out)
    }

    /// Bytes of KV cache per position on this model's backend.
    pub fn kv_bytes_per_token(&self) -> usize {
        kv_bytes_per_token(&self.config, self.backend.kind())
    }
}

/// KV-cache bytes per position: f32 on the CPU, f16 on CUDA.
pub fn kv_bytes_per_token(c: &ModelConfig, kind: DeviceKind) -> usize {
    let elem = if kind == DeviceKind::Cpu { 4 } else { 2 };
    2 * c.num_hidden_layers * c.kv_dim() * elem
}

fn make_backend(host: HostWeights, device: DeviceRequest) -> Result<Box<dyn Backend>> {
    match device {
        DeviceRequest::Cpu => Ok(Box::new(CpuBackend::new(Arc::new(host)))),
        DeviceRequest::Cuda(n) => crate::backend::cuda::new_backend(&host, n),
        DeviceRequest::Auto => match crate::backend::cuda::new_backend(&host, 0) {
            Ok(b) => Ok(b),
            Err(e) if e.kind == ErrorKind::Device => {
                log(
                    Level::Info,
                    &format!("CUDA unavailable ({e}); using the CPU"),
                );
                Ok(Box::new(CpuBackend::new(Arc::new(host))))
            }
            Err(e) => Err(e),
        },
    }
}

fn fingerprint(c: &ModelConfig, t: &Tokenizer) -> u64 {
    // FNV-1a over a canonical description: stable across runs and builds.
    let desc = format!("{c:?}|{}|{}|{}", t.vocab_size(), t.bos_id(), t.eos_id());
    let mut h: u64 = 0xcbf29ce484222325;
    for b in desc.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// What `wv info` prints: config, quantisation, tokenizer source and a memory estimate,
/// read from the folder's JSON and tensor headers without loading the weights.
pub fn inspect(dir: &Path) -> Result<serde_json::Value> {
    use serde_json::json;
    let c = ModelConfig::from_dir(dir)?;
    let tk = Tokenizer::from_dir(dir)?;
    let store = TensorStore::open_dir(dir)?;
    // Check shapes and dtypes too, so `info` doubles as a validator.
    let mut names: Vec<&str> = store.names().collect();
    names.sort();
    let quant = c.quant.as_ref().map(|q| {
        json!({
            "method": "gptq",
            "bits": q.bits,
            "group_size": q.group_size.map_or(-1, |g| g as i64),
            "desc_act": q.desc_act,
            "sym": q.sym,
            "checkpoint_format": match q.checkpoint_format {
                crate::config::CheckpointFormat::GptqV1 => "gptq",
                crate::config::CheckpointFormat::GptqV2 => "gptq_v2",
            },
        })
    });
    let ckpt = store.data_bytes;
    let kv_cpu = kv_bytes_per_token(&c, DeviceKind::Cpu);
    let kv_gpu = kv_bytes_per_token(&c, DeviceKind::Cuda);
    let ctx = c.max_position_embeddings as u64;
    // The CPU keeps scales as f32 (twice the usual f16); everything else as stored.
    let scale_extra: u64 = names
        .iter()
        .filter(|n| n.ends_with(".scales"))
        .filter_map(|n| store.get(n))
        .filter(|t| t.dtype.size() == 2)
        .map(|t| (t.end - t.start) as u64)
        .sum();
    Ok(json!({
        "model_dir": dir.display().to_string(),
        "config": {
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": c.head_dim(),
            "vocab_size": c.vocab_size,
            "rms_norm_eps": c.rms_norm_eps,
            "rope_theta": c.rope_theta,
            "max_position_embeddings": c.max_position_embeddings,
            "tie_word_embeddings": c.tie_word_embeddings,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": c.eos_token_id,
        },
        "quantization": quant,
        "tokenizer": {
            "source": match tk.source() {
                crate::tokenizer::TokenizerSource::Json => "tokenizer.json",
                crate::tokenizer::TokenizerSource::SentencePiece => "tokenizer.model",
            },
            "vocab_size": tk.vocab_size(),
            "bos_id": tk.bos_id(),
            "eos_id": tk.eos_id(),
            "add_bos": tk.add_bos(),
        },
        "tensors": names.len(),
        "memory": {
            "checkpoint_bytes": ckpt,
            "cpu_weight_bytes": ckpt + scale_extra,
            "cpu_kv_bytes_per_token": kv_cpu,
            "cpu_total_bytes_at_full_context": ckpt + scale_extra + kv_cpu as u64 * ctx,
            "cuda_kv_bytes_per_token": kv_gpu,
            "cuda_total_bytes_at_full_context": ckpt + kv_gpu as u64 * ctx,
        },
    }))
}
