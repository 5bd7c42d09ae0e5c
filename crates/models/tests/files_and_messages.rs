//! Which file of a model directory holds the DiT (by the names Wan / diffusers use, never the
//! first in the alphabet), the stored parameter count, and messages that name the file and
//! print each OS error once.

use jenga_models::{
    export_f32, ModelBundle, RandomWeights, SafetensorsWeights, WanConfig, WeightSource,
};
use std::error::Error;
use std::path::Path;

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/tiny-wan");

fn chain(e: &dyn Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut s = e.source();
    while let Some(x) = s {
        parts.push(x.to_string());
        s = x.source();
    }
    parts.join(": ")
}

fn tensor(dir: &Path, file: &str, name: &str, n: usize) {
    export_f32(&[(name, vec![n], &vec![1.0; n])], &dir.join(file)).unwrap();
}

fn names(w: &SafetensorsWeights) -> Vec<String> {
    let mut v: Vec<String> = w.entries().keys().cloned().collect();
    v.sort();
    v
}

#[test]
fn the_config_named_file_wins_over_an_export_beside_it() {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(ASSETS).join("diffusion_pytorch_model.safetensors"),
        t.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    tensor(t.path(), "a_first.safetensors", "x", 2);
    tensor(t.path(), "weights.safetensors", "x", 2);
    tensor(t.path(), "a.safetensors.index.json.bak", "x", 2);
    let w = SafetensorsWeights::open(t.path()).unwrap();
    assert!(w.paths()[0].ends_with("diffusion_pytorch_model.safetensors"));
    assert!(w.entries().contains_key("head.head.weight"));
}

#[test]
fn shards_without_index_are_all_loaded() {
    let t = tempfile::tempdir().unwrap();
    tensor(
        t.path(),
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "a",
        2,
    );
    tensor(
        t.path(),
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        "b",
        3,
    );
    tensor(t.path(), "text_encoder.safetensors", "te", 7);
    let w = SafetensorsWeights::open(t.path()).unwrap();
    assert_eq!(names(&w), ["a", "b"]);
    assert_eq!(w.param_count(), Some(5));
    // an incomplete set is an error naming what was found
    std::fs::remove_file(
        t.path()
            .join("diffusion_pytorch_model-00002-of-00002.safetensors"),
    )
    .unwrap();
    let e = SafetensorsWeights::open(t.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("incomplete") && e.contains("diffusion_pytorch_model-00001-of-00002"),
        "{e}"
    );
}

#[test]
fn an_index_names_the_shards() {
    let t = tempfile::tempdir().unwrap();
    tensor(
        t.path(),
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "a",
        2,
    );
    tensor(
        t.path(),
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        "b",
        3,
    );
    tensor(t.path(), "aaa.safetensors", "junk", 1);
    std::fs::write(
        t.path().join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map":{"a":"diffusion_pytorch_model-00001-of-00002.safetensors","b":"diffusion_pytorch_model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let w = SafetensorsWeights::open(t.path()).unwrap();
    assert_eq!(names(&w), ["a", "b"]);
}

#[test]
fn a_lone_export_is_used_but_the_text_encoder_never_is() {
    // `jenga bench dit --export DIR` writes weights.safetensors; a copied text encoder beside
    // it sorts first but is not the DiT.
    let t = tempfile::tempdir().unwrap();
    tensor(t.path(), "text_encoder.safetensors", "te", 7);
    tensor(t.path(), "weights.safetensors", "w", 4);
    let w = SafetensorsWeights::open(t.path()).unwrap();
    assert_eq!(names(&w), ["w"]);
    // two unknown files: no guess, an error listing them
    tensor(t.path(), "other.safetensors", "o", 4);
    let e = SafetensorsWeights::open(t.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("diffusion_pytorch_model.safetensors")
            && e.contains("other.safetensors")
            && e.contains("weights.safetensors"),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    let e = SafetensorsWeights::open(empty.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no .safetensors file"), "{e}");
}

#[test]
fn param_count_matches_the_config_for_the_embedded_model() {
    let b = ModelBundle::embedded().unwrap();
    assert_eq!(b.weights.param_count(), Some(b.config.num_params()));
    assert_eq!(RandomWeights { seed: 0 }.param_count(), None);
}

#[test]
fn missing_files_print_the_os_error_once() {
    let e = SafetensorsWeights::open(Path::new("/nope/w.safetensors"))
        .err()
        .unwrap();
    let c = chain(&e);
    assert_eq!(c.matches("os error 2").count(), 1, "{c}");
    assert_eq!(c.matches("/nope/w.safetensors").count(), 1, "{c}");
    let e = WanConfig::from_file(Path::new("/nope/config.json")).unwrap_err();
    let c = chain(&e);
    assert_eq!(c.matches("os error 2").count(), 1, "{c}");
}

#[test]
fn garbage_config_is_not_valid_json_with_the_path() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("config.json");
    for bad in ["<html>not json</html>", "{\"dim\": 256,", ""] {
        std::fs::write(&p, bad).unwrap();
        let e = WanConfig::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("not valid JSON") && e.contains(&p.display().to_string()),
            "{bad:?}: {e}"
        );
    }
    // valid JSON with a missing field keeps serde's field name
    std::fs::write(&p, "{}").unwrap();
    let e = WanConfig::from_file(&p).unwrap_err().to_string();
    assert!(
        !e.contains("not valid JSON") && e.contains("`in_dim`"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors_says_so_with_the_path() {
    let t = tempfile::tempdir().unwrap();
    let bytes =
        std::fs::read(Path::new(ASSETS).join("diffusion_pytorch_model.safetensors")).unwrap();
    let p = t.path().join("diffusion_pytorch_model.safetensors");
    for cut in [bytes.len() / 2, 100, 4, 0] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = SafetensorsWeights::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("truncated or not a safetensors file")
                && e.contains(&p.display().to_string()),
            "cut {cut}: {e}"
        );
    }
    std::fs::write(&p, b"not a safetensors file at all").unwrap();
    let e = SafetensorsWeights::open(&p).err().unwrap().to_string();
    assert!(e.contains("truncated or not a safetensors file"), "{e}");
}
