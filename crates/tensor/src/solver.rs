//! The sampler's latent on the device: kept in f32 between steps (bf16 rounding at every
//! Euler update would drift over 50 steps), cast to the model's input dtype each step, and
//! updated in place by the classifier-free-guidance combine and the solver step — so nothing
//! crosses to the host between steps.

use crate::{Backend, CpuBackend, CpuTensor, Error, Result, TensorMeta};
use rayon::prelude::*;

/// An f32 latent `[C, F, H, W]` (no batch: the CFG batch is made at the model input).
pub trait SolverOps: Backend {
    type Latent: Send + Sync;

    fn latent_upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Latent>;
    fn latent_download(&self, x: &Self::Latent) -> Result<Vec<f32>>;
    fn latent_shape<'a>(&self, x: &'a Self::Latent) -> &'a [usize];
    /// The model input `[batch, C, F, H, W]`: `x` in the tensor dtype, `batch` copies.
    fn latent_input(&self, x: &Self::Latent, batch: usize) -> Result<Self::Tensor>;
    /// `x += dt · v`, with `v = u + g·(c − u)` when `guidance` is given (`out` = `[c; u]`,
    /// the batch of 2), else `v = out` (batch 1).
    fn latent_step(
        &self,
        x: &mut Self::Latent,
        out: &Self::Tensor,
        guidance: Option<f32>,
        dt: f32,
    ) -> Result<()>;
}

/// The shape check both backends share: `out` is `[1 or 2, …latent]`.
pub fn check_step_shapes(latent: &[usize], out: &[usize], guidance: bool) -> Result<()> {
    let batch = if guidance { 2 } else { 1 };
    if out.len() != latent.len() + 1 || out[0] != batch || out[1..] != *latent {
        return Err(Error::shape(
            "latent_step",
            format!("model output {out:?} for latent {latent:?} (batch {batch})"),
        ));
    }
    Ok(())
}

/// The host latent of the CPU backend.
#[derive(Clone, Debug)]
pub struct HostLatent {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

/// `x += dt · v` with `v = u + g·(c − u)` (`out` = `[c; u]`) or `v = c`, in f32, in parallel
/// chunks; the CUDA kernel does the same arithmetic in the same order.
pub fn cfg_euler(x: &mut [f32], out: &[f32], guidance: Option<f32>, dt: f32) {
    let n = x.len();
    const CHUNK: usize = 1 << 15;
    let (c, u) = out.split_at(n);
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(j, xs)| {
        let o = j * CHUNK;
        for (k, a) in xs.iter_mut().enumerate() {
            let v = match guidance {
                Some(g) => u[o + k] + g * (c[o + k] - u[o + k]),
                None => c[o + k],
            };
            *a += dt * v;
        }
    });
}

impl SolverOps for CpuBackend {
    type Latent = HostLatent;

    fn latent_upload(&self, data: &[f32], shape: &[usize]) -> Result<HostLatent> {
        if data.len() != crate::numel(shape) {
            return Err(Error::shape(
                "latent_upload",
                format!("{} values for {shape:?}", data.len()),
            ));
        }
        Ok(HostLatent {
            data: data.to_vec(),
            shape: shape.to_vec(),
        })
    }

    fn latent_download(&self, x: &HostLatent) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn latent_shape<'a>(&self, x: &'a HostLatent) -> &'a [usize] {
        &x.shape
    }

    fn latent_input(&self, x: &HostLatent, batch: usize) -> Result<CpuTensor> {
        let mut shape = vec![batch];
        shape.extend_from_slice(&x.shape);
        CpuTensor::new(x.data.repeat(batch), &shape)
    }

    fn latent_step(
        &self,
        x: &mut HostLatent,
        out: &CpuTensor,
        guidance: Option<f32>,
        dt: f32,
    ) -> Result<()> {
        check_step_shapes(&x.shape, out.shape(), guidance.is_some())?;
        cfg_euler(&mut x.data, out.data(), guidance, dt);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_step_matches_the_formula_and_checks_shapes() {
        let be = CpuBackend::new();
        let mut x = be.latent_upload(&[1.0, 2.0], &[1, 1, 1, 2]).unwrap();
        let input = be.latent_input(&x, 2).unwrap();
        assert_eq!(input.shape(), &[2, 1, 1, 1, 2]);
        // out = [c; u] = [[3, 4]; [1, 2]], g = 2: v = u + 2(c − u) = [5, 6]; dt = 0.5
        let out = CpuTensor::new(vec![3.0, 4.0, 1.0, 2.0], &[2, 1, 1, 1, 2]).unwrap();
        be.latent_step(&mut x, &out, Some(2.0), 0.5).unwrap();
        assert_eq!(be.latent_download(&x).unwrap(), vec![3.5, 5.0]);
        // no guidance: v = c, batch 1 expected
        assert!(be.latent_step(&mut x, &out, None, 1.0).is_err());
        let one = CpuTensor::new(vec![1.0, -1.0], &[1, 1, 1, 1, 2]).unwrap();
        be.latent_step(&mut x, &one, None, -1.0).unwrap();
        assert_eq!(be.latent_download(&x).unwrap(), vec![2.5, 6.0]);
    }
}
