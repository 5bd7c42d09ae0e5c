//! Time the Jenga plan build at Wan-1.3B 480p size (12 heads x 256 blocks, Dh 128):
//! `cargo run --release -p jenga-carve --example plan_timing`.
use jenga_carve::importance::{block_scores, select_row, RowScratch};
use jenga_carve::{AttnCtx, JengaConfig, JengaPolicy};
use std::time::Instant;

fn main() {
    micro();
    let (heads, nb, d) = (12usize, 256usize, 128usize);
    let mut s = 1u64;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let qhat: Vec<f32> = (0..heads * nb * d).map(|_| rnd()).collect();
    let khat: Vec<f32> = (0..heads * nb * d).map(|_| rnd() * 8.0).collect();
    let mut scores = vec![0f32; nb * nb];
    let t0 = Instant::now();
    for h in 0..heads {
        block_scores(
            &qhat[h * nb * d..],
            &khat[h * nb * d..],
            nb,
            nb,
            d,
            &mut scores,
        );
    }
    let gemm_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut keep = vec![false; nb];
    let mut scratch = RowScratch::default();
    let t0 = Instant::now();
    let mut kept = 0;
    for _ in 0..heads {
        block_scores(&qhat, &khat, nb, nb, d, &mut scores);
        for r in 0..nb {
            kept += select_row(
                &mut scores[r * nb..][..nb],
                0.9,
                64,
                &mut scratch,
                &mut keep,
            );
        }
    }
    let both_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "1 thread: scores {gemm_ms:.2} ms, scores+select {both_ms:.2} ms (mean kept {:.1})",
        kept as f64 / (heads * nb) as f64
    );
    let pol = JengaPolicy::new(JengaConfig::wan(&[0.75, 0.85], 0.9)).expect("config");
    let ctx = AttnCtx {
        step: 10,
        num_steps: 50,
        layer: 0,
        num_layers: 30,
        stage: 0,
        grid: (21, 30, 52),
        cond_tokens: 0,
    };
    pol.geometry(ctx.grid);
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let t0 = Instant::now();
        let p = pol
            .plan_from_pooled(&qhat, &khat, 1, heads, d, &ctx, 0.75)
            .expect("plan");
        best = best.min(t0.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(p);
    }
    println!(
        "full plan ({} threads): best {best:.2} ms",
        rayon::current_num_threads()
    );
}

#[allow(dead_code)]
pub fn micro() {
    let n = 256;
    let rows = 3072;
    let mut v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 256) as f32 / 50.0).collect();
    let t0 = Instant::now();
    let mut acc = 0f32;
    for _ in 0..rows {
        for x in v.iter_mut() {
            *x = (*x - 3.0).exp();
            acc += *x;
        }
        for (i, x) in v.iter_mut().enumerate() {
            *x = ((i * 7919) % 256) as f32 / 50.0;
        }
    }
    println!("exp: {:.2} ms ({acc})", t0.elapsed().as_secs_f64() * 1e3);
    let mut keys: Vec<u64> = (0..n as u64)
        .map(|i| ((i * 2654435761) % 1000003) << 32 | i)
        .collect();
    let base = keys.clone();
    let t0 = Instant::now();
    for _ in 0..rows {
        keys.copy_from_slice(&base);
        keys.sort_unstable();
    }
    println!("sort: {:.2} ms", t0.elapsed().as_secs_f64() * 1e3);
}
