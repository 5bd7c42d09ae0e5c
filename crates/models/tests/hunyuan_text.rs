//! HunyuanVideo's text encoders against the goldens of `tests/fixtures/hunyuan_text/` (made
//! by `tools/make_hunyuan_text_golden.py`: small random transformers `LlamaModel` and
//! `CLIPTextModel` in the diffusers layout, their tokenizers, and the outputs of diffusers'
//! `HunyuanVideoPipeline._get_llama_prompt_embeds` / `_get_clip_prompt_embeds`).

#[path = "support/rel_l2.rs"]
mod rel_l2;

use jenga_models::text::clip_text::ClipTextEncoder;
use jenga_models::text::llama::{LlamaEncoder, LlamaTextOptions, PromptTemplate};
use jenga_models::{ModelError, TextEncoder};
use jenga_tensor::CpuBackend;
use rel_l2::rel_l2;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hunyuan_text"
    ))
}

struct Golden {
    bytes: Vec<u8>,
    meta: serde_json::Value,
}

impl Golden {
    fn open() -> Golden {
        let dir = fixtures();
        let bytes = std::fs::read(dir.join("golden.safetensors")).expect("golden.safetensors");
        let meta = std::fs::read_to_string(dir.join("prompts.json")).expect("prompts.json");
        Golden {
            bytes,
            meta: serde_json::from_str(&meta).unwrap(),
        }
    }
    fn raw(&self, name: &str) -> Vec<[u8; 4]> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        t.data()
            .chunks_exact(4)
            .map(|c| c.try_into().unwrap())
            .collect()
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        self.raw(name).into_iter().map(f32::from_le_bytes).collect()
    }
    fn i32s(&self, name: &str) -> Vec<u32> {
        self.raw(name)
            .into_iter()
            .map(|b| i32::from_le_bytes(b) as u32)
            .collect()
    }
    fn prompts(&self) -> Vec<String> {
        self.meta["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }
    fn opts(&self) -> LlamaTextOptions {
        let crop = self.meta["crop_start"].as_u64().unwrap() as usize;
        assert_eq!(
            self.meta["template"].as_str().unwrap(),
            PromptTemplate::video().template,
            "the golden's template is diffusers' DEFAULT_PROMPT_TEMPLATE"
        );
        LlamaTextOptions {
            template: PromptTemplate {
                crop_start: crop,
                ..PromptTemplate::video()
            },
            max_len: self.meta["max_sequence_length"].as_u64().unwrap() as usize,
            skip: self.meta["num_hidden_layers_to_skip"].as_u64().unwrap() as usize,
        }
    }
}

fn llama(g: &Golden) -> LlamaEncoder<CpuBackend> {
    let dir = fixtures();
    LlamaEncoder::load_with(
        CpuBackend::new().into(),
        &dir.join("text_encoder"),
        &dir.join("tokenizer"),
        g.opts(),
    )
    .unwrap()
}

#[test]
fn llama_states_and_mask_match_diffusers() {
    let g = Golden::open();
    let enc = llama(&g);
    // the fixture tokenizer's crop, measured as diffusers' template would need it
    assert_eq!(
        enc.opts.template.measure_crop(&enc.tokenizer).unwrap(),
        enc.opts.template.crop_start
    );
    assert_eq!((enc.max_len(), enc.dim()), (256, 128));
    for (i, p) in g.prompts().iter().enumerate() {
        let (ids, len) = enc.tokens(p).unwrap();
        assert_eq!(ids, g.i32s(&format!("llama_ids_{i}")), "prompt {i}: ids");
        let s = enc.encode(p).unwrap();
        let want_mask: Vec<bool> = g
            .i32s(&format!("llama_mask_{i}"))
            .iter()
            .map(|&m| m != 0)
            .collect();
        assert_eq!(s.mask, want_mask, "prompt {i}: mask");
        let kept = s.mask.iter().filter(|&&m| m).count();
        assert_eq!(kept, len.saturating_sub(enc.opts.template.crop_start));
        if i == 0 {
            assert!(kept < 256, "the short prompt is padded");
        } else {
            assert_eq!(kept, 256, "the long prompt is truncated");
        }
        let want = g.f32s(&format!("llama_states_{i}"));
        assert_eq!((s.len, s.dim, s.states.len()), (256, 128, want.len()));
        let e = rel_l2(&s.states, &want);
        eprintln!("llama prompt {i}: {kept} tokens, rel-L2 {e:.2e}");
        assert!(e <= 1e-5, "prompt {i}: rel-L2 {e}");
    }
}

#[test]
fn clip_pooled_matches_diffusers() {
    let g = Golden::open();
    let dir = fixtures();
    let enc = ClipTextEncoder::<CpuBackend>::load_pipeline(CpuBackend::new().into(), &dir).unwrap();
    for (i, p) in g.prompts().iter().enumerate() {
        assert_eq!(
            enc.tokens(p).unwrap(),
            g.i32s(&format!("clip_ids_{i}")),
            "prompt {i}: ids"
        );
        let got = enc.encode(p).unwrap();
        let want = g.f32s(&format!("clip_pooled_{i}"));
        let e = rel_l2(&got, &want);
        eprintln!("clip prompt {i}: rel-L2 {e:.2e}");
        assert!(e <= 1e-5, "prompt {i}: rel-L2 {e}");
    }
}

/// A copy of the fixture folder `name` in a temp dir, for breaking it.
fn copy(name: &str, tag: &str) -> PathBuf {
    let to = std::env::temp_dir().join(format!("jenga-hunyuan-text-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

fn drop_tensor(dir: &Path, file: &str, name: &str) {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != name)
        .collect();
    safetensors::serialize_to_file(kept, &None, &path).unwrap();
}

#[test]
fn missing_tensor_and_bad_tokenizer_are_one_clear_error() {
    let g = Golden::open();
    let be = || std::sync::Arc::new(CpuBackend::new());
    let te = copy("text_encoder", "te");
    drop_tensor(&te, "model.safetensors", "layers.1.self_attn.k_proj.weight");
    let err = LlamaEncoder::load_with(be(), &te, &fixtures().join("tokenizer"), g.opts())
        .err()
        .expect("a missing tensor fails");
    assert!(
        matches!(err, ModelError::Missing { .. })
            && err.to_string().contains("layers.1.self_attn.k_proj.weight"),
        "{err}"
    );
    // the layers past `num_layers − skip` are not read: their absence is fine
    let te3 = copy("text_encoder", "te3");
    drop_tensor(&te3, "model.safetensors", "layers.3.mlp.up_proj.weight");
    assert!(LlamaEncoder::load_with(be(), &te3, &fixtures().join("tokenizer"), g.opts()).is_ok());

    let te2 = copy("text_encoder_2", "te2");
    drop_tensor(&te2, "model.safetensors", "final_layer_norm.weight");
    let err = ClipTextEncoder::<CpuBackend>::load(be(), &te2, &fixtures().join("tokenizer_2"))
        .err()
        .expect("a missing tensor fails");
    assert!(err.to_string().contains("final_layer_norm.weight"), "{err}");

    let tok = copy("tokenizer", "tok");
    std::fs::write(tok.join("tokenizer.json"), b"{\"model\": 3}").unwrap();
    let err = LlamaEncoder::load_with(be(), &fixtures().join("text_encoder"), &tok, g.opts())
        .err()
        .expect("a bad tokenizer fails");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("not a tokenizers tokenizer.json"),
        "{msg}"
    );
    let none = std::env::temp_dir().join("jenga-hunyuan-text-no-such-dir");
    let err = ClipTextEncoder::<CpuBackend>::load(be(), &fixtures().join("text_encoder_2"), &none)
        .err()
        .expect("a missing tokenizer fails");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    for d in [te, te3, te2, tok] {
        let _ = std::fs::remove_dir_all(d);
    }
}
