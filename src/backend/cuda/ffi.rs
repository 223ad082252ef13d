//! Run-time loading of the CUDA driver, NVRTC and cuBLAS, with no toolkit at build time.
//!
//! Each library is found with `dlopen`: first by its usual sonames (the system's search path),
//! then by full path in the places CUDA is installed (`CUDA_PATH`, `CUDA_HOME`, `/usr/local/cuda*`,
//! the driver's folders, and the `nvidia-*` pip wheels of any Python found on the machine).
//! Every symbol is looked up once, when its library is loaded; a missing library or symbol is an
//! `Err(String)` saying what is missing — never a panic. The function tables hold plain C
//! function pointers; result codes stay `i32` (no Rust enum can be handed an unknown value).
//!
//! cudarc's own dynamic loader panics when a library is missing and only knows CUDA 12 sonames,
//! so wv does its own loading here (the lead may drop the cudarc dependency).

#![allow(non_snake_case, non_camel_case_types, clippy::upper_case_acronyms)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub type CUresult = c_int;
pub type CUdevice = c_int;
pub type CUdeviceptr = u64;
pub type CUcontext = *mut c_void;
pub type CUmodule = *mut c_void;
pub type CUfunction = *mut c_void;
pub type CUstream = *mut c_void;
pub type CUevent = *mut c_void;
pub type CUgraph = *mut c_void;
pub type CUgraphExec = *mut c_void;
pub type NvrtcProgram = *mut c_void;
pub type NvrtcResult = c_int;
pub type CublasHandle = *mut c_void;
pub type CublasStatus = c_int;

pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: c_int = 8;
pub const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: c_int = 16;
pub const CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: c_int = 38;
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
pub const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: c_int = 97;
pub const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;
pub const CU_STREAM_NON_BLOCKING: c_uint = 1;
pub const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: c_int = 1;
pub const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: u32 = 6;
pub const CU_LAUNCH_ATTRIBUTE_COOPERATIVE: u32 = 2;

pub const CU_TENSOR_MAP_DATA_TYPE_UINT8: c_int = 0;
pub const CU_TENSOR_MAP_DATA_TYPE_UINT32: c_int = 2;
pub const CU_TENSOR_MAP_DATA_TYPE_FLOAT16: c_int = 6;
pub const CU_TENSOR_MAP_SWIZZLE_NONE: c_int = 0;
pub const CU_TENSOR_MAP_SWIZZLE_128B: c_int = 3;
pub const CU_TENSOR_MAP_L2_PROMOTION_L2_128B: c_int = 2;

/// `CUtensorMap`: an opaque 128-byte description of a tensor for the Tensor Memory Accelerator,
/// made by `cuTensorMapEncodeTiled` and passed to a kernel by value.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct CUtensorMap {
    pub opaque: [u64; 16],
}

/// `CUlaunchAttribute`: an id and a 64-byte value union.
#[repr(C)]
pub struct CUlaunchAttribute {
    pub id: u32,
    pub pad: u32,
    pub value: [u64; 8],
}

/// `CUlaunchConfig` (cuLaunchKernelEx).
#[repr(C)]
pub struct CUlaunchConfig {
    pub grid: [c_uint; 3],
    pub block: [c_uint; 3],
    pub shared_mem: c_uint,
    pub stream: CUstream,
    pub attrs: *mut CUlaunchAttribute,
    pub num_attrs: c_uint,
}

pub const CUBLAS_OP_N: c_int = 0;
pub const CUBLAS_OP_T: c_int = 1;
pub const CUDA_R_32F: c_int = 0;
pub const CUDA_R_16F: c_int = 2;
pub const CUBLAS_COMPUTE_32F: c_int = 68;
pub const CUBLAS_GEMM_DEFAULT: c_int = -1;

/// A library opened with `dlopen`, never closed (its function pointers live for the process).
pub struct Lib {
    handle: *mut c_void,
    pub path: String,
}

// SAFETY: a dlopen handle may be used from any thread; dlsym is thread-safe.
unsafe impl Send for Lib {}
// SAFETY: as above.
unsafe impl Sync for Lib {}

impl Lib {
    /// dlopen `name` (a soname or a full path).
    fn open(name: &str, global: bool) -> Option<Lib> {
        let c = CString::new(name).ok()?;
        let flags = libc::RTLD_NOW
            | if global {
                libc::RTLD_GLOBAL
            } else {
                libc::RTLD_LOCAL
            };
        // SAFETY: c is a valid NUL-terminated string; dlopen has no other preconditions.
        let handle = unsafe { libc::dlopen(c.as_ptr(), flags) };
        if handle.is_null() {
            None
        } else {
            Some(Lib {
                handle,
                path: name.to_string(),
            })
        }
    }

    /// Look up `name` (NUL-terminated).
    fn sym(&self, name: &str) -> Result<*mut c_void, String> {
        debug_assert!(name.ends_with('\0'));
        // SAFETY: the handle is live (never closed) and name is NUL-terminated.
        let p = unsafe { libc::dlsym(self.handle, name.as_ptr() as *const c_char) };
        if p.is_null() {
            Err(format!(
                "{}: symbol {} not found",
                self.path,
                name.trim_end_matches('\0')
            ))
        } else {
            Ok(p)
        }
    }
}

/// Folders to search for CUDA libraries, most specific first.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in [
        "CUDA_PATH",
        "CUDA_HOME",
        "CUDA_ROOT",
        "CUDA_TOOLKIT_ROOT_DIR",
    ] {
        if let Some(v) = std::env::var_os(var) {
            let d = PathBuf::from(v);
            dirs.push(d.join("lib64"));
            dirs.push(d.join("lib"));
            dirs.push(d.join("targets/x86_64-linux/lib"));
            dirs.push(d.join("targets/sbsa-linux/lib"));
        }
    }
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&v));
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    dirs.push("/usr/local/cuda/targets/sbsa-linux/lib".into());
    let mut versioned = glob_dirs(Path::new("/usr/local"), "cuda-");
    versioned.sort();
    versioned.reverse();
    for d in versioned {
        dirs.push(d.join("lib64"));
        dirs.push(d.join("targets/x86_64-linux/lib"));
    }
    for d in [
        "/usr/local/nvidia/lib64",
        "/usr/local/nvidia/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ] {
        dirs.push(d.into());
    }
    dirs.extend(python_nvidia_dirs());
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| !d.components().any(|c| c.as_os_str() == "stubs") && seen.insert(d.clone()));
    dirs
}

/// Subfolders of `dir` whose names start with `prefix`.
fn glob_dirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// `lib` folders of the `nvidia-*` pip wheels in any Python environment we can find.
fn python_nvidia_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = vec![
        "/usr/lib".into(),
        "/usr/local/lib".into(),
        "/opt/conda/lib".into(),
    ];
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = std::env::var_os(var) {
            roots.push(PathBuf::from(v).join("lib"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        roots.push(home.join(".local/lib"));
        for v in glob_dirs(&home.join(".pyenv/versions"), "") {
            roots.push(v.join("lib"));
        }
    }
    for opt in glob_dirs(Path::new("/opt"), "") {
        roots.push(opt.join(".venv/lib"));
        roots.push(opt.join("venv/lib"));
        roots.push(opt.join("lib"));
    }
    let mut out = Vec::new();
    for root in roots {
        for py in glob_dirs(&root, "python3") {
            for sp in ["site-packages", "dist-packages"] {
                let nv = py.join(sp).join("nvidia");
                for pkg in glob_dirs(&nv, "") {
                    out.push(pkg.join("lib"));
                }
            }
        }
    }
    out
}

/// Open the first library that loads: each soname through the system search, then each soname
/// in each search folder. Returns the library and the folder it came from (if found by path).
fn open_first(sonames: &[&str], dirs: &[PathBuf]) -> Option<(Lib, Option<PathBuf>)> {
    for s in sonames {
        if let Some(l) = Lib::open(s, false) {
            return Some((l, None));
        }
    }
    for d in dirs {
        for s in sonames {
            let p = d.join(s);
            if p.exists() {
                if let Some(l) = Lib::open(&p.to_string_lossy(), false) {
                    return Some((l, Some(d.clone())));
                }
            }
        }
    }
    None
}

/// Preload (RTLD_GLOBAL) every file in `dir` whose name starts with `prefix`, so that a library
/// loaded from `dir` finds its dependencies there even when `dir` is not on the search path.
fn preload_from(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    names.sort();
    for p in names {
        let _ = Lib::open(&p.to_string_lossy(), true);
    }
}

macro_rules! api {
    ($table:ident { $( $f:ident : fn($($a:ty),*) -> $r:ty; )* } optional { $( $of:ident : fn($($oa:ty),*) -> $or:ty; )* }) => {
        pub struct $table {
            pub lib: Lib,
            $( pub $f: unsafe extern "C" fn($($a),*) -> $r, )*
            $( pub $of: Option<unsafe extern "C" fn($($oa),*) -> $or>, )*
        }
        impl $table {
            fn load(lib: Lib) -> Result<$table, String> {
                Ok($table {
                    // SAFETY: each symbol is the C function of the declared signature (CUDA's
                    // documented ABI); a data pointer and a function pointer have one size here.
                    $( $f: unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($a),*) -> $r>(lib.sym(concat!(stringify!($f), "\0"))?) }, )*
                    $( $of: lib.sym(concat!(stringify!($of), "\0")).ok().map(|p| {
                        // SAFETY: as above.
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($oa),*) -> $or>(p) }
                    }), )*
                    lib,
                })
            }
        }
    };
}

api!(Driver {
    cuInit: fn(c_uint) -> CUresult;
    cuDriverGetVersion: fn(*mut c_int) -> CUresult;
    cuGetErrorName: fn(CUresult, *mut *const c_char) -> CUresult;
    cuGetErrorString: fn(CUresult, *mut *const c_char) -> CUresult;
    cuDeviceGetCount: fn(*mut c_int) -> CUresult;
    cuDeviceGet: fn(*mut CUdevice, c_int) -> CUresult;
    cuDeviceGetName: fn(*mut c_char, c_int, CUdevice) -> CUresult;
    cuDeviceGetAttribute: fn(*mut c_int, c_int, CUdevice) -> CUresult;
    cuDeviceTotalMem_v2: fn(*mut usize, CUdevice) -> CUresult;
    cuDevicePrimaryCtxRetain: fn(*mut CUcontext, CUdevice) -> CUresult;
    cuDevicePrimaryCtxRelease_v2: fn(CUdevice) -> CUresult;
    cuCtxSetCurrent: fn(CUcontext) -> CUresult;
    cuCtxSynchronize: fn() -> CUresult;
    cuMemAlloc_v2: fn(*mut CUdeviceptr, usize) -> CUresult;
    cuMemFree_v2: fn(CUdeviceptr) -> CUresult;
    cuMemGetInfo_v2: fn(*mut usize, *mut usize) -> CUresult;
    cuMemAllocHost_v2: fn(*mut *mut c_void, usize) -> CUresult;
    cuMemFreeHost: fn(*mut c_void) -> CUresult;
    cuMemcpyHtoD_v2: fn(CUdeviceptr, *const c_void, usize) -> CUresult;
    cuMemcpyHtoDAsync_v2: fn(CUdeviceptr, *const c_void, usize, CUstream) -> CUresult;
    cuMemcpyDtoHAsync_v2: fn(*mut c_void, CUdeviceptr, usize, CUstream) -> CUresult;
    cuMemcpyDtoDAsync_v2: fn(CUdeviceptr, CUdeviceptr, usize, CUstream) -> CUresult;
    cuMemsetD8Async: fn(CUdeviceptr, u8, usize, CUstream) -> CUresult;
    cuMemsetD32Async: fn(CUdeviceptr, c_uint, usize, CUstream) -> CUresult;
    cuStreamCreate: fn(*mut CUstream, c_uint) -> CUresult;
    cuStreamDestroy_v2: fn(CUstream) -> CUresult;
    cuStreamSynchronize: fn(CUstream) -> CUresult;
    cuEventCreate: fn(*mut CUevent, c_uint) -> CUresult;
    cuEventRecord: fn(CUevent, CUstream) -> CUresult;
    cuEventSynchronize: fn(CUevent) -> CUresult;
    cuEventElapsedTime: fn(*mut f32, CUevent, CUevent) -> CUresult;
    cuEventDestroy_v2: fn(CUevent) -> CUresult;
    cuModuleLoadData: fn(*mut CUmodule, *const c_void) -> CUresult;
    cuModuleUnload: fn(CUmodule) -> CUresult;
    cuModuleGetFunction: fn(*mut CUfunction, CUmodule, *const c_char) -> CUresult;
    cuFuncSetAttribute: fn(CUfunction, c_int, c_int) -> CUresult;
    cuLaunchKernel: fn(CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CUstream, *mut *mut c_void, *mut *mut c_void) -> CUresult;
} optional {
    cuFuncGetAttribute: fn(*mut c_int, c_int, CUfunction) -> CUresult;
    cuLaunchKernelEx: fn(*const CUlaunchConfig, CUfunction, *mut *mut c_void, *mut *mut c_void) -> CUresult;
    cuOccupancyMaxActiveBlocksPerMultiprocessor: fn(*mut c_int, CUfunction, c_int, usize) -> CUresult;
    cuStreamBeginCapture_v2: fn(CUstream, c_int) -> CUresult;
    cuStreamEndCapture: fn(CUstream, *mut CUgraph) -> CUresult;
    cuGraphInstantiateWithFlags: fn(*mut CUgraphExec, CUgraph, u64) -> CUresult;
    cuGraphLaunch: fn(CUgraphExec, CUstream) -> CUresult;
    cuGraphExecDestroy: fn(CUgraphExec) -> CUresult;
    cuGraphDestroy: fn(CUgraph) -> CUresult;
    cuTensorMapEncodeTiled: fn(*mut CUtensorMap, c_int, c_uint, *mut c_void, *const u64, *const u64, *const c_uint, *const c_uint, c_int, c_int, c_int, c_int) -> CUresult;
});

api!(Nvrtc {
    nvrtcVersion: fn(*mut c_int, *mut c_int) -> NvrtcResult;
    nvrtcGetErrorString: fn(NvrtcResult) -> *const c_char;
    nvrtcCreateProgram: fn(*mut NvrtcProgram, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> NvrtcResult;
    nvrtcCompileProgram: fn(NvrtcProgram, c_int, *const *const c_char) -> NvrtcResult;
    nvrtcGetProgramLogSize: fn(NvrtcProgram, *mut usize) -> NvrtcResult;
    nvrtcGetProgramLog: fn(NvrtcProgram, *mut c_char) -> NvrtcResult;
    nvrtcGetPTXSize: fn(NvrtcProgram, *mut usize) -> NvrtcResult;
    nvrtcGetPTX: fn(NvrtcProgram, *mut c_char) -> NvrtcResult;
    nvrtcDestroyProgram: fn(*mut NvrtcProgram) -> NvrtcResult;
} optional {
    nvrtcGetCUBINSize: fn(NvrtcProgram, *mut usize) -> NvrtcResult;
    nvrtcGetCUBIN: fn(NvrtcProgram, *mut c_char) -> NvrtcResult;
    nvrtcGetNumSupportedArchs: fn(*mut c_int) -> NvrtcResult;
    nvrtcGetSupportedArchs: fn(*mut c_int) -> NvrtcResult;
});

api!(Cublas {
    cublasCreate_v2: fn(*mut CublasHandle) -> CublasStatus;
    cublasDestroy_v2: fn(CublasHandle) -> CublasStatus;
    cublasSetStream_v2: fn(CublasHandle, CUstream) -> CublasStatus;
    cublasGemmEx: fn(CublasHandle, c_int, c_int, c_int, c_int, c_int, *const c_void, *const c_void, c_int, c_int,
                     *const c_void, c_int, c_int, *const c_void, *mut c_void, c_int, c_int, c_int, c_int) -> CublasStatus;
} optional {
    cublasSetMathMode: fn(CublasHandle, c_int) -> CublasStatus;
});

// SAFETY: the tables hold C function pointers of thread-safe libraries.
unsafe impl Send for Driver {}
// SAFETY: as above.
unsafe impl Sync for Driver {}
// SAFETY: NVRTC programs are per call; the library entry points are thread-safe.
unsafe impl Send for Nvrtc {}
// SAFETY: as above.
unsafe impl Sync for Nvrtc {}
// SAFETY: a cuBLAS handle is used under the backend's lock only.
unsafe impl Send for Cublas {}
// SAFETY: as above.
unsafe impl Sync for Cublas {}

/// The CUDA driver (libcuda), loaded once per process.
pub fn driver() -> Result<&'static Driver, String> {
    static D: OnceLock<Result<Driver, String>> = OnceLock::new();
    D.get_or_init(|| {
        // The driver is never taken from a toolkit folder (those hold link stubs only).
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
            dirs.extend(std::env::split_paths(&v));
        }
        for d in ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib", "/usr/lib"] {
            dirs.push(d.into());
        }
        dirs.retain(|d| !d.components().any(|c| c.as_os_str() == "stubs"));
        let (lib, _) = open_first(&["libcuda.so.1", "libcuda.so"], &dirs).ok_or_else(|| {
            "no NVIDIA driver found (libcuda.so.1 is not on the library search path nor in /usr/local/nvidia, \
             /usr/lib/x86_64-linux-gnu or /usr/lib64)"
                .to_string()
        })?;
        Driver::load(lib)
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// NVRTC (libnvrtc), loaded once per process.
pub fn nvrtc() -> Result<&'static Nvrtc, String> {
    static N: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    N.get_or_init(|| {
        let names = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"];
        let dirs = search_dirs();
        // Preload the builtins next to the library we will pick, so NVRTC finds them even when
        // its folder is not on the search path.
        for d in &dirs {
            if names.iter().any(|n| d.join(n).exists()) {
                preload_from(d, "libnvrtc-builtins.so");
                break;
            }
        }
        let (lib, _) = open_first(&names, &dirs).ok_or_else(|| {
            format!(
                "NVRTC not found (looked for {} on the library search path, in CUDA_PATH/CUDA_HOME, \
                 /usr/local/cuda*/lib64 and the nvidia-cuda-nvrtc pip wheels; install the CUDA toolkit \
                 or `pip install nvidia-cuda-nvrtc-cu12`)",
                names.join(", ")
            )
        })?;
        Nvrtc::load(lib)
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// cuBLAS (libcublas), loaded once per process; used for prefill products when present.
pub fn cublas() -> Result<&'static Cublas, String> {
    static B: OnceLock<Result<Cublas, String>> = OnceLock::new();
    B.get_or_init(|| {
        if std::env::var_os("WV_NO_CUBLAS").is_some() {
            return Err("cuBLAS disabled by WV_NO_CUBLAS".into());
        }
        let names = [
            "libcublas.so.13",
            "libcublas.so.12",
            "libcublas.so.11",
            "libcublas.so",
        ];
        let dirs = search_dirs();
        for d in &dirs {
            if names.iter().any(|n| d.join(n).exists()) {
                preload_from(d, "libcublasLt.so");
                break;
            }
        }
        let (lib, _) = open_first(&names, &dirs)
            .ok_or_else(|| format!("cuBLAS not found (looked for {})", names.join(", ")))?;
        Cublas::load(lib)
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for a driver result code.
pub fn driver_error_text(d: &Driver, r: CUresult) -> String {
    let mut name: *const c_char = std::ptr::null();
    let mut text: *const c_char = std::ptr::null();
    // SAFETY: both calls write a pointer to a static string or leave it null.
    unsafe {
        (d.cuGetErrorName)(r, &mut name);
        (d.cuGetErrorString)(r, &mut text);
    }
    let s = |p: *const c_char| {
        if p.is_null() {
            None
        } else {
            // SAFETY: the driver returns NUL-terminated static strings.
            Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        }
    };
    match (s(name), s(text)) {
        (Some(n), Some(t)) => format!("{n} ({t})"),
        (Some(n), None) => n,
        _ => format!("CUDA error {r}"),
    }
}

/// The text of an NVRTC result code.
pub fn nvrtc_error_text(n: &Nvrtc, r: NvrtcResult) -> String {
    // SAFETY: returns a static NUL-terminated string.
    let p = unsafe { (n.nvrtcGetErrorString)(r) };
    if p.is_null() {
        format!("NVRTC error {r}")
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
