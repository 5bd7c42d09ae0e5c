//! DraftAttention (Shen et al. 2025) as an attention policy: a low-resolution "draft" attention
//! map from frame-wise 2D average-pooled q and k picks the key blocks to compute, and tokens
//! are reordered so every pooled region is one contiguous block.
//!
//! Reference: `shawnricecake/draft-attention`, class `Draft_Attention` (`draft_attention.py`,
//! `wan/wan/modules/attention.py`):
//!
//! - **Pooling** (`sample_qk_attention_2d`): per frame and head, `avg_pool2d` of q and k with
//!   kernel = stride = `pool_h × pool_w` = 8 × 16 latent tokens (`ceil_mode`: edge regions
//!   average their valid tokens), giving `S = frames · ⌈h/8⌉ · ⌈w/16⌉` draft tokens.
//! - **Draft map**: per head, `softmax(q̂ k̂ᵀ/√d)` over the S draft keys of each draft query.
//! - **Selection** (`attention_percentile_mask_headwise`): per head, one *global* threshold over
//!   the whole S × S map: `k = int(sparsity·S²)` smallest entries are excluded, i.e. entries
//!   `≥` the k-th smallest are kept (ties kept). Condition (text) rows/columns are all kept.
//! - **Reordering** (`generate_reorg_indices`): within each band of `pool_h` latent rows, for
//!   each `pool_w`-wide column chunk, its row segments in order — so every region is one
//!   contiguous run of `pool_h·pool_w` = 128 tokens, the draft map *is* the 128-block mask, and
//!   the region order is the pooled order (frame, region row, region column). Here this is the
//!   policy's [`AttentionPolicy::token_order`], applied once per grid by the model.
//! - **Dense fallback** (Wan script): the first transformer block (`idx_block < 1`) and steps
//!   with timestep `> 925` run dense; [`DraftConfig::dense_steps`] is that step count, which the
//!   caller derives from its sigma schedule (the seam passes step indices, not timesteps).
//! - Sparsity: the Wan script uses 0.75, the class default / HunyuanVideo 0.9.
//!
//! Differences, all documented in `docs/POLICIES.md`:
//! - **Any resolution.** The reference asserts `h % pool_h == 0` and `w % pool_w == 0`
//!   ("padding for any resolution" is on its TODO list). Here edge regions are smaller; when a
//!   region is not exactly one block, the block plan is the superset "key block j is kept for
//!   query block i iff any region of i keeps any region of j", and q̂/k̂ are pooled on the host.
//! - **Empty rows.** A global threshold can leave a draft query row with no kept entry; the
//!   reference's block-sparse kernel then outputs zeros for those 128 queries. Here every row
//!   keeps at least `min_blocks_per_row` (1) of its highest entries; 0 restores the reference.
//! - **Batch.** The reference (batch 1 per forward in Wan) selects from the first sequence and
//!   repeats the mask over the batch; here each batch entry (CFG's conditional and
//!   unconditional rows) gets its own map.
//! - **On a GPU** ([`PolicyKernels::draft_select`]) pooling, draft map, global threshold, top-up and
//!   the region → block superset all run on the device, at any resolution; nothing comes back
//!   per call (the plan is an [`AttnPlan::Device`], density and top-ups are read when asked
//!   for). Same rule as the host; the map's sums are ordered differently (f32 on both sides),
//!   so an entry within rounding of the threshold may flip.

use crate::importance::block_scores;
use crate::kernels::{DraftSelect, PolicyKernels};
use crate::policy::{lock, DensityLog};
use crate::policy::{AttentionPolicy, AttnCtx, DensityStats};
use jenga_tensor::{AttnPlan, BlockPlan, DeviceCount, Error, Result, TensorMeta};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// DraftAttention settings; defaults are the reference's Wan2.1 script.
#[derive(Clone, Debug, PartialEq)]
pub struct DraftConfig {
    /// Latent rows per pooled region (8).
    pub pool_h: usize,
    /// Latent columns per pooled region (16).
    pub pool_w: usize,
    /// Fraction of the draft map excluded per head (Wan 0.75, HunyuanVideo 0.9).
    pub sparsity: f64,
    /// Tokens per block of the emitted plans (128, the Block-Sparse-Attention kernel's).
    pub block: usize,
    /// Leading transformer layers that run dense (Wan: 1).
    pub dense_layers: usize,
    /// Leading steps that run dense (Wan: those with timestep > 925).
    pub dense_steps: usize,
    /// Every draft row keeps at least this many of its highest entries (0 = reference).
    pub min_blocks_per_row: usize,
}

impl Default for DraftConfig {
    fn default() -> Self {
        DraftConfig {
            pool_h: 8,
            pool_w: 16,
            sparsity: 0.75,
            block: 128,
            dense_layers: 1,
            dense_steps: 0,
            min_blocks_per_row: 1,
        }
    }
}

/// The Wan reference's dense-timestep threshold (`current_timestep > 925`).
pub const WAN_DENSE_TIMESTEP: f64 = 925.0;

impl DraftConfig {
    pub fn validate(&self) -> Result<()> {
        let op = "DraftConfig";
        if self.pool_h == 0 || self.pool_w == 0 || self.block == 0 {
            return Err(Error::invalid(op, "pool sizes and block must be positive"));
        }
        if !(0.0..1.0).contains(&self.sparsity) {
            return Err(Error::invalid(
                op,
                format!("sparsity {} must be in [0, 1)", self.sparsity),
            ));
        }
        Ok(())
    }

    /// Steps whose timestep `1000·σ` exceeds `threshold`, from a step's sigmas (the first
    /// `steps` values of the schedule): the reference's dense warm-up as a step count.
    pub fn dense_steps_from_sigmas(sigmas: &[f64], threshold: f64) -> usize {
        sigmas
            .iter()
            .take_while(|&&s| s * 1000.0 > threshold)
            .count()
    }
}

/// Per-grid layout: the region-contiguous token order and how regions fall into blocks.
#[derive(Debug)]
pub struct DraftGeometry {
    pub grid: (usize, usize, usize),
    pub cond: usize,
    /// `order[k]` = raster index of the k-th video token.
    pub order: Arc<Vec<u32>>,
    /// Region r holds order positions `region_start[r]..region_start[r + 1]`.
    pub region_start: Vec<usize>,
    /// Every region is exactly one block (the reference's case).
    pub aligned: bool,
    pub block: usize,
    /// Blocks of the whole sequence (video + condition).
    pub blocks: usize,
    /// Regions overlapping each block (empty for pure condition blocks).
    pub block_regions: Vec<Range<usize>>,
    /// Whether a block holds condition tokens.
    pub block_cond: Vec<bool>,
    /// The same tables for [`PolicyKernels::draft_select`].
    pub region_start_u32: Arc<Vec<u32>>,
    pub block_table: Arc<Vec<[u32; 3]>>,
}

impl DraftGeometry {
    pub fn build(grid: (usize, usize, usize), cond: usize, cfg: &DraftConfig) -> Self {
        let (t, h, w) = grid;
        let (ph, pw, m) = (cfg.pool_h, cfg.pool_w, cfg.block);
        let (rh, rw) = (h.div_ceil(ph), w.div_ceil(pw));
        let mut order = Vec::with_capacity(t * h * w);
        let mut region_start = Vec::with_capacity(t * rh * rw + 1);
        for f in 0..t {
            for band in 0..rh {
                let rows = band * ph..((band + 1) * ph).min(h);
                for c in 0..rw {
                    region_start.push(order.len());
                    let cols = c * pw..((c + 1) * pw).min(w);
                    for y in rows.clone() {
                        for x in cols.clone() {
                            order.push((f * h * w + y * w + x) as u32);
                        }
                    }
                }
            }
        }
        region_start.push(order.len());
        let video = order.len();
        let len = video + cond;
        let blocks = len.div_ceil(m);
        let aligned = region_start.windows(2).all(|r| r[1] - r[0] == m);
        let block_regions: Vec<Range<usize>> = (0..blocks)
            .map(|b| {
                let (s, e) = (b * m, ((b + 1) * m).min(video));
                if s >= e {
                    return 0..0;
                }
                // first region containing s .. last region containing e − 1
                let lo = region_start.partition_point(|&x| x <= s) - 1;
                let hi = region_start.partition_point(|&x| x < e);
                lo..hi
            })
            .collect();
        let block_cond: Vec<bool> = (0..blocks)
            .map(|b| cond > 0 && (b + 1) * m > video && b * m < len)
            .collect();
        let region_start_u32 = Arc::new(region_start.iter().map(|&x| x as u32).collect());
        let block_table = Arc::new(
            block_regions
                .iter()
                .zip(&block_cond)
                .map(|(r, &c)| [r.start as u32, r.end as u32, c as u32])
                .collect(),
        );
        DraftGeometry {
            grid,
            cond,
            order: Arc::new(order),
            region_start,
            aligned,
            block: m,
            blocks,
            block_regions,
            block_cond,
            region_start_u32,
            block_table,
        }
    }

    pub fn regions(&self) -> usize {
        self.region_start.len() - 1
    }

    /// Host pooling: `x` `[B, L, H, D]` in this order → `[B, H, S, D]` region means.
    pub fn pool(&self, x: &[f32], batch: usize, heads: usize, d: usize) -> Vec<f32> {
        let s = self.regions();
        let l = self.order.len() + self.cond;
        let mut out = vec![0f32; batch * heads * s * d];
        out.par_chunks_mut(s * d).enumerate().for_each(|(bh, dst)| {
            let (b, h) = (bh / heads, bh % heads);
            for r in 0..s {
                let toks = self.region_start[r]..self.region_start[r + 1];
                let inv = 1.0 / toks.len().max(1) as f32;
                let acc = &mut dst[r * d..][..d];
                for t in toks {
                    let src = &x[((b * l + t) * heads + h) * d..][..d];
                    acc.iter_mut().zip(src).for_each(|(a, v)| *a += v);
                }
                acc.iter_mut().for_each(|a| *a *= inv);
            }
        });
        out
    }

    /// Block plan rows of one head from its `S × S` region mask.
    pub fn rows_from_regions(&self, keep: &[bool]) -> Vec<Vec<u32>> {
        let s = self.regions();
        let nb = self.blocks;
        let cond_cols: Vec<u32> = (0..nb as u32)
            .filter(|&j| self.block_cond[j as usize])
            .collect();
        (0..nb)
            .map(|i| {
                if self.block_cond[i] {
                    // condition query rows are dense (also in a block mixing video and condition)
                    return (0..nb as u32).collect();
                }
                let mut any = vec![false; s];
                for r in self.block_regions[i].clone() {
                    any.iter_mut()
                        .zip(&keep[r * s..][..s])
                        .for_each(|(a, &k)| *a |= k);
                }
                let mut row: Vec<u32> = (0..nb)
                    .filter(|&j| {
                        !self.block_cond[j] && self.block_regions[j].clone().any(|r| any[r])
                    })
                    .map(|j| j as u32)
                    .collect();
                row.extend_from_slice(&cond_cols);
                row.sort_unstable();
                row
            })
            .collect()
    }
}

/// Softmax rows of the draft map: `q̂`, `k̂` `[S, d]` → `[S, S]` probabilities.
pub fn draft_map(qhat: &[f32], khat: &[f32], s: usize, d: usize) -> Vec<f32> {
    let mut p = vec![0f32; s * s];
    block_scores(qhat, khat, s, s, d, &mut p);
    for row in p.chunks_mut(s.max(1)) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut z = 0.0f32;
        row.iter_mut().for_each(|v| {
            *v = (*v - m).exp();
            z += *v;
        });
        row.iter_mut().for_each(|v| *v /= z);
    }
    p
}

/// The reference's per-head global percentile: exclude the `int(sparsity·n)` smallest entries
/// (keep everything `≥` the largest of them), then top up rows holding fewer than `min_per_row`
/// with their highest entries. Returns the mask and how many rows were topped up.
pub fn select_global(
    map: &[f32],
    s: usize,
    sparsity: f64,
    min_per_row: usize,
) -> (Vec<bool>, usize) {
    let n = map.len();
    let excl = excluded(n, sparsity);
    let mut keep = if excl == 0 {
        vec![true; n]
    } else if excl >= n {
        vec![false; n]
    } else {
        let mut v = map.to_vec();
        let (_, &mut thr, _) = v.select_nth_unstable_by(excl - 1, |a, b| a.total_cmp(b));
        map.iter().map(|&x| x >= thr).collect()
    };
    let mut topped = 0;
    if min_per_row > 0 && s > 0 {
        for (row, kr) in map.chunks(s).zip(keep.chunks_mut(s)) {
            let have = kr.iter().filter(|&&k| k).count();
            if have >= min_per_row.min(s) {
                continue;
            }
            topped += 1;
            let mut idx: Vec<usize> = (0..s).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &j in idx.iter().take(min_per_row) {
                kr[j] = true;
            }
        }
    }
    (keep, topped)
}

/// Entries of an `n`-entry map excluded at `sparsity`: the reference passes `r = 1 − sparsity`
/// and computes `int((1 − r)·n)` (kept as written: `1 − (1 − s)` is not always `s`).
pub fn excluded(n: usize, sparsity: f64) -> usize {
    let r = 1.0 - sparsity;
    ((1.0 - r) * n as f64) as usize
}

type GeomKey = ((usize, usize, usize), usize);

/// The DraftAttention policy. Thread-safe; geometry cached per (grid, condition tokens).
pub struct DraftPolicy {
    cfg: DraftConfig,
    geometry: Mutex<HashMap<GeomKey, Arc<DraftGeometry>>>,
    /// With each device-built plan: its count of topped-up draft rows.
    log: DensityLog<Arc<dyn DeviceCount>>,
    topped_rows: AtomicU64,
    map_rows: AtomicU64,
    device_plans: AtomicBool,
}

impl DraftPolicy {
    pub fn new(cfg: DraftConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(DraftPolicy {
            cfg,
            geometry: Mutex::new(HashMap::new()),
            log: DensityLog::default(),
            topped_rows: AtomicU64::new(0),
            map_rows: AtomicU64::new(0),
            device_plans: AtomicBool::new(true),
        })
    }

    /// Whether plans built on the device may stay there ([`AttnPlan::Device`], default on).
    /// Off: they are downloaded ([`PolicyKernels::host_plan`]) and returned as [`AttnPlan::Sparse`].
    pub fn set_device_plans(&self, on: bool) {
        self.device_plans.store(on, Ordering::Relaxed);
    }

    /// What [`PolicyKernels::draft_select`] is asked for on a geometry.
    pub fn select_spec(&self, geom: &DraftGeometry) -> DraftSelect {
        let s = geom.regions();
        DraftSelect {
            region_start: geom.region_start_u32.clone(),
            block_regions: geom.block_table.clone(),
            block: geom.block,
            exclude: excluded(s * s, self.cfg.sparsity),
            min_per_row: self.cfg.min_blocks_per_row,
        }
    }

    /// Read the device counts of device-built plans into the stats (waits for the device).
    fn drain_pending(&self) {
        self.log
            .drain(|t: Arc<dyn DeviceCount>| self.count_topped(t.as_ref()));
    }

    fn count_topped(&self, topped: &dyn DeviceCount) {
        match topped.read() {
            Ok(t) => {
                self.topped_rows.fetch_add(t, Ordering::Relaxed);
            }
            Err(e) => eprintln!("warning: DraftAttention top-up count unavailable ({e})"),
        }
    }

    pub fn config(&self) -> &DraftConfig {
        &self.cfg
    }

    pub fn geometry(&self, grid: (usize, usize, usize), cond: usize) -> Arc<DraftGeometry> {
        let key = (grid, cond);
        if let Some(g) = lock(&self.geometry).get(&key) {
            return g.clone();
        }
        let g = Arc::new(DraftGeometry::build(grid, cond, &self.cfg));
        lock(&self.geometry).entry(key).or_insert(g).clone()
    }

    /// Draft rows that kept no entry under the global threshold and were topped up, out of all
    /// draft rows selected so far.
    pub fn topped_rows(&self) -> (u64, u64) {
        self.drain_pending();
        (
            self.topped_rows.load(Ordering::Relaxed),
            self.map_rows.load(Ordering::Relaxed),
        )
    }

    pub fn reset_stats(&self) {
        self.log.reset();
        self.topped_rows.store(0, Ordering::Relaxed);
        self.map_rows.store(0, Ordering::Relaxed);
    }

    /// Plan from pooled `q̂`/`k̂` (`[batch, heads, S, head_dim]`, region order).
    pub fn plan_from_pooled(
        &self,
        geom: &DraftGeometry,
        qhat: &[f32],
        khat: &[f32],
        batch: usize,
        heads: usize,
        d: usize,
    ) -> BlockPlan {
        let s = geom.regions();
        let per_head: Vec<(Vec<Vec<u32>>, usize)> = (0..batch * heads)
            .into_par_iter()
            .map(|bh| {
                let map = draft_map(
                    &qhat[bh * s * d..][..s * d],
                    &khat[bh * s * d..][..s * d],
                    s,
                    d,
                );
                let (keep, topped) =
                    select_global(&map, s, self.cfg.sparsity, self.cfg.min_blocks_per_row);
                (geom.rows_from_regions(&keep), topped)
            })
            .collect();
        let mut row_ptr = vec![0u32];
        let mut col_idx = Vec::new();
        let mut topped = 0;
        for (rows, t) in per_head {
            topped += t;
            for r in rows {
                col_idx.extend_from_slice(&r);
                row_ptr.push(col_idx.len() as u32);
            }
        }
        self.topped_rows.fetch_add(topped as u64, Ordering::Relaxed);
        self.map_rows
            .fetch_add((batch * heads * s) as u64, Ordering::Relaxed);
        BlockPlan {
            batch,
            heads,
            block: geom.block,
            q_blocks: geom.blocks,
            k_blocks: geom.blocks,
            row_ptr,
            col_idx,
        }
    }
}

impl<B: PolicyKernels> AttentionPolicy<B> for DraftPolicy {
    fn name(&self) -> String {
        format!(
            "draft(pool {}x{}, sparsity {}, m={})",
            self.cfg.pool_h, self.cfg.pool_w, self.cfg.sparsity, self.cfg.block
        )
    }

    fn token_order(&self, grid: (usize, usize, usize)) -> Option<Arc<Vec<u32>>> {
        Some(self.geometry(grid, 0).order.clone())
    }

    fn plan(&self, be: &B, q: &B::Tensor, k: &B::Tensor, ctx: &AttnCtx) -> Result<AttnPlan> {
        if ctx.layer < self.cfg.dense_layers || ctx.step < self.cfg.dense_steps {
            self.log.record(ctx.stage, None);
            return Ok(AttnPlan::Dense);
        }
        let (t, h, w) = ctx.grid;
        let len = t * h * w + ctx.cond_tokens;
        let (qs, ks) = (q.shape(), k.shape());
        if qs.len() != 4 || qs != ks || qs[1] != len {
            return Err(Error::shape(
                "DraftPolicy::plan",
                format!(
                    "q {qs:?} / k {ks:?}, expected equal [B, {len}, H, Dh] for grid {t}x{h}x{w} + {} condition tokens",
                    ctx.cond_tokens
                ),
            ));
        }
        let (batch, heads, d) = (qs[0], qs[2], qs[3]);
        let geom = self.geometry(ctx.grid, ctx.cond_tokens);
        let s = geom.regions();
        if let Some((plan, topped)) = be.draft_select(q, k, &self.select_spec(&geom))? {
            self.map_rows
                .fetch_add((batch * heads * s) as u64, Ordering::Relaxed);
            if let (AttnPlan::Device(dp), true) = (&plan, self.device_plans.load(Ordering::Relaxed))
            {
                let count = |t: Arc<dyn DeviceCount>| self.count_topped(t.as_ref());
                let nnz = dp.nnz.clone();
                self.log
                    .record_device(ctx.stage, nnz, dp.pairs(), topped, count);
                return Ok(plan);
            }
            let plan = be.host_plan(&plan)?;
            let AttnPlan::Sparse(p) = &plan else {
                return Err(Error::invalid(
                    "DraftPolicy::plan",
                    "draft_select gave no block plan",
                ));
            };
            self.log.record(ctx.stage, Some(p.density()));
            self.count_topped(topped.as_ref());
            return Ok(plan);
        }
        let (qhat, khat) = if geom.aligned {
            // Each region is one block: pool on the device, keep the S video blocks.
            let nb = geom.blocks;
            let take = |x: Vec<f32>| -> Vec<f32> {
                x.chunks(nb * d)
                    .flat_map(|c| c[..s * d].iter().copied())
                    .collect()
            };
            (
                take(be.download(&be.block_mean_pool(q, geom.block)?)?),
                take(be.download(&be.block_mean_pool(k, geom.block)?)?),
            )
        } else {
            (
                geom.pool(&be.download(q)?, batch, heads, d),
                geom.pool(&be.download(k)?, batch, heads, d),
            )
        };
        let plan = self.plan_from_pooled(&geom, &qhat, &khat, batch, heads, d);
        self.log.record(ctx.stage, Some(plan.density()));
        Ok(AttnPlan::Sparse(Arc::new(plan)))
    }

    fn density_stats(&self) -> Vec<DensityStats> {
        self.drain_pending();
        self.log.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jenga_tensor::Backend;
    use jenga_tensor::CpuBackend;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    fn ctx(step: usize, layer: usize, grid: (usize, usize, usize)) -> AttnCtx {
        AttnCtx {
            step,
            num_steps: 30,
            layer,
            num_layers: 6,
            stage: 0,
            grid,
            cond_tokens: 0,
        }
    }

    /// The reference's `generate_reorg_indices`, transcribed (one frame after another).
    fn reference_reorg(total: usize, part: usize, block: usize, sub: usize) -> Vec<u32> {
        let mut pat = Vec::new();
        for c in 0..block / sub {
            for b in 0..part / block {
                let st = b * block + c * sub;
                pat.extend(st..st + sub);
            }
        }
        (0..total / part)
            .flat_map(|p| pat.iter().map(move |i| (p * part + i) as u32))
            .collect()
    }

    #[test]
    fn order_equals_the_reference_reorg_when_divisible() {
        for grid in [(1, 16, 32), (3, 16, 16), (2, 48, 80)] {
            let g = DraftGeometry::build(grid, 0, &DraftConfig::default());
            let (t, h, w) = grid;
            assert_eq!(
                *g.order,
                reference_reorg(t * h * w, w * 8, w, 16),
                "{grid:?}"
            );
            assert!(g.aligned);
            assert_eq!(g.regions(), t * (h / 8) * (w / 16));
        }
        // hand check: 16 × 32 frame → region 0 = rows 0..8 of columns 0..16
        let g = DraftGeometry::build((1, 16, 32), 0, &DraftConfig::default());
        assert_eq!(&g.order[..3], &[0, 1, 2]);
        assert_eq!(g.order[16], 32); // row 1, column 0
        assert_eq!(g.order[127], 7 * 32 + 15);
        assert_eq!(g.order[128], 16); // region 1 = columns 16..32
    }

    #[test]
    fn order_is_a_bijection_and_regions_are_contiguous_at_any_size() {
        for grid in [(3, 30, 52), (2, 10, 20), (1, 5, 7), (21, 60, 104)] {
            let g = DraftGeometry::build(grid, 0, &DraftConfig::default());
            let n = grid.0 * grid.1 * grid.2;
            assert!(crate::curve::is_permutation(&g.order), "{grid:?}");
            assert_eq!(g.order.len(), n);
            let (rh, rw) = (grid.1.div_ceil(8), grid.2.div_ceil(16));
            assert_eq!(g.regions(), grid.0 * rh * rw);
            // every region is one frame's rectangle of at most 8 × 16 tokens
            for r in 0..g.regions() {
                let toks = &g.order[g.region_start[r]..g.region_start[r + 1]];
                let (hw, w) = (grid.1 * grid.2, grid.2);
                let f0 = toks[0] as usize / hw;
                let ys: Vec<usize> = toks.iter().map(|&i| (i as usize % hw) / w).collect();
                let xs: Vec<usize> = toks.iter().map(|&i| i as usize % w).collect();
                assert!(toks.iter().all(|&i| i as usize / hw == f0));
                let (y0, y1) = (*ys.iter().min().unwrap(), *ys.iter().max().unwrap());
                let (x0, x1) = (*xs.iter().min().unwrap(), *xs.iter().max().unwrap());
                assert!(y1 - y0 < 8 && x1 - x0 < 16 && y0 % 8 == 0 && x0 % 16 == 0);
                assert_eq!(toks.len(), (y1 - y0 + 1) * (x1 - x0 + 1));
            }
        }
        assert!(!DraftGeometry::build((3, 30, 52), 0, &DraftConfig::default()).aligned);
    }

    #[test]
    fn host_pooling_is_ceil_mode_avg_pool() {
        // 1 frame of 10 × 20: regions 8×16, 8×4, 2×16, 2×4 (valid tokens only)
        let grid = (1, 10, 20);
        let g = DraftGeometry::build(grid, 0, &DraftConfig::default());
        let (heads, d) = (2, 3);
        let raster: Vec<f32> = random(200 * heads * d, 1);
        // lay the raster tensor out in the draft order
        let mut x = vec![0f32; raster.len()];
        for (k, &r) in g.order.iter().enumerate() {
            x[k * heads * d..][..heads * d]
                .copy_from_slice(&raster[r as usize * heads * d..][..heads * d]);
        }
        let pooled = g.pool(&x, 1, heads, d);
        let regions = [
            (0..8, 0..16),
            (0..8, 16..20),
            (8..10, 0..16),
            (8..10, 16..20),
        ];
        for h in 0..heads {
            for (ri, (ys, xs)) in regions.iter().enumerate() {
                for c in 0..d {
                    let mut sum = 0.0;
                    for y in ys.clone() {
                        for xx in xs.clone() {
                            sum += raster[((y * 20 + xx) * heads + h) * d + c];
                        }
                    }
                    let want = sum / (ys.len() * xs.len()) as f32;
                    let got = pooled[(h * 4 + ri) * d + c];
                    assert!(
                        (got - want).abs() < 1e-5,
                        "h{h} r{ri} c{c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn global_percentile_on_a_hand_made_map() {
        // one head, S = 2: entries 0.1 0.9 / 0.6 0.4. sparsity 0.5 → exclude int(0.5·4) = 2
        // smallest (0.1, 0.4) → threshold 0.4, keep ≥ 0.4: 0.9, 0.6, 0.4.
        let map = [0.1f32, 0.9, 0.6, 0.4];
        let (keep, topped) = select_global(&map, 2, 0.5, 0);
        assert_eq!(keep, vec![false, true, true, true]);
        assert_eq!(topped, 0);
        // sparsity 0.75 → exclude 3 → threshold 0.6 → row 0 keeps 0.9, row 1 keeps 0.6
        let (keep, _) = select_global(&map, 2, 0.75, 0);
        assert_eq!(keep, vec![false, true, true, false]);
        // a flat row loses everything under a global threshold: S = 3, sparsity 0.9 →
        // exclude int(0.9·9) = 8 → threshold 0.98: row 0 (flat) keeps nothing …
        let map = [0.34f32, 0.33, 0.33, 0.01, 0.01, 0.98, 0.005, 0.005, 0.99];
        let (keep, topped) = select_global(&map, 3, 0.9, 0);
        let kept: Vec<usize> = (0..9).filter(|&i| keep[i]).collect();
        assert_eq!(kept, vec![5, 8]);
        assert_eq!(topped, 0);
        // … unless topped up with its best entry
        let (keep, topped) = select_global(&map, 3, 0.9, 1);
        let kept: Vec<usize> = (0..9).filter(|&i| keep[i]).collect();
        assert_eq!(kept, vec![0, 5, 8]);
        assert_eq!(topped, 1);
        // sparsity 0 keeps all
        assert!(select_global(&map, 2, 0.0, 0).0.iter().all(|&k| k));
    }

    #[test]
    fn density_at_target() {
        // 4 frames of 32 × 64 → S = 4·4·4 = 64 regions = 64 blocks (aligned)
        let grid = (4, 32, 64);
        let pol = DraftPolicy::new(DraftConfig {
            min_blocks_per_row: 0,
            ..DraftConfig::default()
        })
        .unwrap();
        let g = pol.geometry(grid, 0);
        assert!(g.aligned && g.regions() == 64 && g.blocks == 64);
        let (b, h, d) = (2, 3, 16);
        let qhat = random(b * h * 64 * d, 2);
        let khat = random(b * h * 64 * d, 3);
        for sp in [0.5, 0.75, 0.9] {
            let pol = DraftPolicy::new(DraftConfig {
                sparsity: sp,
                min_blocks_per_row: 0,
                ..DraftConfig::default()
            })
            .unwrap();
            let plan = pol.plan_from_pooled(&g, &qhat, &khat, b, h, d);
            plan.validate(b, h, g.blocks * 128, g.blocks * 128).unwrap();
            // distinct continuous values: exactly n − excl + 1 entries kept per head
            let n = 64 * 64;
            let excl = (sp * n as f64) as usize;
            let want = (n - excl + 1) as f64 / n as f64;
            assert!(
                (plan.density() - want).abs() < 1e-9,
                "{sp}: {} vs {want}",
                plan.density()
            );
        }
    }

    #[test]
    fn superset_plan_when_regions_straddle_blocks() {
        // 1 frame of 10 × 20 with 1 condition token: regions of 128, 32, 32, 8 tokens;
        // blocks of 128: block 0 = region 0, block 1 = regions 1, 2, 3 + the condition token.
        let cfg = DraftConfig::default();
        let g = DraftGeometry::build((1, 10, 20), 1, &cfg);
        assert_eq!(g.region_start, vec![0, 128, 160, 192, 200]);
        assert_eq!(g.blocks, 2);
        assert_eq!(g.block_regions, vec![0..1, 1..4]);
        assert_eq!(g.block_cond, vec![false, true]);
        // region 0 keeps only region 3 → block 0 keeps block 1 (also a condition block)
        let mut keep = vec![false; 16];
        keep[3] = true;
        let rows = g.rows_from_regions(&keep);
        assert_eq!(rows, vec![vec![1], vec![0, 1]]);
        // three frames of 8 × 24 (regions 128, 64 per frame), no condition tokens:
        let g = DraftGeometry::build((3, 8, 24), 0, &cfg);
        assert_eq!(g.regions(), 6);
        assert_eq!(g.blocks, 5); // 576 tokens
                                 // region 1 (frame 0, columns 16..24) sits in block 1 with region 2 (frame 1 cols 0..16,
                                 // first half): block 1 = tokens 128..256 = region 1 (128..192) + region 2 (192..256)
        assert_eq!(g.block_regions[1], 1..3);
        let mut keep = vec![false; 36];
        keep[5] = true; // region 0 → region 5 (block 4)
        keep[2 * 6 + 2] = true; // region 2 → itself (blocks 1 and 2)
        let rows = g.rows_from_regions(&keep);
        assert_eq!(rows[0], vec![4]);
        assert_eq!(rows[1], vec![1, 2]); // via region 2
        assert_eq!(rows[2], vec![1, 2]);
        assert!(rows[3].is_empty());
    }

    #[test]
    fn policy_on_cpu_device_and_host_pooling_agree() {
        let be = CpuBackend::new();
        let grid = (2, 16, 16); // 4 regions of 8 × 16 = 4 blocks
        let pol = DraftPolicy::new(DraftConfig {
            sparsity: 0.5,
            ..DraftConfig::default()
        })
        .unwrap();
        let order = AttentionPolicy::<CpuBackend>::token_order(&pol, grid).unwrap();
        assert_eq!(&order[..4], &[0, 1, 2, 3]);
        assert_eq!(order[16], 16);
        assert_eq!(order[128], 128); // frame 0 region 1 = rows 8..16
        let (b, l, h, d) = (2, 512, 2, 16);
        let qv = random(b * l * h * d, 4);
        let kv = random(b * l * h * d, 5);
        let q = be.upload(&qv, &[b, l, h, d]).unwrap();
        let k = be.upload(&kv, &[b, l, h, d]).unwrap();
        let AttnPlan::Sparse(plan) =
            AttentionPolicy::<CpuBackend>::plan(&pol, &be, &q, &k, &ctx(5, 1, grid)).unwrap()
        else {
            panic!("layer 1 is sparse");
        };
        plan.validate(b, h, l, l).unwrap();
        let g = pol.geometry(grid, 0);
        let host = pol.plan_from_pooled(&g, &g.pool(&qv, b, h, d), &g.pool(&kv, b, h, d), b, h, d);
        assert_eq!(*plan, host);
        // 16 entries per head, exclude 8 → 9 kept (continuous values)
        assert!(
            (plan.density() - 9.0 / 16.0).abs() < 1e-12,
            "{}",
            plan.density()
        );
        // dense: first layer, first steps
        let pol = DraftPolicy::new(DraftConfig {
            dense_steps: 3,
            ..DraftConfig::default()
        })
        .unwrap();
        for (step, layer, dense) in [(0, 2, true), (2, 2, true), (3, 0, true), (3, 1, false)] {
            let p = AttentionPolicy::<CpuBackend>::plan(&pol, &be, &q, &k, &ctx(step, layer, grid))
                .unwrap();
            assert_eq!(
                matches!(p, AttnPlan::Dense),
                dense,
                "step {step} layer {layer}"
            );
        }
        let st = AttentionPolicy::<CpuBackend>::density_stats(&pol);
        assert_eq!((st[0].calls, st[0].sparse_calls), (4, 1));
        let bad = be
            .upload(&random(b * 500 * h * d, 6), &[b, 500, h, d])
            .unwrap();
        assert!(
            AttentionPolicy::<CpuBackend>::plan(&pol, &be, &bad, &bad, &ctx(9, 3, grid)).is_err()
        );
    }

    /// The device tables are the host geometry's, and the excluded count is the reference's.
    #[test]
    fn select_spec_matches_the_geometry() {
        let pol = DraftPolicy::new(DraftConfig {
            sparsity: 0.55,
            ..DraftConfig::default()
        })
        .unwrap();
        let g = pol.geometry((3, 30, 52), 0);
        let sel = pol.select_spec(&g);
        assert_eq!(sel.region_start.len(), g.regions() + 1);
        for (a, b) in sel.region_start.iter().zip(&g.region_start) {
            assert_eq!(*a as usize, *b);
        }
        assert_eq!(sel.block_regions.len(), g.blocks);
        for (i, r) in sel.block_regions.iter().enumerate() {
            assert_eq!(r[0] as usize..r[1] as usize, g.block_regions[i]);
            assert_eq!(r[2] != 0, g.block_cond[i]);
        }
        let n = g.regions() * g.regions();
        assert_eq!(sel.exclude, ((1.0 - (1.0 - 0.55)) * n as f64) as usize);
        assert_eq!(sel.block, 128);
        assert_eq!(excluded(4, 0.5), 2);
        assert_eq!(excluded(9, 0.9), 8);
        assert_eq!(excluded(100, 0.0), 0);
    }

    #[test]
    fn dense_steps_from_the_wan_threshold() {
        // tiny-wan: 30 steps, shift 3: σ > 0.925 ⇔ s > 0.8043 ⇔ i < 5.87 → 6 steps
        let sig: Vec<f64> = (0..30)
            .map(|i| {
                let s = 1.0 - i as f64 / 30.0;
                3.0 * s / (1.0 + 2.0 * s)
            })
            .collect();
        assert_eq!(
            DraftConfig::dense_steps_from_sigmas(&sig, WAN_DENSE_TIMESTEP),
            6
        );
    }
}
