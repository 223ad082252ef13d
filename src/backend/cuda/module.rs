//! The kernels: CUDA C++ sources embedded in the library, compiled by NVRTC for the GPU present,
//! and cached on disk.
//!
//! Each `kernels/*.cu` file is one module, compiled with `kernels/common.cuh` prepended (no
//! toolkit headers are used, so NVRTC needs no include path). The `SOURCES_SM90A` modules use
//! Hopper's `wgmma` and are compiled for `sm_90a`, on compute capability 9.0 GPUs only; they
//! are optional (the kernels that use them have a fallback). The machine code (a cubin for the
//! GPU's own architecture, or PTX of the newest architecture NVRTC knows when the GPU is newer)
//! is cached in `$WV_CACHE_DIR`, else `$XDG_CACHE_HOME/wv`, else `~/.cache/wv`, under a name made
//! of the source's hash (with the compile options), the architecture and NVRTC's version, so
//! only the first load pays for compilation. Failing to read or write the cache is not an error.

use super::device::{Gpu, Kernel};
use super::ffi::{self, CUmodule, Nvrtc};
use crate::error::{Error, Result};
use crate::log::{log, Level};
use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::sync::Arc;

const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// (file name, source) of every module.
pub const SOURCES: &[(&str, &str)] = &[
    ("gemv.cu", include_str!("../../../kernels/gemv.cu")),
    ("dequant.cu", include_str!("../../../kernels/dequant.cu")),
    ("gemm.cu", include_str!("../../../kernels/gemm.cu")),
    ("norm.cu", include_str!("../../../kernels/norm.cu")),
    (
        "elementwise.cu",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    (
        "attention.cu",
        include_str!("../../../kernels/attention.cu"),
    ),
    ("sample.cu", include_str!("../../../kernels/sample.cu")),
    ("decode.cu", include_str!("../../../kernels/decode.cu")),
];

/// Modules only compute capability 9.0 GPUs load, compiled for `sm_90a` (they use `wgmma` or
/// the Tensor Memory Accelerator). Elsewhere, or when NVRTC cannot build them, the library runs
/// without them.
pub const SOURCES_SM90A: &[(&str, &str)] = &[
    ("gemm_q4.cu", include_str!("../../../kernels/gemm_q4.cu")),
    ("gemv_mma.cu", include_str!("../../../kernels/gemv_mma.cu")),
];

/// The full text NVRTC compiles for one module.
pub fn full_source(src: &str) -> String {
    format!("{COMMON}\n{src}")
}

/// Machine code for one module.
pub struct Image {
    pub bytes: Vec<u8>,
    pub is_cubin: bool,
}

/// NVRTC's version and the architecture we compile for (`sm_90` or, for a GPU newer than
/// NVRTC, `compute_NN` PTX).
pub struct Target {
    pub nvrtc_version: (i32, i32),
    /// e.g. 90
    pub arch: i32,
    pub cubin: bool,
    /// Batches in `gemv_q4l`'s shared-memory weight ring (`-DWV_GEMV_RING`; 0: registers).
    pub ring: usize,
}

impl Target {
    pub fn for_cc(nv: &Nvrtc, cc: (i32, i32)) -> Result<Target> {
        let (mut maj, mut min) = (0, 0);
        // SAFETY: valid out-pointers.
        unsafe { (nv.nvrtcVersion)(&mut maj, &mut min) };
        let want = cc.0 * 10 + cc.1;
        let mut archs: Vec<i32> = Vec::new();
        if let (Some(n), Some(get)) = (nv.nvrtcGetNumSupportedArchs, nv.nvrtcGetSupportedArchs) {
            let mut k = 0;
            // SAFETY: valid out-pointer, then a buffer of the announced length.
            unsafe {
                if n(&mut k) == 0 && k > 0 {
                    archs = vec![0; k as usize];
                    if get(archs.as_mut_ptr()) != 0 {
                        archs.clear();
                    }
                }
            }
        }
        let has_cubin = nv.nvrtcGetCUBIN.is_some() && nv.nvrtcGetCUBINSize.is_some();
        if archs.is_empty() || archs.contains(&want) {
            return Ok(Target {
                nvrtc_version: (maj, min),
                arch: want,
                cubin: has_cubin,
                ring: super::kernels::gemv_ring(),
            });
        }
        let newest = *archs.iter().max().unwrap_or(&want);
        if newest < want {
            // The GPU is newer than this NVRTC: PTX that the driver compiles for it.
            return Ok(Target {
                nvrtc_version: (maj, min),
                arch: newest,
                cubin: false,
                ring: super::kernels::gemv_ring(),
            });
        }
        Err(Error::device(format!(
            "NVRTC {maj}.{min} cannot compile for this GPU (sm_{want}); it supports {archs:?}"
        )))
    }

    /// NVRTC's options for module `name` (the `SOURCES_SM90A` ones for `sm_90a`).
    fn options(&self, name: &str) -> Vec<String> {
        let arch = if SOURCES_SM90A.iter().any(|(n, _)| *n == name) {
            "sm_90a".to_string()
        } else if self.cubin {
            format!("sm_{}", self.arch)
        } else {
            format!("compute_{}", self.arch)
        };
        let mut o = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            "-lineinfo".into(),
        ];
        // Blocks of gemv_q4w that must fit on one SM (caps its registers); an experiment knob.
        if let Some(n) = std::env::var("WV_CUDA_GEMV_MINB")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            if (1..=8).contains(&n) {
                o.push(format!("-DWV_GEMV_MINB={n}"));
            }
        }
        // gemv_q4l's shared-memory weight ring (the launcher sizes its shared memory to match).
        o.push(format!("-DWV_GEMV_RING={}", self.ring));
        // The host's view of the kernels' launch shapes, which the kernels static_assert.
        match name {
            "gemv.cu" => o.push(format!(
                "-DWV_HOST_RING_BYTES={}",
                super::kernels::ring_bytes(self.ring)
            )),
            "gemm_q4.cu" => {
                use super::gemm_q4 as g;
                o.push(format!("-DWV_HOST_QG_THREADS={}", g::GEMM_Q4_THREADS));
                o.push(format!("-DWV_HOST_QT_THREADS={}", g::GEMM_Q4_TMA_THREADS));
                o.push(format!("-DWV_HOST_QG_FEAT={}", g::GEMM_Q4_FEAT));
                o.push(format!("-DWV_HOST_QG_SMEM={}", g::GEMM_Q4_SMEM));
                o.push(format!("-DWV_HOST_QT_SMEM={}", g::GEMM_Q4_TMA_SMEM));
                o.push(format!("-DWV_HOST_QT_SMEM_64={}", g::tma_smem(64)));
                o.push(format!("-DWV_HOST_QT_SMEM_32={}", g::tma_smem(32)));
            }
            "decode.cu" => o.push(format!("-DWV_PD_RD={}", super::persistent::ring_depth())),
            "gemv_mma.cu" => {
                let (mw, mst) = super::gemv_mma::shape();
                o.push(format!("-DMW={mw}"));
                o.push(format!("-DMST={mst}"));
                o.push(format!(
                    "-DWV_HOST_MMA_SMEM={}",
                    super::gemv_mma::smem_of(mw, mst)
                ));
                if super::gemv_mma::unit_major() {
                    o.push("-DMMA_UNIT_MAJOR=1".to_string());
                }
                // The timeline's stamps are compiled in only when asked for (timeline.rs), with
                // its record layout as the host reads it.
                if super::timeline::requested() {
                    use super::timeline::{FIRST, HEAD_WORDS, MARK, RECORDS, WORDS};
                    o.push("-DMMA_TIMELINE=1".to_string());
                    o.push(format!(
                        "-DWV_HOST_TL={RECORDS},{WORDS},{HEAD_WORDS},{MARK},{FIRST}"
                    ));
                }
            }
            _ => {}
        }
        // Extra preprocessor definitions for experiments, e.g. WV_CUDA_DEFINES="WV_GEMV_ACC=8
        // WV_GEMVL_MINB=4" or "WV_GEMV_ACC=8,WV_GEMVL_MINB=4" (names and values of letters,
        // digits and '_' only).
        if let Ok(defs) = std::env::var("WV_CUDA_DEFINES") {
            for d in defs.split(|c: char| c.is_whitespace() || c == ',') {
                if !d.is_empty()
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '=')
                {
                    o.push(format!("-D{d}"));
                }
            }
        }
        o
    }
}

/// FNV-1a, 64 bits.
fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The on-disk cache folder (not created here).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WV_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("wv"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("wv"))
}

fn cache_path(name: &str, src: &str, t: &Target) -> Option<PathBuf> {
    let opts = t.options(name).join(" ");
    let h = fnv64(&[src, &opts]);
    let stem = name.trim_end_matches(".cu");
    let ext = if t.cubin { "cubin" } else { "ptx" };
    cache_dir().map(|d| {
        d.join(format!(
            "{stem}-{h:016x}-{}{}-nvrtc{}.{}.{ext}",
            if t.cubin { "sm" } else { "compute" },
            t.arch,
            t.nvrtc_version.0,
            t.nvrtc_version.1
        ))
    })
}

/// Compile one module's full source with NVRTC. Errors carry the compiler log.
pub fn compile(nv: &Nvrtc, name: &str, src: &str, t: &Target) -> Result<Image> {
    let csrc = CString::new(src).map_err(|_| Error::internal("kernel source holds a NUL byte"))?;
    let cname = CString::new(name).map_err(|_| Error::internal("bad kernel file name"))?;
    let opts: Vec<CString> = t
        .options(name)
        .into_iter()
        .map(|o| CString::new(o).expect("no NUL in options"))
        .collect();
    let optp: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let err = |what: &str, r| {
        Error::device(format!(
            "NVRTC {what} for {name} failed: {}",
            ffi::nvrtc_error_text(nv, r)
        ))
    };
    let mut prog: ffi::NvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings and out-pointers; the program is destroyed below.
    unsafe {
        let r = (nv.nvrtcCreateProgram)(
            &mut prog,
            csrc.as_ptr(),
            cname.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        );
        if r != 0 {
            return Err(err("nvrtcCreateProgram", r));
        }
        let result = (|| {
            let r = (nv.nvrtcCompileProgram)(prog, optp.len() as i32, optp.as_ptr());
            let mut log_size = 0usize;
            (nv.nvrtcGetProgramLogSize)(prog, &mut log_size);
            let mut log_buf = vec![0u8; log_size.max(1)];
            (nv.nvrtcGetProgramLog)(prog, log_buf.as_mut_ptr() as *mut c_char);
            let log_text = String::from_utf8_lossy(&log_buf)
                .trim_end_matches('\0')
                .trim()
                .to_string();
            if r != 0 {
                return Err(Error::device(format!(
                    "NVRTC could not compile {name}: {}\n{log_text}",
                    ffi::nvrtc_error_text(nv, r)
                )));
            }
            let (size_f, get_f) = if t.cubin {
                (
                    nv.nvrtcGetCUBINSize.expect("checked in Target"),
                    nv.nvrtcGetCUBIN.expect("checked in Target"),
                )
            } else {
                (nv.nvrtcGetPTXSize, nv.nvrtcGetPTX)
            };
            let mut size = 0usize;
            let r = size_f(prog, &mut size);
            if r != 0 {
                return Err(err("size query", r));
            }
            let mut bytes = vec![0u8; size];
            let r = get_f(prog, bytes.as_mut_ptr() as *mut c_char);
            if r != 0 {
                return Err(err("code query", r));
            }
            Ok(Image {
                bytes,
                is_cubin: t.cubin,
            })
        })();
        (nv.nvrtcDestroyProgram)(&mut prog);
        result
    }
}

/// Read a cached image or compile and cache it.
fn image_for(nv: &Nvrtc, name: &str, src: &str, t: &Target, refresh: bool) -> Result<Image> {
    let full = full_source(src);
    let path = cache_path(name, &full, t);
    if !refresh {
        if let Some(bytes) = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .filter(|b| !b.is_empty())
        {
            return Ok(Image {
                bytes,
                is_cubin: t.cubin,
            });
        }
    }
    let img = compile(nv, name, &full, t)?;
    if let Some(p) = path {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let ok = p
            .parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::write(&tmp, &img.bytes).is_ok()
            && std::fs::rename(&tmp, &p).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            log(
                Level::Debug,
                &format!("could not cache {} (not an error)", p.display()),
            );
        }
    }
    Ok(img)
}

/// Loaded modules, unloaded on drop.
pub struct Modules {
    mods: Vec<(&'static str, CUmodule)>,
    gpu: Arc<Gpu>,
    /// The `gemv_q4l` weight ring the modules were compiled with (batches; 0: none).
    pub ring: usize,
}

// SAFETY: module handles are usable from any thread with the context current.
unsafe impl Send for Modules {}
// SAFETY: as above.
unsafe impl Sync for Modules {}

impl Drop for Modules {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        for (_, m) in &self.mods {
            // SAFETY: each module was loaded once by cuModuleLoadData.
            unsafe { (self.gpu.drv.cuModuleUnload)(*m) };
        }
    }
}

impl Modules {
    /// Compile (or read from the cache) and load every module.
    pub fn load(gpu: &Arc<Gpu>) -> Result<Modules> {
        let nv = ffi::nvrtc().map_err(|e| Error::device(format!("cuda:{}: {e}", gpu.ordinal)))?;
        let mut t = Target::for_cc(nv, gpu.cc)?;
        // The ring only where the GPU lets a block have it beside the largest x slice.
        if super::kernels::gemv_smem_need(t.ring) > gpu.max_smem_optin {
            t.ring = 0;
        }
        let t0 = std::time::Instant::now();
        // The sm_90a modules: on compute capability 9.0 with cubins only; optional.
        let sm90a = gpu.cc == (9, 0)
            && t.cubin
            && std::env::var("WV_CUDA_SM90A").map_or(true, |v| v != "0");
        let optional: &[(&str, &str)] = if sm90a { SOURCES_SM90A } else { &[] };
        // Compile the modules in parallel (NVRTC programs are independent).
        let images: Vec<Result<Image>> = std::thread::scope(|s| {
            let hs: Vec<_> = SOURCES
                .iter()
                .chain(optional)
                .map(|(n, src)| s.spawn(|| image_for(nv, n, src, &t, false)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::internal("NVRTC thread panicked")))
                })
                .collect()
        });
        let mut mods = Modules {
            mods: Vec::new(),
            gpu: gpu.clone(),
            ring: t.ring,
        };
        gpu.bind()?;
        // Load one module's image, compiling afresh once if a stale or corrupt cache entry
        // does not load.
        let load = |name: &str, src: &str, img: Result<Image>| -> Result<CUmodule> {
            let img = img?;
            match load_image(gpu, &img) {
                Ok(m) => Ok(m),
                Err(_) => {
                    let img = image_for(nv, name, src, &t, true)?;
                    load_image(gpu, &img).map_err(|e| e.context(format!("loading module {name}")))
                }
            }
        };
        let mut images = images.into_iter();
        for ((name, src), img) in SOURCES.iter().zip(images.by_ref()) {
            mods.mods.push((name, load(name, src, img)?));
        }
        for ((name, src), img) in optional.iter().zip(images) {
            match load(name, src, img) {
                Ok(m) => mods.mods.push((name, m)),
                Err(e) => log(
                    Level::Info,
                    &format!(
                        "cuda:{}: {name} not loaded ({e}); prefill dequantises for cuBLAS instead",
                        gpu.ordinal
                    ),
                ),
            }
        }
        log(
            Level::Debug,
            &format!(
                "cuda:{}: {} kernel modules ready in {:.2}s (NVRTC {}.{}, {}{})",
                gpu.ordinal,
                mods.mods.len(),
                t0.elapsed().as_secs_f64(),
                t.nvrtc_version.0,
                t.nvrtc_version.1,
                if t.cubin { "sm_" } else { "compute_" },
                t.arch
            ),
        );
        Ok(mods)
    }

    /// Kernel `name` of module `file` when that module was loaded (the optional `SOURCES_SM90A`).
    pub fn get_opt(&self, file: &str, name: &'static str) -> Result<Option<Kernel>> {
        if self.mods.iter().any(|(n, _)| *n == file) {
            self.get(file, name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Find kernel `name` in module `file`.
    pub fn get(&self, file: &str, name: &'static str) -> Result<Kernel> {
        let m = self
            .mods
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(_, m)| *m)
            .ok_or_else(|| Error::internal(format!("no module {file}")))?;
        let c = CString::new(name).expect("no NUL in kernel names");
        let mut f = std::ptr::null_mut();
        // SAFETY: live module, valid name and out-pointer.
        self.gpu.check(
            unsafe { (self.gpu.drv.cuModuleGetFunction)(&mut f, m, c.as_ptr()) },
            &format!("cuModuleGetFunction({name})"),
        )?;
        Ok(Kernel { func: f, name })
    }
}

fn load_image(gpu: &Gpu, img: &Image) -> Result<CUmodule> {
    let mut bytes = img.bytes.clone();
    if !img.is_cubin && bytes.last() != Some(&0) {
        bytes.push(0);
    }
    let mut m = std::ptr::null_mut();
    // SAFETY: bytes is a complete cubin or NUL-terminated PTX image.
    gpu.check(
        unsafe { (gpu.drv.cuModuleLoadData)(&mut m, bytes.as_ptr() as *const _) },
        "cuModuleLoadData",
    )?;
    Ok(m)
}

/// Compile every module for `sm_90` without a GPU (a check of the sources; used by tests on
/// machines with NVRTC but no GPU). Returns (file, cubin or PTX bytes).
pub fn compile_all_for(arch: i32) -> Result<Vec<(&'static str, Image)>> {
    let nv = ffi::nvrtc().map_err(Error::device)?;
    let mut t = Target::for_cc(nv, (arch / 10, arch % 10))?;
    t.arch = t.arch.min(arch.max(t.arch));
    SOURCES
        .iter()
        .chain(SOURCES_SM90A.iter().filter(|_| arch == 90))
        .map(|(n, src)| compile(nv, n, &full_source(src), &t).map(|i| (*n, i)))
        .collect()
}
