// chain_probe.cu — a standalone measurement, not part of the library: can a chain of per-product
// GEMV launches (the 13B decode step's 160 products) keep DRAM busy across their dependencies if
// the next product's blocks sit beside the current ones and stream their first weights into
// shared memory before they wait? (docs/cuda.md, "Thirteenth session".)
//
// Shape: every product is one launch of one block per SM (grid = SMs), each block taking an
// equal contiguous share of the product's units (a unit: one 128-input group of one 128-column
// tile — 16 packed rows x 512 B of weights, then 256 B of scales and 128 B of zeros, stored
// contiguously in tile-major order, 8,576 B). A block is CW consumer warps and one producer warp
// whose lane 0 copies the block's units in order into a ring of ST stages (cp.async.bulk on
// mbarriers) *without waiting for the previous product* (weights are immutable); the consumers
// wait (griddepcontrol.wait), then do gemv_q4l's arithmetic (dot8_lean, 4 columns per lane) on
// the stages in turn, reading their input per packed row from global memory (f16, as a
// previous epilogue would leave it), and add each tile segment's sums into the output with
// atomics. With a ring of <= 113 KB two blocks fit on an SM: the next product's block is
// resident while the current one runs (when the launch is triggered at entry, flag bit 0) and
// fills its ring from DRAM, so the dependency costs no streaming time if the ring holds more
// than the wait. Flag bits: 0 trigger at entry (else after the wait), 1 no arithmetic (the
// consumers only release stages), 2 no programmatic dependent launch at all, 3 two small
// kernels (RoPE / attention stand-ins: 132 blocks reading and writing 10 KB) after q|k|v,
// 4 the consumers on the tensor cores (unit_mma: int8 mma with the input as two int8 digits),
// 5 no copies (the producer releases each stage unfilled: the consumers' arithmetic alone).
// The weights are random and the results are not checked: only the time is.
//
// Build and run on the device (argv[2] picks one variant of main's list; each in its own process,
// so that a hang loses only itself):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/chain_probe \
//       tools/probe/chain_probe.cu && for v in 0 3 14; do /tmp/chain_probe 40 $v; done
// (variant 28 also with -DMMA_UNIT_MAJOR=1 and / or -DWV_PROBE_NO_SLABS: see below)
//
// H200 (2026-11-29, thirteenth session; the read of the same 6.64 GB: 1.47-1.50 ms, 4.43-4.54 TB/s):
//   no arithmetic (the chain of 160 launches streaming only): 1.523 ms (96%) with the next
//     product's block beside the current one (ring of 12, 2 per SM, trigger at entry), 1.482
//     (99.4%) with a ring of 24 at one block per SM; triggered after the wait 1.695, no PDL 1.755
//   gemv_q4l's arithmetic (dot8_lean, x in f16 from L1): 2.118 ms with 6 consumers and a ring of
//     12 (2 stages per warp), 2.29 with 8 / 8, 2.50 with 12 / 12 (one stage per warp: each waits
//     a refill), 2.84 with 16 / 16; arithmetic alone (no copies) 1.57-1.80
//   integer tensor cores (unit_mma: mma.sync m16n8k32, the input as two int8 digits): 1.772 ms
//     with 6 consumers and a ring of 12 (84.5% of the read; 89% of copy bandwidth), 1.835 with 4,
//     1.92 with 12 / 12; ring of 24 at one per SM 1.83-1.95; triggered after the wait 2.045, no
//     PDL 2.105; + 2 small kernels per layer 1.883; arithmetic alone 1.10-1.20
//   the library's gemv_q4m (variant 28: kernels/gemv_mma.cu included, wv's layout, its slabs;
//     fourteenth session): 2.388-2.395 ms at 6 x 24 (one per SM) against 1.948 for variant 18,
//     the probe's mma chain at the same shape; no PDL (29) 2.490. Built with
//     -DMMA_UNIT_MAJOR=1 (then a measurement hook, now gemv_mma.cu's unit-major mode: the same
//     bytes read as whole contiguous units, two bulk copies each, as variant 18 reads them): 1.991 ms; with
//     -DWV_PROBE_NO_SLABS (no end-of-block reduction or slab writes) 2.262; both 1.927 (variant
//     18 in the same call 1.930). So the weight layout is most of the gap, the slabs the rest.
// against gemv_q4l's queued GEMVs in the library (bench_kernels): 51.9 us per layer, 2.08 ms for
// 40. So a chain of per-product launches can keep DRAM busy across its dependencies when the
// next product's blocks stream into shared memory before they wait, and the tensor cores make
// the arithmetic cheap enough. What the library made of it: kernels/gemv_mma.cu (docs/cuda.md).
#ifndef __CUDACC_RTC__
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <cuda_runtime.h>
#include "../../kernels/common.cuh"  // also its mbarrier helpers and mma_u8s8
#include "../../kernels/gemv_mma.cu"  // the library's gemv_q4m, for variant 28 (side by side)
#include "check.h"
#else
typedef unsigned char uint8_t;
#endif


constexpr int UNIT_ROWS = 16;                        // packed rows per unit (128 inputs)
constexpr int QW_BYTES = UNIT_ROWS * 128 * 4;        // 8,192
constexpr int UNIT_BYTES = QW_BYTES + 256 + 128;     // 8,576 (a multiple of 16)

__device__ __forceinline__ void bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
}

// Operand roles in the mma consumer (flag bit 4; common.cuh's mma_u8s8): A = the weights (rows
// = 16 output columns, unsigned nibbles as u8), B = the input as two int8 digits (column 0 the
// high digit, column 1 the low one: x ~ xs * (hi + lo / 256)), so each t = 0 lane (lanes 0, 4,
// ..., 28) gets the high and low sums of two output columns in c0, c1 (row lane / 4) and c2, c3
// (row lane / 4 + 8).
// One unit (a 128-input group of a 128-column tile) on the tensor cores. Weights in the stage:
// [m tile (8)][half (2)][lane (32)][4 words]; for (m, k step s) lane l's words 2s + h of half
// (s / 2)... simply: the lane's 8 words for tile m are (s = 0..3) x (column 16m + l/4, then + 8),
// each word the 8 nibbles of rows 32s + 4(l%4) + {0..3} (even nibbles) and + 16 (odd nibbles).
// x digits per group: [digit (2)][t (4)][s (4)][2 words] (8 words per lane of lanes 0..7), and
// (xs, X = sum of hi + lo / 256) per group. macc[2m + e]: column 16m + l/4 + 8e (t = 0 lanes).
__device__ __forceinline__ void unit_mma(const uint8_t* st, const u32* __restrict__ xq, const float2* __restrict__ xsum,
                                         int g, int lane, float (&macc)[16]) {
    uint4 xa = make_uint4(0u, 0u, 0u, 0u), xb = xa;
    if (lane < 8) {
        const uint4* p = reinterpret_cast<const uint4*>(xq + (size_t)g * 64 + lane * 8);
        xa = __ldg(p);
        xb = __ldg(p + 1);
    }
    const float2 xs = __ldg(xsum + g);
    const u32 bx[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
    const int row = lane >> 2;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
        const uint4 w0 = *reinterpret_cast<const uint4*>(st + ((m * 2 + 0) * 32 + lane) * 16);
        const uint4 w1 = *reinterpret_cast<const uint4*>(st + ((m * 2 + 1) * 32 + lane) * 16);
        const u32 wd[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
        int c[4] = {0, 0, 0, 0};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const u32 wa = wd[2 * k], wb = wd[2 * k + 1];
            mma_u8s8(c, wa & 0x0f0f0f0fu, wb & 0x0f0f0f0fu, (wa >> 4) & 0x0f0f0f0fu, (wb >> 4) & 0x0f0f0f0fu,
                     bx[2 * k], bx[2 * k + 1]);
        }
        const int n0 = 16 * m + row;
        const float s0 = h2f(*reinterpret_cast<const f16*>(st + QW_BYTES + 2 * n0));
        const float s1 = h2f(*reinterpret_cast<const f16*>(st + QW_BYTES + 2 * (n0 + 8)));
        const float z0 = (float)st[QW_BYTES + 256 + n0], z1 = (float)st[QW_BYTES + 256 + n0 + 8];
        macc[2 * m] += s0 * xs.x * (fmaf((float)c[1], 1.f / 256.f, (float)c[0]) - z0 * xs.y);
        macc[2 * m + 1] += s1 * xs.x * (fmaf((float)c[3], 1.f / 256.f, (float)c[2]) - z1 * xs.y);
    }
}

// One product: out[N] += x[K] . W for the block's units [u0, u1) of U = (N/128) * G (G = K/128).
template <int CW, bool MMA>
__global__ void __launch_bounds__(32 * (CW + 1), 2)
    chain_gemv(const uint8_t* __restrict__ w, int G, int U, const f16* __restrict__ x, const u32* __restrict__ xq,
               const float2* __restrict__ xsum, float* out, int ST, int flags) {
    extern __shared__ __align__(128) uint8_t smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int u0 = (int)((long long)U * blockIdx.x / gridDim.x), u1 = (int)((long long)U * (blockIdx.x + 1) / gridDim.x);
    const int n = u1 - u0;
    const u32 ring = smem_addr(smem);
    const u32 full = ring + ST * UNIT_BYTES, empty = full + 8 * ST;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; ++s) {
            mbar_init(full + 8 * s, 1);
            mbar_init(empty + 8 * s, 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (flags & 1) pdl_launch();
    if (warp == CW) {
        // The producer: never waits for the previous product.
        if (lane == 0) {
            for (int i = 0; i < n; ++i) {
                const int s = i % ST;
                if (i >= ST) mbar_wait(empty + 8 * s, ((i / ST) - 1) & 1);
                if (flags & 32) {
                    mbar_arrive(full + 8 * s);  // no copy: the consumers' arithmetic alone
                } else {
                    mbar_expect_tx(full + 8 * s, UNIT_BYTES);
                    bulk_copy(ring + s * UNIT_BYTES, w + (size_t)(u0 + i) * UNIT_BYTES, UNIT_BYTES, full + 8 * s);
                }
            }
        }
        if (!(flags & 1)) {
            pdl_wait();
            pdl_launch();
        }
        return;
    }
    pdl_wait();
    if (!(flags & 1)) pdl_launch();
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float macc[16];
#pragma unroll
    for (int c = 0; c < 16; ++c) macc[c] = 0.f;
    int cur = -1;
    auto flush_mma = [&]() {
        if ((lane & 3) == 0)
#pragma unroll
            for (int c = 0; c < 16; ++c) atomicAdd(out + cur * 128 + 16 * (c >> 1) + (lane >> 2) + 8 * (c & 1), macc[c]);
#pragma unroll
        for (int c = 0; c < 16; ++c) macc[c] = 0.f;
    };
    for (int i = warp; i < n; i += CW) {
        const int s = i % ST;
        mbar_wait(full + 8 * s, (i / ST) & 1);
        const int u = u0 + i, t = u / G, g = u - t * G;
        if (MMA) {
            if (t != cur) {
                if (cur >= 0) flush_mma();
                cur = t;
            }
            unit_mma(smem + s * UNIT_BYTES, xq, xsum, g, lane, macc);
        } else if (!(flags & 2)) {
            if (t != cur) {
                if (cur >= 0)
#pragma unroll
                    for (int c = 0; c < 4; ++c) atomicAdd(out + cur * 128 + 4 * lane + c, acc[c]);
                cur = t;
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[c] = 0.f;
            }
            const uint8_t* st = smem + s * UNIT_BYTES;
            const uint2 sc = *reinterpret_cast<const uint2*>(st + QW_BYTES + 8 * lane);
            const u32 zv = *reinterpret_cast<const u32*>(st + QW_BYTES + 256 + 4 * lane);
            u32 zl[4], zh[4];
            lean_zeros(zv & 0x3f3f3f3fu, zl, zh);
            const uint4* xg = reinterpret_cast<const uint4*>(x + (size_t)g * 128);
            float f[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int r0 = 0; r0 < UNIT_ROWS; r0 += 4) {
                u32 h[4] = {0u, 0u, 0u, 0u};
#pragma unroll
                for (int r = r0; r < r0 + 4; ++r) {
                    const uint4 wv = *reinterpret_cast<const uint4*>(st + r * 512 + 16 * lane);
                    const uint4 xv = __ldg(xg + r);
                    h[0] = dot8_lean(wv.x, xv, zl[0], zh[0], h[0]);
                    h[1] = dot8_lean(wv.y, xv, zl[1], zh[1], h[1]);
                    h[2] = dot8_lean(wv.z, xv, zl[2], zh[2], h[2]);
                    h[3] = dot8_lean(wv.w, xv, zl[3], zh[3], h[3]);
                }
#pragma unroll
                for (int c = 0; c < 4; ++c) f[c] += lo2f(h[c]) + hi2f(h[c]);
            }
            acc[0] += f[0] * lo2f(sc.x);
            acc[1] += f[1] * hi2f(sc.x);
            acc[2] += f[2] * lo2f(sc.y);
            acc[3] += f[3] * hi2f(sc.y);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + 8 * s);
    }
    if (cur >= 0) {
        if (MMA)
            flush_mma();
        else
#pragma unroll
            for (int c = 0; c < 4; ++c) atomicAdd(out + cur * 128 + 4 * lane + c, acc[c]);
    }
}

// A stand-in for the small kernels between products (RoPE, attention): reads and writes 10 KB.
__global__ void small_kernel(const float* __restrict__ in, float* out, int flags) {
    if (flags & 1) pdl_launch();
    pdl_wait();
    if (!(flags & 1)) pdl_launch();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < 5120 / 2) out[i] = in[i] * 0.5f + 1.f;
}

__global__ void fill(u32* p, size_t n, u32 seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        u32 v = (u32)i * 2654435761u ^ seed;
        v ^= v >> 15;
        v *= 2246822519u;
        v ^= v >> 13;
        p[i] = v;
    }
}

// f16 values in (-1, -0.5] or [0.5, 1).
__global__ void fill_x(f16* p, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = (f16)(0x3800u | ((i * 37u) & 0x3ffu) | ((i & 1) << 15));
}

__global__ void read_all(const uint4* __restrict__ p, size_t n, u32* sink) {
    u32 a = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldcs(p + i);
        a ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (a == 0x12345678u) *sink = a;
}

#ifdef __CUDACC_RTC__
template __global__ void chain_gemv<12, true>(const uint8_t*, int, int, const f16*, const u32*, const float2*, float*, int, int);
#else
struct Shape {
    int K, N;
};

// gemv_mma.cu's tile_blocks on the host (the slabs a tile has).
static int unit_block_host(long long u, int P, long long U) { return (int)(((u + 1) * P - 1) / U); }
static int tile_blocks_host(int t, int KB, int P, long long U) {
    return unit_block_host((long long)(t + 1) * KB - 1, P, U) - unit_block_host((long long)t * KB, P, U) + 1;
}

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IONBF, 0);
    const int layers = argc > 1 ? atoi(argv[1]) : 40;
    int dev = 0, sms = 0;
    CK(cudaSetDevice(dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const Shape shapes[4] = {{5120, 15360}, {5120, 5120}, {5120, 27648}, {13824, 5120}};
    size_t units_layer = 0;
    for (const Shape& s : shapes) units_layer += (size_t)(s.K / 128) * (s.N / 128);
    const size_t bytes = units_layer * layers * UNIT_BYTES;
    uint8_t* w;
    CK(cudaMalloc(&w, bytes));
    fill<<<4 * sms, 256>>>(reinterpret_cast<u32*>(w), bytes / 4, 12345u);
    f16* x;
    float *out, *small_buf;
    u32* sink;
    CK(cudaMalloc(&x, 13824 * 2));
    u32* xq;  // two int8 digits per input, fragment order: 64 words per group
    float* xsum;  // (xs, X) per group
    CK(cudaMalloc(&xq, 108 * 64 * 4));
    CK(cudaMalloc(&xsum, 108 * 2 * 4));
    fill<<<8, 256>>>(xq, 108 * 64, 777u);
    {
        std::vector<float> h(216);
        for (int i = 0; i < 216; ++i) h[i] = i % 2 ? 3.f : 0.01f;
        CK(cudaMemcpy(xsum, h.data(), 216 * 4, cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&out, 27648 * 4));
    CK(cudaMalloc(&small_buf, 2 * 5120 * 4));
    CK(cudaMalloc(&sink, 4));
    CK(cudaMemset(out, 0, 27648 * 4));
    CK(cudaMemset(small_buf, 0, 2 * 5120 * 4));
    fill_x<<<(13824 + 255) / 256, 256>>>(x, 13824);
    CK(cudaDeviceSynchronize());
    printf("SMs %d, %d layers, %.3f GB of weights\n", sms, layers, bytes / 1e9);

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));

    // Read bandwidth of the same bytes.
    float ms = 0.f;
    for (int rep = 0; rep < 2; ++rep) {
        CK(cudaEventRecord(e0, st));
        read_all<<<sms * 8, 512, 0, st>>>(reinterpret_cast<const uint4*>(w), bytes / 16, sink);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
    }
    const double read_ms = ms;
    printf("read of all weights: %.3f ms (%.3f TB/s)\n", ms, bytes / (ms * 1e-3) / 1e12);

    // A warp takes units warp, warp + CW, ...: the ring must be a multiple of CW, so that no
    // warp waits on a stage's phase two ahead of the one it is in (parity waits alias).
    auto run = [&](const char* label, int cw, int ring, int flags) {
        if (ring % cw != 0) {
            printf("%s: ring %d is not a multiple of %d consumers\n", label, ring, cw);
            return;
        }
        const size_t smem = (size_t)ring * UNIT_BYTES + 16 * ring;
        typedef void (*Kern)(const uint8_t*, int, int, const f16*, const u32*, const float2*, float*, int, int);
        const bool mma = flags & 16;
        const Kern k = cw == 3    ? (mma ? chain_gemv<3, true> : chain_gemv<3, false>)
                       : cw == 4  ? (mma ? chain_gemv<4, true> : chain_gemv<4, false>)
                       : cw == 6  ? (mma ? chain_gemv<6, true> : chain_gemv<6, false>)
                       : cw == 8  ? (mma ? chain_gemv<8, true> : chain_gemv<8, false>)
                       : cw == 12 ? (mma ? chain_gemv<12, true> : chain_gemv<12, false>)
                                  : (mma ? chain_gemv<16, true> : chain_gemv<16, false>);
        CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        int occ = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, 32 * (cw + 1), smem));
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = (flags & 4) ? 0 : 1;
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        const uint8_t* p = w;
        for (int l = 0; l < layers; ++l)
            for (int j = 0; j < 4; ++j) {
                const Shape s = shapes[j];
                const int G = s.K / 128, U = G * (s.N / 128);
                cudaLaunchConfig_t cfg = {};
                cfg.gridDim = dim3(sms);
                cfg.blockDim = dim3(32 * (cw + 1));
                cfg.dynamicSmemBytes = smem;
                cfg.stream = st;
                cfg.attrs = attr;
                cfg.numAttrs = 1;
                CK(cudaLaunchKernelEx(&cfg, k, p, G, U, (const f16*)x, (const u32*)xq, (const float2*)xsum, out, ring, flags));
                p += (size_t)U * UNIT_BYTES;
                if (j == 0 && (flags & 8))
                    for (int q = 0; q < 2; ++q) {
                        cudaLaunchConfig_t c2 = {};
                        c2.gridDim = dim3(sms);
                        c2.blockDim = dim3(32);
                        c2.stream = st;
                        c2.attrs = attr;
                        c2.numAttrs = 1;
                        CK(cudaLaunchKernelEx(&c2, small_kernel, (const float*)(small_buf + 5120 * q),
                                              small_buf + 5120 * (1 - q), flags));
                    }
            }
        CK(cudaStreamEndCapture(st, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        fprintf(stderr, "[%s: graph made]\n", label);
        for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(exec, st));
        CK(cudaStreamSynchronize(st));
        const int reps = 20;
        CK(cudaEventRecord(e0, st));
        for (int i = 0; i < reps; ++i) CK(cudaGraphLaunch(exec, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ms /= reps;
        printf("%-44s CW %2d ring %2d (%5.1f KB, %d/SM) flags %2d: %.3f ms per step, %.1f%% of the read\n", label, cw,
               ring, smem / 1024.0, occ, flags, ms, 100.0 * read_ms / ms);
        CK(cudaGraphExecDestroy(exec));
        CK(cudaGraphDestroy(graph));
    };
    // The library's gemv_q4m (kernels/gemv_mma.cu, MW x MST) on the same bytes carved into wv's
    // layout per product (qw [K/8][N], scales [G][N], zeros [G][N]: U * UNIT_BYTES in all), with
    // its slabs (S of them, as gemv_mma.rs plans) and the same digits: the library's kernel in
    // the probe's chain, nothing else between the products.
    auto run_lib = [&](const char* label, bool pdl) {
        const size_t smem = MMA_SMEM;
        CK(cudaFuncSetAttribute(gemv_q4m, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        float* slabs;
        CK(cudaMalloc(&slabs, 8 * 27648 * 4));
        CK(cudaMemset(slabs, 0, 8 * 27648 * 4));
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        const uint8_t* p = w;
        for (int l = 0; l < layers; ++l)
            for (int j = 0; j < 4; ++j) {
                const Shape s = shapes[j];
                const int G = s.K / 128, U = G * (s.N / 128), P = U < sms ? U : sms;
                int S = 1;
                for (int t = 0; t < s.N / 128; ++t) {
                    const int n = tile_blocks_host(t, G, P, U);
                    S = n > S ? n : S;
                }
                const u32* qw = reinterpret_cast<const u32*>(p);
                const f16* sc = reinterpret_cast<const f16*>(p + (size_t)s.K / 2 * s.N);
                const u8* zr = reinterpret_cast<const u8*>(p + (size_t)s.K / 2 * s.N + (size_t)G * s.N * 2);
                cudaLaunchConfig_t cfg = {};
                cfg.gridDim = dim3(P);
                cfg.blockDim = dim3(32 * (MW + 1));
                cfg.dynamicSmemBytes = smem;
                cfg.stream = st;
                cfg.attrs = attr;
                cfg.numAttrs = 1;
                CK(cudaLaunchKernelEx(&cfg, gemv_q4m, qw, sc, zr, (const u32*)xq, (const float2*)xsum, slabs, s.K, s.N,
                                      128, s.N, S, (int*)nullptr, (float*)nullptr, (const float*)nullptr,
                                      (float*)nullptr, (const float*)nullptr, (u32*)nullptr, 0.f, (float*)nullptr,
                                      (f16*)nullptr, (f16*)nullptr, (const float*)nullptr, 0, 0, (const int*)nullptr, 0,
                                      0, (const u8*)nullptr, 0, 0, 0, 0, (unsigned long long*)nullptr));
                p += (size_t)U * UNIT_BYTES;
            }
        CK(cudaStreamEndCapture(st, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(exec, st));
        CK(cudaStreamSynchronize(st));
        const int reps = 20;
        CK(cudaEventRecord(e0, st));
        for (int i = 0; i < reps; ++i) CK(cudaGraphLaunch(exec, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ms /= reps;
        printf("%-44s MW %d MST %d (%5.1f KB): %.3f ms per step, %.1f%% of the read\n", label, MW, MST, smem / 1024.0, ms,
               100.0 * read_ms / ms);
    };
    // argv[2]: the variant to run (each in its own process, so a hang loses only itself).
    const int v = argc > 2 ? atoi(argv[2]) : 0;
    switch (v) {
        case 0: run("prefetch beside the current product", 12, 12, 1); break;
        case 1: run("same, trigger after the wait", 12, 12, 0); break;
        case 2: run("same, no PDL", 12, 12, 4); break;
        case 3: run("prefetch, no arithmetic", 12, 12, 1 | 2); break;
        case 4: run("prefetch, + 2 small kernels per layer", 12, 12, 1 | 8); break;
        case 5: run("prefetch, 8 consumers", 8, 8, 1); break;
        case 6: run("8 consumers, trigger after the wait", 8, 8, 0); break;
        case 7: run("prefetch, 6 consumers, ring of 12", 6, 12, 1); break;
        case 8: run("after the wait, no arithmetic", 12, 12, 2); break;
        case 9: run("ring of 24 (1/SM), trigger at entry", 12, 24, 1); break;
        case 10: run("ring of 24 (1/SM), no arithmetic", 12, 24, 1 | 2); break;
        case 11: run("ring of 16 (1/SM), 16 consumers", 16, 16, 1); break;
        case 12: run("no PDL, no arithmetic", 12, 12, 4 | 2); break;
        case 13: run("mma consumers", 12, 12, 1 | 16); break;
        case 14: run("mma consumers", 6, 12, 1 | 16); break;
        case 15: run("mma consumers", 4, 12, 1 | 16); break;
        case 16: run("mma consumers", 8, 8, 1 | 16); break;
        case 17: run("mma consumers, trigger after the wait", 6, 12, 16); break;
        case 18: run("mma consumers, ring of 24 (1/SM)", 6, 24, 1 | 16); break;
        case 19: run("mma consumers, ring of 24 (1/SM)", 12, 24, 1 | 16); break;
        case 20: run("mma consumers, + 2 small kernels per layer", 6, 12, 1 | 8 | 16); break;
        case 21: run("lean consumers", 4, 12, 1); break;
        case 22: run("mma consumers, no PDL", 6, 12, 4 | 16); break;
        case 23: run("mma consumers", 3, 12, 1 | 16); break;
        case 24: run("mma consumers, no copies", 6, 12, 1 | 16 | 32); break;
        case 25: run("lean consumers, no copies", 6, 12, 1 | 32); break;
        case 26: run("mma consumers, no copies", 12, 12, 1 | 16 | 32); break;
        case 27: run("lean consumers, no copies", 12, 12, 1 | 32); break;
        case 28: run_lib("library gemv_q4m (kernels/gemv_mma.cu)", true); break;
        case 29: run_lib("library gemv_q4m, no PDL", false); break;
        default: break;
    }
    CK(cudaDeviceSynchronize());
    printf("done\n");
    return 0;
}
#endif
