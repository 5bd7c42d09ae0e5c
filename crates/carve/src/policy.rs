//! The seam between models and sparse-attention methods.
//!
//! A model asks the policy, once per stage, for a token order (the curve), and, for every
//! self-attention call, for a plan. The model never knows which policy runs; a policy never
//! knows which model calls it.

use jenga_tensor::{AttnPlan, Backend, KeyBias, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where in the generation an attention call happens.
#[derive(Clone, Debug)]
pub struct AttnCtx {
    /// Denoising step index (0-based) and total steps of the whole run.
    pub step: usize,
    pub num_steps: usize,
    /// Transformer layer (0-based) and layer count.
    pub layer: usize,
    pub num_layers: usize,
    /// ProRes stage (0-based).
    pub stage: usize,
    /// Latent token grid (frames, rows, cols) of this stage, after patchify.
    pub grid: (usize, usize, usize),
    /// Condition (text) tokens appended after the video tokens in this attention's sequence
    /// (0 for Wan self-attention, where text enters through cross-attention).
    pub cond_tokens: usize,
}

pub trait AttentionPolicy<B: Backend>: Send + Sync {
    fn name(&self) -> String;
    /// Order in which video tokens are laid out for a stage grid: `order[k]` = raster index of
    /// the k-th token. `None` keeps raster order.
    fn token_order(&self, _grid: (usize, usize, usize)) -> Option<Arc<Vec<u32>>> {
        None
    }
    /// Plan for one self-attention call; q/k are `[B, L, H, Dh]` in token order.
    fn plan(&self, be: &B, q: &B::Tensor, k: &B::Tensor, ctx: &AttnCtx) -> Result<AttnPlan>;
    /// Block size `m` for which this call's plan wants the block means of q and k
    /// (`[B, H, ceil(L/m), Dh]`, as [`Backend::block_mean_pool`]); the model then computes them
    /// with [`Backend::rope_pooled`] (fused into RoPE where the backend can) and hands them to
    /// [`AttentionPolicy::plan_pooled`]. `None` (default): not needed.
    fn pooled_block(&self, _ctx: &AttnCtx) -> Option<usize> {
        None
    }
    /// [`AttentionPolicy::plan`] with the block means asked for by
    /// [`AttentionPolicy::pooled_block`] (`None` when the backend did not compute them); the
    /// default ignores them.
    fn plan_pooled(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        _pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
    ) -> Result<AttnPlan> {
        self.plan(be, q, k, ctx)
    }
    /// Optional score bias on condition keys (text-attention amplifier).
    fn key_bias(&self, _ctx: &AttnCtx) -> Option<KeyBias> {
        None
    }
    /// Kept-block density per stage so far (empty for policies that do not track it).
    fn density_stats(&self) -> Vec<DensityStats> {
        Vec::new()
    }
}

/// Attention density of one ProRes stage, averaged over the plan calls of that stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DensityStats {
    pub stage: usize,
    /// Plan calls in this stage (dense and sparse).
    pub calls: u64,
    /// Calls that returned a sparse plan.
    pub sparse_calls: u64,
    /// Mean fraction of (query block, key block) pairs computed, dense calls counting 1.0.
    pub mean_density: f64,
    /// Mean density over sparse calls only (0 when there were none).
    pub mean_sparse_density: f64,
}

/// Per-stage density bookkeeping behind [`AttentionPolicy::density_stats`], shared by the
/// policies.
#[derive(Default)]
pub(crate) struct DensityLog {
    stages: Mutex<BTreeMap<usize, Acc>>,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    calls: u64,
    sparse: u64,
    /// Densities of all calls (dense ones count 1) / of sparse calls only.
    sum: f64,
    sparse_sum: f64,
}

impl DensityLog {
    /// Record a call: `Some(density)` for a sparse plan, `None` for a dense call.
    pub(crate) fn record(&self, stage: usize, density: Option<f64>) {
        let mut s = lock(&self.stages);
        let a = s.entry(stage).or_default();
        a.calls += 1;
        match density {
            Some(d) => {
                a.sparse += 1;
                a.sum += d;
                a.sparse_sum += d;
            }
            None => a.sum += 1.0,
        }
    }

    /// Record a sparse call whose density is not known yet (a device-built plan); its density
    /// comes later through [`DensityLog::add_sparse_density`].
    pub(crate) fn record_pending(&self, stage: usize) {
        let mut s = lock(&self.stages);
        let a = s.entry(stage).or_default();
        a.calls += 1;
        a.sparse += 1;
    }

    /// The density of a call counted by [`DensityLog::record_pending`].
    pub(crate) fn add_sparse_density(&self, stage: usize, density: f64) {
        let mut s = lock(&self.stages);
        let a = s.entry(stage).or_default();
        a.sum += density;
        a.sparse_sum += density;
    }

    pub(crate) fn stats(&self) -> Vec<DensityStats> {
        lock(&self.stages)
            .iter()
            .map(|(&stage, a)| DensityStats {
                stage,
                calls: a.calls,
                sparse_calls: a.sparse,
                mean_density: if a.calls > 0 {
                    a.sum / a.calls as f64
                } else {
                    0.0
                },
                mean_sparse_density: if a.sparse > 0 {
                    a.sparse_sum / a.sparse as f64
                } else {
                    0.0
                },
            })
            .collect()
    }

    pub(crate) fn reset(&self) {
        lock(&self.stages).clear();
    }
}

/// A poisoned lock still guards plain data that is valid: a panic elsewhere must not take the
/// policies down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Full attention everywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dense;

impl<B: Backend> AttentionPolicy<B> for Dense {
    fn name(&self) -> String {
        "dense".into()
    }
    fn plan(&self, _be: &B, _q: &B::Tensor, _k: &B::Tensor, _ctx: &AttnCtx) -> Result<AttnPlan> {
        Ok(AttnPlan::Dense)
    }
}
