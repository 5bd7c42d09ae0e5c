//! `jenga bench`: timings with a reference measured in the same run.
//!
//! Every sub-command times our path (synchronize + wall clock, one warm-up, median of
//! repeats) and, with `--reference CMD`, spawns the PyTorch script of `tools/` right after in the
//! same process tree, parses its JSON lines and prints ours vs theirs.

pub(crate) mod attention;
mod jenga_plans;
pub(crate) mod reference;

use crate::args::{BenchArgs, BenchWhat};
use anyhow::{bail, Context, Result};
use jenga_carve::{AttnCtx, Dense};
use jenga_engine::{Device, Engine, Source};
use jenga_models::WanModel;
use jenga_tensor::Act;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One result line (also the `--json` format).
pub struct Record {
    pub name: String,
    pub ours_ms: f64,
    pub reference: Option<String>,
    pub reference_ms: Option<f64>,
    /// Achieved rate of ours, in TFLOP/s.
    pub tflops: f64,
    /// Fraction of attention block pairs computed (attention benches).
    pub density: Option<f64>,
    pub device: String,
    /// Further fields (reference TFLOP/s, relative error, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    pub fn json(&self) -> String {
        let mut o = serde_json::json!({
            "name": self.name, "ours_ms": round3(self.ours_ms), "reference": self.reference,
            "reference_ms": self.reference_ms.map(round3), "tflops": round3(self.tflops),
            "density": self.density, "device": self.device,
        });
        if let Some(m) = o.as_object_mut() {
            m.extend(self.extra.clone());
        }
        o.to_string()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Files `bench dit --export` writes; an existing directory may hold only these (an earlier
/// export), so a user's own `config.json` is never overwritten.
const EXPORT_FILES: [&str; 4] = [
    "config.json",
    "weights.safetensors",
    "inputs.safetensors",
    "ours.safetensors",
];

fn check_export_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("--export {}: exists and is not a directory", dir.display());
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("--export {}", dir.display()))?;
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !EXPORT_FILES.contains(&name.as_str()) {
            bail!(
                "--export {}: the directory holds {name}, which is not an earlier export's; use a new or empty directory",
                dir.display()
            );
        }
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    let mut json = match &a.json {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("--json {}", p.display()))?)
        }
        None => None,
    };
    let engine = Engine::new(&crate::request::device(&a.model))?;
    for note in engine.notes() {
        eprintln!("note: {note}");
    }
    let records = match (&a.what, engine.device()) {
        (BenchWhat::Dit { .. }, Device::Cpu(be)) => bench_dit(be, &a, "cpu", None)?,
        (BenchWhat::Dit { .. }, Device::Cuda(be)) => {
            let on = |on: bool| be.set_op_timing(on);
            let read = || be.op_times();
            bench_dit(be.as_ref(), &a, "cuda", Some((&on, &read)))?
        }
        (BenchWhat::Attention { .. }, Device::Cpu(be)) => attention::run(be, &a, "cpu")?,
        (BenchWhat::Attention { .. }, Device::Cuda(be)) => attention::run(be.as_ref(), &a, "cuda")?,
        // Writes its own table, report and JSON lines.
        (BenchWhat::Policies(p), _) => {
            return crate::bench_policies::run(p, &a.model, a.json.as_deref(), &engine)
        }
        // Writes its own JSON lines (to the file created above).
        (BenchWhat::Vae(v), _) => return crate::bench_vae::run(v, a.json.as_deref(), &engine),
        (BenchWhat::E2e(e), _) => {
            return crate::bench_e2e::run(e, &a.model, a.json.as_deref(), &engine)
        }
        (BenchWhat::Text(t), _) => return crate::bench_text::run(t, a.json.as_deref(), &engine),
        (BenchWhat::I2v(t), _) => return crate::bench_i2v::run(t, a.json.as_deref(), &engine),
    };
    for r in &records {
        if let Some(f) = json.as_mut() {
            writeln!(f, "{}", r.json())?;
        }
    }
    Ok(())
}

/// Parse `FxHxW` (model units).
pub fn parse_size(s: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("size `{s}`: expected FRAMESxHEIGHTxWIDTH, e.g. 8x32x32"))?;
    if v.len() != 3 || v.contains(&0) {
        bail!("size `{s}`: expected FRAMESxHEIGHTxWIDTH with positive numbers");
    }
    Ok((v[0], v[1], v[2]))
}

/// Median of `n` timed runs of `f` after one warm-up, in ms (synchronize + wall clock).
pub(crate) fn time_ms<B: jenga_engine::EngineBackend>(
    be: &B,
    n: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    f()?;
    be.synchronize()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        f()?;
        be.synchronize()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

/// Square matmul through the backend's linear (the `gemm` crate on the CPU): the ceiling the
/// whole forward is compared with.
fn matmul_ms<B: jenga_engine::EngineBackend>(be: &B, n: usize) -> Result<f64> {
    let a = be.upload(&attention::random_data(1, n * n), &[n, n])?;
    let w = be.upload(&attention::random_data(2, n * n), &[n, n])?;
    time_ms(be, 3, || {
        be.linear(&a, &w, None, Act::None)?;
        Ok(())
    })
}

/// A directory removed on drop (the export made only for `--reference`).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Switch per-op timing on/off, and read its totals (the CUDA backend's).
type OpTiming<'a> = (&'a dyn Fn(bool), &'a dyn Fn() -> Vec<jenga_cuda::OpTime>);

fn bench_dit<B: jenga_engine::EngineBackend>(
    be: &B,
    a: &BenchArgs,
    dev_kind: &str,
    op_timing: Option<OpTiming>,
) -> Result<Vec<Record>> {
    let BenchWhat::Dit {
        sizes,
        repeats,
        export,
        reference,
        op_times,
    } = &a.what
    else {
        unreachable!("bench_dit is called for `bench dit`")
    };
    let repeats = *repeats;
    // The reference needs an export; without --export it goes to a temporary directory.
    let mut _tmp = None;
    let export: Option<PathBuf> = match (export, reference) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(_)) => {
            let d = std::env::temp_dir().join(format!("jenga-bench-dit-{}", std::process::id()));
            _tmp = Some(TempDir(d.clone()));
            Some(d)
        }
        (None, None) => None,
    };
    if let Some(dir) = export.as_ref().filter(|d| d.exists()) {
        check_export_dir(dir)?;
    }
    let src = Source::open(&crate::request::model(&a.model)?)?;
    let cfg = src.config().clone();
    let mut gflop = 0.0;
    for s in sizes {
        let (f, h, w) = parse_size(s)?;
        let [pt, ph, pw] = cfg.patch_size;
        let (lin, attn) = cfg.forward_flops((f / pt) * (h / ph) * (w / pw), cfg.text_len, 1.0);
        gflop += (lin + attn) * (repeats + 1) as f64 / 1e9;
    }
    crate::timing::warn_cpu_cost(dev_kind == "cpu", a.model.threads, gflop, "bench dit");
    let t0 = Instant::now();
    let model = WanModel::load(be, &cfg, src.weights())
        .with_context(|| format!("loading {} onto {}", src.name(), be.name()))?;
    println!(
        "loaded {} ({:.2} B parameters) in {:.1} s",
        src.name(),
        cfg.num_params() as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    let text = src.encode(be, &["a red circle moving right on a blue background"])?;
    let ctx = model.embed_text(be, &be.upload(&text, &[1, cfg.text_len, cfg.text_dim])?)?;
    if let Some(dir) = &export {
        let t0 = Instant::now();
        std::fs::create_dir_all(dir).with_context(|| format!("--export {}", dir.display()))?;
        std::fs::write(dir.join("config.json"), cfg.to_json())?;
        jenga_models::export_bf16(
            src.weights(),
            &cfg.tensor_shapes(),
            &dir.join("weights.safetensors"),
        )?;
        println!(
            "exported weights ({:.2} GB bf16) in {:.1} s",
            cfg.num_params() as f64 * 2e-9,
            t0.elapsed().as_secs_f64()
        );
    }
    // Large enough to reach the device's matmul rate (8192^3 is ~1 ms on an H100).
    let n = if dev_kind == "cuda" { 8192 } else { 1024 };
    let mm = matmul_ms(be, n)?;
    let mm_gflops = 2.0 * (n as f64).powi(3) / mm / 1e6;
    let dev_name = be.name();
    println!("device: {dev_name}");
    println!("reference: square matmul {n}^3 through the backend's linear: {mm:.2} ms = {mm_gflops:.1} GFLOP/s");
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>12} {:>10}",
        "size (FxHxW)", "tokens", "ms", "GFLOP", "GFLOP/s", "% matmul"
    );
    let mut out = Vec::new();
    for s in sizes {
        let (f, h, w) = parse_size(s)?;
        let grid = model.grid(f, h, w)?;
        let tokens = grid.0 * grid.1 * grid.2;
        let what = || format!("DiT forward of {} at {s} ({tokens} tokens)", src.name());
        let geom = model.geometry(be, grid, None).with_context(what)?;
        let x = be
            .upload(
                &jenga_pipeline::noise(3, cfg.in_dim * f * h * w),
                &[1, cfg.in_dim, f, h, w],
            )
            .with_context(what)?;
        let actx = AttnCtx::one_forward(grid, cfg.num_layers);
        if let (Some(dir), true) = (&export, s == &sizes[0]) {
            let v = model
                .forward(be, &x, 500.0, &ctx, &geom, &Dense, &actx)
                .with_context(what)?;
            let v = be.download(&v)?;
            let xs = be.download(&x)?;
            let shape = vec![1, cfg.in_dim, f, h, w];
            jenga_models::export_f32(
                &[
                    ("x", shape.clone(), &xs),
                    ("t", vec![1], &[500.0]),
                    ("context", vec![1, cfg.text_len, cfg.text_dim], &text),
                ],
                &dir.join("inputs.safetensors"),
            )?;
            jenga_models::export_f32(
                &[("v", vec![1, cfg.out_dim, f, h, w], &v)],
                &dir.join("ours.safetensors"),
            )?;
            println!(
                "exported config, weights, inputs and our output for {s} to {}",
                dir.display()
            );
        }
        let ms = time_ms(be, repeats, || {
            model.forward(be, &x, 500.0, &ctx, &geom, &Dense, &actx)?;
            Ok(())
        })
        .with_context(what)?;
        match (op_times, op_timing) {
            (true, Some((on, read))) => {
                on(true);
                let r = model.forward(be, &x, 500.0, &ctx, &geom, &Dense, &actx);
                on(false);
                r.with_context(what)?;
                print_op_times(s, ms, &read());
            }
            (true, None) => println!("--op-times: per-op timing needs the CUDA backend"),
            _ => {}
        }
        let (lin, att) = cfg.forward_flops(tokens, cfg.text_len, 1.0);
        let gflop = (lin + att) / 1e9;
        let rate = gflop / ms * 1e3;
        println!(
            "{:<14} {:>8} {:>10.1} {:>10.2} {:>12.1} {:>9.0}%",
            s,
            tokens,
            ms,
            gflop,
            rate,
            100.0 * rate / mm_gflops
        );
        let mut extra = serde_json::Map::new();
        extra.insert("matmul_gflops".into(), serde_json::json!(round3(mm_gflops)));
        extra.insert("tokens".into(), serde_json::json!(tokens));
        out.push(Record {
            name: format!("dit_forward {} {s} ({tokens} tokens)", src.name()),
            ours_ms: ms,
            reference: None,
            reference_ms: None,
            tflops: rate / 1e3,
            density: None,
            device: dev_name.clone(),
            extra,
        });
    }
    if let (Some(cmd), Some(dir)) = (reference, &export) {
        let args = [
            "--dir".to_string(),
            dir.display().to_string(),
            "--device".into(),
            dev_kind.into(),
            "--repeats".into(),
            repeats.to_string(),
        ];
        if let Some(lines) = reference::run(cmd, &args) {
            pair_dit(&mut out, &lines);
        }
    }
    Ok(out)
}

/// Attach the eager forward's line to our first size and print the comparison.
/// One line per op: calls, synchronised time and its share of their sum.
fn print_op_times(size: &str, forward_ms: f64, ops: &[jenga_cuda::OpTime]) {
    let total: f64 = ops.iter().map(|o| o.seconds).sum();
    println!(
        "ops of one forward at {size}, each between two synchronizes: sum {:.1} ms (unsynchronised forward {forward_ms:.1} ms)",
        total * 1e3
    );
    println!("  {:<36} {:>7} {:>10} {:>7}", "op", "calls", "ms", "share");
    for o in ops {
        println!(
            "  {:<36} {:>7} {:>10.2} {:>6.1}%",
            o.op,
            o.calls,
            o.seconds * 1e3,
            100.0 * o.seconds / total.max(f64::MIN_POSITIVE)
        );
    }
}

fn pair_dit(out: &mut [Record], lines: &[serde_json::Value]) {
    let Some(first) = out.first_mut() else {
        return;
    };
    let Some(l) = lines.iter().find(|l| l.get("ms").is_some()) else {
        println!("reference printed no timing line");
        return;
    };
    let ms = l["ms"].as_f64().unwrap_or(f64::NAN);
    let name = l["reference"].as_str().unwrap_or("reference").to_string();
    let rel = l.get("rel_l2").and_then(|v| v.as_f64());
    println!(
        "{:<44} {:>10} {:>12} {:>8} {:>10}",
        "ours vs reference (first size)", "ours ms", "reference ms", "ratio", "rel L2"
    );
    println!(
        "{:<44} {:>10.1} {:>12.1} {:>8.3} {:>10}",
        name,
        first.ours_ms,
        ms,
        first.ours_ms / ms,
        rel.map_or("-".into(), |r| format!("{r:.2e}"))
    );
    first.reference = Some(name);
    first.reference_ms = Some(ms);
    first.extra.insert(
        "ratio_ours_over_reference".into(),
        serde_json::json!(round3(first.ours_ms / ms)),
    );
    for k in ["rel_l2", "max_abs", "reference_device"] {
        if let Some(v) = l.get(k) {
            first.extra.insert(k.into(), v.clone());
        }
    }
}
