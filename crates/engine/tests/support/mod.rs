//! Helpers shared by the engine's golden tests.
#![allow(dead_code)]

use jenga_engine::{DeviceRequest, Engine};

/// PSNR (dB) of our u8 frames against reference frames in [0, 1].
pub fn psnr(ours: &[u8], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let mse: f64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| {
            let d = a as f64 - (b as f64 * 255.0);
            d * d
        })
        .sum::<f64>()
        / ours.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}

/// Relative L2 distance of `a` from `b`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

pub fn cpu_engine() -> Engine {
    Engine::new(&DeviceRequest {
        device: "cpu".into(),
        threads: None,
    })
    .unwrap()
}

/// The original Wan repo's layout in `dir` for the DiT of a diffusers `transformer/`
/// directory: the DiT in Wan's names (`diffusion_pytorch_model.safetensors`, f32),
/// `config.json`, and the T2V golden's `models_t5_umt5-xxl-enc-bf16.pth`, `Wan2.1_VAE.pth`
/// (written by `torch.save`) and `google/umt5-xxl/tokenizer.json`, the umT5 and VAE every
/// pipeline golden shares. Returns the DiT's tensors (Wan names).
pub fn original_layout(
    transformer: &std::path::Path,
    dir: &std::path::Path,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use jenga_models::{SafetensorsWeights, WeightSource};
    let cfg_path = transformer.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let (_, _, cfg) = jenga_models::config_for_class(&cfg_path, &text).unwrap();
    let src =
        SafetensorsWeights::open(&transformer.join("diffusion_pytorch_model.safetensors")).unwrap();
    let dit: Vec<(String, Vec<usize>, Vec<f32>)> = cfg
        .tensor_shapes()
        .into_iter()
        .map(|(n, s)| {
            let v = src.load(&jenga_models::wan::to_diffusers(&n), &s).unwrap();
            (n, s, v)
        })
        .collect();
    let views: Vec<(&str, Vec<usize>, &[f32])> = dit
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.clone(), d.as_slice()))
        .collect();
    jenga_models::export_f32(&views, &dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    let t2v =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan_pipeline");
    std::fs::create_dir_all(dir.join("google/umt5-xxl")).unwrap();
    std::fs::copy(
        t2v.join("pipeline/tokenizer/tokenizer.json"),
        dir.join("google/umt5-xxl/tokenizer.json"),
    )
    .unwrap();
    for f in ["models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth"] {
        std::fs::copy(t2v.join("original").join(f), dir.join(f)).unwrap();
    }
    dit
}
