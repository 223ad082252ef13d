// elementwise.cu — the consumers of the q|k|v and gate|up products.
//
// qkv_rope / qkv_rope4: the attention input. part holds the q|k|v product as S partial slabs of
//   [T][ld], ld = (nh + 2*nkv)*hd columns: q heads, then k heads, then v heads (+ bias[col] if
//   bias != NULL). q heads get RoPE (rotate-half) and go to qout f32 [T, nh*hd]; k heads get RoPE
//   and go to the f16 cache kc[pos + t, kvh*hd + d]; v heads go to vc likewise (kc, vc: this
//   layer's [capacity, nkv*hd]).
//   cos and sin come from the table rope f32 [npos][hd/2][2]: (cos, sin) of position p, pair j at
//   rope[(p*hd/2 + j)*2], made on the host at load (weights.rs rope_table) as transformers and the
//   CPU backend compute them: f32 angle = f32(p) * f32 inverse frequency, cos/sin in double,
//   rounded to f32; the rotation rounds each product (no FMA), so q and k equal the CPU
//   backend's bit for bit (K after the same f16 rounding). A position p >= npos (never passed: the backend refuses positions past
//   max_position_embeddings) reads nothing and yields NaN for q and k.
//   The position is `pos`, or *dpos when dpos != NULL (decode reads it from device memory, so one
//   captured CUDA graph serves every step).
//   Launch: 1-D grid-stride over the T*(nh + 2*nkv)*(hd/2)/V work items, block 256 and at most
//   8 blocks per SM for large counts (prefill), block 64 and one item per thread for small ones
//   (decode: more SMs share the latency-bound loads); any block of a multiple of 32 up to 256
//   works. Item (t, head, k) rotates the V consecutive pairs (j, j + hd/2), j = V*k .. V*k+V-1:
//   consecutive threads take consecutive pairs of one head, then the next head, then the next
//   token (coalesced). qkv_rope: V = 1, any even hd. qkv_rope4: V = 4 (16-byte loads of part and
//   qout stores, 8-byte K/V stores, two 16-byte table loads); needs hd % 8 == 0, part, bias, rope
//   16-byte aligned, qout 16-byte and kc, vc 8-byte aligned, sstride % 4 == 0. The work items
//   must fit an int (the host checks).
// silu_mul / silu_mul4: out[t, i] = f16(silu(g) * u), g = column i and u = column F + i of the
//   gate|up product (S slabs of [T][2F], + bias). Launch: 1-D grid-stride, blocks as qkv_rope's.
//   silu_mul: one element per step, any F. silu_mul4: 4 consecutive columns per step (16-byte
//   loads of g and u, an 8-byte store of 4 f16); needs F % 4 == 0, part and bias 16-byte aligned,
//   out 8-byte aligned, sstride % 4 == 0 and T*F/4 to fit an int. xq (decode, T = 1, F % 128 ==
//   0, blocks a multiple of 32 threads; else NULL): out also as gemv_q4m's input digits.

// N consecutive floats from p into v (p aligned to min(N, 4) floats).
template <int N>
__device__ __forceinline__ void ld_f32(const float* __restrict__ p, float (&v)[N]) {
    if constexpr (N == 1) {
        v[0] = *p;
    } else if constexpr (N == 2) {
        const float2 a = *reinterpret_cast<const float2*>(p);
        v[0] = a.x;
        v[1] = a.y;
    } else {
        static_assert(N % 4 == 0, "N must be 1, 2 or a multiple of 4");
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            const float4 a = *reinterpret_cast<const float4*>(p + i);
            v[i] = a.x;
            v[i + 1] = a.y;
            v[i + 2] = a.z;
            v[i + 3] = a.w;
        }
    }
}

template <int N>
__device__ __forceinline__ void st_f32(float* __restrict__ p, const float (&v)[N]) {
    if constexpr (N == 1) {
        *p = v[0];
    } else {
        static_assert(N % 4 == 0, "N must be 1 or a multiple of 4");
#pragma unroll
        for (int i = 0; i < N; i += 4)
            *reinterpret_cast<float4*>(p + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
    }
}

// N floats to f16 at p (p aligned to N f16 for N = 1, 2, 4).
template <int N>
__device__ __forceinline__ void st_f16(f16* __restrict__ p, const float (&v)[N]) {
    if constexpr (N == 1) {
        *p = f2h(v[0]);
    } else if constexpr (N == 2) {
        *reinterpret_cast<u32*>(p) = pack2(v[0], v[1]);
    } else {
        static_assert(N == 4, "N must be 1, 2 or 4");
        *reinterpret_cast<uint2*>(p) = make_uint2(pack2(v[0], v[1]), pack2(v[2], v[3]));
    }
}

// a = Σ_s part[s*sstride + ia .. + N], b likewise from ib (slab 0 first, as sum_partials).
template <int N>
__device__ __forceinline__ void ld_partials2(const float* __restrict__ part, int S, long long sstride,
                                             long long ia, long long ib, float (&a)[N], float (&b)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) a[i] = b[i] = 0.f;
#pragma unroll 2
    for (int s = 0; s < S; ++s) {
        float x[N], y[N];
        ld_f32<N>(part + s * sstride + ia, x);
        ld_f32<N>(part + s * sstride + ib, y);
#pragma unroll
        for (int i = 0; i < N; ++i) {
            a[i] += x[i];
            b[i] += y[i];
        }
    }
}

template <int V>
__device__ __forceinline__ void qkv_rope_body(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    float* __restrict__ qout, f16* __restrict__ kc, f16* __restrict__ vc, const float* __restrict__ rope,
    int npos, int pos, const int* __restrict__ dpos, int nh, int nkv, int hd, int T)
{
    pdl_between_products();
    const int pos0 = dpos ? *dpos : pos;
    const int half = hd >> 1, nv = half / V, nhead = nh + 2 * nkv;
    const int ld = nhead * hd, kvd = nkv * hd;
    const int per_t = nhead * nv, total = per_t * T;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const int t = idx / per_t;
        const int r = idx - t * per_t;
        const int hh = r / nv;
        const int j = (r - hh * nv) * V;
        const int col = hh * hd + j;
        const long long base = (long long)t * ld + col;
        float a[V], b[V];
        ld_partials2<V>(part, S, sstride, base, base + half, a, b);
        if (bias) {
            float ba[V], bb[V];
            ld_f32<V>(bias + col, ba);
            ld_f32<V>(bias + col + half, bb);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                a[i] += ba[i];
                b[i] += bb[i];
            }
        }
        const int p = pos0 + t;
        if (hh >= nh + nkv) {
            f16* __restrict__ v = vc + (size_t)p * kvd + (hh - nh - nkv) * hd + j;
            st_f16<V>(v, a);
            st_f16<V>(v + half, b);
            continue;
        }
        float cs[2 * V];
        if (p < npos) {
            ld_f32<2 * V>(rope + ((size_t)p * half + j) * 2, cs);
        } else {
#pragma unroll
            for (int i = 0; i < 2 * V; ++i) cs[i] = __int_as_float(0x7fc00000);
        }
        // Products rounded before the sum (no FMA contraction), as the CPU backend and
        // transformers: with the table, q and k match them exactly.
        float na[V], nb[V];
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const float c = cs[2 * i], s = cs[2 * i + 1];
            na[i] = __fsub_rn(__fmul_rn(a[i], c), __fmul_rn(b[i], s));
            nb[i] = __fadd_rn(__fmul_rn(b[i], c), __fmul_rn(a[i], s));
        }
        if (hh < nh) {
            float* __restrict__ q = qout + (size_t)t * nh * hd + col;
            st_f32<V>(q, na);
            st_f32<V>(q + half, nb);
        } else {
            f16* __restrict__ k = kc + (size_t)p * kvd + (hh - nh) * hd + j;
            st_f16<V>(k, na);
            st_f16<V>(k + half, nb);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) qkv_rope(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    float* __restrict__ qout, f16* __restrict__ kc, f16* __restrict__ vc, const float* __restrict__ rope,
    int npos, int pos, const int* __restrict__ dpos, int nh, int nkv, int hd, int T)
{
    qkv_rope_body<1>(part, S, sstride, bias, qout, kc, vc, rope, npos, pos, dpos, nh, nkv, hd, T);
}

extern "C" __global__ void __launch_bounds__(256) qkv_rope4(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    float* __restrict__ qout, f16* __restrict__ kc, f16* __restrict__ vc, const float* __restrict__ rope,
    int npos, int pos, const int* __restrict__ dpos, int nh, int nkv, int hd, int T)
{
    qkv_rope_body<4>(part, S, sstride, bias, qout, kc, vc, rope, npos, pos, dpos, nh, nkv, hd, T);
}

extern "C" __global__ void __launch_bounds__(256) silu_mul(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    f16* __restrict__ out, int F, int T)
{
    pdl_between_products();
    const long long total = (long long)T * F;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long t = idx / F;
        const int i = (int)(idx % F);
        const long long base = t * 2 * F;
        float g = sum_partials(part, S, sstride, base + i);
        float u = sum_partials(part, S, sstride, base + F + i);
        if (bias) {
            g += bias[i];
            u += bias[F + i];
        }
        out[idx] = f2h(silu(g) * u);
    }
}

extern "C" __global__ void __launch_bounds__(256) silu_mul4(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    f16* __restrict__ out, int F, int T, u32* __restrict__ xq)
{
    pdl_between_products();
    const int F4 = F >> 2, total = F4 * T;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const int t = idx / F4;
        const int i = (idx - t * F4) << 2;
        const long long base = (long long)t * 2 * F + i;
        float g[4], u[4];
        ld_partials2<4>(part, S, sstride, base, base + F, g, u);
        if (bias) {
            float bg[4], bu[4];
            ld_f32<4>(bias + i, bg);
            ld_f32<4>(bias + F + i, bu);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                g[k] += bg[k];
                u[k] += bu[k];
            }
        }
        float o[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) o[k] = silu(g[k]) * u[k];
        st_f16<4>(out + (size_t)idx * 4, o);
        // The next product's input digits (T = 1, F % 128 == 0: a warp's 32 chunks are one
        // 128-input block and idx < total is warp-uniform).
        if (xq) warp_digits(make_float4(o[0], o[1], o[2], o[3]), idx >> 5, xq, digits_sums(xq, F));
    }
}

// gather_cols: out[t, i] = x[t, perm[i]] for x f16 [T][K]: a prefill input in the sorted row
//   order of an act-order 4-bit matrix (perm: sorted row i is the checkpoint's row perm[i]), for
//   the fused product, which reads the weights as sorted. Two launch shapes (block 256):
//   staged = 1: grid (T), block t copies row t into shared memory (K * 2 bytes of dynamic
//     shared memory, 16-byte loads), then writes 8 gathered outputs per thread per step (two
//     16-byte loads of perm, one 16-byte store); needs K % 8 == 0 and 16-byte aligned rows.
//   staged = 0: 1-D grid-stride over T*K, one element per step, any K.
//   A small kernel between products: it triggers the next at entry.
extern "C" __global__ void __launch_bounds__(256) gather_cols(
    const f16* __restrict__ x, const int* __restrict__ perm, f16* __restrict__ out, int K, int T, int staged)
{
    extern __shared__ __align__(16) unsigned char gather_smem[];
    pdl_between_products();
    if (staged) {
        const uint4* __restrict__ src = reinterpret_cast<const uint4*>(x + (size_t)blockIdx.x * K);
        uint4* xs4 = reinterpret_cast<uint4*>(gather_smem);
        const f16* xs = reinterpret_cast<const f16*>(gather_smem);
        for (int j = threadIdx.x; j < (K >> 3); j += blockDim.x) xs4[j] = src[j];
        __syncthreads();
        uint4* __restrict__ dst = reinterpret_cast<uint4*>(out + (size_t)blockIdx.x * K);
        const int4* __restrict__ p4 = reinterpret_cast<const int4*>(perm);
        for (int j = threadIdx.x; j < (K >> 3); j += blockDim.x) {
            const int4 a = p4[2 * j], b = p4[2 * j + 1];
            dst[j] = make_uint4((u32)xs[a.x] | ((u32)xs[a.y] << 16), (u32)xs[a.z] | ((u32)xs[a.w] << 16),
                                (u32)xs[b.x] | ((u32)xs[b.y] << 16), (u32)xs[b.z] | ((u32)xs[b.w] << 16));
        }
        return;
    }
    const long long total = (long long)K * T;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long t = idx / K;
        out[idx] = x[t * K + perm[idx - t * K]];
    }
}

// read_sweep: a read-bandwidth probe for benchmarks (not used by the model). Every thread reads
// 16-byte words p[i], p[i + stride], … (stride = all threads), `UNROLL` loads in flight at a
// time, folding them into an xor that is written only if it equals a value no input makes, so
// the loads cannot be dropped. n = words. Grid: any; block 256.
template <int UNROLL>
__device__ __forceinline__ void read_sweep_body(const uint4* __restrict__ p, long long n, u32* __restrict__ out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    u32 acc = 0u;
    for (; i + (UNROLL - 1) * stride < n; i += UNROLL * stride) {
        uint4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) v[u] = __ldg(p + i + u * stride);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n; i += stride) {
        const uint4 v = __ldg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) out[0] = acc;
}
extern "C" __global__ void __launch_bounds__(256) read_sweep(const uint4* __restrict__ p, long long n, u32* __restrict__ out) {
    read_sweep_body<8>(p, n, out);
}
