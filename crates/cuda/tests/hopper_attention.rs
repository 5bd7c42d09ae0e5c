//! The Hopper (sm_90a wgmma) attention kernel against the reference kernel
//! (`attention_naive.cu`, f32 CUDA-core math) on the same random bf16 inputs.
//!
//! Tolerance: relative L2 error ≤ 1e-2 (bf16 P and bf16 output rounding against an f32
//! reference; measured errors are a few 1e-3). An all-kept plan must match the dense launch to
//! ≤ 1e-3 (same tiles, same order). Skips with a message without a CUDA driver or on GPUs where
//! the Hopper kernel is not built (anything but sm_90). Dense cases run with both dense kernels
//! (176-key tiles, the default, and 128-key tiles). Device-built plans (`PlanRef::Device`:
//! geometry and device CSR only) get the same work order as host plans, built on the device.
//! Key-bias cases bias query rows `< to_query` only (inside a 128-row item): those rows are
//! also checked against the reference biased on every row, the rows after them against the
//! reference without a bias.

use jenga_cuda::{
    cuda_available, hopper_attention_note, selftest::rel_l2, selftest::Rng, sparse_work_order,
    CudaBackend, CudaTensor, PlanRef,
};
use jenga_tensor::{Backend, BlockPlan, KeyBias, TensorMeta};
use std::sync::Arc;

const TOL: f64 = 1e-2;

fn backend() -> Option<CudaBackend> {
    if !cuda_available() {
        // counted by .ci/run (the test name makes repeated calls count once)
        eprintln!(
            "skipped: no CUDA driver ({})",
            std::thread::current().name().unwrap_or("?")
        );
        return None;
    }
    let be = CudaBackend::new(0).expect("a visible device must open");
    if !be.hopper_attention_available() {
        eprintln!(
            "skipped: Hopper attention kernel not in use on {}: {} ({})",
            be.name(),
            hopper_attention_note().unwrap_or_default(),
            std::thread::current().name().unwrap_or("?"),
        );
        return None;
    }
    Some(be)
}

fn rand(be: &CudaBackend, rng: &mut Rng, shape: &[usize], std: f32) -> CudaTensor {
    let n: usize = shape.iter().product();
    be.upload(&rng.normal_vec(n, std), shape).unwrap()
}

fn random_plan(
    rng: &mut Rng,
    b: usize,
    h: usize,
    block: usize,
    lq: usize,
    lk: usize,
    p: f32,
) -> BlockPlan {
    let (qb, kb) = (lq.div_ceil(block), lk.div_ceil(block));
    let mut mask = vec![false; b * h * qb * kb];
    for (i, m) in mask.iter_mut().enumerate() {
        let (row, col) = (i / kb, i % kb);
        // Diagonal plus random blocks; row 1 left empty on purpose (output must be zeros).
        *m = (row % qb == col % qb || rng.uniform() < p) && row != 1;
    }
    // The last key block (partial when lk % block != 0) is kept in row 0.
    mask[kb - 1] = true;
    BlockPlan::from_mask(b, h, block, qb, kb, &mask).unwrap()
}

struct Case {
    name: &'static str,
    b: usize,
    lq: usize,
    lk: usize,
    h: usize,
    plan: Option<(usize, f32)>, // (block, keep probability)
    bias: bool,
}

fn run_case(be: &CudaBackend, rng: &mut Rng, c: &Case) -> f64 {
    let dh = 128;
    let q = rand(be, rng, &[c.b, c.lq, c.h, dh], 1.5);
    let k = rand(be, rng, &[c.b, c.lk, c.h, dh], 1.5);
    let v = rand(be, rng, &[c.b, c.lk, c.h, dh], 1.0);
    let bias = c.bias.then_some(KeyBias {
        from_key: c.lk * 2 / 3,
        to_query: c.lq * 3 / 5,
        bias: 1.25,
    });
    let plan = c
        .plan
        .map(|(block, p)| Arc::new(random_plan(rng, c.b, c.h, block, c.lq, c.lk, p)));
    let dev = plan.as_ref().map(|p| be.device_plan(p).unwrap());
    let pd = match (plan.as_deref(), dev.as_deref()) {
        (Some(p), Some(d)) => PlanRef::host(p, d),
        _ => PlanRef::Dense,
    };
    let got = be
        .attention_hopper(&q, &k, &v, pd, bias)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: Hopper kernel declined", c.name));
    let want = be.attention_naive(&q, &k, &v, pd, bias).unwrap();
    let (g, w) = (be.download(&got).unwrap(), be.download(&want).unwrap());
    assert!(
        g.iter().all(|x| x.is_finite()),
        "{}: non-finite output",
        c.name
    );
    let err = rel_l2(&g, &w);
    eprintln!("{:<44} rel L2 {err:.2e}", c.name);
    assert!(err <= TOL, "{}: rel L2 {err:.3e} > {TOL}", c.name);
    if let Some(kb) = bias {
        check_bias_rows(be, c.name, &g, [&q, &k, &v], pd, kb, true);
    }
    err
}

/// A biased call's output `got` (bias on query rows `< kb.to_query` only), row range by row
/// range: rows `< to_query` against the reference kernel biased on every row, rows `>=
/// to_query` against the reference kernel without a bias. Neither reference call depends on
/// how the reference kernel treats `to_query`, so a kernel that biases the condition rows (or
/// none) fails here even if the reference kernel does the same. `matters`: also require the
/// bias to change the rows `>= to_query` (else this check would prove nothing).
fn check_bias_rows(
    be: &CudaBackend,
    name: &str,
    got: &[f32],
    t: [&CudaTensor; 3],
    pd: PlanRef<'_>,
    kb: KeyBias,
    matters: bool,
) {
    let s = t[0].shape();
    let (b, lq, row) = (s[0], s[1], s[2] * s[3]);
    assert!(
        kb.to_query > 0 && kb.to_query < lq,
        "{name}: to_query {} should split the {lq} rows",
        kb.to_query
    );
    let every = KeyBias {
        to_query: usize::MAX,
        ..kb
    };
    let naive = |bias| {
        let o = be.attention_naive(t[0], t[1], t[2], pd, bias).unwrap();
        be.download(&o).unwrap()
    };
    let (all, none) = (naive(Some(every)), naive(None));
    let rows = |x: &[f32], r: std::ops::Range<usize>| -> Vec<f32> {
        (0..b)
            .flat_map(|bi| &x[(bi * lq + r.start) * row..(bi * lq + r.end) * row])
            .copied()
            .collect()
    };
    let (video, cond) = (0..kb.to_query, kb.to_query..lq);
    let ev = rel_l2(&rows(got, video.clone()), &rows(&all, video));
    let ec = rel_l2(&rows(got, cond.clone()), &rows(&none, cond.clone()));
    eprintln!(
        "{:<44} rows < {}: rel L2 {ev:.2e} vs biased, rows >= it: {ec:.2e} vs unbiased",
        name, kb.to_query
    );
    assert!(ev <= TOL, "{name}: biased rows: rel L2 {ev:.3e} > {TOL}");
    assert!(ec <= TOL, "{name}: unbiased rows: rel L2 {ec:.3e} > {TOL}");
    if matters {
        let d = rel_l2(&rows(&all, cond.clone()), &rows(&none, cond));
        assert!(
            d > 5.0 * TOL,
            "{name}: the bias changes rows >= to_query by {d:.2e} only"
        );
    }
}

#[test]
fn hopper_matches_reference_dense_and_sparse() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(0x5eed_4091);
    let cases = [
        Case {
            name: "dense B1 L1000 H2 (partial tiles)",
            b: 1,
            lq: 1000,
            lk: 1000,
            h: 2,
            plan: None,
            bias: false,
        },
        Case {
            name: "dense B2 L384 H3",
            b: 2,
            lq: 384,
            lk: 384,
            h: 3,
            plan: None,
            bias: false,
        },
        Case {
            name: "cross Lq300 Lk77 + key bias",
            b: 2,
            lq: 300,
            lk: 77,
            h: 2,
            plan: None,
            bias: true,
        },
        Case {
            name: "dense L700 + key bias",
            b: 1,
            lq: 700,
            lk: 700,
            h: 2,
            plan: None,
            bias: true,
        },
        Case {
            name: "sparse block128 L1000 (partial last block)",
            b: 1,
            lq: 1000,
            lk: 1000,
            h: 3,
            plan: Some((128, 0.3)),
            bias: false,
        },
        Case {
            name: "sparse block128 B2 L900 + key bias",
            b: 2,
            lq: 900,
            lk: 900,
            h: 2,
            plan: Some((128, 0.4)),
            bias: true,
        },
        Case {
            name: "dense B1 L2000 H48 (several items per CTA)",
            b: 1,
            lq: 2000,
            lk: 2000,
            h: 48,
            plan: None,
            bias: false,
        },
        Case {
            name: "sparse block128 B2 L1500 H40 + key bias (several items per CTA)",
            b: 2,
            lq: 1500,
            lk: 1500,
            h: 40,
            plan: Some((128, 0.3)),
            bias: true,
        },
        Case {
            name: "dense B1 L1000 H17 (split-key tail on 132 SMs)",
            b: 1,
            lq: 1000,
            lk: 1000,
            h: 17,
            plan: None,
            bias: false,
        },
        Case {
            name: "cross B1 Lq1000 Lk1500 H17 + key bias (split-key tail)",
            b: 1,
            lq: 1000,
            lk: 1500,
            h: 17,
            plan: None,
            bias: true,
        },
        Case {
            name: "sparse block256 L1100 + key bias",
            b: 1,
            lq: 1100,
            lk: 1100,
            h: 2,
            plan: Some((256, 0.4)),
            bias: true,
        },
    ];
    for c in &cases {
        run_case(&be, &mut rng, c);
    }
    // Dense cases again with the 128-key-tile kernel (the default is 176).
    be.set_hopper_attention_dense_tile(128);
    for c in cases.iter().filter(|c| c.plan.is_none()) {
        run_case(&be, &mut rng, c);
    }
}

/// Hopper kernel vs the reference on given tensors (plan: host plan or dense).
fn check(
    be: &CudaBackend,
    name: &str,
    t: [&CudaTensor; 3],
    plan: Option<&Arc<BlockPlan>>,
    bias: Option<KeyBias>,
) -> f64 {
    let dev = plan.map(|p| be.device_plan(p).unwrap());
    let pd = match (plan, dev.as_deref()) {
        (Some(p), Some(d)) => PlanRef::host(p, d),
        _ => PlanRef::Dense,
    };
    let got = be
        .attention_hopper(t[0], t[1], t[2], pd, bias)
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: Hopper kernel declined"));
    let want = be.attention_naive(t[0], t[1], t[2], pd, bias).unwrap();
    let (g, w) = (be.download(&got).unwrap(), be.download(&want).unwrap());
    assert!(g.iter().all(|x| x.is_finite()), "{name}: non-finite output");
    let err = rel_l2(&g, &w);
    eprintln!("{name:<60} rel L2 {err:.2e}");
    assert!(err <= TOL, "{name}: rel L2 {err:.3e} > {TOL}");
    if let Some(kb) = bias {
        check_bias_rows(be, name, &g, t, pd, kb, false);
    }
    err
}

/// Large logits, where the kernel's lazy rescale (128-key-tile kernel: sparse launches, and dense
/// ones with tile 128; the 176-key dense kernel keeps the exact max) holds a stale running max
/// (unnormalised P up to 2^8) and raises it only when a tile passes it by more than 8 (log2):
/// q scaled x8 (logit standard deviation ~26 in log2 units), and a ramp (logits rising ~120 log2
/// units along the keys, by less than the threshold per tile, so the max goes stale and is
/// raised over and over). Dense (176- and 128-key tiles, split-key tail), sparse with partial
/// blocks, key bias.
#[test]
fn hopper_matches_reference_on_large_logits() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(0x1a46e);
    let dh = 128;
    let case = |name, b, l, h, plan, bias| Case {
        name,
        b,
        lq: l,
        lk: l,
        h,
        plan,
        bias,
    };
    let cases = [
        case("dense L1000 H2", 1, 1000, 2, None, false),
        case("dense L1000 H17 split tail + bias", 1, 1000, 17, None, true),
        case("sparse block128 L1000", 1, 1000, 3, Some((128, 0.3)), false),
        case(
            "sparse block256 B2 L1100 + bias",
            2,
            1100,
            2,
            Some((256, 0.4)),
            true,
        ),
        case("dense L3000 H3", 1, 3000, 3, None, false),
    ];
    for tile in [176, 128] {
        be.set_hopper_attention_dense_tile(tile);
        for c in &cases {
            let (name, b, l, h) = (c.name, c.b, c.lq, c.h);
            let plan = c
                .plan
                .map(|(block, p)| Arc::new(random_plan(&mut rng, b, h, block, l, l, p)));
            let bias = c.bias.then_some(KeyBias {
                from_key: l * 2 / 3,
                to_query: l * 3 / 5,
                bias: 4.0,
            });
            let v = rand(&be, &mut rng, &[b, l, h, dh], 1.0);
            // q x8
            let q = rand(&be, &mut rng, &[b, l, h, dh], 12.0);
            let k = rand(&be, &mut rng, &[b, l, h, dh], 1.5);
            let what = format!("{name}, q x8, dense tile {tile}");
            check(&be, &what, [&q, &k, &v], plan.as_ref(), bias);
            // ramp: q_0 = 40, k_0 = 24 j / l, the other dims standard normal
            let mut qh = rng.normal_vec(b * l * h * dh, 1.0);
            let mut kh = rng.normal_vec(b * l * h * dh, 1.0);
            for (i, (x, y)) in qh.chunks_mut(dh).zip(kh.chunks_mut(dh)).enumerate() {
                x[0] = 40.0;
                y[0] = 24.0 * ((i / h) % l) as f32 / l as f32;
            }
            let q = be.upload(&qh, &[b, l, h, dh]).unwrap();
            let k = be.upload(&kh, &[b, l, h, dh]).unwrap();
            let what = format!("{name}, logit ramp, dense tile {tile}");
            check(&be, &what, [&q, &k, &v], plan.as_ref(), bias);
        }
    }
}

#[test]
fn hopper_empty_row_is_zero_and_all_kept_equals_dense() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(77);
    let (b, l, h, dh) = (1, 650, 2, 128);
    // Dense with the sparse launches' 128-key tiles: the same tiles in the same order.
    be.set_hopper_attention_dense_tile(128);
    let q = rand(&be, &mut rng, &[b, l, h, dh], 1.5);
    let k = rand(&be, &mut rng, &[b, l, h, dh], 1.5);
    let v = rand(&be, &mut rng, &[b, l, h, dh], 1.0);
    let nb = l.div_ceil(128);
    // All kept.
    let full =
        Arc::new(BlockPlan::from_mask(b, h, 128, nb, nb, &vec![true; b * h * nb * nb]).unwrap());
    let fd = be.device_plan(&full).unwrap();
    let sparse = be
        .attention_hopper(&q, &k, &v, PlanRef::host(&full, &fd), None)
        .unwrap()
        .unwrap();
    let dense = be
        .attention_hopper(&q, &k, &v, PlanRef::Dense, None)
        .unwrap()
        .unwrap();
    let (s, d) = (be.download(&sparse).unwrap(), be.download(&dense).unwrap());
    let err = rel_l2(&s, &d);
    eprintln!("all-kept plan vs dense: rel L2 {err:.2e}");
    assert!(err <= 1e-3, "all-kept plan vs dense: {err:.3e}");
    // Query block 2 of head 1 keeps nothing: its rows must be exactly zero.
    let mut mask = vec![true; b * h * nb * nb];
    let row = nb + 2;
    for m in &mut mask[row * nb..(row + 1) * nb] {
        *m = false;
    }
    let holey = Arc::new(BlockPlan::from_mask(b, h, 128, nb, nb, &mask).unwrap());
    let hd = be.device_plan(&holey).unwrap();
    let out = be
        .attention_hopper(&q, &k, &v, PlanRef::host(&holey, &hd), None)
        .unwrap()
        .unwrap();
    let o = be.download(&out).unwrap();
    for t in 256..384 {
        let at = (t * h + 1) * dh;
        assert!(
            o[at..at + dh].iter().all(|&x| x == 0.0),
            "token {t} head 1 not zero"
        );
        let at0 = (t * h) * dh;
        assert!(
            o[at0..at0 + dh].iter().any(|&x| x != 0.0),
            "token {t} head 0 zero"
        );
    }
}

#[test]
fn hopper_declines_what_it_does_not_cover() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(3);
    let q = rand(&be, &mut rng, &[1, 100, 2, 64], 1.0);
    assert!(be
        .attention_hopper(&q, &q, &q, PlanRef::Dense, None)
        .unwrap()
        .is_none());
    let q = rand(&be, &mut rng, &[1, 200, 1, 128], 1.0);
    let plan = Arc::new(BlockPlan::from_mask(1, 1, 64, 4, 4, &[true; 16]).unwrap());
    let d = be.device_plan(&plan).unwrap();
    assert!(be
        .attention_hopper(&q, &q, &q, PlanRef::host(&plan, &d), None)
        .unwrap()
        .is_none());
}

#[test]
fn device_plans_get_the_host_work_order() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(0xdeed);
    // (batch, heads, block, tokens, keep): 2 sub-tiles per row; 931 rows per head (more rows
    // than threads of the order kernel); many ties in short rows.
    for (b, h, block, l, keep) in [
        (2, 3, 256, 2000, 0.3f32),
        (1, 2, 128, 119056, 0.05),
        (1, 4, 128, 1500, 0.0),
    ] {
        let plan = random_plan(&mut rng, b, h, block, l, l, keep);
        let d = be.device_plan(&Arc::new(plan.clone())).unwrap();
        let got = be
            .hopper_device_work_order(plan.geometry(), &d)
            .unwrap()
            .expect("order kernel built");
        let want = sparse_work_order(&plan, block / 128);
        assert_eq!(got.len(), want.len(), "{b}x{h} block {block} L{l}");
        assert!(
            got == want,
            "{b}x{h} block {block} L{l}: device order differs"
        );
    }
    // Attention through the device-plan path (geometry + device CSR) equals the host plan's
    // (order changes nothing inside an item).
    let (b, l, h, dh) = (1, 1300, 3, 128);
    let q = rand(&be, &mut rng, &[b, l, h, dh], 1.5);
    let k = rand(&be, &mut rng, &[b, l, h, dh], 1.5);
    let v = rand(&be, &mut rng, &[b, l, h, dh], 1.0);
    let plan = Arc::new(random_plan(&mut rng, b, h, 128, l, l, 0.3));
    let d = be.device_plan(&plan).unwrap();
    let host = be
        .attention_hopper(&q, &k, &v, PlanRef::host(&plan, &d), None)
        .unwrap()
        .unwrap();
    let devp = be
        .attention_hopper(
            &q,
            &k,
            &v,
            PlanRef::device(plan.geometry(), &d).unwrap(),
            None,
        )
        .unwrap()
        .unwrap();
    let (x, y) = (be.download(&host).unwrap(), be.download(&devp).unwrap());
    assert!(x == y, "device-plan attention differs from the host plan's");
    let want = be
        .attention_naive(&q, &k, &v, PlanRef::host(&plan, &d), None)
        .unwrap();
    let err = rel_l2(&y, &be.download(&want).unwrap());
    eprintln!("device-plan attention vs reference: rel L2 {err:.2e}");
    assert!(err <= TOL, "device-plan attention: rel L2 {err:.3e}");
}

/// Device plans with more query blocks per head than the order kernel sorts run in plain row
/// order (no work list); the result equals the host plan's (sorted order) exactly. A row
/// pointer buffer shorter than the geometry needs is refused before any launch.
#[test]
fn long_device_plans_run_in_row_order() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(0x10ae);
    // 12289 query blocks of 128 (one more than the order kernel sorts), 1 head; each row keeps
    // its diagonal block and one other (two when the other is the diagonal: one).
    let nb = 12289;
    let l = nb * 128 - 40; // partial last block
    let mut row_ptr = vec![0u32];
    let mut col_idx = Vec::new();
    for r in 0..nb {
        let other = (r * 7919 + 3) % nb;
        let mut cols = vec![r as u32, other as u32];
        cols.sort_unstable();
        cols.dedup();
        // Every 5th row keeps only the diagonal: rows of different weights.
        if r % 5 == 0 {
            cols = vec![r as u32];
        }
        col_idx.extend(cols);
        row_ptr.push(col_idx.len() as u32);
    }
    let plan = Arc::new(BlockPlan {
        batch: 1,
        heads: 1,
        block: 128,
        q_blocks: nb,
        k_blocks: nb,
        row_ptr,
        col_idx,
    });
    plan.validate(1, 1, l, l).unwrap();
    let d = be.device_plan(&plan).unwrap();
    assert!(be
        .hopper_device_work_order(plan.geometry(), &d)
        .unwrap()
        .is_none());
    let x = rand(&be, &mut rng, &[1, l, 1, 128], 1.5);
    let host = be
        .attention_hopper(&x, &x, &x, PlanRef::host(&plan, &d), None)
        .unwrap()
        .unwrap();
    let devp = be
        .attention_hopper(
            &x,
            &x,
            &x,
            PlanRef::device(plan.geometry(), &d).unwrap(),
            None,
        )
        .unwrap()
        .unwrap();
    let (a, b) = (be.download(&host).unwrap(), be.download(&devp).unwrap());
    assert!(a == b, "long device plan differs from the host plan's");
    let want = be
        .attention_naive(&x, &x, &x, PlanRef::host(&plan, &d), None)
        .unwrap();
    let err = rel_l2(&b, &be.download(&want).unwrap());
    eprintln!("long device plan vs reference: rel L2 {err:.2e}");
    assert!(err <= TOL, "long device plan: rel L2 {err:.3e}");
    // A geometry with more rows than the buffers hold.
    let mut g = plan.geometry();
    g.heads = 2;
    let e = PlanRef::device(g, &d).err().expect("short row_ptr refused");
    assert!(e.to_string().contains("row pointers"), "{e}");
}
