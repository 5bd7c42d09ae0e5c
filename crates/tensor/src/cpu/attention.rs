//! Attention: key blocks walked with an online softmax, so that dense and block-sparse plans
//! run through the same code (the GPU kernels do the same).

use super::core::*;
use crate::{AttnPlan, Error, KeyBias, Result, TensorMeta};
use gemm::Parallelism;
use rayon::prelude::*;

pub(super) fn attention(
    be: &CpuBackend,
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    plan: &AttnPlan,
    bias: Option<KeyBias>,
) -> Result<CpuTensor> {
    check_same("attention (k, v)", k, v)?;
    if q.dims() != 4 || k.dims() != 4 || q.shape[0] != k.shape[0] || q.shape[2..] != k.shape[2..] {
        return Err(Error::shape(
            "attention",
            format!("q {:?}, k {:?}", q.shape, k.shape),
        ));
    }
    let (bsz, lq, h, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let lk = k.shape[1];
    if let AttnPlan::Device(_) = plan {
        return Err(Error::invalid(
            "attention",
            "a device-built plan (AttnPlan::Device) cannot run on the CPU backend",
        ));
    }
    if let AttnPlan::Sparse(p) = plan {
        p.validate(bsz, h, lq, lk)?;
        if p.block != ATTN_Q_TILE {
            // The tile of query rows must be the plan's block so each task reads one CSR row.
            return Err(Error::invalid(
                "attention",
                format!("plan block {} (CPU supports {ATTN_Q_TILE})", p.block),
            ));
        }
    }
    let mut o = vec![0f32; q.numel()];
    let optr = SendPtr(o.as_mut_ptr());
    let q_tiles = lq.div_ceil(ATTN_Q_TILE);
    let scale = 1.0 / (d as f32).sqrt();
    be.run(|| {
        (0..bsz * h * q_tiles).into_par_iter().for_each(|task| {
            let (bh, qt) = (task / q_tiles, task % q_tiles);
            let (b, hh) = (bh / h, bh % h);
            // Key ranges to visit: every key (dense), or the runs of consecutive kept blocks.
            let ranges: Vec<(usize, usize)> = match plan {
                AttnPlan::Dense => (0..lk)
                    .step_by(ATTN_K_CHUNK)
                    .map(|s| (s, (s + ATTN_K_CHUNK).min(lk)))
                    .collect(),
                AttnPlan::Sparse(p) => {
                    let mut r: Vec<(usize, usize)> = Vec::new();
                    for &kb in p.row(b, hh, qt) {
                        let (s, e) = (kb as usize * p.block, ((kb as usize + 1) * p.block).min(lk));
                        match r.last_mut() {
                            Some(last) if last.1 == s && e - last.0 <= ATTN_K_CHUNK => last.1 = e,
                            _ => r.push((s, e)),
                        }
                    }
                    r
                }
                AttnPlan::Device(_) => unreachable!("rejected above"),
            };
            let q0 = qt * ATTN_Q_TILE;
            let rows = ATTN_Q_TILE.min(lq - q0);
            let ts = h * d; // token stride
            let qp = unsafe { q.data.as_ptr().add((b * lq + q0) * ts + hh * d) };
            let mut acc = vec![0f32; rows * d];
            let mut mx = vec![f32::NEG_INFINITY; rows];
            let mut den = vec![0f32; rows];
            let mut s = vec![0f32; rows * ATTN_K_CHUNK];
            for (k0, k1) in ranges {
                let n = k1 - k0;
                let kp = unsafe { k.data.as_ptr().add((b * lk + k0) * ts + hh * d) };
                let vp = unsafe { v.data.as_ptr().add((b * lk + k0) * ts + hh * d) };
                // s = q · kᵀ
                unsafe {
                    matmul(
                        rows,
                        n,
                        d,
                        s.as_mut_ptr(),
                        n,
                        false,
                        qp,
                        ts,
                        1,
                        kp,
                        1,
                        ts,
                        Parallelism::None,
                    )
                };
                for r in 0..rows {
                    let sr = &mut s[r * n..(r + 1) * n];
                    // Plain slice loops so each pass vectorises.
                    sr.iter_mut().for_each(|x| *x *= scale);
                    if let Some(kb) = bias.filter(|kb| kb.on_row(q0 + r)) {
                        let from = kb.from_key.saturating_sub(k0).min(n);
                        sr[from..].iter_mut().for_each(|x| *x += kb.bias);
                    }
                    let m = sr.iter().fold(mx[r], |a, &b| a.max(b));
                    let corr = fast_exp(mx[r] - m);
                    sr.iter_mut().for_each(|x| *x = fast_exp(*x - m));
                    let sum: f32 = sr.iter().sum();
                    den[r] = den[r] * corr + sum;
                    mx[r] = m;
                    if corr != 1.0 {
                        acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= corr);
                    }
                }
                // acc += p · v
                unsafe {
                    matmul(
                        rows,
                        d,
                        n,
                        acc.as_mut_ptr(),
                        d,
                        true,
                        s.as_ptr(),
                        n,
                        1,
                        vp,
                        ts,
                        1,
                        Parallelism::None,
                    )
                };
            }
            for r in 0..rows {
                // A row with no kept key (impossible for Jenga plans, which keep the diagonal)
                // yields zeros rather than NaN.
                let inv = if den[r] > 0.0 { 1.0 / den[r] } else { 0.0 };
                let dst = optr.at((b * lq + q0 + r) * ts + hh * d);
                for j in 0..d {
                    unsafe { *dst.add(j) = acc[r * d + j] * inv };
                }
            }
        })
    });
    out(o, &q.shape)
}
