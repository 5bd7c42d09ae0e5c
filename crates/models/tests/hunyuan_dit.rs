//! The HunyuanVideo transformer against diffusers' `HunyuanVideoTransformer3DModel` at reduced
//! width (`tools/make_hunyuan_dit_golden.py`: 2 dual + 2 single blocks, a refiner block, a
//! 3x8x12 latent, 7 text tokens of which 5 are valid), f32 on the CPU; and the Jenga seam on
//! the joint sequence (text as condition tokens after the video).

#[path = "support/rel_l2.rs"]
mod rel_l2;

use jenga_carve::{AttentionPolicy, AttnCtx, Dense, JengaConfig, JengaPolicy};
use jenga_models::hunyuan::{HunyuanCond, HunyuanConfig, HunyuanModel};
use jenga_models::{SafetensorsWeights, WeightSource};
use jenga_tensor::{Backend, CpuBackend};
use rel_l2::rel_l2;
use std::path::PathBuf;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hunyuan_dit"
    ))
    .join(p)
}

struct Golden {
    model: HunyuanModel<CpuBackend>,
    g: SafetensorsWeights,
}

fn load(be: &CpuBackend) -> Golden {
    let text = std::fs::read_to_string(fixture("transformer/config.json")).unwrap();
    let cfg = HunyuanConfig::from_json(&text).unwrap();
    let w = SafetensorsWeights::open(&fixture("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let model = HunyuanModel::load(be, &cfg, &w).unwrap();
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    Golden { model, g }
}

/// The forward of the golden's inputs with the padded text rows cropped (as the engine feeds).
fn forward(
    be: &CpuBackend,
    gd: &Golden,
    pol: &dyn AttentionPolicy<CpuBackend>,
    step: usize,
) -> Vec<f32> {
    let g = &gd.g;
    let x = g.load("x", &[1, 4, 3, 8, 12]).unwrap();
    let text = g.load("text", &[1, 7, 40]).unwrap();
    let mask = g.load("mask", &[1, 7]).unwrap();
    let valid = mask.iter().filter(|&&m| m > 0.5).count();
    let cond = HunyuanCond {
        text: be.upload(&text[..valid * 40], &[1, valid, 40]).unwrap(),
        pooled: be
            .upload(&g.load("pooled", &[1, 24]).unwrap(), &[1, 24])
            .unwrap(),
        guidance: Some(g.load("guidance", &[1]).unwrap()[0]),
    };
    let t = g.load("t", &[1]).unwrap()[0] as f64;
    let m = &gd.model;
    let grid = m.grid(3, 8, 12).unwrap();
    let geom = m.geometry(be, grid, pol.token_order(grid)).unwrap();
    let actx = AttnCtx {
        step,
        num_steps: 50,
        ..AttnCtx::one_forward(grid, m.num_layers())
    };
    let xt = be.upload(&x, &[1, 4, 3, 8, 12]).unwrap();
    let v = m.forward(be, &xt, t, &cond, &geom, pol, &actx).unwrap();
    be.download(&v).unwrap()
}

#[test]
fn transformer_forward_matches_diffusers() {
    let be = CpuBackend::new();
    let gd = load(&be);
    let got = forward(&be, &gd, &Dense, 0);
    // `v_exact`: diffusers with its time/guidance sinusoids in f64, as ours
    let exact = rel_l2(&got, &gd.g.load("v_exact", &[1, 4, 3, 8, 12]).unwrap());
    // `v`: stock diffusers, whose float32 sin is ~4e-4 rad off at the guidance input (6000)
    let stock = rel_l2(&got, &gd.g.load("v", &[1, 4, 3, 8, 12]).unwrap());
    println!(
        "HunyuanVideo transformer vs diffusers: rel-L2 {exact:.2e} (stock diffusers {stock:.2e})"
    );
    assert!(exact < 1e-5, "rel-L2 {exact}");
    assert!(stock < 2e-4, "rel-L2 vs stock diffusers {stock}");
}

#[test]
fn the_curve_order_gives_the_same_velocity() {
    // Jenga's curve reorders tokens (patchify, RoPE, unpatchify follow it); with every block
    // kept the velocity is the raster one.
    let be = CpuBackend::new();
    let gd = load(&be);
    let want = gd.g.load("v_exact", &[1, 4, 3, 8, 12]).unwrap();
    let mut cfg = JengaConfig::hunyuan(&[0.0], 1.0, &[1.0]);
    cfg.block = 16;
    let pol = JengaPolicy::new(cfg).unwrap();
    assert!(AttentionPolicy::<CpuBackend>::token_order(&pol, (3, 4, 6)).is_some());
    let got = forward(&be, &gd, &pol, 0);
    let err = rel_l2(&got, &want);
    assert!(err < 1e-5, "rel-L2 {err}");
}

#[test]
fn a_bad_config_or_a_missing_tensor_is_one_clear_error() {
    let text = std::fs::read_to_string(fixture("transformer/config.json")).unwrap();
    let bad = text.replace(
        "\"rope_axes_dim\": [\n    4,",
        "\"rope_axes_dim\": [\n    6,",
    );
    let e = HunyuanConfig::from_json(&bad).unwrap_err().to_string();
    assert!(e.contains("rope_axes_dim"), "{e}");
    // weights of another config: the first tensor whose shape differs is named
    let mut cfg = HunyuanConfig::from_json(&text).unwrap();
    cfg.text_embed_dim = 48;
    let w = SafetensorsWeights::open(&fixture("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let e = match HunyuanModel::load(&CpuBackend::new(), &cfg, &w) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded with the wrong text width"),
    };
    assert!(e.contains("context_embedder"), "{e}");
}
