//! The seam between models and sparse-attention methods.
//!
//! A model asks the policy, once per stage, for a token order (the curve), and, for every
//! self-attention call, for a plan. The model never knows which policy runs; a policy never
//! knows which model calls it.

use jenga_tensor::{AttnPlan, Backend, KeyBias, Result};
use std::sync::Arc;

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
