mod common;
use common::jenga;
use std::path::Path;

#[test]
fn inspect_curve_prints_the_fixture_format() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gilbert"
    ));
    for (kind, t, h, w) in [
        ("gilbert3d", "3", "5", "7"),
        ("sliced", "2", "1", "9"),
        ("sliced", "8", "16", "16"),
    ] {
        let (ok, out, err) = jenga(&["inspect", "curve", t, h, w, "--kind", kind]);
        assert!(ok, "{err}");
        let gp = dir.join(format!("{kind}_{t}x{h}x{w}.txt"));
        let gold = std::fs::read_to_string(&gp)
            .unwrap_or_else(|e| panic!("golden {} unreadable: {e}", gp.display()));
        let gold: Vec<&str> = gold.lines().skip(1).collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), gold, "{kind} {t}x{h}x{w}");
    }
    let (ok, _, err) = jenga(&["inspect", "curve", "2", "2", "2", "--kind", "zorder"]);
    assert!(!ok && err.contains("--kind zorder"), "{err}");
}

#[test]
fn inspect_model_reports_parameters() {
    let (ok, out, err) = jenga(&["inspect"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("6 layers") && out.contains("6.9") && out.contains("BF16"),
        "{out}"
    );
    let (ok, _, err) = jenga(&["inspect", "--model", "/nope"]);
    assert!(
        !ok && err.starts_with("error: ") && err.contains("/nope"),
        "{err}"
    );
}
