//! CUDA backend for jenga: bf16 device tensors, f32 accumulation, NVRTC-compiled kernels
//! (sources in `kernels/`, compiled at run time for the GPU's exact architecture and cached
//! on disk), cuBLASLt linears.
//!
//! - [`CudaBackend::new`] opens a device; it returns `Err` (never panics) when libcuda, NVRTC,
//!   cuBLASLt or the device is missing. [`cuda_available`] probes without opening.
//! - Ops implement [`jenga_tensor::Backend`]; all run on one stream, allocations are
//!   stream-ordered, nothing synchronises except `download`, `mean_abs` and `synchronize`.
//! - Attention: the Hopper kernel (`kernels/hopper_attention.cu`, sm_90a wgmma, Dh 128, dense or
//!   plan block a multiple of 128; [`CudaBackend::attention_hopper`]) → the portable tensor-core
//!   kernels (`kernels/mma_attention.cu`, Dh 64/128) → the reference kernel
//!   (`kernels/attention_naive.cu`, any Dh ≤ 128). [`CudaBackend::set_attention_path`] pins one;
//!   `JENGA_HOPPER_ATTN=0` keeps the Hopper kernel out, [`hopper_attention_note`] says why it is
//!   not in use.
//! - [`selftest()`] checks every op against the CPU backend at run time (for
//!   `jenga selftest --device cuda`).
//! - [`nvrtc::load_module`] compiles any CUDA C source with the same cache (used by the
//!   attention kernels).

mod arc_cache;
mod attention;
mod backend;
pub mod block_select;
mod core;
pub mod device;
mod error;
mod gemm;
mod nccl;
pub mod nvrtc;
mod op_times;
mod ops;
pub mod peers;
pub mod selftest;
mod solver;

pub use crate::core::{CudaTensor, DevicePlanBufs};
pub use attention::{hopper_attention_note, sparse_work_order, PlanRef, HOPPER_TILE};
pub use backend::CudaBackend;
pub use device::{cuda_available, device_count};
pub use gemm::{Epilogue, GemmShape, GemmTune};
pub use nccl::{NcclComm, NcclId};
pub use op_times::OpTime;
pub use ops::attention::AttnPath;
pub use selftest::selftest;
pub use solver::CudaLatent;
