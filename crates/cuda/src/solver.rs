//! `SolverOps` on the GPU: the latent stays in f32 on the device between steps; the model
//! input is cast from it and the CFG combine + solver update run as one kernel
//! (`kernels/solver.cu`), so a step moves nothing to or from the host.

use crate::core::{elems_cfg, CudaTensor, Gpu, KArg};
use crate::error::{alloc_err, drv};
use crate::nvrtc;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr};
use jenga_tensor::{check_step_shapes, Error, Result, TensorMeta};
use std::sync::OnceLock;

const SOLVER_SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/solver.cu")
);

/// The two kernels, compiled on first use.
#[derive(Default)]
pub(crate) struct SolverKernels(OnceLock<(CudaFunction, CudaFunction)>);

impl SolverKernels {
    fn get(&self, gpu: &Gpu) -> Result<&(CudaFunction, CudaFunction)> {
        if let Some(k) = self.0.get() {
            return Ok(k);
        }
        let m = nvrtc::load_module(&gpu.ctx, "jenga_solver", SOLVER_SRC, &[])?;
        let k = (
            nvrtc::function(&m, "latent_to_bf16")?,
            nvrtc::function(&m, "latent_cfg_step")?,
        );
        Ok(self.0.get_or_init(|| k))
    }
}

/// An f32 latent on the device.
pub struct CudaLatent {
    buf: CudaSlice<f32>,
    pub(crate) shape: Vec<usize>,
}

/// The `SolverOps` of `CudaBackend` (which forwards here): the core and the two kernels.
pub(crate) struct Solver<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) kernels: &'a SolverKernels,
}

impl Solver<'_> {
    pub(crate) fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaLatent> {
        if data.len() != jenga_tensor::numel(shape) {
            return Err(Error::shape(
                "latent_upload",
                format!("{} values for {shape:?}", data.len()),
            ));
        }
        let buf = self
            .gpu
            .stream
            .clone_htod(data)
            .map_err(alloc_err(std::mem::size_of_val(data)))?;
        Ok(CudaLatent {
            buf,
            shape: shape.to_vec(),
        })
    }

    pub(crate) fn download(&self, x: &CudaLatent) -> Result<Vec<f32>> {
        self.gpu
            .stream
            .clone_dtoh(&x.buf)
            .map_err(drv("copying the latent from the device"))
    }

    pub(crate) fn input(&self, x: &CudaLatent, batch: usize) -> Result<CudaTensor> {
        let gpu = self.gpu;
        let mut shape = vec![batch];
        shape.extend_from_slice(&x.shape);
        let out = gpu.empty(&shape)?;
        let n = jenga_tensor::numel(&x.shape);
        if n > 0 && batch > 0 {
            let (xp, _g) = x.buf.device_ptr(&gpu.stream);
            gpu.launch(
                &self.kernels.get(gpu)?.0,
                elems_cfg(n, gpu.sm_count),
                "latent_input",
                &[
                    KArg::U64(xp),
                    KArg::U64(gpu.ptr(&out)),
                    KArg::I64(n as i64),
                    KArg::I32(batch as i32),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn step(
        &self,
        x: &mut CudaLatent,
        out: &CudaTensor,
        guidance: Option<f32>,
        dt: f32,
    ) -> Result<()> {
        check_step_shapes(&x.shape, out.shape(), guidance.is_some())?;
        let gpu = self.gpu;
        let n = jenga_tensor::numel(&x.shape);
        if n == 0 {
            return Ok(());
        }
        let kernel = &self.kernels.get(gpu)?.1;
        let (xp, _g) = x.buf.device_ptr(&gpu.stream);
        gpu.launch(
            kernel,
            elems_cfg(n, gpu.sm_count),
            "latent_step",
            &[
                KArg::U64(xp),
                KArg::U64(gpu.ptr(out)),
                KArg::I64(n as i64),
                KArg::I32(guidance.is_some() as i32),
                KArg::F32(guidance.unwrap_or(1.0)),
                KArg::F32(dt),
            ],
        )
    }
}
