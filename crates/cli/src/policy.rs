//! `--policy` / presets → an attention policy object.

use crate::args::JengaArgs;
use anyhow::{Context, Result};
use jenga_carve::jenga::{JengaConfig, JengaPolicy, TextAmp};
use jenga_carve::{CurveKind, DropMode};
use jenga_pipeline::{JengaSettings, SampleSpec};

/// The Jenga policy for a resolved run. Drop rates follow the Wan scripts (warm-up ramp, dense
/// at ≤ 0.25): with one stage and two rates the switch is at the middle step (25 of 50);
/// with several stages there is one rate per stage.
pub fn jenga(
    settings: &JengaSettings,
    spec: &SampleSpec,
    j: &JengaArgs,
    patch: [usize; 3],
) -> Result<JengaPolicy> {
    let curve: CurveKind = j
        .curve
        .parse()
        .map_err(|e: jenga_carve::curve::UnknownCurve| {
            anyhow::anyhow!("--curve {}: expected sliced or gilbert3d", e.0)
        })?;
    let p = settings.p_remain_rates[0];
    let mut cfg = JengaConfig::wan(&settings.sa_drop_rates, p);
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
