// norm.cu — the embedding lookup and RMSNorm fused with the residual add.
//
// embed: x[t, :] = f32(table[tokens[t], :]); table f16 [vocab, H], x f32 [T, H] (the residual stream).
//   Launch: grid (T, ceil(H / 1024)), block 256 (four elements per thread; table and x 16-byte
//   aligned).
// residual_rmsnorm: for row t = row0 + blockIdx.x of the residual stream x f32 [*, H]:
//   if delta != NULL: x[t, i] += Σ_s delta[s*sstride + t*ldd + i] (+ bias[i])  — the sublayer's output,
//     as S partial slabs (see common.cuh), added to the residual in place;
//   out[blockIdx.x, i] = f16(x[t, i] * r * w[i]), r = 1 / sqrt(mean_i x[t, i]^2 + eps).
//   Launch: grid = number of rows, block 256 or 1024 (any multiple of 32 up to 1024).
// residual_rmsnorm4: the same, 4 columns per step (16-byte loads and stores of x and delta, 8-byte
//   stores of out), the row kept in registers between the sum of squares and the scaling (x is
//   read once): thread k holds the float4 chunks k, k + blockDim.x, ... (RMS4_NPT = 6 at most, so
//   H <= 24576). The row of x and slab 0 of delta are loaded together (their loads in flight at
//   once), then any further slabs; the slabs are added to x one after another (x + slab 0 +
//   slab 1 ..., the CPU backend's order; residual_rmsnorm sums the slabs first). Needs
//   H % 4 == 0, H/4 <= RMS4_NPT * blockDim.x; x, delta, bias and w 16-byte aligned, out 8-byte
//   aligned, ldd and sstride multiples of 4. Launch: grid = number of rows, block a multiple of 32
//   up to 1024 (60 registers): the host takes 256 threads (or as many as H needs) for at least
//   one row per SM (prefill: 512 rows of 5120 all resident at once, 4 blocks per SM, 5 float4
//   per thread), else up to 1024 (decode, the final norm: one row's latency is all there is).
//   xq (decode, one row, H % 128 == 0; else NULL): out also as gemv_q4m's input digits (see
//   common.cuh's warp_digits), from the f32 values.
// residual_add: x[t, i] += Σ_s delta[s*sstride + t*ldd + i] (+ bias[i]) for rows 0..T — the same
//   residual add, spread over many blocks; decode uses it before residual_rmsnorm without a delta,
//   since one block summing S slabs of a whole row would take several microseconds.
//   Launch: 1-D grid-stride over T*H, block 256.

extern "C" __global__ void __launch_bounds__(256) embed(const u32* __restrict__ tokens, const f16* __restrict__ table,
                                                        float* __restrict__ x, int H)
{
    pdl_wait();
    pdl_launch();
    const size_t t = blockIdx.x;
    const size_t tok = tokens[t];
    const f16* __restrict__ row = table + tok * H;
    float* __restrict__ xr = x + t * H;
    // Four consecutive elements per thread, block y the elements 1024 y .. 1024 y + 1023: one
    // load each (a loop over the row is compiled one round trip per pass, and this kernel heads
    // every decode step).
    const int i = 4 * (blockIdx.y * blockDim.x + threadIdx.x);
    if (i >= H) return;
    if ((H & 3) == 0) {
        const uint2 v = *reinterpret_cast<const uint2*>(row + i);
        *reinterpret_cast<float4*>(xr + i) = make_float4(lo2f(v.x), hi2f(v.x), lo2f(v.y), hi2f(v.y));
    } else {
        f16 v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = i + j < H ? row[i + j] : f16(0);
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (i + j < H) xr[i + j] = h2f(v[j]);
    }
}

extern "C" __global__ void __launch_bounds__(1024) residual_rmsnorm(
    float* __restrict__ x, const float* __restrict__ delta, int S, long long sstride, int ldd,
    const float* __restrict__ bias, const float* __restrict__ w, float eps, f16* __restrict__ out, int H, int row0)
{
    pdl_between_products();
    __shared__ float red[32];
    const int t = row0 + blockIdx.x;
    float* __restrict__ xr = x + (size_t)t * H;
    float ss = 0.f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            v += sum_partials(delta, S, sstride, (long long)t * ldd + i);
            if (bias) v += bias[i];
            xr[i] = v;
        }
        ss += v * v;
    }
    ss = block_sum(ss, red);
    const float r = (float)(1.0 / sqrt((double)ss / (double)H + (double)eps));
    f16* __restrict__ o = out + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = f2h(xr[i] * r * w[i]);
}

// float4 chunks of a row one thread of residual_rmsnorm4 holds.
#define RMS4_NPT 6

extern "C" __global__ void __launch_bounds__(1024) residual_rmsnorm4(
    float* __restrict__ x, const float* __restrict__ delta, int S, long long sstride, int ldd,
    const float* __restrict__ bias, const float* __restrict__ w, float eps, f16* __restrict__ out, int H, int row0,
    u32* __restrict__ xq)
{
    pdl_between_products();
    __shared__ float red[32];
    const int t = row0 + blockIdx.x, H4 = H >> 2;
    float4* __restrict__ xr = reinterpret_cast<float4*>(x + (size_t)t * H);
    float4 v[RMS4_NPT];
    // x + slab 0 + slab 1 + ... + bias, in the CPU backend's order. The row of x and slab 0 are
    // loaded together (every load in flight at once), then any further slabs.
    const float* __restrict__ d = delta + (long long)t * ldd;
    if (delta) {
#pragma unroll
        for (int k = 0; k < RMS4_NPT; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < H4) {
                const float4 a = xr[i], e = reinterpret_cast<const float4*>(d)[i];
                v[k] = make_float4(a.x + e.x, a.y + e.y, a.z + e.z, a.w + e.w);
            }
        }
    } else {
#pragma unroll
        for (int k = 0; k < RMS4_NPT; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < H4) v[k] = xr[i];
        }
    }
    if (delta) {
        for (int s = 1; s < S; ++s) {
            const float4* __restrict__ ds = reinterpret_cast<const float4*>(d + s * sstride);
#pragma unroll
            for (int k = 0; k < RMS4_NPT; ++k) {
                const int i = threadIdx.x + k * blockDim.x;
                if (i < H4) {
                    const float4 e = ds[i];
                    v[k].x += e.x;
                    v[k].y += e.y;
                    v[k].z += e.z;
                    v[k].w += e.w;
                }
            }
        }
#pragma unroll
        for (int k = 0; k < RMS4_NPT; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < H4) {
                if (bias) {
                    const float4 bb = reinterpret_cast<const float4*>(bias)[i];
                    v[k].x += bb.x;
                    v[k].y += bb.y;
                    v[k].z += bb.z;
                    v[k].w += bb.w;
                }
                xr[i] = v[k];
            }
        }
    }
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < RMS4_NPT; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < H4) ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    ss = block_sum(ss, red);
    const float r = (float)(1.0 / sqrt((double)ss / (double)H + (double)eps));
    uint2* __restrict__ o = reinterpret_cast<uint2*>(out + (size_t)blockIdx.x * H);
    const float4* __restrict__ w4 = reinterpret_cast<const float4*>(w);
#pragma unroll
    for (int k = 0; k < RMS4_NPT; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < H4) {
            const float4 a = v[k], g = w4[i];
            o[i] = make_uint2(pack2(a.x * r * g.x, a.y * r * g.y), pack2(a.z * r * g.z, a.w * r * g.w));
            // The next product's input digits (one row, H % 128 == 0: i < H4 is warp-uniform).
            if (xq)
                warp_digits(make_float4(a.x * r * g.x, a.y * r * g.y, a.z * r * g.z, a.w * r * g.w), i >> 5, xq,
                            digits_sums(xq, H));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) residual_add(
    float* __restrict__ x, const float* __restrict__ delta, int S, long long sstride, int ldd,
    const float* __restrict__ bias, int H, int T)
{
    pdl_between_products();
    const long long total = (long long)T * H;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long t = idx / H;
        const int i = (int)(idx % H);
        float v = x[idx] + sum_partials(delta, S, sstride, t * ldd + i);
        if (bias) v += bias[i];
        x[idx] = v;
    }
}
