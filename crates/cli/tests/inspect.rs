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

/// The embedded weights under diffusers' names (a source reading them back by original name).
struct Renamed {
    inner: jenga_models::SafetensorsWeights,
    original: std::collections::HashMap<String, String>,
}

impl jenga_models::WeightSource for Renamed {
    fn load(&self, name: &str, shape: &[usize]) -> jenga_models::Result<Vec<f32>> {
        self.inner.load(&self.original[name], shape)
    }
    fn describe(&self) -> String {
        "renamed".into()
    }
}

#[test]
fn inspect_reports_the_key_naming_family_and_stored_dtypes() {
    let (ok, out, err) = jenga(&["inspect"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("family       Wan2.1 (config class WanModel)")
            && out.contains("tensor names: original")
            && out.contains("BF16"),
        "{out}"
    );
    // a diffusers-layout directory: WanTransformer3DModel config, diffusers tensor names
    let b = jenga_models::ModelBundle::embedded().unwrap();
    let t = tempfile::tempdir().unwrap();
    let c = &b.config;
    let cfg = serde_json::json!({
        "_class_name": "WanTransformer3DModel", "attention_head_dim": c.head_dim(),
        "ffn_dim": c.ffn_dim, "in_channels": c.in_dim, "num_attention_heads": c.num_heads,
        "num_layers": c.num_layers, "out_channels": c.out_dim, "text_dim": c.text_dim,
        "qk_norm": "rms_norm_across_heads", "patch_size": c.patch_size,
    });
    std::fs::write(t.path().join("config.json"), cfg.to_string()).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = c
        .tensor_shapes()
        .into_iter()
        .map(|(n, s)| (jenga_models::wan::to_diffusers(&n), s))
        .collect();
    let original = c
        .tensor_shapes()
        .into_iter()
        .map(|(n, _)| (jenga_models::wan::to_diffusers(&n), n))
        .collect();
    let src = Renamed {
        inner: b.weights,
        original,
    };
    jenga_models::export_bf16(
        &src,
        &shapes,
        &t.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let (ok, out, err) = jenga(&["inspect", "--model", t.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("config class WanTransformer3DModel")
            && out.contains("tensor names: diffusers")
            && out.contains("BF16")
            && out.contains("decoder      identity"),
        "{out}"
    );
}

/// Rows of `jenga inspect schedule` as columns.
fn schedule(args: &[&str]) -> Vec<Vec<String>> {
    let mut argv = vec!["inspect", "schedule"];
    argv.extend_from_slice(args);
    let (ok, out, err) = jenga(&argv);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("step\tstage\tgrid\tt\tsigma\tcomputed\tdrop\tp")
    );
    lines
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn inspect_schedule_prints_the_official_plans() {
    // Wan-1.3B turbo (scripts/wan_1.3B_jenga_turbo.sh): UniPC, 26 low-res + 24 full-res
    // steps, t integer, the first full-res step fed the new grid's t at the old grid's σ
    let r = schedule(&["--family", "wan-1.3b", "--preset", "turbo"]);
    assert_eq!(r.len(), 50);
    assert!(r.iter().all(|c| c.len() == 8));
    assert_eq!(r.iter().filter(|c| c[1] == "0").count(), 26);
    assert_eq!(
        (r[0][2].as_str(), r[49][2].as_str()),
        ("21x22x39", "21x30x52")
    );
    let t: Vec<&str> = r[24..28].iter().map(|c| c[3].as_str()).collect();
    assert_eq!(t, ["896", "888", "902", "894"]); // shift 8 → 10 at the switch
    assert_eq!(r[0][3], "999");
    // TeaCache: the first 5 steps computed, the switch's next step too, the rest at run time
    let comp: Vec<&str> = r.iter().map(|c| c[5].as_str()).collect();
    assert!(
        comp[..5].iter().all(|&c| c == "1") && comp[5] == "tc",
        "{comp:?}"
    );
    assert_eq!((comp[26], comp[49]), ("1", "tc"));
    // drop: the warm-up ramp, dense at ≤ 0.25, 0.75 to step 25, then 0.85; p 0.9
    assert_eq!((r[1][6].as_str(), r[5][6].as_str()), ("0", "0.75"));
    assert_eq!(
        (r[25][6].as_str(), r[26][6].as_str(), r[26][7].as_str()),
        ("0.75", "0.85", "0.9")
    );
    // the sigma column is the latent's noise level: 26 enters at the old grid's σ[26]
    let s26: f64 = r[26][4].parse().unwrap();
    let s27: f64 = r[27][4].parse().unwrap();
    assert!(
        s26 < s27,
        "the re-noise is below the new grid's σ: {s26} {s27}"
    );

    // HunyuanVideo base: the official static list, Euler, one resolution (no re-noise)
    let r = schedule(&["--family", "hunyuan", "--preset", "base"]);
    let kept: Vec<usize> = (0..50).filter(|&i| r[i][5] == "1").collect();
    assert_eq!(
        kept,
        [0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25, 26, 29, 32, 35, 38, 41, 43, 45, 46, 47, 49]
    );
    assert_eq!((r[0][3].as_str(), r[0][2].as_str()), ("1000", "33x45x80"));
    assert_eq!(
        (r[25][6].as_str(), r[26][6].as_str(), r[0][7].as_str()),
        ("0.75", "0.85", "0.3")
    );
    // three stages: 16/10/24
    let r = schedule(&["--family", "hunyuan", "--preset", "3stage"]);
    let per: Vec<usize> = (0..3)
        .map(|s| r.iter().filter(|c| c[1] == s.to_string()).count())
        .collect();
    assert_eq!(per, [16, 10, 24]);
    // flags and --solver as generate takes them; dense prints drop 0 and no p
    let r = schedule(&["--family", "wan-14b", "--steps", "4", "--solver", "euler"]);
    assert_eq!(r.len(), 4);
    assert_eq!(
        (r[0][2].as_str(), r[0][3].as_str(), r[0][7].as_str()),
        ("21x45x80", "1000", "-")
    );
    let (ok, _, err) = jenga(&["inspect", "schedule", "--solver", "dpm"]);
    assert!(!ok && err.contains("--solver dpm"), "{err}");
    let (ok, _, err) = jenga(&["inspect", "schedule", "--family", "sd3"]);
    assert!(!ok && err.contains("--family sd3"), "{err}");
}

#[test]
fn inspect_a_pipeline_dir_names_the_missing_component() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("model_index.json"), "{}").unwrap();
    std::fs::create_dir(t.path().join("transformer")).unwrap();
    let (ok, out, err) = jenga(&["inspect", "--model", t.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("text_encoder") && err.contains("diffusers"),
        "{err}"
    );
}
