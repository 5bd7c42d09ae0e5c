//! `SolverOps` on the GPU: the latent stays in f32 on the device between steps; the model
//! input is cast from it and the CFG combine + solver update run as one kernel
//! (`kernels/solver.cu`), so a step moves nothing to or from the host.

use crate::core::{elems_cfg, CudaTensor, Gpu, KArg};
use crate::error::{alloc_err, drv};
use crate::nvrtc;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DevicePtrMut};
use jenga_tensor::{check_combine_shapes, check_step_shapes, Error, Result, TensorMeta};
use std::sync::OnceLock;

const SOLVER_SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/solver.cu")
);

/// The three kernels, compiled on first use.
#[derive(Default)]
pub(crate) struct SolverKernels(OnceLock<(CudaFunction, CudaFunction, CudaFunction)>);

impl SolverKernels {
    fn get(&self, gpu: &Gpu) -> Result<&(CudaFunction, CudaFunction, CudaFunction)> {
        if let Some(k) = self.0.get() {
            return Ok(k);
        }
        let m = nvrtc::load_module(&gpu.ctx, "jenga_solver", SOLVER_SRC, &[])?;
        let k = (
            nvrtc::function(&m, "latent_to_bf16")?,
            nvrtc::function(&m, "latent_cfg_step")?,
            nvrtc::function(&m, "latent_combine")?,
        );
        Ok(self.0.get_or_init(|| k))
    }
}

/// An f32 latent on the device.
pub struct CudaLatent {
    buf: CudaSlice<f32>,
    pub(crate) shape: Vec<usize>,
}

/// The `SolverOps` of `CudaBackend` (which forwards here): the core and the kernels.
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

    pub(crate) fn combine(&self, terms: &[(f32, &CudaLatent)]) -> Result<CudaLatent> {
        let shapes: Vec<&[usize]> = terms.iter().map(|(_, x)| x.shape.as_slice()).collect();
        check_combine_shapes(&shapes)?;
        let gpu = self.gpu;
        let shape = terms[0].1.shape.clone();
        let n = jenga_tensor::numel(&shape);
        let buf = gpu
            .stream
            .alloc_zeros::<f32>(n.max(1))
            .map_err(alloc_err(4 * n.max(1)))?;
        let mut out = CudaLatent { buf, shape };
        if n == 0 {
            return Ok(out);
        }
        let kernel = &self.kernels.get(gpu)?.2;
        let mut ptrs = [0u64; 4];
        let mut coef = [0f32; 4];
        let mut guards = Vec::with_capacity(terms.len());
        for (k, (c, x)) in terms.iter().enumerate() {
            let (p, g) = x.buf.device_ptr(&gpu.stream);
            ptrs[k] = p;
            coef[k] = *c;
            guards.push(g);
        }
        let (op, og) = out.buf.device_ptr_mut(&gpu.stream);
        gpu.launch(
            kernel,
            elems_cfg(n, gpu.sm_count),
            "latent_combine",
            &[
                KArg::U64(op),
                KArg::U64(ptrs[0]),
                KArg::U64(ptrs[1]),
                KArg::U64(ptrs[2]),
                KArg::U64(ptrs[3]),
                KArg::F32(coef[0]),
                KArg::F32(coef[1]),
                KArg::F32(coef[2]),
                KArg::F32(coef[3]),
                KArg::I32(terms.len() as i32),
                KArg::I64(n as i64),
            ],
        )?;
        drop(og);
        drop(guards);
        Ok(out)
    }
}
