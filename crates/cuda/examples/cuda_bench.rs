//! Throughput of the CUDA backend's heavy ops on Wan-1.3B-sized shapes.
//! `cargo run --release -p jenga-cuda --example cuda_bench [attention]` (prints one line per
//! case; `attention` runs only the attention cases). Attention cases also print JSON lines
//! (`{"case": ...}`) with times, TFLOP/s and the relative L2 error against the mma kernel.
//! `attention-variants` times the Hopper kernel's dense variants (176- / 128-key tiles) against
//! each other, interleaved, on the same data. `attention-model` times the attention on q/k taken
//! from a Wan-1.3B forward (random weights, 21x60x104) against uniform random data (and the
//! same q/k with the keys' token order shuffled), and counts on the host how often the online
//! softmax must rescale O (exact running max vs the kernel's lazy one); with
//! `JENGA_DUMP_DIR=DIR` it writes layer 0's q, k, shuffled k and v there (raw bf16
//! `[1, 32760, 12, 128]`) for a torch comparison on the same data.

use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_cuda::{selftest::rel_l2, selftest::Rng, AttnPath, CudaBackend, CudaTensor};
use jenga_models::{RandomWeights, WanConfig, WanModel};
use jenga_tensor::{Act, AttnPlan, Backend, BlockPlan, Result};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn time<F: FnMut() -> Result<()>>(be: &CudaBackend, iters: usize, mut f: F) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    be.synchronize()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    be.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

fn main() -> Result<()> {
    let be = CudaBackend::new(0)?;
    println!("device: {}", be.name());
    if std::env::args().any(|a| a == "attention-variants") {
        return variants_bench(&be);
    }
    if std::env::args().any(|a| a == "attention-model") {
        if let Err(e) = model_bench(&be) {
            eprintln!("attention-model: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    if std::env::args().any(|a| a == "attention") {
        return attention_bench(&be);
    }
    let m = 32760;
    // Random data: constant inputs draw less power and flatter tensor-core clocks.
    let mut rng = Rng::new(1);
    let x = be.upload(&rng.normal_vec(m * 1536, 1.0), &[1, m, 1536])?;
    for (n, act, label) in [
        (1536, Act::None, "linear 32760x1536x1536 +bias"),
        (8960, Act::None, "linear 32760x1536x8960 +bias"),
        (8960, Act::GeluTanh, "linear 32760x1536x8960 +bias+gelu"),
    ] {
        let w = be.upload(&rng.normal_vec(n * 1536, 0.02), &[n, 1536])?;
        let b = be.upload(&rng.normal_vec(n, 0.1), &[n])?;
        let s = time(&be, 20, || be.linear(&x, &w, Some(&b), act).map(|_| ()))?;
        let tf = 2.0 * m as f64 * 1536.0 * n as f64 / s / 1e12;
        println!("{label:<40} {:8.3} ms {tf:7.1} TFLOP/s", s * 1e3);
    }
    let y = be.upload(&vec![0.5f32; m * 1536], &[1, m, 1536])?;
    let mo = be.upload(&vec![0.1f32; 1536], &[1, 1536])?;
    let bytes = (m * 1536 * 2 * 2) as f64;
    let s = time(&be, 20, || be.norm_modulate(&x, &mo, &mo, 1e-6).map(|_| ()))?;
    println!(
        "{:<40} {:8.3} ms {:7.0} GB/s",
        "norm_modulate 32760x1536",
        s * 1e3,
        bytes / s / 1e9
    );
    let s = time(&be, 20, || be.add_gated(&x, &y, Some(&mo)).map(|_| ()))?;
    println!(
        "{:<40} {:8.3} ms {:7.0} GB/s",
        "add_gated 32760x1536",
        s * 1e3,
        1.5 * bytes / s / 1e9
    );
    let w = be.upload(&vec![1.0f32; 1536], &[1536])?;
    let s = time(&be, 20, || be.rms_norm(&x, &w, 1e-6).map(|_| ()))?;
    println!(
        "{:<40} {:8.3} ms {:7.0} GB/s",
        "rms_norm 32760x1536",
        s * 1e3,
        bytes / s / 1e9
    );
    let q = be.reshape(&x, &[1, m, 12, 128])?;
    let cs = be.upload(&vec![0.5f32; m * 64], &[m, 64])?;
    let s = time(&be, 20, || be.rope(&q, &cs, &cs).map(|_| ()))?;
    println!(
        "{:<40} {:8.3} ms {:7.0} GB/s",
        "rope 32760x12x128",
        s * 1e3,
        bytes / s / 1e9
    );
    attention_bench(&be)
}

/// Uniform random bf16 tensor in [-a, a) (fast enough for the 119056-token case).
fn rand_tensor(be: &CudaBackend, shape: &[usize], seed: u64, a: f32) -> Result<CudaTensor> {
    let n: usize = shape.iter().product();
    let mut st = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            ((st >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect();
    be.upload(&v, shape)
}

fn json_line(case: &str, fields: &[(&str, String)]) {
    let mut s = format!("{{\"case\": \"{case}\"");
    for (k, v) in fields {
        s.push_str(&format!(", \"{k}\": {v}"));
    }
    s.push('}');
    println!("{s}");
}

/// FLOPs of the kept blocks of a plan (QK^T and PV), partial last blocks counted exactly.
fn plan_flops(plan: &BlockPlan, l: usize, dh: usize) -> f64 {
    let rows = plan.batch * plan.heads * plan.q_blocks;
    let span = |i: usize| (l - i * plan.block).min(plan.block) as f64;
    (0..rows)
        .map(|r| {
            let qb = r % plan.q_blocks;
            let cols = &plan.col_idx[plan.row_ptr[r] as usize..plan.row_ptr[r + 1] as usize];
            span(qb) * cols.iter().map(|&c| span(c as usize)).sum::<f64>()
        })
        .sum::<f64>()
        * 4.0
        * dh as f64
}

fn attention_bench(be: &CudaBackend) -> Result<()> {
    let hopper = be.hopper_attention_available();
    println!(
        "hopper attention kernel: {}",
        if hopper {
            "in use".to_string()
        } else {
            format!(
                "NOT in use ({})",
                jenga_cuda::hopper_attention_note().unwrap_or_default()
            )
        }
    );
    let ours = if hopper {
        "jenga-cuda Hopper wgmma kernel"
    } else {
        "jenga-cuda mma.sync kernel (no Hopper kernel)"
    };
    let dense = AttnPlan::Dense;
    let m = 32760;
    let (h, dh) = (12, 128);
    let q = rand_tensor(be, &[1, m, h, dh], 1, 2.0)?;
    let k = rand_tensor(be, &[1, m, h, dh], 2, 2.0)?;
    let v = rand_tensor(be, &[1, m, h, dh], 3, 1.0)?;
    let flops = 4.0 * (m as f64).powi(2) * dh as f64 * h as f64;

    // ---- dense 12 x 32760: ours vs the mma kernel (same data) ----
    be.set_attention_path(AttnPath::Auto);
    let o_ours = be.attention(&q, &k, &v, &dense, None)?;
    be.set_attention_path(AttnPath::Mma);
    let o_mma = be.attention(&q, &k, &v, &dense, None)?;
    let err_dense = rel_l2(&be.download(&o_ours)?, &be.download(&o_mma)?);
    drop((o_ours, o_mma));
    be.set_attention_path(AttnPath::Auto);
    let s = time(be, 10, || {
        be.attention(&q, &k, &v, &dense, None).map(|_| ())
    })?;
    be.set_hopper_attention_l2_hints(false);
    let s_nohint = time(be, 10, || {
        be.attention(&q, &k, &v, &dense, None).map(|_| ())
    })?;
    be.set_hopper_attention_l2_hints(true);
    println!("  (without L2 cache hints: {:.3} ms)", s_nohint * 1e3);
    be.set_attention_path(AttnPath::Mma);
    let s_mma = time(be, 3, || be.attention(&q, &k, &v, &dense, None).map(|_| ()))?;
    be.set_attention_path(AttnPath::Auto);
    println!(
        "{:<44} {:8.3} ms {:7.1} TFLOP/s (mma {:.3} ms) rel L2 vs mma {err_dense:.2e}",
        "attention dense 32760 H12 Dh128",
        s * 1e3,
        flops / s / 1e12,
        s_mma * 1e3
    );
    json_line(
        "attention dense 12x32760x128",
        &[
            ("ours", format!("\"{ours}\"")),
            ("ours_ms", format!("{:.3}", s * 1e3)),
            ("tflops", format!("{:.1}", flops / s / 1e12)),
            ("no_l2_hint_ms", format!("{:.3}", s_nohint * 1e3)),
            ("mma_ms", format!("{:.3}", s_mma * 1e3)),
            ("rel_l2_vs_mma", format!("{err_dense:.3e}")),
        ],
    );

    // ---- block-sparse ~20% (block 128, diagonal + pseudo-random), with and without bias ----
    let nb = m.div_ceil(128);
    let mut mask = vec![false; h * nb * nb];
    let mut st = 12345u64;
    for (i, v) in mask.iter_mut().enumerate() {
        st = st
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *v = (i / nb) % nb == i % nb || (st >> 33) % 1000 < 195;
    }
    let plan = Arc::new(BlockPlan::from_mask(1, h, 128, nb, nb, &mask)?);
    let density = plan.density();
    let kept_flops = plan_flops(&plan, m, dh);
    let sparse = AttnPlan::Sparse(plan.clone());
    // Joint-attention layout: the last 512 tokens are the condition; video rows are biased.
    let bias = Some(jenga_tensor::KeyBias {
        from_key: m - 512,
        to_query: m - 512,
        bias: 1.0,
    });
    let mut errs = Vec::new();
    for b in [None, bias] {
        be.set_attention_path(AttnPath::Auto);
        let a = be.attention(&q, &k, &v, &sparse, b)?;
        be.set_attention_path(AttnPath::Mma);
        let c = be.attention(&q, &k, &v, &sparse, b)?;
        errs.push(rel_l2(&be.download(&a)?, &be.download(&c)?));
    }
    be.set_attention_path(AttnPath::Auto);
    let s = time(be, 10, || {
        be.attention(&q, &k, &v, &sparse, None).map(|_| ())
    })?;
    be.set_attention_path(AttnPath::Mma);
    let s_mma = time(be, 5, || {
        be.attention(&q, &k, &v, &sparse, None).map(|_| ())
    })?;
    be.set_attention_path(AttnPath::Auto);
    let label = format!("attention sparse {:.1}% kept", density * 100.0);
    println!(
        "{label:<44} {:8.3} ms {:7.1} TFLOP/s on kept blocks (mma {:.3} ms) rel L2 vs mma {:.2e} / {:.2e} (bias)",
        s * 1e3,
        kept_flops / s / 1e12,
        s_mma * 1e3,
        errs[0],
        errs[1]
    );
    json_line(
        &format!(
            "attention block-sparse {:.1}% kept (block 128) 12x32760x128",
            density * 100.0
        ),
        &[
            ("ours", format!("\"{ours}\"")),
            ("ours_ms", format!("{:.3}", s * 1e3)),
            ("tflops", format!("{:.1}", kept_flops / s / 1e12)),
            (
                "tflops_dense_equivalent",
                format!("{:.1}", flops / s / 1e12),
            ),
            ("density", format!("{density:.4}")),
            ("mma_ms", format!("{:.3}", s_mma * 1e3)),
            ("rel_l2_vs_mma", format!("{:.3e}", errs[0])),
            ("rel_l2_vs_mma_key_bias", format!("{:.3e}", errs[1])),
        ],
    );
    drop((q, k, v));

    // ---- dense 24 x 119056 ----
    let (m2, h2) = (119056, 24);
    let q = rand_tensor(be, &[1, m2, h2, dh], 4, 2.0)?;
    let k = rand_tensor(be, &[1, m2, h2, dh], 5, 2.0)?;
    let v = rand_tensor(be, &[1, m2, h2, dh], 6, 1.0)?;
    let flops2 = 4.0 * (m2 as f64).powi(2) * dh as f64 * h2 as f64;
    be.set_attention_path(AttnPath::Auto);
    let s = time(be, 3, || be.attention(&q, &k, &v, &dense, None).map(|_| ()))?;
    be.set_hopper_attention_l2_hints(false);
    let s_nohint = time(be, 3, || be.attention(&q, &k, &v, &dense, None).map(|_| ()))?;
    be.set_hopper_attention_l2_hints(true);
    println!(
        "{:<44} {:8.3} ms {:7.1} TFLOP/s (without L2 cache hints {:.3} ms)",
        "attention dense 119056 H24 Dh128",
        s * 1e3,
        flops2 / s / 1e12,
        s_nohint * 1e3
    );
    json_line(
        "attention dense 24x119056x128",
        &[
            ("ours", format!("\"{ours}\"")),
            ("ours_ms", format!("{:.3}", s * 1e3)),
            ("tflops", format!("{:.1}", flops2 / s / 1e12)),
            ("no_l2_hint_ms", format!("{:.3}", s_nohint * 1e3)),
        ],
    );
    Ok(())
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The Hopper kernel's dense variants (176- and 128-key tiles) on 12x32760 and 24x119056:
/// `rounds` rounds, each timing every variant once (`iters` launches), median per variant;
/// outputs compared with the mma kernel (12x32760) or the 128-key variant (24x119056).
fn variants_bench(be: &CudaBackend) -> Result<()> {
    if !be.hopper_attention_available() {
        println!("hopper attention kernel not in use");
        return Ok(());
    }
    let tiles = [128usize, 176];
    let dense = AttnPlan::Dense;
    let dh = 128;
    for (m, h, iters, rounds) in [(32760usize, 12usize, 10usize, 7usize), (119056, 24, 2, 4)] {
        let q = rand_tensor(be, &[1, m, h, dh], 11, 2.0)?;
        let k = rand_tensor(be, &[1, m, h, dh], 12, 2.0)?;
        let v = rand_tensor(be, &[1, m, h, dh], 13, 1.0)?;
        let flops = 4.0 * (m as f64).powi(2) * dh as f64 * h as f64;
        let reference = if m == 32760 {
            be.set_attention_path(AttnPath::Mma);
            let o = be.download(&be.attention(&q, &k, &v, &dense, None)?)?;
            be.set_attention_path(AttnPath::Auto);
            o
        } else {
            be.set_hopper_attention_dense_tile(tiles[0]);
            be.download(&be.attention(&q, &k, &v, &dense, None)?)?
        };
        let mut errs = Vec::new();
        for &tile in &tiles {
            be.set_hopper_attention_dense_tile(tile);
            let o = be.download(&be.attention(&q, &k, &v, &dense, None)?)?;
            errs.push(rel_l2(&o, &reference));
        }
        let mut times = vec![Vec::new(); tiles.len()];
        for _ in 0..rounds {
            for (i, &tile) in tiles.iter().enumerate() {
                be.set_hopper_attention_dense_tile(tile);
                times[i].push(time(be, iters, || {
                    be.attention(&q, &k, &v, &dense, None).map(|_| ())
                })?);
            }
        }
        for (i, &tile) in tiles.iter().enumerate() {
            let s = median(&mut times[i]);
            println!(
                "dense {h}x{m}x128 tile {tile}: {:8.3} ms {:6.1} TFLOP/s rel L2 {:.2e}",
                s * 1e3,
                flops / s / 1e12,
                errs[i]
            );
            json_line(
                &format!("attention dense {h}x{m}x128"),
                &[
                    ("dense_tile", tile.to_string()),
                    ("ours_ms", format!("{:.3}", s * 1e3)),
                    ("tflops", format!("{:.1}", flops / s / 1e12)),
                    ("rel_l2", format!("{:.3e}", errs[i])),
                ],
            );
        }
    }
    be.set_hopper_attention_dense_tile(176);
    Ok(())
}

/// Keeps q/k of the chosen layers' self-attention (dense plans throughout).
struct Capture {
    layers: Vec<usize>,
    got: Mutex<Vec<(usize, CudaTensor, CudaTensor)>>,
}

impl AttentionPolicy<CudaBackend> for Capture {
    fn name(&self) -> String {
        "capture q/k".into()
    }
    fn plan(
        &self,
        _be: &CudaBackend,
        q: &CudaTensor,
        k: &CudaTensor,
        ctx: &AttnCtx,
    ) -> Result<AttnPlan> {
        if self.layers.contains(&ctx.layer) {
            if let Ok(mut g) = self.got.lock() {
                g.push((ctx.layer, q.clone(), k.clone()));
            }
        }
        Ok(AttnPlan::Dense)
    }
}

/// Host replay of the kernel's online-softmax bookkeeping on `[1, l, h, 128]` q/k (log2
/// domain, keys in tiles of `bn`): for the 16-row groups one consumer warp holds (rows
/// `wl*16 .. +16` of a 128-row item), the share of (warp, tile) steps in which some row raises
/// its running max (exact max: the old dense kernel's rescale condition) or passes its lazy
/// max by more than `tau`. Query items `qtiles` of every head. Also the logits' standard
/// deviation and the mean gap between a row's max and its mean (log2 units).
struct Rates {
    exact: f64,
    lazy: f64,
    std: f64,
    max_gap: f64,
}

fn rescale_rates(q: &[f32], k: &[f32], l: usize, h: usize, bn: usize, qtiles: &[usize]) -> Rates {
    use rayon::prelude::*;
    const TAU: f32 = 8.0;
    let dh = 128;
    let scale = std::f32::consts::LOG2_E / (dh as f32).sqrt();
    let nt = l.div_ceil(bn);
    let tasks: Vec<(usize, usize)> = (0..h)
        .flat_map(|hh| qtiles.iter().map(move |&t| (hh, t)))
        .collect();
    // Per task: (exact steps, lazy steps, warp steps, sum, sum sq, count, sum of max gaps, rows)
    let parts: Vec<[f64; 8]> = tasks
        .par_iter()
        .map(|&(hh, qt)| {
            let mut acc = [0f64; 8];
            let rows: Vec<usize> = (qt * 128..(qt * 128 + 128).min(l)).collect();
            // tile maxima per row
            let mut tmax = vec![f32::NEG_INFINITY; rows.len() * nt];
            for (ri, &r) in rows.iter().enumerate() {
                let qr = &q[(r * h + hh) * dh..][..dh];
                let (mut sum, mut sq, mut mx) = (0f64, 0f64, f32::NEG_INFINITY);
                for j in 0..l {
                    let kr = &k[(j * h + hh) * dh..][..dh];
                    // 8 partial sums: vectorises (one running sum would not).
                    let mut d = [0f32; 8];
                    for (a, b) in qr.chunks_exact(8).zip(kr.chunks_exact(8)) {
                        for i in 0..8 {
                            d[i] += a[i] * b[i];
                        }
                    }
                    let s = d.iter().sum::<f32>() * scale;
                    let t = &mut tmax[ri * nt + j / bn];
                    *t = t.max(s);
                    mx = mx.max(s);
                    sum += s as f64;
                    sq += (s as f64) * (s as f64);
                }
                acc[3] += sum;
                acc[4] += sq;
                acc[5] += l as f64;
                acc[6] += mx as f64 - sum / l as f64;
                acc[7] += 1.0;
            }
            for w in rows
                .chunks(16)
                .enumerate()
                .map(|(wi, c)| wi * 16..wi * 16 + c.len())
            {
                let mut m = vec![f32::NEG_INFINITY; w.len()];
                let mut ml = vec![f32::NEG_INFINITY; w.len()];
                for t in 0..nt {
                    let (mut ex, mut lz) = (false, false);
                    for (i, ri) in w.clone().enumerate() {
                        let x = tmax[ri * nt + t];
                        if x > m[i] {
                            m[i] = x;
                            ex = true;
                        }
                        if x > ml[i] + TAU {
                            ml[i] = x;
                            lz = true;
                        }
                    }
                    acc[0] += ex as u8 as f64;
                    acc[1] += lz as u8 as f64;
                    acc[2] += 1.0;
                }
            }
            acc
        })
        .collect();
    let mut t = [0f64; 8];
    for p in &parts {
        for (a, b) in t.iter_mut().zip(p) {
            *a += b;
        }
    }
    let mean = t[3] / t[5];
    Rates {
        exact: t[0] / t[2],
        lazy: t[1] / t[2],
        std: (t[4] / t[5] - mean * mean).max(0.0).sqrt(),
        max_gap: t[6] / t[7],
    }
}

/// The same tensor with its tokens in a seeded random order (all heads move together).
fn shuffle_tokens(x: &[f32], l: usize, row: usize, seed: u64) -> Vec<f32> {
    let mut perm: Vec<usize> = (0..l).collect();
    let mut rng = Rng::new(seed);
    for i in (1..l).rev() {
        let j = (rng.uniform() * (i + 1) as f32) as usize % (i + 1);
        perm.swap(i, j);
    }
    let mut out = vec![0f32; x.len()];
    for (dst, &src) in perm.iter().enumerate() {
        out[dst * row..][..row].copy_from_slice(&x[src * row..][..row]);
    }
    out
}

fn write_bf16(path: &std::path::Path, x: &[f32]) -> std::io::Result<()> {
    // Values are bf16-exact (downloaded from bf16 tensors): the top 16 bits are the bf16.
    let bytes: Vec<u8> = x
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    std::fs::write(path, bytes)
}

/// Diagonal + ~19.5 % random 128-blocks per head (as `attention_bench`'s sparse case).
fn sparse_plan_20(h: usize, m: usize) -> Result<Arc<BlockPlan>> {
    let nb = m.div_ceil(128);
    let mut mask = vec![false; h * nb * nb];
    let mut st = 12345u64;
    for (i, v) in mask.iter_mut().enumerate() {
        st = st
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *v = (i / nb) % nb == i % nb || (st >> 33) % 1000 < 195;
    }
    Ok(Arc::new(BlockPlan::from_mask(1, h, 128, nb, nb, &mask)?))
}

/// In-model attention data vs random data: see the module docs (`attention-model`).
fn model_bench(be: &CudaBackend) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (f, hh, ww) = (21, 60, 104);
    let cfg = WanConfig::wan_1_3b();
    let t0 = Instant::now();
    let model = WanModel::load(be, &cfg, &RandomWeights { seed: 0 })?;
    println!(
        "wan-1.3b (random weights, seed 0) loaded in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut rng = Rng::new(3);
    let text = rng.normal_vec(cfg.text_len * cfg.text_dim, 1.0);
    let ctx = model.embed_text(be, &be.upload(&text, &[1, cfg.text_len, cfg.text_dim])?)?;
    let grid = model.grid(f, hh, ww)?;
    let geom = model.geometry(be, grid, None)?;
    let x = be.upload(
        &rng.normal_vec(cfg.in_dim * f * hh * ww, 1.0),
        &[1, cfg.in_dim, f, hh, ww],
    )?;
    let actx = AttnCtx::one_forward(grid, model.num_layers());
    let cap = Capture {
        layers: vec![0, 14, 29],
        got: Mutex::new(Vec::new()),
    };
    model.forward(be, &x, 500.0, &ctx, &geom, &cap, &actx)?;
    be.synchronize()?;
    let got = cap.got.into_inner().unwrap_or_default();
    drop((model, ctx, geom, x));
    let (l, h, dh) = (grid.0 * grid.1 * grid.2, cfg.num_heads, 128usize);
    let shape = [1, l, h, dh];
    println!(
        "captured q/k of layers {:?}, [1, {l}, {h}, {dh}]",
        cap.layers
    );

    // ---- host replay: how often must O be rescaled? ----
    let qtiles = [0usize, 85, 170, l.div_ceil(128) - 1];
    let a = 3f32.sqrt(); // unit variance, as `jenga bench attention`
    let rq = be.download(&rand_tensor(be, &shape, 1, a)?)?;
    let rk = be.download(&rand_tensor(be, &shape, 2, a)?)?;
    let v = rand_tensor(be, &shape, 3, a)?;
    let mut host: Vec<(String, Vec<f32>, Vec<f32>)> = vec![("random uniform".into(), rq, rk)];
    for (layer, q, k) in &got {
        host.push((
            format!("model layer {layer}"),
            be.download(q)?,
            be.download(k)?,
        ));
    }
    let kshuf0 = shuffle_tokens(&host[1].2, l, h * dh, 99);
    host.push((
        "model layer 0, keys shuffled".into(),
        host[1].1.clone(),
        kshuf0.clone(),
    ));
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9}   (176-key tiles; log2 units)",
        "rescale replay", "exact", "lazy t=8", "std", "max-mean"
    );
    for (name, q, k) in &host {
        let t = Instant::now();
        let r = rescale_rates(q, k, l, h, 176, &qtiles);
        println!(
            "{name:<32} {:>8.1}% {:>8.1}% {:>9.2} {:>9.2}   ({:.1} s)",
            100.0 * r.exact,
            100.0 * r.lazy,
            r.std,
            r.max_gap,
            t.elapsed().as_secs_f64()
        );
        json_line(
            "rescale replay",
            &[
                ("data", format!("\"{name}\"")),
                ("exact_rescale_share", format!("{:.4}", r.exact)),
                ("lazy_rescale_share", format!("{:.4}", r.lazy)),
                ("logit_std_log2", format!("{:.3}", r.std)),
                ("row_max_minus_mean_log2", format!("{:.3}", r.max_gap)),
            ],
        );
    }
    if let Ok(dir) = std::env::var("JENGA_DUMP_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        write_bf16(&dir.join("q.bin"), &host[1].1)?;
        write_bf16(&dir.join("k.bin"), &host[1].2)?;
        write_bf16(&dir.join("kshuf.bin"), &kshuf0)?;
        write_bf16(&dir.join("v.bin"), &be.download(&v)?)?;
        println!("wrote layer 0 q, k, shuffled k and v to {}", dir.display());
    }

    // ---- timings, interleaved rounds, median ----
    let mut cases: Vec<(String, CudaTensor, CudaTensor)> = Vec::new();
    for sc in [1.0f32, 2.0, 4.0, 8.0] {
        cases.push((
            format!("random uniform, q x{sc}"),
            rand_tensor(be, &shape, 1, a * sc)?,
            rand_tensor(be, &shape, 2, a)?,
        ));
    }
    for (layer, q, k) in &got {
        cases.push((format!("model layer {layer}"), q.clone(), k.clone()));
    }
    cases.push((
        "model layer 0, keys shuffled".into(),
        got[0].1.clone(),
        be.upload(&kshuf0, &shape)?,
    ));
    drop(host);
    let plan = AttnPlan::Sparse(sparse_plan_20(h, l)?);
    let dense = AttnPlan::Dense;
    be.set_attention_path(AttnPath::Auto);
    let rounds = 5;
    let mut td = vec![Vec::new(); cases.len()];
    let mut ts = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, q, k)) in cases.iter().enumerate() {
            td[i].push(time(be, 5, || {
                be.attention(q, k, &v, &dense, None).map(|_| ())
            })?);
            ts[i].push(time(be, 10, || {
                be.attention(q, k, &v, &plan, None).map(|_| ())
            })?);
        }
    }
    println!(
        "{:<32} {:>10} {:>10} {:>12}   (v random; median of {rounds} rounds)",
        "case", "dense ms", "x random", "sparse20 ms"
    );
    let d0 = median(&mut td[0].clone());
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let (d, s) = (median(&mut td[i]), median(&mut ts[i]));
        println!(
            "{name:<32} {:>10.3} {:>10.3} {:>12.3}",
            d * 1e3,
            d / d0,
            s * 1e3
        );
        json_line(
            "attention 12x32760x128 data",
            &[
                ("data", format!("\"{name}\"")),
                ("dense_ms", format!("{:.3}", d * 1e3)),
                ("dense_over_random", format!("{:.4}", d / d0)),
                ("sparse20_ms", format!("{:.3}", s * 1e3)),
            ],
        );
    }
    Ok(())
}
