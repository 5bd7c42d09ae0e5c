//! Rotary embedding, block means, and the layout ops: token gather, narrow, cat.

use super::core::*;
use crate::{Error, Result, TensorMeta};
use rayon::prelude::*;

pub(super) fn rope(
    be: &CpuBackend,
    x: &CpuTensor,
    cos: &CpuTensor,
    sin: &CpuTensor,
) -> Result<CpuTensor> {
    check_same("rope", cos, sin)?;
    if x.dims() != 4 || cos.shape != [x.shape[1], x.shape[3] / 2] || !x.shape[3].is_multiple_of(2) {
        return Err(Error::shape(
            "rope",
            format!("x {:?} with table {:?}", x.shape, cos.shape),
        ));
    }
    let (l, h, dh) = (x.shape[1], x.shape[2], x.shape[3]);
    let half = dh / 2;
    let mut o = x.data.to_vec();
    be.run(|| {
        o.par_chunks_mut(h * dh).enumerate().for_each(|(tok, row)| {
            let li = tok % l;
            let (c, s) = (
                &cos.data[li * half..][..half],
                &sin.data[li * half..][..half],
            );
            for head in row.chunks_mut(dh) {
                for i in 0..half {
                    let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = x0 * c[i] - x1 * s[i];
                    head[2 * i + 1] = x0 * s[i] + x1 * c[i];
                }
            }
        })
    });
    out(o, &x.shape)
}

pub(super) fn block_mean_pool(be: &CpuBackend, x: &CpuTensor, block: usize) -> Result<CpuTensor> {
    if x.dims() != 4 || block == 0 {
        return Err(Error::shape(
            "block_mean_pool",
            format!("x {:?}, block {block}", x.shape),
        ));
    }
    let (b, l, h, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let nb = l.div_ceil(block);
    let mut o = vec![0f32; b * h * nb * d];
    be.run(|| {
        o.par_chunks_mut(d).enumerate().for_each(|(i, dst)| {
            let (bi, hi, kb) = (i / (h * nb), (i / nb) % h, i % nb);
            for t in kb * block..((kb + 1) * block).min(l) {
                let src = &x.data[((bi * l + t) * h + hi) * d..][..d];
                dst.iter_mut().zip(src).for_each(|(a, s)| *a += s);
            }
            dst.iter_mut().for_each(|a| *a /= block as f32);
        })
    });
    out(o, &[b, h, nb, d])
}

pub(super) fn gather_tokens(be: &CpuBackend, x: &CpuTensor, idx: &[u32]) -> Result<CpuTensor> {
    if x.dims() < 2 {
        return Err(Error::shape("gather_tokens", format!("x {:?}", x.shape)));
    }
    let (b, l) = (x.shape[0], x.shape[1]);
    let inner = x.numel() / (b * l).max(1);
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= l) {
        return Err(Error::invalid(
            "gather_tokens",
            format!("index {bad} out of {l} tokens"),
        ));
    }
    let mut o = vec![0f32; b * idx.len() * inner];
    be.run(|| {
        o.par_chunks_mut(inner).enumerate().for_each(|(i, dst)| {
            let (bi, t) = (i / idx.len(), idx[i % idx.len()] as usize);
            dst.copy_from_slice(&x.data[(bi * l + t) * inner..][..inner]);
        })
    });
    let mut shape = x.shape.clone();
    shape[1] = idx.len();
    out(o, &shape)
}

pub(super) fn narrow(x: &CpuTensor, dim: usize, start: usize, len: usize) -> Result<CpuTensor> {
    if dim >= x.dims() || start + len > x.shape[dim] {
        return Err(Error::shape(
            "narrow",
            format!("{:?} dim {dim} [{start}, {})", x.shape, start + len),
        ));
    }
    let outer: usize = x.shape[..dim].iter().product();
    let inner: usize = x.shape[dim + 1..].iter().product();
    let n = x.shape[dim];
    let mut o = Vec::with_capacity(outer * len * inner);
    for i in 0..outer {
        o.extend_from_slice(&x.data[(i * n + start) * inner..(i * n + start + len) * inner]);
    }
    let mut shape = x.shape.clone();
    shape[dim] = len;
    out(o, &shape)
}

pub(super) fn cat(xs: &[&CpuTensor], dim: usize) -> Result<CpuTensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("cat", "no tensors"))?;
    let ok = xs.iter().all(|t| {
        t.dims() == first.dims()
            && dim < t.dims()
            && t.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(i, (a, b))| i == dim || a == b)
    });
    if !ok {
        let shapes: Vec<_> = xs.iter().map(|t| t.shape.clone()).collect();
        return Err(Error::shape("cat", format!("{shapes:?} along dim {dim}")));
    }
    let outer: usize = first.shape[..dim].iter().product();
    let inner: usize = first.shape[dim + 1..].iter().product();
    let total: usize = xs.iter().map(|t| t.shape[dim]).sum();
    let mut o = Vec::with_capacity(outer * total * inner);
    for i in 0..outer {
        for t in xs {
            let n = t.shape[dim] * inner;
            o.extend_from_slice(&t.data[i * n..(i + 1) * n]);
        }
    }
    let mut shape = first.shape.clone();
    shape[dim] = total;
    out(o, &shape)
}
