//! The primitive and fused op families on one GPU, each in its own file, all methods of one
//! handle, [`Ops`]: the core [`Gpu`] plus the kernels of `kernels/{elementwise,norm,vec}.cu`
//! (one NVRTC module). The families import only the core and this module.
//!
//! - `elementwise`: act, add_gated, axpby, mean_abs;
//! - `norm`: layer_norm, rms_norm, norm_modulate;
//! - `rope`: rope, rope_pooled, block_mean_pool;
//! - `layout`: gather_tokens, narrow, cat, patchify, unpatchify;
//! - `linear`: the cuBLASLt linear and its epilogue kernel;
//! - `fused`: add_gated + norm, rms_norm + rope (+ pool) in one pass;
//! - `attention`: the portable attention kernels and the dispatch over them.

pub(crate) mod attention;
mod elementwise;
pub(crate) mod fused;
mod layout;
mod linear;
mod norm;
mod rope;

use crate::core::Gpu;
use crate::nvrtc;
use cudarc::driver::{CudaFunction, LaunchConfig};
use jenga_tensor::{Act, Result};

const OPS_SRC: &str = concat!(
    include_str!("../../kernels/common.cuh"),
    "\n",
    include_str!("../../kernels/elementwise.cu"),
    "\n",
    include_str!("../../kernels/norm.cu"),
    "\n",
    include_str!("../../kernels/vec.cu")
);

pub(crate) struct Kernels {
    pub(crate) act: CudaFunction,
    pub(crate) bias_act: CudaFunction,
    pub(crate) add_gated: CudaFunction,
    pub(crate) axpby: CudaFunction,
    pub(crate) rope: CudaFunction,
    pub(crate) copy_rows: CudaFunction,
    pub(crate) gather: CudaFunction,
    pub(crate) pool: CudaFunction,
    pub(crate) sum_abs: CudaFunction,
    pub(crate) layer_norm: CudaFunction,
    pub(crate) norm_modulate: CudaFunction,
    pub(crate) rms_norm: CudaFunction,
    pub(crate) act_v8: CudaFunction,
    pub(crate) bias_act_v8: CudaFunction,
    pub(crate) add_gated_v8: CudaFunction,
    pub(crate) axpby_v8: CudaFunction,
    pub(crate) rope_v8: CudaFunction,
    pub(crate) rope_pool_v8: CudaFunction,
    pub(crate) layer_norm_v8: CudaFunction,
    pub(crate) norm_modulate_v8: CudaFunction,
    pub(crate) rms_norm_v8: CudaFunction,
    pub(crate) add_gated_norm_v8: CudaFunction,
    pub(crate) rms_rope_v8: CudaFunction,
    pub(crate) rms_rope_pool_v8: CudaFunction,
    pub(crate) patchify: CudaFunction,
    pub(crate) unpatchify: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(gpu: &Gpu) -> Result<Self> {
        let ops = nvrtc::load_module(&gpu.ctx, "jenga_ops", OPS_SRC, &[])?;
        let f = nvrtc::function;
        Ok(Kernels {
            act: f(&ops, "act_bf16")?,
            bias_act: f(&ops, "bias_act_bf16")?,
            add_gated: f(&ops, "add_gated_bf16")?,
            axpby: f(&ops, "axpby_bf16")?,
            rope: f(&ops, "rope_bf16")?,
            copy_rows: f(&ops, "copy_rows_bf16")?,
            gather: f(&ops, "gather_tokens_bf16")?,
            pool: f(&ops, "block_mean_pool_bf16")?,
            sum_abs: f(&ops, "sum_abs_bf16")?,
            layer_norm: f(&ops, "layer_norm_bf16")?,
            norm_modulate: f(&ops, "norm_modulate_bf16")?,
            rms_norm: f(&ops, "rms_norm_bf16")?,
            act_v8: f(&ops, "act_v8")?,
            bias_act_v8: f(&ops, "bias_act_v8")?,
            add_gated_v8: f(&ops, "add_gated_v8")?,
            axpby_v8: f(&ops, "axpby_v8")?,
            rope_v8: f(&ops, "rope_v8")?,
            rope_pool_v8: f(&ops, "rope_pool_v8")?,
            layer_norm_v8: f(&ops, "layer_norm_v8")?,
            norm_modulate_v8: f(&ops, "norm_modulate_v8")?,
            rms_norm_v8: f(&ops, "rms_norm_v8")?,
            add_gated_norm_v8: f(&ops, "add_gated_norm_v8")?,
            rms_rope_v8: f(&ops, "rms_rope_v8")?,
            rms_rope_pool_v8: f(&ops, "rms_rope_pool_v8")?,
            patchify: f(&ops, "patchify_bf16")?,
            unpatchify: f(&ops, "unpatchify_bf16")?,
        })
    }
}

/// The op families' handle: the core and the op kernels.
pub(crate) struct Ops {
    pub(crate) gpu: Gpu,
    pub(crate) k: Kernels,
}

impl std::ops::Deref for Ops {
    type Target = Gpu;
    fn deref(&self) -> &Gpu {
        &self.gpu
    }
}

/// Row-norm launch for the register-resident kernels: one 16-byte chunk per thread when the
/// row fits 1024 threads, up to `VEC_NORM_CHUNKS` otherwise. `None` if the row is too long.
pub(crate) fn norm_v8_cfg(rows: usize, d: usize) -> Option<LaunchConfig> {
    const VEC_NORM_CHUNKS: usize = 4; // NCH in vec.cu
    let d8 = d / 8;
    let per_thread = d8.div_ceil(1024);
    if per_thread > VEC_NORM_CHUNKS || d8 == 0 {
        return None;
    }
    let threads = d8.div_ceil(per_thread).div_ceil(32) * 32;
    Some(LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

pub(crate) fn act_code(act: Act) -> i32 {
    match act {
        Act::None => 0,
        Act::GeluTanh => 1,
        Act::Silu => 2,
    }
}

/// One block per row; enough threads to cover the row in a few strides.
pub(crate) fn norm_cfg(rows: usize, d: usize) -> LaunchConfig {
    let threads = d.div_ceil(32).clamp(1, 32) * 32;
    let threads = threads.min(512);
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}
