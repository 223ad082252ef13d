//! `wv bench`: prefill and decode speed, time to first token and peak memory, as JSON.
//!
//! The prompt is `n_prompt` pseudo-random ordinary token ids (BOS first); decode is greedy
//! (or, with [`Sampling::Card`], the model card's sampling) for exactly `n_gen` tokens (EOS
//! does not stop it), one forward pass per token, so the numbers measure the engine, not the
//! text. The prompt is fed in chunks of the backend's
//! `prefill_chunk`, as a session feeds it. Bytes read per decoded token (weights plus the
//! KV cache at the mean decode position) are reported for roofline fractions. `host_ms` spins
//! the CPU for that long after each decoded token, as an application's per-token work (a
//! callback, detokenising) would: decode's tokens/s then include it, and show how much of it a
//! backend hides behind the next step (the CUDA backend's decode ahead).

use crate::error::Result;
use crate::model::Model;
use crate::sampler::{GenerateOptions, Rng, Sampler};
use serde_json::{json, Value};
use std::time::Instant;

/// How decode chooses its tokens, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Greedy, on the device when the backend can (as sessions do), else on the host.
    Session,
    /// Greedy, always on the host, from the step's logits.
    Host,
    /// The model card's sampling ([`GenerateOptions::default`]: temperature 0.7, top-k 40,
    /// top-p 0.95, repetition penalty 1.1 over the prompt and the tokens so far, a seeded
    /// draw) where sessions make it: on the device when the backend can, else on the host.
    Card,
}

/// The most host work per decoded token `run` takes (ms).
pub const MAX_HOST_MS: f64 = 1000.0;

/// Run the benchmark and return its report. The measured session holds `context` positions
/// (as a chat session's context length; 0: exactly the prompt and the generated tokens).
pub fn run(
    model: &Model,
    n_prompt: usize,
    n_gen: usize,
    context: usize,
    load_seconds: f64,
    sampling: Sampling,
    host_ms: f64,
) -> Result<Value> {
    let c = &model.config;
    if !(0.0..=MAX_HOST_MS).contains(&host_ms) {
        return Err(crate::Error::invalid(format!(
            "host work per token must be 0 to {MAX_HOST_MS} ms, not {host_ms}"
        )));
    }
    let host_work = std::time::Duration::from_secs_f64(host_ms / 1e3);
    let need = n_prompt + n_gen;
    if need > c.max_position_embeddings {
        return Err(crate::Error::invalid(format!(
            "{n_prompt} prompt + {n_gen} generated tokens exceed the model's context of {}",
            c.max_position_embeddings
        )));
    }
    if context > c.max_position_embeddings || (context > 0 && context < need) {
        return Err(crate::Error::invalid(format!(
            "a context of {context} positions must hold the {need} prompt and generated tokens \
             and fit the model's {}",
            c.max_position_embeddings
        )));
    }
    let ctx = if context == 0 { need } else { context };
    let mut rng = Rng::new(1234);
    let mut tokens = vec![c.bos_token_id];
    while tokens.len() < n_prompt {
        tokens.push(259 + (rng.next_u64() % (c.vocab_size as u64 - 259)) as u32);
    }
    let be = &model.backend;
    let mut logits = Vec::new();
    // Warm-up on a separate state with the same prompt (kernel compilation, caches, the
    // matrix library's choice of kernels for these shapes), then the measured runs. The
    // warm-up's prefill is reported as the cold one.
    let cold = {
        let warm_ctx = (tokens.len() + 1).min(c.max_position_embeddings);
        let mut warm = be.new_state(warm_ctx)?;
        let t = Instant::now();
        be.forward(warm.as_mut(), &tokens, 0, 1, &mut logits)?;
        let cold = t.elapsed().as_secs_f64();
        if tokens.len() < warm_ctx {
            be.forward(warm.as_mut(), &[tokens[0]], tokens.len(), 1, &mut logits)?;
        }
        cold
    };
    // Made after the warm-up's state is dropped, so peak memory counts one session.
    let mut state = be.new_state(ctx)?;
    let _ = be.profile_report(); // drop the warm-up's timings

    // The prompt goes in as a session feeds it: chunks of the backend's prefill size.
    let chunk = be.prefill_chunk().max(1);
    let t0 = Instant::now();
    for c0 in (0..tokens.len()).step_by(chunk) {
        let c1 = (c0 + chunk).min(tokens.len());
        be.forward(state.as_mut(), &tokens[c0..c1], c0, 1, &mut logits)?;
    }
    let prefill = t0.elapsed().as_secs_f64();
    // The choice as a session makes it: greedy, or the model card's sampling with a seeded
    // generator and, for its repetition penalty, the history (the prompt and every token fed).
    let opts = GenerateOptions {
        seed: Some(7),
        ..match sampling {
            Sampling::Card => GenerateOptions::default(),
            Sampling::Session | Sampling::Host => GenerateOptions::greedy(),
        }
    };
    let mut sampler = Sampler::new(&opts);
    let penalised = opts.repetition_penalty != 1.0;
    let mut history = if penalised {
        tokens.clone()
    } else {
        Vec::new()
    };
    let mut next = sampler.sample(&mut logits, &history);
    let ttft = t0.elapsed().as_secs_f64();
    let profile_prefill = be.profile_report();
    let mut on_device = sampling != Sampling::Host;
    let t1 = Instant::now();
    for i in 0..n_gen {
        let pos = n_prompt + i;
        if penalised {
            history.push(next);
        }
        if on_device {
            let step = sampler.device_step(i + 1 == n_gen, |ds| {
                be.forward_sample(state.as_mut(), next, pos, &history, ds)
            });
            match step {
                Some(r) => {
                    next = r?;
                    spin(host_work);
                    continue;
                }
                None => on_device = false,
            }
        }
        be.forward(state.as_mut(), &[next], pos, 1, &mut logits)?;
        next = sampler.sample(&mut logits, &history);
        spin(host_work);
    }
    let decode = t1.elapsed().as_secs_f64();
    let profile_decode = be.profile_report();
    let weight_bytes = be.weight_bytes();
    // What a step reads: its weights (an untied embedding table only a row of it, not counted)
    // and the cache up to the mean decode position.
    let decode_weight_bytes = be.decode_weight_bytes();
    let kv_per_tok = model.kv_bytes_per_token();
    let mean_ctx = n_prompt as f64 + n_gen as f64 / 2.0;
    let bytes_per_token = decode_weight_bytes as f64 + kv_per_tok as f64 * mean_ctx;
    let mut report = json!({
        "device": be.describe(),
        "model": model.dir.display().to_string(),
        "prompt_tokens": n_prompt,
        "gen_tokens": n_gen,
        "context": ctx,
        "load_seconds": load_seconds,
        "prefill_seconds": prefill,
        "prefill_chunk": chunk,
        "cold_prefill_seconds": cold,
        "prefill_tokens_per_s": n_prompt as f64 / prefill,
        "time_to_first_token_ms": ttft * 1e3,
        "decode_seconds": decode,
        "host_ms_per_token": host_ms,
        "sampling": match sampling {
            Sampling::Card => "card",
            Sampling::Session | Sampling::Host => "greedy",
        },
        "decode_sampling": if on_device { "device" } else { "host" },
        "decode_tokens_per_s": if n_gen > 0 { n_gen as f64 / decode } else { 0.0 },
        "decode_ms_per_token": if n_gen > 0 { decode * 1e3 / n_gen as f64 } else { 0.0 },
        "weight_bytes": weight_bytes,
        "decode_weight_bytes": decode_weight_bytes,
        "kv_bytes_per_token": kv_per_tok,
        "bytes_read_per_decoded_token": bytes_per_token,
        "decode_bytes_per_s": if n_gen > 0 { bytes_per_token * n_gen as f64 / decode } else { 0.0 },
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_device_bytes": be.peak_device_bytes(),
    });
    if let (Some(p), Some(d)) = (profile_prefill, profile_decode) {
        let table = |rows: Vec<(String, usize, f64)>| -> Value {
            rows.into_iter()
                .map(|(name, n, ms)| json!({"op": name, "launches": n, "ms": ms}))
                .collect()
        };
        report["profile_prefill"] = table(p);
        report["profile_decode"] = table(d);
    }
    Ok(report)
}

/// Keep this thread busy for `d` (an application's per-token work; a sleep would give the
/// core away and wake late).
fn spin(d: std::time::Duration) {
    if d.is_zero() {
        return;
    }
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The process's peak resident memory (getrusage), in bytes.
pub fn peak_rss_bytes() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
            return ru.ru_maxrss as u64 * 1024;
        }
    }
    0
}
