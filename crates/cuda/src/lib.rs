//! CUDA backend for jenga: bf16 device tensors, f32 accumulation, NVRTC-compiled kernels
//! (sources in `kernels/`), cuBLASLt linears.

pub mod device;
mod error;
pub mod nvrtc;

pub use device::{cuda_available, device_count};
