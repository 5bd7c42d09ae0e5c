//! A model directory (or the embedded tiny-wan): config, DiT weights, and, for tiny-wan, its
//! tokenizer and text encoder.

use crate::text::{TextEncoder, TinyText};
use crate::vae::{Identity, LatentPreview, Vae};
use crate::{
    ModelError, Result, SafetensorsWeights, TinyTextEncoder, Tokenizer, WanConfig, WanKeys,
    WeightSource,
};
use std::path::{Path, PathBuf};

const TINY_CONFIG: &str = include_str!("../../../assets/tiny-wan/config.json");
const TINY_DIT: &[u8] =
    include_bytes!("../../../assets/tiny-wan/diffusion_pytorch_model.safetensors");
const TINY_TEXT: &[u8] = include_bytes!("../../../assets/tiny-wan/text_encoder.safetensors");
const TINY_VOCAB: &str = include_str!("../../../assets/tiny-wan/vocab.json");

/// Defaults a model directory suggests for sampling (tiny-wan's `tiny` config section).
#[derive(Clone, Debug)]
pub struct SampleDefaults {
    pub shift: f64,
    pub guidance: f32,
    pub steps: usize,
}

/// A family of models this crate implements (one folder each: `wan/`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Wan2.1 text-to-video (`wan/`).
    Wan,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Wan => "Wan2.1",
        }
    }
}

/// Config classes a bundle can be opened from, by `config.json`'s `_class_name`: the family
/// and how to read the rest of the config. No `_class_name` = the original Wan repo's layout.
const CLASSES: [(&str, Family); 2] = [
    ("WanModel", Family::Wan),
    ("WanTransformer3DModel", Family::Wan),
];

/// The family and config of `config.json` text (`path` names the file in errors).
pub fn config_for_class(path: &Path, text: &str) -> Result<(Family, String, WanConfig)> {
    let cfg_err = |detail: String| ModelError::Config {
        path: path.into(),
        detail,
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        cfg_err(match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON ({e})")
            }
            _ => e.to_string(),
        })
    })?;
    let class = v
        .get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("WanModel")
        .to_string();
    if class == "HunyuanVideoTransformer3DModel" {
        return Err(cfg_err(
            "a HunyuanVideo model: `jenga generate --model DIR` runs it; inspect, eval and the benches take Wan2.1 models for now".into(),
        ));
    }
    let Some(&(_, family)) = CLASSES.iter().find(|(c, _)| *c == class) else {
        return Err(cfg_err(format!(
            "model class `{class}` is not supported (known: {})",
            CLASSES.map(|c| c.0).join(", ")
        )));
    };
    let config = match class.as_str() {
        "WanTransformer3DModel" => WanConfig::from_diffusers_json(text),
        _ => WanConfig::from_json(text),
    }
    .map_err(cfg_err)?;
    Ok((family, class, config))
}

pub struct ModelBundle {
    pub name: String,
    /// The family chosen by the config's class.
    pub family: Family,
    /// `config.json`'s `_class_name` (`WanModel` when absent).
    pub class: String,
    /// How the checkpoint names its tensors (detected from its keys).
    pub keys: WanKeys,
    /// Latent → RGB ([`Identity`] for pixel-space models, else [`LatentPreview`]).
    pub vae: Box<dyn Vae>,
    pub dir: Option<PathBuf>,
    pub config: WanConfig,
    pub weights: SafetensorsWeights,
    /// Present for tiny-wan-style directories (`text_encoder.safetensors` + `vocab.json`).
    pub text: Option<TinyText>,
    pub defaults: SampleDefaults,
    /// Pixel space (no VAE): tiny-wan.
    pub pixel_space: bool,
    /// The `tiny` section of tiny-wan's config (palette, shapes, caption template).
    pub tiny: Option<serde_json::Value>,
}

fn tiny_section(config_json: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    v.get("tiny").cloned()
}

fn defaults_from(config_json: &str) -> SampleDefaults {
    let v: serde_json::Value = serde_json::from_str(config_json).unwrap_or_default();
    let tiny = &v["tiny"];
    SampleDefaults {
        shift: tiny["sample_shift"].as_f64().unwrap_or(5.0),
        guidance: tiny["guide_scale"].as_f64().unwrap_or(5.0) as f32,
        steps: tiny["sample_steps"].as_u64().unwrap_or(50) as usize,
    }
}

fn text_encoder(
    weights: &dyn WeightSource,
    vocab: Tokenizer,
    cfg: &WanConfig,
    vocab_size: usize,
) -> Result<TinyText> {
    let encoder = TinyTextEncoder::load(weights, vocab_size, cfg.text_len, cfg.text_dim)?;
    Ok((vocab, encoder))
}

impl ModelBundle {
    /// The tiny-wan model embedded in the binary.
    pub fn embedded() -> Result<Self> {
        let (family, class, config) =
            config_for_class(Path::new("<embedded>/config.json"), TINY_CONFIG)?;
        let tok = Tokenizer::from_json(TINY_VOCAB, config.text_len).map_err(ModelError::Invalid)?;
        let vocab_size = vocab_size(TINY_VOCAB);
        let text = text_encoder(
            &SafetensorsWeights::from_static("<embedded>/text_encoder.safetensors", TINY_TEXT)?,
            tok,
            &config,
            vocab_size,
        )?;
        let weights = SafetensorsWeights::from_static(
            "<embedded>/diffusion_pytorch_model.safetensors",
            TINY_DIT,
        )?;
        Ok(ModelBundle {
            name: "tiny-wan (embedded)".into(),
            family,
            class,
            keys: WanKeys::detect(&weights),
            vae: vae_for(&config),
            dir: None,
            weights,
            text: Some(text),
            defaults: defaults_from(TINY_CONFIG),
            pixel_space: true,
            tiny: tiny_section(TINY_CONFIG),
            config,
        })
    }

    /// A Wan model directory: `config.json` + safetensors (single or sharded). A tiny-wan-style
    /// `text_encoder.safetensors` + `vocab.json` is picked up when present.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::Invalid(format!(
                "--model {}: no such directory",
                dir.display()
            )));
        }
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let (family, class, config) = config_for_class(&cfg_path, &cfg_text)?;
        let weights = SafetensorsWeights::open(dir)?;
        let (vocab_p, te_p) = (dir.join("vocab.json"), dir.join("text_encoder.safetensors"));
        let text = if vocab_p.exists() && te_p.exists() {
            let vtext = std::fs::read_to_string(&vocab_p).map_err(|source| ModelError::Io {
                path: vocab_p.clone(),
                source,
            })?;
            let tok = Tokenizer::from_json(&vtext, config.text_len).map_err(|detail| {
                ModelError::Config {
                    path: vocab_p.clone(),
                    detail,
                }
            })?;
            Some(text_encoder(
                &SafetensorsWeights::open(&te_p)?,
                tok,
                &config,
                vocab_size(&vtext),
            )?)
        } else {
            None
        };
        Ok(ModelBundle {
            name: dir.display().to_string(),
            family,
            class,
            keys: WanKeys::detect(&weights),
            vae: vae_for(&config),
            dir: Some(dir.into()),
            pixel_space: config.in_dim == 3,
            defaults: defaults_from(&cfg_text),
            tiny: tiny_section(&cfg_text),
            weights,
            text,
            config,
        })
    }

    /// Text-encoder states `[text_len, text_dim]` for a prompt (empty prompt → all zeros, the
    /// unconditional context of tiny-wan).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<f32>> {
        match self.text_encoder() {
            Some(te) => Ok(te.encode(prompt)?.states),
            None => Err(ModelError::Invalid(format!(
                "{}: no text encoder for this model (umT5 is not bundled); use the embedded model or --random-weights",
                self.name
            ))),
        }
    }
}

impl ModelBundle {
    /// The bundled text encoder, if any.
    pub fn text_encoder(&self) -> Option<&dyn TextEncoder> {
        self.text.as_ref().map(|t| t as &dyn TextEncoder)
    }
}

/// Pixel-space configs (3 input channels: tiny-wan) decode as they are.
fn vae_for(cfg: &WanConfig) -> Box<dyn Vae> {
    if cfg.in_dim == 3 {
        Box::new(Identity)
    } else {
        Box::new(LatentPreview)
    }
}

fn vocab_size(vocab_json: &str) -> usize {
    let v: std::collections::HashMap<String, u32> =
        serde_json::from_str(vocab_json).unwrap_or_default();
    v.values().map(|&i| i as usize + 1).max().unwrap_or(0)
}

/// What a tiny-wan caption asks for: `a {fg} {shape} moving {direction} on a {bg} background`.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    pub fg: [f64; 3],
    pub bg: [f64; 3],
    pub shape: String,
    pub direction: String,
}

impl ModelBundle {
    /// Parse a caption of the tiny template against the palette (None if it does not fit).
    pub fn caption(&self, prompt: &str) -> Option<Caption> {
        let tiny = self.tiny.as_ref()?;
        let w: Vec<String> = prompt
            .to_lowercase()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if w.len() != 9
            || w[0] != "a"
            || w[3] != "moving"
            || w[5] != "on"
            || w[6] != "a"
            || w[8] != "background"
        {
            return None;
        }
        let colour = |table: &str, name: &str| -> Option<[f64; 3]> {
            let c = tiny.get(table)?.get(name)?.as_array()?;
            Some([
                c.first()?.as_f64()?,
                c.get(1)?.as_f64()?,
                c.get(2)?.as_f64()?,
            ])
        };
        Some(Caption {
            fg: colour("fg_colours", &w[1])?,
            bg: colour("bg_colours", &w[7])?,
            shape: w[2].clone(),
            direction: w[4].clone(),
        })
    }
}
