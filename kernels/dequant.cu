// dequant.cu — 4-bit GPTQ (wv's repacked layout, see gemv.cu) to a dense f16 matrix, for prefill.
//
// dequant_q4: W[k, c - c0] = f16(scale[g, c] * (q[k, c] - zero[g, c])) for columns [c0, c1), rows in the
//   checkpoint's ORIGINAL order (act-order's sort undone through perm), so the product needs no
//   permuted activations. Output row-major [K, c1 - c0].
// Launch: 1-D, block 256, grid-stride over (K/8) * (c1 - c0) (one packed word per step; consecutive
//   threads take consecutive columns, so reads and writes are coalesced).

extern "C" __global__ void __launch_bounds__(256) dequant_q4(
    const u32* __restrict__ qw, const f16* __restrict__ scales, const u8* __restrict__ zeros,
    const int* __restrict__ perm, f16* __restrict__ W, int K, int N, int gs, int c0, int c1)
{
    const int P = c1 - c0;
    const long long total = (long long)(K >> 3) * P;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(idx / P), c = (int)(idx % P);
        const int n = c0 + c;
        const u32 w = qw[(size_t)r * N + n];
        const int g = (r << 3) / gs;
        const float s = h2f(scales[(size_t)g * N + n]);
        const float z = (float)zeros[(size_t)g * N + n];
#pragma unroll
        for (int p = 0; p < 8; ++p) {
            const int i = (r << 3) + (p < 4 ? 2 * p : 2 * (p - 4) + 1);
            const float q = (float)((w >> (4 * p)) & 15u);
            const int row = perm ? perm[i] : i;
            W[(size_t)row * P + c] = f2h((q - z) * s);
        }
    }
}
