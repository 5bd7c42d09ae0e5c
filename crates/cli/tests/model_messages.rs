//! `--model DIR` mistakes end in one line that names the file once and the OS error once.

mod common;
use common::jenga;
use std::path::Path;

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/tiny-wan");

fn inspect_fails(m: &Path) -> String {
    let (ok, _, err) = jenga(&["inspect", "--model", m.to_str().unwrap()]);
    assert!(
        !ok && err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

#[test]
fn garbage_config_truncated_weights_and_missing_shards() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("model");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("config.json"), "<html>502 Bad Gateway</html>").unwrap();
    let e = inspect_fails(&m);
    assert!(e.contains("config.json: not valid JSON"), "{e}");
    assert_eq!(e.matches("config.json").count(), 1, "{e}");

    std::fs::copy(Path::new(ASSETS).join("config.json"), m.join("config.json")).unwrap();
    let bytes =
        std::fs::read(Path::new(ASSETS).join("diffusion_pytorch_model.safetensors")).unwrap();
    let w = m.join("diffusion_pytorch_model.safetensors");
    std::fs::write(&w, &bytes[..64]).unwrap();
    let e = inspect_fails(&m);
    assert!(
        e.contains("diffusion_pytorch_model.safetensors: truncated or not a safetensors file"),
        "{e}"
    );

    // an index naming a shard that is not there: the path and the OS error once each
    std::fs::remove_file(&w).unwrap();
    std::fs::write(
        m.join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map":{"a":"gone-00001-of-00001.safetensors"}}"#,
    )
    .unwrap();
    let e = inspect_fails(&m);
    assert_eq!(e.matches("gone-00001-of-00001").count(), 1, "{e}");
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
}
