//! HunyuanVideo through the sampler: 4 flow-match Euler steps (shift 7, embedded guidance 6,
//! the valid text tokens only) of the reduced-width transformer against the same loop in
//! diffusers (`FlowMatchEulerDiscreteScheduler` as `HunyuanVideoPipeline` sets it), from the
//! same noise (`tools/make_hunyuan_dit_golden.py`, sinusoids in f64 on both sides).

use jenga_carve::Dense;
use jenga_models::hunyuan::{HunyuanConfig, HunyuanModel};
use jenga_models::{Conditioning, Denoiser, SafetensorsWeights, WeightSource};
use jenga_pipeline::{sample, SampleSpec, SolverKind};
use jenga_tensor::{Backend, CpuBackend};
use std::path::PathBuf;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hunyuan_dit"
    ))
    .join(p)
}

#[test]
fn four_euler_steps_match_diffusers() {
    let be = CpuBackend::new();
    let cfg = HunyuanConfig::from_json(
        &std::fs::read_to_string(fixture("transformer/config.json")).unwrap(),
    )
    .unwrap();
    let w = SafetensorsWeights::open(&fixture("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let model = HunyuanModel::load(&be, &cfg, &w).unwrap();
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    let c = Conditioning::JointText {
        states: be
            .upload(&g.load("text", &[1, 7, 40]).unwrap(), &[1, 7, 40])
            .unwrap(),
        lens: vec![5],
        pooled: be
            .upload(&g.load("pooled", &[1, 24]).unwrap(), &[1, 24])
            .unwrap(),
        guidance: Some(6.0),
    };
    let cond = model.condition(&be, &c).unwrap();
    assert_eq!(model.cond_tokens(&cond), 5);
    let mut spec = SampleSpec::single(3, 8, 12, 4, 7.0, 1.0, 0);
    spec.solver = SolverKind::Euler;
    let noise = g.load("noise", &[1, 4, 3, 8, 12]).unwrap();
    let out = sample(&be, &model, &cond, &spec, &Dense, Some(&noise), &mut |_| {}).unwrap();
    let want = g.load("euler4", &[1, 4, 3, 8, 12]).unwrap();
    let num: f64 = out
        .video
        .iter()
        .zip(&want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    let err = (num / den).sqrt();
    println!("HunyuanVideo 4 Euler steps vs diffusers: rel-L2 {err:.2e}");
    assert!(err < 1e-5, "rel-L2 {err}");
    // one prompt only: the guidance is embedded, there is no CFG batch
    let two = Conditioning::JointText {
        states: be.upload(&[0.0; 2 * 7 * 40], &[2, 7, 40]).unwrap(),
        lens: vec![5, 5],
        pooled: be.upload(&[0.0; 2 * 24], &[2, 24]).unwrap(),
        guidance: Some(6.0),
    };
    let e = model
        .condition(&be, &two)
        .err()
        .expect("a batch of 2 is refused")
        .to_string();
    assert!(e.contains("one prompt"), "{e}");
}
