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
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float x = v[i];
        if (x > best) {
            best = x;
            idx = i;
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
