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
    /// `Σ_k c_k · x_k` of 1 to [`MAX_COMBINE`] latents of one shape, as a new latent: the
    /// multistep solvers' (UniPC) predictor and corrector updates, with host coefficients.
    /// One term copies a latent.
    fn latent_combine(&self, terms: &[(f32, &Self::Latent)]) -> Result<Self::Latent>;
}

/// Most terms one [`SolverOps::latent_combine`] takes (UniPC order 2 needs 4).
pub const MAX_COMBINE: usize = 4;

/// The check both backends share: 1..=4 terms, all of the first one's shape.
pub fn check_combine_shapes(shapes: &[&[usize]]) -> Result<()> {
    if shapes.is_empty() || shapes.len() > MAX_COMBINE {
        return Err(Error::shape(
            "latent_combine",
            format!("{} terms (1 to {MAX_COMBINE})", shapes.len()),
        ));
    }
    if let Some(s) = shapes.iter().find(|s| **s != shapes[0]) {
        return Err(Error::shape(
            "latent_combine",
            format!("latent {s:?} beside {:?}", shapes[0]),
        ));
    }
    Ok(())
}

/// `out[i] = Σ_k c_k · x_k[i]`, accumulated in f32 in term order (`c_0·x_0`, then `+ c_k·x_k`);
/// the CUDA kernel does the same arithmetic in the same order.
pub fn lin_combine(out: &mut [f32], terms: &[(f32, &[f32])]) {
    const CHUNK: usize = 1 << 15;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(j, os)| {
        let o = j * CHUNK;
        for (k, a) in os.iter_mut().enumerate() {
            let mut acc = terms[0].0 * terms[0].1[o + k];
            for (c, x) in &terms[1..] {
                acc += c * x[o + k];
            }
            *a = acc;
        }
    });
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

    fn latent_combine(&self, terms: &[(f32, &HostLatent)]) -> Result<HostLatent> {
        let shapes: Vec<&[usize]> = terms.iter().map(|(_, x)| x.shape.as_slice()).collect();
        check_combine_shapes(&shapes)?;
        let mut data = vec![0f32; terms[0].1.data.len()];
        let t: Vec<(f32, &[f32])> = terms.iter().map(|(c, x)| (*c, x.data.as_slice())).collect();
        lin_combine(&mut data, &t);
        Ok(HostLatent {
            data,
            shape: terms[0].1.shape.clone(),
        })
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

    #[test]
    fn combine_is_the_weighted_sum_and_checks_terms() {
        let be = CpuBackend::new();
        let a = be.latent_upload(&[1.0, 2.0], &[1, 1, 1, 2]).unwrap();
        let b = be.latent_upload(&[10.0, -4.0], &[1, 1, 1, 2]).unwrap();
        let y = be
            .latent_combine(&[(2.0, &a), (0.5, &b), (-1.0, &a)])
            .unwrap();
        assert_eq!(be.latent_download(&y).unwrap(), vec![6.0, 0.0]);
        let copy = be.latent_combine(&[(1.0, &b)]).unwrap();
        assert_eq!(be.latent_download(&copy).unwrap(), vec![10.0, -4.0]);
        let odd = be.latent_upload(&[1.0, 2.0], &[1, 1, 2, 1]).unwrap();
        let err = be.latent_combine(&[(1.0, &a), (1.0, &odd)]).unwrap_err();
        assert!(err.to_string().contains("latent_combine"), "{err}");
        assert!(be.latent_combine(&[]).is_err());
        assert!(be.latent_combine(&[(1.0, &a); 5]).is_err());
    }
}
