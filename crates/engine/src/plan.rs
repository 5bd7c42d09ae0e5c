//! A request resolved against the model's defaults: the sampler's spec, the policy's name and
//! the Jenga settings, every value checked before anything loads.

use crate::request::{GenerateRequest, PolicyOptions};
use crate::source::Source;
use anyhow::{bail, Result};
use jenga_pipeline::{static_skip_schedule, JengaSettings, PresetSkip, SampleSpec, SkipRule};

/// Resolved generation settings (flags over model defaults), validated before any compute.
pub struct Plan {
    pub spec: SampleSpec,
    pub prompt: String,
    pub negative: String,
    /// `dense`, `jenga`, `svg` or `draft` (`POLICIES`).
    pub policy: String,
    /// Jenga settings when a preset or Jenga flag was given.
    pub jenga: Option<JengaSettings>,
}

impl Plan {
    /// The run in one phrase, for report headers: `MODEL (F×H×W, N steps, shift S, guidance G,
    /// seed S, prompt "…")`.
    pub fn describe(&self, model: &str) -> String {
        let s = &self.spec;
        format!(
            "{model} ({}×{}×{}, {} steps, shift {}, guidance {}, seed {}, prompt \"{}\")",
            s.frames,
            s.height,
            s.width,
            s.steps,
            s.stages[0].shift,
            s.guidance,
            s.seed,
            self.prompt
        )
    }
}

/// Preset + explicit flags → settings (explicit flags win). `None` when no Jenga flag is set.
pub fn resolve_jenga(j: &PolicyOptions, base_shift: f64) -> Result<Option<JengaSettings>> {
    let any_flag = j.sa_drop_rates.is_some()
        || j.p_remain_rates.is_some()
        || j.res_rate_list.is_some()
        || j.step_rate_list.is_some()
        || j.scheduler_shift_list.is_some();
    let mut s = match &j.preset {
        Some(p) => JengaSettings::preset(p, base_shift).map_err(anyhow::Error::msg)?,
        None if any_flag || j.policy.as_deref() == Some("jenga") => {
            JengaSettings::attention_only(base_shift)
        }
        None => return Ok(None),
    };
    if let Some(v) = &j.sa_drop_rates {
        s.sa_drop_rates = v.clone();
    }
    if let Some(v) = &j.p_remain_rates {
        s.p_remain_rates = v.clone();
    }
    if let Some(v) = &j.res_rate_list {
        s.res_rate_list = v.clone();
        // a user-given stage list without shifts keeps the base shift for every stage
        if j.scheduler_shift_list.is_none() && j.preset.is_none() {
            s.scheduler_shift_list = vec![base_shift; v.len()];
        }
    }
    if let Some(v) = &j.step_rate_list {
        s.step_rate_list = v.clone();
    }
    if let Some(v) = &j.scheduler_shift_list {
        s.scheduler_shift_list = v.clone();
    }
    s.validate().map_err(anyhow::Error::msg)?;
    Ok(Some(s))
}

/// `--skip` (or the preset's) → the sampler's rule.
fn skip_rule(
    j: &PolicyOptions,
    settings: Option<&JengaSettings>,
    steps: usize,
) -> Result<SkipRule> {
    let preset = settings.map_or(PresetSkip::None, |s| s.skip);
    let which = match (&j.skip, preset) {
        (Some(s), _) => s.as_str(),
        (None, PresetSkip::None) => "none",
        (None, PresetSkip::Static { .. }) => "static",
        (None, PresetSkip::TeaCache { .. }) => "teacache",
    };
    // Explicit --skip-keep / --teacache-thresh win over the preset's values.
    let keep = j.skip_keep.unwrap_or(match preset {
        PresetSkip::Static { keep_of_50 } => keep_of_50,
        _ => 23,
    });
    let thresh = j.teacache_thresh.unwrap_or(match preset {
        PresetSkip::TeaCache { threshold } => threshold,
        _ => 0.15,
    });
    Ok(match which {
        "none" => SkipRule::None,
        "static" => {
            if keep == 0 || keep > 50 {
                bail!("--skip-keep {keep}: must be in 1..=50");
            }
            let keep = ((keep * steps) as f64 / 50.0).round().max(2.0) as usize;
            SkipRule::Static(static_skip_schedule(steps, keep.min(steps)))
        }
        "teacache" => {
            if thresh.is_nan() || thresh < 0.0 {
                bail!("--teacache-thresh {thresh}: must be non-negative");
            }
            SkipRule::TeaCache {
                threshold: thresh,
                // the model's own polynomial (`Denoiser::teacache_coefficients`)
                coefficients: Vec::new(),
                ret_steps: (steps / 10).max(1),
            }
        }
        other => bail!("--skip {other}: expected none, static or teacache"),
    })
}

pub fn plan(r: &GenerateRequest, src: &Source) -> Result<Plan> {
    let cfg = src.config();
    // Every component a run needs must be there before anything loads.
    if let Source::Bundle(b) = src {
        if b.text.is_none() {
            bail!(
                "{}: no text encoder for this model yet (umT5 is not supported); use the embedded model or --random-weights",
                b.name
            );
        }
    }
    let (d_shift, d_guid, d_steps) = match src {
        Source::Bundle(b) => (b.defaults.shift, b.defaults.guidance, b.defaults.steps),
        Source::Random { .. } => (5.0, 5.0, 50),
    };
    // tiny-wan: 8 frames of 32×32 px — a dense 30-step run takes well under a minute on 2 cores.
    // Real models: Wan's 81 frames at 480×832 → latent 21×60×104.
    let (df, dh, dw) = if src.pixel_space() {
        (8, 32, 32)
    } else {
        (21, 60, 104)
    };
    let steps = r.sampling.steps.unwrap_or(d_steps);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let (f, h, w) = (
        r.video.frames.unwrap_or(df),
        r.video.height.unwrap_or(dh),
        r.video.width.unwrap_or(dw),
    );
    let [pt, ph, pw] = cfg.patch_size;
    for (flag, v, p) in [("--frames", f, pt), ("--height", h, ph), ("--width", w, pw)] {
        if v == 0 || v % p != 0 {
            bail!("{flag} {v}: must be a positive multiple of the patch size {p}");
        }
    }
    let guidance = r.sampling.guidance.unwrap_or(d_guid);
    if !guidance.is_finite() || guidance < 0.0 {
        bail!("--guidance {guidance}: must be a non-negative number");
    }
    let shift = r.sampling.shift.unwrap_or(d_shift);
    if !(shift.is_finite() && shift > 0.0) {
        bail!("--shift {shift}: must be positive");
    }
    let jenga = resolve_jenga(&r.policy, shift)?;
    let policy = match r.policy.policy.as_deref() {
        None if jenga.is_some() => "jenga".to_string(),
        None => "dense".to_string(),
        Some(p) => {
            check_name(p)?;
            p.to_string()
        }
    };
    let mut spec = SampleSpec::single(f, h, w, steps, shift, guidance, r.sampling.seed);
    if let Some(js) = &jenga {
        spec.stages = js
            .stages(steps, h, w, cfg.patch_size)
            .map_err(anyhow::Error::msg)?;
    }
    spec.skip = skip_rule(&r.policy, jenga.as_ref(), steps)?;
    spec.interp = r
        .policy
        .interp
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--interp: {e}"))?;
    if r.policy.block == 0 {
        bail!("--block must be at least 1");
    }
    spec.validate().map_err(anyhow::Error::msg)?;
    // Peer-policy flags are checked here too, before any compute.
    match policy.as_str() {
        "svg" => {
            r.policy.svg.config(r.policy.block, r.sampling.seed)?;
        }
        "draft" => {
            r.policy.draft.config(r.policy.block, &spec)?;
        }
        _ => {}
    }
    Ok(Plan {
        spec,
        prompt: r.sampling.prompt.clone(),
        negative: r.sampling.negative_prompt.clone(),
        policy,
        jenga,
    })
}

/// The skip rule with the steps it really computes (`computed_schedule`).
pub fn skip_name(s: &SkipRule, computed: usize) -> String {
    match s {
        SkipRule::None => "none".into(),
        SkipRule::Static(c) => format!("static ({computed} of {} steps computed)", c.len()),
        SkipRule::TeaCache { threshold, .. } => {
            format!("teacache (threshold {threshold}, computes {computed} steps)")
        }
    }
}

/// The policy names `--policy` accepts.
pub const POLICIES: [&str; 4] = ["dense", "jenga", "svg", "draft"];

/// `--policy NAME` checked before any compute.
pub fn check_name(name: &str) -> Result<()> {
    if POLICIES.contains(&name) {
        Ok(())
    } else {
        anyhow::bail!(
            "--policy {name}: unknown attention policy (expected one of {})",
            POLICIES.join(", ")
        )
    }
}
