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
//   [c*chunk, min(pos+t+1, (c+1)*chunk)) in tiles of 64: each warp scores keys j ≡ warp (mod 4) of
//   the tile (lanes hold 4 consecutive dims each: one 8-byte load per K row), warp 0 updates the
//   running max / sum (online softmax), then each warp accumulates its keys' V rows; the four warps'
//   outputs are summed at the end. Writes the unnormalised output po[((t*nch + c)*nh + h)*hd + d]
//   and (max, sum) pml[((t*nch + c)*nh + h)*2 + {0,1}]; an empty range writes (-inf, 0) and zeros.
//   Dynamic shared memory: (5*hd + 64 + 4) floats.
// attn_combine: grid (nh, T), block 128: out f16 [T, nh*hd] = Σ_c po_c e^(m_c - M) / Σ_c l_c e^(m_c - M).

#define ATT_TILE 64
#define ATT_WARPS 4

extern "C" __global__ void __launch_bounds__(128) attn_partial(
    const float* __restrict__ q, const f16* __restrict__ kc, const f16* __restrict__ vc,
    float* __restrict__ po, float* __restrict__ pml, int pos, const int* __restrict__ dpos, int nh, int nkv, int hd,
    int chunk, int nch, float scale)
{
    pdl_wait();
    pdl_launch();
    if (dpos) pos = *dpos;
    extern __shared__ float sm[];
    float* qs = sm;                     // [hd]
    float* sc = qs + hd;                // [ATT_TILE]
    float* ow = sc + ATT_TILE;          // [ATT_WARPS][hd]
    float* st = ow + ATT_WARPS * hd;    // m_new, corr, tile sum
    const int h = blockIdx.x, c = blockIdx.y, t = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = h / (nh / nkv);
    const int kvd = nkv * hd;
    const int n_keys = pos + t + 1;
    const int p_begin = c * chunk;
    const int p_end = min(n_keys, p_begin + chunk);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[(size_t)t * nh * hd + (size_t)h * hd + d];
    __syncthreads();
    const int nv = hd >> 2;
    float qr[8], acc[8];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int v = lane + 32 * i;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            qr[4 * i + e] = v < nv ? qs[4 * v + e] : 0.f;
            acc[4 * i + e] = 0.f;
        }
    }
    float m = NEG_INF, l = 0.f;
    const f16* __restrict__ kb = kc + (size_t)kvh * hd;
    const f16* __restrict__ vb = vc + (size_t)kvh * hd;
    for (int p0 = p_begin; p0 < p_end; p0 += ATT_TILE) {
        const int len = min(ATT_TILE, p_end - p0);
#pragma unroll 4
        for (int j = warp; j < len; j += ATT_WARPS) {
            const f16* __restrict__ kr = kb + (size_t)(p0 + j) * kvd;
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int v = lane + 32 * i;
                if (v < nv) {
                    const uint2 kk = *reinterpret_cast<const uint2*>(kr + 4 * v);
                    s += qr[4 * i] * lo2f(kk.x) + qr[4 * i + 1] * hi2f(kk.x) + qr[4 * i + 2] * lo2f(kk.y) +
                         qr[4 * i + 3] * hi2f(kk.y);
                }
            }
            s = warp_sum(s);
            if (lane == 0) sc[j] = s * scale;
        }
        __syncthreads();
        if (warp == 0) {
            const float a = lane < len ? sc[lane] : NEG_INF;
            const float b = lane + 32 < len ? sc[lane + 32] : NEG_INF;
            const float m_new = fmaxf(m, warp_max(fmaxf(a, b)));
            const float ea = lane < len ? expf(a - m_new) : 0.f;
            const float eb = lane + 32 < len ? expf(b - m_new) : 0.f;
            if (lane < len) sc[lane] = ea;
            if (lane + 32 < len) sc[lane + 32] = eb;
            const float sum = warp_sum(ea + eb);
            if (lane == 0) {
                st[0] = m_new;
                st[1] = expf(m - m_new);
                st[2] = sum;
            }
        }
        __syncthreads();
        const float corr = st[1];
        m = st[0];
        l = l * corr + st[2];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] *= corr;
#pragma unroll 4
        for (int j = warp; j < len; j += ATT_WARPS) {
            const float e = sc[j];
            const f16* __restrict__ vr = vb + (size_t)(p0 + j) * kvd;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int v = lane + 32 * i;
                if (v < nv) {
                    const uint2 vv = *reinterpret_cast<const uint2*>(vr + 4 * v);
                    acc[4 * i] += e * lo2f(vv.x);
                    acc[4 * i + 1] += e * hi2f(vv.x);
                    acc[4 * i + 2] += e * lo2f(vv.y);
                    acc[4 * i + 3] += e * hi2f(vv.y);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int v = lane + 32 * i;
        if (v < nv) {
#pragma unroll
            for (int e = 0; e < 4; ++e) ow[warp * hd + 4 * v + e] = acc[4 * i + e];
        }
    }
    __syncthreads();
    const size_t ob = (size_t)(t * nch + c) * nh + h;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) s += ow[w * hd + d];
        po[ob * hd + d] = s;
    }
    if (threadIdx.x == 0) {
        pml[ob * 2] = m;
        pml[ob * 2 + 1] = l;
    }
}

extern "C" __global__ void __launch_bounds__(128) attn_combine(
    const float* __restrict__ po, const float* __restrict__ pml, f16* __restrict__ out, int nch, int nh, int hd)
{
    pdl_wait();
    pdl_launch();
    const int h = blockIdx.x, t = blockIdx.y;
    float M = NEG_INF;
    for (int c = 0; c < nch; ++c) {
        const size_t ob = (size_t)(t * nch + c) * nh + h;
        if (pml[ob * 2 + 1] > 0.f) M = fmaxf(M, pml[ob * 2]);
    }
    float L = 0.f;
    for (int c = 0; c < nch; ++c) {
        const size_t ob = (size_t)(t * nch + c) * nh + h;
        const float lc = pml[ob * 2 + 1];
        if (lc > 0.f) L += lc * expf(pml[ob * 2] - M);
    }
    const float inv = 1.f / L;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.f;
        for (int c = 0; c < nch; ++c) {
            const size_t ob = (size_t)(t * nch + c) * nh + h;
            const float lc = pml[ob * 2 + 1];
            if (lc > 0.f) o += po[ob * hd + d] * expf(pml[ob * 2] - M);
        }
        out[(size_t)t * nh * hd + (size_t)h * hd + d] = f2h(o * inv);
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
