//! The whole HunyuanVideo pipeline at reduced width against diffusers' `HunyuanVideoPipeline`
//! (`tools/make_hunyuan_pipeline_golden.py`): Llama-3 states (template, crop) + CLIP-L pooled →
//! the transformer with embedded guidance, 5 flow-match Euler steps (shift 7 from the
//! scheduler's config) from the same start latent → the VAE decoder → frames. f32 on the CPU.

mod support;

use jenga_carve::Dense;
use jenga_models::hunyuan::{HunyuanConfig, HunyuanModel};
use jenga_models::text::clip_text::ClipTextEncoder;
use jenga_models::text::llama::{LlamaEncoder, LlamaTextOptions, PromptTemplate};
use jenga_models::vae::hunyuan::{HunyuanVae, HunyuanVaeCodec, HunyuanVaeConfig};
use jenga_models::{Conditioning, Denoiser, SafetensorsWeights, TextEncoder, Vae, WeightSource};
use jenga_pipeline::{sample, SampleSpec, SolverKind};
use jenga_tensor::{Backend, CpuBackend};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

#[test]
fn five_steps_match_diffusers_hunyuan_video_pipeline() {
    let (root, text) = (
        fixtures().join("hunyuan_pipeline"),
        fixtures().join("hunyuan_text"),
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("golden.json")).unwrap()).unwrap();
    let prompt = meta["prompt"].as_str().unwrap();
    let be = std::sync::Arc::new(CpuBackend::new());
    // text: Llama states of the templated prompt, cropped; CLIP-L pooled
    let opts = LlamaTextOptions {
        template: PromptTemplate {
            crop_start: meta["crop_start"].as_u64().unwrap() as usize,
            ..PromptTemplate::video()
        },
        ..Default::default()
    };
    let llama = LlamaEncoder::load_with(
        be.clone(),
        &text.join("text_encoder"),
        &text.join("tokenizer"),
        opts,
    )
    .unwrap();
    let st = llama.encode(prompt).unwrap();
    let valid = st.mask.iter().filter(|&&m| m).count();
    let clip = ClipTextEncoder::load(
        be.clone(),
        &text.join("text_encoder_2"),
        &text.join("tokenizer_2"),
    )
    .unwrap();
    let pooled = clip.encode(prompt).unwrap();
    // the transformer and its sampling defaults (scheduler_config.json: shift)
    let tdir = root.join("transformer");
    let cfg = HunyuanConfig::from_json(&std::fs::read_to_string(tdir.join("config.json")).unwrap())
        .unwrap();
    let w = SafetensorsWeights::open(&tdir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let model = HunyuanModel::load(be.as_ref(), &cfg, &w).unwrap();
    let sc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    let shift = sc["shift"].as_f64().unwrap();
    assert_eq!(shift, 7.0);
    let c = Conditioning::JointText {
        states: be.upload(&st.states, &[1, st.len, st.dim]).unwrap(),
        lens: vec![valid],
        pooled: be.upload(&pooled, &[1, pooled.len()]).unwrap(),
        guidance: Some(meta["embedded_guidance"].as_f64().unwrap() as f32),
    };
    let cond = model.condition(be.as_ref(), &c).unwrap();
    let (f, h, w) = (2, 8, 8);
    let mut spec = SampleSpec::single(f, h, w, 5, shift, 1.0, 0);
    spec.solver = SolverKind::Euler;
    let g = SafetensorsWeights::open(&root.join("golden.safetensors")).unwrap();
    let noise = g.load("noise", &[1, 16, f, h, w]).unwrap();
    let out = sample(
        be.as_ref(),
        &model,
        &cond,
        &spec,
        &Dense,
        Some(&noise),
        &mut |_| {},
    )
    .unwrap();
    // decode
    let vdir = fixtures().join("hunyuan_vae/vae");
    let vcfg = HunyuanVaeConfig::from_file(&vdir.join("config.json")).unwrap();
    let vw = SafetensorsWeights::open(&vdir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let codec = HunyuanVaeCodec {
        be: be.clone(),
        vae: HunyuanVae::load(be.as_ref(), &vw, vcfg).unwrap(),
    };
    let frames = codec.decode(&out.video, out.shape).unwrap();
    let [_, nf, ph, pw] = frames.shape;
    assert_eq!((nf, ph, pw), (5, 64, 64));
    let video = jenga_engine::frames_to_video(&frames, 8);
    let want = g.load("frames", &[5, 64, 64, 3]).unwrap();
    let psnr = support::psnr(&video.rgb, &want);
    println!("HunyuanVideo pipeline, 5 steps vs diffusers: PSNR {psnr:.1} dB");
    assert!(psnr >= 40.0, "PSNR {psnr:.1} dB");
}
