//! umT5 encoder (Wan2.1's text encoder, umT5-XXL: 24 layers, d_model 4096, 64 heads × 64,
//! gated-GELU FFN 10240, 256384 vocab), written once against the [`Backend`] ops.
//!
//! As transformers' `UMT5EncoderModel` and Wan's `wan/modules/t5.py` (`T5Encoder` with
//! `shared_pos=False`): token embedding; per layer `x += o(attn(q, k, v; bias))` on the T5
//! RMS norm of x, then `x += fc2(fc1(n) · gelu_tanh(gate(n)))` on the next norm; a final
//! norm. T5 specifics: no 1/√d score scaling, no biases, RMS norm without mean (eps 1e-6),
//! and every layer has its own relative-position bias table `[32 buckets, heads]`
//! (bidirectional buckets, max distance 128) added to the scores.
//!
//! The model runs on the prompt's own tokens: the reference pads to `text_len` with the mask,
//! and masked keys change nothing in the prompt's rows, which are all Wan keeps. The struct
//! owns its weights: dropping it frees them (before the DiT runs).
//!
//! Names are written as Wan's (`blocks.N.attn.q.weight`, the original
//! `models_t5_umt5-xxl-enc-bf16.pth`); [`Umt5Keys::Transformers`] maps them to
//! `UMT5EncoderModel`'s (`encoder.block.N.layer.0.SelfAttention.q.weight`, diffusers'
//! `text_encoder/`).

use super::tokenizer::Umt5Tokenizer;
use super::{TextEncoder, TextStates};
use crate::nn::{Embedding, KeyMap, Linear, RmsNorm, VarBuilder};
use crate::{ModelError, Result, WeightSource};
use jenga_tensor::{Act, Backend};
use serde_json::Value;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// umT5 encoder geometry (transformers' `UMT5Config` fields that the encoder uses).
#[derive(Clone, Debug, PartialEq)]
pub struct Umt5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub num_heads: usize,
    /// Per-head width (`d_kv`); the attention width is `num_heads · d_kv`.
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_buckets: usize,
    pub max_distance: usize,
    pub eps: f32,
}

impl Umt5Config {
    /// umT5-XXL as Wan2.1 uses it (`wan/modules/t5.py` `umt5_xxl`, google/umt5-xxl).
    pub fn xxl() -> Self {
        Umt5Config {
            vocab_size: 256384,
            d_model: 4096,
            num_heads: 64,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_buckets: 32,
            max_distance: 128,
            eps: 1e-6,
        }
    }

    /// From a transformers `config.json` (`UMT5Config`, e.g. diffusers' `text_encoder/`).
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
            path: path.into(),
            detail: format!("cannot read the umT5 config: {e}"),
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.into(),
            detail: format!("umT5 config: {e}"),
        })?;
        Self::from_hf_json(&v).map_err(|detail| ModelError::Config {
            path: path.into(),
            detail,
        })
    }

    pub fn from_hf_json(v: &Value) -> std::result::Result<Self, String> {
        let int = |k: &str, default: Option<usize>| -> std::result::Result<usize, String> {
            match v.get(k) {
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("`{k}` is {x}, expected a positive integer")),
                None => default.ok_or_else(|| format!("`{k}` missing")),
            }
        };
        let ffp = v
            .get("feed_forward_proj")
            .and_then(Value::as_str)
            .unwrap_or("gated-gelu");
        if ffp != "gated-gelu" {
            return Err(format!(
                "feed_forward_proj {ffp:?}: only umT5's gated-gelu is supported"
            ));
        }
        Ok(Umt5Config {
            vocab_size: int("vocab_size", None)?,
            d_model: int("d_model", None)?,
            num_heads: int("num_heads", None)?,
            d_kv: int("d_kv", None)?,
            d_ff: int("d_ff", None)?,
            num_layers: int("num_layers", None)?,
            num_buckets: int("relative_attention_num_buckets", Some(32))?,
            max_distance: int("relative_attention_max_distance", Some(128))?,
            eps: v
                .get("layer_norm_epsilon")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6) as f32,
        })
    }

    /// The geometry from the tensor shapes (checkpoints without a config: the original
    /// `.pth` and ComfyUI files), in either naming; `file` names the weights in errors.
    /// umT5-XXL's shapes give [`Umt5Config::xxl`].
    pub fn from_shapes(src: &dyn WeightSource, file: &Path) -> Result<Self> {
        let keys = Umt5Keys::detect(src);
        let shape = |n: &str| {
            let stored = keys.stored_key(n);
            src.info(&stored)
                .map(|i| i.shape)
                .filter(|s| s.len() == 2)
                .ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "{}: tensor `{stored}` not found or not 2-D: not a umT5 encoder",
                        file.display()
                    ))
                })
        };
        let emb = shape("token_embedding.weight")?;
        let q = shape("blocks.0.attn.q.weight")?;
        let fc1 = shape("blocks.0.ffn.fc1.weight")?;
        let bias = shape("blocks.0.pos_embedding.embedding.weight")?;
        let num_layers = (0..)
            .take_while(|i| src.contains(&keys.stored_key(&format!("blocks.{i}.attn.q.weight"))))
            .count();
        let num_heads = bias[1];
        if num_heads == 0 || q[0] % num_heads != 0 {
            return Err(ModelError::Invalid(format!(
                "{}: attention width {} is not a multiple of the {num_heads} heads of the position bias",
                file.display(),
                q[0]
            )));
        }
        Ok(Umt5Config {
            vocab_size: emb[0],
            d_model: emb[1],
            num_heads,
            d_kv: q[0] / num_heads,
            d_ff: fc1[0],
            num_layers,
            num_buckets: bias[0],
            ..Umt5Config::xxl()
        })
    }

    pub fn inner(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Parameters of the encoder (for `jenga inspect`).
    pub fn parameters(&self) -> usize {
        let (d, a, f) = (self.d_model, self.inner(), self.d_ff);
        let layer = 4 * d * a + 3 * d * f + 2 * d + self.num_buckets * self.num_heads;
        self.vocab_size * d + self.num_layers * layer + d
    }
}

/// How a umT5 checkpoint names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Umt5Keys {
    /// Wan's `T5Encoder` (`token_embedding.weight`, `blocks.N.attn.q.weight`, …): the
    /// original `models_t5_umt5-xxl-enc-bf16.pth`. The names the model is written with.
    Wan,
    /// transformers' `UMT5EncoderModel` (`shared.weight`, `encoder.block.N.layer.0.…`), as
    /// `save_pretrained` writes it; `embed_tokens`: the embedding is stored as
    /// `encoder.embed_tokens.weight` (the tied copy) instead of `shared.weight`.
    Transformers { embed_tokens: bool },
}

impl Umt5Keys {
    /// Which naming `src` uses, from its keys.
    pub fn detect(src: &dyn WeightSource) -> Umt5Keys {
        if src.contains("token_embedding.weight") || src.contains("blocks.0.attn.q.weight") {
            Umt5Keys::Wan
        } else {
            Umt5Keys::Transformers {
                embed_tokens: !src.contains("shared.weight")
                    && src.contains("encoder.embed_tokens.weight"),
            }
        }
    }
}

/// A Wan umT5 key → its `UMT5EncoderModel` name (unknown keys are returned as they are).
pub fn to_transformers(key: &str) -> String {
    match key {
        "token_embedding.weight" => return "shared.weight".into(),
        "norm.weight" => return "encoder.final_layer_norm.weight".into(),
        _ => {}
    }
    let Some((i, rest)) = key.strip_prefix("blocks.").and_then(|r| r.split_once('.')) else {
        return key.into();
    };
    let (sub, name) = match rest {
        "norm1.weight" => (0, "layer_norm.weight"),
        "attn.q.weight" => (0, "SelfAttention.q.weight"),
        "attn.k.weight" => (0, "SelfAttention.k.weight"),
        "attn.v.weight" => (0, "SelfAttention.v.weight"),
        "attn.o.weight" => (0, "SelfAttention.o.weight"),
        "pos_embedding.embedding.weight" => (0, "SelfAttention.relative_attention_bias.weight"),
        "norm2.weight" => (1, "layer_norm.weight"),
        "ffn.gate.0.weight" => (1, "DenseReluDense.wi_0.weight"),
        "ffn.fc1.weight" => (1, "DenseReluDense.wi_1.weight"),
        "ffn.fc2.weight" => (1, "DenseReluDense.wo.weight"),
        _ => return key.into(),
    };
    format!("encoder.block.{i}.layer.{sub}.{name}")
}

impl KeyMap for Umt5Keys {
    fn stored_key(&self, key: &str) -> String {
        match self {
            Umt5Keys::Wan => key.into(),
            Umt5Keys::Transformers { embed_tokens: true } if key == "token_embedding.weight" => {
                "encoder.embed_tokens.weight".into()
            }
            Umt5Keys::Transformers { .. } => to_transformers(key),
        }
    }
    fn naming(&self) -> &'static str {
        match self {
            Umt5Keys::Wan => "original",
            Umt5Keys::Transformers { .. } => "transformers",
        }
    }
}

/// T5's bidirectional relative-position bucket of `rel = key − query` (transformers'
/// `_relative_position_bucket`, `is_decoder=False`): half the buckets per sign; within a half,
/// exact for |rel| < half/2, then logarithmic up to `max_distance`, the last bucket beyond.
/// The log is taken in f32 as torch does, so the boundaries fall where the reference's do.
pub fn relative_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let base = if rel > 0 { half } else { 0 };
    let n = rel.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        return base + n;
    }
    let ratio = (n as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32)
        * (half - max_exact) as f32;
    base + (max_exact + ratio as usize).min(half - 1)
}

struct Layer<B: Backend> {
    norm1: RmsNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    /// `[num_buckets, heads]` on the host: the `[heads, L, L]` bias is built per prompt.
    rel: Vec<f32>,
    norm2: RmsNorm<B>,
    gate: Linear<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The umT5 encoder's weights on a backend.
pub struct Umt5Encoder<B: Backend> {
    pub cfg: Umt5Config,
    embed: Embedding<B>,
    layers: Vec<Layer<B>>,
    norm: RmsNorm<B>,
    naming: &'static str,
}

impl<B: Backend> Umt5Encoder<B> {
    /// Weights from `src`, in either naming ([`Umt5Keys::detect`]).
    pub fn load(be: &B, cfg: &Umt5Config, src: &dyn WeightSource) -> Result<Self> {
        let keys = Umt5Keys::detect(src);
        Self::from_builder(&VarBuilder::with_keys(be, src, &keys), cfg)
    }

    /// As [`Umt5Encoder::load`] with only the embedding rows of `ids` (the prompts' tokens):
    /// 1.05e9 of umT5-XXL's 5.68e9 parameters stay in the file.
    pub fn load_rows(
        be: &B,
        cfg: &Umt5Config,
        src: &dyn WeightSource,
        ids: &[u32],
    ) -> Result<Self> {
        let keys = Umt5Keys::detect(src);
        Self::build(&VarBuilder::with_keys(be, src, &keys), cfg, Some(ids))
    }

    pub fn from_builder(vb: &VarBuilder<B>, cfg: &Umt5Config) -> Result<Self> {
        Self::build(vb, cfg, None)
    }

    fn build(vb: &VarBuilder<B>, cfg: &Umt5Config, ids: Option<&[u32]>) -> Result<Self> {
        let (d, a, f) = (cfg.d_model, cfg.inner(), cfg.d_ff);
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = vb.pp("blocks").pp(i);
            let (at, ffn) = (b.pp("attn"), b.pp("ffn"));
            layers.push(Layer {
                norm1: RmsNorm::new(&b.pp("norm1"), d, cfg.eps)?,
                q: Linear::no_bias(&at.pp("q"), a, d)?,
                k: Linear::no_bias(&at.pp("k"), a, d)?,
                v: Linear::no_bias(&at.pp("v"), a, d)?,
                o: Linear::no_bias(&at.pp("o"), d, a)?,
                rel: b
                    .pp("pos_embedding")
                    .pp("embedding")
                    .get_host(&[cfg.num_buckets, cfg.num_heads], "weight")?,
                norm2: RmsNorm::new(&b.pp("norm2"), d, cfg.eps)?,
                gate: Linear::no_bias(&ffn.pp("gate").pp(0), f, d)?,
                fc1: Linear::no_bias(&ffn.pp("fc1"), f, d)?,
                fc2: Linear::no_bias(&ffn.pp("fc2"), d, f)?,
            });
        }
        Ok(Umt5Encoder {
            cfg: cfg.clone(),
            embed: match ids {
                Some(ids) => Embedding::rows(&vb.pp("token_embedding"), cfg.vocab_size, d, ids)?,
                None => Embedding::new(&vb.pp("token_embedding"), cfg.vocab_size, d)?,
            },
            layers,
            norm: RmsNorm::new(&vb.pp("norm"), d, cfg.eps)?,
            naming: vb.naming(),
        })
    }

    /// The naming the weights were found under ("original" / "transformers").
    pub fn naming(&self) -> &'static str {
        self.naming
    }

    /// One layer's score bias `[heads, n, n]`: `bias[h, i, j] = rel[bucket(j − i), h]`.
    fn position_bias(&self, layer: &Layer<B>, n: usize) -> Vec<f32> {
        let (h, nb) = (self.cfg.num_heads, self.cfg.num_buckets);
        // bucket of rel = j − i, indexed by rel + n − 1
        let buckets: Vec<usize> = (0..2 * n.max(1) - 1)
            .map(|r| relative_bucket(r as i64 - (n as i64 - 1), nb, self.cfg.max_distance))
            .collect();
        let mut out = vec![0f32; h * n * n];
        for (hi, plane) in out.chunks_mut(n * n).enumerate() {
            for (i, row) in plane.chunks_mut(n).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = layer.rel[buckets[j + n - 1 - i] * h + hi];
                }
            }
        }
        out
    }

    /// Last hidden state `[ids.len(), d_model]` of the ids (one prompt, unpadded).
    pub fn forward(&self, be: &B, ids: &[u32]) -> Result<B::Tensor> {
        let c = &self.cfg;
        let n = ids.len();
        if n == 0 {
            return Err(ModelError::Invalid(
                "umT5: no token ids (a prompt always has its </s>)".into(),
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "umT5: token id {bad} outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let (d, hh, dk, f) = (c.d_model, c.num_heads, c.d_kv, c.d_ff);
        let mut x = be.reshape(&self.embed.fwd(be, ids)?, &[1, n, d])?;
        // The gated product fc1(h)·gelu(gate(h)) as `0 + gate·y` of `add_gated`, one row per
        // token (the op vocabulary has no elementwise product of two activations).
        let zeros = be.upload(&vec![0f32; n * f], &[n, 1, f])?;
        for layer in &self.layers {
            let bias = be.upload(&self.position_bias(layer, n), &[hh, n, n])?;
            let h = layer.norm1.fwd(be, &x)?;
            let heads = |l: &Linear<B>| -> Result<B::Tensor> {
                Ok(be.reshape(&l.fwd(be, &h, Act::None)?, &[1, n, hh, dk])?)
            };
            let (q, k, v) = (heads(&layer.q)?, heads(&layer.k)?, heads(&layer.v)?);
            let a = be.attention_biased(&q, &k, &v, &bias, 1.0)?;
            let a = be.reshape(&a, &[1, n, hh * dk])?;
            x = be.add_gated(&x, &layer.o.fwd(be, &a, Act::None)?, None)?;
            let h = layer.norm2.fwd(be, &x)?;
            let g = be.reshape(&layer.gate.fwd(be, &h, Act::GeluTanh)?, &[n, f])?;
            let u = be.reshape(&layer.fc1.fwd(be, &h, Act::None)?, &[n, 1, f])?;
            let p = be.reshape(&be.add_gated(&zeros, &u, Some(&g))?, &[1, n, f])?;
            x = be.add_gated(&x, &layer.fc2.fwd(be, &p, Act::None)?, None)?;
        }
        Ok(be.reshape(&self.norm.fwd(be, &x)?, &[n, d])?)
    }
}

impl<B: Backend> Umt5Encoder<B> {
    /// Ids → `[text_len, d_model]` host rows, zeros past the ids (at most `text_len` ids):
    /// Wan's `text2video.py` trims the encoder's output to the prompt and the DiT pads it
    /// with zeros.
    pub fn encode_padded(&self, be: &B, ids: &[u32], text_len: usize) -> Result<TextStates> {
        let dim = self.cfg.d_model;
        let ids = &ids[..ids.len().min(text_len)];
        let h = be.download(&self.forward(be, ids)?)?;
        let mut states = vec![0f32; text_len * dim];
        states[..h.len()].copy_from_slice(&h);
        let mut mask = vec![false; text_len];
        mask[..ids.len()].iter_mut().for_each(|m| *m = true);
        Ok(TextStates {
            states,
            len: text_len,
            dim,
            mask,
        })
    }
}

/// Prompt → Wan's text context: tokenizer, encoder and the backend it runs on (any handle:
/// `Arc<B>`, `&B`, `Box<B>`), as one [`TextEncoder`] of `text_len` rows.
pub struct Umt5Text<B: Backend, H: Deref<Target = B> + Send + Sync = Arc<B>> {
    pub be: H,
    pub tokenizer: Umt5Tokenizer,
    pub model: Umt5Encoder<B>,
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> Umt5Text<B, H> {
    /// `tokenizer.json` and the weights of `cfg` from `src`; `text_len` rows (Wan: 512).
    pub fn load(
        be: H,
        cfg: &Umt5Config,
        src: &dyn WeightSource,
        tokenizer: &Path,
        text_len: usize,
    ) -> Result<Self> {
        let tokenizer = Umt5Tokenizer::from_file(tokenizer, text_len)?;
        let model = Umt5Encoder::load(&*be, cfg, src)?;
        Ok(Umt5Text {
            be,
            tokenizer,
            model,
        })
    }

    /// Loaded for `prompts` only (their embedding rows, see [`Umt5Encoder::load_rows`]): the
    /// states of each prompt, `[text_len, d_model]` each.
    pub fn encode_once(
        be: H,
        cfg: &Umt5Config,
        src: &dyn WeightSource,
        tokenizer_json: &Path,
        text_len: usize,
        prompts: &[&str],
    ) -> Result<Vec<TextStates>> {
        let tokenizer = Umt5Tokenizer::from_file(tokenizer_json, text_len)?;
        let ids = prompts
            .iter()
            .map(|p| tokenizer.encode(p))
            .collect::<Result<Vec<_>>>()?;
        let all: Vec<u32> = ids.iter().flatten().copied().collect();
        if let Some(&bad) = all.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "{}: token id {bad} outside the text encoder's vocabulary of {}",
                tokenizer_json.display(),
                cfg.vocab_size
            )));
        }
        let model = Umt5Encoder::load_rows(&*be, cfg, src, &all)?;
        ids.iter()
            .map(|i| model.encode_padded(&be, i, text_len))
            .collect()
    }

    /// Ids → `[text_len, d_model]` rows, zeros past the ids.
    pub fn encode_ids(&self, ids: &[u32]) -> Result<TextStates> {
        self.model
            .encode_padded(&self.be, ids, self.tokenizer.max_len)
    }
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> TextEncoder for Umt5Text<B, H> {
    fn encode(&self, prompt: &str) -> Result<TextStates> {
        self.encode_ids(&self.tokenizer.encode(prompt)?)
    }
    fn max_len(&self) -> usize {
        self.tokenizer.max_len
    }
    fn dim(&self) -> usize {
        self.model.cfg.d_model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_transformers() {
        for (w, t) in [
            ("token_embedding.weight", "shared.weight"),
            ("norm.weight", "encoder.final_layer_norm.weight"),
            (
                "blocks.3.attn.q.weight",
                "encoder.block.3.layer.0.SelfAttention.q.weight",
            ),
            (
                "blocks.23.pos_embedding.embedding.weight",
                "encoder.block.23.layer.0.SelfAttention.relative_attention_bias.weight",
            ),
            (
                "blocks.0.norm2.weight",
                "encoder.block.0.layer.1.layer_norm.weight",
            ),
            (
                "blocks.0.ffn.gate.0.weight",
                "encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
            ),
            (
                "blocks.0.ffn.fc1.weight",
                "encoder.block.0.layer.1.DenseReluDense.wi_1.weight",
            ),
            (
                "blocks.0.ffn.fc2.weight",
                "encoder.block.0.layer.1.DenseReluDense.wo.weight",
            ),
        ] {
            assert_eq!(to_transformers(w), t, "{w}");
        }
        let tied = Umt5Keys::Transformers { embed_tokens: true };
        assert_eq!(
            tied.stored_key("token_embedding.weight"),
            "encoder.embed_tokens.weight"
        );
    }

    #[test]
    fn xxl_has_5_7b_parameters() {
        // umT5-XXL's encoder: 5.68e9 parameters (1.05e9 of them the embedding)
        let p = Umt5Config::xxl().parameters() as f64;
        assert!((p / 1e9 - 5.68).abs() < 0.01, "{p}");
    }
}
