//! `jenga eval`: the same prompt and seed under dense attention and under Jenga variants →
//! PSNR/SSIM against dense, wall-time ratio, effective density per stage, attention recall,
//! and whether the video still shows the caption (colours, direction), in one table.

use crate::args::EvalArgs;
use anyhow::{bail, Context, Result};
use jenga_carve::{AttentionPolicy, Dense};
use jenga_engine::{
    plan, skip_name, Engine, EngineBackend, GenerateRequest, ModelCx, ModelTask, Plan,
    PolicyOptions, Source,
};
use jenga_models::{Caption, WanModel};
use jenga_pipeline::metrics::{colour_distance, psnr, read_scene, ssim};
use jenga_pipeline::probe::Probe;
use jenga_pipeline::{sample, SampleOutput};

/// Frame rate of the frame strips (pictures: it is never played).
const STRIP_FPS: u32 = 8;
use std::fmt::Write as _;
use std::time::Instant;

/// One row of the report.
struct Row {
    name: String,
    settings: String,
    secs: f64,
    /// CPU seconds of the whole process (all threads): steadier than wall time on a shared
    /// machine, and what a CPU run costs.
    cpu: f64,
    psnr: f64,
    ssim: f64,
    density: Vec<f64>,
    recall: Option<f64>,
    computed: usize,
    check: String,
}

pub fn run(e: EvalArgs) -> Result<()> {
    let g = &e.gen;
    // The output paths are checked before any compute.
    if let Some(p) = &e.strips {
        if p.extension().is_none_or(|x| x != "png") {
            bail!("--strips {}: must be a .png file", p.display());
        }
        jenga_video::check_parent_writable(p)
            .with_context(|| format!("--strips {}", p.display()))?;
    }
    if let Some(p) = &e.report {
        if p.is_dir() {
            bail!("--report {}: is a directory", p.display());
        }
        jenga_video::check_parent_writable(p)
            .with_context(|| format!("--report {}", p.display()))?;
    }
    let req = crate::request::generate(g, None)?;
    let src = Source::open(&req.model)?;
    for note in src.prompt_notes(&g.prompt) {
        eprintln!("note: {note}");
    }
    let variants: Vec<String> = if e.presets.is_empty() {
        vec![String::new()]
    } else {
        e.presets.clone()
    };
    // Resolve every variant's flags before any compute.
    let mut plans = Vec::new();
    for v in &variants {
        let mut a = req.clone();
        if !v.is_empty() {
            a.policy.preset = Some(v.clone());
        }
        let p = plan(&a, &src).with_context(|| {
            if v.is_empty() {
                "eval".to_string()
            } else {
                format!("preset {v}")
            }
        })?;
        if p.jenga.is_none()
            && p.policy == "dense"
            && matches!(p.spec.skip, jenga_pipeline::SkipRule::None)
        {
            bail!(
                "eval: nothing to compare — give --preset/--presets, Jenga flags or --policy jenga"
            );
        }
        plans.push((v.clone(), a.policy, p));
    }
    let dense_args = GenerateRequest {
        policy: PolicyOptions::default(),
        ..req.clone()
    };
    let dense_plan = plan(&dense_args, &src)?;
    if let Some(dir) = &e.save_masks {
        std::fs::create_dir_all(dir).with_context(|| format!("--save-masks {}", dir.display()))?;
    }
    let caption = match &src {
        Source::Bundle(b) => b.caption(&g.prompt),
        _ => None,
    };
    let engine = Engine::new(&crate::request::device(&g.model))?;
    for note in engine.notes() {
        eprintln!("note: {note}");
    }
    let (rows, videos) = engine.run(EvalTask {
        e: &e,
        key: &req.model,
        src: &src,
        caption: caption.as_ref(),
        dense: &dense_plan,
        plans: &plans,
    })?;
    let report = render(
        &rows,
        &engine.device().name(),
        caption.as_ref(),
        &src,
        &dense_plan,
    );
    println!("{report}");
    if let Some(p) = &e.report {
        std::fs::write(p, &report).with_context(|| format!("--report {}", p.display()))?;
    }
    if let Some(p) = &e.strips {
        let vids: Vec<&jenga_video::Video> = videos.iter().collect();
        jenga_video::write_strip_grid(p, &vids, 8, 4)
            .with_context(|| format!("--strips {}", p.display()))?;
        eprintln!(
            "wrote {} (rows: dense, then {})",
            p.display(),
            rows.iter()
                .skip(1)
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Dense and every variant on one model load.
struct EvalTask<'a> {
    e: &'a EvalArgs,
    key: &'a jenga_engine::ModelSource,
    src: &'a Source,
    caption: Option<&'a Caption>,
    dense: &'a Plan,
    plans: &'a [Variant],
}

impl ModelTask for EvalTask<'_> {
    type Output = (Vec<Row>, Vec<jenga_video::Video>);
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Self::Output> {
        let (model, _) = cx.model(self.key, self.src)?;
        eval_on(
            cx.be,
            &model,
            self.e,
            self.src,
            self.caption,
            self.dense,
            self.plans,
        )
    }
}

/// Runs one sampling; returns the output, wall seconds and process CPU seconds.
fn run_one<B: EngineBackend>(
    be: &B,
    model: &WanModel<B>,
    ctx: &B::Tensor,
    p: &Plan,
    policy: &dyn AttentionPolicy<B>,
) -> Result<(SampleOutput, f64, f64)> {
    be.synchronize()?;
    let (t, c) = (Instant::now(), crate::timing::process_cpu_secs());
    let out = sample(be, model, ctx, &p.spec, policy, None, &mut |_| {})?;
    be.synchronize()?;
    Ok((
        out,
        t.elapsed().as_secs_f64(),
        crate::timing::process_cpu_secs() - c,
    ))
}

type Variant = (String, PolicyOptions, Plan);

fn eval_on<B: EngineBackend>(
    be: &B,
    model: &WanModel<B>,
    e: &EvalArgs,
    src: &Source,
    caption: Option<&Caption>,
    dense: &Plan,
    plans: &[Variant],
) -> Result<(Vec<Row>, Vec<jenga_video::Video>)> {
    let cfg = src.config();
    let g = &e.gen;
    let ctx = src.text_context(be, model, &g.prompt, &dense.negative, dense.spec.guidance)?;
    eprintln!("eval on {}: dense reference …", be.name());
    let (d_out, d_secs, d_cpu) = run_one(be, model, &ctx, dense, &Dense)?;
    let shape = d_out.shape;
    let mut rows = vec![scene_row(
        "dense",
        "full attention, all steps".into(),
        (d_secs, d_cpu),
        &d_out,
        &d_out,
        vec![1.0],
        None,
        caption,
    )];
    let mut videos = vec![jenga_engine::to_video(&d_out.video, shape, STRIP_FPS, true)];
    for (name, a, p) in plans {
        let label = if name.is_empty() {
            p.policy.clone()
        } else {
            name.clone()
        };
        eprintln!("eval: {label} …");
        // Plans stay where the backend builds them; the probe downloads the calls it reads.
        let pol = jenga_engine::policy::build(p, a, cfg.patch_size)?;
        let inner: &dyn AttentionPolicy<B> = &pol;
        let mut probe = Probe::new(inner, e.recall_every.max(1));
        if e.save_masks.is_some() {
            let mid = p.spec.steps / 2;
            probe.capture = vec![
                (mid, 0, 0),
                (mid, model.num_layers() - 1, 0),
                (p.spec.steps - 1, 0, 1.min(cfg.num_heads - 1)),
            ];
        }
        let (out, secs, cpu) = run_one(be, model, &ctx, p, &probe)?;
        // Recall is measured single-threaded on the host inside the run: not part of its cost.
        let spent = *probe.overhead.lock().expect("probe lock");
        let (secs, cpu) = (secs - spent, cpu - spent);
        if out.shape != shape {
            bail!("eval: {label} produced {:?}, dense {:?}", out.shape, shape);
        }
        let js = p.jenga.as_ref();
        let settings = match js {
            Some(s) => format!(
                "drop {:?}, p {:?}, res {:?}, steps {:?}, shift {:?}, skip {}",
                s.sa_drop_rates,
                s.p_remain_rates,
                s.res_rate_list,
                s.step_rate_list,
                s.scheduler_shift_list,
                skip_name(&p.spec.skip, out.computed_steps)
            ),
            None => format!(
                "{}: {}, skip {}",
                p.policy,
                pol.settings(),
                skip_name(&p.spec.skip, out.computed_steps)
            ),
        };
        let density: Vec<f64> = inner
            .density_stats()
            .iter()
            .map(|d| d.mean_density)
            .collect();
        // Recall is measured on sparse calls only (dense calls hold all the mass).
        let recall = probe.mean_recall();
        rows.push(scene_row(
            &label,
            settings,
            (secs, cpu),
            &out,
            &d_out,
            density,
            recall,
            caption,
        ));
        videos.push(jenga_engine::to_video(&out.video, shape, STRIP_FPS, true));
        if let Some(dir) = &e.save_masks {
            for m in probe.masks.lock().expect("probe lock").iter() {
                let img = jenga_carve::render_mask(&m.keep, m.q_blocks, m.k_blocks, 8)?;
                let path = dir.join(format!(
                    "{label}_step{}_layer{}_head{}.png",
                    m.step, m.layer, m.head
                ));
                let rgb: Vec<u8> = img.pixels.iter().flat_map(|&v| [v, v, v]).collect();
                jenga_video::write_png(&path, img.width, img.height, &rgb)?;
            }
        }
    }
    Ok((rows, videos))
}

#[allow(clippy::too_many_arguments)]
fn scene_row(
    name: &str,
    settings: String,
    (secs, cpu): (f64, f64),
    out: &SampleOutput,
    dense: &SampleOutput,
    density: Vec<f64>,
    recall: Option<f64>,
    caption: Option<&Caption>,
) -> Row {
    let check = match caption {
        Some(c) => caption_check(c, out),
        None => "n/a (prompt is not a tiny-wan caption)".into(),
    };
    Row {
        name: name.into(),
        settings,
        secs,
        cpu,
        psnr: psnr(&out.video, &dense.video),
        ssim: ssim(&out.video, &dense.video, out.shape),
        density,
        recall,
        computed: out.computed_steps,
        check,
    }
}

/// Colour and motion read off the video against the caption: background and foreground
/// within 60 RGB units of the palette colours, and the centroid's dominant direction.
pub fn caption_check(c: &Caption, out: &SampleOutput) -> String {
    let r = read_scene(&out.video, out.shape, 60.0);
    let (bg, fg) = (
        colour_distance(r.background, c.bg),
        colour_distance(r.foreground, c.fg),
    );
    let dir = r.direction(1.0);
    let ok = bg < 60.0 && fg < 60.0 && r.has_object();
    format!(
        "{} bg Δ{bg:.0} fg Δ{fg:.0} moves {dir}{}",
        if ok { "✓" } else { "✗" },
        if dir == c.direction {
            " ✓".to_string()
        } else {
            format!(" (caption: {})", c.direction)
        }
    )
}

fn render(
    rows: &[Row],
    dev: &str,
    caption: Option<&Caption>,
    src: &Source,
    dense: &Plan,
) -> String {
    let s = &dense.spec;
    let mut o = String::new();
    let _ = writeln!(o, "{}, on {dev}.\n", dense.describe(src.name()));
    let _ = writeln!(o, "| variant | wall (s) | CPU (s) | speed-up (wall / CPU) | PSNR vs dense (dB) | SSIM | density per stage | recall | steps computed | caption check |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    let (dense_secs, dense_cpu) = (rows[0].secs, rows[0].cpu);
    for r in rows {
        let dens = r
            .density
            .iter()
            .map(|d| format!("{:.0}%", d * 100.0))
            .collect::<Vec<_>>()
            .join(" / ");
        let psnr = if r.psnr.is_infinite() {
            "∞".into()
        } else {
            format!("{:.1}", r.psnr)
        };
        let recall = r.recall.map_or("–".into(), |v| format!("{v:.3}"));
        let _ = writeln!(o, "| {} | {:.1} | {:.1} | {:.2}x / {:.2}x | {psnr} | {:.3} | {dens} | {recall} | {}/{} | {} |", r.name, r.secs, r.cpu, dense_secs / r.secs, dense_cpu / r.cpu.max(1e-9), r.ssim, r.computed, s.steps, r.check);
    }
    let _ = writeln!(o);
    for r in rows.iter().skip(1) {
        let _ = writeln!(o, "- **{}**: {}", r.name, r.settings);
    }
    if caption.is_none() {
        let _ = writeln!(o, "\n(caption check needs a tiny-wan caption prompt)");
    }
    o
}
