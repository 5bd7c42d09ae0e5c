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
