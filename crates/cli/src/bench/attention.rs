//! `jenga bench attention`: dense and random block-sparse attention through
//! `Backend::attention`, with TFLOP/s, and the PyTorch reference on the same plans.

use super::jenga_plans::JengaShape;
use super::{reference, round3, time_ms, Record, TempDir};
use crate::args::{BenchArgs, BenchWhat};
use anyhow::{bail, Context, Result};
use jenga_tensor::{AttnPlan, BlockPlan};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Attention problem: batch 1, `heads` × `seq` tokens × `dim` head dim (self-attention).
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub label: String,
    pub heads: usize,
    pub seq: usize,
    pub dim: usize,
}

/// `wan480p` (Wan2.1-1.3B, 81 frames 480×832), `hunyuan720p` (HunyuanVideo 720p, 129 frames)
/// or `HEADSxTOKENSxHEADDIM`.
pub fn parse_shape(s: &str) -> Result<Shape> {
    let (label, h, l, d) = match s.trim() {
        "wan480p" => ("wan480p".to_string(), 12, 32760, 128),
        "hunyuan720p" => ("hunyuan720p".to_string(), 24, 119056, 128),
        other => {
            let v: Vec<usize> = other
                .split('x')
                .map(|p| p.trim().parse::<usize>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--shapes {other}: expected wan480p, hunyuan720p or HEADSxTOKENSxHEADDIM"
                    )
                })?;
            if v.len() != 3 || v.contains(&0) {
                bail!("--shapes {other}: expected HEADSxTOKENSxHEADDIM with positive numbers");
            }
            (other.to_string(), v[0], v[1], v[2])
        }
    };
    Ok(Shape {
        label,
        heads: h,
        seq: l,
        dim: d,
    })
}

/// splitmix64: a tiny seeded generator (plans and inputs must not depend on a crate version).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
}

/// Random per-head block plan for self-attention over `seq` tokens: every query block keeps its
/// diagonal key block plus random others, so that the kept fraction of (query block, key block)
/// pairs is `density` (kept counts spread evenly over the rows, at least 1 per row).
pub fn random_plan(
    heads: usize,
    seq: usize,
    block: usize,
    density: f64,
    seed: u64,
) -> Result<BlockPlan> {
    if block == 0 || seq == 0 || !(density > 0.0 && density <= 1.0) {
        bail!("random plan: block {block}, {seq} tokens, density {density}: expected block > 0, tokens > 0, 0 < density <= 1");
    }
    let nb = seq.div_ceil(block);
    let rows = heads * nb;
    let total = ((density * (rows * nb) as f64).round() as usize).clamp(rows, rows * nb);
    let mut rng = Rng(seed ^ 0x6A09_E667_F3BC_C908);
    let mut row_ptr = Vec::with_capacity(rows + 1);
    let mut col_idx = Vec::with_capacity(total);
    let mut pool: Vec<u32> = (0..nb as u32).collect();
    row_ptr.push(0u32);
    for r in 0..rows {
        let count = (total * (r + 1) / rows - total * r / rows).clamp(1, nb);
        let diag = (r % nb) as u32;
        // diagonal first, then a partial Fisher–Yates draw from the others
        pool.swap(0, diag as usize);
        for i in 1..count {
            let j = i + rng.below(nb - i);
            pool.swap(i, j);
        }
        let start = col_idx.len();
        col_idx.extend_from_slice(&pool[..count]);
        col_idx[start..].sort_unstable();
        pool.iter_mut().enumerate().for_each(|(i, p)| *p = i as u32);
        row_ptr.push(col_idx.len() as u32);
    }
    let plan = BlockPlan {
        batch: 1,
        heads,
        block,
        q_blocks: nb,
        k_blocks: nb,
        row_ptr,
        col_idx,
    };
    plan.validate(1, heads, seq, seq)?;
    Ok(plan)
}

/// FLOPs of the kept blocks (QKᵀ and PV, 2 each per multiply-add): 4·Dh·Σ rows·cols, with the
/// partial last block counted at its real size.
pub fn kept_flops(plan: &BlockPlan, seq: usize, dim: usize) -> f64 {
    let size = |b: usize| (seq - b * plan.block).min(plan.block) as f64;
    let rows = plan.batch * plan.heads * plan.q_blocks;
    let mut pairs = 0.0;
    for r in 0..rows {
        let qb = r % plan.q_blocks;
        let cols: f64 = plan.col_idx[plan.row_ptr[r] as usize..plan.row_ptr[r + 1] as usize]
            .iter()
            .map(|&k| size(k as usize))
            .sum();
        pairs += size(qb) * cols;
    }
    4.0 * dim as f64 * pairs
}

/// Unit-variance uniform values, filled on all cores (hundreds of millions for 720p).
pub(crate) fn random_data(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = n.div_ceil(threads).max(1 << 16);
    std::thread::scope(|s| {
        for (i, c) in v.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i as u64);
                let a = 3f32.sqrt();
                for x in c {
                    *x = ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a;
                }
            });
        }
    });
    v
}

/// Write int32 vectors as a safetensors file (what tools/bench_attention.py reads).
pub fn write_i32_safetensors(path: &Path, tensors: &[(&str, &[u32])]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, d) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "I32", "shape": [d.len()], "data_offsets": [off, off + 4 * d.len()]}),
        );
        off += 4 * d.len();
    }
    let mut h = serde_json::Value::Object(header).to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
    );
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(h.as_bytes())?;
    for (_, d) in tensors {
        for &x in d.iter() {
            if x > i32::MAX as u32 {
                bail!("{}: value {x} does not fit int32", path.display());
            }
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}

fn pct(d: f64) -> String {
    let p = d * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

struct Case {
    name: String,
    shape: String,
    density: Option<f64>,
    ms: f64,
    flops: f64,
    /// All-kept plans: relative mean |sparse − dense| of the outputs.
    check: Option<f64>,
    /// Jenga plans: the on-device mask building of the same plan, ms, as the model runs it
    /// (pooling fused into RoPE) and with pooling as a pass of its own.
    mask_ms: Option<f64>,
    mask_unfused_ms: Option<f64>,
}

fn plan_nnz(plan: &AttnPlan) -> u64 {
    match plan {
        AttnPlan::Sparse(p) => p.col_idx.len() as u64,
        _ => 0,
    }
}

pub fn run<B: jenga_engine::EngineBackend>(
    be: &B,
    a: &BenchArgs,
    dev_kind: &str,
) -> Result<Vec<Record>> {
    let BenchWhat::Attention {
        shapes,
        densities,
        block,
        repeats,
        reference,
        plans,
        seed,
        policies,
    } = &a.what
    else {
        unreachable!("attention::run is called for `bench attention`")
    };
    let (block, repeats, seed) = (*block, *repeats, *seed);
    let shapes: Vec<Shape> = shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<_>>()?;
    let densities: Vec<f64> = densities
        .iter()
        .map(|&d| {
            if d > 0.0 && d <= 100.0 {
                Ok(d / 100.0)
            } else {
                bail!("--densities {d}: expected a percentage in (0, 100]")
            }
        })
        .collect::<Result<_>>()?;
    if block == 0 {
        bail!("--block must be at least 1");
    }
    let policies: Vec<&str> = policies.iter().map(|p| p.trim()).collect();
    if let Some(p) = policies.iter().find(|p| !matches!(**p, "random" | "jenga")) {
        bail!("--policy {p}: expected random and/or jenga");
    }
    if policies.contains(&"jenga") {
        // Fail before any timing: every shape needs a latent grid.
        for sh in &shapes {
            super::jenga_plans::grid_of(sh)?;
        }
    }
    // Plans for the reference: --plans DIR, or a temporary directory when --reference is set.
    let mut _tmp = None;
    let plan_dir: Option<PathBuf> = match (plans, reference) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(_)) => {
            let d = std::env::temp_dir().join(format!("jenga-bench-attn-{}", std::process::id()));
            _tmp = Some(TempDir(d.clone()));
            Some(d)
        }
        (None, None) => None,
    };
    if let Some(d) = &plan_dir {
        std::fs::create_dir_all(d).with_context(|| format!("--plans {}", d.display()))?;
    }
    let dev_name = be.name();
    println!("device: {dev_name}");
    println!(
        "attention, batch 1, block {block}, plans: {} (seed {seed}); median of {repeats} after a warm-up",
        policies
            .iter()
            .map(|p| match *p {
                "random" => "random per-head blocks, diagonal always kept",
                _ => "Jenga's rule on the inputs (top-k tuned to the density, p = 0)",
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "{:<40} {:>8} {:>10} {:>10} {:>12}",
        "case", "density", "ms", "TFLOP/s", "vs our dense"
    );
    let mut cases = Vec::new();
    let mut manifest = Vec::new();
    for (si, sh) in shapes.iter().enumerate() {
        let dims = format!("{}x{}x{}", sh.heads, sh.seq, sh.dim);
        let base = if sh.label == dims {
            format!("attention {dims}")
        } else {
            format!("attention {} {dims}", sh.label)
        };
        let what = || base.clone();
        let n = sh.heads * sh.seq * sh.dim;
        let shape4 = [1, sh.seq, sh.heads, sh.dim];
        let sseed = seed.wrapping_mul(1000).wrapping_add(si as u64 * 10);
        let q = be
            .upload(&random_data(sseed + 1, n), &shape4)
            .with_context(what)?;
        let k = be
            .upload(&random_data(sseed + 2, n), &shape4)
            .with_context(what)?;
        let v = be
            .upload(&random_data(sseed + 3, n), &shape4)
            .with_context(what)?;
        let dense_flops = 4.0 * (sh.heads * sh.dim) as f64 * (sh.seq as f64).powi(2);
        let dense_ms = time_ms(be, repeats, || {
            be.attention(&q, &k, &v, &AttnPlan::Dense, None)?;
            Ok(())
        })
        .with_context(what)?;
        let dense_name = format!("{base} dense");
        print_row(&dense_name, 1.0, dense_ms, dense_flops, dense_ms);
        cases.push(Case {
            name: dense_name.clone(),
            shape: sh.label.clone(),
            density: None,
            ms: dense_ms,
            flops: dense_flops,
            check: None,
            mask_ms: None,
            mask_unfused_ms: None,
        });
        let mut plan_entries = Vec::new();
        let mut jenga = match policies.contains(&"jenga") {
            true => Some(JengaShape::new(be, sh, block, &q, &k).with_context(what)?),
            false => None,
        };
        let runs = policies
            .iter()
            .flat_map(|&p| densities.iter().enumerate().map(move |(di, &d)| (p, di, d)));
        for (pi, (policy, di, d)) in runs.enumerate() {
            let (plan, top_k) = match policy {
                "random" => (
                    Arc::new(random_plan(
                        sh.heads,
                        sh.seq,
                        block,
                        d,
                        sseed + 100 + di as u64,
                    )?),
                    None,
                ),
                _ => {
                    let js = jenga.as_mut().expect("pooled when jenga is asked for");
                    let (top_k, plan) = js.plan_near(d).with_context(what)?;
                    (plan, Some(top_k))
                }
            };
            let flops = kept_flops(&plan, sh.seq, sh.dim);
            let density = plan.density();
            let label = if policy == "random" {
                "sparse"
            } else {
                "jenga"
            };
            let name = format!("{base} {label} {}", pct(d));
            if let Some(dir) = &plan_dir {
                let file = format!("plan_{si}_{pi}.safetensors");
                write_i32_safetensors(
                    &dir.join(&file),
                    &[("row_ptr", &plan.row_ptr), ("col_idx", &plan.col_idx)],
                )?;
                plan_entries.push(serde_json::json!({
                    "name": name, "density": density, "file": file, "flops": flops,
                }));
            }
            let plan = AttnPlan::Sparse(plan);
            let ms = time_ms(be, repeats, || {
                be.attention(&q, &k, &v, &plan, None)?;
                Ok(())
            })
            .with_context(|| format!("{} sparse {}", what(), pct(d)))?;
            print_row(&name, density, ms, flops, dense_ms);
            // An all-kept plan must give dense attention: mean |sparse − dense| / mean |dense|.
            let check = if density >= 1.0 {
                let dense = be.attention(&q, &k, &v, &AttnPlan::Dense, None)?;
                let sparse = be.attention(&q, &k, &v, &plan, None)?;
                let diff = be.mean_abs(&be.axpby(1.0, &sparse, -1.0, &dense)?)?;
                let rel = diff as f64 / be.mean_abs(&dense)?.max(f32::MIN_POSITIVE) as f64;
                println!("  all-kept plan vs dense: relative mean |diff| {rel:.2e}");
                Some(rel)
            } else {
                None
            };
            let (mut mask_ms, mut mask_unfused_ms) = (None, None);
            if let (Some(js), Some(top_k)) = (&jenga, top_k) {
                // The same selection built on the device: its cost against the attention it
                // feeds, and the attention over the device-built plan.
                if let Some(dplan) = js.device_plan(be, &q, &k, top_k).with_context(what)? {
                    if let AttnPlan::Device(dp) = &dplan {
                        let host_nnz = plan_nnz(&plan);
                        let dev_nnz = dp.nnz.read()?;
                        if dev_nnz != host_nnz {
                            println!("  note: device plan keeps {dev_nnz} pairs, host plan {host_nnz} (float ties at the cut)");
                        }
                    }
                    let build_ms = time_ms(be, repeats, || {
                        js.device_plan(be, &q, &k, top_k)?;
                        Ok(())
                    })
                    .with_context(|| format!("{} mask building {}", what(), pct(d)))?;
                    let dev_ms = time_ms(be, repeats, || {
                        be.attention(&q, &k, &v, &dplan, None)?;
                        Ok(())
                    })
                    .with_context(|| format!("{} device plan {}", what(), pct(d)))?;
                    let dname = format!("{name} device-built");
                    print_row(&dname, density, dev_ms, flops, dense_ms);
                    println!(
                        "  mask building, pooling included: {build_ms:.3} ms = {:.1}% of the sparse attention",
                        100.0 * build_ms / dev_ms
                    );
                    // What the model pays: pooling fused into RoPE, then the selection.
                    let fused = js
                        .fused_mask_ms(be, &q, &k, top_k, repeats)
                        .with_context(|| format!("{} fused mask building {}", what(), pct(d)))?;
                    if let Some(f) = fused {
                        println!(
                            "  mask building, pooling fused into RoPE: {f:.3} ms = {:.1}% of the sparse attention",
                            100.0 * f / dev_ms
                        );
                    }
                    let fused_ms = fused.unwrap_or(build_ms);
                    cases.push(Case {
                        name: dname,
                        shape: sh.label.clone(),
                        density: Some(density),
                        ms: dev_ms,
                        flops,
                        check: None,
                        mask_ms: Some(fused_ms),
                        mask_unfused_ms: Some(build_ms),
                    });
                    mask_ms = Some(fused_ms);
                    mask_unfused_ms = Some(build_ms);
                }
            }
            cases.push(Case {
                name,
                shape: sh.label.clone(),
                density: Some(density),
                ms,
                flops,
                check,
                mask_ms,
                mask_unfused_ms,
            });
        }
        manifest.push(serde_json::json!({
            "shape": sh.label, "batch": 1, "heads": sh.heads, "seq": sh.seq, "head_dim": sh.dim,
            "block": block, "dense": {"name": dense_name, "flops": dense_flops},
            "plans": plan_entries,
        }));
    }
    let mut lines = Vec::new();
    if let Some(dir) = &plan_dir {
        let path = dir.join("manifest.json");
        let m = serde_json::json!({
            "device": dev_kind, "device_name": dev_name, "repeats": repeats, "seed": seed,
            "shapes": manifest,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&m)?)
            .with_context(|| format!("writing {}", path.display()))?;
        if let Some(cmd) = reference {
            let args = [
                "--manifest".to_string(),
                path.display().to_string(),
                "--device".into(),
                dev_kind.into(),
                "--repeats".into(),
                repeats.to_string(),
            ];
            lines = reference::run(cmd, &args).unwrap_or_default();
        }
    }
    Ok(pair(&cases, &lines, &dev_name))
}

fn print_row(name: &str, density: f64, ms: f64, flops: f64, dense_ms: f64) {
    let tf = flops / ms / 1e9;
    println!(
        "{:<40} {:>8} {:>10.3} {:>10} {:>11.2}x",
        name,
        pct((density * 1000.0).round() / 1000.0),
        ms,
        if tf < 10.0 {
            format!("{tf:.3}")
        } else {
            format!("{tf:.1}")
        },
        dense_ms / ms
    );
}

/// Records: each case against each reference line of the same name; sparse cases also against
/// the reference's dense cuDNN (and flash) of their shape. Prints the comparison table.
fn pair(cases: &[Case], lines: &[serde_json::Value], dev_name: &str) -> Vec<Record> {
    let get = |l: &serde_json::Value, k: &str| l.get(k).and_then(|v| v.as_f64());
    let mut out = Vec::new();
    if !lines.is_empty() {
        println!(
            "{:<40} {:>9} {:<34} {:>9} {:>9} {:>9}",
            "case", "ours ms", "reference", "ref ms", "ref TF/s", "ref/ours"
        );
    }
    let dense_of = |shape: &str| {
        cases
            .iter()
            .find(|c| c.shape == shape && c.density.is_none())
            .map(|c| c.name.clone())
    };
    for c in cases {
        let mut refs: Vec<(String, &serde_json::Value)> = lines
            .iter()
            .filter(|l| l.get("name").and_then(|n| n.as_str()) == Some(&c.name))
            .map(|l| (l["reference"].as_str().unwrap_or("?").to_string(), l))
            .collect();
        if c.density.is_some() {
            if let Some(dn) = dense_of(&c.shape) {
                for l in lines
                    .iter()
                    .filter(|l| l.get("name").and_then(|n| n.as_str()) == Some(dn.as_str()))
                {
                    let r = l["reference"].as_str().unwrap_or("?");
                    refs.push((format!("{r} (dense)"), l));
                }
            }
        }
        let base = |reference: Option<String>, reference_ms: Option<f64>| {
            let mut extra = serde_json::Map::new();
            if let Some(r) = c.check {
                extra.insert("rel_mean_abs_vs_dense".into(), serde_json::json!(r));
            }
            if let Some(m) = c.mask_ms {
                extra.insert("mask_ms".into(), serde_json::json!(round3(m)));
                extra.insert("mask_share".into(), serde_json::json!(round3(m / c.ms)));
            }
            if let Some(m) = c.mask_unfused_ms {
                extra.insert("mask_unfused_ms".into(), serde_json::json!(round3(m)));
            }
            Record {
                name: c.name.clone(),
                ours_ms: c.ms,
                reference,
                reference_ms,
                tflops: c.flops / c.ms / 1e9,
                density: Some(c.density.unwrap_or(1.0)),
                device: dev_name.to_string(),
                extra,
            }
        };
        if refs.is_empty() {
            out.push(base(None, None));
            continue;
        }
        for (rname, l) in refs {
            let Some(rms) = get(l, "ms") else { continue };
            let mut r = base(Some(rname.clone()), Some(rms));
            let rt = get(l, "tflops");
            r.extra
                .insert("reference_tflops".into(), serde_json::json!(rt.map(round3)));
            r.extra.insert(
                "speedup_vs_reference".into(),
                serde_json::json!(round3(rms / c.ms)),
            );
            for k in ["rel_l2", "note"] {
                if let Some(v) = l.get(k) {
                    r.extra.insert(k.into(), v.clone());
                }
            }
            println!(
                "{:<40} {:>9.3} {:<34} {:>9.3} {:>9} {:>8.2}x",
                c.name,
                c.ms,
                rname,
                rms,
                rt.map_or("-".into(), |t| format!("{t:.1}")),
                rms / c.ms
            );
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_plans_have_the_density_and_the_diagonal() {
        for (heads, seq, block, d) in [
            (3, 1000, 64, 0.1),
            (2, 640, 128, 0.5),
            (1, 100, 128, 0.2),
            (4, 4096, 128, 1.0),
        ] {
            let p = random_plan(heads, seq, block, d, 7).unwrap();
            p.validate(1, heads, seq, seq).unwrap();
            let nb = seq.div_ceil(block);
            let want = (d * (heads * nb * nb) as f64)
                .round()
                .max((heads * nb) as f64);
            assert_eq!(p.col_idx.len() as f64, want, "{heads}x{seq} b{block} d{d}");
            for h in 0..heads {
                for qb in 0..nb {
                    assert!(
                        p.row(0, h, qb).contains(&(qb as u32)),
                        "diagonal of row {qb}"
                    );
                }
            }
            // same seed, same plan; another seed, another plan (unless everything is kept)
            assert_eq!(p, random_plan(heads, seq, block, d, 7).unwrap());
            if d < 1.0 && nb > 2 {
                assert_ne!(p, random_plan(heads, seq, block, d, 8).unwrap());
            }
        }
        assert!(random_plan(1, 10, 4, 0.0, 0).is_err());
        assert!(random_plan(1, 10, 4, 1.5, 0).is_err());
    }

    #[test]
    fn kept_flops_counts_the_partial_block() {
        let p = BlockPlan::full(1, 2, 128, 200, 200);
        assert_eq!(kept_flops(&p, 200, 64), 4.0 * 2.0 * 64.0 * 200.0 * 200.0);
        let p = random_plan(2, 1000, 100, 0.3, 1).unwrap();
        // every block is full: flops = kept pairs × 100² × 4 × Dh
        assert_eq!(
            kept_flops(&p, 1000, 32),
            p.col_idx.len() as f64 * 1e4 * 4.0 * 32.0
        );
    }

    #[test]
    fn shapes_parse() {
        assert_eq!(parse_shape("wan480p").unwrap().seq, 32760);
        assert_eq!(parse_shape("hunyuan720p").unwrap().heads, 24);
        let s = parse_shape("2x300x64").unwrap();
        assert_eq!((s.heads, s.seq, s.dim), (2, 300, 64));
        assert!(parse_shape("2x300").is_err());
        assert!(parse_shape("0x3x4").is_err());
    }

    #[test]
    fn random_data_has_unit_variance() {
        let v = random_data(5, 100_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
