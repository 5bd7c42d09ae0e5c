//! The contract between a diffusion transformer and the sampler: the sampler, ProRes and step
//! skip are written once against it; each model family implements it. A step is split where
//! the sampler needs to cut in: `embed` (tokens + modulation), `blocks` (skippable: their
//! residual is what a skipped step reuses), `head` (back to the latent). The model never sees
//! which attention policy runs (it asks the policy it is handed), nor the solver.

use crate::{ModelError, Result};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::{Backend, FusedOps, TensorMeta};
use std::sync::Arc;

/// What a generation is conditioned on, as the model family takes it.
pub enum Conditioning<B: Backend> {
    /// Cross-attention text (Wan T2V): encoder states `[batch, len, dim]`; batch 2 under
    /// classifier-free guidance (conditional first, then unconditional).
    Text { states: B::Tensor },
    /// Joint text attention (HunyuanVideo): text states with their valid lengths, the pooled
    /// text vector and the embedded (distilled) guidance scale.
    JointText {
        states: B::Tensor,
        lens: Vec<usize>,
        pooled: B::Tensor,
        guidance: Option<f32>,
    },
    /// Image-to-video (Wan I2V): text states and image-encoder states for the
    /// cross-attention. The conditioning latent (mask + encoded first frame) concatenated to
    /// the noise at the input belongs to the denoiser (`WanI2v::ys`, one per stage size).
    Image { states: B::Tensor, image: B::Tensor },
}

/// The patch grid of a latent `frames × height × width` under `patch`, or the error naming
/// both (every model family checks sizes the same way).
pub fn patch_grid(
    patch: [usize; 3],
    frames: usize,
    height: usize,
    width: usize,
) -> Result<(usize, usize, usize)> {
    let [pt, ph, pw] = patch;
    if frames == 0
        || height == 0
        || width == 0
        || !frames.is_multiple_of(pt)
        || !height.is_multiple_of(ph)
        || !width.is_multiple_of(pw)
    {
        return Err(ModelError::Invalid(format!(
            "video size {frames}x{height}x{width} (frames x height x width) must be positive multiples of the patch size {pt}x{ph}x{pw}"
        )));
    }
    Ok((frames / pt, height / ph, width / pw))
}

/// A rank's token shard must be a non-empty part of the stage's `tokens`.
pub fn check_shard(shard: Option<&std::ops::Range<usize>>, tokens: usize) -> Result<()> {
    match shard {
        Some(r) if r.is_empty() || r.end > tokens => Err(ModelError::Invalid(format!(
            "token shard {r:?} of a stage of {tokens} tokens"
        ))),
        _ => Ok(()),
    }
}

impl<B: Backend> Conditioning<B> {
    /// Batch rows `start..start + n` of every per-row tensor (CFG parallelism: the
    /// conditional and unconditional rows go to different ranks).
    pub fn rows(&self, be: &B, start: usize, n: usize) -> Result<Conditioning<B>> {
        let cut = |t: &B::Tensor| -> Result<B::Tensor> {
            if t.shape().first().is_none_or(|&b| start + n > b) {
                return Err(ModelError::Invalid(format!(
                    "conditioning rows {start}..{} of a batch shaped {:?}",
                    start + n,
                    t.shape()
                )));
            }
            Ok(be.narrow(t, 0, start, n)?)
        };
        Ok(match self {
            Conditioning::Text { states } => Conditioning::Text {
                states: cut(states)?,
            },
            Conditioning::JointText {
                states,
                lens,
                pooled,
                guidance,
            } => Conditioning::JointText {
                states: cut(states)?,
                lens: lens
                    .get(start..start + n)
                    .ok_or_else(|| ModelError::Invalid("text lengths per row".into()))?
                    .to_vec(),
                pooled: cut(pooled)?,
                guidance: *guidance,
            },
            // the image states are one row shared by both halves
            Conditioning::Image { states, image } => Conditioning::Image {
                states: cut(states)?,
                image: if image.shape()[0] == 1 {
                    image.clone()
                } else {
                    cut(image)?
                },
            },
        })
    }
}

pub trait Denoiser<B: FusedOps>: Send + Sync {
    /// A stage's geometry: token grid, order (curve) and position tables.
    type Stage;
    /// One step's embedded input (tokens and modulation).
    type Step;
    /// The conditioning, embedded once per run (text projection, refiner…).
    type Cond;

    /// Channels of the latent the sampler holds (the model's output channels).
    fn latent_channels(&self) -> usize;
    fn patch(&self) -> [usize; 3];
    fn num_layers(&self) -> usize;
    /// Patch grid of a latent `frames × height × width`, checked against the patch size.
    fn grid(&self, frames: usize, height: usize, width: usize) -> Result<(usize, usize, usize)>;
    fn stage(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<Self::Stage>;
    /// [`Denoiser::stage`] for a rank that holds only the video tokens `tokens` (positions in
    /// the stage's order) under sequence parallelism: `embed` then yields those tokens and
    /// [`Denoiser::head_tokens`] their outputs. Families without it refuse.
    fn stage_shard(
        &self,
        _be: &B,
        _grid: (usize, usize, usize),
        _order: Option<Arc<Vec<u32>>>,
        _tokens: std::ops::Range<usize>,
    ) -> Result<Self::Stage> {
        Err(ModelError::Invalid(
            "this model family does not run sequence-parallel".into(),
        ))
    }
    fn stage_tokens(&self, stage: &Self::Stage) -> usize;
    /// Tokens of conditioning that self-attention sees beside the video (joint attention).
    fn cond_tokens(&self, _cond: &Self::Cond) -> usize {
        0
    }
    fn condition(&self, be: &B, c: &Conditioning<B>) -> Result<Self::Cond>;
    /// 1, or 2 under classifier-free guidance (conditional and unconditional rows).
    fn cond_batch(&self, cond: &Self::Cond) -> usize;
    /// `x`: the model input `[batch, C, F, H, W]` at time `t` (0–1000).
    fn embed(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        stage: &Self::Stage,
        cond: &Self::Cond,
    ) -> Result<Self::Step>;
    /// The hidden state entering the blocks (a skipped step adds the cached residual to it).
    fn hidden<'a>(&self, step: &'a Self::Step) -> &'a B::Tensor;
    #[allow(clippy::too_many_arguments)]
    fn blocks(
        &self,
        be: &B,
        step: &Self::Step,
        cond: &Self::Cond,
        stage: &Self::Stage,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor>;
    /// Hidden state after the blocks → the model output `[batch, C, F, H, W]`.
    fn head(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Self::Step,
        stage: &Self::Stage,
    ) -> Result<B::Tensor>;
    /// The head per token: hidden `[batch, tokens, D]` → `[batch, tokens, out]` in the
    /// stage's order, for the tokens the stage holds (sequence parallelism gathers these).
    fn head_tokens(
        &self,
        _be: &B,
        _hidden: &B::Tensor,
        _step: &Self::Step,
        _stage: &Self::Stage,
    ) -> Result<B::Tensor> {
        Err(ModelError::Invalid(
            "this model family does not run sequence-parallel".into(),
        ))
    }
    /// Head outputs of every token of the stage `[batch, L, out]` → the model output.
    fn unpatchify(&self, _be: &B, _tokens: &B::Tensor, _stage: &Self::Stage) -> Result<B::Tensor> {
        Err(ModelError::Invalid(
            "this model family does not run sequence-parallel".into(),
        ))
    }
    /// TeaCache's signal at time `t`: the modulated-input proxy whose relative change between
    /// steps decides a recompute (Wan: the time projection `e0`).
    fn skip_signal(&self, be: &B, t: f64) -> Result<B::Tensor>;
    /// TeaCache's rescale polynomial for this checkpoint (highest power first).
    fn teacache_coefficients(&self) -> Option<Vec<f64>>;
}
