//! Row norms over the last dim: LayerNorm, RMSNorm, LayerNorm with a per-sample modulation.

use super::core::*;
use crate::{Error, Result, TensorMeta};
use rayon::prelude::*;

pub(super) fn layer_norm(
    be: &CpuBackend,
    x: &CpuTensor,
    w: Option<&CpuTensor>,
    b: Option<&CpuTensor>,
    eps: f32,
) -> Result<CpuTensor> {
    let d = x.last();
    for (name, p) in [("weight", w), ("bias", b)] {
        if let Some(p) = p {
            if p.shape != [d] {
                return Err(Error::shape(
                    "layer_norm",
                    format!("{name} {:?} for dim {d}", p.shape),
                ));
            }
        }
    }
    let mut y = vec![0f32; x.numel()];
    be.run(|| {
        y.par_chunks_mut(d)
            .zip(x.data.par_chunks(d))
            .for_each(|(o, r)| {
                let (mean, rstd) = row_stats(r, eps);
                for i in 0..d {
                    let mut v = (r[i] - mean) * rstd;
                    if let Some(w) = w {
                        v *= w.data[i];
                    }
                    if let Some(b) = b {
                        v += b.data[i];
                    }
                    o[i] = v;
                }
            })
    });
    out(y, &x.shape)
}

pub(super) fn rms_norm(
    be: &CpuBackend,
    x: &CpuTensor,
    w: &CpuTensor,
    eps: f32,
) -> Result<CpuTensor> {
    let d = x.last();
    if w.shape != [d] {
        return Err(Error::shape(
            "rms_norm",
            format!("weight {:?} for dim {d}", w.shape),
        ));
    }
    let mut y = vec![0f32; x.numel()];
    be.run(|| {
        y.par_chunks_mut(d)
            .zip(x.data.par_chunks(d))
            .for_each(|(o, r)| {
                let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
                let s = 1.0 / (ms + eps).sqrt();
                for i in 0..d {
                    o[i] = r[i] * s * w.data[i];
                }
            })
    });
    out(y, &x.shape)
}

pub(super) fn norm_modulate(
    be: &CpuBackend,
    x: &CpuTensor,
    shift: &CpuTensor,
    scale: &CpuTensor,
    eps: f32,
) -> Result<CpuTensor> {
    let (_, rows, d) = per_sample_dims("norm_modulate", x, shift)?;
    check_same("norm_modulate", shift, scale)?;
    let mut y = vec![0f32; x.numel()];
    be.run(|| {
        y.par_chunks_mut(d)
            .zip(x.data.par_chunks(d))
            .enumerate()
            .for_each(|(i, (o, r))| {
                let bi = i / rows.max(1);
                let (sh, sc) = (&shift.data[bi * d..][..d], &scale.data[bi * d..][..d]);
                let (mean, rstd) = row_stats(r, eps);
                for j in 0..d {
                    o[j] = (r[j] - mean) * rstd * (1.0 + sc[j]) + sh[j];
                }
            })
    });
    out(y, &x.shape)
}
