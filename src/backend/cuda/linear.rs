//! A pass's matrix products: [`Ops::linear`] runs a group of products (q|k|v, o, gate|up or
//! down) on the kernel the pass and the weights call for — decode (one token) on a GEMV
//! (`gemv_q4`/`gemv_q4w`/`gemv_q4l`, kernels/gemv.cu, or `gemv_q4m` on the integer tensor
//! cores, gemv_mma.rs) leaving S partial slabs over K, prefill on the fused 4-bit product
//! (gemm_q4.rs) or dequantisation and cuBLAS — and [`slabs`] says where its output lies.

use super::blas::Blas;
use super::device::{DevBuf, Gpu};
use super::ffi::CUdeviceptr;
use super::gemv_mma;
use super::kernels::{Kernels, Partials};
use super::persistent::Persistent;
use super::weights::{DevMat, GemvKind, LinearGroup, Q4Dev};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Where a group's product over `t` tokens leaves its output at `ptr`: decode (t = 1) as the
/// group's S slabs split over K, prefill as one `[t, n_total]` slab.
pub fn slabs(g: &LinearGroup, ptr: CUdeviceptr, t: usize) -> Partials {
    if t == 1 {
        Partials {
            ptr,
            s: g.s_decode,
            sstride: g.n_total,
            ld: g.n_total,
        }
    } else {
        Partials {
            ptr,
            s: 1,
            sstride: t * g.n_total,
            ld: g.n_total,
        }
    }
}

/// The products and kernels one pass needs.
pub struct Ops<'a> {
    pub gpu: &'a Arc<Gpu>,
    pub k: &'a Kernels,
    pub blas: Option<&'a Blas>,
    /// The persistent decode kernel, when decode uses it.
    pub pd: Option<&'a Persistent>,
    /// Prefill's 4-bit products on the fused product where it is loaded and takes the matrix
    /// (else, and when false, dequantisation and cuBLAS).
    pub qgemm: bool,
}

/// Prefill's scratch for the 4-bit products: the dequantisation buffer and the act-order input
/// gather, each with its capacity in f16 elements, where allocated.
#[derive(Clone, Copy, Default)]
pub struct PrefillBufs<'a> {
    pub deq: Option<(&'a DevBuf, usize)>,
    pub xg: Option<(&'a DevBuf, usize)>,
    /// Decode's input digits for `gemv_q4m` (room for the widest input; see Scratch::digits).
    pub digits: Option<CUdeviceptr>,
    /// Whether the kernel that made this product's input also wrote its digits there (so
    /// `Ops::linear` runs no `quant_digits` for a member without a permutation).
    pub digits_made: bool,
}

impl Ops<'_> {
    /// Whether prefill runs the 4-bit matrix `q` on the fused product for a pass of `t` tokens
    /// (else it dequantises it for cuBLAS): an act-order matrix only with room to gather its
    /// input (`xg`, f16 elements).
    pub fn fused_q4(&self, q: &Q4Dev, t: usize, xg: Option<usize>) -> bool {
        self.qgemm
            && self.k.gemm_q4_takes(q, t)
            && (q.perm.is_none() || xg.is_some_and(|cap| cap >= t * q.k))
    }

    /// `Y[t, n] (row stride ldy) = X[t, :] · B[:, n]` through cuBLAS when present.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        nk: bool,
        x: CUdeviceptr,
        w: CUdeviceptr,
        y: CUdeviceptr,
        t: usize,
        n: usize,
        k: usize,
        ldy: usize,
    ) -> Result<()> {
        match self.blas {
            Some(b) => {
                let mark = self.gpu.profile_mark()?;
                b.gemm(nk, x, w, y, t, n, k, ldy)?;
                self.gpu.profile_done(mark, "cublas_gemm")
            }
            None => self.k.gemm(self.gpu, nk, x, w, y, t, n, k, ldy),
        }
    }

    /// Apply a group of products to `x` (f16 `[t, g.k]`), writing partial slabs into `part`
    /// (`cap` floats; prefill may split a product into as many slabs of `[t, n_total]` as fit).
    pub fn linear(
        &self,
        g: &LinearGroup,
        x: CUdeviceptr,
        t: usize,
        (part, cap): (CUdeviceptr, usize),
        bufs: PrefillBufs<'_>,
    ) -> Result<Partials> {
        if t == 1 && g.gemv == GemvKind::Mma {
            let (Some(qd), Some(mk), Some(digits)) =
                (&self.k.quant_digits, &self.k.gemv_q4m, bufs.digits)
            else {
                return Err(Error::internal(
                    "gemv_q4m planned without its kernels or digits",
                ));
            };
            // The input's digits once per permutation (members of one group share the input),
            // unless the kernel before made them.
            let mut made: Option<CUdeviceptr> = bufs.digits_made.then_some(0);
            for m in &g.members {
                let q = m.q4()?;
                let perm = q.perm.as_ref().map_or(0, |p| p.ptr);
                if made != Some(perm) {
                    gemv_mma::quant_digits(self.gpu, qd, x, perm, digits, q.k)?;
                    made = Some(perm);
                }
                let out = part + 4 * m.col0 as u64;
                gemv_mma::gemv_q4m(
                    self.gpu,
                    mk,
                    q,
                    digits,
                    out,
                    g.n_total,
                    g.s_decode,
                    gemv_mma::MmaEpilogue::None,
                    gemv_mma::Prefetch::NONE,
                )?;
            }
            return Ok(slabs(g, part, t));
        }
        if t == 1 {
            for m in &g.members {
                let out = part + 4 * m.col0 as u64;
                match &m.mat {
                    DevMat::Q4(q) => self.k.gemv_q4(
                        self.gpu,
                        q,
                        x,
                        out,
                        g.s_decode,
                        m.per_block,
                        g.n_total,
                        g.gemv,
                    )?,
                    DevMat::F16(d) => self.k.gemv_f16(
                        self.gpu,
                        d.w.ptr,
                        d.k,
                        d.n,
                        x,
                        out,
                        g.s_decode,
                        m.per_block,
                        g.n_total,
                    )?,
                }
            }
            return Ok(slabs(g, part, t));
        }
        let mut split = 1;
        for m in &g.members {
            let out = part + 4 * m.col0 as u64;
            match &m.mat {
                DevMat::Q4(q) if self.fused_q4(q, t, bufs.xg.map(|b| b.1)) => {
                    // A lone matrix whose tiles fill under a wave of the GPU splits K into
                    // slabs (the consumer sums them; `part` holds them, see Scratch::new).
                    if g.members.len() == 1 {
                        let room = cap / (t * g.n_total).max(1);
                        split = self.k.gemm_q4_splits(self.gpu, q, t).min(room).max(1);
                    }
                    // An act-order matrix reads its input in its sorted row order.
                    let xin = match (&q.perm, bufs.xg) {
                        (None, _) => x,
                        (Some(p), Some((b, _))) => {
                            self.k.gather_cols(self.gpu, x, p.ptr, b.ptr, q.k, t)?;
                            b.ptr
                        }
                        (Some(_), None) => {
                            return Err(Error::internal("act-order product without a gather"))
                        }
                    };
                    self.k.gemm_q4(self.gpu, q, xin, out, t, g.n_total, split)?
                }
                DevMat::Q4(q) => {
                    let (buf, elems) = bufs.deq.ok_or_else(|| {
                        Error::internal("prefill without a dequantisation buffer")
                    })?;
                    // Equal pieces (a narrow last piece would leave cuBLAS idle), each a
                    // multiple of 64 columns (aligned offsets) unless it is the whole matrix.
                    let most = (elems / q.k).min(q.n).max(1);
                    let mut piece = q.n.div_ceil(q.n.div_ceil(most));
                    if piece < q.n {
                        let p64 = piece.div_ceil(64) * 64;
                        piece = if p64 <= most {
                            p64
                        } else if most >= 64 {
                            most - most % 64
                        } else {
                            most
                        };
                    }
                    if piece < q.n.min(4) {
                        return Err(Error::internal("dequantisation buffer too small"));
                    }
                    let mut c0 = 0;
                    while c0 < q.n {
                        let c1 = (c0 + piece).min(q.n);
                        self.k.dequant_q4(self.gpu, q, buf.ptr, c0, c1)?;
                        self.gemm(
                            false,
                            x,
                            buf.ptr,
                            out + 4 * c0 as u64,
                            t,
                            c1 - c0,
                            q.k,
                            g.n_total,
                        )?;
                        c0 = c1;
                    }
                }
                DevMat::F16(d) => self.gemm(true, x, d.w.ptr, out, t, d.n, d.k, g.n_total)?,
            }
        }
        Ok(Partials {
            s: split,
            ..slabs(g, part, t)
        })
    }
}
