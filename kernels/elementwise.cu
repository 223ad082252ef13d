// elementwise.cu — the consumers of the q|k|v and gate|up products.
//
// qkv_rope: the attention input. part holds the q|k|v product as S partial slabs of [T][ld],
//   ld = (nh + 2*nkv)*hd columns: q heads, then k heads, then v heads (+ bias[col] if bias != NULL).
//   q heads get RoPE (rotate-half) and go to qout f32 [T, nh*hd]; k heads get RoPE and go to the f16
//   cache kc[pos + t, kvh*hd + d]; v heads go to vc likewise (kc, vc: this layer's [capacity, nkv*hd]).
//   Angles as transformers computes them: f32 inverse frequency times the f32 position; cos and sin
//   in double, rounded to f32 (as the CPU backend).
//   The position is `pos`, or *dpos when dpos != NULL (decode reads it from device memory, so one
//   captured CUDA graph serves every step).
//   Launch: grid (T, nh + 2*nkv), block = hd/2 rounded up to a multiple of 32; thread j rotates the
//   pair (j, j + hd/2).
// silu_mul: out[t, i] = f16(silu(g) * u), g = column i and u = column F + i of the gate|up product
//   (S slabs of [T][2F], + bias). Launch: 1-D grid-stride over T*F, block 256.

extern "C" __global__ void qkv_rope(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    float* __restrict__ qout, f16* __restrict__ kc, f16* __restrict__ vc, const float* __restrict__ inv_freq,
    int pos, const int* __restrict__ dpos, int nh, int nkv, int hd)
{
    pdl_wait();
    pdl_launch();
    const int t = blockIdx.x, hh = blockIdx.y, j = threadIdx.x, half = hd >> 1;
    if (j >= half) return;
    if (dpos) pos = *dpos;
    const int ld = (nh + 2 * nkv) * hd;
    const int col = hh * hd + j;
    const long long base = (long long)t * ld;
    float a = sum_partials(part, S, sstride, base + col);
    float b = sum_partials(part, S, sstride, base + col + half);
    if (bias) {
        a += bias[col];
        b += bias[col + half];
    }
    const int kvd = nkv * hd;
    const size_t p = (size_t)pos + t;
    if (hh >= nh + nkv) {
        const int c = (hh - nh - nkv) * hd + j;
        vc[p * kvd + c] = f2h(a);
        vc[p * kvd + c + half] = f2h(b);
        return;
    }
    const float ang = (float)(pos + t) * inv_freq[j];
    double sd, cd;
    sincos((double)ang, &sd, &cd);
    const float c = (float)cd, s = (float)sd;
    const float na = a * c - b * s;
    const float nb = b * c + a * s;
    if (hh < nh) {
        float* q = qout + (size_t)t * nh * hd + hh * hd;
        q[j] = na;
        q[j + half] = nb;
    } else {
        const int cc = (hh - nh) * hd + j;
        kc[p * kvd + cc] = f2h(na);
        kc[p * kvd + cc + half] = f2h(nb);
    }
}

extern "C" __global__ void __launch_bounds__(256) silu_mul(
    const float* __restrict__ part, int S, long long sstride, const float* __restrict__ bias,
    f16* __restrict__ out, int F, int T)
{
    pdl_wait();
    pdl_launch();
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
        const float s = g / (1.f + expf(-g));
        out[idx] = f2h(s * u);
    }
}
