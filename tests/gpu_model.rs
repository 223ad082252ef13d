//! The CUDA backend's whole-model tests (the kernel-level tests are in tests/gpu.rs).
//!
//! Every test here needs a CUDA GPU and is ignored by default: run them on the device with
//! `gpu_model-<hash> --ignored --test-threads=1` (tools/gpu_suite.sh does, and under
//! compute-sanitizer).
//!
//! Model tests compare whole forward passes with the float64 goldens of tests/fixtures/models
//! (or `$WV_FIXTURES`, or .dev/fixtures) and with the CPU backend: fixtures and the demo model,
//! long prompts, sessions and device sampling, out of memory, and decode through the fused and
//! the persistent kernels on random in-memory models.

mod gpu_common;
use gpu_common::*;

use half::f16;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wv::backend::cuda::testing::random_gptq;
use wv::backend::DeviceSampling;
use wv::config::ModelConfig;
use wv::sampler::{argmax, Rng, Sampler};
use wv::weights::{HostWeights, LayerWeights, Linear};
use wv::{DeviceRequest, ErrorKind, LoadOptions, Model};

/// The repository root on this machine (the device runs the test binary from the copy's root).
fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("WV_ROOT") {
        return PathBuf::from(r);
    }
    let cwd = std::env::current_dir().unwrap();
    if cwd.join("Cargo.toml").exists() {
        cwd
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }
}

fn fixture_dirs() -> Vec<PathBuf> {
    let mut bases = Vec::new();
    if let Some(f) = std::env::var_os("WV_FIXTURES") {
        bases.push(PathBuf::from(f));
    }
    bases.push(root().join("tests/fixtures/models"));
    bases.push(root().join(".dev/fixtures"));
    for b in bases {
        let Ok(rd) = std::fs::read_dir(&b) else {
            continue;
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("golden.json").exists())
            .collect();
        if !v.is_empty() {
            v.sort();
            return v;
        }
    }
    Vec::new()
}

// ---------------------------------------------------------------------------------------------
// Model tests (GPU).

fn load(dir: &Path, device: DeviceRequest) -> Arc<Model> {
    Model::load(
        dir,
        LoadOptions {
            device,
            progress: None,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

struct Golden {
    ids: Vec<u32>,
    positions: Vec<usize>,
    vocab: usize,
    logits: Vec<f32>,
    greedy_prompt: Vec<u32>,
    greedy: Vec<u32>,
    margins: Vec<f32>,
}

fn golden(dir: &Path) -> Golden {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let u = |k: &str| -> Vec<u64> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let file = j
        .get("logits_file")
        .and_then(|v| v.as_str())
        .unwrap_or("golden_logits.f32");
    let raw = std::fs::read(dir.join(file)).unwrap();
    Golden {
        ids: u("ids").into_iter().map(|x| x as u32).collect(),
        positions: u("positions").into_iter().map(|x| x as usize).collect(),
        vocab: j["vocab"].as_u64().unwrap() as usize,
        logits: raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        greedy_prompt: u("greedy_prompt_ids")
            .into_iter()
            .map(|x| x as u32)
            .collect(),
        greedy: u("greedy").into_iter().map(|x| x as u32).collect(),
        margins: j["greedy_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect(),
    }
}

/// Greedy decoding through the backend's cached path: prefill the prompt, then one token at a time.
fn greedy(m: &Model, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let be = &m.backend;
    let mut st = be.new_state(prompt.len() + n + 1).unwrap();
    let mut logits = Vec::new();
    be.forward(st.as_mut(), prompt, 0, 1, &mut logits).unwrap();
    let (mut out, mut margins) = (Vec::new(), Vec::new());
    for i in 0..n {
        let best = argmax(&logits);
        let second = logits
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != best as usize)
            .map(|(_, &v)| v)
            .fold(f32::NEG_INFINITY, f32::max);
        margins.push(logits[best as usize] - second);
        out.push(best);
        if i + 1 < n {
            be.forward(st.as_mut(), &[best], prompt.len() + i, 1, &mut logits)
                .unwrap();
        }
    }
    (out, margins)
}

/// Compare two greedy runs up to the first step where the reference's margin is too thin to
/// call (rounding may flip it); returns the steps compared.
fn same_greedy(name: &str, got: &[u32], want: &[u32], margins: &[f32], min_margin: f32) -> usize {
    for i in 0..want.len().min(got.len()) {
        assert_eq!(
            got[i], want[i],
            "{name}: greedy differs at step {i} (margin {})",
            margins[i]
        );
        if margins[i] < min_margin {
            return i + 1;
        }
    }
    want.len()
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_fixtures_match_goldens_and_cpu() {
    let mut dirs = fixture_dirs();
    assert!(
        !dirs.is_empty(),
        "no fixtures found (tests/fixtures/models, .dev/fixtures or $WV_FIXTURES)"
    );
    let demo = root().join("models/kjv-tiny");
    if demo.join("golden.json").exists() {
        dirs.push(demo);
    }
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let g = golden(&dir);
        let gpu = load(&dir, DeviceRequest::Cuda(0));
        let cpu = load(&dir, DeviceRequest::Cpu);
        assert_eq!(gpu.backend.kind(), wv::backend::DeviceKind::Cuda);
        let lg = gpu.logits(&g.ids, g.ids.len()).unwrap();
        let lc = cpu.logits(&g.ids, g.ids.len()).unwrap();
        let pick = |l: &[f32]| -> Vec<f32> {
            g.positions
                .iter()
                .flat_map(|&p| l[p * g.vocab..(p + 1) * g.vocab].iter().copied())
                .collect()
        };
        let (eg, ec) = (rel_l2(&pick(&lg), &g.logits), rel_l2(&lg, &lc));
        // Token by token through the cache must agree with the one-shot pass.
        let be = &gpu.backend;
        let mut st = be.new_state(g.ids.len()).unwrap();
        let mut last = Vec::new();
        let mut stepwise = Vec::new();
        for (i, &tok) in g.ids.iter().enumerate() {
            be.forward(st.as_mut(), &[tok], i, 1, &mut last).unwrap();
            stepwise.extend_from_slice(&last);
        }
        let es = rel_l2(&stepwise, &lg);
        let (gg, _) = greedy(&gpu, &g.greedy_prompt, g.greedy.len());
        let (cg, cm) = greedy(&cpu, &g.greedy_prompt, g.greedy.len());
        let n_gold = same_greedy(
            &format!("{name} vs golden"),
            &gg,
            &g.greedy,
            &g.margins,
            0.05,
        );
        let n_cpu = same_greedy(&format!("{name} vs cpu"), &gg, &cg, &cm, 0.05);
        eprintln!(
            "fixture {name:32} ({}): vs golden {eg:.2e}, vs cpu {ec:.2e}, stepwise {es:.2e}, greedy = golden for {n_gold}, = cpu for {n_cpu}",
            gpu.backend.describe()
        );
        assert!(eg < 1e-2, "{name}: GPU logits vs golden rel L2 {eg}");
        assert!(ec < 1e-2, "{name}: GPU vs CPU rel L2 {ec}");
        assert!(es < 1e-2, "{name}: stepwise vs one-shot rel L2 {es}");
        // What a decode step reads (`wv bench`'s roofline): all but an untied embedding table.
        let table = g.vocab * gpu.config.hidden_size * 2;
        let untied = if gpu.config.tie_word_embeddings {
            0
        } else {
            table
        };
        assert_eq!(
            gpu.backend.weight_bytes() - gpu.backend.decode_weight_bytes(),
            untied,
            "{name}: decode bytes"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_long_prompt_chunks_and_sessions() {
    let dirs = fixture_dirs();
    let dir = dirs
        .iter()
        .find(|d| d.ends_with("gptq4-actorder-sym-sharded"))
        .unwrap_or(&dirs[0]);
    let gpu = load(dir, DeviceRequest::Cuda(0));
    let cpu = load(dir, DeviceRequest::Cpu);
    let mut rng = Rng::new(21);
    // Longer than one prefill chunk (1,024): chunks attend to the earlier ones.
    let toks: Vec<u32> = (0..1100)
        .map(|_| 3 + (rng.next_u64() % 31000) as u32)
        .collect();
    let lg = gpu.logits(&toks, 3).unwrap();
    let lc = cpu.logits(&toks, 3).unwrap();
    let e = rel_l2(&lg, &lc);
    eprintln!("1100-token prompt: last 3 logits vs cpu {e:.2e}");
    assert!(e < 1e-2, "long prompt: {e}");
    // Two sessions interleaved equal each alone.
    let be = &gpu.backend;
    let (mut a, mut b) = (be.new_state(64).unwrap(), be.new_state(64).unwrap());
    let (mut la, mut lb) = (Vec::new(), Vec::new());
    be.forward(a.as_mut(), &toks[..10], 0, 1, &mut la).unwrap();
    be.forward(b.as_mut(), &toks[20..27], 0, 1, &mut lb)
        .unwrap();
    be.forward(a.as_mut(), &toks[10..11], 10, 1, &mut la)
        .unwrap();
    be.forward(b.as_mut(), &toks[27..28], 7, 1, &mut lb)
        .unwrap();
    // The same calls on a fresh session, alone: exactly the same logits.
    let alone = |first: &[u32], next: u32| -> Vec<f32> {
        let mut s = be.new_state(64).unwrap();
        let mut l = Vec::new();
        be.forward(s.as_mut(), first, 0, 1, &mut l).unwrap();
        be.forward(s.as_mut(), &[next], first.len(), 1, &mut l)
            .unwrap();
        l
    };
    assert_eq!(
        la,
        alone(&toks[..10], toks[10]),
        "session a was disturbed by b"
    );
    assert_eq!(
        lb,
        alone(&toks[20..27], toks[27]),
        "session b was disturbed by a"
    );
    // Rewriting from an earlier position (what truncation does) gives the fresh result.
    be.forward(a.as_mut(), &toks[20..27], 0, 1, &mut la)
        .unwrap();
    be.forward(a.as_mut(), &toks[27..28], 7, 1, &mut la)
        .unwrap();
    assert_eq!(la, lb, "rewrite from position 0");
    // Device sampling: greedy equals the host's arg-max, with and without the penalty.
    let mut st = be.new_state(64).unwrap();
    let mut l = Vec::new();
    be.forward(st.as_mut(), &toks[..5], 0, 1, &mut l).unwrap();
    let mut st2 = be.new_state(64).unwrap();
    be.forward(st2.as_mut(), &toks[..5], 0, 1, &mut l).unwrap();
    be.forward(st2.as_mut(), &toks[5..6], 5, 1, &mut l).unwrap();
    let hist = &toks[..6];
    for p in [1.0f32, 1.3] {
        let s = DeviceSampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: p,
            uniform: 0.5,
            last: false,
        };
        let id = be
            .forward_sample(st.as_mut(), toks[5], 5, hist, &s)
            .expect("greedy runs on the device")
            .unwrap();
        let mut pl = l.clone();
        Sampler::apply_penalty(&mut pl, hist, p);
        assert_eq!(id, argmax(&pl), "device greedy, penalty {p}");
    }
    // Sampling proper (temperature, top-k, top-p) runs on the device too, as the host's
    // `choose` over the same penalised logits (st2 gives the logits at position 6); top-k 0
    // (every token a candidate) stays on the host.
    let hist = &toks[..7];
    be.forward(st2.as_mut(), &toks[6..7], 6, 1, &mut l).unwrap();
    let mut pl = l.clone();
    Sampler::apply_penalty(&mut pl, hist, 1.1);
    let s = DeviceSampling {
        temperature: 0.7,
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.1,
        uniform: 0.5,
        last: false,
    };
    let id = be
        .forward_sample(st.as_mut(), toks[6], 6, hist, &s)
        .expect("sampling runs on the device")
        .unwrap();
    let want = wv::sampler::choose(&mut Vec::new(), &pl, 0.7, 40, 0.9, 0.5);
    assert_eq!(id, want, "device sampling");
    let s = DeviceSampling { top_k: 0, ..s };
    assert!(
        be.forward_sample(st.as_mut(), toks[7], 7, &toks[..8], &s)
            .is_none(),
        "top-k 0 samples on the host"
    );
    // Decode through captured CUDA graphs equals decode launched kernel by kernel, exactly.
    std::env::set_var("WV_CUDA_GRAPH", "0");
    let eager = load(dir, DeviceRequest::Cuda(0));
    std::env::remove_var("WV_CUDA_GRAPH");
    let run = |m: &Model| -> Vec<f32> {
        let mut st = m.backend.new_state(100).unwrap();
        let mut all = Vec::new();
        let mut l = Vec::new();
        m.backend
            .forward(st.as_mut(), &toks[..9], 0, 1, &mut l)
            .unwrap();
        for i in 9..40 {
            m.backend
                .forward(st.as_mut(), &toks[i..i + 1], i, 1, &mut l)
                .unwrap();
            all.extend_from_slice(&l);
        }
        all
    };
    let (a, b) = (run(&gpu), run(&eager));
    assert_eq!(a, b, "graph replay differs from eager launches");
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_out_of_memory_is_an_error() {
    let dirs = fixture_dirs();
    let gpu = load(&dirs[0], DeviceRequest::Cuda(0));
    let be = &gpu.backend;
    let before = be.peak_device_bytes().unwrap();
    // A context whose cache cannot fit any GPU: an OutOfMemory error naming the sizes.
    let e = be
        .new_state(1 << 31)
        .err()
        .expect("a 2^31-position cache cannot fit");
    eprintln!("huge session: {e}");
    assert_eq!(e.kind, ErrorKind::OutOfMemory, "{e}");
    assert!(e.message.contains("GiB"), "{e}");
    // Everything taken was freed: a normal session still works.
    let mut st = be.new_state(32).unwrap();
    let mut l = Vec::new();
    be.forward(st.as_mut(), &[1, 2, 3], 0, 1, &mut l).unwrap();
    assert!(l.iter().all(|v| v.is_finite()));
    assert!(be.peak_device_bytes().unwrap() >= before);
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_demo_greedy_equals_cpu() {
    // The demo model is part of the repository (README: the first command runs it).
    let dir = root().join("models/kjv-tiny");
    assert!(
        dir.join("config.json").exists(),
        "{} is missing",
        dir.display()
    );
    let gpu = load(&dir, DeviceRequest::Cuda(0));
    let cpu = load(&dir, DeviceRequest::Cpu);
    for text in [
        "In the beginning",
        "And the LORD said unto Moses,",
        "Blessed are",
    ] {
        let mut ids = vec![gpu.tokenizer.bos_id()];
        ids.extend(gpu.tokenizer.encode(text, false).unwrap());
        let (g, _) = greedy(&gpu, &ids, 32);
        let (c, cm) = greedy(&cpu, &ids, 32);
        let n = same_greedy(&format!("kjv-tiny {text:?}"), &g, &c, &cm, 0.0);
        eprintln!(
            "kjv-tiny {text:?}: greedy equal for {n} of 32 tokens; min CPU margin {:.3}",
            cm.iter().cloned().fold(f32::INFINITY, f32::min)
        );
        assert_eq!(g, c, "kjv-tiny {text:?}");
    }
}

/// Sessions sample on the device with the model card's settings: a fixed seed gives the same
/// text twice, and tokens come out of the vocabulary.
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn session_samples_on_the_device() {
    let dir = root().join("models/kjv-tiny");
    let m = load(&dir, DeviceRequest::Cuda(0));
    let opts = wv::GenerateOptions {
        max_tokens: 40,
        seed: Some(7),
        ..wv::GenerateOptions::default()
    };
    let run = || {
        let mut s = wv::Session::new(m.clone(), &wv::SessionOptions::default()).unwrap();
        let mut toks = Vec::new();
        s.generate("And the LORD said", &opts, &mut |t, _| {
            toks.push(t);
            true
        })
        .unwrap();
        toks
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "same seed, same tokens");
    assert!(a.len() >= 2);
    let v = m.config.vocab_size as u32;
    assert!(a.iter().all(|&t| t < v || t == wv::session::NO_TOKEN));
    eprintln!("device sampling: {:?}", &a[..a.len().min(12)]);
}

/// The repetition penalty on the device follows the session's history as the host's does:
/// two states on one model, fed the same tokens — one sampling on the device, the other
/// taking its logits to the host and sampling there with the same uniforms — choose the same
/// token at every step, while the history grows by one id a call (appended on the stream) and
/// after a third state with another history has used the device's copy (written whole).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn device_penalty_follows_the_history() {
    let m = load(&root().join("models/kjv-tiny"), DeviceRequest::Cuda(0));
    let be = &m.backend;
    let v = m.config.vocab_size;
    let (t, k, p, pen) = (0.7f32, 40usize, 0.95f32, 1.3f32);
    let mut dev = be.new_state(64).unwrap();
    let mut host = be.new_state(64).unwrap();
    let mut other = be.new_state(64).unwrap();
    let prompt = [1u32, 450, 1000, 33, 7, 450, 1000];
    let mut logits = Vec::new();
    be.forward(dev.as_mut(), &prompt[..6], 0, 1, &mut logits)
        .unwrap();
    be.forward(host.as_mut(), &prompt[..6], 0, 1, &mut logits)
        .unwrap();
    let mut history = prompt.to_vec();
    let mut next = prompt[6];
    let mut rng = Rng::new(5);
    let mut cand = Vec::new();
    for step in 0..16 {
        let pos = history.len() - 1;
        let u = rng.uniform();
        let s = DeviceSampling {
            temperature: t,
            top_k: k,
            top_p: p,
            repetition_penalty: pen,
            uniform: u,
            last: false,
        };
        let got = be
            .forward_sample(dev.as_mut(), next, pos, &history, &s)
            .expect("the CUDA backend samples these settings")
            .unwrap();
        be.forward(host.as_mut(), &[next], pos, 1, &mut logits)
            .unwrap();
        Sampler::apply_penalty(&mut logits, &history, pen);
        let want = wv::sampler::choose(&mut cand, &logits, t, k, p, u);
        assert_eq!(got, want, "step {step}: device and host sampling differ");
        assert!((got as usize) < v);
        if step == 8 {
            // Another history on the same device copy, then back.
            let o = [1u32, 99, 98, 97];
            be.forward(other.as_mut(), &o[..3], 0, 1, &mut logits)
                .unwrap();
            be.forward_sample(other.as_mut(), o[3], 3, &o, &s)
                .unwrap()
                .unwrap();
        }
        history.push(got);
        next = got;
    }
}

mod gpu_decode;

/// `forward_sample`'s host fallback: when more values tie at the k-th largest logit than the
/// device sorts (`SAMPLE_CAP`), the kernel returns a sentinel and the backend samples on the
/// host from the device's logits. A model whose lm_head is all zeros ties every one of its 4,096
/// logits; with top-k 10 the draw must equal the host sampler's on the same logits, for several
/// uniforms (and a greedy step still picks on the device).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn device_sampling_falls_back_to_the_host_on_many_ties() {
    use wv::backend::Backend;
    let vocab = 4096;
    assert!(vocab > wv::backend::cuda::kernels::SAMPLE_CAP);
    let c = ModelConfig {
        vocab_size: vocab,
        tie_word_embeddings: false,
        ..tiny_config()
    };
    let host = {
        let mut rng = Rng::new(11);
        let h = c.hidden_size;
        let f = c.intermediate_size;
        let layer = LayerWeights {
            input_norm: vec![1.0; h],
            post_attention_norm: vec![1.0; h],
            q: dense(&mut rng, h, h),
            k: dense(&mut rng, h, h),
            v: dense(&mut rng, h, h),
            o: dense(&mut rng, h, h),
            gate: dense(&mut rng, f, h),
            up: dense(&mut rng, f, h),
            down: dense(&mut rng, h, f),
        };
        HostWeights {
            config: c.clone(),
            embed: rand_vec(&mut rng, vocab * h, 1.0)
                .into_iter()
                .map(f16::from_f32)
                .collect(),
            layers: vec![layer],
            final_norm: vec![1.0; h],
            lm_head: Some(vec![f16::from_f32(0.0); vocab * h]),
            embed_exact: None,
            lm_head_exact: None,
        }
    };
    let cuda = wv::backend::cuda::CudaBackend::new(&host, 0).unwrap();
    let mut st = cuda.new_state(16).unwrap();
    let mut cand = Vec::new();
    let zeros = vec![0f32; vocab];
    for (i, u) in [0.0, 0.13, 0.5, 0.77, 0.999].into_iter().enumerate() {
        let s = DeviceSampling {
            temperature: 0.7,
            top_k: 10,
            top_p: 0.95,
            repetition_penalty: 1.0,
            uniform: u,
            last: false,
        };
        let got = cuda
            .forward_sample(st.as_mut(), 3 + i as u32, i, &[], &s)
            .expect("the CUDA backend samples these settings")
            .unwrap();
        let want = wv::sampler::choose(&mut cand, &zeros, 0.7, 10, 0.95, u);
        assert_eq!(got, want, "uniform {u}: host fallback");
    }
    // Greedy on all-equal logits: the host's arg-max (the first index), on the device.
    let s = DeviceSampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
        uniform: 0.5,
        last: false,
    };
    let got = cuda
        .forward_sample(st.as_mut(), 5, 5, &[], &s)
        .unwrap()
        .unwrap();
    assert_eq!(got, argmax(&zeros), "greedy arg-max of ties");
}
