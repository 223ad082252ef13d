//! The model's configuration: what `config.json` and `quantize_config.json` say.
//!
//! This is the first of the engine's three lifetimes (config, [`crate::Model`], and
//! [`crate::Session`]): plain data, read once, checked for sanity, and shared by everything after.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// How the weight zero-points are stored in a GPTQ checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `gptq` (v1, GPTQ-for-LLaMa and AutoGPTQ): the stored zero is the real zero minus one.
    GptqV1,
    /// `gptq_v2`: the stored zero is the zero itself.
    GptqV2,
}

/// GPTQ quantisation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConfig {
    /// Bits per weight: 2, 3, 4 or 8.
    pub bits: u32,
    /// Rows per quantisation group; `None` for one group over the whole input (`group_size: -1`).
    pub group_size: Option<usize>,
    /// Act-order: the rows were quantised in a permuted order, so `g_idx` is not monotone.
    pub desc_act: bool,
    /// Symmetric quantisation (informational: zeros are always read from `qzeros`).
    pub sym: bool,
    pub checkpoint_format: CheckpointFormat,
}

impl QuantConfig {
    /// The number of groups for a linear layer with `in_features` inputs.
    pub fn groups(&self, in_features: usize) -> usize {
        match self.group_size {
            Some(g) => in_features.div_ceil(g),
            None => 1,
        }
    }
    /// What is added to the stored zero to get the real zero.
    pub fn zero_offset(&self) -> i32 {
        match self.checkpoint_format {
            CheckpointFormat::GptqV1 => 1,
            CheckpointFormat::GptqV2 => 0,
        }
    }
}

/// A LLaMA-family model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    /// `None` for a dense (fp16/bf16/f32) checkpoint.
    pub quant: Option<QuantConfig>,
}

/// Upper bounds that keep a malicious config from asking for absurd allocations.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1024;
const MAX_CONTEXT: usize = 1 << 22;

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Width of one position's keys (or values) across all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }

    /// Read `config.json` and, if present, `quantize_config.json` from a checkpoint folder.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let cfg = read_json(&path)?;
        let quant_path = dir.join("quantize_config.json");
        let quant_json = if quant_path.exists() {
            Some((read_json(&quant_path)?, quant_path))
        } else {
            cfg.get("quantization_config")
                .filter(|v| v.is_object())
                .map(|v| (v.clone(), path.clone()))
        };
        let mut c = ModelConfig::from_json(&cfg).map_err(|e| e.context(path.display()))?;
        if let Some((q, qpath)) = quant_json {
            c.quant = Some(QuantConfig::from_json(&q).map_err(|e| e.context(qpath.display()))?);
        }
        Ok(c)
    }

    /// Parse a `config.json` value (without quantisation; see [`ModelConfig::from_dir`]).
    pub fn from_json(v: &Value) -> Result<ModelConfig> {
        if !v.is_object() {
            return Err(Error::format("expected a JSON object"));
        }
        if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
            if mt != "llama" && mt != "mistral" {
                return Err(Error::unsupported(format!(
                    "model_type \"{mt}\" is not supported (only LLaMA-family models are)"
                )));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(Error::unsupported(format!(
                    "hidden_act \"{act}\" (only silu is supported)"
                )));
            }
        }
        let hidden_size = get_usize(v, "hidden_size", None)?;
        let num_attention_heads = get_usize(v, "num_attention_heads", None)?;
        let c = ModelConfig {
            hidden_size,
            intermediate_size: get_usize(v, "intermediate_size", None)?,
            num_hidden_layers: get_usize(v, "num_hidden_layers", None)?,
            num_attention_heads,
            num_key_value_heads: get_usize(v, "num_key_value_heads", Some(num_attention_heads))?,
            vocab_size: get_usize(v, "vocab_size", None)?,
            rms_norm_eps: get_f64(v, "rms_norm_eps", Some(1e-6))? as f32,
            rope_theta: get_f64(v, "rope_theta", Some(10000.0))? as f32,
            max_position_embeddings: get_usize(v, "max_position_embeddings", Some(2048))?,
            tie_word_embeddings: match v.get("tie_word_embeddings") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(Error::format(format!(
                        "tie_word_embeddings: expected a boolean, found {other}"
                    )))
                }
            },
            bos_token_id: get_token_id(v, "bos_token_id", 1)?,
            eos_token_id: get_token_id(v, "eos_token_id", 2)?,
            quant: None,
        };
        if let Some(hd) = v.get("head_dim").and_then(Value::as_u64) {
            if hd as usize * num_attention_heads != hidden_size {
                return Err(Error::unsupported(format!(
                    "head_dim {hd} × {num_attention_heads} heads differs from hidden_size {hidden_size}"
                )));
            }
        }
        if let Some(rs) = v.get("rope_scaling") {
            if !rs.is_null() {
                return Err(Error::unsupported(format!(
                    "rope_scaling {rs} is not supported"
                )));
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let dims = [
            ("hidden_size", self.hidden_size, MAX_DIM),
            ("intermediate_size", self.intermediate_size, MAX_DIM),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_DIM),
            ("num_key_value_heads", self.num_key_value_heads, MAX_DIM),
            ("vocab_size", self.vocab_size, MAX_DIM * 4),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_CONTEXT,
            ),
        ];
        for (name, val, max) in dims {
            if val == 0 || val > max {
                return Err(Error::format(format!(
                    "{name} = {val} is out of range (1..={max})"
                )));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::format(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.head_dim() % 2 != 0 {
            return Err(Error::format(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim()
            )));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::format(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(Error::format(
                "rms_norm_eps must be a finite non-negative number",
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::format("rope_theta must be a finite positive number"));
        }
        Ok(())
    }
}

impl QuantConfig {
    /// Parse `quantize_config.json` or `config.json`'s `quantization_config`.
    pub fn from_json(v: &Value) -> Result<QuantConfig> {
        if !v.is_object() {
            return Err(Error::format("quantisation config: expected a JSON object"));
        }
        if let Some(m) = v.get("quant_method").and_then(Value::as_str) {
            if m != "gptq" {
                return Err(Error::unsupported(format!(
                    "quant_method \"{m}\" (only gptq is supported)"
                )));
            }
        }
        let bits = get_usize(v, "bits", None)?;
        if ![2, 3, 4, 8].contains(&bits) {
            return Err(Error::unsupported(format!(
                "{bits}-bit weights (supported: 2, 3, 4, 8)"
            )));
        }
        let group_size = match v.get("group_size") {
            None | Some(Value::Null) => None,
            Some(g) => match g.as_i64() {
                Some(-1) => None,
                Some(g) if g > 0 && (g as usize) <= MAX_DIM => Some(g as usize),
                _ => {
                    return Err(Error::format(format!(
                        "group_size: expected -1 or a positive integer, found {g}"
                    )))
                }
            },
        };
        let flag = |name: &str, default: bool| -> Result<bool> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(Error::format(format!(
                    "{name}: expected a boolean, found {other}"
                ))),
            }
        };
        let fmt = v
            .get("checkpoint_format")
            .and_then(Value::as_str)
            .unwrap_or("gptq");
        let checkpoint_format = match fmt {
            "gptq" => CheckpointFormat::GptqV1,
            "gptq_v2" => CheckpointFormat::GptqV2,
            other => return Err(Error::unsupported(format!("checkpoint_format \"{other}\""))),
        };
        Ok(QuantConfig {
            bits: bits as u32,
            group_size,
            desc_act: flag("desc_act", false)?,
            sym: flag("sym", true)?,
            checkpoint_format,
        })
    }
}

/// Read and parse a JSON file, with the path in any error.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::format(format!("{}: malformed JSON: {e}", path.display())))
}

fn get_usize(v: &Value, key: &str, default: Option<usize>) -> Result<usize> {
    match v.get(key) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| Error::format(format!("missing \"{key}\"")))
        }
        Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
            Error::format(format!(
                "\"{key}\": expected a non-negative integer, found {x}"
            ))
        }),
    }
}

fn get_f64(v: &Value, key: &str, default: Option<f64>) -> Result<f64> {
    match v.get(key) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| Error::format(format!("missing \"{key}\"")))
        }
        Some(x) => x
            .as_f64()
            .ok_or_else(|| Error::format(format!("\"{key}\": expected a number, found {x}"))),
    }
}

fn get_token_id(v: &Value, key: &str, default: u32) -> Result<u32> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        // Some configs list several EOS ids; the first is the one we stop on.
        Some(x) => match x {
            Value::Array(a) if !a.is_empty() => &a[0],
            other => other,
        }
        .as_u64()
        .filter(|n| *n <= u32::MAX as u64)
        .map(|n| n as u32)
        .ok_or_else(|| Error::format(format!("\"{key}\": expected a token id, found {x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama13b() -> Value {
        json!({"model_type":"llama","hidden_size":5120,"intermediate_size":13824,"num_hidden_layers":40,
               "num_attention_heads":40,"vocab_size":32000,"rms_norm_eps":1e-6,"max_position_embeddings":2048,
               "bos_token_id":1,"eos_token_id":2,"hidden_act":"silu"})
    }

    #[test]
    fn parses_llama13b() {
        let c = ModelConfig::from_json(&llama13b()).unwrap();
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.num_key_value_heads, 40);
        assert_eq!(c.rope_theta, 10000.0);
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn rejects_bad_values() {
        let mut v = llama13b();
        v["hidden_size"] = json!(5121);
        assert_eq!(
            ModelConfig::from_json(&v).unwrap_err().kind,
            crate::ErrorKind::ModelFormat
        );
        let mut v = llama13b();
        v["model_type"] = json!("gpt2");
        assert_eq!(
            ModelConfig::from_json(&v).unwrap_err().kind,
            crate::ErrorKind::Unsupported
        );
        let mut v = llama13b();
        v["num_hidden_layers"] = json!(-3);
        assert!(ModelConfig::from_json(&v)
            .unwrap_err()
            .message
            .contains("num_hidden_layers"));
    }

    #[test]
    fn quant_config_variants() {
        let q =
            QuantConfig::from_json(&json!({"bits":4,"group_size":128,"desc_act":false})).unwrap();
        assert_eq!(q.group_size, Some(128));
        assert_eq!(q.zero_offset(), 1);
        assert_eq!(q.groups(5120), 40);
        let q = QuantConfig::from_json(
            &json!({"bits":3,"group_size":-1,"checkpoint_format":"gptq_v2"}),
        )
        .unwrap();
        assert_eq!(q.group_size, None);
        assert_eq!(q.groups(13824), 1);
        assert_eq!(q.zero_offset(), 0);
        let e = QuantConfig::from_json(&json!({"bits":5,"group_size":128})).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
    }
}
