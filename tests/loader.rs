//! The loader: every checkpoint variant loads; every kind of bad input gives its own clear
//! error (kind and message naming the file or tensor), never a panic.

mod common;
use common::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wv::{ErrorKind, LoadOptions, Model};

const SINGLE: &str = "gptq4-g128-asym-spm";
const SINGLE_FILE: &str = "gptq_model-4bit-128g.safetensors";

fn load_err(dir: &Path) -> wv::Error {
    match Model::load(
        dir,
        LoadOptions {
            device: wv::DeviceRequest::Cpu,
            progress: None,
        },
    ) {
        Ok(_) => panic!("{} loaded but should have failed", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn every_variant_loads_with_the_right_settings() {
    use wv::config::CheckpointFormat::*;
    type Quant = Option<(u32, Option<usize>, bool, wv::config::CheckpointFormat)>;
    let cases: &[(&str, Quant, bool)] = &[
        (
            "gptq4-g128-asym-spm",
            Some((4, Some(128), false, GptqV1)),
            false,
        ),
        (
            "gptq4-actorder-sym-sharded",
            Some((4, Some(32), true, GptqV1)),
            true,
        ),
        (
            "gptq4-nogidx-fp32scales-bias",
            Some((4, Some(32), false, GptqV1)),
            true,
        ),
        (
            "gptq8-v2-inconfig",
            Some((8, Some(64), false, GptqV2)),
            true,
        ),
        ("gptq3-g32", Some((3, Some(32), false, GptqV1)), true),
        ("gptq2-gall", Some((2, None, false, GptqV1)), true),
        ("dense-fp16", None, false),
    ];
    for (name, quant, tied) in cases {
        let m = load(&fixture(name), wv::DeviceRequest::Cpu);
        let c = &m.config;
        assert_eq!(c.tie_word_embeddings, *tied, "{name}");
        match (quant, &c.quant) {
            (None, None) => {}
            (Some((bits, group, act, fmt)), Some(q)) => {
                assert_eq!(
                    (q.bits, q.group_size, q.desc_act, q.checkpoint_format),
                    (*bits, *group, *act, *fmt),
                    "{name}"
                );
            }
            other => panic!("{name}: quantisation mismatch {other:?}"),
        }
    }
    let spm = load(&fixture(SINGLE), wv::DeviceRequest::Cpu);
    assert_eq!(
        spm.tokenizer.source(),
        wv::tokenizer::TokenizerSource::SentencePiece
    );
    let dense = load(&fixture("dense-fp16"), wv::DeviceRequest::Cpu);
    assert_eq!(dense.config.rope_theta, 500000.0);
    let gqa = load(
        &fixture("gptq4-actorder-sym-sharded"),
        wv::DeviceRequest::Cpu,
    );
    assert!(gqa.config.num_key_value_heads < gqa.config.num_attention_heads);
}

#[test]
fn progress_callback_reports_and_can_cancel() {
    let mut seen = Vec::new();
    Model::load(
        &fixture(SINGLE),
        LoadOptions {
            device: wv::DeviceRequest::Cpu,
            progress: Some(Box::new(|f| {
                seen.push(f);
                true
            })),
        },
    )
    .unwrap();
    assert!(seen.len() >= 3 && (seen.last().unwrap() - 1.0).abs() < 1e-6);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    let e = Model::load(
        &fixture(SINGLE),
        LoadOptions {
            device: wv::DeviceRequest::Cpu,
            progress: Some(Box::new(|_| false)),
        },
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, ErrorKind::Cancelled);
}

/// Rewrite the single-file fixture with `edit` applied to its tensor map.
fn rewrite(
    tag: &str,
    edit: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let dir = copy_model(&fixture(SINGLE), tag);
    let path = dir.join(SINGLE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
    dir
}

const QW: &str = "model.layers.0.self_attn.q_proj.qweight";

#[test]
fn truncated_file() {
    let dir = copy_model(&fixture(SINGLE), "trunc");
    let p = dir.join(SINGLE_FILE);
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len / 2).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat, "{e}");
    assert!(e.message.contains(SINGLE_FILE), "{e}");
}

#[test]
fn bad_header() {
    let dir = copy_model(&fixture(SINGLE), "hdr");
    let p = dir.join(SINGLE_FILE);
    let mut b = std::fs::read(&p).unwrap();
    b[8] = b'!'; // the JSON's opening brace
    std::fs::write(&p, &b).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat);
    assert!(e.message.contains("bad header"), "{e}");
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert!(load_err(&dir).message.contains("header length"));
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(load_err(&dir).kind, ErrorKind::ModelFormat);
}

#[test]
fn wrong_dtype() {
    let dir = rewrite("dtype", |m| {
        let t = m.get_mut(QW).unwrap();
        t.0 = Dtype::F32;
    });
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat);
    assert!(
        e.message.contains(QW)
            && e.message.contains("expected dtype I32")
            && e.message.contains("F32"),
        "{e}"
    );
}

#[test]
fn wrong_shape() {
    let dir = rewrite("shape", |m| {
        let t = m.get_mut(QW).unwrap();
        let (r, c) = (t.1[0], t.1[1]);
        t.1 = vec![c, r];
        if r == c {
            t.1 = vec![1, r * c];
        }
    });
    let e = load_err(&dir);
    assert!(
        e.message.contains(QW) && e.message.contains("expected shape"),
        "{e}"
    );
}

#[test]
fn g_idx_out_of_range() {
    let name = "model.layers.1.mlp.down_proj.g_idx";
    let dir = rewrite("gidx", |m| {
        let t = m.get_mut(name).unwrap();
        t.2[4..8].copy_from_slice(&999i32.to_le_bytes());
    });
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat);
    assert!(
        e.message.contains(name) && e.message.contains("g_idx[1] = 999"),
        "{e}"
    );
}

#[test]
fn missing_tensor() {
    let name = "model.layers.1.self_attn.v_proj.scales";
    let dir = rewrite("missing", |m| {
        m.remove(name);
    });
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat);
    assert!(
        e.message.contains("missing tensor") && e.message.contains(name),
        "{e}"
    );
}

#[test]
fn unsupported_bits_and_bad_json() {
    let dir = copy_model(&fixture(SINGLE), "bits");
    let q = dir.join("quantize_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&q).unwrap()).unwrap();
    v["bits"] = serde_json::json!(5);
    std::fs::write(&q, v.to_string()).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("5-bit"), "{e}");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 32,").unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat);
    assert!(
        e.message.contains("config.json") && e.message.contains("malformed JSON"),
        "{e}"
    );
}

#[test]
fn pickle_checkpoints_are_refused_unread() {
    let dir = copy_model(&fixture(SINGLE), "pickle");
    std::fs::remove_file(dir.join(SINGLE_FILE)).unwrap();
    // Not a real pickle: it must not even be opened.
    std::fs::write(dir.join("pytorch_model.bin"), b"\x80\x04garbage").unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("pickle"), "{e}");
}

#[test]
fn missing_folder_and_tokenizer() {
    let e = load_err(Path::new("/nonexistent/wv-model"));
    assert_eq!(e.kind, ErrorKind::Io);
    let dir = copy_model(&fixture(SINGLE), "notok");
    std::fs::remove_file(dir.join("tokenizer.model")).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::ModelFormat, "{e}");
}

#[test]
fn shard_index_naming_a_missing_file() {
    let dir = copy_model(&fixture("gptq4-actorder-sym-sharded"), "shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(
        e.message.contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
}

#[test]
fn dequantisation_matches_the_formula() {
    // W[k,n] = scales[g[k],n] * (q[k,n] - (z[g[k],n] + 1)), checked on raw tensors.
    let dir = fixture(SINGLE);
    let bytes = std::fs::read(dir.join(SINGLE_FILE)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let p = "model.layers.0.mlp.down_proj";
    let get = |s: &str| st.tensor(&format!("{p}.{s}")).unwrap();
    let i32s = |t: safetensors::tensor::TensorView| -> Vec<i32> {
        t.data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (qw, qz, gi) = (
        i32s(get("qweight")),
        i32s(get("qzeros")),
        i32s(get("g_idx")),
    );
    let sc: Vec<f32> = get("scales")
        .data()
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let outf = get("scales").shape()[1];
    let m = load(&dir, wv::DeviceRequest::Cpu);
    let hw = wv::weights::HostWeights::load(
        &wv::loader::TensorStore::open_dir(&dir).unwrap(),
        &m.config,
        &mut |_, _| true,
    )
    .unwrap();
    let wv::weights::Linear::Gptq(g) = &hw.layers[0].down else {
        panic!("not GPTQ")
    };
    for (k, n) in [(0, 0), (1, 0), (7, 3), (8, 5), (130, outf - 1), (255, 17)] {
        let q = (qw[(k / 8) * outf + n] as u32 >> ((k % 8) * 4)) & 15;
        let gk = gi[k] as usize;
        let z = ((qz[gk * outf / 8 + n / 8] as u32 >> ((n % 8) * 4)) & 15) + 1;
        let want = sc[gk * outf + n] * (q as f32 - z as f32);
        assert_eq!(g.dequant(k, n), want, "k={k} n={n}");
    }
}

/// Re-store every float tensor of a fixture in another dtype.
fn convert_floats(name: &str, file: &str, tag: &str, to: Dtype) -> PathBuf {
    let dir = copy_model(&fixture(name), tag);
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, t) in st.tensors() {
        if t.dtype() != Dtype::F16 {
            owned.push((n, t.dtype(), t.shape().to_vec(), t.data().to_vec()));
            continue;
        }
        let vals = t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32());
        let data: Vec<u8> = match to {
            Dtype::F32 => vals.flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::BF16 => vals
                .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        };
        owned.push((n, to, t.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    dir
}

#[test]
fn dense_f32_and_bf16_checkpoints_load() {
    let g = golden(&fixture("dense-fp16"));
    let n = g.ids.len();
    // f32 holds the fp16 values exactly: the goldens still apply at full precision.
    let dir = convert_floats("dense-fp16", "model.safetensors", "f32", Dtype::F32);
    let m = load(&dir, wv::DeviceRequest::Cpu);
    let l = m.logits(&g.ids, n).unwrap();
    assert!(rel_l2(&l, &g.logits) < 1e-4, "{}", rel_l2(&l, &g.logits));
    // bf16 rounds the weights: close, not equal.
    let dir = convert_floats("dense-fp16", "model.safetensors", "bf16", Dtype::BF16);
    let m = load(&dir, wv::DeviceRequest::Cpu);
    let l = m.logits(&g.ids, n).unwrap();
    let e = rel_l2(&l, &g.logits);
    assert!(e > 1e-6 && e < 5e-2, "bf16 error {e}");
}
