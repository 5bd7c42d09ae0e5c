//! The scoped weight builder and the key-renaming layer: the embedded tiny-wan re-keyed to
//! diffusers' `WanTransformer3DModel` names (and config) loads and gives a bit-identical
//! forward; errors name the full key (both namings) and the file; random weights through the
//! builder are the values `RandomWeights::load` gives.

use jenga_carve::{AttnCtx, Dense};
use jenga_models::wan::to_diffusers;
use jenga_models::{
    Family, ModelBundle, RandomWeights, SafetensorsWeights, VarBuilder, WanConfig, WanKeys,
    WanModel, WeightSource,
};
use jenga_tensor::{Backend, CpuBackend};
use std::path::{Path, PathBuf};

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/tiny-wan");

/// Write `src`'s tensors under `rename(name)` (bytes as stored), `reshape` may change shapes.
fn rekey(
    dst: &Path,
    rename: impl Fn(&str) -> String,
    reshape: impl Fn(&str, &[usize]) -> Vec<usize>,
) {
    let bytes =
        std::fs::read(Path::new(ASSETS).join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let new = rename(&n);
            let shape = reshape(&new, v.shape());
            (
                new,
                safetensors::tensor::TensorView::new(v.dtype(), shape, v.data()).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, dst).unwrap();
}

/// The tiny config as diffusers writes it.
fn diffusers_config(c: &WanConfig) -> String {
    serde_json::json!({
        "_class_name": "WanTransformer3DModel", "_diffusers_version": "0.33.0",
        "added_kv_proj_dim": null, "attention_head_dim": c.head_dim(), "cross_attn_norm": c.cross_attn_norm,
        "eps": c.eps, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim, "image_dim": null,
        "in_channels": c.in_dim, "num_attention_heads": c.num_heads, "num_layers": c.num_layers,
        "out_channels": c.out_dim, "patch_size": c.patch_size, "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024, "text_dim": c.text_dim,
    })
    .to_string()
}

fn forward(cfg: &WanConfig, w: &dyn WeightSource) -> Vec<f32> {
    let be = CpuBackend::new();
    let model = WanModel::load(&be, cfg, w).unwrap();
    let grid = (2, 4, 4);
    let geom = model.geometry(&be, grid, None).unwrap();
    let actx = AttnCtx::one_forward(grid, model.num_layers());
    let text: Vec<f32> = (0..cfg.text_len * cfg.text_dim)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let ctx = model
        .embed_text(
            &be,
            &be.upload(&text, &[1, cfg.text_len, cfg.text_dim]).unwrap(),
        )
        .unwrap();
    let n = cfg.in_dim * 2 * 8 * 8;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
        .collect();
    let xt = be.upload(&x, &[1, cfg.in_dim, 2, 8, 8]).unwrap();
    let v = model
        .forward(&be, &xt, 500.0, &ctx, &geom, &Dense, &actx)
        .unwrap();
    be.download(&v).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A diffusers-layout model directory of tiny-wan in `dir`.
fn diffusers_dir(dir: &Path, squeeze_tables: bool) -> WanConfig {
    let cfg = WanConfig::from_file(&Path::new(ASSETS).join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), diffusers_config(&cfg)).unwrap();
    rekey(
        &dir.join("diffusion_pytorch_model.safetensors"),
        to_diffusers,
        |n, s| {
            if squeeze_tables && n.ends_with("scale_shift_table") {
                s[1..].to_vec()
            } else {
                s.to_vec()
            }
        },
    );
    cfg
}

#[test]
fn diffusers_keys_and_config_load_bit_identical() {
    let t = tempfile::tempdir().unwrap();
    let cfg = diffusers_dir(t.path(), false);
    let b = ModelBundle::open(t.path()).unwrap();
    assert_eq!(b.family, Family::Wan);
    assert_eq!(b.class, "WanTransformer3DModel");
    assert_eq!(b.keys, WanKeys::Diffusers);
    // the diffusers config reads as the original one (text_len: diffusers' pipeline default)
    assert_eq!(
        WanConfig {
            text_len: cfg.text_len,
            ..b.config.clone()
        },
        cfg
    );
    assert!(b
        .weights
        .entries()
        .contains_key("blocks.0.attn1.to_q.weight"));
    assert!(b.weights.entries().contains_key("blocks.0.norm2.weight"));
    assert!(b.weights.entries().contains_key("scale_shift_table"));
    assert!(!b
        .weights
        .entries()
        .contains_key("blocks.0.self_attn.q.weight"));

    let orig = ModelBundle::embedded().unwrap();
    assert_eq!(orig.keys, WanKeys::Original);
    let want = forward(&cfg, &orig.weights);
    let got = forward(&cfg, &b.weights);
    assert_eq!(bits(&got), bits(&want));

    // scale_shift_tables stored without their leading axis load the same
    let t2 = tempfile::tempdir().unwrap();
    diffusers_dir(t2.path(), true);
    let w = SafetensorsWeights::open(t2.path()).unwrap();
    assert_eq!(w.entries()["scale_shift_table"].shape, vec![2, cfg.dim]);
    assert_eq!(bits(&forward(&cfg, &w)), bits(&want));
}

#[test]
fn builder_errors_name_the_full_key_both_namings_and_the_file() {
    let cfg = WanConfig::from_file(&Path::new(ASSETS).join("config.json")).unwrap();
    let be = CpuBackend::new();
    let t = tempfile::tempdir().unwrap();
    // diffusers names with one tensor left out
    let p = t.path().join("w.safetensors");
    rekey(
        &p,
        |n| {
            let d = to_diffusers(n);
            if d == "blocks.2.attn2.to_k.weight" {
                "dropped".into()
            } else {
                d
            }
        },
        |_, s| s.to_vec(),
    );
    let w = SafetensorsWeights::open(&p).unwrap();
    let e = WanModel::load(&be, &cfg, &w).err().unwrap().to_string();
    assert!(
        e.contains("blocks.2.attn2.to_k.weight")
            && e.contains("blocks.2.cross_attn.k.weight")
            && e.contains(&p.display().to_string()),
        "{e}"
    );
    // a wrong shape names the stored key, the file, both shapes
    let p2 = t.path().join("w2.safetensors");
    rekey(
        &p2,
        |n| n.to_string(),
        |n, s| {
            if n == "blocks.1.ffn.0.weight" {
                vec![s[1], s[0]]
            } else {
                s.to_vec()
            }
        },
    );
    let w = SafetensorsWeights::open(&p2).unwrap();
    let e = WanModel::load(&be, &cfg, &w).err().unwrap().to_string();
    assert!(
        e.contains("blocks.1.ffn.0.weight")
            && e.contains(&p2.display().to_string())
            && e.contains("[256, 1024]")
            && e.contains("[1024, 256]"),
        "{e}"
    );
    // original names: the squeezed modulation is a shape error there
    let p3 = t.path().join("w3.safetensors");
    rekey(
        &p3,
        |n| n.to_string(),
        |n, s| {
            if n == "head.modulation" {
                s[1..].to_vec()
            } else {
                s.to_vec()
            }
        },
    );
    let w = SafetensorsWeights::open(&p3).unwrap();
    let e = WanModel::load(&be, &cfg, &w).err().unwrap().to_string();
    assert!(
        e.contains("head.modulation") && e.contains("[2, 256]"),
        "{e}"
    );
}

#[test]
fn unknown_config_class_names_the_class_and_the_file() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("config.json"),
        r#"{"_class_name": "CogVideoXTransformer3DModel", "num_layers": 30}"#,
    )
    .unwrap();
    let e = ModelBundle::open(t.path()).err().unwrap().to_string();
    assert!(
        e.contains("CogVideoXTransformer3DModel")
            && e.contains(&t.path().join("config.json").display().to_string())
            && e.contains("WanTransformer3DModel"),
        "{e}"
    );
}

#[test]
fn builder_scopes_paths_and_random_weights_are_the_same_values() {
    let be = CpuBackend::new();
    let r = RandomWeights { seed: 3 };
    let vb = VarBuilder::new(&be, &r);
    let blk = vb.pp("blocks").pp(4);
    assert_eq!(
        blk.path("self_attn.q.weight"),
        "blocks.4.self_attn.q.weight"
    );
    assert_eq!(blk.pp("ffn").pp(0).path("bias"), "blocks.4.ffn.0.bias");
    assert!(blk.contains("anything"));
    for (name, shape) in [
        ("blocks.4.self_attn.q.weight", vec![32, 32]),
        ("blocks.4.modulation", vec![1, 6, 32]),
        ("blocks.4.norm3.weight", vec![32]),
        ("patch_embedding.weight", vec![32, 3, 1, 2, 2]),
    ] {
        let t = vb.get(&shape, name).unwrap();
        assert_eq!(
            bits(&be.download(&t).unwrap()),
            bits(&r.load(name, &shape).unwrap()),
            "{name}"
        );
    }
    // a stored file: contains / get through a scope, bytes as stored
    let w = SafetensorsWeights::open(&PathBuf::from(ASSETS)).unwrap();
    let vb = VarBuilder::new(&be, &w);
    assert!(vb.pp("head").contains("modulation"));
    assert!(!vb.pp("head").contains("nope"));
    let t = vb.pp("head").get(&[1, 2, 256], "modulation").unwrap();
    assert_eq!(
        bits(&be.download(&t).unwrap()),
        bits(&w.load("head.modulation", &[1, 2, 256]).unwrap())
    );
}
