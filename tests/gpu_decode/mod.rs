//! Decode-path model tests (a module of tests/gpu_model.rs): the fused decode kernels, the
//! attention plans per position bucket and the persistent decode kernel, each against the CPU
//! backend step by step on small random models.

use super::*;

/// A model of `layers` with random embeddings and a separate random lm_head (drawn from `rng`
/// in that order) and a unit final norm.
fn untied_host(c: ModelConfig, layers: Vec<LayerWeights>, rng: &mut Rng) -> HostWeights {
    let h = c.hidden_size;
    let embed = rand_vec(rng, c.vocab_size * h, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let lm_head = Some(
        rand_vec(rng, c.vocab_size * h, 0.3)
            .into_iter()
            .map(f16::from_f32)
            .collect(),
    );
    HostWeights {
        config: c,
        embed,
        layers,
        final_norm: vec![1.0; h],
        lm_head,
        embed_exact: None,
        lm_head_exact: None,
    }
}

/// A random all-4-bit model with head dim 128 and K % 64 == 0 everywhere, so that decode runs
/// the fused `gemv_q4l_*` layers (one biased layer), with an act-order q|k|v in the last layer.
fn fused_host() -> HostWeights {
    let c = ModelConfig {
        hidden_size: 256,
        intermediate_size: 640,
        num_hidden_layers: 3,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        vocab_size: 200,
        max_position_embeddings: 1024,
        tie_word_embeddings: false,
        ..tiny_config()
    };
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let mut rng = Rng::new(17);
    let q4 = |i: usize, o: usize, act: bool, bias: bool, seed: u64| {
        Linear::Gptq(random_gptq(4, i, o, Some(128), act, 1, bias, seed))
    };
    let layers = (0..c.num_hidden_layers as u64)
        .map(|l| {
            let s = 100 * l;
            let (bias, act) = (l == 1, l == 2);
            LayerWeights {
                input_norm: rand_vec(&mut rng, h, 0.2).iter().map(|v| 1.0 + v).collect(),
                post_attention_norm: rand_vec(&mut rng, h, 0.2).iter().map(|v| 1.0 + v).collect(),
                q: q4(h, h, act, bias, s + 1),
                k: q4(h, h, act, false, s + 2),
                v: q4(h, h, act, false, s + 3),
                o: q4(h, h, false, bias, s + 4),
                gate: q4(h, f, false, bias, s + 5),
                up: q4(h, f, false, false, s + 6),
                down: q4(f, h, false, bias, s + 7),
            }
        })
        .collect();
    untied_host(c, layers, &mut rng)
}

/// [`fused_host`] and the CUDA backend over it, decoding one kernel per step (the fusions are
/// of the per-step decode; this model has biases, which the persistent kernel does not take,
/// but say so anyway).
fn fused_cuda() -> (HostWeights, wv::backend::cuda::CudaBackend) {
    let host = fused_host();
    let mut cuda = wv::backend::cuda::CudaBackend::new(&host, 0).unwrap();
    cuda.set_persistent(false);
    (host, cuda)
}

/// `n` random token ids within [`fused_host`]'s vocabulary.
fn fused_tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| 3 + (rng.next_u64() % 190) as u32).collect()
}

/// Decode through the fused layers (prologue RMSNorm / attention combine / SiLU, residual
/// epilogue) equals the CPU reference, short and long context (several attention chunks).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_fused_decode_matches_cpu() {
    use wv::backend::cuda::kernels::Fusion;
    let (host, mut cuda) = fused_cuda();
    let cpu: Box<dyn wv::backend::Backend> =
        Box::new(wv::backend::cpu::CpuBackend::new(Arc::new(host.clone())));
    let prompt = fused_tokens(3, 300);
    let mut runs = Vec::new();
    let settings = [
        (true, true, true),
        (true, false, false),
        (false, true, true),
        (true, true, false),
    ];
    for (attn, silu, norm) in settings {
        for (n_prompt, ctx) in [(3usize, 64usize), (300, 1024)] {
            let min_chunks = 0;
            runs.push((
                Fusion {
                    attn,
                    silu,
                    norm,
                    min_chunks,
                },
                n_prompt,
                ctx,
            ));
        }
    }
    let mut failed = Vec::new();
    for (fusion, n_prompt, ctx) in runs {
        cuda.set_fusion(fusion);
        let run = decode_against_cpu(&cuda, cpu.as_ref(), &prompt[..n_prompt], ctx, 12);
        let worst = run.steps.iter().fold(run.prefill, |w, &e| w.max(e));
        eprintln!(
            "fused decode {fusion:?} after {n_prompt} tokens (context {ctx}): worst rel L2 vs CPU {worst:.2e} (prefill {:.2e}, decode steps {:?})",
            run.prefill,
            run.steps.iter().map(|e| format!("{e:.1e}")).collect::<Vec<_>>()
        );
        if worst >= 1e-2 {
            failed.push(format!("{fusion:?} after {n_prompt}: {worst}"));
        }
    }
    assert!(failed.is_empty(), "fused decode off the CPU: {failed:?}");
}

/// Decode with every product on `gemv_q4m` (the integer tensor cores, input as two int8
/// digits; `WV_CUDA_GEMV=mma`) equals the CPU reference, short and long context, with the
/// biased and the act-order layers of [`fused_host`]; on a compute capability 9.0 GPU every
/// group must take it.
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_mma_decode_matches_cpu() {
    use wv::backend::cuda::weights::GemvKind;
    let (host, mut cuda) = fused_cuda();
    let groups = cuda.set_gemv(GemvKind::Mma);
    eprintln!("gemv_q4m decode: {groups} of 12 product groups");
    let sm90 = cuda.gpu().cc == (9, 0);
    if sm90 {
        assert_eq!(
            groups, 12,
            "every group of this model should run on gemv_q4m"
        );
    }
    // On sm_90 by default every 4-bit matrix is held only as its unit-major copy, and the
    // 300-token prompt below prefills on gemm_q4_tma's maps over it (under
    // WV_CUDA_MMA_LAYOUT=rows, the GPU suite's tests-rows phase, none is).
    let (units, q4) = cuda.units_only_matrices();
    eprintln!("4-bit matrices held only in the unit-major layout: {units} of {q4}");
    if sm90 {
        let unit = wv::backend::cuda::gemv_mma::unit_major();
        assert!(q4 >= 12, "{q4} 4-bit matrices");
        assert_eq!(
            units,
            if unit { q4 } else { 0 },
            "matrices in the unit-major layout only"
        );
    }
    let cpu: Box<dyn wv::backend::Backend> =
        Box::new(wv::backend::cpu::CpuBackend::new(Arc::new(host.clone())));
    let prompt = fused_tokens(3, 300);
    // The fused variants (layers 0 and 1: the glue in the products' epilogues; layer 2's
    // act-order q|k|v runs the unfused path, so both hand-overs are crossed), then the
    // separate glue kernels between the products.
    let mut runs = Vec::new();
    for fuse in [true, false] {
        cuda.set_mma_fuse(fuse);
        let fused = cuda.fused_mma_layers();
        eprintln!("mma_fuse {fuse}: {fused} of 3 layers fused");
        if sm90 {
            assert_eq!(fused, if fuse { 2 } else { 0 }, "fused layers");
        }
        for (n_prompt, ctx) in [(3usize, 64usize), (300, 1024)] {
            let run = decode_against_cpu(&cuda, cpu.as_ref(), &prompt[..n_prompt], ctx, 12);
            let worst = run.steps.iter().fold(run.prefill, |w, &e| w.max(e));
            eprintln!(
                "gemv_q4m decode (fused {fuse}) after {n_prompt} tokens: worst rel L2 vs CPU {worst:.2e} (decode steps {:?})",
                run.steps.iter().map(|e| format!("{e:.1e}")).collect::<Vec<_>>()
            );
            assert!(
                worst < 1e-2,
                "gemv_q4m decode (fused {fuse}) after {n_prompt}: {worst}"
            );
            runs.push(worst);
        }
    }
    // Both ways are as accurate as the digits make them (~2-4e-4; the f16 paths ~1e-3).
    assert!(runs.iter().all(|&w| w < 2e-3), "{runs:?}");
}

/// The fused layers' attention in q|k|v's epilogue (a step whose keys fit one bucket of 128)
/// equals the CPU reference and the attention kernels' decode, with 4 query heads on 4, 2 and 1
/// KV heads: short context, one bucket's last keys, and a long context (where the attention
/// kernels run again).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_mma_attention_matches_cpu() {
    use wv::backend::cuda::weights::GemvKind;
    for nkv in [4usize, 2, 1] {
        let host = heads128_host(nkv, 768, false);
        let mut cuda = wv::backend::cuda::CudaBackend::new(&host, 0).unwrap();
        cuda.set_gemv(GemvKind::Mma);
        cuda.set_mma_fuse(true);
        // The fused layers are made for sm_90's integer tensor cores (gemv_q4m): elsewhere
        // decode must not plan them (the other paths are every other test's).
        if cuda.gpu().cc != (9, 0) {
            assert_eq!(
                cuda.fused_mma_layers(),
                0,
                "nkv {nkv}: fused layers off sm_90"
            );
            eprintln!("not an sm_90 GPU: no fused layers planned, as it should be");
            return;
        }
        assert_eq!(cuda.fused_mma_layers(), 3, "nkv {nkv}: fused layers");
        let cpu: Box<dyn wv::backend::Backend> =
            Box::new(wv::backend::cpu::CpuBackend::new(Arc::new(host.clone())));
        let prompt = fused_tokens(11, 300);
        for (n_prompt, ctx) in [(3usize, 64usize), (118, 512), (300, 1024)] {
            let mut per_mode = Vec::new();
            for on in [true, false] {
                cuda.set_mma_attention(on);
                let run = decode_against_cpu(&cuda, cpu.as_ref(), &prompt[..n_prompt], ctx, 12);
                let worst = run.worst_step();
                eprintln!(
                    "nkv {nkv}, attention in q|k|v {on}, after {n_prompt} tokens: worst rel L2 vs CPU {worst:.2e}"
                );
                assert!(worst < 1e-2, "nkv {nkv}, {on}, {n_prompt}: {worst}");
                per_mode.push(run);
            }
            let diff = per_mode[0].worst_against(&per_mode[1]);
            eprintln!("  fused vs kernels' attention: worst rel L2 {diff:.2e}");
            // The same sums in another order, then the same digits: ~1e-6 apart.
            assert!(
                diff < 1e-3,
                "nkv {nkv}, {n_prompt}: fused vs kernels {diff}"
            );
        }
    }
}

/// Decode attention planned by position bucket (256 keys, then 512, ...: one captured graph
/// each) gives the logits of the plan over the whole cache bit for bit (empty chunks add exact
/// zeros), across a bucket boundary (positions 250..262 cross 256), with the attention combine
/// separate and fused into o's prologue.
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_attention_buckets_are_exact() {
    use wv::backend::cuda::kernels::Fusion;
    use wv::backend::Backend;
    let (_, mut cuda) = fused_cuda();
    // The attention kernels' plans (the fused layers' attention in q|k|v's epilogue, which
    // takes the first bucket only, sums in another order: model_mma_attention_matches_cpu).
    cuda.set_mma_attention(false);
    let toks = fused_tokens(5, 262);
    for attn in [false, true] {
        cuda.set_fusion(Fusion {
            attn,
            silu: false,
            norm: false,
            min_chunks: 0,
        });
        let mut runs = Vec::new();
        for buckets in [true, false] {
            cuda.set_attention_buckets(buckets);
            let mut st = cuda.new_state(1024).unwrap();
            let mut l = Vec::new();
            cuda.forward(st.as_mut(), &toks[..250], 0, 1, &mut l)
                .unwrap();
            let mut steps = Vec::new();
            for (i, &t) in toks[250..].iter().enumerate() {
                cuda.forward(st.as_mut(), &[t], 250 + i, 1, &mut l).unwrap();
                assert!(
                    l.iter().all(|v| v.is_finite()),
                    "step {i}: non-finite logits"
                );
                steps.push(l.clone());
            }
            // Positions 250..262 of a 1,024-position cache: two buckets (256 and 512 keys), or
            // one plan over the whole cache. (Graphs may be off: WV_CUDA_GRAPH=0.)
            let keys = cuda.decode_graph_keys();
            if !keys.is_empty() {
                let want = if buckets { vec![256, 512] } else { vec![1024] };
                assert_eq!(keys, want, "attn fused {attn}, buckets {buckets}");
            }
            drop(st);
            runs.push(steps);
        }
        for (i, (a, b)) in runs[0].iter().zip(&runs[1]).enumerate() {
            assert!(
                a == b,
                "attn fused {attn}: step {i} (position {}) differs",
                250 + i
            );
        }
    }
}

/// One greedy run of `gpu` beside the CPU reference (see [`decode_against_cpu`]).
struct DecodeRun {
    /// Relative L2 of the GPU's last prompt logits against the CPU's.
    prefill: f64,
    /// The same for each decode step.
    steps: Vec<f64>,
    /// The GPU's logits at each decode step.
    logits: Vec<Vec<f32>>,
}

impl DecodeRun {
    /// The worst decode step's relative L2 against the CPU.
    fn worst_step(&self) -> f64 {
        self.steps.iter().fold(0f64, |w, &e| w.max(e))
    }

    /// The worst relative L2 between this run's decode logits and `other`'s, step by step.
    fn worst_against(&self, other: &DecodeRun) -> f64 {
        self.logits
            .iter()
            .zip(&other.logits)
            .map(|(a, b)| rel_l2(a, b))
            .fold(0f64, f64::max)
    }
}

/// Prefill `prompt` on both backends in sessions of context `ctx`, then decode `n` tokens,
/// each the CPU's greedy choice fed to both, comparing the logits at every step.
fn decode_against_cpu(
    gpu: &dyn wv::backend::Backend,
    cpu: &dyn wv::backend::Backend,
    prompt: &[u32],
    ctx: usize,
    n: usize,
) -> DecodeRun {
    let mut sg = gpu.new_state(ctx).unwrap();
    let mut sc = cpu.new_state(ctx).unwrap();
    let (mut lg, mut lc) = (Vec::new(), Vec::new());
    gpu.forward(sg.as_mut(), prompt, 0, 1, &mut lg).unwrap();
    cpu.forward(sc.as_mut(), prompt, 0, 1, &mut lc).unwrap();
    let mut run = DecodeRun {
        prefill: rel_l2(&lg, &lc),
        steps: Vec::with_capacity(n),
        logits: Vec::with_capacity(n),
    };
    let mut next = argmax(&lc);
    for i in 0..n {
        let pos = prompt.len() + i;
        gpu.forward(sg.as_mut(), &[next], pos, 1, &mut lg).unwrap();
        cpu.forward(sc.as_mut(), &[next], pos, 1, &mut lc).unwrap();
        // rel_l2 also fails on non-finite GPU logits.
        run.steps.push(rel_l2(&lg, &lc));
        run.logits.push(lg.clone());
        next = argmax(&lc);
    }
    run
}

/// A model the persistent decode kernel takes (head size 128, 4-bit products, no biases): 4
/// heads, `nkv` KV heads, the last layer's down projection in act-order.
fn persistent_host(nkv: usize) -> HostWeights {
    heads128_host(nkv, 704, true)
}

/// Head size 128, 4-bit products without biases, 4 heads of which `nkv` KV heads, FFN size
/// `f`, three layers (the last one's down projection in act-order where `act` says).
fn heads128_host(nkv: usize, f: usize, act: bool) -> HostWeights {
    let c = ModelConfig {
        hidden_size: 512,
        intermediate_size: f,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: nkv,
        vocab_size: 200,
        max_position_embeddings: 2048,
        tie_word_embeddings: false,
        ..tiny_config()
    };
    let (h, f, kvd) = (c.hidden_size, c.intermediate_size, nkv * 128);
    let mut rng = Rng::new(29 + nkv as u64);
    let q4 = |i: usize, o: usize, act: bool, seed: u64| {
        Linear::Gptq(random_gptq(4, i, o, Some(128), act, 1, false, seed))
    };
    let layers = (0..c.num_hidden_layers as u64)
        .map(|l| {
            let s = 100 * l + 7 * nkv as u64;
            LayerWeights {
                input_norm: rand_vec(&mut rng, h, 0.2).iter().map(|v| 1.0 + v).collect(),
                post_attention_norm: rand_vec(&mut rng, h, 0.2).iter().map(|v| 1.0 + v).collect(),
                q: q4(h, h, false, s + 1),
                k: q4(h, kvd, false, s + 2),
                v: q4(h, kvd, false, s + 3),
                o: q4(h, h, false, s + 4),
                gate: q4(h, f, false, s + 5),
                up: q4(h, f, false, s + 6),
                down: q4(f, h, act && l == 2, s + 7),
            }
        })
        .collect();
    untied_host(c, layers, &mut rng)
}

/// Decode through the persistent kernel (every layer in one cooperative launch, its work
/// ordered by readiness flags) equals the CPU reference and the per-step decode: with and without grouped
/// KV heads, short and long context (several key chunks, the new key in the last one), and
/// the kernel really ran (no fallback to per-step decode).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_persistent_decode_matches_cpu() {
    for nkv in [4usize, 2] {
        let host = persistent_host(nkv);
        // Loaded for it: the kernel reads wv's row layout, which the default (unit-major)
        // upload does not keep.
        let mut cuda = wv::backend::cuda::CudaBackend::new_persistent(&host, 0).unwrap();
        assert!(
            cuda.persistent_active(),
            "nkv {nkv}: the persistent kernel should take this model"
        );
        let cpu: Box<dyn wv::backend::Backend> =
            Box::new(wv::backend::cpu::CpuBackend::new(Arc::new(host.clone())));
        let mut rng = Rng::new(5);
        let prompt: Vec<u32> = (0..300)
            .map(|_| 3 + (rng.next_u64() % 190) as u32)
            .collect();
        for (n_prompt, ctx) in [(3usize, 64usize), (300, 1024), (1, 2048)] {
            let mut per_mode = Vec::new();
            for on in [true, false] {
                cuda.set_persistent(on);
                let run = decode_against_cpu(&cuda, cpu.as_ref(), &prompt[..n_prompt], ctx, 10);
                let worst = run.worst_step();
                eprintln!(
                    "decode (persistent {on}) nkv {nkv} after {n_prompt} tokens (context {ctx}): worst rel L2 vs CPU {worst:.2e}"
                );
                assert!(
                    worst < 1e-2,
                    "persistent {on}, nkv {nkv}, {n_prompt}: {worst}"
                );
                per_mode.push(run);
            }
            let diff = per_mode[0].worst_against(&per_mode[1]);
            eprintln!("  persistent vs per-step: worst rel L2 {diff:.2e}");
            // Two f16 roundings of the same sums, each ~1e-3–2.5e-3 from the CPU: the
            // persistent kernel scales every batch's inputs to just under the f16 sums' bound
            // and applies the norms' 1/rms after the product (tenth session: 3.4e-3 at nkv 2
            // after 300 tokens).
            assert!(diff < 5e-3, "persistent vs per-step decode: {diff}");
        }
        cuda.set_persistent(true);
        assert!(
            cuda.persistent_active(),
            "nkv {nkv}: the persistent kernel fell back to per-step decode"
        );
    }
}

/// Decode ahead (`forward_sample` enqueues the session's next step, fed the token it returns)
/// changes no token: two sessions decoding in turns, with and without a repetition penalty,
/// a session fed a token other than the one it was given (the step ahead discarded and
/// recomputed), a call marked `last` and a prefill in between, give the same tokens with it on
/// and off — and with it on, exactly the steps the rule allows are found enqueued ahead
/// (session a runs three steps alone between b's).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn model_decode_ahead_changes_no_token() {
    use wv::backend::Backend;
    let (host, mut cuda) = fused_cuda();
    let eos = host.config.eos_token_id;
    let prompt_a = fused_tokens(21, 40);
    let prompt_b = fused_tokens(22, 7);
    // The tokens, and how many of a's steps the rule says find their step enqueued ahead: a
    // call of a enqueues one when it follows a's own previous call with nothing between (no
    // call of b, no prefill), is not `last` and returns a token other than eos; a's next call
    // finds it when nothing came between and it feeds that token.
    let run = |cuda: &wv::backend::cuda::CudaBackend| -> (Vec<u32>, u64) {
        let mut a = cuda.new_state(256).unwrap();
        let mut b = cuda.new_state(256).unwrap();
        let mut lg = Vec::new();
        cuda.forward(a.as_mut(), &prompt_a, 0, 1, &mut lg).unwrap();
        let (mut ta, mut pa) = (argmax(&lg), prompt_a.len());
        cuda.forward(b.as_mut(), &prompt_b, 0, 1, &mut lg).unwrap();
        let (mut tb, mut pb) = (argmax(&lg), prompt_b.len());
        let mut hist: Vec<u32> = prompt_a.clone();
        let mut out = Vec::new();
        let (mut a_was_last_use, mut pending, mut expected) = (false, None, 0u64);
        for i in 0..24 {
            let penalty = if i % 3 == 0 { 1.1 } else { 1.0 };
            let s = DeviceSampling {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                repetition_penalty: penalty,
                uniform: 0.0,
                last: false,
            };
            // Session a: every step; from step 10 on, every fifth step is fed another token;
            // its call at step 6 is marked as a generation's last.
            let fed = if i >= 10 && i % 5 == 0 {
                3 + (ta + 1) % 190
            } else {
                ta
            };
            let last = i == 6;
            if a_was_last_use && pending == Some(fed) {
                expected += 1;
            }
            hist.push(fed);
            let na = cuda
                .forward_sample(a.as_mut(), fed, pa, &hist, &DeviceSampling { last, ..s })
                .expect("device sampling")
                .unwrap();
            pending = (a_was_last_use && !last && na != eos).then_some(na);
            a_was_last_use = true;
            out.push(na);
            ta = na;
            pa += 1;
            // Session b: every fourth step, after a's (which discards a's step ahead; a's
            // next two calls find theirs in flight).
            if i % 4 == 0 {
                let nb = cuda
                    .forward_sample(b.as_mut(), tb, pb, &[], &s)
                    .expect("device sampling")
                    .unwrap();
                out.push(nb);
                tb = nb;
                pb += 1;
                (a_was_last_use, pending) = (false, None);
            }
            // A prefill of two tokens into b at step 15 (its step ahead superseded).
            if i == 15 {
                cuda.forward(b.as_mut(), &[tb, 5], pb, 1, &mut lg).unwrap();
                tb = argmax(&lg);
                pb += 2;
                (a_was_last_use, pending) = (false, None);
            }
        }
        (out, expected)
    };
    cuda.set_decode_ahead(false);
    let h0 = cuda.decode_ahead_hits();
    let (off, _) = run(&cuda);
    let h1 = cuda.decode_ahead_hits();
    cuda.set_decode_ahead(true);
    let (on, expected) = run(&cuda);
    let h2 = cuda.decode_ahead_hits();
    eprintln!(
        "decode ahead: {} tokens, first {:?}; steps found ahead: {} off, {} on ({expected} expected)",
        on.len(),
        &on[..8],
        h1 - h0,
        h2 - h1
    );
    assert_eq!(h1, h0, "steps found ahead with decode ahead off");
    // Without eos among a's tokens: a's steps 3, 4, 8, 11, 12, 19 and 23 (not 7: step 6 was
    // `last`; not 15 and 20: fed another token; not after b's calls or the prefill).
    assert!(
        expected >= 5,
        "the schedule leaves decode ahead too few steps ({expected})"
    );
    assert_eq!(h2 - h1, expected, "steps found enqueued ahead");
    assert_eq!(on, off, "decode ahead changed tokens");
}

/// The decode timeline (`WV_CUDA_TIMELINE`, a measurement tool: timeline.rs, tools/timeline.py)
/// holds one record per block of every `gemv_q4m` launch, its four stamps in order (warp 0's
/// first unit between its wait and its units done; q|k|v's marks, where set, in order between
/// its units and its end), and a report writes it to the
/// file. On a GPU without `gemv_q4m` (not sm_90) nothing is stamped.
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn decode_timeline_stamps_every_block_in_order() {
    use wv::backend::cuda::timeline::{FIRST, HEAD_WORDS, MARK, RECORDS, WORDS};
    use wv::backend::cuda::weights::GemvKind;
    use wv::backend::Backend;
    let path = std::env::temp_dir().join(format!("wv-timeline-{}.bin", std::process::id()));
    // Read once, when the backend is made.
    std::env::set_var("WV_CUDA_TIMELINE", &path);
    let host = heads128_host(4, 768, false);
    let made = wv::backend::cuda::CudaBackend::new(&host, 0);
    std::env::remove_var("WV_CUDA_TIMELINE");
    let mut cuda = made.unwrap();
    cuda.set_gemv(GemvKind::Mma);
    cuda.set_mma_fuse(true);
    let mut st = cuda.new_state(64).unwrap();
    let mut l = Vec::new();
    let toks = fused_tokens(3, 8);
    cuda.forward(st.as_mut(), &toks[..4], 0, 1, &mut l).unwrap();
    for (i, &t) in toks[4..].iter().enumerate() {
        cuda.forward(st.as_mut(), &[t], 4 + i, 1, &mut l).unwrap();
    }
    let _ = cuda.profile_report();
    let bytes = std::fs::read(&path).expect("the report wrote the timeline");
    let _ = std::fs::remove_file(&path);
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let tickets = (words[0] & 0xffff_ffff) as usize;
    if cuda.gpu().cc != (9, 0) {
        assert_eq!(tickets, 0, "no gemv_q4m off sm_90, so no stamps");
        return;
    }
    // Four decode steps of three fused layers, four products each, at least.
    assert!(tickets >= 4 * 3 * 4, "{tickets} blocks stamped");
    assert!(tickets < RECORDS);
    let mut per_block = std::collections::BTreeMap::new();
    let mut completing = 0usize;
    for (i, r) in words[HEAD_WORDS..]
        .chunks_exact(WORDS)
        .take(tickets)
        .enumerate()
    {
        assert!(
            r[0] > 0 && r[0] <= r[1] && r[1] <= r[2] && r[2] <= r[3],
            "stamps out of order: {r:?}"
        );
        assert_eq!(r[5], i as u64, "record {i} holds ticket {}", r[5]);
        *per_block.entry(r[4] & 0xffff_ffff).or_insert(0usize) += 1;
        // The fused attention's marks: each set one after the last set before it, within the
        // block's epilogue.
        let mut after = r[2];
        for &m in r[MARK..MARK + 3].iter().filter(|&&m| m != 0) {
            assert!(after <= m && m <= r[3], "marks out of order: {r:?}");
            after = m;
        }
        // Every block holds a unit, so warp 0 finished a first one after the wait.
        assert!(
            r[1] <= r[FIRST] && r[FIRST] <= r[2],
            "first unit out of order: {r:?}"
        );
        if r[MARK..MARK + 3].iter().all(|&m| m != 0) {
            completing += 1;
        }
    }
    // Some q|k|v blocks completed heads (every layer's attention runs in q|k|v's epilogue here).
    assert!(completing > 0, "no block passed all three marks");
    // Each launch stamps its blocks 0 .. grid - 1 once (the products' grids differ here): block 0
    // once per launch, at least 4 steps x 3 layers x 4 products, and no block more often.
    let launches = per_block[&0];
    assert!(launches >= 4 * 3 * 4, "{launches} launches");
    assert!(per_block.values().all(|&n| n <= launches), "{per_block:?}");
    assert_eq!(per_block.values().sum::<usize>(), tickets);
}
