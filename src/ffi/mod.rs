//! The C API (see issue: stable C ABI).
