//! `HunyuanVideoTransformer3DModel`'s `config.json` (diffusers), checked before any weight loads.

use crate::{ModelError, Result};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct HunyuanConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    /// Dual-stream blocks (separate video and text weights, joint attention).
    pub num_layers: usize,
    /// Single-stream blocks (one weight set over the joint sequence).
    pub num_single_layers: usize,
    pub num_refiner_layers: usize,
    pub mlp_ratio: f64,
    pub patch_size: usize,
    pub patch_size_t: usize,
    pub qk_norm: String,
    /// Guidance-distilled: the guidance scale is an input embedding (one forward per step).
    pub guidance_embeds: bool,
    pub text_embed_dim: usize,
    pub pooled_projection_dim: usize,
    pub rope_theta: f64,
    pub rope_axes_dim: Vec<usize>,
    pub image_condition_type: Option<String>,
}

impl Default for HunyuanConfig {
    /// HunyuanVideo-T2V-720p (diffusers' defaults).
    fn default() -> Self {
        HunyuanConfig {
            in_channels: 16,
            out_channels: 16,
            num_attention_heads: 24,
            attention_head_dim: 128,
            num_layers: 20,
            num_single_layers: 40,
            num_refiner_layers: 2,
            mlp_ratio: 4.0,
            patch_size: 2,
            patch_size_t: 1,
            qk_norm: "rms_norm".into(),
            guidance_embeds: true,
            text_embed_dim: 4096,
            pooled_projection_dim: 768,
            rope_theta: 256.0,
            rope_axes_dim: vec![16, 56, 56],
            image_condition_type: None,
        }
    }
}

impl HunyuanConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let c: HunyuanConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Invalid(format!("HunyuanVideo config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
    pub fn mlp_dim(&self) -> usize {
        (self.dim() as f64 * self.mlp_ratio) as usize
    }
    pub fn patch(&self) -> [usize; 3] {
        [self.patch_size_t, self.patch_size, self.patch_size]
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(format!("HunyuanVideo config: {m}")));
        if self.num_attention_heads == 0 || self.attention_head_dim == 0 {
            return bad("no attention heads".into());
        }
        if self.rope_axes_dim.len() != 3
            || self.rope_axes_dim.iter().sum::<usize>() != self.attention_head_dim
            || self.rope_axes_dim.iter().any(|d| d % 2 != 0)
        {
            return bad(format!(
                "rope_axes_dim {:?} must be 3 even sizes summing to attention_head_dim {}",
                self.rope_axes_dim, self.attention_head_dim
            ));
        }
        if self.qk_norm != "rms_norm" {
            return bad(format!(
                "qk_norm {:?} (only rms_norm is built)",
                self.qk_norm
            ));
        }
        if let Some(t) = &self.image_condition_type {
            return bad(format!(
                "image_condition_type {t:?}: image-to-video HunyuanVideo is not built"
            ));
        }
        if self.patch_size == 0 || self.patch_size_t == 0 {
            return bad("patch sizes must be positive".into());
        }
        Ok(())
    }
}
