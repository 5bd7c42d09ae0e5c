//! Where weights, config and text conditioning come from: a model bundle (a directory or the
//! embedded tiny-wan) or seeded random weights for a built-in config.

use crate::request::ModelSource;
use anyhow::{bail, Result};
use jenga_models::{
    LatentPreview, ModelBundle, RandomWeights, TinySlots, Vae, WanConfig, WanModel, WeightSource,
};
use jenga_tensor::FusedOps;

/// Where weights, config and text conditioning come from.
pub enum Source {
    Bundle(Box<ModelBundle>),
    Random {
        name: String,
        config: WanConfig,
        weights: RandomWeights,
    },
}

impl Source {
    pub fn open(m: &ModelSource) -> Result<Source> {
        match m {
            ModelSource::Random(name) => {
                let config = random_config(name)?;
                Ok(Source::Random {
                    name: format!("{name} (random weights)"),
                    config,
                    weights: RandomWeights { seed: 0 },
                })
            }
            ModelSource::Dir(dir) => Ok(Source::Bundle(Box::new(ModelBundle::open(dir)?))),
            ModelSource::Embedded => Ok(Source::Bundle(Box::new(ModelBundle::embedded()?))),
        }
    }
    pub fn config(&self) -> &WanConfig {
        match self {
            Source::Bundle(b) => &b.config,
            Source::Random { config, .. } => config,
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Source::Bundle(b) => &b.name,
            Source::Random { name, .. } => name,
        }
    }
    pub fn weights(&self) -> &dyn WeightSource {
        match self {
            Source::Bundle(b) => &b.weights,
            Source::Random { weights, .. } => weights,
        }
    }
    /// Text-encoder states `[text_len, text_dim]`; random models get seeded random states.
    pub fn encode(&self, prompt: &str) -> Result<Vec<f32>> {
        match self {
            Source::Bundle(b) => Ok(b.encode_prompt(prompt)?),
            Source::Random { config, .. } => {
                let seed = prompt.bytes().fold(1469598103934665603u64, |h, c| {
                    (h ^ c as u64).wrapping_mul(1099511628211)
                });
                Ok(jenga_pipeline::noise(
                    seed,
                    config.text_len * config.text_dim,
                ))
            }
        }
    }
    /// Notes on what the prompt will really do (embedded model: dropped words, words in the
    /// wrong slot of its caption template, an empty prompt).
    pub fn prompt_notes(&self, prompt: &str) -> Vec<String> {
        match self {
            Source::Bundle(b) => {
                match (&b.text, b.tiny.as_ref().and_then(TinySlots::from_config)) {
                    (Some((tok, _)), Some(slots)) => slots.prompt_notes(tok, prompt),
                    _ => Vec::new(),
                }
            }
            Source::Random { .. } => Vec::new(),
        }
    }
    pub fn pixel_space(&self) -> bool {
        matches!(self, Source::Bundle(b) if b.pixel_space)
    }
    /// Latent → RGB: the bundle's, or the latent preview for random weights.
    pub fn vae(&self) -> &dyn Vae {
        match self {
            Source::Bundle(b) => b.vae.as_ref(),
            Source::Random { .. } => &LatentPreview,
        }
    }

    /// Embedded text context for sampling: the prompt alone, or with classifier-free guidance
    /// (`guidance` ≠ 1) prompt and negative prompt as one batch of 2, in the sampler's order.
    pub fn text_context<B: FusedOps>(
        &self,
        be: &B,
        model: &WanModel<B>,
        prompt: &str,
        negative: &str,
        guidance: f32,
    ) -> Result<B::Tensor> {
        let cfg = self.config();
        let cond = self.encode(prompt)?;
        let ctx = if guidance != 1.0 {
            let uncond = self.encode(negative)?;
            be.upload(&[cond, uncond].concat(), &[2, cfg.text_len, cfg.text_dim])?
        } else {
            be.upload(&cond, &[1, cfg.text_len, cfg.text_dim])?
        };
        Ok(model.embed_text(be, &ctx)?)
    }
}

pub fn random_config(name: &str) -> Result<WanConfig> {
    Ok(match name {
        "wan-1.3b" | "wan2.1-1.3b" => WanConfig::wan_1_3b(),
        "wan-14b" | "wan2.1-14b" => WanConfig::wan_14b(),
        "tiny" => ModelBundle::embedded()?.config,
        other => {
            bail!("--random-weights {other}: unknown config (expected wan-1.3b, wan-14b or tiny)")
        }
    })
}
