//! Flow-matching sampler (UniPC or Euler) with classifier-free guidance, ProRes stages and step
//! skipping.
//!
//! One run = stages; stage s covers step indices `[start_s, end_s)` of one `steps`-long run, at
//! its own resolution, shift and token order, on its own time grid ([`Grid`]). A stage that
//! ends on another resolution (ProRes, Jenga §4.2) ends after the model call of its last step
//! `i`: `x̂0 = x_t − σ·v`, resize to the next grid, re-noise `x = (1 − σ')·x̂0 + σ'·ε` and
//! continue at step `i + 1` on the next grid, with the solver's history reset. Which σ and σ'
//! is the model family's convention ([`Renoise`]). Between two stages of one resolution
//! nothing is re-noised: the solver steps on to the next stage's grid (only the drop rate and
//! the shift change), as the official HunyuanVideo pipeline does at a 1.0 → 1.0 boundary.
//! [`step_plan`] says all of it per step before anything runs (`jenga inspect schedule`
//! prints it); the sampler and the skip schedule follow it.

use crate::noise;
use crate::resize::{resize, Interp};
use crate::solver::{to_x0, Grid, Solver, SolverKind};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_models::{Denoiser, ModelError, Result};
use jenga_tensor::{FusedOps, SolverOps};
use std::time::{Duration, Instant};

/// How a ProRes switch re-noises (both official conventions and ours). At the last step `i`
/// of stage s (grid `g`) to stage s+1 (grid `g'`):
/// - `Wan` (`jenga_wan.py` L218-L240): `x̂0 = x − g.σ[i]·v`, re-noise at `g.σ[i+1]`, then step
///   `i + 1` is fed `g'.t[i+1]` (the latent's noise level is the old grid's);
/// - `Hunyuan` (`pipeline_hunyuan_video_prores.py` L720-L735): re-shift first, `x̂0 = x −
///   g'.σ[i]·v`, re-noise at `g'.σ[i+1]`;
/// - `Consistent` (jenga-rs's own): `x̂0 = x − g.σ[i]·v`, re-noise at `g'.σ[i+1]`, so the
///   latent's noise level is the one the next grid expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renoise {
    Wan,
    Hunyuan,
    Consistent,
}

impl Renoise {
    pub fn name(self) -> &'static str {
        match self {
            Renoise::Wan => "wan",
            Renoise::Hunyuan => "hunyuan",
            Renoise::Consistent => "consistent",
        }
    }
}

impl std::str::FromStr for Renoise {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "wan" => Ok(Renoise::Wan),
            "hunyuan" => Ok(Renoise::Hunyuan),
            "consistent" => Ok(Renoise::Consistent),
            _ => Err(format!(
                "--prores-renoise {s}: expected wan, hunyuan or consistent"
            )),
        }
    }
}

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
    /// the first step on a new grid are always computed; the last step is not forced
    /// (`jenga_wan.py` with `--use_ret_step`: ret_steps 5, cutoff = N).
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
    pub solver: SolverKind,
    pub renoise: Renoise,
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
            solver: SolverKind::Euler,
            renoise: Renoise::Consistent,
        }
    }

    /// The time grid of stage s.
    pub fn grid(&self, s: usize) -> Grid {
        Grid::new(self.solver, self.steps, self.stages[s].shift)
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

/// A ProRes switch at the end of a step: the x̂0 and re-noise noise levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Switch {
    pub sigma_x0: f64,
    pub sigma_renoise: f64,
}

/// What the sampler does at one step, known before anything runs.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    pub stage: usize,
    /// The timestep fed to the model (0–1000).
    pub t: f64,
    /// σ the solver takes the latent at (its grid's) and steps it to.
    pub sigma: f64,
    pub sigma_next: f64,
    /// The noise level of the latent entering the step (differs from `sigma` right after a
    /// Wan-convention switch).
    pub sigma_latent: f64,
    /// The first step on a new resolution: computed, solver history reset.
    pub new_grid: bool,
    /// The step ends its stage with a resize (x̂0 + re-noise instead of a solver step).
    pub switch: Option<Switch>,
}

/// Whether stage s+1 runs on another spatial size than stage s.
fn resizes(spec: &SampleSpec, s: usize, patch: [usize; 3]) -> bool {
    spec.stage_size(s, patch) != spec.stage_size(s + 1, patch)
}

/// Every step of a run: stage, model time, noise levels, switches ([`Renoise`]).
pub fn step_plan(spec: &SampleSpec, patch: [usize; 3]) -> Vec<StepInfo> {
    let grids: Vec<Grid> = (0..spec.stages.len()).map(|s| spec.grid(s)).collect();
    let mut out = Vec::with_capacity(spec.steps);
    let mut latent_sigma = grids[0].sigmas[0];
    for s in 0..spec.stages.len() {
        let (start, end) = spec.stage_range(s);
        let g = &grids[s];
        let last_stage = s + 1 == spec.stages.len();
        for i in start..end {
            let new_grid = i == start && (s == 0 || resizes(spec, s - 1, patch));
            let ends = i + 1 == end && !last_stage;
            let switch = (ends && resizes(spec, s, patch)).then(|| {
                let gn = &grids[s + 1];
                match spec.renoise {
                    Renoise::Wan => Switch {
                        sigma_x0: g.sigmas[i],
                        sigma_renoise: g.sigmas[g.noise_index(i + 1)],
                    },
                    Renoise::Hunyuan => Switch {
                        sigma_x0: gn.sigmas[i],
                        sigma_renoise: gn.sigmas[gn.noise_index(i + 1)],
                    },
                    Renoise::Consistent => Switch {
                        sigma_x0: g.sigmas[i],
                        sigma_renoise: gn.sigmas[i + 1],
                    },
                }
            });
            // an equal-resolution boundary steps on to the next stage's grid
            let sigma_next = if ends {
                grids[s + 1].sigmas[i + 1]
            } else {
                g.sigmas[i + 1]
            };
            out.push(StepInfo {
                stage: s,
                t: g.t[i],
                sigma: g.sigmas[i],
                sigma_next,
                sigma_latent: latent_sigma,
                new_grid,
                switch,
            });
            latent_sigma = match switch {
                Some(sw) => sw.sigma_renoise,
                None => sigma_next,
            };
        }
    }
    out
}

/// Which steps run the transformer blocks, decided before any of them runs: the skip rules
/// depend only on the step index and the time embedding, never on the latent, so the count a
/// run will compute is known (and printed, and checked) up front. The first step on a new
/// resolution is computed (a residual from another grid cannot be reused), and TeaCache's
/// accumulator starts afresh there (`stage_start` in both references).
pub fn computed_schedule<B: FusedOps, M: Denoiser<B> + ?Sized>(
    be: &B,
    model: &M,
    spec: &SampleSpec,
) -> Result<Vec<bool>> {
    spec.validate().map_err(ModelError::Invalid)?;
    let plan = step_plan(spec, model.patch());
    let mut out = vec![false; spec.steps];
    let mut prev_e0: Option<B::Tensor> = None;
    let mut tea_acc = 0.0f64;
    for (i, info) in plan.iter().enumerate() {
        let first = info.new_grid;
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
                // the signal at the time the model is fed
                let e0 = model.skip_signal(be, info.t)?;
                let mut go = true;
                if let Some(p) = &prev_e0 {
                    if i >= *ret_steps && !first {
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
/// CFG combine and the solver updates are device ops); it comes to the host only at a ProRes
/// resize and at the end. `start_noise` replaces the seed's stage-0 noise.
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
    let mut draw = |stage: usize, n: usize| -> Result<Vec<f32>> {
        match (stage, start_noise) {
            (0, Some(x)) if x.len() == n => Ok(x.to_vec()),
            (0, Some(x)) => Err(ModelError::Invalid(format!(
                "start noise has {} values, stage 0 needs {n}",
                x.len()
            ))),
            // fresh noise per stage, derived from the seed and the stage index
            (s, _) => Ok(noise(spec.seed.wrapping_add(0x9e37_79b9 * s as u64), n)),
        }
    };
    sample_with_noise(be, model, cond, spec, policy, &mut draw, on_event)
}

/// [`sample`] with the noise of each stage from `draw(stage, len)` (stage 0: the start
/// latent; later stages: the re-noise at a resize).
#[allow(clippy::too_many_arguments)]
pub fn sample_with_noise<B: FusedOps + SolverOps, M: Denoiser<B> + ?Sized>(
    be: &B,
    model: &M,
    cond: &M::Cond,
    spec: &SampleSpec,
    policy: &dyn AttentionPolicy<B>,
    draw: &mut dyn FnMut(usize, usize) -> Result<Vec<f32>>,
    on_event: &mut dyn FnMut(Event),
) -> Result<SampleOutput> {
    spec.validate().map_err(ModelError::Invalid)?;
    let c = model.latent_channels();
    let patch = model.patch();
    let f = spec.frames;
    let (h0, w0) = spec.stage_size(0, patch);
    let x0 = draw(0, c * f * h0 * w0)?;
    let mut x = be.latent_upload(&x0, &[c, f, h0, w0])?;
    let batch = model.cond_batch(cond);
    let guidance = (batch == 2).then_some(spec.guidance);
    let (mut h, mut w) = (h0, w0);
    let mut dit_time = Duration::ZERO;
    let mut computed_steps = 0;
    let mut residual: Option<B::Tensor> = None;
    let schedule = computed_schedule(be, model, spec)?;
    let plan = step_plan(spec, patch);
    let mut solver = Solver::new(spec.solver);
    let t_start = Instant::now();
    let mut stage_geom = None;

    for s in 0..spec.stages.len() {
        let (start, end) = spec.stage_range(s);
        if s > 0 {
            if let Some(sw) = plan[start - 1].switch {
                // x holds x̂0 of the last step: resize, re-noise at the convention's σ'
                let (h2, w2) = spec.stage_size(s, patch);
                let up = resize(
                    &be.latent_download(&x)?,
                    (c, f, h, w),
                    (h2, w2),
                    spec.interp,
                );
                let eps = draw(s, up.len())?;
                let sg = sw.sigma_renoise as f32;
                let renoised: Vec<f32> = up
                    .iter()
                    .zip(&eps)
                    .map(|(a, e)| (1.0 - sg) * a + sg * e)
                    .collect();
                (h, w) = (h2, w2);
                x = be.latent_upload(&renoised, &[c, f, h, w])?;
                residual = None; // a residual from another grid cannot be reused
                solver.reset();
                stage_geom = None;
            }
        }
        let grid = model.grid(f, h, w)?;
        if stage_geom.is_none() {
            stage_geom = Some(model.stage(be, grid, policy.token_order(grid))?);
        }
        let stage = stage_geom.as_ref().expect("stage geometry was just built");
        on_event(Event::StageSwitch {
            stage: s,
            height: h,
            width: w,
            tokens: model.stage_tokens(stage),
        });

        for (i, info) in plan.iter().enumerate().take(end).skip(start) {
            let t0 = Instant::now();
            let xb = be.latent_input(&x, batch)?;
            let emb = model.embed(be, &xb, info.t, stage, cond)?;
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
                let out = model.blocks(be, &emb, cond, stage, policy, &actx)?;
                if !matches!(spec.skip, SkipRule::None) {
                    residual = Some(be.axpby(1.0, &out, -1.0, model.hidden(&emb))?);
                }
                computed_steps += 1;
                out
            } else {
                // computed_schedule computes the first step on every grid
                let r = residual.as_ref().expect("skip only after a computed step");
                be.add_gated(model.hidden(&emb), r, None)?
            };
            let v = model.head(be, &hidden, &emb, stage)?;
            // v = u + g·(c − u) under CFG; a solver step, or x̂0 = x_t − σ·v (the clean
            // estimate carried to the next resolution) at a switch
            match info.switch {
                Some(sw) => to_x0(be, &mut x, &v, guidance, sw.sigma_x0)?,
                None => solver.step(
                    be,
                    &mut x,
                    &v,
                    guidance,
                    info.sigma,
                    info.sigma_next,
                    i,
                    spec.steps,
                )?,
            }
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
