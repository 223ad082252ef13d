//! # wv — embeddable GPTQ LLaMA inference
//!
//! wv runs LLaMA-family chat models quantised with GPTQ (Wizard-Vicuna-13B first of all) behind
//! a stable C ABI, on NVIDIA GPUs through CUDA or on any CPU.
//!
//! The engine has three lifetimes, three types:
//! - [`config::ModelConfig`]: what the checkpoint's JSON files say; plain data.
//! - [`Model`]: the immutable weights on one [`backend::Backend`], plus the tokenizer. Shared
//!   by any number of sessions and threads (`Arc<Model>`).
//! - [`Session`]: one conversation: its tokens, its KV cache and scratch space (a
//!   [`backend::BackendState`]). Forward passes take it by `&mut`.
//!
//! Loading goes: folder → [`loader::TensorStore`] (memory-mapped safetensors, every header
//! checked) → [`weights::HostWeights`] (every tensor checked against the config, packed GPTQ
//! kept packed) → a backend, which owns the weights in the layout its kernels read.
//!
//! The C API lives in [`ffi`]; the `wv` command-line program in `src/bin/wv.rs`.

pub mod backend;
pub mod bench;
pub mod chat;
pub mod config;
pub mod error;
pub mod ffi;
pub mod loader;
pub mod log;
pub mod model;
pub mod sampler;
pub mod session;
pub mod stop;
pub mod tokenizer;
pub mod weights;

pub use config::{ModelConfig, QuantConfig};
pub use error::{Error, ErrorKind, Result};
pub use model::{DeviceRequest, LoadOptions, Model};
pub use sampler::GenerateOptions;
pub use session::{GenerateStats, Session, SessionOptions, StopReason};

/// The C ABI version: `major << 16 | minor`. A new minor only adds; a new major breaks.
pub const ABI_VERSION: u32 = 1 << 16;

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
