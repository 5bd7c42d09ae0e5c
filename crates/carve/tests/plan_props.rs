//! Property tests of the Jenga plan (importance ∪ adjacency ∪ condition) on random pooled
//! q/k, grids and cutoffs: the invariants every kernel relies on and the rule of the spec.

use jenga_carve::{build_plan, sliced, Adjacency, Layout, PlanInputs};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const BLOCK: usize = 16;

struct Case {
    heads: usize,
    d: usize,
    qhat: Vec<f32>,
    khat: Vec<f32>,
}

fn case(seed: u64, layout: &Layout, heads: usize, scale: f32) -> Case {
    let d = 8;
    let n = heads * layout.num_blocks * d;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = || {
        (0..n)
            .map(|_| rng.gen_range(-scale..scale))
            .collect::<Vec<f32>>()
    };
    Case {
        heads,
        d,
        qhat: v(),
        khat: v(),
    }
}

/// Softmax over the video key blocks of row `qb` of head `h`, as step 2 of the spec.
fn probs(c: &Case, layout: &Layout, h: usize, qb: usize) -> Vec<f64> {
    let (nb, nv, d) = (layout.num_blocks, layout.video_blocks, c.d);
    let q = &c.qhat[(h * nb + qb) * d..][..d];
    let s: Vec<f64> = (0..nv)
        .map(|j| {
            let k = &c.khat[(h * nb + j) * d..][..d];
            q.iter()
                .zip(k)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                / (d as f64).sqrt()
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn plan_invariants(
        seed in 0u64..1000,
        t in 1usize..4, h in 2usize..10, w in 2usize..10,
        cond in prop_oneof![Just(0usize), 1usize..40],
        heads in 1usize..3,
        p in 0.05f32..0.99,
        drop in 0.0f64..0.95,
        scale in prop_oneof![Just(0.1f32), Just(3.0f32)],
    ) {
        let layout = Layout::new(t * h * w, cond, BLOCK).unwrap();
        let c = case(seed, &layout, heads, scale);
        let order = sliced(t, h, w);
        let adj = Adjacency::build((t, h, w), &order, BLOCK).unwrap();
        let top_k = layout.top_k(drop);
        let inputs = |p: f32| PlanInputs {
            qhat: &c.qhat, khat: &c.khat, batch: 1, heads: c.heads, head_dim: c.d,
            layout, adjacency: Some(&adj), first_frame_blocks: 0, p, top_k,
        };
        let plan = build_plan(&inputs(p)).unwrap();
        let (nb, nv) = (layout.num_blocks, layout.video_blocks);
        prop_assert_eq!(plan.q_blocks, nb);
        plan.validate(1, c.heads, layout.seq_len(), layout.seq_len()).unwrap();
        for hh in 0..c.heads {
            for qb in 0..nb {
                let row = plan.row(0, hh, qb);
                // sorted, unique, in range: what the kernels assume
                prop_assert!(row.windows(2).all(|x| x[0] < x[1]), "row {:?}", row);
                prop_assert!(row.iter().all(|&k| (k as usize) < nb));
                if qb >= nv {
                    // condition query rows are dense
                    prop_assert_eq!(row.len(), nb);
                    continue;
                }
                // every condition column and every 3D neighbour (itself included) is kept
                for kb in nv..nb {
                    prop_assert!(row.contains(&(kb as u32)));
                }
                for &kb in adj.neighbours(qb) {
                    prop_assert!(row.contains(&kb));
                }
                // importance: at least top_k video blocks, and the kept mass reaches p
                let pr = probs(&c, &layout, hh, qb);
                let video: Vec<usize> =
                    row.iter().map(|&k| k as usize).filter(|&k| k < nv).collect();
                prop_assert!(video.len() >= top_k.min(nv));
                let mass: f64 = video.iter().map(|&k| pr[k]).sum();
                prop_assert!(mass >= p as f64 - 1e-4 || video.len() == nv, "mass {} < p {}", mass, p);
                // the blocks kept by importance are the most probable ones: a dropped block is
                // no more probable than the least probable kept block not forced by adjacency
                let forced = |k: usize| adj.neighbours(qb).contains(&(k as u32));
                let min_kept = video
                    .iter()
                    .filter(|&&k| !forced(k))
                    .map(|&k| pr[k])
                    .fold(f64::INFINITY, f64::min);
                for k in (0..nv).filter(|k| !video.contains(k)) {
                    prop_assert!(pr[k] <= min_kept + 1e-5, "dropped {} > kept {}", pr[k], min_kept);
                }
            }
        }
        // a higher cutoff keeps a superset
        let more = build_plan(&inputs((p + 0.2).min(1.0))).unwrap();
        for hh in 0..c.heads {
            for qb in 0..nb {
                let (a, b) = (plan.row(0, hh, qb), more.row(0, hh, qb));
                prop_assert!(a.iter().all(|k| b.contains(k)), "p {} row {:?} ⊄ {:?}", p, a, b);
            }
        }
    }
}
