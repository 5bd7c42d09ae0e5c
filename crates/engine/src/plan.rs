//! A request resolved against the model's defaults: the sampler's spec, the policy's name and
//! the Jenga settings, every value checked before anything loads.

use crate::request::{GenerateRequest, PolicyOptions};
use crate::source::Source;
use anyhow::{bail, Result};
use jenga_pipeline::{
    official_static_schedule, static_skip_schedule, JengaSettings, PresetFamily, PresetSkip,
    Renoise, SampleSpec, SkipRule, SolverKind,
};

/// Wan's default negative prompt (`wan/configs/shared_config.py` `sample_neg_prompt`), used
/// for an empty negative prompt when the model has a real text encoder (umT5).
pub const WAN_NEG_PROMPT: &str = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

/// What a model family runs by default (the official configs), and what a plan needs to know
/// of the model without loading it.
#[derive(Clone, Debug)]
pub struct Family {
    pub presets: PresetFamily,
    /// `wan-1.3b`, `wan-14b`, `hunyuan`, or the model's own name (tiny-wan).
    pub name: String,
    pub patch: [usize; 3],
    pub steps: usize,
    pub shift: f64,
    pub guidance: f32,
    pub solver: SolverKind,
    pub renoise: Renoise,
    /// Default video in model units (latent frames × height × width, or pixels).
    pub size: (usize, usize, usize),
    /// Where the defaults come from (printed at start).
    pub source: &'static str,
    /// A real text encoder: no negative prompt given means Wan's default one.
    pub real_text: bool,
    /// The VAE's stride (frames, height, width) when the model has one: sizes are then given
    /// in pixels (frames `1 + 4k`) and sampled at `size / stride`.
    pub vae_stride: Option<[usize; 3]>,
    /// Image-to-video: the video's size follows the image's aspect ratio at the requested
    /// area (`--height × --width`, default `size`'s), and ProRes is off unless asked for.
    pub i2v: bool,
    /// The shift at the 480p area (480 × 832), where `generate.py` lowers it for I2V (3).
    pub shift_480p: Option<f64>,
}

impl Family {
    /// Official Wan2.1 T2V (`generate.py`, `wan/configs`): 50 steps, shift 5, guidance 5,
    /// UniPC, 81 frames; 480×832 for 1.3B, 720×1280 for 14B (latent stride 4×8×8).
    pub fn wan(fourteen: bool) -> Family {
        Family {
            presets: if fourteen {
                PresetFamily::Wan14B
            } else {
                PresetFamily::Wan1_3B
            },
            name: if fourteen { "wan-14b" } else { "wan-1.3b" }.into(),
            patch: [1, 2, 2],
            steps: 50,
            shift: 5.0,
            guidance: 5.0,
            solver: SolverKind::UniPc,
            renoise: Renoise::Wan,
            size: if fourteen {
                (21, 90, 160)
            } else {
                (21, 60, 104)
            },
            source:
                "official Wan2.1 T2V defaults (generate.py: 50 steps, shift 5, guidance 5, UniPC)",
            real_text: false,
            vae_stride: None,
            i2v: false,
            shift_480p: None,
        }
    }

    /// Official Wan2.1 I2V-14B (`generate.py`, `image2video.py`): 40 steps, shift 5 (3 at the
    /// 480p area), guidance 5, UniPC, 81 frames at 720×1280's area (480×832's for a `480P`
    /// checkpoint, by its name), the size following the image's aspect.
    pub fn wan_i2v(area_480p: bool) -> Family {
        let mut f = Family::wan(true);
        f.steps = 40;
        f.i2v = true;
        f.shift_480p = Some(3.0);
        f.size = if area_480p {
            (21, 60, 104)
        } else {
            (21, 90, 160)
        };
        f.source = "official Wan2.1 I2V defaults (generate.py: 40 steps, shift 5 or 3 at 480p, guidance 5, UniPC; ProRes off)";
        f
    }

    /// Official HunyuanVideo (`sample_video.py`): 50 steps, flow shift 7, embedded guidance 6,
    /// Euler, 129 frames at 720×1280 (latent stride 4×8×8). No model of this family loads yet:
    /// `jenga inspect schedule --family hunyuan` plans with it.
    pub fn hunyuan() -> Family {
        Family {
            presets: PresetFamily::HunyuanVideo,
            name: "hunyuan".into(),
            patch: [1, 2, 2],
            steps: 50,
            shift: 7.0,
            guidance: 6.0,
            solver: SolverKind::Euler,
            renoise: Renoise::Hunyuan,
            size: (33, 90, 160),
            source: "official HunyuanVideo defaults (sample_video.py: 50 steps, flow shift 7, embedded guidance 6, Euler)",
            real_text: true,
            vae_stride: None,
            i2v: false,
            shift_480p: None,
        }
    }

    /// `--family wan-1.3b|wan-14b|hunyuan`.
    pub fn by_name(name: &str) -> Result<Family> {
        Ok(match name {
            "wan-1.3b" | "wan2.1-1.3b" => Family::wan(false),
            "wan-14b" | "wan2.1-14b" => Family::wan(true),
            "hunyuan" | "hunyuanvideo" => Family::hunyuan(),
            other => bail!("--family {other}: expected wan-1.3b, wan-14b or hunyuan"),
        })
    }

    /// The family of an opened model: Wan-14B by its width (5120), Wan-1.3B otherwise;
    /// tiny-wan (pixel space) keeps its own config's sampling defaults and Euler, as its golden.
    pub fn of(src: &Source) -> Family {
        let cfg = src.config();
        let mut f = if cfg.is_i2v() {
            Family::wan_i2v(src.name().contains("480"))
        } else {
            Family::wan(cfg.dim == 5120)
        };
        f.patch = cfg.patch_size;
        if let Source::Checkpoint(c) = src {
            f.real_text = true;
            f.vae_stride = Some([
                c.vae.time_factor(),
                c.vae.space_factor(),
                c.vae.space_factor(),
            ]);
            // as diffusers does: the pipeline's scheduler config sets the shift and the grid
            if let Some(shift) = c.scheduler_shift {
                f.shift = shift;
            }
            if let Some(solver) = c.scheduler_solver {
                f.solver = solver;
            }
            if c.scheduler_shift.is_some() {
                // the directory's shift holds at every size
                f.shift_480p = None;
            }
            if c.layout.kind == jenga_models::layout::LayoutKind::Diffusers && f.i2v {
                f.steps = 50;
                f.source = "diffusers WanImageToVideoPipeline defaults (50 steps, guidance 5), solver and shift from scheduler/scheduler_config.json (--solver unipc: Wan's own grid); ProRes off";
            } else if c.scheduler_shift.is_some() || c.scheduler_solver.is_some() {
                f.source = "official Wan2.1 T2V defaults (50 steps, guidance 5), solver and shift from scheduler/scheduler_config.json as WanPipeline (--solver unipc: Wan's own grid)";
            }
        }
        if let Source::Bundle(b) = src {
            if src.pixel_space() {
                f.name = b.name.clone();
                f.solver = SolverKind::Euler;
                f.renoise = Renoise::Consistent;
                f.size = (8, 32, 32);
                f.source = "the model directory's own defaults (config.json `tiny` section), Euler";
            }
            (f.shift, f.guidance, f.steps) =
                (b.defaults.shift, b.defaults.guidance, b.defaults.steps);
            if !src.pixel_space() && b.tiny.is_some() {
                f.source = "the model directory's own defaults (config.json `tiny` section)";
            }
            f.real_text = b.text.is_some() && b.tiny.is_none();
        }
        f
    }
}

/// Resolved generation settings (flags over model defaults), validated before any compute.
pub struct Plan {
    pub spec: SampleSpec,
    pub prompt: String,
    pub negative: String,
    /// `dense`, `jenga`, `svg` or `draft` (`POLICIES`).
    pub policy: String,
    /// Jenga settings when a preset or Jenga flag was given.
    pub jenga: Option<JengaSettings>,
    /// The family the defaults and presets came from.
    pub family: Family,
    /// The video written (frames, height, width in pixels): the spec's size times the VAE's
    /// stride (`1 + 4(F − 1)` frames), or the spec's size for models without a VAE.
    pub out_size: (usize, usize, usize),
}

impl Plan {
    /// The run in one phrase, for report headers: `MODEL (F×H×W, N steps, shift S, guidance G,
    /// seed S, prompt "…")`.
    pub fn describe(&self, model: &str) -> String {
        let s = &self.spec;
        format!(
            "{model} ({}×{}×{}, {} steps {}, shift {}, guidance {}, seed {}, prompt \"{}\")",
            s.frames,
            s.height,
            s.width,
            s.steps,
            s.solver.name(),
            s.stages[0].shift,
            s.guidance,
            s.seed,
            self.prompt
        )
    }
}

/// Preset + explicit flags → settings (explicit flags win). `None` when no Jenga flag is set.
/// `shift`: the user's `--shift`; `base_shift`: the model's default.
pub fn resolve_jenga(
    j: &PolicyOptions,
    family: PresetFamily,
    shift: Option<f64>,
    base_shift: f64,
) -> Result<Option<JengaSettings>> {
    let any_flag = j.sa_drop_rates.is_some()
        || j.p_remain_rates.is_some()
        || j.res_rate_list.is_some()
        || j.step_rate_list.is_some()
        || j.scheduler_shift_list.is_some();
    let mut s = match &j.preset {
        Some(p) => {
            JengaSettings::preset(p, family, shift, base_shift).map_err(anyhow::Error::msg)?
        }
        None if any_flag || j.policy.as_deref() == Some("jenga") => {
            JengaSettings::attention_only(shift.unwrap_or(base_shift))
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
            s.scheduler_shift_list = vec![shift.unwrap_or(base_shift); v.len()];
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

/// `--skip` (or the preset's) → the sampler's rule. `stages`: the run's stage plans (jenga-rs's
/// own static schedule computes the last step of every stage: its x̂0 crosses the switch).
fn skip_rule(
    j: &PolicyOptions,
    settings: Option<&JengaSettings>,
    spec: &SampleSpec,
) -> Result<SkipRule> {
    let steps = spec.steps;
    let preset = settings.map_or(PresetSkip::None, |s| s.skip);
    let which = match (&j.skip, preset) {
        (Some(s), _) => s.as_str(),
        (None, PresetSkip::None) => "none",
        (None, PresetSkip::Static { .. }) => "static",
        (None, PresetSkip::OfficialList) => "official",
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
            let mut c = static_skip_schedule(steps, keep.min(steps));
            for st in &spec.stages[..spec.stages.len() - 1] {
                c[st.end_step - 1] = true;
            }
            SkipRule::Static(c)
        }
        "official" => SkipRule::Static(official_static_schedule(steps)),
        "teacache" => {
            if thresh.is_nan() || thresh < 0.0 {
                bail!("--teacache-thresh {thresh}: must be non-negative");
            }
            SkipRule::TeaCache {
                threshold: thresh,
                // the model's own polynomial (`Denoiser::teacache_coefficients`)
                coefficients: Vec::new(),
                // `--use_ret_step`: the first 5 steps computed (`ret_steps = 5*2` calls)
                ret_steps: 5,
            }
        }
        other => bail!("--skip {other}: expected none, static, official or teacache"),
    })
}

/// A request resolved against an opened model's defaults.
/// Runs that sample with the text-to-video denoiser (eval, benches) take no image.
pub fn plan(r: &GenerateRequest, src: &Source) -> Result<Plan> {
    if src.config().is_i2v() {
        bail!(
            "{}: an image-to-video model: only `jenga generate --image FILE` runs it (eval and the benches take text-to-video models)",
            src.name()
        );
    }
    plan_with_image(r, src, None)
}

/// As [`plan`], with the `--image` of an image-to-video run (height, width in pixels).
pub fn plan_with_image(
    r: &GenerateRequest,
    src: &Source,
    image_hw: Option<(usize, usize)>,
) -> Result<Plan> {
    let i2v = src.config().is_i2v();
    match (i2v, &r.sampling.image, image_hw) {
        (true, None, _) => bail!(
            "{}: an image-to-video model: give the first frame with --image FILE",
            src.name()
        ),
        (true, Some(p), None) => bail!("--image {}: its size was not read", p.display()),
        (false, Some(p), _) => bail!(
            "--image {}: {} is a text-to-video model; image-to-video needs a Wan2.1 I2V checkpoint",
            p.display(),
            src.name()
        ),
        _ => {}
    }
    // Every component a run needs must be there before anything loads.
    if let Source::Bundle(b) = src {
        if b.text.is_none() {
            bail!(
                "{}: no text encoder: a directory with only the DiT (config.json + safetensors) cannot generate; give the whole checkpoint (a diffusers pipeline directory, or the original Wan repo with {} and {}), single files (--dit, --text-encoder, --vae, --tokenizer), the embedded model or --random-weights",
                b.name, jenga_models::layout::WAN_T5, jenga_models::layout::WAN_VAE
            );
        }
    }
    plan_sized(r, Family::of(src), image_hw)
}

/// A request resolved against a family's defaults (no model needed: `jenga inspect schedule`).
pub fn plan_for(r: &GenerateRequest, family: Family) -> Result<Plan> {
    plan_sized(r, family, None)
}

fn plan_sized(
    r: &GenerateRequest,
    mut family: Family,
    image_hw: Option<(usize, usize)>,
) -> Result<Plan> {
    let steps = r.sampling.steps.unwrap_or(family.steps);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let ((f, h, w), out_size) = video_size(r, &family, image_hw)?;
    if let Some(s) = family.shift_480p {
        if out_size.1 * out_size.2 <= 480 * 832 {
            family.shift = s;
        }
    }
    if let Some(shift) = r.sampling.shift {
        if !(shift.is_finite() && shift > 0.0) {
            bail!("--shift {shift}: must be positive");
        }
    }
    let mut jenga = resolve_jenga(&r.policy, family.presets, r.sampling.shift, family.shift)?;
    if let Some(js) = jenga.as_mut().filter(|_| family.i2v) {
        // Jenga's I2V runs carve attention at the full size (no ProRes) with the I2V
        // sampling defaults; --res-rate-list still turns ProRes on.
        if r.policy.res_rate_list.is_none() {
            js.res_rate_list = vec![1.0];
            js.step_rate_list = vec![1.0];
        }
        if r.policy.scheduler_shift_list.is_none() {
            js.scheduler_shift_list =
                vec![r.sampling.shift.unwrap_or(family.shift); js.res_rate_list.len()];
        }
        if r.sampling.shift.is_none() && r.policy.scheduler_shift_list.is_none() {
            js.shift = None;
        }
        js.guidance = None;
        js.source = format!(
            "{} (image-to-video: no ProRes, I2V shift and guidance)",
            js.source
        );
    }
    // explicit flags, then the preset's, then the family's
    let preset_shift = jenga.as_ref().and_then(|j| j.shift);
    let shift = r.sampling.shift.or(preset_shift).unwrap_or(family.shift);
    let guidance = r
        .sampling
        .guidance
        .or(jenga.as_ref().and_then(|j| j.guidance))
        .unwrap_or(family.guidance);
    if !guidance.is_finite() || guidance < 0.0 {
        bail!("--guidance {guidance}: must be a non-negative number");
    }
    let policy = match r.policy.policy.as_deref() {
        None if jenga.is_some() => "jenga".to_string(),
        None => "dense".to_string(),
        Some(p) => {
            check_name(p)?;
            p.to_string()
        }
    };
    let mut spec = SampleSpec::single(f, h, w, steps, shift, guidance, r.sampling.seed);
    spec.solver = match &r.sampling.solver {
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
        None => family.solver,
    };
    spec.renoise = match &r.policy.prores_renoise {
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
        None => family.renoise,
    };
    if let Some(js) = &jenga {
        spec.stages = js
            .stages(steps, h, w, family.patch)
            .map_err(anyhow::Error::msg)?;
    }
    spec.skip = skip_rule(&r.policy, jenga.as_ref(), &spec)?;
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
    let negative = match r.sampling.negative_prompt.as_deref() {
        None if family.real_text => WAN_NEG_PROMPT.to_string(),
        None => String::new(),
        Some(n) => n.to_string(),
    };
    Ok(Plan {
        spec,
        prompt: r.sampling.prompt.clone(),
        negative,
        policy,
        jenga,
        family,
        out_size,
    })
}

/// Frames, height, width.
type Size3 = (usize, usize, usize);

/// `--frames/--height/--width` (or the family's default) → the sampled size in model units and
/// the written size in pixels. With a VAE the flags are pixels: frames `1 + 4k`, height and
/// width multiples of the VAE stride × the patch (16 for Wan).
fn video_size(
    r: &GenerateRequest,
    family: &Family,
    image_hw: Option<(usize, usize)>,
) -> Result<(Size3, Size3)> {
    let (df, dh, dw) = family.size;
    let [pt, ph, pw] = family.patch;
    let Some([st, sh, sw]) = family.vae_stride else {
        let (f, h, w) = (
            r.video.frames.unwrap_or(df),
            r.video.height.unwrap_or(dh),
            r.video.width.unwrap_or(dw),
        );
        for (flag, v, p) in [("--frames", f, pt), ("--height", h, ph), ("--width", w, pw)] {
            if v == 0 || v % p != 0 {
                bail!("{flag} {v}: must be a positive multiple of the patch size {p}");
            }
        }
        return Ok(((f, h, w), (f, h, w)));
    };
    let (pf, phx, pwx) = (
        r.video.frames.unwrap_or(1 + st * (df - 1)),
        r.video.height.unwrap_or(dh * sh),
        r.video.width.unwrap_or(dw * sw),
    );
    if pf == 0 || (pf - 1) % st != 0 {
        bail!(
            "--frames {pf}: the VAE takes 1 + {st}k frames (e.g. {}, or 81 as Wan)",
            1 + st * ((pf.max(1) - 1 + st / 2) / st).max(1)
        );
    }
    let f = 1 + (pf - 1) / st;
    if f % pt != 0 {
        bail!("--frames {pf}: {f} latent frames are not a multiple of the patch size {pt}");
    }
    if let Some((ih, iw)) = image_hw {
        // image-to-video: the requested area at the image's aspect (diffusers' Wan I2V rounding)
        let (h, w) = jenga_models::image::preprocess::size_for_aspect(ih, iw, phx * pwx, sh * ph)
            .map_err(|e| anyhow::anyhow!("--image: {e}"))?;
        return Ok(((f, h / sh, w / sw), (pf, h, w)));
    }
    for (flag, v, s, p) in [("--height", phx, sh, ph), ("--width", pwx, sw, pw)] {
        if v == 0 || v % (s * p) != 0 {
            bail!(
                "--{} {v}: must be a positive multiple of {} (VAE stride {s} × patch {p}), e.g. {}",
                flag.trim_start_matches("--"),
                s * p,
                (v / (s * p)).max(1) * s * p
            );
        }
    }
    Ok(((f, phx / sh, pwx / sw), (pf, phx, pwx)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_take_their_official_defaults_and_flags_win() {
        let r = GenerateRequest::default();
        let p = plan_for(&r, Family::wan(false)).unwrap();
        assert_eq!(p.spec.solver, SolverKind::UniPc);
        assert_eq!(p.spec.renoise, Renoise::Wan);
        assert_eq!(
            (p.spec.steps, p.spec.stages[0].shift, p.spec.guidance),
            (50, 5.0, 5.0)
        );
        assert_eq!((p.spec.frames, p.spec.height, p.spec.width), (21, 60, 104));
        let h = plan_for(&r, Family::hunyuan()).unwrap();
        assert_eq!(
            (h.spec.solver, h.spec.renoise),
            (SolverKind::Euler, Renoise::Hunyuan)
        );
        // an empty negative prompt becomes Wan's with a real text encoder only
        assert_eq!(p.negative, "");
        let mut real = Family::wan(true);
        real.real_text = true;
        assert_eq!(plan_for(&r, real).unwrap().negative, WAN_NEG_PROMPT);
        // the preset's shift and guidance, then explicit flags over them
        let mut t = GenerateRequest::default();
        t.policy.preset = Some("turbo".into());
        let tp = plan_for(&t, Family::wan(false)).unwrap();
        assert_eq!(
            (tp.spec.stages[0].shift, tp.spec.stages[1].shift),
            (8.0, 10.0)
        );
        assert_eq!(tp.spec.guidance, 6.0);
        assert_eq!(tp.spec.stages[0].end_step, 26);
        t.sampling.shift = Some(5.0);
        t.sampling.guidance = Some(4.0);
        t.sampling.solver = Some("euler".into());
        t.policy.prores_renoise = Some("consistent".into());
        let tf = plan_for(&t, Family::wan(false)).unwrap();
        assert_eq!(
            (tf.spec.stages[0].shift, tf.spec.stages[1].shift),
            (5.0, 7.0)
        );
        assert_eq!(tf.spec.guidance, 4.0);
        assert_eq!(
            (tf.spec.solver, tf.spec.renoise),
            (SolverKind::Euler, Renoise::Consistent)
        );
        t.policy.prores_renoise = Some("sd3".into());
        let e = plan_for(&t, Family::wan(false)).err().unwrap().to_string();
        assert!(e.contains("--prores-renoise sd3"), "{e}");
        // TeaCache: the official first 5 steps, the checkpoint's polynomial
        let mut b = GenerateRequest::default();
        b.policy.preset = Some("base".into());
        match plan_for(&b, Family::wan(true)).unwrap().spec.skip {
            SkipRule::TeaCache { ret_steps, .. } => assert_eq!(ret_steps, 5),
            other => panic!("{other:?}"),
        }
    }
}
