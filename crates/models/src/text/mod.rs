//! Text encoders: prompt → states `[len, dim]` + mask. `tiny`: the embedded model's
//! word-level encoder; `umt5` + `tokenizer`: Wan2.1's umT5-XXL and its `tokenizer.json`.

pub mod clip_text;
pub mod llama;
pub mod tiny;
pub mod tokenizer;
pub mod umt5;

pub use tiny::{TinySlots, TinyTextEncoder, Tokenizer};
pub use tokenizer::{wan_clean, Umt5Tokenizer};
pub use umt5::{Umt5Config, Umt5Encoder, Umt5Keys, Umt5Text};

use crate::Result;

/// Encoder output for one prompt: `states` `[len, dim]` row-major (rows past the prompt are
/// zeros), `mask[i]` = row `i` holds a real token.
#[derive(Clone, Debug, PartialEq)]
pub struct TextStates {
    pub states: Vec<f32>,
    pub len: usize,
    pub dim: usize,
    pub mask: Vec<bool>,
}

/// prompt → [`TextStates`].
pub trait TextEncoder: Send + Sync {
    fn encode(&self, prompt: &str) -> Result<TextStates>;
    /// Rows of the output (the model's `text_len`).
    fn max_len(&self) -> usize;
    /// Width of a row (the model's `text_dim`).
    fn dim(&self) -> usize;
}

/// The embedded model's tokenizer and encoder as one [`TextEncoder`] (a pair: the bundle's
/// `text` field has always been one).
pub type TinyText = (Tokenizer, TinyTextEncoder);

impl TextEncoder for TinyText {
    fn encode(&self, prompt: &str) -> Result<TextStates> {
        let (tokenizer, encoder) = self;
        let ids = tokenizer.encode(prompt);
        let n = ids.len().min(encoder.max_len);
        let mut mask = vec![false; encoder.max_len];
        mask[..n].iter_mut().for_each(|m| *m = true);
        Ok(TextStates {
            states: encoder.encode(&ids)?,
            len: encoder.max_len,
            dim: encoder.dim,
            mask,
        })
    }
    fn max_len(&self) -> usize {
        self.1.max_len
    }
    fn dim(&self) -> usize {
        self.1.dim
    }
}
