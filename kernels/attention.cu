// attention.cu — causal softmax attention over the f16 KV cache, split over the sequence
// (flash-decoding: partial results per chunk of keys, then a combine).
//
// Layout: q f32 [T, nh*hd] (RoPE applied); kc, vc f16 [capacity, nkv*hd] for this layer with
// positions 0 .. pos+T-1 filled; query t is at position pos+t and sees keys 0 .. pos+t; head h reads
// KV head h / (nh/nkv). scale = 1/sqrt(hd). hd % 4 == 0 and hd <= 256. The position is `pos`, or
// *dpos when dpos != NULL (decode: one captured CUDA graph serves every step; chunks past the keys
// are empty and cost little).
//
// attn_partial: grid (nh, nch, T), block 128 (4 warps). Block (h, c, t) takes keys
//   [c*chunk, min(pos+t+1, (c+1)*chunk)): warp w the keys ≡ w (mod 4), ATT_KB (8) at a time, the
//   batch's K and V rows all requested before any is used (lanes hold 4 consecutive dims each: one
//   8-byte load per row), with its own online softmax (running max and sum); the four warps'
//   results are combined at the end (the only block barrier). Writes the unnormalised output
//   po[((t*nch + c)*nh + h)*hd + d] and (max, sum) pml[((t*nch + c)*nh + h)*2 + {0,1}]; an empty
//   range writes (-inf, 0) and zeros. Dynamic shared memory: (4*hd + 8) floats. attn_partial takes
//   hd <= 128, attn_partial_wide hd <= 256 (twice the registers per key).
// attn_combine: grid (nh, T), block 128: out f16 [T, nh*hd] = Σ_c po_c e^(m_c - M) / Σ_c l_c e^(m_c - M)
//   (xq, decode with hd = 128 only, else NULL: also as gemv_q4m's input digits, a head per block)
//   (one pass, M the running max).
// attn_prefill_64/32: prefill (T > 1, host pos), SIMT f32; see their comment further down.
// attn_prefill_tc_{64,128}: prefill on the tensor cores (FlashAttention-2 forward), the default
//   for hd % 16 == 0 and hd <= 128 (_64 for hd <= 64, _128 above; a smaller hd is zero-padded to
//   HD = 64 / 128, hd % 8 == 0 is what the loads need). Grid (nh, ceil(T/64)), block 128 = 4 warps;
//   block (h, y) takes queries t0 .. t0+63 with t0 = 64 (gridDim.y-1-y) (latest tiles, which have
//   the most keys, first), warp w rows t0+16w .. t0+16w+15. q is read once into mma A fragments
//   (f32 → f16, times scale·log2 e: the softmax uses exp2); keys 0 .. pos+min(T, t0+64)-1 go
//   through shared memory in tiles of 64, K and V each [64][HD+8] f16 (padded rows: ldmatrix
//   conflict-free), loaded with cp.async (rows past the keys and dims past hd zero-filled, never
//   read), V(j) in flight during S(j) = Q·K(j)ᵀ, K(j+1) during P·V(j). S: mma m16n8k16 with K
//   via ldmatrix; causal mask (key > query position → -inf) where the tile crosses the warp's
//   rows; online softmax in f32 per row (a row on the 4 lanes of a quad); P packed to f16 is the
//   A fragment of O += P·V (V via ldmatrix.trans); O (f32, registers) / l → out f16, rows < T.
//   A warp skips tiles all of whose keys are past its rows. Dynamic shared memory
//   2·64·(HD+8)·2 bytes: 34,816 (_128) / 18,432 (_64), under the 48 KB default.

#define ATT_WARPS 4
#ifndef ATT_KB
#define ATT_KB 8  // keys per warp per batch in attn_partial
#endif

#define ATT_PARTIAL_PARAMS                                                                             \
    const float *__restrict__ q, const f16 *__restrict__ kc, const f16 *__restrict__ vc,                \
        float *__restrict__ po, float *__restrict__ pml, int pos, const int *__restrict__ dpos, int nh, \
        int nkv, int hd, int chunk, int nch, float scale

// NI: 8-byte pieces of a row per lane (1: hd <= 128, 2: hd <= 256).
template <int NI>
__device__ __forceinline__ void attn_partial_body(ATT_PARTIAL_PARAMS)
{
    pdl_between_products();
    if (dpos) pos = *dpos;
    extern __shared__ float sm[];
    float* ow = sm;                     // [ATT_WARPS][hd]: each warp's unnormalised output
    float* st = ow + ATT_WARPS * hd;    // [ATT_WARPS][2]: each warp's (max, sum)
    const int h = blockIdx.x, c = blockIdx.y, t = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = h / (nh / nkv);
    const int kvd = nkv * hd;
    const int n_keys = pos + t + 1;
    const int p_begin = c * chunk;
    const int p_end = min(n_keys, p_begin + chunk);
    // Lane holds dims 4v .. 4v+3 for v = lane + 32i, i < NI (v < hd / 4).
    const int nv = hd >> 2;
    float qr[4 * NI], acc[4 * NI];
#pragma unroll
    for (int i = 0; i < NI; ++i) {
        const int v = lane + 32 * i;
        const float4 qq = v < nv ? *reinterpret_cast<const float4*>(q + (size_t)t * nh * hd + (size_t)h * hd + 4 * v)
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
        qr[4 * i] = qq.x;
        qr[4 * i + 1] = qq.y;
        qr[4 * i + 2] = qq.z;
        qr[4 * i + 3] = qq.w;
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[4 * i + e] = 0.f;
    }
    // Each warp runs its own online softmax over keys p_begin + warp + ATT_WARPS * j, a batch of
    // ATT_KB keys at a time whose K and V rows are all requested before any is used (one memory
    // round trip per batch, no block barrier); the warps' results meet at the end.
    float m = NEG_INF, l = 0.f;
    warp_online_softmax<NI, ATT_KB, false>(qr, kc + (size_t)kvh * hd, vc + (size_t)kvh * hd, kvd, nv, p_begin + warp,
                                           ATT_WARPS, p_end, scale, m, l, acc);
#pragma unroll
    for (int i = 0; i < NI; ++i) {
        const int v = lane + 32 * i;
        if (v < nv) {
#pragma unroll
            for (int e = 0; e < 4; ++e) ow[warp * hd + 4 * v + e] = acc[4 * i + e];
        }
    }
    if (lane == 0) {
        st[2 * warp] = m;
        st[2 * warp + 1] = l;
    }
    __syncthreads();
    // Combine the warps: weights e^(m_w - M) for the warps that saw keys (none: (-inf, 0), zeros).
    float M = NEG_INF, wt[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; ++w)
        if (st[2 * w + 1] > 0.f) M = fmaxf(M, st[2 * w]);
    float L = 0.f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; ++w) {
        wt[w] = st[2 * w + 1] > 0.f ? expf(st[2 * w] - M) : 0.f;
        L += wt[w] * st[2 * w + 1];
    }
    const size_t ob = (size_t)(t * nch + c) * nh + h;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) o += wt[w] * ow[w * hd + d];
        po[ob * hd + d] = o;
    }
    if (threadIdx.x == 0) {
        pml[ob * 2] = M;
        pml[ob * 2 + 1] = L;
    }
}

#ifndef ATT_MINB
#define ATT_MINB 8  // attn_partial's __launch_bounds__ minimum blocks per SM
#endif
extern "C" __global__ void __launch_bounds__(128, ATT_MINB) attn_partial(ATT_PARTIAL_PARAMS) {
    attn_partial_body<1>(q, kc, vc, po, pml, pos, dpos, nh, nkv, hd, chunk, nch, scale);
}
// Head sizes 129..256.
extern "C" __global__ void __launch_bounds__(128) attn_partial_wide(ATT_PARTIAL_PARAMS) {
    attn_partial_body<2>(q, kc, vc, po, pml, pos, dpos, nh, nkv, hd, chunk, nch, scale);
}

#ifndef ATT_COMBINE_BATCH
#define ATT_COMBINE_BATCH 32  // chunks whose partials attn_combine requests at once
#endif
extern "C" __global__ void __launch_bounds__(128) attn_combine(
    const float* __restrict__ po, const float* __restrict__ pml, f16* __restrict__ out, int nch, int nh, int hd,
    u32* __restrict__ xq)
{
    pdl_between_products();
    __shared__ __align__(16) float head[128];
    const int h = blockIdx.x, t = blockIdx.y;
    // One pass per output element over batches of ATT_COMBINE_BATCH chunks whose loads are all
    // requested before any is used (one round trip per batch: the 32 chunks of a 2,048-key plan
    // in one; two dependent passes over the (max, sum) pairs first cost two more round trips on
    // the step's critical path), rescaling as the running max grows from batch to batch. Empty
    // chunks wrote (-inf, 0) and zeros. The batches start at chunk 0 whatever nch is, so plans
    // that differ only in empty chunks at the end give the same output bit for bit.
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = NEG_INF, L = 0.f, o = 0.f;
        for (int c0 = 0; c0 < nch; c0 += ATT_COMBINE_BATCH) {
            float mc[ATT_COMBINE_BATCH], lc[ATT_COMBINE_BATCH], pc[ATT_COMBINE_BATCH];
#pragma unroll
            for (int j = 0; j < ATT_COMBINE_BATCH; ++j) {
                const size_t ob = (size_t)(t * nch + c0 + j) * nh + h;
                const bool ok = c0 + j < nch;
                mc[j] = ok ? pml[ob * 2] : NEG_INF;
                lc[j] = ok ? pml[ob * 2 + 1] : 0.f;
                pc[j] = ok ? po[ob * hd + d] : 0.f;
            }
            // The batch's maximum first, so that its exponentials do not wait for each other.
            float bm = NEG_INF;
#pragma unroll
            for (int j = 0; j < ATT_COMBINE_BATCH; ++j)
                if (lc[j] > 0.f) bm = fmaxf(bm, mc[j]);
            if (bm == NEG_INF) continue;  // every chunk of the batch empty (the same for all d)
            const float mn = fmaxf(M, bm);
            float lb = 0.f, ob = 0.f;
#pragma unroll
            for (int j = 0; j < ATT_COMBINE_BATCH; ++j) {
                const float e = lc[j] > 0.f ? expf(mc[j] - mn) : 0.f;
                lb += lc[j] * e;
                ob += pc[j] * e;
            }
            const float a = expf(M - mn);  // 0 while M is -inf (L and o are 0 then)
            L = L * a + lb;
            o = o * a + ob;
            M = mn;
        }
        out[(size_t)t * nh * hd + (size_t)h * hd + d] = f2h(o / L);
        if (xq) head[d] = o / L;
    }
    // The next product's input digits (one token, hd = 128: the head is one 128-input block).
    if (xq) {
        __syncthreads();
        if (threadIdx.x < 32)
            warp_digits(reinterpret_cast<const float4*>(head)[threadIdx.x], h, xq, digits_sums(xq, nh * hd));
    }
}

// attn_prefill_{64,32}: prefill attention, one block per (head h, tile of QT consecutive queries),
//   all keys 0 .. pos+t in tiles of KT staged in shared memory (so each K/V row is read from memory
//   once per QT queries instead of once per query), online softmax, output written directly.
//   _64: hd <= 128 (KT = 64 keys, QT = 16 queries, 64 dim-pairs per thread group);
//   _32: hd <= 256 (KT = 32, QT = 8, 128 dim-pairs). hd % 4 == 0.
//   Scores: thread (kj = tid % KT, query group tid / KT) computes QT/(128/KT) dot products; K rows
//   are padded by one word in shared memory so the lanes' reads fall in distinct banks.
//   P·V: thread (dim pair tid % PW, query group tid / PW) keeps 2 x QT/(128/PW) outputs in registers.
//   Launch: grid (nh, ceil(T/QT)), block 128, dynamic shared memory
//   QT*hd*4 + KT*(hd+2)*2 + KT*hd*2 + QT*(KT+1)*4 + 3*QT*4 bytes (< 48 KB for both variants).
template <int KT, int QT, int PW>
__device__ __forceinline__ void attn_prefill_impl(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc, f16* __restrict__ out,
    int pos, int T, int nh, int nkv, int hd, float scale)
{
    extern __shared__ __align__(16) float smf[];
    constexpr int GS = 128 / KT;      // query groups for scores
    constexpr int QS = QT / GS;       // queries per thread (scores)
    constexpr int GV = 128 / PW;      // query groups for P·V
    constexpr int QV = QT / GV;       // queries per thread (P·V)
    const int h = blockIdx.x, t0 = blockIdx.y * QT, tid = threadIdx.x;
    const int kvh = h / (nh / nkv), kvd = nkv * hd, hw = hd >> 1, kw = hw + 1;
    float* Qs = smf;                                       // [QT][hd]
    u32* Ks = reinterpret_cast<u32*>(Qs + QT * hd);        // [KT][kw] f16 pairs, padded
    u32* Vs = Ks + KT * kw;                                // [KT][hw] f16 pairs
    float* S = reinterpret_cast<float*>(Vs + KT * hw);     // [QT][KT+1]
    float* M = S + QT * (KT + 1);                          // running max
    float* L = M + QT;                                     // running sum
    float* C = L + QT;                                     // this tile's correction
    for (int i = tid; i < QT * hd; i += 128) {
        const int qi = i / hd, d = i % hd;
        Qs[i] = t0 + qi < T ? q[(size_t)(t0 + qi) * nh * hd + (size_t)h * hd + d] : 0.f;
    }
    if (tid < QT) {
        M[tid] = NEG_INF;
        L[tid] = 0.f;
    }
    const int last_q = min(T, t0 + QT) - 1;
    const int n_keys = pos + last_q + 1;
    const int kj = tid % KT, qs0 = (tid / KT) * QS;
    const int dp = tid % PW, qv0 = (tid / PW) * QV;
    float o[QV][2];
#pragma unroll
    for (int i = 0; i < QV; ++i) o[i][0] = o[i][1] = 0.f;
    const f16* __restrict__ kb = kc + (size_t)kvh * hd;
    const f16* __restrict__ vb = vc + (size_t)kvh * hd;
    for (int k0 = 0; k0 < n_keys; k0 += KT) {
        __syncthreads();
        // Stage the K and V tile (zeros past the last key).
        const int nq = hd >> 2;
        for (int i = tid; i < KT * nq; i += 128) {
            const int j = i / nq, e = i % nq;
            uint2 kk = make_uint2(0u, 0u), vv = make_uint2(0u, 0u);
            if (k0 + j < n_keys) {
                kk = *reinterpret_cast<const uint2*>(kb + (size_t)(k0 + j) * kvd + 4 * e);
                vv = *reinterpret_cast<const uint2*>(vb + (size_t)(k0 + j) * kvd + 4 * e);
            }
            Ks[j * kw + 2 * e] = kk.x;
            Ks[j * kw + 2 * e + 1] = kk.y;
            Vs[j * hw + 2 * e] = vv.x;
            Vs[j * hw + 2 * e + 1] = vv.y;
        }
        __syncthreads();
        // Scores for key kj and this thread's queries (masked past each query's position).
        {
            float s[QS];
#pragma unroll
            for (int i = 0; i < QS; ++i) s[i] = 0.f;
            const u32* kr = Ks + kj * kw;
            for (int d2 = 0; d2 < hw; ++d2) {
                const u32 k2 = kr[d2];
                const float kx = lo2f(k2), ky = hi2f(k2);
#pragma unroll
                for (int i = 0; i < QS; ++i) {
                    const float2 qq = *reinterpret_cast<const float2*>(Qs + (qs0 + i) * hd + 2 * d2);
                    s[i] += qq.x * kx + qq.y * ky;
                }
            }
            const int key = k0 + kj;
#pragma unroll
            for (int i = 0; i < QS; ++i) {
                const int qpos = pos + t0 + qs0 + i;
                S[(qs0 + i) * (KT + 1) + kj] = key <= qpos && key < n_keys ? s[i] * scale : NEG_INF;
            }
        }
        __syncthreads();
        // Online softmax, one warp per row.
        {
            const int w = tid >> 5, lane = tid & 31;
            for (int r = w; r < QT; r += 4) {
                float* row = S + r * (KT + 1);
                float a = lane < KT ? row[lane] : NEG_INF;
                float b = lane + 32 < KT ? row[lane + 32] : NEG_INF;
                const float m_old = M[r];
                const float m_new = fmaxf(m_old, warp_max(fmaxf(a, b)));
                // m_new is finite: key 0 is visible to every query, and it is in the first tile.
                const float ea = lane < KT ? expf(a - m_new) : 0.f;
                const float eb = lane + 32 < KT ? expf(b - m_new) : 0.f;
                if (lane < KT) row[lane] = ea;
                if (lane + 32 < KT) row[lane + 32] = eb;
                const float sum = warp_sum(ea + eb);
                if (lane == 0) {
                    const float corr = expf(m_old - m_new);
                    C[r] = corr;
                    L[r] = L[r] * corr + sum;
                    M[r] = m_new;
                }
            }
        }
        __syncthreads();
        // O = O * corr + P · V for this thread's queries and dim pair.
        if (dp < hw) {
#pragma unroll
            for (int i = 0; i < QV; ++i) {
                const float c = C[qv0 + i];
                o[i][0] *= c;
                o[i][1] *= c;
            }
            for (int j = 0; j < KT; ++j) {
                const u32 v2 = Vs[j * hw + dp];
                const float vx = lo2f(v2), vy = hi2f(v2);
#pragma unroll
                for (int i = 0; i < QV; ++i) {
                    const float p = S[(qv0 + i) * (KT + 1) + j];
                    o[i][0] += p * vx;
                    o[i][1] += p * vy;
                }
            }
        }
    }
    __syncthreads();
    if (dp < hw) {
#pragma unroll
        for (int i = 0; i < QV; ++i) {
            const int t = t0 + qv0 + i;
            if (t < T) {
                const float inv = 1.f / L[qv0 + i];
                *reinterpret_cast<u32*>(out + (size_t)t * nh * hd + (size_t)h * hd + 2 * dp) =
                    pack2(o[i][0] * inv, o[i][1] * inv);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(128) attn_prefill_64(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc, f16* __restrict__ out,
    int pos, int T, int nh, int nkv, int hd, float scale)
{
    pdl_wait();
    pdl_launch();
    attn_prefill_impl<64, 16, 64>(q, kc, vc, out, pos, T, nh, nkv, hd, scale);
}

extern "C" __global__ void __launch_bounds__(128) attn_prefill_32(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc, f16* __restrict__ out,
    int pos, int T, int nh, int nkv, int hd, float scale)
{
    pdl_wait();
    pdl_launch();
    attn_prefill_impl<32, 8, 128>(q, kc, vc, out, pos, T, nh, nkv, hd, scale);
}

// ---------------------------------------------------------------------------------------------
// attn_prefill_tc_{64,128}: prefill attention on the tensor cores (FlashAttention-2 forward).
// See the layout comment at the top of this file. All matrix products are
// mma.sync.m16n8k16.row.col.f32.f16.f16.f32 (f16 operands, f32 accumulation); fragment layouts
// (g = lane >> 2, tq = lane & 3):
//   A 16x16 (4 regs): {A[g][2tq..+1], A[g+8][2tq..+1], A[g][2tq+8..+9], A[g+8][2tq+8..+9]}
//   B 16x8  (2 regs): {B[2tq..+1][g], B[2tq+8..+9][g]}
//   C 16x8  (4 f32):  {C[g][2tq], C[g][2tq+1], C[g+8][2tq], C[g+8][2tq+1]}
// (ldmatrix.x4: lane 8i+r gives the address of row r of 8x8 matrix i; register i of lane l holds
// row l/4, elements 2(l%4)..+1 of matrix i, or with .trans column l/4, rows 2(l%4)..+1.)

#define FA_QT 64   // queries per block: 4 warps x 16 rows
#define FA_KT 64   // keys per K/V tile

// The shared-space address of a generic pointer into shared memory.
__device__ __forceinline__ u32 fa_smem(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared, asynchronously; the last 16 - bytes bytes (all when bytes == 0) are
// zero-filled and not read.
__device__ __forceinline__ void fa_cp16(u32 dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void fa_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void fa_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void fa_ldsm4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void fa_ldsm4t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr)
                 : "memory");
}

// c += A · B for one 16x8x16 tile.
__device__ __forceinline__ void fa_mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 2^x (ex2.approx: 2^-inf = +0).
__device__ __forceinline__ float fa_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Stage keys k0 .. k0+FA_KT-1 of one KV head (rows of `src`, stride kvd) into a [FA_KT][HD+8]
// f16 tile at shared address dst: rows at or past n_keys and dims at or past hd are zero-filled
// (nothing is read there, so unwritten cache rows never reach the tile).
template <int HD>
__device__ __forceinline__ void fa_load_tile(u32 dst, const f16* __restrict__ src, int k0, int n_keys, int hd,
                                             int kvd, int tid) {
    constexpr int CH = HD / 8;  // 16-byte chunks per row
    constexpr int ST = HD + 8;  // row stride (f16)
#pragma unroll
    for (int it = 0; it < FA_KT * CH / 128; ++it) {
        const int i = tid + it * 128;
        const int r = i / CH, c = i % CH;
        const bool ok = k0 + r < n_keys && c * 8 < hd;
        const f16* p = ok ? src + (size_t)(k0 + r) * kvd + c * 8 : src;
        fa_cp16(dst + (u32)(r * ST + c * 8) * 2u, p, ok ? 16 : 0);
    }
}

template <int HD>
__device__ __forceinline__ void attn_prefill_tc_impl(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc, f16* __restrict__ out,
    int pos, int T, int nh, int nkv, int hd, float scale)
{
    constexpr int ST = HD + 8;   // smem row stride (f16): rows 16 bytes apart mod 128, no conflicts
    constexpr int NK = HD / 16;  // k-steps of Q·Kᵀ
    constexpr int ND = HD / 8;   // n-tiles of O
    extern __shared__ __align__(16) unsigned char fa_sm[];
    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int h = blockIdx.x;
    // The latest query tiles (the most keys) are scheduled first.
    const int t0 = (int)(gridDim.y - 1 - blockIdx.y) * FA_QT;
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const int n_keys = pos + min(T, t0 + FA_QT);  // keys seen by the block's last query
    const u32 ks = fa_smem(fa_sm);
    const u32 vs = ks + FA_KT * ST * 2;
    const f16* __restrict__ kb = kc + (size_t)kvh * hd;
    const f16* __restrict__ vb = vc + (size_t)kvh * hd;

    // This warp's query rows r0 = t0 + 16w + g and r1 = r0 + 8 as A fragments, scaled by
    // scale * log2(e) (so the softmax uses exp2); zero past T and past hd.
    const int r0 = t0 + 16 * w + g, r1 = r0 + 8;
    const float qscale = scale * 1.4426950408889634f;
    u32 qa[NK][4];
    {
        const float* q0 = q + (size_t)min(r0, T - 1) * nh * hd + (size_t)h * hd;
        const float* q1 = q + (size_t)min(r1, T - 1) * nh * hd + (size_t)h * hd;
#pragma unroll
        for (int kk = 0; kk < NK; ++kk) {
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int d = 16 * kk + 8 * hf + 2 * tq;
                float2 x0 = make_float2(0.f, 0.f), x1 = make_float2(0.f, 0.f);
                if (d < hd) {
                    if (r0 < T) x0 = *reinterpret_cast<const float2*>(q0 + d);
                    if (r1 < T) x1 = *reinterpret_cast<const float2*>(q1 + d);
                }
                qa[kk][2 * hf] = pack2(x0.x * qscale, x0.y * qscale);
                qa[kk][2 * hf + 1] = pack2(x1.x * qscale, x1.y * qscale);
            }
        }
    }

    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;  // running max (log2 units), partial sums
    const int qp0 = pos + r0, qp1 = pos + r1;               // the rows' positions
    const int wfirst = pos + t0 + 16 * w, wlast = wfirst + 15;
    const int ntiles = (n_keys + FA_KT - 1) / FA_KT;
    // ldmatrix row addresses (bytes from the tile start) for this lane:
    //   K (non-trans, 2 key n-tiles x 16 dims): key 16np + 8(lane/16) + lane%8, dim 16kk + 8((lane/8)%2)
    //   V (trans, 16 keys x 2 dim n-tiles): key 16j + 8((lane/8)%2) + lane%8, dim 16dp + 8(lane/16)
    const u32 k_lane = (u32)((((lane >> 4) << 3) + (lane & 7)) * ST + (((lane >> 3) & 1) << 3)) * 2u;
    const u32 v_lane = (u32)(((((lane >> 3) & 1) << 3) + (lane & 7)) * ST + ((lane >> 4) << 3)) * 2u;

    // Pipeline: K(j) is in flight while P·V(j-1) runs, V(j) while S(j) and its softmax run.
    fa_load_tile<HD>(ks, kb, 0, n_keys, hd, kvd, tid);
    fa_commit();
    for (int j = 0; j < ntiles; ++j) {
        const int k0 = j * FA_KT;
        fa_load_tile<HD>(vs, vb, k0, n_keys, hd, kvd, tid);
        fa_commit();
        fa_wait<1>();  // K(j) has landed (V(j) may be in flight)
        __syncthreads();
        // Whether any row of this warp sees a key of this tile (every warp does for tile 0, which
        // holds key 0: so every row's running max is finite from the first tile on).
        const bool active = k0 <= wlast;
        float s[8][4];
#pragma unroll
        for (int i = 0; i < 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
        if (active) {
#pragma unroll
            for (int kk = 0; kk < NK; ++kk) {
#pragma unroll
                for (int np = 0; np < 4; ++np) {
                    u32 b0, b1, b2, b3;
                    fa_ldsm4(ks + k_lane + (u32)(16 * np * ST + 16 * kk) * 2u, b0, b1, b2, b3);
                    fa_mma(s[2 * np], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b0, b1);
                    fa_mma(s[2 * np + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b2, b3);
                }
            }
        }
        __syncthreads();  // every warp is done with K(j): fetch K(j+1) into its place
        if (j + 1 < ntiles) fa_load_tile<HD>(ks, kb, k0 + FA_KT, n_keys, hd, kvd, tid);
        fa_commit();  // (possibly empty: keeps the group count uniform)
        if (active) {
            // Causal mask where the tile reaches past the warp's first row (this also masks every
            // key at or past n_keys for the rows t < T).
            if (k0 + FA_KT - 1 > wfirst) {
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int key = k0 + 8 * nt + 2 * tq + e;
                        if (key > qp0) s[nt][e] = NEG_INF;
                        if (key > qp1) s[nt][2 + e] = NEG_INF;
                    }
                }
            }
            float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
                mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
            }
            // A row lives on the 4 lanes of a quad.
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);  // finite (see `active`)
            const float c0 = fa_exp2(m0 - mn0), c1 = fa_exp2(m1 - mn1);  // 0 on the first tile
            m0 = mn0;
            m1 = mn1;
            float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                s[nt][0] = fa_exp2(s[nt][0] - mn0);
                s[nt][1] = fa_exp2(s[nt][1] - mn0);
                s[nt][2] = fa_exp2(s[nt][2] - mn1);
                s[nt][3] = fa_exp2(s[nt][3] - mn1);
                sum0 += s[nt][0] + s[nt][1];
                sum1 += s[nt][2] + s[nt][3];
            }
            l0 = l0 * c0 + sum0;  // this lane's share of the row sum (summed over the quad at the end)
            l1 = l1 * c1 + sum1;
#pragma unroll
            for (int dn = 0; dn < ND; ++dn) {
                o[dn][0] *= c0;
                o[dn][1] *= c0;
                o[dn][2] *= c1;
                o[dn][3] *= c1;
            }
        }
        fa_wait<1>();  // V(j) has landed (K(j+1) may be in flight)
        __syncthreads();
        if (active) {
            // O += P · V: the C fragments of S's n-tiles 2jj, 2jj+1 are the A fragment of keys
            // 16jj .. 16jj+15.
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                const u32 a0 = pack2(s[2 * jj][0], s[2 * jj][1]);
                const u32 a1 = pack2(s[2 * jj][2], s[2 * jj][3]);
                const u32 a2 = pack2(s[2 * jj + 1][0], s[2 * jj + 1][1]);
                const u32 a3 = pack2(s[2 * jj + 1][2], s[2 * jj + 1][3]);
#pragma unroll
                for (int dp = 0; dp < HD / 16; ++dp) {
                    u32 b0, b1, b2, b3;
                    fa_ldsm4t(vs + v_lane + (u32)(16 * jj * ST + 16 * dp) * 2u, b0, b1, b2, b3);
                    fa_mma(o[2 * dp], a0, a1, a2, a3, b0, b1);
                    fa_mma(o[2 * dp + 1], a0, a1, a2, a3, b2, b3);
                }
            }
        }
        __syncthreads();  // every warp is done with V(j)
    }

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
    f16* o0 = out + (size_t)r0 * nh * hd + (size_t)h * hd;
    f16* o1 = out + (size_t)r1 * nh * hd + (size_t)h * hd;
#pragma unroll
    for (int dn = 0; dn < ND; ++dn) {
        const int d = 8 * dn + 2 * tq;
        if (d < hd) {
            if (r0 < T) *reinterpret_cast<u32*>(o0 + d) = pack2(o[dn][0] * inv0, o[dn][1] * inv0);
            if (r1 < T) *reinterpret_cast<u32*>(o1 + d) = pack2(o[dn][2] * inv1, o[dn][3] * inv1);
        }
    }
}

extern "C" __global__ void __launch_bounds__(128) attn_prefill_tc_128(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc, f16* __restrict__ out,
    int pos, int T, int nh, int nkv, int hd, float scale)
{
    pdl_wait();
    pdl_launch();
    attn_prefill_tc_impl<128>(q, kc, vc, out, pos, T, nh, nkv, hd, scale);
}

extern "C" __global__ void __launch_bounds__(128) attn_prefill_tc_64(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc, f16* __restrict__ out,
    int pos, int T, int nh, int nkv, int hd, float scale)
{
    pdl_wait();
    pdl_launch();
    attn_prefill_tc_impl<64>(q, kc, vc, out, pos, T, nh, nkv, hd, scale);
}
