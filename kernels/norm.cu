// norm.cu — the embedding lookup and RMSNorm fused with the residual add.
//
// embed: x[t, :] = f32(table[tokens[t], :]); table f16 [vocab, H], x f32 [T, H] (the residual stream).
//   Launch: grid T, block 256.
// residual_rmsnorm: for row t = row0 + blockIdx.x of the residual stream x f32 [*, H]:
//   if delta != NULL: x[t, i] += Σ_s delta[s*sstride + t*ldd + i] (+ bias[i])  — the sublayer's output,
//     as S partial slabs (see common.cuh), added to the residual in place;
//   out[blockIdx.x, i] = f16(x[t, i] * r * w[i]), r = 1 / sqrt(mean_i x[t, i]^2 + eps).
//   Launch: grid = number of rows, block 256 or 1024 (any multiple of 32 up to 1024).
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
    for (int i = threadIdx.x; i < H; i += blockDim.x) x[t * H + i] = h2f(table[tok * H + i]);
}

extern "C" __global__ void __launch_bounds__(1024) residual_rmsnorm(
    float* __restrict__ x, const float* __restrict__ delta, int S, long long sstride, int ldd,
    const float* __restrict__ bias, const float* __restrict__ w, float eps, f16* __restrict__ out, int H, int row0)
{
    pdl_wait();
    pdl_launch();
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

extern "C" __global__ void __launch_bounds__(256) residual_add(
    float* __restrict__ x, const float* __restrict__ delta, int S, long long sstride, int ldd,
    const float* __restrict__ bias, int H, int T)
{
    pdl_wait();
    pdl_launch();
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
