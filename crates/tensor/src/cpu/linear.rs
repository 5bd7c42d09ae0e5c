//! The linear: `x · wᵀ + b` through the `gemm` crate, then the activation.

use super::core::*;
use crate::{Act, Error, Result, TensorMeta};
use gemm::Parallelism;
use rayon::prelude::*;

pub(super) fn linear(
    be: &CpuBackend,
    x: &CpuTensor,
    w: &CpuTensor,
    b: Option<&CpuTensor>,
    act: Act,
) -> Result<CpuTensor> {
    let k = x.last();
    if w.dims() != 2 || w.shape[1] != k {
        return Err(Error::shape(
            "linear",
            format!("x {:?} with weight {:?}", x.shape, w.shape),
        ));
    }
    let n_out = w.shape[0];
    if let Some(b) = b {
        if b.shape != [n_out] {
            return Err(Error::shape(
                "linear",
                format!("bias {:?} for {n_out} outputs", b.shape),
            ));
        }
    }
    let m = x.numel() / k.max(1);
    let mut y = vec![0f32; m * n_out];
    if let Some(b) = b {
        y.par_chunks_mut(n_out)
            .for_each(|row| row.copy_from_slice(b.data()));
    }
    let threads = be.threads();
    be.run(|| unsafe {
        matmul(
            m,
            n_out,
            k,
            y.as_mut_ptr(),
            n_out,
            b.is_some(),
            x.data.as_ptr(),
            k,
            1,
            w.data.as_ptr(),
            1,
            k,
            if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            },
        )
    });
    be.run(|| apply_act(&mut y, act));
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = n_out;
    out(y, &shape)
}
