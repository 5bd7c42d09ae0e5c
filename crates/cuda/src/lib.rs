//! CUDA backend for jenga: bf16 device tensors, f32 accumulation, NVRTC-compiled kernels
//! (sources in `kernels/`), cuBLASLt linears.

mod backend;
pub mod device;
mod dispatch;
mod error;
pub mod nvrtc;

pub use backend::{AttnPath, CudaBackend, CudaTensor, DevicePlanBufs};
pub use device::{cuda_available, device_count};
pub mod selftest;

pub use selftest::selftest;
