//! `KeyBias::to_query`: the Jenga text-attention amplifier biases video-query rows × condition
//! keys only. In a joint sequence `[video (N) | condition (T)]` with a bias on keys ≥ N, the
//! condition-query rows (≥ N) must come out as unbiased attention and the video rows as biased
//! attention. Checked against a naive softmax here, on every CPU path that takes a bias (dense,
//! block-sparse, and the masked reference).

use jenga_tensor::{AttnMask, AttnPlan, Backend, BlockPlan, CpuBackend, KeyBias};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::Arc;

const B: usize = 2;
const N: usize = 200; // video tokens: ends inside the second 128-row query tile
const T: usize = 77; // condition tokens
const L: usize = N + T;
const H: usize = 2;
const D: usize = 16;
const BETA: f32 = 1.5;

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Softmax attention, f64, with `beta` added on keys ≥ `from` for every query row.
fn naive(q: &[f32], k: &[f32], v: &[f32], from: usize, beta: f64) -> Vec<f32> {
    let mut o = vec![0f32; q.len()];
    let scale = 1.0 / (D as f64).sqrt();
    for b in 0..B {
        for h in 0..H {
            for i in 0..L {
                let qi = &q[((b * L + i) * H + h) * D..][..D];
                let s: Vec<f64> = (0..L)
                    .map(|j| {
                        let kj = &k[((b * L + j) * H + h) * D..][..D];
                        let dot: f64 = qi.iter().zip(kj).map(|(x, y)| *x as f64 * *y as f64).sum();
                        dot * scale + if j >= from { beta } else { 0.0 }
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    let p = (sj - m).exp() / z;
                    let vj = &v[((b * L + j) * H + h) * D..][..D];
                    for t in 0..D {
                        o[((b * L + i) * H + h) * D + t] += (p * vj[t] as f64) as f32;
                    }
                }
            }
        }
    }
    o
}

/// Max |a − b| over the query rows in `rows`.
fn rows_err(a: &[f32], b: &[f32], rows: std::ops::Range<usize>) -> f32 {
    let mut e = 0f32;
    for bi in 0..B {
        for i in rows.clone() {
            let r = (bi * L + i) * H * D..(bi * L + i + 1) * H * D;
            for (x, y) in a[r.clone()].iter().zip(&b[r]) {
                e = e.max((x - y).abs());
            }
        }
    }
    e
}

#[test]
fn key_bias_leaves_condition_query_rows_unbiased() {
    let mut rng = StdRng::seed_from_u64(14);
    let be = CpuBackend::new();
    let (q, k, v) = (
        rand_vec(&mut rng, B * L * H * D),
        rand_vec(&mut rng, B * L * H * D),
        rand_vec(&mut rng, B * L * H * D),
    );
    let shape = [B, L, H, D];
    let (tq, tk, tv) = (
        be.upload(&q, &shape).unwrap(),
        be.upload(&k, &shape).unwrap(),
        be.upload(&v, &shape).unwrap(),
    );
    let unbiased = naive(&q, &k, &v, N, 0.0);
    let biased = naive(&q, &k, &v, N, BETA as f64);
    // The bias matters: were it applied to the condition rows too, they would fail below.
    assert!(rows_err(&unbiased, &biased, N..L) > 1e-2);
    assert!(rows_err(&unbiased, &biased, 0..N) > 1e-2);

    let kb = KeyBias {
        from_key: N,
        to_query: N,
        bias: BETA,
    };
    let blocks = L.div_ceil(128);
    let all = Arc::new(
        BlockPlan::from_mask(
            B,
            H,
            128,
            blocks,
            blocks,
            &vec![true; B * H * blocks * blocks],
        )
        .unwrap(),
    );
    let outs = [
        (
            "dense",
            be.attention(&tq, &tk, &tv, &AttnPlan::Dense, Some(kb)),
        ),
        (
            "sparse",
            be.attention(&tq, &tk, &tv, &AttnPlan::Sparse(all), Some(kb)),
        ),
        (
            "masked reference",
            be.attention_masked(&tq, &tk, &tv, &AttnMask::KeyPadding(vec![L; B]), Some(kb)),
        ),
    ];
    for (name, o) in outs {
        let o = be.download(&o.unwrap()).unwrap();
        let (ev, ec) = (rows_err(&o, &biased, 0..N), rows_err(&o, &unbiased, N..L));
        assert!(ev < 1e-5, "{name}: video rows vs biased attention: {ev}");
        assert!(
            ec < 1e-5,
            "{name}: condition rows vs unbiased attention: {ec}"
        );
    }
}
