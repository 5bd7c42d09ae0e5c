//! `jenga bench attention` and `jenga bench dit` on the CPU: JSON lines, plans handed to the
//! reference, and the `--export` files read back against the model they came from.

mod common;
use common::jenga;
use jenga_carve::{AttnCtx, Dense};
use jenga_models::{ModelBundle, SafetensorsWeights, WanModel, WeightSource};
use jenga_tensor::{Backend, CpuBackend};
use std::path::Path;
use std::process::Command;

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn has_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bench_attention_cpu_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("a.jsonl");
    let (ok, out, err) = jenga(&[
        "bench",
        "attention",
        "--device",
        "cpu",
        "--shapes",
        "2x600x32",
        "--densities",
        "25,100",
        "--block",
        "128",
        "--repeats",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let keys = [
        "name",
        "ours_ms",
        "reference",
        "reference_ms",
        "tflops",
        "density",
        "device",
    ];
    for l in &lines {
        for k in keys {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
        assert!(l["ours_ms"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["tflops"].as_f64().unwrap() > 0.0, "{l}");
        assert!(
            l["reference"].is_null() && l["reference_ms"].is_null(),
            "{l}"
        );
        assert!(l["device"].as_str().unwrap().starts_with("cpu"), "{l}");
    }
    assert_eq!(lines[0]["name"], "attention 2x600x32 dense");
    assert_eq!(lines[0]["density"], 1.0);
    // 5x5 blocks x 2 heads = 50 pairs; 25% -> 13 kept (rounded), 100% -> all
    assert_eq!(lines[1]["name"], "attention 2x600x32 sparse 25%");
    assert_eq!(lines[1]["density"].as_f64().unwrap(), 13.0 / 50.0);
    assert_eq!(lines[2]["density"], 1.0);
    // the all-kept plan is checked against dense attention (same CPU kernel: tiny difference)
    let rel = lines[2]["rel_mean_abs_vs_dense"].as_f64().unwrap();
    assert!(rel < 1e-5, "{rel}");
    assert!(out.contains("TFLOP/s"), "{out}");
    // bad input: one line, exit != 0
    let (ok, _, err) = jenga(&["bench", "attention", "--device", "cpu", "--shapes", "2x300"]);
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("--shapes"),
        "{err}"
    );
    let (ok, _, err) = jenga(&[
        "bench",
        "attention",
        "--device",
        "cpu",
        "--shapes",
        "1x64x32",
        "--densities",
        "0",
    ]);
    assert!(!ok && err.contains("--densities"), "{err}");
}

/// A stand-in reference: checks the plans it is given (CSR consistent with the manifest, the
/// diagonal kept, the density) and answers with fixed timings, so the pairing can be checked.
const FAKE_REFERENCE: &str = r#"
import json, sys, os, struct
m = json.load(open(sys.argv[sys.argv.index("--manifest") + 1]))
root = os.path.dirname(sys.argv[sys.argv.index("--manifest") + 1])
assert sys.argv[sys.argv.index("--device") + 1] == "cpu"
for sh in m["shapes"]:
    nb = -(-sh["seq"] // sh["block"])
    print(json.dumps({"name": sh["dense"]["name"], "reference": "fake sdpa", "ms": 2.0, "tflops": 1.5}))
    for p in sh["plans"]:
        raw = open(os.path.join(root, p["file"]), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
        def arr(k):
            s, e = hdr[k]["data_offsets"]; assert hdr[k]["dtype"] == "I32"
            return list(struct.unpack("<%di" % ((e - s) // 4), data[s:e]))
        rp, ci = arr("row_ptr"), arr("col_idx")
        assert len(rp) == sh["heads"] * nb + 1 and rp[-1] == len(ci)
        for r in range(len(rp) - 1):
            row = ci[rp[r]:rp[r + 1]]
            assert row == sorted(set(row)) and (r % nb) in row, (r, row)
        assert abs(len(ci) / (sh["heads"] * nb * nb) - p["density"]) < 1e-9
        print(json.dumps({"name": p["name"], "reference": "fake flex", "ms": 1.0, "tflops": 0.5}))
print("a line that is not JSON")
"#;

#[test]
fn bench_attention_reference_gets_the_same_plans() {
    if !has_python() {
        eprintln!("skipping: no python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake_ref.py");
    std::fs::write(&script, FAKE_REFERENCE).unwrap();
    let json = dir.path().join("a.jsonl");
    let plans = dir.path().join("plans");
    let cmd = format!("python3 {}", script.display());
    let (ok, out, err) = jenga(&[
        "bench",
        "attention",
        "--device",
        "cpu",
        "--shapes",
        "3x500x16",
        "--densities",
        "20,60",
        "--block",
        "128",
        "--repeats",
        "1",
        "--reference",
        &cmd,
        "--plans",
        plans.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(!out.contains("reference skipped"), "{out}");
    assert!(out.contains("| a line that is not JSON"), "{out}");
    assert!(plans.join("manifest.json").exists());
    let lines = json_lines(&json);
    // dense: 1 reference; each sparse case: its Flex line + the dense sdpa line
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines[0]["reference"], "fake sdpa");
    assert_eq!(lines[0]["reference_ms"], 2.0);
    let sparse: Vec<_> = lines.iter().filter(|l| l["density"] != 1.0).collect();
    assert_eq!(sparse.len(), 4);
    for l in &sparse {
        let r = l["reference"].as_str().unwrap();
        assert!(r == "fake flex" || r == "fake sdpa (dense)", "{l}");
        let want = if r == "fake flex" { 1.0 } else { 2.0 };
        assert_eq!(l["reference_ms"].as_f64().unwrap(), want);
        let speedup = l["speedup_vs_reference"].as_f64().unwrap();
        let ours = l["ours_ms"].as_f64().unwrap();
        // ours_ms is printed to 0.001 ms and the speedup to 0.001, so compare
        // the time the speedup implies with the printed one at that precision.
        let implied = want / speedup;
        assert!(
            (implied - ours).abs() <= 0.0006 + 0.0006 * implied / speedup,
            "{l}"
        );
    }
}

#[test]
fn bench_attention_reference_is_skipped_in_one_line_when_it_cannot_run() {
    let tool = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/bench_attention.py"
    );
    let torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    for cmd in [format!("python3 {tool}"), "exit 7".to_string()] {
        if cmd.starts_with("python3") && torch {
            continue; // a real torch would run the reference
        }
        let (ok, out, err) = jenga(&[
            "bench",
            "attention",
            "--device",
            "cpu",
            "--shapes",
            "1x300x16",
            "--densities",
            "50",
            "--repeats",
            "1",
            "--reference",
            &cmd,
        ]);
        assert!(ok, "{out}\n{err}");
        let skipped: Vec<_> = out
            .lines()
            .filter(|l| l.starts_with("reference skipped"))
            .collect();
        assert_eq!(skipped.len(), 1, "{out}");
        if cmd == "exit 7" {
            assert!(skipped[0].contains("exited with 7"), "{out}");
        }
    }
}

#[test]
fn bench_dit_export_writes_what_the_reference_reads() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("export");
    let json = dir.path().join("d.jsonl");
    let (ok, out, err) = jenga(&[
        "bench",
        "dit",
        "--device",
        "cpu",
        "--sizes",
        "2x8x8",
        "4x8x16",
        "--repeats",
        "1",
        "--export",
        exp.to_str().unwrap(),
        "--reference",
        "exit 3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("reference skipped"), "{out}");
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["ours_ms"].as_f64().unwrap() > 0.0);
    assert!(lines[0]["name"].as_str().unwrap().contains("2x8x8"));

    // config + weights: every tensor, bf16, equal to the embedded model's
    let bundle = ModelBundle::embedded().unwrap();
    let cfg = jenga_models::WanConfig::from_file(&exp.join("config.json")).unwrap();
    assert_eq!(cfg, bundle.config);
    let w = SafetensorsWeights::open(&exp.join("weights.safetensors")).unwrap();
    let shapes = cfg.tensor_shapes();
    assert_eq!(w.entries().len(), shapes.len());
    for (name, shape) in &shapes {
        let e = &w.entries()[name];
        assert_eq!(e.dtype, "BF16", "{name}");
        assert_eq!(&e.shape, shape, "{name}");
        assert_eq!(
            w.load(name, shape).unwrap(),
            bundle.weights.load(name, shape).unwrap(),
            "{name}"
        );
    }

    // inputs + our output: recompute the forward from the exported files
    let inputs = SafetensorsWeights::open(&exp.join("inputs.safetensors")).unwrap();
    let x = inputs.load("x", &[1, 3, 2, 8, 8]).unwrap();
    assert_eq!(inputs.load("t", &[1]).unwrap(), vec![500.0]);
    let ctx = inputs.load("context", &[1, 16, 64]).unwrap();
    assert_eq!(
        ctx,
        bundle
            .encode_prompt("a red circle moving right on a blue background")
            .unwrap()
    );
    let v = SafetensorsWeights::open(&exp.join("ours.safetensors"))
        .unwrap()
        .load("v", &[1, 3, 2, 8, 8])
        .unwrap();
    let be = CpuBackend::with_threads(1).unwrap();
    let model = WanModel::load(&be, &cfg, &w).unwrap();
    let grid = model.grid(2, 8, 8).unwrap();
    let geom = model.geometry(&be, grid, None).unwrap();
    let c = model
        .embed_text(&be, &be.upload(&ctx, &[1, 16, 64]).unwrap())
        .unwrap();
    let actx = AttnCtx::one_forward(grid, cfg.num_layers);
    let xt = be.upload(&x, &[1, 3, 2, 8, 8]).unwrap();
    let want = be
        .download(
            &model
                .forward(&be, &xt, 500.0, &c, &geom, &Dense, &actx)
                .unwrap(),
        )
        .unwrap();
    let max = v
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let norm = want.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!(norm > 1.0 && max <= 1e-4, "max |diff| {max}, |v| {norm}");
}

#[test]
fn bench_attention_bad_policy_flags_fail_with_one_line() {
    for (policy, shape, want) in [
        ("foo", "2x600x32", "--policy foo"),
        ("jenga", "2x600x32", "--policy jenga"),
    ] {
        let (ok, out, err) = jenga(&[
            "bench",
            "attention",
            "--device",
            "cpu",
            "--shapes",
            shape,
            "--policy",
            policy,
            "--repeats",
            "1",
        ]);
        assert!(!ok, "{out}\n{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(want),
            "{err}"
        );
    }
}
