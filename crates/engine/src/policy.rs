//! `policy: dense|jenga|svg|draft` / presets → an attention policy object, built before any
//! compute so option mistakes surface first.

use crate::plan::Plan;
use crate::request::{DraftOptions, PolicyOptions, SvgOptions};
use anyhow::{Context, Result};
use jenga_carve::jenga::{JengaConfig, JengaPolicy, TextAmp};
use jenga_carve::PolicyKernels;
use jenga_carve::{
    AttentionPolicy, CurveKind, Dense, DraftConfig, DraftPolicy, DropMode, SvgConfig, SvgPolicy,
};
use jenga_pipeline::{JengaSettings, PresetFamily, SampleSpec};

/// The Jenga policy for a resolved run. Drop rates follow the Wan scripts (warm-up ramp, dense
/// at ≤ 0.25): with one stage and two rates the switch is at the middle step (25 of 50);
/// with several stages there is one rate per stage.
pub fn jenga(
    settings: &JengaSettings,
    spec: &SampleSpec,
    j: &PolicyOptions,
    patch: [usize; 3],
    family: PresetFamily,
) -> Result<JengaPolicy> {
    let hunyuan = family == PresetFamily::HunyuanVideo;
    let curve: CurveKind = match j.curve.as_str() {
        // the official scripts': Wan slices frames, HunyuanVideo takes the 3D gilbert curve
        "auto" if hunyuan => CurveKind::Gilbert3d,
        "auto" => CurveKind::Sliced,
        c => c.parse().map_err(|e: jenga_carve::curve::UnknownCurve| {
            anyhow::anyhow!("--curve {}: expected sliced, gilbert3d or auto", e.0)
        })?,
    };
    let p = settings.p_remain_rates[0];
    let mut cfg = JengaConfig::wan(&settings.sa_drop_rates, p);
    if hunyuan {
        // one rate per stage, no warm-up ramp, dense only at 0, no first-frame square
        cfg.schedule = jenga_carve::Schedule::hunyuan(&settings.sa_drop_rates, p);
        cfg.first_frame = jenga_carve::FirstFrame::Off;
    }
    cfg.curve = curve;
    cfg.block = j.block;
    cfg.schedule.p_remain = settings.p_remain_rates.clone();
    cfg.schedule.mode = if spec.stages.len() > 1 || settings.sa_drop_rates.len() == 1 {
        DropMode::ByStage
    } else {
        DropMode::ByStep {
            step_ends: vec![spec.steps / 2],
        }
    };
    // N_s / N_S per stage, for the text-attention amplifier (joint-attention models only).
    let full = (spec.height / patch[1]) * (spec.width / patch[2]);
    let ratios = (0..spec.stages.len())
        .map(|s| {
            let (h, w) = spec.stage_size(s, patch);
            (h / patch[1] * (w / patch[2])) as f64 / full as f64
        })
        .collect();
    cfg.text_amp = TextAmp {
        rho: j.text_amp_rho,
        stage_token_ratio: ratios,
        first_stage_only: true,
    };
    JengaPolicy::new(cfg).context("jenga policy")
}

pub use crate::plan::{check_name, POLICIES};

impl SvgOptions {
    pub fn config(&self, block: usize, seed: u64) -> Result<SvgConfig> {
        let s = self.svg_sparsity;
        if !(s > 0.0 && s <= 1.0) {
            anyhow::bail!("--svg-sparsity {s}: must be in (0, 1]");
        }
        if self.svg_sampled_rows == 0 {
            anyhow::bail!("--svg-sampled-rows must be at least 1");
        }
        for (flag, v) in [
            ("--svg-first-times-fp", self.svg_first_times_fp),
            ("--svg-first-layers-fp", self.svg_first_layers_fp),
        ] {
            if !(0.0..=1.0).contains(&v) {
                anyhow::bail!("{flag} {v}: must be in [0, 1]");
            }
        }
        let cfg = SvgConfig {
            block,
            sparsity: self.svg_sparsity,
            num_sampled_rows: self.svg_sampled_rows,
            first_times_fp: self.svg_first_times_fp,
            first_layers_fp: self.svg_first_layers_fp,
            seed,
            ..SvgConfig::default()
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("--svg-* flags: {e}"))?;
        Ok(cfg)
    }
}

impl DraftOptions {
    /// DraftAttention settings for a run; the dense warm-up steps come from the run's first
    /// stage sigma schedule.
    pub fn config(&self, block: usize, spec: &SampleSpec) -> Result<DraftConfig> {
        let (pool_h, pool_w) = self
            .draft_pool
            .split_once('x')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .filter(|&(a, b): &(usize, usize)| a > 0 && b > 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--draft-pool {}: expected ROWSxCOLS of positive numbers, e.g. 8x16",
                    self.draft_pool
                )
            })?;
        let s = self.draft_sparsity;
        if !(0.0..1.0).contains(&s) {
            anyhow::bail!("--draft-sparsity {s}: must be in [0, 1)");
        }
        // the first stage's grid (the solver's: UniPC starts at 0.999)
        let mut sig = spec.grid(0).sigmas;
        sig.truncate(spec.steps);
        let cfg = DraftConfig {
            pool_h,
            pool_w,
            sparsity: self.draft_sparsity,
            block,
            dense_layers: self.draft_dense_layers,
            dense_steps: DraftConfig::dense_steps_from_sigmas(&sig, self.draft_dense_timestep),
            min_blocks_per_row: self.draft_min_blocks,
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("--draft-* flags: {e}"))?;
        Ok(cfg)
    }
}

/// Any of the engine's attention policies, behind one type so callers pick at run time.
pub enum Policy {
    Dense(Dense),
    Jenga(Box<JengaPolicy>),
    Svg(Box<SvgPolicy>),
    Draft(Box<DraftPolicy>),
}

impl Policy {
    /// One line of the settings that matter, for reports.
    pub fn settings(&self) -> String {
        match self {
            Policy::Dense(_) => "full attention".into(),
            Policy::Jenga(p) => {
                let c = p.config();
                format!(
                    "drop {:?}, p {:?}, curve {}, m {}",
                    c.schedule.drop_rates, c.schedule.p_remain, c.curve, c.block
                )
            }
            Policy::Svg(p) => {
                let c = p.config();
                format!(
                    "sparsity {}, {} rows, dense first {} of steps / {} of layers, m {}",
                    c.sparsity, c.num_sampled_rows, c.first_times_fp, c.first_layers_fp, c.block
                )
            }
            Policy::Draft(p) => {
                let c = p.config();
                format!(
                    "pool {}x{}, sparsity {}, dense first {} steps / {} layers, m {}",
                    c.pool_h, c.pool_w, c.sparsity, c.dense_steps, c.dense_layers, c.block
                )
            }
        }
    }

    /// What the policy chose on its own, for reports (SVG head patterns, Draft top-ups).
    pub fn choices(&self) -> Option<String> {
        match self {
            Policy::Svg(p) => {
                let (s, t) = p.pattern_counts();
                let n = (s + t).max(1) as f64;
                Some(format!(
                    "heads: {:.0}% spatial, {:.0}% temporal",
                    100.0 * s as f64 / n,
                    100.0 * t as f64 / n
                ))
            }
            Policy::Draft(p) => {
                let (t, n) = p.topped_rows();
                Some(format!(
                    "{:.1}% of draft rows empty under the global threshold (topped up)",
                    100.0 * t as f64 / n.max(1) as f64
                ))
            }
            _ => None,
        }
    }
}

impl<B: PolicyKernels> AttentionPolicy<B> for Policy {
    fn delegate(&self) -> Option<&dyn AttentionPolicy<B>> {
        Some(match self {
            Policy::Dense(p) => p,
            Policy::Jenga(p) => p.as_ref(),
            Policy::Svg(p) => p.as_ref(),
            Policy::Draft(p) => p.as_ref(),
        })
    }
}

/// The policy a resolved run asks for (`plan.policy`), built before any compute so flag
/// mistakes surface first.
pub fn build(plan: &Plan, j: &PolicyOptions, patch: [usize; 3]) -> Result<Policy> {
    check_name(&plan.policy)?;
    if j.block == 0 {
        anyhow::bail!("--block must be at least 1");
    }
    Ok(match plan.policy.as_str() {
        "jenga" => {
            let settings = match &plan.jenga {
                Some(s) => s.clone(),
                None => JengaSettings::attention_only(plan.spec.stages[0].shift),
            };
            Policy::Jenga(Box::new(jenga(
                &settings,
                &plan.spec,
                j,
                patch,
                plan.family.presets,
            )?))
        }
        "svg" => Policy::Svg(Box::new(
            SvgPolicy::new(j.svg.config(j.block, plan.spec.seed)?).context("svg policy")?,
        )),
        "draft" => Policy::Draft(Box::new(
            DraftPolicy::new(j.draft.config(j.block, &plan.spec)?).context("draft policy")?,
        )),
        _ => Policy::Dense(Dense),
    })
}
