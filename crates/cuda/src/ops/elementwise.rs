//! Elementwise ops: activations, the gated residual add, `a·x + b·y`, mean of |x|.

use super::act_code;
use super::Ops;
use crate::core::{elems_cfg, vec8, CudaTensor, Gpu, KArg};
use crate::error::{alloc_err, drv};
use cudarc::driver::DevicePtr;
use jenga_tensor::{Act, Error, Result, TensorMeta};

impl Ops {
    pub(crate) fn act(&self, x: &CudaTensor, act: Act) -> Result<CudaTensor> {
        let out = self.empty(&x.shape)?;
        let n = x.numel();
        if n > 0 {
            let (xp, op) = (self.ptr(x), self.ptr(&out));
            let v = vec8(&[xp, op], &[n]);
            self.launch(
                if v { &self.k.act_v8 } else { &self.k.act },
                elems_cfg(if v { n / 8 } else { n }, self.sm_count),
                "act",
                &[
                    KArg::U64(xp),
                    KArg::U64(op),
                    KArg::I64((if v { n / 8 } else { n }) as i64),
                    KArg::I32(act_code(act)),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn add_gated(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        Gpu::same_shape("add_gated", x, y)?;
        let (per_batch, d) = match gate {
            Some(g) => {
                if x.dims() != 3 || g.shape != [x.shape[0], x.shape[2]] {
                    return Err(Error::shape(
                        "add_gated",
                        format!(
                            "x {:?}, gate {:?} (expected [B, L, D], [B, D])",
                            x.shape, g.shape
                        ),
                    ));
                }
                (x.shape[1] * x.shape[2], x.shape[2])
            }
            None => (1, 1),
        };
        let out = self.empty(&x.shape)?;
        let n = x.numel();
        if n > 0 {
            let (xp, yp, op) = (self.ptr(x), self.ptr(y), self.ptr(&out));
            let gp = gate.map(|g| self.ptr(g)).unwrap_or(0);
            // Ungated: `d` is a dummy 1, only `n` matters.
            let v = vec8(&[xp, yp, gp, op], &[n, if gate.is_some() { d } else { 8 }]);
            let units = if v { n / 8 } else { n };
            self.launch(
                if v {
                    &self.k.add_gated_v8
                } else {
                    &self.k.add_gated
                },
                elems_cfg(units, self.sm_count),
                "add_gated",
                &[
                    KArg::U64(xp),
                    KArg::U64(yp),
                    KArg::U64(gp),
                    KArg::U64(op),
                    KArg::I64(units as i64),
                    KArg::I64(per_batch as i64),
                    KArg::I32(d as i32),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn axpby(
        &self,
        a: f32,
        x: &CudaTensor,
        b: f32,
        y: &CudaTensor,
    ) -> Result<CudaTensor> {
        Gpu::same_shape("axpby", x, y)?;
        let out = self.empty(&x.shape)?;
        let n = x.numel();
        if n > 0 {
            let (xp, yp, op) = (self.ptr(x), self.ptr(y), self.ptr(&out));
            let v = vec8(&[xp, yp, op], &[n]);
            let units = if v { n / 8 } else { n };
            self.launch(
                if v { &self.k.axpby_v8 } else { &self.k.axpby },
                elems_cfg(units, self.sm_count),
                "axpby",
                &[
                    KArg::F32(a),
                    KArg::U64(xp),
                    KArg::F32(b),
                    KArg::U64(yp),
                    KArg::U64(op),
                    KArg::I64(units as i64),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn mean_abs(&self, x: &CudaTensor) -> Result<f32> {
        let n = x.numel();
        if n == 0 {
            return Ok(0.0);
        }
        let acc = self.stream.alloc_zeros::<f32>(1).map_err(alloc_err(4))?;
        let (ap, _) = acc.device_ptr(&self.stream);
        self.launch(
            &self.k.sum_abs,
            elems_cfg(n, self.sm_count),
            "mean_abs",
            &[KArg::U64(self.ptr(x)), KArg::U64(ap), KArg::I64(n as i64)],
        )?;
        let s = self
            .stream
            .clone_dtoh(&acc)
            .map_err(drv("copying mean_abs to the host"))?;
        Ok(s[0] / n as f32)
    }
}
