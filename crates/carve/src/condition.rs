//! Always-kept regions of the plan, independent of the scores:
//! - **condition blocks** (text tokens appended after the video, HunyuanVideo's joint
//!   attention): every query block sees every condition key block, and condition query rows
//!   are dense (the reference computes them with plain flash attention over all keys);
//! - the optional **first-frame square** (Wan reference, `first_frame_blocks`): the first `n`
//!   query blocks see the first `n` key blocks.

use crate::layout::Layout;
use crate::mask::BlockMask;

/// How many leading blocks form the dense first-frame square.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FirstFrame {
    /// No square (HunyuanVideo reference).
    #[default]
    Off,
    /// `video_blocks / n` (Wan reference: `num_blocks // 21`, 21 latent frames at 81 frames).
    DivideBy(usize),
    /// `video_blocks / t` for the stage grid's frame count `t`: equals the Wan reference at 21
    /// latent frames and scales with other frame counts.
    LatentFrame,
}

impl FirstFrame {
    /// Number of blocks of the square for a layout and a grid with `frames` latent frames.
    pub fn blocks(self, layout: &Layout, frames: usize) -> usize {
        match self {
            FirstFrame::Off => 0,
            FirstFrame::DivideBy(n) if n > 0 => layout.video_blocks / n,
            FirstFrame::DivideBy(_) => 0,
            FirstFrame::LatentFrame => layout.video_blocks / frames.max(1),
        }
    }
}

/// Mark one query row's always-kept key blocks: all condition columns; for a condition query
/// row, every column; for a query row inside the first-frame square, the square's columns.
pub fn mark_row(layout: &Layout, first_frame_blocks: usize, qb: usize, keep: &mut [bool]) {
    let nb = layout.num_blocks.min(keep.len());
    if layout.is_cond_block(qb) {
        keep[..nb].fill(true);
        return;
    }
    keep[layout.video_blocks.min(nb)..nb].fill(true);
    if qb < first_frame_blocks {
        keep[..first_frame_blocks.min(nb)].fill(true);
    }
}

/// The condition (+ first-frame) mask alone, `[batch, heads, num_blocks, num_blocks]`.
pub fn condition_mask(
    layout: &Layout,
    first_frame_blocks: usize,
    batch: usize,
    heads: usize,
) -> BlockMask {
    let nb = layout.num_blocks;
    let mut m = BlockMask::new(batch, heads, nb, nb);
    for b in 0..batch {
        for h in 0..heads {
            for q in 0..nb {
                mark_row(layout, first_frame_blocks, q, m.row_mut(b, h, q));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_dense_and_text_columns_everywhere() {
        // 3 video blocks + 2 text blocks (384 video tokens, 200 text tokens).
        let l = Layout::new(384, 200, 128).unwrap();
        assert_eq!((l.num_blocks, l.video_blocks), (5, 3));
        let m = condition_mask(&l, 0, 1, 2);
        for h in 0..2 {
            for q in 0..3 {
                assert_eq!(m.kept(0, h, q), vec![3, 4]);
            }
            assert_eq!(m.kept(0, h, 3), vec![0, 1, 2, 3, 4]);
            assert_eq!(m.kept(0, h, 4), vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn no_condition_means_empty_mask() {
        let l = Layout::new(1000, 0, 128).unwrap();
        assert_eq!(condition_mask(&l, 0, 1, 1).density(), 0.0);
    }

    #[test]
    fn first_frame_square() {
        // Wan 480p: 256 blocks, 21 frames: reference num_blocks // 21 = 12.
        let l = Layout::new(21 * 30 * 52, 0, 128).unwrap();
        assert_eq!(FirstFrame::DivideBy(21).blocks(&l, 21), 12);
        assert_eq!(FirstFrame::LatentFrame.blocks(&l, 21), 12);
        assert_eq!(FirstFrame::Off.blocks(&l, 21), 0);
        let small = Layout::new(4 * 128, 0, 128).unwrap();
        let m = condition_mask(&small, 2, 1, 1);
        assert_eq!(m.kept(0, 0, 0), vec![0, 1]);
        assert_eq!(m.kept(0, 0, 1), vec![0, 1]);
        assert!(m.kept(0, 0, 2).is_empty());
    }
}
