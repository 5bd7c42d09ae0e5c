//! tiny-wan forward against the golden tensors of `tests/fixtures/tiny-wan/reference.safetensors`
//! (an independent f32 PyTorch run of the same weights).

use jenga_carve::{AttnCtx, Dense};
use jenga_models::{
    SafetensorsWeights, TinyTextEncoder, Tokenizer, WanConfig, WanModel, WeightSource,
};
use jenga_tensor::{Backend, CpuBackend};
use std::path::PathBuf;

const PROMPT: &str = "a red circle moving right on a blue background";

fn assets() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/tiny-wan"
    ))
}

/// The golden tensors; a missing file fails the test (it never passes unchecked).
fn reference() -> SafetensorsWeights {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tiny-wan/reference.safetensors"
    ));
    SafetensorsWeights::open(&p)
        .unwrap_or_else(|e| panic!("golden reference {} unreadable: {e:?}", p.display()))
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn actx(layers: usize) -> AttnCtx {
    AttnCtx::one_forward((8, 16, 16), layers)
}

#[test]
fn tiny_wan_matches_golden_forward() {
    let r = reference();
    let be = CpuBackend::new();
    let cfg = WanConfig::from_file(&assets().join("config.json")).unwrap();
    let w =
        SafetensorsWeights::open(&assets().join("diffusion_pytorch_model.safetensors")).unwrap();
    let model = WanModel::load(&be, &cfg, &w).unwrap();

    // text
    let tok = Tokenizer::from_file(&assets().join("vocab.json"), cfg.text_len).unwrap();
    let te = TinyTextEncoder::load(
        &SafetensorsWeights::open(&assets().join("text_encoder.safetensors")).unwrap(),
        28,
        16,
        64,
    )
    .unwrap();
    let ids = tok.encode(PROMPT);
    let text = te.encode(&ids).unwrap();
    let err = max_abs(&text, &r.load("text_emb", &[16, 64]).unwrap());
    println!("text_emb max-abs err {err:e}");
    assert!(err <= 1e-4);

    let x = be
        .upload(&r.load("x", &[3, 8, 32, 32]).unwrap(), &[1, 3, 8, 32, 32])
        .unwrap();
    let t = r.load("t", &[]).unwrap()[0] as f64;
    let ctx = model
        .embed_text(&be, &be.upload(&text, &[1, 16, 64]).unwrap())
        .unwrap();
    let geom = model.geometry(&be, (8, 16, 16), None).unwrap();
    let emb = model.embed(&be, &x, t, &geom).unwrap();
    let err = max_abs(
        &be.download(&emb.x).unwrap(),
        &r.load("patch_out", &[2048, 256]).unwrap(),
    );
    println!("patch_out max-abs err {err:e}");
    assert!(err <= 1e-4);
    let (_, e0) = model.time_embed(&be, t).unwrap();
    let err = max_abs(
        &be.download(&e0).unwrap(),
        &r.load("e0", &[6, 256]).unwrap(),
    );
    println!("e0 max-abs err {err:e}");
    assert!(err <= 1e-4);
    let b0 = model
        .block(&be, 0, &emb.x, &emb, &ctx, &geom, &Dense, &actx(6))
        .unwrap();
    let err = max_abs(
        &be.download(&b0).unwrap(),
        &r.load("block0_out", &[2048, 256]).unwrap(),
    );
    println!("block0_out max-abs err {err:e}");
    assert!(err <= 1e-4);
    let v = model
        .forward(&be, &x, t, &ctx, &geom, &Dense, &actx(6))
        .unwrap();
    let err = max_abs(
        &be.download(&v).unwrap(),
        &r.load("v", &[3, 8, 32, 32]).unwrap(),
    );
    println!("v max-abs err {err:e}");
    assert!(err <= 1e-4);
}
