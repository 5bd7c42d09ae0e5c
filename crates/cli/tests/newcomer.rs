//! What a newcomer saw on a fresh clone (issue 12): oversized runs, prompts that lie, silent
//! nonsense and muddled messages. Each test failed on the code before the fix.

mod common;
use common::jenga;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PROMPT: &str = "a red circle moving right on a blue background";
const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/tiny-wan");

/// `jenga ARGS` must fail with exactly one `error:` line, no panic, nothing at `out`.
fn one_error_line(args: &[&str], out: &Path) -> String {
    let (ok, _, err) = jenga(args);
    assert!(!ok, "expected failure for {args:?}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: "))
        .collect();
    assert_eq!(lines.len(), 1, "one line expected for {args:?}, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!out.exists(), "output written despite error for {args:?}");
    lines[0].to_string()
}

fn gen_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["generate", "--prompt", PROMPT, "--quiet", "--device", "cpu"];
    a.extend(["--out", out]);
    a.extend_from_slice(extra);
    a
}

#[test]
fn out_of_range_numbers_get_the_range_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let o = out.to_str().unwrap();
    for (flag, v, want) in [
        ("--steps", "-3", "must be in 1..=1000"),
        ("--steps", "1000000000000", "must be in 1..=1000"),
        ("--guidance", "-1", "must be a number in 0..=100"),
        ("--upscale", "0", "must be in 1..=32"),
        ("--upscale", "4096", "must be in 1..=32"),
        ("--fps", "0", "must be in 1..=240"),
        ("--shift", "-2", "must be a number in (0, 1000]"),
        ("--frames", "-8", "must be a positive whole number"),
    ] {
        let e = one_error_line(&gen_args(o, &[flag, v]), &out);
        assert!(e.contains(flag) && e.contains(want), "{flag} {v}: {e}");
    }
}

#[test]
fn oversized_runs_are_refused_before_any_compute() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let o = out.to_str().unwrap();
    let t = Instant::now();
    let e = one_error_line(
        &gen_args(
            o,
            &["--frames", "400", "--height", "1024", "--width", "1024"],
        ),
        &out,
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        e.contains("this run needs about") && e.contains("GiB") && e.contains("available RAM is"),
        "{e}"
    );
}

#[test]
fn prompts_say_what_really_happens() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let o = out.to_str().unwrap();
    let run = |prompt: &str| -> String {
        let mut a = vec!["generate", "--prompt", prompt, "--quiet", "--device", "cpu"];
        a.extend([
            "--out",
            o,
            "--steps",
            "1",
            "--frames",
            "1",
            "--guidance",
            "1",
        ]);
        let (ok, _, err) = jenga(&a);
        assert!(ok, "{err}");
        err
    };
    let err = run("a big red circle moving right on a blue background");
    assert!(
        err.contains("note: words not in the vocabulary are left out of the encoding: big"),
        "{err}"
    );
    assert!(!err.contains("ignored"), "{err}");
    let err = run("a teal circle moving right on a blue background");
    assert!(err.contains("\"teal\" is not a shape colour"), "{err}");
    let err = run("");
    assert!(err.contains("note: empty prompt"), "{err}");
    let err = run(PROMPT);
    assert!(
        !err.contains("note: words") && !err.contains("empty prompt"),
        "{err}"
    );
}

#[test]
fn a_schedule_that_computes_too_few_steps_is_flagged_with_the_real_count() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.gif");
    let o = out.to_str().unwrap();
    let (ok, _, err) = jenga(&gen_args(
        o,
        // (TeaCache computes its first 5 steps, as the official --use_ret_step: too many here)
        &[
            "--preset",
            "base",
            "--skip",
            "static",
            "--skip-keep",
            "5",
            "--steps",
            "10",
            "--frames",
            "2",
        ],
    ));
    assert!(ok, "{err}");
    let computed = err
        .lines()
        .find(|l| l.starts_with("wrote "))
        .and_then(|l| l.split("DiT ").nth(1))
        .and_then(|l| l.split(" (").nth(1))
        .and_then(|l| l.split(" of").next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no computed count in: {err}"));
    assert!(computed < 5, "{err}");
    assert!(
        err.contains(&format!(
            "warning: only {computed} of 10 steps run the transformer"
        )),
        "{err}"
    );
    // turbo-15's static schedule: the settings line counts the stage-start steps too, as run
    let (ok, _, err) = jenga(&gen_args(o, &["--preset", "turbo-15", "--frames", "2"]));
    assert!(ok, "{err}");
    let settings = err
        .lines()
        .find(|l| l.starts_with("jenga settings"))
        .unwrap();
    let done = err.lines().find(|l| l.starts_with("wrote ")).unwrap();
    let n = settings
        .split("static (")
        .nth(1)
        .and_then(|s| s.split(" of").next())
        .unwrap();
    assert!(
        done.contains(&format!("({n} of 30 steps computed")),
        "{settings}\n{done}"
    );
}

fn copy_model(dir: &Path, files: &[&str]) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in files {
        std::fs::copy(Path::new(ASSETS).join(f), m.join(f)).unwrap();
    }
    m
}

#[test]
fn a_missing_text_encoder_is_found_before_the_weights_load() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_model(
        tmp.path(),
        &["config.json", "diffusion_pytorch_model.safetensors"],
    );
    let out = tmp.path().join("v.gif");
    let e = one_error_line(
        &gen_args(
            out.to_str().unwrap(),
            &["--model", m.to_str().unwrap(), "--steps", "1"],
        ),
        &out,
    );
    assert!(e.contains("no text encoder"), "{e}");
}

#[test]
fn eval_checks_its_paths_first_and_takes_only_its_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir/r.md");
    let args = [
        "eval",
        "--prompt",
        PROMPT,
        "--presets",
        "base",
        "--device",
        "cpu",
    ];
    let t = Instant::now();
    let mut a = args.to_vec();
    a.extend(["--report", missing.to_str().unwrap()]);
    let e = one_error_line(&a, &missing);
    assert!(e.contains("--report") && e.contains("no-such-dir"), "{e}");
    let strips = tmp.path().join("s.jpg");
    let mut a = args.to_vec();
    a.extend(["--strips", strips.to_str().unwrap()]);
    let e = one_error_line(&a, &strips);
    assert!(e.contains("must be a .png"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "ran before refusing");
    for flag in [
        ["--out", "x.mp4"],
        ["--upscale", "2"],
        ["--fps", "4"],
        ["--quiet", ""],
    ] {
        let mut a = args.to_vec();
        a.extend(flag.iter().filter(|s| !s.is_empty()));
        let e = one_error_line(&a, &tmp.path().join("x.mp4"));
        assert!(e.contains("unexpected argument"), "{e}");
    }
}

#[test]
fn inspect_lists_the_vocabulary_and_flags_a_parameter_count_off_the_config() {
    let (ok, out, err) = jenga(&["inspect"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("shape colour: ") && out.contains("background: "),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_model(
        tmp.path(),
        &[
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "text_encoder.safetensors",
            "vocab.json",
        ],
    );
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    let cfg = cfg.replacen("\"num_layers\": 6", "\"num_layers\": 5", 1);
    assert!(
        cfg.contains("\"num_layers\": 5"),
        "config layout changed: {cfg}"
    );
    std::fs::write(m.join("config.json"), cfg).unwrap();
    let (ok, out, err) = jenga(&["inspect", "--model", m.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("warning: the weights hold"), "{out}");
    // inspect takes no device flags: they would do nothing there
    let (ok, _, err) = jenga(&["inspect", "--device", "cpu"]);
    assert!(!ok && err.contains("unexpected argument"), "{err}");
}

#[test]
fn mp4_beyond_the_encoder_and_a_foreign_export_dir_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("big.mp4");
    let t = Instant::now();
    let e = one_error_line(
        &gen_args(
            out.to_str().unwrap(),
            &[
                "--frames",
                "1",
                "--height",
                "1024",
                "--width",
                "1024",
                "--upscale",
                "8",
            ],
        ),
        &out,
    );
    assert!(e.contains("too large for the H.264 encoder"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "refused only after the run"
    );
    // bench dit --export into a directory holding a user's file
    let dir = tmp.path().join("exp");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "mine").unwrap();
    std::fs::write(dir.join("thesis.txt"), "mine").unwrap();
    let (ok, _, err) = jenga(&[
        "bench",
        "dit",
        "--device",
        "cpu",
        "--sizes",
        "2x8x8",
        "--export",
        dir.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("thesis.txt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        "mine"
    );
}
