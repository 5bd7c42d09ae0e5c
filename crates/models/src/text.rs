//! The embedded model's tokenizer and text encoder (word-level vocabulary; token + position
//! embedding followed by LayerNorm). Runs on the host: it is 16×64 floats.

use crate::{ModelError, Result, WeightSource};
use std::collections::HashMap;
use std::path::Path;

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;

pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    pub max_len: usize,
}

impl Tokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_json(&text, max_len).map_err(|detail| ModelError::Config {
            path: path.into(),
            detail,
        })
    }

    pub fn from_json(text: &str, max_len: usize) -> std::result::Result<Self, String> {
        let vocab: HashMap<String, u32> =
            serde_json::from_str(text).map_err(|e| format!("vocabulary: {e}"))?;
        Ok(Tokenizer { vocab, max_len })
    }

    /// Lower-case, split on whitespace, unknown words → `<unk>`, at most `max_len` ids.
    pub fn encode(&self, prompt: &str) -> Vec<u32> {
        prompt
            .to_lowercase()
            .split_whitespace()
            .take(self.max_len)
            .map(|w| *self.vocab.get(w).unwrap_or(&UNK))
            .collect()
    }

    /// Words of a prompt the vocabulary does not know (to warn the user).
    pub fn unknown_words<'a>(&self, prompt: &'a str) -> Vec<&'a str> {
        prompt
            .split_whitespace()
            .filter(|w| !self.vocab.contains_key(&w.to_lowercase()))
            .collect()
    }
}

pub struct TinyTextEncoder {
    token: Vec<f32>,
    position: Vec<f32>,
    norm_w: Vec<f32>,
    norm_b: Vec<f32>,
    pub vocab_size: usize,
    pub max_len: usize,
    pub dim: usize,
}

impl TinyTextEncoder {
    pub fn load(
        w: &dyn WeightSource,
        vocab_size: usize,
        max_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Ok(TinyTextEncoder {
            token: w.load("token_embedding.weight", &[vocab_size, dim])?,
            position: w.load("position_embedding.weight", &[max_len, dim])?,
            norm_w: w.load("norm.weight", &[dim])?,
            norm_b: w.load("norm.bias", &[dim])?,
            vocab_size,
            max_len,
            dim,
        })
    }

    /// `[max_len, dim]`: LayerNorm(token + position) for real tokens, zero rows after them.
    pub fn encode(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.dim;
        let mut out = vec![0f32; self.max_len * d];
        for (i, &id) in ids.iter().take(self.max_len).enumerate() {
            if id as usize >= self.vocab_size {
                return Err(ModelError::Invalid(format!(
                    "token id {id} outside vocabulary of {}",
                    self.vocab_size
                )));
            }
            let row: Vec<f32> = (0..d)
                .map(|j| self.token[id as usize * d + j] + self.position[i * d + j])
                .collect();
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / d as f32;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            for j in 0..d {
                out[i * d + j] = (row[j] - mean) * rstd * self.norm_w[j] + self.norm_b[j];
            }
        }
        Ok(out)
    }
}
