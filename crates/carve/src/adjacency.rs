//! Adjacency mask (`gilbert_block_neighbor_mapping` / `sliced_gilbert_block_neighbor_mapping`
//! in the reference): blocks `i` and `j` are adjacent iff some token of block `i` has a token
//! of block `j` in its 3D 26-neighbourhood (|dx|, |dy|, |dz| ≤ 1). Every block is its own
//! neighbour. It keeps the local context that block-mean importance can miss at block borders.
//!
//! Depends only on the grid, the curve and the block size, so the policy computes it once per
//! stage resolution and caches it.

use crate::curve::inverse;
use jenga_tensor::{Error, Result};

/// Symmetric block adjacency over the video blocks of one curve, as sorted neighbour lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjacency {
    /// Number of blocks (`ceil(t·h·w / block)`).
    pub blocks: usize,
    row_ptr: Vec<u32>,
    cols: Vec<u32>,
}

impl Adjacency {
    /// Build from a `(t, h, w)` grid and its curve `order` (`order[k]` = raster index of the
    /// k-th token), with `block` tokens per block.
    pub fn build(grid: (usize, usize, usize), order: &[u32], block: usize) -> Result<Self> {
        let (t, h, w) = grid;
        let n = t * h * w;
        if order.len() != n || block == 0 {
            return Err(Error::invalid(
                "Adjacency::build",
                format!(
                    "order of {} tokens for grid {t}x{h}x{w}, block {block}",
                    order.len()
                ),
            ));
        }
        let blocks = n.div_ceil(block);
        // Block id of every raster position ("colour" in the reference).
        let colour: Vec<u32> = inverse(order)
            .into_iter()
            .map(|k| k / block as u32)
            .collect();
        // One bit row per block; 26-neighbourhood is symmetric so marking (a, b) for each
        // neighbouring pair from a's side covers both directions.
        let words = blocks.div_ceil(64);
        let mut bits = vec![0u64; blocks * words];
        let mut set = |a: u32, b: u32| bits[a as usize * words + b as usize / 64] |= 1 << (b % 64);
        for z in 0..t {
            for y in 0..h {
                for x in 0..w {
                    let a = colour[(z * h + y) * w + x];
                    set(a, a);
                    for nz in z.saturating_sub(1)..=(z + 1).min(t - 1) {
                        for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                            for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                                let b = colour[(nz * h + ny) * w + nx];
                                if b != a {
                                    set(a, b);
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut row_ptr = Vec::with_capacity(blocks + 1);
        let mut cols = Vec::new();
        row_ptr.push(0u32);
        for r in 0..blocks {
            for (wi, &word) in bits[r * words..(r + 1) * words].iter().enumerate() {
                let mut word = word;
                while word != 0 {
                    cols.push((wi * 64) as u32 + word.trailing_zeros());
                    word &= word - 1;
                }
            }
            row_ptr.push(cols.len() as u32);
        }
        Ok(Adjacency {
            blocks,
            row_ptr,
            cols,
        })
    }

    /// Sorted neighbours of block `i` (including `i`).
    pub fn neighbours(&self, i: usize) -> &[u32] {
        &self.cols[self.row_ptr[i] as usize..self.row_ptr[i + 1] as usize]
    }

    pub fn contains(&self, i: usize, j: usize) -> bool {
        i < self.blocks && self.neighbours(i).binary_search(&(j as u32)).is_ok()
    }

    /// Mark the neighbours of query block `i` that are below `limit` in `keep`.
    pub fn mark_row(&self, i: usize, limit: usize, keep: &mut [bool]) {
        if i < self.blocks {
            for &j in self.neighbours(i) {
                if (j as usize) < limit {
                    keep[j as usize] = true;
                }
            }
        }
    }

    /// Mean neighbours per block.
    pub fn mean_degree(&self) -> f64 {
        if self.blocks == 0 {
            return 0.0;
        }
        self.cols.len() as f64 / self.blocks as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::{gilbert3d, sliced};

    #[test]
    fn two_by_two_blocks_of_one_frame() {
        // 1 x 4 x 4 grid in raster order with blocks of 4 tokens = one row each:
        // rows 0..3 are blocks 0..3; each row touches the rows above and below only.
        let order: Vec<u32> = (0..16).collect();
        let a = Adjacency::build((1, 4, 4), &order, 4).unwrap();
        assert_eq!(a.blocks, 4);
        assert_eq!(a.neighbours(0), &[0, 1]);
        assert_eq!(a.neighbours(1), &[0, 1, 2]);
        assert_eq!(a.neighbours(3), &[2, 3]);

        // 1 x 2 x 2 block grid: a 1 x 4 x 4 frame cut into 2x2 quadrants by a custom order.
        // Quadrant q = (y/2)*2 + x/2 owns curve positions 4q..4q+4; all quadrants touch
        // (diagonal quadrants meet at the centre corner), so every block sees every block.
        let mut order = vec![0u32; 16];
        let mut next = [0usize; 4];
        for y in 0..4 {
            for x in 0..4 {
                let q = (y / 2) * 2 + x / 2;
                order[q * 4 + next[q]] = (y * 4 + x) as u32;
                next[q] += 1;
            }
        }
        let a = Adjacency::build((1, 4, 4), &order, 4).unwrap();
        for i in 0..4 {
            assert_eq!(a.neighbours(i), &[0, 1, 2, 3], "block {i}");
        }
        // 1 x 2 x 6 with 2x2 tiles: tiles 0 and 2 are two columns apart -> not adjacent.
        let mut order = Vec::new();
        for tile in 0..3 {
            for y in 0..2 {
                for x in 0..2 {
                    order.push((y * 6 + tile * 2 + x) as u32);
                }
            }
        }
        let a = Adjacency::build((1, 2, 6), &order, 4).unwrap();
        assert_eq!(a.neighbours(0), &[0, 1]);
        assert_eq!(a.neighbours(1), &[0, 1, 2]);
        assert!(!a.contains(0, 2) && a.contains(2, 1));
    }

    #[test]
    fn symmetric_self_and_against_brute_force() {
        for (grid, order) in [
            ((3, 5, 7), gilbert3d(3, 5, 7)),
            ((4, 8, 6), sliced(4, 8, 6)),
        ] {
            let (t, h, w) = grid;
            let m = 16;
            let a = Adjacency::build(grid, &order, m).unwrap();
            let inv = inverse(&order);
            let n = t * h * w;
            let mut want = vec![false; a.blocks * a.blocks];
            for r1 in 0..n {
                for r2 in 0..n {
                    let c = |r: usize| (r / (h * w), (r / w) % h, r % w);
                    let (p, q) = (c(r1), c(r2));
                    if p.0.abs_diff(q.0) <= 1 && p.1.abs_diff(q.1) <= 1 && p.2.abs_diff(q.2) <= 1 {
                        let (b1, b2) = (inv[r1] as usize / m, inv[r2] as usize / m);
                        want[b1 * a.blocks + b2] = true;
                    }
                }
            }
            for i in 0..a.blocks {
                assert!(a.contains(i, i));
                for j in 0..a.blocks {
                    assert_eq!(a.contains(i, j), want[i * a.blocks + j], "{grid:?} {i},{j}");
                    assert_eq!(a.contains(i, j), a.contains(j, i));
                }
            }
        }
    }

    #[test]
    fn wan_grid_degree_is_local() {
        let a = Adjacency::build((21, 30, 52), &sliced(21, 30, 52), 128).unwrap();
        assert_eq!(a.blocks, 256);
        let deg = a.mean_degree();
        println!("sliced 21x30x52: mean adjacency degree {deg:.1} of 256 blocks");
        assert!(deg > 3.0 && deg < 40.0, "{deg}");
        assert!(Adjacency::build((2, 2, 2), &[0, 1], 4).is_err());
    }
}
