// common.cuh — prepended by the library to every kernels/*.cu before NVRTC compiles it.
//
// No toolkit header is included (NVRTC on a machine without the toolkit finds none): fp16 values
// are raw `unsigned short` bits and fp16 arithmetic is inline PTX (cvt, sub/fma .f16x2, lop3).
// Every kernel is `extern "C"` so the host finds it by its plain name.
//
// Conventions shared by all kernels:
//   - f16 = IEEE half as raw bits; activations feeding matrix products are f16, the residual
//     stream, norms, RoPE, softmax and every accumulation are f32.
//   - "partials": a matrix product's output may be split over the reduction dimension into S
//     slabs; element (s, t, n) of a [S][T][ld] partial buffer is at s*sstride + t*ld + n, and the
//     consumer kernel (norm, rope, silu) sums the S slabs. Decode uses S > 1, prefill S = 1.

typedef unsigned short f16;
typedef unsigned int u32;
typedef unsigned char u8;

#define WARP 32
#define NEG_INF __int_as_float(0xff800000u)

__device__ __forceinline__ float h2f(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ f16 f2h(float f) {
    f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// The two halves of a packed f16x2 word as floats (low half = lower address).
__device__ __forceinline__ float lo2f(u32 v) { return h2f((f16)(v & 0xffffu)); }
__device__ __forceinline__ float hi2f(u32 v) { return h2f((f16)(v >> 16)); }

__device__ __forceinline__ u32 pack2(float lo, float hi) {
    return (u32)f2h(lo) | ((u32)f2h(hi) << 16);
}

// d = a * b + c, lane-wise on f16x2.
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
    u32 d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// d = a - b, lane-wise on f16x2.
__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
    u32 d;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

// d = (a & b) | c in one instruction.
__device__ __forceinline__ u32 and_or(u32 a, u32 b, u32 c) {
    u32 d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Programmatic dependent launch (sm_90+; no-ops when a kernel is launched without it). Every
// kernel calls pdl_wait() before it reads anything an earlier kernel wrote or writes anything an
// earlier kernel may still read (only immutable weights may be read before it), then
// pdl_launch(), so the next kernel may be scheduled while this one runs. (Triggering before the
// wait let launches cascade many kernels ahead and made decode slower.)
__device__ __forceinline__ void pdl_launch() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The small kernels between two matrix products (norms, RoPE, attention, SiLU, the act-order
// gather) start with pdl_between_products(): they trigger their successor at entry, so the next
// product is launched while the previous one's last blocks still run and its blocks request
// their first weights (before their own wait) on the SMs those free. The products themselves
// still trigger after their wait, so at most one product runs ahead (every kernel triggering at
// entry let launches cascade and was slower). H100, 13B decode: 251.2-257.1 against
// 243.6-243.7 tokens/s after 32 tokens, 218.4-220.3 against 214.6-218.2 after 1,500.
// WV_CUDA_DEFINES="WV_PDL_EARLY=0": trigger after the wait, as the products do.
#ifndef WV_PDL_EARLY
#define WV_PDL_EARLY 1
#endif
__device__ __forceinline__ void pdl_between_products() {
    if (WV_PDL_EARLY) pdl_launch();
    pdl_wait();
    if (!WV_PDL_EARLY) pdl_launch();
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). `red` is 32 floats of shared
// memory. Every thread gets the total. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.f;
    return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : NEG_INF;
    return warp_max(t);
}

// Sum of the S partial slabs of element (t, n).
__device__ __forceinline__ float sum_partials(const float* __restrict__ p, int S, long long sstride, long long idx) {
    float v = 0.f;
    for (int s = 0; s < S; ++s) v += p[s * sstride + idx];
    return v;
}

// ---- 4-bit GEMV building blocks (kernels/gemv.cu, kernels/decode.cu) ----

// Products of (q - z) and x summed in f16 before a conversion to f32: at most 4 * rows products
// of |q - z| <= 15, so |x| <= 32768 / (60 * rows) keeps every f16 sum finite.
#define XMAX_FOR_ROWS(rows) (32768.f / (60.f * (rows)))

// Stage the block's slice of the GEMV input: xs[i] = value(k0 + i) (an f16) for k0 + i < k1, zero
// up to `span`. If its largest magnitude exceeds `xmax` (rare: LLaMA's outlier activations reach
// thousands), scale the slice by 2^-e (exact) and return 2^e, by which the caller multiplies
// its sums; else return 1. Called by every thread; contains __syncthreads (xs is ready after).
// `value` reads x (stage_x below) or computes it (the fused decode prologues).
// The end of every staging: the block's largest magnitude from each thread's `mx`, and the
// power-of-two scaling when it exceeds `xmax` (see stage_x_with).
__device__ __forceinline__ float stage_x_finish(f16* xs, int span, float mx, float xmax) {
    __shared__ float red[32];
    mx = block_max(mx, red);
    if (!(mx > xmax && mx <= 65504.f)) return 1.f;
    const int e = (int)ceilf(log2f(mx / xmax));
    const float down = exp2f((float)-e);
    for (int i = threadIdx.x; i < span; i += blockDim.x) xs[i] = f2h(h2f(xs[i]) * down);
    __syncthreads();
    return exp2f((float)e);
}

// Four elements per thread at a time, all four values made before any is stored, so that their
// loads are in flight together (a plain loop is not unrolled by ptxas: one round trip each).
template <typename F>
__device__ __forceinline__ float stage_x_with(f16* xs, int k0, int k1, int span, float xmax, F value) {
    float mx = 0.f;
    for (int base = threadIdx.x; base < span; base += 4 * blockDim.x) {
        f16 v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int i = base + j * blockDim.x;
            v[j] = i < span && k0 + i < k1 ? value(k0 + i) : f16(0);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int i = base + j * blockDim.x;
            if (i < span) {
                xs[i] = v[j];
                mx = fmaxf(mx, fabsf(h2f(v[j])));
            }
        }
    }
    return stage_x_finish(xs, span, mx, xmax);
}

// Rows 2j, 2j+1 of a packed word as f16 (q - z): even nibble pairs (mask 0x000f000f: 1024 + q)
// minus zl = 1024 + z; odd nibble pairs (mask 0x00f000f0: 1024 + 16q) times 1/16 plus
// zh = -(64 + z). Both exact.
__device__ __forceinline__ u32 dq_even(u32 w, u32 zl) { return hsub2(and_or(w, 0x000f000fu, 0x64006400u), zl); }
__device__ __forceinline__ u32 dq_odd(u32 w, u32 zh) {
    return hfma2(and_or(w, 0x00f000f0u, 0x64006400u), 0x2c002c00u, zh);
}

// The zero points of 4 columns (the bytes of zv) as dot8_lean's constants: zl = 1024 + z for
// the even nibble pairs, zh = -(64 + z) for the odd ones (z < 64).
__device__ __forceinline__ void lean_zeros(u32 zv, u32 (&zl)[4], u32 (&zh)[4]) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        const u32 z = (zv >> (8 * c)) & 0xffu;
        zl[c] = z * 0x00010001u + 0x64006400u;
        zh[c] = z * 0x00100010u + 0xd400d400u;
    }
}

// a += the 8 products of one packed word (rows r..r+7 of one column) with x rows r..r+7, in f16.
__device__ __forceinline__ u32 dot8_lean(u32 w, uint4 xv, u32 zl, u32 zh, u32 a) {
    const u32 w8 = w >> 8;
    a = hfma2(dq_even(w, zl), xv.x, a);
    a = hfma2(dq_odd(w, zh), xv.y, a);
    a = hfma2(dq_even(w8, zl), xv.z, a);
    a = hfma2(dq_odd(w8, zh), xv.w, a);
    return a;
}

// The largest magnitude of 8 f16 values.
__device__ __forceinline__ float absmax8(uint4 v) {
    const float a = fmaxf(fmaxf(fabsf(lo2f(v.x)), fabsf(hi2f(v.x))), fmaxf(fabsf(lo2f(v.y)), fabsf(hi2f(v.y))));
    const float b = fmaxf(fmaxf(fabsf(lo2f(v.z)), fabsf(hi2f(v.z))), fmaxf(fabsf(lo2f(v.w)), fabsf(hi2f(v.w))));
    return fmaxf(a, b);
}

// d += a (16 x 32 u8, row-major) . b (32 x 8 s8, column-major) in s32: one mma.sync m16n8k32
// (sm_80+), fragments as the PTX ISA lays them out (gemv_mma.cu's consumers).
__device__ __forceinline__ void mma_u8s8(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Decode inputs as gemv_q4m reads them (gemv_mma.cu, quant_digits): per 128-input block b of a
// K-vector, 64 words of two int8 digits at xq + 64 b in the mma's fragment order, then (past
// all K / 128 blocks) float2 (xs, Σ (hi + lo / 256)) per block. warp_digits: a warp's block,
// lane l holding values 4l .. 4l + 3 (every lane of the warp calls it; values in f32).
__device__ __forceinline__ float2* digits_sums(u32* xq, int K) { return reinterpret_cast<float2*>(xq + (size_t)(K >> 7) * 64); }
__device__ __forceinline__ u32 digit_bytes(const int (&v)[4]) {
    return (u32)(v[0] & 255) | ((u32)(v[1] & 255) << 8) | ((u32)(v[2] & 255) << 16) | ((u32)(v[3] & 255) << 24);
}
// One value as its two digits for 127 / max|x| = inv; returns hi + lo / 256.
__device__ __forceinline__ float digits_of(float x, float inv, int& hi, int& lo) {
    const float y = x * inv, h = rintf(y);
    hi = (int)h;
    lo = (int)fminf(fmaxf(rintf((y - h) * 256.f), -128.f), 127.f);
    return h + (float)lo * (1.f / 256.f);
}
__device__ __forceinline__ void warp_digits(float4 v, int blk, u32* __restrict__ xq, float2* __restrict__ xsum) {
    const int lane = threadIdx.x & 31;
    const float mx = warp_max(fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
    const float inv = mx > 0.f ? 127.f / mx : 0.f;
    int hi[4], lo[4];
    float part = digits_of(v.x, inv, hi[0], lo[0]) + digits_of(v.y, inv, hi[1], lo[1]);
    part += digits_of(v.z, inv, hi[2], lo[2]) + digits_of(v.w, inv, hi[3], lo[3]);
    part = warp_sum(part);
    // Lane 2r holds rows 8r..8r+3 of packed row r, lane 2r + 1 rows 8r+4..8r+7: word e = 0 is
    // rows (0, 4, 1, 5) — bytes (A0, B0, A1, B1) of the even (A) and odd (B) lanes — e = 1 rows
    // (2, 6, 3, 7); the even lane writes e = 0, the odd one e = 1.
    const int e = lane & 1, r = lane >> 1, s = r >> 2, t = r & 3;
    const u32 mh = digit_bytes(hi), ml = digit_bytes(lo);
    const u32 oh = __shfl_xor_sync(0xffffffffu, mh, 1), ol = __shfl_xor_sync(0xffffffffu, ml, 1);
    const u32 sel = e ? 0x7362u : 0x5140u;
    u32* q = xq + (size_t)blk * 64;
    q[(t * 4 + s) * 2 + e] = e ? __byte_perm(oh, mh, sel) : __byte_perm(mh, oh, sel);
    q[((4 + t) * 4 + s) * 2 + e] = e ? __byte_perm(ol, ml, sel) : __byte_perm(ml, ol, sel);
    if (lane == 0) xsum[blk] = make_float2(mx * (1.f / 127.f), part);
}

// Bulk tensor copies completing on mbarriers (sm_90; gemm_q4.cu's prefill products, and
// tools/probe/stream_probe.cu). Unused here, they cost nothing on older architectures.
// A CUtensorMap (opaque, 128 bytes, 64-byte aligned), passed by value as a kernel parameter.
struct __align__(64) TmaMap {
    unsigned long long v[16];
};

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
// Wait until the phase of parity `parity` of the mbarrier at `bar` has completed.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
        "@!p bra WAIT;\n"
        "}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}
// A 2-D tensor copy of the box at (c0 innermost, c1) of `map` into shared memory at dst,
// completing (bytes) on the mbarrier at bar.
__device__ __forceinline__ void tma_2d(u32 dst, const TmaMap* map, int c0, int c1, u32 bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}

// The same for 3-D and 4-D maps (gemm_q4_tma over a unit-major copy: gemm_q4.rs unit_maps).
__device__ __forceinline__ void tma_3d(u32 dst, const TmaMap* map, int c0, int c1, int c2, u32 bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(dst),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
        : "memory");
}
__device__ __forceinline__ void tma_4d(u32 dst, const TmaMap* map, int c0, int c1, int c2, int c3, u32 bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(dst),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}

// cp.async: 16-byte global → shared copies in commit groups.
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// 1 / RMS of a K-vector from its n per-tile sums of squares (left by a residual epilogue),
// summed by each warp in a fixed order (lane i: tiles i, i + 32, …; then the warp's tree), so
// deterministic, in one round trip. Read through L2: the tiles may come from the same launch.
__device__ __forceinline__ float rms_scale_from_tiles(const float* ss, int n, int K, float eps) {
    float s = 0.f;
    for (int i = threadIdx.x & 31; i < n; i += 32) s += __ldcg(ss + i);
    s = warp_sum(s);
    return (float)(1.0 / sqrt((double)s / (double)K + (double)eps));
}

// SiLU as the CPU backend computes it (elementwise.cu's silu_mul, gemv_mma.cu's epilogue).
__device__ __forceinline__ float silu(float g) { return g / (1.f + expf(-g)); }

// Readiness flags between blocks of one persistent launch (decode.cu): an
// acquire load (what the raiser wrote before raising is visible after it), a wait for a value,
// and the release that raises one (after the writers' __threadfence).
__device__ __forceinline__ int flag_acquire(const int* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void flag_wait(const int* f, int v) {
    while (flag_acquire(f) < v) __nanosleep(32);
}
__device__ __forceinline__ void flag_raise(int* f) {
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(f) : "memory");
}


// The attention kernels' keys and values (CG false: decode after the fused attention's 128 keys,
// a layer's cache read once a step and larger than L2 after ~1,000 tokens) loaded as streaming
// (ld.global.cs, evict-first in L2), as the weights are (gemv_mma.cu's MMA_L2_EVICT_FIRST).
#ifndef ATT_KV_STREAM
#define ATT_KV_STREAM 1
#endif
// ATT_SUM_TRANSPOSE (default 1): a batch's KB warp sums as one reduce-scatter — at each of the
// first log2(KB) levels a lane sends the half of its keys its partner keeps and keeps the other
// half (KB/2 + KB/4 + ... shuffles), the last levels a plain butterfly on one value — after which
// each lane holds one key's sum, exponentiates it alone (one expf instead of KB) and fetches the
// batch's weights from the lanes that hold them (KB shuffles): 17 + 3 shuffles for 8 keys instead
// of 40, the same adds in the same order as warp_sum and the same expf arguments (the same bits).
// H200, 13B (twentieth session): the transposed sums +1.4% after 32 tokens, +2.0% after 1,500
// against one key's five-shuffle chain after another (0: ptxas keeps shuffles in source order,
// so those chains ran back to back); one expf a lane another +0.8% after 32, level after 1,500.
// (Summing level by level across the keys — 40 shuffles, independent within a level — measured
// between the two; 16 keys per batch in attn_partial 7% slower, 4 keys 2% slower.)
#ifndef ATT_SUM_TRANSPOSE
#define ATT_SUM_TRANSPOSE 1
#endif
#if ATT_KV_STREAM
#define ATT_KV_LD(p) __ldcs(p)
#else
#define ATT_KV_LD(p) (*(p))
#endif

// This lane's part of q · k for one key (lane holds dims 4v .. 4v+3, v = lane + 32i, i < NI).
template <int NI>
__device__ __forceinline__ float key_dot(const float (&qr)[4 * NI], const uint2 (&k)[NI]) {
    float d = 0.f;
#pragma unroll
    for (int i = 0; i < NI; ++i)
        d += qr[4 * i] * lo2f(k[i].x) + qr[4 * i + 1] * hi2f(k[i].x) + qr[4 * i + 2] * lo2f(k[i].y) +
             qr[4 * i + 3] * hi2f(k[i].y);
    return d;
}

// One warp's share of decode attention for one head (attention.cu's attn_partial, gemv_mma.cu's
// fused short-context attention): an online softmax — running max m, sum l, unnormalised
// output acc — over the keys first, first + stride, ... < end, KB at a time, the batch's K and
// V rows all requested before any is used (one memory round trip per batch, no barrier). Lane
// holds dims 4v .. 4v+3 for v = lane + 32i, i < NI, v < nv (qr the query's, already in f32);
// kb, vb: the KV head's row of key 0 in the caches (f16, rows kvd elements apart). CG: rows
// read through L2 only (another block of the same launch may have written them). The first
// key of every batch is in range, so the batch's maximum is finite.
template <int NI, int KB, bool CG>
__device__ __forceinline__ void warp_online_softmax(const float (&qr)[4 * NI], const f16* __restrict__ kb,
                                                    const f16* __restrict__ vb, size_t kvd, int nv, int first,
                                                    int stride, int end, float scale, float& m, float& l,
                                                    float (&acc)[4 * NI]) {
    const int lane = threadIdx.x & 31;
    const uint2 zero2 = make_uint2(0u, 0u);
    for (int p0 = first; p0 < end; p0 += stride * KB) {
        uint2 kk[KB][NI], vv[KB][NI];
#pragma unroll
        for (int j = 0; j < KB; ++j) {
            const int p = p0 + stride * j;
#pragma unroll
            for (int i = 0; i < NI; ++i) {
                const int v = lane + 32 * i;
                const bool ok = p < end && v < nv;
                const uint2* kr = reinterpret_cast<const uint2*>(kb + (size_t)p * kvd + 4 * v);
                const uint2* vr = reinterpret_cast<const uint2*>(vb + (size_t)p * kvd + 4 * v);
                kk[j][i] = ok ? (CG ? __ldcg(kr) : ATT_KV_LD(kr)) : zero2;
                vv[j][i] = ok ? (CG ? __ldcg(vr) : ATT_KV_LD(vr)) : zero2;
            }
        }
        float wt[KB];  // the batch's weights e^(score - m_new): 0 for keys past the range
        float m_new = m;
#if ATT_SUM_TRANSPOSE
        static_assert(KB >= 2 && KB <= 32 && (KB & (KB - 1)) == 0, "a power of two keys per batch");
        float t[KB];  // [KB] this lane's parts; after level c, t[0 .. c/2) the keys it still holds
#pragma unroll
        for (int j = 0; j < KB; ++j) t[j] = key_dot<NI>(qr, kk[j]);
#pragma unroll
        for (int c = KB, o = 16; c > 1; c >>= 1, o >>= 1) {
            const bool upper = lane & o;  // keeps keys [c/2, c) of those it holds, sends [0, c/2)
#pragma unroll
            for (int j = 0; j < KB / 2; ++j) {  // constant bounds, so that t stays in registers
                if (j < c / 2) {
                    const float send = upper ? t[j] : t[j + c / 2];
                    const float keep = upper ? t[j + c / 2] : t[j];
                    t[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
                }
            }
        }
#pragma unroll
        for (int o = 16 / KB; o > 0; o >>= 1) t[0] += __shfl_xor_sync(0xffffffffu, t[0], o);
        // Lane L now holds key L / (32 / KB)'s sum (its bits are the levels' upper choices): its
        // score, the batch's maximum over the lanes that hold different keys, one expf, then
        // every key's weight fetched from a lane that holds it.
        const int kj = lane / (32 / KB);
        const float sj = p0 + stride * kj < end ? t[0] * scale : NEG_INF;
        float mx = sj;
#pragma unroll
        for (int o = 16; o >= 32 / KB; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        m_new = fmaxf(m_new, mx);
        const float ej = expf(sj - m_new);
#pragma unroll
        for (int j = 0; j < KB; ++j) wt[j] = __shfl_sync(0xffffffffu, ej, j * (32 / KB));
#else
        float s[KB];
#pragma unroll
        for (int j = 0; j < KB; ++j) {
            const float d = key_dot<NI>(qr, kk[j]);
            s[j] = p0 + stride * j < end ? warp_sum(d) * scale : NEG_INF;
            m_new = fmaxf(m_new, s[j]);
        }
#pragma unroll
        for (int j = 0; j < KB; ++j) wt[j] = expf(s[j] - m_new);
#endif
        const float corr = expf(m - m_new);
        l *= corr;
#pragma unroll
        for (int e = 0; e < 4 * NI; ++e) acc[e] *= corr;
#pragma unroll
        for (int j = 0; j < KB; ++j) {
            l += wt[j];
#pragma unroll
            for (int i = 0; i < NI; ++i) {
                acc[4 * i] += wt[j] * lo2f(vv[j][i].x);
                acc[4 * i + 1] += wt[j] * hi2f(vv[j][i].x);
                acc[4 * i + 2] += wt[j] * lo2f(vv[j][i].y);
                acc[4 * i + 3] += wt[j] * hi2f(vv[j][i].y);
            }
        }
        m = m_new;
    }
}
