//! Dense boolean block mask `[batch, heads, q_blocks, k_blocks]`: the plain form of every
//! Jenga mask (importance, adjacency, condition) and of their union; tests and pictures read
//! it, the kernels read its CSR form ([`jenga_tensor::BlockPlan`]).

use jenga_tensor::{BlockPlan, Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMask {
    pub batch: usize,
    pub heads: usize,
    pub q_blocks: usize,
    pub k_blocks: usize,
    /// Row-major `[batch, heads, q_blocks, k_blocks]`.
    pub data: Vec<bool>,
}

impl BlockMask {
    /// All-false mask.
    pub fn new(batch: usize, heads: usize, q_blocks: usize, k_blocks: usize) -> Self {
        BlockMask {
            batch,
            heads,
            q_blocks,
            k_blocks,
            data: vec![false; batch * heads * q_blocks * k_blocks],
        }
    }

    fn at(&self, b: usize, h: usize, q: usize) -> usize {
        ((b * self.heads + h) * self.q_blocks + q) * self.k_blocks
    }

    pub fn get(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.data[self.at(b, h, q) + k]
    }

    pub fn set(&mut self, b: usize, h: usize, q: usize, k: usize, v: bool) {
        let i = self.at(b, h, q) + k;
        self.data[i] = v;
    }

    pub fn row(&self, b: usize, h: usize, q: usize) -> &[bool] {
        let i = self.at(b, h, q);
        &self.data[i..i + self.k_blocks]
    }

    pub fn row_mut(&mut self, b: usize, h: usize, q: usize) -> &mut [bool] {
        let i = self.at(b, h, q);
        &mut self.data[i..i + self.k_blocks]
    }

    /// Kept key blocks of one row.
    pub fn kept(&self, b: usize, h: usize, q: usize) -> Vec<usize> {
        let row = self.row(b, h, q);
        (0..row.len()).filter(|&k| row[k]).collect()
    }

    /// `self |= other` (same dimensions).
    pub fn union_with(&mut self, other: &BlockMask) -> Result<()> {
        if (self.batch, self.heads, self.q_blocks, self.k_blocks)
            != (other.batch, other.heads, other.q_blocks, other.k_blocks)
        {
            return Err(Error::shape(
                "BlockMask::union_with",
                format!(
                    "{}x{}x{}x{} vs {}x{}x{}x{}",
                    self.batch,
                    self.heads,
                    self.q_blocks,
                    self.k_blocks,
                    other.batch,
                    other.heads,
                    other.q_blocks,
                    other.k_blocks
                ),
            ));
        }
        self.data
            .iter_mut()
            .zip(&other.data)
            .for_each(|(a, &b)| *a |= b);
        Ok(())
    }

    /// Fraction of kept (query block, key block) pairs.
    pub fn density(&self) -> f64 {
        if self.data.is_empty() {
            return 0.0;
        }
        self.data.iter().filter(|&&v| v).count() as f64 / self.data.len() as f64
    }

    /// CSR plan for kernels with `block` tokens per block.
    pub fn to_plan(&self, block: usize) -> Result<BlockPlan> {
        BlockPlan::from_mask(
            self.batch,
            self.heads,
            block,
            self.q_blocks,
            self.k_blocks,
            &self.data,
        )
    }

    /// Dense form of a CSR plan.
    pub fn from_plan(plan: &BlockPlan) -> Result<Self> {
        let mut m = BlockMask::new(plan.batch, plan.heads, plan.q_blocks, plan.k_blocks);
        if plan.row_ptr.len() != plan.batch * plan.heads * plan.q_blocks + 1 {
            return Err(Error::invalid("BlockMask::from_plan", "row_ptr length"));
        }
        for b in 0..plan.batch {
            for h in 0..plan.heads {
                for q in 0..plan.q_blocks {
                    for &k in plan.row(b, h, q) {
                        if k as usize >= plan.k_blocks {
                            return Err(Error::invalid(
                                "BlockMask::from_plan",
                                "column out of range",
                            ));
                        }
                        m.set(b, h, q, k as usize, true);
                    }
                }
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_and_plan_round_trip() {
        let mut a = BlockMask::new(1, 2, 2, 3);
        a.set(0, 0, 0, 1, true);
        let mut b = BlockMask::new(1, 2, 2, 3);
        b.set(0, 1, 1, 2, true);
        b.set(0, 0, 0, 0, true);
        a.union_with(&b).unwrap();
        assert_eq!(a.kept(0, 0, 0), vec![0, 1]);
        assert_eq!(a.kept(0, 1, 1), vec![2]);
        assert!((a.density() - 3.0 / 12.0).abs() < 1e-12);
        let plan = a.to_plan(128).unwrap();
        assert_eq!(plan.row(0, 0, 0), &[0, 1]);
        assert_eq!(BlockMask::from_plan(&plan).unwrap(), a);
        assert!(a.union_with(&BlockMask::new(1, 1, 2, 3)).is_err());
    }
}
