//! Kernel timings for `bench_kernels` (tests/gpu.rs): the products, the prefill parts and the
//! bandwidth probes (copy, plain reads) on 13B shapes, with CUDA events. Printed, never asserted:
//! speed is measured by benchmarks, not by tests.

use super::*;

impl OpHarness {
    /// Time `f` with CUDA events: (median ms over `reps` runs after `warm` warm-ups).
    pub fn time_ms(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f32> {
        for _ in 0..warm {
            f()?;
        }
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let (a, b) = (self.gpu.event()?, self.gpu.event()?);
            a.record()?;
            f()?;
            b.record()?;
            v.push(b.since(&a)?);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Ok(v[v.len() / 2])
    }

    /// Mean time of `f` (ms) over `reps` calls queued back to back between one pair of events,
    /// so that the host's launch latency is not counted (after `warm` calls).
    pub fn time_ms_chain(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f32> {
        for _ in 0..warm {
            f()?;
        }
        let (a, b) = (self.gpu.event()?, self.gpu.event()?);
        a.record()?;
        for _ in 0..reps {
            f()?;
        }
        b.record()?;
        Ok(b.since(&a)? / reps.max(1) as f32)
    }

    /// Time (ms) of one `read_sweep` over `bytes` with `blocks_per_sm` blocks of 256, queued
    /// back to back over four buffers in turn (so that L2 does not serve repeated reads).
    pub fn read_sweep_chain(&self, bytes: usize, blocks_per_sm: usize) -> Result<f32> {
        let bufs = (0..4)
            .map(|_| self.gpu.alloc(bytes, "bandwidth test"))
            .collect::<Result<Vec<_>>>()?;
        for b in &bufs {
            self.gpu.memset_u32(b.ptr, 0x3c00_3c00, bytes / 4)?;
        }
        let out = self.gpu.alloc(4, "bandwidth test")?;
        let turn = std::cell::Cell::new(0usize);
        self.time_ms_chain(4, 40, || {
            let i = turn.get();
            turn.set(i + 1);
            self.read_sweep(bufs[i % 4].ptr, bytes, blocks_per_sm, out.ptr)
        })
    }

    /// One `read_sweep` launch over the `bytes` at `buf` (a device buffer of at least that
    /// many bytes) with `blocks_per_sm` blocks of 256; `out` is a u32 it may write.
    fn read_sweep(
        &self,
        buf: CUdeviceptr,
        bytes: usize,
        blocks_per_sm: usize,
        out: CUdeviceptr,
    ) -> Result<()> {
        let mut args = Args::new();
        args.ptr(buf).i64((bytes / 16) as i64).ptr(out);
        let blocks = (self.gpu.sms * blocks_per_sm) as u32;
        // SAFETY: buf holds bytes / 16 16-byte words (the callers' buffers); out one u32.
        self.gpu
            .launch(&self.k.read_sweep, (blocks, 1, 1), 256, 0, &mut args)
    }

    /// Device-to-device copy bandwidth (bytes read + written per second) over `bytes`.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64> {
        let a = self.gpu.alloc(bytes, "bandwidth test")?;
        let b = self.gpu.alloc(bytes, "bandwidth test")?;
        self.gpu.memset_u32(a.ptr, 0x3c00_3c00, bytes / 4)?;
        let ms = self.time_ms(3, 20, || self.gpu.copy_dtod(b.ptr, a.ptr, bytes))?;
        Ok(2.0 * bytes as f64 / (ms as f64 * 1e-3))
    }

    /// Read bandwidth (bytes read per second) of a plain streaming kernel over `bytes`
    /// (`read_sweep`: 16-byte loads, 8 in flight per thread), with `blocks_per_sm` blocks of 256.
    pub fn read_bandwidth(&self, bytes: usize, blocks_per_sm: usize) -> Result<f64> {
        let a = self.gpu.alloc(bytes, "bandwidth test")?;
        let out = self.gpu.alloc(4, "bandwidth test")?;
        self.gpu.memset_u32(a.ptr, 0x3c00_3c00, bytes / 4)?;
        let ms = self.time_ms(3, 20, || {
            self.read_sweep(a.ptr, bytes, blocks_per_sm, out.ptr)
        })?;
        Ok(bytes as f64 / (ms as f64 * 1e-3))
    }

    /// Registers and local memory per thread of the decode GEMV kernels.
    pub fn gemv_kernels(&self) -> Vec<(&'static str, Option<(i32, i32)>)> {
        [&self.k.gemv_q4l, &self.k.gemv_q4w]
            .into_iter()
            .map(|k| (k.name, k.resources(&self.gpu)))
            .collect()
    }

    /// Median time of the decode GEMV of one group (for kernel benchmarks): (ms, bytes read).
    /// Four copies of the weights take turns, so that the L2 cache (50 MB on an H100) does not
    /// serve repeated reads.
    pub fn time_gemv(&self, lins: &[&Linear], reps: usize) -> Result<(f32, usize)> {
        self.time_gemv_with(lins, reps, false)
    }

    /// [`Self::time_gemv`], or with `chain` the mean over launches queued back to back
    /// ([`Self::time_ms_chain`]: no host launch latency between them).
    pub fn time_gemv_with(
        &self,
        lins: &[&Linear],
        reps: usize,
        chain: bool,
    ) -> Result<(f32, usize)> {
        let gs = (0..4)
            .map(|_| self.upload(lins, "bench weights"))
            .collect::<Result<Vec<_>>>()?;
        let g = &gs[0];
        let x: Vec<f16> = (0..g.k)
            .map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
            .collect();
        let xd = self.up(&x)?;
        let part = self.gpu.alloc(g.s_decode * g.n_total * 4, "bench out")?;
        // The input's digits, for a group on gemv_q4m (every 4-bit group in the unit-major
        // layout, the sm_90 default).
        let digits = self.digits_buf(g.k)?;
        let ops = Ops {
            gpu: &self.gpu,
            k: &self.k,
            blas: None,
            pd: None,
            qgemm: false,
        };
        let turn = std::cell::Cell::new(0usize);
        let f = || {
            let i = turn.get();
            turn.set(i + 1);
            ops.linear(
                &gs[i % gs.len()],
                xd.ptr,
                1,
                (part.ptr, g.s_decode * g.n_total),
                PrefillBufs {
                    digits: digits.as_ref().map(|d| d.ptr),
                    ..PrefillBufs::default()
                },
            )
            .map(|_| ())
        };
        let ms = if chain {
            self.time_ms_chain(5, reps, f)?
        } else {
            self.time_ms(5, reps, f)?
        };
        Ok((ms, g.bytes()))
    }

    /// Blocks per SM of each loaded fused prefill kernel (the occupancy API's figure for its
    /// threads and shared memory).
    pub fn gemm_q4_blocks_per_sm(&self) -> Vec<(&'static str, usize)> {
        use crate::backend::cuda::gemm_q4 as g4;
        [
            (
                "gemm_q4_wgmma",
                self.k.gemm_q4.as_ref(),
                g4::GEMM_Q4_THREADS,
                g4::GEMM_Q4_SMEM,
            ),
            (
                "gemm_q4_tma",
                self.k.gemm_q4_tma.as_ref(),
                g4::GEMM_Q4_TMA_THREADS,
                g4::GEMM_Q4_TMA_SMEM,
            ),
        ]
        .into_iter()
        .filter_map(|(name, f, threads, smem)| Some((name, self.gpu.occupancy(f?, threads, smem)?)))
        .collect()
    }

    /// Timings of prefill's parts on 13B shapes (ms): dequantisation, the cuBLAS product and
    /// attention, for `t` tokens after `pos` cached ones; then the elementwise kernels and
    /// cuBLAS on every product shape of a layer ([`Self::time_prefill_elementwise`],
    /// [`Self::time_prefill_products`]).
    pub fn time_prefill_parts(&self, t: usize, pos: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::new();
        let m = crate::weights::Linear::Gptq(random_gptq(
            4,
            5120,
            13824,
            Some(128),
            false,
            1,
            false,
            3,
        ));
        let g = self.upload_rows(&[&m], "bench weights")?;
        let DevMat::Q4(q) = &g.members[0].mat else {
            return Ok(out);
        };
        let deq = self.gpu.alloc(q.k * q.n * 2, "bench dequant")?;
        let ms = self.time_ms(3, 10, || self.k.dequant_q4(&self.gpu, q, deq.ptr, 0, q.n))?;
        out.push((
            format!(
                "dequant 5120x13824 ({:.0} GB/s written+read)",
                (q.k * q.n * 2 + g.bytes()) as f64 / (ms as f64 * 1e-3) / 1e9
            ),
            ms,
        ));
        let x = self.gpu.alloc(t * q.k * 2, "bench x")?;
        self.gpu.memset_u32(x.ptr, 0x3c00_3c00, t * q.k / 2)?;
        let y = self.gpu.alloc(t * q.n * 4, "bench y")?;
        if let Some(b) = &self.blas {
            let ms = self.time_ms(3, 10, || {
                b.gemm(false, x.ptr, deq.ptr, y.ptr, t, q.n, q.k, q.n)
            })?;
            out.push((
                format!(
                    "cuBLAS {t}x5120x13824 ({:.0} TFLOP/s)",
                    2.0 * (t * q.k * q.n) as f64 / (ms as f64 * 1e-3) / 1e12
                ),
                ms,
            ));
        }
        // Timed whatever the token limit on its use (the comparison that set the limit).
        if self.k.gemm_q4_fits(q) {
            let ms = self.time_ms(3, 10, || {
                self.k.gemm_q4(&self.gpu, q, x.ptr, y.ptr, t, q.n, 1)
            })?;
            out.push((
                format!(
                    "gemm_q4 (default kernel) {t}x5120x13824 straight from 4 bits ({:.0} TFLOP/s)",
                    2.0 * (t * q.k * q.n) as f64 / (ms as f64 * 1e-3) / 1e12
                ),
                ms,
            ));
            // Every 13B product of a layer (the prefill's products without dequantisation), on
            // each variant of the kernel.
            let variants: &[(&str, bool)] = if self.has_gemm_q4_tma() {
                &[("gemm_q4_tma", true), ("gemm_q4_wgmma", false)]
            } else {
                &[("gemm_q4_wgmma", false)]
            };
            for &(kname, tma) in variants {
                self.set_gemm_q4_tma(tma);
                let mut total = 0f32;
                for (name, k, n) in LAYER_13B_PRODUCTS {
                    let m = crate::weights::Linear::Gptq(random_gptq(
                        4,
                        k,
                        n,
                        Some(128),
                        false,
                        1,
                        false,
                        7,
                    ));
                    let g = self.upload_rows(&[&m], "bench weights")?;
                    let DevMat::Q4(q) = &g.members[0].mat else {
                        continue;
                    };
                    let x = self.gpu.alloc(t * k * 2, "bench x")?;
                    self.gpu.memset_u32(x.ptr, 0x3c00_3c00, t * k / 2)?;
                    let split = self.k.gemm_q4_splits(&self.gpu, q, t);
                    let y = self.gpu.alloc(split * t * n * 4, "bench y")?;
                    let ms = self.time_ms(3, 10, || {
                        self.k.gemm_q4(&self.gpu, q, x.ptr, y.ptr, t, n, split)
                    })?;
                    total += ms;
                    out.push((
                        format!(
                            "{kname} {name} {t}x{k}x{n} in {split} split(s) ({:.0} TFLOP/s)",
                            2.0 * (t * k * n) as f64 / (ms as f64 * 1e-3) / 1e12
                        ),
                        ms,
                    ));
                }
                out.push((
                    format!("{kname} one 13B layer's products (x40 for the model)"),
                    total,
                ));
            }
            self.set_gemm_q4_tma(true);
        }
        let ms = self.time_ms(1, 3, || {
            self.k
                .gemm(&self.gpu, false, x.ptr, deq.ptr, y.ptr, t, q.n, q.k, q.n)
        })?;
        out.push((format!("wv SIMT GEMM {t}x5120x13824"), ms));
        let (nh, hd) = (40, 128);
        let n = pos + t;
        let qd = self.gpu.alloc(t * nh * hd * 4, "bench q")?;
        self.gpu.memset_u32(qd.ptr, 0x3c00_0000, t * nh * hd)?;
        let kv = self.gpu.alloc(n * nh * hd * 2, "bench kv")?;
        self.gpu.memset_u32(kv.ptr, 0x3c00_3c00, n * nh * hd / 2)?;
        let slots = (t * 4).max(64);
        let (chunk, nch) = plan_attention(n, t, slots);
        let po = self.gpu.alloc(slots * nh * hd * 4, "bench po")?;
        let pml = self.gpu.alloc(slots * nh * 2 * 4, "bench pml")?;
        let o = self.gpu.alloc(t * nh * hd * 2, "bench out")?;
        let ms = self.time_ms(2, 5, || {
            self.k
                .attention(
                    &self.gpu,
                    qd.ptr,
                    kv.ptr,
                    kv.ptr,
                    (po.ptr, pml.ptr),
                    o.ptr,
                    (pos, 0),
                    t,
                    (nh, nh, hd),
                    (chunk, nch),
                    0,
                )
                .map(|_| ())
        })?;
        out.push((format!("attention t={t} pos={pos} (40 heads x 128)"), ms));
        // The two prefill kernel families side by side, whatever WV_CUDA_ATTN_TC says.
        for (tc, name) in [
            (true, "tensor-core attn_prefill_tc_128"),
            (false, "SIMT attn_prefill_64"),
        ] {
            let ms = self.time_ms(2, 10, || {
                self.k.attention_prefill(
                    &self.gpu,
                    qd.ptr,
                    kv.ptr,
                    kv.ptr,
                    o.ptr,
                    pos,
                    t,
                    (nh, nh, hd),
                    tc,
                )
            })?;
            let n_scores = (0..t).map(|i| pos + i + 1).sum::<usize>() * nh;
            out.push((
                format!(
                    "attention {name} t={t} pos={pos} ({:.0} TFLOP/s)",
                    4.0 * (n_scores * hd) as f64 / (ms as f64 * 1e-3) / 1e12
                ),
                ms,
            ));
        }
        out.extend(self.time_prefill_elementwise(t, pos)?);
        out.extend(self.time_prefill_products(t)?);
        Ok(out)
    }

    /// `copies` buffers of `bytes` each, filled with small finite values (f32 0.0078125, or
    /// f16 ≈ 0.0078 pairs), that benchmarks take in turn so that the 50 MB L2 cache of an H100
    /// does not serve repeated reads.
    fn bench_bufs(&self, bytes: usize, copies: usize) -> Result<Vec<DevBuf>> {
        (0..copies)
            .map(|_| {
                let b = self.gpu.alloc(bytes, "bench buffer")?;
                self.gpu.memset_u32(b.ptr, 0x3c00_0000, bytes.div_ceil(4))?;
                Ok(b)
            })
            .collect()
    }

    /// Timings of prefill's elementwise kernels on 13B shapes (hidden 5120, 40 heads x 128, FFN
    /// 13824) for `t` tokens at `pos`: qkv_rope, silu_mul and residual_rmsnorm (with one slab
    /// of delta, as prefill), each with the bandwidth it reaches (bytes read + written). Inputs
    /// rotate over copies of at least 150 MB in all, so they come from memory, not L2.
    pub fn time_prefill_elementwise(&self, t: usize, pos: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::new();
        let (h, nh, hd, f) = (5120usize, 40usize, 128usize, 13824usize);
        let copies = |bytes: usize| (150usize << 20).div_ceil(bytes).max(2);
        let gbs = |bytes: usize, ms: f32| bytes as f64 / (ms as f64 * 1e-3) / 1e9;
        let turn = std::cell::Cell::new(0usize);
        let next = |n: usize| {
            let i = turn.get();
            turn.set(i + 1);
            i % n
        };
        // qkv_rope: part f32 [t, 3 * 5120] → q f32 [t, 5120], K and V f16 into a cache.
        let ld = 3 * h;
        let parts = self.bench_bufs(t * ld * 4, copies(t * ld * 4))?;
        let q = self.gpu.alloc(t * h * 4, "bench q")?;
        let cap = pos + t;
        let kc = self.bench_bufs(cap * h * 2, 1)?;
        let vc = self.bench_bufs(cap * h * 2, 1)?;
        let rows = cap.max(4096);
        let tab = self.up(&rope_table(hd, 10000.0, rows))?;
        let rope = RopeTable {
            ptr: tab.ptr,
            positions: rows,
        };
        let ms = self.time_ms(3, 20, || {
            let p = Partials {
                ptr: parts[next(parts.len())].ptr,
                s: 1,
                sstride: t * ld,
                ld,
            };
            self.k.qkv_rope(
                &self.gpu,
                p,
                0,
                q.ptr,
                kc[0].ptr,
                vc[0].ptr,
                rope,
                (pos, 0),
                t,
                (nh, nh, hd),
            )
        })?;
        let bytes = t * ld * 4 + t * h * 4 + 2 * t * h * 2 + t * hd * 4;
        out.push((
            format!(
                "qkv_rope t={t} 40+40+40 heads x 128 ({:.0} GB/s)",
                gbs(bytes, ms)
            ),
            ms,
        ));
        drop(parts);
        // silu_mul: part f32 [t, 2 * 13824] → f16 [t, 13824].
        let parts = self.bench_bufs(t * 2 * f * 4, copies(t * 2 * f * 4))?;
        let o = self.gpu.alloc(t * f * 2, "bench out")?;
        let ms = self.time_ms(3, 20, || {
            let p = Partials {
                ptr: parts[next(parts.len())].ptr,
                s: 1,
                sstride: t * 2 * f,
                ld: 2 * f,
            };
            self.k.silu_mul(&self.gpu, p, 0, o.ptr, f, t, 0).map(|_| ())
        })?;
        let bytes = t * 2 * f * 4 + t * f * 2;
        out.push((
            format!("silu_mul t={t} F=13824 ({:.0} GB/s)", gbs(bytes, ms)),
            ms,
        ));
        drop(parts);
        // residual_rmsnorm: x f32 [t, 5120] += delta (one slab), normalised to f16.
        let n = copies(2 * t * h * 4);
        let xs = self.bench_bufs(t * h * 4, n)?;
        let ds = self.bench_bufs(t * h * 4, n)?;
        let w = self.bench_bufs(h * 4, 1)?;
        let o = self.gpu.alloc(t * h * 2, "bench out")?;
        let ms = self.time_ms(3, 20, || {
            let i = next(n);
            let d = Partials {
                ptr: ds[i].ptr,
                s: 1,
                sstride: t * h,
                ld: h,
            };
            self.k
                .residual_rmsnorm(
                    &self.gpu,
                    xs[i].ptr,
                    Some(d),
                    0,
                    w[0].ptr,
                    1e-5,
                    o.ptr,
                    h,
                    0,
                    t,
                    0,
                )
                .map(|_| ())
        })?;
        let bytes = 3 * t * h * 4 + t * h * 2 + h * 4;
        out.push((
            format!(
                "residual_rmsnorm t={t} H=5120 with a delta ({:.0} GB/s)",
                gbs(bytes, ms)
            ),
            ms,
        ));
        Ok(out)
    }

    /// cuBLAS on the exact product shapes of a 13B layer at `t` tokens (X f16 `[t, k]` times a
    /// dequantised f16 `[k, n]`, as prefill runs them): q|k|v (n 15360, k 5120), o (5120, 5120),
    /// gate|up (27648, 5120), down (5120, 13824), with f32 output (what the forward pass uses)
    /// and with f16 output, and their TFLOP/s. Empty without cuBLAS.
    pub fn time_prefill_products(&self, t: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::new();
        let Some(b) = &self.blas else {
            return Ok(out);
        };
        // (name, N, K)
        let shapes = LAYER_13B_PRODUCTS.map(|(name, k, n)| (name, n, k));
        let max_kn = shapes.iter().map(|s| s.1 * s.2).max().unwrap_or(0);
        let max_k = shapes.iter().map(|s| s.2).max().unwrap_or(0);
        let max_n = shapes.iter().map(|s| s.1).max().unwrap_or(0);
        // Random operands: constant ones draw less power and run faster than real weights.
        let mut rng = crate::sampler::Rng::new(5);
        let mut random_f16 = |n: usize, scale: f32| -> Vec<f16> {
            (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                    f16::from_f32((2.0 * u - 1.0) * scale)
                })
                .collect()
        };
        let w = self.up(&random_f16(max_kn, 0.02))?;
        let x = self.up(&random_f16(t * max_k, 1.0))?;
        let y = self.gpu.alloc(t * max_n * 4, "bench y")?;
        let mut total = [0f32; 2];
        for (name, n, k) in shapes {
            for (i, f16_out) in [false, true].into_iter().enumerate() {
                let ms = self.time_ms(3, 20, || {
                    if f16_out {
                        b.gemm_f16(false, x.ptr, w.ptr, y.ptr, t, n, k, n)
                    } else {
                        b.gemm(false, x.ptr, w.ptr, y.ptr, t, n, k, n)
                    }
                })?;
                total[i] += ms;
                out.push((
                    format!(
                        "cuBLAS {name} {t}x{k}x{n} {} out ({:.0} TFLOP/s)",
                        if f16_out { "f16" } else { "f32" },
                        2.0 * (t * k * n) as f64 / (ms as f64 * 1e-3) / 1e12
                    ),
                    ms,
                ));
            }
        }
        for (i, what) in ["f32", "f16"].into_iter().enumerate() {
            out.push((
                format!("cuBLAS one 13B layer's products, {what} out (x40 for the model)"),
                total[i],
            ));
        }
        Ok(out)
    }
}
