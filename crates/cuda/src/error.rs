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

/// Bytes for people: `12.3 GiB`, `640.0 MiB`.
pub(crate) fn human_bytes(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// Allocation failure: name the size asked for, what the device has free, and what to do.
pub(crate) fn alloc_err(bytes: usize) -> impl FnOnce(DriverError) -> Error {
    move |e| {
        if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            // The context is current on this thread (the allocation just used it).
            let free = match cudarc::driver::result::mem_get_info() {
                Ok((free, total)) => format!(
                    " with {} free of {} on the device",
                    human_bytes(free),
                    human_bytes(total)
                ),
                Err(_) => String::new(),
            };
            Error::OutOfMemory(format!(
                "allocating {} ({bytes} bytes) for a tensor{free}; try a smaller video size \
                 (frames, height, width), a smaller model, or a GPU with more memory",
                human_bytes(bytes)
            ))
        } else {
            Error::Device(format!("allocating {bytes} bytes: {e:?}"))
        }
    }
}

pub(crate) fn dev(msg: impl Into<String>) -> Error {
    Error::Device(msg.into())
}
