//! The 10-step CFG sample of the tiny-wan fixture (shift 3, guidance 5) against the golden.

use jenga_carve::Dense;
use jenga_models::{ModelBundle, SafetensorsWeights, WanModel, WeightSource};
use jenga_pipeline::{sample, SampleSpec};
use jenga_tensor::{Backend, CpuBackend};
use std::path::PathBuf;

#[test]
fn ten_step_cfg_sample_matches_golden() {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tiny-wan/reference.safetensors"
    ));
    // a missing golden fails the test, naming the path (it never passes unchecked)
    let r = SafetensorsWeights::open(&p)
        .unwrap_or_else(|e| panic!("golden reference {} unreadable: {e:?}", p.display()));
    let be = CpuBackend::new();
    let bundle = ModelBundle::embedded().unwrap();
    let model = WanModel::load(&be, &bundle.config, &bundle.weights).unwrap();
    let cond = bundle
        .encode_prompt("a red circle moving right on a blue background")
        .unwrap();
    let uncond = bundle.encode_prompt("").unwrap();
    assert!(uncond.iter().all(|&v| v == 0.0));
    let ctx = be.upload(&[cond, uncond].concat(), &[2, 16, 64]).unwrap();
    let ctx = model.embed_text(&be, &ctx).unwrap();
    let noise = r.load("sample_noise", &[3, 8, 32, 32]).unwrap();
    let spec = SampleSpec::single(8, 32, 32, 10, 3.0, 5.0, 0);
    let out = sample(&be, &model, &ctx, &spec, &Dense, Some(&noise), &mut |_| {}).unwrap();
    let gold = r.load("sample_out", &[3, 8, 32, 32]).unwrap();
    let err = out
        .video
        .iter()
        .zip(&gold)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("sample_out max-abs err {err:e}");
    assert!(err <= 1e-3, "sample_out max-abs err {err}");
    assert_eq!(out.computed_steps, 10);
}

#[test]
fn same_seed_is_bit_identical() {
    let be = CpuBackend::new();
    let bundle = ModelBundle::embedded().unwrap();
    let model = WanModel::load(&be, &bundle.config, &bundle.weights).unwrap();
    let ctx = be
        .upload(
            &bundle
                .encode_prompt("a green square moving up on a black background")
                .unwrap(),
            &[1, 16, 64],
        )
        .unwrap();
    let ctx = model.embed_text(&be, &ctx).unwrap();
    let spec = SampleSpec::single(4, 16, 16, 3, 3.0, 1.0, 42);
    let a = sample(&be, &model, &ctx, &spec, &Dense, None, &mut |_| {})
        .unwrap()
        .video;
    let b = sample(&be, &model, &ctx, &spec, &Dense, None, &mut |_| {})
        .unwrap()
        .video;
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let spec2 = SampleSpec { seed: 43, ..spec };
    let c = sample(&be, &model, &ctx, &spec2, &Dense, None, &mut |_| {})
        .unwrap()
        .video;
    assert!(a.iter().zip(&c).any(|(x, y)| x != y));
}
