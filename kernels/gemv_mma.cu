// gemv_mma.cu — decode matrix-vector products on the integer tensor cores, one block per SM,
// each block streaming its share of the weights into a shared-memory ring before it waits for
// the previous kernel (WV_CUDA_GEMV=mma; tools/probe/chain_probe.cu measured the shape).
//
// quant_digits: the input x (f16 [K], gathered through perm when not NULL) as two int8 digits
//   per value, per 128-input block b: xs = max|x| / 127, hi = rint(x / xs), lo = rint((x / xs -
//   hi) * 256) (so x = xs (hi + lo / 256) to ~1.5e-5 of the block's largest value, finer than
//   f16), stored in the mma's B-fragment order — xq u32 [K/128][64]: word ((d*4 + t)*4 + s)*2 + e
//   holds digit d (0 hi, 1 lo) of rows 8(4s + t) + {0,4,1,5} (e = 0) or {2,6,3,7} (e = 1) of the
//   block, one byte each, in that order (the row order of the even and odd nibbles of wv's
//   packed words, see gemv.cu) — and xsum float2 [K/128] = (xs, Σ (hi + lo / 256)) (common.cuh's
//   warp_digits, which the decode norm, attention combine and SiLU also call where they make a
//   gemv_q4m input, so that no quant_digits runs between them and the product).
//   Launch: one warp per block of 128 inputs, 4 warps per block: grid ceil(K / 512). K % 128 == 0.
//
// gemv_q4m: out slabs = x · W for a 4-bit matrix in wv's layout (gemv.cu: qw u32 [K/8][N],
//   scales f16 [G][N], zeros u8 [G][N]), gs % 128 == 0, K % 128 == 0, N % 128 == 0.
//   Units: 16 packed rows (128 inputs) x 128 columns; unit u = t * KB + kb (t the column tile,
//   kb the 128-input block, KB = K / 128), U = (N / 128) * KB. Block b of P (grid = P = min(SMs,
//   U)) takes units [U b / P, U (b + 1) / P). Warp MW (the producer) copies each unit into a ring
//   of MST stages with cp.async by its 32 lanes — row r's 16-byte chunk c (columns 4c..4c+3) to
//   chunk c ^ 2 (r % 4) of the stage's row r (512 bytes), so that the consumers' reads below do
//   not conflict, then the unit's 128 scales and zeros — each lane arriving on the stage's
//   mbarrier when its copies land (cp.async.mbarrier.arrive.noinc). It never waits for the
//   previous kernel (the weights are immutable), and the block triggers its dependents at
//   entry: the next product's blocks start streaming as soon as they are resident.
//   Consumer warps 0..MW-1 wait (griddepcontrol.wait) and take units w, w + MW, ... (MST % MW
//   == 0, so no warp waits on a stage two phases ahead).
//   Per unit and consumer warp: mma.sync m16n8k32 (A = weights as u8: rows = 16 output
//   columns, B = the input's two digits in columns 0 and 1), over four k-steps of 32 inputs:
//   lane (g = lane / 4, t = lane % 4) takes at k-step s packed row 4s + t, columns 32m + 4g ..
//   + 3 of the tile (m = 0..3, one 16-byte load): words 0, 1 are rows g, g + 8 of one mma tile,
//   words 2, 3 of another; a word's even nibbles are its a0 / a1 bytes, its odd ones a2 / a3
//   (rows {0,4,1,5} and {2,6,3,7} of the packed row, which quant_digits' order matches). The
//   t = 0 lanes end with the hi and lo sums of columns 32m + 4g + j; per unit, in f32:
//   acc += scale * xs * (hi + lo / 256 - zero * Σ digits) — exact integer sums, so the product
//   is as accurate as the digits (~1e-5 relative, against ~1e-3 for gemv_q4l's f16 sums).
//   A warp's per-tile partials meet the other warps' in shared memory (red [MSEG][MW][128]);
//   after the block's last unit the consumers sum them in warp order into slab (b - first block
//   of the tile) of out f32 [S][ldo] — deterministic — and the tile's first block zeroes the
//   slabs no block writes. Launch: MW + 1 warps; dynamic shared memory MST * (8 KiB + 384 B)
//   + MSEG * MW * 512 B + 16 * MST (mbarriers) + 1 KiB (alignment); with the defaults (6 warps,
//   24 stages) 211 KiB, one block per SM (two per SM let a product's blocks double up on one SM
//   while the glue kernels between products hold others: slower, docs/cuda.md).
//
// The fused variants (the glue between decode's products folded in, so that a layer is q|k|v,
// attn_partial, attn_combine, o, gate|up, down — or, for a short context, q|k|v, o, gate|up,
// down): after writing its slabs a block counts itself in counters[key] per tile it holds
// (key = the tile; for gate|up the pair of gate tile j and up tile j + N/256); the last to
// arrive (it resets the counter) sums the key's slabs in slab order (deterministic) — consumer
// warp i of a block takes the block's i-th tile (MSEG <= MW, so a block's tiles finish at
// once, no block barrier between them), lane l its columns 4l .. 4l+3 — and:
//   gemv_q4m_resid (o, down; N = hidden): resid f32 [N] += Σ slabs (+ ebias); ss[t] = the
//     tile's sum of squares of the new values; when normw (the next RMSNorm's weight) is not
//     NULL, the digits of resid ∘ normw for block t of xq_out (the next product's input, K =
//     N). The norm's 1 / RMS is not known until every tile is, and RMSNorm(x) · W = r ((x ∘ w) ·
//     W): the next product applies r = rms_scale_from_tiles(ss) when it finishes its tiles.
//   gemv_q4m_rope (q|k|v; tile = one head, head dim 128): v = r Σ slabs (+ ebias), r from ss
//     (1 when ss is NULL: the input was normed already); q heads (key < nh) rotated into qout f32
//     [nh*128], k heads rotated into kc, v heads into vc (f16 [capacity][nkv*128]) at position
//     *dpos (or pos when dpos is NULL); RoPE as qkv_rope (rope table, npos positions). When
//     xq_out is not NULL (at most 128 keys), also the attention, as o's input digits in xq_out
//     (rope_attention below): the layer is then q|k|v, o, gate|up, down.
//   gemv_q4m_silu (gate|up = [gate F | up F], F = N / 2): g, u = r Σ slabs (+ ebias) of columns
//     c and F + c; the digits of silu(g) · u for block j of xq_out (down's input, K = F).
// Every buffer written by an epilogue differs from the launch's inputs (xq_out is not xq).
//
// Every variant, under MMA_UNIT_MAJOR: when pfw is not NULL, block b's producer, once its last
// copy is issued and all but the last pflag (< MST) have landed, asks L2
// (cp.async.bulk.prefetch) for the first pfn units of block b of the next product (pfw its
// unit-major copy, pfU units over pfP blocks) — what that block's producer copies first.
#ifndef MW
#define MW 6
#endif
#ifndef MST
#define MST 24
#endif
// MMA_UNIT_MAJOR=1 (the sm_90 default; WV_CUDA_MMA_LAYOUT=rows turns it off, gemv_mma.rs): qw
// points at the matrix's unit-major copy — unit u (as above) stored whole: its 16 packed rows
// (16 x 512 bytes, row-major), then the 128 scales and 128 zeros of its group, 8,576 bytes —
// which the producer copies with two bulk copies into the plain row order (scales and zeros
// unused). The chain probe measured it: the same kernel 1.99 against 2.39 ms for the 13B
// step's products (docs/cuda.md).
#ifndef MMA_UNIT_MAJOR
#define MMA_UNIT_MAJOR 0
#endif
#ifndef MMA_L2_EVICT_FIRST
// The weight copies marked evict-first in L2 (H200, 13B: 387.3-389.6 against 374.2-375.7 tok/s
// after 32 tokens, 340.0 against 332.5 after 1,500; nineteenth session): a step streams 7 GB
// through a 50 MB L2, and without the hint it pushes out what is read again: the KV cache, the
// slabs and counters, the activations, the kernels' code.
#define MMA_L2_EVICT_FIRST 1
#endif
#define MSEG 3
#define MUNIT_W 8192
#define MUNIT_SZ 384
#define MMA_SMEM (MST * (MUNIT_W + MUNIT_SZ) + MSEG * MW * 512 + 16 * MST + 1024)
#ifdef WV_HOST_MMA_SMEM
static_assert(WV_HOST_MMA_SMEM == MMA_SMEM, "gemv_mma.rs smem_of differs from MMA_SMEM");
#endif
static_assert(MST % MW == 0, "a warp takes the stages w, w + MW, ...: MST must be a multiple of MW");
static_assert(MSEG <= MW, "the epilogue gives each of a block's tiles a consumer warp");
// Two blocks per SM where two fit (the next product's beside the current one), else one.
#define MMA_MINB (MMA_SMEM * 2 <= 227 * 1024 ? 2 : 1)


// The unit-major weights' bulk copies into the ring, completing on mbarrier bar: with
// MMA_L2_EVICT_FIRST, under the evict-first L2 policy weight_policy() makes (0 otherwise).
__device__ __forceinline__ unsigned long long weight_policy() {
#if MMA_L2_EVICT_FIRST
    unsigned long long pol;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    return pol;
#else
    return 0;
#endif
}
__device__ __forceinline__ void weight_copy(u32 dst, const u8* src, u32 bytes, u32 bar, unsigned long long pol) {
#if MMA_L2_EVICT_FIRST
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
                     dst),
                 "l"(src), "r"(bytes), "r"(bar), "l"(pol)
                 : "memory");
#else
    (void)pol;
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst), "l"(src),
                 "r"(bytes), "r"(bar)
                 : "memory");
#endif
}

// The block b of P whose units contain unit u (of U).
// (In 32 bits where it fits — always, for these products: a 64-bit division is a call of ~70
// dependent instructions, and the epilogues take several on their way to the counts.)
__device__ __forceinline__ int unit_block(long long u, int P, long long U) {
    const long long x = (u + 1) * P - 1;
    return x < 0x7fffffffLL && U < 0x7fffffffLL ? (int)((unsigned)x / (unsigned)U) : (int)(x / U);
}

extern "C" __global__ void __launch_bounds__(128) quant_digits(const f16* __restrict__ x, const int* __restrict__ perm,
                                                              u32* __restrict__ xq, float2* __restrict__ xsum, int K) {
    pdl_between_products();
    const int blk = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (blk * 128 >= K) return;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int k = blk * 128 + 4 * lane + j;
        v[j] = h2f(x[perm ? __ldg(perm + k) : k]);
    }
    warp_digits(make_float4(v[0], v[1], v[2], v[3]), blk, xq, xsum);
}

// The blocks that hold units of column tile t (they write its slabs 0, 1, ...).
__device__ __forceinline__ int tile_blocks(int t, int KB, int P, long long U) {
    return unit_block((long long)(t + 1) * KB - 1, P, U) - unit_block((long long)t * KB, P, U) + 1;
}

// What a gemv_q4m launch does once a column tile's slabs are all written (see the top).
#define EPI_NONE 0
#define EPI_RESID 1
#define EPI_ROPE 2
#define EPI_SILU 3

// Measurement only (MMA_TIMELINE and tl not NULL; host: WV_CUDA_TIMELINE, timeline.rs — compiled
// out otherwise, so that the default kernels are the ones measured): thread 0 of each block
// stamps %globaltimer into its launch's record when the block starts, when its wait returns,
// when its units are done and when its consumers are done (epilogue included). tl[0]'s low word
// is a ticket counter: a block's ticket / gridDim is its launch (a launch's blocks all take
// theirs before the next launch starts: they take them before they trigger it), and record
// ticket % TL_RECORDS at tl + TL_HEAD_WORDS holds TL_WORDS words: (start, waited, units done,
// end, block | SM << 32, ticket, then three marks that q|k|v's attention epilogue sets where its
// thread 0 passes them, 0 where it does not: TL_MARK + 0 its tile finished (count, slab sums,
// stores), + 1 the heads it completes known, + 2 its warp's softmax done; then TL_FIRST, when
// warp 0 finished its first unit (every product: between the wait and the units done).
#define TL_RECORDS 65536
#define TL_WORDS 10
#define TL_MARK 6
#define TL_FIRST 9
#define TL_HEAD_WORDS 8
#ifndef MMA_TIMELINE
#define MMA_TIMELINE 0  // the host defines it to 1 when WV_CUDA_TIMELINE asks for the stamps
#endif
#ifdef WV_HOST_TL
#define TL_LAYOUT_(r, w, h, m, f) \
    (r == TL_RECORDS && w == TL_WORDS && h == TL_HEAD_WORDS && m == TL_MARK && f == TL_FIRST)
#define TL_LAYOUT(x) TL_LAYOUT_(x)
static_assert(TL_LAYOUT(WV_HOST_TL), "timeline.rs's record layout differs from gemv_mma.cu's");
#endif
__device__ __forceinline__ unsigned long long tl_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ void tl_stamp(unsigned long long* tl, int i) {
#if MMA_TIMELINE
    __shared__ unsigned long long* rec;
    if (!tl || threadIdx.x != 0) return;
    if (i == 0) {
        const unsigned ticket = atomicAdd(reinterpret_cast<unsigned*>(tl), 1u);
        u32 sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        rec = tl + TL_HEAD_WORDS + (size_t)(ticket % TL_RECORDS) * TL_WORDS;
        rec[4] = (unsigned long long)blockIdx.x | ((unsigned long long)sm << 32);
        rec[5] = ticket;
        for (int m = TL_MARK; m < TL_WORDS; ++m) rec[m] = 0;  // the ring's slot may hold an older launch's
    }
    rec[i] = tl_now();
#else
    (void)tl;
    (void)i;
#endif
}

// gemv_q4m_rope's fused attention (xq_out not NULL; host: decode whose keys fit one bucket of
// at most 128, head dim 128, nh <= MMA_HEAD_CTR, nh / nkv <= 8): once a warp has finished its
// q, k or v tile, it counts the tile in counters[MMA_HEAD_CTR + h] for each query head h the
// tile serves (release: its lanes' stores; acquire: the other tiles'); the block that counts a
// head's third tile runs the head's attention with all its consumer warps (the heads it
// completes side by side, MW / n warps each for n of them) — warp w the keys w, w + MW, ... of
// 0 .. p (one head), MMA_ATT_KB at a time (MMA_ATT_KB2 where that needs more than one batch)
// with their own online softmax (common.cuh's warp_online_softmax, as attn_partial) — meets
// the warps' results in red ([MW][128] outputs, then [MW] (max, sum) pairs) and writes the
// head's output as digits block h of xq (o's input, K = nh * 128), resetting the counter.
#define MMA_HEAD_CTR 512
#define MMA_ATT_LIST 32
#ifndef MMA_ATTN
#define MMA_ATTN 1
#endif
#ifndef MMA_ATT_KB
#define MMA_ATT_KB 8  // keys per warp per batch (one memory round trip; 16 measured 2% slower)
#endif
#ifndef MMA_ATT_KB2
// keys per warp per batch where MMA_ATT_KB leaves more than one batch: up to 160 keys in one
// round trip (H200, 13B, after 64 tokens: 366.9 / 367.5 against 364.8 / 364.8 tok/s; level after 32)
#define MMA_ATT_KB2 16
#endif
// Warp j < n of the fused attention's round of n heads (G warps each: j, j + n, ...; their
// outputs in red [MW][128], their (max, sum) pairs in st [MW][2]) meets head h's warps and
// writes its output as digits block h of xq (o's input, K = nh * 128).
__device__ __forceinline__ void attention_merge(int h, int j, int n, int G, int nh, const float* red, const float* st,
                                                u32* __restrict__ xq) {
    const int lane = threadIdx.x & 31;
    float M = NEG_INF, L = 0.f;
#pragma unroll
    for (int w = 0; w < MW; ++w)
        if (w % n == j && w < n * G && st[2 * w + 1] > 0.f) M = fmaxf(M, st[2 * w]);
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < MW; ++w) {
        if (w % n != j || w >= n * G) continue;
        const float wt = st[2 * w + 1] > 0.f ? expf(st[2 * w] - M) : 0.f;
        const float4 a = *reinterpret_cast<const float4*>(red + w * 128 + 4 * lane);
        L += wt * st[2 * w + 1];
        o = make_float4(o.x + wt * a.x, o.y + wt * a.y, o.z + wt * a.z, o.w + wt * a.w);
    }
    const float inv = 1.f / L;
    warp_digits(make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv), h, xq, digits_sums(xq, nh * 128));
}

// One warp's part of a head's fused attention: q of head h (qout), its online softmax over the
// keys first, first + G, ... < end of KV head kvh (rows kvd elements apart), MMA_ATT_KB at a time
// (MMA_ATT_KB2 where that needs more than one batch); its outputs into red_w [128], (m, l) into
// st_w [2].
__device__ __forceinline__ void att_warp(const float* __restrict__ qout, int h, const f16* __restrict__ kc,
                                         const f16* __restrict__ vc, int kvh, int kvd, int first, int G, int end,
                                         float* red_w, float* st_w) {
    const int lane = threadIdx.x & 31;
    const float4 q4 = __ldcg(reinterpret_cast<const float4*>(qout + h * 128 + 4 * lane));
    const float q[4] = {q4.x, q4.y, q4.z, q4.w};
    float m = NEG_INF, l = 0.f, acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (MMA_ATT_KB2 > MMA_ATT_KB && end > G * MMA_ATT_KB)
        warp_online_softmax<1, MMA_ATT_KB2, true>(q, kc + kvh * 128, vc + kvh * 128, kvd, 32, first, G, end,
                                                  0.08838834764831845f, m, l, acc);
    else
        warp_online_softmax<1, MMA_ATT_KB, true>(q, kc + kvh * 128, vc + kvh * 128, kvd, 32, first, G, end,
                                                 0.08838834764831845f, m, l, acc);
    *reinterpret_cast<float4*>(red_w + 4 * lane) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    if (lane == 0) {
        st_w[0] = m;
        st_w[1] = l;
    }
}

__device__ __forceinline__ void rope_attention(int finished, int tile, int nh, int nkv, const float* __restrict__ qout,
                                               const f16* __restrict__ kc, const f16* __restrict__ vc, int p,
                                               int* __restrict__ counters, u32* __restrict__ xq, float* red,
                                               unsigned long long* tl) {
    __shared__ int heads[1 + MMA_ATT_LIST];  // [0]: how many; then the heads this block completes
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    tl_stamp(tl, TL_MARK);  // its tiles counted (and finished where it was the last)
    if (threadIdx.x == 0) heads[0] = 0;
    asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
    if (finished && tile < nh + 2 * nkv) {
        __syncwarp();
        if (lane == 0) {
            const int g = nh / nkv, j = tile < nh ? 0 : (tile - nh) % nkv;
            const int h0 = tile < nh ? tile : j * g, h1 = tile < nh ? tile + 1 : h0 + g;
            for (int h = h0; h < h1; ++h) {
                int old;
                asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(counters + MMA_HEAD_CTR + h) : "memory");
                if (old == 2) heads[1 + atomicAdd(&heads[0], 1)] = h;
            }
        }
    }
    asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
    tl_stamp(tl, TL_MARK + 1);
    const int nl = heads[0], kvd = nkv * 128;
    float* st = red + MW * 128;
    // The block's heads side by side, up to MW at a time: n heads take G = MW / n warps each
    // (warp w head w % n, its keys w / n, w / n + G, ... of 0 .. p — read through L2: this
    // step's key and value were written by other blocks of this launch), then warp j < n meets
    // head j's warps (j, j + n, ...; one head: every warp in order, as before).
    for (int base = 0; base < nl; base += MW) {
        const int n = min(nl - base, MW), G = MW / n;
        if (warp < n * G) {
            const int h = heads[1 + base + warp % n];
            att_warp(qout, h, kc, vc, h / (nh / nkv), kvd, warp / n, G, p + 1, red + warp * 128, st + 2 * warp);
        }
        tl_stamp(tl, TL_MARK + 2);
        asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
        if (warp < n) {
            const int h = heads[1 + base + warp];
            attention_merge(h, warp, n, G, nh, red, st, xq);
            if (lane == 0) counters[MMA_HEAD_CTR + h] = 0;
        }
        asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
    }
}

// One parameter list for every variant (unused ones NULL / 0).
#define MMA_PARAMS                                                                                                   \
    const u32 *__restrict__ qw, const f16 *__restrict__ scales, const u8 *__restrict__ zeros,                         \
        const u32 *__restrict__ xq, const float2 *__restrict__ xsum, float *__restrict__ out, int K, int N, int gs,   \
        int ldo, int S, int *__restrict__ counters, float *__restrict__ resid, const float *__restrict__ ebias,        \
        float *__restrict__ ss, const float *__restrict__ normw, u32 *__restrict__ xq_out, float eps,                 \
        float *__restrict__ qout, f16 *__restrict__ kc, f16 *__restrict__ vc, const float *__restrict__ rope, int npos, \
        int pos, const int *__restrict__ dpos, int nh, int nkv, const u8 *__restrict__ pfw, int pfU, int pfP, int pfn, int pflag, \
        unsigned long long *__restrict__ tl
#define MMA_ARGS                                                                                                     \
    qw, scales, zeros, xq, xsum, out, K, N, gs, ldo, S, counters, resid, ebias, ss, normw, xq_out, eps, qout, kc, vc, \
        rope, npos, pos, dpos, nh, nkv, pfw, pfU, pfP, pfn, pflag, tl

template <int EPI>
__device__ __forceinline__ void gemv_q4m_work(MMA_PARAMS) {
    extern __shared__ __align__(16) u8 msm_raw[];
    // The ring 1 KiB aligned (the swizzle pattern is on address bits 4..9).
    u8* msm = msm_raw + (((smem_addr(msm_raw) + 1023u) & ~1023u) - smem_addr(msm_raw));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int KB = K >> 7, P = gridDim.x, b = blockIdx.x;
    const long long U = (long long)(N >> 7) * KB;
    const int u0 = (int)(U * b / P), u1 = (int)(U * (b + 1) / P), n = u1 - u0;
    const u32 wring = smem_addr(msm);                       // [MST][8 KiB] weights (swizzled)
    const u32 zring = wring + MST * MUNIT_W;               // [MST][256 B scales, 128 B zeros]
    float* red = reinterpret_cast<float*>(msm + MST * (MUNIT_W + MUNIT_SZ));  // [MSEG][MW][128]
    const u32 full = smem_addr(red + MSEG * MW * 128), empty = full + 8 * MST;
    if (threadIdx.x == 0) {
        for (int s = 0; s < MST; ++s) {
            mbar_init(full + 8 * s, MMA_UNIT_MAJOR ? 1 : 32);
            mbar_init(empty + 8 * s, 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    // The next kernel may start now: its blocks only fill their rings until they wait.
    pdl_launch();
    if (warp == MW) {
        // cp.async by the 32 lanes: each 512-byte row of a unit as 32 chunks of 16 bytes, chunk
        // c of row r stored at chunk c ^ 2 (r % 4) (what the consumers' reads expect), then the
        // unit's scales and zeros; each lane's arrival on the stage's barrier fires when its
        // copies have landed.
        for (int i = 0; i < n; ++i) {
            const int s = i % MST, u = u0 + i, t = u / KB, kb = u - t * KB;
            if (i >= MST) mbar_wait(empty + 8 * s, ((i / MST) - 1) & 1);
#if MMA_UNIT_MAJOR
            // qw is the unit-major copy: a unit's 16 rows, scales and zeros in 8,576 contiguous
            // bytes, two bulk copies.
            if (lane == 0) {
                const u8* unit = reinterpret_cast<const u8*>(qw) + (size_t)u * (MUNIT_W + MUNIT_SZ);
                mbar_expect_tx(full + 8 * s, MUNIT_W + MUNIT_SZ);
                const unsigned long long pol = weight_policy();
                weight_copy(wring + s * MUNIT_W, unit, MUNIT_W, full + 8 * s, pol);
                weight_copy(zring + s * MUNIT_SZ, unit + MUNIT_W, MUNIT_SZ, full + 8 * s, pol);
            }
            continue;
#endif
            const u32* src = qw + (size_t)kb * 16 * N + (size_t)t * 128 + 4 * lane;
#pragma unroll
            for (int r = 0; r < 16; ++r)
                cp_async16(wring + s * MUNIT_W + r * 512 + ((lane ^ ((r & 3) << 1)) << 4), src + (size_t)r * N);
            const size_t g = (size_t)(kb * 128 / gs) * N + (size_t)t * 128;
            if (lane < 16) cp_async16(zring + s * MUNIT_SZ + lane * 16, scales + g + lane * 8);
            if (lane < 8) cp_async16(zring + s * MUNIT_SZ + 256 + lane * 16, zeros + g + lane * 16);
            asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(full + 8 * s) : "memory");
        }
#if MMA_UNIT_MAJOR
        // This block's copies are all issued; once all but the last pflag of them have landed
        // (this SM's share of DRAM about to fall idle until the next product's block starts),
        // ask L2 for the first pfn units of the next product's block b (pfw: its unit-major
        // copy, pfU units over pfP blocks), so that the next product's first copies hit L2.
        if (pfw && b < pfP && n > 0) {
            const int w = n - 1 - min(max(pflag, 0), min(MST - 1, n - 1));
            mbar_wait(full + 8 * (w % MST), (w / MST) & 1);
            const long long v0 = (long long)pfU * b / pfP, v1 = (long long)pfU * (b + 1) / pfP;
            const int m = (int)min(v1 - v0, (long long)pfn);
            for (int i = lane; i < m; i += 32)
                asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(pfw + (size_t)(v0 + i) * (MUNIT_W + MUNIT_SZ)),
                             "r"(MUNIT_W + MUNIT_SZ)
                             : "memory");
        }
#endif
        return;
    }
    // Consumers: clear the warp partials, then wait for the input.
    for (int i = threadIdx.x; i < MSEG * MW * 128; i += MW * 32) red[i] = 0.f;
    asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
    pdl_wait();
    tl_stamp(tl, 1);
    // RMSNorm's 1 / RMS of this product's input (ROPE, SILU: the digits are of x ∘ w, not yet
    // scaled), from the per-tile sums of squares the residual epilogue before left. (Summed
    // after the units instead, so that the sum's shuffles do not hold the first unit back:
    // no faster, sixteenth session.)
    const float r = (EPI == EPI_ROPE || EPI == EPI_SILU) && ss ? rms_scale_from_tiles(ss, K >> 7, K, eps) : 1.f;
    const int g = lane >> 2, tq = lane & 3;
    const int t0 = u0 / KB;
    // q|k|v: the step's position (set before the step; read now, not after the count).
    const int pstep = EPI == EPI_ROPE ? (dpos ? *dpos : pos) : 0;
    float acc[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j] = 0.f;
    int cur = -1;
    // The input's digits of a warp's next unit are requested while it computes the current one
    // (lanes 0..7: digit lane / 4, t = lane % 4; 8 words each) with (xs, Σ digits).
    uint4 nxa = make_uint4(0u, 0u, 0u, 0u), nxb = nxa;
    float2 nxs = make_float2(0.f, 0.f);
    auto request = [&](int i) {
        const int kb = (u0 + i) % KB;
        if (lane < 8) {
            const uint4* p = reinterpret_cast<const uint4*>(xq + (size_t)kb * 64 + lane * 8);
            nxa = __ldcg(p);
            nxb = __ldcg(p + 1);
        }
        nxs = __ldcg(xsum + kb);
    };
    if (warp < n) request(warp);
    for (int i = warp; i < n; i += MW) {
        const int s = i % MST, u = u0 + i, t = u / KB;
        if (t != cur) {
            if (cur >= 0 && tq == 0) {
                float4* rp = reinterpret_cast<float4*>(red + ((cur - t0) * MW + warp) * 128);
#pragma unroll
                for (int m = 0; m < 4; ++m) rp[8 * m + g] = make_float4(acc[4 * m], acc[4 * m + 1], acc[4 * m + 2], acc[4 * m + 3]);
            }
#pragma unroll
            for (int j = 0; j < 16; ++j) acc[j] = 0.f;
            cur = t;
        }
        const uint4 xa = nxa, xb = nxb;
        const float2 xsx = nxs;
        if (i + MW < n) request(i + MW);
        const u32 bx[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        mbar_wait(full + 8 * s, (i / MST) & 1);
        const u8* wst = msm + s * MUNIT_W;
        const u8* zst = msm + MST * MUNIT_W + s * MUNIT_SZ;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            int ca[4] = {0, 0, 0, 0}, cb[4] = {0, 0, 0, 0};
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
                const int row = 4 * ks + tq;
                const uint4 w =
                    *reinterpret_cast<const uint4*>(wst + row * 512 + (((8 * m + g) ^ (MMA_UNIT_MAJOR ? 0 : (row & 3) << 1)) << 4));
                mma_u8s8(ca, w.x & 0x0f0f0f0fu, w.y & 0x0f0f0f0fu, (w.x >> 4) & 0x0f0f0f0fu, (w.y >> 4) & 0x0f0f0f0fu,
                         bx[2 * ks], bx[2 * ks + 1]);
                mma_u8s8(cb, w.z & 0x0f0f0f0fu, w.w & 0x0f0f0f0fu, (w.z >> 4) & 0x0f0f0f0fu, (w.w >> 4) & 0x0f0f0f0fu,
                         bx[2 * ks], bx[2 * ks + 1]);
            }
            const uint2 sc = *reinterpret_cast<const uint2*>(zst + 2 * (32 * m + 4 * g));
            const u32 zv = *reinterpret_cast<const u32*>(zst + 256 + 32 * m + 4 * g);
            const float sj[4] = {lo2f(sc.x), hi2f(sc.x), lo2f(sc.y), hi2f(sc.y)};
            const int hi[4] = {ca[0], ca[2], cb[0], cb[2]}, lo[4] = {ca[1], ca[3], cb[1], cb[3]};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float z = (float)((zv >> (8 * j)) & 0xffu);
                const float v = fmaf((float)lo[j], 1.f / 256.f, (float)hi[j]) - z * xsx.y;
                acc[4 * m + j] = fmaf(sj[j] * xsx.x, v, acc[4 * m + j]);
            }
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + 8 * s);
        if (i == 0) tl_stamp(tl, TL_FIRST);  // warp 0's first unit done (thread 0 stamps)
    }
    if (cur >= 0 && tq == 0) {
        float4* rp = reinterpret_cast<float4*>(red + ((cur - t0) * MW + warp) * 128);
#pragma unroll
        for (int m = 0; m < 4; ++m) rp[8 * m + g] = make_float4(acc[4 * m], acc[4 * m + 1], acc[4 * m + 2], acc[4 * m + 3]);
    }
#ifdef WV_PROBE_NO_SLABS
    return;  // measurement only (chain_probe.cu built with it): no end-of-block reduction, no slabs
#endif
    asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
    tl_stamp(tl, 2);
    // The block's tiles: sum the warps' partials in order into this block's slab of each.
    if (n <= 0) return;
    const int t1 = (u1 - 1) / KB;
    for (int i = threadIdx.x; i < (t1 - t0 + 1) * 128; i += MW * 32) {
        const int seg = i >> 7, c = i & 127, t = t0 + seg;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < MW; ++w) v += red[(seg * MW + w) * 128 + c];
        const int first = unit_block((long long)t * KB, P, U);
        out[(size_t)(b - first) * ldo + (size_t)t * 128 + c] = v;
        if (EPI == EPI_NONE && b == first) {
            const int last = unit_block((long long)(t + 1) * KB - 1, P, U);
            for (int sl = last - first + 1; sl < S; ++sl) out[(size_t)sl * ldo + (size_t)t * 128 + c] = 0.f;
        }
    }
    if (EPI == EPI_NONE) return;
    // The epilogue: warp i takes the block's i-th tile (at most MSEG <= MW of them, so all at
    // once); the last of the tile's blocks (SILU: of the gate / up tile pair's) to count itself
    // in counters[key] — which it resets for the next launch — sums the key's slabs in slab
    // order and finishes it, lane l holding columns 4l .. 4l + 3 (see the top).
    asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
    // Returns 1 where this warp finished its tile.
    auto finish_tile = [&]() -> int {
        const int t = t0 + warp, half = (N >> 7) >> 1;
        if (t > t1) return 0;
        int key = t, need = tile_blocks(t, KB, P, U);
        if (EPI == EPI_SILU) {
            key = t < half ? t : t - half;
            need = tile_blocks(key, KB, P, U) + tile_blocks(key + half, KB, P, U);
        }
        // What the tile's finish reads besides the slabs, requested before the count (nothing
        // else writes it in this launch): one round trip fewer after it.
        const int c = key * 128 + 4 * lane;
        const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
        float4 pre_x = zero, pre_w = zero, pre_b = zero, pre_b2 = zero;
        if (EPI == EPI_RESID) {
            pre_x = __ldcg(reinterpret_cast<const float4*>(resid + c));
            if (normw) pre_w = *reinterpret_cast<const float4*>(normw + c);
        }
        if (ebias) {
            pre_b = *reinterpret_cast<const float4*>(ebias + c);
            if (EPI == EPI_SILU) pre_b2 = *reinterpret_cast<const float4*>(ebias + (N >> 1) + c);
        }
        // q|k|v: the RoPE table's cos / sin for this lane's pairs at the step's position (NaN
        // past the table, as qkv_rope).
        const float nan = __int_as_float(0x7fc00000);
        float4 pre_c0 = make_float4(nan, nan, nan, nan), pre_c1 = pre_c0;
        if (EPI == EPI_ROPE && key < nh + nkv && pstep < npos) {
            const float4* rp = reinterpret_cast<const float4*>(rope + ((size_t)pstep * 64 + 4 * (lane & 15)) * 2);
            pre_c0 = rp[0];
            pre_c1 = rp[1];
        }
        // The block's slab stores (every consumer thread's, ordered by the barrier above) are
        // released by the count (the pattern of CUTLASS's split-K semaphore), and the slabs read
        // after it only by the last block.
        int last = 0;
        if (lane == 0) {
            // One acquire-release atomic (release: this block's slabs, ordered before it by the
            // barrier; acquire: the other blocks' slabs for the last one) — not two sequentially
            // consistent fences, which cost the step 1.5% (fifteenth session).
            int old;
            asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(counters + key) : "memory");
            last = old == need - 1;
        }
        if (!__shfl_sync(0xffffffffu, last, 0)) return 0;
        auto tile_sum = [&](float4 v, int col, int ns) {
    #pragma unroll 4
            for (int sl = 0; sl < ns; ++sl) {
                const float4 e = __ldcg(reinterpret_cast<const float4*>(out + (size_t)sl * ldo + col));
                v = make_float4(v.x + e.x, v.y + e.y, v.z + e.z, v.w + e.w);
            }
            return v;
        };
        const int ns = tile_blocks(key, KB, P, U);
        if (EPI == EPI_RESID) {
            float4 v = tile_sum(pre_x, c, ns);
            if (ebias) v = make_float4(v.x + pre_b.x, v.y + pre_b.y, v.z + pre_b.z, v.w + pre_b.w);
            *reinterpret_cast<float4*>(resid + c) = v;
            const float v2 = warp_sum((v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w));
            if (lane == 0) ss[key] = v2;
            if (normw) {
                const float4 w = pre_w;
                warp_digits(make_float4(v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w), key, xq_out, digits_sums(xq_out, N));
            }
        } else if (EPI == EPI_SILU) {
            const int F = N >> 1;
            float4 g = tile_sum(zero, c, ns), u = tile_sum(zero, F + c, tile_blocks(key + half, KB, P, U));
            g = make_float4(g.x * r, g.y * r, g.z * r, g.w * r);
            u = make_float4(u.x * r, u.y * r, u.z * r, u.w * r);
            if (ebias) {
                g = make_float4(g.x + pre_b.x, g.y + pre_b.y, g.z + pre_b.z, g.w + pre_b.w);
                u = make_float4(u.x + pre_b2.x, u.y + pre_b2.y, u.z + pre_b2.z, u.w + pre_b2.w);
            }
            warp_digits(make_float4(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w), key, xq_out,
                        digits_sums(xq_out, F));
        } else {
            // q|k|v, tile = head `key`: v = r Σ (+ bias); RoPE (rotate-half, head dim 128) as
            // qkv_rope — products rounded before the sum, so q and k match the CPU backend's given
            // the same inputs. Lane l < 16 holds pairs' first halves (columns 4l ..), lane l + 16
            // their second halves.
            float4 v = tile_sum(zero, c, ns);
            v = make_float4(v.x * r, v.y * r, v.z * r, v.w * r);
            if (ebias) v = make_float4(v.x + pre_b.x, v.y + pre_b.y, v.z + pre_b.z, v.w + pre_b.w);
            const int p = pstep, kvd = nkv * 128;
            float o[4] = {v.x, v.y, v.z, v.w};
            if (key < nh + nkv) {
                const float cs[8] = {pre_c0.x, pre_c0.y, pre_c0.z, pre_c0.w, pre_c1.x, pre_c1.y, pre_c1.z, pre_c1.w};
                const bool first = lane < 16;
    #pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const float mine = o[i], other = __shfl_xor_sync(0xffffffffu, mine, 16);
                    const float co = cs[2 * i], si = cs[2 * i + 1];
                    // first half: a c - b s; second half: b c + a s (a = first, b = second).
                    o[i] = first ? __fsub_rn(__fmul_rn(mine, co), __fmul_rn(other, si))
                                 : __fadd_rn(__fmul_rn(mine, co), __fmul_rn(other, si));
                }
            }
            if (key < nh) {
                *reinterpret_cast<float4*>(qout + key * 128 + 4 * lane) = make_float4(o[0], o[1], o[2], o[3]);
            } else {
                f16* dst = key < nh + nkv ? kc + (size_t)p * kvd + (key - nh) * 128 : vc + (size_t)p * kvd + (key - nh - nkv) * 128;
                *reinterpret_cast<uint2*>(dst + 4 * lane) = make_uint2(pack2(o[0], o[1]), pack2(o[2], o[3]));
            }
        }
        if (lane == 0) counters[key] = 0;
        return 1;
    };
    const int finished = finish_tile();
#if MMA_ATTN
    if (EPI == EPI_ROPE && xq_out) rope_attention(finished, t0 + warp, nh, nkv, qout, kc, vc, pstep, counters, xq_out, red, tl);
#else
    (void)finished;
#endif
}

template <int EPI>
__device__ __forceinline__ void gemv_q4m_body(MMA_PARAMS) {
    tl_stamp(tl, 0);
    gemv_q4m_work<EPI>(MMA_ARGS);
    if (MMA_TIMELINE && tl && (threadIdx.x >> 5) < MW) {
        asm volatile("bar.sync 1, %0;" ::"n"(MW * 32) : "memory");
        tl_stamp(tl, 3);
    }
}

extern "C" __global__ void __launch_bounds__(32 * (MW + 1), MMA_MINB) gemv_q4m(MMA_PARAMS) {
    gemv_q4m_body<EPI_NONE>(MMA_ARGS);
}
// o and down: the residual add, its sums of squares and the next product's digits.
extern "C" __global__ void __launch_bounds__(32 * (MW + 1), MMA_MINB) gemv_q4m_resid(MMA_PARAMS) {
    gemv_q4m_body<EPI_RESID>(MMA_ARGS);
}
// q|k|v: the norm's scale, RoPE, q out and the step's K and V into the cache.
extern "C" __global__ void __launch_bounds__(32 * (MW + 1), MMA_MINB) gemv_q4m_rope(MMA_PARAMS) {
    gemv_q4m_body<EPI_ROPE>(MMA_ARGS);
}
// gate|up: the norm's scale, SiLU(gate) · up as down's digits.
extern "C" __global__ void __launch_bounds__(32 * (MW + 1), MMA_MINB) gemv_q4m_silu(MMA_PARAMS) {
    gemv_q4m_body<EPI_SILU>(MMA_ARGS);
}
