//! Jenga block selection on the GPU ([`jenga_carve::PolicyKernels::select_blocks`]): pooled q̂/k̂ →
//! importance rule ∪ the fixed blocks → a CSR plan that stays on the device
//! ([`AttnPlan::Device`] holding [`DevicePlanBufs`]), with no host synchronisation.
//!
//! Kernels (`kernels/block_select.cu`): `select_rows` (scores, softmax, the p / top-k cut, union
//! with the fixed row → one bitmask row and its count), `scan_counts` (row_ptr and the total),
//! `expand_rows` (bitmask → ascending col_idx). `col_idx` is allocated for the worst case
//! (every block kept) since its size is not known on the host; the kept-pair count stays on
//! the device and is read only when asked for ([`DevicePlan::density`]).
//!
//! The rule is the CPU's (`jenga_carve::importance::select_row`): ties at the cut go to the
//! lower block index; non-finite scores keep the whole row. Only the summation order of the
//! scores and of the probability masses differs, so a row whose cumulative mass lands within
//! float rounding of `p` may keep one block more or less than the CPU.

use crate::arc_cache::ArcCache;
use crate::core::{CudaTensor, DevicePlanBufs};
use crate::error::{alloc_err, dev, drv};
use crate::nvrtc;
use crate::ops::Ops;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use jenga_carve::BlockSelect;
use jenga_tensor::{AttnPlan, BlockPlan, DevicePlan, Error, Result, TensorMeta};
use std::sync::{Arc, OnceLock};

const SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/block_select.cu")
);
/// Query rows per CTA of `select_rows` (`SEL_ROWS` in the kernel).
const SEL_ROWS: usize = 8;
/// Dynamic shared memory available without raising the kernel's limit.
const SMEM_DEFAULT: usize = 48 * 1024;

struct Kernels {
    pool: CudaFunction,
    select: CudaFunction,
    scan: CudaFunction,
    expand: CudaFunction,
    /// Largest dynamic shared memory `select_rows` may be given (opt-in limit).
    smem_max: usize,
}

/// Per-backend state: kernels (compiled on first use) and the fixed-row bitmasks.
#[derive(Default)]
pub(crate) struct SelectState {
    kernels: OnceLock<std::result::Result<Kernels, String>>,
    /// The fixed plans' bitmasks on the device, while the plans live.
    fixed: ArcCache<BlockPlan, Arc<CudaSlice<u32>>>,
}

/// Device pointers of a bitmask plan (per row: `words` u32 of key-block bits and the row's
/// count) and of the CSR written from it.
pub(crate) struct CsrOut {
    pub(crate) counts: u64,
    pub(crate) bits: u64,
    pub(crate) row_ptr: u64,
    pub(crate) col_idx: u64,
    pub(crate) nnz: u64,
}

/// Geometry of a self-attention plan: `blocks` query and key blocks of `block` tokens.
pub(crate) struct SquarePlan {
    pub(crate) batch: usize,
    pub(crate) heads: usize,
    pub(crate) block: usize,
    pub(crate) blocks: usize,
}

/// Block selection borrowed with the op families (for the block means) and the core.
pub(crate) struct Select<'a> {
    pub(crate) ops: &'a Ops,
    pub(crate) select: &'a SelectState,
}

impl std::ops::Deref for Select<'_> {
    type Target = Ops;
    fn deref(&self) -> &Ops {
        self.ops
    }
}

impl Select<'_> {
    /// A plan whose CSR and kept-pair count were written on the device.
    pub(crate) fn square_device_plan(
        &self,
        shape: SquarePlan,
        row_ptr: CudaSlice<u32>,
        col_idx: CudaSlice<u32>,
        nnz: CudaSlice<u32>,
    ) -> AttnPlan {
        AttnPlan::Device(DevicePlan {
            batch: shape.batch,
            heads: shape.heads,
            block: shape.block,
            q_blocks: shape.blocks,
            k_blocks: shape.blocks,
            bufs: Arc::new(DevicePlanBufs { row_ptr, col_idx }),
            nnz: self.device_count(nnz),
        })
    }

    /// Bitmask rows → CSR on the device (`scan_counts`: row_ptr and the total; `expand_rows`:
    /// ascending col_idx), no host sync. Shared by every policy that builds plans on the GPU.
    pub(crate) fn bits_to_csr(&self, o: CsrOut, rows: usize, words: usize) -> Result<()> {
        let k = self.select_kernels()?;
        let st = self.stream();
        let (rows_i, words_i) = (rows as i32, words as i32);
        let mut l = st.launch_builder(&k.scan);
        l.arg(&o.counts).arg(&o.row_ptr).arg(&o.nnz).arg(&rows_i);
        unsafe {
            l.launch(LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1024, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(drv("launching scan_counts"))?;

        const EXPAND_WARPS: usize = 8;
        let mut l = st.launch_builder(&k.expand);
        l.arg(&o.bits)
            .arg(&o.row_ptr)
            .arg(&o.col_idx)
            .arg(&rows_i)
            .arg(&words_i);
        unsafe {
            l.launch(LaunchConfig {
                grid_dim: (rows.div_ceil(EXPAND_WARPS) as u32, 1, 1),
                block_dim: ((32 * EXPAND_WARPS) as u32, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(drv("launching expand_rows"))?;
        Ok(())
    }

    fn select_kernels(&self) -> Result<&Kernels> {
        let k = self.select.kernels.get_or_init(|| {
            let build = || -> Result<Kernels> {
                let m = nvrtc::load_module(self.context(), "jenga_block_select", SRC, &[])?;
                let f = |n: &str| nvrtc::function(&m, n);
                let smem_max = nvrtc::smem_optin(self.context())?;
                Ok(Kernels {
                    pool: f("pool_qk")?,
                    select: f("select_rows")?,
                    scan: f("scan_counts")?,
                    expand: f("expand_rows")?,
                    smem_max: smem_max.max(SMEM_DEFAULT),
                })
            };
            build().map_err(|e| e.to_string())
        });
        k.as_ref()
            .map_err(|e| dev(format!("block selection kernels: {e}")))
    }

    /// Bitmask `[nb, words]` of the fixed plan (uploaded once while the Arc lives).
    fn fixed_bits(&self, fixed: &Arc<BlockPlan>, words: usize) -> Result<Arc<CudaSlice<u32>>> {
        self.select
            .fixed
            .get_or_try_insert("fixed-mask", fixed, || {
                let nb = fixed.q_blocks;
                let mut bits = vec![0u32; (nb * words).max(1)];
                for qb in 0..nb {
                    for &j in fixed.row(0, 0, qb) {
                        bits[qb * words + j as usize / 32] |= 1 << (j % 32);
                    }
                }
                Ok(Arc::new(
                    self.stream()
                        .clone_htod(&bits)
                        .map_err(alloc_err(bits.len() * 4))?,
                ))
            })
    }

    /// Block means of q and k (`[B, L, H, D]` → `[B, H, ceil(L/block), D]`), bit-identical to
    /// two [`jenga_tensor::Backend::block_mean_pool`] calls, in one launch with 16-byte loads
    /// (falls back to those calls when D % 8 ≠ 0 or a tensor is not 16-byte aligned).
    pub fn block_mean_pool_pair(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        block: usize,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let s = q.shape();
        if s.len() != 4 || k.shape() != s || block == 0 {
            return Err(Error::shape(
                "block_mean_pool_pair",
                format!("q {:?}, k {:?}, block {block}", s, k.shape()),
            ));
        }
        let (b, l, h, d) = (s[0], s[1], s[2], s[3]);
        let nb = l.div_ceil(block);
        let (qp, kp) = (self.ptr(q), self.ptr(k));
        if !d.is_multiple_of(8) || !qp.is_multiple_of(16) || !kp.is_multiple_of(16) {
            return Ok((
                self.block_mean_pool(q, block)?,
                self.block_mean_pool(k, block)?,
            ));
        }
        let (qo, ko) = (self.empty(&[b, h, nb, d])?, self.empty(&[b, h, nb, d])?);
        let n8 = (b * nb * h * d / 8) as i64;
        if n8 == 0 {
            return Ok((qo, ko));
        }
        let kern = self.select_kernels()?;
        let (qop, kop) = (self.ptr(&qo), self.ptr(&ko));
        let (l_i, h_i, d_i, nb_i, block_i) =
            (l as i32, h as i32, d as i32, nb as i32, block as i32);
        let blocks = (n8 as usize).div_ceil(256).min(self.sm_count() * 16).max(1);
        let mut lb = self.stream().launch_builder(&kern.pool);
        lb.arg(&qp)
            .arg(&kp)
            .arg(&qop)
            .arg(&kop)
            .arg(&n8)
            .arg(&l_i)
            .arg(&h_i)
            .arg(&d_i)
            .arg(&nb_i)
            .arg(&block_i);
        unsafe {
            lb.launch(LaunchConfig {
                grid_dim: (blocks as u32, 2, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(drv("launching pool_qk"))?;
        Ok((qo, ko))
    }

    /// [`jenga_carve::PolicyKernels::select_blocks`] on this GPU: pool q and k
    /// ([`Self::block_mean_pool_pair`]), then [`Self::select_blocks_pooled`].
    pub fn select_blocks_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        let s = q.shape();
        if s.len() != 4 || k.shape() != s || sel.block == 0 {
            return Err(Error::shape(
                "select_blocks",
                format!(
                    "q {:?}, k {:?} (expected equal [B, L, H, Dh]), block {}",
                    s,
                    k.shape(),
                    sel.block
                ),
            ));
        }
        let (qhat, khat) = self.block_mean_pool_pair(q, k, sel.block)?;
        self.select_blocks_pooled(&qhat, &khat, sel)
    }

    /// Selection from pooled q̂/k̂ `[B, H, nb, Dh]`. `Ok(None)` for shapes the kernels do not
    /// take (too many blocks for shared memory or 32-bit indices).
    pub fn select_blocks_pooled(
        &self,
        qhat: &CudaTensor,
        khat: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        let op = "select_blocks";
        let s = qhat.shape();
        if s.len() != 4 || khat.shape() != s {
            return Err(Error::shape(
                op,
                format!(
                    "q̂ {:?}, k̂ {:?} (expected equal [B, H, blocks, Dh])",
                    s,
                    khat.shape()
                ),
            ));
        }
        let (b, h, nb, d) = (s[0], s[1], s[2], s[3]);
        let f = &sel.fixed;
        if f.batch != 1
            || f.heads != 1
            || f.q_blocks != nb
            || f.k_blocks != nb
            || f.block != sel.block
            || f.row_ptr.len() != nb + 1
            || sel.scored_blocks > nb
            || sel.block == 0
        {
            return Err(Error::invalid(
                op,
                format!(
                    "fixed plan {}x{} heads, {}x{} blocks of {} (row_ptr {}), scored {} of {nb} blocks of {}",
                    f.batch, f.heads, f.q_blocks, f.k_blocks, f.block, f.row_ptr.len(), sel.scored_blocks, sel.block
                ),
            ));
        }
        let (bh, nv) = (b * h, sel.scored_blocks);
        let rows = bh * nb;
        let words = nb.div_ceil(32);
        let smem = SEL_ROWS * (d + nv) * 4;
        if rows == 0 {
            return Ok(None);
        }
        if bh > 65535 || rows.saturating_mul(nb) >= u32::MAX as usize || d == 0 {
            return Ok(None);
        }
        let k = self.select_kernels()?;
        if smem > k.smem_max {
            return Ok(None);
        }
        if smem > SMEM_DEFAULT {
            nvrtc::allow_dynamic_smem(&k.select, "select_rows", smem)?;
        }
        let fixed = self.fixed_bits(f, words)?;
        let st = self.stream();
        let alloc = |n: usize| -> Result<CudaSlice<u32>> {
            unsafe { st.alloc::<u32>(n.max(1)) }.map_err(alloc_err(n.max(1) * 4))
        };
        let bits = alloc(rows * words)?;
        let counts = alloc(rows)?;
        let row_ptr = alloc(rows + 1)?;
        let col_idx = alloc(rows * nb)?;
        let nnz = alloc(1)?;
        let (qp, kp) = (self.ptr(qhat), self.ptr(khat));
        let vec8 = i32::from(d.is_multiple_of(8) && qp.is_multiple_of(16) && kp.is_multiple_of(16));
        let (fp, _) = fixed.device_ptr(st);
        let (bp, _) = bits.device_ptr(st);
        let (cp, _) = counts.device_ptr(st);
        let (rp, _) = row_ptr.device_ptr(st);
        let (ip, _) = col_idx.device_ptr(st);
        let (np, _) = nnz.device_ptr(st);
        let (nb_i, nv_i, d_i, words_i) = (nb as i32, nv as i32, d as i32, words as i32);
        let scale = 1.0f32 / (d as f32).sqrt();
        let top_k = sel.top_k.min(nv) as i32;
        let p = sel.p;

        let mut l = st.launch_builder(&k.select);
        l.arg(&qp)
            .arg(&kp)
            .arg(&fp)
            .arg(&bp)
            .arg(&cp)
            .arg(&nb_i)
            .arg(&nv_i)
            .arg(&d_i)
            .arg(&words_i)
            .arg(&scale)
            .arg(&p)
            .arg(&top_k)
            .arg(&vec8);
        unsafe {
            l.launch(LaunchConfig {
                grid_dim: (nb.div_ceil(SEL_ROWS) as u32, bh as u32, 1),
                block_dim: ((32 * SEL_ROWS) as u32, 1, 1),
                shared_mem_bytes: smem as u32,
            })
        }
        .map_err(drv("launching select_rows"))?;

        self.bits_to_csr(
            CsrOut {
                counts: cp,
                bits: bp,
                row_ptr: rp,
                col_idx: ip,
                nnz: np,
            },
            rows,
            words,
        )?;

        let shape = SquarePlan {
            batch: b,
            heads: h,
            block: sel.block,
            blocks: nb,
        };
        Ok(Some(self.square_device_plan(shape, row_ptr, col_idx, nnz)))
    }

    /// Download a device plan's CSR as a [`BlockPlan`] (for tests and checks; synchronises).
    pub fn download_plan(&self, plan: &DevicePlan) -> Result<BlockPlan> {
        let d = (*plan.bufs)
            .downcast_ref::<DevicePlanBufs>()
            .ok_or_else(|| Error::invalid("download_plan", "not a CUDA device plan"))?;
        let rows = plan.batch * plan.heads * plan.q_blocks;
        let rp = self
            .stream()
            .clone_dtoh(&d.row_ptr.slice(0..rows + 1))
            .map_err(drv("downloading row_ptr"))?;
        let nnz = rp[rows] as usize;
        let col_idx = if nnz == 0 {
            Vec::new()
        } else {
            self.stream()
                .clone_dtoh(&d.col_idx.slice(0..nnz))
                .map_err(drv("downloading col_idx"))?
        };
        Ok(BlockPlan {
            batch: plan.batch,
            heads: plan.heads,
            block: plan.block,
            q_blocks: plan.q_blocks,
            k_blocks: plan.k_blocks,
            row_ptr: rp,
            col_idx,
        })
    }
}

/// Host reference of the rule, written as the official code does it (stable descending sort,
/// cumulative sum, `need = max(#(cumsum ≤ p) + 1, top_k)`), in f64: for checks that do not
/// depend on `jenga-carve`. `qhat`/`khat` are `[bh, nb, d]`.
pub fn reference_plan(
    qhat: &[f32],
    khat: &[f32],
    batch: usize,
    heads: usize,
    d: usize,
    sel: &BlockSelect,
) -> BlockPlan {
    let nb = sel.fixed.q_blocks;
    let nv = sel.scored_blocks;
    let scale = 1.0 / (d as f64).sqrt();
    let mut mask = vec![false; batch * heads * nb * nb];
    for bh in 0..batch * heads {
        for qb in 0..nb {
            let row = &mut mask[(bh * nb + qb) * nb..][..nb];
            for &j in sel.fixed.row(0, 0, qb) {
                row[j as usize] = true;
            }
            if qb >= nv {
                continue;
            }
            let q = &qhat[(bh * nb + qb) * d..][..d];
            let s: Vec<f64> = (0..nv)
                .map(|j| {
                    let k = &khat[(bh * nb + j) * d..][..d];
                    q.iter()
                        .zip(k)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            let mut order: Vec<usize> = (0..nv).collect();
            order.sort_by(|&a, &b| e[b].total_cmp(&e[a]));
            let mut cum = 0.0;
            let mut below = 0;
            for &j in &order {
                cum += e[j] / z;
                if cum <= sel.p as f64 {
                    below += 1;
                }
            }
            let need = (below + 1).max(sel.top_k).min(nv);
            for &j in &order[..need] {
                row[j] = true;
            }
        }
    }
    BlockPlan::from_mask(batch, heads, sel.block, nb, nb, &mask).expect("sizes agree")
}
