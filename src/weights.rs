//! Host-side weights: every tensor of the model, checked against the config and copied out of
//! the memory map into the layout the backends start from.
//!
//! GPTQ matrices stay packed ([`GptqMatrix`]); nothing is dequantised here. Dense matrices keep
//! their 16-bit values ([`DenseMatrix`]). Backends take a [`HostWeights`] and either keep it (CPU)
//! or upload and drop it (CUDA).

use crate::config::{ModelConfig, QuantConfig};
use crate::error::{Error, Result};
use crate::loader::{DType, TensorInfo, TensorStore};
use half::f16;

/// A dense matrix in the Hugging Face layout `[out, in]`.
#[derive(Debug, Clone)]
pub struct DenseMatrix {
    pub out_features: usize,
    pub in_features: usize,
    /// [out, in], row-major. f32 so that f32 and bf16 checkpoints lose nothing.
    pub data: DenseData,
}

#[derive(Debug, Clone)]
pub enum DenseData {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

/// A borrowed dense matrix: [out, in] row-major.
#[derive(Debug, Clone, Copy)]
pub enum DenseRef<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

impl DenseData {
    pub fn as_ref(&self) -> DenseRef<'_> {
        match self {
            DenseData::F16(v) => DenseRef::F16(v),
            DenseData::F32(v) => DenseRef::F32(v),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            DenseData::F16(v) => v.len(),
            DenseData::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            DenseData::F16(v) => v[i].to_f32(),
            DenseData::F32(v) => v[i],
        }
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            DenseData::F16(v) => v.len() * 2,
            DenseData::F32(v) => v.len() * 4,
        }
    }
}

/// A GPTQ-quantised matrix, as stored: `y = x · W (+ bias)` with
/// `W[k, n] = scales[g[k], n] · (q[k, n] − zero[g[k], n])`.
#[derive(Debug, Clone)]
pub struct GptqMatrix {
    pub bits: u32,
    pub in_features: usize,
    pub out_features: usize,
    pub n_groups: usize,
    /// [in · bits / 32, out]: for each column, the `in` values as an LSB-first bit stream.
    pub qweight: Vec<u32>,
    /// [n_groups, out · bits / 32]: the stored zeros, bit stream along `out`.
    pub qzeros: Vec<u32>,
    /// Added to a stored zero to get the real one (1 for the `gptq` v1 format, 0 for v2).
    pub zero_offset: i32,
    /// [n_groups, out]
    pub scales: Vec<f32>,
    /// `[in]`: the group of each input row (already checked to be < n_groups).
    pub g_idx: Vec<u32>,
    /// True when `g_idx` is not `k / group_size` (act-order checkpoints).
    pub act_order: bool,
    /// `[out]`
    pub bias: Option<Vec<f32>>,
}

impl GptqMatrix {
    pub fn words_per_col(&self) -> usize {
        self.in_features * self.bits as usize / 32
    }
    /// The quantised value at row `k`, column `n`.
    #[inline]
    pub fn q(&self, k: usize, n: usize) -> u32 {
        read_bits(&self.qweight, self.out_features, k, n, self.bits)
    }
    /// The real zero point of group `g`, column `n`.
    #[inline]
    pub fn zero(&self, g: usize, n: usize) -> f32 {
        let bits = self.bits as usize;
        let row = &self.qzeros[g * (self.out_features * bits / 32)..];
        let bit = n * bits;
        let w = bit / 32;
        let o = bit % 32;
        let mask = (1u64 << bits) - 1;
        let lo = row[w] as u64 >> o;
        let v = if o + bits > 32 {
            lo | ((row[w + 1] as u64) << (32 - o))
        } else {
            lo
        };
        ((v & mask) as i32 + self.zero_offset) as f32
    }
    /// Dequantise one element (tests and references; kernels do this in bulk).
    pub fn dequant(&self, k: usize, n: usize) -> f32 {
        let g = self.g_idx[k] as usize;
        self.scales[g * self.out_features + n] * (self.q(k, n) as f32 - self.zero(g, n))
    }
    pub fn bytes(&self) -> usize {
        (self.qweight.len() + self.qzeros.len() + self.scales.len() + self.g_idx.len()) * 4
            + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
}

/// Read value `k` of column `n` from a `[rows, cols]` word matrix holding each column's values
/// as an LSB-first bit stream of `bits`-bit values.
#[inline]
pub fn read_bits(words: &[u32], cols: usize, k: usize, n: usize, bits: u32) -> u32 {
    let bits = bits as usize;
    let bit = k * bits;
    let r = bit / 32;
    let o = bit % 32;
    let mask = (1u64 << bits) - 1;
    let lo = words[r * cols + n] as u64 >> o;
    let v = if o + bits > 32 {
        lo | ((words[(r + 1) * cols + n] as u64) << (32 - o))
    } else {
        lo
    };
    (v & mask) as u32
}

/// One linear layer's weights.
#[derive(Debug, Clone)]
pub enum Linear {
    Dense {
        w: DenseMatrix,
        bias: Option<Vec<f32>>,
    },
    Gptq(GptqMatrix),
}

impl Linear {
    pub fn in_features(&self) -> usize {
        match self {
            Linear::Dense { w, .. } => w.in_features,
            Linear::Gptq(g) => g.in_features,
        }
    }
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense { w, .. } => w.out_features,
            Linear::Gptq(g) => g.out_features,
        }
    }
    pub fn bias(&self) -> Option<&[f32]> {
        match self {
            Linear::Dense { bias, .. } => bias.as_deref(),
            Linear::Gptq(g) => g.bias.as_deref(),
        }
    }
    pub fn bytes(&self) -> usize {
        match self {
            Linear::Dense { w, bias } => w.data.bytes() + bias.as_ref().map_or(0, |b| b.len() * 4),
            Linear::Gptq(g) => g.bytes(),
        }
    }
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// `[hidden]`
    pub input_norm: Vec<f32>,
    /// `[hidden]`
    pub post_attention_norm: Vec<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// Every weight of the model, on the host.
#[derive(Debug, Clone)]
pub struct HostWeights {
    pub config: ModelConfig,
    /// [vocab, hidden]
    pub embed: Vec<f16>,
    pub layers: Vec<LayerWeights>,
    /// `[hidden]`
    pub final_norm: Vec<f32>,
    /// [vocab, hidden]; `None` when tied to `embed`.
    pub lm_head: Option<Vec<f16>>,
    /// [vocab, hidden] exact values when the checkpoint stores embeddings in bf16 or f32
    /// (the CPU reference uses them; 16-bit backends use `embed`).
    pub embed_exact: Option<Vec<f32>>,
    /// [vocab, hidden] exact lm_head values, likewise (also set when tied to exact embeddings).
    pub lm_head_exact: Option<Vec<f32>>,
}

impl HostWeights {
    /// The [vocab, hidden] output projection.
    pub fn lm_head(&self) -> &[f16] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }
    /// Bytes a decode step reads: every weight but an untied embedding table (one row of it).
    pub fn decode_bytes(&self) -> usize {
        self.bytes() - self.lm_head.as_ref().map_or(0, |_| self.embed.len() * 2)
    }

    pub fn bytes(&self) -> usize {
        let mut b = self.embed.len() * 2 + self.final_norm.len() * 4;
        b += self.lm_head.as_ref().map_or(0, |l| l.len() * 2);
        for l in &self.layers {
            b += (l.input_norm.len() + l.post_attention_norm.len()) * 4;
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                b += lin.bytes();
            }
        }
        b
    }

    /// Check every tensor against `config` and copy the weights out of `store`.
    /// `progress(done, total)` is called after each layer; returning false cancels the load.
    pub fn load(
        store: &TensorStore,
        config: &ModelConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<HostWeights> {
        let h = config.hidden_size;
        let v = config.vocab_size;
        // First pass: check everything, allocate nothing.
        check_all(store, config)?;
        let total = config.num_hidden_layers + 2;
        let cancelled = || {
            Error::new(
                crate::ErrorKind::Cancelled,
                "load cancelled by the progress callback",
            )
        };
        let embed_t = store.require("model.embed_tokens.weight")?;
        let embed = store.read_f16(embed_t)?;
        let embed_exact = if embed_t.dtype == DType::F16 {
            None
        } else {
            Some(store.read_f32(embed_t)?)
        };
        store.release(embed_t);
        if !progress(1, total) {
            return Err(cancelled());
        }
        let load_layer = |i: usize| -> Result<LayerWeights> {
            let p = format!("model.layers.{i}");
            let norm = |n: &str| -> Result<Vec<f32>> {
                let t = store.require(&format!("{p}.{n}.weight"))?;
                store.read_f32(t)
            };
            let lin = |n: &str, inf: usize, outf: usize| {
                load_linear(store, config, &format!("{p}.{n}"), inf, outf)
            };
            let (kv, inter) = (config.kv_dim(), config.intermediate_size);
            Ok(LayerWeights {
                input_norm: norm("input_layernorm")?,
                post_attention_norm: norm("post_attention_layernorm")?,
                q: lin("self_attn.q_proj", h, h)?,
                k: lin("self_attn.k_proj", h, kv)?,
                v: lin("self_attn.v_proj", h, kv)?,
                o: lin("self_attn.o_proj", h, h)?,
                gate: lin("mlp.gate_proj", h, inter)?,
                up: lin("mlp.up_proj", h, inter)?,
                down: lin("mlp.down_proj", inter, h)?,
            })
        };
        // Layers are copied out of the map on several threads at once (a warm 13B load is
        // bound by memory copies and conversions, not by the disk), a batch at a time so that
        // progress is reported and a cancel is honoured between batches.
        let n = config.num_hidden_layers;
        let batch = crate::backend::cpu::pool::threads().clamp(1, 8);
        let mut layers = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let results: Vec<Result<LayerWeights>> = std::thread::scope(|s| {
                let load_layer = &load_layer;
                let handles: Vec<_> = (start..end)
                    .map(|i| s.spawn(move || load_layer(i)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::internal("a loader thread panicked")))
                    })
                    .collect()
            });
            for r in results {
                layers.push(r?);
                if !progress(layers.len() + 1, total) {
                    return Err(cancelled());
                }
            }
            start = end;
        }
        let final_norm = store.read_f32(store.require("model.norm.weight")?)?;
        let (lm_head, lm_head_exact) = if config.tie_word_embeddings {
            (None, embed_exact.clone())
        } else {
            let t = store.require("lm_head.weight")?;
            let w = store.read_f16(t)?;
            let exact = if t.dtype == DType::F16 {
                None
            } else {
                Some(store.read_f32(t)?)
            };
            store.release(t);
            (Some(w), exact)
        };
        debug_assert_eq!(embed.len(), v * h);
        if !progress(total, total) {
            return Err(cancelled());
        }
        Ok(HostWeights {
            config: config.clone(),
            embed,
            layers,
            final_norm,
            lm_head,
            embed_exact,
            lm_head_exact,
        })
    }
}

const FLOATS: [DType; 3] = [DType::F16, DType::BF16, DType::F32];

/// Validate every tensor's presence, dtype and shape before any allocation.
fn check_all(store: &TensorStore, c: &ModelConfig) -> Result<()> {
    let (h, v) = (c.hidden_size, c.vocab_size);
    store.check(
        store.require("model.embed_tokens.weight")?,
        &FLOATS,
        &[v, h],
    )?;
    store.check(store.require("model.norm.weight")?, &FLOATS, &[h])?;
    if !c.tie_word_embeddings {
        store.check(store.require("lm_head.weight")?, &FLOATS, &[v, h])?;
    }
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        store.check(
            store.require(&format!("{p}.input_layernorm.weight"))?,
            &FLOATS,
            &[h],
        )?;
        store.check(
            store.require(&format!("{p}.post_attention_layernorm.weight"))?,
            &FLOATS,
            &[h],
        )?;
        let kv = c.kv_dim();
        let inter = c.intermediate_size;
        for (n, inf, outf) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, kv),
            ("self_attn.v_proj", h, kv),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", h, inter),
            ("mlp.up_proj", h, inter),
            ("mlp.down_proj", inter, h),
        ] {
            check_linear(store, c, &format!("{p}.{n}"), inf, outf)?;
        }
    }
    Ok(())
}

fn check_linear(
    store: &TensorStore,
    c: &ModelConfig,
    name: &str,
    inf: usize,
    outf: usize,
) -> Result<()> {
    if let Some(b) = store.get(&format!("{name}.bias")) {
        store.check(b, &FLOATS, &[outf])?;
    }
    let Some(q) = &c.quant else {
        let w = store.require(&format!("{name}.weight"))?;
        return store.check(w, &FLOATS, &[outf, inf]);
    };
    let bits = q.bits as usize;
    let file_of = |t: &TensorInfo| store.file_path(t).display().to_string();
    let qw = store.require(&format!("{name}.qweight"))?;
    if (inf * bits) % 32 != 0 {
        return Err(Error::format(format!(
            "{}: tensor {}: {inf} input rows of {bits} bits do not fill whole 32-bit words",
            file_of(qw),
            qw.name
        )));
    }
    store.check(qw, &[DType::I32], &[inf * bits / 32, outf])?;
    let groups = q.groups(inf);
    let qz = store.require(&format!("{name}.qzeros"))?;
    if (outf * bits) % 32 != 0 {
        return Err(Error::format(format!(
            "{}: tensor {}: {outf} zeros of {bits} bits do not fill whole 32-bit words",
            file_of(qz),
            qz.name
        )));
    }
    store.check(qz, &[DType::I32], &[groups, outf * bits / 32])?;
    let sc = store.require(&format!("{name}.scales"))?;
    store.check(sc, &FLOATS, &[groups, outf])?;
    if let Some(g) = store.get(&format!("{name}.g_idx")) {
        store.check(g, &[DType::I32, DType::I64], &[inf])?;
    }
    Ok(())
}

fn load_linear(
    store: &TensorStore,
    c: &ModelConfig,
    name: &str,
    inf: usize,
    outf: usize,
) -> Result<Linear> {
    let bias = match store.get(&format!("{name}.bias")) {
        Some(t) => Some(store.read_f32(t)?),
        None => None,
    };
    let Some(q) = &c.quant else {
        let t = store.require(&format!("{name}.weight"))?;
        let data = if t.dtype == DType::F16 {
            DenseData::F16(store.read_f16(t)?)
        } else {
            DenseData::F32(store.read_f32(t)?)
        };
        store.release(t);
        return Ok(Linear::Dense {
            w: DenseMatrix {
                out_features: outf,
                in_features: inf,
                data,
            },
            bias,
        });
    };
    load_gptq(store, q, name, inf, outf, bias).map(Linear::Gptq)
}

fn load_gptq(
    store: &TensorStore,
    q: &QuantConfig,
    name: &str,
    inf: usize,
    outf: usize,
    bias: Option<Vec<f32>>,
) -> Result<GptqMatrix> {
    let n_groups = q.groups(inf);
    let group_size = q.group_size.unwrap_or(inf);
    let qw_t = store.require(&format!("{name}.qweight"))?;
    let qweight = store.read_u32(qw_t)?;
    store.release(qw_t);
    let qzeros = store.read_u32(store.require(&format!("{name}.qzeros"))?)?;
    let scales = store.read_f32(store.require(&format!("{name}.scales"))?)?;
    if let Some((i, s)) = scales.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::format(format!(
            "tensor {name}.scales: element {i} is {s}, not a finite number"
        )));
    }
    let default_g = |k: usize| (k / group_size) as u32;
    let (g_idx, act_order) = match store.get(&format!("{name}.g_idx")) {
        None => ((0..inf).map(default_g).collect(), false),
        Some(t) => {
            let raw = store.read_i64(t)?;
            if n_groups > 1 && raw.iter().all(|&g| g == 0) {
                // Some exporters write an all-zero g_idx; it means "no act-order".
                ((0..inf).map(default_g).collect(), false)
            } else {
                let mut g = Vec::with_capacity(inf);
                for (k, &x) in raw.iter().enumerate() {
                    if x < 0 || x as usize >= n_groups {
                        return Err(Error::format(format!(
                            "{}: tensor {}: g_idx[{k}] = {x} is out of range (0..{n_groups})",
                            store.file_path(t).display(),
                            t.name
                        )));
                    }
                    g.push(x as u32);
                }
                let act = g.iter().enumerate().any(|(k, &x)| x != default_g(k));
                (g, act)
            }
        }
    };
    Ok(GptqMatrix {
        bits: q.bits,
        in_features: inf,
        out_features: outf,
        n_groups,
        qweight,
        qzeros,
        zero_offset: q.zero_offset(),
        scales,
        g_idx,
        act_order,
        bias,
    })
}
