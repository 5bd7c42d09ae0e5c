//! `jenga bench vae` on the CPU with the small golden VAE (`tests/fixtures/wan_vae/diffusers`):
//! JSON lines for the plain and tiled decode; bad flags fail with one clear line.

mod common;
use common::jenga;

const VAE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/wan_vae/diffusers"
);

#[test]
fn bench_vae_cpu_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("v.jsonl");
    let (ok, out, err) = jenga(&[
        "bench",
        "vae",
        "--device",
        "cpu",
        "--weights",
        VAE,
        "--latent",
        "2x8x8",
        "--tiled",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vae decode 2x8x8", "vae decode tiled 2x8x8"]);
    for l in &lines {
        assert!(l["ours_ms"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["reference"].is_null(), "{l}");
    }
    assert!(out.contains("-> 5 frames 64x64"), "{out}");
}

#[test]
fn bench_vae_bad_flags() {
    let (ok, _, err) = jenga(&["bench", "vae", "--device", "cpu", "--latent", "0x8x8"]);
    assert!(!ok);
    assert!(err.contains("--latent") && err.contains("0x8x8"), "{err}");
    let (ok, _, err) = jenga(&[
        "bench",
        "vae",
        "--device",
        "cpu",
        "--weights",
        VAE,
        "--latent",
        "1x4x4",
        "--conv",
        "fast",
    ]);
    assert!(!ok);
    assert!(err.contains("--conv fast"), "{err}");
}
