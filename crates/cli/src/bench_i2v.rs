//! `jenga bench i2v`: the image-to-video components at full size on a diffusers-style
//! directory (`transformer/` = an i2v `WanTransformer3DModel`, `image_encoder/` = a
//! `CLIPVisionModel`): the CLIP ViT-H penultimate states of one image, and one DiT forward
//! (batch 1, dense) with the conditioning latent and the CLIP rows, against diffusers /
//! transformers on the same weights and inputs in the same run
//! (`--reference "python3 tools/wan_i2v_reference.py"`): time, ratio, rel-L2.
//!
//! `python3 tools/wan_i2v_reference.py --make DIR --device cuda` writes random full-size
//! weights (Wan2.1-I2V-14B, open-clip ViT-H/14) once.

use crate::bench::{reference, Record};
use anyhow::{bail, Context, Result};
use clap::Args;
use jenga_carve::{AttnCtx, Dense};
use jenga_engine::{Device, Engine, EngineBackend};
use jenga_models::image::{ClipVision, ClipVisionConfig};
use jenga_models::wan::WanI2v;
use jenga_models::{config_for_class, open_weights, Conditioning, Denoiser, WanModel};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `jenga bench i2v` flags.
#[derive(Args, Debug, Clone)]
pub struct I2vArgs {
    /// A directory with `transformer/` (i2v WanTransformer3DModel) and `image_encoder/`
    /// (CLIPVisionModel), e.g. a diffusers Wan2.1 I2V pipeline or one made by
    /// `tools/wan_i2v_reference.py --make DIR`.
    #[arg(long, value_name = "DIR")]
    pub weights: PathBuf,
    /// Latent size FRAMESxHEIGHTxWIDTH of the forward (21x60x104: 81 frames 480x832).
    #[arg(long, default_value = "21x60x104")]
    pub latent: String,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Reference command run after our timings (same run), e.g.
    /// "python3 tools/wan_i2v_reference.py"; it gets `--dir WEIGHTS --io FILE --device D
    /// --repeats N`.
    #[arg(long, value_name = "CMD")]
    pub reference: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: &I2vArgs, json: Option<&Path>, engine: &Engine) -> Result<()> {
    let records = match engine.device() {
        Device::Cpu(be) => bench(be, a, "cpu")?,
        Device::Cuda(be) => bench(be.as_ref(), a, "cuda")?,
    };
    if let Some(p) = json {
        let mut f = std::fs::File::create(p).with_context(|| format!("--json {}", p.display()))?;
        for r in &records {
            writeln!(f, "{}", r.json())?;
        }
    }
    Ok(())
}

fn record(name: &str, ms: f64, dev: &str, load_s: f64) -> Record {
    let mut extra = serde_json::Map::new();
    extra.insert("load_s".into(), serde_json::json!(load_s));
    Record {
        name: name.into(),
        ours_ms: ms,
        reference: None,
        reference_ms: None,
        tflops: 0.0,
        density: None,
        device: dev.into(),
        extra,
    }
}

fn bench<B: EngineBackend>(be: &B, a: &I2vArgs, dev_kind: &str) -> Result<Vec<Record>> {
    let (f, h, w) = crate::bench::parse_size(&a.latent)?;
    let (tdir, cdir) = (
        a.weights.join("transformer"),
        a.weights.join("image_encoder"),
    );
    let ccfg = ClipVisionConfig::from_hf_file(&cdir.join("config.json"))?;
    let cw = open_weights(&cdir)?;
    let tcfg_path = tdir.join("config.json");
    let text = std::fs::read_to_string(&tcfg_path)
        .with_context(|| format!("reading {}", tcfg_path.display()))?;
    let (_, _, cfg) = config_for_class(&tcfg_path, &text)?;
    if !cfg.is_i2v() {
        bail!("{}: not an image-to-video DiT", tcfg_path.display());
    }
    let dev = be.name();
    println!("device: {dev}");
    let mut out = Vec::new();
    let mut io: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();

    // CLIP: one 224 px image, penultimate states
    let t0 = Instant::now();
    let clip = ClipVision::load(be, &ccfg, cw.as_ref())?;
    be.synchronize()?;
    let clip_load = t0.elapsed().as_secs_f64();
    let s = ccfg.image;
    let px = jenga_pipeline::noise(a.seed + 1, 3 * s * s);
    let mut states = None;
    let ms = crate::bench::time_ms(be, a.repeats, || {
        states = Some(clip.penultimate(be, &px)?);
        Ok(())
    })?;
    let states = be.download(&states.expect("timed at least once"))?;
    println!(
        "CLIP {} layers x {} ({} tokens): {ms:.1} ms (loaded in {clip_load:.1} s)",
        ccfg.layers,
        ccfg.hidden,
        ccfg.tokens()
    );
    out.push(record("clip penultimate", ms, &dev, clip_load));
    io.push(("pixels".into(), vec![1, 3, s, s], px));
    io.push((
        "clip".into(),
        vec![1, ccfg.tokens(), ccfg.hidden],
        states.clone(),
    ));
    drop(clip);

    // one DiT forward, batch 1
    let t0 = Instant::now();
    let tw = open_weights(&tdir)?;
    let model = WanModel::load(be, &cfg, tw.as_ref())
        .with_context(|| format!("loading {}", tdir.display()))?;
    be.synchronize()?;
    let dit_load = t0.elapsed().as_secs_f64();
    let lat = jenga_pipeline::noise(a.seed + 2, cfg.out_dim * f * h * w);
    let y = jenga_pipeline::noise(a.seed + 3, (cfg.in_dim - cfg.out_dim) * f * h * w);
    let ctx: Vec<f32> = jenga_pipeline::noise(a.seed + 4, cfg.text_len * cfg.text_dim);
    let d = WanI2v {
        model: &model,
        ys: vec![be.upload(&y, &[1, cfg.in_dim - cfg.out_dim, f, h, w])?],
    };
    let cond = d.condition(
        be,
        &Conditioning::Image {
            states: be.upload(&ctx, &[1, cfg.text_len, cfg.text_dim])?,
            image: be.upload(&states, &[1, ccfg.tokens(), ccfg.hidden])?,
        },
    )?;
    let grid = d.grid(f, h, w)?;
    let geom = d.stage(be, grid, None)?;
    let x = be.upload(&lat, &[1, cfg.out_dim, f, h, w])?;
    let actx = AttnCtx::one_forward(grid, cfg.num_layers);
    let t = 500.0;
    let forward = || -> Result<_> {
        let emb = d.embed(be, &x, t, &geom, &cond)?;
        let hid = d.blocks(be, &emb, &cond, &geom, &Dense, &actx)?;
        Ok(d.head(be, &hid, &emb, &geom)?)
    };
    let mut v = None;
    let ms = crate::bench::time_ms(be, a.repeats, || {
        v = Some(forward()?);
        Ok(())
    })?;
    let v = be.download(&v.expect("timed at least once"))?;
    let tokens = grid.0 * grid.1 * grid.2;
    println!(
        "i2v DiT {} layers x {} ({:.2}B parameters), {f}x{h}x{w} latent ({tokens} tokens): {ms:.1} ms (loaded in {dit_load:.1} s)",
        cfg.num_layers,
        cfg.dim,
        cfg.num_params() as f64 / 1e9
    );
    out.push(record("i2v dit forward", ms, &dev, dit_load));
    io.push(("x".into(), vec![1, cfg.out_dim, f, h, w], lat));
    io.push(("y".into(), vec![1, cfg.in_dim - cfg.out_dim, f, h, w], y));
    io.push(("context".into(), vec![1, cfg.text_len, cfg.text_dim], ctx));
    io.push(("t".into(), vec![1], vec![t as f32]));
    io.push(("v".into(), vec![1, cfg.out_dim, f, h, w], v));
    drop(d);
    drop(model);

    if let Some(cmd) = &a.reference {
        let lines = reference::run_with_files(cmd, "i2v", &[("io.safetensors", &io)], |dir| {
            let file = dir.join("io.safetensors").display().to_string();
            let weights = a.weights.display().to_string();
            let repeats = a.repeats.to_string();
            [
                "--dir",
                &weights,
                "--io",
                &file,
                "--device",
                dev_kind,
                "--repeats",
                &repeats,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })?;
        for l in lines.unwrap_or_default() {
            let Some(r) = out
                .iter_mut()
                .find(|r| Some(r.name.as_str()) == l.get("name").and_then(|v| v.as_str()))
            else {
                continue;
            };
            let ms = l["ms"].as_f64().unwrap_or(f64::NAN);
            r.reference = Some(l["reference"].as_str().unwrap_or("reference").to_string());
            r.reference_ms = Some(ms);
            r.extra.insert(
                "ratio_ours_over_reference".into(),
                serde_json::json!((r.ours_ms / ms * 1e3).round() / 1e3),
            );
            for k in ["rel_l2", "max_abs", "peak_gib"] {
                if let Some(v) = l.get(k) {
                    r.extra.insert(k.into(), v.clone());
                }
            }
            println!(
                "{:<18} ours {:>9.1} ms  reference {:>9.1} ms  ratio {:.3}  rel-L2 {}",
                r.name,
                r.ours_ms,
                ms,
                r.ours_ms / ms,
                l.get("rel_l2").map_or("-".into(), |v| v.to_string())
            );
        }
    }
    Ok(out)
}
