//! CPU backend: f32, multi-threaded with rayon, matrix products through the `gemm` crate.
//!
//! It is the reference every other backend is checked against, so ops are written plainly;
//! the only non-trivial one is attention, which walks key blocks with an online softmax so
//! that dense and block-sparse plans run through the same code (the GPU kernels do the same).
//!
//! `core` holds the tensor, the pool and shared helpers; each op family has its file
//! (`elementwise`, `norm`, `linear`, `attention`, `layout`); this file only forwards.

mod attention;
mod core;
mod elementwise;
mod layout;
mod linear;
mod norm;

pub use self::core::{fast_exp, CpuBackend, CpuTensor};

use crate::{Act, AttnPlan, Backend, Error, KeyBias, Result, TensorMeta};

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(data.to_vec(), shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.to_vec())
    }

    fn reshape(&self, t: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        if crate::numel(shape) != t.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?}", t.shape),
            ));
        }
        Ok(CpuTensor {
            data: t.data.clone(),
            shape: shape.to_vec(),
        })
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
        act: Act,
    ) -> Result<CpuTensor> {
        linear::linear(self, x, w, b, act)
    }

    fn act(&self, x: &CpuTensor, act: Act) -> Result<CpuTensor> {
        elementwise::act(self, x, act)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: Option<&CpuTensor>,
        b: Option<&CpuTensor>,
        eps: f32,
    ) -> Result<CpuTensor> {
        norm::layer_norm(self, x, w, b, eps)
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        norm::rms_norm(self, x, w, eps)
    }

    fn norm_modulate(
        &self,
        x: &CpuTensor,
        shift: &CpuTensor,
        scale: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        norm::norm_modulate(self, x, shift, scale, eps)
    }

    fn add_gated(
        &self,
        x: &CpuTensor,
        y: &CpuTensor,
        gate: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        elementwise::add_gated(self, x, y, gate)
    }

    fn axpby(&self, a: f32, x: &CpuTensor, b: f32, y: &CpuTensor) -> Result<CpuTensor> {
        elementwise::axpby(self, a, x, b, y)
    }

    fn rope(&self, x: &CpuTensor, cos: &CpuTensor, sin: &CpuTensor) -> Result<CpuTensor> {
        layout::rope(self, x, cos, sin)
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        plan: &AttnPlan,
        bias: Option<KeyBias>,
    ) -> Result<CpuTensor> {
        attention::attention(self, q, k, v, plan, bias)
    }

    fn block_mean_pool(&self, x: &CpuTensor, block: usize) -> Result<CpuTensor> {
        layout::block_mean_pool(self, x, block)
    }

    fn gather_tokens(&self, x: &CpuTensor, idx: &[u32]) -> Result<CpuTensor> {
        layout::gather_tokens(self, x, idx)
    }

    fn narrow(&self, x: &CpuTensor, dim: usize, start: usize, len: usize) -> Result<CpuTensor> {
        layout::narrow(x, dim, start, len)
    }

    fn cat(&self, xs: &[&CpuTensor], dim: usize) -> Result<CpuTensor> {
        layout::cat(xs, dim)
    }

    fn mean_abs(&self, x: &CpuTensor) -> Result<f32> {
        elementwise::mean_abs(self, x)
    }
}
