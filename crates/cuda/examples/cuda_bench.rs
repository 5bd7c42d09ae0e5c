//! Throughput of the CUDA backend's heavy ops on Wan-1.3B-sized shapes.
//! `cargo run --release -p jenga-cuda --example cuda_bench [attention]` (prints one line per
//! case; `attention` runs only the attention cases). Attention cases also print JSON lines
//! (`{"case": ...}`) with times, TFLOP/s and the relative L2 error against the mma kernel.
//! `attention-variants` times the Hopper kernel's dense variants (176- / 128-key tiles) against
//! each other, interleaved, on the same data.

use jenga_cuda::{selftest::rel_l2, selftest::Rng, AttnPath, CudaBackend, CudaTensor};
use jenga_tensor::{Act, AttnPlan, Backend, BlockPlan, Result};
use std::sync::Arc;
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
    let bias = Some(jenga_tensor::KeyBias {
        from_key: m - 512,
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
