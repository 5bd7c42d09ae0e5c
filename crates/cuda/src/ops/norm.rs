//! Row norms over the last dim: LayerNorm, RMSNorm, and LayerNorm with a per-sample modulation.

use super::Ops;
use super::{norm_cfg, norm_v8_cfg};
use crate::core::{vec8, CudaTensor, Gpu, KArg};
use jenga_tensor::{Error, Result, TensorMeta};

impl Ops {
    pub(crate) fn layer_norm(
        &self,
        x: &CudaTensor,
        w: Option<&CudaTensor>,
        b: Option<&CudaTensor>,
        eps: f32,
    ) -> Result<CudaTensor> {
        let d = Gpu::last_dim("layer_norm", x)?;
        if let Some(w) = w {
            Gpu::vec_of("layer_norm", "weight", w, d)?;
        }
        if let Some(b) = b {
            Gpu::vec_of("layer_norm", "bias", b, d)?;
        }
        let out = self.empty(&x.shape)?;
        let rows = x.numel() / d;
        if rows > 0 {
            let (xp, op) = (self.ptr(x), self.ptr(&out));
            let wp = w.map(|t| self.ptr(t)).unwrap_or(0);
            let bp = b.map(|t| self.ptr(t)).unwrap_or(0);
            let vcfg = norm_v8_cfg(rows, d).filter(|_| vec8(&[xp, op, wp, bp], &[d]));
            self.launch(
                if vcfg.is_some() {
                    &self.k.layer_norm_v8
                } else {
                    &self.k.layer_norm
                },
                vcfg.unwrap_or_else(|| norm_cfg(rows, d)),
                "layer_norm",
                &[
                    KArg::U64(xp),
                    KArg::U64(wp),
                    KArg::U64(bp),
                    KArg::U64(op),
                    KArg::I32(d as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        let d = Gpu::last_dim("rms_norm", x)?;
        Gpu::vec_of("rms_norm", "weight", w, d)?;
        let out = self.empty(&x.shape)?;
        let rows = x.numel() / d;
        if rows > 0 {
            let (xp, wp, op) = (self.ptr(x), self.ptr(w), self.ptr(&out));
            let vcfg = norm_v8_cfg(rows, d).filter(|_| vec8(&[xp, op, wp], &[d]));
            self.launch(
                if vcfg.is_some() {
                    &self.k.rms_norm_v8
                } else {
                    &self.k.rms_norm
                },
                vcfg.unwrap_or_else(|| norm_cfg(rows, d)),
                "rms_norm",
                &[
                    KArg::U64(xp),
                    KArg::U64(wp),
                    KArg::U64(op),
                    KArg::I32(d as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn norm_modulate(
        &self,
        x: &CudaTensor,
        shift: &CudaTensor,
        scale: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        if x.dims() != 3
            || shift.shape != [x.shape[0], x.shape[2]]
            || scale.shape != shift.shape
            || x.shape[2] == 0
        {
            return Err(Error::shape(
                "norm_modulate",
                format!(
                    "x {:?}, shift {:?}, scale {:?} (expected [B, L, D], [B, D], [B, D])",
                    x.shape, shift.shape, scale.shape
                ),
            ));
        }
        let (l, d) = (x.shape[1], x.shape[2]);
        let out = self.empty(&x.shape)?;
        let rows = x.numel() / d;
        if rows > 0 {
            let (xp, hp, cp, op) = (
                self.ptr(x),
                self.ptr(shift),
                self.ptr(scale),
                self.ptr(&out),
            );
            let vcfg = norm_v8_cfg(rows, d).filter(|_| vec8(&[xp, hp, cp, op], &[d]));
            self.launch(
                if vcfg.is_some() {
                    &self.k.norm_modulate_v8
                } else {
                    &self.k.norm_modulate
                },
                vcfg.unwrap_or_else(|| norm_cfg(rows, d)),
                "norm_modulate",
                &[
                    KArg::U64(xp),
                    KArg::U64(hp),
                    KArg::U64(cp),
                    KArg::U64(op),
                    KArg::I32(d as i32),
                    KArg::I32(l as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(out)
    }
}
