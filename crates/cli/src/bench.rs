//! `jenga bench`: timings with a reference measured in the same run.

use crate::args::{BenchArgs, BenchWhat};
use crate::device::{self, Device};
use crate::generate::Source;
use anyhow::{bail, Context, Result};
use jenga_carve::{AttnCtx, Dense};
use jenga_models::WanModel;
use jenga_tensor::{Act, Backend};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// One result line (also the `--json` format).
pub struct Record {
    pub name: String,
    pub ours_ms: f64,
    pub reference: String,
    pub reference_ms: f64,
    /// Achieved rate of ours, in TFLOP/s.
    pub tflops: f64,
}

impl Record {
    pub fn json(&self) -> String {
        serde_json::json!({
            "name": self.name, "ours_ms": self.ours_ms, "reference": self.reference,
            "reference_ms": self.reference_ms, "tflops": self.tflops,
        })
        .to_string()
    }
}

pub fn run(a: BenchArgs) -> Result<()> {
    let mut json = match &a.json {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("--json {}", p.display()))?)
        }
        None => None,
    };
    let dev = device::select(&a.model.device, a.model.threads)?;
    let records = match (&a.what, &dev) {
        (
            BenchWhat::Dit {
                sizes,
                repeats,
                export,
            },
            Device::Cpu(be),
        ) => bench_dit(be, &a, sizes, *repeats, export.as_deref())?,
        (
            BenchWhat::Dit {
                sizes,
                repeats,
                export,
            },
            Device::Cuda(be),
        ) => bench_dit(be.as_ref(), &a, sizes, *repeats, export.as_deref())?,
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

/// Median of `n` timed runs of `f` after one warm-up, in ms.
fn time_ms<B: Backend>(be: &B, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
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
fn matmul_ms<B: Backend>(be: &B, n: usize) -> Result<f64> {
    let a = be.upload(&jenga_pipeline::noise(1, n * n), &[n, n])?;
    let w = be.upload(&jenga_pipeline::noise(2, n * n), &[n, n])?;
    time_ms(be, 3, || {
        be.linear(&a, &w, None, Act::None)?;
        Ok(())
    })
}

fn bench_dit<B: Backend>(
    be: &B,
    a: &BenchArgs,
    sizes: &[String],
    repeats: usize,
    export: Option<&Path>,
) -> Result<Vec<Record>> {
    let src = Source::open(&a.model)?;
    let cfg = src.config().clone();
    let model = WanModel::load(be, &cfg, src.weights())?;
    let text = src.encode("a red circle moving right on a blue background")?;
    let ctx = model.embed_text(be, &be.upload(&text, &[1, cfg.text_len, cfg.text_dim])?)?;
    if let Some(dir) = export {
        std::fs::create_dir_all(dir).with_context(|| format!("--export {}", dir.display()))?;
        std::fs::write(dir.join("config.json"), cfg.to_json())?;
        jenga_models::export_bf16(
            src.weights(),
            &cfg.tensor_shapes(),
            &dir.join("weights.safetensors"),
        )?;
    }
    let n = 1024;
    let mm = matmul_ms(be, n)?;
    let mm_gflops = 2.0 * (n as f64).powi(3) / mm / 1e6;
    println!("device: {}", be.name());
    println!("reference: square matmul {n}^3 through the backend's linear: {mm:.2} ms = {mm_gflops:.1} GFLOP/s");
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>12} {:>10}",
        "size (FxHxW)", "tokens", "ms", "GFLOP", "GFLOP/s", "% matmul"
    );
    let mut out = Vec::new();
    for s in sizes {
        let (f, h, w) = parse_size(s)?;
        let grid = model.grid(f, h, w)?;
        let geom = model.geometry(be, grid, None)?;
        let x = be.upload(
            &jenga_pipeline::noise(3, cfg.in_dim * f * h * w),
            &[1, cfg.in_dim, f, h, w],
        )?;
        let actx = AttnCtx {
            step: 0,
            num_steps: 1,
            layer: 0,
            num_layers: cfg.num_layers,
            stage: 0,
            grid,
            cond_tokens: 0,
        };
        if let (Some(dir), true) = (export, s == &sizes[0]) {
            let v = be.download(&model.forward(be, &x, 500.0, &ctx, &geom, &Dense, &actx)?)?;
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
                "exported weights, inputs and our output for {s} to {}",
                dir.display()
            );
        }
        let ms = time_ms(be, repeats, || {
            model.forward(be, &x, 500.0, &ctx, &geom, &Dense, &actx)?;
            Ok(())
        })?;
        let tokens = geom.tokens();
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
        out.push(Record {
            name: format!("dit_forward {} {s} ({tokens} tokens)", src.name()),
            ours_ms: ms,
            reference: format!("matmul {n}^3 at the same rate ({mm_gflops:.1} GFLOP/s)"),
            reference_ms: gflop / mm_gflops * 1e3,
            tflops: rate / 1e3,
        });
    }
    Ok(out)
}
