//! `Backend::attention_biased` (T5's relative-position attention) on the CPU backend, against
//! the dense attention it generalises and a bias that selects one key per (head, query).

use jenga_tensor::{AttnPlan, Backend, CpuBackend, KeyBias};
use rand::{rngs::StdRng, Rng, SeedableRng};

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

const B: usize = 2;
const LQ: usize = 7;
const LK: usize = 9;
const H: usize = 3;
const D: usize = 8;

fn qkv(be: &CpuBackend) -> [<CpuBackend as Backend>::Tensor; 3] {
    let mut rng = StdRng::seed_from_u64(7);
    let q = be
        .upload(&rand_vec(&mut rng, B * LQ * H * D), &[B, LQ, H, D])
        .unwrap();
    let k = be
        .upload(&rand_vec(&mut rng, B * LK * H * D), &[B, LK, H, D])
        .unwrap();
    let v = be
        .upload(&rand_vec(&mut rng, B * LK * H * D), &[B, LK, H, D])
        .unwrap();
    [q, k, v]
}

#[test]
fn key_bias_and_scale_match_dense_attention() {
    let be = CpuBackend::new();
    let [q, k, v] = qkv(&be);
    let scale = 1.0 / (D as f32).sqrt();
    // bias 0.7 on keys ≥ 4 for every head and query = the Jenga key bias on the scaled logits
    let bias: Vec<f32> = (0..H * LQ * LK)
        .map(|i| if i % LK >= 4 { 0.7 } else { 0.0 })
        .collect();
    let bias = be.upload(&bias, &[H, LQ, LK]).unwrap();
    let ours = be.attention_biased(&q, &k, &v, &bias, scale).unwrap();
    let kb = KeyBias {
        from_key: 4,
        to_query: usize::MAX,
        bias: 0.7,
    };
    let want = be
        .attention(&q, &k, &v, &AttnPlan::Dense, Some(kb))
        .unwrap();
    let err = max_abs(&be.download(&ours).unwrap(), &be.download(&want).unwrap());
    assert!(err < 1e-5, "max abs {err}");
}

#[test]
fn key_bias_reaches_only_query_rows_before_to_query() {
    let be = CpuBackend::new();
    let [q, k, v] = qkv(&be);
    let scale = 1.0 / (D as f32).sqrt();
    // bias 0.7 on keys ≥ 4 for queries < 3 only (the amplifier: video rows × condition keys)
    let bias: Vec<f32> = (0..H * LQ * LK)
        .map(|i| {
            let (qi, j) = ((i / LK) % LQ, i % LK);
            if qi < 3 && j >= 4 {
                0.7
            } else {
                0.0
            }
        })
        .collect();
    let bias = be.upload(&bias, &[H, LQ, LK]).unwrap();
    let ours = be.attention_biased(&q, &k, &v, &bias, scale).unwrap();
    let kb = KeyBias {
        from_key: 4,
        to_query: 3,
        bias: 0.7,
    };
    let want = be
        .attention(&q, &k, &v, &AttnPlan::Dense, Some(kb))
        .unwrap();
    let err = max_abs(&be.download(&ours).unwrap(), &be.download(&want).unwrap());
    assert!(err < 1e-5, "max abs {err}");
}

#[test]
fn bias_is_indexed_per_head_query_and_key() {
    let be = CpuBackend::new();
    let [q, k, v] = qkv(&be);
    // A large bias on one key per (head, query) makes the output that key's value row.
    let pick = |h: usize, i: usize| (i + 2 * h) % LK;
    let mut bias = vec![0f32; H * LQ * LK];
    for h in 0..H {
        for i in 0..LQ {
            bias[(h * LQ + i) * LK + pick(h, i)] = 60.0;
        }
    }
    let bias = be.upload(&bias, &[H, LQ, LK]).unwrap();
    let o = be
        .download(&be.attention_biased(&q, &k, &v, &bias, 1.0).unwrap())
        .unwrap();
    let vh = be.download(&v).unwrap();
    for b in 0..B {
        for i in 0..LQ {
            for h in 0..H {
                let j = pick(h, i);
                let got = &o[((b * LQ + i) * H + h) * D..][..D];
                let want = &vh[((b * LK + j) * H + h) * D..][..D];
                assert!(max_abs(got, want) < 1e-4, "b {b} i {i} h {h}");
            }
        }
    }
}

#[test]
fn wrong_bias_shape_is_an_error() {
    let be = CpuBackend::new();
    let [q, k, v] = qkv(&be);
    let bias = be.upload(&vec![0.0; H * LK * LQ], &[H, LK, LQ]).unwrap();
    let e = be.attention_biased(&q, &k, &v, &bias, 1.0).unwrap_err();
    assert!(e.to_string().contains("attention_biased"), "{e}");
}
