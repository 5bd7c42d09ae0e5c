//! The CLIP ViT vision tower as transformers' `CLIPVisionModel` (diffusers' Wan I2V
//! `image_encoder/`, ComfyUI's `clip_vision_h.safetensors`): patch embedding without bias, a
//! class token, learned positions, `pre_layrnorm`, pre-norm blocks (MHA with biases, MLP with
//! exact GELU). Wan2.1 I2V takes the **penultimate** hidden states (open-clip
//! `use_31_block=True`, diffusers `hidden_states[-2]`): `[257, 1280]` for ViT-H/14 at 224 px.

use crate::nn::{gelu_exact_host, KeyMap, LayerNorm, Linear, VarBuilder};
use crate::{ModelError, Result, WeightSource};
use jenga_tensor::{Act, AttnPlan, Backend, TensorMeta};
use serde_json::Value;
use std::path::Path;

/// `CLIPVisionConfig`'s fields the tower uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub patch: usize,
    pub image: usize,
    pub eps: f32,
}

impl ClipVisionConfig {
    /// open-clip ViT-H/14 (xlm-roberta-large-vit-huge-14's visual tower), Wan2.1 I2V's.
    pub fn vit_h14() -> Self {
        ClipVisionConfig {
            hidden: 1280,
            intermediate: 5120,
            layers: 32,
            heads: 16,
            patch: 14,
            image: 224,
            eps: 1e-5,
        }
    }

    /// A transformers `config.json` (`CLIPVisionConfig`, or a `CLIPConfig` with `vision_config`).
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let err = |detail: String| ModelError::Config {
            path: path.into(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        let v = v.get("vision_config").unwrap_or(&v);
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu");
        if act != "gelu" {
            return Err(err(format!(
                "hidden_act {act:?}: only the exact `gelu` of ViT-H/14 is supported"
            )));
        }
        let int = |k: &str| -> std::result::Result<usize, ModelError> {
            v.get(k)
                .and_then(Value::as_u64)
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| err(format!("`{k}` missing or not a positive integer")))
        };
        let cfg = ClipVisionConfig {
            hidden: int("hidden_size")?,
            intermediate: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads: int("num_attention_heads")?,
            patch: int("patch_size")?,
            image: int("image_size")?,
            eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5) as f32,
        };
        if !cfg.hidden.is_multiple_of(cfg.heads) || !cfg.image.is_multiple_of(cfg.patch) {
            return Err(err(format!(
                "hidden {} / heads {}, image {} / patch {} must divide",
                cfg.hidden, cfg.heads, cfg.image, cfg.patch
            )));
        }
        Ok(cfg)
    }

    /// The config of a checkpoint without one (Wan's `.pth`, ComfyUI's `clip_vision_h`), from
    /// its tensor shapes; heads of 80 as open-clip's ViT-H/14 (the only head width Wan uses).
    pub fn from_shapes(src: &dyn WeightSource, file: &Path) -> Result<Self> {
        let keys = clip_keys(src);
        let shape = |k: &str| -> Result<Vec<usize>> {
            let sk = keys.stored_key(k);
            src.info(&sk)
                .map(|i| i.shape)
                .ok_or_else(|| ModelError::Config {
                    path: file.into(),
                    detail: format!("no tensor `{sk}`: not a CLIP vision tower"),
                })
        };
        let pe = shape("embeddings.patch_embedding.weight")?;
        let pos: usize = shape("embeddings.position_embedding.weight")?
            .iter()
            .product();
        let fc1 = shape("encoder.layers.0.mlp.fc1.weight")?;
        let (hidden, patch) = (pe[0], *pe.last().unwrap_or(&0));
        let mut layers = 0;
        while src.contains(&keys.stored_key(&format!("encoder.layers.{layers}.layer_norm1.weight")))
        {
            layers += 1;
        }
        let grid = ((pos / hidden.max(1)).saturating_sub(1) as f64).sqrt() as usize;
        if pe.len() != 4 || hidden % 80 != 0 || grid * grid + 1 != pos / hidden.max(1) {
            return Err(ModelError::Config {
                path: file.into(),
                detail: format!(
                    "patch embedding {pe:?} and {pos} position values: not an open-clip ViT-H/14-style tower"
                ),
            });
        }
        Ok(ClipVisionConfig {
            hidden,
            intermediate: fc1[0],
            layers,
            heads: hidden / 80,
            patch,
            image: grid * patch,
            eps: 1e-5,
        })
    }

    /// Tokens: the class token and one per patch (257 for ViT-H/14 at 224 px).
    pub fn tokens(&self) -> usize {
        1 + (self.image / self.patch).pow(2)
    }
}

/// transformers' names, with or without the `vision_model.` prefix (older `save_pretrained`,
/// diffusers' Wan I2V, ComfyUI), or Wan's own (`visual.` of the open-clip XLM-RoBERTa CLIP
/// `.pth`: `cls_embedding`, `transformer.{i}.attn.to_qkv`, `mlp.0`…) — found from the keys.
#[derive(Clone, Copy, PartialEq)]
enum ClipKeys {
    Transformers { prefix: &'static str },
    Wan,
}

impl KeyMap for ClipKeys {
    fn stored_key(&self, key: &str) -> String {
        match self {
            ClipKeys::Transformers { prefix } => format!("{prefix}{key}"),
            ClipKeys::Wan => {
                let k = key
                    .replace("embeddings.class_embedding", "cls_embedding")
                    .replace("embeddings.position_embedding.weight", "pos_embedding")
                    .replace("embeddings.patch_embedding", "patch_embedding")
                    .replace("pre_layrnorm", "pre_norm")
                    .replace("encoder.layers.", "transformer.")
                    .replace("layer_norm1", "norm1")
                    .replace("layer_norm2", "norm2")
                    .replace("self_attn.qkv", "attn.to_qkv")
                    .replace("self_attn.out_proj", "attn.proj")
                    .replace("mlp.fc1", "mlp.0")
                    .replace("mlp.fc2", "mlp.2");
                format!("visual.{k}")
            }
        }
    }
    fn naming(&self) -> &'static str {
        match self {
            ClipKeys::Transformers { .. } => "transformers",
            ClipKeys::Wan => "wan",
        }
    }
    fn loose_shape(&self, _stored_key: &str) -> bool {
        // Wan stores the class token `[1, 1, D]` and the positions `[1, 257, D]`
        *self == ClipKeys::Wan
    }
}

/// The key naming of a CLIP tower's weights: `transformers` or `wan`.
pub fn naming(src: &dyn WeightSource) -> &'static str {
    clip_keys(src).naming()
}

fn clip_keys(src: &dyn WeightSource) -> ClipKeys {
    if src.contains("visual.cls_embedding") {
        ClipKeys::Wan
    } else if src.contains("vision_model.embeddings.class_embedding") {
        ClipKeys::Transformers {
            prefix: "vision_model.",
        }
    } else {
        ClipKeys::Transformers { prefix: "" }
    }
}

/// The attention input projection: transformers' three linears, or Wan's fused `to_qkv`.
enum Qkv<B: Backend> {
    Split {
        q: Linear<B>,
        k: Linear<B>,
        v: Linear<B>,
    },
    Fused(Linear<B>),
}

struct Layer<B: Backend> {
    ln1: LayerNorm<B>,
    qkv: Qkv<B>,
    o: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The vision tower's weights on a backend.
pub struct ClipVision<B: Backend> {
    pub cfg: ClipVisionConfig,
    patch: Linear<B>,
    class: Vec<f32>,
    pos: B::Tensor,
    pre: LayerNorm<B>,
    layers: Vec<Layer<B>>,
}

impl<B: Backend> ClipVision<B> {
    /// The first `cfg.layers − 1` blocks are all the penultimate states need; the last block
    /// (and `post_layernorm`) are not loaded.
    pub fn load(be: &B, cfg: &ClipVisionConfig, src: &dyn WeightSource) -> Result<Self> {
        let keys = clip_keys(src);
        let vb = VarBuilder::with_keys(be, src, &keys);
        let (d, f, p) = (cfg.hidden, cfg.intermediate, cfg.patch);
        let emb = vb.pp("embeddings");
        let pe = emb.pp("patch_embedding");
        let patch = Linear {
            w: pe.get_as(&[d, 3, p, p], "weight", &[d, 3 * p * p])?,
            b: None,
        };
        let mut layers = Vec::new();
        for i in 0..cfg.layers.saturating_sub(1) {
            let l = vb.pp("encoder").pp("layers").pp(i);
            let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
            layers.push(Layer {
                ln1: LayerNorm::new(&l.pp("layer_norm1"), d, cfg.eps)?,
                qkv: if keys == ClipKeys::Wan {
                    Qkv::Fused(Linear::new(&a.pp("qkv"), 3 * d, d)?)
                } else {
                    Qkv::Split {
                        q: Linear::new(&a.pp("q_proj"), d, d)?,
                        k: Linear::new(&a.pp("k_proj"), d, d)?,
                        v: Linear::new(&a.pp("v_proj"), d, d)?,
                    }
                },
                o: Linear::new(&a.pp("out_proj"), d, d)?,
                ln2: LayerNorm::new(&l.pp("layer_norm2"), d, cfg.eps)?,
                fc1: Linear::new(&m.pp("fc1"), f, d)?,
                fc2: Linear::new(&m.pp("fc2"), d, f)?,
            });
        }
        let class_shape = if keys == ClipKeys::Wan {
            vec![1, 1, d]
        } else {
            vec![d]
        };
        Ok(ClipVision {
            patch,
            class: emb.get_host(&class_shape, "class_embedding")?,
            pos: emb
                .pp("position_embedding")
                .get(&[cfg.tokens(), d], "weight")?,
            pre: LayerNorm::new(&vb.pp("pre_layrnorm"), d, cfg.eps)?,
            layers,
            cfg: cfg.clone(),
        })
    }

    /// Normalised pixels `[3, image, image]` (host, CHW) → the penultimate hidden states
    /// `[1, tokens, hidden]` on the device.
    pub fn penultimate(&self, be: &B, pixels: &[f32]) -> Result<B::Tensor> {
        let c = &self.cfg;
        let (s, p, d) = (c.image, c.patch, c.hidden);
        if pixels.len() != 3 * s * s {
            return Err(ModelError::Invalid(format!(
                "CLIP takes 3x{s}x{s} pixels, got {} values",
                pixels.len()
            )));
        }
        // patches in (row, col) order, each flattened as the conv kernel (c, kh, kw)
        let g = s / p;
        let mut cols = Vec::with_capacity(g * g * 3 * p * p);
        for (py, px) in (0..g).flat_map(|y| (0..g).map(move |x| (y, x))) {
            for ch in 0..3 {
                for ky in 0..p {
                    let row = (ch * s + py * p + ky) * s + px * p;
                    cols.extend_from_slice(&pixels[row..row + p]);
                }
            }
        }
        let patches = be.download(&self.patch.fwd(
            be,
            &be.upload(&cols, &[1, g * g, 3 * p * p])?,
            Act::None,
        )?)?;
        let x = be.upload(
            &[self.class.as_slice(), &patches].concat(),
            &[1, g * g + 1, d],
        )?;
        let pos = be.reshape(&self.pos, &[1, g * g + 1, d])?;
        let mut x = self.pre.fwd(be, &be.add_gated(&x, &pos, None)?)?;
        let (h, n) = (c.heads, g * g + 1);
        for l in &self.layers {
            let xn = l.ln1.fwd(be, &x)?;
            let split = |t: B::Tensor| be.reshape(&t, &[1, n, h, d / h]);
            let (q, k, v) = match &l.qkv {
                Qkv::Split { q, k, v } => (
                    q.fwd(be, &xn, Act::None)?,
                    k.fwd(be, &xn, Act::None)?,
                    v.fwd(be, &xn, Act::None)?,
                ),
                Qkv::Fused(f) => {
                    let t = f.fwd(be, &xn, Act::None)?;
                    (
                        be.narrow(&t, 2, 0, d)?,
                        be.narrow(&t, 2, d, d)?,
                        be.narrow(&t, 2, 2 * d, d)?,
                    )
                }
            };
            let (q, k, v) = (split(q)?, split(k)?, split(v)?);
            let o = be.attention(&q, &k, &v, &AttnPlan::Dense, None)?;
            let o = l.o.fwd(be, &be.reshape(&o, &[1, n, d])?, Act::None)?;
            x = be.add_gated(&x, &o, None)?;
            let y = gelu_exact_host(be, &l.fc1.fwd(be, &l.ln2.fwd(be, &x)?, Act::None)?)?;
            x = be.add_gated(&x, &l.fc2.fwd(be, &y, Act::None)?, None)?;
        }
        debug_assert_eq!(x.shape(), &[1, n, d]);
        Ok(x)
    }
}
