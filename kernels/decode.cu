// decode.cu — every decoder layer of one decode step (one token) in one persistent kernel whose
// work is ordered by readiness flags (data dependencies), not by grid barriers.
// Opt-in (WV_CUDA_PERSIST=1; see persistent.rs and docs/cuda.md, "Third session" and "Tenth
// session").
//
// Idea: launched one kernel per step, each 13B product (3–20 µs) pays a start and a tail, and
// the step's chain of ~400 dependent launches does not overlap the weight streaming (the step
// is their sum). Here the blocks stay resident for the whole step and each warp's weight
// stream runs WV_PD_RD - 1 batches ahead of its arithmetic *across* products and layers; a
// batch waits only for the inputs it needs, so early blocks go on into the next product while
// late ones finish the last, and no block waits for the whole grid.
//
// Launch: cooperative (all blocks resident), grid B = blocks per SM × SMs, block 256 threads
// = 8 warps, dynamic shared memory PD_RING (the weight ring) + PdShared (products) + the two
// half blocks' attention scratch (host: persistent.rs). Per layer l, in each block's order:
//   1. q|k|v   = (x · w_in) · Wqkv · r        → fin_qkv [qkvN]
//   2. attention: per (head, chunk of keys) item, a half block (4 warps, named barrier 1 or 2):
//      q (and, in the newest chunk, k and v of the new position) from fin_qkv, RoPE, the new K/V
//      written to the cache, scores and the softmax-weighted V sum → att_o [nch, nh, 128] and
//      (max, sum) att_ml [nch, nh, 2]
//   3. o       = combine(att) · Wo            → the residual add into x, sums of squares ss_o
//   4. gate|up = (x · w_post) · Wgu · r_o     → fin_gu [2F]
//   5. down    = (SiLU(gate) · up) · Wdown    → the residual add into x, sums of squares ss
// RMSNorm(x) · W = r · ((x · w) · W) with r = 1 / rms(x) a scalar: the products' batches need
// only their own 64 inputs of x (one tile's readiness), and r — which needs every tile's sum of
// squares — is applied where a tile's slots are summed.
//
// Readiness flags (int, zeroed by the host before each step; PdFlags below): a tile of x as a
// layer's input (and its sum of squares), q|k|v tiles summed, attention chunks done per head, x
// tiles after o's residual add, gate|up tiles summed, and counts of each for the inputs that
// need them all (an act-order permutation, the norms' r). A batch of q|k|v or gate|up waits for
// its x tile, of o for its head's chunks, of down for its gate and up tiles; an attention item
// for its head's q (and k, v) tiles. Every wait is for work earlier in every block's order, and
// all blocks are resident, so the step cannot deadlock.
//
// Products: a matrix (wv's repacked 4-bit layout, kernels/gemv.cu: qw u32 [K/8, N], scales f16
// [G, N], zeros u8 [G, N], perm int [K] or NULL) is cut into units = (128-column tile t, batch j
// of 64 inputs = 8 packed rows). The host's schedule `sched` [B][4][PD_MAXSEG] gives each block
// a contiguous run of units (stream-K: every block the same number ± 1) as segments
// int4 (t, j0, nbs, slot) within one tile each (nbs = 0 ends the list); warp w
// takes batches [j0 + nbs·w/8, j0 + nbs·(w+1)/8) of a segment and makes each batch's 64 inputs
// itself. A segment's 8 warp sums meet in shared memory (one buffer, used by the block's
// segments in turn: a warp writes its sum once the previous use was read) and the last warp
// writes slot `slot` of the tile in the product's own slot buffer; the last block to finish a
// tile (a self-resetting counter per product and tile; `tslots` says how many slots a tile has)
// sums its slots in slot order (deterministic) into fin_qkv / fin_gu (times r), or into x with
// the tile's sum of squares (o, down), and raises the tile's flag.
// Weights: per warp a ring of WV_PD_RD batches in shared memory, filled by cp.async, each lane
// copying and later reading its own 16 bytes of each row; batch k + RD - 1 is requested (and its
// scales and zeros loaded into registers) before batch k is waited for. The arithmetic is
// gemv_q4l's (common.cuh: dot8_lean, f16 sums over PD_ACC rows; each batch's inputs scaled by a
// power of two to just under the f16 sums' bound, undone in f32).
// Data written during the kernel by other blocks is read with ld.global.cg (L2), never through
// the non-coherent or L1 paths, after an acquire load of its flag.

#define PD_HD 128
#define PD_WARPS 8
#define PD_MAXSEG 8
#define PD_ACC 4
// One warp's batch: 8 packed rows x 32 lanes x 16 bytes.
#define PD_SLOT 4096
#ifndef WV_PD_RD
#define WV_PD_RD 3
#endif
#define PD_RING (PD_WARPS * WV_PD_RD * PD_SLOT)
// Floats of one half block's attention scratch: q [128], scores [64], 4 warps' outputs [4][128],
// softmax state [4], then the new k and v as f16 [128] each (128 floats).
#define PD_ATT_FLOATS (128 + 64 + 4 * 128 + 4 + 128)
#ifndef WV_PD_MINB
#define WV_PD_MINB 2
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
    int T, QT, GT;  // tiles of x, of q|k|v's output, of gate|up's
    float eps;
    float* x;
    float* ss;    // [T] sums of squares of x as the next layer's input (down's residual add)
    float* ss_o;  // [T] the same after o's residual add
    float* part[4];  // each product's slots [tslots max][N]
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
    // Readiness flags (see the opening comment), zeroed before the step:
    int* xr;   // [L + 1][T] x tile t ready as layer l's input, ss[t] written
    int* xc;   // [L + 1]    how many
    int* qr;   // [L][QT]    q|k|v tile summed into fin_qkv
    int* ad;   // [L][nh]    attention chunks done per head
    int* orr;  // [L][T]     x tile after o's residual add, ss_o[t] written
    int* oc;   // [L]        how many
    int* gr;   // [L][GT]    gate|up tile summed into fin_gu
    int* gc;   // [L]        how many
};

__device__ __forceinline__ int pd_N(const PdArgs& a, int m) {
    return m == 0 ? a.qkvN : m == 2 ? 2 * a.F : a.H;
}
// Where matrix m's per-tile slot counts (and tile counters) start.
__device__ __forceinline__ int pd_toff(const PdArgs& a, int m) {
    int o = 0;
    for (int i = 0; i < m; ++i) o += (pd_N(a, i) + 127) >> 7;
    return o;
}
// Phase timing (WV_CUDA_PD_TRACE; trace NULL: nothing): warp 0 of block 0 records
// %globaltimer before the first layer into trace[0] and at the end of its part of phase p
// (q|k|v, attention, o, gate|up, down) of layer l into trace[1 + 5 l + p]; warp 0 of every
// block, for the middle layer, into trace[1 + 5 L + p B + block] (pd_mark_all).
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

// Request the cursor's batch into ring slot n % RD and load its scales and zeros; commit a
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
            const u32 dst = ring_s + (n % WV_PD_RD) * PD_SLOT;
#pragma unroll
            for (int i = 0; i < 8; ++i) cp_async16(dst + i * 512, src + (size_t)i * N * 4);
            const int g = (c.j * 64) / a.gs;
            sv = __ldg(reinterpret_cast<const uint2*>(M.scales + (size_t)g * N + col));
            zv = __ldg(reinterpret_cast<const u32*>(M.zeros + (size_t)g * N + col));
        }
    }
    cp_async_commit();
}

// A warp's weight stream state, carried across products and layers.
struct PdStream {
    PdCursor cur;  // the last batch requested
    int issued, used;
    uint2 sv[WV_PD_RD - 1];  // scales and zeros of the batches in flight, oldest first
    u32 zv[WV_PD_RD - 1];
    u32 ring_s;  // this lane's 16 bytes of row 0 of slot 0 (shared space)
    int red_use;  // uses of the block's reduction buffer this warp has passed
};

// Request the stream's next batch (shifting the scales and zeros queue).
__device__ __forceinline__ void pd_advance(const PdArgs& a, PdStream& ws, const int4 (*seg)[PD_MAXSEG], int warp,
                                           int lane) {
#pragma unroll
    for (int i = 0; i + 1 < WV_PD_RD - 1; ++i) {
        ws.sv[i] = ws.sv[i + 1];
        ws.zv[i] = ws.zv[i + 1];
    }
    pd_next(ws.cur, seg, warp, 4 * a.L);
    pd_issue(a, ws.cur, ws.ring_s, lane, ws.issued, ws.sv[WV_PD_RD - 2], ws.zv[WV_PD_RD - 2]);
    if (ws.cur.p < 4 * a.L) ++ws.issued;
}

enum { PD_PRO_NORM = 0, PD_PRO_ATTN = 1, PD_PRO_SILU = 2 };

// The shared memory a block's products use besides the ring.
struct PdShared {
    float red[PD_WARPS][128];  // the current segment's warp sums
    u32 xw[PD_WARPS][32];      // per warp: the current batch's 64 inputs as f16 pairs
    int arrive;                // warps arrived at the reduction buffer (all uses)
    int freed;                 // uses of it finished (its sums read)
};

// Wait until batch j of product m in layer l has its inputs. `seen` caches the last key waited
// for in this product (a tile, a head, or -2: all of them).
__device__ __forceinline__ void pd_wait_inputs(const PdArgs& a, int l, int m, int j, bool perm, int nvalid,
                                               int& seen) {
    const int k = j * 64;
    if (m == 1) {
        const int h = k / PD_HD;
        if (h != seen) {
            flag_wait(a.ad + (size_t)l * a.nh + h, nvalid);
            seen = h;
        }
        return;
    }
    if (perm) {
        if (seen != -2) {
            if (m == 0) flag_wait(a.xc + l, a.T);
            else if (m == 2) flag_wait(a.oc + l, a.T);
            else flag_wait(a.gc + l, a.GT);
            seen = -2;
        }
        return;
    }
    const int t = k >> 7;
    if (t == seen) return;
    if (m == 0) {
        flag_wait(a.xr + (size_t)l * a.T + t, 1);
    } else if (m == 2) {
        flag_wait(a.orr + (size_t)l * a.T + t, 1);
    } else {
        // down: gate columns [128t, +128) and up columns F + [128t, +128).
        const int* g = a.gr + (size_t)l * a.GT;
        flag_wait(g + t, 1);
        const int u0 = (a.F + 128 * t) >> 7, u1 = min(a.GT - 1, (a.F + 128 * t + 127) >> 7);
        for (int u = u0; u <= u1; ++u) flag_wait(g + u, 1);
    }
    seen = t;
}


// One product (matrix m of layer l). Warps run independently (no block-wide barrier): for each
// batch a warp waits for its inputs, makes its 64 inputs itself — lane i the pair (2i, 2i+1),
// from the residual stream (times the norm weight), the gate|up output (SiLU · up) or the
// attention partials (the combine) — scales them by a power of two to just under the f16 sums'
// bound (exact; undone per batch), and shares them through xw. The segment's sums and the tile's
// last block: see the opening comment.
template <int PRO>
__device__ __forceinline__ void pd_product(const PdArgs& a, int l, int m, PdStream& ws,
                                           const int4 (*seg)[PD_MAXSEG], PdShared& sh,
                                           const uint4* ring, int nvalid) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int N = pd_N(a, m);
    const PdLayer& Ly = a.layers[l];
    const int* perm = Ly.m[m].perm;
    float* out = a.part[m];
    const float xmax = XMAX_FOR_ROWS(PD_ACC);
    const float* __restrict__ nw = m == 0 ? Ly.norm_in : Ly.norm_post;
    int seen = -1;
    // The attention combine's per-chunk weights of head `wh` (lane c: chunk c; nvalid <= 32).
    int wh = -1;
    float wc = 0.f;
    for (int s = 0; s < PD_MAXSEG; ++s) {
        const int4 sg = seg[m][s];
        if (sg.z == 0) break;
        const int t = sg.x, j0 = sg.y, nbs = sg.z, slot = sg.w;
        const int b0 = j0 + ((nbs * warp) >> 3), b1 = j0 + ((nbs * (warp + 1)) >> 3);
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        for (int j = b0; j < b1; ++j) {
            const uint2 sv = ws.sv[0];
            const u32 zv = ws.zv[0];
            // The stream's next batch (possibly of a later segment, product or layer) before
            // this one's inputs and weights are waited for.
            pd_advance(a, ws, seg, warp, lane);
            pd_wait_inputs(a, l, m, j, perm != nullptr, nvalid, seen);
            // This batch's inputs k, k + 1.
            const int k = j * 64 + 2 * lane;
            float v0, v1;
            if (PRO == PD_PRO_NORM) {
                const int k0 = perm ? perm[k] : k, k1 = perm ? perm[k + 1] : k + 1;
                v0 = __ldcg(a.x + k0) * nw[k0];
                v1 = __ldcg(a.x + k1) * nw[k1];
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
            // Scale by 2^-e so that the largest input is just under xmax (exact), undone below:
            // the unnormalised residual stream may be far from 1 either way.
            const float mx = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
            float up = 1.f;
            if (mx > 0.f && mx <= 3.0e38f) {
                const int e = (int)ceilf(log2f(mx / xmax));
                up = exp2f((float)e);
                const float down = exp2f((float)-e);
                v0 *= down;
                v1 *= down;
            }
            __syncwarp();
            sh.xw[warp][lane] = pack2(v0, v1);
            __syncwarp();
            cp_async_wait<WV_PD_RD - 1>();
            const uint4* slot_p = ring + (ws.used % WV_PD_RD) * (PD_SLOT / 16);
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
        // The segment's warp sums meet in red, once its previous use was read; the last warp to
        // arrive finishes the segment.
        const int use = ws.red_use++;
        if (lane == 0) {
            volatile int* fr = &sh.freed;
            while (*fr < use) {
            }
        }
        __syncwarp();
        __threadfence_block();
        *reinterpret_cast<float4*>(&sh.red[warp][lane * 4]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        __syncwarp();
        int last = 0;
        if (lane == 0) {
            __threadfence_block();
            last = atomicAdd(&sh.arrive, 1) == PD_WARPS * use + PD_WARPS - 1;
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
        if (lane == 0) {
            __threadfence_block();
            atomicExch(&sh.freed, use + 1);
        }
        const int c = t * 128 + lane * 4;
        const bool mine = c < N;
        if (mine) *reinterpret_cast<float4*>(out + (size_t)slot * N + c) = v;
        // The tile's last block sums its slots.
        __threadfence();
        int* counter = a.counters + pd_toff(a, m) + t;
        const int ns = __ldg(a.tslots + pd_toff(a, m) + t);
        int tl = 0;
        if (lane == 0) tl = atomicAdd(counter, 1) == ns - 1;
        if (!__shfl_sync(0xffffffffu, tl, 0)) continue;
        __threadfence();
        if (lane == 0) *counter = 0;
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
        } else {
            // r of the norm this product's inputs skipped, once every tile's sum of squares is in.
            flag_wait(m == 0 ? a.xc + l : a.oc + l, a.T);
            const float r = rms_scale_from_tiles(m == 0 ? a.ss : a.ss_o, a.T, a.H, a.eps);
            if (mine) *reinterpret_cast<float4*>((m == 0 ? a.fin_qkv : a.fin_gu) + c) = make_float4(v.x * r, v.y * r, v.z * r, v.w * r);
            __threadfence();
            __syncwarp();
            if (lane == 0) {
                if (m == 0) {
                    flag_raise(a.qr + (size_t)l * a.QT + t);
                } else {
                    flag_raise(a.gr + (size_t)l * a.GT + t);
                    flag_raise(a.gc + l);
                }
            }
        }
    }
}

__device__ __forceinline__ void pd_named_sync(int id) { asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory"); }

// Attention item (head h, chunk c of keys) by one half block (128 threads; named barrier 1 + half):
// waits for its head's q tile (and, in the newest chunk, k and v tiles), raises ad[l][h] when done.
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
        // Threads that read fin_qkv wait for its tiles themselves (their loads follow the acquire).
        const int* qr = a.qr + (size_t)l * a.QT;
        flag_wait(qr + h, 1);
        if (newest) {
            flag_wait(qr + a.nh + kvh, 1);
            flag_wait(qr + a.nh + a.nkv + kvh, 1);
        }
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
    __threadfence();
    // The scratch is reused by this half's next item; the head's chunk count is raised once
    // every thread's output is out.
    pd_named_sync(1 + half);
    if (tid == 0) flag_raise(a.ad + (size_t)l * a.nh + h);
}

extern "C" __global__ void __launch_bounds__(256, WV_PD_MINB) decode_layers(
    const PdLayer* __restrict__ layers, const int4* __restrict__ sched, const int* __restrict__ tslots, int L,
    int H, int qkvN, int F, int nh, int nkv, int gs, float eps, float* x, float* ss, float* ss_o,
    float* part_qkv, float* part_o, float* part_gu, float* part_down, float* fin_qkv, float* fin_gu,
    float* att_o, float* att_ml, int chunk, int nch, f16* kc, f16* vc, long long layer_stride,
    const float* __restrict__ rope, const int* __restrict__ dpos, int* counters, int* flags,
    unsigned long long* trace)
{
    extern __shared__ __align__(16) unsigned char pd_smem[];
    __shared__ int4 seg[4][PD_MAXSEG];

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
    a.T = (H + 127) >> 7;
    a.QT = (qkvN + 127) >> 7;
    a.GT = (2 * F + 127) >> 7;
    a.eps = eps;
    a.x = x;
    a.ss = ss;
    a.ss_o = ss_o;
    a.part[0] = part_qkv;
    a.part[1] = part_o;
    a.part[2] = part_gu;
    a.part[3] = part_down;
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
    // The flags' layout (persistent.rs: flag_words).
    a.xr = flags;
    a.xc = a.xr + (size_t)(L + 1) * a.T;
    a.qr = a.xc + (L + 1);
    a.ad = a.qr + (size_t)L * a.QT;
    a.orr = a.ad + (size_t)L * nh;
    a.oc = a.orr + (size_t)L * a.T;
    a.gr = a.oc + L;
    a.gc = a.gr + (size_t)L * a.GT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    if (threadIdx.x < 4 * PD_MAXSEG) seg[threadIdx.x / PD_MAXSEG][threadIdx.x % PD_MAXSEG] = sched[(size_t)blockIdx.x * 4 * PD_MAXSEG + threadIdx.x];
    PdShared& sh = *reinterpret_cast<PdShared*>(pd_smem + PD_RING);
    float* att_base = reinterpret_cast<float*>(pd_smem + PD_RING + ((sizeof(PdShared) + 15) / 16) * 16);
    if (threadIdx.x == 0) {
        sh.arrive = 0;
        sh.freed = 0;
    }
    __syncthreads();
    const uint4* ring = reinterpret_cast<const uint4*>(pd_smem) + warp * WV_PD_RD * (PD_SLOT / 16) + lane;
    PdStream ws;
    ws.cur.p = 0;
    ws.cur.s = -1;
    ws.cur.t = 0;
    ws.cur.j = 0;
    ws.cur.je = 0;
    ws.issued = 0;
    ws.used = 0;
#pragma unroll
    for (int i = 0; i < WV_PD_RD - 1; ++i) {
        ws.sv[i] = make_uint2(0u, 0u);
        ws.zv[i] = 0u;
    }
    ws.ring_s = smem_addr(ring);
    ws.red_use = 0;
    // The warp's first RD - 1 batches, before anything else.
#pragma unroll
    for (int i = 0; i < WV_PD_RD - 1; ++i) pd_advance(a, ws, seg, warp, lane);
    const int pos = *dpos;
    const int nvalid = min(nch, (pos + chunk) / chunk);
    // Layer 0's inputs: the per-tile sums of squares of the embedded x.
    if ((int)blockIdx.x < a.T) {
        const int c = blockIdx.x * 128 + threadIdx.x;
        const float v = threadIdx.x < 128 && c < H ? __ldcg(x + c) : 0.f;
        const float s2 = block_sum(v * v, sh.red[0]);
        if (threadIdx.x == 0) {
            ss[blockIdx.x] = s2;
            __threadfence();
            flag_raise(a.xr + blockIdx.x);
            flag_raise(a.xc);
        }
        // red served as block_sum's scratch.
        __syncthreads();
    }
    pd_mark(trace, 0);
    const int half = threadIdx.x >> 7;
    float* att_sm = att_base + half * PD_ATT_FLOATS;
    for (int l = 0; l < L; ++l) {
        unsigned long long* tr = trace ? trace + 1 + 5 * l : nullptr;
        unsigned long long* tb = trace && l == L / 2 ? trace + 1 + 5 * L + blockIdx.x : nullptr;
        pd_product<PD_PRO_NORM>(a, l, 0, ws, seg, sh, ring, nvalid);
        pd_mark(tr, 0);
        pd_mark_all(tb, 0);
        for (int it = blockIdx.x + gridDim.x * half; it < nh * nvalid; it += 2 * gridDim.x)
            pd_attn_item(a, l, it % nh, it / nh, pos, nvalid, att_sm, half);
        pd_mark(tr, 1);
        pd_mark_all(tb, 1);
        pd_product<PD_PRO_ATTN>(a, l, 1, ws, seg, sh, ring, nvalid);
        pd_mark(tr, 2);
        pd_mark_all(tb, 2);
        pd_product<PD_PRO_NORM>(a, l, 2, ws, seg, sh, ring, nvalid);
        pd_mark(tr, 3);
        pd_mark_all(tb, 3);
        pd_product<PD_PRO_SILU>(a, l, 3, ws, seg, sh, ring, nvalid);
        pd_mark(tr, 4);
        pd_mark_all(tb, 4);
    }
    cp_async_wait<0>();
}
