//! Wan2.1 T2V behind the sampler's `Denoiser` contract: cross-attention text conditioning,
//! the time projection `e0` as TeaCache's signal.

use super::model::{Embedded, Geometry, WanModel};
use crate::denoiser::{Conditioning, Denoiser};
use crate::{ModelError, Result};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::{FusedOps, TensorMeta};
use std::sync::Arc;

/// Wan2.1-T2V-1.3B TeaCache rescale polynomial (`use_ret_step`), highest power first.
pub const TEACACHE_T2V_1_3B: [f64; 5] = [
    -5.21862437e+04,
    9.23041404e+03,
    -5.28275948e+02,
    1.36987616e+01,
    -4.99875664e-02,
];

/// Wan2.1-T2V-14B TeaCache rescale polynomial (`use_ret_step`), highest power first
/// (`jenga_wan.py`, as TeaCache4Wan2.1).
pub const TEACACHE_T2V_14B: [f64; 5] = [
    -3.03318725e+05,
    4.90537029e+04,
    -2.65530556e+03,
    5.87365115e+01,
    -3.15583525e-01,
];

impl<B: FusedOps> Denoiser<B> for WanModel<B> {
    type Stage = Geometry<B>;
    type Step = Embedded<B>;
    /// The text context after the model's text embedding, `[batch, text_len, dim]`.
    type Cond = B::Tensor;

    fn latent_channels(&self) -> usize {
        self.cfg.out_dim
    }
    fn patch(&self) -> [usize; 3] {
        self.cfg.patch_size
    }
    fn num_layers(&self) -> usize {
        WanModel::num_layers(self)
    }
    fn grid(&self, f: usize, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        WanModel::grid(self, f, h, w)
    }
    fn stage(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<Geometry<B>> {
        self.geometry(be, grid, order)
    }
    fn stage_shard(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
        tokens: std::ops::Range<usize>,
    ) -> Result<Geometry<B>> {
        self.geometry_shard(be, grid, order, Some(tokens))
    }
    fn stage_tokens(&self, stage: &Geometry<B>) -> usize {
        stage.tokens()
    }
    fn condition(&self, be: &B, c: &Conditioning<B>) -> Result<B::Tensor> {
        match c {
            Conditioning::Text { states } => self.embed_text(be, states),
            _ => Err(ModelError::Invalid(format!(
                "Wan2.1 {} takes text conditioning (cross-attention) only",
                self.cfg.model_type
            ))),
        }
    }
    fn cond_batch(&self, cond: &B::Tensor) -> usize {
        cond.shape()[0]
    }
    fn embed(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        stage: &Geometry<B>,
        _cond: &B::Tensor,
    ) -> Result<Embedded<B>> {
        WanModel::embed(self, be, x, t, stage)
    }
    fn hidden<'a>(&self, step: &'a Embedded<B>) -> &'a B::Tensor {
        &step.x
    }
    fn blocks(
        &self,
        be: &B,
        step: &Embedded<B>,
        cond: &B::Tensor,
        stage: &Geometry<B>,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        WanModel::blocks(self, be, step, cond, stage, policy, actx)
    }
    fn head(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Embedded<B>,
        stage: &Geometry<B>,
    ) -> Result<B::Tensor> {
        WanModel::head(self, be, hidden, step, stage)
    }
    fn head_tokens(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Embedded<B>,
        _stage: &Geometry<B>,
    ) -> Result<B::Tensor> {
        WanModel::head_tokens(self, be, hidden, step)
    }
    fn unpatchify(&self, be: &B, tokens: &B::Tensor, stage: &Geometry<B>) -> Result<B::Tensor> {
        WanModel::unpatchify(self, be, tokens, stage)
    }
    fn skip_signal(&self, be: &B, t: f64) -> Result<B::Tensor> {
        Ok(self.time_embed(be, t)?.1)
    }
    fn teacache_coefficients(&self) -> Option<Vec<f64>> {
        // Per checkpoint, as the reference picks by '1.3B' / '14B' in the checkpoint path:
        // here by the width (14B: 5120). Smaller models (tiny-wan) take the 1.3B polynomial.
        Some(match self.cfg.dim {
            5120 => TEACACHE_T2V_14B.to_vec(),
            _ => TEACACHE_T2V_1_3B.to_vec(),
        })
    }
}
