//! The fused norm ops of the CUDA backend (`add_gated_layer_norm`, `add_gated_norm_modulate`,
//! `rms_norm_rope`) against the unfused ops they replace, on random data at Wan shapes.
//!
//! Criteria: on the GPU the fused kernels are bit-identical to the unfused kernels (same f32
//! arithmetic in the same order, the same bf16 roundings: every bf16 output compared with
//! `assert_eq!`), and within relative L2 ≤ 1e-2 of the CPU backend (f32 throughout, unfused —
//! the trait's default implementation). Shapes the fused kernels do not take (a last dim not a
//! multiple of 8) take the unfused path and are checked the same way. Also prints each fused
//! op's time next to the unfused pair's at Wan-1.3B's 21x60x104 size (32760 tokens). Skips
//! without a CUDA driver.

use jenga_cuda::selftest::{rel_l2, Rng};
use jenga_cuda::{CudaBackend, CudaTensor};
use jenga_tensor::{Backend, CpuBackend, CpuTensor, FusedOps, TensorMeta};
use std::time::Instant;

/// Relative L2 tolerance against the CPU backend (bf16 storage of inputs and outputs).
const CPU_TOL: f64 = 1e-2;

fn backend() -> Option<CudaBackend> {
    jenga_cuda::selftest::test_backend()
}

/// The same host data on both backends.
struct Pair {
    g: CudaTensor,
    c: CpuTensor,
}

fn pair(be: &CudaBackend, cpu: &CpuBackend, data: &[f32], shape: &[usize]) -> Pair {
    Pair {
        g: be.upload(data, shape).unwrap(),
        c: cpu.upload(data, shape).unwrap(),
    }
}

fn bits(be: &CudaBackend, t: &CudaTensor) -> Vec<half::bf16> {
    be.download_bf16(t).unwrap()
}

fn check_cpu(be: &CudaBackend, cpu: &CpuBackend, g: &CudaTensor, c: &CpuTensor, what: &str) {
    assert_eq!(g.shape(), c.shape(), "{what}: shape");
    let e = rel_l2(&be.download(g).unwrap(), &cpu.download(c).unwrap());
    assert!(
        e <= CPU_TOL,
        "{what}: rel L2 {e:.2e} against the CPU backend"
    );
}

/// Random RoPE tables `[l, d/2]` (cos/sin of random angles, bf16-exact).
fn rope_tables(rng: &mut Rng, l: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let a = rng.normal_vec(l * d / 2, 3.0);
    let r = |v: f32| half::bf16::from_f32(v).to_f32();
    (
        a.iter().map(|t| r(t.cos())).collect(),
        a.iter().map(|t| r(t.sin())).collect(),
    )
}

/// `1 + N(0, s)` (norm weights, bf16-exact).
fn around_one(rng: &mut Rng, n: usize, s: f32) -> Vec<f32> {
    rng.normal_vec(n, s)
        .iter()
        .map(|v| half::bf16::from_f32(1.0 + v).to_f32())
        .collect()
}

/// `add_gated` + `layer_norm` (norm3) and `add_gated` + `norm_modulate`, gated and not, with
/// and without the affine, at Wan-1.3B/14B widths, a width whose row leaves most of a warp idle
/// (200), and one the fused kernel does not take (12).
#[test]
fn add_gated_norms_equal_the_unfused_ops() {
    let Some(be) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(21);
    let eps = 1e-6;
    for (b, l, d) in [
        (1, 4096, 1536),
        (2, 1000, 1536),
        (1, 33, 5120),
        (1, 50, 200),
        (1, 20, 12),
    ] {
        let n = b * l * d;
        let x = pair(&be, &cpu, &rng.normal_vec(n, 2.0), &[b, l, d]);
        let y = pair(&be, &cpu, &rng.normal_vec(n, 1.0), &[b, l, d]);
        let gate = pair(&be, &cpu, &rng.normal_vec(b * d, 0.5), &[b, d]);
        let w = pair(&be, &cpu, &around_one(&mut rng, d, 0.2), &[d]);
        let bias = pair(&be, &cpu, &rng.normal_vec(d, 0.2), &[d]);
        let shift = pair(&be, &cpu, &rng.normal_vec(b * d, 0.3), &[b, d]);
        let scale = pair(&be, &cpu, &rng.normal_vec(b * d, 0.3), &[b, d]);
        for gated in [true, false] {
            let (gg, gc) = if gated {
                (Some(&gate.g), Some(&gate.c))
            } else {
                (None, None)
            };
            // add_gated_layer_norm, with and without the affine
            for affine in [true, false] {
                let (wg, bg, wc, bc) = if affine {
                    (Some(&w.g), Some(&bias.g), Some(&w.c), Some(&bias.c))
                } else {
                    (None, None, None, None)
                };
                let case =
                    format!("add_gated_layer_norm {b}x{l}x{d} gated {gated} affine {affine}");
                let (s, o) = be
                    .add_gated_layer_norm(&x.g, &y.g, gg, wg, bg, eps)
                    .unwrap();
                let s_ref = be.add_gated(&x.g, &y.g, gg).unwrap();
                let o_ref = be.layer_norm(&s_ref, wg, bg, eps).unwrap();
                assert_eq!(s.shape(), [b, l, d], "{case}");
                assert_eq!(bits(&be, &s), bits(&be, &s_ref), "{case}: sum");
                assert_eq!(bits(&be, &o), bits(&be, &o_ref), "{case}: norm");
                let (sc, oc) = cpu
                    .add_gated_layer_norm(&x.c, &y.c, gc, wc, bc, eps)
                    .unwrap();
                check_cpu(&be, &cpu, &s, &sc, &format!("{case}: sum"));
                check_cpu(&be, &cpu, &o, &oc, &format!("{case}: norm"));
            }
            // add_gated_norm_modulate
            let case = format!("add_gated_norm_modulate {b}x{l}x{d} gated {gated}");
            let (s, o) = be
                .add_gated_norm_modulate(&x.g, &y.g, gg, &shift.g, &scale.g, eps)
                .unwrap();
            let s_ref = be.add_gated(&x.g, &y.g, gg).unwrap();
            let o_ref = be.norm_modulate(&s_ref, &shift.g, &scale.g, eps).unwrap();
            assert_eq!(bits(&be, &s), bits(&be, &s_ref), "{case}: sum");
            assert_eq!(bits(&be, &o), bits(&be, &o_ref), "{case}: norm");
            let (sc, oc) = cpu
                .add_gated_norm_modulate(&x.c, &y.c, gc, &shift.c, &scale.c, eps)
                .unwrap();
            check_cpu(&be, &cpu, &s, &sc, &format!("{case}: sum"));
            check_cpu(&be, &cpu, &o, &oc, &format!("{case}: norm"));
        }
        // Shapes that do not fit are errors, as for the unfused ops.
        let bad = be.upload(&vec![0.0; d + 1], &[1, d + 1]).unwrap();
        assert!(be
            .add_gated_norm_modulate(&x.g, &y.g, Some(&bad), &shift.g, &scale.g, eps)
            .is_err());
        assert!(be
            .add_gated_layer_norm(&x.g, &y.g, None, Some(&bad), None, eps)
            .is_err());
    }
}

/// `rms_norm` over the whole `H·Dh` row + `rope` (+ `block_mean_pool` of the result): Wan-1.3B
/// heads (12 x 128) with and without pooling, token counts that are not multiples of the pool
/// block or of the pool kernel's 8-token groups, a batch of 2, Wan-14B's row (40 x 128: 640
/// threads a CTA; the pool kernel falls back to the unfused ops where its registers do not
/// allow that many), a row of 200 (most of a warp idle), an odd pool block, and a head dim the
/// fused kernels do not take (12: unfused path).
#[test]
fn rms_norm_rope_equals_the_unfused_ops() {
    let Some(be) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(22);
    let eps = 1e-6;
    for (b, l, h, dh, pool) in [
        (1, 4096, 12, 128, None),
        (1, 4096, 12, 128, Some(128)),
        (2, 1000, 12, 128, Some(128)),
        (1, 1003, 12, 128, None),
        (1, 300, 2, 64, Some(64)),
        (1, 130, 2, 128, Some(7)),
        (1, 257, 5, 40, Some(128)),
        (1, 77, 40, 128, None),
        (1, 77, 40, 128, Some(16)),
        (1, 100, 2, 12, Some(128)),
        (1, 100, 2, 12, None),
    ] {
        let d = h * dh;
        let case = format!("rms_norm_rope {b}x{l}x{h}x{dh} pool {pool:?}");
        let x = pair(&be, &cpu, &rng.normal_vec(b * l * d, 3.0), &[b, l, h, dh]);
        let w = pair(&be, &cpu, &around_one(&mut rng, d, 0.3), &[d]);
        let (cs, sn) = rope_tables(&mut rng, l, dh);
        let cos = pair(&be, &cpu, &cs, &[l, dh / 2]);
        let sin = pair(&be, &cpu, &sn, &[l, dh / 2]);
        let (y, pooled) = be
            .rms_norm_rope(&x.g, &w.g, eps, &cos.g, &sin.g, pool)
            .unwrap();
        // unfused on the GPU: rms_norm on [B, L, H·Dh], rope, block_mean_pool
        let flat = be.reshape(&x.g, &[b, l, d]).unwrap();
        let n = be.rms_norm(&flat, &w.g, eps).unwrap();
        let n = be.reshape(&n, &[b, l, h, dh]).unwrap();
        let y_ref = be.rope(&n, &cos.g, &sin.g).unwrap();
        assert_eq!(y.shape(), [b, l, h, dh], "{case}");
        assert_eq!(bits(&be, &y), bits(&be, &y_ref), "{case}: rotated");
        let (yc, pc) = cpu
            .rms_norm_rope(&x.c, &w.c, eps, &cos.c, &sin.c, pool)
            .unwrap();
        check_cpu(&be, &cpu, &y, &yc, &case);
        match pool {
            Some(block) => {
                let p = pooled.unwrap_or_else(|| panic!("{case}: the CUDA backend pools"));
                assert_eq!(p.shape(), [b, h, l.div_ceil(block), dh], "{case}");
                let p_ref = be.block_mean_pool(&y_ref, block).unwrap();
                assert_eq!(bits(&be, &p), bits(&be, &p_ref), "{case}: pooled");
                check_cpu(&be, &cpu, &p, &pc.unwrap(), &format!("{case}: pooled"));
            }
            None => assert!(pooled.is_none(), "{case}: means nobody asked for"),
        }
    }
    // Not [B, L, H, Dh]: an error.
    let x = be.upload(&[0.0; 16], &[1, 2, 8]).unwrap();
    let w = be.upload(&[1.0; 8], &[8]).unwrap();
    let t = be.upload(&[0.0; 8], &[2, 4]).unwrap();
    assert!(be.rms_norm_rope(&x, &w, eps, &t, &t, None).is_err());
}

/// Milliseconds per call of `f` (after a warm-up call), averaged over `n` calls.
fn time_ms(be: &CudaBackend, n: usize, mut f: impl FnMut()) -> f64 {
    f();
    be.synchronize().unwrap();
    let t0 = Instant::now();
    for _ in 0..n {
        f();
    }
    be.synchronize().unwrap();
    t0.elapsed().as_secs_f64() * 1e3 / n as f64
}

/// Fused vs unfused time at Wan-1.3B's 21x60x104 size (32760 tokens x 1536), printed with
/// the bandwidth each reaches (passes over a `[L, D]` bf16 tensor: add + norm 4 fused, 5
/// unfused; rms_norm + rope 2 fused, 4 unfused). Nothing asserted: the other tests check the
/// results.
#[test]
fn fused_norm_timings_at_wan_size() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(23);
    let (l, h, dh, eps, reps) = (32760, 12, 128, 1e-6, 50);
    let d = h * dh;
    let up = |v: &[f32], s: &[usize]| be.upload(v, s).unwrap();
    let x = up(&rng.normal_vec(l * d, 2.0), &[1, l, d]);
    let y = up(&rng.normal_vec(l * d, 1.0), &[1, l, d]);
    let gate = up(&rng.normal_vec(d, 0.5), &[1, d]);
    let shift = up(&rng.normal_vec(d, 0.3), &[1, d]);
    let scale = up(&rng.normal_vec(d, 0.3), &[1, d]);
    let w = up(&around_one(&mut rng, d, 0.2), &[d]);
    let bias = up(&rng.normal_vec(d, 0.2), &[d]);
    let (cs, sn) = rope_tables(&mut rng, l, dh);
    let (cos, sin) = (up(&cs, &[l, dh / 2]), up(&sn, &[l, dh / 2]));
    let xh = be.reshape(&x, &[1, l, h, dh]).unwrap();
    let gb = (l * d * 2) as f64 / 1e9; // one pass over a [L, D] bf16 tensor, GB

    let f = time_ms(&be, reps, || {
        be.add_gated_layer_norm(&x, &y, Some(&gate), Some(&w), Some(&bias), eps)
            .unwrap();
    });
    let u = time_ms(&be, reps, || {
        let s = be.add_gated(&x, &y, Some(&gate)).unwrap();
        be.layer_norm(&s, Some(&w), Some(&bias), eps).unwrap();
    });
    eprintln!(
        "add_gated + layer_norm     fused {f:.3} ms ({:.0} GB/s), unfused {u:.3} ms ({:.0} GB/s), {:.2}x",
        4.0 * gb / f * 1e3,
        5.0 * gb / u * 1e3,
        u / f
    );
    let f = time_ms(&be, reps, || {
        be.add_gated_norm_modulate(&x, &y, None, &shift, &scale, eps)
            .unwrap();
    });
    let u = time_ms(&be, reps, || {
        let s = be.add_gated(&x, &y, None).unwrap();
        be.norm_modulate(&s, &shift, &scale, eps).unwrap();
    });
    eprintln!(
        "add_gated + norm_modulate  fused {f:.3} ms ({:.0} GB/s), unfused {u:.3} ms ({:.0} GB/s), {:.2}x",
        4.0 * gb / f * 1e3,
        5.0 * gb / u * 1e3,
        u / f
    );
    for pool in [None, Some(128)] {
        let f = time_ms(&be, reps, || {
            be.rms_norm_rope(&xh, &w, eps, &cos, &sin, pool).unwrap();
        });
        let u = time_ms(&be, reps, || {
            let n = be.rms_norm(&x, &w, eps).unwrap();
            let n = be.reshape(&n, &[1, l, h, dh]).unwrap();
            match pool {
                Some(p) => drop(be.rope_pooled(&n, &cos, &sin, p).unwrap()),
                None => drop(be.rope(&n, &cos, &sin).unwrap()),
            }
        });
        eprintln!(
            "rms_norm + rope (pool {pool:?}) fused {f:.3} ms ({:.0} GB/s), unfused {u:.3} ms ({:.0} GB/s), {:.2}x",
            2.0 * gb / f * 1e3,
            4.0 * gb / u * 1e3,
            u / f
        );
    }
}
