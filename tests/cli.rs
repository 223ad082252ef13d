//! The `wv` program: its interface is what scripts depend on.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn wv(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wv"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_clean_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {stderr:?}"
    );
    assert!(lines[0].starts_with("wv: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

#[test]
fn tokenize_prints_the_reference_ids() {
    for name in ["gptq4-g128-asym-spm", "gptq4-actorder-sym-sharded"] {
        let dir = fixture(name);
        let g = golden(&dir);
        let (code, out, err) = wv(&[
            "tokenize",
            "--model",
            dir.to_str().unwrap(),
            "--text",
            &g.prompt,
        ]);
        assert_eq!(code, 0, "{err}");
        let ids: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(ids, g.ids, "{name}");
    }
}

#[test]
fn logits_prints_the_last_positions() {
    let dir = fixture("gptq3-g32");
    let g = golden(&dir);
    let toks: Vec<String> = g.ids.iter().map(|t| t.to_string()).collect();
    let (code, out, err) = wv(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--tokens",
        &toks.join(","),
        "--last",
        "2",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let n = g.ids.len();
    for (i, row) in rows.iter().enumerate() {
        let got: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let p = n - 2 + i;
        let r = g.positions.iter().position(|&q| q == p).unwrap();
        let want = &g.logits[r * g.vocab..(r + 1) * g.vocab];
        assert!(rel_l2(&got, want) < 1e-4);
    }
}

#[test]
fn info_prints_json() {
    let dir = fixture("gptq4-g128-asym-spm");
    let (code, out, err) = wv(&["info", "--model", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["quantization"]["bits"], 4);
    assert_eq!(v["quantization"]["group_size"], 128);
    assert_eq!(v["tokenizer"]["source"], "tokenizer.model");
    assert!(v["memory"]["checkpoint_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(v["memory"]["cpu_kv_bytes_per_token"].as_u64().unwrap() > 0);
}

#[test]
fn generate_streams_text_and_reports_timings_on_stderr() {
    let dir = fixture("gptq4-g128-asym-spm");
    let (code, out, err) = wv(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
    assert!(err.contains("tokens/s"), "{err}");
    // Seeded sampling: same output twice.
    let args = [
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hi",
        "--max-tokens",
        "8",
        "--seed",
        "3",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        "--repeat-penalty",
        "1.2",
        "--temperature",
        "0.8",
        "--stop",
        "zz",
        "--chat",
    ];
    assert_eq!(wv(&args).1, wv(&args).1);
}

/// `wv bench` on the CPU over 8 prompt and 4 generated tokens of a small fixture, with `extra`
/// options.
fn bench_on_cpu(extra: &[&str]) -> (i32, String, String) {
    let dir = fixture("gptq2-gall");
    let mut args = vec![
        "bench",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "4",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    wv(&args)
}

#[test]
fn bench_prints_json() {
    let (code, out, err) = bench_on_cpu(&[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in [
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "time_to_first_token_ms",
        "peak_rss_bytes",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert_eq!(v["context"], 12, "{v}");
    // The CPU backend has no device sampling: decode chose its tokens on the host.
    assert_eq!(v["decode_sampling"], "host", "{v}");
}

#[test]
fn bench_sample_option_is_checked() {
    let (code, out, err) = bench_on_cpu(&["--sample", "host"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decode_sampling"], "host", "{v}");
    assert_eq!(v["sampling"], "greedy", "{v}");
    let (code, out, err) = bench_on_cpu(&["--sample", "card"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sampling"], "card", "{v}");
    let (code, _, err) = bench_on_cpu(&["--sample", "gpu"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--sample takes session, host or card"),
        "{err}"
    );
}

/// `--host-ms` adds that much host work per decoded token (reported, and in the decode
/// time), and refuses what is not 0 to 1000 ms.
#[test]
fn bench_host_work_per_token() {
    let (code, out, err) = bench_on_cpu(&["--host-ms", "20"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["host_ms_per_token"], 20.0, "{v}");
    assert!(v["decode_ms_per_token"].as_f64().unwrap() >= 20.0, "{v}");
    for bad in ["-1", "1001", "NaN", "x"] {
        let (code, _, err) = bench_on_cpu(&["--host-ms", bad]);
        assert_eq!(code, 2, "--host-ms {bad}: {err}");
        assert!(err.contains("host-ms"), "--host-ms {bad}: {err}");
    }
}

#[test]
fn bench_context_sizes_the_session() {
    let run = |context: &str| bench_on_cpu(&["--context", context]);
    let (code, out, err) = run("40");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["context"], 40, "{v}");
    // Too small for the prompt and the generated tokens: a usage error naming both.
    let (code, _, err) = run("11");
    assert_ne!(code, 0);
    assert!(err.contains("12 prompt and generated tokens"), "{err}");
}

#[test]
fn chat_reads_turns_from_stdin() {
    let dir = fixture("gptq4-g128-asym-spm");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wv"))
        .args([
            "chat",
            "--model",
            dir.to_str().unwrap(),
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--device",
            "cpu",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\n/reset\nagain\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("conversation reset"));
}

#[test]
fn bad_input_gives_one_clear_line() {
    let (code, _, err) = wv(&["generate", "--bogus", "1"]);
    assert_eq!(code, 2);
    one_clean_line(&err);
    assert!(err.contains("--bogus"));
    let (code, _, err) = wv(&["info", "--model", "/nonexistent/model"]);
    assert_eq!(code, 1);
    one_clean_line(&err);
    assert!(err.contains("/nonexistent/model"));
    let (code, _, err) = wv(&["logits", "--model", "/x", "--tokens", "1,a"]);
    assert_eq!(code, 2);
    one_clean_line(&err);
    let (code, _, err) = wv(&["frobnicate"]);
    assert_eq!(code, 2);
    one_clean_line(&err);
    let dir = copy_model(&fixture("gptq4-g128-asym-spm"), "cli-corrupt");
    std::fs::write(
        dir.join("gptq_model-4bit-128g.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}      ",
    )
    .unwrap();
    let (code, _, err) = wv(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--tokens",
        "1,2",
    ]);
    assert_eq!(code, 1);
    one_clean_line(&err);
    assert!(err.contains("bad header"), "{err}");
    let (code, _, err) = wv(&[
        "logits",
        "--model",
        fixture("gptq2-gall").to_str().unwrap(),
        "--tokens",
        "1,99999999",
    ]);
    assert_eq!(code, 1);
    one_clean_line(&err);
    let (code, _, err) = wv(&[
        "generate",
        "--model",
        fixture("gptq2-gall").to_str().unwrap(),
        "--prompt",
        "x",
        "--top-p",
        "7",
    ]);
    assert_eq!(code, 2);
    one_clean_line(&err);
}
