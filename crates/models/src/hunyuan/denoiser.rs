//! HunyuanVideo behind the sampler's `Denoiser` contract: joint text attention (the text is
//! condition tokens in self-attention), embedded guidance (one forward per step, no CFG batch).

use super::model::{HunyuanCond, HunyuanGeometry, HunyuanModel, HunyuanStep};
use crate::denoiser::{Conditioning, Denoiser};
use crate::{ModelError, Result};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::{FusedOps, TensorMeta};
use std::sync::Arc;

impl<B: FusedOps> Denoiser<B> for HunyuanModel<B> {
    type Stage = HunyuanGeometry<B>;
    type Step = HunyuanStep<B>;
    type Cond = HunyuanCond<B>;

    fn latent_channels(&self) -> usize {
        self.cfg.out_channels
    }
    fn patch(&self) -> [usize; 3] {
        self.cfg.patch()
    }
    fn num_layers(&self) -> usize {
        HunyuanModel::num_layers(self)
    }
    fn grid(&self, f: usize, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        HunyuanModel::grid(self, f, h, w)
    }
    fn stage(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<Self::Stage> {
        self.geometry(be, grid, order)
    }
    fn stage_shard(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
        tokens: std::ops::Range<usize>,
    ) -> Result<Self::Stage> {
        self.geometry_shard(be, grid, order, Some(tokens))
    }
    fn stage_tokens(&self, stage: &Self::Stage) -> usize {
        stage.tokens()
    }
    fn cond_tokens(&self, cond: &Self::Cond) -> usize {
        cond.text.shape()[1]
    }
    /// `JointText`: Llama states `[1, L, text_dim]` with the valid length `lens[0]` (the rest
    /// is cropped: diffusers masks those keys, which gives the same video), the pooled CLIP
    /// vector `[1, pooled_dim]`, the embedded guidance scale (fed ×1000, as the pipelines do).
    fn condition(&self, be: &B, c: &Conditioning<B>) -> Result<Self::Cond> {
        let Conditioning::JointText {
            states,
            lens,
            pooled,
            guidance,
        } = c
        else {
            return Err(ModelError::Invalid(
                "HunyuanVideo takes joint text conditioning (Llama states, CLIP pooled)".into(),
            ));
        };
        let s = states.shape();
        if s.len() != 3 || s[0] != 1 || s[2] != self.cfg.text_embed_dim {
            return Err(ModelError::Invalid(format!(
                "HunyuanVideo text states {s:?}, expected [1, tokens, {}] (one prompt: the guidance is embedded)",
                self.cfg.text_embed_dim
            )));
        }
        let n = match lens.first() {
            Some(&n) if n >= 1 && n <= s[1] => n,
            _ => {
                return Err(ModelError::Invalid(format!(
                    "HunyuanVideo text length {lens:?} of {} tokens",
                    s[1]
                )))
            }
        };
        if pooled.shape() != [1, self.cfg.pooled_projection_dim] {
            return Err(ModelError::Invalid(format!(
                "HunyuanVideo pooled text vector {:?}, expected [1, {}]",
                pooled.shape(),
                self.cfg.pooled_projection_dim
            )));
        }
        Ok(HunyuanCond {
            text: be.narrow(states, 1, 0, n)?,
            pooled: pooled.clone(),
            guidance: guidance.map(|g| g * 1000.0),
        })
    }
    fn cond_batch(&self, _cond: &Self::Cond) -> usize {
        1
    }
    fn embed(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        stage: &Self::Stage,
        cond: &Self::Cond,
    ) -> Result<Self::Step> {
        HunyuanModel::embed(self, be, x, t, stage, cond)
    }
    fn hidden<'a>(&self, step: &'a Self::Step) -> &'a B::Tensor {
        &step.x
    }
    fn blocks(
        &self,
        be: &B,
        step: &Self::Step,
        _cond: &Self::Cond,
        stage: &Self::Stage,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        HunyuanModel::blocks(self, be, step, stage, policy, actx)
    }
    fn head(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Self::Step,
        stage: &Self::Stage,
    ) -> Result<B::Tensor> {
        if stage.shard.is_some() {
            return Err(ModelError::Invalid(
                "the head of a token shard gives tokens: gather them, then unpatchify".into(),
            ));
        }
        let y = HunyuanModel::head_tokens(self, be, hidden, step)?;
        HunyuanModel::unpatchify(self, be, &y, stage)
    }
    fn head_tokens(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Self::Step,
        _stage: &Self::Stage,
    ) -> Result<B::Tensor> {
        HunyuanModel::head_tokens(self, be, hidden, step)
    }
    fn unpatchify(&self, be: &B, tokens: &B::Tensor, stage: &Self::Stage) -> Result<B::Tensor> {
        HunyuanModel::unpatchify(self, be, tokens, stage)
    }
    /// The time embedding: TeaCache's own HunyuanVideo signal is the first block's modulated
    /// input, which this contract does not carry; the official Jenga HunyuanVideo schedule is
    /// the static list, which needs no signal.
    fn skip_signal(&self, be: &B, t: f64) -> Result<B::Tensor> {
        self.time_embedding(be, t)
    }
    fn teacache_coefficients(&self) -> Option<Vec<f64>> {
        None
    }
}
