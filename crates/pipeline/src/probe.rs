//! Measuring a policy while it runs: attention recall (softmax mass inside the kept blocks,
//! on sampled query rows, against dense attention) and kept-block pictures. A wrapper policy,
//! so neither the model nor the measured policy changes.

use jenga_carve::{AttentionPolicy, AttnCtx, PolicyKernels};
use jenga_tensor::{AttnPlan, Backend, KeyBias, Result, TensorMeta};
use std::sync::Mutex;

/// One recall measurement: mean over sampled rows and heads of one attention call.
#[derive(Clone, Debug)]
pub struct RecallSample {
    pub step: usize,
    pub stage: usize,
    pub layer: usize,
    pub recall: f64,
}

/// A kept-block mask captured for a picture: `[q_blocks, k_blocks]` of one head.
#[derive(Clone, Debug)]
pub struct MaskCapture {
    pub step: usize,
    pub layer: usize,
    pub head: usize,
    pub q_blocks: usize,
    pub k_blocks: usize,
    pub keep: Vec<bool>,
}

pub struct Probe<'a, B: Backend> {
    pub inner: &'a dyn AttentionPolicy<B>,
    /// Measure recall on calls whose step is a multiple of this (0 = never).
    pub recall_every_steps: usize,
    /// Query rows sampled per (batch, head).
    pub rows: usize,
    /// (step, layer, head) triples whose masks are kept for pictures.
    pub capture: Vec<(usize, usize, usize)>,
    pub recalls: Mutex<Vec<RecallSample>>,
    pub masks: Mutex<Vec<MaskCapture>>,
    /// Seconds spent measuring (downloads + host recall), to subtract from timings.
    pub overhead: Mutex<f64>,
}

impl<'a, B: Backend> Probe<'a, B> {
    pub fn new(inner: &'a dyn AttentionPolicy<B>, recall_every_steps: usize) -> Self {
        Probe {
            inner,
            recall_every_steps,
            rows: 32,
            capture: Vec::new(),
            recalls: Mutex::new(Vec::new()),
            masks: Mutex::new(Vec::new()),
            overhead: Mutex::new(0.0),
        }
    }

    /// Mean recall over all measured calls.
    pub fn mean_recall(&self) -> Option<f64> {
        let r = self.recalls.lock().expect("probe lock");
        (!r.is_empty()).then(|| r.iter().map(|s| s.recall).sum::<f64>() / r.len() as f64)
    }
}

/// Softmax mass that the kept key blocks hold, for `rows` evenly spaced query rows of every
/// (batch, head): exact dense scores on the host (f64), then summed over kept blocks.
pub fn recall(
    q: &[f32],
    k: &[f32],
    shape: [usize; 4],
    lk: usize,
    plan: &AttnPlan,
    rows: usize,
    bias: Option<KeyBias>,
) -> f64 {
    let [b, lq, h, d] = shape;
    let AttnPlan::Sparse(p) = plan else {
        return 1.0;
    };
    let scale = 1.0 / (d as f64).sqrt();
    let rows = rows.clamp(1, lq);
    let (mut total, mut n) = (0.0, 0usize);
    let mut s = vec![0f64; lk];
    for bi in 0..b {
        for hi in 0..h {
            for r in 0..rows {
                let i = r * lq / rows;
                let qi = &q[((bi * lq + i) * h + hi) * d..][..d];
                let row_bias = bias.filter(|kb| kb.on_row(i));
                let mut m = f64::NEG_INFINITY;
                for (j, sj) in s.iter_mut().enumerate() {
                    let kj = &k[((bi * lk + j) * h + hi) * d..][..d];
                    let mut v = qi
                        .iter()
                        .zip(kj)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale;
                    if let Some(kb) = row_bias {
                        if j >= kb.from_key {
                            v += kb.bias as f64;
                        }
                    }
                    *sj = v;
                    m = m.max(v);
                }
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                let kept: f64 = p
                    .row(bi, hi, i / p.block)
                    .iter()
                    .map(|&kb| {
                        let (a, e) = (kb as usize * p.block, ((kb as usize + 1) * p.block).min(lk));
                        s[a..e].iter().map(|v| (v - m).exp()).sum::<f64>()
                    })
                    .sum();
                total += kept / z;
                n += 1;
            }
        }
    }
    total / n.max(1) as f64
}

impl<B: PolicyKernels> AttentionPolicy<B> for Probe<'_, B> {
    fn delegate(&self) -> Option<&dyn AttentionPolicy<B>> {
        Some(self.inner)
    }
    fn on_plan(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        ctx: &AttnCtx,
        make: &mut dyn FnMut() -> Result<AttnPlan>,
    ) -> Result<AttnPlan> {
        let plan = make()?;
        self.observe(be, q, k, ctx, plan)
    }
}

impl<B: PolicyKernels> Probe<'_, B> {
    /// Recall and mask captures of one call's plan; the plan itself is returned unchanged
    /// (a device-built plan keeps running on the device, a host copy is read only here).
    fn observe(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        ctx: &AttnCtx,
        plan: AttnPlan,
    ) -> Result<AttnPlan> {
        if matches!(plan, AttnPlan::Dense) {
            return Ok(plan);
        }
        let due = self.recall_every_steps > 0 && ctx.step.is_multiple_of(self.recall_every_steps);
        let captured = self
            .capture
            .iter()
            .any(|&(step, layer, _)| step == ctx.step && layer == ctx.layer);
        if !due && !captured {
            return Ok(plan);
        }
        let t = std::time::Instant::now();
        let host = be.host_plan(&plan)?;
        let AttnPlan::Sparse(p) = &host else {
            return Ok(plan);
        };
        if due {
            let s = q.shape();
            let shape = [s[0], s[1], s[2], s[3]];
            let r = recall(
                &be.download(q)?,
                &be.download(k)?,
                shape,
                k.shape()[1],
                &host,
                self.rows,
                self.inner.key_bias(ctx),
            );
            self.recalls.lock().expect("probe lock").push(RecallSample {
                step: ctx.step,
                stage: ctx.stage,
                layer: ctx.layer,
                recall: r,
            });
        }
        for &(step, layer, head) in &self.capture {
            if step == ctx.step && layer == ctx.layer && head < p.heads {
                let mut keep = vec![false; p.q_blocks * p.k_blocks];
                for qb in 0..p.q_blocks {
                    for &kb in p.row(0, head, qb) {
                        keep[qb * p.k_blocks + kb as usize] = true;
                    }
                }
                self.masks.lock().expect("probe lock").push(MaskCapture {
                    step,
                    layer,
                    head,
                    q_blocks: p.q_blocks,
                    k_blocks: p.k_blocks,
                    keep,
                });
            }
        }
        *self.overhead.lock().expect("probe lock") += t.elapsed().as_secs_f64();
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jenga_tensor::BlockPlan;
    use std::sync::Arc;

    #[test]
    fn recall_is_one_for_full_plans_and_the_kept_mass_otherwise() {
        // one head, 256 keys in 2 blocks; the query matches block 0's keys strongly
        let (lq, lk, d) = (128, 256, 4);
        let q: Vec<f32> = (0..lq * d)
            .map(|i| if i % d == 0 { 1.0 } else { 0.0 })
            .collect();
        let k: Vec<f32> = (0..lk * d)
            .map(|i| if i % d == 0 && i / d < 128 { 4.0 } else { 0.0 })
            .collect();
        let full = AttnPlan::Sparse(Arc::new(BlockPlan::full(1, 1, 128, lq, lk)));
        assert!((recall(&q, &k, [1, lq, 1, d], lk, &full, 8, None) - 1.0).abs() < 1e-12);
        let only0 = AttnPlan::Sparse(Arc::new(
            BlockPlan::from_mask(1, 1, 128, 1, 2, &[true, false]).unwrap(),
        ));
        // scores: block 0 → 4/√4 = 2, block 1 → 0; mass of block 0 = e²/(e²+1)
        let want = (2f64).exp() / ((2f64).exp() + 1.0);
        assert!((recall(&q, &k, [1, lq, 1, d], lk, &only0, 8, None) - want).abs() < 1e-9);
        assert_eq!(
            recall(&q, &k, [1, lq, 1, d], lk, &AttnPlan::Dense, 8, None),
            1.0
        );
    }
}
