//! Does the GEMM tuner's choice hold in steady state? For the Wan-1.3B linear shapes, every
//! cuBLASLt candidate (forced by heuristic rank) is timed through `linear` the way
//! `cuda_bench` times it (back-to-back calls, synchronize, wall clock), round-robin over
//! [`ROUNDS`] rounds (median kept), beside the tuner's own short event timings and the tuned and
//! untuned plans. `cargo run --release -p jenga-cuda --example gemm_tune`
//! (`JENGA_GEMM_LOG=1` shows the tuner's lines).

use jenga_cuda::{selftest::Rng, CudaBackend};
use jenga_tensor::{Act, Backend, Result};
use std::time::Instant;

const ROUNDS: usize = 3;

fn time(be: &CudaBackend, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    be.synchronize()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    be.synchronize()?;
    Ok(t.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let be = CudaBackend::new(0)?;
    println!("device: {}", be.name());
    let mut rng = Rng::new(7);
    // (rows, k, n, bias, act): projections, FFN up (GELU), FFN down, text embedding, 8192^3.
    let cases = [
        (32760, 1536, 1536, true, Act::None),
        (32760, 1536, 8960, true, Act::GeluTanh),
        (32760, 1536, 8960, true, Act::None),
        (32760, 8960, 1536, true, Act::None),
        (512, 4096, 1536, true, Act::GeluTanh),
        (512, 1536, 1536, true, Act::None),
        (8192, 8192, 8192, false, Act::None),
    ];
    for (rows, k, n, bias, act) in cases {
        let x = be.upload(&rng.normal_vec(rows * k, 1.0), &[1, rows, k])?;
        let w = be.upload(&rng.normal_vec(n * k, 0.02), &[n, k])?;
        let b = match bias {
            true => Some(be.upload(&rng.normal_vec(n, 0.1), &[n])?),
            false => None,
        };
        let lin = || be.linear(&x, &w, b.as_ref(), act).map(|_| ());
        let flops = 2.0 * rows as f64 * k as f64 * n as f64;
        let iters = ((30_000.0 / (flops / 6e8 + 8.0)) as usize).clamp(10, 2000);
        // Plans: tuned (the default), untuned, then each rank forced.
        be.set_gemm_tuning(true);
        lin()?;
        be.synchronize()?;
        let tune = be
            .gemm_tunes()
            .into_iter()
            .find(|t| t.tuned && t.shape.m == n as u64 && t.shape.n == rows as u64)
            .expect("a tuned plan");
        let cands = tune.candidates;
        // Slots: 0..cands forced ranks, cands = tuned, cands + 1 = untuned.
        let mut t = vec![Vec::new(); cands + 2];
        for _ in 0..ROUNDS {
            for (slot, ts) in t.iter_mut().enumerate() {
                be.set_gemm_forced_rank((slot < cands).then_some(slot));
                be.set_gemm_tuning(slot != cands + 1);
                ts.push(time(&be, iters, &lin)?);
            }
        }
        be.set_gemm_forced_rank(None);
        be.set_gemm_tuning(true);
        let t: Vec<f64> = t.into_iter().map(median).collect();
        let tf = |us: f64| flops / us / 1e6;
        println!(
            "linear {rows}x{k}->{n}{}{}: tuner chose #{} of {cands} (blocks of {}, tuning {:.1} ms); \
             steady state ({iters} calls x {ROUNDS} rounds): tuned {:.1} us {:.0} TFLOP/s, \
             untuned {:.1} us {:.0} TFLOP/s ({:+.2} %)",
            if bias { " +bias" } else { "" },
            if act == Act::GeluTanh { " +gelu" } else { "" },
            tune.chosen,
            tune.reps,
            tune.tune_ms,
            t[cands],
            tf(t[cands]),
            t[cands + 1],
            tf(t[cands + 1]),
            100.0 * (t[cands + 1] / t[cands] - 1.0)
        );
        for (r, &us) in t[..cands].iter().enumerate() {
            println!(
                "  #{r}: tuner {:8.1} us   steady {us:8.1} us {:6.0} TFLOP/s{}",
                tune.times_us[r],
                tf(us),
                if r == tune.chosen { "  <- chosen" } else { "" }
            );
        }
    }
    Ok(())
}
