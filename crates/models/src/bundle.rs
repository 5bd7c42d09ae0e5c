//! A model directory (or the embedded tiny-wan): config, DiT weights, and, for tiny-wan, its
//! tokenizer and text encoder.

use crate::{
    ModelError, Result, SafetensorsWeights, TinyTextEncoder, Tokenizer, WanConfig, WeightSource,
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

pub struct ModelBundle {
    pub name: String,
    pub dir: Option<PathBuf>,
    pub config: WanConfig,
    pub weights: SafetensorsWeights,
    /// Present for tiny-wan-style directories (`text_encoder.safetensors` + `vocab.json`).
    pub text: Option<(Tokenizer, TinyTextEncoder)>,
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
) -> Result<(Tokenizer, TinyTextEncoder)> {
    let te = TinyTextEncoder::load(weights, vocab_size, cfg.text_len, cfg.text_dim)?;
    Ok((vocab, te))
}

impl ModelBundle {
    /// The tiny-wan model embedded in the binary.
    pub fn embedded() -> Result<Self> {
        let config = WanConfig::from_json(TINY_CONFIG).map_err(ModelError::Invalid)?;
        let tok = Tokenizer::from_json(TINY_VOCAB, config.text_len).map_err(ModelError::Invalid)?;
        let vocab_size = vocab_size(TINY_VOCAB);
        let text = text_encoder(
            &SafetensorsWeights::from_static("<embedded>/text_encoder.safetensors", TINY_TEXT)?,
            tok,
            &config,
            vocab_size,
        )?;
        Ok(ModelBundle {
            name: "tiny-wan (embedded)".into(),
            dir: None,
            weights: SafetensorsWeights::from_static(
                "<embedded>/diffusion_pytorch_model.safetensors",
                TINY_DIT,
            )?,
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
        let config = WanConfig::from_file(&cfg_path)?;
        let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
            path: cfg_path.clone(),
            source,
        })?;
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
        match &self.text {
            Some((tok, te)) => te.encode(&tok.encode(prompt)),
            None => Err(ModelError::Invalid(format!(
                "{}: no text encoder for this model (umT5 is not bundled); use the embedded model or --random-weights",
                self.name
            ))),
        }
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
