//! cuBLAS for prefill's products: one handle on the backend's stream, `GemmEx` with f16
//! inputs and f32 (or f16) output. Optional: without cuBLAS, prefill uses wv's SIMT kernel.

use super::device::Gpu;
use super::ffi::{self, CUdeviceptr, CublasHandle};
use crate::error::{Error, Result};
use crate::log::{log, Level};

/// A cuBLAS handle on the GPU's stream (prefill products), when cuBLAS is installed.
pub struct Blas {
    lib: &'static ffi::Cublas,
    handle: CublasHandle,
}

// SAFETY: the handle is only used under the backend's lock.
unsafe impl Send for Blas {}
// SAFETY: as above.
unsafe impl Sync for Blas {}

impl Blas {
    /// `None` (with a log line) when cuBLAS is missing or fails to start.
    pub fn new(gpu: &Gpu) -> Option<Blas> {
        let lib = match ffi::cublas() {
            Ok(l) => l,
            Err(e) => {
                log(
                    Level::Info,
                    &format!(
                        "cuda:{}: {e}; prefill uses wv's own product kernel",
                        gpu.ordinal
                    ),
                );
                return None;
            }
        };
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the context is current.
        let r = unsafe { (lib.cublasCreate_v2)(&mut handle) };
        if r != 0 {
            log(
                Level::Info,
                &format!(
                    "cuda:{}: cublasCreate failed ({r}); prefill uses wv's own product kernel",
                    gpu.ordinal
                ),
            );
            return None;
        }
        // SAFETY: live handle and stream.
        let r = unsafe { (lib.cublasSetStream_v2)(handle, gpu.stream) };
        if r != 0 {
            // SAFETY: the handle was created above.
            unsafe { (lib.cublasDestroy_v2)(handle) };
            return None;
        }
        Some(Blas { lib, handle })
    }

    pub fn path(&self) -> &str {
        &self.lib.lib.path
    }

    /// `Y[t, n] (row stride ldy, f32) = X[t, :] · B[:, n]` with X f16 `[t, k]` and B f16 either
    /// `[k, n]` (`nk == false`, leading dimension n) or `[n, k]`.
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
        self.gemm_ex(nk, x, w, y, ffi::CUDA_R_32F, t, n, k, ldy)
    }

    /// [`Self::gemm`] with an f16 output `Y` (f32 accumulation, rounded once at the end). Not
    /// used by the forward pass (for the prefill benchmarks).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(
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
        self.gemm_ex(nk, x, w, y, ffi::CUDA_R_16F, t, n, k, ldy)
    }

    /// `cublasGemmEx` with f16 inputs, f32 compute and scalars, output type `ytype`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_ex(
        &self,
        nk: bool,
        x: CUdeviceptr,
        w: CUdeviceptr,
        y: CUdeviceptr,
        ytype: std::ffi::c_int,
        t: usize,
        n: usize,
        k: usize,
        ldy: usize,
    ) -> Result<()> {
        let (alpha, beta) = (1f32, 0f32);
        // Row-major Y[t, n] is column-major Yᵀ [n, t]: Yᵀ = op(B)ᵀ-as-stored · Xᵀ.
        let (opa, lda) = if nk {
            (ffi::CUBLAS_OP_T, k)
        } else {
            (ffi::CUBLAS_OP_N, n)
        };
        // SAFETY: all pointers are live device buffers of the sizes the shapes imply; alpha and
        // beta are host scalars (the default pointer mode).
        let r = unsafe {
            (self.lib.cublasGemmEx)(
                self.handle,
                opa,
                ffi::CUBLAS_OP_N,
                n as i32,
                t as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                w as *const _,
                ffi::CUDA_R_16F,
                lda as i32,
                x as *const _,
                ffi::CUDA_R_16F,
                k as i32,
                &beta as *const f32 as *const _,
                y as *mut _,
                ytype,
                ldy as i32,
                ffi::CUBLAS_COMPUTE_32F,
                ffi::CUBLAS_GEMM_DEFAULT,
            )
        };
        if r != 0 {
            return Err(Error::device(format!(
                "cublasGemmEx (m={n}, n={t}, k={k}) failed with status {r}"
            )));
        }
        Ok(())
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle was created by cublasCreate and is destroyed once.
        unsafe { (self.lib.cublasDestroy_v2)(self.handle) };
    }
}
