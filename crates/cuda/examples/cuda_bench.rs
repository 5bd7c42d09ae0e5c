//! Throughput of the CUDA backend's heavy ops on Wan-1.3B-sized shapes.
//! `cargo run --release -p jenga-cuda --example cuda_bench` (prints one line per case).

use jenga_cuda::{selftest::Rng, AttnPath, CudaBackend};
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
    let flops = 4.0 * (m as f64).powi(2) * 128.0 * 12.0;
    for path in [AttnPath::Auto, AttnPath::MmaSimple] {
        be.set_attention_path(path);
        let s = time(&be, 5, || {
            be.attention(&q, &q, &q, &AttnPlan::Dense, None).map(|_| ())
        })?;
        let label = format!("attention dense 32760 H12 Dh128 {path:?}");
        println!(
            "{label:<40} {:8.3} ms {:7.1} TFLOP/s",
            s * 1e3,
            flops / s / 1e12
        );
    }
    // Block-sparse, ~20% of (128 x 128) blocks kept (diagonal + pseudo-random).
    let nb = m.div_ceil(128);
    let mut mask = vec![false; 12 * nb * nb];
    let mut st = 12345u64;
    for (i, v) in mask.iter_mut().enumerate() {
        st = st
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *v = (i / nb) % nb == i % nb || (st >> 33) % 1000 < 195;
    }
    let plan = Arc::new(BlockPlan::from_mask(1, 12, 128, nb, nb, &mask)?);
    let density = plan.density();
    let sparse = AttnPlan::Sparse(plan);
    be.set_attention_path(AttnPath::Auto);
    let s = time(&be, 5, || {
        be.attention(&q, &q, &q, &sparse, None).map(|_| ())
    })?;
    let label = format!("attention sparse {:.1}% kept", density * 100.0);
    println!(
        "{label:<40} {:8.3} ms {:7.1} TFLOP/s (dense-equivalent)",
        s * 1e3,
        flops / s / 1e12
    );
    be.set_attention_path(AttnPath::MmaSimple);
    let s = time(&be, 5, || {
        be.attention(&q, &q, &q, &sparse, None).map(|_| ())
    })?;
    let label = format!("attention sparse {:.1}% MmaSimple", density * 100.0);
    println!("{label:<40} {:8.3} ms", s * 1e3);
    be.set_attention_path(AttnPath::Naive);
    let s = time(&be, 1, || {
        be.attention(&q, &q, &q, &AttnPlan::Dense, None).map(|_| ())
    })?;
    println!(
        "{:<40} {:8.3} ms {:7.1} TFLOP/s",
        "attention dense (reference kernel)",
        s * 1e3,
        flops / s / 1e12
    );
    Ok(())
}
