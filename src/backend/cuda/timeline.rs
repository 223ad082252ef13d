//! Measurement only (`WV_CUDA_TIMELINE=FILE`): a per-block timeline of the decode products.
//!
//! Every `gemv_q4m` launch (decode's 4-bit products on sm_90, fused or not) stamps
//! `%globaltimer` (ns) four times per block — when the block starts, when its wait for the
//! previous kernel returns, when its units are done, when its consumers are done (epilogue
//! included) — then when its warp 0 finished its first unit, and q|k|v's blocks up to three
//! marks inside the fused attention's epilogue, into
//! a ring of [`RECORDS`] records (gemv_mma.cu's `tl_stamp`, TL_MARK). Each report of
//! the backend's profile (`wv bench` asks for one after the warm-up, the prefill and the decode)
//! writes the buffer to FILE, so the file holds the last decode's stamps: `tools/timeline.py`
//! reads it. The stamps cost one atomic and up to fourteen stores per block; graphs and PDL stay on, so
//! what is timed is the step as it runs.

use std::path::PathBuf;
use std::sync::Arc;

use super::device::{DevBuf, Gpu};
use crate::error::{Error, Result};

/// Records in the ring: two 13B steps of 160 launches of 132 blocks. The kernel's TL_RECORDS,
/// TL_WORDS, TL_HEAD_WORDS, TL_MARK and TL_FIRST are checked against these five at compile time
/// (module.rs).
pub const RECORDS: usize = 65536;
/// u64 words per record: start, waited, units done, end, block | SM << 32, ticket, then three
/// marks q|k|v's attention epilogue sets on its way (0 where the block does not pass them),
/// then [`FIRST`].
pub const WORDS: usize = 10;
/// The record's first mark: its tile finished, then the heads it completes known, then its
/// warp's softmax done (gemv_mma.cu's TL_MARK).
pub const MARK: usize = 6;
/// When the block's warp 0 finished its first unit (every product; gemv_mma.cu's TL_FIRST).
pub const FIRST: usize = 9;
/// u64 words before the records: the ticket word, padded to 64 bytes.
pub const HEAD_WORDS: usize = 8;
/// The buffer: the ticket word (padded), then the records.
pub const BYTES: usize = (HEAD_WORDS + RECORDS * WORDS) * 8;

/// The file `WV_CUDA_TIMELINE` names, if it names one.
fn path() -> Option<PathBuf> {
    std::env::var_os("WV_CUDA_TIMELINE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Whether `WV_CUDA_TIMELINE` asks for a timeline (the kernels are then compiled with their
/// stamps: module.rs).
pub fn requested() -> bool {
    path().is_some()
}

/// The timeline buffer and the file each report writes it to.
pub struct Timeline {
    buf: DevBuf,
    path: PathBuf,
    gpu: Arc<Gpu>,
}

impl Timeline {
    /// The timeline `WV_CUDA_TIMELINE` asks for (none when unset or empty), zeroed and handed to
    /// `gpu`'s launches.
    pub fn from_env(gpu: &Arc<Gpu>) -> Result<Option<Timeline>> {
        let Some(path) = path() else {
            return Ok(None);
        };
        let buf = gpu.alloc(BYTES, "the decode timeline (WV_CUDA_TIMELINE)")?;
        buf.write(&vec![0u64; BYTES / 8])?;
        gpu.set_timeline(buf.ptr);
        Ok(Some(Timeline {
            buf,
            path,
            gpu: gpu.clone(),
        }))
    }

    /// Write the buffer to the file (little-endian u64 words), after the stream's work.
    pub fn dump(&self) -> Result<()> {
        self.gpu.sync()?;
        let mut words = vec![0u64; BYTES / 8];
        self.gpu.download(self.buf.ptr, &mut words)?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(&self.path, bytes).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        // The launches must not stamp a freed buffer (Drop runs before the fields').
        self.gpu.set_timeline(0);
    }
}
