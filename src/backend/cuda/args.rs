//! Kernel handles and their launch arguments (what `Gpu::launch` and its kin take).

use super::device::Gpu;
use super::ffi::{self, CUdeviceptr, CUfunction};
use std::ffi::c_void;

/// A kernel function of a loaded module.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub func: CUfunction,
    pub name: &'static str,
}

impl Kernel {
    /// (registers per thread, local memory bytes per thread) as the driver reports them, for
    /// benchmarks and resource checks; `None` when the driver lacks `cuFuncGetAttribute`.
    pub fn resources(&self, gpu: &Gpu) -> Option<(i32, i32)> {
        let get = gpu.drv.cuFuncGetAttribute?;
        let (mut regs, mut local) = (0, 0);
        // SAFETY: valid out-pointers and a function of a loaded module.
        // 4 = CU_FUNC_ATTRIBUTE_NUM_REGS, 3 = CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES.
        let ok = unsafe { get(&mut regs, 4, self.func) == 0 && get(&mut local, 3, self.func) == 0 };
        ok.then_some((regs, local))
    }
}

// SAFETY: a CUfunction is a handle usable from any thread with the context current.
unsafe impl Send for Kernel {}
// SAFETY: as above.
unsafe impl Sync for Kernel {}

/// Kernel arguments, one 8-byte slot each.
#[derive(Default)]
pub struct Args {
    slots: Vec<u64>,
    /// Tensor maps passed by value, and the slot each takes (a map's parameter is its 128
    /// bytes, so its pointer is the map's, not a slot's; `ptrs` takes their addresses once
    /// every argument is in, so the vector may grow before that).
    maps: Vec<(usize, ffi::CUtensorMap)>,
}

impl Args {
    pub fn new() -> Args {
        Args {
            slots: Vec::with_capacity(16),
            maps: Vec::new(),
        }
    }
    /// A device pointer (0 for NULL).
    pub fn ptr(&mut self, p: CUdeviceptr) -> &mut Self {
        self.slots.push(p);
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.slots.push(v as u32 as u64);
        self
    }
    /// A usize that must fit an `int` parameter.
    pub fn int(&mut self, v: usize) -> &mut Self {
        debug_assert!(v <= i32::MAX as usize);
        self.i32(v as i32)
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.slots.push(v as u64);
        self
    }
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.slots.push(v.to_bits() as u64);
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.slots.push(v.to_bits());
        self
    }
    /// A `CUtensorMap` parameter (a kernel's `const __grid_constant__` 128-byte struct).
    pub fn map(&mut self, m: ffi::CUtensorMap) -> &mut Self {
        self.maps.push((self.slots.len(), m));
        self.slots.push(0);
        self
    }
    /// One pointer per parameter, as `cuLaunchKernel`'s `kernelParams` takes them (valid while
    /// `self` is neither moved nor changed).
    pub(super) fn ptrs(&mut self) -> Vec<*mut c_void> {
        let mut p: Vec<*mut c_void> = self
            .slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        for (i, m) in &mut self.maps {
            p[*i] = m as *mut ffi::CUtensorMap as *mut c_void;
        }
        p
    }
}
