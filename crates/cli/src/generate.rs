//! `jenga generate`: prompt → video file. The engine does the work; this prints and writes.

use crate::args::GenerateArgs;
use crate::launch::{self, RankEnv};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use jenga_engine::hunyuan::HunyuanPrepared;
use jenga_engine::{Engine, Generated, ModelSource, Plan, Policy, Prepared, Progress, RankSetup};
use jenga_parallel::ParallelLayout;

pub fn run(a: GenerateArgs) -> Result<()> {
    // A rank started by the launcher below: one GPU, rank 0 speaks and writes; its errors
    // name it (the launcher then stops the other ranks).
    let rank = RankEnv::from_env().transpose().map_err(|e| anyhow!(e))?;
    match &rank {
        Some(r) => {
            let n = r.rank;
            generate(a, rank).with_context(|| format!("rank {n}"))
        }
        None => generate(a, None),
    }
}

fn generate(mut a: GenerateArgs, rank: Option<RankEnv>) -> Result<()> {
    let worker = rank.as_ref().is_some_and(|r| r.rank != 0);
    a.quiet |= worker;
    // Everything a user can get wrong is checked before the model loads.
    let format =
        jenga_video::check_output(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    if let Some(p) = &a.strip {
        if p.extension().is_none_or(|e| e != "png") {
            bail!("--strip {}: must be a .png file", p.display());
        }
        jenga_video::check_parent_writable(p)
            .with_context(|| format!("--strip {}", p.display()))?;
    }
    let req = crate::request::generate(&a.run, a.upscale)?;
    let prep = match &req.model {
        ModelSource::Dir(d) if jenga_engine::hunyuan::is_hunyuan_dir(d) => {
            Prep::Hunyuan(Box::new(jenga_engine::hunyuan::prepare(&req, d)?))
        }
        _ => Prep::Wan(Box::new(jenga_engine::prepare(&req)?)),
    };
    let spec = &prep.plan().spec;
    let (frames, height, width) = prep.plan().out_size;
    jenga_video::check_video_size(
        format,
        width * prep.upscale() as usize,
        height * prep.upscale() as usize,
        frames,
    )
    .with_context(|| format!("--out {}", a.out.display()))?;
    for note in prep.notes().iter().filter(|_| !worker) {
        eprintln!("note: {note}");
    }
    if !worker && matches!(prep.plan().policy.as_str(), "svg" | "draft") {
        eprintln!(
            "{} settings: {}",
            prep.plan().policy,
            prep.policy().settings()
        );
    }
    let par = &a.run.parallel;
    if let (None, Some(gpus)) = (&rank, par.gpus) {
        // Every flag and the layout are checked above; now one process per GPU (one GPU
        // alone too: the NCCL path, to measure what it costs).
        if prep.parallel().is_none() {
            bail!("--gpus {gpus}: no parallel layout");
        }
        if a.run.model.device == "cpu" {
            bail!("--gpus needs --device cuda (or auto); on the CPU use --ranks N");
        }
        if par.node_rank >= par.nodes {
            bail!("--node-rank {} of --nodes {}", par.node_rank, par.nodes);
        }
        if !jenga_cuda::cuda_available() {
            bail!("--gpus {gpus}: no CUDA driver found (libcuda could not be loaded); on the CPU use --ranks N");
        }
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        eprintln!(
            "jenga: {} ranks ({}), {gpus} GPUs on this host",
            gpus * par.nodes,
            prep.parallel().expect("checked above")
        );
        return launch::launch(
            gpus,
            par.nodes,
            par.node_rank,
            par.master,
            || {
                jenga_cuda::NcclId::new()
                    .map(|id| id.to_hex())
                    .map_err(|e| e.to_string())
            },
            &args,
        )
        .map_err(|e| anyhow!(e));
    }
    let mut device = crate::request::device(&a.run.model);
    if rank.is_some() {
        // the launcher leaves each rank its one GPU (CUDA_VISIBLE_DEVICES)
        device.device = "cuda:0".into();
    }
    let mut engine = Engine::new(&device)?;
    if let Some(r) = &rank {
        if !engine.device().is_cuda() {
            bail!(
                "rank {}: no CUDA device (a multi-GPU run needs one GPU per rank)",
                r.rank
            );
        }
        engine = engine.with_rank(RankSetup {
            rank: r.rank,
            world: r.world,
            nccl_id: r.nccl_id.clone(),
        });
    }
    for note in engine.notes().iter().filter(|_| !worker) {
        eprintln!("note: {note}");
    }

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
    let mut shown = false;
    let out = prep.generate(&engine, &mut |e| match e {
        Progress::Warning(_) | Progress::Settings(_) | Progress::Started(_) if worker => {}
        Progress::Warning(w) => bar.suspend(|| eprintln!("warning: {w}")),
        Progress::Settings(s) | Progress::Started(s) => bar.suspend(|| eprintln!("{s}")),
        Progress::Step { step, computed, .. } => {
            if !shown {
                bar.reset_elapsed();
                shown = true;
            }
            bar.set_position(step as u64 + 1);
            bar.set_message(if computed {
                ""
            } else {
                "(skipped: residual reused)"
            });
        }
        Progress::StageSwitch {
            stage,
            height,
            width,
            tokens,
        } => bar.set_message(format!("stage {stage}: {height}x{width}, {tokens} tokens")),
        Progress::Sampled => bar.finish_and_clear(),
    })?;
    if rank.as_ref().is_some_and(|r| r.rank != 0) {
        return Ok(()); // rank 0 decodes and writes
    }
    for d in &out.density {
        eprintln!(
            "stage {}: attention density {:.1}% ({} of {} calls sparse)",
            d.stage,
            100.0 * d.mean_density,
            d.sparse_calls,
            d.calls
        );
    }

    let t0 = std::time::Instant::now();
    let mut video = out.video;
    video.fps = a.fps;
    let upscale = out.upscale;
    jenga_video::write(&a.out, &video, upscale)
        .with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(p) = &a.strip {
        let (w, h, rgb) = jenga_video::frame_strip(&video, 8, upscale.min(4));
        jenga_video::write_png(p, w, h, &rgb)
            .with_context(|| format!("--strip {}", p.display()))?;
    }
    let write = t0.elapsed();
    let t = &out.timings;
    eprintln!(
        "wrote {} ({} frames, {}x{} px{}) | text {:.2}s{}, load {:.2}s, DiT {:.2}s ({} of {} steps computed, {:.2}s/step{}), VAE {:.2}s, write {:.2}s",
        a.out.display(), video.frames, video.width * upscale as usize, video.height * upscale as usize,
        if upscale > 1 { format!(", upscaled x{upscale}") } else { String::new() },
        t.text.as_secs_f64(),
        if prep.has_image() { format!(", image {:.2}s", t.image.as_secs_f64()) } else { String::new() },
        t.load.as_secs_f64(), t.dit.as_secs_f64(), out.computed_steps, out.steps,
        t.dit.as_secs_f64() / out.steps as f64,
        prep.parallel().map_or_else(String::new, |l| format!(" on {} rank{}: {l}", l.world(), if l.world() == 1 { "" } else { "s" })),
        t.decode.as_secs_f64(), write.as_secs_f64()
    );
    if let Some(c) = &out.choices {
        eprintln!("{}: {c}", prep.plan().policy);
    }
    Ok(())
}

/// A run of either model family, resolved (the cli's one view of both).
enum Prep {
    Wan(Box<Prepared>),
    Hunyuan(Box<HunyuanPrepared>),
}

impl Prep {
    fn plan(&self) -> &Plan {
        match self {
            Prep::Wan(p) => &p.plan,
            Prep::Hunyuan(p) => &p.plan,
        }
    }
    fn policy(&self) -> &Policy {
        match self {
            Prep::Wan(p) => &p.policy,
            Prep::Hunyuan(p) => &p.policy,
        }
    }
    fn upscale(&self) -> u32 {
        match self {
            Prep::Wan(p) => p.upscale,
            Prep::Hunyuan(_) => 1,
        }
    }
    fn notes(&self) -> &[String] {
        match self {
            Prep::Wan(p) => &p.notes,
            Prep::Hunyuan(_) => &[],
        }
    }
    fn parallel(&self) -> Option<ParallelLayout> {
        match self {
            Prep::Wan(p) => p.parallel,
            Prep::Hunyuan(p) => p.parallel,
        }
    }
    fn has_image(&self) -> bool {
        matches!(self, Prep::Wan(p) if p.image.is_some())
    }
    fn generate(&self, engine: &Engine, on_event: &mut dyn FnMut(Progress)) -> Result<Generated> {
        match self {
            Prep::Wan(p) => engine.generate(p, on_event),
            Prep::Hunyuan(p) => engine.generate_hunyuan(p, on_event),
        }
    }
}
