//! The Llama-3 text tower as HunyuanVideo uses it (its first text encoder, the text model of
//! LLaVA-Llama-3-8B; diffusers' `text_encoder/`, transformers' `LlamaModel`), written once
//! against the [`Backend`] ops.
//!
//! Per layer: `x += o(attn(rope(q), rope(k), v))` on the RMS norm of x, with grouped-query
//! attention (each KV head serves `heads / kv_heads` query heads), causal, and padding keys
//! masked; then `x += down(silu(gate(n)) · up(n))` on the next RMS norm.
//!
//! HunyuanVideo (diffusers' `HunyuanVideoPipeline._get_llama_prompt_embeds`, Tencent's
//! `hyvideo/text_encoder`): the prompt goes into [`PromptTemplate::video`], is tokenized to
//! `crop_start + 256` ids (`<|begin_of_text|>` first, truncated, right-padded with the pad
//! token), and the states are `hidden_states[-(2 + 1)]` of transformers' tuple (the output of
//! layer `N − 2`, no final norm), rows `crop_start..` with the attention mask cropped the same
//! way: `[256, 4096]`. The last `skip` layers are never loaded.
//!
//! RoPE: transformers rotates the two halves of a head (`rotate_half`); the op vocabulary's
//! [`Backend::rope`] rotates adjacent pairs. The rows of `q_proj`/`k_proj` are permuted at load
//! per head (`i, i + Dh/2` → `2i, 2i + 1`): q·k is the same sum, so the attention is unchanged.

use super::{TextEncoder, TextStates};
use crate::nn::{Embedding, KeyMap, Linear, RmsNorm, VarBuilder};
use crate::{ModelError, Result, SafetensorsWeights, WeightSource};
use jenga_tensor::reference::AttnMask;
use jenga_tensor::{Act, AttnPlan, Backend};
use serde_json::Value;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::{PaddingParams, TruncationParams};

/// RoPE frequencies: transformers' `rope_type`s that are implemented.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `inv_freq[i] = θ^(−2i/Dh)`.
    Default,
    /// Llama-3.1's `llama3` smoothing of the low frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// `LlamaConfig`'s fields the text tower uses.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rope: RopeScaling,
    pub eps: f32,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

impl LlamaConfig {
    /// Llama-3-8B (LLaVA-Llama-3-8B's text model, HunyuanVideo's `text_encoder/`).
    pub fn llama3_8b() -> Self {
        LlamaConfig {
            vocab_size: 128320,
            hidden: 4096,
            intermediate: 14336,
            layers: 32,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            rope_theta: 500000.0,
            rope: RopeScaling::Default,
            eps: 1e-5,
            attention_bias: false,
            mlp_bias: false,
        }
    }

    /// A transformers `config.json` (`LlamaConfig`, or a LLaVA config with `text_config`).
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let v = read_json(path, "Llama config")?;
        Self::from_hf_json(&v).map_err(|detail| ModelError::Config {
            path: path.into(),
            detail,
        })
    }

    pub fn from_hf_json(v: &Value) -> std::result::Result<Self, String> {
        let v = v.get("text_config").unwrap_or(v);
        if let Some(t) = v.get("model_type").and_then(Value::as_str) {
            if t != "llama" {
                return Err(format!("model_type {t:?}: only `llama` is supported"));
            }
        }
        let int = |k: &str| positive(v, k);
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(format!("hidden_act {act:?}: only silu is supported"));
        }
        let (hidden, heads) = (int("hidden_size")?, int("num_attention_heads")?);
        let kv_heads = match v.get("num_key_value_heads") {
            Some(Value::Null) | None => heads,
            Some(_) => int("num_key_value_heads")?,
        };
        let head_dim = match v.get("head_dim") {
            Some(Value::Null) | None => hidden / heads,
            Some(_) => int("head_dim")?,
        };
        if heads % kv_heads != 0 || head_dim % 2 != 0 {
            return Err(format!(
                "{heads} heads / {kv_heads} KV heads of {head_dim}: heads must be a multiple of the KV heads, head_dim even"
            ));
        }
        // transformers 5 writes `rope_parameters`; older files `rope_theta` + `rope_scaling`
        let params = v
            .get("rope_parameters")
            .filter(|p| !p.is_null())
            .or_else(|| v.get("rope_scaling").filter(|p| !p.is_null()));
        let rope_theta = params
            .and_then(|p| p.get("rope_theta"))
            .or_else(|| v.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let rope = match params {
            None => RopeScaling::Default,
            Some(p) => rope_scaling(p)?,
        };
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(LlamaConfig {
            vocab_size: int("vocab_size")?,
            hidden,
            intermediate: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            rope_theta,
            rope,
            eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6) as f32,
            attention_bias: flag("attention_bias"),
            mlp_bias: flag("mlp_bias"),
        })
    }

    /// transformers' `inv_freq` (f32, as its `_compute_*_parameters`).
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / dim as f32;
                (1.0 / self.rope_theta.powf(e as f64)) as f32
            })
            .collect();
        match self.rope {
            RopeScaling::Default => base,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: old,
            } => base
                .iter()
                .map(|&f| {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let (low_wl, high_wl) = (old / low, old / high);
                    let scaled = if wavelen > low_wl { f / factor } else { f };
                    if wavelen < high_wl || wavelen > low_wl {
                        scaled as f32
                    } else {
                        let s = (old / wavelen - low) / (high - low);
                        ((1.0 - s) * scaled / factor + s * scaled) as f32
                    }
                })
                .collect(),
        }
    }
}

fn rope_scaling(p: &Value) -> std::result::Result<RopeScaling, String> {
    let ty = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if let Some(f) = p.get("partial_rotary_factor").and_then(Value::as_f64) {
        if f != 1.0 {
            return Err(format!("partial_rotary_factor {f}: only 1 is supported"));
        }
    }
    let num = |k: &str| {
        p.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope `{k}` missing for rope_type {ty:?}"))
    };
    match ty {
        "default" => Ok(RopeScaling::Default),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(format!(
            "rope_type {other:?}: only `default` and `llama3` are supported"
        )),
    }
}

pub(crate) fn positive(v: &Value, k: &str) -> std::result::Result<usize, String> {
    match v.get(k) {
        Some(x) => x
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| format!("`{k}` is {x}, expected a positive integer")),
        None => Err(format!("`{k}` missing")),
    }
}

pub(crate) fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
        path: path.into(),
        detail: format!("cannot read the {what}: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.into(),
        detail: format!("{what}: not JSON: {e}"),
    })
}

/// Keys stored under a prefix (`model.` of `LlamaForCausalLM`, `text_model.` of older CLIP
/// files).
pub(crate) struct Prefix(pub &'static str);

impl KeyMap for Prefix {
    fn stored_key(&self, key: &str) -> String {
        format!("{}{key}", self.0)
    }
    fn naming(&self) -> &'static str {
        "transformers"
    }
}

/// A `tokenizer.json` read by the `tokenizers` crate, truncating to `max_len` ids (special
/// tokens included, as transformers' `truncation=True, max_length=…`), padded on the right
/// with the folder's `pad_token` (`tokenizer_config.json` / `special_tokens_map.json`).
pub struct PaddedTokenizer {
    inner: tokenizers::Tokenizer,
    pub max_len: usize,
    /// `None`: the folder names no pad token (padding is then refused).
    pub pad_id: Option<u32>,
    pub path: PathBuf,
}

impl PaddedTokenizer {
    /// `dir/tokenizer.json` (+ the pad token of `dir/tokenizer_config.json`); one error naming
    /// the file when it is missing or malformed.
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let err = |detail: String| ModelError::Config {
            path: path.clone(),
            detail,
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| err(format!("cannot read the tokenizer (tokenizer.json): {e}")))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| err(format!("not a tokenizers tokenizer.json: {e}")))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| err(format!("truncation to {max_len}: {e}")))?;
        inner.with_padding(None::<PaddingParams>);
        let pad = ["tokenizer_config.json", "special_tokens_map.json"]
            .iter()
            .filter_map(|f| read_json(&dir.join(f), "tokenizer config").ok())
            .find_map(|v| {
                let p = v.get("pad_token")?;
                p.as_str()
                    .or_else(|| p.get("content").and_then(Value::as_str))
                    .map(str::to_string)
            });
        let pad_id = match pad {
            Some(p) => Some(
                inner
                    .token_to_id(&p)
                    .ok_or_else(|| err(format!("pad token {p:?} is not in the vocabulary")))?,
            ),
            None => None,
        };
        Ok(PaddedTokenizer {
            inner,
            max_len,
            pad_id,
            path,
        })
    }

    /// The ids of `text` with the file's special tokens, at most `max_len`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Config {
                path: self.path.clone(),
                detail: format!("tokenizing {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// `max_len` ids (the text's, then pad ids) and how many are the text's.
    pub fn encode_padded(&self, text: &str) -> Result<(Vec<u32>, usize)> {
        let mut ids = self.encode(text)?;
        let n = ids.len();
        if n < self.max_len {
            let pad = self.pad_id.ok_or_else(|| ModelError::Config {
                path: self.path.clone(),
                detail: "no pad_token in tokenizer_config.json: cannot pad to max_length".into(),
            })?;
            ids.resize(self.max_len, pad);
        }
        Ok((ids, n))
    }

    /// Id of a token (e.g. a special one), if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// HunyuanVideo's prompt template: the prompt replaces `{}`; the first `crop_start` ids (the
/// template's part in front of the prompt, `<|begin_of_text|>` included) are cropped off.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTemplate {
    pub template: String,
    pub crop_start: usize,
}

impl PromptTemplate {
    /// diffusers' `DEFAULT_PROMPT_TEMPLATE` = Tencent's `PROMPT_TEMPLATE["dit-llm-encode-video"]`
    /// (95 Llama-3 tokens in front of the prompt).
    pub fn video() -> Self {
        PromptTemplate {
            template: concat!(
                "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: ",
                "1. The main content and theme of the video.",
                "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.",
                "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.",
                "4. background environment, light, style and atmosphere.",
                "5. camera angles, movements, and transitions used in the video:<|eot_id|>",
                "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
            )
            .into(),
            crop_start: 95,
        }
    }

    /// The template around `prompt` (Python's `template.format(prompt)`).
    pub fn apply(&self, prompt: &str) -> String {
        self.template.replacen("{}", prompt, 1)
    }

    /// Ids of the template's part in front of `{}` with `tokenizer` (what `crop_start` should
    /// be for it: 95 with Llama-3's).
    pub fn measure_crop(&self, tokenizer: &PaddedTokenizer) -> Result<usize> {
        let prefix = self.template.split("{}").next().unwrap_or("");
        Ok(tokenizer.encode(prefix)?.len())
    }
}

/// How HunyuanVideo reads the Llama states.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaTextOptions {
    pub template: PromptTemplate,
    /// Rows after the crop (256).
    pub max_len: usize,
    /// `hidden_state_skip_layer` (2): the states are `hidden_states[-(skip + 1)]`.
    pub skip: usize,
}

impl Default for LlamaTextOptions {
    fn default() -> Self {
        LlamaTextOptions {
            template: PromptTemplate::video(),
            max_len: 256,
            skip: 2,
        }
    }
}

struct Layer<B: Backend> {
    norm1: RmsNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    norm2: RmsNorm<B>,
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
}

/// The Llama decoder's weights on a backend: the first `depth` layers (and the final norm
/// when all of them are loaded).
pub struct LlamaModel<B: Backend> {
    pub cfg: LlamaConfig,
    embed: Embedding<B>,
    layers: Vec<Layer<B>>,
    norm: Option<RmsNorm<B>>,
}

/// `q_proj`/`k_proj` rows (or bias) of `heads` heads of `dh`: halves → adjacent pairs.
fn halves_to_pairs(w: &[f32], heads: usize, dh: usize) -> Vec<f32> {
    let cols = w.len() / (heads * dh);
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..dh / 2 {
            for (dst, src) in [(2 * i, i), (2 * i + 1, i + dh / 2)] {
                let (d, s) = ((h * dh + dst) * cols, (h * dh + src) * cols);
                out[d..d + cols].copy_from_slice(&w[s..s + cols]);
            }
        }
    }
    out
}

impl<B: Backend> LlamaModel<B> {
    /// Which prefix the keys of `src` have: none (`LlamaModel`), `model.`
    /// (`LlamaForCausalLM`) or `language_model.model.` (LLaVA).
    fn keys(src: &dyn WeightSource) -> Prefix {
        ["", "model.", "language_model.model."]
            .into_iter()
            .find(|p| src.contains(&format!("{p}embed_tokens.weight")))
            .map_or(Prefix(""), Prefix)
    }

    /// The first `depth` layers from `src`; with `ids`, only their embedding rows.
    pub fn load(
        be: &B,
        cfg: &LlamaConfig,
        src: &dyn WeightSource,
        depth: usize,
        ids: Option<&[u32]>,
    ) -> Result<Self> {
        let keys = Self::keys(src);
        let vb = VarBuilder::with_keys(be, src, &keys);
        let (d, dh) = (cfg.hidden, cfg.head_dim);
        let (qd, kvd, f) = (cfg.heads * dh, cfg.kv_heads * dh, cfg.intermediate);
        if depth > cfg.layers {
            return Err(ModelError::Invalid(format!(
                "Llama: {depth} layers asked of a model of {}",
                cfg.layers
            )));
        }
        let lin = |vb: &VarBuilder<B>, out, inp, bias| {
            if bias {
                Linear::new(vb, out, inp)
            } else {
                Linear::no_bias(vb, out, inp)
            }
        };
        // q/k with their rows permuted for the pairwise rope
        let rotated = |vb: &VarBuilder<B>, heads: usize| -> Result<Linear<B>> {
            let out = heads * dh;
            let w = halves_to_pairs(&vb.get_host(&[out, d], "weight")?, heads, dh);
            let b = if cfg.attention_bias {
                let b = halves_to_pairs(&vb.get_host(&[out], "bias")?, heads, dh);
                Some(be.upload(&b, &[out])?)
            } else {
                None
            };
            Ok(Linear {
                w: be.upload(&w, &[out, d])?,
                b,
            })
        };
        let mut layers = Vec::with_capacity(depth);
        for i in 0..depth {
            let l = vb.pp("layers").pp(i);
            let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
            layers.push(Layer {
                norm1: RmsNorm::new(&l.pp("input_layernorm"), d, cfg.eps)?,
                q: rotated(&a.pp("q_proj"), cfg.heads)?,
                k: rotated(&a.pp("k_proj"), cfg.kv_heads)?,
                v: lin(&a.pp("v_proj"), kvd, d, cfg.attention_bias)?,
                o: lin(&a.pp("o_proj"), d, qd, cfg.attention_bias)?,
                norm2: RmsNorm::new(&l.pp("post_attention_layernorm"), d, cfg.eps)?,
                gate: lin(&m.pp("gate_proj"), f, d, cfg.mlp_bias)?,
                up: lin(&m.pp("up_proj"), f, d, cfg.mlp_bias)?,
                down: lin(&m.pp("down_proj"), d, f, cfg.mlp_bias)?,
            });
        }
        let emb = vb.pp("embed_tokens");
        Ok(LlamaModel {
            embed: match ids {
                Some(ids) => Embedding::rows(&emb, cfg.vocab_size, d, ids)?,
                None => Embedding::new(&emb, cfg.vocab_size, d)?,
            },
            layers,
            norm: if depth == cfg.layers {
                Some(RmsNorm::new(&vb.pp("norm"), d, cfg.eps)?)
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    /// Layers loaded.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// `[ids.len(), hidden]`: transformers' `hidden_states[depth]` of `ids` (the first `len`
    /// real, the rest padding: masked as keys, as `attention_mask` does), positions
    /// `0..ids.len()`. With every layer loaded it is the final-normed last state.
    pub fn forward(&self, be: &B, ids: &[u32], len: usize) -> Result<B::Tensor> {
        let c = &self.cfg;
        let n = ids.len();
        if len == 0 || len > n {
            return Err(ModelError::Invalid(format!(
                "Llama: {len} real tokens of {n} (needs at least one)"
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "Llama: token id {bad} outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let (d, h, kvh, dh, f) = (c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate);
        let inv = c.inv_freq();
        let (mut cos, mut sin) = (
            Vec::with_capacity(n * dh / 2),
            Vec::with_capacity(n * dh / 2),
        );
        for p in 0..n {
            for &fr in &inv {
                let a = (p as f32 * fr) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let cos = be.upload(&cos, &[n, dh / 2])?;
        let sin = be.upload(&sin, &[n, dh / 2])?;
        // query head j reads KV head j / (h / kvh)
        let kv_idx: Vec<u32> = (0..h).map(|j| (j / (h / kvh)) as u32).collect();
        let repeat = |t: B::Tensor| -> Result<B::Tensor> {
            if kvh == h {
                return Ok(t);
            }
            let t = be.gather_tokens(&be.reshape(&t, &[n, kvh, dh])?, &kv_idx)?;
            Ok(be.reshape(&t, &[1, n, h, dh])?)
        };
        let zeros = be.upload(&vec![0f32; n * f], &[n, 1, f])?;
        let mut x = be.reshape(&self.embed.fwd(be, ids)?, &[1, n, d])?;
        for l in &self.layers {
            let hn = l.norm1.fwd(be, &x)?;
            let proj = |lin: &Linear<B>, heads: usize| -> Result<B::Tensor> {
                Ok(be.reshape(&lin.fwd(be, &hn, Act::None)?, &[1, n, heads, dh])?)
            };
            let q = be.rope(&proj(&l.q, h)?, &cos, &sin)?;
            let k = repeat(be.rope(&proj(&l.k, kvh)?, &cos, &sin)?)?;
            let v = repeat(proj(&l.v, kvh)?)?;
            // real rows: causal over real keys; padding rows: every real key (their own and
            // later padding keys are masked, earlier keys are all real)
            let (kr, vr) = (be.narrow(&k, 1, 0, len)?, be.narrow(&v, 1, 0, len)?);
            let real = be.attention_masked(
                &be.narrow(&q, 1, 0, len)?,
                &kr,
                &vr,
                &AttnMask::Causal,
                None,
            )?;
            let a = if len < n {
                let qp = be.narrow(&q, 1, len, n - len)?;
                let pad = be.attention(&qp, &kr, &vr, &AttnPlan::Dense, None)?;
                be.cat(&[&real, &pad], 1)?
            } else {
                real
            };
            let a = be.reshape(&a, &[1, n, h * dh])?;
            x = be.add_gated(&x, &l.o.fwd(be, &a, Act::None)?, None)?;
            let hn = l.norm2.fwd(be, &x)?;
            let g = be.reshape(&l.gate.fwd(be, &hn, Act::Silu)?, &[n, f])?;
            let u = be.reshape(&l.up.fwd(be, &hn, Act::None)?, &[n, 1, f])?;
            let p = be.reshape(&be.add_gated(&zeros, &u, Some(&g))?, &[1, n, f])?;
            x = be.add_gated(&x, &l.down.fwd(be, &p, Act::None)?, None)?;
        }
        if let Some(norm) = &self.norm {
            x = norm.fwd(be, &x)?;
        }
        Ok(be.reshape(&x, &[n, d])?)
    }
}

/// Prompt → HunyuanVideo's Llama states: tokenizer, the first `layers − skip` layers and the
/// backend they run on (any handle: `Arc<B>`, `&B`), as one [`TextEncoder`] of `max_len` rows.
pub struct LlamaEncoder<B: Backend, H: Deref<Target = B> + Send + Sync = Arc<B>> {
    pub be: H,
    pub tokenizer: PaddedTokenizer,
    pub model: LlamaModel<B>,
    pub opts: LlamaTextOptions,
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> LlamaEncoder<B, H> {
    /// diffusers' layout: `text_encoder` (`config.json`, `model.safetensors` or shards with
    /// their index) and `tokenizer` (`tokenizer.json`, `tokenizer_config.json`), HunyuanVideo's
    /// defaults ([`LlamaTextOptions::default`]).
    pub fn load(be: H, text_encoder: &Path, tokenizer: &Path) -> Result<Self> {
        Self::load_with(be, text_encoder, tokenizer, LlamaTextOptions::default())
    }

    /// A diffusers HunyuanVideo pipeline folder: `root/text_encoder`, `root/tokenizer`.
    pub fn load_pipeline(be: H, root: &Path) -> Result<Self> {
        Self::load(be, &root.join("text_encoder"), &root.join("tokenizer"))
    }

    pub fn load_with(
        be: H,
        text_encoder: &Path,
        tokenizer: &Path,
        opts: LlamaTextOptions,
    ) -> Result<Self> {
        let cfg = LlamaConfig::from_hf_file(&text_encoder.join("config.json"))?;
        let tokenizer =
            PaddedTokenizer::from_dir(tokenizer, opts.template.crop_start + opts.max_len)?;
        if opts.skip > cfg.layers {
            return Err(ModelError::Invalid(format!(
                "hidden_state_skip_layer {} of a {}-layer model",
                opts.skip, cfg.layers
            )));
        }
        let src = SafetensorsWeights::open(text_encoder)?;
        let model = LlamaModel::load(&*be, &cfg, &src, cfg.layers - opts.skip, None)?;
        Ok(LlamaEncoder {
            be,
            tokenizer,
            model,
            opts,
        })
    }

    /// The padded ids of the templated prompt (`crop_start + max_len`) and the real count.
    pub fn tokens(&self, prompt: &str) -> Result<(Vec<u32>, usize)> {
        self.tokenizer
            .encode_padded(&self.opts.template.apply(prompt))
    }

    /// Padded ids → `[max_len, hidden]` rows `crop_start..` and their mask.
    pub fn encode_ids(&self, ids: &[u32], len: usize) -> Result<TextStates> {
        let (crop, rows, d) = (
            self.opts.template.crop_start,
            self.opts.max_len,
            self.model.cfg.hidden,
        );
        if ids.len() != crop + rows {
            return Err(ModelError::Invalid(format!(
                "Llama text: {} ids, expected crop_start {crop} + {rows}",
                ids.len()
            )));
        }
        let h = self.model.forward(&self.be, ids, len)?;
        let states = self.be.download(&self.be.narrow(&h, 0, crop, rows)?)?;
        let mask = (crop..crop + rows).map(|i| i < len).collect();
        Ok(TextStates {
            states,
            len: rows,
            dim: d,
            mask,
        })
    }
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> TextEncoder for LlamaEncoder<B, H> {
    fn encode(&self, prompt: &str) -> Result<TextStates> {
        let (ids, len) = self.tokens(prompt)?;
        self.encode_ids(&ids, len)
    }
    fn max_len(&self) -> usize {
        self.opts.max_len
    }
    fn dim(&self) -> usize {
        self.model.cfg.hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_forms() {
        let legacy = serde_json::json!({"model_type": "llama", "vocab_size": 128320,
            "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0, "rope_scaling": null});
        assert_eq!(
            LlamaConfig::from_hf_json(&legacy).unwrap(),
            LlamaConfig::llama3_8b()
        );
        let mut yarn = legacy.clone();
        yarn["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        assert!(LlamaConfig::from_hf_json(&yarn)
            .unwrap_err()
            .contains("yarn"));
        let mut l3 = legacy;
        l3["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        let c = LlamaConfig::from_hf_json(&l3).unwrap();
        let (f, base) = (c.inv_freq(), LlamaConfig::llama3_8b().inv_freq());
        assert_eq!(f[0], base[0]); // high frequencies unchanged
        assert!((f[63] - base[63] / 8.0).abs() < 1e-12); // low ones divided by the factor
    }

    #[test]
    fn permutation_pairs_halves() {
        // one head of 4, one column: rows [0, 1, 2, 3] → [0, 2, 1, 3]
        assert_eq!(
            halves_to_pairs(&[0., 1., 2., 3.], 1, 4),
            vec![0., 2., 1., 3.]
        );
    }
}
