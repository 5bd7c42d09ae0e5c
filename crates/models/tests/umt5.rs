//! umT5 encoder and tokenizer against the goldens of `tests/fixtures/umt5/` (made by
//! `tools/make_umt5_golden.py`: a small random transformers `UMT5EncoderModel` saved with
//! `save_pretrained`, the same weights under Wan's T5 names, an umT5-shaped `tokenizer.json`).

use jenga_models::text::umt5::relative_bucket;
use jenga_models::{
    wan_clean, ModelError, RawTensor, Result, SafetensorsWeights, TextEncoder, Umt5Config,
    Umt5Encoder, Umt5Keys, Umt5Text, Umt5Tokenizer, WeightSource,
};
use jenga_tensor::{Backend, CpuBackend, TensorMeta};
use std::path::PathBuf;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/umt5"
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
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        (t.shape().to_vec(), t.data().to_vec())
    }
    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (s, b) = self.tensor(name);
        let v = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (s, v)
    }
    fn ids(&self, name: &str) -> Vec<u32> {
        let (_, b) = self.tensor(name);
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    }
    fn usize(&self, k: &str) -> usize {
        self.meta[k].as_u64().unwrap() as usize
    }
    fn prompts(&self) -> Vec<String> {
        strings(&self.meta["prompts"])
    }
    fn cfg(&self) -> Umt5Config {
        Umt5Config {
            vocab_size: self.usize("vocab_size"),
            d_model: self.usize("d_model"),
            num_heads: self.usize("num_heads"),
            d_kv: self.usize("d_kv"),
            d_ff: self.usize("d_ff"),
            num_layers: self.usize("num_layers"),
            num_buckets: 32,
            max_distance: 128,
            eps: 1e-6,
        }
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// (max abs, rel-L2) of `a` against the reference `b`.
fn errors(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den, mut mx) = (0f64, 0f64, 0f32);
    for (x, y) in a.iter().zip(b) {
        mx = mx.max((x - y).abs());
        num += ((x - y) as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (mx, (num / den.max(1e-30)).sqrt() as f32)
}

fn open(rel: &str) -> SafetensorsWeights {
    SafetensorsWeights::open(&fixtures().join(rel)).unwrap()
}

#[test]
fn ids_match_the_python_tokenizer_after_wan_cleaning() {
    let g = Golden::open();
    let tok = Umt5Tokenizer::from_dir(&fixtures(), g.usize("text_len")).unwrap();
    let cleaned = strings(&g.meta["cleaned"]);
    for (i, p) in g.prompts().iter().enumerate() {
        assert_eq!(wan_clean(p), cleaned[i], "cleaning of prompt {i}");
        let ids = tok.encode(p).unwrap();
        assert_eq!(ids, g.ids(&format!("ids_{i}")), "prompt {i}: {p:?}");
        assert_eq!(ids.last(), Some(&1), "ends with </s>");
    }
    // untruncated (the long prompt runs past the text length)
    let long = Umt5Tokenizer::from_dir(&fixtures(), 4096).unwrap();
    assert_eq!(
        long.encode(g.prompts().last().unwrap()).unwrap(),
        g.ids("long_ids")
    );
}

#[test]
fn relative_buckets_match_torch() {
    let g = Golden::open();
    let want = g.ids("buckets");
    for (k, &b) in want.iter().enumerate() {
        let rel = k as i64 - 600;
        assert_eq!(relative_bucket(rel, 32, 128), b as usize, "rel {rel}");
    }
}

fn check_hidden(model: &Umt5Encoder<CpuBackend>, g: &Golden, key: &str, ids_key: &str) -> f32 {
    let be = CpuBackend::new();
    let ids = g.ids(ids_key);
    let (shape, want) = g.f32s(key);
    let out = model.forward(&be, &ids).unwrap();
    assert_eq!(out.shape(), shape.as_slice(), "{key}");
    let (mx, rel) = errors(&be.download(&out).unwrap(), &want);
    println!(
        "{key}: {} tokens, max abs {mx:.2e}, rel-L2 {rel:.2e}",
        ids.len()
    );
    assert!(
        mx <= 1e-4 && rel <= 1e-4,
        "{key}: max abs {mx}, rel-L2 {rel}"
    );
    rel
}

#[test]
fn hidden_states_match_transformers_in_both_namings() {
    let g = Golden::open();
    let be = CpuBackend::new();
    let cfg = g.cfg();
    for (file, naming) in [
        ("hf/model.safetensors", "transformers"),
        ("wan.safetensors", "original"),
    ] {
        let src = open(file);
        let model = Umt5Encoder::load(&be, &cfg, &src).unwrap();
        assert_eq!(model.naming(), naming, "{file}");
        for i in 0..g.prompts().len() {
            check_hidden(&model, &g, &format!("hidden_{i}"), &format!("ids_{i}"));
        }
        // 170+ tokens: relative positions past max_distance
        check_hidden(&model, &g, "long_hidden", "long_ids");
    }
}

#[test]
fn an_encoder_loaded_for_its_prompts_ids_only_gives_the_same_states() {
    let g = Golden::open();
    let be = CpuBackend::new();
    let cfg = g.cfg();
    for file in [
        "hf/model.safetensors",
        "hf_bf16/model.safetensors",
        "wan.safetensors",
    ] {
        let src = open(file);
        let ids: Vec<Vec<u32>> = (0..g.prompts().len())
            .map(|i| g.ids(&format!("ids_{i}")))
            .collect();
        let all: Vec<u32> = ids.iter().flatten().copied().collect();
        let whole = Umt5Encoder::load(&be, &cfg, &src).unwrap();
        let rows = Umt5Encoder::load_rows(&be, &cfg, &src, &all).unwrap();
        for i in &ids {
            let a = be.download(&whole.forward(&be, i).unwrap()).unwrap();
            let b = be.download(&rows.forward(&be, i).unwrap()).unwrap();
            assert_eq!(a, b, "{file}");
        }
        // an id whose row was not loaded is an error, not a wrong row
        let missing = (0..cfg.vocab_size as u32)
            .find(|i| !all.contains(i))
            .unwrap();
        let e = rows.forward(&be, &[missing]).err().unwrap().to_string();
        assert!(e.contains("not loaded"), "{e}");
    }
}

#[test]
fn bf16_checkpoint_matches_transformers_in_bf16() {
    let g = Golden::open();
    let be = CpuBackend::new();
    let src = open("hf_bf16/model.safetensors");
    let model = Umt5Encoder::load(&be, &g.cfg(), &src).unwrap();
    for i in 0..g.prompts().len() {
        let (_, want) = g.f32s(&format!("hidden_bf16_{i}"));
        let (_, f32_ref) = g.f32s(&format!("hidden_{i}"));
        let out = be
            .download(&model.forward(&be, &g.ids(&format!("ids_{i}"))).unwrap())
            .unwrap();
        let (mx, rel) = errors(&out, &want);
        let (_, rel_f32) = errors(&out, &f32_ref);
        println!("bf16 prompt {i}: vs transformers bf16 max abs {mx:.2e} rel-L2 {rel:.2e}; vs f32 rel-L2 {rel_f32:.2e}");
        assert!(rel <= 2e-2, "prompt {i}: rel-L2 {rel}");
        assert!(rel_f32 <= 2e-2, "prompt {i}: rel-L2 vs f32 {rel_f32}");
    }
}

#[test]
fn text_encoder_trims_and_zero_pads_as_wan() {
    let g = Golden::open();
    let text_len = g.usize("text_len");
    let src = open("wan.safetensors");
    let te = Umt5Text::load(
        Arc::new(CpuBackend::new()),
        &g.cfg(),
        &src,
        &fixtures().join("tokenizer.json"),
        text_len,
    )
    .unwrap();
    assert_eq!((te.max_len(), te.dim()), (text_len, g.cfg().d_model));
    let enc: &dyn TextEncoder = &te;
    for (i, p) in g.prompts().iter().enumerate() {
        let out = enc.encode(p).unwrap();
        let (shape, want) = g.f32s(&format!("padded_{i}"));
        assert_eq!(shape, [out.len, out.dim]);
        let n = g.ids(&format!("ids_{i}")).len();
        assert_eq!(out.mask.iter().filter(|&&m| m).count(), n);
        assert!(out.mask[..n].iter().all(|&m| m));
        assert!(out.states[n * out.dim..].iter().all(|&x| x == 0.0));
        let (mx, rel) = errors(&out.states, &want);
        assert!(mx <= 1e-4 && rel <= 1e-4, "prompt {i}: {mx} {rel}");
    }
}

/// A source without one tensor.
struct Without<'a>(&'a dyn WeightSource, &'a str);

impl WeightSource for Without<'_> {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.hide(name)?;
        self.0.load(name, shape)
    }
    fn raw(&self, name: &str, expected: &[usize]) -> Result<RawTensor<'_>> {
        self.hide(name)?;
        self.0.raw(name, expected)
    }
    fn contains(&self, name: &str) -> bool {
        name != self.1 && self.0.contains(name)
    }
    fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.0.file_of(name)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

impl Without<'_> {
    fn hide(&self, name: &str) -> Result<()> {
        if name == self.1 {
            return Err(ModelError::Missing {
                name: name.into(),
                files: self.describe(),
            });
        }
        Ok(())
    }
}

#[test]
fn missing_tokenizer_or_tensor_is_one_clear_error() {
    let g = Golden::open();
    let be = CpuBackend::new();
    let dir = tempfile::tempdir().unwrap();
    let e = Umt5Tokenizer::from_dir(dir.path(), 512).err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.path().join("tokenizer.json").display().to_string())
            && msg.contains("umT5 tokenizer"),
        "{msg}"
    );
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{\"not\": \"a tokenizer\"}").unwrap();
    let msg = Umt5Tokenizer::from_file(&bad, 512)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("not a tokenizers"),
        "{msg}"
    );

    let hf = open("hf/model.safetensors");
    for (src, hidden, shown) in [
        (
            &hf as &dyn WeightSource,
            "encoder.block.1.layer.1.DenseReluDense.wo.weight",
            "`encoder.block.1.layer.1.DenseReluDense.wo.weight` (`blocks.1.ffn.fc2.weight` in the original naming)",
        ),
        (
            &hf,
            "encoder.block.2.layer.0.SelfAttention.relative_attention_bias.weight",
            "`encoder.block.2.layer.0.SelfAttention.relative_attention_bias.weight`",
        ),
    ] {
        let src = Without(src, hidden);
        let e = Umt5Encoder::load(&be, &g.cfg(), &src).err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains(shown) && msg.contains("model.safetensors"),
            "{msg}"
        );
    }
    // ids outside the vocabulary are an error, not a panic
    let model = Umt5Encoder::load(&be, &g.cfg(), &hf).unwrap();
    let e = model.forward(&be, &[1, 100_000]).err().unwrap();
    assert!(e.to_string().contains("100000"), "{e}");
    assert!(model.forward(&be, &[]).is_err());
}

#[test]
fn transformers_checkpoint_with_the_tied_copy_only() {
    // Some exports keep `encoder.embed_tokens.weight` and drop `shared.weight`.
    let hf = open("hf/model.safetensors");
    let renamed = Renamed(&hf);
    assert_eq!(
        Umt5Keys::detect(&renamed),
        Umt5Keys::Transformers { embed_tokens: true }
    );
    let g = Golden::open();
    let model = Umt5Encoder::load(&CpuBackend::new(), &g.cfg(), &renamed).unwrap();
    check_hidden(&model, &g, "hidden_0", "ids_0");
}

/// `shared.weight` stored as `encoder.embed_tokens.weight`.
struct Renamed<'a>(&'a dyn WeightSource);

impl Renamed<'_> {
    fn name(name: &str) -> &str {
        match name {
            "encoder.embed_tokens.weight" => "shared.weight",
            "shared.weight" => "absent",
            n => n,
        }
    }
}

impl WeightSource for Renamed<'_> {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.0.load(Self::name(name), shape)
    }
    fn raw(&self, name: &str, expected: &[usize]) -> Result<RawTensor<'_>> {
        self.0.raw(Self::name(name), expected)
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(Self::name(name))
    }
    fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.0.file_of(Self::name(name))
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}
