// gemm.cu — the fallback matrix product for prefill when cuBLAS is absent (SIMT, f32 accumulation).
//
// Y[t, n] (f32, row stride ldy) = Σ_k X[t, k] · B(k, n), X f16 [T, K] row-major.
//   gemm_f16_kn: B(k, n) = W[k*N + n]  (W row-major [K, N]: dequantised GPTQ)
//   gemm_f16_nk: B(k, n) = W[n*K + k]  (W row-major [N, K]: dense layers, the lm_head)
// Launch: block 256 threads (16 x 16, each a 4 x 4 patch of a 64 x 64 tile), grid (ceil(N/64),
//   ceil(T/64)); K walked in steps of 16 through shared memory (two 16 x 65 f32 tiles).

template <bool NK>
__device__ __forceinline__ void gemm_tile(const f16* __restrict__ X, const f16* __restrict__ W,
                                          float* __restrict__ Y, int T, int N, int K, int ldy)
{
    __shared__ float As[16][65];
    __shared__ float Bs[16][65];
    const int t0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        for (int i = threadIdx.x; i < 1024; i += 256) {
            const int tt = i >> 4, kk = i & 15;
            const int t = t0 + tt, k = k0 + kk;
            As[kk][tt] = (t < T && k < K) ? h2f(X[(size_t)t * K + k]) : 0.f;
        }
        for (int i = threadIdx.x; i < 1024; i += 256) {
            int kk, nn;
            if (NK) {
                nn = i >> 4;
                kk = i & 15;
            } else {
                kk = i >> 6;
                nn = i & 63;
            }
            const int k = k0 + kk, n = n0 + nn;
            float v = 0.f;
            if (k < K && n < N) v = h2f(NK ? W[(size_t)n * K + k] : W[(size_t)k * N + n]);
            Bs[kk][nn] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int t = t0 + ty * 4 + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx * 4 + j;
            if (t < T && n < N) Y[(size_t)t * ldy + n] = acc[i][j];
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) gemm_f16_kn(
    const f16* __restrict__ X, const f16* __restrict__ W, float* __restrict__ Y, int T, int N, int K, int ldy)
{
    pdl_wait();
    pdl_launch();
    gemm_tile<false>(X, W, Y, T, N, K, ldy);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f16_nk(
    const f16* __restrict__ X, const f16* __restrict__ W, float* __restrict__ Y, int T, int N, int K, int ldy)
{
    pdl_wait();
    pdl_launch();
    gemm_tile<true>(X, W, Y, T, N, K, ldy);
}
