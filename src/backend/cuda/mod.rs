//! The CUDA backend. (Being written: see kernels/.)

use super::Backend;
use crate::error::{Error, Result};
use crate::weights::HostWeights;

/// Make a CUDA backend on device `ordinal`, uploading the weights.
pub fn new_backend(_host: &HostWeights, ordinal: usize) -> Result<Box<dyn Backend>> {
    Err(Error::device(format!("cuda:{ordinal}: the CUDA backend is not built yet")))
}
