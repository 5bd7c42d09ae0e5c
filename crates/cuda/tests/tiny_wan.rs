//! End to end: the embedded tiny-wan DiT forward on the CUDA backend against the CPU backend
//! (same weights, same input). bf16 storage through 6 blocks: relative L2 ≤ 3e-2.

use jenga_carve::{AttnCtx, Dense};
use jenga_cuda::{cuda_available, selftest::rel_l2, selftest::Rng, CudaBackend};
use jenga_models::{ModelBundle, WanModel};
use jenga_tensor::{CpuBackend, FusedOps};

fn velocity<B: FusedOps>(be: &B, bundle: &ModelBundle, x: &[f32], text: &[f32]) -> Vec<f32> {
    let cfg = &bundle.config;
    let model = WanModel::load(be, cfg, &bundle.weights).expect("load tiny-wan");
    let ctx = model
        .embed_text(
            be,
            &be.upload(text, &[1, cfg.text_len, cfg.text_dim]).unwrap(),
        )
        .unwrap();
    let grid = (8, 16, 16);
    let geom = model.geometry(be, grid, None).unwrap();
    let actx = AttnCtx::one_forward(grid, model.num_layers());
    let xt = be.upload(x, &[1, cfg.in_dim, 8, 32, 32]).unwrap();
    let v = model
        .forward(be, &xt, 500.0, &ctx, &geom, &Dense, &actx)
        .unwrap();
    be.download(&v).unwrap()
}

#[test]
fn tiny_wan_forward_matches_cpu() {
    if !cuda_available() {
        // counted by .ci/run (the test name makes repeated calls count once)
        eprintln!(
            "skipped: no CUDA driver ({})",
            std::thread::current().name().unwrap_or("?")
        );
        return;
    }
    let gpu = CudaBackend::new(0).expect("device opens");
    let bundle = ModelBundle::embedded().expect("embedded model");
    let text = bundle.encode_prompt("a red circle moving right").unwrap();
    let x = Rng::new(7).normal_vec(bundle.config.in_dim * 8 * 32 * 32, 1.0);
    let want = velocity(&CpuBackend::new(), &bundle, &x, &text);
    let got = velocity(&gpu, &bundle, &x, &text);
    let err = rel_l2(&got, &want);
    println!("tiny-wan velocity, CUDA vs CPU: rel L2 {err:.2e}");
    assert!(err <= 3e-2, "rel L2 {err}");
}
