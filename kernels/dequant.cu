// dequant.cu — 4-bit GPTQ (wv's repacked layout, see gemv.cu) to a dense f16 matrix, for prefill.
//
// dequant_q4: W[k, c - c0] = f16(scale[g, c] * (q[k, c] - zero[g, c])) for columns [c0, c1), rows in the
//   checkpoint's ORIGINAL order (act-order's sort undone through perm), so the product needs no
//   permuted activations. Output row-major [K, c1 - c0].
// Launch: 1-D, block 256, grid-stride. When (c1 - c0) % 8 == 0 and c0 % 4 == 0, a step is one packed
//   row of 8 consecutive columns (two 16-byte loads, eight 16-byte stores, one per row); otherwise one
//   packed word (2-byte stores). Consecutive threads take consecutive columns: coalesced either way.

extern "C" __global__ void __launch_bounds__(256) dequant_q4(
    const u32* __restrict__ qw, const f16* __restrict__ scales, const u8* __restrict__ zeros,
    const int* __restrict__ perm, f16* __restrict__ W, int K, int N, int gs, int c0, int c1)
{
    pdl_wait();
    pdl_launch();
    const int P = c1 - c0;
    if ((P & 7) == 0 && (c0 & 3) == 0) {
        const int P8 = P >> 3;
        const long long total8 = (long long)(K >> 3) * P8;
        for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total8;
             idx += (long long)gridDim.x * blockDim.x) {
            const int r = (int)(idx / P8), cb = (int)(idx % P8) << 3;
            const int n = c0 + cb;
            const uint4 wa = *reinterpret_cast<const uint4*>(qw + (size_t)r * N + n);
            const uint4 wb = *reinterpret_cast<const uint4*>(qw + (size_t)r * N + n + 4);
            const int g = (r << 3) / gs;
            const uint2 sa = *reinterpret_cast<const uint2*>(scales + (size_t)g * N + n);
            const uint2 sb = *reinterpret_cast<const uint2*>(scales + (size_t)g * N + n + 4);
            const u32 za = *reinterpret_cast<const u32*>(zeros + (size_t)g * N + n);
            const u32 zb = *reinterpret_cast<const u32*>(zeros + (size_t)g * N + n + 4);
            const u32 wv[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
            const float sc[8] = {lo2f(sa.x), hi2f(sa.x), lo2f(sa.y), hi2f(sa.y), lo2f(sb.x), hi2f(sb.x), lo2f(sb.y), hi2f(sb.y)};
            const float zz[8] = {(float)(za & 0xff), (float)((za >> 8) & 0xff), (float)((za >> 16) & 0xff), (float)(za >> 24),
                                 (float)(zb & 0xff), (float)((zb >> 8) & 0xff), (float)((zb >> 16) & 0xff), (float)(zb >> 24)};
#pragma unroll
            for (int p = 0; p < 8; ++p) {
                const int i = (r << 3) + (p < 4 ? 2 * p : 2 * (p - 4) + 1);
                const int row = perm ? perm[i] : i;
                u32 o[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float a = (float)((wv[2 * j] >> (4 * p)) & 15u);
                    const float b = (float)((wv[2 * j + 1] >> (4 * p)) & 15u);
                    o[j] = pack2((a - zz[2 * j]) * sc[2 * j], (b - zz[2 * j + 1]) * sc[2 * j + 1]);
                }
                *reinterpret_cast<uint4*>(W + (size_t)row * P + cb) = make_uint4(o[0], o[1], o[2], o[3]);
            }
        }
        return;
    }
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
