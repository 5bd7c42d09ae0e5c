//! jenga-tensor: the small op vocabulary every model is written against.
//!
//! Models are generic over [`Backend`]; a backend owns its tensor type (host `f32` for the CPU,
//! device `bf16` for CUDA). Attention takes an [`AttnPlan`]: dense, or a per-(batch, head,
//! query-block) CSR list of key blocks built by an attention policy (crate `jenga-carve`).

mod backend;
pub mod comm;
pub mod cpu;
mod error;
mod fused;
mod plan;
pub mod reference;
mod solver;

pub use backend::{check_order, Act, Backend, KeyBias, TensorMeta};
pub use comm::{run_local, AbortOnDrop, Communicator, LocalComm};
pub use cpu::{CpuBackend, CpuTensor};
pub use error::{Error, Result};
pub use fused::{rms_norm_rope_composed, FusedOps};
pub use plan::{AttnPlan, BlockPlan, DeviceCount, DevicePlan, PlanGeometry};
pub use reference::{AttnMask, DType};
pub use solver::{
    cfg_euler, check_combine_shapes, check_step_shapes, lin_combine, HostLatent, SolverOps,
    MAX_COMBINE,
};

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
