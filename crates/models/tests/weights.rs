//! Weight loading: names and shapes of the tiny checkpoint, configs, random weights, export.

use jenga_models::{
    export_bf16, ModelBundle, RandomWeights, SafetensorsWeights, WanConfig, WeightSource,
};

#[test]
fn config_lists_exactly_the_checkpoint_tensors() {
    let b = ModelBundle::embedded().unwrap();
    let mut want: Vec<(String, Vec<usize>)> = b.config.tensor_shapes();
    let mut have: Vec<(String, Vec<usize>)> = b
        .weights
        .entries()
        .iter()
        .map(|(n, e)| (n.clone(), e.shape.clone()))
        .collect();
    want.sort();
    have.sort();
    assert_eq!(want, have);
    let n = b.config.num_params();
    assert!((6_800_000..7_000_000).contains(&n), "{n}");
}

#[test]
fn official_configs_parse_with_defaults() {
    // The official Wan2.1-T2V-1.3B config.json omits patch_size, text_dim, qk_norm, ...
    let c = WanConfig::from_json(
        r#"{"_class_name":"WanModel","_diffusers_version":"0.30.0","dim":1536,"eps":1e-06,"ffn_dim":8960,
            "freq_dim":256,"in_dim":16,"model_type":"t2v","num_heads":12,"num_layers":30,"out_dim":16,"text_len":512}"#,
    )
    .unwrap();
    assert_eq!(c, WanConfig::wan_1_3b());
    assert_eq!(c.head_dim(), 128);
    let p = c.num_params() as f64 / 1e9;
    assert!((1.3..1.45).contains(&p), "{p}");
    let p14 = WanConfig::wan_14b().num_params() as f64 / 1e9;
    assert!((13.5..14.5).contains(&p14), "{p14}");
    let e = WanConfig::from_json(
        r#"{"dim":1536,"ffn_dim":8960,"in_dim":16,"out_dim":16,"num_layers":30}"#,
    )
    .unwrap_err();
    assert!(e.contains("num_heads"), "{e}");
    let e = WanConfig::from_json(
        r#"{"dim":1536,"ffn_dim":8960,"in_dim":16,"out_dim":16,"num_heads":7,"num_layers":30}"#,
    )
    .unwrap_err();
    assert!(e.contains("divisible"), "{e}");
}

#[test]
fn random_weights_are_seeded_and_export_round_trips() {
    let r = RandomWeights { seed: 3 };
    let a = r.load("blocks.0.self_attn.q.weight", &[64, 64]).unwrap();
    assert_eq!(a, r.load("blocks.0.self_attn.q.weight", &[64, 64]).unwrap());
    assert_ne!(
        a,
        RandomWeights { seed: 4 }
            .load("blocks.0.self_attn.q.weight", &[64, 64])
            .unwrap()
    );
    let bound = 1.0 / 8.0; // 1/sqrt(fan_in)
    assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| v.abs() > bound * 0.9));
    let mean = a.iter().sum::<f32>() / a.len() as f32;
    assert!(mean.abs() < 0.01);

    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("w.safetensors");
    let shapes = vec![
        ("blocks.0.self_attn.q.weight".to_string(), vec![64, 64]),
        ("head.modulation".to_string(), vec![1, 2, 64]),
    ];
    export_bf16(&r, &shapes, &p).unwrap();
    let back = SafetensorsWeights::open(&p).unwrap();
    let b = back.load("blocks.0.self_attn.q.weight", &[64, 64]).unwrap();
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(err <= bound / 128.0, "bf16 round trip error {err}");
    assert_eq!(back.entries()["head.modulation"].dtype, "BF16");
}
