//! Attention plans: which key blocks each query block attends to.
//!
//! The CSR form is shared by the CPU reference and the GPU kernels, so a plan built once by a
//! policy can be checked on the CPU and run on the GPU unchanged.

use crate::{Error, Result};
use std::any::Any;
use std::sync::Arc;

/// What an attention call computes.
#[derive(Clone, Debug)]
pub enum AttnPlan {
    /// Every query attends to every key.
    Dense,
    /// Block-sparse: only the listed key blocks are computed (exactly; no approximation inside
    /// a kept block).
    Sparse(Arc<BlockPlan>),
    /// Block-sparse with the CSR arrays built and kept on the device
    /// (`jenga_carve::PolicyKernels::select_blocks`); only the backend that built it can run it.
    Device(DevicePlan),
}

/// A block plan whose CSR arrays live on the device: same row layout and sorted columns as
/// [`BlockPlan`], but the host knows only its geometry. The kept-pair count is read lazily
/// (reading it waits for the device), so building and using the plan needs no host sync.
#[derive(Clone)]
pub struct DevicePlan {
    pub batch: usize,
    pub heads: usize,
    pub block: usize,
    pub q_blocks: usize,
    pub k_blocks: usize,
    /// The backend's buffers (CUDA: `jenga_cuda::DevicePlanBufs`).
    pub bufs: Arc<dyn Any + Send + Sync>,
    /// Number of kept (query block, key block) pairs, on the device.
    pub nnz: Arc<dyn DeviceCount>,
}

/// A count that lives on the device (e.g. a plan's kept pairs).
pub trait DeviceCount: Send + Sync {
    /// Download the value; waits for the work queued before it.
    fn read(&self) -> Result<u64>;
}

impl std::fmt::Debug for DevicePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DevicePlan(batch {}, heads {}, {}x{} blocks of {})",
            self.batch, self.heads, self.q_blocks, self.k_blocks, self.block
        )
    }
}

impl DevicePlan {
    /// (query block, key block) pairs of the full plan (the density's denominator).
    pub fn pairs(&self) -> u64 {
        (self.batch * self.heads * self.q_blocks * self.k_blocks) as u64
    }

    /// Fraction of pairs computed; reads the device count (waits for the device).
    pub fn density(&self) -> Result<f64> {
        let total = self.pairs();
        Ok(if total == 0 {
            0.0
        } else {
            self.nnz.read()? as f64 / total as f64
        })
    }

    /// The plan's shape (what kernels need beside the device CSR arrays).
    pub fn geometry(&self) -> PlanGeometry {
        PlanGeometry {
            batch: self.batch,
            heads: self.heads,
            block: self.block,
            q_blocks: self.q_blocks,
            k_blocks: self.k_blocks,
        }
    }

    /// Check the geometry against the attention shapes it will be used with.
    pub fn validate(&self, batch: usize, heads: usize, q_len: usize, k_len: usize) -> Result<()> {
        if self.batch != batch
            || self.heads != heads
            || self.block == 0
            || self.q_blocks != q_len.div_ceil(self.block)
            || self.k_blocks != k_len.div_ceil(self.block)
        {
            return Err(Error::shape(
                "DevicePlan::validate",
                format!(
                    "plan is {}x{} heads x {}x{} blocks of {}, attention has {batch}x{heads} heads, lengths {q_len} and {k_len}",
                    self.batch, self.heads, self.q_blocks, self.k_blocks, self.block
                ),
            ));
        }
        Ok(())
    }
}

/// The shape of a block plan without its CSR arrays: batch, heads, block size and blocks per
/// sequence. Device-built plans are known on the host only by this, so kernels that read the
/// CSR from the device take it instead of a [`BlockPlan`] (whose arrays are always complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanGeometry {
    pub batch: usize,
    pub heads: usize,
    pub block: usize,
    pub q_blocks: usize,
    pub k_blocks: usize,
}

impl PlanGeometry {
    /// CSR rows: one per (batch, head, query block).
    pub fn rows(&self) -> usize {
        self.batch * self.heads * self.q_blocks
    }
}

/// Per-(batch, head, query-block) sorted lists of kept key blocks, in CSR form.
///
/// Row `r = (b * heads + h) * q_blocks + qb` owns `col_idx[row_ptr[r]..row_ptr[r + 1]]`.
/// Blocks are `block` tokens along the attention sequence (curve order for Jenga); the last
/// block of a sequence may be partial and is masked by the sequence length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlan {
    pub batch: usize,
    pub heads: usize,
    pub block: usize,
    pub q_blocks: usize,
    pub k_blocks: usize,
    pub row_ptr: Vec<u32>,
    pub col_idx: Vec<u32>,
}

impl BlockPlan {
    /// Build from a dense boolean mask laid out `[batch, heads, q_blocks, k_blocks]`.
    pub fn from_mask(
        batch: usize,
        heads: usize,
        block: usize,
        q_blocks: usize,
        k_blocks: usize,
        mask: &[bool],
    ) -> Result<Self> {
        if mask.len() != batch * heads * q_blocks * k_blocks {
            return Err(Error::shape(
                "BlockPlan::from_mask",
                format!(
                    "mask has {} entries, expected {batch}x{heads}x{q_blocks}x{k_blocks}",
                    mask.len()
                ),
            ));
        }
        let mut row_ptr = Vec::with_capacity(batch * heads * q_blocks + 1);
        let mut col_idx = Vec::new();
        row_ptr.push(0u32);
        for row in mask.chunks(k_blocks.max(1)).take(batch * heads * q_blocks) {
            col_idx.extend(
                row.iter()
                    .enumerate()
                    .filter(|(_, &keep)| keep)
                    .map(|(j, _)| j as u32),
            );
            row_ptr.push(col_idx.len() as u32);
        }
        Ok(BlockPlan {
            batch,
            heads,
            block,
            q_blocks,
            k_blocks,
            row_ptr,
            col_idx,
        })
    }

    /// A plan that keeps every block (equal to dense attention).
    pub fn full(batch: usize, heads: usize, block: usize, q_len: usize, k_len: usize) -> Self {
        let (qb, kb) = (q_len.div_ceil(block), k_len.div_ceil(block));
        let mask = vec![true; batch * heads * qb * kb];
        Self::from_mask(batch, heads, block, qb, kb, &mask).expect("sizes agree by construction")
    }

    /// The plan's shape without its CSR arrays.
    pub fn geometry(&self) -> PlanGeometry {
        PlanGeometry {
            batch: self.batch,
            heads: self.heads,
            block: self.block,
            q_blocks: self.q_blocks,
            k_blocks: self.k_blocks,
        }
    }

    /// Query blocks `start..start + n` of every (batch, head): the plan of those query rows
    /// against the same keys (sequence parallelism computes a rank's own rows of a plan made
    /// for the whole sequence).
    pub fn query_rows(&self, start: usize, n: usize) -> Result<BlockPlan> {
        if start + n > self.q_blocks {
            return Err(Error::invalid(
                "BlockPlan::query_rows",
                format!("query blocks {start}..{} of {}", start + n, self.q_blocks),
            ));
        }
        let mut row_ptr = Vec::with_capacity(self.batch * self.heads * n + 1);
        let mut col_idx = Vec::new();
        row_ptr.push(0u32);
        for bh in 0..self.batch * self.heads {
            for qb in start..start + n {
                let r = bh * self.q_blocks + qb;
                col_idx.extend_from_slice(
                    &self.col_idx[self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize],
                );
                row_ptr.push(col_idx.len() as u32);
            }
        }
        Ok(BlockPlan {
            q_blocks: n,
            row_ptr,
            col_idx,
            ..*self
        })
    }

    /// Kept key blocks of one row.
    pub fn row(&self, b: usize, h: usize, qb: usize) -> &[u32] {
        let r = (b * self.heads + h) * self.q_blocks + qb;
        &self.col_idx[self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize]
    }

    /// Fraction of (query block, key block) pairs computed.
    pub fn density(&self) -> f64 {
        let total = self.batch * self.heads * self.q_blocks * self.k_blocks;
        if total == 0 {
            return 0.0;
        }
        self.col_idx.len() as f64 / total as f64
    }

    /// Check internal consistency against the attention shapes it will be used with.
    pub fn validate(&self, batch: usize, heads: usize, q_len: usize, k_len: usize) -> Result<()> {
        let op = "BlockPlan::validate";
        if self.batch != batch || self.heads != heads {
            return Err(Error::shape(
                op,
                format!(
                    "plan is for batch {} x heads {}, attention has {batch} x {heads}",
                    self.batch, self.heads
                ),
            ));
        }
        if self.block == 0
            || self.q_blocks != q_len.div_ceil(self.block)
            || self.k_blocks != k_len.div_ceil(self.block)
        {
            return Err(Error::shape(
                op,
                format!(
                    "plan has {}x{} blocks of {}, sequence lengths are {q_len} and {k_len}",
                    self.q_blocks, self.k_blocks, self.block
                ),
            ));
        }
        let rows = batch * heads * self.q_blocks;
        if self.row_ptr.len() != rows + 1
            || *self.row_ptr.last().unwrap() as usize != self.col_idx.len()
            || self.row_ptr.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::invalid(op, "row_ptr does not match col_idx"));
        }
        for r in 0..rows {
            let cols = &self.col_idx[self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize];
            if cols.windows(2).any(|w| w[0] >= w[1])
                || cols.iter().any(|&c| c as usize >= self.k_blocks)
            {
                return Err(Error::invalid(
                    op,
                    format!("row {r}: key blocks not sorted/unique/in range"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl DeviceCount for Fixed {
        fn read(&self) -> Result<u64> {
            Ok(self.0)
        }
    }

    #[test]
    fn host_and_device_plans_share_one_geometry() {
        let host = BlockPlan::full(2, 3, 128, 1000, 700);
        let g = host.geometry();
        assert_eq!((g.q_blocks, g.k_blocks, g.block), (8, 6, 128));
        assert_eq!(g.rows() + 1, host.row_ptr.len());
        let dev = DevicePlan {
            batch: 2,
            heads: 3,
            block: 128,
            q_blocks: 8,
            k_blocks: 6,
            bufs: Arc::new(()),
            nnz: Arc::new(Fixed(host.col_idx.len() as u64)),
        };
        assert_eq!(dev.geometry(), g);
        assert_eq!(dev.density().unwrap(), host.density());
    }

    #[test]
    fn query_rows_keep_each_heads_rows_in_order() {
        // 1 batch, 2 heads, 3 query blocks, 3 key blocks; row (h, qb) keeps key block (h + qb) % 3
        let mask: Vec<bool> = (0..2 * 3)
            .flat_map(|r| (0..3).map(move |k| k == (r / 3 + r % 3) % 3))
            .collect();
        let p = BlockPlan::from_mask(1, 2, 16, 3, 3, &mask).unwrap();
        let s = p.query_rows(1, 2).unwrap();
        assert_eq!((s.q_blocks, s.k_blocks), (2, 3));
        s.validate(1, 2, 32, 48).unwrap();
        for h in 0..2 {
            for qb in 0..2 {
                assert_eq!(s.row(0, h, qb), p.row(0, h, qb + 1));
            }
        }
        assert!(p.query_rows(2, 2).is_err());
    }
}
