//! `jenga generate`: prompt → video file. The engine does the work; this prints and writes.

use crate::args::GenerateArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use jenga_engine::{Engine, Progress};

pub fn run(a: GenerateArgs) -> Result<()> {
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
    let prep = jenga_engine::prepare(&crate::request::generate(&a.run, a.upscale)?)?;
    let spec = &prep.plan.spec;
    let (frames, height, width) = prep.plan.out_size;
    jenga_video::check_video_size(
        format,
        width * prep.upscale as usize,
        height * prep.upscale as usize,
        frames,
    )
    .with_context(|| format!("--out {}", a.out.display()))?;
    for note in &prep.notes {
        eprintln!("note: {note}");
    }
    if matches!(prep.plan.policy.as_str(), "svg" | "draft") {
        eprintln!("{} settings: {}", prep.plan.policy, prep.policy.settings());
    }
    let engine = Engine::new(&crate::request::device(&a.run.model))?;
    for note in engine.notes() {
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
    let out = engine.generate(&prep, &mut |e| match e {
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
        "wrote {} ({} frames, {}x{} px{}) | text {:.2}s{}, load {:.2}s, DiT {:.2}s ({} of {} steps computed, {:.2}s/step), VAE {:.2}s, write {:.2}s",
        a.out.display(), video.frames, video.width * upscale as usize, video.height * upscale as usize,
        if upscale > 1 { format!(", upscaled x{upscale}") } else { String::new() },
        t.text.as_secs_f64(),
        if prep.image.is_some() { format!(", image {:.2}s", t.image.as_secs_f64()) } else { String::new() },
        t.load.as_secs_f64(), t.dit.as_secs_f64(), out.computed_steps, out.steps,
        t.dit.as_secs_f64() / out.steps as f64, t.decode.as_secs_f64(), write.as_secs_f64()
    );
    if let Some(c) = &out.choices {
        eprintln!("{}: {c}", prep.plan.policy);
    }
    Ok(())
}
