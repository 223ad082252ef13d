// sample.cu — choosing the next token on the device, so one id crosses to the host per step.
//
// argmax_f32: out[0] = the index of the largest of v[0..n) (the lowest index on ties, as the host's
//   argmax and torch.argmax). Launch: one block of 1024 threads.
// repetition_penalty: dst[tok] = src[tok] < 0 ? src[tok] * p : src[tok] / p for every tok in ids
//   (dst a copy of src, so a repeated id is penalised once, as transformers does).
//   Launch: 1-D grid-stride over n_ids, block 256.

extern "C" __global__ void __launch_bounds__(1024) argmax_f32(const float* __restrict__ v, int n, u32* __restrict__ out)
{
    pdl_wait();
    pdl_launch();
    __shared__ float bv[32];
    __shared__ int bi[32];
    float best = NEG_INF;
    int idx = 0x7fffffff;
    // Eight values per thread at a time, loaded before any is compared (one round trip per
    // eight instead of per value); a thread's indices ascend, so > keeps the lowest on ties.
    for (int base = threadIdx.x; base < n; base += 8 * blockDim.x) {
        float x[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int i = base + j * blockDim.x;
            x[j] = i < n ? v[i] : NEG_INF;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (x[j] > best) {
                best = x[j];
                idx = base + j * blockDim.x;
            }
        }
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) {
            best = ov;
            idx = oi;
        }
    }
    if (lane == 0) {
        bv[w] = best;
        bi[w] = idx;
    }
    __syncthreads();
    if (w == 0) {
        best = lane < nw ? bv[lane] : NEG_INF;
        idx = lane < nw ? bi[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) {
                best = ov;
                idx = oi;
            }
        }
        if (lane == 0) out[0] = idx == 0x7fffffff ? 0u : (u32)idx;
    }
}

extern "C" __global__ void __launch_bounds__(256) repetition_penalty(
    const float* __restrict__ src, float* __restrict__ dst, const u32* __restrict__ ids, int n_ids, int vocab, float p)
{
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_ids; i += gridDim.x * blockDim.x) {
        const u32 tok = ids[i];
        if (tok < (u32)vocab) {
            const float x = src[tok];
            dst[tok] = x < 0.f ? x * p : x / p;
        }
    }
}

// sample_topk: temperature, top-k, top-p and the draw, as the host's Sampler (src/sampler.rs) does
//   them, for 1 <= k: x_i = v[i] * inv_t; keep every x >= the k-th largest (ties kept); sort the
//   kept by (x descending, id ascending); p_i = e^(x_i - max) in f64, normalised; top-p drops the
//   tail whose ascending cumulative mass stays <= 1 - top_p (at least one kept), renormalised;
//   the first candidate whose cumulative p exceeds u (the host's uniform draw) is chosen.
//   The k-th largest is found by a radix select on order-preserving keys (4 passes of 8 bits,
//   histograms in shared memory); the kept candidates (at most SAMPLE_CAP) are sorted by a
//   bitonic sort; the f64 softmax and the draw run in one thread (a few dozen candidates).
//   out[0] = the chosen id, or 0xffffffff when more than SAMPLE_CAP values tie at the k-th
//   (the host then samples from the logits). Launch: one block of 1024 threads.

#define SAMPLE_CAP 2048

__device__ __forceinline__ u32 order_key(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

extern "C" __global__ void __launch_bounds__(1024) sample_topk(
    const float* __restrict__ v, int n, float inv_t, int k, float top_p, double u, u32* __restrict__ out)
{
    pdl_wait();
    pdl_launch();
    __shared__ u32 hist[256];
    __shared__ u32 sel[2];            // the key prefix found so far, the rank still wanted
    __shared__ int count;
    __shared__ float cx[SAMPLE_CAP];
    __shared__ u32 ci[SAMPLE_CAP];
    const int tid = threadIdx.x;
    if (k > n) k = n;
    if (tid == 0) {
        sel[0] = 0u;
        sel[1] = (u32)k;
        count = 0;
    }
    // Radix select of the k-th largest key, most significant byte first.
    for (int shift = 24; shift >= 0; shift -= 8) {
        if (tid < 256) hist[tid] = 0u;
        __syncthreads();
        const u32 prefix = sel[0];
        const u32 mask = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
        for (int i = tid; i < n; i += blockDim.x) {
            const u32 key = order_key(v[i] * inv_t);
            if ((key & mask) == (prefix & mask)) atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            u32 want = sel[1], above = 0u;
            int b = 255;
            for (; b > 0; --b) {
                if (above + hist[b] >= want) break;
                above += hist[b];
            }
            sel[0] = prefix | ((u32)b << shift);
            sel[1] = want - above;
        }
        __syncthreads();
    }
    const u32 kth = sel[0];
    // The kept candidates: every key >= the k-th (ties included).
    for (int i = tid; i < n; i += blockDim.x) {
        const float x = v[i] * inv_t;
        if (order_key(x) >= kth) {
            const int slot = atomicAdd(&count, 1);
            if (slot < SAMPLE_CAP) {
                cx[slot] = x;
                ci[slot] = (u32)i;
            }
        }
    }
    __syncthreads();
    const int c = count;
    if (c > SAMPLE_CAP) {
        if (tid == 0) out[0] = 0xffffffffu;
        return;
    }
    // Bitonic sort of the padded power of two: (x descending, id ascending).
    int m = 1;
    while (m < c) m <<= 1;
    for (int i = c + tid; i < m; i += blockDim.x) {
        cx[i] = NEG_INF;
        ci[i] = 0xffffffffu;
    }
    __syncthreads();
    for (int size = 2; size <= m; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < m; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    // "a before b" when a.x > b.x, or equal x and a.id < b.id.
                    const bool desc = (i & size) == 0;
                    const float xi = cx[i], xj = cx[j];
                    const u32 ii = ci[i], ij = ci[j];
                    const bool j_first = xj > xi || (xj == xi && ij < ii);
                    if (j_first == desc) {
                        cx[i] = xj;
                        cx[j] = xi;
                        ci[i] = ij;
                        ci[j] = ii;
                    }
                }
            }
            __syncthreads();
        }
    }
    if (tid != 0) return;
    // The host's arithmetic, operation for operation: e_i = exp(f64(x_i - x_0)) (the difference
    // in f32), p_i = e_i / Σe; with top-p, the tail cut and p_i / Σ kept p; then the draw.
    double sum = 0.0;
    for (int i = 0; i < c; ++i) sum += exp((double)(cx[i] - cx[0]));
    int keep = c;
    double s2 = 1.0;
    if (top_p < 1.f) {
        const double cut = 1.0 - (double)top_p;
        double acc = 0.0;
        int removed = 0;
        for (int i = c - 1; i >= 0; --i) {
            acc += exp((double)(cx[i] - cx[0])) / sum;
            if (acc <= cut) {
                ++removed;
            } else {
                break;
            }
        }
        keep = max(1, c - removed);
        s2 = 0.0;
        for (int i = 0; i < keep; ++i) s2 += exp((double)(cx[i] - cx[0])) / sum;
    }
    double acc = 0.0;
    u32 pick = ci[keep - 1];
    for (int i = 0; i < keep; ++i) {
        double p = exp((double)(cx[i] - cx[0])) / sum;
        if (top_p < 1.f) p /= s2;
        acc += p;
        if (u < acc) {
            pick = ci[i];
            break;
        }
    }
    out[0] = pick;
}
