// decode_flow.cu — every decoder layer of one decode step in one persistent kernel whose warps
// take units of work from a global queue in dependency order (opt-in: WV_CUDA_PERSIST=1 with
// WV_CUDA_PD_FLOW=1; persistent.rs).
//
// Idea: decode.cu gives each block an equal static share of every product, so every product
// ends when its slowest blocks do (the shares stream at unequal rates: block end times spread
// 11–14 µs per 13B product on an H200). Here each warp takes the next unit from one counter
// (`atomicAdd`), so warps served faster take more, and the units are numbered so that a
// product's first consumers' inputs come first: every warp streams until the step's last units.
//
// Units, per layer l in this order (the host's tables `torder` give each product's tile order):
//   q|k|v   (tile, chunk) units, tile-major: the tiles of head 0's q, k, v first, then head 1's …
//   attention (head, key chunk) units, head-major
//   o       (tile, chunk) units, chunk-major (a chunk of inputs = 4 heads: early heads first)
//   gate|up (tile, chunk) units, tile-major, gate and up tiles interleaved as down reads them
//   down    (tile, chunk) units, chunk-major
// A product unit is a 128-column tile × a chunk of DF_CB batches of 64 inputs (the last chunk
// may be shorter), taken by one warp: it waits for the tiles of its inputs (flags as in
// decode.cu), makes its inputs once (lane i: inputs 2i, 2i+1 of each batch; the unit's largest
// scaled to just under the f16 sums' bound), streams its batches through the warp's ring of
// WV_PD_RD batches (cp.async; the next unit's first batches are requested during this one's
// last), and writes its 128 sums to slot `chunk` of the product's slot buffer [chunks][N]. The
// last unit of a tile to finish (a self-resetting counter per product and tile) sums the tile's
// chunks in chunk order (deterministic) and finishes the tile:
//   q|k|v: times r = 1/rms(x) (once every x tile's sum of squares is in); q tiles get RoPE and
//     go to fin_qkv, k tiles RoPE and the KV cache row, v tiles the cache row;
//   o, down: the residual add into x and the tile's sum of squares (ss_o / ss);
//   gate|up: times r_o, into fin_gu;
// and raises the tile's flag. An attention unit (one warp: 8 keys per batch in flight, its own
// online softmax) writes its chunk's partial output and (max, sum); the last chunk of a head to
// finish combines the head's chunks into att_out (f32 [nh·128]) and raises the head's flag.
// Every unit waits only for units numbered before it, and all warps are resident (cooperative
// launch), so the step cannot deadlock.
//
// Launch: cooperative, grid = blocks per SM × SMs, block 128 threads (4 independent warps),
// dynamic shared memory 4 × DF_WARP_SMEM (per warp a ring of WV_PD_RD × (4 KiB + 512 B of
// scales and zeros) and DF_CB × 128 B of inputs).
// Requires: head size 128, no act-order permutation, every K a multiple of 64, N % 4 == 0.

#define DF_HD 128
#ifndef DF_CB
#define DF_CB 8
#endif
#ifndef WV_PD_RD
#define WV_PD_RD 3
#endif
#define DF_SLOT 4096
#define DF_WARP_SMEM (WV_PD_RD * (DF_SLOT + 512) + DF_CB * 128)
#define DF_KB 8  // keys per batch in an attention unit

struct DfMat {
    const u32* qw;
    const f16* scales;
    const u8* zeros;
    const int* perm;  // NULL (required)
};
struct DfLayer {
    DfMat m[4];
    const float* norm_in;
    const float* norm_post;
};

// A unit: kind 0 product (layer l, matrix m, tile t, chunk c, nb batches), 1 attention (layer
// l, head t, key chunk c), 2 none (past the step's end).
struct DfUnit {
    int kind, l, m, t, c, nb;
};

struct DfArgs {
    const DfLayer* __restrict__ layers;
    const int* __restrict__ torder;  // the four products' tile orders, one after another
    int L, H, qkvN, F, nh, nkv, gs, T, QT, GT;
    int C0, C1, C2, C3;          // chunks per tile of each product
    int toff1, toff2, toff3;     // where each product's tiles start (torder, counters; q|k|v's: 0)
    int us1, us2, us3, us4, us5; // unit offsets within a layer: attention, o, gate|up, down, end
    float eps;
    float* x;
    float* ss;
    float* ss_o;
    float* part0;
    float* part1;
    float* part2;
    float* part3;
    float* fin_qkv;
    float* fin_gu;
    float* po;      // [nch][nh][128]
    float* pml;     // [nch][nh][2]
    float* att_out; // [nh * 128]
    int chunk, nch, pos;
    f16* kc;
    f16* vc;
    long long layer_stride;
    const float* __restrict__ rope;
    int* counters;  // product tiles (toff), then heads
    int* xr;
    int* xc;
    int* qr;
    int* ad;
    int* orr;
    int* oc;
    int* gr;
    int* next;      // the unit queue's counter
};

__device__ __forceinline__ int df_N(const DfArgs& a, int m) {
    return m == 0 ? a.qkvN : m == 2 ? 2 * a.F : a.H;
}
__device__ __forceinline__ int df_K(const DfArgs& a, int m) {
    return m == 1 ? a.nh * DF_HD : m == 3 ? a.F : a.H;
}

// Per-product fields by product index (selects, not a local array: no stack frame).
__device__ __forceinline__ int df_C(const DfArgs& a, int m) {
    return m == 0 ? a.C0 : m == 1 ? a.C1 : m == 2 ? a.C2 : a.C3;
}
__device__ __forceinline__ int df_toff(const DfArgs& a, int m) {
    return m == 0 ? 0 : m == 1 ? a.toff1 : m == 2 ? a.toff2 : a.toff3;
}
__device__ __forceinline__ float* df_part(const DfArgs& a, int m) {
    return m == 0 ? a.part0 : m == 1 ? a.part1 : m == 2 ? a.part2 : a.part3;
}

__device__ __forceinline__ DfUnit df_unit(const DfArgs& a, int u) {
    DfUnit r;
    const int per = a.us5;
    r.l = u / per;
    if (r.l >= a.L) {
        r.kind = 2;
        return r;
    }
    int i = u - r.l * per;
    if (i >= a.us1 && i < a.us2) {
        i -= a.us1;
        r.kind = 1;
        r.m = -1;
        r.t = i / a.nch;
        r.c = i - r.t * a.nch;
        r.nb = 0;
        return r;
    }
    r.kind = 0;
    r.m = i < a.us1 ? 0 : i < a.us3 ? 1 : i < a.us4 ? 2 : 3;
    i -= r.m == 0 ? 0 : r.m == 1 ? a.us2 : r.m == 2 ? a.us3 : a.us4;
    const int nt = (df_N(a, r.m) + 127) >> 7, C = df_C(a, r.m);
    int rank;
    if (r.m == 0 || r.m == 2) {
        rank = i / C;
        r.c = i - rank * C;
    } else {
        r.c = i / nt;
        rank = i - r.c * nt;
    }
    r.t = __ldg(a.torder + df_toff(a, r.m) + rank);
    const int nbt = df_K(a, r.m) >> 6;
    r.nb = min(DF_CB, nbt - r.c * DF_CB);
    return r;
}

// Request batch b of product unit `un` into ring slot n % RD — its 8 rows, and this lane's 4
// scales and zeros into the slot's side array — as one commit group.
__device__ __forceinline__ void df_issue(const DfArgs& a, const DfUnit& un, int b, u32 ring_s, u32 sz_s, int lane,
                                         int n) {
    const int N = df_N(a, un.m);
    const DfMat& M = a.layers[un.l].m[un.m];
    const int col = un.t * 128 + lane * 4;
    if (col < N) {
        const int j = un.c * DF_CB + b;  // batch of 64 inputs
        const char* src = reinterpret_cast<const char*>(M.qw + (size_t)(j * 8) * N + col);
        const int slot = n % WV_PD_RD;
        const u32 dst = ring_s + slot * DF_SLOT;
#pragma unroll
        for (int i = 0; i < 8; ++i) cp_async16(dst + i * 512, src + (size_t)i * N * 4);
        const int g = (j * 64) / a.gs;
        const u32 sz = sz_s + slot * 512;
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(sz), "l"(M.scales + (size_t)g * N + col) : "memory");
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(sz + 8), "l"(M.zeros + (size_t)g * N + col) : "memory");
    }
    cp_async_commit();
}

// A warp's queue: the unit it works on, the next one (taken ahead so that its first batches
// stream during this one's last), and where its weight stream is. Only real batches are
// committed as groups, so `issued - used` groups are in flight.
struct DfWarp {
    DfUnit cur, nxt;
    int su, sb;      // the next batch to request: batch sb of cur (su = 0) or nxt (su = 1)
    int issued, used;
    u32 ring_s;      // this lane's 16 bytes of row 0 of slot 0 (shared space)
    u32 sz_s;        // this lane's scales and zeros of slot 0 (shared space)
};

// Wait until at most n of the warp's groups are in flight (n < WV_PD_RD <= 6).
__device__ __forceinline__ void df_wait_groups(int n) {
    switch (n) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    default: cp_async_wait<5>(); break;
    }
}

__device__ __forceinline__ int df_take(const DfArgs& a, int lane) {
    int u = 0;
    if (lane == 0) u = atomicAdd(a.next, 1);
    return __shfl_sync(0xffffffffu, u, 0);
}

// Request the stream's next batch, if it has one (false: nothing left in cur and nxt).
__device__ __forceinline__ bool df_advance(const DfArgs& a, DfWarp& w, int lane) {
    if (w.su == 0) {
        if (w.cur.kind == 0 && w.sb < w.cur.nb) {
            df_issue(a, w.cur, w.sb++, w.ring_s, w.sz_s, lane, w.issued++);
            return true;
        }
        w.su = 1;
        w.sb = 0;
    }
    if (w.nxt.kind == 0 && w.sb < w.nxt.nb) {
        df_issue(a, w.nxt, w.sb++, w.ring_s, w.sz_s, lane, w.issued++);
        return true;
    }
    return false;
}

// Keep WV_PD_RD - 1 batches in flight where the queue has them.
__device__ __forceinline__ void df_top_up(const DfArgs& a, DfWarp& w, int lane) {
    while (w.issued - w.used < WV_PD_RD - 1 && df_advance(a, w, lane)) {
    }
}

// Wait until the inputs of product unit `un` are ready.
__device__ __forceinline__ void df_wait_inputs(const DfArgs& a, const DfUnit& un) {
    const int k0 = un.c * DF_CB * 64, k1 = k0 + un.nb * 64;
    for (int t = k0 >> 7; t <= (k1 - 1) >> 7; ++t) {
        if (un.m == 0) {
            flag_wait(a.xr + (size_t)un.l * a.T + t, 1);
        } else if (un.m == 1) {
            flag_wait(a.ad + (size_t)un.l * a.nh + t, 1);
        } else if (un.m == 2) {
            flag_wait(a.orr + (size_t)un.l * a.T + t, 1);
        } else {
            const int* g = a.gr + (size_t)un.l * a.GT;
            flag_wait(g + t, 1);
            const int u0 = (a.F + 128 * t) >> 7, u1 = min(a.GT - 1, (a.F + 128 * t + 127) >> 7);
            for (int u = u0; u <= u1; ++u) flag_wait(g + u, 1);
        }
    }
}

__device__ __forceinline__ float df_rnorm(const DfArgs& a, const float* ss, int lane) {
    float s = 0.f;
    for (int i = lane; i < a.T; i += 32) s += __ldcg(ss + i);
    s = warp_sum(s);
    return (float)(1.0 / sqrt((double)s / (double)a.H + (double)a.eps));
}

// RoPE (rotate-half) of one head's 128 values held 4 per lane (lane i: dims 4i .. 4i+3): lane i
// < 16 pairs with lane i + 16. Products rounded before the sum (no FMA contraction), as
// qkv_rope and the CPU.
__device__ __forceinline__ float4 df_rope(const DfArgs& a, float4 v, int lane) {
    float4 p;
    p.x = __shfl_xor_sync(0xffffffffu, v.x, 16);
    p.y = __shfl_xor_sync(0xffffffffu, v.y, 16);
    p.z = __shfl_xor_sync(0xffffffffu, v.z, 16);
    p.w = __shfl_xor_sync(0xffffffffu, v.w, 16);
    const bool lo = lane < 16;
    const int j0 = (lane & 15) * 4;
    float o[4];
    const float vv[4] = {v.x, v.y, v.z, v.w}, pp[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float co = a.rope[((size_t)a.pos * 64 + j0 + e) * 2], si = a.rope[((size_t)a.pos * 64 + j0 + e) * 2 + 1];
        o[e] = lo ? __fsub_rn(__fmul_rn(vv[e], co), __fmul_rn(pp[e], si))
                  : __fadd_rn(__fmul_rn(vv[e], co), __fmul_rn(pp[e], si));
    }
    return make_float4(o[0], o[1], o[2], o[3]);
}

// The tile's last unit: sum its chunks and finish the tile (see the opening comment).
__device__ __forceinline__ void df_finish_tile(const DfArgs& a, const DfUnit& un, int lane) {
    const int m = un.m, N = df_N(a, m), t = un.t, C = df_C(a, m);
    const int c = t * 128 + lane * 4;
    const bool mine = c < N;
    const float* out = df_part(a, m);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (mine) {
#pragma unroll 8
        for (int i = 0; i < C; ++i) {
            const float4 r = __ldcg(reinterpret_cast<const float4*>(out + (size_t)i * N + c));
            v.x += r.x;
            v.y += r.y;
            v.z += r.z;
            v.w += r.w;
        }
    }
    const int l = un.l;
    if (m == 1 || m == 3) {
        float v2 = 0.f;
        if (mine) {
            const float4 x0 = __ldcg(reinterpret_cast<const float4*>(a.x + c));
            v.x += x0.x;
            v.y += x0.y;
            v.z += x0.z;
            v.w += x0.w;
            *reinterpret_cast<float4*>(a.x + c) = v;
            v2 = v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        v2 = warp_sum(v2);
        if (lane == 0) (m == 1 ? a.ss_o : a.ss)[t] = v2;
        __threadfence();
        __syncwarp();
        if (lane == 0) {
            if (m == 1) {
                flag_raise(a.orr + (size_t)l * a.T + t);
                flag_raise(a.oc + l);
            } else {
                flag_raise(a.xr + (size_t)(l + 1) * a.T + t);
                flag_raise(a.xc + l + 1);
            }
        }
        return;
    }
    flag_wait(m == 0 ? a.xc + l : a.oc + l, a.T);
    const float r = df_rnorm(a, m == 0 ? a.ss : a.ss_o, lane);
    v = make_float4(v.x * r, v.y * r, v.z * r, v.w * r);
    if (m == 2) {
        if (mine) *reinterpret_cast<float4*>(a.fin_gu + c) = v;
        __threadfence();
        __syncwarp();
        if (lane == 0) flag_raise(a.gr + (size_t)l * a.GT + t);
        return;
    }
    // q|k|v: head-sized tiles (q heads, then k, then v heads).
    if (t < a.nh) {
        v = df_rope(a, v, lane);
        *reinterpret_cast<float4*>(a.fin_qkv + c) = v;
    } else {
        const bool is_k = t < a.nh + a.nkv;
        if (is_k) v = df_rope(a, v, lane);
        const int kvh = t - a.nh - (is_k ? 0 : a.nkv);
        f16* row = (is_k ? a.kc : a.vc) + (size_t)l * a.layer_stride + (size_t)a.pos * a.nkv * DF_HD +
                   (size_t)kvh * DF_HD + lane * 4;
        uint2 h;
        h.x = pack2(v.x, v.y);
        h.y = pack2(v.z, v.w);
        *reinterpret_cast<uint2*>(row) = h;
    }
    __threadfence();
    __syncwarp();
    if (lane == 0) flag_raise(a.qr + (size_t)l * a.QT + t);
}

// A product unit (the warp's current one).
__device__ __forceinline__ void df_product(const DfArgs& a, DfWarp& w, u32* xw, const uint4* ring, const u32* sz,
                                           int lane) {
    const DfUnit un = w.cur;
    const int m = un.m;
    const DfLayer& Ly = a.layers[un.l];
    df_wait_inputs(a, un);
    // Inputs 2·lane, 2·lane + 1 of each batch, all requested before any is used.
    float v[2 * DF_CB];
    const int k0 = un.c * DF_CB * 64 + 2 * lane;
    const float* nw = m == 0 ? Ly.norm_in : Ly.norm_post;
#pragma unroll
    for (int b = 0; b < DF_CB; ++b) {
        const int k = k0 + b * 64;
        if (b < un.nb) {
            if (m == 0 || m == 2) {
                const float2 xv = __ldcg(reinterpret_cast<const float2*>(a.x + k));
                const float2 wv = __ldg(reinterpret_cast<const float2*>(nw + k));
                v[2 * b] = xv.x * wv.x;
                v[2 * b + 1] = xv.y * wv.y;
            } else if (m == 1) {
                const float2 ov = __ldcg(reinterpret_cast<const float2*>(a.att_out + k));
                v[2 * b] = ov.x;
                v[2 * b + 1] = ov.y;
            } else {
                const float2 g = __ldcg(reinterpret_cast<const float2*>(a.fin_gu + k));
                const float2 u = __ldcg(reinterpret_cast<const float2*>(a.fin_gu + a.F + k));
                v[2 * b] = g.x / (1.f + expf(-g.x)) * u.x;
                v[2 * b + 1] = g.y / (1.f + expf(-g.y)) * u.y;
            }
        } else {
            v[2 * b] = 0.f;
            v[2 * b + 1] = 0.f;
        }
    }
    float mx = 0.f;
#pragma unroll
    for (int i = 0; i < 2 * DF_CB; ++i) mx = fmaxf(mx, fabsf(v[i]));
    mx = warp_max(mx);
    // Scale by 2^-e so that the largest input is just under the f16 sums' bound (exact).
    const float xmax = XMAX_FOR_ROWS(4);
    float up = 1.f;
    if (mx > 0.f && mx <= 3.0e38f) {
        const int e = (int)ceilf(log2f(mx / xmax));
        up = exp2f((float)e);
        const float down = exp2f((float)-e);
#pragma unroll
        for (int i = 0; i < 2 * DF_CB; ++i) v[i] *= down;
    }
    __syncwarp();
#pragma unroll
    for (int b = 0; b < DF_CB; ++b) xw[b * 32 + lane] = pack2(v[2 * b], v[2 * b + 1]);
    __syncwarp();
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int b = 0; b < un.nb; ++b) {
        // The next batch (possibly the next unit's) before this one is waited for.
        if (w.issued - w.used < WV_PD_RD) df_advance(a, w, lane);
        df_wait_groups(w.issued - w.used - 1);
        const int slot = w.used % WV_PD_RD;
        ++w.used;
        const uint4* slot_p = ring + slot * (DF_SLOT / 16);
        const uint2 sv = *reinterpret_cast<const uint2*>(sz + slot * 128);
        const u32 zv = sz[slot * 128 + 2];
        u32 zl[4], zh[4];
        lean_zeros(zv, zl, zh);
        const uint4* xb = reinterpret_cast<const uint4*>(xw + b * 32);
        float f[4] = {0.f, 0.f, 0.f, 0.f};
        u32 hs[4] = {0u, 0u, 0u, 0u};
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const uint4 xv = xb[i];
            const uint4 wi = slot_p[i * 32];
            hs[0] = dot8_lean(wi.x, xv, zl[0], zh[0], hs[0]);
            hs[1] = dot8_lean(wi.y, xv, zl[1], zh[1], hs[1]);
            hs[2] = dot8_lean(wi.z, xv, zl[2], zh[2], hs[2]);
            hs[3] = dot8_lean(wi.w, xv, zl[3], zh[3], hs[3]);
            if ((i & 3) == 3) {
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    f[q] += lo2f(hs[q]) + hi2f(hs[q]);
                    hs[q] = 0u;
                }
            }
        }
        acc[0] += f[0] * lo2f(sv.x);
        acc[1] += f[1] * hi2f(sv.x);
        acc[2] += f[2] * lo2f(sv.y);
        acc[3] += f[3] * hi2f(sv.y);
    }
    const int N = df_N(a, m), c = un.t * 128 + lane * 4;
    if (c < N)
        *reinterpret_cast<float4*>(df_part(a, m) + (size_t)un.c * N + c) = make_float4(acc[0] * up, acc[1] * up, acc[2] * up, acc[3] * up);
    __threadfence();
    int* counter = a.counters + df_toff(a, m) + un.t;
    int last = 0;
    if (lane == 0) last = atomicAdd(counter, 1) == df_C(a, m) - 1;
    if (!__shfl_sync(0xffffffffu, last, 0)) return;
    if (lane == 0) *counter = 0;
    __threadfence();
    df_finish_tile(a, un, lane);
}

// An attention unit: head h = un.t, keys [c·chunk, min(pos + 1, (c + 1)·chunk)).
__device__ __forceinline__ void df_attention(const DfArgs& a, const DfUnit& un, int lane) {
    const int h = un.t, c = un.c, l = un.l;
    const int kvh = h / (a.nh / a.nkv), kvd = a.nkv * DF_HD;
    const int p_begin = c * a.chunk, p_end = min(a.pos + 1, p_begin + a.chunk);
    const int* qr = a.qr + (size_t)l * a.QT;
    flag_wait(qr + h, 1);
    if (p_begin <= a.pos && a.pos < p_end) {
        // This chunk holds the new position, whose K and V rows the k and v tiles wrote.
        flag_wait(qr + a.nh + kvh, 1);
        flag_wait(qr + a.nh + a.nkv + kvh, 1);
    }
    const float4 q = __ldcg(reinterpret_cast<const float4*>(a.fin_qkv + h * DF_HD + lane * 4));
    const float scale = rsqrtf((float)DF_HD);
    const f16* kb = a.kc + (size_t)l * a.layer_stride + (size_t)kvh * DF_HD + lane * 4;
    const f16* vb = a.vc + (size_t)l * a.layer_stride + (size_t)kvh * DF_HD + lane * 4;
    float m = NEG_INF, lsum = 0.f, acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int p0 = p_begin; p0 < p_end; p0 += DF_KB) {
        uint2 kk[DF_KB], vv[DF_KB];
#pragma unroll
        for (int j = 0; j < DF_KB; ++j) {
            const int p = p0 + j;
            const bool ok = p < p_end;
            kk[j] = ok ? __ldcg(reinterpret_cast<const uint2*>(kb + (size_t)p * kvd)) : make_uint2(0u, 0u);
            vv[j] = ok ? __ldcg(reinterpret_cast<const uint2*>(vb + (size_t)p * kvd)) : make_uint2(0u, 0u);
        }
        float s[DF_KB];
        float m_new = m;
#pragma unroll
        for (int j = 0; j < DF_KB; ++j) {
            const float d = q.x * lo2f(kk[j].x) + q.y * hi2f(kk[j].x) + q.z * lo2f(kk[j].y) + q.w * hi2f(kk[j].y);
            s[j] = p0 + j < p_end ? warp_sum(d) * scale : NEG_INF;
            m_new = fmaxf(m_new, s[j]);
        }
        const float corr = expf(m - m_new);
        lsum *= corr;
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[e] *= corr;
#pragma unroll
        for (int j = 0; j < DF_KB; ++j) {
            const float e = expf(s[j] - m_new);
            lsum += e;
            acc[0] += e * lo2f(vv[j].x);
            acc[1] += e * hi2f(vv[j].x);
            acc[2] += e * lo2f(vv[j].y);
            acc[3] += e * hi2f(vv[j].y);
        }
        m = m_new;
    }
    const size_t ob = (size_t)c * a.nh + h;
    *reinterpret_cast<float4*>(a.po + ob * DF_HD + lane * 4) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    if (lane == 0) {
        a.pml[ob * 2] = p_begin < p_end ? m : NEG_INF;
        a.pml[ob * 2 + 1] = lsum;
    }
    __threadfence();
    int* counter = a.counters + a.toff3 + a.T + h;
    int last = 0;
    if (lane == 0) last = atomicAdd(counter, 1) == a.nch - 1;
    if (!__shfl_sync(0xffffffffu, last, 0)) return;
    if (lane == 0) *counter = 0;
    __threadfence();
    // Combine the head's chunks: weights e^(m_c - M) / Σ l_c e^(m_c - M) (lane i: chunk i).
    float mc = NEG_INF, lc = 0.f;
    if (lane < a.nch) {
        const float2 ml = __ldcg(reinterpret_cast<const float2*>(a.pml + ((size_t)lane * a.nh + h) * 2));
        mc = ml.x;
        lc = ml.y;
    }
    const float M = warp_max(lc > 0.f ? mc : NEG_INF);
    const float e = lc > 0.f ? expf(mc - M) : 0.f;
    const float wgt = e / warp_sum(lc * e);
    float o[4] = {0.f, 0.f, 0.f, 0.f};
    for (int i = 0; i < a.nch; ++i) {
        const float wi = __shfl_sync(0xffffffffu, wgt, i);
        const float4 pv = __ldcg(reinterpret_cast<const float4*>(a.po + ((size_t)i * a.nh + h) * DF_HD + lane * 4));
        o[0] += pv.x * wi;
        o[1] += pv.y * wi;
        o[2] += pv.z * wi;
        o[3] += pv.w * wi;
    }
    *reinterpret_cast<float4*>(a.att_out + h * DF_HD + lane * 4) = make_float4(o[0], o[1], o[2], o[3]);
    __threadfence();
    __syncwarp();
    if (lane == 0) flag_raise(a.ad + (size_t)l * a.nh + h);
}

extern "C" __global__ void __launch_bounds__(128, 3) decode_flow(
    const DfLayer* __restrict__ layers, const int* __restrict__ torder, int L, int H, int qkvN, int F, int nh,
    int nkv, int gs, float eps, float* x, float* ss, float* ss_o, float* part_qkv, float* part_o,
    float* part_gu, float* part_down, float* fin_qkv, float* fin_gu, float* po, float* pml, float* att_out,
    int chunk, int nch, f16* kc, f16* vc, long long layer_stride, const float* __restrict__ rope,
    const int* __restrict__ dpos, int* counters, int* flags)
{
    extern __shared__ __align__(16) unsigned char df_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    DfArgs a;
    a.layers = layers;
    a.torder = torder;
    a.L = L;
    a.H = H;
    a.qkvN = qkvN;
    a.F = F;
    a.nh = nh;
    a.nkv = nkv;
    a.gs = gs;
    a.T = (H + 127) >> 7;
    a.QT = (qkvN + 127) >> 7;
    a.GT = (2 * F + 127) >> 7;
    a.C0 = ((H >> 6) + DF_CB - 1) / DF_CB;
    a.C1 = (((nh * DF_HD) >> 6) + DF_CB - 1) / DF_CB;
    a.C2 = a.C0;
    a.C3 = ((F >> 6) + DF_CB - 1) / DF_CB;
    a.toff1 = a.QT;
    a.toff2 = a.toff1 + a.T;
    a.toff3 = a.toff2 + a.GT;
    a.us1 = a.QT * a.C0;
    a.us2 = a.us1 + nh * nch;
    a.us3 = a.us2 + a.T * a.C1;
    a.us4 = a.us3 + a.GT * a.C2;
    a.us5 = a.us4 + a.T * a.C3;
    a.eps = eps;
    a.x = x;
    a.ss = ss;
    a.ss_o = ss_o;
    a.part0 = part_qkv;
    a.part1 = part_o;
    a.part2 = part_gu;
    a.part3 = part_down;
    a.fin_qkv = fin_qkv;
    a.fin_gu = fin_gu;
    a.po = po;
    a.pml = pml;
    a.att_out = att_out;
    a.chunk = chunk;
    a.nch = nch;
    a.pos = *dpos;
    a.kc = kc;
    a.vc = vc;
    a.layer_stride = layer_stride;
    a.rope = rope;
    a.counters = counters;
    // The flags' layout (persistent.rs: flag_words), then the queue's counter.
    a.xr = flags;
    a.xc = a.xr + (size_t)(L + 1) * a.T;
    a.qr = a.xc + (L + 1);
    a.ad = a.qr + (size_t)L * a.QT;
    a.orr = a.ad + (size_t)L * nh;
    a.oc = a.orr + (size_t)L * a.T;
    a.gr = a.oc + L;
    a.next = a.gr + (size_t)L * a.GT + L;

    // Per warp: the ring [RD][8 rows][32 lanes] 16 B, each slot's scales and zeros [RD][32
    // lanes] 16 B (8 B scales, 4 B zeros), the unit's inputs [DF_CB][32] f16 pairs.
    unsigned char* mine = df_smem + (size_t)warp * DF_WARP_SMEM;
    const uint4* ring = reinterpret_cast<const uint4*>(mine) + lane;
    const u32* sz = reinterpret_cast<const u32*>(mine + WV_PD_RD * DF_SLOT) + lane * 4;
    u32* xw = reinterpret_cast<u32*>(mine + WV_PD_RD * (DF_SLOT + 512));
    // Layer 0's inputs: each x tile's sum of squares, by warp 0 of the first T blocks.
    if (warp == 0 && (int)blockIdx.x < a.T) {
        const int c = blockIdx.x * 128 + lane * 4;
        float s2 = 0.f;
        if (c < H) {
            const float4 v = __ldcg(reinterpret_cast<const float4*>(x + c));
            s2 = v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        s2 = warp_sum(s2);
        if (lane == 0) {
            ss[blockIdx.x] = s2;
            __threadfence();
            flag_raise(a.xr + blockIdx.x);
            flag_raise(a.xc);
        }
    }
    DfWarp w;
    w.ring_s = smem_addr(ring);
    w.sz_s = smem_addr(sz);
    w.issued = 0;
    w.used = 0;
    w.cur = df_unit(a, df_take(a, lane));
    w.nxt = df_unit(a, df_take(a, lane));
    w.su = 0;
    w.sb = 0;
    while (w.cur.kind != 2) {
        df_top_up(a, w, lane);
        if (w.cur.kind == 0) df_product(a, w, xw, ring, sz, lane);
        else df_attention(a, w.cur, lane);
        // Move on: the stream's position shifts from nxt to cur; take the unit after.
        w.cur = w.nxt;
        if (w.su == 1) w.su = 0;
        else w.sb = 0;
        w.nxt = w.cur.kind == 2 ? w.cur : df_unit(a, df_take(a, lane));
    }
    cp_async_wait<0>();
}
