//! Wan2.1 image-to-video behind the sampler's `Denoiser` contract: the DiT sees the noisy
//! latent (16 channels) with the conditioning latent `y` (a 4-channel first-frame mask and the
//! VAE-encoded first frame followed by zero frames, 20 channels) concatenated at its input, as
//! `WanImageToVideoPipeline` (`torch.cat([latents, condition], dim=1)`) and Wan's
//! `image2video.py` do; the cross-attention context carries the CLIP rows in front of the text
//! ([`WanModel::embed_context`]). Everything else is the text-to-video model's.

use super::model::{Embedded, Geometry, WanModel};
use crate::denoiser::{Conditioning, Denoiser};
use crate::{ModelError, Result};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::{FusedOps, TensorMeta};
use std::sync::Arc;

/// The conditioning latent `[20, T, h, w]` from the normalised VAE latent of the first frame
/// followed by zero frames (`latent`, `[16, T, h, w]`): mask channels first (1 on the first
/// latent frame — it holds the 4 repeats of the given frame —, 0 after), then the latent.
pub fn i2v_condition(latent: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
    let [c, t, h, w] = shape;
    if latent.len() != c * t * h * w || t == 0 {
        return Err(ModelError::Invalid(format!(
            "conditioning latent of {} values for shape {shape:?}",
            latent.len()
        )));
    }
    let plane = h * w;
    let mut y = vec![0f32; 4 * t * plane];
    for m in 0..4 {
        y[m * t * plane..m * t * plane + plane].fill(1.0);
    }
    y.extend_from_slice(latent);
    Ok(y)
}

/// A Wan2.1 I2V DiT with the run's conditioning latents `y` `[1, 20, T, h, w]` on the device,
/// one per latent size the run samples at (ProRes stages: the image encoded at each size).
pub struct WanI2v<'m, B: FusedOps> {
    pub model: &'m WanModel<B>,
    pub ys: Vec<B::Tensor>,
}

impl<B: FusedOps> WanI2v<'_, B> {
    /// `y` of the latent's size for a batch of `n` (the CFG batch shares one image).
    fn y_for(&self, be: &B, n: usize, x: &B::Tensor) -> Result<B::Tensor> {
        let xs = x.shape();
        let Some(y) = self.ys.iter().find(|y| y.shape()[2..] == xs[2..]) else {
            return Err(ModelError::Invalid(format!(
                "no image-to-video conditioning latent of the latent's size {:?} (have {:?})",
                &xs[2..],
                self.ys
                    .iter()
                    .map(|y| y.shape()[2..].to_vec())
                    .collect::<Vec<_>>()
            )));
        };
        if n == 1 {
            return Ok(y.clone());
        }
        let parts: Vec<&B::Tensor> = std::iter::repeat_n(y, n).collect();
        Ok(be.cat(&parts, 0)?)
    }
}

impl<B: FusedOps> Denoiser<B> for WanI2v<'_, B> {
    type Stage = Geometry<B>;
    type Step = Embedded<B>;
    /// The cross-attention context `[batch, 257 + text_len, dim]` (CLIP rows, then text).
    type Cond = B::Tensor;

    fn latent_channels(&self) -> usize {
        self.model.cfg.out_dim
    }
    fn patch(&self) -> [usize; 3] {
        self.model.cfg.patch_size
    }
    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }
    fn grid(&self, f: usize, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        self.model.grid(f, h, w)
    }
    fn stage(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<Geometry<B>> {
        self.model.geometry(be, grid, order)
    }
    fn stage_shard(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
        tokens: std::ops::Range<usize>,
    ) -> Result<Geometry<B>> {
        self.model.geometry_shard(be, grid, order, Some(tokens))
    }
    fn stage_tokens(&self, stage: &Geometry<B>) -> usize {
        stage.tokens()
    }
    fn condition(&self, be: &B, c: &Conditioning<B>) -> Result<B::Tensor> {
        match c {
            Conditioning::Image { states, image } => {
                self.model.embed_context(be, states, Some(image))
            }
            _ => Err(ModelError::Invalid(
                "Wan2.1 i2v takes image conditioning (text states, CLIP states, latent)".into(),
            )),
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
        let y = self.y_for(be, x.shape()[0], x)?;
        let xin = be.cat(&[x, &y], 1)?;
        self.model.embed(be, &xin, t, stage)
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
        self.model.blocks(be, step, cond, stage, policy, actx)
    }
    fn head(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Embedded<B>,
        stage: &Geometry<B>,
    ) -> Result<B::Tensor> {
        self.model.head(be, hidden, step, stage)
    }
    fn head_tokens(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Embedded<B>,
        _stage: &Geometry<B>,
    ) -> Result<B::Tensor> {
        self.model.head_tokens(be, hidden, step)
    }
    fn unpatchify(&self, be: &B, tokens: &B::Tensor, stage: &Geometry<B>) -> Result<B::Tensor> {
        self.model.unpatchify(be, tokens, stage)
    }
    fn skip_signal(&self, be: &B, t: f64) -> Result<B::Tensor> {
        Ok(self.model.time_embed(be, t)?.1)
    }
    fn teacache_coefficients(&self) -> Option<Vec<f64>> {
        // TeaCache4Wan2.1's I2V polynomials (480p/720p) are not carried yet: the T2V one
        self.model.teacache_coefficients()
    }
}
