//! Elementwise ops: activations, the gated residual add, `a·x + b·y`, mean of |x|.

use super::core::*;
use crate::{Act, Result, TensorMeta};
use rayon::prelude::*;

pub(super) fn act(be: &CpuBackend, x: &CpuTensor, act: Act) -> Result<CpuTensor> {
    let mut y = x.data.to_vec();
    be.run(|| apply_act(&mut y, act));
    out(y, &x.shape)
}

pub(super) fn add_gated(
    be: &CpuBackend,
    x: &CpuTensor,
    y: &CpuTensor,
    gate: Option<&CpuTensor>,
) -> Result<CpuTensor> {
    check_same("add_gated", x, y)?;
    let mut o = x.data.to_vec();
    match gate {
        None => be.run(|| {
            o.par_iter_mut()
                .zip(y.data.par_iter())
                .for_each(|(a, b)| *a += b)
        }),
        Some(g) => {
            let (_, rows, d) = per_sample_dims("add_gated", x, g)?;
            be.run(|| {
                o.par_chunks_mut(d)
                    .zip(y.data.par_chunks(d))
                    .enumerate()
                    .for_each(|(i, (a, b))| {
                        let gv = &g.data[(i / rows.max(1)) * d..][..d];
                        for j in 0..d {
                            a[j] += gv[j] * b[j];
                        }
                    })
            });
        }
    }
    out(o, &x.shape)
}

pub(super) fn axpby(
    be: &CpuBackend,
    a: f32,
    x: &CpuTensor,
    b: f32,
    y: &CpuTensor,
) -> Result<CpuTensor> {
    check_same("axpby", x, y)?;
    let o = be.run(|| {
        x.data
            .par_iter()
            .zip(y.data.par_iter())
            .map(|(p, q)| a * p + b * q)
            .collect()
    });
    out(o, &x.shape)
}

pub(super) fn mean_abs(be: &CpuBackend, x: &CpuTensor) -> Result<f32> {
    let s: f64 = be.run(|| x.data.par_iter().map(|v| v.abs() as f64).sum());
    Ok((s / x.numel().max(1) as f64) as f32)
}
