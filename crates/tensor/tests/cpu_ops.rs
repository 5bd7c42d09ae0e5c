//! CPU ops against plain, obviously-correct implementations on small shapes.

use jenga_tensor::{Act, AttnPlan, Backend, BlockPlan, CpuBackend, KeyBias, TensorMeta};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::Arc;

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Naive attention in f64 with an optional key-block mask `keep(b, h, qblock, kblock)`.
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (b, lq, lk, h, d): (usize, usize, usize, usize, usize),
    keep: &dyn Fn(usize, usize, usize, usize) -> bool,
    bias: Option<KeyBias>,
) -> Vec<f32> {
    let mut o = vec![0f32; b * lq * h * d];
    let scale = 1.0 / (d as f64).sqrt();
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..lq {
                let qi = &q[((bi * lq + i) * h + hi) * d..][..d];
                let mut s: Vec<(usize, f64)> = Vec::new();
                for j in 0..lk {
                    if !keep(bi, hi, i / 128, j / 128) {
                        continue;
                    }
                    let kj = &k[((bi * lk + j) * h + hi) * d..][..d];
                    let mut dot = qi
                        .iter()
                        .zip(kj)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale;
                    if let Some(kb) = bias {
                        if i < kb.to_query && j >= kb.from_key {
                            dot += kb.bias as f64;
                        }
                    }
                    s.push((j, dot));
                }
                let m = s.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x.1 - m).exp()).sum();
                for (j, sc) in &s {
                    let p = (sc - m).exp() / z;
                    let vj = &v[((bi * lk + j) * h + hi) * d..][..d];
                    for t in 0..d {
                        o[((bi * lq + i) * h + hi) * d + t] += (p * vj[t] as f64) as f32;
                    }
                }
            }
        }
    }
    o
}

#[test]
fn linear_matches_hand_computation() {
    let be = CpuBackend::new();
    let x = be
        .upload(&[1.0, 2.0, 3.0, -1.0, 0.5, 2.0], &[2, 3])
        .unwrap();
    let w = be
        .upload(&[1.0, 0.0, 1.0, 0.5, -1.0, 2.0], &[2, 3])
        .unwrap();
    let b = be.upload(&[0.5, -0.5], &[2]).unwrap();
    let y = be
        .download(&be.linear(&x, &w, Some(&b), Act::None).unwrap())
        .unwrap();
    // row0: [1+3+0.5, 0.5-2+6-0.5], row1: [-1+2+0.5, -0.5-0.5+4-0.5]
    assert_eq!(y, vec![4.5, 4.0, 1.5, 2.5]);
    let y = be
        .download(&be.linear(&x, &w, None, Act::Silu).unwrap())
        .unwrap();
    let silu = |v: f32| v / (1.0 + (-v).exp());
    assert!(max_abs(&y, &[silu(4.0), silu(4.5), silu(1.0), silu(3.0)]) < 1e-6);
}

#[test]
fn norms_and_modulation() {
    let be = CpuBackend::new();
    let x = be
        .upload(&[1.0, 2.0, 3.0, 4.0, -2.0, 0.0, 2.0, 4.0], &[2, 1, 4])
        .unwrap();
    let ln = be
        .download(&be.layer_norm(&x, None, None, 0.0).unwrap())
        .unwrap();
    let s = (1.25f32).sqrt();
    assert!(max_abs(&ln[..4], &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) < 1e-6);
    let w = be.upload(&[1.0, 2.0, 1.0, 1.0], &[4]).unwrap();
    let rms = be.download(&be.rms_norm(&x, &w, 0.0).unwrap()).unwrap();
    let r = (30.0f32 / 4.0).sqrt();
    assert!(max_abs(&rms[..4], &[1.0 / r, 4.0 / r, 3.0 / r, 4.0 / r]) < 1e-6);
    // per-sample shift/scale: sample 1 gets scale 1 (→ ×2) and shift 1
    let shift = be
        .upload(&[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], &[2, 4])
        .unwrap();
    let scale = be
        .upload(&[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], &[2, 4])
        .unwrap();
    let m = be
        .download(&be.norm_modulate(&x, &shift, &scale, 0.0).unwrap())
        .unwrap();
    assert!(max_abs(&m[..4], &ln[..4]) < 1e-6);
    let expect: Vec<f32> = ln[4..].iter().map(|v| 2.0 * v + 1.0).collect();
    assert!(max_abs(&m[4..], &expect) < 1e-6);
    let g = be
        .download(&be.add_gated(&x, &x, Some(&scale)).unwrap())
        .unwrap();
    assert_eq!(&g[..4], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(&g[4..], &[-4.0, 0.0, 4.0, 8.0]);
}

#[test]
fn rope_rotates_adjacent_pairs() {
    let be = CpuBackend::new();
    // one token, one head, dh = 4: pairs (x0,x1), (x2,x3); rotate pair 0 by 90°, pair 1 by 0°.
    let x = be.upload(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 1, 4]).unwrap();
    let cos = be.upload(&[0.0, 1.0], &[1, 2]).unwrap();
    let sin = be.upload(&[1.0, 0.0], &[1, 2]).unwrap();
    let y = be.download(&be.rope(&x, &cos, &sin).unwrap()).unwrap();
    assert_eq!(y, vec![-2.0, 1.0, 3.0, 4.0]);
}

#[test]
fn narrow_cat_gather_pool() {
    let be = CpuBackend::new();
    let x = be
        .upload(&(0..12).map(|v| v as f32).collect::<Vec<_>>(), &[2, 3, 2])
        .unwrap();
    let n = be.narrow(&x, 1, 1, 2).unwrap();
    assert_eq!(n.shape(), &[2, 2, 2]);
    assert_eq!(
        be.download(&n).unwrap(),
        vec![2., 3., 4., 5., 8., 9., 10., 11.]
    );
    let c = be.cat(&[&x, &n], 1).unwrap();
    assert_eq!(c.shape(), &[2, 5, 2]);
    assert_eq!(
        be.download(&be.narrow(&c, 1, 3, 2).unwrap()).unwrap(),
        be.download(&n).unwrap()
    );
    let g = be.gather_tokens(&x, &[2, 0]).unwrap();
    assert_eq!(
        be.download(&g).unwrap(),
        vec![4., 5., 0., 1., 10., 11., 6., 7.]
    );
    assert!(be.gather_tokens(&x, &[3]).is_err());
    // pool [1, L=3, H=1, D=2] with block 2: block0 = mean(t0,t1), block1 = t2 / 2 (padding counted)
    let p = be
        .reshape(&be.narrow(&x, 0, 0, 1).unwrap(), &[1, 3, 1, 2])
        .unwrap();
    let pooled = be.block_mean_pool(&p, 2).unwrap();
    assert_eq!(pooled.shape(), &[1, 1, 2, 2]);
    assert_eq!(be.download(&pooled).unwrap(), vec![1.0, 2.0, 2.0, 2.5]);
}

#[test]
fn attention_dense_matches_naive_with_bias_and_ragged_lengths() {
    let mut rng = StdRng::seed_from_u64(7);
    let be = CpuBackend::new();
    let (b, lq, lk, h, d) = (2, 300, 700, 2, 16);
    let q = rand_vec(&mut rng, b * lq * h * d);
    let k = rand_vec(&mut rng, b * lk * h * d);
    let v = rand_vec(&mut rng, b * lk * h * d);
    let (tq, tk, tv) = (
        be.upload(&q, &[b, lq, h, d]).unwrap(),
        be.upload(&k, &[b, lk, h, d]).unwrap(),
        be.upload(&v, &[b, lk, h, d]).unwrap(),
    );
    for bias in [
        None,
        Some(KeyBias {
            from_key: 650,
            to_query: usize::MAX,
            bias: 1.5,
        }),
        // Biased rows end inside the second 128-row query tile.
        Some(KeyBias {
            from_key: 650,
            to_query: 170,
            bias: 1.5,
        }),
    ] {
        let o = be
            .download(&be.attention(&tq, &tk, &tv, &AttnPlan::Dense, bias).unwrap())
            .unwrap();
        let r = naive_attention(&q, &k, &v, (b, lq, lk, h, d), &|_, _, _, _| true, bias);
        assert!(max_abs(&o, &r) < 1e-5, "err {}", max_abs(&o, &r));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Sparse attention equals the naive masked reference for random plans (diagonal kept),
    /// and a plan keeping every block equals dense attention.
    #[test]
    fn sparse_attention_matches_masked_reference(
        lq in 1usize..600, lk in 1usize..600, seed in 0u64..1000, density in 0.05f64..1.0
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let be = CpuBackend::new();
        let (b, h, d) = (1, 2, 8);
        let (qb, kb) = (lq.div_ceil(128), lk.div_ceil(128));
        let mask: Vec<bool> = (0..b * h * qb * kb).map(|i| (i % kb) == ((i / kb) % qb) % kb || rng.gen_bool(density)).collect();
        let plan = Arc::new(BlockPlan::from_mask(b, h, 128, qb, kb, &mask).unwrap());
        let q = rand_vec(&mut rng, b * lq * h * d);
        let k = rand_vec(&mut rng, b * lk * h * d);
        let v = rand_vec(&mut rng, b * lk * h * d);
        let (tq, tk, tv) = (
            be.upload(&q, &[b, lq, h, d]).unwrap(),
            be.upload(&k, &[b, lk, h, d]).unwrap(),
            be.upload(&v, &[b, lk, h, d]).unwrap(),
        );
        let o = be.download(&be.attention(&tq, &tk, &tv, &AttnPlan::Sparse(plan.clone()), None).unwrap()).unwrap();
        let keep = |bi: usize, hi: usize, i: usize, j: usize| mask[((bi * h + hi) * qb + i) * kb + j];
        let r = naive_attention(&q, &k, &v, (b, lq, lk, h, d), &keep, None);
        prop_assert!(max_abs(&o, &r) < 1e-5);
        let full = AttnPlan::Sparse(Arc::new(BlockPlan::full(b, h, 128, lq, lk)));
        let of = be.download(&be.attention(&tq, &tk, &tv, &full, None).unwrap()).unwrap();
        let od = be.download(&be.attention(&tq, &tk, &tv, &AttnPlan::Dense, None).unwrap()).unwrap();
        prop_assert!(max_abs(&of, &od) < 1e-6);
    }
}

#[test]
fn shape_errors_name_the_op() {
    let be = CpuBackend::new();
    let x = be.upload(&[0.0; 6], &[2, 3]).unwrap();
    let w = be.upload(&[0.0; 8], &[2, 4]).unwrap();
    let e = be.linear(&x, &w, None, Act::None).unwrap_err().to_string();
    assert!(
        e.contains("linear") && e.contains("[2, 3]") && e.contains("[2, 4]"),
        "{e}"
    );
    assert!(be.upload(&[0.0; 5], &[2, 3]).is_err());
}

#[test]
fn fast_exp_is_accurate_over_the_softmax_range() {
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f32 / 200_000.0;
        let r = (x as f64).exp();
        let e = ((jenga_tensor::cpu::fast_exp(x) as f64 - r) / r).abs();
        worst = worst.max(e);
    }
    assert!(worst < 5e-7, "worst relative error {worst:e}");
    // far below the range it clamps instead of producing garbage bits
    let tiny = jenga_tensor::cpu::fast_exp(-1000.0);
    assert!(tiny.is_finite() && (0.0..1e-37).contains(&tiny));
    assert_eq!(jenga_tensor::cpu::fast_exp(f32::NEG_INFINITY), tiny);
}

#[test]
fn patchify_in_a_token_order_is_the_gathered_raster_patchify_and_unpatchify_inverts_it() {
    let be = CpuBackend::new();
    let (b, c, f, h, w) = (2, 3, 4, 6, 10);
    let data: Vec<f32> = (0..b * c * f * h * w).map(|i| i as f32).collect();
    let x = be.upload(&data, &[b, c, f, h, w]).unwrap();
    let patch = [2, 2, 5];
    let toks = 2 * 3 * 2;
    let order: Vec<u32> = (0..toks as u32).map(|i| (i * 5) % toks as u32).collect();
    let raster = be.patchify(&x, patch, None).unwrap();
    let ordered = be.patchify(&x, patch, Some(&order)).unwrap();
    let gathered = be.gather_tokens(&raster, &order).unwrap();
    assert_eq!(
        be.download(&ordered).unwrap(),
        be.download(&gathered).unwrap()
    );
    assert_ne!(
        be.download(&ordered).unwrap(),
        be.download(&raster).unwrap()
    );
    // A head whose vector is (kt, kh, kw, c)-ordered: build it from the video, in token order.
    let per_tok = 2 * 2 * 5 * c;
    let mut tokens = vec![0f32; b * toks * per_tok];
    for bi in 0..b {
        for (k, &r) in order.iter().enumerate() {
            let r = r as usize;
            let (zf, zy, zx) = (r / 6, (r / 2) % 3, r % 2);
            let mut i = 0;
            for kt in 0..2 {
                for ky in 0..2 {
                    for kx in 0..5 {
                        for ci in 0..c {
                            let (ff, yy, xx) = (zf * 2 + kt, zy * 2 + ky, zx * 5 + kx);
                            tokens[(bi * toks + k) * per_tok + i] =
                                data[(((bi * c + ci) * f + ff) * h + yy) * w + xx];
                            i += 1;
                        }
                    }
                }
            }
        }
    }
    let t = be.upload(&tokens, &[b, toks, per_tok]).unwrap();
    let video = be
        .unpatchify(&t, (2, 3, 2), patch, c, Some(&order))
        .unwrap();
    assert_eq!(be.download(&video).unwrap(), data);
    // Not a permutation: refused with the op's name.
    let bad = vec![0u32; toks];
    let e = be.patchify(&x, patch, Some(&bad)).unwrap_err().to_string();
    assert!(e.contains("patchify") && e.contains("permutation"), "{e}");
}
