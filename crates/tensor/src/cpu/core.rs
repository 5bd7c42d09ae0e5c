//! The CPU backend's core: the tensor, the thread pool every op runs on, and the helpers the op
//! families share (checks, activations, row statistics, the strided `gemm` call).

use crate::{Act, Error, Result, TensorMeta};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct CpuTensor {
    pub(super) data: Arc<Vec<f32>>,
    pub(super) shape: Vec<usize>,
}

impl CpuTensor {
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        if data.len() != crate::numel(shape) {
            return Err(Error::shape(
                "CpuTensor::new",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        Ok(CpuTensor {
            data: Arc::new(data),
            shape: shape.to_vec(),
        })
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub(super) fn last(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
}

impl TensorMeta for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The CPU backend. Ops run on the global rayon pool unless built with [`CpuBackend::with_threads`].
pub struct CpuBackend {
    pool: Option<rayon::ThreadPool>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Query rows handled together by one attention task (the GPU kernels use the same block).
pub(super) const ATTN_Q_TILE: usize = 128;
/// Keys processed per online-softmax update when a run of kept blocks is contiguous.
pub(super) const ATTN_K_CHUNK: usize = 512;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend { pool: None }
    }
    pub fn with_threads(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::invalid("CpuBackend", format!("thread pool: {e}")))?;
        Ok(CpuBackend { pool: Some(pool) })
    }
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }
    pub(super) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}

pub(super) fn out(data: Vec<f32>, shape: &[usize]) -> Result<CpuTensor> {
    CpuTensor::new(data, shape)
}

pub(super) fn check_same(op: &'static str, a: &CpuTensor, b: &CpuTensor) -> Result<()> {
    if a.shape != b.shape {
        return Err(Error::shape(op, format!("{:?} vs {:?}", a.shape, b.shape)));
    }
    Ok(())
}

/// `[B, .., D]` activations with `[B, D]` per-sample vectors: returns (B, rows per sample, D).
pub(super) fn per_sample_dims(
    op: &'static str,
    x: &CpuTensor,
    v: &CpuTensor,
) -> Result<(usize, usize, usize)> {
    let d = x.last();
    let b = x.shape.first().copied().unwrap_or(1);
    if v.shape != [b, d] || x.dims() < 2 {
        return Err(Error::shape(
            op,
            format!("x {:?} with per-sample vector {:?}", x.shape, v.shape),
        ));
    }
    Ok((b, x.numel() / (b * d).max(1), d))
}

/// `e^x` to ~1e-7 relative error, branch-free so loops over it vectorise (libm's `expf` is a
/// call per element; softmax and GELU spent a third of a CPU forward in it).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round to nearest via the 1.5·2^23 trick (vectorises, unlike `round`)
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // Cody–Waite: ln2 split in a part exact in f32 and a remainder keeps f accurate for large |x|.
    let f = (x - n * 0.693_145_75) - n * 1.428_606_8e-6; // |f| ≤ ln2/2
                                                         // Taylor series of e^f to degree 7: truncation < 2e-9 relative on |f| ≤ 0.347.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

#[inline(always)]
pub(super) fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let y = C * (x + 0.044715 * x * x * x);
    // tanh(y) = 1 − 2/(e^{2y} + 1)
    0.5 * x * (2.0 - 2.0 / (fast_exp(2.0 * y) + 1.0))
}

#[inline(always)]
pub(super) fn silu(x: f32) -> f32 {
    x / (1.0 + fast_exp(-x))
}

pub(super) fn apply_act(v: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::GeluTanh => v
            .par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|x| *x = gelu_tanh(*x))),
        Act::Silu => v
            .par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|x| *x = silu(*x))),
    }
}

/// Mean and 1/std of a row (two-pass for accuracy: activations of diffusion models grow large).
#[inline]
pub(super) fn row_stats(r: &[f32], eps: f32) -> (f32, f32) {
    let n = r.len() as f32;
    let mean = r.iter().sum::<f32>() / n;
    let var = r.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Raw pointer that may be shared by tasks writing disjoint regions.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    // A method (not field access) so closures capture the whole Send+Sync wrapper.
    pub(super) fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` with explicit strides (row stride, col stride).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    par: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}
