//! `jenga bench vae`: the Wan2.1 VAE decode (and, with `--tiled`, the tiled decode) at a
//! latent size (default 21x60x104: 81 frames 480x832), on seeded random weights with the real
//! architecture (or a given `--weights` checkpoint), against diffusers' `AutoencoderKLWan` in the
//! same run (`--reference "python3 tools/bench_wan_vae.py"`): time, rel-L2 of the frames,
//! peak memory on both sides.
//!
//! Our peak is the drop of the device's free memory (cudaMemGetInfo, polled every 2 ms during
//! the run) below its level before loading; the reference reports torch's
//! `max_memory_allocated`, so both count weights + activations (ours also the allocator's
//! cached blocks).

use anyhow::{bail, Context, Result};
use clap::Args;
use jenga_engine::{Device, Engine, EngineBackend, OnDevice};
use jenga_models::vae::wan::{ConvPath, Tiling, WanVae, WanVaeConfig};
use jenga_models::{export_bf16, export_f32, RandomWeights, SafetensorsWeights, WeightSource};
use jenga_tensor::Backend;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// `jenga bench vae` flags.
#[derive(Args, Debug, Clone)]
pub struct VaeArgs {
    /// Latent size FRAMESxHEIGHTxWIDTH (21x60x104: 81 frames 480x832; 21x90x160: 720p).
    #[arg(long, default_value = "21x60x104")]
    pub latent: String,
    /// Also time the tiled decode (diffusers' enable_tiling: tiles of 256 px, 192 apart).
    #[arg(long)]
    pub tiled: bool,
    /// Only the tiled decode (e.g. the 720p memory check).
    #[arg(long)]
    pub tiled_only: bool,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// A VAE checkpoint (diffusers `vae/` directory or a safetensors file, either naming);
    /// default: seeded random weights of the Wan2.1 VAE's architecture.
    #[arg(long = "weights", value_name = "PATH")]
    pub vae: Option<PathBuf>,
    /// Where weights, inputs and our frames are written for the reference (default: a
    /// temporary directory, removed after).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Reference command run after our timings (same run), e.g.
    /// "python3 tools/bench_wan_vae.py"; it gets `--dir DIR --weights PATH --device cpu|cuda --dtype D`.
    #[arg(long, value_name = "CMD")]
    pub reference: Option<String>,
    /// Convolution path: `taps` (GEMMs over kernel taps on the device), `backend` (the
    /// backend's conv3d: host im2col + GEMM) or `auto`.
    #[arg(long, default_value = "auto")]
    pub conv: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Random weights shaped for the VAE: RMS-norm gammas 1 (as initialised), the rest as
/// [`RandomWeights`] (uniform ±1/√fan_in); records every tensor asked for.
struct VaeRandom {
    inner: RandomWeights,
    asked: Mutex<Vec<(String, Vec<usize>)>>,
}

impl WeightSource for VaeRandom {
    fn load(&self, name: &str, shape: &[usize]) -> jenga_models::Result<Vec<f32>> {
        if let Ok(mut a) = self.asked.lock() {
            a.push((name.to_string(), shape.to_vec()));
        }
        if name.ends_with(".gamma") {
            return Ok(vec![1.0; shape.iter().product()]);
        }
        self.inner.load(name, shape)
    }
    fn describe(&self) -> String {
        format!("{} (VAE)", self.inner.describe())
    }
}

struct Run<'a> {
    args: &'a VaeArgs,
    cfg: WanVaeConfig,
    src: &'a dyn WeightSource,
    latent: &'a [f32],
    shape: [usize; 4],
    device: &'a Device,
}

/// One timed variant: (name, median ms, peak bytes, frames of the last run).
type Timed = (String, f64, Option<usize>, Vec<f32>);

impl OnDevice for Run<'_> {
    type Output = Vec<Timed>;
    fn run<B: EngineBackend>(self, be: &B) -> Result<Vec<Timed>> {
        // Peak memory on the GPU only (the host's available RAM moves with other processes).
        let base = if self.device.is_cuda() {
            self.device.memory_free().map(|(b, _)| b)
        } else {
            None
        };
        let low = AtomicUsize::new(base.unwrap_or(0));
        let done = AtomicBool::new(false);
        let mut out = Vec::new();
        std::thread::scope(|s| -> Result<()> {
            if base.is_some() {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        if let Some((f, _)) = self.device.memory_free() {
                            low.fetch_min(f, Ordering::Relaxed);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                });
            }
            let r = (|| -> Result<()> {
                let path = match self.args.conv.as_str() {
                    "taps" => ConvPath::Taps,
                    "backend" => ConvPath::Backend,
                    "auto" => ConvPath::auto(be),
                    other => bail!("--conv {other}: expected taps, backend or auto"),
                };
                println!("conv path: {path:?}");
                let mut vae = WanVae::load_with(be, self.src, self.cfg.clone(), path)?;
                let mut variants = Vec::new();
                if !self.args.tiled_only {
                    variants.push(("decode", None));
                }
                if self.args.tiled || self.args.tiled_only {
                    variants.push(("decode tiled", Some(Tiling::default())));
                }
                for (name, tiling) in variants {
                    vae.tiling = tiling;
                    low.store(base.unwrap_or(0), Ordering::Relaxed);
                    let mut times = Vec::new();
                    let mut frames = Vec::new();
                    for i in 0..self.args.repeats.max(1) + 1 {
                        be.synchronize()?;
                        let t = Instant::now();
                        frames = vae.decode_raw(be, self.latent, self.shape)?.data;
                        be.synchronize()?;
                        if i > 0 {
                            times.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    times.sort_by(|a, b| a.total_cmp(b));
                    let peak = base.map(|b| b.saturating_sub(low.load(Ordering::Relaxed)));
                    let ms = times[times.len() / 2];
                    println!(
                        "ours  {name}: {ms:.1} ms{}",
                        peak.map_or(String::new(), |p| format!(
                            ", peak {:.2} GiB",
                            p as f64 / (1u64 << 30) as f64
                        ))
                    );
                    out.push((name.to_string(), ms, peak, frames));
                }
                Ok(())
            })();
            done.store(true, Ordering::Relaxed);
            r
        })?;
        Ok(out)
    }
}

fn parse_latent(s: &str) -> Result<[usize; 3]> {
    let (f, h, w) = crate::bench::parse_size(s)?;
    Ok([f, h, w])
}

pub fn run(a: &VaeArgs, json: Option<&Path>, engine: &Engine) -> Result<()> {
    let [f, h, w] = parse_latent(&a.latent).context("--latent")?;
    let tmp;
    let dir = match &a.export {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("--export {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    // Weights: the given checkpoint, or random ones exported (bf16) so that both sides load
    // the same values from the same file.
    let (cfg, weights_path) = match &a.vae {
        Some(p) => {
            let c = p.join("config.json");
            let cfg = if p.is_dir() && c.is_file() {
                WanVaeConfig::from_file(&c)?
            } else {
                WanVaeConfig::default()
            };
            (cfg, p.clone())
        }
        None => {
            let cfg = WanVaeConfig::default();
            let rnd = VaeRandom {
                inner: RandomWeights { seed: a.seed },
                asked: Mutex::new(Vec::new()),
            };
            // Names and shapes: one load on the host (127M parameters).
            WanVae::load(&jenga_tensor::CpuBackend::new(), &rnd, cfg.clone())?;
            let shapes = rnd.asked.into_inner().unwrap_or_default();
            let rnd = VaeRandom {
                inner: RandomWeights { seed: a.seed },
                asked: Mutex::new(Vec::new()),
            };
            let p = dir.join("vae.safetensors");
            export_bf16(&rnd, &shapes, &p)?;
            (cfg, p)
        }
    };
    let src = SafetensorsWeights::open(&weights_path)?;
    let shape = [cfg.z_dim, f, h, w];
    let n: usize = shape.iter().product();
    let latent = crate::bench::attention::random_data(a.seed + 7, n);
    let z5 = vec![1, shape[0], f, h, w];
    export_f32(&[("z", z5, &latent)], &dir.join("inputs.safetensors"))?;
    let device = engine.device();
    let dev_kind = if device.is_cuda() { "cuda" } else { "cpu" };
    let dtype = match device {
        Device::Cpu(be) => be.storage_dtype(),
        Device::Cuda(be) => be.storage_dtype(),
    };
    let dtype = format!("{dtype:?}").to_lowercase();
    println!(
        "bench vae: latent {shape:?} -> {} frames {}x{}, {} on {}, weights {}",
        1 + 4 * (f - 1),
        8 * h,
        8 * w,
        dtype,
        device.name(),
        src.describe()
    );
    let timed = device.run(Run {
        args: a,
        cfg,
        src: &src,
        latent: &latent,
        shape,
        device,
    })?;
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let mut reference = None;
    if let Some(cmd) = &a.reference {
        let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (name, _, _, fr) in &timed {
            let key = if name.contains("tiled") {
                "tiled"
            } else {
                "plain"
            };
            tensors.push((key.into(), vec![1, 3, 1 + 4 * (f - 1), 8 * h, 8 * w], fr));
        }
        let views: Vec<(&str, Vec<usize>, &[f32])> = tensors
            .iter()
            .map(|(k, s, d)| (k.as_str(), s.clone(), *d))
            .collect();
        export_f32(&views, &dir.join("ours.safetensors"))?;
        let mut args = vec![
            "--dir".to_string(),
            dir.display().to_string(),
            "--weights".into(),
            weights_path.display().to_string(),
            "--device".into(),
            dev_kind.into(),
            "--dtype".into(),
            dtype.clone(),
            "--repeats".into(),
            a.repeats.to_string(),
        ];
        if a.tiled || a.tiled_only {
            args.push("--tiled".into());
        }
        if a.tiled_only {
            args.push("--tiled-only".into());
        }
        reference = crate::bench::reference::run(cmd, &args);
    }
    for (name, ms, peak, _) in &timed {
        let theirs = reference.as_ref().and_then(|r| {
            r.iter()
                .find(|v| v["name"].as_str() == Some(name.as_str()))
                .cloned()
        });
        let rms = theirs.as_ref().and_then(|t| t["ms"].as_f64());
        let line = serde_json::json!({
            "name": format!("vae {name} {}", a.latent), "ours_ms": ms,
            "reference": theirs.as_ref().map(|_| "diffusers AutoencoderKLWan"),
            "reference_ms": rms, "ratio": rms.map(|r| ms / r),
            "rel_l2": theirs.as_ref().and_then(|t| t["rel_l2"].as_f64()),
            "ours_peak_bytes": peak,
            "reference_peak_bytes": theirs.as_ref().and_then(|t| t["peak_bytes"].as_u64()),
            "dtype": dtype, "device": device.name(),
        });
        println!("{line}");
        lines.push(line);
    }
    if let Some(p) = json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .with_context(|| format!("--json {}", p.display()))?;
        for l in &lines {
            writeln!(f, "{l}")?;
        }
    }
    if timed.is_empty() {
        bail!("nothing timed");
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("jenga-bench-vae-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| p.display().to_string())?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
