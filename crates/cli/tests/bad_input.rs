//! Every mistake a user can make ends in one clear `error:` line, a non-zero exit, no panic
//! and no output file.

mod common;
use common::jenga;
use std::path::{Path, PathBuf};

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/tiny-wan");

/// Runs `generate` with `extra` flags (tiny sizes so a mistake that slipped through would
/// still finish fast) and checks the failure shape; returns the error line.
fn fails(extra: &[&str], out: &Path) -> String {
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec![
        "generate",
        "--prompt",
        "a red circle moving right on a blue background",
        "--quiet",
    ];
    if !extra.contains(&"--steps") {
        args.extend(["--steps", "1"]);
    }
    if !extra.contains(&"--device") {
        args.extend(["--device", "cpu"]);
    }
    if !extra.contains(&"--out") {
        args.extend(["--out", out_s.as_str()]);
    }
    args.extend_from_slice(extra);
    let (ok, _, err) = jenga(&args);
    assert!(!ok, "expected failure for {extra:?}");
    assert!(!err.contains("panicked"), "panic for {extra:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "one line expected for {extra:?}, got: {err}"
    );
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!out.exists(), "output written despite error for {extra:?}");
    lines[0].to_string()
}

fn copy_model(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "text_encoder.safetensors",
        "vocab.json",
    ] {
        std::fs::copy(Path::new(ASSETS).join(f), m.join(f)).unwrap();
    }
    m
}

#[test]
fn bad_sizes_steps_and_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    assert!(fails(&["--height", "33"], &out).contains("--height 33"));
    assert!(fails(&["--width", "0"], &out).contains("--width 0"));
    assert!(fails(&["--steps", "0"], &out).contains("--steps"));
    let avi = tmp.path().join("v.avi");
    assert!(fails(&["--out", avi.to_str().unwrap()], &avi).contains("avi"));
    let nowhere = tmp.path().join("missing-dir/v.mp4");
    assert!(fails(&["--out", nowhere.to_str().unwrap()], &nowhere).contains("missing-dir"));
    assert!(fails(&["--device", "tpu"], &out).contains("--device tpu"));
}

#[test]
fn bad_model_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let e = fails(&["--model", "/definitely/not/here"], &out);
    assert!(e.contains("/definitely/not/here"), "{e}");

    // config without a required field
    let m = copy_model(tmp.path());
    let cfg = std::fs::read_to_string(m.join("config.json"))
        .unwrap()
        .replace("\"dim\": 256,", "");
    std::fs::write(m.join("config.json"), cfg).unwrap();
    let e = fails(&["--model", m.to_str().unwrap()], &out);
    assert!(e.contains("config.json") && e.contains("`dim`"), "{e}");

    // a config that disagrees with the weights: the tensor and file are named
    let cfg = std::fs::read_to_string(Path::new(ASSETS).join("config.json"))
        .unwrap()
        .replace("\"ffn_dim\": 1024", "\"ffn_dim\": 512");
    std::fs::write(m.join("config.json"), cfg).unwrap();
    let e = fails(&["--model", m.to_str().unwrap()], &out);
    assert!(
        e.contains("blocks.0.ffn.0")
            && e.contains("diffusion_pytorch_model.safetensors")
            && e.contains("[1024, 256]"),
        "{e}"
    );

    // truncated weights
    std::fs::copy(Path::new(ASSETS).join("config.json"), m.join("config.json")).unwrap();
    let w = m.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["--model", m.to_str().unwrap()], &out);
    assert!(
        e.contains("diffusion_pytorch_model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // garbage instead of a safetensors file
    std::fs::write(&w, b"not a safetensors file at all").unwrap();
    let e = fails(&["--model", m.to_str().unwrap()], &out);
    assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");
}

#[test]
fn generates_a_gif_with_the_embedded_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let (ok, _, err) = jenga(&[
        "generate",
        "--prompt",
        "a yellow square moving left on a black background",
        "--steps",
        "2",
        "--frames",
        "4",
        "--height",
        "16",
        "--width",
        "16",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("wrote"), "{err}");
    let data = std::fs::read(&out).unwrap();
    assert!(data.starts_with(b"GIF8"));
}

#[test]
fn bad_jenga_flags_fail_before_compute() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let f = |extra: &[&str]| fails(extra, &out);
    // lists of different lengths
    let e = f(&["--res-rate-list", "0.5", "1.0", "--step-rate-list", "1.0"]);
    assert!(e.contains("--step-rate-list"), "{e}");
    // rates outside (0, 1]
    assert!(f(&["--sa-drop-rates", "1.5"]).contains("--sa-drop-rates"));
    assert!(f(&["--p-remain-rates", "0"]).contains("--p-remain-rates"));
    assert!(f(&[
        "--res-rate-list",
        "1.5",
        "1.0",
        "--step-rate-list",
        "0.5",
        "1.0",
        "--scheduler-shift-list",
        "3",
        "5"
    ])
    .contains("--res-rate-list"));
    // a stage with no whole patch: 32 px × 0.03 < one 2-px patch. (Other fractional sizes
    // are rounded down to whole patches, as the reference does for Wan's 60×104 × 0.75.)
    // 10 steps, so every stage owns a step and the size check is the one that fails.
    let e = f(&[
        "--steps",
        "10",
        "--res-rate-list",
        "0.03",
        "1.0",
        "--step-rate-list",
        "0.5",
        "1.0",
        "--scheduler-shift-list",
        "3",
        "5",
    ]);
    assert!(e.contains("--res-rate-list"), "{e}");
    // decreasing step rates
    let e = f(&[
        "--res-rate-list",
        "0.5",
        "1.0",
        "--step-rate-list",
        "0.7",
        "0.5",
        "--scheduler-shift-list",
        "3",
        "5",
    ]);
    assert!(e.contains("--step-rate-list"), "{e}");
    // unknown names
    assert!(f(&["--preset", "warp"]).contains("--preset warp"));
    assert!(f(&["--skip", "sometimes"]).contains("--skip"));
    assert!(f(&["--policy", "jenga", "--curve", "zorder"]).contains("--curve"));
    assert!(f(&["--policy", "magic"]).contains("--policy"));
}
