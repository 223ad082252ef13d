//! Checkpoint files: find them, memory-map them, check their headers.
//!
//! A [`TensorStore`] is every tensor of a checkpoint folder, by name: one `*.safetensors` file of
//! any name, or the shards that `model.safetensors.index.json` lists. Files are memory-mapped
//! (memmap2) and never read whole; each header is parsed and checked (offsets inside the file,
//! byte sizes equal to shape × dtype) before anything else happens. Pickle checkpoints
//! (`.bin`, `.pt`, `.pth`, `.ckpt`) are refused without being opened: unpickling runs code.
//!
//! Tensor data is copied out with [`TensorStore::read_f32`], [`TensorStore::read_u32`] and
//! friends, which convert from the stored dtype and check the element count first.

use crate::error::{Error, ErrorKind, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The stored element type of a tensor (the subset LLaMA checkpoints use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    I32,
    I64,
    Other,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Other => 1,
        }
    }
    fn from_st(d: Dtype) -> (DType, String) {
        let name = format!("{d:?}");
        let t = match d {
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::I32 => DType::I32,
            Dtype::I64 => DType::I64,
            _ => DType::Other,
        };
        (t, name)
    }
}

/// Where one tensor's bytes are.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// The dtype as the file names it (for error messages).
    pub dtype_name: String,
    pub shape: Vec<usize>,
    /// Index into the store's files.
    pub file: usize,
    /// Byte range inside the memory map (absolute, header included).
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

/// All tensors of a checkpoint folder, memory-mapped.
pub struct TensorStore {
    files: Vec<MappedFile>,
    tensors: HashMap<String, TensorInfo>,
    /// Total bytes of tensor data across the files.
    pub data_bytes: u64,
}

/// The file extensions of pickle-based checkpoints, which we refuse to open.
const PICKLE_EXTS: [&str; 4] = ["bin", "pt", "pth", "ckpt"];
/// A sanity bound on a safetensors header (the real 13B one is ~100 KB).
const MAX_HEADER: u64 = 100 << 20;

impl TensorStore {
    /// Open the safetensors files of `dir`.
    pub fn open_dir(dir: &Path) -> Result<TensorStore> {
        if !dir.is_dir() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{}: no such model folder", dir.display()),
            ));
        }
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            shard_files(dir, &index)?
        } else {
            let mut st = Vec::new();
            let mut pickles = Vec::new();
            let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                let p = entry.path();
                match p.extension().and_then(|e| e.to_str()) {
                    Some("safetensors") => st.push(p),
                    Some(ext) if PICKLE_EXTS.contains(&ext) => pickles.push(p),
                    _ => {}
                }
            }
            st.sort();
            if st.is_empty() {
                if let Some(p) = pickles.first() {
                    return Err(Error::unsupported(format!(
                        "{}: pickle checkpoints (.bin/.pt) are not supported, and are never opened \
                         because unpickling can run code; convert the model to safetensors",
                        p.display()
                    )));
                }
                return Err(Error::format(format!(
                    "{}: no .safetensors weights found",
                    dir.display()
                )));
            }
            st
        };
        let mut store = TensorStore {
            files: Vec::new(),
            tensors: HashMap::new(),
            data_bytes: 0,
        };
        for path in files {
            store.add_file(&path)?;
        }
        Ok(store)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let ctx = |msg: String| Error::format(format!("{}: {msg}", path.display()));
        if len < 8 {
            return Err(ctx(format!(
                "file is {len} bytes, too short for a safetensors header"
            )));
        }
        // SAFETY: the map is read-only; we hold it for the store's life. Another process
        // truncating the file under us could fault; that is the usual contract of mmap-based
        // loaders (llama.cpp, safetensors) and is documented in the README.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut hl = [0u8; 8];
        hl.copy_from_slice(&map[..8]);
        let header_len = u64::from_le_bytes(hl);
        if header_len > MAX_HEADER || header_len > len - 8 {
            return Err(ctx(format!(
                "bad header: header length {header_len} does not fit in a file of {len} bytes"
            )));
        }
        let (n, meta) = safetensors::SafeTensors::read_metadata(&map[..])
            .map_err(|e| ctx(format!("bad header: {e}")))?;
        let data_start = 8 + n;
        let data_len = map.len() - data_start;
        let file_index = self.files.len();
        for (name, info) in meta.tensors() {
            let (dtype, dtype_name) = DType::from_st(info.dtype);
            let (s, e) = info.data_offsets;
            if s > e || e > data_len {
                return Err(ctx(format!(
                    "tensor {name}: data offsets {s}..{e} lie outside the {data_len} data bytes (truncated file?)"
                )));
            }
            let numel = info
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| ctx(format!("tensor {name}: shape {:?} overflows", info.shape)))?;
            let want = numel.saturating_mul(info.dtype.bitsize() / 8);
            if want != e - s {
                return Err(ctx(format!(
                    "tensor {name}: shape {:?} of {dtype_name} needs {want} bytes, the file holds {}",
                    info.shape,
                    e - s
                )));
            }
            if self.tensors.contains_key(&name) {
                return Err(ctx(format!("tensor {name} appears in more than one file")));
            }
            self.data_bytes += (e - s) as u64;
            self.tensors.insert(
                name.clone(),
                TensorInfo {
                    name,
                    dtype,
                    dtype_name,
                    shape: info.shape.clone(),
                    file: file_index,
                    start: data_start + s,
                    end: data_start + e,
                },
            );
        }
        self.files.push(MappedFile {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }
    pub fn file_path(&self, t: &TensorInfo) -> &Path {
        &self.files[t.file].path
    }

    /// Look a tensor up, or fail naming it and the folder's files.
    pub fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| {
            let files: Vec<String> = self
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            Error::format(format!(
                "missing tensor {name} (looked in {})",
                files.join(", ")
            ))
        })
    }

    /// Check a tensor's dtype (one of `allowed`) and shape, with a precise message.
    pub fn check(&self, t: &TensorInfo, allowed: &[DType], shape: &[usize]) -> Result<()> {
        if !allowed.contains(&t.dtype) {
            return Err(Error::format(format!(
                "{}: tensor {}: expected dtype {}, found {}",
                self.file_path(t).display(),
                t.name,
                allowed
                    .iter()
                    .map(|d| format!("{d:?}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                t.dtype_name
            )));
        }
        if t.shape != shape {
            return Err(Error::format(format!(
                "{}: tensor {}: expected shape {:?}, found {:?}",
                self.file_path(t).display(),
                t.name,
                shape,
                t.shape
            )));
        }
        Ok(())
    }

    fn bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.files[t.file].map[t.start..t.end]
    }

    /// Copy a float tensor out as f32 (from f16, bf16, f32 or f64).
    pub fn read_f32(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let b = self.bytes(t);
        let mut out = crate::error::try_alloc::<f32>(t.numel(), &t.name)?;
        match t.dtype {
            DType::F16 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::BF16 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::F32 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::F64 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(8)) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    *o = f64::from_le_bytes(a) as f32;
                }
            }
            _ => {
                return Err(Error::format(format!(
                    "tensor {}: expected a float dtype, found {}",
                    t.name, t.dtype_name
                )))
            }
        }
        Ok(out)
    }

    /// Copy a float tensor out as f16 (exact from f16; rounded from others).
    pub fn read_f16(&self, t: &TensorInfo) -> Result<Vec<f16>> {
        if t.dtype == DType::F16 {
            let b = self.bytes(t);
            let mut out = crate::error::try_alloc::<f16>(t.numel(), &t.name)?;
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]);
            }
            return Ok(out);
        }
        Ok(self.read_f32(t)?.into_iter().map(f16::from_f32).collect())
    }

    /// Copy an int32 tensor out as raw u32 words (packed GPTQ data).
    pub fn read_u32(&self, t: &TensorInfo) -> Result<Vec<u32>> {
        if t.dtype != DType::I32 {
            return Err(Error::format(format!(
                "tensor {}: expected I32, found {}",
                t.name, t.dtype_name
            )));
        }
        let b = self.bytes(t);
        let mut out = crate::error::try_alloc::<u32>(t.numel(), &t.name)?;
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(out)
    }

    /// Copy an integer tensor (i32 or i64) out as i64 values (g_idx).
    pub fn read_i64(&self, t: &TensorInfo) -> Result<Vec<i64>> {
        let b = self.bytes(t);
        match t.dtype {
            DType::I32 => Ok(b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect()),
            DType::I64 => Ok(b
                .chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    i64::from_le_bytes(a)
                })
                .collect()),
            _ => Err(Error::format(format!(
                "tensor {}: expected I32 or I64, found {}",
                t.name, t.dtype_name
            ))),
        }
    }

    /// Tell the OS that this tensor's pages are no longer needed (after copying it out), so
    /// resident memory does not hold both the map and the copy.
    pub fn release(&self, t: &TensorInfo) {
        #[cfg(unix)]
        {
            let map = &self.files[t.file].map;
            let page = 4096usize;
            let start = t.start.div_ceil(page) * page;
            let end = (t.end / page) * page;
            if end > start {
                // SAFETY: the range lies inside the mapping; MADV_DONTNEED on a read-only
                // private file mapping only drops cached pages, which are re-read on access.
                unsafe {
                    libc::madvise(
                        map.as_ptr().add(start) as *mut libc::c_void,
                        end - start,
                        libc::MADV_DONTNEED,
                    );
                }
            }
        }
        #[cfg(not(unix))]
        let _ = t;
    }
}

/// The shard files named by `model.safetensors.index.json`, checked to exist.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let v = crate::config::read_json(index)?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::format(format!(
                "{}: missing \"weight_map\" object",
                index.display()
            ))
        })?;
    let mut names = BTreeMap::new();
    for (tensor, file) in map {
        let f = file.as_str().ok_or_else(|| {
            Error::format(format!(
                "{}: weight_map[{tensor}] is not a string",
                index.display()
            ))
        })?;
        if f.contains('/') || f.contains('\\') || f.contains("..") {
            return Err(Error::format(format!(
                "{}: shard name {f:?} must be a plain file name",
                index.display()
            )));
        }
        names.insert(f.to_string(), ());
    }
    let mut out = Vec::new();
    for f in names.keys() {
        let p = dir.join(f);
        if p.extension().is_none_or(|e| e != "safetensors") {
            return Err(Error::unsupported(format!(
                "{}: shard {f} is not a .safetensors file (pickle checkpoints are not supported)",
                index.display()
            )));
        }
        if !p.exists() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{}: shard {f} is listed but missing", index.display()),
            ));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(Error::format(format!(
            "{}: weight_map is empty",
            index.display()
        )));
    }
    Ok(out)
}
