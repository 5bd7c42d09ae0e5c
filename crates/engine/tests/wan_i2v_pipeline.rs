//! Image-to-video on real checkpoint layouts: a tiny random diffusers `WanImageToVideoPipeline`
//! saved with `save_pretrained` (tests/fixtures/wan_i2v_pipeline, made by
//! tools/make_wan_i2v_pipeline_golden.py), 5 UniPC steps under guidance from the same start
//! latent, on a 96x60 image at the area 48x80 (a 48x64 video). Two references: diffusers'
//! preprocessing (diffusers layout) and Wan's own (original layout, ComfyUI single files).

use jenga_engine::image::{condition_latent, read_image, ImageEncoder};
use jenga_engine::{prepare, GenerateRequest, ModelFiles, ModelSource};
use jenga_models::image::{ClipVisionConfig, Preprocess};
use jenga_models::vae::{WanVae, WanVaeCodec, WanVaeConfig};
use jenga_models::{open_weights, SafetensorsWeights, WeightSource};
use jenga_tensor::CpuBackend;
use std::path::{Path, PathBuf};

mod support;
use support::{cpu_engine, psnr, rel_l2};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wan_i2v_pipeline")
        .join(p)
}

fn t2v_fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wan_pipeline")
        .join(p)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The whole diffusers directory: the fixture holds all but the umT5 and the VAE, which are
/// the T2V golden's (the same weights, not stored twice).
fn pipeline(tmp: &Path) -> PathBuf {
    let dir = tmp.join("Wan2.1-I2V-tiny-Diffusers");
    copy_dir(&fixture("pipeline"), &dir);
    for sub in ["text_encoder", "vae"] {
        copy_dir(&t2v_fixture(&format!("pipeline/{sub}")), &dir.join(sub));
    }
    dir
}

fn golden(name: &str, shape: &[usize]) -> Vec<f32> {
    SafetensorsWeights::open(&fixture("golden.safetensors"))
        .unwrap()
        .load(name, shape)
        .unwrap()
}

const FRAMES: [usize; 4] = [5, 48, 64, 3];
const LATENT: [usize; 4] = [16, 2, 6, 8];

fn request(model: ModelSource) -> GenerateRequest {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("golden.json")).unwrap()).unwrap();
    let mut r = GenerateRequest {
        model,
        ..Default::default()
    };
    let n = |k: &str| g[k].as_u64().unwrap() as usize;
    r.sampling.prompt = g["prompt"].as_str().unwrap().into();
    r.sampling.negative_prompt = Some(g["negative_prompt"].as_str().unwrap().into());
    r.sampling.steps = Some(n("steps"));
    r.sampling.guidance = Some(g["guidance"].as_f64().unwrap() as f32);
    r.sampling.init_noise = Some(fixture("init_noise.safetensors"));
    r.sampling.image = Some(fixture("image.png"));
    r.video.frames = Some(n("frames"));
    // the area: the video takes the image's aspect at 48 x 80 px
    r.video.height = Some(n("area_height"));
    r.video.width = Some(n("area_width"));
    r
}

/// Runs `r` and compares frames and final latent with the golden of reference `which`.
fn against(r: &GenerateRequest, which: &str) -> (f64, f64) {
    let p = prepare(r).unwrap();
    assert_eq!(p.plan.out_size, (5, 48, 64), "size from the image's aspect");
    let out = cpu_engine().generate(&p, &mut |_| {}).unwrap();
    let db = psnr(&out.video.rgb, &golden(&format!("{which}.frames"), &FRAMES));
    let lat = rel_l2(&out.latent, &golden(&format!("{which}.latent"), &LATENT));
    eprintln!("{which}: frames {db:.1} dB, final latent rel-L2 {lat:.2e}");
    (db, lat)
}

#[test]
fn clip_states_and_the_conditioning_latent_match_both_references() {
    let be = CpuBackend::new();
    let img = read_image(&fixture("image.png")).unwrap();
    assert_eq!((img.width, img.height), (96, 60));
    let ie = fixture("pipeline/image_encoder");
    let hf = ImageEncoder {
        cfg: ClipVisionConfig::from_hf_file(&ie.join("config.json")).unwrap(),
        preprocess: Preprocess::Diffusers,
    };
    let w = open_weights(&ie).unwrap();
    let ours = hf.states(&be, w.as_ref(), &img).unwrap();
    let e = rel_l2(&ours, &golden("diffusers.clip", &[17, 160]));
    eprintln!("CLIP (CLIPImageProcessor + CLIPVisionModel): rel-L2 {e:.2e}");
    assert!(e < 1e-4, "diffusers CLIP states rel-L2 {e:.2e}");

    // Wan's .pth (`visual.` names, fused to_qkv), config from the shapes, Wan's resize
    let pth = fixture("original/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth");
    let ww = open_weights(&pth).unwrap();
    let cfg = ClipVisionConfig::from_shapes(ww.as_ref(), &pth).unwrap();
    assert_eq!(cfg, hf.cfg);
    let wan = ImageEncoder {
        cfg,
        preprocess: Preprocess::Wan,
    };
    let ours = wan.states(&be, ww.as_ref(), &img).unwrap();
    let e = rel_l2(&ours, &golden("wan.clip", &[17, 160]));
    eprintln!("CLIP (Wan's clip.py): rel-L2 {e:.2e}");
    assert!(e < 1e-4, "Wan CLIP states rel-L2 {e:.2e}");

    let vae_dir = t2v_fixture("pipeline/vae");
    let vcfg = WanVaeConfig::from_file(&vae_dir.join("config.json")).unwrap();
    let vw = open_weights(&vae_dir).unwrap();
    let mut vae = WanVaeCodec {
        be: &be,
        vae: WanVae::load(&be, vw.as_ref(), vcfg).unwrap(),
    };
    for (how, which) in [
        (Preprocess::Diffusers, "diffusers"),
        (Preprocess::Wan, "wan"),
    ] {
        let (y, shape) = condition_latent(&mut vae, false, &img, how, 5, (48, 64)).unwrap();
        assert_eq!(shape, [20, 2, 6, 8]);
        let e = rel_l2(&y, &golden(&format!("{which}.y"), &[20, 2, 6, 8]));
        eprintln!("conditioning latent ({which}): rel-L2 {e:.2e}");
        assert!(e < 1e-4, "{which} conditioning latent rel-L2 {e:.2e}");
    }
}

#[test]
fn five_steps_match_diffusers_wan_image_to_video_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let r = request(ModelSource::Dir(pipeline(tmp.path())));
    let p = prepare(&r).unwrap();
    // the directory's scheduler sets the shift; WanImageToVideoPipeline's 50 steps by default
    assert_eq!(p.plan.spec.stages[0].shift, 3.0);
    let mut d = r.clone();
    d.sampling.steps = None;
    d.sampling.init_noise = None;
    assert_eq!(prepare(&d).unwrap().plan.spec.steps, 50);
    let (db, lat) = against(&r, "diffusers");
    assert!(
        db >= 40.0,
        "PSNR {db:.1} dB against WanImageToVideoPipeline"
    );
    assert!(lat <= 2e-3, "final latent rel-L2 {lat:.2e}");
    // the two preprocessings give visibly different videos, so the check above sees the
    // image path (a run that ignored the image's resize could not pass it)
    let other = psnr(
        &golden("wan.frames", &FRAMES)
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect::<Vec<_>>(),
        &golden("diffusers.frames", &FRAMES),
    );
    eprintln!("Wan vs diffusers preprocessing: {other:.1} dB");
    assert!(other < 38.0, "{other:.1} dB");
}

/// The original I2V repo's files: `config.json`, the DiT in Wan's names, the umT5 and VAE
/// `.pth` (the T2V golden's, the same weights), the tokenizer, and the CLIP `.pth`.
fn original_layout(dir: &Path) -> PathBuf {
    support::original_layout(&fixture("pipeline/transformer"), dir);
    let clip = jenga_models::layout::WAN_CLIP;
    std::fs::copy(fixture("original").join(clip), dir.join(clip)).unwrap();
    dir.join("diffusion_pytorch_model.safetensors")
}

#[test]
fn the_original_layout_and_single_files_follow_wans_preprocessing() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("Wan2.1-I2V-14B-480P");
    std::fs::create_dir_all(&orig).unwrap();
    let dit = original_layout(&orig);
    let mut r = request(ModelSource::Dir(orig.clone()));
    // official I2V defaults: 40 steps, shift 3 at the 480p area (5 above it), no ProRes
    let mut d = r.clone();
    d.sampling.steps = None;
    d.sampling.init_noise = None;
    d.video.height = None;
    d.video.width = None;
    d.policy.preset = Some("turbo".into());
    let p = prepare(&d).unwrap();
    assert_eq!(p.plan.spec.steps, 40);
    assert_eq!(p.plan.spec.stages.len(), 1, "ProRes off for I2V presets");
    assert_eq!(p.plan.spec.stages[0].shift, 3.0);
    assert_eq!(p.plan.spec.guidance, 5.0);
    // a 480P checkpoint by its name: the 480x832 area at the image's 5:8 aspect
    assert_eq!(p.plan.out_size, (5, 496, 784));
    // ProRes when asked for, at the I2V shift
    d.policy.res_rate_list = Some(vec![0.5, 1.0]);
    let p = prepare(&d).unwrap();
    let shifts: Vec<f64> = p.plan.spec.stages.iter().map(|s| s.shift).collect();
    assert_eq!(shifts, [3.0, 3.0]);
    r.sampling.shift = Some(3.0);
    r.sampling.solver = Some("unipc-diffusers".into());
    let (db, lat) = against(&r, "wan");
    assert!(db >= 40.0, "original layout: {db:.1} dB");
    assert!(lat <= 2e-3, "original layout: latent rel-L2 {lat:.2e}");

    // ComfyUI: the DiT file, the .pth files as they are, clip_vision_h in transformers names
    let mut s = request(ModelSource::Files(ModelFiles {
        dit,
        text_encoder: orig.join("models_t5_umt5-xxl-enc-bf16.pth"),
        vae: orig.join("Wan2.1_VAE.pth"),
        tokenizer: Some(orig.join("google/umt5-xxl")),
        clip_vision: Some(fixture("pipeline/image_encoder/model.safetensors")),
    }));
    s.sampling.shift = Some(3.0);
    s.sampling.solver = Some("unipc-diffusers".into());
    let (db, _) = against(&s, "wan");
    assert!(db >= 40.0, "single files: {db:.1} dB");
    // without the image encoder: one line saying what to pass
    if let ModelSource::Files(f) = &mut s.model {
        f.clip_vision = None;
    }
    let e = format!("{:#}", prepare(&s).err().unwrap());
    assert!(e.contains("--clip-vision"), "{e}");
}

#[test]
fn bad_images_are_one_clear_error_before_anything_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |r: &GenerateRequest| format!("{:#}", prepare(r).err().expect("accepted"));
    let mut r = request(ModelSource::Dir(pipeline(tmp.path())));
    // unreadable, not an image, an unsupported format, too small, too far from any aspect
    r.sampling.image = Some(tmp.path().join("missing.png"));
    let e = err(&r);
    assert!(e.contains("--image") && e.contains("missing.png"), "{e}");
    let txt = tmp.path().join("notes.png");
    std::fs::write(&txt, "not an image").unwrap();
    r.sampling.image = Some(txt);
    let e = err(&r);
    assert!(e.contains("not a PNG, JPEG or WebP"), "{e}");
    let gif = tmp.path().join("a.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    r.sampling.image = Some(gif);
    let e = err(&r);
    assert!(e.contains("Gif") && e.contains("PNG, JPEG and WebP"), "{e}");
    let write = |w: u32, h: u32| {
        let p = tmp.path().join(format!("{w}x{h}.png"));
        image::RgbImage::new(w, h).save(&p).unwrap();
        p
    };
    r.sampling.image = Some(write(8, 8));
    assert!(err(&r).contains("too small"));
    r.sampling.image = Some(write(400, 100));
    let e = err(&r);
    assert!(e.contains("4.00:1") && e.contains("3:1"), "{e}");
    // eval and the benches (the text-to-video sampling path) refuse an I2V model clearly
    r.sampling.image = Some(fixture("image.png"));
    let src = jenga_engine::Source::open(&r.model).unwrap();
    let e = format!("{:#}", jenga_engine::plan::plan(&r, &src).err().unwrap());
    assert!(e.contains("only `jenga generate --image FILE`"), "{e}");
    // no image for an image-to-video model; an image for a text-to-video one
    r.sampling.image = None;
    assert!(err(&r).contains("--image FILE"));
    let mut t = request(ModelSource::Dir(t2v_fixture("pipeline")));
    t.sampling.init_noise = None;
    let e = err(&t);
    assert!(e.contains("text-to-video"), "{e}");
}
