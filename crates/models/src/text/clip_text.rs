//! The CLIP text tower as transformers' `CLIPTextModel` (HunyuanVideo's second text encoder,
//! CLIP-L: diffusers' `text_encoder_2/` + `tokenizer_2/`), written against the [`Backend`] ops.
//!
//! Token + learned position embeddings, pre-norm blocks (causal MHA with biases, MLP with
//! quick_gelu), `final_layer_norm`. HunyuanVideo takes the `pooler_output`: the final-normed
//! row of the EOS token, which transformers picks (`CLIPTextTransformer.forward`) as the first
//! position of the **largest id** when the config's `eos_token_id` is 2 (the configs written
//! before transformers PR #24773, openai/clip-vit-large-patch14's; `<|endoftext|>` is the last
//! id), else as the first position of `eos_token_id`. The prompt is tokenized to 77 ids
//! (`<|startoftext|> … <|endoftext|>`, truncated, padded); the model runs causally, so the
//! pooled row depends on the ids up to it only, and only those are computed (diffusers passes
//! no attention mask; with one, Tencent's call, the pooled row is the same).

use super::llama::{positive, read_json, PaddedTokenizer, Prefix};
use crate::nn::{gelu_exact, Embedding, LayerNorm, Linear, VarBuilder};
use crate::{ModelError, Result, SafetensorsWeights, WeightSource};
use jenga_tensor::{Act, AttnMask, Backend, TensorMeta};
use serde_json::Value;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// The MLP activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipAct {
    /// `x·σ(1.702x)` (CLIP-L).
    QuickGelu,
    /// Exact GELU.
    Gelu,
}

/// `CLIPTextConfig`'s fields the tower uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_positions: usize,
    pub eps: f32,
    pub act: ClipAct,
    /// 2: the legacy pooling (argmax of the ids); else the id pooled on.
    pub eos_token_id: u32,
}

impl ClipTextConfig {
    /// openai/clip-vit-large-patch14's text tower (HunyuanVideo's `text_encoder_2/`).
    pub fn clip_l() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden: 768,
            intermediate: 3072,
            layers: 12,
            heads: 12,
            max_positions: 77,
            eps: 1e-5,
            act: ClipAct::QuickGelu,
            eos_token_id: 2,
        }
    }

    /// A transformers `config.json` (`CLIPTextConfig`, or a `CLIPConfig` with `text_config`).
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let v = read_json(path, "CLIP text config")?;
        Self::from_hf_json(&v).map_err(|detail| ModelError::Config {
            path: path.into(),
            detail,
        })
    }

    pub fn from_hf_json(v: &Value) -> std::result::Result<Self, String> {
        let v = v.get("text_config").unwrap_or(v);
        let act = match v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu")
        {
            "quick_gelu" => ClipAct::QuickGelu,
            "gelu" => ClipAct::Gelu,
            other => return Err(format!("hidden_act {other:?}: only quick_gelu and gelu")),
        };
        let int = |k: &str| positive(v, k);
        let cfg = ClipTextConfig {
            vocab_size: int("vocab_size")?,
            hidden: int("hidden_size")?,
            intermediate: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads: int("num_attention_heads")?,
            max_positions: int("max_position_embeddings")?,
            eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5) as f32,
            act,
            eos_token_id: v.get("eos_token_id").and_then(Value::as_u64).unwrap_or(2) as u32,
        };
        if !cfg.hidden.is_multiple_of(cfg.heads) {
            return Err(format!(
                "hidden {} is not a multiple of the {} heads",
                cfg.hidden, cfg.heads
            ));
        }
        Ok(cfg)
    }

    /// The position transformers pools on for these ids (see the module doc).
    pub fn pooled_position(&self, ids: &[u32]) -> usize {
        let first = |want: u32| ids.iter().position(|&i| i == want).unwrap_or(0);
        if self.eos_token_id == 2 {
            ids.iter().copied().max().map_or(0, first)
        } else {
            first(self.eos_token_id)
        }
    }
}

struct Layer<B: Backend> {
    ln1: LayerNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The CLIP text tower's weights on a backend.
pub struct ClipTextModel<B: Backend> {
    pub cfg: ClipTextConfig,
    token: Embedding<B>,
    position: Embedding<B>,
    layers: Vec<Layer<B>>,
    final_norm: LayerNorm<B>,
}

impl<B: Backend> ClipTextModel<B> {
    /// transformers' names, with or without the `text_model.` prefix (older `save_pretrained`).
    pub fn load(be: &B, cfg: &ClipTextConfig, src: &dyn WeightSource) -> Result<Self> {
        let keys = if src.contains("text_model.embeddings.token_embedding.weight") {
            Prefix("text_model.")
        } else {
            Prefix("")
        };
        let vb = VarBuilder::with_keys(be, src, &keys);
        let (d, f) = (cfg.hidden, cfg.intermediate);
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let l = vb.pp("encoder").pp("layers").pp(i);
            let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
            layers.push(Layer {
                ln1: LayerNorm::new(&l.pp("layer_norm1"), d, cfg.eps)?,
                q: Linear::new(&a.pp("q_proj"), d, d)?,
                k: Linear::new(&a.pp("k_proj"), d, d)?,
                v: Linear::new(&a.pp("v_proj"), d, d)?,
                o: Linear::new(&a.pp("out_proj"), d, d)?,
                ln2: LayerNorm::new(&l.pp("layer_norm2"), d, cfg.eps)?,
                fc1: Linear::new(&m.pp("fc1"), f, d)?,
                fc2: Linear::new(&m.pp("fc2"), d, f)?,
            });
        }
        let emb = vb.pp("embeddings");
        Ok(ClipTextModel {
            token: Embedding::new(&emb.pp("token_embedding"), cfg.vocab_size, d)?,
            position: Embedding::new(&emb.pp("position_embedding"), cfg.max_positions, d)?,
            layers,
            final_norm: LayerNorm::new(&vb.pp("final_layer_norm"), d, cfg.eps)?,
            cfg: cfg.clone(),
        })
    }

    /// `last_hidden_state` `[ids.len(), hidden]` (final-normed) of `ids`, causal, positions
    /// `0..ids.len()`.
    pub fn forward(&self, be: &B, ids: &[u32]) -> Result<B::Tensor> {
        let c = &self.cfg;
        let (n, d, h) = (ids.len(), c.hidden, c.heads);
        if n == 0 || n > c.max_positions {
            return Err(ModelError::Invalid(format!(
                "CLIP text: {n} tokens (1 to {} positions)",
                c.max_positions
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "CLIP text: token id {bad} outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let pos: Vec<u32> = (0..n as u32).collect();
        let x = be.reshape(&self.token.fwd(be, ids)?, &[1, n, d])?;
        let p = be.reshape(&self.position.fwd(be, &pos)?, &[1, n, d])?;
        let mut x = be.add_gated(&x, &p, None)?;
        for l in &self.layers {
            let xn = l.ln1.fwd(be, &x)?;
            let heads = |lin: &Linear<B>| -> Result<B::Tensor> {
                Ok(be.reshape(&lin.fwd(be, &xn, Act::None)?, &[1, n, h, d / h])?)
            };
            let (q, k, v) = (heads(&l.q)?, heads(&l.k)?, heads(&l.v)?);
            let a = be.attention_masked(&q, &k, &v, &AttnMask::Causal, None)?;
            let a = l.o.fwd(be, &be.reshape(&a, &[1, n, d])?, Act::None)?;
            x = be.add_gated(&x, &a, None)?;
            let y = l.fc1.fwd(be, &l.ln2.fwd(be, &x)?, Act::None)?;
            let y = self.activation(be, &y)?;
            x = be.add_gated(&x, &l.fc2.fwd(be, &y, Act::None)?, None)?;
        }
        Ok(be.reshape(&self.final_norm.fwd(be, &x)?, &[n, d])?)
    }

    /// quick_gelu / exact GELU through the host (the op vocabulary has neither; 77 rows once
    /// per prompt).
    fn activation(&self, be: &B, y: &B::Tensor) -> Result<B::Tensor> {
        let shape = y.shape().to_vec();
        let host = be.download(y)?;
        let out: Vec<f32> = match self.cfg.act {
            ClipAct::QuickGelu => host
                .into_iter()
                .map(|x| {
                    let z = 1.702f32 * x;
                    (x as f64 / (1.0 + (-(z as f64)).exp())) as f32
                })
                .collect(),
            ClipAct::Gelu => host.into_iter().map(gelu_exact).collect(),
        };
        Ok(be.upload(&out, &shape)?)
    }

    /// transformers' `pooler_output` `[hidden]` of the padded ids.
    pub fn pooled(&self, be: &B, ids: &[u32]) -> Result<Vec<f32>> {
        let p = self.cfg.pooled_position(ids);
        let h = self.forward(be, &ids[..=p])?;
        Ok(be.download(&be.narrow(&h, 0, p, 1)?)?)
    }
}

/// Prompt → CLIP's pooled vector: tokenizer (77 ids), tower and the backend it runs on.
pub struct ClipTextEncoder<B: Backend, H: Deref<Target = B> + Send + Sync = Arc<B>> {
    pub be: H,
    pub tokenizer: PaddedTokenizer,
    pub model: ClipTextModel<B>,
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> ClipTextEncoder<B, H> {
    /// diffusers' layout: `text_encoder_2` (`config.json`, `model.safetensors` or shards) and
    /// `tokenizer_2` (`tokenizer.json`, `tokenizer_config.json`); `max_position_embeddings`
    /// ids (77).
    pub fn load(be: H, text_encoder: &Path, tokenizer: &Path) -> Result<Self> {
        let cfg = ClipTextConfig::from_hf_file(&text_encoder.join("config.json"))?;
        let tokenizer = PaddedTokenizer::from_dir(tokenizer, cfg.max_positions)?;
        let src = SafetensorsWeights::open(text_encoder)?;
        let model = ClipTextModel::load(&*be, &cfg, &src)?;
        Ok(ClipTextEncoder {
            be,
            tokenizer,
            model,
        })
    }

    /// A diffusers HunyuanVideo pipeline folder: `root/text_encoder_2`, `root/tokenizer_2`.
    pub fn load_pipeline(be: H, root: &Path) -> Result<Self> {
        Self::load(be, &root.join("text_encoder_2"), &root.join("tokenizer_2"))
    }

    /// The 77 padded ids of `prompt`.
    pub fn tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode_padded(prompt)?.0)
    }

    /// `pooler_output` `[hidden]` of `prompt`.
    pub fn encode(&self, prompt: &str) -> Result<Vec<f32>> {
        self.model.pooled(&self.be, &self.tokens(prompt)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_position_as_transformers() {
        let mut c = ClipTextConfig::clip_l();
        // legacy: first largest id (the EOS, padded with EOS)
        assert_eq!(c.pooled_position(&[49406, 320, 1125, 49407, 49407]), 3);
        c.eos_token_id = 7;
        assert_eq!(c.pooled_position(&[5, 9, 7, 9, 7]), 2);
        assert_eq!(c.pooled_position(&[5, 9]), 0);
    }
}
