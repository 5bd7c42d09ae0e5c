//! Checkpoint layouts found from their files (tiny trees made in a temp dir): diffusers, the
//! original Wan repo, ComfyUI single files; one error line naming the file when one is missing.

use jenga_models::layout::{self, LayoutKind, SingleFiles};
use jenga_models::wan::to_diffusers;
use jenga_models::{export_f32, WanConfig};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pth")
        .join(name)
}

fn tiny() -> WanConfig {
    WanConfig {
        dim: 128,
        ffn_dim: 256,
        num_heads: 1,
        num_layers: 2,
        in_dim: 4,
        out_dim: 4,
        text_dim: 32,
        freq_dim: 64,
        ..WanConfig::wan_1_3b()
    }
}

/// The tiny DiT's tensors (zeros), names through `rename`.
fn write_dit(path: &Path, rename: impl Fn(&str) -> String) {
    let shapes = tiny().tensor_shapes();
    let data: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
        .iter()
        .map(|(n, s)| (rename(n), s.clone(), vec![0.0; s.iter().product()]))
        .collect();
    let views: Vec<(&str, Vec<usize>, &[f32])> = data
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.clone(), d.as_slice()))
        .collect();
    export_f32(&views, path).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn one(path: &Path, name: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    export_f32(&[(name, vec![2, 2], &[1.0, 2.0, 3.0, 4.0])], path).unwrap();
}

fn diffusers_tree(d: &Path) {
    let c = tiny();
    write(
        &d.join("model_index.json"),
        r#"{"_class_name": "WanPipeline"}"#,
    );
    write(
        &d.join("transformer/config.json"),
        &format!(
            r#"{{"_class_name": "WanTransformer3DModel", "num_attention_heads": 1, "attention_head_dim": 128, "in_channels": 4, "out_channels": 4, "text_dim": 32, "freq_dim": 64, "ffn_dim": 256, "num_layers": {}, "qk_norm": "rms_norm_across_heads"}}"#,
            c.num_layers
        ),
    );
    write_dit(
        &d.join("transformer/diffusion_pytorch_model.safetensors"),
        to_diffusers,
    );
    write(&d.join("text_encoder/config.json"), r#"{"d_model": 4}"#);
    one(&d.join("text_encoder/model.safetensors"), "shared.weight");
    write(&d.join("tokenizer/tokenizer.json"), "{}");
    write(&d.join("vae/config.json"), r#"{"z_dim": 16}"#);
    one(
        &d.join("vae/diffusion_pytorch_model.safetensors"),
        "encoder.conv_in.weight",
    );
    write(
        &d.join("scheduler/scheduler_config.json"),
        r#"{"shift": 3.0}"#,
    );
}

fn original_tree(d: &Path) {
    write(
        &d.join("config.json"),
        r#"{"_class_name": "WanModel", "dim": 128, "ffn_dim": 256, "in_dim": 4, "out_dim": 4, "num_heads": 1, "num_layers": 2, "text_dim": 32, "freq_dim": 64}"#,
    );
    write_dit(&d.join("diffusion_pytorch_model.safetensors"), |n| {
        n.to_string()
    });
    // real torch.save archives stand in for the umT5 and VAE .pth files
    std::fs::copy(fixture("bf16.pth"), d.join(layout::WAN_T5)).unwrap();
    std::fs::copy(fixture("f32.pth"), d.join(layout::WAN_VAE)).unwrap();
    write(&d.join("google/umt5-xxl/tokenizer.json"), "{}");
}

/// The error of `f` is one line that names `file`.
fn names_missing(err: jenga_models::ModelError, file: &Path) {
    let msg = err.to_string();
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(
        msg.contains(&file.display().to_string()),
        "`{msg}` should name {}",
        file.display()
    );
}

#[test]
fn diffusers_layout_and_each_missing_file() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    diffusers_tree(d);
    let l = layout::detect(d).unwrap();
    assert_eq!(l.kind, LayoutKind::Diffusers);
    assert_eq!(l.dit_config, tiny());
    assert_eq!(l.transformer.naming, "diffusers");
    assert_eq!(l.text_encoder.naming, "transformers");
    assert_eq!(l.vae.naming, "diffusers");
    assert_eq!(l.tokenizer, d.join("tokenizer/tokenizer.json"));
    assert_eq!(
        l.scheduler_config,
        Some(d.join("scheduler/scheduler_config.json"))
    );
    assert_eq!(
        l.transformer.weights.param_count(),
        Some(tiny().num_params())
    );
    assert!(l.describe()[0].contains("diffusers"));
    for rel in [
        "transformer/config.json",
        "tokenizer/tokenizer.json",
        "scheduler/scheduler_config.json",
        "vae",
        "text_encoder",
    ] {
        let t = tempfile::tempdir().unwrap();
        diffusers_tree(t.path());
        let p = t.path().join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
        names_missing(layout::detect(t.path()).err().expect(rel), &p);
    }
    // weights missing: the DiT directory's error names it
    let t = tempfile::tempdir().unwrap();
    diffusers_tree(t.path());
    std::fs::remove_file(
        t.path()
            .join("transformer/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    names_missing(
        layout::detect(t.path()).err().unwrap(),
        &t.path().join("transformer"),
    );
}

#[test]
fn original_wan_layout_reads_its_pth_files_and_each_missing_file() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    original_tree(d);
    let l = layout::detect(d).unwrap();
    assert_eq!(l.kind, LayoutKind::OriginalWan);
    assert_eq!(l.dit_config, tiny());
    assert_eq!(l.transformer.naming, "original");
    assert_eq!(l.text_encoder.naming, "wan");
    assert!(l.text_encoder.weights.contains("blocks.0.attn.q.weight"));
    assert_eq!(l.vae.weights.names().len(), 3);
    assert_eq!(l.tokenizer, d.join("google/umt5-xxl/tokenizer.json"));
    assert!(l.scheduler_config.is_none());
    for rel in [
        layout::WAN_T5,
        layout::WAN_VAE,
        "google/umt5-xxl/tokenizer.json",
        "config.json",
    ] {
        let t = tempfile::tempdir().unwrap();
        original_tree(t.path());
        let p = t.path().join(rel);
        std::fs::remove_file(&p).unwrap();
        names_missing(layout::detect(t.path()).err().expect(rel), &p);
    }
    // a .pth that is not a torch archive
    let t = tempfile::tempdir().unwrap();
    original_tree(t.path());
    std::fs::write(t.path().join(layout::WAN_VAE), b"not a zip").unwrap();
    let msg = layout::detect(t.path()).err().unwrap().to_string();
    assert!(
        msg.contains("not a PyTorch zip archive") && msg.contains(layout::WAN_VAE),
        "{msg}"
    );
}

#[test]
fn comfyui_single_files_strip_the_prefix_and_dequantise_scaled_fp8() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let dit = d.join("wan2.1_t2v_tiny.safetensors");
    write_dit(&dit, |n| format!("{}{n}", layout::COMFY_PREFIX));
    let vae = d.join("wan_2.1_vae.safetensors");
    one(&vae, "encoder.conv1.weight");
    write(&d.join("umt5/tokenizer.json"), "{}");
    let files = SingleFiles {
        dit: dit.clone(),
        text_encoder: fixture("scaled_fp8.safetensors"),
        vae: vae.clone(),
        tokenizer: Some(d.join("umt5")),
        clip_vision: None,
    };
    let l = layout::single_files(&files).unwrap();
    assert_eq!(l.kind, LayoutKind::SingleFiles);
    assert_eq!(l.dit_config, tiny(), "config from the tensor shapes");
    assert!(l.transformer.weights.contains("patch_embedding.weight"));
    assert_eq!(
        l.transformer.weights.param_count(),
        Some(tiny().num_params())
    );
    let te = &l.text_encoder.weights;
    assert_eq!(
        te.info("encoder.block.0.layer.0.SelfAttention.q.weight")
            .unwrap()
            .dtype,
        "BF16"
    );
    assert!(!te.contains("scaled_fp8"));
    assert_eq!(l.vae.naming, "original");

    let no_tok = SingleFiles {
        tokenizer: None,
        ..files.clone()
    };
    let msg = layout::single_files(&no_tok).err().unwrap().to_string();
    assert!(msg.contains("--tokenizer"), "{msg}");
    let no_scales = SingleFiles {
        text_encoder: fixture("fp8_no_scales.safetensors"),
        ..files.clone()
    };
    let msg = layout::single_files(&no_scales).err().unwrap().to_string();
    assert!(
        msg.contains("has no scale") && msg.contains("fp8_no_scales.safetensors"),
        "{msg}"
    );
    let gone = SingleFiles {
        vae: d.join("nope.safetensors"),
        ..files
    };
    names_missing(
        layout::single_files(&gone).err().unwrap(),
        &d.join("nope.safetensors"),
    );
}

#[test]
fn a_directory_of_no_known_layout_says_what_was_expected() {
    let t = tempfile::tempdir().unwrap();
    let msg = layout::detect(t.path()).err().unwrap().to_string();
    assert!(
        msg.contains("model_index.json") && msg.contains(layout::WAN_T5),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1);
}
