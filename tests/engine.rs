//! The engine against the oracle: logits and greedy continuations equal transformers' float64
//! results on every fixture checkpoint, on every backend available; sessions, sampling, stop
//! strings, streaming and context limits behave as documented.

mod common;
use common::*;
use wv::{ErrorKind, GenerateOptions, Session, SessionOptions, StopReason};

#[test]
fn logits_match_goldens_at_every_position() {
    for dev in devices() {
        for dir in golden_models() {
            let g = golden(&dir);
            let model = load(&dir, dev);
            let n = g.ids.len();
            let logits = model.logits(&g.ids, n).unwrap();
            assert_eq!(g.vocab, model.config.vocab_size);
            let tol = if dev == wv::DeviceRequest::Cpu {
                1e-4
            } else {
                1e-2
            };
            for (row, &p) in g.positions.iter().enumerate() {
                let got = &logits[p * g.vocab..(p + 1) * g.vocab];
                let want = &g.logits[row * g.vocab..(row + 1) * g.vocab];
                let e = rel_l2(got, want);
                assert!(
                    e < tol,
                    "{} ({dev:?}) position {p}: relative L2 {e:.3e} ≥ {tol:e}",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn greedy_continuations_match_reference() {
    for dev in devices() {
        for dir in golden_models() {
            let g = golden(&dir);
            if g.greedy.is_empty() {
                continue;
            }
            let model = load(&dir, dev);
            let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
            s.set_tokens(g.greedy_prompt_ids.clone()).unwrap();
            // Compare only while the reference's choice is unambiguous: a margin of 1e-3 for
            // f32 arithmetic, 5e-2 for the GPU's f16 weights and activations.
            let min_margin = if dev == wv::DeviceRequest::Cpu {
                1e-3
            } else {
                5e-2
            };
            let mut n_check = g.greedy.len();
            if let Some(i) = g.greedy_margins.iter().position(|&m| m < min_margin) {
                n_check = i + 1;
            }
            let opts = GenerateOptions {
                max_tokens: n_check,
                ..GenerateOptions::greedy()
            };
            let mut got = Vec::new();
            s.generate("", &opts, &mut |t, _| {
                if t != wv::session::NO_TOKEN {
                    got.push(t);
                }
                true
            })
            .unwrap();
            let eos = model.config.eos_token_id;
            let want: Vec<u32> = g.greedy[..n_check].to_vec();
            let cut = want
                .iter()
                .position(|&t| t == eos)
                .map_or(want.len(), |i| i + 1);
            assert_eq!(
                &got[..cut.min(got.len())],
                &want[..cut],
                "{} ({dev:?})",
                dir.display()
            );
        }
    }
}

fn demo_or_fixture() -> std::path::PathBuf {
    let d = demo_model();
    if d.join("config.json").exists() {
        d
    } else {
        fixture("gptq4-g128-asym-spm")
    }
}

fn collect(
    s: &mut Session,
    prompt: &str,
    o: &GenerateOptions,
) -> (Vec<u32>, String, wv::Result<wv::GenerateStats>) {
    let mut ids = Vec::new();
    let mut text = String::new();
    let r = s.generate(prompt, o, &mut |t, piece| {
        if t != wv::session::NO_TOKEN {
            ids.push(t);
        }
        text.push_str(piece);
        true
    });
    (ids, text, r)
}

#[test]
fn seeded_sampling_is_reproducible_and_seeds_differ() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    let o = |seed| GenerateOptions {
        max_tokens: 24,
        seed: Some(seed),
        temperature: 1.0,
        ..Default::default()
    };
    let run = |seed| {
        let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
        collect(&mut s, "In the beginning", &o(seed))
    };
    let (a, ta, _) = run(7);
    let (b, tb, _) = run(7);
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    let others: Vec<Vec<u32>> = (100..104).map(|s| run(s).0).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "different seeds should give different samples"
    );
}

#[test]
fn streamed_pieces_join_to_the_full_decode() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    for seed in 0..4 {
        let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
        let o = GenerateOptions {
            max_tokens: 40,
            seed: Some(seed),
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            ..Default::default()
        };
        let before = 0;
        let (ids, text, r) = collect(&mut s, "\u{1F600}", &o);
        r.unwrap();
        // The chat-less raw stream is primed with the context, so compare with the decode of
        // (last prompt token + generated) minus the prompt token's text.
        let prompt_ids = &s.tokens()[before..s.tokens().len() - ids.len()];
        let last = *prompt_ids.last().unwrap();
        let full = model
            .tokenizer
            .decode(&[&[last][..], &ids].concat())
            .unwrap();
        let head = model.tokenizer.decode(&[last]).unwrap();
        assert!(full.starts_with(&head));
        assert_eq!(text, full[head.len()..], "seed {seed}");
    }
}

#[test]
fn stop_strings_are_never_emitted() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    // Find what greedy decoding says, then stop on a string from its middle.
    let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    let g = GenerateOptions {
        max_tokens: 30,
        ..GenerateOptions::greedy()
    };
    let (_, full, _) = collect(&mut s, "And God said", &g);
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "greedy output too short: {full:?}");
    let stop: String = chars[8..11].iter().collect();
    let expect_prefix = &full[..full.find(&stop).unwrap()];
    let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    let o = GenerateOptions {
        stop: vec![stop.clone()],
        ..g.clone()
    };
    let (_, text, r) = collect(&mut s, "And God said", &o);
    assert_eq!(r.unwrap().stop_reason, StopReason::StopString);
    assert_eq!(text, expect_prefix);
    assert!(!text.contains(&stop));
}

#[test]
fn context_full_delivers_what_fits_and_session_stays_usable() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    let mut s = Session::new(
        model.clone(),
        &SessionOptions {
            context_length: 16,
            system_prompt: None,
        },
    )
    .unwrap();
    let o = GenerateOptions {
        max_tokens: 100,
        ..GenerateOptions::greedy()
    };
    let (ids, _, r) = collect(&mut s, "In the beginning", &o);
    let prompt_len = s.tokens().len() - ids.len();
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ContextFull);
    assert_eq!(s.tokens().len(), 16);
    assert_eq!(ids.len(), 16 - prompt_len);
    // Too long a prompt is refused up front and changes nothing.
    let long = "word ".repeat(40);
    s.truncate(prompt_len).unwrap();
    assert_eq!(
        collect(&mut s, &long, &o).2.unwrap_err().kind,
        ErrorKind::ContextFull
    );
    assert_eq!(s.tokens().len(), prompt_len);
    // After truncation the same greedy continuation comes back.
    let (again, _, r) = collect(
        &mut s,
        "",
        &GenerateOptions {
            max_tokens: 4,
            ..GenerateOptions::greedy()
        },
    );
    r.unwrap();
    assert_eq!(again, ids[..4]);
    s.reset();
    assert!(s.tokens().is_empty());
    collect(
        &mut s,
        "In",
        &GenerateOptions {
            max_tokens: 2,
            ..GenerateOptions::greedy()
        },
    )
    .2
    .unwrap();
}

#[test]
fn chat_turns_prefill_only_their_own_tokens() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    let o = GenerateOptions {
        max_tokens: 8,
        ..GenerateOptions::greedy()
    };
    let st1 = s.chat("Hello there", &o, &mut |_, _| true).unwrap();
    let tk = &model.tokenizer;
    let mut want = vec![tk.bos_id()];
    want.extend(
        tk.encode(
            &wv::chat::first_turn(wv::chat::VICUNA_SYSTEM, "Hello there"),
            false,
        )
        .unwrap(),
    );
    assert_eq!(&s.tokens()[..want.len()], &want[..]);
    assert_eq!(st1.prompt_tokens, want.len());
    let before_tokens = s.tokens().len();
    let before_fwd = s.forwarded_tokens();
    let st2 = s.chat("And again", &o, &mut |_, _| true).unwrap();
    // The second turn: (EOS if the reply did not end with one) + "USER: And again ASSISTANT:".
    let turn = tk.encode(&wv::chat::next_turn("And again"), false).unwrap();
    let extra = usize::from(st1.stop_reason != StopReason::Eos);
    assert_eq!(st2.prompt_tokens, turn.len() + extra);
    // Forwarded in turn 2: the last reply token (sampled, not yet cached), the new turn's tokens,
    // and the tokens decoded after the first sampled one.
    let fwd = s.forwarded_tokens() - before_fwd;
    assert_eq!(
        fwd,
        1 + st2.prompt_tokens + st2.generated_tokens.saturating_sub(1)
    );
    assert_eq!(
        &s.tokens()[before_tokens + extra..before_tokens + extra + turn.len()],
        &turn[..]
    );
    // The whole conversation equals one-shot tokenisation of the template text.
    let system = SessionOptions {
        context_length: 0,
        system_prompt: Some("Be brief.".into()),
    };
    let mut s2 = Session::new(model.clone(), &system).unwrap();
    s2.chat(
        "hi",
        &GenerateOptions {
            max_tokens: 1,
            ..GenerateOptions::greedy()
        },
        &mut |_, _| true,
    )
    .unwrap();
    let head = tk.encode("Be brief. USER: hi ASSISTANT:", true).unwrap();
    assert_eq!(&s2.tokens()[..head.len()], &head[..]);
}

#[test]
fn save_and_restore_round_trip() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    let g = GenerateOptions {
        max_tokens: 6,
        ..GenerateOptions::greedy()
    };
    collect(&mut s, "In the beginning", &g).2.unwrap();
    let saved = s.save_state();
    let (cont_a, _, _) = collect(&mut s, "", &g);
    let mut t = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    t.restore_state(&saved).unwrap();
    let (cont_b, _, _) = collect(&mut t, "", &g);
    assert_eq!(cont_a, cont_b);
    let mut bad = saved.clone();
    bad[20] ^= 1;
    assert_eq!(
        t.restore_state(&bad).unwrap_err().kind,
        ErrorKind::ModelFormat
    );
    assert_eq!(
        t.restore_state(&saved[..10]).unwrap_err().kind,
        ErrorKind::ModelFormat
    );
    let other = load(&fixture("gptq2-gall"), wv::DeviceRequest::Cpu);
    let mut u = Session::new(other, &SessionOptions::default()).unwrap();
    assert_eq!(
        u.restore_state(&saved).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn cancel_flag_stops_generation() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    let mut s = Session::new(model, &SessionOptions::default()).unwrap();
    let cancel = s.cancel_handle();
    let mut n = 0;
    let r = s.generate(
        "In",
        &GenerateOptions {
            max_tokens: 50,
            ..GenerateOptions::greedy()
        },
        &mut |_, _| {
            n += 1;
            if n == 3 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            true
        },
    );
    assert_eq!(r.unwrap_err().kind, ErrorKind::Cancelled);
    assert_eq!(n, 3);
    // Usable afterwards.
    collect(
        &mut s,
        "",
        &GenerateOptions {
            max_tokens: 2,
            ..GenerateOptions::greedy()
        },
    )
    .2
    .unwrap();
}

#[test]
fn continuing_in_two_calls_streams_the_same_text() {
    let model = load(&demo_or_fixture(), wv::DeviceRequest::Cpu);
    let g = |n| GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::greedy()
    };
    let mut a = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    let (ids_a, text_a, _) = collect(&mut a, "In the beginning", &g(20));
    let mut b = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    let (ids1, t1, _) = collect(&mut b, "In the beginning", &g(10));
    let (ids2, t2, _) = collect(&mut b, "", &g(10));
    assert_eq!([ids1, ids2].concat(), ids_a);
    assert_eq!(t1 + &t2, text_a);
    assert!(
        text_a.starts_with(' '),
        "a continuation keeps its leading space: {text_a:?}"
    );
}

#[test]
fn session_argument_errors_change_nothing() {
    let model = load(&fixture("gptq2-gall"), wv::DeviceRequest::Cpu);
    let max = model.config.max_position_embeddings;
    let too_long = SessionOptions {
        context_length: max + 1,
        system_prompt: None,
    };
    let e = Session::new(model.clone(), &too_long).err().unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
    s.set_tokens(vec![1, 2, 3]).unwrap();
    let e = s
        .set_tokens(vec![1, model.config.vocab_size as u32])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(s.tokens(), &[1, 2, 3]);
    assert_eq!(s.truncate(4).unwrap_err().kind, ErrorKind::InvalidArgument);
    let bad = GenerateOptions {
        temperature: -1.0,
        ..Default::default()
    };
    assert_eq!(
        collect(&mut s, "x", &bad).2.unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(s.tokens(), &[1, 2, 3]);
}

#[test]
fn forward_argument_errors() {
    let model = load(&fixture("gptq2-gall"), wv::DeviceRequest::Cpu);
    let be = &model.backend;
    let mut st = be.new_state(4).unwrap();
    let mut out = Vec::new();
    let kind = |r: wv::Result<()>| r.unwrap_err().kind;
    assert_eq!(
        kind(be.forward(st.as_mut(), &[], 0, 0, &mut out)),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(be.forward(st.as_mut(), &[1, 2], 0, 3, &mut out)),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(be.forward(st.as_mut(), &[1, 2], 3, 1, &mut out)),
        ErrorKind::ContextFull
    );
    assert_eq!(
        kind(be.forward(st.as_mut(), &[1], usize::MAX, 1, &mut out)),
        ErrorKind::ContextFull
    );
    // A gap after the filled positions is a caller bug, not silently garbage.
    assert_eq!(
        kind(be.forward(st.as_mut(), &[1], 2, 1, &mut out)),
        ErrorKind::Internal
    );
    be.forward(st.as_mut(), &[1, 2], 0, 1, &mut out).unwrap();
    be.forward(st.as_mut(), &[3], 2, 1, &mut out).unwrap();
}

/// `bench::run` refuses host work per token outside 0..=MAX_HOST_MS (the CLI checks it before
/// loading; library callers reach this check).
#[test]
fn bench_refuses_out_of_range_host_work() {
    let model = load(&fixture("gptq2-gall"), wv::DeviceRequest::Cpu);
    for bad in [-1.0, wv::bench::MAX_HOST_MS + 1.0, f64::NAN] {
        let r = wv::bench::run(&model, 2, 1, 0, 0.0, wv::bench::Sampling::Session, bad);
        assert_eq!(
            r.err().map(|e| e.kind),
            Some(ErrorKind::InvalidArgument),
            "host_ms {bad}"
        );
    }
    let r = wv::bench::run(&model, 2, 1, 0, 0.0, wv::bench::Sampling::Session, 0.0).unwrap();
    assert_eq!(r["host_ms_per_token"], 0.0);
}

/// `bench::run` decodes greedily unless asked for the model card's sampling, and says which.
#[test]
fn bench_reports_its_sampling() {
    use wv::bench::{run, Sampling};
    let model = load(&fixture("gptq2-gall"), wv::DeviceRequest::Cpu);
    for (s, want) in [
        (Sampling::Session, "greedy"),
        (Sampling::Host, "greedy"),
        (Sampling::Card, "card"),
    ] {
        let r = run(&model, 3, 4, 0, 0.0, s, 0.0).unwrap();
        assert_eq!(r["sampling"], want, "{s:?}");
        assert!(r["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{s:?}");
    }
}

/// `wv bench`'s roofline bytes are what a decode step reads: the weights but an untied
/// embedding table (a step reads one row of it), and the cache to the mean decode position.
#[test]
fn bench_counts_the_bytes_a_step_reads() {
    use wv::bench::{run, Sampling};
    for (name, untied) in [("gptq4-g128-asym-spm", true), ("gptq2-gall", false)] {
        let model = load(&fixture(name), wv::DeviceRequest::Cpu);
        assert_eq!(!model.config.tie_word_embeddings, untied, "{name}");
        let (n_prompt, n_gen) = (3usize, 4usize);
        let r = run(&model, n_prompt, n_gen, 0, 0.0, Sampling::Session, 0.0).unwrap();
        let all = r["weight_bytes"].as_u64().unwrap();
        let step = r["decode_weight_bytes"].as_u64().unwrap();
        let table = (model.config.vocab_size * model.config.hidden_size * 2) as u64;
        assert_eq!(all - step, if untied { table } else { 0 }, "{name}");
        let kv = r["kv_bytes_per_token"].as_f64().unwrap();
        let want = step as f64 + kv * (n_prompt as f64 + n_gen as f64 / 2.0);
        let got = r["bytes_read_per_decoded_token"].as_f64().unwrap();
        assert!((got - want).abs() < 1.0, "{name}: {got} against {want}");
    }
}

/// The session tells a backend that samples on the device which call's token ends the
/// generation (`DeviceSampling::last`: the CUDA backend enqueues no decode step ahead of it):
/// the call whose token reaches `max_tokens`, and no call before it; a generation that stops at
/// the end-of-sequence token or a stop string marks none. A CPU backend wrapped to sample on the
/// "device" (greedy) records the flags.
#[test]
fn device_sampling_marks_only_the_last_token() {
    use std::sync::{Arc, Mutex};
    use wv::backend::{Backend, BackendState, DeviceKind, DeviceSampling};
    struct Recorder {
        inner: Box<dyn Backend>,
        lasts: Arc<Mutex<Vec<bool>>>,
    }
    impl Backend for Recorder {
        fn kind(&self) -> DeviceKind {
            self.inner.kind()
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn weight_bytes(&self) -> usize {
            self.inner.weight_bytes()
        }
        fn new_state(&self, context_length: usize) -> wv::Result<Box<dyn BackendState>> {
            self.inner.new_state(context_length)
        }
        fn forward(
            &self,
            state: &mut dyn BackendState,
            tokens: &[u32],
            pos: usize,
            n_logits: usize,
            logits: &mut Vec<f32>,
        ) -> wv::Result<()> {
            self.inner.forward(state, tokens, pos, n_logits, logits)
        }
        fn forward_sample(
            &self,
            state: &mut dyn BackendState,
            token: u32,
            pos: usize,
            _history: &[u32],
            sampling: &DeviceSampling,
        ) -> Option<wv::Result<u32>> {
            self.lasts.lock().unwrap().push(sampling.last);
            let mut logits = Vec::new();
            Some(
                self.inner
                    .forward(state, &[token], pos, 1, &mut logits)
                    .map(|_| wv::sampler::argmax(&logits)),
            )
        }
    }
    let m = Arc::try_unwrap(load(&demo_model(), wv::DeviceRequest::Cpu))
        .ok()
        .expect("the only reference");
    let lasts = Arc::new(Mutex::new(Vec::new()));
    let model = Arc::new(wv::Model {
        backend: Box::new(Recorder {
            inner: m.backend,
            lasts: lasts.clone(),
        }),
        ..m
    });
    let mut reasons = Vec::new();
    for (max_tokens, stop) in [(1, None), (2, None), (7, None), (40, Some("the"))] {
        lasts.lock().unwrap().clear();
        let mut s = Session::new(model.clone(), &SessionOptions::default()).unwrap();
        let opts = GenerateOptions {
            max_tokens,
            stop: stop.into_iter().map(String::from).collect(),
            ..GenerateOptions::greedy()
        };
        let stats = s.generate("And God said", &opts, &mut |_, _| true).unwrap();
        let got = lasts.lock().unwrap().clone();
        // Every token after the first is sampled on the "device" (the first comes from the
        // prompt's logits).
        assert_eq!(
            got.len(),
            stats.generated_tokens - 1,
            "{max_tokens}: {got:?}"
        );
        let at_max = stats.stop_reason == StopReason::MaxTokens;
        for (i, &last) in got.iter().enumerate() {
            let want = at_max && i + 1 == got.len();
            assert_eq!(last, want, "max_tokens {max_tokens}, call {i}: {got:?}");
        }
        reasons.push(stats.stop_reason);
    }
    // The cases above took both kinds of ending.
    assert!(reasons.contains(&StopReason::MaxTokens), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| *r != StopReason::MaxTokens),
        "{reasons:?}"
    );
}
