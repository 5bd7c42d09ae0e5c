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

    /// Lower-case, split on whitespace, at most `max_len` ids. Unknown words are dropped, not
    /// encoded as `<unk>`: the model never saw `<unk>` in training, and an `<unk>` row shifts
    /// the positions of the words after it (a "big red circle" drew a teal background).
    pub fn encode(&self, prompt: &str) -> Vec<u32> {
        prompt
            .to_lowercase()
            .split_whitespace()
            .filter_map(|w| self.vocab.get(w).copied())
            .take(self.max_len)
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

/// The embedded model's vocabulary by slot of its caption template
/// `a {fg} {shape} moving {direction} on a {bg} background`, from the `tiny` config section.
#[derive(Clone, Debug, PartialEq)]
pub struct TinySlots {
    pub fg: Vec<String>,
    pub shapes: Vec<String>,
    pub directions: Vec<String>,
    pub bg: Vec<String>,
}

impl TinySlots {
    pub fn from_config(tiny: &serde_json::Value) -> Option<Self> {
        let names = |key: &str| -> Option<Vec<String>> {
            let v = tiny.get(key)?;
            let mut out: Vec<String> = match v {
                serde_json::Value::Object(m) => m.keys().cloned().collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                _ => return None,
            };
            if let serde_json::Value::Object(_) = v {
                out.sort();
            }
            Some(out)
        };
        Some(TinySlots {
            fg: names("fg_colours")?,
            shapes: names("shapes")?,
            directions: names("directions")?,
            bg: names("bg_colours")?,
        })
    }

    /// One line per slot, for `jenga inspect` and the README.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!("shape colour: {}", self.fg.join(" ")),
            format!("shape:        {}", self.shapes.join(" ")),
            format!("direction:    {}", self.directions.join(" ")),
            format!("background:   {}", self.bg.join(" ")),
        ]
    }

    /// What a prompt will really do, for warnings before the run: dropped words, words that
    /// the template has in another slot, a prompt that does not fit the template.
    pub fn prompt_notes(&self, tok: &Tokenizer, prompt: &str) -> Vec<String> {
        let mut notes = Vec::new();
        if prompt.trim().is_empty() {
            notes.push(
                "empty prompt: the video follows no caption (the empty prompt is the unconditional context of guidance)".to_string(),
            );
            return notes;
        }
        let unknown = tok.unknown_words(prompt);
        if !unknown.is_empty() {
            notes.push(format!(
                "words not in the vocabulary are left out of the encoding: {}",
                unknown.join(" ")
            ));
        }
        let words: Vec<String> = prompt
            .to_lowercase()
            .split_whitespace()
            .filter(|w| tok.vocab.contains_key(*w))
            .map(String::from)
            .collect();
        if words.len() > tok.max_len {
            notes.push(format!(
                "only the first {} known words are encoded ({} given)",
                tok.max_len,
                words.len()
            ));
        }
        let fits = words.len() == 9
            && words[0] == "a"
            && words[3] == "moving"
            && words[5] == "on"
            && words[6] == "a"
            && words[8] == "background";
        if !fits {
            notes.push(format!(
                "the model was trained only on captions \"a {{shape colour}} {{shape}} moving {{direction}} on a {{background}} background\"; \"{}\" does not fit it (`jenga inspect` lists the words per slot)",
                prompt.trim()
            ));
            return notes;
        }
        let slot = |w: &str, list: &[String], what: &str, notes: &mut Vec<String>| {
            if !list.iter().any(|x| x == w) {
                notes.push(format!(
                    "\"{w}\" is not a {what} the model was trained on (expected one of: {})",
                    list.join(" ")
                ));
            }
        };
        slot(&words[1], &self.fg, "shape colour", &mut notes);
        slot(&words[2], &self.shapes, "shape", &mut notes);
        slot(&words[4], &self.directions, "direction", &mut notes);
        slot(&words[7], &self.bg, "background colour", &mut notes);
        notes
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelBundle;

    fn embedded() -> (Tokenizer, TinySlots) {
        let b = ModelBundle::embedded().unwrap();
        let slots = TinySlots::from_config(b.tiny.as_ref().unwrap()).unwrap();
        (b.text.unwrap().0, slots)
    }

    #[test]
    fn unknown_words_are_dropped_not_encoded_as_unk() {
        let (tok, _) = embedded();
        let clean = tok.encode("a red circle moving right on a blue background");
        assert_eq!(clean.len(), 9);
        assert!(!clean.contains(&UNK));
        // "big" is not in the vocabulary: the encoding is that of the clean caption
        assert_eq!(
            tok.encode("a big red circle moving right on a blue background"),
            clean
        );
        assert_eq!(
            tok.encode("A RED circle moving right on a blue background!!"),
            {
                let mut c = clean.clone();
                c.pop(); // "background!!" is not a word of the vocabulary
                c
            }
        );
    }

    #[test]
    fn prompt_notes_name_dropped_words_wrong_slots_and_empty_prompts() {
        let (tok, slots) = embedded();
        let ok = "a red circle moving right on a blue background";
        assert!(
            slots.prompt_notes(&tok, ok).is_empty(),
            "{:?}",
            slots.prompt_notes(&tok, ok)
        );
        let n = slots.prompt_notes(&tok, "a big red circle moving right on a blue background");
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].contains("left out") && n[0].contains("big"), "{n:?}");
        // teal is a background-only colour
        let n = slots.prompt_notes(&tok, "a teal circle moving right on a blue background");
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].contains("\"teal\"") && n[0].contains("shape colour"),
            "{n:?}"
        );
        let n = slots.prompt_notes(&tok, "   ");
        assert!(n[0].starts_with("empty prompt"), "{n:?}");
        let n = slots.prompt_notes(&tok, "red circle");
        assert!(n[0].contains("trained only on captions"), "{n:?}");
        assert_eq!(slots.describe().len(), 4);
        assert!(slots.describe()[0].contains("red") && slots.describe()[3].contains("teal"));
    }
}
