//! `jenga bench e2e --model DIR` on a whole checkpoint: prompt → umT5 → DiT → Wan VAE, timed
//! end to end per variant (dense and the Jenga presets) with the split text / DiT load / DiT /
//! VAE, the same engine path as `generate`. Dense starts from a seeded noise written to a file,
//! so `--reference CMD` (diffusers `WanPipeline`, `tools/wan_pipeline_reference.py`) runs the
//! same checkpoint from the same latent in the same run: its wall time, and the PSNR of our
//! frames against its frames. Presets report their PSNR against our dense frames.

use crate::args::E2eArgs;
use anyhow::{bail, Context, Result};
use jenga_engine::{prepare, Engine, GenerateRequest, ModelSource, Prepared};
use jenga_models::{export_f32, SafetensorsWeights, WeightSource};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

const PROMPT: &str = "A red cat walks on the grass, realistic style.";
/// An explicit negative prompt in ASCII: transformers 5's `T5Tokenizer` drops the tokenizer
/// file's byte fallback (characters outside the vocabulary become `<unk>`), so with the small
/// test tokenizer of random-weight checkpoints Wan's Chinese negative prompt would tokenize
/// differently in the reference (the cost is the same: both encode one prompt each).
const NEGATIVE: &str = "Two dogs play in the snow and the blue light is quiet.";

/// PSNR (dB) of u8 frames `a` against frames `b` in [0, 1] (same `[F, H, W, 3]` order).
pub fn psnr_u8(a: &[u8], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64 * 255.0).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    Some(10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10())
}

fn request(e: &E2eArgs, key: &ModelSource, preset: Option<&str>) -> GenerateRequest {
    let mut r = GenerateRequest {
        model: key.clone(),
        ..Default::default()
    };
    r.sampling.prompt = PROMPT.into();
    r.sampling.negative_prompt = Some(NEGATIVE.into());
    r.sampling.steps = Some(e.steps);
    r.sampling.guidance = e.guidance;
    r.video = jenga_engine::VideoSize {
        frames: e.size.frames,
        height: e.size.height,
        width: e.size.width,
    };
    r.policy.preset = preset.map(str::to_string);
    r
}

pub fn run(
    e: &E2eArgs,
    key: &ModelSource,
    json_path: Option<&Path>,
    engine: &Engine,
) -> Result<()> {
    if e.profile_masks || e.mask_kernels {
        bail!("bench e2e: --profile-masks and --mask-kernels time the DiT alone: use --random-weights");
    }
    let tmp;
    let dir: PathBuf = match &e.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("--dir {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut variants: Vec<(String, Option<String>)> = Vec::new();
    if !e.skip_dense {
        variants.push(("dense".into(), None));
    }
    if e.one_rank && e.skip_dense {
        bail!("bench e2e: --one-rank is compared with dense: drop --skip-dense");
    }
    for p in e.presets.iter().filter(|p| !p.is_empty()) {
        if p.contains('@') {
            bail!("--presets {p}: NAME@P is for the DiT-only bench (--random-weights)");
        }
        variants.push((p.clone(), Some(p.clone())));
    }
    if variants.is_empty() {
        bail!("bench e2e: nothing to run (no presets and --skip-dense)");
    }
    // Every variant resolved (and its files checked) before anything loads; dense starts from
    // a noise file so the reference can start from the same latent.
    let noise_path = dir.join("inputs.safetensors");
    let mut preps: Vec<(String, Prepared)> = Vec::new();
    for (name, preset) in &variants {
        let mut r = request(e, key, preset.as_deref());
        let p = prepare(&r).with_context(|| format!("bench e2e: {name}"))?;
        if preset.is_none() {
            let spec = &p.plan.spec;
            let shape = vec![
                p.source.config().in_dim,
                spec.frames,
                spec.height,
                spec.width,
            ];
            let n: usize = shape.iter().product();
            export_f32(
                &[("noise", shape, &jenga_pipeline::noise(spec.seed, n))],
                &noise_path,
            )?;
            r.sampling.init_noise = Some(noise_path.clone());
            preps.push((name.clone(), prepare(&r)?));
            if e.one_rank {
                r.parallel.ranks = 1;
                preps.push(("dense-1rank".into(), prepare(&r)?));
            }
        } else {
            preps.push((name.clone(), p));
        }
    }
    let mut out = crate::bench_e2e::open_json(json_path)?;
    let (f, h, w) = preps[0].1.plan.out_size;
    println!(
        "bench e2e: {} on {}, {f}x{h}x{w} (frames x h x w), {} steps, whole pipeline (text, DiT, VAE)",
        preps[0].1.source.name(),
        engine.device().name(),
        e.steps
    );
    let mut dense_frames: Option<Vec<f32>> = None;
    let mut dense_out: Option<(Vec<u8>, Vec<f32>)> = None;
    let mut dense_wall = 0.0;
    let mut lines = Vec::new();
    for (name, p) in &preps {
        engine.check_memory(p)?;
        // the one-rank variant: NCCL with a world of one on CUDA (its id made here)
        let rank = match (p.parallel.is_some(), engine.device().is_cuda()) {
            (true, true) => Some(jenga_engine::RankSetup {
                rank: 0,
                world: 1,
                nccl_id: jenga_cuda::NcclId::new()
                    .map_err(|e| anyhow::anyhow!("--one-rank: {e}"))?
                    .to_hex(),
            }),
            _ => None,
        };
        let t0 = Instant::now();
        let g = engine.generate_as(p, rank, &mut |_| {})?;
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let t = &g.timings;
        let frames: Vec<f32> = g.video.rgb.iter().map(|&v| v as f32 / 255.0).collect();
        let mut line = json!({
            "name": format!("e2e pipeline {name} {f}x{h}x{w} {} steps", e.steps),
            "ours_ms": wall,
            "text_ms": t.text.as_secs_f64() * 1e3,
            "load_ms": t.load.as_secs_f64() * 1e3,
            "dit_ms": t.dit.as_secs_f64() * 1e3,
            "vae_ms": t.decode.as_secs_f64() * 1e3,
            "computed_steps": g.computed_steps,
            "device": engine.device().name(),
        });
        if p.parallel.is_some() {
            let (frames0, latent0) = dense_out.as_ref().expect("dense runs first");
            let m = line.as_object_mut().expect("object");
            m.insert("parallel".into(), json!("1 rank"));
            m.insert(
                "bitwise_equal_to_dense".into(),
                json!(&g.video.rgb == frames0 && &g.latent == latent0),
            );
            m.insert("ratio_vs_dense".into(), json!(wall / dense_wall));
            println!("{line}");
            lines.push(line);
            continue;
        }
        if p.request.policy.preset.is_none() {
            dense_out = Some((g.video.rgb.clone(), g.latent.clone()));
            dense_wall = wall;
        }
        match &dense_frames {
            None if p.request.policy.preset.is_none() => {
                if let Some(cmd) = &e.reference {
                    let shape = [g.video.frames, g.video.height, g.video.width, 3];
                    let theirs =
                        reference(cmd, &dir, p, engine.device().is_cuda(), &g.video.rgb, shape)?;
                    if let Some((ms, psnr, extra)) = theirs {
                        let m = line.as_object_mut().expect("object");
                        m.insert("reference".into(), json!("diffusers WanPipeline"));
                        m.insert("reference_ms".into(), json!(ms));
                        m.insert("ratio".into(), json!(wall / ms));
                        m.insert("psnr_vs_reference".into(), json!(psnr));
                        m.extend(extra);
                    }
                }
                dense_frames = Some(frames);
            }
            Some(d) => {
                line["psnr_vs_dense"] = json!(psnr_u8(&g.video.rgb, d));
            }
            None => {}
        }
        println!("{line}");
        lines.push(line);
    }
    if let Some(f) = out.as_mut() {
        for l in &lines {
            writeln!(f, "{l}")?;
        }
    }
    Ok(())
}

/// The reference's wall time (ms), the PSNR of our frames against its frames, its other fields.
type Theirs = (f64, Option<f64>, serde_json::Map<String, serde_json::Value>);

/// Runs the reference on the dense request; returns its wall time (ms), the PSNR of our frames
/// against its frames and its other fields (peak memory, text time), or None when it was
/// skipped (the reason is printed).
/// `ours`: our dense frames (u8, `shape` = [F, H, W, 3]), compared in memory.
fn reference(
    cmd: &str,
    dir: &Path,
    p: &Prepared,
    cuda: bool,
    ours: &[u8],
    shape: [usize; 4],
) -> Result<Option<Theirs>> {
    let model = match &p.request.model {
        ModelSource::Dir(d) => d.clone(),
        _ => {
            println!(
                "reference skipped: WanPipeline loads diffusers directories only (--model DIR)"
            );
            return Ok(None);
        }
    };
    let spec = &p.plan.spec;
    let (f, h, w) = p.plan.out_size;
    let args: Vec<String> = [
        ("--model", model.display().to_string()),
        ("--dir", dir.display().to_string()),
        ("--prompt", p.plan.prompt.clone()),
        ("--negative-prompt", p.plan.negative.clone()),
        ("--steps", spec.steps.to_string()),
        ("--guidance", spec.guidance.to_string()),
        ("--frames", f.to_string()),
        ("--height", h.to_string()),
        ("--width", w.to_string()),
        ("--device", if cuda { "cuda" } else { "cpu" }.to_string()),
        ("--dtype", if cuda { "bf16" } else { "f32" }.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    let Some(lines) = crate::bench::reference::run(cmd, &args) else {
        return Ok(None);
    };
    let Some(r) = lines.into_iter().find(|l| l["name"] == "pipeline") else {
        println!("reference skipped: no `pipeline` line in its output");
        return Ok(None);
    };
    let Some(ms) = r["ms"].as_f64() else {
        println!("reference skipped: its `pipeline` line has no `ms`");
        return Ok(None);
    };
    let theirs = SafetensorsWeights::open(&dir.join("reference.safetensors"))
        .context("reading the reference's frames")?;
    let psnr = match theirs.load("frames", &shape) {
        Ok(t) => psnr_u8(ours, &t),
        Err(err) => {
            println!("reference frames not comparable: {err}");
            None
        }
    };
    let mut extra = serde_json::Map::new();
    for k in ["peak_bytes", "text_ms"] {
        if let Some(v) = r.get(k) {
            extra.insert(format!("reference_{k}"), v.clone());
        }
    }
    Ok(Some((ms, psnr, extra)))
}
