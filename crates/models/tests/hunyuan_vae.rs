//! The HunyuanVideo VAE decoder against diffusers' `AutoencoderKLHunyuanVideo` on the goldens
//! of `tools/make_hunyuan_vae_golden.py` (`tests/fixtures/hunyuan_vae/`: a small random VAE
//! saved with `save_pretrained`, decoder tensors kept, f32 CPU outputs).

use jenga_models::vae::hunyuan::{HunyuanVae, HunyuanVaeCodec, HunyuanVaeConfig, HunyuanVaeKeys};
use jenga_models::vae::wan::Tiling;
use jenga_models::{ModelError, RawTensor, SafetensorsWeights, Vae, WeightSource};
use jenga_tensor::CpuBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hunyuan_vae"
    ))
}

fn open(p: &Path) -> SafetensorsWeights {
    SafetensorsWeights::open(p).unwrap_or_else(|e| panic!("golden {} unreadable: {e}", p.display()))
}

fn weights() -> SafetensorsWeights {
    open(&fixtures().join("vae/diffusion_pytorch_model.safetensors"))
}

fn config() -> HunyuanVaeConfig {
    HunyuanVaeConfig::from_file(&fixtures().join("vae/config.json")).expect("golden config")
}

fn vae(src: &dyn WeightSource) -> HunyuanVae<CpuBackend> {
    HunyuanVae::load(&CpuBackend::new(), src, config()).expect("golden VAE loads")
}

/// The golden's spatial tiling (`tiling.json`: tiles of 32 pixels, 24 apart).
fn tiling() -> Tiling {
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiling.json")).expect("tiling.json"),
    )
    .expect("tiling.json is JSON");
    let get = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    Tiling {
        min_h: get("tile_sample_min_height"),
        min_w: get("tile_sample_min_width"),
        stride_h: get("tile_sample_stride_height"),
        stride_w: get("tile_sample_stride_width"),
    }
}

/// `(values, [C, F, H, W])` of a golden `[1, C, F, H, W]` tensor.
fn golden(src: &SafetensorsWeights, name: &str) -> (Vec<f32>, [usize; 4]) {
    let s = &src.entries()[name].shape;
    assert_eq!(s.len(), 5, "{name}: {s:?}");
    (src.load(name, s).expect(name), [s[1], s[2], s[3], s[4]])
}

/// The golden latent divided by the scaling factor (what diffusers' `vae.decode` was fed).
fn scaled(latent: &[f32], cfg: &HunyuanVaeConfig) -> Vec<f32> {
    latent.iter().map(|v| v / cfg.scaling_factor).collect()
}

/// `(max |a − b|, ‖a − b‖ / ‖b‖)`.
fn dist(ours: &[f32], theirs: &[f32]) -> (f32, f64) {
    assert_eq!(ours.len(), theirs.len(), "lengths");
    let (mut max, mut d2, mut n2) = (0f32, 0f64, 0f64);
    for (a, b) in ours.iter().zip(theirs) {
        max = max.max((a - b).abs());
        d2 += ((a - b) as f64).powi(2);
        n2 += (*b as f64).powi(2);
    }
    assert!(n2 > 0.0, "the golden is all zeros");
    (max, (d2 / n2).sqrt())
}

/// Asserts the relative L2 distance against `tol`.
fn check(what: &str, ours: &[f32], theirs: &[f32], tol: f64) {
    let (max, rel) = dist(ours, theirs);
    println!("{what}: max abs {max:.2e}, rel-L2 {rel:.2e}");
    assert!(rel <= tol, "{what}: rel-L2 {rel:.2e} > {tol:.0e}");
}

#[test]
fn decode_matches_diffusers() {
    let w = weights();
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let be = CpuBackend::new();
    let v = vae(&w);
    assert_eq!(v.keys, HunyuanVaeKeys::Diffusers);
    let (latent, shape) = golden(&g, "latent");
    let (want, out) = golden(&g, "video");
    let t = Instant::now();
    let f = v
        .decode_raw(&be, &scaled(&latent, &v.cfg), shape)
        .expect("decode");
    println!(
        "decode {shape:?} -> {:?}: {:.2} s on the CPU",
        f.shape,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(f.shape, out);
    assert_eq!(
        f.shape,
        [3, 1 + 4 * (shape[1] - 1), 8 * shape[2], 8 * shape[3]]
    );
    check("decode", &f.data, &want, 1e-4);

    // The Vae the pipeline sees: the DiT's latent (scaled inside), frames clamped to [-1, 1].
    let codec = HunyuanVaeCodec {
        be: Arc::new(CpuBackend::new()),
        vae: v,
    };
    let fr = codec.decode(&latent, shape).expect("codec decode");
    let clamped: Vec<f32> = want.iter().map(|x| x.clamp(-1.0, 1.0)).collect();
    check("codec decode (clamped)", &fr.data, &clamped, 1e-4);
}

/// Framewise decoding (diffusers' default: 5 latent frames > 16/4) with spatial tiling
/// (tiles of 4x4 latent pixels, 3 apart) against diffusers' `decode` with the same settings.
#[test]
fn tiled_decode_matches_diffusers() {
    let w = weights();
    let g = open(&fixtures().join("golden_tiled.safetensors"));
    let be = CpuBackend::new();
    let mut v = vae(&w);
    v.tiling = Some(tiling());
    assert!(v.frames.is_some(), "framewise decoding is on by default");
    let (latent, shape) = golden(&g, "latent");
    let (want, out) = golden(&g, "video_tiled");
    let f = v
        .decode_raw(&be, &scaled(&latent, &v.cfg), shape)
        .expect("tiled decode");
    assert_eq!(f.shape, out);
    check("tiled + framewise decode", &f.data, &want, 1e-4);

    // One pass over the same 5-frame latent (framewise decoding off, no tiling).
    let (untiled, _) = golden(&g, "video_untiled");
    v.tiling = None;
    v.frames = None;
    let u = v
        .decode_raw(&be, &scaled(&latent, &v.cfg), shape)
        .expect("untiled decode");
    check(
        "untiled decode (5 frames, one pass)",
        &u.data,
        &untiled,
        1e-4,
    );

    // The tiles are really in effect: on random weights (GroupNorm statistics per tile, no
    // smoothness) diffusers' own tiled decode is far from its untiled one, and so is ours.
    let (max, rel) = dist(&f.data, &u.data);
    println!("tiled vs untiled (ours): max abs {max:.2e}, rel-L2 {rel:.2e}");
    let (dmax, drel) = dist(&want, &untiled);
    println!("tiled vs untiled (diffusers): max abs {dmax:.2e}, rel-L2 {drel:.2e}");
    assert!(rel > 1e-2 && (rel - drel).abs() < 1e-3, "{rel} vs {drel}");
}

/// A source holding every tensor under `vae.` (a training checkpoint, which the official
/// `load_vae` strips the prefix of).
struct VaePrefixed<'a>(&'a SafetensorsWeights);

impl WeightSource for VaePrefixed<'_> {
    fn load(&self, name: &str, shape: &[usize]) -> jenga_models::Result<Vec<f32>> {
        self.raw(name, shape).map(|r| r.to_f32())
    }
    fn raw(&self, name: &str, expected: &[usize]) -> jenga_models::Result<RawTensor<'_>> {
        match name.strip_prefix("vae.") {
            Some(n) => self.0.raw(n, expected),
            None => Err(ModelError::Missing {
                name: name.into(),
                files: "the prefixed golden".into(),
            }),
        }
    }
    fn contains(&self, name: &str) -> bool {
        name.strip_prefix("vae.")
            .is_some_and(|n| self.0.contains(n))
    }
    fn describe(&self) -> String {
        "golden under vae.".into()
    }
}

#[test]
fn vae_prefixed_checkpoint_decodes_the_same() {
    let w = weights();
    let src = VaePrefixed(&w);
    let v = vae(&src);
    assert_eq!(v.keys, HunyuanVaeKeys::VaePrefix);
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let (latent, shape) = golden(&g, "latent");
    let (want, _) = golden(&g, "video");
    let f = v
        .decode_raw(&CpuBackend::new(), &scaled(&latent, &v.cfg), shape)
        .expect("decode");
    check("decode (vae.-prefixed keys)", &f.data, &want, 1e-4);
}

/// A source without one tensor.
struct Without<'a> {
    inner: &'a SafetensorsWeights,
    hidden: &'static str,
}

impl WeightSource for Without<'_> {
    fn load(&self, name: &str, shape: &[usize]) -> jenga_models::Result<Vec<f32>> {
        self.raw(name, shape).map(|r| r.to_f32())
    }
    fn raw(&self, name: &str, expected: &[usize]) -> jenga_models::Result<RawTensor<'_>> {
        if name == self.hidden {
            return Err(ModelError::Missing {
                name: name.into(),
                files: "the golden".into(),
            });
        }
        self.inner.raw(name, expected)
    }
    fn contains(&self, name: &str) -> bool {
        name != self.hidden && self.inner.contains(name)
    }
    fn describe(&self) -> String {
        "golden minus one tensor".into()
    }
}

#[test]
fn bad_input_one_clear_error() {
    let w = weights();
    let be = CpuBackend::new();
    // A missing tensor names it.
    let hidden = "decoder.mid_block.attentions.0.to_k.weight";
    let src = Without { inner: &w, hidden };
    let e = HunyuanVae::load(&be, &src, config())
        .err()
        .expect("a missing tensor fails")
        .to_string();
    assert!(e.contains(hidden), "{e}");
    let hidden = "decoder.up_blocks.3.resnets.0.conv_shortcut.conv.weight";
    let src = Without { inner: &w, hidden };
    let e = HunyuanVae::load(&be, &src, config())
        .err()
        .expect("a missing shortcut fails")
        .to_string();
    assert!(e.contains(hidden), "{e}");

    // A wrong shape names the tensor, the file and both shapes.
    let cfg = HunyuanVaeConfig {
        latent_channels: 8,
        ..config()
    };
    let e = HunyuanVae::load(&be, &w, cfg)
        .err()
        .expect("wrong widths fail")
        .to_string();
    assert!(
        e.contains("post_quant_conv.weight")
            && e.contains("diffusion_pytorch_model.safetensors")
            && e.contains("[16, 16, 1, 1, 1]")
            && e.contains("[8, 8, 1, 1, 1]"),
        "{e}"
    );

    let v = vae(&w);
    // Wrong latent channels; values that do not fill the shape.
    let e = v
        .decode_raw(&be, &vec![0.0; 4 * 2 * 4 * 4], [4, 2, 4, 4])
        .expect_err("4 channels");
    assert!(e.to_string().contains("4 channels"), "{e}");
    let e = v
        .decode_raw(&be, &[0.0; 10], [16, 2, 4, 4])
        .expect_err("10 values");
    assert!(e.to_string().contains("10 values"), "{e}");

    // A config this decoder does not implement is refused, naming the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("config.json");
    std::fs::write(&p, r#"{"temporal_compression_ratio": 8}"#).expect("write");
    let e = HunyuanVaeConfig::from_file(&p)
        .expect_err("8x time")
        .to_string();
    assert!(e.contains("config.json") && e.contains("temporal"), "{e}");
    std::fs::write(
        &p,
        r#"{"block_out_channels": [8, 16, 16, 30], "norm_num_groups": 4}"#,
    )
    .expect("write");
    let e = HunyuanVaeConfig::from_file(&p)
        .expect_err("groups")
        .to_string();
    assert!(e.contains("norm_num_groups"), "{e}");
}

/// The official config's field name (`time_compression_ratio`) and the real VAE's defaults.
#[test]
fn official_config_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("config.json");
    std::fs::write(
        &p,
        r#"{"_class_name": "AutoencoderKLCausal3D", "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 16, "norm_num_groups": 32,
            "time_compression_ratio": 4, "spatial_compression_ratio": 8,
            "up_block_types": ["UpDecoderBlockCausal3D", "UpDecoderBlockCausal3D",
                               "UpDecoderBlockCausal3D", "UpDecoderBlockCausal3D"]}"#,
    )
    .expect("write");
    let c = HunyuanVaeConfig::from_file(&p).expect("official config");
    assert_eq!(c.temporal_compression_ratio, 4);
    assert_eq!(c.scaling_factor, 0.476986);
    let d = HunyuanVaeConfig::default();
    assert_eq!(d.block_out_channels, [128, 256, 512, 512]);
    d.check().expect("the default config is the real one");
}

/// The backend's own `conv3d` (im2col) path gives the same decode as the default (taps).
#[test]
fn backend_conv_path_matches_diffusers() {
    use jenga_models::vae::wan::ConvPath;
    let w = weights();
    let be = CpuBackend::new();
    let v = HunyuanVae::load_with(&be, &w, config(), ConvPath::Backend).expect("loads");
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let (latent, shape) = golden(&g, "latent");
    let (want, _) = golden(&g, "video");
    let f = v
        .decode_raw(&be, &scaled(&latent, &v.cfg), shape)
        .expect("decode");
    check("decode (backend conv3d)", &f.data, &want, 1e-4);
}
