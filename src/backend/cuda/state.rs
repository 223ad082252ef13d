//! One session's state on the GPU: its f16 KV cache, sized by the session's context length.

use super::device::{fmt_bytes, DevBuf, Gpu};
use crate::backend::BackendState;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::any::Any;
use std::sync::Arc;

/// The KV cache: K and V each `[layers, capacity, kv_dim]` f16.
pub struct CudaState {
    pub capacity: usize,
    pub k: DevBuf,
    pub v: DevBuf,
    /// Bytes from one layer's cache to the next.
    pub layer_stride: usize,
    /// Positions 0..filled hold valid keys and values.
    pub filled: usize,
    pub gpu: Arc<Gpu>,
}

impl CudaState {
    pub fn new(gpu: &Arc<Gpu>, c: &ModelConfig, capacity: usize) -> Result<CudaState> {
        if capacity == 0 {
            return Err(Error::invalid(
                "a session needs a context of at least one position",
            ));
        }
        let layer_stride = capacity
            .checked_mul(c.kv_dim() * 2)
            .ok_or_else(|| Error::invalid(format!("context length {capacity} is too large")))?;
        let bytes = layer_stride
            .checked_mul(c.num_hidden_layers.max(1))
            .ok_or_else(|| Error::invalid(format!("context length {capacity} is too large")))?;
        gpu.bind()?;
        let what = format!(
            "the KV cache of a {capacity}-position session ({} for K and V together)",
            fmt_bytes(bytes.saturating_mul(2))
        );
        let k = gpu.alloc(bytes, &what)?;
        let v = gpu.alloc(bytes, &what)?;
        // Zero the cache: nothing reads an unwritten position, but a sanitizer run stays clean
        // and a bug shows as zeros rather than garbage.
        gpu.memset_u32(k.ptr, 0, bytes / 4)?;
        gpu.memset_u32(v.ptr, 0, bytes / 4)?;
        gpu.sync()?;
        Ok(CudaState {
            capacity,
            k,
            v,
            layer_stride,
            filled: 0,
            gpu: gpu.clone(),
        })
    }
}

impl Drop for CudaState {
    fn drop(&mut self) {
        // A decode step enqueued ahead (forward_sample) may still write this cache.
        let _ = self.gpu.bind();
        let _ = self.gpu.sync();
    }
}

impl BackendState for CudaState {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn bytes(&self) -> usize {
        self.k.bytes + self.v.bytes
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
