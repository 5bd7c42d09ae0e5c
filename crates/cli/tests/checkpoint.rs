//! `jenga generate` on real checkpoint layouts (the tiny random diffusers `WanPipeline` of
//! tests/fixtures/wan_pipeline): a video and the timing summary when the checkpoint is whole;
//! one `error:` line naming the file or flag, exit ≠ 0 and nothing written when it is not.

mod common;
use common::jenga;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/wan_pipeline"
);
const PROMPT: &str = "A red cat walks on the grass, realistic style.";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A writable copy of the fixture pipeline.
fn pipeline(tmp: &Path) -> PathBuf {
    let d = tmp.join("Wan2.1-T2V-tiny-Diffusers");
    copy_tree(&Path::new(FIXTURE).join("pipeline"), &d);
    d
}

/// `generate` with small defaults; a flag in `extra` replaces the default one.
fn args<'a>(model: &'a [&'a str], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["generate", "--prompt", PROMPT, "--quiet", "--out", out];
    for (flag, v) in [
        ("--device", "cpu"),
        ("--steps", "2"),
        ("--frames", "5"),
        ("--height", "32"),
        ("--width", "32"),
    ] {
        if !extra.contains(&flag) {
            a.extend([flag, v]);
        }
    }
    a.extend_from_slice(model);
    a.extend_from_slice(extra);
    a
}

/// The run fails with one `error:` line (returned) and writes nothing.
fn fails(a: &[&str], out: &Path) -> String {
    let (ok, _, err) = jenga(a);
    assert!(!ok, "expected failure for {a:?}");
    assert!(!err.contains("panicked"), "panic for {a:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected for {a:?}, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!out.exists(), "output written despite error for {a:?}");
    lines[0].to_string()
}

#[test]
fn a_diffusers_pipeline_generates_an_mp4_with_the_timing_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.mp4");
    let dir = Path::new(FIXTURE).join("pipeline");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = jenga(&args(&["--model", d], out.to_str().unwrap(), &[]));
    assert!(ok, "{err}");
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    // the header says what ran: the layout, pixel and latent sizes, the scheduler's shift
    assert!(
        err.contains("(diffusers pipeline)")
            && err.contains("5x32x32 (frames x h x w px; latent 2x4x4)")
            && err.contains("shift 3"),
        "{err}"
    );
    assert!(
        err.contains("text ")
            && err.contains("DiT ")
            && err.contains("VAE ")
            && err.contains("write "),
        "{err}"
    );
    // inspect describes every component
    let (ok, stdout, err) = jenga(&["inspect", "--model", d]);
    assert!(ok, "{err}");
    for part in [
        "layout: diffusers pipeline",
        "transformer:",
        "text encoder:",
        "tokenizer:",
        "vae:",
    ] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
}

#[test]
fn broken_checkpoints_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.mp4");
    let o = out.to_str().unwrap();

    // a component missing: the folder is named
    let d = pipeline(tmp.path());
    std::fs::remove_dir_all(d.join("vae")).unwrap();
    let ds = d.to_str().unwrap().to_string();
    let e = fails(&args(&["--model", &ds], o, &[]), &out);
    assert!(e.contains("vae") && e.contains("not found"), "{e}");

    // the tokenizer missing
    let d = tmp.path().join("no-tokenizer");
    copy_tree(&Path::new(FIXTURE).join("pipeline"), &d);
    std::fs::remove_file(d.join("tokenizer/tokenizer.json")).unwrap();
    let ds = d.to_str().unwrap().to_string();
    let e = fails(&args(&["--model", &ds], o, &[]), &out);
    assert!(e.contains("tokenizer.json"), "{e}");

    // sizes the VAE cannot take, and --init-noise of the wrong shape
    let whole = Path::new(FIXTURE).join("pipeline");
    let w = whole.to_str().unwrap();
    let e = fails(&args(&["--model", w], o, &["--frames", "8"]), &out);
    assert!(e.contains("--frames 8") && e.contains("1 + 4k"), "{e}");
    let e = fails(&args(&["--model", w], o, &["--width", "40"]), &out);
    assert!(
        e.contains("--width 40") && e.contains("multiple of 16"),
        "{e}"
    );
    let noise = Path::new(FIXTURE).join("init_noise.safetensors");
    let e = fails(
        &args(
            &["--model", w],
            o,
            &["--init-noise", noise.to_str().unwrap()],
        ),
        &out,
    );
    assert!(
        e.contains("--init-noise") && e.contains("[16, 3, 8, 8]") && e.contains("[16, 2, 4, 4]"),
        "{e}"
    );

    // --image: for a text-to-video checkpoint, unreadable, not an image
    let img = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/wan_i2v_pipeline/image.png"
    );
    let e = fails(&args(&["--model", w], o, &["--image", img]), &out);
    assert!(e.contains("--image") && e.contains("text-to-video"), "{e}");
    let bad = tmp.path().join("photo.jpg");
    std::fs::write(&bad, "not a jpeg").unwrap();
    let i2v = tmp.path().join("Wan2.1-I2V-tiny-Diffusers");
    copy_tree(
        &Path::new(FIXTURE).join("../wan_i2v_pipeline/pipeline"),
        &i2v,
    );
    for sub in ["text_encoder", "vae"] {
        copy_tree(&whole.join(sub), &i2v.join(sub));
    }
    let i2 = i2v.to_str().unwrap();
    let e = fails(
        &args(&["--model", i2], o, &["--image", bad.to_str().unwrap()]),
        &out,
    );
    assert!(
        e.contains("photo.jpg") && e.contains("not a PNG, JPEG or WebP"),
        "{e}"
    );
    let e = fails(&args(&["--model", i2], o, &[]), &out);
    assert!(e.contains("--image FILE"), "{e}");
}

#[test]
fn broken_original_and_single_file_checkpoints_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.mp4");
    let o = out.to_str().unwrap();
    let orig = Path::new(FIXTURE).join("original");

    // the original layout without its VAE: the missing file is named
    let d = tmp.path().join("Wan2.1-T2V-1.3B");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        orig.join("models_t5_umt5-xxl-enc-bf16.pth"),
        d.join("models_t5_umt5-xxl-enc-bf16.pth"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("pipeline/transformer/config.json"),
        d.join("config.json"),
    )
    .unwrap();
    let ds = d.to_str().unwrap().to_string();
    let e = fails(&args(&["--model", &ds], o, &[]), &out);
    assert!(
        e.contains("Wan2.1_VAE.pth") && e.contains("not found"),
        "{e}"
    );

    // a .pth that is not a torch archive
    let bad = tmp.path().join("Wan2.1_VAE.pth");
    std::fs::write(&bad, b"this is not a torch archive").unwrap();
    let dit = Path::new(FIXTURE).join("pipeline/transformer/diffusion_pytorch_model.safetensors");
    let te = orig.join("models_t5_umt5-xxl-enc-bf16.pth");
    let tok = Path::new(FIXTURE).join("pipeline/tokenizer");
    let files = |vae: &Path, text: &Path| -> Vec<String> {
        vec![
            "--dit".into(),
            dit.to_str().unwrap().into(),
            "--text-encoder".into(),
            text.to_str().unwrap().into(),
            "--vae".into(),
            vae.to_str().unwrap().into(),
            "--tokenizer".into(),
            tok.to_str().unwrap().into(),
        ]
    };
    let f = files(&bad, &te);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let e = fails(&args(&f, o, &[]), &out);
    assert!(e.contains("Wan2.1_VAE.pth"), "{e}");

    // an fp8 text encoder without its scales
    let fp8 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pth/fp8_no_scales.safetensors");
    let f = files(&orig.join("Wan2.1_VAE.pth"), &fp8);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let e = fails(&args(&f, o, &[]), &out);
    assert!(e.contains("fp8_no_scales.safetensors"), "{e}");

    // single files need all four flags
    let e = fails(&args(&["--dit", dit.to_str().unwrap()], o, &[]), &out);
    assert!(e.contains("--text-encoder missing"), "{e}");
}
