// gemv.cu — matrix-vector products for decode (one token), f32 accumulation.
//
// gemv_q4: out = x · W for a 4-bit GPTQ matrix in wv's repacked layout (made at upload):
//   qw     u32 [K/8, N]: word (r, n) holds sorted rows 8r..8r+7 of column n; nibble p (bits 4p..4p+3)
//          holds row 8r + POS[p], POS = {0,2,4,6,1,3,5,7}, so that (w >> 4j) & 0x000f000f puts rows
//          2j and 2j+1 into the low and high f16 halves (with the 0x6400 exponent: 1024 + q).
//   scales f16 [G, N]; zeros u8 [G, N] (the real zero point, any checkpoint offset included).
//   perm   int [K] or NULL: sorted row i is original row perm[i] (act-order); x is gathered through it.
//   Group g is sorted rows [g*gs, min(K, (g+1)*gs)); gs % 8 == 0; N % 4 == 0.
// Launch: block 128 threads = 4 warps. Warp w of block (bx, by) covers columns
//   [(4*bx + w)*128, +128), 4 per lane (one 16-byte load per packed row), over groups
//   [by*gpb, min(G, (by+1)*gpb)). grid = (ceil(N/512), S). Dynamic shared memory: gpb*gs*2 bytes
//   (the block's slice of x, f16). Output: slab by of out f32 [S, ldo] (zeros where a block row
//   has no groups). The first group's weights, scales and zeros are loaded before the kernel waits
//   for its predecessor (programmatic dependent launch), overlapping its tail. Per packed word: 4 lop3 + 4 sub.f16x2 + 4 fma.f16x2 (products of (q - z) and
//   x summed in f16 over 8 rows, then in f32), the scale applied once per group in f32.
//
// gemv_q4w ("wide", the decode default when every 4-bit member's group size is a multiple of 64;
//   WV_CUDA_GEMV=1 goes back to gemv_q4): same layout, arguments
//   and output slabs as gemv_q4, but block 256 threads = 8 warps all on columns [bx*128, +128)
//   (4 per lane, one 16-byte load per packed row: 512 contiguous bytes per warp per row). The
//   block's packed rows (groups [by*gpb, min(G, (by+1)*gpb))) are cut into batches of 8 (64
//   inputs, never across a group since gs % 64 == 0), split evenly over the 8 warps; each warp
//   streams its batches double-buffered (the next 8 loads, scales and zeros in flight while the
//   current 8 rows are computed), applies the scale per batch in f32, and the 8 warps' sums meet
//   in shared memory. grid = (ceil(N/128), S), S small (plan_decode aims at <= 2 blocks per SM,
//   the residency __launch_bounds__(256, 2) guarantees), so every block is resident at once.
//   Dynamic shared memory: gpb*gs*2 bytes (x slice); static 4 KiB (reduction).
//
// gemv_q4l ("lean", the decode default when every 4-bit member's K and group size are multiples
//   of 64 (so every batch of 8 packed rows is whole) and every zero point is below 64; WV_CUDA_GEMV=wide / =1 select gemv_q4w / gemv_q4): same
//   layout, arguments, grid and output slabs as gemv_q4w (256 threads = 8 warps on columns
//   [bx*128, +128), 4 per lane, the block's packed rows cut into batches of 8 split over the
//   warps, the warps' sums reduced in shared memory), with about half the instructions per
//   weight: per packed word one shift, 4 lop3 (rows 2j, 2j+1 as 1024 + q, or 1024 + 16q for the
//   odd nibbles, which spares three shifts), 2 sub.f16x2 + 2 fma.f16x2 (q - z, exact) and 4
//   fma.f16x2 with x; products are summed in f16 over WV_GEMV_ACC packed rows (4 products per
//   half per row) before one conversion to f32, and the scale is applied once per batch. So that
//   those f16 sums cannot overflow, x is scaled by a power of two when its largest magnitude in
//   the block's slice exceeds 32768 / (60 * WV_GEMV_ACC), and the result scaled back (exact).
//   Weights stream through a per-warp shared-memory ring of WV_GEMV_RING batches filled by
//   cp.async (see below; WV_GEMV_RING = 0: through registers, row i of the next batch requested
//   as soon as row i of this one is used). Dynamic shared memory: WV_GEMV_RING * 32 KiB (the
//   ring), then gpb*gs*2 bytes (the x slice, zero-padded to whole batches); static 4 KiB + 32 B.
//   Fused decode variants (same product; forward.rs uses them when a layer allows): the x slice
//   is made in the prologue instead of read — gemv_q4l_norm: RMSNorm of the f32 residual stream
//   from the per-tile sums of squares a residual epilogue left; gemv_q4l_attn_resid: the decode
//   attention's combine of the chunk partials (head dim = gs, heads = groups; + pn*gpb floats of
//   dynamic shared memory for the chunk weights); gemv_q4l_silu_resid: SiLU(gate) * up from the
//   gate|up slabs. The *_resid variants end with a residual epilogue: the last of the S blocks of
//   each 128-column tile (an atomic counter per tile, reset by that block) sums the tile's slabs
//   (+ bias) into the residual stream and writes the tile's sum of squares for the next norm.
//   So a decode layer is 6 launches (q|k|v, qkv_rope, attn_partial, o, gate|up, down) instead of 12.
//   All variants share one parameter list (GEMVL_PARAMS; unused inputs are NULL / 0).
//
// gemv_f16: out = x · Wᵀ for a dense f16 matrix W [N, K] row-major (dense layers, non-4-bit GPTQ
//   dequantised at upload, the lm_head).
// Launch: block 256 = 8 warps, warp w → row n = 8*bx + w; block row by covers k in
//   [by*kc, min(K, (by+1)*kc)) (kc % 8 == 0); grid (ceil(N/8), S); output slab by of out [S, ldo].
//   16-byte loads when K % 8 == 0, else scalar.



// stage_x requests all of a thread's share of the slice before storing any of it (16-byte
// chunks, 4 per thread in flight, where the slice is contiguous and aligned; else 8 elements per
// thread at a time, their permutation entries then their values), so
// staging costs one or two L2 round trips instead of one (two with a permutation) per 256
// elements, which every block of a decode product waits for before its first batch. (The loop
// it replaced was not unrolled by ptxas; +8% decode on an H200, ninth session.)


// The slice read from x (gathered through the act-order permutation perm, when not NULL).
__device__ __forceinline__ float stage_x(f16* xs, const f16* __restrict__ x, const int* __restrict__ perm,
                                         int k0, int k1, int span, float xmax) {
    float mx = 0.f;
    if (!perm && ((k0 | k1 | span) & 7) == 0 && (reinterpret_cast<size_t>(x) & 15) == 0) {
        // [span / 8] 16-byte chunks; those past k1 are zeros.
        const int n8 = span >> 3, v8 = (k1 - k0) >> 3;
        const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(x + k0);
        uint4* xsv = reinterpret_cast<uint4*>(xs);
        for (int base = threadIdx.x; base < n8; base += 4 * blockDim.x) {
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = base + j * blockDim.x;
                v[j] = c < v8 ? __ldg(xv + c) : make_uint4(0u, 0u, 0u, 0u);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = base + j * blockDim.x;
                if (c < n8) {
                    xsv[c] = v[j];
                    mx = fmaxf(mx, absmax8(v[j]));
                }
            }
        }
    } else {
        // Through the permutation: 8 entries, then their 8 values (written in two phases: a
        // lambda per element through stage_x_with made ptxas wait for each entry in turn).
        for (int base = threadIdx.x; base < span; base += 8 * blockDim.x) {
            int src[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int k = k0 + base + j * blockDim.x;
                src[j] = base + j * blockDim.x < span && k < k1 ? (perm ? __ldg(perm + k) : k) : -1;
            }
            f16 v[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) v[j] = src[j] >= 0 ? x[src[j]] : f16(0);
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int i = base + j * blockDim.x;
                if (i < span) {
                    xs[i] = v[j];
                    mx = fmaxf(mx, fabsf(h2f(v[j])));
                }
            }
        }
    }
    return stage_x_finish(xs, span, mx, xmax);
}

__device__ __forceinline__ float dot8_q4(u32 w, uint4 xv, u32 z2) {
    u32 a = 0u;
    a = hfma2(hsub2(and_or(w, 0x000f000fu, 0x64006400u), z2), xv.x, a);
    a = hfma2(hsub2(and_or(w >> 4, 0x000f000fu, 0x64006400u), z2), xv.y, a);
    a = hfma2(hsub2(and_or(w >> 8, 0x000f000fu, 0x64006400u), z2), xv.z, a);
    a = hfma2(hsub2(and_or(w >> 12, 0x000f000fu, 0x64006400u), z2), xv.w, a);
    return lo2f(a) + hi2f(a);
}

__device__ __forceinline__ void q4_load8(uint4 (&w)[8], const uint4* __restrict__ qv, int r, int rend, int N4) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
        if (r + i < rend) w[i] = __ldg(qv + (size_t)(r + i) * N4);
}

__device__ __forceinline__ u32 zero2(u32 zv, int c) { return (0x6400u + ((zv >> (8 * c)) & 0xffu)) * 0x10001u; }

// Eight packed rows (64 inputs) of four columns into the group accumulators.
__device__ __forceinline__ void q4_chunk(const uint4 (&w)[8], const f16* xs, int r, int rend, int k0,
                                         u32 zv, float (&ga)[4]) {
    const u32 z0 = zero2(zv, 0), z1 = zero2(zv, 1), z2 = zero2(zv, 2), z3 = zero2(zv, 3);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        if (r + i < rend) {
            const uint4 xv = *reinterpret_cast<const uint4*>(xs + ((r + i) << 3) - k0);
            ga[0] += dot8_q4(w[i].x, xv, z0);
            ga[1] += dot8_q4(w[i].y, xv, z1);
            ga[2] += dot8_q4(w[i].z, xv, z2);
            ga[3] += dot8_q4(w[i].w, xv, z3);
        }
    }
}

extern "C" __global__ void __launch_bounds__(128) gemv_q4(
    const u32* __restrict__ qw, const f16* __restrict__ scales, const u8* __restrict__ zeros,
    const f16* __restrict__ x, const int* __restrict__ perm, float* __restrict__ out,
    int K, int N, int G, int gs, int gpb, int ldo)
{
    extern __shared__ __align__(16) f16 xs[];
    const int g0 = blockIdx.y * gpb;
    const int g1 = min(G, g0 + gpb);
    const int k0 = g0 * gs;
    const int k1 = min(K, g1 * gs);
    const int lane = threadIdx.x & 31;
    const int n = ((blockIdx.x * 4 + (threadIdx.x >> 5)) * 32 + lane) * 4;
    const bool active = n < N && g0 < g1;
    const int N4 = N >> 2;
    const uint4* __restrict__ qv = reinterpret_cast<const uint4*>(qw) + (n >> 2);
    // Prologue, before waiting for the previous kernel: the first group's scales, zeros and first
    // eight packed rows (weights never change), so their latency overlaps the wait and the
    // staging of x. (A software-pipelined variant, loading the next eight rows while computing
    // the current ones, measured slower on the 13B shapes: docs/cuda.md.)
    uint4 wa[8];
    uint2 sv = make_uint2(0u, 0u);
    u32 zv = 0u;
    if (active) {
        sv = __ldg(reinterpret_cast<const uint2*>(scales + (size_t)g0 * N + n));
        zv = __ldg(reinterpret_cast<const u32*>(zeros + (size_t)g0 * N + n));
        q4_load8(wa, qv, (g0 * gs) >> 3, min(K, (g0 + 1) * gs) >> 3, N4);
    }
    pdl_wait();
    const float unscale = stage_x(xs, x, perm, k0, k1, k1 - k0, XMAX_FOR_ROWS(1));
    pdl_launch();
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (active) {
        for (int g = g0; g < g1; ++g) {
            const int r0 = (g * gs) >> 3;
            const int r1 = min(K, (g + 1) * gs) >> 3;
            if (g != g0) {
                sv = __ldg(reinterpret_cast<const uint2*>(scales + (size_t)g * N + n));
                zv = __ldg(reinterpret_cast<const u32*>(zeros + (size_t)g * N + n));
            }
            float ga[4] = {0.f, 0.f, 0.f, 0.f};
            for (int r = r0; r < r1; r += 8) {
                if (g != g0 || r != r0) q4_load8(wa, qv, r, r1, N4);
                q4_chunk(wa, xs, r, r1, k0, zv, ga);
            }
            acc[0] += ga[0] * lo2f(sv.x);
            acc[1] += ga[1] * hi2f(sv.x);
            acc[2] += ga[2] * lo2f(sv.y);
            acc[3] += ga[3] * hi2f(sv.y);
        }
    }
    if (n >= N) return;
    float* o = out + (size_t)blockIdx.y * ldo + n;
    o[0] = acc[0] * unscale;
    o[1] = acc[1] * unscale;
    o[2] = acc[2] * unscale;
    o[3] = acc[3] * unscale;
}

// One batch of eight packed rows starting at row r (< rend), with its group's scales and zeros.
__device__ __forceinline__ void q4w_load(uint4 (&w)[8], uint2& sv, u32& zv, const uint4* __restrict__ qv,
                                         const f16* __restrict__ scales, const u8* __restrict__ zeros,
                                         int r, int rend, int N4, int N, int n, int gs) {
    const int g = (r << 3) / gs;
    sv = __ldg(reinterpret_cast<const uint2*>(scales + (size_t)g * N + n));
    zv = __ldg(reinterpret_cast<const u32*>(zeros + (size_t)g * N + n));
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = r + i < rend ? __ldg(qv + (size_t)(r + i) * N4) : make_uint4(0u, 0u, 0u, 0u);
}

__device__ __forceinline__ void q4w_batch(const uint4 (&w)[8], uint2 sv, u32 zv, const f16* xs, int r, int rend,
                                          int k0, float (&acc)[4]) {
    float ga[4] = {0.f, 0.f, 0.f, 0.f};
    q4_chunk(w, xs, r, rend, k0, zv, ga);
    acc[0] += ga[0] * lo2f(sv.x);
    acc[1] += ga[1] * hi2f(sv.x);
    acc[2] += ga[2] * lo2f(sv.y);
    acc[3] += ga[3] * hi2f(sv.y);
}

#ifndef WV_GEMV_MINB
#define WV_GEMV_MINB 2
#endif
extern "C" __global__ void __launch_bounds__(256, WV_GEMV_MINB) gemv_q4w(
    const u32* __restrict__ qw, const f16* __restrict__ scales, const u8* __restrict__ zeros,
    const f16* __restrict__ x, const int* __restrict__ perm, float* __restrict__ out,
    int K, int N, int G, int gs, int gpb, int ldo)
{
    extern __shared__ __align__(16) f16 xs[];
    __shared__ __align__(16) float red[8 * 128];
    const int g0 = blockIdx.y * gpb;
    const int g1 = min(G, g0 + gpb);
    const int k0 = g0 * gs;
    const int k1 = g0 < g1 ? min(K, g1 * gs) : k0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * 128 + lane * 4;
    const int r0 = k0 >> 3, rend = k1 >> 3;
    const int nb = (rend - r0 + 7) >> 3;
    const int b0 = (nb * warp) >> 3, b1 = (nb * (warp + 1)) >> 3;
    const bool active = n < N && b0 < b1;
    const int N4 = N >> 2;
    const uint4* __restrict__ qv = reinterpret_cast<const uint4*>(qw) + (n >> 2);
    uint4 wa[8], wb[8];
    uint2 sa = make_uint2(0u, 0u), sb = make_uint2(0u, 0u);
    u32 za = 0u, zb = 0u;
    // The first batch before waiting for the previous kernel (weights never change).
    if (active) q4w_load(wa, sa, za, qv, scales, zeros, r0 + 8 * b0, rend, N4, N, n, gs);
    pdl_wait();
    const float unscale = stage_x(xs, x, perm, k0, k1, k1 - k0, XMAX_FOR_ROWS(1));
    pdl_launch();
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (active) {
        for (int b = b0; b < b1; b += 2) {
            const int ra = r0 + 8 * b;
            if (b + 1 < b1) q4w_load(wb, sb, zb, qv, scales, zeros, ra + 8, rend, N4, N, n, gs);
            q4w_batch(wa, sa, za, xs, ra, rend, k0, acc);
            if (b + 1 < b1) {
                if (b + 2 < b1) q4w_load(wa, sa, za, qv, scales, zeros, ra + 16, rend, N4, N, n, gs);
                q4w_batch(wb, sb, zb, xs, ra + 8, rend, k0, acc);
            }
        }
    }
    *reinterpret_cast<float4*>(red + warp * 128 + lane * 4) =
        make_float4(acc[0] * unscale, acc[1] * unscale, acc[2] * unscale, acc[3] * unscale);
    __syncthreads();
    const int c = blockIdx.x * 128 + threadIdx.x;
    if (threadIdx.x < 128 && c < N) {
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < 8; ++w) v += red[w * 128 + threadIdx.x];
        out[(size_t)blockIdx.y * ldo + c] = v;
    }
}

#ifndef WV_GEMV_ACC
#define WV_GEMV_ACC 4
#endif
// WV_GEMV_PROBE=1 (benchmarks only, via WV_CUDA_DEFINES): gemv_q4l streams its weights but
// skips the dequantisation and products, to tell the memory path's ceiling from the arithmetic's;
// WV_GEMV_PROBE=2 reads no weights at all (the launch, the x slice and the store alone);
// WV_GEMV_PROBE=3 also skips making the x slice (the prologue: staging, norm, combine or SiLU).
#ifndef WV_GEMV_PROBE
#define WV_GEMV_PROBE 0
#endif
#ifndef WV_GEMVL_MINB
#define WV_GEMVL_MINB 3
#endif


// WV_GEMV_RING = n > 0 (the library passes 2; WV_CUDA_GEMV_RING chooses): gemv_q4l streams its
// weights through a per-warp ring of n batches in shared memory by cp.async — each thread
// copies, and later reads back, its own 16 bytes of each row, so no barrier is needed — instead
// of registers, whose loads ptxas issues at the end of the previous batch (exposing their
// latency) whatever the source order. The host adds GEMVL_RING_BYTES (n * 32 KiB) of dynamic
// shared memory before the x slice. With n = 0 the register path is compiled.
#ifndef WV_GEMV_RING
#define WV_GEMV_RING 0
#endif
#define GEMVL_RING_BYTES (WV_GEMV_RING * 8 * 8 * 32 * 16)
#ifdef WV_HOST_RING_BYTES
static_assert(GEMVL_RING_BYTES == WV_HOST_RING_BYTES, "kernels.rs sizes the weight ring differently");
#endif


// What the fused decode variants of gemv_q4l compute before and after the product.
enum { PRO_X = 0, PRO_NORM = 1, PRO_SILU = 2, PRO_ATTN = 3 };
enum { EPI_NONE = 0, EPI_RESID = 1 };

#define GEMVL_PARAMS                                                                                   \
    const u32 *__restrict__ qw, const f16 *__restrict__ scales, const u8 *__restrict__ zeros,          \
        const f16 *__restrict__ x, const int *__restrict__ perm, float *__restrict__ out, int K, int N, \
        int G, int gs, int gpb, int ldo, const float *__restrict__ pin, const float *__restrict__ pin2,  \
        const float *__restrict__ ss_in, int pn, int pn2, long long pstride, float eps,                 \
        int *__restrict__ counters, float *__restrict__ resid, const float *__restrict__ ebias,         \
        float *__restrict__ ss_out
#define GEMVL_ARGS                                                                                     \
    qw, scales, zeros, x, perm, out, K, N, G, gs, gpb, ldo, pin, pin2, ss_in, pn, pn2, pstride, eps,    \
        counters, resid, ebias, ss_out

template <int PRO, int EPI>
__device__ __forceinline__ void gemv_q4l_body(GEMVL_PARAMS)
{

    // Dynamic shared memory: [the weight ring, when WV_GEMV_RING > 0] [the x slice] [...].
    extern __shared__ __align__(16) unsigned char gemvl_smem[];
    f16* xs = reinterpret_cast<f16*>(gemvl_smem + GEMVL_RING_BYTES);
    __shared__ __align__(16) float red[8 * 128];
    const int g0 = blockIdx.y * gpb;
    const int g1 = min(G, g0 + gpb);
    const int k0 = g0 * gs;
    const int k1 = g0 < g1 ? min(K, g1 * gs) : k0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * 128 + lane * 4;
    const int r0 = k0 >> 3, rend = k1 >> 3;
    const int nb = (rend - r0 + 7) >> 3;
    const int b0 = (nb * warp) >> 3, b1 = (nb * (warp + 1)) >> 3;
    const bool active = n < N && b0 < b1 && WV_GEMV_PROBE < 2;
    const int N4 = N >> 2;
    const uint4* __restrict__ qv = reinterpret_cast<const uint4*>(qw) + (n >> 2);
#if WV_GEMV_RING == 0
    uint4 w[8];
#else
    // This thread's 16 bytes of each row of the warp's ring of WV_GEMV_RING batches.
    uint4* ring = reinterpret_cast<uint4*>(gemvl_smem) + (size_t)warp * WV_GEMV_RING * 8 * 32 + lane;
    const u32 ring_s = smem_addr(ring);
#endif
    uint2 sv = make_uint2(0u, 0u);
    u32 zv = 0u;
    // The warp's first batch, its scales and zeros before waiting for the previous kernel
    // (weights never change).
    // Batches (64 inputs) per group; the warp's first batch's group and the batches left in it.
    const int bpg = gs >> 6;
    int g = ((r0 + 8 * b0) << 3) / gs;
    int left = bpg - (((r0 + 8 * b0) << 3) - g * gs) / 64;
    // Byte offset of the weights' next packed row to load, and of one packed row.
    const char* __restrict__ qb = reinterpret_cast<const char*>(qv);
    const size_t rowb = (size_t)N4 * 16;
    size_t off = (size_t)(r0 + 8 * b0) * rowb;
    if (active) {
        sv = __ldg(reinterpret_cast<const uint2*>(scales + (size_t)g * N + n));
        zv = __ldg(reinterpret_cast<const u32*>(zeros + (size_t)g * N + n));
#if WV_GEMV_RING == 0
#pragma unroll
        for (int i = 0; i < 8; ++i, off += rowb) w[i] = __ldg(reinterpret_cast<const uint4*>(qb + off));
#endif
    }
#if WV_GEMV_RING > 0
    // The first WV_GEMV_RING - 1 batches into the ring, one commit group each (empty groups
    // past the warp's last batch keep the count uniform).
#pragma unroll
    for (int j = 0; j < WV_GEMV_RING - 1; ++j) {
        if (active && b0 + j < b1) {
#pragma unroll
            for (int i = 0; i < 8; ++i) cp_async16(ring_s + ((j * 8 + i) * 32) * 16, qb + off + (size_t)(8 * j + i) * rowb);
        }
        cp_async_commit();
    }
#endif
    pdl_wait();
    // The x slice, zero-padded to whole batches: x itself, or made from the previous kernels'
    // outputs (the fused variants below).
    const int span = nb << 6;
    const float xmax = XMAX_FOR_ROWS(WV_GEMV_ACC);
    float unscale = 1.f;
    if (WV_GEMV_PROBE == 3) {
        // Diagnostics only: no x slice.
    } else if (PRO == PRO_X) {
        unscale = stage_x(xs, x, perm, k0, k1, span, xmax);
    } else if (PRO == PRO_NORM) {
        // RMSNorm of the residual stream pin [K] with weight pin2, from the pn per-tile sums of
        // squares the producing kernel left in ss_in.
        const float r = rms_scale_from_tiles(ss_in, pn, K, eps);
        unscale = stage_x_with(xs, k0, k1, span, xmax, [&](int k) {
            const int kk = perm ? perm[k] : k;
            return f2h(pin[kk] * r * pin2[kk]);
        });
    } else if (PRO == PRO_SILU) {
        // silu(gate) * up from the gate|up product: pn slabs of stride pstride, gate at column
        // k, up at column K + k (+ bias pin2 [2K] when not NULL).
        unscale = stage_x_with(xs, k0, k1, span, xmax, [&](int k) {
            const int kk = perm ? perm[k] : k;
            float g = sum_partials(pin, pn, pstride, kk);
            float u = sum_partials(pin, pn, pstride, K + kk);
            if (pin2) {
                g += pin2[kk];
                u += pin2[K + kk];
            }
            return f2h(g / (1.f + expf(-g)) * u);
        });
    } else {
        // The attention output (the flash-decoding combine) of heads [k0/gs, k1/gs): head dim =
        // gs, no permutation; partial outputs pin [pn chunks][pn2 heads][gs] and (max, sum)
        // pairs pin2 [pn][pn2][2]. Each chunk's weight e^(m - M) / L per head goes to shared
        // memory after the x slice (pn floats per head of the block).
        float* wt = reinterpret_cast<float*>(xs + span);
        const int h0 = k0 / gs, nhs = (k1 - k0) / gs;
        for (int hl = warp; hl < nhs; hl += 8) {
            const int h = h0 + hl;
            if (pn <= 64) {
                // Each lane's (max, sum) pairs (chunks lane and lane + 32) read once, kept in
                // registers for the three steps (one round trip instead of three; more chunks
                // take the three passes below).
                float m0 = NEG_INF, l0 = 0.f, m1 = NEG_INF, l1 = 0.f;
                if (lane < pn) {
                    const float2 v = *reinterpret_cast<const float2*>(pin2 + ((size_t)lane * pn2 + h) * 2);
                    m0 = v.x;
                    l0 = v.y;
                }
                if (lane + 32 < pn) {
                    const float2 v = *reinterpret_cast<const float2*>(pin2 + ((size_t)(lane + 32) * pn2 + h) * 2);
                    m1 = v.x;
                    l1 = v.y;
                }
                const float M = warp_max(fmaxf(l0 > 0.f ? m0 : NEG_INF, l1 > 0.f ? m1 : NEG_INF));
                const float e0 = l0 > 0.f ? expf(m0 - M) : 0.f, e1 = l1 > 0.f ? expf(m1 - M) : 0.f;
                const float inv = 1.f / warp_sum(l0 * e0 + l1 * e1);
                if (lane < pn) wt[hl * pn + lane] = e0 * inv;
                if (lane + 32 < pn) wt[hl * pn + lane + 32] = e1 * inv;
                continue;
            }
            float M = NEG_INF;
            for (int c = lane; c < pn; c += 32) {
                const float* ml = pin2 + ((size_t)c * pn2 + h) * 2;
                if (ml[1] > 0.f) M = fmaxf(M, ml[0]);
            }
            M = warp_max(M);
            float L = 0.f;
            for (int c = lane; c < pn; c += 32) {
                const float* ml = pin2 + ((size_t)c * pn2 + h) * 2;
                if (ml[1] > 0.f) L += ml[1] * expf(ml[0] - M);
            }
            L = warp_sum(L);
            const float inv = 1.f / L;
            for (int c = lane; c < pn; c += 32) {
                const float* ml = pin2 + ((size_t)c * pn2 + h) * 2;
                wt[hl * pn + c] = ml[1] > 0.f ? expf(ml[0] - M) * inv : 0.f;
            }
        }
        __syncthreads();
        // Four outputs per thread at a time, the chunk loop unrolled by 4: 16 partials in
        // flight per round trip.
        float mx = 0.f;
        for (int base = threadIdx.x; base < span; base += 4 * blockDim.x) {
            float o[4] = {0.f, 0.f, 0.f, 0.f};
            const float* src[4];
            const float* w[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int i = base + j * blockDim.x;
                const int k = i < span && k0 + i < k1 ? k0 + i : k0;
                const int h = k / gs, d = k - h * gs;
                src[j] = pin + (size_t)h * gs + d;
                w[j] = wt + (h - h0) * pn;
            }
            const size_t cstride = (size_t)pn2 * gs;
#pragma unroll 4
            for (int c = 0; c < pn; ++c) {
#pragma unroll
                for (int j = 0; j < 4; ++j) o[j] += src[j][c * cstride] * w[j][c];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int i = base + j * blockDim.x;
                if (i < span) {
                    const f16 v = i < k1 - k0 ? f2h(o[j]) : f16(0);
                    xs[i] = v;
                    mx = fmaxf(mx, fabsf(h2f(v)));
                }
            }
        }
        unscale = stage_x_finish(xs, span, mx, xmax);
    }
    pdl_launch();
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (active) {
        const uint4* __restrict__ xb = reinterpret_cast<const uint4*>(xs) + 8 * b0;
        for (int b = b0; b < b1; ++b, xb += 8) {
            const bool more = b + 1 < b1;
#if WV_GEMV_RING > 0
            // Batch b + RING - 1 into the slot batch b - 1 used; then wait for batch b's group.
            {
                const int bn = b + WV_GEMV_RING - 1;
                if (bn < b1) {
                    const int sl = (bn - b0) % WV_GEMV_RING;
                    const char* src = qb + off + (size_t)(WV_GEMV_RING - 1) * 8 * rowb;
#pragma unroll
                    for (int i = 0; i < 8; ++i) cp_async16(ring_s + ((sl * 8 + i) * 32) * 16, src + (size_t)i * rowb);
                }
                cp_async_commit();
                cp_async_wait<WV_GEMV_RING - 1>();
            }
            const uint4* slot = ring + ((b - b0) % WV_GEMV_RING) * 8 * 32;
#endif
            // The next batch's scales and zeros, in flight with its weights.
            if (--left == 0) {
                ++g;
                left = bpg;
            }
            uint2 svn = sv;
            u32 zvn = zv;
            if (more && left == bpg) {
                svn = __ldg(reinterpret_cast<const uint2*>(scales + (size_t)g * N + n));
                zvn = __ldg(reinterpret_cast<const u32*>(zeros + (size_t)g * N + n));
            }
            u32 zl[4], zh[4];
            lean_zeros(zv, zl, zh);

            float f[4] = {0.f, 0.f, 0.f, 0.f};
            u32 h[4] = {0u, 0u, 0u, 0u};
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const uint4 xv = xb[i];
#if WV_GEMV_RING == 0
                const uint4 wi = w[i];
#else
                const uint4 wi = slot[i * 32];
#endif
#if WV_GEMV_PROBE
                // Diagnostics only (wrong results): the weights streamed without the arithmetic.
                h[0] ^= wi.x ^ xv.x;
                h[1] ^= wi.y;
                h[2] ^= wi.z;
                h[3] ^= wi.w;
#else
                h[0] = dot8_lean(wi.x, xv, zl[0], zh[0], h[0]);
                h[1] = dot8_lean(wi.y, xv, zl[1], zh[1], h[1]);
                h[2] = dot8_lean(wi.z, xv, zl[2], zh[2], h[2]);
                h[3] = dot8_lean(wi.w, xv, zl[3], zh[3], h[3]);
#endif
#if WV_GEMV_RING == 0
                // Row i of the next batch into the registers just used.
                if (more) w[i] = __ldg(reinterpret_cast<const uint4*>(qb + off + i * rowb));
#endif
                if ((i + 1) % WV_GEMV_ACC == 0) {
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        f[c] += lo2f(h[c]) + hi2f(h[c]);
                        h[c] = 0u;
                    }
                }
            }
            acc[0] += f[0] * lo2f(sv.x);
            acc[1] += f[1] * hi2f(sv.x);
            acc[2] += f[2] * lo2f(sv.y);
            acc[3] += f[3] * hi2f(sv.y);
            sv = svn;
            zv = zvn;
            off += 8 * rowb;
        }
    }
    *reinterpret_cast<float4*>(red + warp * 128 + lane * 4) =
        make_float4(acc[0] * unscale, acc[1] * unscale, acc[2] * unscale, acc[3] * unscale);
    __syncthreads();
    const int c = blockIdx.x * 128 + threadIdx.x;
    if (threadIdx.x < 128 && c < N) {
        float v = 0.f;
#pragma unroll
        for (int w8 = 0; w8 < 8; ++w8) v += red[w8 * 128 + threadIdx.x];
        out[(size_t)blockIdx.y * ldo + c] = v;
    }
    if (EPI == EPI_RESID) {
        // The last of the S blocks of this column tile (counted in counters[bx], which it
        // resets for the next launch) sums the S slabs (+ ebias) into the residual stream
        // resid [N] and leaves the tile's sum of squares of the new values in ss_out[bx].
        __shared__ int last;
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(counters + blockIdx.x, 1) == (int)gridDim.y - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        float v2 = 0.f;
        if (threadIdx.x < 128 && c < N) {
            float v = 0.f;
            for (int sl = 0; sl < (int)gridDim.y; ++sl) v += __ldcg(out + (size_t)sl * ldo + c);
            if (ebias) v += ebias[c];
            v += resid[c];
            resid[c] = v;
            v2 = v * v;
        }
        v2 = block_sum(v2, red);
        if (threadIdx.x == 0) {
            ss_out[blockIdx.x] = v2;
            counters[blockIdx.x] = 0;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256, WV_GEMVL_MINB) gemv_q4l(GEMVL_PARAMS) {
    gemv_q4l_body<PRO_X, EPI_NONE>(GEMVL_ARGS);
}
// q|k|v of the layers after the first: the input RMSNorm fused in.
extern "C" __global__ void __launch_bounds__(256, WV_GEMVL_MINB) gemv_q4l_norm(GEMVL_PARAMS) {
    gemv_q4l_body<PRO_NORM, EPI_NONE>(GEMVL_ARGS);
}
// o: the attention combine before, the residual add (and sums of squares) after.
extern "C" __global__ void __launch_bounds__(256, WV_GEMVL_MINB) gemv_q4l_attn_resid(GEMVL_PARAMS) {
    gemv_q4l_body<PRO_ATTN, EPI_RESID>(GEMVL_ARGS);
}
// down: SiLU(gate) * up before, the residual add after.
extern "C" __global__ void __launch_bounds__(256, WV_GEMVL_MINB) gemv_q4l_silu_resid(GEMVL_PARAMS) {
    gemv_q4l_body<PRO_SILU, EPI_RESID>(GEMVL_ARGS);
}

__device__ __forceinline__ float dot8_f16(uint4 a, uint4 b) {
    float s = lo2f(a.x) * lo2f(b.x);
    s += hi2f(a.x) * hi2f(b.x);
    s += lo2f(a.y) * lo2f(b.y);
    s += hi2f(a.y) * hi2f(b.y);
    s += lo2f(a.z) * lo2f(b.z);
    s += hi2f(a.z) * hi2f(b.z);
    s += lo2f(a.w) * lo2f(b.w);
    s += hi2f(a.w) * hi2f(b.w);
    return s;
}

// The weights (decode's lm_head: 0.33 GB for 13B, read once a step) loaded as streaming
// (ld.global.cs: evict-first in L2), so that they do not push out of L2 what the next step's
// kernels read again (gemv_mma.cu's MMA_L2_EVICT_FIRST likewise; measured level, kept for the
// same reason).
#ifndef WV_GEMV_F16_STREAM
#define WV_GEMV_F16_STREAM 1
#endif
#if WV_GEMV_F16_STREAM
#define WF16_LD(p) __ldcs(p)
#else
#define WF16_LD(p) __ldg(p)
#endif
extern "C" __global__ void __launch_bounds__(256) gemv_f16(
    const f16* __restrict__ W, const f16* __restrict__ x, float* __restrict__ out,
    int K, int N, int kc, int ldo)
{
    pdl_wait();
    pdl_launch();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * 8 + warp;
    if (n >= N) return;
    const int k0 = blockIdx.y * kc;
    const int k1 = min(K, k0 + kc);
    const f16* __restrict__ row = W + (size_t)n * K;
    float acc = 0.f;
    if ((K & 7) == 0) {
        const uint4* __restrict__ rv = reinterpret_cast<const uint4*>(row);
        const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(x);
        const int i1 = k1 >> 3;
        int i = (k0 >> 3) + lane;
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        for (; i + 96 < i1; i += 128) {
            const uint4 w0 = WF16_LD(rv + i), w1 = WF16_LD(rv + i + 32), w2 = WF16_LD(rv + i + 64), w3 = WF16_LD(rv + i + 96);
            a0 += dot8_f16(w0, __ldg(xv + i));
            a1 += dot8_f16(w1, __ldg(xv + i + 32));
            a2 += dot8_f16(w2, __ldg(xv + i + 64));
            a3 += dot8_f16(w3, __ldg(xv + i + 96));
        }
        for (; i < i1; i += 32) a0 += dot8_f16(WF16_LD(rv + i), __ldg(xv + i));
        acc = (a0 + a1) + (a2 + a3);
    } else {
        for (int k = k0 + lane; k < k1; k += 32) acc += h2f(row[k]) * h2f(x[k]);
    }
    acc = warp_sum(acc);
    if (lane == 0) out[(size_t)blockIdx.y * ldo + n] = acc;
}
