//! The linear: cuBLASLt with a fused bias / GELU epilogue where it has one, else our epilogue kernel.

use super::act_code;
use super::Ops;
use crate::core::{elems_cfg, vec8, CudaTensor, Gpu, KArg};
use crate::error::{dev, drv};
use crate::gemm::{Epilogue, Gemm, GemmPtrs, GemmShape};
use jenga_tensor::{Act, Error, Result, TensorMeta};

impl Ops {
    pub(crate) fn linear(
        &self,
        gemm: &Gemm,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        act: Act,
    ) -> Result<CudaTensor> {
        // Per-op timing tells the linears apart by shape (K→N, rows, epilogue).
        let name = match self.op_timing_on() {
            true => format!(
                "linear {}x{}->{}{}{}",
                x.numel() / x.shape.last().copied().unwrap_or(1).max(1),
                x.shape.last().copied().unwrap_or(0),
                w.shape.first().copied().unwrap_or(0),
                if b.is_some() { " +bias" } else { "" },
                if act == Act::None { "" } else { " +act" }
            ),
            false => String::new(),
        };
        self.timed(&name, || {
            let k_in = Gpu::last_dim("linear", x)?;
            // cuBLASLt works on the calling thread's current context.
            self.ctx
                .bind_to_thread()
                .map_err(drv("binding the CUDA context"))?;
            if w.dims() != 2 || w.shape[1] != k_in {
                return Err(Error::shape(
                    "linear",
                    format!("x {:?}, w {:?} (expected [out, {k_in}])", x.shape, w.shape),
                ));
            }
            let n_out = w.shape[0];
            if let Some(b) = b {
                Gpu::vec_of("linear", "bias", b, n_out)?;
            }
            let rows = x.numel() / k_in;
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("checked") = n_out;
            let out = self.empty(&shape)?;
            if rows == 0 || n_out == 0 {
                return Ok(out);
            }
            // Row-major y[rows, out] = x · wᵀ is column-major yᵀ[out, rows] = W(ᵀ as stored) · xᵀ:
            // A = w (stored k×m column-major, transposed), B = x (k×n column-major), C = y (m×n).
            let gemm_shape = |epilogue| GemmShape {
                transa: true,
                transb: false,
                m: n_out as u64,
                n: rows as u64,
                k: k_in as u64,
                lda: k_in as i64,
                ldb: k_in as i64,
                ldc: n_out as i64,
                batch: 1,
                stride_a: 0,
                stride_b: 0,
                stride_c: 0,
                epilogue,
            };
            let ptrs = GemmPtrs {
                a: self.ptr(w),
                b: self.ptr(x),
                d: self.ptr(&out),
                bias: b.map(|t| self.ptr(t)).unwrap_or(0),
            };
            let epilogue = match (b.is_some(), act) {
                (true, Act::GeluTanh) => Epilogue::GeluBias,
                (true, _) => Epilogue::Bias,
                (false, Act::GeluTanh) => Epilogue::Gelu,
                (false, _) => Epilogue::None,
            };
            // The output buffer is freshly allocated and unshared.
            let fused = unsafe { gemm.matmul(&gemm_shape(epilogue), ptrs) };
            let rest_act = match (fused, act) {
                (Ok(true), Act::Silu) => Some((None, Act::Silu)),
                (Ok(true), _) => None,
                // Some epilogues have no kernel for a shape/type: plain GEMM, then our own kernel.
                _ => {
                    let plain = unsafe { gemm.matmul(&gemm_shape(Epilogue::None), ptrs) }?;
                    if !plain {
                        return Err(dev(format!(
                            "cuBLASLt has no algorithm for matmul {rows}x{k_in}x{n_out}"
                        )));
                    }
                    Some((b, act))
                }
            };
            if let Some((bias, a)) = rest_act {
                let n = out.numel();
                let p = self.ptr(&out);
                let bp = bias.map(|t| self.ptr(t)).unwrap_or(0);
                let v = vec8(&[p, bp], &[n, n_out]);
                let units = if v { n / 8 } else { n };
                self.launch(
                    if v {
                        &self.k.bias_act_v8
                    } else {
                        &self.k.bias_act
                    },
                    elems_cfg(units, self.sm_count),
                    "linear epilogue",
                    &[
                        KArg::U64(p),
                        KArg::U64(bp),
                        KArg::U64(p),
                        KArg::I64(units as i64),
                        KArg::I32(n_out as i32),
                        KArg::I32(act_code(a)),
                    ],
                )?;
            }
            Ok(out)
        })
    }
}
