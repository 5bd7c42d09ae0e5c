//! `jenga generate --ranks N` writes the one-device video byte for byte and says how it ran;
//! parallel flags a run cannot take fail with one line before any output is written.

use std::path::Path;
use std::process::Command;

const PROMPT: &str = "a red circle moving right on a blue background";

/// `jenga generate` with `extra` flags into `out`: (success, stderr).
fn generate(out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_jenga"))
        .args([
            "generate", "--prompt", PROMPT, "--steps", "4", "--device", "cpu",
        ])
        .args(["--quiet", "--out"])
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
fn ranks_as_threads_write_the_same_gif() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.gif");
    let (ok, err) = generate(&one, &[]);
    assert!(ok, "{err}");
    for flags in [
        &["--ranks", "2"][..],
        &["--ranks", "2", "--ulysses", "2", "--cfg-parallel", "false"][..],
    ] {
        let two = dir.path().join("two.gif");
        let (ok, err) = generate(&two, flags);
        assert!(ok, "{flags:?}: {err}");
        assert!(err.contains("on 2 ranks"), "{flags:?}: {err}");
        assert_eq!(
            std::fs::read(&one).unwrap(),
            std::fs::read(&two).unwrap(),
            "{flags:?}"
        );
    }
}

#[test]
fn parallel_flags_that_cannot_run_fail_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gif");
    for (flags, want) in [
        (&["--ranks", "2", "--ulysses", "4"][..], "has 4 ranks"),
        (&["--ulysses", "4"][..], "heads"),
        (&["--gpus", "2"][..], "--device cuda"),
        (&["--gpus", "2", "--ranks", "2"][..], "cannot be used with"),
        (
            &["--ranks", "2", "--cfg-parallel", "--guidance", "1"][..],
            "guidance",
        ),
    ] {
        let (ok, err) = generate(&out, flags);
        assert!(!ok, "{flags:?} succeeded");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?} wrote {}", out.display());
    }
}

#[test]
fn gpus_without_a_gpu_is_one_clear_line() {
    if Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: a GPU driver is present");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gif");
    // `--device cpu` is refused on its own; auto without a driver says there is none
    let o = Command::new(env!("CARGO_BIN_EXE_jenga"))
        .args([
            "generate", "--prompt", PROMPT, "--steps", "2", "--gpus", "2",
        ])
        .args(["--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("no CUDA driver"), "{err}");
    assert!(!out.exists());
}
