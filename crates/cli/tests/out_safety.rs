//! `jenga generate --out` never loses a user's files: refusals come before any compute, leave
//! everything as it was, and name the path once.

use std::path::Path;
use std::process::Command;

/// `jenga generate … --out OUT` run in `cwd`: (success, stderr).
fn generate(cwd: &Path, out: &str) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_jenga"))
        .current_dir(cwd)
        .args([
            "generate",
            "--prompt",
            "a red circle moving right on a blue background",
            "--steps",
            "1",
            "--frames",
            "4",
            "--height",
            "16",
            "--width",
            "16",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            out,
        ])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn refused(err: &str) {
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn out_dir_holding_a_users_file_is_refused_and_the_file_kept() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("results");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("thesis.txt"), b"chapter 1").unwrap();
    let (ok, err) = generate(t.path(), "results");
    assert!(!ok);
    refused(&err);
    assert!(
        err.contains("--out results") && err.contains("thesis.txt"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("thesis.txt")).unwrap(), b"chapter 1");
    assert_eq!(names(&d), ["thesis.txt"]);
    assert_eq!(names(t.path()), ["results"]);
}

#[test]
fn out_dot_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("notes.md"), b"keep").unwrap();
    for out in [".", "./", ".."] {
        let (ok, err) = generate(t.path(), out);
        assert!(!ok, "{out}");
        refused(&err);
        assert!(err.contains("refusing"), "{err}");
    }
    assert_eq!(names(t.path()), ["notes.md"]);
}

#[test]
fn out_existing_file_without_extension_is_refused_and_nothing_left() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("Makefile"), b"all:\n\tcargo build\n").unwrap();
    let (ok, err) = generate(t.path(), "Makefile");
    assert!(!ok);
    refused(&err);
    assert!(
        err.contains("--out Makefile") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(names(t.path()), ["Makefile"], "no .Makefile.partial-* left");
    assert_eq!(
        std::fs::read(t.path().join("Makefile")).unwrap(),
        b"all:\n\tcargo build\n"
    );
}

#[test]
fn out_frames_dir_is_written_then_replaced_by_the_next_run() {
    let t = tempfile::tempdir().unwrap();
    let (ok, err) = generate(t.path(), "frames");
    assert!(ok, "{err}");
    assert_eq!(names(&t.path().join("frames")).len(), 4);
    let (ok, err) = generate(t.path(), "frames/");
    assert!(ok, "an earlier run's frames are replaced: {err}");
    assert_eq!(names(&t.path().join("frames")).len(), 4);
    assert_eq!(names(t.path()), ["frames"]);
}

#[test]
fn out_errors_name_the_path_and_os_error_once() {
    let t = tempfile::tempdir().unwrap();
    let (ok, err) = generate(t.path(), "foo.avi");
    assert!(!ok);
    refused(&err);
    assert_eq!(err.matches("foo.avi").count(), 1, "{err}");
    let (ok, err) = generate(t.path(), "missing-dir/v.mp4");
    assert!(!ok);
    refused(&err);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert_eq!(
        err.matches("missing-dir").count(),
        2,
        "flag + directory: {err}"
    );
    assert!(names(t.path()).is_empty());
}
