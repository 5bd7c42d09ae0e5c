//! Flow-matching Euler sampler with classifier-free guidance, ProRes stages and step skipping.
//!
//! One run = stages; stage s covers step indices `[start_s, end_s)` of one `steps`-long
//! schedule, at its own resolution, shift and token order. Between stages (ProRes, Jenga §4.2):
//! `x̂0 = x_t − σ_t·v`, resize to the next grid, re-noise `x = (1 − σ')·x̂0 + σ'·ε` at the next
//! stage's sigma for the same step index, and continue.

use crate::resize::{resize, Interp};
use crate::{flow_sigmas, noise};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_models::{Denoiser, ModelError, Result};
use jenga_tensor::{FusedOps, SolverOps};
use std::time::{Duration, Instant};

/// One ProRes stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StagePlan {
    /// Spatial scale of this stage's grid relative to the full size (1.0 = full).
    pub res_rate: f64,
    /// First step index of the next stage (the last stage ends at `steps`).
    pub end_step: usize,
    /// Scheduler shift used while in this stage.
    pub shift: f64,
}

/// Which steps run the transformer blocks; skipped steps reuse the last residual
/// (blocks' output − input) before the head, as TeaCache / the paper do.
#[derive(Clone, Debug, PartialEq)]
pub enum SkipRule {
    None,
    /// `compute[i]` for every step (the paper's static, case-agnostic schedule).
    Static(Vec<bool>),
    /// TeaCache: accumulate the rescaled relative L1 change of the time projection `e0`
    /// between steps; recompute once it exceeds `threshold`. The first `ret_steps` steps and
    /// the last step are always computed.
    TeaCache {
        threshold: f64,
        coefficients: Vec<f64>,
        ret_steps: usize,
    },
}

/// Wan2.1-T2V-1.3B TeaCache rescale polynomial (`use_ret_step`), highest power first.
pub const TEACACHE_WAN_1_3B: [f64; 5] = jenga_models::wan::TEACACHE_T2V_1_3B;

/// The paper's static schedule shape: dense at the start and end, sparse in the middle.
/// For 50 steps it keeps 23 (as TeaCache-fast): the first 8, the last 5, and 10 evenly spaced
/// in between. Other step counts scale the same proportions.
pub fn static_skip_schedule(steps: usize, keep: usize) -> Vec<bool> {
    let keep = keep.clamp(2.min(steps), steps);
    let head = (keep * 8).div_ceil(23).min(keep);
    let tail = ((keep * 5) / 23).min(keep - head);
    let mid = keep - head - tail;
    let mut c = vec![false; steps];
    c.iter_mut().take(head).for_each(|v| *v = true);
    c.iter_mut().rev().take(tail).for_each(|v| *v = true);
    let (a, b) = (head, steps - tail);
    for j in 0..mid {
        // centre of the j-th of `mid` equal slices of [a, b)
        let i = a + ((2 * j + 1) * (b - a)) / (2 * mid);
        c[i.min(steps - 1)] = true;
    }
    c
}

#[derive(Clone, Debug)]
pub struct SampleSpec {
    /// Full-size video (model units: pixels for tiny-wan, latents for real models).
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    pub stages: Vec<StagePlan>,
    pub interp: Interp,
    pub skip: SkipRule,
}

impl SampleSpec {
    /// One full-resolution stage with `shift`.
    pub fn single(
        frames: usize,
        height: usize,
        width: usize,
        steps: usize,
        shift: f64,
        guidance: f32,
        seed: u64,
    ) -> Self {
        SampleSpec {
            frames,
            height,
            width,
            steps,
            guidance,
            seed,
            stages: vec![StagePlan {
                res_rate: 1.0,
                end_step: steps,
                shift,
            }],
            interp: Interp::Trilinear,
            skip: SkipRule::None,
        }
    }

    /// Stage s spatial size, rounded down to whole patches (never below one patch).
    pub fn stage_size(&self, s: usize, patch: [usize; 3]) -> (usize, usize) {
        let r = self.stages[s].res_rate;
        let round = |v: usize, p: usize| (((v as f64 * r) as usize) / p).max(1) * p;
        (round(self.height, patch[1]), round(self.width, patch[2]))
    }

    /// Step range of stage s.
    pub fn stage_range(&self, s: usize) -> (usize, usize) {
        let start = if s == 0 {
            0
        } else {
            self.stages[s - 1].end_step
        };
        (start, self.stages[s].end_step)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.steps == 0 {
            return Err("--steps must be at least 1".into());
        }
        if self.stages.is_empty() {
            return Err("at least one stage is needed".into());
        }
        let mut prev = 0;
        for (i, st) in self.stages.iter().enumerate() {
            if !(st.res_rate > 0.0 && st.res_rate <= 1.0) {
                return Err(format!(
                    "stage {i}: res rate {} must be in (0, 1]",
                    st.res_rate
                ));
            }
            if st.end_step <= prev && !(i == 0 && st.end_step == 0 && self.steps == 0) {
                return Err(format!(
                    "stage {i}: step rates must increase (stage ends at step {} after {prev})",
                    st.end_step
                ));
            }
            if st.shift <= 0.0 {
                return Err(format!("stage {i}: shift {} must be positive", st.shift));
            }
            prev = st.end_step;
        }
        if prev != self.steps {
            return Err(format!("the last stage must end at step {} (ends at {prev}); the last step rate must be 1.0", self.steps));
        }
        if let SkipRule::Static(c) = &self.skip {
            if c.len() != self.steps {
                return Err(format!(
                    "static skip schedule has {} entries for {} steps",
                    c.len(),
                    self.steps
                ));
            }
        }
        Ok(())
    }
}

/// Which steps run the transformer blocks, decided before any of them runs: the skip rules
/// depend only on the step index and the time embedding, never on the latent, so the count a
/// run will compute is known (and printed, and checked) up front. Every stage's first step is
/// computed (a residual from another grid cannot be reused), and TeaCache's accumulator starts
/// afresh at each stage.
pub fn computed_schedule<B: FusedOps, M: Denoiser<B> + ?Sized>(
    be: &B,
    model: &M,
    spec: &SampleSpec,
) -> Result<Vec<bool>> {
    spec.validate().map_err(ModelError::Invalid)?;
    let mut out = vec![false; spec.steps];
    for s in 0..spec.stages.len() {
        let (start, end) = spec.stage_range(s);
        let sig = flow_sigmas(spec.steps, spec.stages[s].shift);
        let mut prev_e0: Option<B::Tensor> = None;
        let mut tea_acc = 0.0f64;
        for i in start..end {
            let first = i == start;
            out[i] = match &spec.skip {
                SkipRule::None => true,
                SkipRule::Static(cm) => cm[i] || first,
                SkipRule::TeaCache {
                    threshold,
                    coefficients,
                    ret_steps,
                } => {
                    // An empty list takes the model's own polynomial.
                    let own;
                    let coefficients = if coefficients.is_empty() {
                        own = model.teacache_coefficients().ok_or_else(|| {
                            ModelError::Invalid(
                                "--skip teacache: this model has no TeaCache coefficients".into(),
                            )
                        })?;
                        &own
                    } else {
                        coefficients
                    };
                    let e0 = model.skip_signal(be, sig[i] * 1000.0)?;
                    let mut go = true;
                    if let Some(p) = &prev_e0 {
                        if i >= *ret_steps && i + 1 < spec.steps && !first {
                            let diff = be.axpby(1.0, &e0, -1.0, p)?;
                            let rel = (be.mean_abs(&diff)? / be.mean_abs(p)?.max(1e-12)) as f64;
                            tea_acc += coefficients.iter().fold(0.0, |acc, k| acc * rel + k);
                            go = tea_acc >= *threshold;
                        }
                    }
                    if go {
                        tea_acc = 0.0;
                    }
                    prev_e0 = Some(e0);
                    go
                }
            };
        }
    }
    Ok(out)
}

/// Progress events (the CLI draws a bar from them).
#[derive(Clone, Debug)]
pub enum Event {
    Step {
        step: usize,
        total: usize,
        stage: usize,
        computed: bool,
        elapsed: Duration,
    },
    StageSwitch {
        stage: usize,
        height: usize,
        width: usize,
        tokens: usize,
    },
}

pub struct SampleOutput {
    /// Final video `[C, F, H, W]`.
    pub video: Vec<f32>,
    pub shape: [usize; 4],
    /// Time spent in transformer forwards (synchronised).
    pub dit_time: Duration,
    /// Steps whose blocks ran / total steps.
    pub computed_steps: usize,
}

/// Run the sampler. `cond` is the model's embedded conditioning (Wan: the text context
/// `[1 or 2, text_len, D]` through `embed_text`); with a batch of 2, row 0 = conditional,
/// row 1 = unconditional, combined by CFG. The latent stays on the device between steps (the
/// CFG combine and the Euler update are device ops); it comes to the host only at a ProRes
/// stage switch (to be resized) and at the end.
#[allow(clippy::too_many_arguments)]
pub fn sample<B: FusedOps + SolverOps, M: Denoiser<B> + ?Sized>(
    be: &B,
    model: &M,
    cond: &M::Cond,
    spec: &SampleSpec,
    policy: &dyn AttentionPolicy<B>,
    start_noise: Option<&[f32]>,
    on_event: &mut dyn FnMut(Event),
) -> Result<SampleOutput> {
    spec.validate().map_err(ModelError::Invalid)?;
    let c = model.latent_channels();
    let patch = model.patch();
    let f = spec.frames;
    let (h0, w0) = spec.stage_size(0, patch);
    let n0 = c * f * h0 * w0;
    let x0: Vec<f32> = match start_noise {
        Some(n) if n.len() == n0 => n.to_vec(),
        Some(n) => {
            return Err(ModelError::Invalid(format!(
                "start noise has {} values, stage 0 needs {n0}",
                n.len()
            )))
        }
        None => noise(spec.seed, n0),
    };
    let mut x = be.latent_upload(&x0, &[c, f, h0, w0])?;
    let batch = model.cond_batch(cond);
    let guidance = (batch == 2).then_some(spec.guidance);
    let (mut h, mut w) = (h0, w0);
    let mut dit_time = Duration::ZERO;
    let mut computed_steps = 0;
    let mut residual: Option<B::Tensor> = None;
    let schedule = computed_schedule(be, model, spec)?;
    let t_start = Instant::now();

    for s in 0..spec.stages.len() {
        let (start, end) = spec.stage_range(s);
        let sig = flow_sigmas(spec.steps, spec.stages[s].shift);
        if s > 0 {
            // Fresh noise for the re-noise, derived from the seed and the stage index.
            let (h2, w2) = spec.stage_size(s, patch);
            let up = resize(
                &be.latent_download(&x)?,
                (c, f, h, w),
                (h2, w2),
                spec.interp,
            );
            let eps = noise(spec.seed.wrapping_add(0x9e37_79b9 * s as u64), up.len());
            let sg = sig[start] as f32;
            let renoised: Vec<f32> = up
                .iter()
                .zip(&eps)
                .map(|(a, e)| (1.0 - sg) * a + sg * e)
                .collect();
            (h, w) = (h2, w2);
            x = be.latent_upload(&renoised, &[c, f, h, w])?;
            residual = None; // a residual from another grid cannot be reused
        }
        let grid = model.grid(f, h, w)?;
        let stage = model.stage(be, grid, policy.token_order(grid))?;
        on_event(Event::StageSwitch {
            stage: s,
            height: h,
            width: w,
            tokens: model.stage_tokens(&stage),
        });

        for i in start..end {
            let t0 = Instant::now();
            let xb = be.latent_input(&x, batch)?;
            let tval = sig[i] * 1000.0;
            let emb = model.embed(be, &xb, tval, &stage, cond)?;
            let compute = schedule[i];
            let actx = AttnCtx {
                step: i,
                num_steps: spec.steps,
                layer: 0,
                num_layers: model.num_layers(),
                stage: s,
                grid,
                cond_tokens: model.cond_tokens(cond),
            };
            let hidden = if compute {
                let out = model.blocks(be, &emb, cond, &stage, policy, &actx)?;
                if !matches!(spec.skip, SkipRule::None) {
                    residual = Some(be.axpby(1.0, &out, -1.0, model.hidden(&emb))?);
                }
                computed_steps += 1;
                out
            } else {
                // computed_schedule computes every stage's first step
                let r = residual.as_ref().expect("skip only after a computed step");
                be.add_gated(model.hidden(&emb), r, None)?
            };
            let v = model.head(be, &hidden, &emb, &stage)?;
            let last_of_stage = i + 1 == end && s + 1 < spec.stages.len();
            // Euler step x += dt·v, or x̂0 = x_t − σ_t·v (the clean estimate carried to the next
            // resolution) at a stage end; v = u + g·(c − u) under CFG.
            let dt = match last_of_stage {
                true => -sig[i] as f32,
                false => (sig[i + 1] - sig[i]) as f32,
            };
            be.latent_step(&mut x, &v, guidance, dt)?;
            // The step's time is its device time: wait for it (no data moves).
            be.synchronize()?;
            dit_time += t0.elapsed();
            on_event(Event::Step {
                step: i,
                total: spec.steps,
                stage: s,
                computed: compute,
                elapsed: t_start.elapsed(),
            });
        }
    }
    Ok(SampleOutput {
        video: be.latent_download(&x)?,
        shape: [c, f, h, w],
        dit_time,
        computed_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_schedule_keeps_23_of_50_dense_at_both_ends() {
        let c = static_skip_schedule(50, 23);
        assert_eq!(c.iter().filter(|&&v| v).count(), 23);
        assert!(c[..8].iter().all(|&v| v) && c[45..].iter().all(|&v| v));
        // the middle is sparse: no two kept middle steps are adjacent
        let mid: Vec<usize> = (8..45).filter(|&i| c[i]).collect();
        assert_eq!(mid.len(), 10);
        assert!(mid.windows(2).all(|w| w[1] - w[0] >= 3));
        // proportional for other lengths, never more than asked
        for (n, k) in [(30, 14), (10, 5), (4, 4), (50, 50)] {
            let c = static_skip_schedule(n, k);
            assert_eq!(c.iter().filter(|&&v| v).count(), k, "{n} {k}");
            assert!(c[0] && c[n - 1]);
        }
    }
}
