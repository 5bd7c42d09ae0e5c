//! `--policy dense|jenga|svg|draft` through the binary: generate, eval and `bench policies`
//! run with each peer policy on tiny sizes, and mistakes end in one clear error line before
//! any compute.

mod common;
use common::jenga;

const PROMPT: &str = "a red circle moving right on a blue background";

/// `(sparse, total)` from generate's "stage 0: attention density …% (S of N calls sparse)".
fn sparse_calls(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.contains("attention density"))
        .unwrap_or_else(|| panic!("no density line in: {stderr}"));
    let inner = line.split('(').nth(1).unwrap();
    let w: Vec<&str> = inner.split_whitespace().collect();
    (w[0].parse().unwrap(), w[2].parse().unwrap())
}

fn generate(policy: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.gif");
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec![
        "generate", "--prompt", PROMPT, "--quiet", "--device", "cpu", "--frames", "4", "--steps",
        "2", "--policy", policy, "--out", &out_s,
    ];
    args.extend_from_slice(extra);
    let (ok, _, err) = jenga(&args);
    assert!(ok, "{policy}: {err}");
    assert!(out.exists(), "{policy}: no output");
    err
}

#[test]
fn generate_with_svg() {
    let err = generate("svg", &[]);
    assert!(err.contains("policy svg("), "{err}");
    // 2 steps × 6 layers; ⌊0.2·2⌋ = 0 dense steps, ⌊0.03·6⌋ = 0 dense layers: all sparse
    assert_eq!(sparse_calls(&err), (12, 12), "{err}");
    assert!(err.contains("svg: heads:"), "{err}");
    // first-times fraction 0.5 → the first step is dense
    let err = generate("svg", &["--svg-first-times-fp", "0.5"]);
    assert_eq!(sparse_calls(&err), (6, 12), "{err}");
}

#[test]
fn generate_with_draft() {
    let err = generate("draft", &[]);
    assert!(err.contains("policy draft(pool 8x16"), "{err}");
    // step 0 (σ = 1, timestep 1000 > 925) and layer 0 are dense: 5 of 12 calls sparse
    assert_eq!(sparse_calls(&err), (5, 12), "{err}");
    let err = generate(
        "draft",
        &[
            "--draft-dense-layers",
            "0",
            "--draft-dense-timestep",
            "1000",
        ],
    );
    assert_eq!(sparse_calls(&err), (12, 12), "{err}");
}

#[test]
fn generate_with_jenga_and_dense_still_work() {
    let err = generate("jenga", &[]);
    assert!(err.contains("policy jenga("), "{err}");
    let err = generate("dense", &[]);
    assert!(err.contains("policy dense"), "{err}");
}

#[test]
fn bad_policy_flags_fail_before_compute() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.gif");
    let out_s = out.to_string_lossy().into_owned();
    for (extra, want) in [
        (
            vec!["--policy", "sparse"],
            "--policy sparse: unknown attention policy (expected one of dense, jenga, svg, draft)",
        ),
        (
            vec!["--policy", "svg", "--svg-sparsity", "1.5"],
            "--svg-sparsity 1.5",
        ),
        (
            vec!["--policy", "svg", "--svg-sampled-rows", "0"],
            "--svg-sampled-rows",
        ),
        (
            vec!["--policy", "svg", "--svg-first-layers-fp", "2"],
            "--svg-first-layers-fp 2",
        ),
        (
            vec!["--policy", "draft", "--draft-pool", "8y16"],
            "--draft-pool 8y16",
        ),
        (
            vec!["--policy", "draft", "--draft-sparsity", "1"],
            "--draft-sparsity 1",
        ),
        (vec!["--policy", "draft", "--block", "0"], "--block"),
    ] {
        let mut args = vec![
            "generate", "--prompt", PROMPT, "--quiet", "--device", "cpu", "--out", &out_s,
        ];
        args.extend_from_slice(&extra);
        let (ok, _, err) = jenga(&args);
        assert!(!ok, "{extra:?} should fail");
        assert!(!err.contains("panicked"), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{extra:?}: {err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(want),
            "{extra:?}: {err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn eval_with_draft() {
    let (ok, stdout, err) = jenga(&[
        "eval",
        "--prompt",
        PROMPT,
        "--device",
        "cpu",
        "--frames",
        "4",
        "--steps",
        "2",
        "--policy",
        "draft",
        "--recall-every",
        "1",
    ]);
    assert!(ok, "{err}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| draft"))
        .unwrap_or_else(|| panic!("no draft row: {stdout}"));
    assert!(stdout.lines().any(|l| l.starts_with("| dense")), "{stdout}");
    // a recall in (0, 1] is reported for the sparse calls
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(
        cells.iter().any(|c| c
            .parse::<f64>()
            .is_ok_and(|v| v > 0.0 && v <= 1.0 && c.contains('.') && c.len() == 5)),
        "{row}"
    );
}

#[test]
fn bench_policies_writes_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("POLICIES.md");
    std::fs::write(&report, "# notes kept\n").unwrap();
    let rs = report.to_string_lossy().into_owned();
    let (ok, stdout, err) = jenga(&[
        "bench",
        "policies",
        "--device",
        "cpu",
        "--frames",
        "4",
        "--steps",
        "2",
        "--recall-every",
        "1",
        "--report",
        &rs,
    ]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("# notes kept\n"), "{md}");
    for name in [
        "| dense |",
        "| jenga --sa-drop-rates 0.7 0.8 --p-remain-rates 0.9 |",
        "| svg |",
        "| draft |",
    ] {
        assert!(md.contains(name), "{name} missing: {md}");
        assert!(stdout.contains(name), "{name} missing: {stdout}");
    }
    // dense row: density 100%, PSNR ∞; every sparse variant: density < 100%, finite PSNR
    let rows: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| variant"))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{md}");
    assert_eq!((rows[0][2].as_str(), rows[0][5].as_str()), ("100.0%", "∞"));
    for r in &rows[1..] {
        let d: f64 = r[2].trim_end_matches('%').parse().unwrap();
        assert!(d > 0.0 && d < 100.0, "{r:?}");
        let p: f64 = r[5].parse().unwrap();
        assert!(p > 10.0, "{r:?}");
    }
    // a second run replaces the section instead of appending another
    let (ok, _, err) = jenga(&[
        "bench",
        "policies",
        "--device",
        "cpu",
        "--frames",
        "4",
        "--steps",
        "1",
        "--variants",
        "draft",
        "--report",
        &rs,
    ]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert_eq!(md.matches("bench-policies:begin").count(), 1, "{md}");
    assert!(!md.contains("| svg |") && md.contains("| draft |"), "{md}");
    // bad variant: one clear error, nothing run
    let (ok, _, err) = jenga(&[
        "bench",
        "policies",
        "--device",
        "cpu",
        "--variants",
        "svg --svg-sparsity 0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--variants `svg --svg-sparsity 0`") && err.contains("--svg-sparsity 0"),
        "{err}"
    );
}
