//! Sparse VideoGen (SVG 1, Xi et al. 2025) as an attention policy: every head is either a
//! **spatial** head (tokens of the same and nearby frames) or a **temporal** head (the same
//! spatial positions across frames), chosen online per layer and step by profiling a few
//! sampled query rows; the first layers and steps run dense.
//!
//! Reference: `svg-project/Sparse-VideoGen` @5ce7b01, `svg/models/wan/{attention,utils,
//! placement}.py`; `tools/make_svg_golden.py` copies the functions below and
//! `tests/svg_reference.rs` checks this file against them. What the reference does, and here:
//!
//! - **Profiling** (`sample_mse`, [`SvgPolicy::sample_mse`]): `num_sampled_rows` = 64 random
//!   query rows below `sample_mse_max_row` = 10000; their exact attention outputs, and their
//!   outputs under each profiling mask (`get_attention_mask`: a 128-token block band
//!   `|i − j| < 2·P div 128` plus the first-frame sink, in frame-major order for spatial and
//!   position-major order for temporal); per (batch, head) the mask with the smaller MSE of
//!   the outputs wins (`argmin`: spatial on ties). Needs v, so the policy runs the whole call
//!   ([`AttentionPolicy::attend_hooked`]). Computed with backend ops (the sampled rows'
//!   attention against all keys, then against each mask's key intervals), MSEs in f64.
//! - **Head placement** ([`place`], `wan_sparse_head_placement`): temporal heads' q/k/v move to
//!   position-major order (`(f, p) → p·F + f`, condition tokens stay), spatial heads stay;
//!   the output goes back the same way (`wan_hidden_states_placement`).
//! - **Kernel mask** (`generate_temporal_head_mask_mod`), the same for every head in its placed
//!   layout: key `k` kept for query `q` iff `|q − k| ≤ W` or `k < frame_size`, with
//!   `W = ⌈L·(1 − √(1 − s'))/128⌉·128` (`sparsity_to_width`, `round_to_multiple`),
//!   `s' = (s·L² − 2·L·C)/L²` (C condition tokens, 0 for Wan). The plan is its block superset
//!   ([`pattern_rows`] of [`Pattern::Spatial`]): the blocks flex attention visits, but
//!   computed whole — flex masks tokens inside the band's edge blocks and the sink's last
//!   block. That is the one approximation left (`docs/POLICIES.md` has its size).
//! - **Dense fallback**: layers `< ⌊first_layers_fp·layers⌋` and steps `< ⌊first_times_fp·steps⌋`
//!   (the reference converts `first_times_fp` to that many steps' timestep threshold).
//! - **Wrappers** (probe, timers) see the plan call through the hook, with the *placed* q/k
//!   the plan is for, so a recall measured there is the recall of what runs.

use crate::kernels::{PolicyKernels, SvgSelect};
use crate::policy::{lock, AttentionPolicy, AttnCtx, DensityLog, DensityStats, PlanHook};
use jenga_tensor::{AttnPlan, Backend, BlockPlan, Error, Result, TensorMeta};
use rayon::prelude::*;
use std::collections::HashMap;

use std::sync::{Arc, Mutex};

/// The reference hard-codes 128-token blocks in its profiling masks and band rounding.
pub const REF_BLOCK: usize = 128;

/// A head's sparsity pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Same and nearby frames (band in frame-major order).
    Spatial,
    /// Same and nearby positions in every frame (band in position-major order).
    Temporal,
}

impl Pattern {
    pub const ALL: [Pattern; 2] = [Pattern::Spatial, Pattern::Temporal];
}

/// SVG settings; defaults are the reference's Wan2.1 T2V 720p script
/// (`scripts/wan/wan_t2v_720p_svg.sh`).
#[derive(Clone, Debug, PartialEq)]
pub struct SvgConfig {
    /// Tokens per block of the emitted plans (128: the reference's flex-attention block).
    pub block: usize,
    /// `--sparsity`: fraction of the attention the band keeps (0.3).
    pub sparsity: f64,
    /// Query rows sampled per profiling call (64).
    pub num_sampled_rows: usize,
    /// Rows are drawn from `[0, min(sample_max_row, L))` (10000).
    pub sample_max_row: usize,
    /// Dense for the first `⌊first_times_fp·steps⌋` steps (0.2).
    pub first_times_fp: f64,
    /// Dense for the first `⌊first_layers_fp·layers⌋` layers (0.03).
    pub first_layers_fp: f64,
    /// Seed of the row sampling (mixed with step, layer and stage).
    pub seed: u64,
}

impl Default for SvgConfig {
    fn default() -> Self {
        SvgConfig {
            block: REF_BLOCK,
            sparsity: 0.3,
            num_sampled_rows: 64,
            sample_max_row: 10_000,
            first_times_fp: 0.2,
            first_layers_fp: 0.03,
            seed: 0,
        }
    }
}

impl SvgConfig {
    pub fn validate(&self) -> Result<()> {
        let op = "SvgConfig";
        if self.block == 0 {
            return Err(Error::invalid(op, "block size must be positive"));
        }
        if !(self.sparsity > 0.0 && self.sparsity <= 1.0) {
            return Err(Error::invalid(
                op,
                format!("sparsity {} must be in (0, 1]", self.sparsity),
            ));
        }
        if self.num_sampled_rows == 0 || self.sample_max_row == 0 {
            return Err(Error::invalid(op, "at least one sampled row is needed"));
        }
        for (name, v) in [
            ("first_times_fp", self.first_times_fp),
            ("first_layers_fp", self.first_layers_fp),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid(op, format!("{name} {v} must be in [0, 1]")));
            }
        }
        Ok(())
    }

    /// Whether a call runs dense (first layers / first steps).
    pub fn is_dense(&self, ctx: &AttnCtx) -> bool {
        let steps = (self.first_times_fp * ctx.num_steps as f64).floor() as usize;
        let layers = (self.first_layers_fp * ctx.num_layers as f64).floor() as usize;
        ctx.step < steps || ctx.layer < layers
    }
}

/// Token geometry of one attention sequence: `frames × frame_size` video tokens in frame-major
/// order, then `cond` condition tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SvgGrid {
    pub frames: usize,
    pub frame_size: usize,
    pub cond: usize,
}

impl SvgGrid {
    pub fn new(grid: (usize, usize, usize), cond: usize) -> Self {
        SvgGrid {
            frames: grid.0,
            frame_size: grid.1 * grid.2,
            cond,
        }
    }
    pub fn video(&self) -> usize {
        self.frames * self.frame_size
    }
    pub fn len(&self) -> usize {
        self.video() + self.cond
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of a token under a pattern's layout: frame-major (spatial) or position-major
    /// (temporal, `(f, p) → p·F + f`). Condition tokens keep their index.
    pub fn index(&self, pattern: Pattern, i: usize) -> usize {
        if pattern == Pattern::Spatial || i >= self.video() {
            return i;
        }
        let (f, p) = (i / self.frame_size, i % self.frame_size);
        p * self.frames + f
    }

    /// Band half-width `W` in tokens of the kernel mask (`sparsity_to_width` rounded up to
    /// whole 128-token blocks, as `round_to_multiple`).
    pub fn band_width(&self, sparsity: f64) -> usize {
        let l = self.len() as f64;
        if l == 0.0 {
            return 0;
        }
        let s = (sparsity * l * l - 2.0 * l * self.cond as f64) / (l * l);
        let width = l * (1.0 - (1.0 - s.clamp(0.0, 1.0)).sqrt());
        (width / REF_BLOCK as f64).ceil() as usize * REF_BLOCK
    }

    /// The reference's kernel mask at token level (`q`, `k` in frame-major order).
    pub fn kernel_allows(&self, pattern: Pattern, width: usize, q: usize, k: usize) -> bool {
        if q >= self.video() || k >= self.video() {
            return true;
        }
        let (a, b) = (self.index(pattern, q), self.index(pattern, k));
        b < self.frame_size || a.abs_diff(b) <= width
    }

    /// The reference's profiling mask (`get_attention_mask`) at token level.
    pub fn profile_allows(&self, pattern: Pattern, q: usize, k: usize) -> bool {
        if q >= self.video() || k >= self.video() {
            return true;
        }
        let (a, b) = (self.index(pattern, q), self.index(pattern, k));
        let thres = 2 * self.frame_size / REF_BLOCK;
        b < self.frame_size || (a / REF_BLOCK).abs_diff(b / REF_BLOCK) < thres
    }
}

/// Kept key blocks per query block (sorted) of a pattern's plan: the block superset of
/// [`SvgGrid::kernel_allows`] — key block `j` is kept for query block `i` iff some token pair
/// of the two blocks is allowed.
pub fn pattern_rows(g: &SvgGrid, pattern: Pattern, width: usize, block: usize) -> Vec<Vec<u32>> {
    let (l, nb) = (g.len(), g.len().div_ceil(block.max(1)));
    // Per block: sorted pattern indices of its video tokens, whether it holds a condition
    // token, whether it holds a sink key.
    struct Blk {
        idx: Vec<usize>,
        cond: bool,
        sink: bool,
    }
    let blocks: Vec<Blk> = (0..nb)
        .map(|b| {
            let toks = b * block..((b + 1) * block).min(l);
            let mut idx: Vec<usize> = toks
                .clone()
                .filter(|&t| t < g.video())
                .map(|t| g.index(pattern, t))
                .collect();
            idx.sort_unstable();
            Blk {
                cond: toks.end > g.video(),
                sink: idx.first().is_some_and(|&i| i < g.frame_size),
                idx,
            }
        })
        .collect();
    (0..nb)
        .into_par_iter()
        .map(|i| {
            let bi = &blocks[i];
            (0..nb as u32)
                .filter(|&j| {
                    let bj = &blocks[j as usize];
                    bi.cond || bj.cond || bj.sink || within(&bi.idx, &bj.idx, width)
                })
                .collect()
        })
        .collect()
}

/// Whether two sorted lists hold values at most `w` apart.
fn within(a: &[usize], b: &[usize], w: usize) -> bool {
    let (Some(&a0), Some(&a1), Some(&b0), Some(&b1)) = (a.first(), a.last(), b.first(), b.last())
    else {
        return false;
    };
    if b0 > a1 + w || a0 > b1 + w {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].abs_diff(b[j]) <= w {
            return true;
        }
        if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}

/// Softmax mass each pattern's profiling mask keeps, summed over sampled rows of one head.
/// `scores` is `[rows.len(), g.len()]` (already scaled by `1/√d`), `rows` the query tokens.
pub fn profile_mass(g: &SvgGrid, rows: &[usize], scores: &[f32]) -> [f64; 2] {
    let l = g.len();
    let mut mass = [0.0f64; 2];
    for (r, &q) in rows.iter().enumerate() {
        let s = &scores[r * l..][..l];
        let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let mut z = 0.0;
        let mut kept = [0.0f64; 2];
        for (k, &v) in s.iter().enumerate() {
            let e = (v as f64 - m).exp();
            z += e;
            for (pi, p) in Pattern::ALL.iter().enumerate() {
                if g.profile_allows(*p, q, k) {
                    kept[pi] += e;
                }
            }
        }
        for pi in 0..2 {
            mass[pi] += kept[pi] / z;
        }
    }
    mass
}

/// The profiled choice: the pattern whose mask keeps more mass (spatial on ties).
pub fn choose(mass: [f64; 2]) -> Pattern {
    if mass[1] > mass[0] {
        Pattern::Temporal
    } else {
        Pattern::Spatial
    }
}

/// `num` row indices in `[0, hi)`, drawn with replacement (as `torch.randint`).
pub fn sample_rows(seed: u64, num: usize, hi: usize) -> Vec<usize> {
    let mut s = seed;
    (0..num)
        .map(|_| (splitmix64(&mut s) % hi.max(1) as u64) as usize)
        .collect()
}

fn splitmix64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Both patterns' plan rows for one sequence geometry, computed once.
#[derive(Debug)]
pub struct SvgGeometry {
    pub grid: SvgGrid,
    pub width: usize,
    pub blocks: usize,
    /// Rows of [`Pattern::Spatial`] and [`Pattern::Temporal`].
    pub rows: [Vec<Vec<u32>>; 2],
    /// The same rows as one-head plans (the candidates of [`PolicyKernels::svg_select`]).
    pub candidates: [Arc<BlockPlan>; 2],
}

impl SvgGeometry {
    pub fn build(grid: SvgGrid, sparsity: f64, block: usize) -> Self {
        let width = grid.band_width(sparsity);
        let rows = Pattern::ALL.map(|p| pattern_rows(&grid, p, width, block));
        let blocks = grid.len().div_ceil(block);
        let candidates = [0, 1].map(|i| {
            let mut row_ptr = vec![0u32];
            let mut col_idx = Vec::new();
            for r in &rows[i] {
                col_idx.extend_from_slice(r);
                row_ptr.push(col_idx.len() as u32);
            }
            Arc::new(BlockPlan {
                batch: 1,
                heads: 1,
                block,
                q_blocks: blocks,
                k_blocks: blocks,
                row_ptr,
                col_idx,
            })
        });
        SvgGeometry {
            grid,
            width,
            blocks,
            rows,
            candidates,
        }
    }
    /// Block density of a pattern's plan.
    pub fn density(&self, p: Pattern) -> f64 {
        let n: usize = self.rows[p as usize].iter().map(Vec::len).sum();
        n as f64 / (self.blocks * self.blocks).max(1) as f64
    }
    /// CSR plan with one pattern per (batch, head), `patterns[b·heads + h]`.
    pub fn plan(
        &self,
        batch: usize,
        heads: usize,
        block: usize,
        patterns: &[Pattern],
    ) -> BlockPlan {
        let mut row_ptr = Vec::with_capacity(batch * heads * self.blocks + 1);
        let mut col_idx = Vec::new();
        row_ptr.push(0u32);
        for p in patterns.iter().take(batch * heads) {
            for r in &self.rows[*p as usize] {
                col_idx.extend_from_slice(r);
                row_ptr.push(col_idx.len() as u32);
            }
        }
        BlockPlan {
            batch,
            heads,
            block,
            q_blocks: self.blocks,
            k_blocks: self.blocks,
            row_ptr,
            col_idx,
        }
    }
}

/// Half-open key ranges `[start, end)` of a placed layout.
type KeyIntervals = Vec<(usize, usize)>;

/// Where the sampled rows of one profiling call look: per (pattern, placed query block) the
/// key intervals of the reference's profiling mask, in that pattern's placed layout.
fn profile_keys(g: &SvgGrid, pattern: Pattern, q: usize) -> KeyIntervals {
    let (l, video) = (g.len(), g.video());
    if q >= video {
        return vec![(0, l)];
    }
    let a = g.index(pattern, q);
    let thres = 2 * g.frame_size / REF_BLOCK;
    let i = a / REF_BLOCK;
    let lo = (i + 1).saturating_sub(thres) * REF_BLOCK;
    let hi = ((i + thres) * REF_BLOCK).min(video);
    // sink [0, P) ∪ band [lo, hi) ∪ condition keys [video, L), merged
    let mut iv = vec![(0, g.frame_size.min(video))];
    if lo < hi {
        iv.push((lo, hi));
    }
    if video < l {
        iv.push((video, l));
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (s, e) in iv {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `order[a]` = frame-major token at placed index `a` of a pattern (identity for spatial).
pub fn placed_order(g: &SvgGrid, pattern: Pattern) -> Vec<u32> {
    let mut order = vec![0u32; g.len()];
    for t in 0..g.len() {
        order[g.index(pattern, t)] = t as u32;
    }
    order
}

/// The reference's choice from the two masks' MSEs (`argmin`: spatial on ties).
pub fn choose_mse(mse: [f64; 2]) -> Pattern {
    if mse[1] < mse[0] {
        Pattern::Temporal
    } else {
        Pattern::Spatial
    }
}

/// The SVG policy. Thread-safe; per-grid geometry and plans are cached.
pub struct SvgPolicy {
    cfg: SvgConfig,
    geometry: Mutex<HashMap<SvgGrid, Arc<SvgGeometry>>>,
    /// Band plans for (grid, batch, heads): one plan for every head in its placed layout.
    plans: Mutex<HashMap<(SvgGrid, usize, usize), Arc<BlockPlan>>>,
    log: DensityLog,
    /// Heads profiled as spatial / temporal so far.
    chosen: Mutex<[u64; 2]>,
}

impl SvgPolicy {
    pub fn new(cfg: SvgConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(SvgPolicy {
            cfg,
            geometry: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            log: DensityLog::default(),
            chosen: Mutex::new([0, 0]),
        })
    }

    /// Kept for callers of the earlier device-plan switch: SVG's plans are now one band per
    /// grid (uploaded once), so there is nothing to keep on or bring back from the device.
    pub fn set_device_plans(&self, _on: bool) {}

    /// Seed of a call's row sampling.
    fn call_seed(&self, ctx: &AttnCtx) -> u64 {
        self.cfg.seed
            ^ ((ctx.step as u64) << 40)
            ^ ((ctx.layer as u64) << 20)
            ^ ((ctx.stage as u64) << 56)
    }

    /// The sampled query rows of a call (frame-major token indices).
    pub fn call_rows(&self, l: usize, ctx: &AttnCtx) -> Vec<usize> {
        sample_rows(
            self.call_seed(ctx),
            self.cfg.num_sampled_rows.min(l),
            self.cfg.sample_max_row.min(l),
        )
    }

    /// What the mass-criterion device kernel (`PolicyKernels::svg_select`) is asked for a
    /// call. Not used by the policy any more (it chooses by output MSE, which needs v).
    pub fn select_spec(&self, geom: &SvgGeometry, l: usize, ctx: &AttnCtx) -> SvgSelect {
        let g = &geom.grid;
        SvgSelect {
            frames: g.frames,
            frame_size: g.frame_size,
            rows: self.cfg.num_sampled_rows.min(l),
            row_hi: self.cfg.sample_max_row.min(l),
            seed: self.call_seed(ctx),
            ref_block: REF_BLOCK,
            band_blocks: 2 * g.frame_size / REF_BLOCK,
            candidates: geom.candidates.clone(),
        }
    }

    pub fn config(&self) -> &SvgConfig {
        &self.cfg
    }

    pub fn geometry(&self, grid: SvgGrid) -> Arc<SvgGeometry> {
        if let Some(g) = lock(&self.geometry).get(&grid) {
            return g.clone();
        }
        let g = Arc::new(SvgGeometry::build(grid, self.cfg.sparsity, self.cfg.block));
        lock(&self.geometry).entry(grid).or_insert(g).clone()
    }

    /// The plan every head runs in its placed layout: the kernel band + sink
    /// ([`Pattern::Spatial`] rows), for `batch × heads`.
    pub fn band_plan(&self, grid: SvgGrid, batch: usize, heads: usize) -> Arc<BlockPlan> {
        let key = (grid, batch, heads);
        if let Some(p) = lock(&self.plans).get(&key) {
            return p.clone();
        }
        let geom = self.geometry(grid);
        let pats = vec![Pattern::Spatial; batch * heads];
        let p = Arc::new(geom.plan(batch, heads, self.cfg.block, &pats));
        lock(&self.plans).entry(key).or_insert(p).clone()
    }

    /// Heads profiled as (spatial, temporal) so far.
    pub fn pattern_counts(&self) -> (u64, u64) {
        let c = lock(&self.chosen);
        (c[0], c[1])
    }

    pub fn reset_stats(&self) {
        self.log.reset();
        *lock(&self.chosen) = [0, 0];
    }

    /// The reference's `sample_mse` for one call: per (batch, head) the MSE of the sampled
    /// rows' attention outputs under the spatial and the temporal profiling mask against
    /// their exact outputs, `[b·heads + h] = [spatial, temporal]`. Backend ops only (the
    /// sampled rows' attention against all keys, then against each mask's key intervals, in
    /// groups of rows sharing them); the MSEs are summed in f64 on the host.
    #[allow(clippy::too_many_arguments)] // the call's tensors, its geometry, rows and context
    pub fn sample_mse<B: Backend>(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        g: &SvgGrid,
        rows: &[usize],
    ) -> Result<Vec<[f64; 2]>> {
        let s = q.shape();
        let (batch, heads, d) = (s[0], s[2], s[3]);
        let r = rows.len();
        let idx: Vec<u32> = rows.iter().map(|&x| x as u32).collect();
        let qs = be.gather_tokens(q, &idx)?; // [B, R, H, D]
        let golden = be.download(&be.attention(&qs, k, v, &AttnPlan::Dense, None)?)?;
        let mut mse = vec![[0f64; 2]; batch * heads];
        for p in Pattern::ALL {
            let (kp, vp) = match p {
                Pattern::Spatial => (k.clone(), v.clone()),
                Pattern::Temporal => {
                    let o = placed_order(g, p);
                    (be.gather_tokens(k, &o)?, be.gather_tokens(v, &o)?)
                }
            };
            // Rows sharing their key intervals run as one attention call.
            let mut groups: Vec<(KeyIntervals, Vec<u32>)> = Vec::new();
            for (ri, &row) in rows.iter().enumerate() {
                let iv = profile_keys(g, p, row);
                match groups.iter_mut().find(|(x, _)| *x == iv) {
                    Some((_, m)) => m.push(ri as u32),
                    None => groups.push((iv, vec![ri as u32])),
                }
            }
            for (iv, members) in groups {
                let sub = |x: &B::Tensor| -> Result<B::Tensor> {
                    let parts = iv
                        .iter()
                        .map(|&(a, b)| be.narrow(x, 1, a, b - a))
                        .collect::<Result<Vec<_>>>()?;
                    if parts.len() == 1 {
                        return Ok(parts.into_iter().next().expect("one part"));
                    }
                    be.cat(&parts.iter().collect::<Vec<_>>(), 1)
                };
                let qg = be.gather_tokens(&qs, &members)?;
                let o = be.download(&be.attention(
                    &qg,
                    &sub(&kp)?,
                    &sub(&vp)?,
                    &AttnPlan::Dense,
                    None,
                )?)?;
                let n = members.len();
                for bi in 0..batch {
                    for (mi, &ri) in members.iter().enumerate() {
                        for h in 0..heads {
                            let got = &o[((bi * n + mi) * heads + h) * d..][..d];
                            let want = &golden[((bi * r + ri as usize) * heads + h) * d..][..d];
                            let e: f64 = got
                                .iter()
                                .zip(want)
                                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                                .sum();
                            mse[bi * heads + h][p as usize] += e;
                        }
                    }
                }
            }
        }
        let n = (r * d).max(1) as f64;
        mse.iter_mut()
            .for_each(|m| m.iter_mut().for_each(|x| *x /= n));
        Ok(mse)
    }

    /// Per (batch, head) pattern for one call: [`SvgPolicy::sample_mse`], then `argmin`.
    pub fn profile<B: Backend>(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        g: &SvgGrid,
        ctx: &AttnCtx,
    ) -> Result<Vec<Pattern>> {
        let rows = self.call_rows(g.len(), ctx);
        Ok(self
            .sample_mse(be, q, k, v, g, &rows)?
            .into_iter()
            .map(choose_mse)
            .collect())
    }

    /// The sparse part of a call with the head patterns given (`[b·heads + h]`): placement,
    /// the band plan (through `hook`, on the placed q/k), attention, placement back.
    #[allow(clippy::too_many_arguments)] // the call's tensors, geometry, choice, context, hook
    pub fn attend_patterns<B: PolicyKernels>(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        g: &SvgGrid,
        patterns: &[Pattern],
        ctx: &AttnCtx,
        hook: &PlanHook<'_, B>,
    ) -> Result<B::Tensor> {
        let s = q.shape();
        if patterns.len() != s[0] * s[2] {
            return Err(Error::invalid(
                "SvgPolicy::attend_patterns",
                format!("{} patterns for {}x{} heads", patterns.len(), s[0], s[2]),
            ));
        }
        let plan_for = |q: &B::Tensor, k: &B::Tensor| {
            hook(be, q, k, ctx, &mut || {
                let plan = self.band_plan(*g, s[0], s[2]);
                self.log.record(ctx.stage, Some(plan.density()));
                Ok(AttnPlan::Sparse(plan))
            })
        };
        if patterns.iter().all(|&p| p == Pattern::Spatial) {
            let plan = plan_for(q, k)?;
            return be.attention(q, k, v, &plan, None);
        }
        let [qp, kp, vp] = [q, k, v].map(|x| place(be, x, g, patterns, false));
        let (qp, kp, vp) = (qp?, kp?, vp?);
        let plan = plan_for(&qp, &kp)?;
        let o = be.attention(&qp, &kp, &vp, &plan, None)?;
        place(be, &o, g, patterns, true)
    }

    fn check(
        &self,
        q: &[usize],
        k: &[usize],
        v: &[usize],
        g: &SvgGrid,
        ctx: &AttnCtx,
    ) -> Result<()> {
        if q.len() != 4 || q != k || k != v || q[1] != g.len() {
            return Err(Error::shape(
                "SvgPolicy",
                format!(
                    "q {q:?} / k {k:?} / v {v:?}, expected equal [B, {}, H, Dh] for grid {:?} + {} condition tokens",
                    g.len(),
                    ctx.grid,
                    ctx.cond_tokens
                ),
            ));
        }
        Ok(())
    }
}

/// The reference's head placement as one row gather of `x` `[B, L, H, Dh]` seen as
/// `[1, B·L·H, Dh]`: output row `(b, a, h)` is input row `(b, src[h](a), h)`, where `src` is
/// the placed order of the head's pattern (`inverse` = false) or its inverse (undo).
pub fn place<B: Backend>(
    be: &B,
    x: &B::Tensor,
    g: &SvgGrid,
    patterns: &[Pattern],
    inverse: bool,
) -> Result<B::Tensor> {
    let s = x.shape().to_vec();
    let (batch, l, heads, d) = (s[0], s[1], s[2], s[3]);
    let order = placed_order(g, Pattern::Temporal);
    let mut idx = Vec::with_capacity(batch * l * heads);
    for b in 0..batch {
        for (a, &src) in order.iter().enumerate().take(l) {
            for h in 0..heads {
                let t = match patterns[b * heads + h] {
                    Pattern::Spatial => a,
                    Pattern::Temporal if inverse => g.index(Pattern::Temporal, a),
                    Pattern::Temporal => src as usize,
                };
                idx.push(((b * l + t) * heads + h) as u32);
            }
        }
    }
    let flat = be.reshape(x, &[1, batch * l * heads, d])?;
    be.reshape(&be.gather_tokens(&flat, &idx)?, &s)
}

impl<B: PolicyKernels> AttentionPolicy<B> for SvgPolicy {
    fn name(&self) -> String {
        format!(
            "svg(sparsity {}, {} rows, m={})",
            self.cfg.sparsity, self.cfg.num_sampled_rows, self.cfg.block
        )
    }

    /// Without v there is no profiling: the band plan that [`AttentionPolicy::attend`] runs
    /// on the placed tokens (or `Dense` in the warm-up).
    fn plan(&self, _be: &B, q: &B::Tensor, k: &B::Tensor, ctx: &AttnCtx) -> Result<AttnPlan> {
        if self.cfg.is_dense(ctx) {
            self.log.record(ctx.stage, None);
            return Ok(AttnPlan::Dense);
        }
        let g = SvgGrid::new(ctx.grid, ctx.cond_tokens);
        let (qs, ks) = (q.shape(), k.shape());
        self.check(qs, ks, ks, &g, ctx)?;
        let plan = self.band_plan(g, qs[0], qs[2]);
        self.log.record(ctx.stage, Some(plan.density()));
        Ok(AttnPlan::Sparse(plan))
    }

    fn per_head_order(&self) -> bool {
        true
    }

    /// The reference's call: `sample_mse` on q/k/v, per-head placement (temporal heads to
    /// position-major order), the band plan on the placed tokens, and the output placed back.
    fn attend_hooked(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        _pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
        hook: &PlanHook<'_, B>,
    ) -> Result<B::Tensor> {
        if self.cfg.is_dense(ctx) {
            let plan = hook(be, q, k, ctx, &mut || self.plan(be, q, k, ctx))?;
            return be.attention(q, k, v, &plan, None);
        }
        let g = SvgGrid::new(ctx.grid, ctx.cond_tokens);
        self.check(q.shape(), k.shape(), v.shape(), &g, ctx)?;
        let patterns = self.profile(be, q, k, v, &g, ctx)?;
        {
            let mut c = lock(&self.chosen);
            for p in &patterns {
                c[*p as usize] += 1;
            }
        }
        self.attend_patterns(be, q, k, v, &g, &patterns, ctx, hook)
    }

    fn density_stats(&self) -> Vec<DensityStats> {
        self.log.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jenga_tensor::CpuBackend;

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

    #[test]
    fn position_major_is_a_bijection_and_transposes() {
        for (grid, cond) in [((3, 2, 4), 0), ((21, 30, 52), 0), ((5, 3, 7), 11)] {
            let g = SvgGrid::new(grid, cond);
            let mut seen = vec![false; g.len()];
            for i in 0..g.len() {
                let j = g.index(Pattern::Temporal, i);
                assert!(!seen[j], "{grid:?}: {j} twice");
                seen[j] = true;
                assert_eq!(g.index(Pattern::Spatial, i), i);
            }
            assert!(seen.iter().all(|&s| s));
        }
        // (f, p) = (1, 2) of a 3-frame grid with 8 positions: frame-major 10, position-major 7.
        let g = SvgGrid::new((3, 2, 4), 0);
        assert_eq!(g.index(Pattern::Temporal, 8 + 2), 2 * 3 + 1);
    }

    #[test]
    fn band_width_follows_sparsity_to_width() {
        // Wan 720p: 21 frames × 3600 tokens, sparsity 0.3 → width 12 331.6 tokens → 97 blocks.
        let g = SvgGrid::new((21, 45, 80), 0);
        let l = 75_600f64;
        let w = l * (1.0 - (0.7f64).sqrt());
        assert_eq!(g.band_width(0.3), (w / 128.0).ceil() as usize * 128);
        assert_eq!(g.band_width(0.3), 12_416);
        // The token band keeps ≈ s of the pairs (up to the 128 rounding).
        let g = SvgGrid::new((8, 16, 16), 0); // 2048 tokens
        let w = g.band_width(0.3);
        assert_eq!(w, 384); // 2048·(1 − √0.7) = 334.5 → 384
        let n = g.len();
        let pairs: usize = (0..n)
            .map(|q| (q + w).min(n - 1) - q.saturating_sub(w) + 1)
            .sum();
        let exact = 1.0 - (1.0 - w as f64 / n as f64).powi(2);
        let got = pairs as f64 / (n * n) as f64;
        assert!((got - exact).abs() < 1e-3, "{got} vs {exact}");
        assert!((0.3..0.36).contains(&got), "{got}");
    }

    /// Hand-made case: 3 frames of 2×4 tokens, blocks of 4, band W = 4.
    #[test]
    fn pattern_rows_on_a_tiny_grid() {
        let g = SvgGrid::new((3, 2, 4), 0);
        // Spatial: sink = keys < 8 = blocks 0, 1; band: adjacent blocks only (distance-2
        // blocks are ≥ 5 tokens apart).
        let sp = pattern_rows(&g, Pattern::Spatial, 4, 4);
        assert_eq!(sp[0], vec![0, 1]);
        assert_eq!(sp[2], vec![0, 1, 2, 3]);
        assert_eq!(sp[4], vec![0, 1, 3, 4, 5]);
        assert_eq!(sp[5], vec![0, 1, 4, 5]);
        // Temporal: position-major indices p·3 + f. Block 0 = frame 0, p 0..3 → {0,3,6,9};
        // block 5 = frame 2, p 4..7 → {14,17,20,23}. Sink = keys with index < 8 = blocks 0, 2, 4.
        let tp = pattern_rows(&g, Pattern::Temporal, 4, 4);
        assert_eq!(tp[0], vec![0, 1, 2, 3, 4]); // 9 → 14 is 5 > 4: block 5 out
        assert_eq!(tp[5], vec![0, 1, 2, 3, 4, 5]);
        // Both equal the brute-force block superset of the token mask.
        for p in Pattern::ALL {
            let rows = pattern_rows(&g, p, 4, 4);
            for (i, row) in rows.iter().enumerate() {
                let want: Vec<u32> = (0..6u32)
                    .filter(|&j| {
                        (i * 4..i * 4 + 4).any(|q| {
                            (j as usize * 4..j as usize * 4 + 4)
                                .any(|k| g.kernel_allows(p, 4, q, k))
                        })
                    })
                    .collect();
                assert_eq!(row, &want, "{p:?} row {i}");
            }
        }
    }

    #[test]
    fn block_superset_matches_brute_force_with_condition_tokens() {
        let g = SvgGrid::new((4, 6, 10), 30); // 240 video + 30 condition tokens
        let (w, m) = (40, 32);
        let nb = g.len().div_ceil(m);
        for p in Pattern::ALL {
            let rows = pattern_rows(&g, p, w, m);
            for (i, row) in rows.iter().enumerate() {
                let want: Vec<u32> = (0..nb as u32)
                    .filter(|&j| {
                        (i * m..((i + 1) * m).min(g.len())).any(|q| {
                            (j as usize * m..((j as usize + 1) * m).min(g.len()))
                                .any(|k| g.kernel_allows(p, w, q, k))
                        })
                    })
                    .collect();
                assert_eq!(row, &want, "{p:?} row {i}");
            }
            // condition rows are full; condition columns are in every row
            assert_eq!(rows[nb - 1].len(), nb);
            assert!(rows.iter().all(|r| r.contains(&(nb as u32 - 1))));
        }
    }

    #[test]
    fn plan_density_near_target_on_wan_480p() {
        // Wan-1.3B 480p: 21 × 30 × 52 latent tokens, 256 blocks. Spatial plan ≈ the band's
        // 30% plus the sink and block rounding; temporal plan is a looser superset.
        let geom = SvgGeometry::build(SvgGrid::new((21, 30, 52), 0), 0.3, 128);
        let (ds, dt) = (
            geom.density(Pattern::Spatial),
            geom.density(Pattern::Temporal),
        );
        println!("480p: spatial {ds:.3}, temporal {dt:.3}");
        assert!(ds > 0.3 && ds < 0.42, "{ds}");
        assert!(dt > ds && dt < 0.75, "{dt}");
    }

    /// Synthetic heads where one pattern is clearly right: keys that match a query at the same
    /// position in every frame (temporal) vs. keys that match only inside the query's frame;
    /// values that differ per frame and position, so the wrong mask changes the output.
    #[test]
    fn profiling_picks_the_right_pattern() {
        let be = CpuBackend::new();
        let grid = (6, 8, 16); // 6 frames of 128 tokens
        let g = SvgGrid::new(grid, 0);
        let (l, d) = (g.len(), 128);
        let mut q = vec![0f32; l * 2 * d];
        let mut k = vec![0f32; l * 2 * d];
        let mut v = vec![0f32; l * 2 * d];
        for t in 0..l {
            let (f, p) = (t / 128, t % 128);
            // head 0: temporal — one axis per position, shared by all frames
            q[(t * 2) * d + p] = 10.0;
            k[(t * 2) * d + p] = 10.0;
            // head 1: spatial — one axis per frame, shared by all its positions
            q[(t * 2 + 1) * d + f] = 10.0;
            k[(t * 2 + 1) * d + f] = 10.0;
            for h in 0..2 {
                v[(t * 2 + h) * d] = f as f32;
                v[(t * 2 + h) * d + 1] = (p % 7) as f32;
            }
        }
        let up = |x: &[f32]| be.upload(x, &[1, l, 2, d]).unwrap();
        let (qt, kt, vt) = (up(&q), up(&k), up(&v));
        let pol = SvgPolicy::new(SvgConfig::default()).unwrap();
        let c = ctx(20, 3, grid);
        let pats = pol.profile(&be, &qt, &kt, &vt, &g, &c).unwrap();
        assert_eq!(pats, vec![Pattern::Temporal, Pattern::Spatial]);
        // plan() alone (no v): the band every head runs in its placed layout.
        let AttnPlan::Sparse(plan) =
            AttentionPolicy::<CpuBackend>::plan(&pol, &be, &qt, &kt, &c).unwrap()
        else {
            panic!("step 20 is sparse")
        };
        plan.validate(1, 2, l, l).unwrap();
        let geom = pol.geometry(g);
        for h in 0..2 {
            for qb in 0..geom.blocks {
                assert_eq!(plan.row(0, h, qb), geom.rows[0][qb].as_slice());
            }
        }
        // attend = placement + band + placement back; counts its choice.
        let o = AttentionPolicy::<CpuBackend>::attend(&pol, &be, &qt, &kt, &vt, None, &c).unwrap();
        let want = pol
            .attend_patterns(&be, &qt, &kt, &vt, &g, &pats, &c, &|_, _, _, _, m| m())
            .unwrap();
        assert_eq!(be.download(&o).unwrap(), be.download(&want).unwrap());
        assert_eq!(pol.pattern_counts(), (1, 1));
    }

    /// Placement and its inverse are exact inverses, per head.
    #[test]
    fn placement_round_trips() {
        let be = CpuBackend::new();
        let g = SvgGrid::new((3, 4, 5), 7);
        let (b, h, d) = (2, 3, 2);
        let x: Vec<f32> = (0..b * g.len() * h * d).map(|i| i as f32).collect();
        let t = be.upload(&x, &[b, g.len(), h, d]).unwrap();
        let pats = [Pattern::Temporal, Pattern::Spatial, Pattern::Temporal].repeat(2);
        let p = place(&be, &t, &g, &pats, false).unwrap();
        let back = be
            .download(&place(&be, &p, &g, &pats, true).unwrap())
            .unwrap();
        assert_eq!(back, x);
        let p = be.download(&p).unwrap();
        // head 0, placed index 1 = (p 0, f 1) = frame-major token 20; condition tokens stay.
        assert_eq!(p[h * d], x[(20 * h) * d]);
        assert_eq!(p[(h + 1) * d], x[(h + 1) * d]); // head 1 untouched
        assert_eq!(p[(60 * h) * d], x[(60 * h) * d]); // first condition token
    }

    #[test]
    fn profile_mass_counts_the_kept_softmax_mass() {
        // 6 frames of 128 tokens: the profiling band keeps blocks |i − j| < 2·128/128 = 2.
        let g = SvgGrid::new((6, 8, 16), 0);
        let q = 5 * 128; // frame 5, position 0
                         // All mass on (frame 2, position 0): 3 frames away (spatial: no), same position
                         // (temporal index 2 vs 5, block 0 = block 0: yes).
        let mut s = vec![-60f32; g.len()];
        s[2 * 128] = 10.0;
        let m = profile_mass(&g, &[q], &s);
        assert!(m[0] < 1e-9 && m[1] > 0.999, "{m:?}");
        assert_eq!(choose(m), Pattern::Temporal);
        // All mass on (frame 5, position 127): same block in frame-major order (spatial: yes),
        // temporal index 127·6 + 5 = 767, block 5 vs block 0 and no sink (temporal: no).
        let mut s = vec![-60f32; g.len()];
        s[5 * 128 + 127] = 10.0;
        let m = profile_mass(&g, &[q], &s);
        assert!(m[0] > 0.999 && m[1] < 1e-9, "{m:?}");
        assert_eq!(choose(m), Pattern::Spatial);
        // Half and half over two rows: masses add up per row.
        let mut s2 = vec![-60f32; 2 * g.len()];
        s2[2 * 128] = 10.0;
        s2[g.len() + 5 * 128 + 127] = 10.0;
        let m = profile_mass(&g, &[q, q], &s2);
        assert!(
            (m[0] - 1.0).abs() < 1e-6 && (m[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
        assert_eq!(choose([0.5, 0.5]), Pattern::Spatial);
    }

    #[test]
    fn dense_for_first_steps_and_layers() {
        let be = CpuBackend::new();
        let pol = SvgPolicy::new(SvgConfig {
            first_layers_fp: 0.2, // ⌊0.2·6⌋ = 1 layer
            ..SvgConfig::default()
        })
        .unwrap();
        let grid = (2, 8, 16);
        let q = be.upload(&vec![0.1; 256 * 2 * 8], &[1, 256, 2, 8]).unwrap();
        for (step, layer, dense) in [(0, 3, true), (5, 3, true), (6, 0, true), (6, 1, false)] {
            let p = AttentionPolicy::<CpuBackend>::plan(&pol, &be, &q, &q, &ctx(step, layer, grid))
                .unwrap();
            assert_eq!(
                matches!(p, AttnPlan::Dense),
                dense,
                "step {step} layer {layer}"
            );
        }
        let s = AttentionPolicy::<CpuBackend>::density_stats(&pol);
        assert_eq!((s[0].calls, s[0].sparse_calls), (4, 1));
        // wrong length is an error, not a panic
        let bad = be.upload(&vec![0.1; 200 * 2 * 8], &[1, 200, 2, 8]).unwrap();
        assert!(
            AttentionPolicy::<CpuBackend>::plan(&pol, &be, &bad, &bad, &ctx(9, 3, grid)).is_err()
        );
        assert!(SvgPolicy::new(SvgConfig {
            sparsity: 0.0,
            ..SvgConfig::default()
        })
        .is_err());
    }

    /// What the device path is asked for is what the host path does: candidates = the
    /// patterns' rows, the profiling band, the sampled rows.
    #[test]
    fn select_spec_matches_the_host_path() {
        let pol = SvgPolicy::new(SvgConfig::default()).unwrap();
        let grid = (5, 8, 40); // frames of 320 tokens: band 2·320/128 = 5 blocks
        let g = SvgGrid::new(grid, 0);
        let geom = pol.geometry(g);
        let c = ctx(9, 2, grid);
        let sel = pol.select_spec(&geom, g.len(), &c);
        assert_eq!((sel.frames, sel.frame_size, sel.band_blocks), (5, 320, 5));
        assert_eq!((sel.rows, sel.row_hi, sel.ref_block), (64, 1600, 128));
        for p in Pattern::ALL {
            let cand = &sel.candidates[p as usize];
            cand.validate(1, 1, g.len(), g.len()).unwrap();
            let want = geom.plan(1, 1, 128, &[p]);
            assert_eq!(**cand, want, "{p:?}");
        }
        // the profiling mask the device evaluates from (band_blocks, ref_block)
        for (q, k) in [(0, 1599), (700, 40), (1599, 0), (321, 1500), (640, 960)] {
            for p in Pattern::ALL {
                let (a, b) = (g.index(p, q), g.index(p, k));
                let dev = b < sel.frame_size
                    || (a / sel.ref_block).abs_diff(b / sel.ref_block) < sel.band_blocks;
                assert_eq!(dev, g.profile_allows(p, q, k), "{p:?} {q} {k}");
            }
        }
        assert_eq!(sel.seed, pol.call_seed(&c));
    }

    #[test]
    fn sampled_rows_are_deterministic_and_in_range() {
        let a = sample_rows(7, 64, 2048);
        assert_eq!(a, sample_rows(7, 64, 2048));
        assert_ne!(a, sample_rows(8, 64, 2048));
        assert!(a.iter().all(|&r| r < 2048));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 50);
    }
}
