//! Shared helpers for the integration tests: fixture paths, temporary folders, goldens.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/models/<name>`
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

/// Every fixture model folder (sorted).
pub fn all_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/models"))
        .expect("tests/fixtures/models exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    v.sort();
    assert!(
        v.len() >= 7,
        "expected at least 7 fixture models, found {}",
        v.len()
    );
    v
}

/// Every checkpoint with goldens: the fixtures and the bundled demo model.
pub fn golden_models() -> Vec<PathBuf> {
    let mut v = all_fixtures();
    v.push(demo_model());
    v
}

pub fn demo_model() -> PathBuf {
    root().join("models/kjv-tiny")
}

/// A fresh empty folder under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "wv-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Copy a model folder (following symlinks) into a new temp folder.
pub fn copy_model(src: &Path, tag: &str) -> PathBuf {
    let dst = temp_dir(tag);
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

/// A fixture's golden data.
pub struct Golden {
    pub ids: Vec<u32>,
    pub positions: Vec<usize>,
    pub vocab: usize,
    /// [positions, vocab]
    pub logits: Vec<f32>,
    pub greedy_prompt_ids: Vec<u32>,
    pub greedy: Vec<u32>,
    pub greedy_margins: Vec<f64>,
    pub prompt: String,
    pub oracle: String,
}

pub fn golden(dir: &Path) -> Golden {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let raw =
        std::fs::read(dir.join(v["logits_file"].as_str().unwrap_or("golden_logits.f32"))).unwrap();
    let logits: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Golden {
        ids: ids("ids"),
        positions: v["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect(),
        vocab: v["vocab"].as_u64().unwrap() as usize,
        logits,
        greedy_prompt_ids: ids("greedy_prompt_ids"),
        greedy: ids("greedy"),
        greedy_margins: v["greedy_margins"]
            .as_array()
            .map_or(vec![], |a| a.iter().map(|x| x.as_f64().unwrap()).collect()),
        prompt: v["prompt"].as_str().unwrap_or("").to_string(),
        oracle: v["oracle"].as_str().unwrap_or("").to_string(),
    }
}

/// ‖a − b‖ / ‖b‖
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den).sqrt()
}

/// The backends available here: always the CPU; CUDA when `WV_TEST_CUDA=1` (the device suite).
pub fn devices() -> Vec<wv::DeviceRequest> {
    let mut d = vec![wv::DeviceRequest::Cpu];
    if std::env::var("WV_TEST_CUDA").is_ok_and(|v| v == "1") {
        d.push(wv::DeviceRequest::Cuda(0));
    }
    d
}

pub fn load(dir: &Path, device: wv::DeviceRequest) -> std::sync::Arc<wv::Model> {
    wv::Model::load(
        dir,
        wv::LoadOptions {
            device,
            progress: None,
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}
