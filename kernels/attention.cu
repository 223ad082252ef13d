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
