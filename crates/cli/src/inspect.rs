//! `jenga inspect`: what a model is, and what a token curve looks like.

use crate::args::{InspectArgs, InspectWhat};
use anyhow::Result;
use jenga_models::ModelBundle;

pub fn run(a: InspectArgs) -> Result<()> {
    if let Some(InspectWhat::Curve { t, h, w, kind, png }) = a.what {
        return curve(t, h, w, &kind, png);
    }
    let bundle = match &a.model.model {
        Some(dir) => ModelBundle::open(dir)?,
        None => ModelBundle::embedded()?,
    };
    let c = &bundle.config;
    println!("model        {}", bundle.name);
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
    println!(
        "text encoder {}",
        if bundle.text.is_some() {
            "tiny (word-level, bundled)"
        } else {
            "none bundled"
        }
    );
    Ok(())
}

fn curve(t: usize, h: usize, w: usize, kind: &str, png: Option<std::path::PathBuf>) -> Result<()> {
    let _ = (t, h, w, kind, png);
    anyhow::bail!("inspect curve: not available yet")
}

pub fn fmt_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn fmt_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}
