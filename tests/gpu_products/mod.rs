//! Op tests of the matrix products (a module of tests/gpu.rs): every decode GEMV and prefill
//! product path (fused 4-bit on the tensor cores, dequantise + cuBLAS, dense f16) and the
//! dequantisation, each against the CPU backend's product on random GPTQ matrices.

use super::*;

fn check_linear(name: &str, lins: &[&Linear], t: usize, want_q4: bool) {
    let h = harness();
    let k = lins[0].in_features();
    let mut rng = Rng::new(k as u64 * 31 + t as u64);
    let x = round16(&rand_vec(&mut rng, t * k, 1.0));
    // The reference: the CPU product of each member, side by side.
    let mut want = Vec::new();
    let outs: Vec<Vec<f32>> = lins
        .iter()
        .map(|l| {
            let mut y = Vec::new();
            matmul::linear(&x, t, l, &mut y);
            y
        })
        .collect();
    for ti in 0..t {
        for (l, y) in lins.iter().zip(&outs) {
            let n = l.out_features();
            want.extend_from_slice(&y[ti * n..(ti + 1) * n]);
        }
    }
    type Path = (&'static str, bool, Option<usize>, Option<GemvKind>);
    let mut paths: Vec<Path> = vec![("default", true, None, None)];
    if t > 1 {
        paths.push(("wv-gemm", false, None, None));
        paths.push(("pieces", true, Some(k * 64), None));
    } else {
        // Every decode kernel (each where the weights allow it, else the default).
        paths.push(("gemv_q4", true, None, Some(GemvKind::Classic)));
        paths.push(("gemv_q4w", true, None, Some(GemvKind::Wide)));
        paths.push(("gemv_q4l", true, None, Some(GemvKind::Lean)));
        paths.push(("gemv_q4m", true, None, Some(GemvKind::Mma)));
    }
    // A matrix held only in the unit-major layout (WV_CUDA_MMA_LAYOUT=unit) has no rows for
    // the dequantisation to read: those paths must refuse it with an error, not read garbage
    // (the model never plans them: its prefill passes stay on the fused product).
    let units_only = h.units_only(lins).unwrap();
    for (path, blas, deq, kind) in paths {
        if units_only && (path == "wv-gemm" || path == "pieces") {
            let e = h.linear_with(lins, &x, t, blas, deq, kind).err();
            eprintln!("linear {name} t={t} {path}: {e:?}");
            assert!(
                e.is_some_and(|e| e.to_string().contains("unit-major layout")),
                "linear {name} t={t} {path}: a unit-only matrix dequantised"
            );
            continue;
        }
        let (got, q4) = h.linear_with(lins, &x, t, blas, deq, kind).unwrap();
        let e = rel_l2(&got, &want);
        eprintln!("linear {name} t={t} {path}: rel L2 {e:.2e} (4-bit path: {q4})");
        assert!(e < 4e-3, "linear {name} t={t} {path}: rel L2 {e}");
        assert_eq!(q4, want_q4, "{name}: 4-bit path taken = {q4}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_linear_4bit() {
    let _ = GPU;
    // On a compute capability 9.0 GPU gemv_q4m must load (else its path below is the default).
    let h = harness();
    eprintln!("gemv_q4m loaded: {}", h.has_gemv_q4m());
    if h.compute_capability() == (9, 0) {
        assert!(h.has_gemv_q4m(), "gemv_q4m did not load on sm_90");
    }
    // (name, in, out, group, act-order, zero offset, bias)
    type Case = (&'static str, usize, usize, Option<usize>, bool, i32, bool);
    let cases: Vec<Case> = vec![
        ("g128", 512, 384, Some(128), false, 1, false),
        ("g32-actorder", 256, 128, Some(32), true, 1, false),
        ("g128-actorder-v2", 1024, 256, Some(128), true, 0, false),
        ("gall-bias", 96, 64, None, false, 1, true),
        ("g128-k32", 32, 32, Some(128), false, 1, false),
        ("13b-o", 5120, 5120, Some(128), false, 1, false),
        ("13b-down", 13824, 512, Some(128), true, 1, false),
    ];
    for (name, k, n, g, act, off, bias) in cases {
        let m = Linear::Gptq(random_gptq(4, k, n, g, act, off, bias, k as u64 ^ n as u64));
        for t in [1, 5, 70] {
            if k >= 5120 && t == 70 {
                continue;
            }
            check_linear(name, &[&m], t, true);
        }
    }
}

/// Prefill's fused 4-bit products (`gemm_q4_tma` and `gemm_q4_wgmma`, on sm_90a GPUs) against
/// the CPU: token counts below, at and across their 128-token tiles, output widths that end in
/// a partial 128-feature tile, few stages (K = 192), group sizes 64, 128 and all inputs, gptq
/// v1 and v2 zeros, a bias (added by the consumer), split K, and inputs in the hundreds.
/// `check_linear`'s default path is the fused product wherever it is loaded and takes the
/// matrix.
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_gemm_q4_prefill_shapes() {
    let h = harness();
    eprintln!(
        "gemm_q4_wgmma loaded: {}, gemm_q4_tma loaded: {}",
        h.has_gemm_q4(),
        h.has_gemm_q4_tma()
    );
    // On a compute capability 9.0 GPU both must load (else prefill silently falls back to
    // dequantisation + cuBLAS, and the cases below would test only that).
    if h.compute_capability() == (9, 0) {
        assert!(h.has_gemm_q4(), "gemm_q4_wgmma did not load on sm_90");
        assert!(h.has_gemm_q4_tma(), "gemm_q4_tma did not load on sm_90");
        assert!(
            h.has_gemm_q4_tma_small(),
            "gemm_q4_tma64 / 32 did not load on sm_90"
        );
    }
    // (name, in, out, group, zero offset, bias); gemm_q4_tma takes the widths that are
    // multiples of 16 (400, 256), gemm_q4_wgmma the others (392, 136) and, with the TMA
    // variant switched off, all of them.
    type Case = (&'static str, usize, usize, usize, i32, bool);
    let cases: Vec<Case> = vec![
        ("k192-n392-g64", 192, 392, 64, 1, false),
        ("k192-n400-g64", 192, 400, 64, 1, false),
        ("k640-n256-g128-v2-bias", 640, 256, 128, 0, true),
        ("k5120-n136-g128", 5120, 136, 128, 1, false),
        // One group over all 640 inputs (how group size -1 loads): the scales' row never moves.
        ("k640-n384-gall", 640, 384, 640, 1, false),
    ];
    for tma in [true, false] {
        h.set_gemm_q4_tma(tma);
        for &(name, k, n, g, off, bias) in &cases {
            let m = Linear::Gptq(random_gptq(
                4,
                k,
                n,
                Some(g),
                false,
                off,
                bias,
                (k * n) as u64,
            ));
            // The weights' tensor maps are made at upload exactly where gemm_q4_tma can take
            // the matrix (else it would silently run on gemm_q4_wgmma).
            if h.has_gemm_q4_tma() {
                assert_eq!(
                    h.tma_maps_made(&[&m]).unwrap(),
                    tma && n % 16 == 0,
                    "{name} tma={tma}: TMA maps"
                );
            }
            // 5, 32: gemm_q4_tma32's token tile (partial, whole); 33, 64: gemm_q4_tma64's; the
            // rest 128-token tiles.
            for t in [5, 32, 33, 64, 127, 128, 130, 300] {
                check_linear(&format!("{name} tma={tma}"), &[&m], t, true);
            }
        }
        // 13B's o at 512 tokens: 160 tiles under a wave, so K is split into slabs (and at 20
        // and 50 tokens, on the small token tiles, into 4).
        let m = Linear::Gptq(random_gptq(4, 5120, 5120, Some(128), false, 1, false, 5));
        for t in [20, 50, 512] {
            check_linear(&format!("13b-o (split K) t={t} tma={tma}"), &[&m], t, true);
        }
        // Act-order (desc_act) matrices: the input gathered into the sorted row order first.
        let a = Linear::Gptq(random_gptq(4, 640, 392, Some(128), true, 1, false, 7));
        let b = Linear::Gptq(random_gptq(4, 1024, 256, Some(64), true, 0, true, 8));
        for (name, lins) in [
            ("act-k640-n392", vec![&a]),
            ("act-k1024-n256-v2-bias", vec![&b]),
        ] {
            for t in [5, 130, 512] {
                if h.has_gemm_q4() {
                    assert!(
                        h.prefill_fused(&lins, t).unwrap(),
                        "{name}: not fused at t={t}"
                    );
                }
                check_linear(&format!("{name} tma={tma}"), &lins, t, true);
            }
        }
    }
    h.set_gemm_q4_tma(true);
    // Large inputs: products in the hundreds of thousands, accumulated in f32.
    let m = Linear::Gptq(random_gptq(4, 1024, 256, Some(128), false, 1, false, 99));
    let mut rng = Rng::new(3);
    let x: Vec<f32> = round16(
        &rand_vec(&mut rng, 200 * 1024, 1.0)
            .iter()
            .map(|v| v * 300.0)
            .collect::<Vec<_>>(),
    );
    let mut want = Vec::new();
    matmul::linear(&x, 200, &m, &mut want);
    let (got, q4) = h.linear_with(&[&m], &x, 200, true, None, None).unwrap();
    assert!(q4);
    let e = rel_l2(&got, &want);
    eprintln!("gemm_q4 large inputs: rel L2 {e:.2e}");
    assert!(e < 4e-3, "large inputs: rel L2 {e}");
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_gemv_large_activations() {
    // A few inputs in the thousands (LLaMA's down-projection inputs have such outliers): the
    // decode kernels that sum in f16 must scale x and not overflow.
    let h = harness();
    let (k, n) = (1024, 256);
    let m = Linear::Gptq(random_gptq(4, k, n, Some(128), false, 1, false, 77));
    let mut rng = Rng::new(5);
    let mut x = rand_vec(&mut rng, k, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 97 == 3 {
            *v = if i % 2 == 0 { 3000.0 } else { -2500.0 };
        }
    }
    let x = round16(&x);
    let mut want = Vec::new();
    matmul::linear(&x, 1, &m, &mut want);
    for kind in [
        GemvKind::Lean,
        GemvKind::Wide,
        GemvKind::Classic,
        GemvKind::Mma,
    ] {
        let (got, _) = h.linear_with(&[&m], &x, 1, true, None, Some(kind)).unwrap();
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{kind:?}: non-finite output"
        );
        let e = rel_l2(&got, &want);
        eprintln!("gemv large activations {kind:?}: rel L2 {e:.2e}");
        assert!(e < 4e-3, "{kind:?}: rel L2 {e}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_linear_fused_groups() {
    // q|k|v with one row order: concatenated into one 4-bit matrix.
    let q = Linear::Gptq(random_gptq(4, 256, 256, Some(64), false, 1, false, 1));
    let k = Linear::Gptq(random_gptq(4, 256, 128, Some(64), false, 1, false, 2));
    let v = Linear::Gptq(random_gptq(4, 256, 128, Some(64), false, 1, true, 3));
    for t in [1, 9] {
        check_linear("qkv", &[&q, &k, &v], t, true);
    }
    // Act-order members with different orders: separate launches into one output (group
    // size 64: in prefill each gathers its input in turn for the fused product).
    let a = Linear::Gptq(random_gptq(4, 256, 64, Some(64), true, 1, false, 4));
    let b = Linear::Gptq(random_gptq(4, 256, 96, Some(64), true, 1, false, 5));
    for t in [1, 9] {
        check_linear("gate|up act-order", &[&a, &b], t, true);
    }
    // A 4-bit member beside a dense one.
    let mut rng = Rng::new(9);
    let d = Linear::Dense {
        w: DenseMatrix {
            out_features: 40,
            in_features: 256,
            data: DenseData::F32(rand_vec(&mut rng, 40 * 256, 0.1)),
        },
        bias: Some(rand_vec(&mut rng, 40, 0.5)),
    };
    for t in [1, 9] {
        check_linear("mixed", &[&a, &d], t, false);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_linear_other_bits_and_dense() {
    for bits in [2u32, 3, 8] {
        let m = Linear::Gptq(random_gptq(
            bits,
            256,
            96,
            Some(32),
            bits == 3,
            1,
            false,
            bits as u64,
        ));
        for t in [1, 6] {
            check_linear(&format!("{bits}-bit"), &[&m], t, false);
        }
    }
    let mut rng = Rng::new(3);
    for (k, n) in [(64usize, 48usize), (30, 20), (5120, 1000)] {
        let f = Linear::Dense {
            w: DenseMatrix {
                out_features: n,
                in_features: k,
                data: DenseData::F16(
                    rand_vec(&mut rng, n * k, 0.1)
                        .into_iter()
                        .map(f16::from_f32)
                        .collect(),
                ),
            },
            bias: None,
        };
        for t in [1, 6] {
            check_linear(&format!("dense {k}x{n}"), &[&f], t, false);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_dequant() {
    for (k, n, g, act) in [
        (256usize, 64usize, Some(32), true),
        (512, 96, Some(128), false),
        (64, 32, None, false),
        (64, 40, Some(32), true),
    ] {
        let m = random_gptq(4, k, n, g, act, 1, false, 77);
        let w = harness().dequant(&m).unwrap().expect("4-bit path");
        let want: Vec<f32> = (0..k)
            .flat_map(|kk| (0..n).map(move |nn| (kk, nn)))
            .map(|(kk, nn)| f16::from_f32(m.dequant(kk, nn)).to_f32())
            .collect();
        let e = rel_l2(&w, &want);
        assert!(e < 1e-3, "dequant {k}x{n}: {e}");
    }
}
