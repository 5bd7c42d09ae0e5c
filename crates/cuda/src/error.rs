//! Mapping of driver / NVRTC / cuBLASLt failures onto `jenga_tensor::Error`.

use cudarc::driver::{sys::CUresult, DriverError};
use jenga_tensor::Error;

/// A driver error with what we were doing; out-of-memory keeps its own variant so callers can
/// retry with smaller tiles or report the size that failed.
pub(crate) fn drv(context: &str) -> impl FnOnce(DriverError) -> Error + '_ {
    move |e| {
        if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            Error::OutOfMemory(context.to_string())
        } else {
            Error::Device(format!("{context}: {e:?}"))
        }
    }
}

/// Allocation failure: name the size asked for.
pub(crate) fn alloc_err(bytes: usize) -> impl FnOnce(DriverError) -> Error {
    move |e| {
        if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            Error::OutOfMemory(format!(
                "allocating {bytes} bytes ({:.1} MiB)",
                bytes as f64 / (1 << 20) as f64
            ))
        } else {
            Error::Device(format!("allocating {bytes} bytes: {e:?}"))
        }
    }
}

pub(crate) fn dev(msg: impl Into<String>) -> Error {
    Error::Device(msg.into())
}
