//! Rotary embedding, and the block means attention policies score (alone or fused with the rope).

use super::Ops;
use crate::core::{elems_cfg, vec8, CudaTensor, KArg};
use cudarc::driver::LaunchConfig;
use jenga_tensor::{Error, Result, TensorMeta};

impl Ops {
    pub(crate) fn rope(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
    ) -> Result<CudaTensor> {
        if x.dims() != 4
            || !x.shape[3].is_multiple_of(2)
            || cos.shape != [x.shape[1], x.shape[3] / 2]
            || sin.shape != cos.shape
        {
            return Err(Error::shape(
                "rope",
                format!(
                    "x {:?}, cos {:?}, sin {:?} (expected [B, L, H, Dh], [L, Dh/2])",
                    x.shape, cos.shape, sin.shape
                ),
            ));
        }
        let out = self.empty(&x.shape)?;
        let pairs = x.numel() / 2;
        if pairs > 0 {
            let (xp, cp, sp, op) = (self.ptr(x), self.ptr(cos), self.ptr(sin), self.ptr(&out));
            // 4 pairs per thread: the half-dim must split into groups of 4.
            let v = vec8(&[xp, cp, sp, op], &[pairs * 2, x.shape[3]]);
            let units = if v { pairs / 4 } else { pairs };
            self.launch(
                if v { &self.k.rope_v8 } else { &self.k.rope },
                elems_cfg(units, self.sm_count),
                "rope",
                &[
                    KArg::U64(xp),
                    KArg::U64(cp),
                    KArg::U64(sp),
                    KArg::U64(op),
                    KArg::I64(units as i64),
                    KArg::I32(x.shape[1] as i32),
                    KArg::I32(x.shape[2] as i32),
                    KArg::I32((x.shape[3] / 2) as i32),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn rope_pooled(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        block: usize,
    ) -> Result<(CudaTensor, Option<CudaTensor>)> {
        // One pass (`rope_pool_v8`): y bit-identical to `rope`, the means to
        // `block_mean_pool(y)`. Shapes the kernel does not take go the unfused way.
        let s = &x.shape;
        let fused = s.len() == 4
            && block > 0
            && s[3] > 0
            && s[3].is_multiple_of(8)
            && cos.shape == [s[1], s[3] / 2]
            && sin.shape == cos.shape
            && vec8(&[self.ptr(x), self.ptr(cos), self.ptr(sin)], &[]);
        if !fused {
            let y = self.rope(x, cos, sin)?;
            let p = self.block_mean_pool(&y, block)?;
            return Ok((y, Some(p)));
        }
        let (b, l, h, d) = (s[0], s[1], s[2], s[3]);
        let nb = l.div_ceil(block);
        let y = self.empty(s)?;
        let pooled = self.empty(&[b, h, nb, d])?;
        if !vec8(&[self.ptr(&y), self.ptr(&pooled)], &[]) {
            let y = self.rope(x, cos, sin)?;
            let p = self.block_mean_pool(&y, block)?;
            return Ok((y, Some(p)));
        }
        let units = b * nb * h * d / 8;
        if units > 0 {
            // 64-thread CTAs: few threads in all (one per block, head and 8 channels), spread
            // evenly over the SMs.
            let cfg = LaunchConfig {
                grid_dim: (units.div_ceil(64) as u32, 1, 1),
                block_dim: (64, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                &self.k.rope_pool_v8,
                cfg,
                "rope_pool_v8",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(cos)),
                    KArg::U64(self.ptr(sin)),
                    KArg::U64(self.ptr(&y)),
                    KArg::U64(self.ptr(&pooled)),
                    KArg::I64(units as i64),
                    KArg::I32(l as i32),
                    KArg::I32(h as i32),
                    KArg::I32((d / 2) as i32),
                    KArg::I32(nb as i32),
                    KArg::I32(block as i32),
                ],
            )?;
        }
        Ok((y, Some(pooled)))
    }

    pub(crate) fn block_mean_pool(&self, x: &CudaTensor, block: usize) -> Result<CudaTensor> {
        if x.dims() != 4 || block == 0 {
            return Err(Error::shape(
                "block_mean_pool",
                format!("x {:?}, block {block}", x.shape),
            ));
        }
        let (b, l, h, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let nb = l.div_ceil(block);
        let out = self.empty(&[b, h, nb, d])?;
        let n = out.numel();
        if n > 0 {
            self.launch(
                &self.k.pool,
                elems_cfg(n, self.sm_count),
                "block_mean_pool",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(&out)),
                    KArg::I64(n as i64),
                    KArg::I32(l as i32),
                    KArg::I32(h as i32),
                    KArg::I32(d as i32),
                    KArg::I32(nb as i32),
                    KArg::I32(block as i32),
                ],
            )?;
        }
        Ok(out)
    }
}
