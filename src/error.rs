//! The engine's one error type.
//!
//! Every failure the engine can report is an [`Error`]: a [`ErrorKind`] (which the C API maps,
//! one to one, onto its stable `wv_status` codes) and a message written for a person, naming the
//! file, tensor, argument or size involved. Nothing in the engine panics on bad input; it returns
//! one of these.

use std::fmt;

/// What went wrong, coarsely. The discriminants equal the C API's status codes and are never
/// renumbered (0 is success and has no kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorKind {
    /// A caller passed an argument that can never work (bad flag, NULL, out of range).
    InvalidArgument = 1,
    /// A file could not be opened or read.
    Io = 2,
    /// A file was read but its contents are wrong (bad JSON, bad header, wrong shape or dtype).
    ModelFormat = 3,
    /// Well-formed but not supported (pickle checkpoints, unknown architecture, 5-bit weights).
    Unsupported = 4,
    /// An allocation (host or device) could not be made.
    OutOfMemory = 5,
    /// The GPU backend is unusable (no driver, no NVRTC, a failed launch).
    Device = 6,
    /// The session's context is full.
    ContextFull = 7,
    /// The operation was cancelled by the caller.
    Cancelled = 8,
    /// The session is in use by another call.
    Busy = 9,
    /// A bug in wv (a caught panic, a broken invariant).
    Internal = 10,
}

impl ErrorKind {
    /// A short stable name, as printed by the CLI and `wv_status_name`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Io => "i/o error",
            ErrorKind::ModelFormat => "model format error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::OutOfMemory => "out of memory",
            ErrorKind::Device => "device error",
            ErrorKind::ContextFull => "context full",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Busy => "busy",
            ErrorKind::Internal => "internal error",
        }
    }
}

/// An engine error: a kind and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    pub fn format(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::ModelFormat, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }
    pub fn device(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Device, message)
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }
    pub fn oom(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::OutOfMemory, message)
    }
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, err: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{}: {}", path.display(), err))
    }
    /// Prefix the message with some context (a file name, a tensor name).
    pub fn context(mut self, ctx: impl fmt::Display) -> Error {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Allocate a zeroed `Vec<T>` of `n` elements, reporting failure as an error instead of aborting.
pub fn try_alloc<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::oom(format!(
            "could not allocate {} bytes for {what}",
            n.saturating_mul(std::mem::size_of::<T>())
        ))
    })?;
    v.resize(n, T::default());
    Ok(v)
}
