//! Wan2.1 `config.json` (the original repo's / diffusers-style `WanModel` config).

use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Fields of a Wan config. Required: the ones that size the network; the rest default to the
/// values of `WanModel.__init__` (the official 1.3B/14B configs omit them).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct WanConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default = "default_patch")]
    pub patch_size: [usize; 3],
    #[serde(default = "default_text_len")]
    pub text_len: usize,
    pub in_dim: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
    #[serde(default = "default_text_dim")]
    pub text_dim: usize,
    pub out_dim: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub qk_norm: bool,
    #[serde(default = "default_true")]
    pub cross_attn_norm: bool,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Image-to-video (`model_type: i2v`): the width of the CLIP features the image embedder
    /// takes (1280, ViT-H/14; the original configs leave it implicit). None for t2v.
    #[serde(default)]
    pub image_dim: Option<usize>,
}

/// The CLIP ViT-H/14 width of Wan2.1's image features.
pub const WAN_IMAGE_DIM: usize = 1280;
/// Image tokens of Wan2.1 I2V's cross-attention context (CLIP's 257), before the text.
pub const WAN_IMAGE_TOKENS: usize = 257;

fn default_model_type() -> String {
    "t2v".into()
}
fn default_patch() -> [usize; 3] {
    [1, 2, 2]
}
fn default_text_len() -> usize {
    512
}
fn default_freq_dim() -> usize {
    256
}
fn default_text_dim() -> usize {
    4096
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}

impl WanConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_json(&text).map_err(|detail| ModelError::Config {
            path: path.into(),
            detail,
        })
    }

    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let mut cfg: WanConfig = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON ({e})")
            }
            _ => e.to_string(),
        })?;
        if cfg.model_type == "i2v" && cfg.image_dim.is_none() {
            cfg.image_dim = Some(WAN_IMAGE_DIM);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Image-to-video: the DiT takes CLIP features and the conditioning latent.
    pub fn is_i2v(&self) -> bool {
        self.model_type == "i2v"
    }

    /// A diffusers `WanTransformer3DModel` config (`num_attention_heads` × `attention_head_dim`,
    /// `in_channels`, `out_channels`, `qk_norm: "rms_norm_across_heads"`, ...) as a [`WanConfig`].
    /// Image conditioning (`image_dim` + `added_kv_proj_dim` = the width) is Wan2.1 I2V.
    pub fn from_diffusers_json(text: &str) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        struct Diffusers {
            #[serde(default = "default_patch")]
            patch_size: [usize; 3],
            num_attention_heads: usize,
            attention_head_dim: usize,
            in_channels: usize,
            out_channels: usize,
            #[serde(default = "default_text_dim")]
            text_dim: usize,
            #[serde(default = "default_freq_dim")]
            freq_dim: usize,
            ffn_dim: usize,
            num_layers: usize,
            #[serde(default = "default_true")]
            cross_attn_norm: bool,
            #[serde(default)]
            qk_norm: Option<String>,
            #[serde(default = "default_eps")]
            eps: f64,
            #[serde(default)]
            image_dim: Option<usize>,
            #[serde(default)]
            added_kv_proj_dim: Option<usize>,
        }
        let c: Diffusers = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON ({e})")
            }
            _ => e.to_string(),
        })?;
        let dim = c.num_attention_heads * c.attention_head_dim;
        let i2v = match (c.image_dim, c.added_kv_proj_dim) {
            (None, None) => false,
            (Some(_), Some(k)) if k == dim => true,
            (i, k) => {
                return Err(format!(
                    "image conditioning with image_dim {i:?} and added_kv_proj_dim {k:?}: Wan2.1 I2V has both, added_kv_proj_dim = the width {dim}"
                ))
            }
        };
        if let Some(n) = c
            .qk_norm
            .as_deref()
            .filter(|n| *n != "rms_norm_across_heads")
        {
            return Err(format!(
                "qk_norm `{n}` is not supported (only rms_norm_across_heads, Wan's)"
            ));
        }
        let cfg = WanConfig {
            model_type: if i2v {
                "i2v".into()
            } else {
                default_model_type()
            },
            patch_size: c.patch_size,
            text_len: default_text_len(),
            in_dim: c.in_channels,
            dim: c.num_attention_heads * c.attention_head_dim,
            ffn_dim: c.ffn_dim,
            freq_dim: c.freq_dim,
            text_dim: c.text_dim,
            out_dim: c.out_channels,
            num_heads: c.num_attention_heads,
            num_layers: c.num_layers,
            qk_norm: c.qk_norm.is_some(),
            cross_attn_norm: c.cross_attn_norm,
            eps: c.eps,
            image_dim: c.image_dim,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        match (self.model_type.as_str(), self.image_dim) {
            ("t2v", None) => {}
            ("t2v", Some(_)) => return Err("image_dim is for model_type i2v".into()),
            ("i2v", Some(w)) if w > 0 => {}
            ("i2v", _) => return Err("model_type i2v needs a positive image_dim".into()),
            (m, _) => {
                return Err(format!(
                    "model_type `{m}` is not supported (t2v or i2v; Wan2.1 FLF2V / VACE are not)"
                ))
            }
        }
        if self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "dim {} is not divisible by num_heads {}",
                self.dim, self.num_heads
            ));
        }
        let d = self.head_dim();
        if !d.is_multiple_of(2) || d < 6 {
            return Err(format!("head dim {d} cannot be split into 3 RoPE axes"));
        }
        if !self.freq_dim.is_multiple_of(2) || self.patch_size.contains(&0) {
            return Err("freq_dim must be even and patch_size non-zero".into());
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.num_heads
    }

    /// Wan-2.1 T2V 1.3B.
    pub fn wan_1_3b() -> Self {
        Self::from_json(r#"{"dim":1536,"ffn_dim":8960,"in_dim":16,"out_dim":16,"num_heads":12,"num_layers":30}"#)
            .expect("built-in config is valid")
    }

    /// Wan-2.1 T2V 14B.
    pub fn wan_14b() -> Self {
        Self::from_json(r#"{"dim":5120,"ffn_dim":13824,"in_dim":16,"out_dim":16,"num_heads":40,"num_layers":40}"#)
            .expect("built-in config is valid")
    }

    /// Floating-point operations (multiply-add = 2) of one forward for one sample:
    /// `tokens` video tokens, `text_tokens` context rows, self-attention computing a
    /// fraction `attn_density` of its score blocks. Returns (linear, attention) FLOPs.
    pub fn forward_flops(
        &self,
        tokens: usize,
        text_tokens: usize,
        attn_density: f64,
    ) -> (f64, f64) {
        let (l, lt, d, f) = (
            tokens as f64,
            text_tokens as f64,
            self.dim as f64,
            self.ffn_dim as f64,
        );
        let p: usize = self.patch_size.iter().product();
        let per_block_lin =
            2.0 * (4.0 * l * d * d + 2.0 * l * d * d + 2.0 * lt * d * d + 2.0 * l * d * f);
        let per_block_attn = 4.0 * l * l * d * attn_density + 4.0 * l * lt * d;
        let n = self.num_layers as f64;
        let io = 2.0 * l * d * (self.in_dim * p) as f64 + 2.0 * l * d * (self.out_dim * p) as f64;
        (n * per_block_lin + io, n * per_block_attn)
    }

    /// Every DiT tensor under its original Wan name, with its stored shape.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f) = (self.dim, self.ffn_dim);
        let [pt, ph, pw] = self.patch_size;
        let p = pt * ph * pw;
        let mut v: Vec<(String, Vec<usize>)> = vec![
            (
                "patch_embedding.weight".into(),
                vec![d, self.in_dim, pt, ph, pw],
            ),
            ("patch_embedding.bias".into(), vec![d]),
            ("text_embedding.0.weight".into(), vec![d, self.text_dim]),
            ("text_embedding.0.bias".into(), vec![d]),
            ("text_embedding.2.weight".into(), vec![d, d]),
            ("text_embedding.2.bias".into(), vec![d]),
            ("time_embedding.0.weight".into(), vec![d, self.freq_dim]),
            ("time_embedding.0.bias".into(), vec![d]),
            ("time_embedding.2.weight".into(), vec![d, d]),
            ("time_embedding.2.bias".into(), vec![d]),
            ("time_projection.1.weight".into(), vec![6 * d, d]),
            ("time_projection.1.bias".into(), vec![6 * d]),
        ];
        for i in 0..self.num_layers {
            for a in ["self_attn", "cross_attn"] {
                for l in ["q", "k", "v", "o"] {
                    v.push((format!("blocks.{i}.{a}.{l}.weight"), vec![d, d]));
                    v.push((format!("blocks.{i}.{a}.{l}.bias"), vec![d]));
                }
                if self.qk_norm {
                    v.push((format!("blocks.{i}.{a}.norm_q.weight"), vec![d]));
                    v.push((format!("blocks.{i}.{a}.norm_k.weight"), vec![d]));
                }
            }
            if self.cross_attn_norm {
                v.push((format!("blocks.{i}.norm3.weight"), vec![d]));
                v.push((format!("blocks.{i}.norm3.bias"), vec![d]));
            }
            v.push((format!("blocks.{i}.ffn.0.weight"), vec![f, d]));
            v.push((format!("blocks.{i}.ffn.0.bias"), vec![f]));
            v.push((format!("blocks.{i}.ffn.2.weight"), vec![d, f]));
            v.push((format!("blocks.{i}.ffn.2.bias"), vec![d]));
            v.push((format!("blocks.{i}.modulation"), vec![1, 6, d]));
        }
        if let Some(w) = self.image_dim {
            for i in 0..self.num_layers {
                for l in ["k_img", "v_img"] {
                    v.push((format!("blocks.{i}.cross_attn.{l}.weight"), vec![d, d]));
                    v.push((format!("blocks.{i}.cross_attn.{l}.bias"), vec![d]));
                }
                if self.qk_norm {
                    v.push((format!("blocks.{i}.cross_attn.norm_k_img.weight"), vec![d]));
                }
            }
            v.push(("img_emb.proj.0.weight".into(), vec![w]));
            v.push(("img_emb.proj.0.bias".into(), vec![w]));
            v.push(("img_emb.proj.1.weight".into(), vec![w, w]));
            v.push(("img_emb.proj.1.bias".into(), vec![w]));
            v.push(("img_emb.proj.3.weight".into(), vec![d, w]));
            v.push(("img_emb.proj.3.bias".into(), vec![d]));
            v.push(("img_emb.proj.4.weight".into(), vec![d]));
            v.push(("img_emb.proj.4.bias".into(), vec![d]));
        }
        v.push(("head.head.weight".into(), vec![self.out_dim * p, d]));
        v.push(("head.head.bias".into(), vec![self.out_dim * p]));
        v.push(("head.modulation".into(), vec![1, 2, d]));
        v
    }

    /// The config as a Wan `config.json`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "_class_name": "WanModel", "model_type": self.model_type, "patch_size": self.patch_size,
            "text_len": self.text_len, "in_dim": self.in_dim, "dim": self.dim, "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim, "text_dim": self.text_dim, "out_dim": self.out_dim,
            "num_heads": self.num_heads, "num_layers": self.num_layers, "window_size": [-1, -1],
            "qk_norm": self.qk_norm, "cross_attn_norm": self.cross_attn_norm, "eps": self.eps,
            "image_dim": self.image_dim,
        })
        .to_string()
    }

    /// Parameter count (all weights of the DiT).
    pub fn num_params(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}
