//! The Wan2.1 VAE against diffusers' `AutoencoderKLWan` on the goldens of
//! `tools/make_wan_vae_golden.py` (`tests/fixtures/wan_vae/`: a small random VAE saved with
//! `save_pretrained`, the same weights in the original Wan naming, f32 CPU outputs).

use jenga_models::vae::wan::{ConvPath, Tiling, WanVae, WanVaeCodec, WanVaeConfig, WanVaeKeys};
use jenga_models::{Frames, ModelError, RawTensor, SafetensorsWeights, Vae, WeightSource};
use jenga_tensor::CpuBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/wan_vae"
    ))
}

fn open(p: &Path) -> SafetensorsWeights {
    SafetensorsWeights::open(p).unwrap_or_else(|e| panic!("golden {} unreadable: {e}", p.display()))
}

fn config() -> WanVaeConfig {
    WanVaeConfig::from_file(&fixtures().join("diffusers/config.json")).expect("golden config")
}

fn vae(src: &dyn WeightSource) -> WanVae<CpuBackend> {
    WanVae::load(&CpuBackend::new(), src, config()).expect("golden VAE loads")
}

/// The [`Vae`] the pipeline sees.
fn codec(src: &dyn WeightSource) -> WanVaeCodec<CpuBackend> {
    WanVaeCodec {
        be: Arc::new(CpuBackend::new()),
        vae: vae(src),
    }
}

/// The golden's tiling (`tiling.json`: tiles of 48 pixels, 32 apart).
fn tiling() -> Tiling {
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiling.json")).expect("tiling.json"),
    )
    .expect("tiling.json is JSON");
    let (m, s) = (
        t["tile_sample_min"].as_u64().expect("min") as usize,
        t["tile_sample_stride"].as_u64().expect("stride") as usize,
    );
    Tiling {
        min_h: m,
        min_w: m,
        stride_h: s,
        stride_w: s,
    }
}

/// `(values, [C, F, H, W])` of a golden `[1, C, F, H, W]` tensor.
fn golden(src: &SafetensorsWeights, name: &str) -> (Vec<f32>, [usize; 4]) {
    let s = &src.entries()[name].shape;
    assert_eq!(s.len(), 5, "{name}: {s:?}");
    (src.load(name, s).expect(name), [s[1], s[2], s[3], s[4]])
}

/// Asserts max |a − b| and ‖a − b‖ / ‖b‖ against `tol`.
fn check(what: &str, ours: &[f32], theirs: &[f32], tol: f32) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let (mut max, mut d2, mut n2) = (0f32, 0f64, 0f64);
    for (a, b) in ours.iter().zip(theirs) {
        max = max.max((a - b).abs());
        d2 += ((a - b) as f64).powi(2);
        n2 += (*b as f64).powi(2);
    }
    let rel = (d2 / n2.max(1e-30)).sqrt();
    println!("{what}: max abs {max:.2e}, rel-L2 {rel:.2e}");
    assert!(n2 > 0.0, "{what}: the golden is all zeros");
    assert!(
        max <= tol && rel <= tol as f64,
        "{what}: max abs {max:.2e}, rel-L2 {rel:.2e} > {tol:.0e}"
    );
}

#[test]
fn decode_matches_diffusers() {
    let w = open(&fixtures().join("diffusers/diffusion_pytorch_model.safetensors"));
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let v = codec(&w);
    assert!(matches!(v.vae.keys, WanVaeKeys::Diffusers { per_level: 4 }));
    let (z_norm, shape) = golden(&g, "z_norm");
    let (want, out) = golden(&g, "decoded");
    let t = Instant::now();
    let f = v.decode(&z_norm, shape).expect("decode");
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
    check(
        "decode (normalised latent, as WanPipeline)",
        &f.data,
        &want,
        1e-4,
    );
}

#[test]
fn original_naming_decodes_the_same() {
    let w = open(&fixtures().join("original.safetensors"));
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let v = vae(&w);
    assert_eq!(v.keys, WanVaeKeys::Original);
    let (z, shape) = golden(&g, "z");
    let (want, _) = golden(&g, "decoded");
    let f = v.decode_raw(&CpuBackend::new(), &z, shape).expect("decode");
    check("decode (original naming)", &f.data, &want, 1e-4);
}

#[test]
fn tiled_decode_matches_diffusers() {
    let w = open(&fixtures().join("diffusers/diffusion_pytorch_model.safetensors"));
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let mut v = vae(&w);
    v.tiling = Some(tiling());
    let (z, shape) = golden(&g, "z");
    let (want, _) = golden(&g, "decoded_tiled");
    let (plain, _) = golden(&g, "decoded");
    let f = v
        .decode_raw(&CpuBackend::new(), &z, shape)
        .expect("tiled decode");
    check("tiled decode", &f.data, &want, 1e-4);
    // The tiles really are blended (else this golden would not test the tiling).
    let diff = f
        .data
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-2, "tiled = untiled ({diff})");
}

#[test]
fn encode_matches_diffusers() {
    let w = open(&fixtures().join("original.safetensors"));
    let g = open(&fixtures().join("golden_encode.safetensors"));
    let v = codec(&w);
    let (video, shape) = golden(&g, "video");
    let (mean, mshape) = golden(&g, "mean");
    let (norm, _) = golden(&g, "mean_norm");
    let m = v.vae.encode_raw(&v.be, &video, shape).expect("encode");
    assert_eq!(m.shape, mshape);
    check("encode (posterior mean)", &m.data, &mean, 1e-4);
    let frames = Frames { data: video, shape };
    let (n, ns) = v
        .encode(&frames)
        .expect("the Wan VAE encodes")
        .expect("encode");
    assert_eq!(ns, mshape);
    check("encode (normalised)", &n, &norm, 1e-4);
}

#[test]
fn tiled_encode_matches_diffusers() {
    let w = open(&fixtures().join("diffusers/diffusion_pytorch_model.safetensors"));
    let g = open(&fixtures().join("golden_encode.safetensors"));
    let mut v = vae(&w);
    v.tiling = Some(tiling());
    let (video, shape) = golden(&g, "video");
    let (want, _) = golden(&g, "mean_tiled");
    let m = v
        .encode_raw(&CpuBackend::new(), &video, shape)
        .expect("tiled encode");
    check("tiled encode", &m.data, &want, 1e-4);
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
    let w = open(&fixtures().join("diffusers/diffusion_pytorch_model.safetensors"));
    // A missing tensor names it, in the checkpoint's naming and the original.
    let hidden = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight";
    let src = Without { inner: &w, hidden };
    let e = WanVae::load(&CpuBackend::new(), &src, config())
        .err()
        .expect("a missing tensor fails")
        .to_string();
    assert!(e.contains(hidden), "{e}");
    assert!(e.contains("decoder.upsamples.4.shortcut.weight"), "{e}");

    let v = codec(&w);
    // Wrong latent channels.
    let e = v
        .decode(&vec![0.0; 4 * 2 * 8 * 8], [4, 2, 8, 8])
        .expect_err("4 channels");
    assert!(e.to_string().contains("4 channels"), "{e}");
    // Values that do not fill the shape.
    let e = v.decode(&[0.0; 10], [16, 2, 8, 8]).expect_err("10 values");
    assert!(e.to_string().contains("10 values"), "{e}");
    // Frames that are not 1 + 4k.
    let frames = Frames {
        data: vec![0.0; 3 * 8 * 16 * 16],
        shape: [3, 8, 16, 16],
    };
    let e = v.encode(&frames).expect("encodes").expect_err("8 frames");
    assert!(e.to_string().contains("1 + 4k"), "{e}");

    // A Wan2.2 config is refused, naming the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("config.json");
    std::fs::write(&p, r#"{"is_residual": true, "z_dim": 48}"#).expect("write");
    let e = WanVaeConfig::from_file(&p).expect_err("Wan2.2").to_string();
    assert!(e.contains("config.json") && e.contains("Wan2.2"), "{e}");
}

/// The device-side conv path (GEMMs over kernel taps, what CUDA runs) on the same goldens.
#[test]
fn taps_conv_path_matches_diffusers() {
    let w = open(&fixtures().join("diffusers/diffusion_pytorch_model.safetensors"));
    let be = CpuBackend::new();
    let v = WanVae::load_with(&be, &w, config(), ConvPath::Taps).expect("loads");
    let g = open(&fixtures().join("golden_decode.safetensors"));
    let (z, shape) = golden(&g, "z");
    let (want, _) = golden(&g, "decoded");
    let t = Instant::now();
    let f = v.decode_raw(&be, &z, shape).expect("decode");
    println!(
        "decode (taps) {:.2} s on the CPU",
        t.elapsed().as_secs_f64()
    );
    check("decode (taps conv)", &f.data, &want, 1e-4);
    let g = open(&fixtures().join("golden_encode.safetensors"));
    let (video, vshape) = golden(&g, "video");
    let (mean, _) = golden(&g, "mean");
    let m = v.encode_raw(&be, &video, vshape).expect("encode");
    check("encode (taps conv)", &m.data, &mean, 1e-4);
}
