//! The CLIP vision tower (Wan2.1 I2V's image encoder) against transformers'
//! `CLIPVisionModel` (tests/fixtures/clip, made by tools/make_clip_golden.py): the penultimate
//! hidden states of a 224 px input, 257 tokens, with and without the `vision_model.` prefix.

use jenga_models::{export_f32, ClipVision, ClipVisionConfig, SafetensorsWeights, WeightSource};
use jenga_tensor::{Backend, CpuBackend};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/clip")
        .join(p)
}

#[path = "support/rel_l2.rs"]
mod rel_l2;
use rel_l2::rel_l2;

#[test]
fn penultimate_states_match_transformers() {
    let cfg = ClipVisionConfig::from_hf_file(&fixture("image_encoder/config.json")).unwrap();
    assert_eq!((cfg.tokens(), cfg.hidden, cfg.layers), (257, 64, 3));
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    let pixels = g.load("pixels", &[1, 3, 224, 224]).unwrap();
    let want = g.load("penultimate", &[1, 257, 64]).unwrap();
    let be = CpuBackend::new();
    let src = SafetensorsWeights::open(&fixture("image_encoder/model.safetensors")).unwrap();
    let m = ClipVision::load(&be, &cfg, &src).unwrap();
    let out = be.download(&m.penultimate(&be, &pixels).unwrap()).unwrap();
    let e = rel_l2(&out, &want);
    println!("penultimate rel-L2 {e:.2e}");
    assert!(e <= 1e-5, "rel-L2 {e:.2e}");

    // the same weights under `vision_model.` (diffusers' Wan I2V image_encoder, ComfyUI)
    let tmp = tempfile::tempdir().unwrap();
    let names = src.names();
    let data: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let s = src.info(n).unwrap().shape;
            (
                format!("vision_model.{n}"),
                s.clone(),
                src.load(n, &s).unwrap(),
            )
        })
        .collect();
    let views: Vec<(&str, Vec<usize>, &[f32])> = data
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.clone(), d.as_slice()))
        .collect();
    let p = tmp.path().join("clip_vision_h.safetensors");
    export_f32(&views, &p).unwrap();
    let m = ClipVision::load(&be, &cfg, &SafetensorsWeights::open(&p).unwrap()).unwrap();
    let out2 = be.download(&m.penultimate(&be, &pixels).unwrap()).unwrap();
    assert_eq!(out, out2);

    // the penultimate layer, not the last one nor the one before: a tower told it has one
    // layer more (it then runs all 3) or one fewer differs
    let deeper = ClipVisionConfig {
        layers: 4,
        ..cfg.clone()
    };
    let m = ClipVision::load(&be, &deeper, &src).unwrap();
    let last = be.download(&m.penultimate(&be, &pixels).unwrap()).unwrap();
    assert!(rel_l2(&last, &want) > 1e-2);
    let shallower = ClipVisionConfig { layers: 2, ..cfg };
    let m = ClipVision::load(&be, &shallower, &src).unwrap();
    let out3 = be.download(&m.penultimate(&be, &pixels).unwrap()).unwrap();
    assert!(rel_l2(&out3, &want) > 1e-2);
    // wrong input size: one clear error
    let e = m
        .penultimate(&be, &pixels[..100])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("3x224x224"), "{e}");
}
