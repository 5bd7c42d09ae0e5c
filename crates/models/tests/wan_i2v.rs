//! The Wan2.1 image-to-video DiT against diffusers' `WanTransformer3DModel` in its i2v
//! configuration (tests/fixtures/wan_i2v, made by tools/make_wan_i2v_golden.py): one forward
//! with the 36-channel input (noise + mask + image latent), the CLIP features through the image
//! embedder and the cross-attention's extra image keys/values, in both key namings.

use jenga_carve::{AttnCtx, Dense};
use jenga_models::{config_for_class, SafetensorsWeights, WanModel, WeightSource};
use jenga_tensor::{Backend, CpuBackend};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wan_i2v")
        .join(p)
}

#[path = "support/rel_l2.rs"]
mod rel_l2;
use rel_l2::rel_l2;

#[test]
fn i2v_forward_matches_diffusers_in_both_namings() {
    let cfg_path = fixture("transformer/config.json");
    let (_, _, cfg) =
        config_for_class(&cfg_path, &std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    assert!(cfg.is_i2v() && cfg.image_dim == Some(48) && cfg.in_dim == 36);
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    let be = CpuBackend::new();
    let x = be
        .upload(&g.load("x", &[1, 36, 3, 8, 8]).unwrap(), &[1, 36, 3, 8, 8])
        .unwrap();
    let text = be
        .upload(&g.load("text", &[1, 512, 64]).unwrap(), &[1, 512, 64])
        .unwrap();
    let clip = be
        .upload(&g.load("clip", &[1, 257, 48]).unwrap(), &[1, 257, 48])
        .unwrap();
    let t = g.load("t", &[1]).unwrap()[0] as f64;
    let want = g.load("v", &[1, 16, 3, 8, 8]).unwrap();
    let want_clip = g.load("clip_emb", &[1, 257, 32]).unwrap();
    for file in [
        "transformer/diffusion_pytorch_model.safetensors",
        "wan.safetensors",
    ] {
        let w = SafetensorsWeights::open(&fixture(file)).unwrap();
        assert_eq!(w.param_count(), Some(cfg.num_params()), "{file}");
        let model = WanModel::load(&be, &cfg, &w).unwrap();
        let ce = be
            .download(&model.embed_image(&be, &clip).unwrap())
            .unwrap();
        let e = rel_l2(&ce, &want_clip);
        assert!(e <= 1e-5, "{file}: image embedding rel-L2 {e:.2e}");
        let ctx = model.embed_context(&be, &text, Some(&clip)).unwrap();
        let geom = model.geometry(&be, (3, 4, 4), None).unwrap();
        let a = AttnCtx::one_forward((3, 4, 4), 2);
        let v = be
            .download(&model.forward(&be, &x, t, &ctx, &geom, &Dense, &a).unwrap())
            .unwrap();
        let e = rel_l2(&v, &want);
        println!("{file}: velocity rel-L2 {e:.2e}");
        assert!(e <= 1e-4, "{file}: velocity rel-L2 {e:.2e}");
        // without the image rows the velocity is another one (the image path is live)
        let text_only = model.embed_text(&be, &text).unwrap();
        let z = be.upload(&vec![0.0; 257 * 32], &[1, 257, 32]).unwrap();
        let zero_img = be.cat(&[&z, &text_only], 1).unwrap();
        let v0 = be
            .download(
                &model
                    .forward(&be, &x, t, &zero_img, &geom, &Dense, &a)
                    .unwrap(),
            )
            .unwrap();
        assert!(rel_l2(&v0, &want) > 1e-2);
        // a text-to-video context (no image rows) is refused, not misread
        let e = model
            .embed_context(&be, &text, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("CLIP"), "{e}");
    }
}

#[test]
fn the_i2v_denoiser_concatenates_its_condition_at_the_input() {
    use jenga_models::wan::{i2v_condition, WanI2v};
    use jenga_models::Denoiser;
    let cfg_path = fixture("transformer/config.json");
    let (_, _, cfg) =
        config_for_class(&cfg_path, &std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    let be = CpuBackend::new();
    let w = SafetensorsWeights::open(&fixture("wan.safetensors")).unwrap();
    let model = WanModel::load(&be, &cfg, &w).unwrap();
    let x = g.load("x", &[1, 36, 3, 8, 8]).unwrap();
    let n = 3 * 8 * 8;
    // the golden's input is [noise 16 | y 20]: the wrapper takes the noise and y apart
    let noise = be.upload(&x[..16 * n], &[1, 16, 3, 8, 8]).unwrap();
    let y = be.upload(&x[16 * n..], &[1, 20, 3, 8, 8]).unwrap();
    let d = WanI2v {
        model: &model,
        ys: vec![y],
    };
    let text = be
        .upload(&g.load("text", &[1, 512, 64]).unwrap(), &[1, 512, 64])
        .unwrap();
    let clip = be
        .upload(&g.load("clip", &[1, 257, 48]).unwrap(), &[1, 257, 48])
        .unwrap();
    let ctx = model.embed_context(&be, &text, Some(&clip)).unwrap();
    let t = g.load("t", &[1]).unwrap()[0] as f64;
    let geom = d.stage(&be, (3, 4, 4), None).unwrap();
    let a = AttnCtx::one_forward((3, 4, 4), 2);
    let step = d.embed(&be, &noise, t, &geom, &ctx).unwrap();
    let h = d.blocks(&be, &step, &ctx, &geom, &Dense, &a).unwrap();
    let v = be
        .download(&d.head(&be, &h, &step, &geom).unwrap())
        .unwrap();
    let e = rel_l2(&v, &g.load("v", &[1, 16, 3, 8, 8]).unwrap());
    assert!(e <= 1e-4, "rel-L2 {e:.2e}");
    assert_eq!(d.latent_channels(), 16);

    // the mask: 1 on every mask channel of the first latent frame, 0 after; the latent after it
    let lat: Vec<f32> = (0..16 * n).map(|i| i as f32).collect();
    let c = i2v_condition(&lat, [16, 3, 8, 8]).unwrap();
    assert_eq!(c.len(), 20 * n);
    for m in 0..4 {
        let ch = &c[m * n..(m + 1) * n];
        assert!(ch[..64].iter().all(|&v| v == 1.0) && ch[64..].iter().all(|&v| v == 0.0));
    }
    assert_eq!(&c[4 * n..], &lat[..]);
    assert!(i2v_condition(&lat[1..], [16, 3, 8, 8]).is_err());
}
