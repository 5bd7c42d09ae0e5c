//! `jenga bench text`: the umT5 encoder (Wan2.1's text encoder) on random ids of given token
//! counts, and with `--reference CMD` transformers' `UMT5EncoderModel` on the same weights
//! and ids in the same run (`tools/umt5_reference.py`): time, ratio, rel-L2 / max abs of the
//! last hidden states, and the reference's peak memory.
//!
//! Full size on a GPU (random weights, bf16):
//! `python3 tools/umt5_reference.py --make /tmp/umt5-xxl --device cuda` once, then
//! `jenga bench text --weights /tmp/umt5-xxl --device cuda --reference "python3 tools/umt5_reference.py"`.

use crate::bench::{reference, Record};
use anyhow::{bail, Context, Result};
use clap::Args;
use jenga_engine::{Device, Engine, EngineBackend};
use jenga_models::{SafetensorsWeights, Umt5Config, Umt5Encoder};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct TextArgs {
    /// A transformers `UMT5EncoderModel` directory: `config.json` and `model*.safetensors`
    /// (diffusers' `text_encoder/`, or one made by `tools/umt5_reference.py --make DIR`).
    #[arg(long, value_name = "DIR")]
    pub weights: PathBuf,
    /// Token counts of the timed inputs (random ids ending in `</s>`; Wan's text length is 512).
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    pub lengths: Vec<usize>,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Reference command run after our timings (same run), e.g.
    /// "python3 tools/umt5_reference.py"; it gets `--dir WEIGHTS --inputs F --ours F
    /// --device cpu|cuda --repeats N`.
    #[arg(long, value_name = "CMD")]
    pub reference: Option<String>,
    /// Seed of the random ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: &TextArgs, json: Option<&Path>, engine: &Engine) -> Result<()> {
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

fn bench<B: EngineBackend>(be: &B, a: &TextArgs, dev_kind: &str) -> Result<Vec<Record>> {
    if a.lengths.is_empty() || a.lengths.contains(&0) {
        bail!("--lengths: positive token counts, e.g. 32,128,512");
    }
    let cfg = Umt5Config::from_hf_file(&a.weights.join("config.json"))?;
    if cfg.vocab_size < 4 {
        bail!(
            "{}: vocabulary of {} (random ids need more than pad, </s>, unk)",
            a.weights.display(),
            cfg.vocab_size
        );
    }
    let src = SafetensorsWeights::open(&a.weights)?;
    let t0 = Instant::now();
    let model = Umt5Encoder::load(be, &cfg, &src)?;
    be.synchronize()?;
    let load_s = t0.elapsed().as_secs_f64();
    let dev = be.name();
    println!("device: {dev}");
    println!(
        "umT5 {} layers, d_model {}, {} heads x {}, d_ff {}, vocab {} ({:.2}B parameters, {} naming), loaded in {load_s:.1} s",
        cfg.num_layers,
        cfg.d_model,
        cfg.num_heads,
        cfg.d_kv,
        cfg.d_ff,
        cfg.vocab_size,
        cfg.parameters() as f64 / 1e9,
        model.naming()
    );
    let mut state = a.seed;
    let mut inputs: Vec<(String, Vec<f32>)> = Vec::new();
    let mut ours: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut out = Vec::new();
    println!("{:<24} {:>10} {:>12}", "tokens", "ours ms", "tokens/s");
    for &n in &a.lengths {
        // ids ≥ 3 (past pad, </s>, unk), the last one </s> as a tokenizer ends a prompt
        let mut ids: Vec<u32> = (0..n)
            .map(|_| 3 + (splitmix(&mut state) % (cfg.vocab_size as u64 - 3)) as u32)
            .collect();
        ids[n - 1] = 1;
        let mut h = None;
        let ms = {
            let mut v = Vec::with_capacity(a.repeats.max(1));
            model.forward(be, &ids)?;
            be.synchronize()?;
            for _ in 0..a.repeats.max(1) {
                let t = Instant::now();
                h = Some(model.forward(be, &ids)?);
                be.synchronize()?;
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
            v.sort_by(|x, y| x.total_cmp(y));
            v[v.len() / 2]
        };
        let flops = 2.0 * n as f64 * (cfg.parameters() - cfg.vocab_size * cfg.d_model) as f64
            + 4.0 * (n * n * cfg.inner() * cfg.num_layers) as f64;
        println!("{n:<24} {ms:>10.1} {:>12.0}", n as f64 / ms * 1e3);
        let name = format!("umt5 {n} tokens");
        if let Some(h) = h {
            ours.push((
                format!("hidden_{n}"),
                vec![n, cfg.d_model],
                be.download(&h)?,
            ));
        }
        inputs.push((format!("ids_{n}"), ids.iter().map(|&i| i as f32).collect()));
        let mut extra = serde_json::Map::new();
        extra.insert("tokens".into(), n.into());
        extra.insert("load_s".into(), serde_json::json!(load_s));
        out.push(Record {
            name,
            ours_ms: ms,
            reference: None,
            reference_ms: None,
            tflops: flops / ms / 1e9,
            density: None,
            device: dev.clone(),
            extra,
        });
    }
    if let Some(cmd) = &a.reference {
        let inputs: Vec<reference::Tensor> = inputs
            .into_iter()
            .map(|(k, v)| (k, vec![v.len()], v))
            .collect();
        let files = [
            ("inputs.safetensors", inputs.as_slice()),
            ("ours.safetensors", ours.as_slice()),
        ];
        let lines = reference::run_with_files(cmd, "text", &files, |dir| {
            let path = |f: &str| dir.join(f).display().to_string();
            let (weights, repeats) = (a.weights.display().to_string(), a.repeats.to_string());
            [
                "--dir",
                &weights,
                "--inputs",
                &path("inputs.safetensors"),
                "--ours",
                &path("ours.safetensors"),
                "--device",
                dev_kind,
                "--repeats",
                &repeats,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })?;
        if let Some(lines) = lines {
            pair(&mut out, &lines);
        }
    }
    Ok(out)
}

/// SplitMix64 (the ids only need to be reproducible and spread over the vocabulary).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Match the reference's lines (`tokens`, `ms`, `rel_l2`, ...) to ours and print them.
fn pair(out: &mut [Record], lines: &[serde_json::Value]) {
    println!(
        "{:<24} {:>10} {:>12} {:>8} {:>10} {:>10} {:>10}",
        "ours vs reference", "ours ms", "reference ms", "ratio", "rel L2", "max abs", "ref GiB"
    );
    for r in out.iter_mut() {
        let n = r.extra.get("tokens").and_then(|v| v.as_u64());
        let Some(l) = lines
            .iter()
            .find(|l| l.get("tokens").and_then(|v| v.as_u64()) == n && l.get("ms").is_some())
        else {
            continue;
        };
        let ms = l["ms"].as_f64().unwrap_or(f64::NAN);
        let num = |k: &str| l.get(k).and_then(|v| v.as_f64());
        let fmt = |v: Option<f64>, p: &str| {
            v.map_or("-".to_string(), |x| {
                if p == "e" {
                    format!("{x:.2e}")
                } else {
                    format!("{x:.2}")
                }
            })
        };
        println!(
            "{:<24} {:>10.1} {:>12.1} {:>8.3} {:>10} {:>10} {:>10}",
            r.name,
            r.ours_ms,
            ms,
            r.ours_ms / ms,
            fmt(num("rel_l2"), "e"),
            fmt(num("max_abs"), "e"),
            fmt(num("peak_gib"), "f"),
        );
        r.reference = Some(l["reference"].as_str().unwrap_or("reference").to_string());
        r.reference_ms = Some(ms);
        r.extra.insert(
            "ratio_ours_over_reference".into(),
            serde_json::json!((r.ours_ms / ms * 1e3).round() / 1e3),
        );
        for k in ["rel_l2", "max_abs", "peak_gib", "reference_device"] {
            if let Some(v) = l.get(k) {
                r.extra.insert(k.into(), v.clone());
            }
        }
    }
}
