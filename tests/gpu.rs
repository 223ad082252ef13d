//! The CUDA backend's kernel-level tests (the whole-model tests are in tests/gpu_model.rs).
//!
//! Three tests run everywhere (CI included): without a GPU, `new_backend` is a clean `Device`
//! error; where NVRTC is installed every kernel compiles for sm_90; and the device's RoPE table
//! matches the CPU's rotation. Every other test needs a CUDA GPU and is ignored by default: run
//! them on the device with `gpu-<hash> --ignored --test-threads=1` (tools/gpu_suite.sh does, and
//! under compute-sanitizer).
//!
//! Op tests compare each kernel with the CPU backend's op on random inputs (inputs that the GPU
//! holds in f16 are rounded to f16 for the reference too); `bench_kernels` prints kernel timings
//! on 13B shapes.

mod gpu_common;
use gpu_common::*;

use half::f16;
use std::sync::OnceLock;
use wv::backend::cpu::{matmul, ops};
use wv::backend::cuda::kernels::Kernels;
use wv::backend::cuda::testing::{random_gptq, OpHarness};
use wv::backend::cuda::weights::GemvKind;
use wv::sampler::{argmax, Rng, Sampler};
use wv::weights::{DenseData, DenseMatrix, HostWeights, LayerWeights, Linear};
use wv::ErrorKind;

const GPU: &str = "needs a CUDA GPU: run on the device with --ignored";

fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn harness() -> &'static OpHarness {
    static H: OnceLock<OpHarness> = OnceLock::new();
    H.get_or_init(|| OpHarness::new(0).expect("a CUDA GPU with the kernels"))
}

// ---------------------------------------------------------------------------------------------
// Tests that run everywhere.

/// A tiny random model built in memory (no files needed).
fn tiny_host() -> HostWeights {
    let c = tiny_config();
    let mut rng = Rng::new(5);
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let layer = LayerWeights {
        input_norm: vec![1.0; h],
        post_attention_norm: vec![1.0; h],
        q: dense(&mut rng, h, h),
        k: dense(&mut rng, h, h),
        v: dense(&mut rng, h, h),
        o: dense(&mut rng, h, h),
        gate: Linear::Gptq(random_gptq(4, h, f, Some(32), false, 1, false, 1)),
        up: dense(&mut rng, f, h),
        down: dense(&mut rng, h, f),
    };
    let embed = rand_vec(&mut rng, c.vocab_size * h, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    HostWeights {
        config: c,
        embed,
        layers: vec![layer],
        final_norm: vec![1.0; h],
        lm_head: None,
        embed_exact: None,
        lm_head_exact: None,
    }
}

/// Without a usable GPU, making the backend is a clean `Device` error (never a panic); with
/// one, it works. (Either way `--device auto` can decide.)
#[test]
fn no_gpu_is_a_device_error() {
    let host = tiny_host();
    match wv::backend::cuda::new_backend(&host, 0) {
        Ok(b) => {
            eprintln!("a GPU is present: {}", b.describe());
            assert_eq!(b.kind(), wv::backend::DeviceKind::Cuda);
        }
        Err(e) => {
            eprintln!("no GPU here: {e}");
            assert_eq!(e.kind, ErrorKind::Device, "{e}");
            assert!(!e.message.is_empty());
        }
    }
    // A device that cannot exist is an error too.
    let e = wv::backend::cuda::new_backend(&host, 1 << 20)
        .err()
        .expect("no GPU 1048576");
    assert_eq!(e.kind, ErrorKind::Device, "{e}");
}

/// Every kernel compiles with NVRTC for sm_90 (skipped where NVRTC is not installed).
#[test]
fn kernels_compile_for_sm90() {
    if let Err(e) = wv::backend::cuda::ffi::nvrtc() {
        // CI installs NVRTC and sets WV_REQUIRE_NVRTC=1, so there this cannot pass by skipping.
        assert!(
            std::env::var("WV_REQUIRE_NVRTC").is_err(),
            "WV_REQUIRE_NVRTC is set but NVRTC is missing: {e}"
        );
        eprintln!("skipped: {e}");
        return;
    }
    let images = wv::backend::cuda::module::compile_all_for(90).expect("the kernels compile");
    for (name, img) in &images {
        assert!(!img.bytes.is_empty(), "{name}: empty image");
        eprintln!(
            "{name}: {} bytes of {}",
            img.bytes.len(),
            if img.is_cubin { "cubin" } else { "PTX" }
        );
    }
    // Every module, the sm_90a ones (wgmma) included.
    assert_eq!(
        images.len(),
        wv::backend::cuda::module::SOURCES.len() + wv::backend::cuda::module::SOURCES_SM90A.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Op tests (GPU). The matrix products' (every GEMV and prefill product path, dequantisation)
// are in tests/gpu_products.

mod gpu_products;

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_embed_norm_silu() {
    let h = harness();
    let mut rng = Rng::new(11);
    // Embedding: a short row, rows over several blocks of 1,024, and widths not a multiple
    // of 4 (one element at a time).
    let vocab = 100;
    for dim in [48usize, 5120, 1030, 4098] {
        let table: Vec<f16> = rand_vec(&mut rng, vocab * dim, 1.0)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let toks = [3u32, 99, 0, 3];
        let got = h.embed(&table, dim, &toks).unwrap();
        let want: Vec<f32> = toks
            .iter()
            .flat_map(|&t| {
                table[t as usize * dim..(t as usize + 1) * dim]
                    .iter()
                    .map(|v| v.to_f32())
            })
            .collect();
        assert_eq!(got, want, "embedding rows of {dim}");
    }
    // Residual add + RMSNorm, with 3 partial slabs and a bias, for several widths: one row
    // (decode: residual_add then the norm), prefill's 512 rows of 5120 (residual_rmsnorm4 with
    // 256-thread blocks), and widths not a multiple of 4 (the scalar residual_rmsnorm).
    for (rows, dim) in [
        (1usize, 5120usize),
        (7, 32),
        (3, 1000),
        (512, 5120),
        (2, 30),
        (3, 4098),
    ] {
        let x = rand_vec(&mut rng, rows * dim, 2.0);
        let slabs: Vec<Vec<f32>> = (0..3)
            .map(|_| rand_vec(&mut rng, rows * dim, 1.0))
            .collect();
        let bias = rand_vec(&mut rng, dim, 0.5);
        let w = rand_vec(&mut rng, dim, 1.0);
        let mut xs = x.clone();
        for s in &slabs {
            ops::add(&mut xs, s);
        }
        for r in 0..rows {
            ops::add(&mut xs[r * dim..(r + 1) * dim], &bias);
        }
        let mut want = Vec::new();
        ops::rmsnorm(&xs, &w, 1e-5, &mut want);
        let (gx, gn, digits) = h
            .residual_rmsnorm(&x, &slabs, Some(&bias), &w, 1e-5, dim, 0)
            .unwrap();
        assert!(rel_l2(&gx, &xs) < 1e-6, "residual {rows}x{dim}");
        let e = rel_l2(&gn, &want);
        assert!(e < 1e-3, "rmsnorm {rows}x{dim}: {e}");
        check_digits("rmsnorm", rows == 1 && dim % 128 == 0, digits, &gn);
        // Only the last row (the final norm before the lm_head), no delta.
        let (_, last, _) = h
            .residual_rmsnorm(&xs, &[], None, &w, 1e-5, dim, rows - 1)
            .unwrap();
        let e = rel_l2(&last, &want[(rows - 1) * dim..]);
        assert!(e < 1e-3, "final norm row: {e}");
    }
    // SiLU · up with partial slabs and a bias: decode's 2 slabs, prefill's one slab of 512
    // rows (silu_mul4), and widths not a multiple of 4 (the scalar silu_mul).
    for (t, f, ns) in [
        (1usize, 13824usize, 2usize),
        (5, 96, 2),
        (512, 13824, 1),
        (3, 37, 2),
        (2, 50, 1),
    ] {
        let slabs: Vec<Vec<f32>> = (0..ns)
            .map(|_| rand_vec(&mut rng, t * 2 * f, 3.0))
            .collect();
        let bias = rand_vec(&mut rng, 2 * f, 0.1);
        let (got, digits) = h.silu_mul(&slabs, Some(&bias), f, t).unwrap();
        let mut g = Vec::new();
        let mut u = Vec::new();
        for ti in 0..t {
            for i in 0..2 * f {
                let v = slabs.iter().map(|s| s[ti * 2 * f + i]).sum::<f32>() + bias[i];
                if i < f {
                    g.push(v)
                } else {
                    u.push(v)
                }
            }
        }
        ops::silu_mul(&mut g, &u);
        let e = rel_l2(&got, &g);
        assert!(e < 1e-3, "silu_mul {t}x{f}: {e}");
        check_digits("silu_mul", t == 1 && f % 128 == 0, digits, &got);
    }
}

/// The digits a decode kernel wrote beside its output for `gemv_q4m` (128-input blocks of two
/// int8 digits, made from its f32 values): present exactly where `expected`, and equal to its
/// own f16 output `out` to within f16 rounding, as the CPU's encoding of `out` is.
fn check_digits(what: &str, expected: bool, digits: Option<Vec<f32>>, want: &[f32]) {
    assert_eq!(digits.is_some(), expected, "{what}: digits written");
    if let Some(d) = digits {
        let e = rel_l2(&d, &want[..d.len()]);
        eprintln!("{what}: digits rel L2 {e:.2e} against the CPU");
        assert!(e < 1e-3, "{what}: digits rel L2 {e}");
        let (w, s) = wv::backend::cuda::gemv_mma::encode_digits(&want[..d.len()]);
        let cpu = wv::backend::cuda::gemv_mma::decode_digits(&w, &s, d.len());
        assert!(
            rel_l2(&d, &cpu) < 1e-3,
            "{what}: digits against the CPU's encoding"
        );
    }
}

/// `gather_cols` (act-order prefill inputs) on both of its paths: rows staged in shared memory
/// (K % 8 == 0, up to 24,576) and one element per step (other widths, wider rows).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_gather_cols() {
    let h = harness();
    let mut rng = Rng::new(21);
    for (k, t) in [(640usize, 3usize), (13824, 2), (204, 5), (24584, 2)] {
        // A permutation from a seeded shuffle.
        let mut perm: Vec<i32> = (0..k as i32).collect();
        for i in (1..k).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            perm.swap(i, j);
        }
        let x = round16(&rand_vec(&mut rng, t * k, 1.0));
        let got = h.gather_cols(&x, &perm, t).unwrap();
        for r in 0..t {
            for (i, &p) in perm.iter().enumerate() {
                assert_eq!(
                    got[r * k + i],
                    x[r * k + p as usize],
                    "k={k} row {r} col {i}"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_qkv_rope() {
    let h = harness();
    let mut rng = Rng::new(12);
    // (t, pos, nh, nkv, hd, theta, RoPE table rows, position from device memory, bias). hd % 8
    // == 0 takes qkv_rope4, other head sizes qkv_rope; tables as short as pos + t test the last
    // rows; GQA where nkv < nh.
    for (t, pos, nh, nkv, hd, theta, rows, dev, bias) in [
        (
            1usize, 0usize, 4usize, 2usize, 16usize, 10000f32, 4usize, true, false,
        ),
        (1, 4095, 40, 40, 128, 10000.0, 4096, true, false),
        (1, 2047, 32, 8, 128, 500000.0, 2048, true, true),
        (3, 1500, 40, 40, 128, 10000.0, 2048, false, false),
        (6, 7, 8, 2, 64, 500000.0, 100, false, true),
        (512, 100, 32, 8, 128, 10000.0, 4096, false, false),
        (480, 1568, 40, 40, 128, 10000.0, 2048, false, false),
        (5, 10, 3, 1, 20, 10000.0, 15, false, true),
        (1, 30, 2, 1, 12, 10000.0, 31, true, true),
    ] {
        let ld = (nh + 2 * nkv) * hd;
        let slabs: Vec<Vec<f32>> = (0..2).map(|_| rand_vec(&mut rng, t * ld, 1.0)).collect();
        let bv = rand_vec(&mut rng, ld, 0.5);
        let cap = pos + t + 3;
        let (q, kc, vc) = h
            .qkv_rope(
                &slabs,
                bias.then_some(&bv[..]),
                t,
                pos,
                (nh, nkv, hd),
                theta,
                cap,
                rows,
                dev,
            )
            .unwrap();
        let mut sum: Vec<f32> = slabs[0].iter().zip(&slabs[1]).map(|(a, b)| a + b).collect();
        if bias {
            for row in sum.chunks_exact_mut(ld) {
                ops::add(row, &bv);
            }
        }
        let (mut wq, mut wk, mut wv) = (Vec::new(), Vec::new(), Vec::new());
        for ti in 0..t {
            let row = &sum[ti * ld..(ti + 1) * ld];
            wq.extend_from_slice(&row[..nh * hd]);
            wk.extend_from_slice(&row[nh * hd..(nh + nkv) * hd]);
            wv.extend_from_slice(&row[(nh + nkv) * hd..]);
        }
        let inv = ops::rope_inv_freq(hd, theta);
        ops::rope(&mut wq, nh, hd, pos, &inv);
        ops::rope(&mut wk, nkv, hd, pos, &inv);
        let kvd = nkv * hd;
        let what = format!("t={t} pos={pos} heads {nh}/{nkv}x{hd} device pos {dev}");
        // The table holds the CPU's cos and sin and the kernel rounds as the CPU does: equal
        // bit for bit (K and V after the same f16 rounding).
        let differ = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        let n = differ(&q, &wq);
        assert_eq!(n, 0, "q {what}: {n} values differ, rel {}", rel_l2(&q, &wq));
        let wk16 = round16(&wk);
        let n = differ(&kc[pos * kvd..(pos + t) * kvd], &wk16);
        assert_eq!(n, 0, "k {what}: {n} values differ");
        let n = differ(&vc[pos * kvd..(pos + t) * kvd], &round16(&wv));
        assert_eq!(n, 0, "v {what}: {n} values differ");
        assert!(
            kc[..pos * kvd]
                .iter()
                .chain(&kc[(pos + t) * kvd..])
                .chain(&vc[..pos * kvd])
                .chain(&vc[(pos + t) * kvd..])
                .all(|&x| x == 0.0),
            "wrote outside its positions ({what})"
        );
    }
    // A position past the table (which the backend refuses before launching): nothing is read
    // out of bounds, q and k come out NaN, v is still written.
    let (nh, nkv, hd, pos) = (4usize, 2usize, 16usize, 63usize);
    let ld = (nh + 2 * nkv) * hd;
    let slabs = vec![rand_vec(&mut rng, 2 * ld, 1.0)];
    let (q, kc, vc) = h
        .qkv_rope(&slabs, None, 2, pos, (nh, nkv, hd), 10000.0, 66, 64, true)
        .unwrap();
    let kvd = nkv * hd;
    assert!(q[..nh * hd].iter().all(|x| x.is_finite()));
    assert!(q[nh * hd..].iter().all(|x| x.is_nan()), "q past the table");
    assert!(kc[(pos + 1) * kvd..(pos + 2) * kvd]
        .iter()
        .all(|x| x.is_nan()));
    assert!(vc[(pos + 1) * kvd..(pos + 2) * kvd]
        .iter()
        .all(|x| x.is_finite()));
}

/// The RoPE table (made on the host at load, read by qkv_rope) gives exactly the CPU backend's
/// rotation, at early and late positions (runs everywhere: no GPU needed).
#[test]
fn rope_table_matches_cpu_rope() {
    let mut rng = Rng::new(21);
    for (hd, theta, positions) in [
        (128usize, 10000f32, 4096usize),
        (16, 500000.0, 300),
        (20, 10000.0, 64),
    ] {
        let half = hd / 2;
        let tab = wv::backend::cuda::weights::rope_table(hd, theta, positions);
        assert_eq!(tab.len(), positions * hd);
        let inv = ops::rope_inv_freq(hd, theta);
        for p in [0, 1, 2, 17, positions / 2, positions - 2, positions - 1] {
            let x = rand_vec(&mut rng, hd, 1.0);
            let mut want = x.clone();
            ops::rope(&mut want, 1, hd, p, &inv);
            let mut got = x.clone();
            for j in 0..half {
                let (c, s) = (tab[(p * half + j) * 2], tab[(p * half + j) * 2 + 1]);
                let (a, b) = (x[j], x[j + half]);
                got[j] = a * c - b * s;
                got[j + half] = b * c + a * s;
            }
            assert_eq!(got, want, "hd {hd} position {p}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_attention() {
    let h = harness();
    let mut rng = Rng::new(13);
    // (t, pos, nh, nkv, hd, slots): decode short and long, prefill, GQA, several chunkings.
    let cases = [
        (1usize, 0usize, 2usize, 2usize, 16usize, 64usize),
        (1, 1499, 8, 8, 128, 64),
        (1, 200, 8, 2, 64, 64),
        (1, 5000, 4, 4, 128, 64),
        (7, 5, 4, 2, 16, 64),
        (64, 100, 4, 4, 128, 256),
        (100, 0, 2, 1, 256, 400),
        (33, 300, 4, 4, 80, 33),
    ];
    for (t, pos, nh, nkv, hd, slots) in cases {
        let n = pos + t;
        let q = rand_vec(&mut rng, t * nh * hd, 1.0);
        let kc = round16(&rand_vec(&mut rng, n * nkv * hd, 1.0));
        let vc = round16(&rand_vec(&mut rng, n * nkv * hd, 1.0));
        let mut want = Vec::new();
        ops::attention(&q, &kc, &vc, t, pos, nh, nkv, hd, &mut want);
        for device_pos in [false, true] {
            let (got, digits) = h
                .attention(&q, &kc, &vc, t, pos, (nh, nkv, hd), slots, device_pos)
                .unwrap();
            check_digits("attention", t == 1 && hd == 128, digits, &got);
            let e = rel_l2(&got, &want);
            eprintln!("attention t={t} pos={pos} nh={nh} nkv={nkv} hd={hd} device_pos={device_pos}: rel L2 {e:.2e}");
            // Prefill with a host position may take the tensor cores (q and P rounded to f16).
            let tc = t > 1 && !device_pos && Kernels::attn_tc_fits(hd);
            assert!(
                e < if tc { 5e-3 } else { 2e-3 },
                "attention t={t} pos={pos} nh={nh} nkv={nkv} hd={hd} device_pos={device_pos}: {e}"
            );
        }
    }
}

/// Prefill attention through both kernel families: the tensor-core kernels (`attn_prefill_tc_64`
/// and `_128`: full, partial and single query tiles, keys cached before the chunk, GQA, head
/// sizes zero-padded to 64 / 128) and the SIMT fallback on the same inputs.
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_attention_prefill_tc() {
    let h = harness();
    let mut rng = Rng::new(15);
    let mut cases = Vec::new();
    for hd in [128usize, 64] {
        for t in [2usize, 17, 64, 100, 300] {
            for pos in [0usize, 37, 200] {
                cases.push((t, pos, 4usize, 4usize, hd));
            }
        }
    }
    // GQA (4 and 8 query heads per KV head), odd head sizes (padded), a long cache.
    cases.extend([
        (100, 37, 8, 2, 128),
        (65, 0, 8, 1, 64),
        (130, 64, 6, 3, 128),
        (33, 5, 4, 2, 16),
        (70, 11, 4, 4, 80),
        (50, 100, 4, 2, 96),
        (129, 1000, 4, 1, 128),
    ]);
    for (t, pos, nh, nkv, hd) in cases {
        assert!(Kernels::attn_tc_fits(hd));
        let n = pos + t;
        let q = rand_vec(&mut rng, t * nh * hd, 1.0);
        let kc = round16(&rand_vec(&mut rng, n * nkv * hd, 1.0));
        let vc = round16(&rand_vec(&mut rng, n * nkv * hd, 1.0));
        let mut want = Vec::new();
        ops::attention(&q, &kc, &vc, t, pos, nh, nkv, hd, &mut want);
        for tc in [true, false] {
            let got = h
                .attention_prefill(&q, &kc, &vc, t, pos, (nh, nkv, hd), tc)
                .unwrap();
            let e = rel_l2(&got, &want);
            let what = if tc { "tensor-core" } else { "SIMT" };
            eprintln!("prefill attention ({what}) t={t} pos={pos} nh={nh} nkv={nkv} hd={hd}: rel L2 {e:.2e}");
            assert!(
                e < if tc { 5e-3 } else { 2e-3 },
                "prefill attention ({what}) t={t} pos={pos} nh={nh} nkv={nkv} hd={hd}: {e}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_argmax_and_penalty() {
    let h = harness();
    let mut rng = Rng::new(14);
    for n in [1usize, 31, 32000, 100_003] {
        let mut v = rand_vec(&mut rng, n, 5.0);
        if n > 40 {
            v[17] = 9.0;
            v[n - 1] = 9.0; // a tie: the lowest index wins
        }
        assert_eq!(h.argmax(&v, &[], 1.0).unwrap(), argmax(&v), "n={n}");
        let ids: Vec<u32> = (0..50)
            .map(|_| (rng.next_u64() % n as u64) as u32)
            .chain([17, 17])
            .filter(|&i| (i as usize) < n)
            .collect();
        let mut pv = v.clone();
        Sampler::apply_penalty(&mut pv, &ids, 1.3);
        assert_eq!(
            h.argmax(&v, &ids, 1.3).unwrap(),
            argmax(&pv),
            "n={n} with penalty"
        );
    }
}

/// Device sampling (temperature, top-k with ties, top-p, the draw) picks what the host's
/// `sampler::choose` picks for the same logits and uniform: exactly, except where the uniform
/// falls within 1e-12 of a cumulative boundary (f64 `exp` may differ in the last bit).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn op_sample_topk() {
    let h = harness();
    let mut rng = Rng::new(23);
    let n = 32000;
    let mut v = rand_vec(&mut rng, n, 4.0);
    for i in 0..12 {
        v[100 + 7 * i] = 7.5; // a run of ties near the top
    }
    let settings = [
        (0.7f32, 40usize, 0.95f32),
        (1.0, 1, 1.0),
        (0.7, 5, 1.0),
        (1.3, 100, 0.5),
        (0.2, 2048, 0.9),
        (0.7, 12, 0.95), // the k-th value is one of the ties: all 12 + kept
    ];
    let mut cand = Vec::new();
    let mut draws = 0;
    for (t, k, p) in settings {
        for j in 0..64 {
            let u = if j == 0 { 0.0 } else { rng.uniform() };
            let want = wv::sampler::choose(&mut cand, &v, t, k, p, u);
            let got = h.sample_topk(&v, t, k, p, u).unwrap();
            draws += 1;
            if got != want {
                // Only a draw on a boundary may differ: there the host's own choice changes
                // within 1e-12 of u.
                let lo = wv::sampler::choose(&mut cand, &v, t, k, p, (u - 1e-12).max(0.0));
                let hi = wv::sampler::choose(&mut cand, &v, t, k, p, u + 1e-12);
                assert!(
                    lo != hi && (got == lo || got == hi),
                    "t={t} k={k} p={p} u={u}: device {got}, host {want}"
                );
            }
        }
    }
    // All values equal: more ties than the kernel sorts, so it hands the choice back.
    let flat = vec![1.0f32; n];
    assert_eq!(h.sample_topk(&flat, 0.7, 40, 0.95, 0.3).unwrap(), u32::MAX);
    eprintln!("sample_topk: {draws} draws equal the host's");
}

/// Kernel timings on 13B shapes beside the copy bandwidth (printed; run by tools/gpu_suite.sh).
#[test]
#[ignore = "needs a CUDA GPU: run on the device with --ignored"]
fn bench_kernels() {
    let h = harness();
    let bw = h.copy_bandwidth(1 << 30).unwrap();
    eprintln!("BENCH copy bandwidth: {:.0} GB/s (read + write)", bw / 1e9);
    // The ceiling for a kernel that only reads (what a decode GEMV does).
    for per_sm in [2usize, 4, 8] {
        let r = h.read_bandwidth(1 << 30, per_sm).unwrap();
        eprintln!(
            "BENCH read bandwidth ({per_sm} blocks of 256 per SM, 8 x 16 B in flight per thread): {:.0} GB/s = {:.0}% of copy bandwidth",
            r / 1e9,
            100.0 * r / bw
        );
    }
    let shapes = [
        ("q|k|v", 5120usize, vec![5120usize, 5120, 5120]),
        ("o", 5120, vec![5120]),
        ("gate|up", 5120, vec![13824, 13824]),
        ("down", 13824, vec![5120]),
        // Not a 13B shape: 168 MB in one launch, the kernel's steady-state streaming rate.
        ("steady", 5120, vec![65536]),
    ];
    for (name, k) in h.gemv_kernels() {
        if let Some((regs, local)) = k {
            eprintln!(
                "BENCH kernel {name}: {regs} registers, {local} bytes of local memory per thread"
            );
        }
    }
    let mut total_ms = 0f64;
    let mut total_bytes = 0usize;
    // Queued per-layer sums: the GEMVs, plain reads of their bytes.
    let mut queued = [0f64; 2];
    for (name, k, ns) in &shapes {
        let mats: Vec<Linear> = ns
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                Linear::Gptq(random_gptq(4, *k, n, Some(128), false, 1, false, i as u64))
            })
            .collect();
        let refs: Vec<&Linear> = mats.iter().collect();
        let (ms, bytes) = h.time_gemv(&refs, 50).unwrap();
        if *name != "steady" {
            total_ms += ms as f64;
            total_bytes += bytes;
        }
        eprintln!(
            "BENCH gemv {name:8} {k}x{:?}: {:.1} us, {:.0} GB/s = {:.0}% of copy bandwidth",
            ns,
            ms * 1e3,
            bytes as f64 / (ms as f64 * 1e-3) / 1e9,
            100.0 * bytes as f64 / (ms as f64 * 1e-3) / bw
        );
        // The same launches queued back to back (no host launch latency between them, unlike
        // the figure above), beside a plain read of as many bytes: the GEMV's own start and end.
        let (chain_ms, _) = h.time_gemv_with(&refs, 40, true).unwrap();
        let read_ms = h.read_sweep_chain(bytes / 16 * 16, 2).unwrap();
        let pct = |ms: f32| 100.0 * bytes as f64 / (ms as f64 * 1e-3) / bw;
        eprintln!(
            "BENCH gemv {name:8} queued: {:.1} us ({:.0}%); a plain read of the same {:.1} MB: {:.1} us ({:.0}%)",
            chain_ms * 1e3,
            pct(chain_ms),
            bytes as f64 / 1e6,
            read_ms * 1e3,
            pct(read_ms)
        );
        if *name != "steady" {
            queued[0] += chain_ms as f64;
            queued[1] += read_ms as f64;
        }
    }
    eprintln!(
        "BENCH one 13B layer of GEMVs: {:.1} us, {:.0}% of copy bandwidth; x40 layers = {:.2} ms",
        total_ms * 1e3,
        100.0 * total_bytes as f64 / (total_ms * 1e-3) / bw,
        total_ms * 40.0
    );
    eprintln!(
        "BENCH one 13B layer of GEMVs queued: {:.1} us ({:.0}%), plain reads of their bytes {:.1} us ({:.0}%)",
        queued[0] * 1e3,
        100.0 * total_bytes as f64 / (queued[0] * 1e-3) / bw,
        queued[1] * 1e3,
        100.0 * total_bytes as f64 / (queued[1] * 1e-3) / bw
    );
    for (name, n) in h.gemm_q4_blocks_per_sm() {
        eprintln!("BENCH kernel {name}: {n} blocks per SM");
    }
    for (t, pos) in [(512usize, 0usize), (476, 1024)] {
        for (name, ms) in h.time_prefill_parts(t, pos).unwrap() {
            eprintln!("BENCH prefill part {name}: {:.3} ms", ms);
        }
    }
}
