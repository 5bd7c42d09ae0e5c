//! Pictures of kept-block masks for `--save-masks`: one head, key blocks across (x), query
//! blocks down (y); kept = white, skipped = black. Plain grayscale bytes; the caller encodes
//! them (PNG) so this crate needs no image dependency.

use jenga_tensor::{BlockPlan, Error, Result};

/// An 8-bit grayscale image, row-major, `width * height` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

pub const KEPT: u8 = 255;
pub const SKIPPED: u8 = 0;

/// Render one (batch, head) of a plan, each block as a `scale × scale` square.
pub fn render_plan(plan: &BlockPlan, batch: usize, head: usize, scale: usize) -> Result<Gray> {
    if batch >= plan.batch || head >= plan.heads || scale == 0 {
        return Err(Error::invalid(
            "render_plan",
            format!(
                "batch {batch} head {head} scale {scale} for a plan of {} x {} heads",
                plan.batch, plan.heads
            ),
        ));
    }
    let mut row = vec![false; plan.k_blocks];
    let mut rows = Vec::with_capacity(plan.q_blocks * plan.k_blocks);
    for q in 0..plan.q_blocks {
        row.fill(false);
        for &k in plan.row(batch, head, q) {
            if let Some(r) = row.get_mut(k as usize) {
                *r = true;
            }
        }
        rows.extend_from_slice(&row);
    }
    render_mask(&rows, plan.q_blocks, plan.k_blocks, scale)
}

/// Render a `[q_blocks, k_blocks]` boolean mask.
pub fn render_mask(mask: &[bool], q_blocks: usize, k_blocks: usize, scale: usize) -> Result<Gray> {
    if mask.len() != q_blocks * k_blocks || scale == 0 {
        return Err(Error::shape(
            "render_mask",
            format!(
                "{} entries for {q_blocks}x{k_blocks}, scale {scale}",
                mask.len()
            ),
        ));
    }
    let (width, height) = (k_blocks * scale, q_blocks * scale);
    let mut pixels = vec![SKIPPED; width * height];
    for (y, line) in pixels.chunks_mut(width.max(1)).enumerate() {
        let q = y / scale;
        for (x, px) in line.iter_mut().enumerate() {
            if mask[q * k_blocks + x / scale] {
                *px = KEPT;
            }
        }
    }
    Ok(Gray {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kept_blocks_white() {
        // 2 query blocks x 3 key blocks, head 1: row 0 keeps {2}, row 1 keeps {0, 1}.
        let mut mask = vec![false; 2 * 2 * 3];
        mask[6 + 2] = true;
        mask[6 + 3] = true;
        mask[6 + 4] = true;
        let plan = BlockPlan::from_mask(1, 2, 128, 2, 3, &mask).unwrap();
        let g = render_plan(&plan, 0, 1, 1).unwrap();
        assert_eq!((g.width, g.height), (3, 2));
        assert_eq!(g.pixels, vec![0, 0, 255, 255, 255, 0]);
        let g2 = render_plan(&plan, 0, 1, 2).unwrap();
        assert_eq!((g2.width, g2.height), (6, 4));
        assert_eq!(&g2.pixels[..6], &[0, 0, 0, 0, 255, 255]);
        assert_eq!(&g2.pixels[18..], &[255, 255, 255, 255, 0, 0]);
        assert!(render_plan(&plan, 0, 2, 1).is_err());
        assert!(render_mask(&[true], 2, 2, 1).is_err());
    }
}
