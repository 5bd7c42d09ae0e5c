//! Block layout of one attention sequence: video tokens in curve order, then condition (text)
//! tokens, zero-padded at the end to a multiple of the block size `m` (128 in the reference).
//!
//! Condition blocks are the last blocks of the sequence. When the video token count is not a
//! multiple of `m`, one block holds both the video tail and the first condition tokens; it is
//! counted as a **condition** block here (`video_blocks = floor(video / m)`), so every video
//! query sees every condition key and that block's queries are computed densely. The Hunyuan
//! reference passes a fixed `txt_block_num = 2` instead and treats such a mixed block as video;
//! the two agree whenever the video length divides by `m` (use [`Layout::with_text_blocks`]
//! for the fixed-count behaviour). With no condition tokens (Wan self-attention) all blocks are
//! video blocks, the last one possibly partial.

use jenga_tensor::{Error, Result};
use std::ops::Range;

/// Reference block size (tokens per query block and per key block).
pub const DEFAULT_BLOCK: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Video tokens (curve order) at the start of the sequence.
    pub video_tokens: usize,
    /// Condition tokens appended after the video tokens.
    pub cond_tokens: usize,
    /// Tokens per block.
    pub block: usize,
    /// Blocks of the padded sequence: `ceil((video + cond) / block)`.
    pub num_blocks: usize,
    /// Leading blocks treated as video (queries sparse, keys scored by importance); the rest
    /// are condition blocks.
    pub video_blocks: usize,
}

impl Layout {
    /// Layout with condition blocks = every block holding a condition token.
    pub fn new(video_tokens: usize, cond_tokens: usize, block: usize) -> Result<Self> {
        if block == 0 {
            return Err(Error::invalid("Layout::new", "block size must be positive"));
        }
        let num_blocks = (video_tokens + cond_tokens).div_ceil(block);
        let video_blocks = if cond_tokens == 0 {
            num_blocks
        } else {
            video_tokens / block
        };
        Ok(Layout {
            video_tokens,
            cond_tokens,
            block,
            num_blocks,
            video_blocks,
        })
    }

    /// Layout with a fixed number of trailing condition blocks (the reference's
    /// `txt_block_num`), whatever the token counts.
    pub fn with_text_blocks(
        video_tokens: usize,
        cond_tokens: usize,
        block: usize,
        text_blocks: usize,
    ) -> Result<Self> {
        let mut l = Self::new(video_tokens, cond_tokens, block)?;
        if text_blocks > l.num_blocks {
            return Err(Error::invalid(
                "Layout::with_text_blocks",
                format!("{text_blocks} text blocks but only {} blocks", l.num_blocks),
            ));
        }
        l.video_blocks = l.num_blocks - text_blocks;
        Ok(l)
    }

    /// Unpadded sequence length.
    pub fn seq_len(&self) -> usize {
        self.video_tokens + self.cond_tokens
    }
    /// Sequence length after zero padding to whole blocks.
    pub fn padded_len(&self) -> usize {
        self.num_blocks * self.block
    }
    /// Padding tokens at the end.
    pub fn pad(&self) -> usize {
        self.padded_len() - self.seq_len()
    }
    /// Number of trailing condition blocks.
    pub fn cond_blocks(&self) -> usize {
        self.num_blocks - self.video_blocks
    }
    /// Whether block `b` is a condition block.
    pub fn is_cond_block(&self, b: usize) -> bool {
        b >= self.video_blocks && b < self.num_blocks
    }
    /// Tokens of block `b` that exist in the unpadded sequence.
    pub fn block_tokens(&self, b: usize) -> Range<usize> {
        let start = (b * self.block).min(self.seq_len());
        start..((b + 1) * self.block).min(self.seq_len())
    }
    /// Blocks holding the video tokens' curve positions (video-only layout: ceil(video/m));
    /// this is the size of the adjacency matrix.
    pub fn curve_blocks(&self) -> usize {
        self.video_tokens.div_ceil(self.block)
    }

    /// The importance floor `top_k`: `int((1 − drop) · M)` with `M` = video key blocks, as the
    /// reference rounds it (truncation toward zero, computed in f64 exactly as Python does).
    /// Wan: `M = ceil(L/128)`; Hunyuan: `M = L_img // 128`; both are `video_blocks` here.
    pub fn top_k(&self, drop: f64) -> usize {
        top_k(drop, self.video_blocks)
    }
}

/// `int((1 − drop) · blocks)`, clamped to `0..=blocks`.
pub fn top_k(drop: f64, blocks: usize) -> usize {
    let k = (1.0 - drop) * blocks as f64;
    if k.is_nan() || k <= 0.0 {
        0
    } else {
        (k as usize).min(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_layout_all_video() {
        // Wan 480p: 21 x 30 x 52 = 32760 tokens -> 256 blocks, last one 120 tokens + 8 pad.
        let l = Layout::new(32760, 0, 128).unwrap();
        assert_eq!(l.num_blocks, 256);
        assert_eq!(l.video_blocks, 256);
        assert_eq!(l.cond_blocks(), 0);
        assert_eq!(l.pad(), 8);
        assert_eq!(l.block_tokens(255), 32640..32760);
        // Reference: math.ceil(int(256 * (1 - 0.75))) = 64; drop 0.85 -> int(38.4...) = 38.
        assert_eq!(l.top_k(0.75), 64);
        assert_eq!(l.top_k(0.85), 38);
    }

    #[test]
    fn hunyuan_layout_text_last() {
        // 33 x 45 x 80 video tokens + 256 text: 118800 / 128 = 928.125.
        let l = Layout::new(118_800, 256, 128).unwrap();
        assert_eq!(l.num_blocks, 931);
        assert_eq!(l.video_blocks, 928); // = L_img // 128, as the reference's img_block_num
        assert_eq!(l.cond_blocks(), 3); // the mixed block 928 counts as condition
        assert!(l.is_cond_block(928) && !l.is_cond_block(927));
        assert_eq!(l.top_k(0.75), 232);
        let fixed = Layout::with_text_blocks(118_800, 256, 128, 2).unwrap();
        assert_eq!(fixed.video_blocks, 929);
        // When video divides by 128 the two rules agree.
        let even = Layout::new(128 * 100, 256, 128).unwrap();
        assert_eq!(even.cond_blocks(), 2);
        assert_eq!(
            even,
            Layout::with_text_blocks(128 * 100, 256, 128, 2).unwrap()
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Layout::new(10, 0, 0).is_err());
        assert!(Layout::with_text_blocks(128, 0, 128, 2).is_err());
        assert_eq!(top_k(1.5, 10), 0);
        assert_eq!(top_k(0.0, 10), 10);
    }
}
