//! umT5's tokenizer: a `tokenizer.json` (google/umt5-xxl's: the Wan repo's `google/umt5-xxl/`
//! folder, a diffusers `tokenizer/` folder) read by the `tokenizers` crate, and Wan's prompt
//! cleaning (`wan/modules/tokenizers.py`, `clean='whitespace'`) in front of it.
//!
//! As Wan calls it (`padding='max_length', truncation=True, max_length=text_len`,
//! `add_special_tokens=True`): the ids end with `</s>` (the file's post-processor appends
//! it) and a prompt longer than `max_len` keeps its first `max_len − 1` tokens and `</s>`.
//! The padding is not produced: the encoder runs on the prompt's own tokens (padded keys are
//! masked out in the reference, so the prompt's rows are the same) and the caller zero-pads.

use crate::{ModelError, Result};
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, TruncationParams};

pub struct Umt5Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Most ids per prompt, `</s>` included (Wan's `text_len`, 512).
    pub max_len: usize,
    pub path: PathBuf,
}

impl Umt5Tokenizer {
    /// `tokenizer.json` at `path`; an unreadable or malformed file is one error naming it.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Config {
            path: path.into(),
            detail: format!("cannot read the umT5 tokenizer (tokenizer.json): {e}"),
        })?;
        Self::from_bytes(&bytes, max_len)
            .map_err(|detail| ModelError::Config {
                path: path.into(),
                detail,
            })
            .map(|mut t| {
                t.path = path.into();
                t
            })
    }

    /// `dir/tokenizer.json`.
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"), max_len)
    }

    /// From the bytes of a `tokenizer.json`; `Err` says what is wrong with it.
    pub fn from_bytes(bytes: &[u8], max_len: usize) -> std::result::Result<Self, String> {
        if max_len == 0 {
            return Err("text length 0".into());
        }
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| format!("not a tokenizers tokenizer.json: {e}"))?;
        // Wan's call, whatever the file says: truncate to text_len, no padding.
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| format!("truncation to {max_len}: {e}"))?;
        inner.with_padding(None::<PaddingParams>);
        Ok(Umt5Tokenizer {
            inner,
            max_len,
            path: PathBuf::new(),
        })
    }

    /// The ids of `prompt` after Wan's cleaning, `</s>` appended, at most `max_len`.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        self.encode_clean(&wan_clean(prompt))
    }

    /// The ids of `text` as it is (no cleaning), `</s>` appended, at most `max_len`.
    pub fn encode_clean(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Config {
                path: self.path.clone(),
                detail: format!("tokenizing {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Size of the vocabulary with the added tokens (the model's may be larger: umT5-XXL's
    /// embedding has 256384 rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Wan's `whitespace_clean(basic_clean(text))`: `ftfy.fix_text`, `html.unescape` twice,
/// whitespace runs → one space, trimmed. Of ftfy this does what changes a prompt's tokens
/// under umT5's NFKC normaliser (curly quotes → straight ones, control characters removed)
/// and what NFKC would fold anyway (full-width ASCII, Latin ligatures); not ftfy's mojibake
/// repair (text decoded with the wrong codec). Of the HTML
/// entities it decodes the numeric ones and the common named ones (`&amp; &lt; &gt; &quot;
/// &apos; &nbsp;`), with their `;` (Python's table of 2231 names is not carried).
pub fn wan_clean(text: &str) -> String {
    let mut fixed = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' => fixed.push('\''),
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' => fixed.push('"'),
            // full-width ASCII and the ideographic space (ftfy's fix_character_width)
            '\u{ff01}'..='\u{ff5e}' => fixed.extend(char::from_u32(c as u32 - 0xfee0)),
            '\u{3000}' => fixed.push(' '),
            // Latin ligatures (ftfy's fix_latin_ligatures)
            '\u{fb00}'..='\u{fb06}' => fixed.push_str(
                ["ff", "fi", "fl", "ffi", "ffl", "st", "st"][(c as u32 - 0xfb00) as usize],
            ),
            '\u{feff}' => {}
            c if c.is_control() && !c.is_whitespace() => {}
            c => fixed.push(c),
        }
    }
    let text = html_unescape(&html_unescape(&fixed));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `&name;` / `&#N;` / `&#xH;` → the character (see [`wan_clean`] for which names).
fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest[1..].find(';').filter(|&e| e <= 10).and_then(|e| {
            let name = &rest[1..1 + e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let v = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    // Python maps invalid code points to U+FFFD
                    Some(
                        char::from_u32(v)
                            .filter(|&c| c != '\0')
                            .unwrap_or('\u{fffd}'),
                    )
                }
            }?;
            Some((c, e + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_as_wan() {
        assert_eq!(wan_clean("  a\t b \n\n c  "), "a b c");
        assert_eq!(wan_clean("cats &amp;amp; dogs"), "cats & dogs");
        assert_eq!(
            wan_clean("&lt;b&gt; &#65;&#x42; &bogus; & x"),
            "<b> AB &bogus; & x"
        );
        assert_eq!(wan_clean("\u{201c}hi\u{201d} it\u{2019}s"), "\"hi\" it's");
        assert_eq!(wan_clean("a\u{7}b\u{feff}"), "ab");
        assert_eq!(
            wan_clean("\u{fb01}ne \u{ff21}\u{ff42}\u{3000}c"),
            "fine Ab c"
        );
        assert_eq!(wan_clean(""), "");
    }
}
