// decode.cu — every decoder layer of one decode step (one token) in one persistent kernel.
// Opt-in (WV_CUDA_PERSIST=1): on an H100 it is slower than one kernel per step so far (see
// persistent.rs and docs/cuda.md, "Third session").
//
// Idea: launched one kernel per step, each 13B product (13–40 µs) pays a start (x staging, the
// first weight loads) and a tail (the grid draining); here the blocks stay resident for the
// whole step, meet at grid barriers between dependent phases, and each warp's weight stream
// runs one batch ahead of its arithmetic *across* phases: the next product's first weights are
// in flight while a block waits at a barrier or does attention.
//
// Launch: cooperative (all blocks resident), grid B = blocks per SM × SMs, block 256 threads
// = 8 warps, dynamic shared memory PD_RING (the weight ring) + a region shared by the products
// (PdShared) and the attention phase (host: persistent.rs). Per layer l, phases separated by
// grid barriers:
//   1. q|k|v   = RMSNorm(x) · Wqkv          → fin_qkv [qkvN]
//   2. attention: per (head, chunk of keys) item, a half block (4 warps, named barrier 1 or 2):
//      q (and, in the newest chunk, k and v of the new position) from fin_qkv, RoPE, the new K/V
//      written to the cache, scores and the softmax-weighted V sum → att_o [nch, nh, 128] and
//      (max, sum) att_ml [nch, nh, 2]
//   3. o       = combine(att) · Wo          → the residual add into x
//   4. gate|up = RMSNorm(x) · Wgu           → fin_gu [2F]
//   5. down    = (SiLU(gate) · up) · Wdown  → the residual add into x
// (one barrier first: the per-tile sums of squares of the embedded x for layer 0's norm).
//
// Products: a matrix (wv's repacked 4-bit layout, kernels/gemv.cu: qw u32 [K/8, N], scales f16
// [G, N], zeros u8 [G, N], perm int [K] or NULL) is cut into units = (128-column tile t, batch j
// of 64 inputs = 8 packed rows). The host's schedule `sched` [B][4][PD_MAXSEG] gives each block
// a contiguous run of units (stream-K: every block the same number ± 1) as segments
// int4 (t, j0, nbs, slot) within one tile each (nbs = 0 ends the list; at most 2 used); warp w
// takes batches [j0 + nbs·w/8, j0 + nbs·(w+1)/8) of a segment and makes each batch's 64 inputs
// itself (no block barrier inside a product). A segment's 8 warp sums meet in shared memory and
// the last warp writes slot `slot` of the tile: part[slot·N + n]; the last block to finish a
// tile (a self-resetting counter per tile; `tslots` says how many slots a tile has) sums its
// slots in slot order (deterministic) into fin_qkv / fin_gu, or into x with the tile's sum of
// squares into ss for the next RMSNorm (o, down).
// Weights: per warp a ring of 2 batches in shared memory, filled by cp.async, each lane copying
// and later reading its own 16 bytes of each row; batch k+1 is requested (and its scales and
// zeros loaded into registers) before batch k is waited for. The arithmetic is gemv_q4l's
// (common.cuh: dot8_lean, f16 sums over PD_ACC rows, inputs scaled against f16 overflow).
// Data written during the kernel by other blocks is read with ld.global.cg (L2), never through
// the non-coherent or L1 paths.

#define PD_HD 128
#define PD_WARPS 8
#define PD_MAXSEG 8
#define PD_ACC 4
// One warp's batch: 8 packed rows x 32 lanes x 16 bytes.
#define PD_SLOT 4096
#define PD_RING (PD_WARPS * 2 * PD_SLOT)
// Floats of one half block's attention scratch: q [128], scores [64], 4 warps' outputs [4][128],
// softmax state [4], then the new k and v as f16 [128] each (128 floats).
#define PD_ATT_FLOATS (128 + 64 + 4 * 128 + 4 + 128)
#ifndef WV_PD_MINB
#define WV_PD_MINB 3
#endif

struct PdMat {
    const u32* qw;
    const f16* scales;
    const u8* zeros;
    const int* perm;
};
// One layer's products (q|k|v, o, gate|up, down) and norm weights (f32).
struct PdLayer {
    PdMat m[4];
    const float* norm_in;
    const float* norm_post;
};

// A warp's place in its weight stream: product p (4·layer + matrix), segment s of the block's
// schedule for that matrix, batch j of tile t, the warp's part of the segment ending at je.
struct PdCursor {
    int p, s, t, j, je;
};

struct PdArgs {
    const PdLayer* __restrict__ layers;
    const int* __restrict__ tslots;
    int L, H, qkvN, F, nh, nkv, gs;
    float eps;
    float* x;
    float* ss;
    float* part_a;
    float* part_b;
    float* fin_qkv;
    float* fin_gu;
    float* att_o;
    float* att_ml;
    int chunk;
    f16* kc;
    f16* vc;
    long long layer_stride;
    const float* __restrict__ rope;
    int* counters;
};

__device__ __forceinline__ int pd_K(const PdArgs& a, int m) {
    return m == 1 ? a.nh * PD_HD : m == 3 ? a.F : a.H;
}
__device__ __forceinline__ int pd_N(const PdArgs& a, int m) {
    return m == 0 ? a.qkvN : m == 2 ? 2 * a.F : a.H;
}
// Where matrix m's per-tile slot counts start in tslots.
__device__ __forceinline__ int pd_toff(const PdArgs& a, int m) {
    int o = 0;
    for (int i = 0; i < m; ++i) o += (pd_N(a, i) + 127) >> 7;
    return o;
}
// Phase timing (WV_CUDA_PD_TRACE): block 0 records %globaltimer at each phase's end and after
// each barrier into trace[i] (trace NULL: nothing).
__device__ __forceinline__ void pd_mark(unsigned long long* trace, int i) {
    if (trace && blockIdx.x == 0 && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        trace[i] = t;
    }
}

__device__ __forceinline__ void pd_mark_all(unsigned long long* tb, int phase) {
    if (tb && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        tb[(size_t)phase * gridDim.x] = t;
    }
}

// Grid barrier: bar[0] counts arrivals (reset by the last), bar[1] is the generation.
__device__ __forceinline__ void pd_barrier(unsigned* bar, int* done) {
    __syncthreads();
    if (threadIdx.x == 0) {
        done[0] = 0;
        done[1] = 0;
        volatile unsigned* gen = bar + 1;
        const unsigned g = *gen;
        __threadfence();
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (*gen == g) __nanosleep(32);
        }
        __threadfence();
    }
    __syncthreads();
}

// Move to the warp's next batch (p == 4L when there is none).
__device__ __forceinline__ void pd_next(PdCursor& c, const int4 (*seg)[PD_MAXSEG], int warp, int P) {
    if (++c.j < c.je) return;
    for (;;) {
        ++c.s;
        if (c.s >= PD_MAXSEG || seg[c.p & 3][c.s].z == 0) {
            if (++c.p >= P) return;
            c.s = -1;
            continue;
        }
        const int4 sg = seg[c.p & 3][c.s];
        const int b0 = sg.y + ((sg.z * warp) >> 3), b1 = sg.y + ((sg.z * (warp + 1)) >> 3);
        if (b0 < b1) {
            c.t = sg.x;
            c.j = b0;
            c.je = b1;
            return;
        }
    }
}

// Request the cursor's batch into ring slot (n & 1) and load its scales and zeros; commit a
// group (empty past the end, so the count stays uniform).
__device__ __forceinline__ void pd_issue(const PdArgs& a, const PdCursor& c, u32 ring_s, int lane, int n,
                                         uint2& sv, u32& zv) {
    if (c.p < 4 * a.L) {
        const int m = c.p & 3, N = pd_N(a, m);
        const PdMat& M = a.layers[c.p >> 2].m[m];
        const int col = c.t * 128 + lane * 4;
        if (col < N) {
            const u32* __restrict__ qw = M.qw;
            const char* src = reinterpret_cast<const char*>(qw + (size_t)(c.j * 8) * N + col);
            const u32 dst = ring_s + (n & 1) * PD_SLOT;
#pragma unroll
            for (int i = 0; i < 8; ++i) cp_async16(dst + i * 512, src + (size_t)i * N * 4);
            const int g = (c.j * 64) / a.gs;
            sv = __ldg(reinterpret_cast<const uint2*>(M.scales + (size_t)g * N + col));
            zv = __ldg(reinterpret_cast<const u32*>(M.zeros + (size_t)g * N + col));
        }
    }
    cp_async_commit();
}

// A warp's weight stream state, carried across phases.
struct PdStream {
    PdCursor cur;
    int issued, used;
    uint2 sv;  // scales and zeros of the batch last issued
    u32 zv;
    u32 ring_s;  // this lane's 16 bytes of row 0 of slot 0 (shared space)
};

enum { PD_PRO_NORM = 0, PD_PRO_ATTN = 1, PD_PRO_SILU = 2 };

// The shared memory a block's products use besides the ring.
// (The attention phase reuses this memory; `done` lives apart.)
struct PdShared {
    float red[PD_WARPS][128];  // the current segment's warp sums
    u32 xw[PD_WARPS][32];      // per warp: the current batch's 64 inputs as f16 pairs
};
// Warps finished per segment (at most 2 per block and product); the last one reduces and then
// sets done[0] to PD_FREED (segment 1's warps wait for it before reusing red). Reset by
// pd_barrier.
#define PD_FREED 16

// One product (matrix m of layer l). Warps run independently (no block-wide barrier): for each
// batch a warp makes its 64 inputs itself — lane i the pair (2i, 2i+1), from the residual
// stream (RMSNorm), the gate|up output (SiLU · up) or the attention partials (the combine) —
// scales them by a power of two when they could overflow the f16 sums (exact; undone per
// batch), and shares them through xw. A segment's 8 warp sums meet in red; the last warp to
// finish writes the block's slot, and the last block to finish a tile (a self-resetting counter
// per tile) sums the tile's slots (in slot order) into fin_qkv / fin_gu, or into x with the
// tile's sum of squares into ss (o, down).
template <int PRO>
__device__ __forceinline__ void pd_product(const PdArgs& a, int l, int m, PdStream& ws,
                                           const int4 (*seg)[PD_MAXSEG], PdShared& sh, int* done,
                                           const uint4* ring, int pos, int nvalid) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int N = pd_N(a, m);
    const PdLayer& Ly = a.layers[l];
    const int* perm = Ly.m[m].perm;
    float* out = m == 2 ? a.part_b : a.part_a;
    const int P = 4 * a.L;
    const float xmax = XMAX_FOR_ROWS(PD_ACC);
    float rnorm = 0.f;
    if (PRO == PD_PRO_NORM) {
        // 1 / RMS of x from the per-tile sums of squares (fixed order per lane, then the warp).
        const int tiles = (a.H + 127) >> 7;
        float ssum = 0.f;
        for (int i = lane; i < tiles; i += 32) ssum += __ldcg(a.ss + i);
        ssum = warp_sum(ssum);
        rnorm = (float)(1.0 / sqrt((double)ssum / (double)a.H + (double)a.eps));
    }
    const float* __restrict__ nw = m == 0 ? Ly.norm_in : Ly.norm_post;
    // The attention combine's per-chunk weights of head `wh` (lane c: chunk c; nvalid <= 32).
    int wh = -1;
    float wc = 0.f;
    for (int s = 0; s < 2; ++s) {
        const int4 sg = seg[m][s];
        if (sg.z == 0) break;
        const int t = sg.x, j0 = sg.y, nbs = sg.z, slot = sg.w;
        const int b0 = j0 + ((nbs * warp) >> 3), b1 = j0 + ((nbs * (warp + 1)) >> 3);
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        for (int j = b0; j < b1; ++j) {
            const uint2 sv = ws.sv;
            const u32 zv = ws.zv;
            // The next batch (possibly of a later segment or product) before this one's wait.
            pd_next(ws.cur, seg, warp, P);
            pd_issue(a, ws.cur, ws.ring_s, lane, ws.issued, ws.sv, ws.zv);
            if (ws.cur.p < P) ++ws.issued;
            // This batch's inputs k, k + 1.
            const int k = j * 64 + 2 * lane;
            float v0, v1;
            if (PRO == PD_PRO_NORM) {
                const int k0 = perm ? perm[k] : k, k1 = perm ? perm[k + 1] : k + 1;
                v0 = __ldcg(a.x + k0) * rnorm * nw[k0];
                v1 = __ldcg(a.x + k1) * rnorm * nw[k1];
            } else if (PRO == PD_PRO_SILU) {
                const int k0 = perm ? perm[k] : k, k1 = perm ? perm[k + 1] : k + 1;
                const float g0 = __ldcg(a.fin_gu + k0), u0 = __ldcg(a.fin_gu + a.F + k0);
                const float g1 = __ldcg(a.fin_gu + k1), u1 = __ldcg(a.fin_gu + a.F + k1);
                v0 = g0 / (1.f + expf(-g0)) * u0;
                v1 = g1 / (1.f + expf(-g1)) * u1;
            } else {
                const int h = (j * 64) / PD_HD, d = k - h * PD_HD;
                if (h != wh) {
                    wh = h;
                    const float* ml = a.att_ml + ((size_t)lane * a.nh + h) * 2;
                    const float mc = lane < nvalid ? __ldcg(ml) : NEG_INF;
                    const float lc = lane < nvalid ? __ldcg(ml + 1) : 0.f;
                    const float M = warp_max(mc);
                    const float e = lane < nvalid ? expf(mc - M) : 0.f;
                    const float L = warp_sum(lc * e);
                    wc = e / L;
                }
                v0 = 0.f;
                v1 = 0.f;
                for (int c = 0; c < nvalid; ++c) {
                    const float w = __shfl_sync(0xffffffffu, wc, c);
                    const float2 o = __ldcg(reinterpret_cast<const float2*>(a.att_o + ((size_t)c * a.nh + h) * PD_HD + d));
                    v0 += o.x * w;
                    v1 += o.y * w;
                }
            }
            // Scale by 2^-e against f16 overflow when needed (rare), undone below.
            float mx = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
            float up = 1.f;
            if (mx > xmax && mx <= 3.0e38f) {
                const int e = (int)ceilf(log2f(mx / xmax));
                up = exp2f((float)e);
                const float down = exp2f((float)-e);
                v0 *= down;
                v1 *= down;
            }
            __syncwarp();
            sh.xw[warp][lane] = pack2(v0, v1);
            __syncwarp();
            cp_async_wait<1>();
            const uint4* slot_p = ring + (ws.used & 1) * (PD_SLOT / 16);
            ++ws.used;
            u32 zl[4], zh[4];
            lean_zeros(zv, zl, zh);
            const uint4* xb = reinterpret_cast<const uint4*>(sh.xw[warp]);
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
                if ((i + 1) % PD_ACC == 0) {
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        f[c] += lo2f(hs[c]) + hi2f(hs[c]);
                        hs[c] = 0u;
                    }
                }
            }
            acc[0] += f[0] * up * lo2f(sv.x);
            acc[1] += f[1] * up * hi2f(sv.x);
            acc[2] += f[2] * up * lo2f(sv.y);
            acc[3] += f[3] * up * hi2f(sv.y);
        }
        // The segment's warp sums meet in red (segment 1 waits until segment 0's were read);
        // the last warp to arrive finishes the segment.
        if (s == 1) {
            if (lane == 0) {
                volatile int* d0 = done;
                while (*d0 != PD_FREED) {
                }
            }
            __syncwarp();
            __threadfence_block();
        }
        *reinterpret_cast<float4*>(&sh.red[warp][lane * 4]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        __syncwarp();
        int last = 0;
        if (lane == 0) {
            __threadfence_block();
            last = atomicAdd(done + s, 1) == PD_WARPS - 1;
        }
        if (!__shfl_sync(0xffffffffu, last, 0)) continue;
        __threadfence_block();
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int w8 = 0; w8 < PD_WARPS; ++w8) {
            const float4 r = *reinterpret_cast<const float4*>(&sh.red[w8][lane * 4]);
            v.x += r.x;
            v.y += r.y;
            v.z += r.z;
            v.w += r.w;
        }
        __syncwarp();
        if (lane == 0 && s == 0) {
            __threadfence_block();
            atomicExch(done, PD_FREED);
        }
        const int c = t * 128 + lane * 4;
        const bool mine = c < N;
        if (mine) *reinterpret_cast<float4*>(out + (size_t)slot * N + c) = v;
        // The tile's last block sums its slots.
        __threadfence();
        const int ns = __ldg(a.tslots + pd_toff(a, m) + t);
        int tl = 0;
        if (lane == 0) tl = atomicAdd(a.counters + t, 1) == ns - 1;
        if (!__shfl_sync(0xffffffffu, tl, 0)) continue;
        __threadfence();
        v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (mine) {
#pragma unroll 4
            for (int i = 0; i < ns; ++i) {
                const float4 r = __ldcg(reinterpret_cast<const float4*>(out + (size_t)i * N + c));
                v.x += r.x;
                v.y += r.y;
                v.z += r.z;
                v.w += r.w;
            }
        }
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
            if (lane == 0) a.ss[t] = v2;
        } else if (mine) {
            *reinterpret_cast<float4*>((m == 0 ? a.fin_qkv : a.fin_gu) + c) = v;
        }
        if (lane == 0) a.counters[t] = 0;
    }
}

__device__ __forceinline__ void pd_named_sync(int id) { asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory"); }

// Attention item (head h, chunk c of keys) by one half block (128 threads; named barrier 1 + half).
__device__ __forceinline__ void pd_attn_item(const PdArgs& a, int l, int h, int c, int pos, int nvalid, float* sm,
                                             int half) {
    const int tid = threadIdx.x & 127, w = tid >> 5, lane = tid & 31;
    float* qs = sm;
    float* sc = qs + 128;
    float* ow = sc + 64;
    float* st = ow + 4 * 128;
    f16* kn = reinterpret_cast<f16*>(st + 4);
    f16* vn = kn + 128;
    const int grp = a.nh / a.nkv, kvh = h / grp, kvd = a.nkv * PD_HD;
    const bool newest = c == nvalid - 1;
    f16* kcl = a.kc + (size_t)l * a.layer_stride;
    f16* vcl = a.vc + (size_t)l * a.layer_stride;
    const float* fq = a.fin_qkv;
    if (tid < 64) {
        // Products rounded before the sum (no FMA contraction), as qkv_rope and the CPU.
        const int j = tid;
        const float co = a.rope[((size_t)pos * 64 + j) * 2], si = a.rope[((size_t)pos * 64 + j) * 2 + 1];
        const float qa = __ldcg(fq + h * PD_HD + j), qb = __ldcg(fq + h * PD_HD + j + 64);
        qs[j] = __fsub_rn(__fmul_rn(qa, co), __fmul_rn(qb, si));
        qs[j + 64] = __fadd_rn(__fmul_rn(qb, co), __fmul_rn(qa, si));
        if (newest) {
            const int kcol = (a.nh + kvh) * PD_HD + j, vcol = (a.nh + a.nkv + kvh) * PD_HD + j;
            const float ka = __ldcg(fq + kcol), kb = __ldcg(fq + kcol + 64);
            kn[j] = f2h(__fsub_rn(__fmul_rn(ka, co), __fmul_rn(kb, si)));
            kn[j + 64] = f2h(__fadd_rn(__fmul_rn(kb, co), __fmul_rn(ka, si)));
            vn[j] = f2h(__ldcg(fq + vcol));
            vn[j + 64] = f2h(__ldcg(fq + vcol + 64));
            if (h % grp == 0) {
                f16* kr = kcl + (size_t)pos * kvd + kvh * PD_HD;
                f16* vr = vcl + (size_t)pos * kvd + kvh * PD_HD;
                kr[j] = kn[j];
                kr[j + 64] = kn[j + 64];
                vr[j] = vn[j];
                vr[j + 64] = vn[j + 64];
            }
        }
    }
    pd_named_sync(1 + half);
    const float scale = rsqrtf((float)PD_HD);
    float qr[4], acc[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        qr[e] = qs[4 * lane + e];
        acc[e] = 0.f;
    }
    float m = NEG_INF, lsum = 0.f;
    const f16* kb = kcl + (size_t)kvh * PD_HD;
    const f16* vb = vcl + (size_t)kvh * PD_HD;
    const int p_begin = c * a.chunk, p_end = min(pos + 1, p_begin + a.chunk);
    for (int p0 = p_begin; p0 < p_end; p0 += 64) {
        const int len = min(64, p_end - p0);
#pragma unroll 4
        for (int j = w; j < len; j += 4) {
            const int p = p0 + j;
            const f16* kr = p == pos ? kn : kb + (size_t)p * kvd;
            const uint2 kk = *reinterpret_cast<const uint2*>(kr + 4 * lane);
            float s = qr[0] * lo2f(kk.x) + qr[1] * hi2f(kk.x) + qr[2] * lo2f(kk.y) + qr[3] * hi2f(kk.y);
            s = warp_sum(s);
            if (lane == 0) sc[j] = s * scale;
        }
        pd_named_sync(1 + half);
        if (w == 0) {
            const float x0 = lane < len ? sc[lane] : NEG_INF;
            const float x1 = lane + 32 < len ? sc[lane + 32] : NEG_INF;
            const float m_new = fmaxf(m, warp_max(fmaxf(x0, x1)));
            const float e0 = lane < len ? expf(x0 - m_new) : 0.f;
            const float e1 = lane + 32 < len ? expf(x1 - m_new) : 0.f;
            if (lane < len) sc[lane] = e0;
            if (lane + 32 < len) sc[lane + 32] = e1;
            const float sum = warp_sum(e0 + e1);
            if (lane == 0) {
                st[0] = m_new;
                st[1] = expf(m - m_new);
                st[2] = sum;
            }
        }
        pd_named_sync(1 + half);
        const float corr = st[1];
        m = st[0];
        lsum = lsum * corr + st[2];
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[e] *= corr;
#pragma unroll 4
        for (int j = w; j < len; j += 4) {
            const int p = p0 + j;
            const float e = sc[j];
            const f16* vr = p == pos ? vn : vb + (size_t)p * kvd;
            const uint2 vv = *reinterpret_cast<const uint2*>(vr + 4 * lane);
            acc[0] += e * lo2f(vv.x);
            acc[1] += e * hi2f(vv.x);
            acc[2] += e * lo2f(vv.y);
            acc[3] += e * hi2f(vv.y);
        }
        pd_named_sync(1 + half);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) ow[w * 128 + 4 * lane + e] = acc[e];
    pd_named_sync(1 + half);
    const size_t ob = (size_t)c * a.nh + h;
    a.att_o[ob * PD_HD + tid] = ow[tid] + ow[128 + tid] + ow[256 + tid] + ow[384 + tid];
    if (tid == 0) {
        a.att_ml[ob * 2] = m;
        a.att_ml[ob * 2 + 1] = lsum;
    }
    // The scratch is reused by this half's next item.
    pd_named_sync(1 + half);
}

extern "C" __global__ void __launch_bounds__(256, WV_PD_MINB) decode_layers(
    const PdLayer* __restrict__ layers, const int4* __restrict__ sched, const int* __restrict__ tslots, int L,
    int H, int qkvN, int F, int nh, int nkv, int gs, float eps, float* x, float* ss, float* part_a,
    float* part_b, float* fin_qkv, float* fin_gu, float* att_o, float* att_ml, int chunk, int nch, f16* kc, f16* vc, long long layer_stride,
    const float* __restrict__ rope, const int* __restrict__ dpos, int* counters, unsigned* bar,
    unsigned long long* trace)
{
    extern __shared__ __align__(16) unsigned char pd_smem[];
    __shared__ int4 seg[4][PD_MAXSEG];
    __shared__ int done[2];

    PdArgs a;
    a.layers = layers;
    a.tslots = tslots;
    a.L = L;
    a.H = H;
    a.qkvN = qkvN;
    a.F = F;
    a.nh = nh;
    a.nkv = nkv;
    a.gs = gs;
    a.eps = eps;
    a.x = x;
    a.ss = ss;
    a.part_a = part_a;
    a.part_b = part_b;
    a.fin_qkv = fin_qkv;
    a.fin_gu = fin_gu;
    a.att_o = att_o;
    a.att_ml = att_ml;
    a.chunk = chunk;
    a.kc = kc;
    a.vc = vc;
    a.layer_stride = layer_stride;
    a.rope = rope;
    a.counters = counters;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    if (threadIdx.x < 4 * PD_MAXSEG) seg[threadIdx.x / PD_MAXSEG][threadIdx.x % PD_MAXSEG] = sched[(size_t)blockIdx.x * 4 * PD_MAXSEG + threadIdx.x];
    unsigned char* region = pd_smem + PD_RING;
    PdShared& sh = *reinterpret_cast<PdShared*>(region);
    if (threadIdx.x < 2) done[threadIdx.x] = 0;
    __syncthreads();
    const uint4* ring = reinterpret_cast<const uint4*>(pd_smem) + warp * 2 * (PD_SLOT / 16) + lane;
    PdStream ws;
    ws.cur.p = 0;
    ws.cur.s = -1;
    ws.cur.t = 0;
    ws.cur.j = 0;
    ws.cur.je = 0;
    ws.issued = 0;
    ws.used = 0;
    ws.sv = make_uint2(0u, 0u);
    ws.zv = 0u;
    ws.ring_s = smem_addr(ring);
    // The warp's first batch, before anything else.
    pd_next(ws.cur, seg, warp, 4 * L);
    pd_issue(a, ws.cur, ws.ring_s, lane, ws.issued, ws.sv, ws.zv);
    if (ws.cur.p < 4 * L) ++ws.issued;
    const int pos = *dpos;
    const int nvalid = min(nch, (pos + chunk) / chunk);
    // Layer 0's norm needs the per-tile sums of squares of the embedded x.
    const int tiles = (H + 127) >> 7;
    if ((int)blockIdx.x < tiles) {
        const int c = blockIdx.x * 128 + threadIdx.x;
        const float v = threadIdx.x < 128 && c < H ? __ldcg(x + c) : 0.f;
        const float s2 = block_sum(v * v, reinterpret_cast<float*>(region));
        if (threadIdx.x == 0) ss[blockIdx.x] = s2;
    }
    pd_mark(trace, 0);
    pd_barrier(bar, done);
    pd_mark(trace, 1);
    const int half = threadIdx.x >> 7;
    float* att_sm = reinterpret_cast<float*>(region) + half * PD_ATT_FLOATS;
    for (int l = 0; l < L; ++l) {
        unsigned long long* tr = trace ? trace + 2 + 10 * l : nullptr;
        // Every block's phase ends for the middle layer: trace[2 + 10 L + phase * B + block].
        unsigned long long* tb = trace && l == L / 2 ? trace + 2 + 10 * L + blockIdx.x : nullptr;
        pd_product<PD_PRO_NORM>(a, l, 0, ws, seg, sh, done, ring, pos, nvalid);
        pd_mark(tr, 0);
        pd_mark_all(tb, 0);
        pd_barrier(bar, done);
        pd_mark(tr, 1);
        for (int it = blockIdx.x + gridDim.x * half; it < nh * nvalid; it += 2 * gridDim.x)
            pd_attn_item(a, l, it % nh, it / nh, pos, nvalid, att_sm, half);
        pd_mark(tr, 2);
        pd_mark_all(tb, 1);
        pd_barrier(bar, done);
        pd_mark(tr, 3);
        pd_product<PD_PRO_ATTN>(a, l, 1, ws, seg, sh, done, ring, pos, nvalid);
        pd_mark(tr, 4);
        pd_mark_all(tb, 2);
        pd_barrier(bar, done);
        pd_mark(tr, 5);
        pd_product<PD_PRO_NORM>(a, l, 2, ws, seg, sh, done, ring, pos, nvalid);
        pd_mark(tr, 6);
        pd_mark_all(tb, 3);
        pd_barrier(bar, done);
        pd_mark(tr, 7);
        pd_product<PD_PRO_SILU>(a, l, 3, ws, seg, sh, done, ring, pos, nvalid);
        pd_mark(tr, 8);
        pd_mark_all(tb, 4);
        if (l + 1 < L) pd_barrier(bar, done);
        pd_mark(tr, 9);
    }
    cp_async_wait<0>();
}
