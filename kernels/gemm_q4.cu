// gemm_q4.cu — prefill products straight from the 4-bit weights, on Hopper's warpgroup tensor cores
// (wgmma; compiled for sm_90a only, and only loaded on compute capability 9.0 GPUs). Two kernels
// of one product: gemm_q4_tma (below; tiles by the Tensor Memory Accelerator, stages handed over
// by mbarriers: the host's choice where the tensors allow it) and gemm_q4_wgmma (tiles by
// per-thread cp.async, one block barrier per stage: everywhere else).
//
// gemm_q4_wgmma: Y[t, n] (f32, row stride ldo) = sum_k X[t, k] W[k, n] for t < T, n < N, where X is
//   f16 [T, K] row-major and W is a 4-bit matrix in wv's repacked layout (see gemv.cu: qw u32
//   [K/8, N] with nibble order POS, scales f16 [G, N], zeros u8 [G, N]) without an act-order
//   permutation. Computed as Yᵀ = Wᵀ Xᵀ with wgmma.m64n128k16 (f16 in, f32 accumulate):
//     A (64 output features x 16 inputs) is W, dequantised into registers: per packed word,
//       (w >> 4c) & 0x000f000f | 0x6400 gives inputs 2c, 2c+1 as f16 1024 + q; minus 1024 + z
//       (exact) times the scale (one f16 rounding: the value dequant_q4 writes);
//     B (16 inputs x 128 tokens) is X, from shared memory: each token's 64 inputs of a stage are
//       one 128-byte row, rows in 1 KiB atoms of 8 with the 128-byte swizzle (16-byte chunk c of
//       row r at c ^ (r % 8)), which the wgmma descriptor names (SBO 1 KiB, start + 32 B per k16);
//     D: 64 f32 accumulators per thread (features 16w + g and +8, tokens 8j + 2c and +1).
// Launch: block QG_THREADS = 256 threads = QG_WG = 2 warpgroups, each 64 of the block's 128
//   features; the block's 128 tokens are shared; two blocks per SM (one block of 4 warpgroups
//   per SM measured slower: 0.83 against 0.72 ms per 13B layer at 512 tokens).
//   grid = (ceil(T / 128), ceil(N / QG_FEAT), S): token tiles fastest, so the blocks that read
//   one weight tile run together and DRAM sees each weight once; S > 1 splits K (whole stages)
//   into S slabs of Y, ystride floats apart (for grids under one full wave).
//   Dynamic shared memory QG_SMEM bytes: QG_STAGES stages of 64 inputs (X tile 16 KiB, W tile
//   8 packed rows x 128 features = 4 KiB, 128 scales, 128 zeros), filled by cp.async
//   QG_STAGES - 2 stages ahead (each thread's share of a stage's copies is a fixed set of
//   addresses advanced by pointer increments); one barrier per stage, a stage's products in
//   flight until the next stage's A is about to be dequantised.
// Needs K % 64 == 0, gs % 64 == 0 (one group per stage), N % 4 == 0, X rows 16-byte aligned
//   (K % 8 == 0). The host runs either kernel for passes of at most 512 tokens (gemm_q4.rs,
//   GEMM_Q4_MAX_T): for 1,024-token passes dequantisation + cuBLAS (~620 TFLOP/s) is faster.
// H100, one 13B layer's four products at 512 tokens: gemm_q4_wgmma 0.64 ms (~505 TFLOP/s),
//   gemm_q4_tma 0.58 ms (~560), cuBLAS on dequantised weights 0.51 ms + 0.31 of dequantisation.
#define QG_WG 2                       // warpgroups per block, each 64 features
#define QG_FEAT (64 * QG_WG)          // features per block
#define QG_THREADS (128 * QG_WG)
#define QG_STAGES 4
#define QG_X_BYTES 16384              // 128 tokens x 64 inputs, f16
#define QG_W_BYTES (8 * QG_FEAT * 4)  // 8 packed rows x QG_FEAT features, u32
#define QG_S_BYTES (QG_FEAT * 2)
#define QG_Z_BYTES QG_FEAT
#define QG_SMEM (QG_STAGES * (QG_X_BYTES + QG_W_BYTES + QG_S_BYTES + QG_Z_BYTES) + 1024)

// cp.async of `bytes` (4, 8 or 16) that writes zeros when !valid (src is then not read).
__device__ __forceinline__ void cp_async_z16(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_z8(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(dst), "l"(src), "r"(valid ? 8 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_z4(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}

// A wgmma shared-memory descriptor: K-major, 128-byte swizzle, 8-row groups 1 KiB apart.
__device__ __forceinline__ unsigned long long qg_desc(u32 saddr) {
    unsigned long long d = (unsigned long long)((saddr & 0x3ffffu) >> 4);
    d |= 1ull << 16;                 // leading byte offset 16 B (unused for swizzled K-major)
    d |= (unsigned long long)(1024 >> 4) << 32;  // stride byte offset: 8 rows x 128 B
    d |= 1ull << 62;                 // 128-byte swizzle
    return d;
}

// d = a * b, lane-wise on f16x2 (rounded once).
__device__ __forceinline__ u32 hmul2(u32 a, u32 b) {
    u32 d;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

// Four f16 pairs of W (rows 2c, 2c+1 of packed words) dequantised: (q - z) * s.
__device__ __forceinline__ u32 qg_dq(u32 w, int c, u32 zl, u32 s2) {
    return hmul2(hsub2(and_or(w >> (4 * c), 0x000f000fu, 0x64006400u), zl), s2);
}

// d += A (registers a: this thread's fragment of 64 x 16) x B (16 x TT tokens from the
// descriptor), for token tiles TT = 128 / 64 / 32 (TT / 2 accumulators per thread).
__device__ __forceinline__ void qg_wgmma(float (&d)[64], const u32 (&a)[4], unsigned long long desc) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc)
        : "memory");
}
__device__ __forceinline__ void qg_wgmma(float (&d)[32], const u32 (&a)[4], unsigned long long desc) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc)
        : "memory");
}
__device__ __forceinline__ void qg_wgmma(float (&d)[16], const u32 (&a)[4], unsigned long long desc) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
        "{%16, %17, %18, %19}, %20, 1, 1, 1, 0;"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc)
        : "memory");
}

// Keep the compiler from moving accumulator registers across the asynchronous products.
template <int NA>
__device__ __forceinline__ void qg_fence_acc(float (&d)[NA]) {
#pragma unroll
    for (int i = 0; i < NA; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The stage ring in dynamic shared memory of both kernels, 1 KiB aligned (the X tiles' swizzle
// pattern is on address bits 4..9): each part for all `stages` slots together — X [128 tokens]
// [128 B], W [8 rows][QG_FEAT] u32, scales [QG_FEAT] f16, zeros [QG_FEAT] u8 — as shared-space
// addresses (*_s) and, for the parts threads read, generic pointers; end_s is past the zeros.
struct QgRing {
    u32 xs_s, ws_s, ss_s, zs_s, end_s;
    const unsigned char *ws, *ss, *zs;
};
__device__ __forceinline__ QgRing qg_ring(unsigned char* raw, int stages, int x_bytes = QG_X_BYTES) {
    QgRing r;
    const u32 raw_s = smem_addr(raw);
    r.xs_s = (raw_s + 1023u) & ~1023u;
    r.ws_s = r.xs_s + stages * x_bytes;
    r.ss_s = r.ws_s + stages * QG_W_BYTES;
    r.zs_s = r.ss_s + stages * QG_S_BYTES;
    r.end_s = r.zs_s + stages * QG_Z_BYTES;
    r.ws = raw + (r.ws_s - raw_s);
    r.ss = raw + (r.ss_s - raw_s);
    r.zs = raw + (r.zs_s - raw_s);
    return r;
}

// A consumer thread's place in the A fragments: its two features (block-local), rows 16w + g
// and + 8 of its warpgroup's 64 (warp w of the warpgroup, g = lane / 4), and its quad lane c4.
__device__ __forceinline__ void qg_consumer(int tid, int& fa, int& fb, int& c4) {
    const int wg = tid >> 7, w = (tid >> 5) & 3, lane = tid & 31;
    fa = wg * 64 + w * 16 + (lane >> 2);
    fb = fa + 8;
    c4 = lane & 3;
}

// Split-K: block row blockIdx.z of gridDim.z sums stages [kb0, kb1) of the K / 64 into its slab.
__device__ __forceinline__ void qg_slab_range(int K, int& kb0, int& kb1) {
    const int nk_all = K >> 6;
    kb0 = (int)((long long)nk_all * blockIdx.z / gridDim.z);
    kb1 = (int)((long long)nk_all * (blockIdx.z + 1) / gridDim.z);
}

// One stage's products for this thread's warpgroup: A dequantised k16 step by k16 step into
// `a` from the stage's weight tile wt [8 rows][QG_FEAT], scales st and zeros zt (features fa,
// fb; nibble pair c4), each step's product issued while the next step is dequantised (a fence
// orders the new registers before the product that reads them); B is the stage's X tile at
// shared address xb. One commit group per stage.
template <int NA>
__device__ __forceinline__ void qg_stage_products(float (&d)[NA], u32 (&a)[4][4], const u32* wt,
                                                  const f16* st, const u8* zt, u32 xb, int fa,
                                                  int fb, int c4) {
    const u32 sa = (u32)st[fa] * 0x10001u, sb = (u32)st[fb] * 0x10001u;
    const u32 za = (0x6400u + zt[fa]) * 0x10001u, zb = (0x6400u + zt[fb]) * 0x10001u;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const u32 wa0 = wt[(2 * j) * QG_FEAT + fa], wa1 = wt[(2 * j + 1) * QG_FEAT + fa];
        const u32 wb0 = wt[(2 * j) * QG_FEAT + fb], wb1 = wt[(2 * j + 1) * QG_FEAT + fb];
        a[j][0] = qg_dq(wa0, c4, za, sa);
        a[j][1] = qg_dq(wb0, c4, zb, sb);
        a[j][2] = qg_dq(wa1, c4, za, sa);
        a[j][3] = qg_dq(wb1, c4, zb, sb);
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
        qg_wgmma(d, a[j], qg_desc(xb + j * 32));
    }
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

// The accumulators into Y: d[4j + e] is feature n0 + (e < 2 ? fa : fb), token t0 + 8j + 2 c4 +
// (e & 1); rows t >= T and columns n >= N are not written.
template <int NA>
__device__ __forceinline__ void qg_store(const float (&d)[NA], float* __restrict__ Y, int t0,
                                         int n0, int fa, int fb, int c4, int T, int N, int ldo) {
    const int na = n0 + fa, nb = n0 + fb;
#pragma unroll
    for (int j = 0; j < NA / 4; ++j) {
        const int t = t0 + 8 * j + 2 * c4;
        if (t < T) {
            if (na < N) Y[(size_t)t * ldo + na] = d[4 * j];
            if (nb < N) Y[(size_t)t * ldo + nb] = d[4 * j + 2];
        }
        if (t + 1 < T) {
            if (na < N) Y[(size_t)(t + 1) * ldo + na] = d[4 * j + 1];
            if (nb < N) Y[(size_t)(t + 1) * ldo + nb] = d[4 * j + 3];
        }
    }
}

extern "C" __global__ void __launch_bounds__(QG_THREADS, 2) gemm_q4_wgmma(
    const u32* __restrict__ qw, const f16* __restrict__ scales, const u8* __restrict__ zeros,
    const f16* __restrict__ X, float* __restrict__ Y, int T, int K, int N, int gs, int ldo,
    long long ystride)
{
    extern __shared__ unsigned char qg_raw[];
    const QgRing ring = qg_ring(qg_raw, QG_STAGES);
    const u32 xs_s = ring.xs_s, ws_s = ring.ws_s, ss_s = ring.ss_s, zs_s = ring.zs_s;
    const unsigned char *ws = ring.ws, *ss = ring.ss, *zs = ring.zs;

    const int tid = threadIdx.x;
    const int t0 = blockIdx.x * 128, n0 = blockIdx.y * QG_FEAT;
    // Split-K: block row z sums stages [kb0, kb1) into slab z of Y (ystride floats apart).
    int kb0, kb1;
    qg_slab_range(K, kb0, kb1);
    Y += (size_t)blockIdx.z * ystride;

    // Each thread's share of a stage's copies, fixed for the block: only the inputs move (64 per
    // stage), so a stage costs a few pointer increments. (Computing every address from kb cost
    // ~285 instructions per thread per stage, more issue slots than the tensor cores' work.)
    //   X: chunk xc (16 B) of token rows t0 + xr + 32 i, i < 4 (1,024 chunks per stage);
    //   W: chunk wc of packed row wr of the stage's 8 (QG_FEAT / 4 chunks per row);
    //   warp 0 the stage's 128 scales (8 B each), warp 1 its 128 zeros (4 B each).
    const int xr = tid >> 3, xc = tid & 7;
    const u32 xdst = xr * 128 + ((xc ^ (xr & 7)) << 4);
    int xok = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) xok |= (t0 + xr + 32 * i < T) << i;
    const size_t xrows32 = (size_t)32 * K;
    const f16* xsrc = X + (size_t)(t0 + xr < T ? t0 + xr : 0) * K + xc * 8 + (kb0 << 6);
    const int wr = tid / (QG_FEAT / 4), wc = tid % (QG_FEAT / 4);
    const u32 wdst = wr * (QG_FEAT * 4) + wc * 16;
    const bool wok = n0 + 4 * wc < N;
    const size_t wstep = (size_t)8 * N;
    const u32* wsrc = qw + (size_t)(kb0 * 8 + wr) * N + (wok ? n0 + 4 * wc : 0);
    const int sz = tid & 31;  // warp 0: scales, warp 1: zeros, 4 features each
    const bool szok = n0 + 4 * sz < N;
    const int spg = gs >> 6;  // stages per group
    int gph = (kb0 << 6) % gs >> 6;
    const size_t g0 = (size_t)((kb0 << 6) / gs) * N + (szok ? n0 + 4 * sz : 0);
    const unsigned char* szsrc = tid < 32 ? (const unsigned char*)(scales + g0) : zeros + g0;
    const size_t szstep = tid < 32 ? 2 * (size_t)N : (size_t)N;
    int ld = kb0;  // the next stage to request
    // Request stage ld (inputs [64 ld, 64 ld + 64)) into slot (ld - kb0) % STAGES.
    auto load_next = [&]() {
        if (ld < kb1) {
            const int sl = (ld - kb0) & (QG_STAGES - 1);
            const u32 xd = xs_s + sl * QG_X_BYTES + xdst;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const bool ok = (xok >> i) & 1;
                cp_async_z16(xd + 4096 * i, ok ? xsrc + i * xrows32 : X, ok);
            }
            cp_async_z16(ws_s + sl * QG_W_BYTES + wdst, wsrc, wok);
            if (tid < 32) cp_async_z8(ss_s + sl * QG_S_BYTES + sz * 8, szsrc, szok);
            else if (tid < 64) cp_async_z4(zs_s + sl * QG_Z_BYTES + sz * 4, szsrc, szok);
            xsrc += 64;
            wsrc += wstep;
            if (++gph == spg) {
                gph = 0;
                szsrc += szstep;
            }
            ++ld;
        }
        cp_async_commit();
    };

    pdl_wait();
#pragma unroll
    for (int s = 0; s < QG_STAGES - 2; ++s) load_next();
    pdl_launch();

    int fa, fb, c4;
    qg_consumer(tid, fa, fb, c4);
    float d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0.f;

    // Stage kb - 1's products stay in flight while stage kb's copies are waited for, the block
    // meets at the barrier and stage kb + 2 is requested; they are waited for just before stage
    // kb's A is dequantised (registers that a product in flight may read must not be written:
    // ptxas would serialise every wgmma). The copies run QG_STAGES - 2 stages ahead, so the slot
    // refilled at stage kb (kb - 2's) was released by every warpgroup's wait in stage kb - 1.
    // (Waiting for each stage's products at its end measured 16,963-17,237 against
    // 17,319-17,468 tokens/s for a 512-token prompt on an H100.)
    u32 a[4][4];
    for (int kb = kb0; kb < kb1; ++kb) {
        cp_async_wait<QG_STAGES - 3>();
        // cp.async wrote the tiles through the generic proxy; wgmma reads X through the async one.
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();
        load_next();
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
        const int sl = (kb - kb0) & (QG_STAGES - 1);
        qg_stage_products(d, a, reinterpret_cast<const u32*>(ws + sl * QG_W_BYTES),
                          reinterpret_cast<const f16*>(ss + sl * QG_S_BYTES), zs + sl * QG_Z_BYTES,
                          xs_s + sl * QG_X_BYTES, fa, fb, c4);
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    qg_fence_acc(d);
    qg_store(d, Y, t0, n0, fa, fb, c4, T, N, ldo);
}

// ---------------------------------------------------------------------------------------------
// gemm_q4_tma: the same product (same operands, fragments, output and split-K slabs as
//   gemm_q4_wgmma), its tiles copied by the Tensor Memory Accelerator instead of per-thread
//   cp.async, and the stages handed over by mbarriers instead of one block barrier per stage.
// Variants by token tile TT (gemm_q4_tma_body<TT, ST>): gemm_q4_tma 128 tokens and QT_STAGES
//   stages; gemm_q4_tma64 / gemm_q4_tma32 (passes of at most 64 / 32 tokens: a chat turn's
//   prompt) 64 / 32 tokens (wgmma m64n64k16 / m64n32k16, TT / 2 accumulators per thread) and
//   QT_STAGES_SMALL stages, so that the tensor cores' work follows the tokens instead of a
//   128-token tile of padding (H200, 13B: time to first token 5.4 against 8.5-8.8 ms at 16-32
//   tokens, with K split for a full wave; 6.4 against 8.4 at 64). The host's token tile and
//   splits: gemm_q4.rs (tma_tile, gemm_q4_split_small).
// Launch: block QT_THREADS = 2 consumer warpgroups (64 features each, as above) + 1 producer
//   warp; two blocks per SM (three fit for gemm_q4_tma32); grid (ceil(T / TT), ceil(N /
//   QG_FEAT), S). Dynamic shared memory QT_SMEM_T(TT, ST) bytes: ST slots, each X [TT tokens]
//   [64 inputs] f16 with the 128-byte swizzle (TT x 128 B, what the wgmma descriptor reads), W
//   [8 packed rows][128 features] u32 (4 KiB), scales [128] f16, zeros [128] u8; then full[ST]
//   and empty[ST] mbarriers. (Below, QT_STAGES stands for ST.)
// The producer's lane 0 requests stage i into slot i % QT_STAGES once the consumers have
//   released the slot's previous stage (empty: one arrival per consumer warp), with four 2-D
//   tensor copies that complete on full[slot] (which expects the stage's bytes); the copies of
//   weights for the first QT_STAGES stages are requested before the programmatic-dependent-launch
//   wait, X after it. A consumer warpgroup waits for full[slot], waits for its previous stage's
//   products (then releases that slot), dequantises and issues the stage's four products. No
//   block barrier after the mbarriers' initialisation.
// Tensor maps (host: gemm_q4.rs): mx over X [T][K] f16, box 64 x 128, 128-byte swizzle;
//   mw over qw [K/8][N] u32, box 128 x 8; ms over scales [G][N] f16, box 128 x 1; mz over
//   zeros [G][N] u8, box 128 x 1. Rows and columns past the tensors are filled with zeros.
//   With unit = 1 the weights' three maps are over a unit-major copy instead (gemv_mma.cu's
//   MMA_UNIT_MAJOR layout, the matrix's only copy: gemm_q4.rs unit_maps): mw 4-D [tiles][K/128]
//   [16 rows][128 words], box 128 x 8 x 1 x 1; ms and mz 3-D [tiles][K/128][128] at the unit's
//   byte offsets 8,192 and 8,448, box 128 x 1 x 1 — the same bytes into the same slots (the
//   block's 128 features are one column tile, N % 128 == 0).
//   Needs (besides gemm_q4_wgmma's conditions) N % 16 == 0 and 16-byte aligned tensors.
// Registers: two blocks of 288 threads per SM cap a thread at 112 registers, under which ptxas
//   serialises the wgmmas (C7512, "insufficient register resources"). Measured anyway (H100,
//   NVRTC 13.0, 512-token prompt): QT_MINB = 2 (serialised, 2 blocks per SM) 18,905-19,225
//   tokens/s; QT_MINB = 1 (not serialised, but then NVRTC 13.0 uses enough registers that only
//   one block fits per SM; bench_kernels prints the blocks per SM) 18,201-18,234. Without the
//   producer warp (256 threads, 128 registers, not serialised; the last consumer warp to release
//   a slot requested its next stage) it was slower still: 17,964-18,018.
#ifndef QT_STAGES
#define QT_STAGES 5  // (the host allocates shared memory for 5; fewer is allowed)
#endif
#ifndef QT_MINB
#define QT_MINB 2  // __launch_bounds__'s minimum blocks per SM (see Registers above)
#endif
#ifndef QT_STAGES_SMALL
#define QT_STAGES_SMALL 8  // stages of the small-token-tile variants (gemm_q4_tma64 / 32)
#endif
#define QT_CONSUMERS QG_THREADS
#define QT_THREADS (QT_CONSUMERS + 32)
// A stage's bytes and a variant's dynamic shared memory for token tiles of TT and ST stages.
#define QT_STAGE_BYTES_T(TT) ((TT) * 128 + QG_W_BYTES + QG_S_BYTES + QG_Z_BYTES)
#define QT_SMEM_T(TT, ST) ((ST) * QT_STAGE_BYTES_T(TT) + 2 * (ST) * 8 + 1024)
#define QT_SMEM QT_SMEM_T(128, QT_STAGES)

// The host's launch shapes (gemm_q4.rs), passed by module.rs: a drift fails the compile.
#ifdef WV_HOST_QT_SMEM
static_assert(QG_THREADS == WV_HOST_QG_THREADS && QT_THREADS == WV_HOST_QT_THREADS,
              "gemm_q4.rs's block sizes differ from the kernels'");
static_assert(QG_FEAT == WV_HOST_QG_FEAT, "gemm_q4.rs's features per block differ");
static_assert(QG_SMEM <= WV_HOST_QG_SMEM && QT_SMEM <= WV_HOST_QT_SMEM,
              "gemm_q4.rs allocates less shared memory than the kernels use");
static_assert(QT_SMEM_T(64, QT_STAGES_SMALL) <= WV_HOST_QT_SMEM_64 &&
                  QT_SMEM_T(32, QT_STAGES_SMALL) <= WV_HOST_QT_SMEM_32,
              "gemm_q4.rs allocates less shared memory than the small-tile kernels use");
#endif

// The kernel for token tiles of TT (128, 64 or 32) and ST stages.
template <int TT, int ST>
__device__ __forceinline__ void gemm_q4_tma_body(const TmaMap* mx, const TmaMap* mw, const TmaMap* ms,
                                                 const TmaMap* mz, float* __restrict__ Y, int T, int K,
                                                 int N, int gs, int ldo, long long ystride, int unit)
{
    constexpr int XB = TT * 128;                 // one stage's X tile
    constexpr int SB = QT_STAGE_BYTES_T(TT);  // one stage's bytes
    extern __shared__ unsigned char qt_raw[];
    const QgRing ring = qg_ring(qt_raw, ST, XB);
    const u32 xs_s = ring.xs_s, ws_s = ring.ws_s, ss_s = ring.ss_s, zs_s = ring.zs_s;
    const unsigned char *ws = ring.ws, *ss = ring.ss, *zs = ring.zs;
    const u32 full_s = ring.end_s;                             // [STAGES] mbarrier
    const u32 empty_s = full_s + ST * 8;                // [STAGES] mbarrier

    const int tid = threadIdx.x;
    const int t0 = blockIdx.x * TT, n0 = blockIdx.y * QG_FEAT;
    int kb0, kb1;
    qg_slab_range(K, kb0, kb1);
    const int nk = kb1 - kb0;
    Y += (size_t)blockIdx.z * ystride;

    if (tid == 0) {
        for (int s = 0; s < ST; ++s) {
            mbar_init(full_s + 8 * s, 1);
            mbar_init(empty_s + 8 * s, QG_WG * 4);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (tid >= QT_CONSUMERS) {
        // The producer warp: lane 0 requests every stage.
        if (tid == QT_CONSUMERS) {
            // Stage kb's weight tiles (with the stage's byte count) and/or X tile into slot sl.
            auto request = [&](int kb, int sl, bool w, bool x) {
                const int k0 = kb << 6;
                const u32 full = full_s + 8 * sl;
                if (w) {
                    mbar_expect_tx(full, SB);
                    if (unit) {
                        // The unit-major copy: half of unit (n0 / 128, k0 / 128)'s 16 rows, and
                        // its scales and zeros (the same bytes as below, from one 8,576-byte unit).
                        tma_4d(ws_s + sl * QG_W_BYTES, mw, 0, (k0 >> 3) & 15, k0 >> 7, n0 >> 7, full);
                        tma_3d(ss_s + sl * QG_S_BYTES, ms, 0, k0 >> 7, n0 >> 7, full);
                        tma_3d(zs_s + sl * QG_Z_BYTES, mz, 0, k0 >> 7, n0 >> 7, full);
                    } else {
                        tma_2d(ws_s + sl * QG_W_BYTES, mw, n0, k0 >> 3, full);
                        tma_2d(ss_s + sl * QG_S_BYTES, ms, n0, k0 / gs, full);
                        tma_2d(zs_s + sl * QG_Z_BYTES, mz, n0, k0 / gs, full);
                    }
                }
                if (x) tma_2d(xs_s + sl * XB, mx, k0, t0, full);
            };
            const int pre = nk < ST ? nk : ST;
            for (int i = 0; i < pre; ++i) request(kb0 + i, i, true, false);
            pdl_wait();
            for (int i = 0; i < pre; ++i) request(kb0 + i, i, false, true);
            int sl = 0, use = 1;  // slot of stage i, and how many times it was filled before
            for (int i = pre; i < nk; ++i) {
                mbar_wait(empty_s + 8 * sl, (use - 1) & 1);
                request(kb0 + i, sl, true, true);
                if (++sl == ST) {
                    sl = 0;
                    ++use;
                }
            }
        }
        return;
    }
    pdl_wait();
    pdl_launch();

    const int lane = tid & 31;
    int fa, fb, c4;
    qg_consumer(tid, fa, fb, c4);
    float d[TT / 2];
#pragma unroll
    for (int i = 0; i < TT / 2; ++i) d[i] = 0.f;

    int sl = 0, ph = 0, prev = 0;
    for (int i = 0; i < nk; ++i) {
        mbar_wait(full_s + 8 * sl, ph);
        // The previous stage's products done: release its slot (one arrival per warp).
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
        if (i > 0 && lane == 0) mbar_arrive(empty_s + 8 * prev);
        u32 a[4][4];
        qg_stage_products(d, a, reinterpret_cast<const u32*>(ws + sl * QG_W_BYTES),
                          reinterpret_cast<const f16*>(ss + sl * QG_S_BYTES),
                          zs + sl * QG_Z_BYTES, xs_s + sl * XB, fa, fb, c4);
        prev = sl;
        if (++sl == ST) {
            sl = 0;
            ph ^= 1;
        }
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    qg_fence_acc(d);

    qg_store(d, Y, t0, n0, fa, fb, c4, T, N, ldo);
}

#define QT_PARAMS                                                                                  \
    const __grid_constant__ TmaMap mx, const __grid_constant__ TmaMap mw,                          \
        const __grid_constant__ TmaMap ms, const __grid_constant__ TmaMap mz, float *__restrict__ Y, \
        int T, int K, int N, int gs, int ldo, long long ystride, int unit
#define QT_ARGS &mx, &mw, &ms, &mz, Y, T, K, N, gs, ldo, ystride, unit
extern "C" __global__ void __launch_bounds__(QT_THREADS, QT_MINB) gemm_q4_tma(QT_PARAMS) {
    gemm_q4_tma_body<128, QT_STAGES>(QT_ARGS);
}
// Passes of at most 64 / 32 tokens: the tensor cores' work in proportion to the tokens.
extern "C" __global__ void __launch_bounds__(QT_THREADS, QT_MINB) gemm_q4_tma64(QT_PARAMS) {
    gemm_q4_tma_body<64, QT_STAGES_SMALL>(QT_ARGS);
}
extern "C" __global__ void __launch_bounds__(QT_THREADS, QT_MINB) gemm_q4_tma32(QT_PARAMS) {
    gemm_q4_tma_body<32, QT_STAGES_SMALL>(QT_ARGS);
}
