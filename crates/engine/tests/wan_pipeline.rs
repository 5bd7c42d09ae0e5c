//! The whole text-to-video path on a real checkpoint layout: a tiny random diffusers
//! `WanPipeline` saved with `save_pretrained` (tests/fixtures/wan_pipeline, made by
//! tools/make_wan_pipeline_golden.py), 10 UniPC steps under guidance from the same start
//! latent (`--init-noise`): our frames against diffusers' frames, in PSNR.

use jenga_engine::{prepare, GenerateRequest, ModelSource};
use jenga_models::{SafetensorsWeights, WeightSource};
use std::path::{Path, PathBuf};

mod support;
use support::{cpu_engine, psnr, rel_l2};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wan_pipeline")
        .join(p)
}

fn request() -> GenerateRequest {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("golden.json")).unwrap()).unwrap();
    let mut r = GenerateRequest {
        model: ModelSource::Dir(fixture("pipeline")),
        ..Default::default()
    };
    r.sampling.prompt = g["prompt"].as_str().unwrap().into();
    r.sampling.negative_prompt = Some(g["negative_prompt"].as_str().unwrap().into());
    r.sampling.steps = Some(g["steps"].as_u64().unwrap() as usize);
    r.sampling.guidance = Some(g["guidance"].as_f64().unwrap() as f32);
    r.sampling.init_noise = Some(fixture("init_noise.safetensors"));
    r.video.frames = Some(g["frames"].as_u64().unwrap() as usize);
    r.video.height = Some(g["height"].as_u64().unwrap() as usize);
    r.video.width = Some(g["width"].as_u64().unwrap() as usize);
    r
}

#[test]
fn ten_unipc_steps_match_diffusers_wan_pipeline() {
    let r = request();
    let p = prepare(&r).unwrap();
    // the diffusers directory's scheduler config sets the shift, as diffusers does
    assert_eq!(p.plan.spec.stages[0].shift, 3.0);
    assert_eq!(
        (p.plan.spec.frames, p.plan.spec.height, p.plan.spec.width),
        (3, 8, 8)
    );
    let engine = cpu_engine();
    let out = engine.generate(&p, &mut |_| {}).unwrap();
    let v = &out.video;
    assert_eq!((v.frames, v.height, v.width), (9, 64, 64));
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    let frames = g.load("frames", &[9, 64, 64, 3]).unwrap();
    let db = psnr(&v.rgb, &frames);
    let lat = rel_l2(&out.latent, &g.load("latent", &[16, 3, 8, 8]).unwrap());
    eprintln!("against WanPipeline: frames {db:.1} dB, final latent rel-L2 {lat:.2e}");
    assert!(db >= 40.0, "PSNR {db:.1} dB against WanPipeline");
    assert!(
        lat <= 2e-3,
        "final latent rel-L2 {lat:.2e} against WanPipeline"
    );

    // the prompt and the guidance matter at this model's widths: either one wrong fails both
    // checks (a test that passes without the text path is no test of it)
    for wrong in [
        GenerateRequest {
            sampling: jenga_engine::Sampling {
                guidance: Some(1.0),
                ..r.sampling.clone()
            },
            ..r.clone()
        },
        GenerateRequest {
            sampling: jenga_engine::Sampling {
                prompt: "Two dogs play".into(),
                ..r.sampling.clone()
            },
            ..r.clone()
        },
    ] {
        let w = engine
            .generate(&prepare(&wrong).unwrap(), &mut |_| {})
            .unwrap();
        let lw = rel_l2(&w.latent, &g.load("latent", &[16, 3, 8, 8]).unwrap());
        assert!(psnr(&w.video.rgb, &frames) < 38.0 && lw > 0.05, "{lw:.2e}");
    }

    // the seeded noise is not the golden's: the same check must fail without --init-noise
    let mut seeded = r.clone();
    seeded.sampling.init_noise = None;
    let out = engine
        .generate(&prepare(&seeded).unwrap(), &mut |_| {})
        .unwrap();
    let db_seeded = psnr(&out.video.rgb, &frames);
    assert!(db_seeded < db - 10.0, "{db_seeded:.1} dB vs {db:.1} dB");
}

#[test]
fn bad_init_noise_and_sizes_are_one_clear_error_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |r: &GenerateRequest| match prepare(r) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    };
    // the wrong shape: named, with the shape this run takes
    let wrong = tmp.path().join("n.safetensors");
    jenga_models::export_f32(
        &[("noise", vec![16, 2, 8, 8], &vec![0.0; 16 * 2 * 64])],
        &wrong,
    )
    .unwrap();
    let mut r = request();
    r.sampling.init_noise = Some(wrong.clone());
    let e = err(&r);
    assert!(
        e.contains("--init-noise") && e.contains("[16, 2, 8, 8]") && e.contains("[16, 3, 8, 8]"),
        "{e}"
    );
    // no tensor `noise`
    let other = tmp.path().join("o.safetensors");
    jenga_models::export_f32(&[("latent", vec![2], &[0.0, 1.0])], &other).unwrap();
    r.sampling.init_noise = Some(other);
    let e = err(&r);
    assert!(
        e.contains("no tensor `noise`") && e.contains("latent"),
        "{e}"
    );
    // not a file at all
    r.sampling.init_noise = Some(tmp.path().join("missing.safetensors"));
    assert!(err(&r).contains("missing.safetensors"));
    // 4k+1 frames, multiples of 16 px
    let mut r = request();
    r.video.frames = Some(8);
    let e = err(&r);
    assert!(e.contains("--frames 8") && e.contains("1 + 4k"), "{e}");
    let mut r = request();
    r.video.height = Some(72);
    let e = err(&r);
    assert!(e.contains("--height 72") && e.contains("16"), "{e}");
}

#[test]
fn negative_prompt_default_is_wans_and_an_explicit_empty_one_is_kept() {
    let mut r = request();
    r.sampling.negative_prompt = None;
    assert_eq!(
        prepare(&r).unwrap().plan.negative,
        jenga_engine::WAN_NEG_PROMPT
    );
    r.sampling.negative_prompt = Some(String::new());
    assert_eq!(prepare(&r).unwrap().plan.negative, "");
    // default size of a 1.3B-wide family is 81 frames 480x832; this tiny DiT is "1.3B" too
    r.video = Default::default();
    r.sampling.init_noise = None;
    let p = prepare(&r).unwrap();
    assert_eq!(p.plan.out_size, (81, 480, 832));
    assert_eq!(
        (p.plan.spec.frames, p.plan.spec.height, p.plan.spec.width),
        (21, 60, 104)
    );
}

/// The same checkpoint as the original Wan repo lays it out: `config.json`, the DiT in Wan's
/// names, `models_t5_umt5-xxl-enc-bf16.pth` and `Wan2.1_VAE.pth` (written by `torch.save`),
/// `google/umt5-xxl/tokenizer.json`. Returns the directory and the DiT's tensors.
fn original_layout(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    support::original_layout(&fixture("pipeline/transformer"), dir)
}

fn golden_psnr(r: &GenerateRequest) -> f64 {
    let engine = cpu_engine();
    let out = engine.generate(&prepare(r).unwrap(), &mut |_| {}).unwrap();
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    psnr(&out.video.rgb, &g.load("frames", &[9, 64, 64, 3]).unwrap())
}

#[test]
fn the_original_wan_layout_and_comfyui_single_files_give_the_same_video() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("Wan2.1-T2V-1.3B");
    std::fs::create_dir_all(&orig).unwrap();
    let dit = original_layout(&orig);
    let mut r = request();
    // no scheduler config in this layout: the official shift 5 and Wan's own UniPC grid,
    // unless told to run as the diffusers golden did
    r.model = ModelSource::Dir(orig.clone());
    let p = prepare(&r).unwrap();
    assert_eq!(p.plan.spec.stages[0].shift, 5.0);
    assert_eq!(p.plan.spec.solver, jenga_pipeline::SolverKind::UniPc);
    r.sampling.shift = Some(3.0);
    r.sampling.solver = Some("unipc-diffusers".into());
    let db = golden_psnr(&r);
    eprintln!("original layout: {db:.1} dB");
    assert!(db >= 40.0, "original layout: {db:.1} dB");

    // ComfyUI: the DiT under `model.diffusion_model.`, the .pth files as they are
    let file = tmp.path().join("wan2.1_t2v_1.3B.safetensors");
    let views: Vec<(String, Vec<usize>, &[f32])> = dit
        .iter()
        .map(|(n, s, d)| {
            (
                format!("model.diffusion_model.{n}"),
                s.clone(),
                d.as_slice(),
            )
        })
        .collect();
    let views: Vec<(&str, Vec<usize>, &[f32])> = views
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.clone(), *d))
        .collect();
    jenga_models::export_f32(&views, &file).unwrap();
    r.model = ModelSource::Files(jenga_engine::ModelFiles {
        dit: file,
        text_encoder: orig.join("models_t5_umt5-xxl-enc-bf16.pth"),
        vae: orig.join("Wan2.1_VAE.pth"),
        tokenizer: Some(orig.join("google/umt5-xxl")),
        clip_vision: None,
    });
    let db = golden_psnr(&r);
    eprintln!("single files: {db:.1} dB");
    assert!(db >= 40.0, "single files: {db:.1} dB");
}
