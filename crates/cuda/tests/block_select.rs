//! Block selection on the GPU (`Backend::select_blocks`) against the host path of the Jenga
//! policy (`jenga_carve::build_plan`, the reference), end to end through the policy and the
//! attention, and its cost next to the sparse attention it feeds. Skips without a CUDA driver.

use jenga_carve::jenga::{JengaConfig, JengaPolicy};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_cuda::selftest::{rel_l2, Rng};
use jenga_cuda::CudaBackend;
use jenga_tensor::{AttnPlan, Backend, BlockPlan, CpuBackend, CpuTensor, FusedOps, TensorMeta};
use std::time::Instant;

fn backend() -> Option<CudaBackend> {
    jenga_cuda::selftest::test_backend()
}

fn ctx(step: usize, grid: (usize, usize, usize), cond: usize) -> AttnCtx {
    AttnCtx {
        step,
        num_steps: 50,
        layer: 0,
        num_layers: 1,
        stage: 0,
        grid,
        cond_tokens: cond,
    }
}

/// `[B, L, H, D]` with structure at block scale: every 128-token block of every head has its
/// own mean direction (amplitude `amp`) plus per-token noise, so pooled scores spread like a
/// real model's instead of being near-uniform. Returned as host f32 (bf16-exact).
fn structured(rng: &mut Rng, b: usize, l: usize, h: usize, d: usize, amp: f32) -> Vec<f32> {
    let nb = l.div_ceil(128);
    let means = rng.normal_vec(b * nb * h * d, amp);
    let noise = rng.normal_vec(128 * h * d, 1.0);
    let mut x = vec![0f32; b * l * h * d];
    for bi in 0..b {
        for t in 0..l {
            let (blk, off) = (t / 128, t % 128);
            for hi in 0..h {
                for di in 0..d {
                    let v =
                        means[((bi * nb + blk) * h + hi) * d + di] + noise[(off * h + hi) * d + di];
                    x[((bi * l + t) * h + hi) * d + di] = half_round(v);
                }
            }
        }
    }
    x
}

fn half_round(v: f32) -> f32 {
    // bf16 round-to-nearest-even, so host and device hold the same values
    let u = v.to_bits();
    let r = u.wrapping_add(0x7fff + ((u >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(r)
}

fn download_device(be: &CudaBackend, plan: &AttnPlan) -> BlockPlan {
    match plan {
        AttnPlan::Device(dp) => be.download_plan(dp).expect("download"),
        other => panic!("expected a device plan, got {other:?}"),
    }
}

/// Rows equal / total, max symmetric difference of unequal rows.
fn compare(a: &BlockPlan, b: &BlockPlan) -> (usize, usize, usize) {
    assert_eq!(
        (a.batch, a.heads, a.q_blocks, a.k_blocks, a.block),
        (b.batch, b.heads, b.q_blocks, b.k_blocks, b.block)
    );
    let (mut same, mut worst) = (0, 0);
    let rows = a.batch * a.heads * a.q_blocks;
    for bi in 0..a.batch {
        for h in 0..a.heads {
            for q in 0..a.q_blocks {
                let (x, y) = (a.row(bi, h, q), b.row(bi, h, q));
                if x == y {
                    same += 1;
                } else {
                    let sx: std::collections::BTreeSet<_> = x.iter().collect();
                    let sy: std::collections::BTreeSet<_> = y.iter().collect();
                    worst = worst.max(sx.symmetric_difference(&sy).count());
                }
            }
        }
    }
    (same, rows, worst)
}

/// Same policy settings, same pooled inputs (pooled on the GPU by both paths): the device
/// plan equals the host plan row for row, up to float-rounding near-ties at the cut.
#[test]
fn gpu_plan_equals_host_build_plan() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(11);
    // (name, config, grid, condition tokens, batch, heads, head dim, step)
    type Case = (
        &'static str,
        JengaConfig,
        (usize, usize, usize),
        usize,
        usize,
        usize,
        usize,
        usize,
    );
    let cases: Vec<Case> = vec![
        (
            "wan 480p drop .75 p .9",
            JengaConfig::wan(&[0.75, 0.85], 0.9),
            (21, 30, 52),
            0,
            2,
            12,
            128,
            10,
        ),
        (
            "wan 480p drop .85 p .3",
            JengaConfig::wan(&[0.75, 0.85], 0.3),
            (21, 30, 52),
            0,
            1,
            12,
            128,
            40,
        ),
        (
            "wan stage .75 res",
            JengaConfig::wan(&[0.8, 0.95], 0.5),
            (21, 22, 39),
            0,
            2,
            12,
            128,
            30,
        ),
        (
            "hunyuan-like + 300 text",
            JengaConfig::hunyuan(&[0.75], 0.3, &[1.0]),
            (6, 16, 20),
            300,
            2,
            4,
            64,
            10,
        ),
        (
            "odd head dim 40",
            JengaConfig::hunyuan(&[0.6], 0.5, &[1.0]),
            (3, 16, 16),
            77,
            1,
            3,
            40,
            10,
        ),
    ];
    for (name, cfg, grid, cond, b, h, d, step) in cases {
        let l = grid.0 * grid.1 * grid.2 + cond;
        let amp = 0.35;
        let q = be
            .upload(&structured(&mut rng, b, l, h, d, amp), &[b, l, h, d])
            .unwrap();
        let k = be
            .upload(&structured(&mut rng, b, l, h, d, amp), &[b, l, h, d])
            .unwrap();
        let dev_pol = JengaPolicy::new(cfg.clone()).unwrap();
        let host_pol = JengaPolicy::new(cfg).unwrap();
        host_pol.set_device_select(false);
        let c = ctx(step, grid, cond);
        let dplan = dev_pol.plan(&be, &q, &k, &c).unwrap();
        let AttnPlan::Sparse(hplan) = host_pol.plan(&be, &q, &k, &c).unwrap() else {
            panic!("{name}: host path should be sparse")
        };
        let got = download_device(&be, &dplan);
        got.validate(b, h, l, l).unwrap();
        let (same, rows, worst) = compare(&got, &hplan);
        let (dd, hd) = (got.density(), hplan.density());
        let lazy = match &dplan {
            AttnPlan::Device(dp) => dp.density().unwrap(),
            _ => unreachable!(),
        };
        let stats = (
            dev_pol.stats()[0].mean_density,
            host_pol.stats()[0].mean_density,
        );
        eprintln!(
            "{name}: {same}/{rows} rows equal (worst differing row: {worst} blocks), density gpu {dd:.4} host {hd:.4}"
        );
        assert!(
            same as f64 >= 0.999 * rows as f64,
            "{name}: {same}/{rows} rows equal"
        );
        assert!(worst <= 2, "{name}: a row differs by {worst} blocks");
        assert!((dd - hd).abs() <= 1e-3, "{name}: density {dd} vs {hd}");
        assert!(
            (lazy - dd).abs() < 1e-12,
            "{name}: device count {lazy} vs CSR {dd}"
        );
        assert!((stats.0 - stats.1).abs() <= 1e-3, "{name}: stats {stats:?}");
        assert!(dd > 0.0 && (dd < 1.0 || l < 10_000), "{name}: density {dd}");
    }
}

/// The policy on the GPU end to end: attention over the device plan equals attention over
/// the host plan (GPU) and the CPU attention over the downloaded device plan.
#[test]
fn device_plan_attention_equals_host_plan_attention() {
    let Some(be) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(12);
    let (grid, b, h, d) = ((4, 16, 30), 2, 4, 128);
    let l = grid.0 * grid.1 * grid.2; // 1920 = 15 blocks
    let qh = structured(&mut rng, b, l, h, d, 0.35);
    let kh = structured(&mut rng, b, l, h, d, 0.35);
    let vh = rng.normal_vec(b * l * h * d, 1.0);
    let up = |x: &[f32]| be.upload(x, &[b, l, h, d]).unwrap();
    let (q, k, v) = (up(&qh), up(&kh), up(&vh));
    let cfg = JengaConfig::wan(&[0.75, 0.85], 0.3);
    let dev_pol = JengaPolicy::new(cfg.clone()).unwrap();
    let host_pol = JengaPolicy::new(cfg).unwrap();
    host_pol.set_device_select(false);
    let c = ctx(20, grid, 0);
    let dplan = dev_pol.plan(&be, &q, &k, &c).unwrap();
    let hplan = host_pol.plan(&be, &q, &k, &c).unwrap();
    assert!(matches!(dplan, AttnPlan::Device(_)));
    let og = be
        .download(&be.attention(&q, &k, &v, &dplan, None).unwrap())
        .unwrap();
    let oh = be
        .download(&be.attention(&q, &k, &v, &hplan, None).unwrap())
        .unwrap();
    let host_copy = AttnPlan::Sparse(std::sync::Arc::new(download_device(&be, &dplan)));
    let ct = |x: &[f32]| CpuTensor::new(x.to_vec(), &[b, l, h, d]).unwrap();
    let oc = cpu
        .attention(&ct(&qh), &ct(&kh), &ct(&vh), &host_copy, None)
        .unwrap();
    let (e_host, e_cpu) = (rel_l2(&og, &oh), rel_l2(&og, oc.data()));
    eprintln!("device plan vs host plan (GPU) rel-L2 {e_host:.2e}, vs CPU {e_cpu:.2e}");
    assert!(e_host <= 1e-2, "{e_host}");
    assert!(e_cpu <= 1e-2, "{e_cpu}");
    // Not the dense result: the plan really drops blocks.
    let od = be
        .download(&be.attention(&q, &k, &v, &AttnPlan::Dense, None).unwrap())
        .unwrap();
    assert!(rel_l2(&og, &od) > 1e-3);
    // The CPU backend refuses a device plan with an error, not a panic.
    let e = cpu
        .attention(&ct(&qh), &ct(&kh), &ct(&vh), &dplan, None)
        .unwrap_err();
    assert!(e.to_string().contains("device"), "{e}");
}

/// The fused q/k pooling equals two `block_mean_pool` calls bit for bit (and falls back to
/// them for head dims that are not a multiple of 8).
#[test]
fn pooled_pair_equals_block_mean_pool() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(14);
    for (b, l, h, d, block) in [
        (2, 1000, 3, 128, 128),
        (1, 300, 2, 64, 64),
        (1, 257, 2, 40, 128),
    ] {
        let q = be
            .upload(&rng.normal_vec(b * l * h * d, 1.0), &[b, l, h, d])
            .unwrap();
        let k = be
            .upload(&rng.normal_vec(b * l * h * d, 1.0), &[b, l, h, d])
            .unwrap();
        let (qp, kp) = be.block_mean_pool_pair(&q, &k, block).unwrap();
        let qr = be.block_mean_pool(&q, block).unwrap();
        let kr = be.block_mean_pool(&k, block).unwrap();
        assert_eq!(
            be.download_bf16(&qp).unwrap(),
            be.download_bf16(&qr).unwrap()
        );
        assert_eq!(
            be.download_bf16(&kp).unwrap(),
            be.download_bf16(&kr).unwrap()
        );
    }
}

/// RoPE tables `[l, d/2]` of random angles (bf16-exact), as `(cos, sin)`.
fn rope_tables(rng: &mut Rng, l: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let a = rng.normal_vec(l * d / 2, 3.0);
    (
        a.iter().map(|t| half_round(t.cos())).collect(),
        a.iter().map(|t| half_round(t.sin())).collect(),
    )
}

/// `rope_pooled` (RoPE with the block means fused in, `rope_pool_v8`): the rotated tensor is
/// bit-identical to `rope`, the means to `block_mean_pool` of it — partial last blocks, head
/// dims the fused kernel does not take (Dh = 12: unfused fallback) and a batch of 2 included.
#[test]
fn rope_pooled_equals_rope_then_block_mean_pool() {
    let Some(be) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(15);
    for (b, l, h, d, block) in [
        (2, 1000, 3, 128, 128),
        (1, 4100, 12, 128, 128),
        (1, 300, 2, 64, 64),
        (1, 257, 2, 40, 128),
        (1, 130, 2, 128, 7),
        (1, 100, 2, 12, 128),
    ] {
        let xs = rng.normal_vec(b * l * h * d, 1.0);
        let (cs, sn) = rope_tables(&mut rng, l, d);
        let x = be.upload(&xs, &[b, l, h, d]).unwrap();
        let c = be.upload(&cs, &[l, d / 2]).unwrap();
        let s = be.upload(&sn, &[l, d / 2]).unwrap();
        let (y, pooled) = be.rope_pooled(&x, &c, &s, block).unwrap();
        let pooled = pooled.expect("the CUDA backend pools");
        assert_eq!(pooled.shape(), [b, h, l.div_ceil(block), d]);
        let y_ref = be.rope(&x, &c, &s).unwrap();
        let p_ref = be.block_mean_pool(&y_ref, block).unwrap();
        let case = format!("{b}x{l}x{h}x{d} block {block}");
        assert_eq!(
            be.download_bf16(&y).unwrap(),
            be.download_bf16(&y_ref).unwrap(),
            "rotated, {case}"
        );
        assert_eq!(
            be.download_bf16(&pooled).unwrap(),
            be.download_bf16(&p_ref).unwrap(),
            "pooled, {case}"
        );
        // And the CPU backend's (unfused, f32) version of the same, within bf16 rounding.
        let xc = cpu.upload(&xs, &[b, l, h, d]).unwrap();
        let (cc, sc) = (
            cpu.upload(&cs, &[l, d / 2]).unwrap(),
            cpu.upload(&sn, &[l, d / 2]).unwrap(),
        );
        let (yc, pc) = cpu.rope_pooled(&xc, &cc, &sc, block).unwrap();
        let ey = rel_l2(&be.download(&y).unwrap(), &cpu.download(&yc).unwrap());
        let ep = rel_l2(
            &be.download(&pooled).unwrap(),
            &cpu.download(&pc.unwrap()).unwrap(),
        );
        assert!(
            ey < 8e-3 && ep < 8e-3,
            "{case}: rel err y {ey}, pooled {ep}"
        );
    }
}

/// The fused path the model takes (`rope_pooled` → `plan_pooled`) builds the same plan as the
/// unfused one (`rope` → `plan`, which pools q/k itself), on the device and on the host path.
#[test]
fn plan_from_rope_pooled_equals_plan() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(16);
    for (jc, grid, cond, b, h) in [
        (JengaConfig::wan(&[0.9, 0.9], 0.3), (21, 30, 52), 0, 1, 12),
        (
            JengaConfig::hunyuan(&[0.8], 0.5, &[1.0]),
            (5, 12, 20),
            100,
            2,
            4,
        ),
    ] {
        let d = 128;
        let l = grid.0 * grid.1 * grid.2 + cond;
        let (cs, sn) = rope_tables(&mut rng, l, d);
        let c = be.upload(&cs, &[l, d / 2]).unwrap();
        let s = be.upload(&sn, &[l, d / 2]).unwrap();
        let xq = be
            .upload(&structured(&mut rng, b, l, h, d, 0.35), &[b, l, h, d])
            .unwrap();
        let xk = be
            .upload(&structured(&mut rng, b, l, h, d, 0.35), &[b, l, h, d])
            .unwrap();
        let pol = JengaPolicy::new(jc.clone()).unwrap();
        let cx = ctx(30, grid, cond);
        let m = AttentionPolicy::<CudaBackend>::pooled_block(&pol, &cx).expect("sparse call");
        let (q, qhat) = be.rope_pooled(&xq, &c, &s, m).unwrap();
        let (k, khat) = be.rope_pooled(&xk, &c, &s, m).unwrap();
        let pooled = qhat.as_ref().zip(khat.as_ref());
        let fused = download_device(&be, &pol.plan_pooled(&be, &q, &k, pooled, &cx).unwrap());
        let plain = download_device(&be, &pol.plan(&be, &q, &k, &cx).unwrap());
        assert_eq!(fused, plain, "device plans differ, grid {grid:?}");
        let d = fused.density();
        assert!(d > 0.02 && d < 0.95, "density {d}");
        pol.set_device_select(false);
        let (AttnPlan::Sparse(hf), AttnPlan::Sparse(hp)) = (
            pol.plan_pooled(&be, &q, &k, pooled, &cx).unwrap(),
            pol.plan(&be, &q, &k, &cx).unwrap(),
        ) else {
            panic!("host path gives host plans")
        };
        assert_eq!(hf, hp, "host plans differ, grid {grid:?}");
        // Mis-shaped means are refused.
        assert!(pol.plan_pooled(&be, &q, &k, Some((&q, &k)), &cx).is_err());
    }
}

/// Mean ms of `n` calls of `f` (one warm-up, one sync at the end).
fn time_ms(be: &CudaBackend, n: usize, mut f: impl FnMut()) -> f64 {
    f();
    be.synchronize().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    be.synchronize().unwrap();
    t.elapsed().as_secs_f64() * 1e3 / n as f64
}

/// Mask building (pooling + selection, through `JengaPolicy::plan`) next to the sparse
/// attention it feeds, at Wan-1.3B 480p (12 heads x 256 blocks, ~20% density). "Marginal" is
/// what building adds to a layer when queued with the attention (host launch overhead hidden,
/// as in the model). Prints the figures; asserts only that building stays well under the
/// attention.
#[test]
fn mask_building_cost_vs_sparse_attention() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(13);
    let (grid, b, h, d) = ((21, 30, 52), 1, 12, 128);
    let l = grid.0 * grid.1 * grid.2;
    let q = be
        .upload(&structured(&mut rng, b, l, h, d, 0.35), &[b, l, h, d])
        .unwrap();
    let k = be
        .upload(&structured(&mut rng, b, l, h, d, 0.35), &[b, l, h, d])
        .unwrap();
    let pol = JengaPolicy::new(JengaConfig::wan(&[0.95, 0.95], 0.3)).unwrap();
    let c = ctx(30, grid, 0);
    let plan = pol.plan(&be, &q, &k, &c).unwrap();
    let density = match &plan {
        AttnPlan::Device(dp) => dp.density().unwrap(),
        _ => panic!("expected a device plan"),
    };
    let build = time_ms(&be, 50, || {
        pol.plan(&be, &q, &k, &c).unwrap();
    });
    let pool = time_ms(&be, 50, || {
        be.block_mean_pool_pair(&q, &k, 128).unwrap();
    });
    let (qhat, khat) = be.block_mean_pool_pair(&q, &k, 128).unwrap();
    let sel = jenga_carve::BlockSelect {
        block: 128,
        scored_blocks: 256,
        p: 0.3,
        top_k: 12,
        fixed: pol.fixed_plan(&c).unwrap(),
    };
    let select = time_ms(&be, 50, || {
        be.select_blocks_pooled(&qhat, &khat, &sel)
            .unwrap()
            .unwrap();
    });
    let attn = time_ms(&be, 10, || {
        be.attention(&q, &k, &q, &plan, None).unwrap();
    });
    let both = time_ms(&be, 10, || {
        let p = pol.plan(&be, &q, &k, &c).unwrap();
        be.attention(&q, &k, &q, &p, None).unwrap();
    });
    let host_pol = JengaPolicy::new(JengaConfig::wan(&[0.95, 0.95], 0.3)).unwrap();
    host_pol.set_device_select(false);
    let host = time_ms(&be, 5, || {
        host_pol.plan(&be, &q, &k, &c).unwrap();
    });
    eprintln!(
        "{}: 1x12x256 blocks, density {:.3}: mask building {build:.3} ms (pooling {pool:.3} ms, selection kernels {select:.3} ms), sparse attention {attn:.3} ms, ratio {:.1}%; marginal (plan+attention {both:.3} ms − attention) {:.3} ms = {:.1}% | host-built plan {host:.2} ms",
        be.name(),
        density,
        100.0 * build / attn,
        both - attn,
        100.0 * (both - attn) / attn
    );
    assert!(density > 0.1 && density < 0.35, "{density}");
    assert!(
        build < attn,
        "mask building {build} ms vs attention {attn} ms"
    );
}

#[test]
fn bad_inputs_are_errors() {
    let Some(be) = backend() else { return };
    let pol = JengaPolicy::new(JengaConfig::wan(&[0.75], 0.9)).unwrap();
    let grid = (2, 8, 16);
    let c = ctx(10, grid, 0);
    let fixed = pol.fixed_plan(&c).unwrap();
    let nb = fixed.q_blocks;
    let x = be.upload(&vec![0.5; 2 * nb * 64], &[1, 2, nb, 64]).unwrap();
    let y = be
        .upload(&vec![0.5; 2 * (nb + 1) * 64], &[1, 2, nb + 1, 64])
        .unwrap();
    let sel = jenga_carve::BlockSelect {
        block: 128,
        scored_blocks: nb,
        p: 0.9,
        top_k: 1,
        fixed: fixed.clone(),
    };
    assert!(be.select_blocks_pooled(&x, &y, &sel).is_err());
    assert!(be.select_blocks_pooled(&y, &y, &sel).is_err()); // fixed plan has nb rows
    let too_many = jenga_carve::BlockSelect {
        scored_blocks: nb + 1,
        ..sel.clone()
    };
    assert!(be.select_blocks_pooled(&x, &x, &too_many).is_err());
    // Uniform scores: every probability ties; the lower block indices are kept.
    let AttnPlan::Device(dp) = be.select_blocks_pooled(&x, &x, &sel).unwrap().unwrap() else {
        panic!()
    };
    let got = be.download_plan(&dp).unwrap();
    for qb in 0..nb {
        let row = got.row(0, 1, qb);
        let fixed_row = fixed.row(0, 0, qb);
        // p = 0.9 of a uniform row over nb blocks: floor(0.9 nb / 1) + 1 blocks, lowest first
        // (≥: float rounding of the cumulative sum may keep one fewer), ∪ the fixed row.
        let need = ((0.9 * nb as f64).floor() as usize + 1).min(nb);
        let lowest: Vec<u32> = (0..need as u32 - 1).collect();
        assert!(lowest.iter().all(|j| row.contains(j)), "row {qb}: {row:?}");
        assert!(fixed_row.iter().all(|j| row.contains(j)));
        assert_eq!(got.row(0, 0, qb), row);
    }
    assert_eq!(got.density(), dp.density().unwrap());
    // Shape mismatch in attention: a device plan for other lengths is refused.
    let q = be
        .upload(&vec![0.1; 300 * 2 * 64], &[1, 300, 2, 64])
        .unwrap();
    assert!(be
        .attention(&q, &q, &q, &AttnPlan::Device(dp), None)
        .is_err());
}
