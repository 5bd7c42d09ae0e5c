//! `jenga generate --model DIR` on a HunyuanVideo directory (diffusers layout, assembled from
//! the reduced-width fixtures: their Llama-3 / CLIP-L towers, VAE and transformer): a video
//! with the timing split, dense and with the official flash preset (ProRes + static skip, the
//! gilbert curve); a directory missing a component, and flags it cannot take, are one line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A HunyuanVideo pipeline directory in `dir`.
fn pipeline(dir: &Path) {
    let f = fixtures();
    for (src, name) in [
        ("hunyuan_pipeline/transformer", "transformer"),
        ("hunyuan_pipeline/scheduler", "scheduler"),
        ("hunyuan_text/text_encoder", "text_encoder"),
        ("hunyuan_text/text_encoder_2", "text_encoder_2"),
        ("hunyuan_text/tokenizer", "tokenizer"),
        ("hunyuan_text/tokenizer_2", "tokenizer_2"),
        ("hunyuan_vae/vae", "vae"),
    ] {
        copy_dir(&f.join(src), &dir.join(name));
    }
    std::fs::write(
        dir.join("model_index.json"),
        r#"{"_class_name": "HunyuanVideoPipeline"}"#,
    )
    .unwrap();
}

fn generate(model: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_jenga"))
        .args([
            "generate",
            "--prompt",
            "A cat walks on the grass, realistic style.",
        ])
        .arg("--model")
        .arg(model)
        .args(["--device", "cpu", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_hunyuan_video_directory_generates_a_video() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("HunyuanVideo-tiny");
    pipeline(&model);
    let out = tmp.path().join("a.gif");
    let size = [
        "--frames", "9", "--height", "128", "--width", "128", "--steps", "8",
    ];
    let (ok, err) = generate(&model, &out, &size);
    assert!(ok, "{err}");
    assert!(
        err.contains("HunyuanVideo") && err.contains("embedded guidance 6"),
        "{err}"
    );
    assert!(err.contains("shift 7") && err.contains("euler"), "{err}");
    assert!(
        err.contains("wrote") && err.contains("9 frames, 128x128 px"),
        "{err}"
    );
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    let out2 = tmp.path().join("b.gif");
    let mut flash = size.to_vec();
    flash.extend(["--preset", "flash"]);
    let (ok, err) = generate(&model, &out2, &flash);
    assert!(ok, "{err}");
    assert!(
        err.contains("hyvideo_jenga_flash.sh") && err.contains("gilbert3d"),
        "{err}"
    );
    assert!(err.contains("7 of 8 steps computed"), "{err}");
    assert_ne!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    // two ranks (Ulysses over the video tokens, the text whole on each): the same video, at a
    // size whose first ProRes stage still gives each rank a block of tokens
    let tall = [
        "--frames", "9", "--height", "256", "--width", "128", "--steps", "8",
    ];
    let mut one = tall.to_vec();
    one.extend(["--preset", "flash"]);
    let mut two = one.clone();
    two.extend(["--ranks", "2"]);
    let (c, d) = (tmp.path().join("c.gif"), tmp.path().join("d.gif"));
    let (ok, err) = generate(&model, &c, &one);
    assert!(ok, "{err}");
    let (ok, err) = generate(&model, &d, &two);
    assert!(
        ok && err.contains("on 2 ranks: cfg 1 × ring 1 × ulysses 2"),
        "{err}"
    );
    assert_eq!(std::fs::read(&c).unwrap(), std::fs::read(&d).unwrap());
    // what the preset will do, from the same directory, before running it
    let o = Command::new(env!("CARGO_BIN_EXE_jenga"))
        .args(["inspect", "schedule", "--preset", "flash"])
        .args([
            "--steps", "8", "--frames", "9", "--height", "128", "--width", "128",
        ])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(
        lines[1], "0\t0\t3x6x6\t1000\t1.000000\t1\t0.8\t0.5",
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.split('\t').nth(5) == Some("1"))
            .count(),
        7
    );
}

/// The official `ckpts/` tree of the same model: the transformer and VAE as torch archives in
/// hyvideo's names, the text towers with their tokenizers inside.
fn official(dir: &Path) {
    let f = fixtures();
    let ck = f.join("hunyuan_pipeline/official/hunyuan-video-t2v-720p");
    copy_dir(
        &ck.join("transformers"),
        &dir.join("hunyuan-video-t2v-720p/transformers"),
    );
    copy_dir(&ck.join("vae"), &dir.join("hunyuan-video-t2v-720p/vae"));
    copy_dir(
        &f.join("hunyuan_text/text_encoder"),
        &dir.join("text_encoder"),
    );
    copy_dir(&f.join("hunyuan_text/tokenizer"), &dir.join("text_encoder"));
    copy_dir(
        &f.join("hunyuan_text/text_encoder_2"),
        &dir.join("text_encoder_2"),
    );
    copy_dir(
        &f.join("hunyuan_text/tokenizer_2"),
        &dir.join("text_encoder_2"),
    );
}

#[test]
fn the_official_ckpts_tree_gives_the_same_video() {
    let tmp = tempfile::tempdir().unwrap();
    let (diff, off) = (tmp.path().join("diffusers"), tmp.path().join("ckpts"));
    pipeline(&diff);
    official(&off);
    let size = [
        "--frames", "5", "--height", "64", "--width", "64", "--steps", "4",
    ];
    let (a, b) = (tmp.path().join("a.gif"), tmp.path().join("b.gif"));
    let (ok, err) = generate(&diff, &a, &size);
    assert!(ok, "{err}");
    // the official tree has no scheduler config: the official shift (7) is the same
    let (ok, err) = generate(&off, &b, &size);
    assert!(ok, "{err}");
    assert!(err.contains("official ckpts"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_broken_directory_or_a_flag_it_cannot_take_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("hy");
    pipeline(&model);
    let out = tmp.path().join("x.gif");
    for (flags, want) in [
        (&["--ranks", "2", "--ring", "2"][..], "--ulysses only"),
        (&["--image", "nope.png"][..], "--image"),
        (&["--frames", "8"][..], "frames"),
    ] {
        let (ok, err) = generate(&model, &out, flags);
        assert!(!ok && err.contains(want), "{flags:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{err}"
        );
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(model.join("vae")).unwrap();
    let (ok, err) = generate(&model, &out, &[]);
    assert!(!ok && err.contains("vae/"), "{err}");
    assert!(!out.exists());
}
