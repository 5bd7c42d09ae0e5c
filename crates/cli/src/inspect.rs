//! `jenga inspect`: what a model is, and what a token curve looks like.

use crate::args::{InspectArgs, InspectWhat, ScheduleArgs};
use anyhow::{Context, Result};
use jenga_carve::CurveKind;
use jenga_models::ModelBundle;

pub fn run(a: InspectArgs) -> Result<()> {
    match a.what {
        Some(InspectWhat::Curve { t, h, w, kind, png }) => return curve(t, h, w, &kind, png),
        Some(InspectWhat::Schedule(s)) => return schedule(&s, a.model),
        None => {}
    }
    // A whole pipeline (diffusers or the original Wan repo): describe every component.
    if let Some(dir) = a
        .model
        .as_deref()
        .filter(|d| jenga_models::layout::is_pipeline_dir(d))
    {
        for line in jenga_models::layout::detect(dir)?.describe() {
            println!("{line}");
        }
        return Ok(());
    }
    let bundle = match &a.model {
        Some(dir) => ModelBundle::open(dir)?,
        None => ModelBundle::embedded()?,
    };
    let c = &bundle.config;
    println!("model        {}", bundle.name);
    println!(
        "family       {} (config class {}), tensor names: {}",
        bundle.family.name(),
        bundle.class,
        bundle.keys.naming_name()
    );
    println!(
        "architecture Wan2.1 DiT ({}), {} layers, dim {}, ffn {}, {} heads x {}",
        c.model_type,
        c.num_layers,
        c.dim,
        c.ffn_dim,
        c.num_heads,
        c.head_dim()
    );
    println!(
        "io           in {} / out {} channels, patch {:?}, text {} x {}",
        c.in_dim, c.out_dim, c.patch_size, c.text_len, c.text_dim
    );
    let mut by_dtype: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for e in bundle.weights.entries().values() {
        let n: usize = e.shape.iter().product();
        let entry = by_dtype.entry(e.dtype.clone()).or_default();
        entry.0 += n;
        entry.1 += e.end - e.start;
    }
    let total: usize = by_dtype.values().map(|v| v.0).sum();
    println!(
        "parameters   {} in {} tensors (config implies {})",
        fmt_count(total),
        bundle.weights.entries().len(),
        fmt_count(c.num_params())
    );
    if total != c.num_params() {
        println!(
            "  warning: the weights hold {total} parameters, the config implies {}: wrong file or config (the run checks every tensor's shape)",
            c.num_params()
        );
    }
    for (dt, (n, bytes)) in &by_dtype {
        println!(
            "  {dt:<5}      {} values, {}",
            fmt_count(*n),
            fmt_bytes(*bytes)
        );
    }
    println!(
        "memory       {} as f32 on CPU, {} as bf16 on GPU",
        fmt_bytes(total * 4),
        fmt_bytes(total * 2)
    );
    println!("decoder      {}", bundle.vae.name());
    println!(
        "text encoder {}",
        if bundle.text.is_some() {
            "tiny (word-level, bundled)"
        } else {
            "none bundled"
        }
    );
    if let Some(slots) = bundle
        .tiny
        .as_ref()
        .and_then(jenga_models::TinySlots::from_config)
    {
        println!("vocabulary   captions \"a {{shape colour}} {{shape}} moving {{direction}} on a {{background}} background\"; other words are left out");
        for line in slots.describe() {
            println!("  {line}");
        }
    }
    Ok(())
}

fn curve(t: usize, h: usize, w: usize, kind: &str, png: Option<std::path::PathBuf>) -> Result<()> {
    let kind: CurveKind = kind
        .parse()
        .map_err(|e: jenga_carve::curve::UnknownCurve| {
            anyhow::anyhow!("--kind {}: expected gilbert3d or sliced", e.0)
        })?;
    if t == 0 || h == 0 || w == 0 {
        anyhow::bail!("inspect curve: sizes must be positive (got {t} {h} {w})");
    }
    if t * h * w > 1 << 26 {
        anyhow::bail!(
            "inspect curve: {t}x{h}x{w} is too large to print (more than 2^26 positions)"
        );
    }
    let order = kind.order(t, h, w);
    let Some(path) = png else {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for r in &order {
            writeln!(out, "{r}")?;
        }
        return Ok(());
    };
    if path.extension().is_none_or(|e| e != "png") {
        anyhow::bail!("--png {}: must be a .png file", path.display());
    }
    jenga_video::check_parent_writable(&path)
        .with_context(|| format!("--png {}", path.display()))?;
    // Frames side by side; each cell coloured by its position on the curve (blue → red), with
    // the path drawn between consecutive cells' centres.
    let cell = (256 / h.max(w)).clamp(4, 32);
    let gap = cell;
    let (fw, fh) = (w * cell, h * cell);
    let (iw, ih) = (t * fw + (t - 1) * gap, fh);
    let mut img = vec![255u8; iw * ih * 3];
    let n = order.len();
    let centre = |r: usize| {
        let (z, y, x) = (r / (h * w), (r / w) % h, r % w);
        (z * (fw + gap) + x * cell + cell / 2, y * cell + cell / 2)
    };
    for (k, &r) in order.iter().enumerate() {
        let (cx, cy) = centre(r as usize);
        let f = k as f64 / (n.max(2) - 1) as f64;
        let col = [(255.0 * f) as u8, 60, (255.0 * (1.0 - f)) as u8];
        for y in cy - cell / 2 + 1..cy + cell / 2 {
            for x in cx - cell / 2 + 1..cx + cell / 2 {
                let light = |c: u8| 255 - (255 - c) / 3;
                img[(y * iw + x) * 3..][..3].copy_from_slice(&col.map(light));
            }
        }
    }
    for pair in order.windows(2) {
        let ((x0, y0), (x1, y1)) = (centre(pair[0] as usize), centre(pair[1] as usize));
        if pair[0] as usize / (h * w) != pair[1] as usize / (h * w) {
            continue; // frame change: no line across the gap
        }
        let steps = x0.abs_diff(x1).max(y0.abs_diff(y1)).max(1);
        for s in 0..=steps {
            let x =
                (x0 as f64 + (x1 as f64 - x0 as f64) * s as f64 / steps as f64).round() as usize;
            let y =
                (y0 as f64 + (y1 as f64 - y0 as f64) * s as f64 / steps as f64).round() as usize;
            img[(y * iw + x) * 3..][..3].copy_from_slice(&[20, 20, 20]);
        }
    }
    jenga_video::write_png(&path, iw, ih, &img)?;
    eprintln!(
        "wrote {} ({kind} curve over {t}x{h}x{w}, frames left to right)",
        path.display()
    );
    Ok(())
}

pub use jenga_engine::{fmt_bytes, fmt_count};

/// `jenga inspect schedule`: the plan `generate` would make (same resolution of flags against
/// the family's defaults, same policy, same step plan as the sampler), one line per step.
fn schedule(a: &ScheduleArgs, outer_model: Option<std::path::PathBuf>) -> Result<()> {
    use jenga_engine::{plan_for, Family, GenerateRequest, ModelSource, Policy, Source};
    use jenga_pipeline::{step_plan, SkipRule};
    let model = a.model.clone().or(outer_model);
    let family = match (&a.family, &model) {
        (Some(_), Some(_)) => anyhow::bail!("--family and --model cannot be used together"),
        (Some(f), None) => Family::by_name(f)?,
        (None, Some(dir)) if jenga_engine::hunyuan::is_hunyuan_dir(dir) => {
            jenga_engine::hunyuan::HunyuanCheckpoint::open(dir)?.family()
        }
        (None, Some(dir)) => Family::of(&Source::open(&ModelSource::Dir(dir.clone()))?),
        (None, None) => Family::of(&Source::open(&ModelSource::Embedded)?),
    };
    let req = GenerateRequest {
        video: jenga_engine::VideoSize {
            frames: a.size.frames,
            height: a.size.height,
            width: a.size.width,
        },
        sampling: jenga_engine::Sampling {
            steps: a.steps,
            shift: a.shift,
            solver: a.solver.clone(),
            ..Default::default()
        },
        policy: crate::request::policy(&a.jenga),
        ..Default::default()
    };
    let patch = family.patch;
    let plan = plan_for(&req, family)?;
    let policy = jenga_engine::policy::build(&plan, &req.policy, patch)?;
    let spec = &plan.spec;
    let sched = match &policy {
        Policy::Jenga(p) => Some(p.config().schedule.clone()),
        _ => None,
    };
    let mut text = String::from("step\tstage\tgrid\tt\tsigma\tcomputed\tdrop\tp\n");
    for (i, st) in step_plan(spec, patch).iter().enumerate() {
        let (h, w) = spec.stage_size(st.stage, patch);
        let grid = format!(
            "{}x{}x{}",
            spec.frames / patch[0],
            h / patch[1],
            w / patch[2]
        );
        let computed = match &spec.skip {
            SkipRule::None => "1",
            SkipRule::Static(c) => ["0", "1"][(c[i] || st.new_grid) as usize],
            SkipRule::TeaCache { ret_steps, .. } => {
                if i < *ret_steps || st.new_grid {
                    "1"
                } else {
                    "tc"
                }
            }
        };
        let (drop, p) = match &sched {
            Some(s) => {
                let d = s.drop_rate(i, spec.steps, st.stage);
                (if s.is_dense(d) { 0.0 } else { d }, fmt_num(s.p(st.stage)))
            }
            None => (0.0, "-".to_string()),
        };
        text += &format!(
            "{i}\t{}\t{grid}\t{}\t{:.6}\t{computed}\t{}\t{p}\n",
            st.stage,
            fmt_num(st.t),
            st.sigma_latent,
            fmt_num(drop)
        );
    }
    // a closed pipe (`| head`) is not an error
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// A number without float noise: integers as such, else up to 4 decimals.
fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
