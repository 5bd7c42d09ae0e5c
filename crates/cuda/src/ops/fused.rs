//! Fused passes, bit-identical to the ops they replace: the residual add and its norm
//! (shapes the kernel does not take run the two ops), and the q/k path's RMSNorm + rope (+ block
//! means), which answers `Ok(None)` for calls its kernel does not take (the caller then runs
//! `jenga_tensor::rms_norm_rope_composed`).

use super::norm_v8_cfg;
use super::Ops;
use crate::core::{vec8, CudaTensor, KArg};
use cudarc::driver::LaunchConfig;
use jenga_tensor::Result;

/// The norm that [`Ops::add_gated_norm`] applies to the residual sum.
#[derive(Clone, Copy)]
pub(crate) enum GatedNorm<'a> {
    /// LayerNorm with optional weight and bias.
    Affine(Option<&'a CudaTensor>, Option<&'a CudaTensor>),
    /// `LN·(1 + scale) + shift`, shift/scale `[B, D]`.
    Modulate(&'a CudaTensor, &'a CudaTensor),
}

impl Ops {
    /// `add_gated` then a row norm of the sum in one pass (`add_gated_norm_v8`, bit-identical
    /// to the two ops); shapes or alignments the kernel does not take run the two ops.
    pub(crate) fn add_gated_norm(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
        norm: GatedNorm,
        eps: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let unfused = || -> Result<(CudaTensor, CudaTensor)> {
            let s = self.add_gated(x, y, gate)?;
            let n = match norm {
                GatedNorm::Affine(w, b) => self.layer_norm(&s, w, b, eps)?,
                GatedNorm::Modulate(sh, sc) => self.norm_modulate(&s, sh, sc, eps)?,
            };
            Ok((s, n))
        };
        let xs = &x.shape;
        if xs.len() != 3 || y.shape != *xs || xs[2] == 0 {
            return unfused();
        }
        let (bsz, l, d) = (xs[0], xs[1], xs[2]);
        let rows = bsz * l;
        let per_sample = |t: &CudaTensor| t.shape == [bsz, d];
        let per_dim = |t: Option<&CudaTensor>| t.is_none_or(|t| t.shape == [d]);
        let (wp, bp, hp, cp) = match norm {
            GatedNorm::Affine(w, b) if per_dim(w) && per_dim(b) => (
                w.map_or(0, |t| self.ptr(t)),
                b.map_or(0, |t| self.ptr(t)),
                0,
                0,
            ),
            GatedNorm::Modulate(sh, sc) if per_sample(sh) && per_sample(sc) => {
                (0, 0, self.ptr(sh), self.ptr(sc))
            }
            _ => return unfused(),
        };
        if !gate.is_none_or(per_sample) {
            return unfused();
        }
        let (xp, yp, gp) = (self.ptr(x), self.ptr(y), gate.map_or(0, |g| self.ptr(g)));
        let Some(cfg) =
            norm_v8_cfg(rows, d).filter(|_| rows > 0 && vec8(&[xp, yp, gp, wp, bp, hp, cp], &[d]))
        else {
            return unfused();
        };
        let (s, out) = (self.empty(xs)?, self.empty(xs)?);
        let (sp, op) = (self.ptr(&s), self.ptr(&out));
        if !vec8(&[sp, op], &[]) {
            return unfused();
        }
        self.launch(
            &self.k.add_gated_norm_v8,
            cfg,
            "add_gated_norm_v8",
            &[
                KArg::U64(xp),
                KArg::U64(yp),
                KArg::U64(gp),
                KArg::U64(wp),
                KArg::U64(bp),
                KArg::U64(hp),
                KArg::U64(cp),
                KArg::U64(sp),
                KArg::U64(op),
                KArg::I32(d as i32),
                KArg::I32(l as i32),
                KArg::F32(eps),
            ],
        )?;
        Ok((s, out))
    }

    /// `rms_norm` over each token's `H·Dh` row, `rope`, and with `pool` the block means, in one
    /// pass (`rms_rope_v8`: a token per CTA; `rms_rope_pool_v8`: a pool block per CTA;
    /// bit-identical to the unfused ops); `Ok(None)` for other shapes, and rows wider than the
    /// kernel's registers allow a CTA (the caller runs those ops).
    pub(crate) fn rms_norm_rope_fused(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        cos: &CudaTensor,
        sin: &CudaTensor,
        pool: Option<usize>,
    ) -> Result<Option<(CudaTensor, Option<CudaTensor>)>> {
        let s = x.shape.clone();
        let unfused = || Ok(None);
        let fits = s.len() == 4
            && s[3] > 0
            && s[3].is_multiple_of(8)
            && s[2] * s[3] / 8 <= 1024
            && w.shape == [s[2] * s[3]]
            && cos.shape == [s[1], s[3] / 2]
            && sin.shape == cos.shape
            && pool != Some(0);
        if !fits {
            return unfused();
        }
        let (b, l, h, dh) = (s[0], s[1], s[2], s[3]);
        let (func, name, block) = match pool {
            Some(p) => (&self.k.rms_rope_pool_v8, "rms_rope_pool_v8", p),
            None => (&self.k.rms_rope_v8, "rms_rope_v8", 1),
        };
        let threads = (h * dh / 8).div_ceil(32) * 32;
        let max_threads = func.max_threads_per_block().unwrap_or(0).max(0) as usize;
        if threads > max_threads {
            return unfused();
        }
        let nb = l.div_ceil(block);
        let y = self.empty(&s)?;
        let pooled = match pool {
            Some(_) => Some(self.empty(&[b, h, nb, dh])?),
            None => None,
        };
        let ptrs = [
            self.ptr(x),
            self.ptr(w),
            self.ptr(cos),
            self.ptr(sin),
            self.ptr(&y),
            pooled.as_ref().map_or(0, |p| self.ptr(p)),
        ];
        if !vec8(&ptrs, &[]) || b * nb > i32::MAX as usize {
            return unfused();
        }
        if b * nb > 0 {
            let cfg = LaunchConfig {
                grid_dim: ((b * nb) as u32, 1, 1),
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                func,
                cfg,
                name,
                &[
                    KArg::U64(ptrs[0]),
                    KArg::U64(ptrs[1]),
                    KArg::U64(ptrs[2]),
                    KArg::U64(ptrs[3]),
                    KArg::U64(ptrs[4]),
                    KArg::U64(ptrs[5]),
                    KArg::I32(l as i32),
                    KArg::I32(h as i32),
                    KArg::I32((dh / 2) as i32),
                    KArg::I32(nb as i32),
                    KArg::I32(block as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(Some((y, pooled)))
    }
}
