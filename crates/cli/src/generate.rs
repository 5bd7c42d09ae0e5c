//! `jenga generate`: prompt → video file.

use crate::args::{GenerateArgs, JengaArgs, ModelArgs};
use crate::device::{self, Device};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use jenga_carve::AttentionPolicy;
use jenga_carve::PolicyKernels;
use jenga_models::{ModelBundle, RandomWeights, WanConfig, WanModel, WeightSource};
use jenga_pipeline::{
    sample, static_skip_schedule, Event, JengaSettings, PresetSkip, SampleSpec, SkipRule,
    TEACACHE_WAN_1_3B,
};
use jenga_tensor::FusedOps;
use std::time::{Duration, Instant};

/// Where weights, config and text conditioning come from.
pub enum Source {
    Bundle(Box<ModelBundle>),
    Random {
        name: String,
        config: WanConfig,
        weights: RandomWeights,
    },
}

impl Source {
    pub fn open(m: &ModelArgs) -> Result<Source> {
        match (&m.model, &m.random_weights) {
            (Some(_), Some(_)) => bail!("--model and --random-weights cannot be used together"),
            (None, Some(name)) => {
                let config = random_config(name)?;
                Ok(Source::Random {
                    name: format!("{name} (random weights)"),
                    config,
                    weights: RandomWeights { seed: 0 },
                })
            }
            (Some(dir), None) => Ok(Source::Bundle(Box::new(ModelBundle::open(dir)?))),
            (None, None) => Ok(Source::Bundle(Box::new(ModelBundle::embedded()?))),
        }
    }
    pub fn config(&self) -> &WanConfig {
        match self {
            Source::Bundle(b) => &b.config,
            Source::Random { config, .. } => config,
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Source::Bundle(b) => &b.name,
            Source::Random { name, .. } => name,
        }
    }
    pub fn weights(&self) -> &dyn WeightSource {
        match self {
            Source::Bundle(b) => &b.weights,
            Source::Random { weights, .. } => weights,
        }
    }
    /// Text-encoder states `[text_len, text_dim]`; random models get seeded random states.
    pub fn encode(&self, prompt: &str) -> Result<Vec<f32>> {
        match self {
            Source::Bundle(b) => Ok(b.encode_prompt(prompt)?),
            Source::Random { config, .. } => {
                let seed = prompt.bytes().fold(1469598103934665603u64, |h, c| {
                    (h ^ c as u64).wrapping_mul(1099511628211)
                });
                Ok(jenga_pipeline::noise(
                    seed,
                    config.text_len * config.text_dim,
                ))
            }
        }
    }
    fn pixel_space(&self) -> bool {
        matches!(self, Source::Bundle(b) if b.pixel_space)
    }

    /// Embedded text context for sampling: the prompt alone, or with classifier-free guidance
    /// (`guidance` ≠ 1) prompt and negative prompt as one batch of 2, in the sampler's order.
    pub fn text_context<B: PolicyKernels + FusedOps>(
        &self,
        be: &B,
        model: &WanModel<B>,
        prompt: &str,
        negative: &str,
        guidance: f32,
    ) -> Result<B::Tensor> {
        let cfg = self.config();
        let cond = self.encode(prompt)?;
        let ctx = if guidance != 1.0 {
            let uncond = self.encode(negative)?;
            be.upload(&[cond, uncond].concat(), &[2, cfg.text_len, cfg.text_dim])?
        } else {
            be.upload(&cond, &[1, cfg.text_len, cfg.text_dim])?
        };
        Ok(model.embed_text(be, &ctx)?)
    }
}

pub fn random_config(name: &str) -> Result<WanConfig> {
    Ok(match name {
        "wan-1.3b" | "wan2.1-1.3b" => WanConfig::wan_1_3b(),
        "wan-14b" | "wan2.1-14b" => WanConfig::wan_14b(),
        "tiny" => ModelBundle::embedded()?.config,
        other => {
            bail!("--random-weights {other}: unknown config (expected wan-1.3b, wan-14b or tiny)")
        }
    })
}

/// Resolved generation settings (flags over model defaults), validated before any compute.
pub struct Plan {
    pub spec: SampleSpec,
    pub prompt: String,
    pub negative: String,
    /// `dense`, `jenga`, `svg` or `draft` (crate::policy::POLICIES).
    pub policy: String,
    /// Jenga settings when a preset or Jenga flag was given.
    pub jenga: Option<JengaSettings>,
}

/// Preset + explicit flags → settings (explicit flags win). `None` when no Jenga flag is set.
pub fn resolve_jenga(j: &JengaArgs, base_shift: f64) -> Result<Option<JengaSettings>> {
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
fn skip_rule(j: &JengaArgs, settings: Option<&JengaSettings>, steps: usize) -> Result<SkipRule> {
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
                coefficients: TEACACHE_WAN_1_3B.to_vec(),
                ret_steps: (steps / 10).max(1),
            }
        }
        other => bail!("--skip {other}: expected none, static or teacache"),
    })
}

pub fn plan(a: &GenerateArgs, src: &Source) -> Result<Plan> {
    let cfg = src.config();
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
    let steps = a.steps.unwrap_or(d_steps);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let (f, h, w) = (
        a.size.frames.unwrap_or(df),
        a.size.height.unwrap_or(dh),
        a.size.width.unwrap_or(dw),
    );
    let [pt, ph, pw] = cfg.patch_size;
    for (flag, v, p) in [("--frames", f, pt), ("--height", h, ph), ("--width", w, pw)] {
        if v == 0 || v % p != 0 {
            bail!("{flag} {v}: must be a positive multiple of the patch size {p}");
        }
    }
    let guidance = a.guidance.unwrap_or(d_guid);
    if !guidance.is_finite() || guidance < 0.0 {
        bail!("--guidance {guidance}: must be a non-negative number");
    }
    let shift = a.shift.unwrap_or(d_shift);
    if !(shift.is_finite() && shift > 0.0) {
        bail!("--shift {shift}: must be positive");
    }
    let jenga = resolve_jenga(&a.jenga, shift)?;
    let policy = match a.jenga.policy.as_deref() {
        None if jenga.is_some() => "jenga".to_string(),
        None => "dense".to_string(),
        Some(p) => {
            crate::policy::check_name(p)?;
            p.to_string()
        }
    };
    let mut spec = SampleSpec::single(f, h, w, steps, shift, guidance, a.seed);
    if let Some(js) = &jenga {
        spec.stages = js
            .stages(steps, h, w, cfg.patch_size)
            .map_err(anyhow::Error::msg)?;
    }
    spec.skip = skip_rule(&a.jenga, jenga.as_ref(), steps)?;
    spec.interp = a
        .jenga
        .interp
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--interp: {e}"))?;
    if a.jenga.block == 0 {
        bail!("--block must be at least 1");
    }
    spec.validate().map_err(anyhow::Error::msg)?;
    // Peer-policy flags are checked here too, before any compute.
    match policy.as_str() {
        "svg" => {
            a.jenga.peers.svg(a.jenga.block, a.seed)?;
        }
        "draft" => {
            a.jenga.peers.draft(a.jenga.block, &spec)?;
        }
        _ => {}
    }
    Ok(Plan {
        spec,
        prompt: a.prompt.clone(),
        negative: a.negative_prompt.clone(),
        policy,
        jenga,
    })
}

pub fn run(a: GenerateArgs) -> Result<()> {
    // Everything a user can get wrong is checked before the model loads.
    jenga_video::check_output(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    if let Some(p) = &a.strip {
        if p.extension().is_none_or(|e| e != "png") {
            bail!("--strip {}: must be a .png file", p.display());
        }
        jenga_video::check_parent_writable(p)
            .with_context(|| format!("--strip {}", p.display()))?;
    }
    let src = Source::open(&a.model)?;
    let plan = plan(&a, &src)?;
    if let Source::Bundle(b) = &src {
        if let Some((tok, _)) = &b.text {
            let unknown = tok.unknown_words(&plan.prompt);
            if !unknown.is_empty() {
                eprintln!(
                    "note: words unknown to the {} vocabulary are ignored: {}",
                    b.name,
                    unknown.join(" ")
                );
            }
        }
    }
    let pol = crate::policy::build(&plan, &a.jenga, src.config().patch_size)?;
    if matches!(plan.policy.as_str(), "svg" | "draft") {
        eprintln!("{} settings: {}", plan.policy, pol.settings());
    }
    if let Some(js) = &plan.jenga {
        eprintln!(
            "jenga settings: policy {} | sa-drop-rates {:?} p-remain {:?} | res {:?} steps {:?} shifts {:?} | skip {}",
            plan.policy, js.sa_drop_rates, js.p_remain_rates, js.res_rate_list, js.step_rate_list, js.scheduler_shift_list,
            skip_name(&plan.spec.skip)
        );
    }
    let dev = device::select(&a.model.device, a.model.threads)?;
    match &dev {
        Device::Cpu(be) => generate(be, &a, &src, &plan, &pol)?,
        Device::Cuda(be) => generate(be.as_ref(), &a, &src, &plan, &pol)?,
    }
    if let Some(c) = pol.choices() {
        eprintln!("{}: {c}", plan.policy);
    }
    Ok(())
}

pub fn skip_name(s: &SkipRule) -> String {
    match s {
        SkipRule::None => "none".into(),
        SkipRule::Static(c) => format!(
            "static ({} of {} steps)",
            c.iter().filter(|&&v| v).count(),
            c.len()
        ),
        SkipRule::TeaCache { threshold, .. } => format!("teacache (threshold {threshold})"),
    }
}

/// Timing of one generation, printed at the end.
#[derive(Default)]
pub struct Timings {
    pub load: Duration,
    pub text: Duration,
    pub dit: Duration,
    pub decode: Duration,
    pub write: Duration,
}

pub fn generate<B: PolicyKernels + FusedOps>(
    be: &B,
    a: &GenerateArgs,
    src: &Source,
    plan: &Plan,
    policy: &dyn AttentionPolicy<B>,
) -> Result<()> {
    let mut t = Timings::default();
    let cfg = src.config();
    let spec = &plan.spec;
    let t0 = Instant::now();
    let model = WanModel::load(be, cfg, src.weights()).context("loading the DiT")?;
    t.load = t0.elapsed();
    eprintln!(
        "jenga: {} on {} | {}x{}x{} (frames x h x w), {} steps, shift {}, guidance {}, seed {}, policy {}",
        src.name(), be.name(), spec.frames, spec.height, spec.width, spec.steps, spec.stages[0].shift, spec.guidance, spec.seed, policy.name()
    );

    let t0 = Instant::now();
    let ctx = src.text_context(be, &model, &plan.prompt, &plan.negative, spec.guidance)?;
    be.synchronize()?;
    t.text = t0.elapsed();

    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(spec.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} (eta {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let out = sample(be, &model, &ctx, spec, policy, None, &mut |e| match e {
        Event::Step { step, computed, .. } => {
            bar.set_position(step as u64 + 1);
            if !computed {
                bar.set_message("(skipped: residual reused)");
            } else {
                bar.set_message("");
            }
        }
        Event::StageSwitch {
            stage,
            height,
            width,
            tokens,
        } => {
            bar.set_message(format!("stage {stage}: {height}x{width}, {tokens} tokens"));
        }
    })?;
    bar.finish_and_clear();
    t.dit = out.dit_time;
    for d in policy.density_stats() {
        eprintln!(
            "stage {}: attention density {:.1}% ({} of {} calls sparse)",
            d.stage,
            100.0 * d.mean_density,
            d.sparse_calls,
            d.calls
        );
    }

    let t0 = Instant::now();
    let video = to_video(&out.video, out.shape, a.fps, src.pixel_space());
    t.decode = t0.elapsed();
    let t0 = Instant::now();
    let upscale = a.upscale.unwrap_or(if src.pixel_space() {
        (256 / out.shape[3].max(1)).max(1) as u32
    } else {
        1
    });
    jenga_video::write(&a.out, &video, upscale)
        .with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(p) = &a.strip {
        let (w, h, rgb) = jenga_video::frame_strip(&video, 8, upscale.min(4));
        jenga_video::write_png(p, w, h, &rgb)
            .with_context(|| format!("--strip {}", p.display()))?;
    }
    t.write = t0.elapsed();
    eprintln!(
        "wrote {} ({} frames, {}x{} px{}) | load {:.2}s, text {:.2}s, DiT {:.2}s ({} of {} steps computed, {:.2}s/step), decode {:.2}s, write {:.2}s",
        a.out.display(), video.frames, video.width * upscale as usize, video.height * upscale as usize,
        if upscale > 1 { format!(", upscaled x{upscale}") } else { String::new() },
        t.load.as_secs_f64(), t.text.as_secs_f64(), t.dit.as_secs_f64(), out.computed_steps, spec.steps,
        t.dit.as_secs_f64() / spec.steps as f64, t.decode.as_secs_f64(), t.write.as_secs_f64()
    );
    Ok(())
}

/// `[C, F, H, W]` in [-1, 1] → RGB u8 frames. Pixel-space models map channels 0..3 to RGB;
/// latent models (no VAE bundled) get a preview of latent channels 0..3.
pub fn to_video(
    x: &[f32],
    [c, f, h, w]: [usize; 4],
    fps: u32,
    pixel_space: bool,
) -> jenga_video::Video {
    let mut rgb = vec![0u8; f * h * w * 3];
    let scale = if pixel_space { 1.0 } else { 0.5 };
    for fi in 0..f {
        for p in 0..h * w {
            for ch in 0..3 {
                let v = if ch < c {
                    x[(ch * f + fi) * h * w + p] * scale
                } else {
                    0.0
                };
                rgb[(fi * h * w + p) * 3 + ch] = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
            }
        }
    }
    jenga_video::Video {
        frames: f,
        height: h,
        width: w,
        rgb,
        fps,
    }
}
