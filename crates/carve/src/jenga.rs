//! The Jenga attention policy ("AttenCarve"): video tokens in curve order, 128-token blocks,
//! and for every self-attention call a block-sparse plan
//! `importance ∪ adjacency ∪ condition (∪ first-frame square)`, with the drop rate and `p` of
//! the [`Schedule`] at the call's step and stage.
//!
//! Text-attention amplifier ([`TextAmp`]): in the first, low-resolution ProRes stage, video
//! queries get `β = −ρ·ln(N_s/N_S)` added to their scores on condition keys, so that low-res
//! tokens lean on the prompt instead of their (relatively larger) spatial neighbourhood.
//! Only video-query rows are biased: condition (text) query rows attend without it, as in the
//! reference, which adds it in its sparse kernel to video-query rows × condition keys
//! ([`KeyBias`] `from_key = to_query =` the video token count).
//! The reference code adds `text_amp = −log2(√(N_s/N_S))·scale_txt_amp` to scores that its
//! kernel keeps in the exp2 domain (q is pre-scaled by log2 e); converted to natural-log
//! logits that is exactly `−½·ln(N_s/N_S)·scale_txt_amp`, i.e. the paper's formula with
//! `ρ = 0.5·scale_txt_amp` (ρ = 0.5 for the default scale 1.0). [`KeyBias`] is applied to
//! natural-log scaled logits, so `bias = β`.
//!
//! **Wan2.1**: its self-attention has no condition keys (text enters through cross-attention),
//! so `cond_tokens = 0` and [`JengaPolicy::key_bias`] returns `None`. Adding the amplifier to
//! *every* key would be a no-op anyway: softmax is invariant to a constant added to all scores
//! of a row (test `constant_bias_on_all_keys_cancels`); only a bias on a subset of keys changes
//! anything.

use crate::adjacency::Adjacency;
use crate::condition::{self, FirstFrame};
use crate::curve::CurveKind;
use crate::importance::{block_scores, select_row, RowScratch};
use crate::kernels::{BlockSelect, PolicyKernels};
use crate::layout::{Layout, DEFAULT_BLOCK};
use crate::policy::{lock, AttentionPolicy, AttnCtx, DensityLog, DensityStats};
use crate::schedule::Schedule;
use jenga_tensor::{AttnPlan, BlockPlan, Error, KeyBias, Result, TensorMeta};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Text-attention amplifier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TextAmp {
    /// ρ in `β = −ρ·ln(N_s/N_S)`; 0.5 equals the reference with `--scale-txt-amp 1.0`.
    pub rho: f64,
    /// `N_s/N_S` per stage: video tokens of the stage over those of the final resolution.
    /// Stages without an entry, or with a ratio ≥ 1, get no bias.
    pub stage_token_ratio: Vec<f64>,
    /// Reference and paper: only the first stage is amplified (the bias is reset to 0 at the
    /// first stage switch, even if the next stage is still low-resolution).
    pub first_stage_only: bool,
}

impl Default for TextAmp {
    fn default() -> Self {
        TextAmp {
            rho: 0.5,
            stage_token_ratio: Vec::new(),
            first_stage_only: true,
        }
    }
}

impl TextAmp {
    /// β for a stage (0 when the stage is not amplified).
    pub fn bias(&self, stage: usize) -> f64 {
        if self.first_stage_only && stage > 0 {
            return 0.0;
        }
        match self.stage_token_ratio.get(stage) {
            Some(&r) if r > 0.0 && r < 1.0 => -self.rho * r.ln(),
            _ => 0.0,
        }
    }
}

/// Everything the policy needs to know; plain data so a pipeline can fill it from flags.
#[derive(Clone, Debug, PartialEq)]
pub struct JengaConfig {
    pub curve: CurveKind,
    /// Tokens per query/key block (128 in the reference).
    pub block: usize,
    pub schedule: Schedule,
    /// Union the 26-neighbourhood block adjacency (the reference always does).
    pub adjacency: bool,
    pub first_frame: FirstFrame,
    pub text_amp: TextAmp,
}

impl JengaConfig {
    /// Wan2.1 reference: sliced curve, step-bound drop rates with warm-up, dense at ≤ 0.25,
    /// first-frame square, no amplifier (no text keys in self-attention).
    pub fn wan(drop_rates: &[f64], p: f64) -> Self {
        JengaConfig {
            curve: CurveKind::Sliced,
            block: DEFAULT_BLOCK,
            schedule: Schedule::wan(drop_rates, p),
            adjacency: true,
            first_frame: FirstFrame::LatentFrame,
            text_amp: TextAmp::default(),
        }
    }

    /// HunyuanVideo reference: 3D curve, one drop rate per ProRes stage, amplifier in the
    /// first stage from its token ratio.
    pub fn hunyuan(stage_drop_rates: &[f64], p: f64, stage_token_ratio: &[f64]) -> Self {
        JengaConfig {
            curve: CurveKind::Gilbert3d,
            block: DEFAULT_BLOCK,
            schedule: Schedule::hunyuan(stage_drop_rates, p),
            adjacency: true,
            first_frame: FirstFrame::Off,
            text_amp: TextAmp {
                stage_token_ratio: stage_token_ratio.to_vec(),
                ..TextAmp::default()
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.block == 0 {
            return Err(Error::invalid("JengaConfig", "block size must be positive"));
        }
        if !self.text_amp.rho.is_finite() {
            return Err(Error::invalid(
                "JengaConfig",
                "text amplifier rho must be finite",
            ));
        }
        self.schedule.validate()
    }
}

/// Per-stage-resolution data computed once: the curve and its block adjacency.
#[derive(Debug)]
pub struct Geometry {
    pub grid: (usize, usize, usize),
    pub order: Arc<Vec<u32>>,
    pub adjacency: Adjacency,
}

type GeomKey = ((usize, usize, usize), CurveKind, usize);
/// Fixed-block plans: (grid, curve, block, condition tokens).
type FixedKey = (GeomKey, usize);

/// The Jenga policy. Thread-safe; geometry is cached per (grid, curve, block).
pub struct JengaPolicy {
    cfg: JengaConfig,
    geometry: Mutex<HashMap<GeomKey, Arc<Geometry>>>,
    stats: DensityLog,
    /// Always-kept blocks per stage layout, for [`PolicyKernels::select_blocks`].
    fixed: Mutex<HashMap<FixedKey, Arc<BlockPlan>>>,
    device_select: AtomicBool,
}

impl JengaPolicy {
    pub fn new(cfg: JengaConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(JengaPolicy {
            cfg,
            geometry: Mutex::new(HashMap::new()),
            stats: DensityLog::default(),
            fixed: Mutex::new(HashMap::new()),
            device_select: AtomicBool::new(true),
        })
    }

    /// Whether [`AttentionPolicy::plan`] may build plans on the device
    /// ([`PolicyKernels::select_blocks`], default on). Off: every plan is built on the host as a
    /// [`AttnPlan::Sparse`] (what wrappers that read the plan on the host need).
    pub fn set_device_select(&self, on: bool) {
        self.device_select.store(on, Ordering::Relaxed);
    }

    /// Always-kept blocks of a call (adjacency ∪ condition ∪ first-frame square) as a plan with
    /// one (batch, head), cached per stage layout: the static part of [`build_plan`]'s union.
    pub fn fixed_plan(&self, ctx: &AttnCtx) -> Result<Arc<BlockPlan>> {
        let key = ((ctx.grid, self.cfg.curve, self.cfg.block), ctx.cond_tokens);
        if let Some(p) = lock(&self.fixed).get(&key) {
            return Ok(p.clone());
        }
        let (t, h, w) = ctx.grid;
        let layout = Layout::new(t * h * w, ctx.cond_tokens, self.cfg.block)?;
        let geom = self.cfg.adjacency.then(|| self.geometry(ctx.grid));
        let ff = self.cfg.first_frame.blocks(&layout, t);
        let (nb, nv) = (layout.num_blocks, layout.video_blocks);
        let mut mask = vec![false; nb * nb];
        for (qb, row) in mask.chunks_mut(nb.max(1)).enumerate().take(nb) {
            if qb < nv {
                if let Some(g) = &geom {
                    g.adjacency.mark_row(qb, nv, row);
                }
            }
            condition::mark_row(&layout, ff, qb, row);
        }
        let p = Arc::new(BlockPlan::from_mask(1, 1, layout.block, nb, nb, &mask)?);
        Ok(lock(&self.fixed).entry(key).or_insert(p).clone())
    }

    pub fn config(&self) -> &JengaConfig {
        &self.cfg
    }

    /// Curve and adjacency for a stage grid (computed on first use, then cached).
    pub fn geometry(&self, grid: (usize, usize, usize)) -> Arc<Geometry> {
        let key = (grid, self.cfg.curve, self.cfg.block);
        if let Some(g) = lock(&self.geometry).get(&key) {
            return g.clone();
        }
        // Built outside the lock: two threads may race to build the same grid once; both
        // results are identical.
        let order = self.cfg.curve.order(grid.0, grid.1, grid.2);
        let adjacency = Adjacency::build(grid, &order, self.cfg.block)
            .expect("curve order has t*h*w entries and block > 0 by construction");
        let g = Arc::new(Geometry {
            grid,
            order: Arc::new(order),
            adjacency,
        });
        lock(&self.geometry).entry(key).or_insert(g).clone()
    }

    /// Per-stage density so far (reads the counts of device-built plans: waits for the device).
    pub fn stats(&self) -> Vec<DensityStats> {
        self.stats.drain(|_| {});
        self.stats.stats()
    }

    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    fn record(&self, stage: usize, density: Option<f64>) {
        self.stats.record(stage, density);
    }

    /// Drop rate and whether the call is dense, at a context.
    pub fn drop_rate(&self, ctx: &AttnCtx) -> (f64, bool) {
        let s = &self.cfg.schedule;
        let d = s.drop_rate(ctx.step, ctx.num_steps, ctx.stage);
        (d, s.is_dense(d))
    }

    /// Host-side plan from pooled `qhat`/`khat` (`[batch, heads, num_blocks, head_dim]`) for
    /// a call at `ctx` with drop rate `drop`; what [`AttentionPolicy::plan`] runs after
    /// pooling and download.
    #[allow(clippy::too_many_arguments)]
    pub fn plan_from_pooled(
        &self,
        qhat: &[f32],
        khat: &[f32],
        batch: usize,
        heads: usize,
        head_dim: usize,
        ctx: &AttnCtx,
        drop: f64,
    ) -> Result<BlockPlan> {
        let (t, h, w) = ctx.grid;
        let layout = Layout::new(t * h * w, ctx.cond_tokens, self.cfg.block)?;
        let geom = self.cfg.adjacency.then(|| self.geometry(ctx.grid));
        build_plan(&PlanInputs {
            qhat,
            khat,
            batch,
            heads,
            head_dim,
            layout,
            adjacency: geom.as_ref().map(|g| &g.adjacency),
            first_frame_blocks: self.cfg.first_frame.blocks(&layout, t),
            p: self.cfg.schedule.p(ctx.stage) as f32,
            top_k: layout.top_k(drop),
        })
    }
}

impl<B: PolicyKernels> AttentionPolicy<B> for JengaPolicy {
    fn name(&self) -> String {
        format!("jenga({}, m={})", self.cfg.curve, self.cfg.block)
    }

    fn token_order(&self, grid: (usize, usize, usize)) -> Option<Arc<Vec<u32>>> {
        Some(self.geometry(grid).order.clone())
    }

    fn plan(&self, be: &B, q: &B::Tensor, k: &B::Tensor, ctx: &AttnCtx) -> Result<AttnPlan> {
        self.plan_pooled(be, q, k, None, ctx)
    }

    /// Sparse calls want q̂/k̂ over the policy's blocks (pooled inside RoPE by the model).
    fn pooled_block(&self, ctx: &AttnCtx) -> Option<usize> {
        (!self.drop_rate(ctx).1).then_some(self.cfg.block)
    }

    fn plan_pooled(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
    ) -> Result<AttnPlan> {
        let (drop, dense) = self.drop_rate(ctx);
        if dense {
            self.record(ctx.stage, None);
            return Ok(AttnPlan::Dense);
        }
        let op = "JengaPolicy::plan";
        let (qs, ks) = (q.shape(), k.shape());
        let (t, h, w) = ctx.grid;
        let len = t * h * w + ctx.cond_tokens;
        if qs.len() != 4 || qs != ks || qs[1] != len {
            return Err(Error::shape(
                op,
                format!(
                    "q {qs:?} / k {ks:?}, expected equal [B, {len}, H, Dh] for grid {t}x{h}x{w} + {} condition tokens",
                    ctx.cond_tokens
                ),
            ));
        }
        let (batch, heads, head_dim) = (qs[0], qs[2], qs[3]);
        let m = self.cfg.block;
        if let Some((qh, kh)) = pooled {
            let want = [batch, heads, len.div_ceil(m), head_dim];
            if qh.shape() != want || kh.shape() != want {
                return Err(Error::shape(
                    op,
                    format!(
                        "pooled q̂ {:?} / k̂ {:?}, expected {want:?}",
                        qh.shape(),
                        kh.shape()
                    ),
                ));
            }
        }
        if self.device_select.load(Ordering::Relaxed) {
            // On the device when the backend can (no download, no host sync); else the host.
            let layout = Layout::new(t * h * w, ctx.cond_tokens, m)?;
            let sel = BlockSelect {
                block: m,
                scored_blocks: layout.video_blocks,
                p: self.cfg.schedule.p(ctx.stage) as f32,
                top_k: layout.top_k(drop),
                fixed: self.fixed_plan(ctx)?,
            };
            let selected = match pooled {
                Some((qh, kh)) => match be.select_blocks_pooled(qh, kh, &sel)? {
                    None => be.select_blocks(q, k, &sel)?,
                    r => r,
                },
                None => be.select_blocks(q, k, &sel)?,
            };
            match selected {
                Some(AttnPlan::Device(dp)) => {
                    let nnz = dp.nnz.clone();
                    self.stats
                        .record_device(ctx.stage, nnz, dp.pairs(), (), |_| {});
                    return Ok(AttnPlan::Device(dp));
                }
                Some(AttnPlan::Sparse(p)) => {
                    self.record(ctx.stage, Some(p.density()));
                    return Ok(AttnPlan::Sparse(p));
                }
                Some(AttnPlan::Dense) => {
                    self.record(ctx.stage, None);
                    return Ok(AttnPlan::Dense);
                }
                None => {}
            }
        }
        let (qhat, khat) = match pooled {
            Some((qh, kh)) => (be.download(qh)?, be.download(kh)?),
            None => (
                be.download(&be.block_mean_pool(q, m)?)?,
                be.download(&be.block_mean_pool(k, m)?)?,
            ),
        };
        let plan = self.plan_from_pooled(&qhat, &khat, batch, heads, head_dim, ctx, drop)?;
        self.record(ctx.stage, Some(plan.density()));
        Ok(AttnPlan::Sparse(Arc::new(plan)))
    }

    fn key_bias(&self, ctx: &AttnCtx) -> Option<KeyBias> {
        if ctx.cond_tokens == 0 {
            return None;
        }
        // The reference applies the amplifier inside its block-sparse kernel only; dense
        // calls (drop rate 0) run plain flash attention without it.
        if self.drop_rate(ctx).1 {
            return None;
        }
        let beta = self.cfg.text_amp.bias(ctx.stage);
        // Video queries × condition keys: the condition tokens follow the (curve-ordered)
        // video tokens, so both bounds are the video token count. Condition-query rows get no
        // bias (the reference amplifies the video-query rows of its sparse call only).
        let video = ctx.grid.0 * ctx.grid.1 * ctx.grid.2;
        (beta != 0.0).then_some(KeyBias {
            from_key: video,
            to_query: video,
            bias: beta as f32,
        })
    }

    fn density_stats(&self) -> Vec<DensityStats> {
        self.stats()
    }
}

/// Query rows per parallel task of [`build_plan`].
const ROWS_PER_TASK: usize = 64;

/// Inputs of [`build_plan`].
pub struct PlanInputs<'a> {
    /// `[batch, heads, layout.num_blocks, head_dim]` block means of q and k.
    pub qhat: &'a [f32],
    pub khat: &'a [f32],
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub layout: Layout,
    pub adjacency: Option<&'a Adjacency>,
    pub first_frame_blocks: usize,
    pub p: f32,
    pub top_k: usize,
}

/// importance ∪ adjacency ∪ condition ∪ first-frame square, built row by row straight into
/// CSR (no dense `[B, H, nb, nb]` mask in the hot path), parallel over (batch, head).
pub fn build_plan(inp: &PlanInputs) -> Result<BlockPlan> {
    let l = &inp.layout;
    let (nb, nv, d) = (l.num_blocks, l.video_blocks, inp.head_dim);
    let bh = inp.batch * inp.heads;
    let want = bh * nb * d;
    if inp.qhat.len() != want || inp.khat.len() != want {
        return Err(Error::shape(
            "build_plan",
            format!(
                "q̂ {} / k̂ {} values, expected {}x{}x{nb}x{d}",
                inp.qhat.len(),
                inp.khat.len(),
                inp.batch,
                inp.heads
            ),
        ));
    }
    // Tasks = (batch·head, chunk of query rows): 12 heads alone would leave cores idle on a
    // 16-core host.
    let chunks = nb.div_ceil(ROWS_PER_TASK).max(1);
    let parts: Vec<(Vec<u32>, Vec<u32>)> = (0..bh * chunks)
        .into_par_iter()
        .map(|task| {
            let (i, c) = (task / chunks, task % chunks);
            let rows = c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(nb);
            let q = &inp.qhat[i * nb * d..][..nb * d];
            let k = &inp.khat[i * nb * d..][..nb * d];
            // Scores only for video query rows × video key blocks: condition rows are dense.
            let scored = rows.start.min(nv)..rows.end.min(nv);
            let mut scores = vec![0f32; scored.len() * nv];
            block_scores(&q[scored.start * d..], k, scored.len(), nv, d, &mut scores);
            let mut scratch = RowScratch::default();
            let mut keep = vec![false; nb];
            let mut lens = Vec::with_capacity(rows.len());
            let mut cols = Vec::with_capacity(rows.len() * 32);
            for qb in rows {
                keep.fill(false);
                if qb < nv {
                    let r = qb - scored.start;
                    select_row(
                        &mut scores[r * nv..][..nv],
                        inp.p,
                        inp.top_k,
                        &mut scratch,
                        &mut keep,
                    );
                    if let Some(a) = inp.adjacency {
                        a.mark_row(qb, nv, &mut keep);
                    }
                }
                condition::mark_row(l, inp.first_frame_blocks, qb, &mut keep);
                let before = cols.len();
                cols.extend((0..nb as u32).filter(|&j| keep[j as usize]));
                lens.push((cols.len() - before) as u32);
            }
            (lens, cols)
        })
        .collect();
    let total: usize = parts.iter().map(|p| p.1.len()).sum();
    let mut row_ptr = Vec::with_capacity(bh * nb + 1);
    let mut col_idx = Vec::with_capacity(total);
    row_ptr.push(0u32);
    for (lens, cols) in parts {
        for n in lens {
            let last = *row_ptr.last().unwrap_or(&0);
            row_ptr.push(last + n);
        }
        col_idx.extend(cols);
    }
    Ok(BlockPlan {
        batch: inp.batch,
        heads: inp.heads,
        block: l.block,
        q_blocks: nb,
        k_blocks: nb,
        row_ptr,
        col_idx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importance::importance_mask;
    use crate::mask::BlockMask;
    use jenga_tensor::CpuBackend;
    use jenga_tensor::{Backend, FusedOps};
    use rand::{Rng, SeedableRng};

    fn ctx(step: usize, stage: usize, grid: (usize, usize, usize), cond: usize) -> AttnCtx {
        AttnCtx {
            step,
            num_steps: 50,
            layer: 0,
            num_layers: 1,
            stage,
            grid,
            cond_tokens: cond,
        }
    }

    fn softmax(x: &[f64]) -> Vec<f64> {
        let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn constant_bias_on_all_keys_cancels() {
        let x = [0.3, -1.2, 2.5, 0.0, 0.7];
        let beta = -0.5 * (0.5625f64).ln(); // Turbo first stage: (0.75)^2 of the tokens
        let shifted: Vec<f64> = x.iter().map(|v| v + beta).collect();
        for (a, b) in softmax(&x).iter().zip(softmax(&shifted)) {
            assert!((a - b).abs() < 1e-15);
        }
        // A bias on a subset (condition keys 3, 4) does change the weights: it multiplies
        // their unnormalised weight by e^β.
        let mut partial = x.to_vec();
        partial[3] += beta;
        partial[4] += beta;
        let (p0, p1) = (softmax(&x), softmax(&partial));
        let ratio = (p1[3] / p1[0]) / (p0[3] / p0[0]);
        assert!((ratio - beta.exp()).abs() < 1e-12);
    }

    #[test]
    fn text_amp_matches_reference_formula() {
        // Reference: text_amp = -log2(sqrt(r)) * scale added in the exp2 domain, i.e.
        // text_amp * ln 2 in natural-log logits.
        let r = 0.75f64 * 0.75;
        let reference = -(r.sqrt()).log2() * 1.0 * std::f64::consts::LN_2;
        let amp = TextAmp {
            stage_token_ratio: vec![r, 1.0],
            ..TextAmp::default()
        };
        assert!((amp.bias(0) - reference).abs() < 1e-15);
        assert!((amp.bias(0) - 0.287_682_072_451_781).abs() < 1e-12);
        assert_eq!(amp.bias(1), 0.0);
        // 3-stage preset: only the first stage, unless asked otherwise.
        let three = TextAmp {
            stage_token_ratio: vec![0.25, 0.5625, 1.0],
            ..TextAmp::default()
        };
        assert_eq!(three.bias(1), 0.0);
        let every = TextAmp {
            first_stage_only: false,
            ..three
        };
        assert!((every.bias(1) - 0.287_682_072_451_781).abs() < 1e-12);
    }

    #[test]
    fn key_bias_only_with_condition_tokens_in_first_stage() {
        let hy = JengaPolicy::new(JengaConfig::hunyuan(&[0.7, 0.8], 0.3, &[0.5625, 1.0])).unwrap();
        let pol: &dyn AttentionPolicy<CpuBackend> = &hy;
        let kb = pol.key_bias(&ctx(3, 0, (2, 6, 8), 20)).unwrap();
        assert_eq!((kb.from_key, kb.to_query), (96, 96));
        assert!((kb.bias - 0.287_682_07).abs() < 1e-6);
        assert!(pol.key_bias(&ctx(30, 1, (2, 8, 8), 20)).is_none());
        let wan = JengaPolicy::new(JengaConfig::wan(&[0.75, 0.85], 0.9)).unwrap();
        let pol: &dyn AttentionPolicy<CpuBackend> = &wan;
        assert!(pol.key_bias(&ctx(10, 0, (2, 6, 8), 0)).is_none());
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// The fixed plan handed to `PolicyKernels::select_blocks` is exactly the static part of the
    /// host plan's union (adjacency ∪ condition ∪ first-frame), contained in every host row,
    /// and cached; on the CPU the policy still returns host-built plans.
    #[test]
    fn fixed_plan_is_the_static_part_of_build_plan() {
        let (grid, cond) = ((2, 12, 20), 150);
        let mut cfg = JengaConfig::hunyuan(&[0.8], 0.6, &[1.0]);
        cfg.block = 64;
        cfg.first_frame = FirstFrame::DivideBy(3);
        let pol = JengaPolicy::new(cfg).unwrap();
        let c = ctx(10, 0, grid, cond);
        let fixed = pol.fixed_plan(&c).unwrap();
        assert!(Arc::ptr_eq(&fixed, &pol.fixed_plan(&c).unwrap()));
        let layout = Layout::new(480, cond, 64).unwrap();
        let (nb, nv) = (layout.num_blocks, layout.video_blocks);
        let ff = layout.video_blocks / 3;
        assert!(ff > 0 && nb > nv);
        let cm = condition::condition_mask(&layout, ff, 1, 1);
        let g = pol.geometry(grid);
        for q in 0..nb {
            let want: Vec<u32> = (0..nb)
                .filter(|&k| cm.get(0, 0, q, k) || (q < nv && k < nv && g.adjacency.contains(q, k)))
                .map(|k| k as u32)
                .collect();
            assert_eq!(fixed.row(0, 0, q), &want[..], "row {q}");
        }
        let (batch, heads, d) = (2, 3, 8);
        let qhat = random(batch * heads * nb * d, 5);
        let khat = random(batch * heads * nb * d, 6);
        let plan = pol
            .plan_from_pooled(&qhat, &khat, batch, heads, d, &c, 0.8)
            .unwrap();
        for b in 0..batch {
            for h in 0..heads {
                for q in 0..nb {
                    let row = plan.row(b, h, q);
                    assert!(fixed.row(0, 0, q).iter().all(|j| row.contains(j)));
                }
            }
        }
        let be = CpuBackend::new();
        let x = be
            .upload(&random(480 + cond, 9).repeat(8), &[1, 480 + cond, 1, 8])
            .unwrap();
        assert!(matches!(
            pol.plan(&be, &x, &x, &c).unwrap(),
            AttnPlan::Sparse(_)
        ));
    }

    /// The fused CSR builder equals the union of the separately built masks.
    #[test]
    fn fused_plan_equals_union_of_masks() {
        for (grid, cond, curve) in [
            ((3, 16, 16), 0, CurveKind::Sliced),
            ((2, 12, 20), 150, CurveKind::Gilbert3d),
        ] {
            let (t, h, w) = grid;
            let nvt = t * h * w;
            let layout = Layout::new(nvt, cond, 64).unwrap();
            let (batch, heads, d) = (2, 3, 8);
            let nb = layout.num_blocks;
            let qhat = random(batch * heads * nb * d, 1);
            let khat = random(batch * heads * nb * d, 2);
            let order = curve.order(t, h, w);
            let adj = Adjacency::build(grid, &order, 64).unwrap();
            let (p, top_k, ffb) = (0.6f32, layout.top_k(0.8), 2);
            let plan = build_plan(&PlanInputs {
                qhat: &qhat,
                khat: &khat,
                batch,
                heads,
                head_dim: d,
                layout,
                adjacency: Some(&adj),
                first_frame_blocks: ffb,
                p,
                top_k,
            })
            .unwrap();
            plan.validate(batch, heads, layout.seq_len(), layout.seq_len())
                .unwrap();

            let nv = layout.video_blocks;
            let mut want =
                importance_mask(&qhat, &khat, batch, heads, nb, nb, d, nv, p, top_k).unwrap();
            // Condition rows are dense whatever importance says.
            for b in 0..batch {
                for hh in 0..heads {
                    for q in 0..nb {
                        if q >= nv {
                            want.row_mut(b, hh, q).fill(false);
                        }
                        for k in 0..nv {
                            if q < nv && adj.contains(q, k) {
                                want.set(b, hh, q, k, true);
                            }
                        }
                    }
                }
            }
            let cond_mask = condition::condition_mask(&layout, ffb, batch, heads);
            want.union_with(&cond_mask).unwrap();
            assert_eq!(BlockMask::from_plan(&plan).unwrap(), want, "{grid:?}");
            let dens = plan.density();
            println!("{grid:?} + {cond} cond: density {dens:.3}");
            assert!(dens > 0.0 && dens < 1.0);
        }
    }

    #[test]
    fn policy_on_cpu_backend() {
        let be = CpuBackend::new();
        let grid = (2, 16, 16); // 512 video tokens = 4 blocks of 128
        let cond = 40;
        let (b, l, h, d) = (1, 512 + cond, 2, 16);
        let mut cfg = JengaConfig::hunyuan(&[0.75, 0.5], 0.3, &[0.5, 1.0]);
        cfg.block = 128;
        let pol = JengaPolicy::new(cfg).unwrap();
        let order = AttentionPolicy::<CpuBackend>::token_order(&pol, grid).unwrap();
        assert_eq!(*order, crate::curve::gilbert3d(2, 16, 16));
        let q = be.upload(&random(b * l * h * d, 3), &[b, l, h, d]).unwrap();
        let k = be.upload(&random(b * l * h * d, 4), &[b, l, h, d]).unwrap();
        let plan = pol.plan(&be, &q, &k, &ctx(0, 0, grid, cond)).unwrap();
        let AttnPlan::Sparse(plan) = plan else {
            panic!("drop 0.75 should give a sparse plan")
        };
        plan.validate(b, h, l, l).unwrap();
        // 5 blocks: 4 video + 1 condition (tokens 512..552). Every row keeps block 4,
        // the condition row keeps all.
        assert_eq!(plan.q_blocks, 5);
        for hh in 0..h {
            for qb in 0..4 {
                let row = plan.row(0, hh, qb);
                assert!(row.contains(&4) && row.contains(&(qb as u32)), "{row:?}");
            }
            assert_eq!(plan.row(0, hh, 4), &[0, 1, 2, 3, 4]);
        }
        // Wrong length is a clear error, not a panic.
        let bad = be
            .upload(&random(b * 500 * h * d, 5), &[b, 500, h, d])
            .unwrap();
        assert!(pol.plan(&be, &bad, &bad, &ctx(0, 0, grid, cond)).is_err());
        // Stats: one sparse call in stage 0.
        let s = pol.stats();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].calls, s[0].sparse_calls), (1, 1));
        assert!((s[0].mean_density - plan.density()).abs() < 1e-12);
    }

    /// What the model does for a sparse call (`rope_pooled` → `plan_pooled`) gives the plan of
    /// `rope` → `plan`; dense calls ask for no means; mis-shaped means are an error.
    #[test]
    fn plan_pooled_equals_plan_on_cpu() {
        let be = CpuBackend::new();
        let grid = (4, 32, 32); // 32 video blocks + 1 condition block
        let cond = 40;
        let (b, l, h, d) = (2, 4096 + cond, 2, 16);
        let pol = JengaPolicy::new(JengaConfig::hunyuan(&[0.9], 0.3, &[1.0])).unwrap();
        let cx = ctx(10, 0, grid, cond);
        let m = AttentionPolicy::<CpuBackend>::pooled_block(&pol, &cx).unwrap();
        assert_eq!(m, 128);
        let ang = random(l * d / 2, 9);
        let cos = be
            .upload(
                &ang.iter().map(|a| a.cos()).collect::<Vec<_>>(),
                &[l, d / 2],
            )
            .unwrap();
        let sin = be
            .upload(
                &ang.iter().map(|a| a.sin()).collect::<Vec<_>>(),
                &[l, d / 2],
            )
            .unwrap();
        let rope = |seed| {
            let x = be
                .upload(&random(b * l * h * d, seed), &[b, l, h, d])
                .unwrap();
            be.rope_pooled(&x, &cos, &sin, m).unwrap()
        };
        let ((q, qh), (k, kh)) = (rope(11), rope(12));
        let (qh, kh) = (qh.unwrap(), kh.unwrap());
        assert_eq!(qh.shape(), [b, h, 33, d]);
        let AttnPlan::Sparse(fused) = pol.plan_pooled(&be, &q, &k, Some((&qh, &kh)), &cx).unwrap()
        else {
            panic!("sparse call")
        };
        let AttnPlan::Sparse(plain) = pol.plan(&be, &q, &k, &cx).unwrap() else {
            panic!("sparse call")
        };
        assert_eq!(fused, plain);
        assert!(fused.density() < 1.0);
        assert!(pol.plan_pooled(&be, &q, &k, Some((&kh, &q)), &cx).is_err());
        let wan = JengaPolicy::new(JengaConfig::wan(&[0.75], 0.9)).unwrap();
        assert_eq!(
            AttentionPolicy::<CpuBackend>::pooled_block(&wan, &ctx(0, 0, grid, 0)),
            None,
            "warm-up steps are dense"
        );
    }

    #[test]
    fn dense_when_schedule_says_so_and_stats_average() {
        let be = CpuBackend::new();
        let pol = JengaPolicy::new(JengaConfig::wan(&[0.75, 0.85], 0.9)).unwrap();
        let grid = (1, 16, 16);
        let q = be.upload(&random(256 * 2 * 8, 6), &[1, 256, 2, 8]).unwrap();
        // Step 0 and 1: ramp keeps the rate <= 0.25 -> dense.
        for step in [0, 1] {
            assert!(matches!(
                pol.plan(&be, &q, &q, &ctx(step, 0, grid, 0)).unwrap(),
                AttnPlan::Dense
            ));
        }
        let AttnPlan::Sparse(p) = pol.plan(&be, &q, &q, &ctx(10, 0, grid, 0)).unwrap() else {
            panic!("step 10 should be sparse")
        };
        let s = pol.stats();
        assert_eq!((s[0].calls, s[0].sparse_calls), (3, 1));
        assert!((s[0].mean_density - (2.0 + p.density()) / 3.0).abs() < 1e-12);
        assert!((s[0].mean_sparse_density - p.density()).abs() < 1e-12);
        pol.reset_stats();
        assert!(pol.stats().is_empty());
    }

    /// The plan runs every layer: 12 heads x 256 blocks (Wan-1.3B 480p) must take a few ms.
    #[test]
    fn plan_build_time_wan_480p() {
        let grid = (21, 30, 52);
        let pol = JengaPolicy::new(JengaConfig::wan(&[0.75, 0.85], 0.9)).unwrap();
        let (heads, d) = (12, 128);
        let nb = 256;
        let qhat = random(heads * nb * d, 7);
        let khat = random(heads * nb * d, 8);
        let c = ctx(10, 0, grid, 0);
        pol.geometry(grid); // once per stage, not per call
        let mut best = f64::INFINITY;
        let mut plan = None;
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            plan = Some(
                pol.plan_from_pooled(&qhat, &khat, 1, heads, d, &c, 0.75)
                    .unwrap(),
            );
            best = best.min(t0.elapsed().as_secs_f64() * 1e3);
        }
        let plan = plan.unwrap();
        println!(
            "plan 12 heads x 256 x 256 blocks: {best:.2} ms ({} threads), density {:.3}",
            rayon::current_num_threads(),
            plan.density()
        );
        assert!(plan.density() >= 0.25 && plan.density() < 1.0);
        // Generous bound for a loaded 2-core CI machine; the printed time is the figure.
        assert!(best < 200.0, "{best} ms");
    }
}
