// stream_probe.cu — a standalone measurement, not part of the library: can one persistent
// kernel stream a 13B decode step's 4-bit weights near copy bandwidth when its products depend
// on one another through grid-wide counters? (docs/cuda.md, "Eleventh session".)
//
// Shape (a "producer / consumer megakernel"): one block per SM; one producer warp copies the
// SM's units — UG groups of a 128-column tile, each 16 packed rows x 512 B of qw, 256 B of
// scales and 128 B of zeros — in a fixed order (layer, product, the SM's contiguous tile-major
// range) into a ring of ST stages with cp.async.bulk (layout 1: units stored contiguously) or
// 2-D tensor copies from wv's [K/8][N] layout (layout 2), completing on mbarriers; it never
// waits for anything but a free stage. CW consumer warps wait for a product's inputs (dep 1: a
// counter every SM raises when it has finished the previous product — four products and a
// stand-in attention phase per layer, five grid-wide dependencies), stage the input vector
// (the sum of three partial slabs, with its sum of squares: an RMSNorm's work) into shared
// memory as f16, and do the arithmetic on each stage: cmode 0 a column per thread, cmode 1
// gemv_q4l's mapping and dot8_lean (a warp per batch of 8 rows x 128 columns, 4 columns per
// lane), cmode 2 the tensor cores (mma.sync m16n8k16, x as row 0 of A, the weights as B
// without the zero point subtracted, corrected per group in f32), cmode 3 cmode 1's arithmetic
// with no producer: each warp streams its own batches (8 rows, 4 KB, and their group's scales
// and zeros: three bulk copies) into a private ring of ST slots, across products, as gemv_q4l
// does within one. `mode` switches parts off
// (bit 0 the arithmetic, bit 1 the copies, bit 2 the staging) to time the others alone;
// `pmode` splits a stage's copy (1: four, 2: sixteen bulk copies; 3: cp.async by 32 lanes).
// The weights are random and the results are not checked: only the time is.
//
// Build and run on the device (needs nvcc and the driver API):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/stream_probe \
//       tools/probe/stream_probe.cu -lcuda && /tmp/stream_probe 40
//
// H200 (2026-11-29, copy bandwidth 4.27 TB/s, 6.64 GB of weights: 1.55 ms at copy bandwidth):
//   streaming alone (no arithmetic, staging or dependencies): 1.517 ms (102%) with one 34 KB
//     bulk copy per stage, 1.536 (four), 1.669 (sixteen), 1.668 (cp.async); 2-D maps 1.635 (95%);
//     stages of one group (8.6 KB, ST 22) 1.604
//   arithmetic alone (no copies, no staging): cmode 1 1.550-1.582 ms, cmode 2 2.344
//   streaming + arithmetic + staging: cmode 1 2.244-2.271 ms; with the dependencies 2.546-2.554
//     (2-D maps 2.621), cmode 2 2.902-2.997; cmode 0 2.497-2.499
//   cmode 3 (16 warps, 2 slots each): streaming alone 1.592 ms (97%), + arithmetic 2.087,
//     + staging 2.318, + the dependencies 2.579; 8 warps with 4 or 5 slots: 3.05
//   (cmode 1 with mode 5 — no arithmetic, no staging — failed with a launch failure at 40
//   layers and ran at 1; not investigated: not in the list)
// So the copies are not the limit and the arithmetic alone takes as long as the streaming: one
// kernel of this shape is slower than wv's per-step decode (its 13B GEMVs, queued, 2.07 ms).
// Twelfth session (same card kind, copy bandwidth 4.17 TB/s): cmode 4 (dp4a on int8 inputs, about
// half the instructions per weight) — arithmetic alone 0.956 ms against cmode 1's 1.650 in the
// same run, yet streaming + arithmetic + staging 2.258 against 2.292 and with the dependencies
// 2.571 against 2.576: the instruction count is not what keeps the consumers from the streaming.
// cmode 4 without the staging 1.68-1.78 ms (87-94%), with the dependencies but no staging 2.07-2.10;
// the staging adds 0.5-0.6 ms whether 16 values per thread are in flight (mode 8) or each SM
// reads its own copy of the inputs (mode 16: 2.73; mode 32, 8 copies: 2.58); stages of 2 or 1
// groups (UG 2 / 1) 2.52-2.56 with everything. Reading the int8 input per batch from global memory
// instead of staging it (mode 64, `stream_probe 40 x`): 1.610 ms without the dependencies (96.5%),
// 2.163 with them (staged: 2.616; no input at all: 2.141) — the dependencies are what is left.
#ifndef __CUDACC_RTC__
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cstring>
#include <cuda.h>
#include <algorithm>
#include "../../kernels/common.cuh"  // also its mbarrier and tensor-copy helpers
#include "check.h"
#endif


// cmode 4: integer products (the twelfth session's WV_GEMV_DP4A experiment in gemv.cu, commit
// "Experiment … gemv_q4l's products in dp4a"). The x slice quantised to int8 per batch of 64
// inputs (8 packed rows), each packed row as two words in the nibbles' byte order — lo = rows
// (0, 4, 1, 5), hi = rows (2, 6, 3, 7) — so that w & 0x0f0f0f0f and w & 0xf0f0f0f0 (16 q) meet
// them byte for byte in dp4a.
__device__ __forceinline__ int dp4a_us(u32 a, u32 b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
__device__ __forceinline__ u32 q8pack(int a, int b, int c, int d) {
    return (u32)(a & 0xff) | ((u32)(b & 0xff) << 8) | ((u32)(c & 0xff) << 16) | ((u32)d << 24);
}
// In place: xs f16 [span] (span % 64 == 0, span / 64 <= MAXJ * 4 * warps) becomes uint2 [span / 8]
// (int8 x per packed row, as above) from byte 0, then float2 [span / 64] (scale, Σ q as int bits)
// per batch from byte span. Threads [0, nthreads) of the block take part (whole warps); the
// caller synchronises them before (xs complete); sync(nthreads) is their barrier, between
// reading every value and writing the first, and at the end.
template <int MAXJ, typename Sync>
__device__ __forceinline__ void quant_x_dp4a(f16* xs, int span, int tid, int nthreads, Sync sync) {
    const int nbt = span >> 6, lane = tid & 31, warp = tid >> 5, nw = nthreads >> 5;
    uint4 v[MAXJ];
#pragma unroll
    for (int j = 0; j < MAXJ; ++j) {
        const int bt = (j * nw + warp) * 4 + (lane >> 3);
        v[j] = bt < nbt ? reinterpret_cast<const uint4*>(xs)[bt * 8 + (lane & 7)] : make_uint4(0u, 0u, 0u, 0u);
    }
    sync(nthreads);
#pragma unroll
    for (int j = 0; j < MAXJ; ++j) {
        if ((j * nw + warp) * 4 >= nbt) break;
        const int bt = (j * nw + warp) * 4 + (lane >> 3);
        float m = absmax8(v[j]);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 4));
        const float inv = m > 0.f ? 127.f / m : 0.f;
        const int q0 = __float2int_rn(lo2f(v[j].x) * inv), q1 = __float2int_rn(hi2f(v[j].x) * inv);
        const int q2 = __float2int_rn(lo2f(v[j].y) * inv), q3 = __float2int_rn(hi2f(v[j].y) * inv);
        const int q4 = __float2int_rn(lo2f(v[j].z) * inv), q5 = __float2int_rn(hi2f(v[j].z) * inv);
        const int q6 = __float2int_rn(lo2f(v[j].w) * inv), q7 = __float2int_rn(hi2f(v[j].w) * inv);
        int sq = q0 + q1 + q2 + q3 + q4 + q5 + q6 + q7;
        sq += __shfl_xor_sync(0xffffffffu, sq, 1);
        sq += __shfl_xor_sync(0xffffffffu, sq, 2);
        sq += __shfl_xor_sync(0xffffffffu, sq, 4);
        if (bt < nbt) {
            reinterpret_cast<uint2*>(xs)[bt * 8 + (lane & 7)] = make_uint2(q8pack(q0, q4, q1, q5), q8pack(q2, q6, q3, q7));
            if ((lane & 7) == 0)
                reinterpret_cast<float2*>(reinterpret_cast<unsigned char*>(xs) + span)[bt] =
                    make_float2(m * (1.f / 127.f), __int_as_float(sq));
        }
    }
    sync(nthreads);
}
// lo += Σ of the even-byte products, hi += 16 × the odd-byte ones, for one packed word.
__device__ __forceinline__ void dot8_dp4a(u32 w, uint2 xq, int& lo, int& hi) {
    lo = dp4a_us(w & 0x0f0f0f0fu, xq.x, lo);
    hi = dp4a_us(w & 0xf0f0f0f0u, xq.y, hi);
}

#define GROUP_Q 8192                       // one group's packed rows: 16 x 128 columns x 4 B
#define GROUP_BYTES (8192 + 256 + 128)      // with its scales and zeros
#define MAXK 13824

struct Prod {
    const u32* qw;    // layout 1: units [tiles][K / (128 UG)][UG x GROUP_BYTES]
    int K, N;
    int pad[4];
    TmaMap mq, ms, mz;  // layout 2: qw [K/8][N] u32, scales [G][N] f16, zeros [G][N] u8
};
struct Args {
    const Prod* prods;  // [L][4]
    int L, ST, dep, layout;
    int ring_bytes;  // the ring's bytes (max of ST stages and cmode 3's per-warp rings)
    int cmode;  // consumers: 0 a column per thread; 1 a batch (8 rows x 128 columns) per warp, warp sets on alternate stages;
                // 2 tensor cores: warp w = (32-column block w & 3, group w >> 2 of the stage), CW = 4 UG;
                // 3 as 1, but each warp streams its own batches into a private ring of ST slots (no producer)
                // 4 as 1, with the input quantised to int8 per 64 and the products in dp4a (WV_GEMV_DP4A)
    int pmode;  // producer, layout 1: 0 one bulk copy per stage, 1 four, 2 sixteen, 3 cp.async by 32 lanes
    int mode;  // bit 0: consumers skip the arithmetic; bit 1: producer copies nothing (arrives); bit 2: no x staging;
               // bit 3: staging with 16 values per thread in flight (else 4); bit 4 / 5: staging from a
               // per-SM copy / one of 8 copies of the slabs; bit 6 (cmode 4): no staging, the int8
               // input read per batch from global memory
    int* cnt;           // [L][5] SMs done per phase
    float* part;        // [8][MAXK]
    float* out;         // [8][32768]
};

__device__ __forceinline__ void bulk_g2s(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
        "l"(src), "r"(bytes), "r"(bar)
        : "memory");
}
__device__ __forceinline__ void cons_sync(int nthreads) {
    asm volatile("bar.sync 1, %0;" ::"r"(nthreads) : "memory");
}

__device__ __forceinline__ void mma_16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// SM s's units of a product: [U s / S, U (s + 1) / S) of U = tiles x K / (128 UG), tile-major.
__device__ __forceinline__ void unit_range(int K, int N, int UG, int s, int S, int& u0, int& u1) {
    const int U = (N / 128) * (K / (128 * UG));
    u0 = (int)((long long)U * s / S);
    u1 = (int)((long long)U * (s + 1) / S);
}

// cmode 3: a warp's own sequence of batches (batch `bw` of every NS-th unit of the SM's
// sequence over layers and products, starting at unit `set`).
struct WarpSeq {
    int l, p, u, u1, it;  // layer, product, unit, the product's unit end, the SM's unit count
};
template <int UG>
__device__ __forceinline__ bool seq_next(const Args& a, WarpSeq& q, int set, int NS, int s, int S) {
    if (q.l >= a.L) return false;
    for (;;) {
        if (q.u + 1 < q.u1) {
            ++q.u;
        } else {
            // Next product with units.
            for (;;) {
                if (++q.p == 4) {
                    q.p = 0;
                    if (++q.l == a.L) return false;
                }
                const Prod* P = a.prods + q.l * 4 + q.p;
                int u0, u1;
                unit_range(P->K, P->N, UG, s, S, u0, u1);
                if (u0 < u1) {
                    q.u = u0;
                    q.u1 = u1;
                    break;
                }
            }
        }
        if (q.it++ % NS == set) return true;
    }
}

// xs [K] = the sum of the three slabs part [3][MAXK] as f16; returns this thread's sum of squares.
template <int D>
__device__ __forceinline__ float stage3(f16* xs, const float* part, int K, int tid, int NT) {
    float ss = 0.f;
    for (int base = tid; base < K; base += D * NT) {
        float v[D];
#pragma unroll
        for (int j = 0; j < D; ++j) {
            const int i = base + j * NT;
            v[j] = i < K ? __ldcg(part + i) + __ldcg(part + MAXK + i) + __ldcg(part + 2 * MAXK + i) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < D; ++j) {
            const int i = base + j * NT;
            if (i < K) {
                xs[i] = f2h(v[j]);
                ss += v[j] * v[j];
            }
        }
    }
    return ss;
}

// acc += a batch's four column sums f times their group's scales sv.
__device__ __forceinline__ void scale_into(const float (&f)[4], uint2 sv, float (&acc)[4]) {
    acc[0] += f[0] * lo2f(sv.x);
    acc[1] += f[1] * hi2f(sv.x);
    acc[2] += f[2] * lo2f(sv.y);
    acc[3] += f[3] * hi2f(sv.y);
}
// One batch (8 packed rows, 4 columns per lane) of gemv_q4l's arithmetic into acc: dot8_lean,
// products summed in f16 over 4 rows, then in f32, the group's scale applied once.
__device__ __forceinline__ void lean_batch(const uint4* wb, const uint4* xb, uint2 sv, u32 zv, float (&acc)[4]) {
    u32 zl[4], zh[4];
    lean_zeros(zv, zl, zh);
    float f[4] = {0.f, 0.f, 0.f, 0.f};
    u32 hh[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint4 xv = xb[i];
        const uint4 wi = wb[i * 32];
        hh[0] = dot8_lean(wi.x, xv, zl[0], zh[0], hh[0]);
        hh[1] = dot8_lean(wi.y, xv, zl[1], zh[1], hh[1]);
        hh[2] = dot8_lean(wi.z, xv, zl[2], zh[2], hh[2]);
        hh[3] = dot8_lean(wi.w, xv, zl[3], zh[3], hh[3]);
        if ((i & 3) == 3) {
#pragma unroll
            for (int c4 = 0; c4 < 4; ++c4) {
                f[c4] += lo2f(hh[c4]) + hi2f(hh[c4]);
                hh[c4] = 0u;
            }
        }
    }
    scale_into(f, sv, acc);
}

template <int CW, int UG>
__global__ void __launch_bounds__((CW + 1) * 32, 1) stream_probe(Args a) {
    constexpr int NT = CW * 32;           // consumer threads
    constexpr int TPC = NT / 128;         // threads per column
    constexpr int RPT = 16 / TPC;         // packed rows per thread and group
    constexpr int UB = UG * GROUP_BYTES;  // one stage
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* ring = smem;                                         // [ST][UB]
    f16* xs = reinterpret_cast<f16*>(smem + a.ring_bytes);              // [MAXK]
    float* red = reinterpret_cast<float*>(xs + MAXK);                   // [CW][128] + [64]
    float2* cs = reinterpret_cast<float2*>(red + CW * 128 + 64);        // [MAXK / 128] (cmode 2)
    unsigned long long* bars = reinterpret_cast<unsigned long long*>(cs + MAXK / 128);
    const u32 ring_s = smem_addr(ring);
    const u32 full_s = smem_addr(bars), empty_s = full_s + 8 * a.ST;
    const int tid = threadIdx.x, S = gridDim.x, s = blockIdx.x;
    if (tid == 0 && a.cmode == 3) {
        for (int i = 0; i < CW * a.ST; ++i) mbar_init(full_s + 8 * i, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if (tid == 0 && a.cmode != 3) {
        for (int i = 0; i < a.ST; ++i) {
            mbar_init(full_s + 8 * i, a.pmode == 3 ? 32 : 1);
            mbar_init(empty_s + 8 * i, (a.cmode == 1 || a.cmode == 4) ? 2 * UG : CW);  // cmode 2: CW
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (tid >= NT) {
        // Producer warp (lane 0 alone, or all 32 lanes for cp.async).
        const int lane = tid & 31;
        if (a.cmode == 3 || (a.pmode != 3 && lane != 0)) return;
        int slot = 0, par = 1;
        for (int l = 0; l < a.L; ++l)
            for (int p = 0; p < 4; ++p) {
                const Prod* P = a.prods + l * 4 + p;
                const int K = P->K, N = P->N, NB = K / (128 * UG);
                int u0, u1;
                unit_range(K, N, UG, s, S, u0, u1);
                int t = u0 / NB, b = u0 % NB;
                for (int u = u0; u < u1; ++u) {
                    const u32 full = full_s + 8 * slot, dst = ring_s + slot * UB;
                    mbar_wait(empty_s + 8 * slot, par);
                    const char* src = reinterpret_cast<const char*>(P->qw) + (size_t)u * UB;
                    if (a.mode & 2) {
                        mbar_arrive(full);
                    } else if (a.pmode == 3) {
                        for (int i = lane * 16; i < UB; i += 32 * 16) cp_async16(dst + i, src + i);
                        asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" ::"r"(full) : "memory");
                    } else {
                        mbar_expect_tx(full, UB);
                        if (a.layout == 1) {
                            const int nc = a.pmode == 0 ? 1 : a.pmode == 1 ? 4 : 16;
                            const u32 cb = UB / nc;  // UB = UG x 8576 = 16 x 536 UG: /4, /16 stay multiples of 16
                            for (int i = 0; i < nc; ++i) bulk_g2s(dst + i * cb, src + i * cb, cb, full);
                        } else {
                            tma_2d(dst, &P->mq, t * 128, b * 16 * UG, full);
                            tma_2d(dst + UG * GROUP_Q, &P->ms, t * 128, b * UG, full);
                            tma_2d(dst + UG * (GROUP_Q + 256), &P->mz, t * 128, b * UG, full);
                        }
                    }
                    if (++b == NB) b = 0, ++t;
                    if (++slot == a.ST) slot = 0, par ^= 1;
                }
            }
        return;
    }

    // Consumers.
    const int c = tid & 127, h = tid >> 7;
    int slot = 0, par = 0;
    int it1 = 0;  // cmode 1: the stage sequence number
    WarpSeq wq{0, 0, 0, 0, -1};  // cmode 3: the warp's last requested unit
    int issued = 0, used = 0;   // cmode 3: batches requested and consumed
    for (int l = 0; l < a.L; ++l)
        for (int ph = 0; ph < 5; ++ph) {
            // Phase ph of layer l waits for phase ph-1 (or the previous layer's last).
            const int prev = l * 5 + ph - 1;
            if (a.dep && prev >= 0) {
                if (tid == 0) flag_wait(a.cnt + prev, S);
                cons_sync(NT);
            }
            if (ph == 1) {
                // Stand-in attention: a little L2 traffic, then raise.
                if (tid < 128) a.out[7 * 32768 + s * 128 + tid] = __ldcg(a.part + tid) * 0.5f;
                cons_sync(NT);
                if (tid == 0) {
                    __threadfence();
                    flag_raise(a.cnt + l * 5 + 1);
                }
                continue;
            }
            const int p = ph == 0 ? 0 : ph - 1;
            const Prod* P = a.prods + l * 4 + p;
            const int K = P->K, N = P->N, NB = K / (128 * UG);
            // Stage x = sum of 3 slabs as f16, with its sum of squares (mode bit 3: 16 values per
            // thread in flight instead of 4).
            const int KS = (a.mode & (4 | 64)) ? 0 : K;
            // Mode bit 4: each SM stages from its own copy of the slabs (bit 5: one of 8 copies), to
            // tell L2 contention on lines every SM reads at once from the staging's own cost.
            const float* part = a.part + ((a.mode & 16) ? (size_t)(8 + 3 * s) * MAXK
                                          : (a.mode & 32) ? (size_t)(8 + 3 * (s & 7)) * MAXK : 0);
            float ss = (a.mode & 8) ? stage3<16>(xs, part, KS, tid, NT) : stage3<4>(xs, part, KS, tid, NT);
            ss = warp_sum(ss);
            if ((tid & 31) == 0) red[CW * 128 + (tid >> 5)] = ss;
            cons_sync(NT);
            float tot = 0.f;
            for (int i = 0; i < CW; ++i) tot += red[CW * 128 + i];
            const float rs = rsqrtf(tot / K + 1e-6f);
            // cmode 4: the input as int8 per batch of 64 (gemv.cu's WV_GEMV_DP4A staging).
            if (a.cmode == 4 && !(a.mode & (4 | 64))) quant_x_dp4a<8>(xs, K, tid, NT, [](int n) { cons_sync(n); });

            int u0, u1;
            unit_range(K, N, UG, s, S, u0, u1);
            if (a.cmode == 3) {
                constexpr int WS = 2 * UG, NS = CW / WS;
                constexpr u32 BB = 4096 + 256 + 128;  // one batch: 8 rows, its group's scales, zeros
                const int warp = tid >> 5, lane = tid & 31, bw = warp % WS, set = warp / WS;
                const int gi = bw >> 1, hh = bw & 1;
                const u32 wring = ring_s + warp * a.ST * BB;
                const u32 wbar = full_s + 8 * warp * a.ST;
                float acc[4] = {0.f, 0.f, 0.f, 0.f};
                int t = u0 / NB, b = u0 % NB;
                for (int u = u0; u < u1; ++u) {
                    if ((it1 % NS) == set) {
                        // The first time through, fill the ring from the warp's sequence start.
                        if (wq.it < 0) {
                            wq.l = l;
                            wq.p = p;
                            wq.u = u - 1;
                            wq.u1 = u1;
                            wq.it = it1;
                            issued = 0;
                            for (int j = 0; j < a.ST; ++j) {
                                if (!seq_next<UG>(a, wq, set, NS, s, S)) break;
                                if (lane == 0) {
                                    const Prod* Q = a.prods + wq.l * 4 + wq.p;
                                    const char* src = reinterpret_cast<const char*>(Q->qw) + (size_t)wq.u * UB;
                                    const u32 dst = wring + (issued % a.ST) * BB, bar = wbar + 8 * (issued % a.ST);
                                    mbar_expect_tx(bar, BB);
                                    bulk_g2s(dst, src + gi * 8192 + hh * 4096, 4096, bar);
                                    bulk_g2s(dst + 4096, src + UG * 8192 + gi * 256, 256, bar);
                                    bulk_g2s(dst + 4096 + 256, src + UG * (8192 + 256) + gi * 128, 128, bar);
                                }
                                ++issued;
                            }
                        }
                        const int sl = used % a.ST;
                        mbar_wait(wbar + 8 * sl, (used / a.ST) & 1);
                        const unsigned char* st = ring + (size_t)warp * a.ST * BB + sl * BB;
                        if (!(a.mode & 1)) {
                            const uint2 sv = *reinterpret_cast<const uint2*>(st + 4096 + lane * 8);
                            const u32 zv = *reinterpret_cast<const u32*>(st + 4096 + 256 + lane * 4);
                            lean_batch(reinterpret_cast<const uint4*>(st) + lane,
                                       reinterpret_cast<const uint4*>(xs + b * UG * 128 + bw * 64), sv, zv, acc);
                        }
                        __syncwarp();
                        ++used;
                        // Refill the slot with the warp's next batch (possibly of a later product).
                        if (seq_next<UG>(a, wq, set, NS, s, S)) {
                            if (lane == 0) {
                                const Prod* Q = a.prods + wq.l * 4 + wq.p;
                                const char* src = reinterpret_cast<const char*>(Q->qw) + (size_t)wq.u * UB;
                                const u32 dst = wring + (issued % a.ST) * BB, bar = wbar + 8 * (issued % a.ST);
                                mbar_expect_tx(bar, BB);
                                bulk_g2s(dst, src + gi * 8192 + hh * 4096, 4096, bar);
                                bulk_g2s(dst + 4096, src + UG * 8192 + gi * 256, 256, bar);
                                bulk_g2s(dst + 4096 + 256, src + UG * (8192 + 256) + gi * 128, 128, bar);
                            }
                            ++issued;
                        }
                    }
                    ++it1;
                    if (++b == NB || u + 1 == u1) {
                        *reinterpret_cast<float4*>(red + warp * 128 + lane * 4) = make_float4(acc[0], acc[1], acc[2], acc[3]);
                        cons_sync(NT);
                        if (tid < 128) {
                            float v = 0.f;
#pragma unroll
                            for (int i = 0; i < CW; ++i) v += red[i * 128 + tid];
                            a.out[(s & 7) * 32768 + (t * 128 + tid) % 32768] = v * rs;
                        }
                        cons_sync(NT);
                        acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
                        b = 0;
                        ++t;
                    }
                }
                cons_sync(NT);
                if (tid == 0) {
                    __threadfence();
                    flag_raise(a.cnt + l * 5 + ph);
                }
                continue;
            }
            if (a.cmode == 2 && CW == 4 * UG) {
                // Odd pairs of x (k & 2) divided by 16 in place; per group (C1, C2).
                {
                    const int warp = tid >> 5, lane = tid & 31;
                    for (int gg = warp; gg < K / 128; gg += CW) {
                        u32* pr = reinterpret_cast<u32*>(xs) + gg * 64 + 2 * lane;
                        const u32 ev = pr[0];
                        const u32 od = hfma2(pr[1], 0x2c002c00u, 0u);
                        pr[1] = od;
                        const float e = warp_sum(lo2f(ev) + hi2f(ev)), o = warp_sum(lo2f(od) + hi2f(od));
                        if (lane == 0) cs[gg] = make_float2(1024.f * (e + o), e + 16.f * o);
                    }
                }
                cons_sync(NT);
                const int warp = tid >> 5, lane = tid & 31, cb = warp & 3, rb = warp >> 2;
                const int mg = lane >> 2, mt = lane & 3;
                const uint4* xs4 = reinterpret_cast<const uint4*>(xs);
                float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                int t = u0 / NB, b = u0 % NB;
                for (int u = u0; u < u1; ++u) {
                    const int slot = it1 % a.ST, par = (it1 / a.ST) & 1;
                    mbar_wait(full_s + 8 * slot, par);
                    const unsigned char* st = ring + slot * UB;
                    if (!(a.mode & 1)) {
                        const int ga = b * UG + rb;  // the group within K
                        const float2 cc = cs[ga];
                        const uint4 sv = *reinterpret_cast<const uint4*>(st + UG * GROUP_Q + rb * 256 + (32 * cb + 8 * mt) * 2);
                        const uint2 zv = *reinterpret_cast<const uint2*>(st + UG * (GROUP_Q + 256) + rb * 128 + 32 * cb + 8 * mt);
                        float d[4][4] = {};
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            const int row = rb * 16 + 4 * i + mt;
                            const uint4 w = *reinterpret_cast<const uint4*>(st + row * 512 + (32 * cb + 4 * mg) * 4);
                            uint4 xv = make_uint4(0u, 0u, 0u, 0u);
                            if (mg == 0) xv = xs4[ga * 16 + 4 * i + mt];
                            const u32 ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
                            for (int c = 0; c < 4; ++c) {
                                const u32 w8 = ws[c] >> 8;
                                mma_16816(d[c], xv.x, 0u, xv.y, 0u, and_or(ws[c], 0x000f000fu, 0x64006400u),
                                          and_or(ws[c], 0x00f000f0u, 0x64006400u));
                                mma_16816(d[c], xv.z, 0u, xv.w, 0u, and_or(w8, 0x000f000fu, 0x64006400u),
                                          and_or(w8, 0x00f000f0u, 0x64006400u));
                            }
                        }
                        const u32 zz[2] = {zv.x, zv.y};
                        const u32 ss[4] = {sv.x, sv.y, sv.z, sv.w};
#pragma unroll
                        for (int i = 0; i < 8; ++i) {
                            const float z = (float)((zz[i >> 2] >> (8 * (i & 3))) & 0xffu);
                            const float sc = (i & 1) ? hi2f(ss[i >> 1]) : lo2f(ss[i >> 1]);
                            acc[i] += sc * (d[i & 3][i >> 2] - cc.x - z * cc.y);
                        }
                    }
                    __syncwarp();
                    if (lane == 0) mbar_arrive(empty_s + 8 * slot);
                    ++it1;
                    if (++b == NB || u + 1 == u1) {
                        if (lane < 4) {
                            float* r = red + rb * 128 + 32 * cb + 8 * lane;
                            *reinterpret_cast<float4*>(r) = make_float4(acc[0], acc[1], acc[2], acc[3]);
                            *reinterpret_cast<float4*>(r + 4) = make_float4(acc[4], acc[5], acc[6], acc[7]);
                        }
                        cons_sync(NT);
                        if (tid < 128) {
                            float v = 0.f;
#pragma unroll
                            for (int i = 0; i < UG; ++i) v += red[i * 128 + tid];
                            a.out[(s & 7) * 32768 + (t * 128 + tid) % 32768] = v * rs;
                        }
                        cons_sync(NT);
#pragma unroll
                        for (int i = 0; i < 8; ++i) acc[i] = 0.f;
                        b = 0;
                        ++t;
                    }
                }
                cons_sync(NT);
                if (tid == 0) {
                    __threadfence();
                    flag_raise(a.cnt + l * 5 + ph);
                }
                continue;
            }
            if (a.cmode == 1 || a.cmode == 4) {
                // Warp w: batch w % WS of the stages of its set (w / WS), 4 columns per lane.
                constexpr int WS = 2 * UG, NS = CW / WS;
                const int warp = tid >> 5, lane = tid & 31, bw = warp % WS, set = warp / WS;
                float acc[4] = {0.f, 0.f, 0.f, 0.f};
                int t = u0 / NB, b = u0 % NB;
                for (int u = u0; u < u1; ++u) {
                    if (NS == 1 || (it1 % NS) == set) {
                        const int slot = it1 % a.ST, par = (it1 / a.ST) & 1;
                        mbar_wait(full_s + 8 * slot, par);
                        const unsigned char* st = ring + slot * UB;
                        if (!(a.mode & 1) && a.cmode == 4) {
                            const uint2 sv = *reinterpret_cast<const uint2*>(st + UG * GROUP_Q + (bw >> 1) * 256 + lane * 8);
                            const u32 zv = *reinterpret_cast<const u32*>(st + UG * (GROUP_Q + 256) + (bw >> 1) * 128 + lane * 4);
                            const uint4* wb = reinterpret_cast<const uint4*>(st + bw * 8 * 512) + lane;
                            const int bt = b * UG * 2 + bw;  // the batch of 64 inputs
                            // Mode bit 6: no staging; the input read per batch from global memory,
                            // already int8 with its (scale, Σq) (as the previous phase would write it).
                            const bool gx = a.mode & 64;
                            const unsigned char* xg = reinterpret_cast<const unsigned char*>(a.part + 8 * MAXK);
                            const uint2* xq = gx ? reinterpret_cast<const uint2*>(xg) + bt * 8 : reinterpret_cast<const uint2*>(xs) + bt * 8;
                            int lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
#pragma unroll
                            for (int i = 0; i < 8; ++i) {
                                const uint2 xv = gx ? __ldg(xq + i) : xq[i];
                                const uint4 wi = wb[i * 32];
                                dot8_dp4a(wi.x, xv, lo[0], hi[0]);
                                dot8_dp4a(wi.y, xv, lo[1], hi[1]);
                                dot8_dp4a(wi.z, xv, lo[2], hi[2]);
                                dot8_dp4a(wi.w, xv, lo[3], hi[3]);
                            }
                            const float2 mt = gx ? __ldg(reinterpret_cast<const float2*>(xg + K) + bt)
                                                 : reinterpret_cast<const float2*>(reinterpret_cast<const unsigned char*>(xs) + K)[bt];
                            const int sq = __float_as_int(mt.y);
                            float f[4];
#pragma unroll
                            for (int c4 = 0; c4 < 4; ++c4)
                                f[c4] = (float)(lo[c4] + (hi[c4] >> 4) - (int)((zv >> (8 * c4)) & 0xffu) * sq) * mt.x;
                            scale_into(f, sv, acc);
                        } else if (!(a.mode & 1)) {
                            const uint2 sv = *reinterpret_cast<const uint2*>(st + UG * GROUP_Q + (bw >> 1) * 256 + lane * 8);
                            const u32 zv = *reinterpret_cast<const u32*>(st + UG * (GROUP_Q + 256) + (bw >> 1) * 128 + lane * 4);
                            lean_batch(reinterpret_cast<const uint4*>(st + bw * 8 * 512) + lane,
                                       reinterpret_cast<const uint4*>(xs + b * UG * 128 + bw * 64), sv, zv, acc);
                        }
                        __syncwarp();
                        if (lane == 0) mbar_arrive(empty_s + 8 * slot);
                    }
                    ++it1;
                    if (++b == NB || u + 1 == u1) {
                        *reinterpret_cast<float4*>(red + warp * 128 + lane * 4) = make_float4(acc[0], acc[1], acc[2], acc[3]);
                        cons_sync(NT);
                        if (tid < 128) {
                            float v = 0.f;
#pragma unroll
                            for (int i = 0; i < CW; ++i) v += red[i * 128 + tid];
                            a.out[(s & 7) * 32768 + (t * 128 + tid) % 32768] = v * rs;
                        }
                        cons_sync(NT);
                        acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
                        b = 0;
                        ++t;
                    }
                }
                cons_sync(NT);
                if (tid == 0) {
                    __threadfence();
                    flag_raise(a.cnt + l * 5 + ph);
                }
                continue;
            }
            float acc = 0.f;
            int t = u0 / NB, b = u0 % NB;
            for (int u = u0; u < u1; ++u) {
                mbar_wait(full_s + 8 * slot, par);
                const unsigned char* st = ring + slot * UB;
                if (!(a.mode & 1)) {
                    u32 w[UG][RPT];
                    uint4 xv[UG][RPT];
#pragma unroll
                    for (int gi = 0; gi < UG; ++gi)
#pragma unroll
                        for (int i = 0; i < RPT; ++i) {
                            const int row = gi * 16 + h * RPT + i;
                            w[gi][i] = reinterpret_cast<const u32*>(st + row * 512)[c];
                            xv[gi][i] = reinterpret_cast<const uint4*>(xs + (b * UG + gi) * 128 + (h * RPT + i) * 8)[0];
                        }
#pragma unroll
                    for (int gi = 0; gi < UG; ++gi) {
                        const float sc = h2f(reinterpret_cast<const f16*>(st + UG * GROUP_Q)[gi * 128 + c]);
                        const u32 z = st[UG * (GROUP_Q + 256) + gi * 128 + c];
                        const u32 zl = z * 0x00010001u + 0x64006400u, zh = z * 0x00100010u + 0xd400d400u;
                        u32 a0 = 0, a1 = 0;
#pragma unroll
                        for (int i = 0; i < RPT; i += 2) {
                            a0 = dot8_lean(w[gi][i], xv[gi][i], zl, zh, a0);
                            if (i + 1 < RPT) a1 = dot8_lean(w[gi][i + 1], xv[gi][i + 1], zl, zh, a1);
                        }
                        acc += (lo2f(a0) + hi2f(a0) + lo2f(a1) + hi2f(a1)) * sc;
                    }
                }
                __syncwarp();
                if ((tid & 31) == 0) mbar_arrive(empty_s + 8 * slot);
                if (++slot == a.ST) slot = 0, par ^= 1;
                if (++b == NB || u + 1 == u1) {
                    // The SM's part of tile t is done: its slab.
                    if (TPC > 1) {
                        red[h * 128 + c] = acc;
                        cons_sync(NT);
                        if (h == 0) {
                            float v = 0.f;
                            for (int i = 0; i < TPC; ++i) v += red[i * 128 + c];
                            a.out[(s & 7) * 32768 + (t * 128 + c) % 32768] = v * rs;
                        }
                        cons_sync(NT);
                    } else {
                        a.out[(s & 7) * 32768 + (t * 128 + c) % 32768] = acc * rs;
                    }
                    acc = 0.f;
                    b = 0;
                    ++t;
                }
            }
            cons_sync(NT);
            if (tid == 0) {
                __threadfence();
                flag_raise(a.cnt + l * 5 + ph);
            }
        }
}

__global__ void fill_random(u32* p, size_t n, u32 seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        u32 x = (u32)i * 2654435761u ^ seed;
        x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
        p[i] = x;
    }
}
// Scales: small positive f16 pairs; zeros: bytes < 16.
__global__ void fix_meta(u32* sc, size_t nsc, u32* zr, size_t nzr) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nsc; i += (size_t)gridDim.x * blockDim.x)
        sc[i] = (sc[i] & 0x03ff03ffu) | 0x20002000u;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nzr; i += (size_t)gridDim.x * blockDim.x)
        zr[i] &= 0x0f0f0f0fu;
}
__global__ void read_sweep(const uint4* p, size_t n, u32* out) {
    u32 acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = __ldcs(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) *out = acc;
}

#ifdef __CUDACC_RTC__
template __global__ void stream_probe<8, 1>(Args);
template __global__ void stream_probe<8, 2>(Args);
template __global__ void stream_probe<8, 4>(Args);
template __global__ void stream_probe<16, 4>(Args);
#else
template <int CW, int UG>
float run(const Args& a0, int S, int ST, int dep, int layout, int mode, int pmode, int cmode, int iters) {
    Args a = a0;
    a.ST = ST;
    a.dep = dep;
    a.layout = layout;
    a.mode = mode;
    a.pmode = pmode;
    a.cmode = cmode;
    const size_t ringb = std::max((size_t)ST * UG * GROUP_BYTES, cmode == 3 ? (size_t)CW * ST * 4480 : 0);
    a.ring_bytes = (int)ringb;
    size_t smem = ringb + MAXK * 2 + (CW * 128 + 64) * 4 + 8 * (MAXK / 128) + 8 * std::max(2 * ST, CW * ST);
    CK(cudaFuncSetAttribute(stream_probe<CW, UG>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int w = 0; w < 2; ++w) {
        CK(cudaMemsetAsync(a.cnt, 0, a.L * 5 * 4));
        stream_probe<CW, UG><<<S, (CW + 1) * 32, smem>>>(a);
    }
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaEventRecord(e0));
    for (int i = 0; i < iters; ++i) {
        CK(cudaMemsetAsync(a.cnt, 0, a.L * 5 * 4));
        stream_probe<CW, UG><<<S, (CW + 1) * 32, smem>>>(a);
    }
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaGetLastError());
    return ms / iters;
}

static void encode(TmaMap* m, CUtensorMapDataType ty, int esize, const void* base, int inner, int outer, int box_in,
                   int box_out) {
    cuuint64_t dims[2] = {(cuuint64_t)inner, (cuuint64_t)outer};
    cuuint64_t strides[1] = {(cuuint64_t)inner * esize};
    cuuint32_t box[2] = {(cuuint32_t)box_in, (cuuint32_t)box_out};
    cuuint32_t es[2] = {1, 1};
    CUresult r = cuTensorMapEncodeTiled(reinterpret_cast<CUtensorMap*>(m), ty, 2, const_cast<void*>(base), dims, strides, box,
                                        es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        printf("cuTensorMapEncodeTiled failed: %d\n", (int)r);
        exit(1);
    }
}

int main(int argc, char** argv) {
    const int L = argc > 1 ? atoi(argv[1]) : 40;
    setvbuf(stdout, nullptr, _IONBF, 0);
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int S = prop.multiProcessorCount;
    printf("device %s, %d SMs, smem/block optin %zu\n", prop.name, S, prop.sharedMemPerBlockOptin);
    const int KN[4][2] = {{5120, 15360}, {5120, 5120}, {5120, 27648}, {13824, 5120}};
    std::vector<Prod> prods(L * 4);
    double bytes = 0;
    for (int l = 0; l < L; ++l)
        for (int p = 0; p < 4; ++p) {
            const int K = KN[p][0], N = KN[p][1], G = K / 128;
            size_t nq = (size_t)K / 8 * N, ns = (size_t)G * N;
            size_t tot = nq * 4 + ns * 2 + ns;  // same bytes for either layout
            char* buf;
            CK(cudaMalloc(&buf, tot + 256));
            fill_random<<<1024, 256>>>(reinterpret_cast<u32*>(buf), (tot + 3) / 4, l * 4 + p);
            Prod& P = prods[l * 4 + p];
            memset(&P, 0, sizeof P);
            P.qw = reinterpret_cast<u32*>(buf);
            P.K = K;
            P.N = N;
            fix_meta<<<1024, 256>>>(reinterpret_cast<u32*>(buf + nq * 4), ns / 2, reinterpret_cast<u32*>(buf + nq * 4 + ns * 2), ns / 4);
            encode(&P.mq, CU_TENSOR_MAP_DATA_TYPE_UINT32, 4, buf, N, K / 8, 128, 16);
            encode(&P.ms, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, buf + nq * 4, N, G, 128, 1);
            encode(&P.mz, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, buf + nq * 4 + ns * 2, N, G, 128, 1);
            bytes += tot;
        }
    CK(cudaDeviceSynchronize());
    Args a{};
    // Maps per unit size: the box's outer extent is 16 UG rows / UG groups, so one table per UG.
    Prod* dprods[5];
    for (int ug = 1; ug <= 4; ug *= 2) {
        std::vector<Prod> v = prods;
        for (int i = 0; i < L * 4; ++i) {
            const int K = v[i].K, N = v[i].N, G = K / 128;
            size_t nq = (size_t)K / 8 * N, ns = (size_t)G * N;
            const char* buf = reinterpret_cast<const char*>(v[i].qw);
            encode(&v[i].mq, CU_TENSOR_MAP_DATA_TYPE_UINT32, 4, buf, N, K / 8, 128, 16 * ug);
            encode(&v[i].ms, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, buf + nq * 4, N, G, 128, ug);
            encode(&v[i].mz, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, buf + nq * 4 + ns * 2, N, G, 128, ug);
        }
        CK(cudaMalloc(&dprods[ug], sizeof(Prod) * L * 4));
        CK(cudaMemcpy(dprods[ug], v.data(), sizeof(Prod) * L * 4, cudaMemcpyHostToDevice));
    }
    a.L = L;
    CK(cudaMalloc(&a.cnt, L * 5 * 4));
    CK(cudaMalloc(&a.part, (8 + 3 * 160) * MAXK * 4));  // [8][MAXK] + per-SM copies of 3 slabs (mode bit 4)
    CK(cudaMalloc(&a.out, 8 * 32768 * 4));
    CK(cudaMemset(a.part, 0, (8 + 3 * 160) * MAXK * 4));
    // Copy bandwidth (read + write) and plain read bandwidth.
    const size_t cb = 1ull << 30;
    void *x, *y;
    CK(cudaMalloc(&x, cb));
    CK(cudaMalloc(&y, cb));
    CK(cudaMemset(x, 1, cb));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; ++i) CK(cudaMemcpyAsync(y, x, cb, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 20; ++i) CK(cudaMemcpyAsync(y, x, cb, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double copy_bw = 2.0 * cb * 20 / (ms * 1e-3);
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 20; ++i) read_sweep<<<S * 4, 256>>>((const uint4*)x, cb / 16, (u32*)y);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
    printf("copy bandwidth %.3f TB/s, read_sweep %.3f TB/s; weights %.3f GB over %d layers: %.3f ms at copy bandwidth\n",
           copy_bw / 1e12, cb * 20.0 / (ms * 1e-3) / 1e12, bytes / 1e9, L, bytes / copy_bw * 1e3);
    struct V { int cw, ug, st, dep, layout, mode, pmode, cmode; };
    const V vs[] = {
        // cw ug st dep layout mode pmode cmode
        // cmode 3: per-warp streams (st = slots per warp): streaming alone, + arithmetic, + staging, + dependencies
        {16, 4, 2, 0, 1, 5, 0, 3}, {16, 4, 2, 0, 1, 4, 0, 3}, {16, 4, 2, 0, 1, 0, 0, 3}, {16, 4, 2, 1, 1, 0, 0, 3},
        {8, 4, 4, 0, 1, 0, 0, 3}, {8, 4, 4, 1, 1, 0, 0, 3}, {8, 4, 5, 1, 1, 0, 0, 3},
        // the producer warp and shared stages (cmode 1): everything without / with the dependencies
        {16, 4, 5, 0, 1, 0, 0, 1}, {16, 4, 5, 1, 1, 0, 0, 1},
        // streaming alone, 2-D maps; arithmetic alone; the tensor cores; a column per thread
        {16, 4, 5, 0, 2, 5, 0, 2}, {16, 4, 5, 0, 1, 6, 0, 1}, {16, 4, 5, 1, 1, 0, 0, 2}, {16, 4, 5, 1, 1, 0, 0, 0},
        // cmode 4 (cmode 1 with dp4a on int8 inputs): arithmetic alone; everything without / with the dependencies
        {16, 4, 5, 0, 1, 6, 0, 4}, {16, 4, 5, 0, 1, 0, 0, 4}, {16, 4, 5, 1, 1, 0, 0, 4},
        // cmode 4 without the input staging; stages of 2 and 1 groups (4 and 8 sets of warps in turn)
        {16, 4, 5, 0, 1, 4, 0, 4}, {16, 2, 10, 0, 1, 0, 0, 4}, {16, 2, 10, 1, 1, 0, 0, 4},
        {16, 1, 20, 0, 1, 0, 0, 4}, {16, 1, 20, 1, 1, 0, 0, 4}, {16, 2, 10, 0, 1, 4, 0, 4},
        {16, 1, 20, 0, 1, 4, 0, 4}, {16, 4, 5, 1, 1, 4, 0, 4}, {16, 2, 10, 0, 1, 6, 0, 4}, {16, 1, 20, 0, 1, 6, 0, 4},
        // staging 16 deep
        {16, 4, 5, 0, 1, 8, 0, 4}, {16, 4, 5, 1, 1, 8, 0, 4}, {16, 2, 10, 1, 1, 8, 0, 4}, {16, 4, 5, 1, 1, 8, 0, 1},
        // staging from per-SM copies / 8 copies of the slabs
        {16, 4, 5, 0, 1, 16, 0, 4}, {16, 4, 5, 1, 1, 16, 0, 4}, {16, 4, 5, 0, 1, 32, 0, 4}, {16, 4, 5, 1, 1, 32, 0, 4},
        {16, 4, 5, 1, 1, 16, 0, 1}};
    // `stream_probe L x`: only the twelfth session's last comparison (the input per batch from
    // global memory against staging and against no input at all).
    const V vx[] = {{16, 4, 5, 0, 1, 4, 0, 4}, {16, 4, 5, 0, 1, 64, 0, 4}, {16, 4, 5, 0, 1, 0, 0, 4},
                    {16, 4, 5, 1, 1, 4, 0, 4}, {16, 4, 5, 1, 1, 64, 0, 4}, {16, 4, 5, 1, 1, 0, 0, 4},
                    {16, 2, 10, 1, 1, 64, 0, 4}, {16, 1, 20, 1, 1, 64, 0, 4}};
    const bool only_x = argc > 2 && argv[2][0] == 'x';
    for (const V& v : only_x ? std::vector<V>(vx, vx + sizeof(vx) / sizeof(V)) : std::vector<V>(vs, vs + sizeof(vs) / sizeof(V))) {
        a.prods = dprods[v.ug];
        float t = v.cw == 16 && v.ug == 1 ? run<16, 1>(a, S, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, 20)
                : v.cw == 16 && v.ug == 2 ? run<16, 2>(a, S, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, 20)
                : v.cw == 16 ? run<16, 4>(a, S, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, 20)
                : v.ug == 1  ? run<8, 1>(a, S, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, 20)
                : v.ug == 2  ? run<8, 2>(a, S, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, 20)
                             : run<8, 4>(a, S, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, 20);
        printf("CW %2d UG %d ST %2d dep %d layout %d mode %d pmode %d cmode %d: %.3f ms per step, %.1f%% of copy bandwidth (%.0f GB/s)\n",
               v.cw, v.ug, v.st, v.dep, v.layout, v.mode, v.pmode, v.cmode, t, 100.0 * bytes / copy_bw / (t * 1e-3),
               bytes / (t * 1e-3) / 1e9);
    }
    return 0;
}
#endif
