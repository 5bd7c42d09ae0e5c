//! Fused extensions: ops a backend may run in one pass, each with a default composed from the
//! [`Backend`] primitives (bit-for-bit what a backend without a fused kernel computes). Models
//! call these where the Wan DiT has the pattern; a backend overrides what it has kernels for.

use crate::{Backend, Result, TensorMeta};

pub trait FusedOps: Backend {
    /// [`Backend::add_gated`] then [`Backend::layer_norm`] of its result: `(x + gate·y,
    /// LN(x + gate·y)·w + b)`. A backend may fuse both into one pass (the sum is read back
    /// once instead of twice).
    #[allow(clippy::too_many_arguments)]
    fn add_gated_layer_norm(
        &self,
        x: &Self::Tensor,
        y: &Self::Tensor,
        gate: Option<&Self::Tensor>,
        w: Option<&Self::Tensor>,
        b: Option<&Self::Tensor>,
        eps: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let s = self.add_gated(x, y, gate)?;
        let n = self.layer_norm(&s, w, b, eps)?;
        Ok((s, n))
    }

    /// [`Backend::add_gated`] then [`Backend::norm_modulate`] of its result: `(x + gate·y,
    /// LN(x + gate·y)·(1 + scale) + shift)`. A backend may fuse both into one pass.
    #[allow(clippy::too_many_arguments)]
    fn add_gated_norm_modulate(
        &self,
        x: &Self::Tensor,
        y: &Self::Tensor,
        gate: Option<&Self::Tensor>,
        shift: &Self::Tensor,
        scale: &Self::Tensor,
        eps: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let s = self.add_gated(x, y, gate)?;
        let n = self.norm_modulate(&s, shift, scale, eps)?;
        Ok((s, n))
    }

    /// [`Backend::rope`] and the block means of its output
    /// ([`Backend::block_mean_pool`] with `block`), for attention policies that score pooled
    /// q/k (Jenga): a backend may fuse both into one pass over x. `None` for the means: not
    /// computed here (the policy pools itself).
    fn rope_pooled(
        &self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        block: usize,
    ) -> Result<(Self::Tensor, Option<Self::Tensor>)> {
        let y = self.rope(x, cos, sin)?;
        let pooled = self.block_mean_pool(&y, block)?;
        Ok((y, Some(pooled)))
    }

    /// The q/k path of a Wan self-attention in one op: x `[B, L, H, Dh]` (a projection's
    /// `[B, L, H·Dh]` output viewed per head), [`Backend::rms_norm`] over each token's whole
    /// `H·Dh` vector with weight w `[H·Dh]`, then [`Backend::rope`] — or, with `pool`,
    /// [`FusedOps::rope_pooled`] with that block, whose means it returns (`None` without
    /// `pool`, or when the backend leaves pooling to the policy). A backend may fuse it all
    /// into one pass over x.
    fn rms_norm_rope(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        pool: Option<usize>,
    ) -> Result<(Self::Tensor, Option<Self::Tensor>)> {
        rms_norm_rope_composed(self, x, w, eps, cos, sin, pool)
    }
}

impl FusedOps for crate::CpuBackend {}

/// [`FusedOps::rms_norm_rope`] from the basic ops: the default, and what a fusing backend runs
/// for shapes its kernel does not take.
pub fn rms_norm_rope_composed<B: FusedOps + ?Sized>(
    be: &B,
    x: &B::Tensor,
    w: &B::Tensor,
    eps: f32,
    cos: &B::Tensor,
    sin: &B::Tensor,
    pool: Option<usize>,
) -> Result<(B::Tensor, Option<B::Tensor>)> {
    let s = x.shape().to_vec();
    if s.len() != 4 {
        return Err(crate::Error::shape(
            "rms_norm_rope",
            format!("x {s:?} (expected [B, L, H, Dh])"),
        ));
    }
    let flat = be.reshape(x, &[s[0], s[1], s[2] * s[3]])?;
    let n = be.reshape(&be.rms_norm(&flat, w, eps)?, &s)?;
    match pool {
        Some(block) => be.rope_pooled(&n, cos, sin, block),
        None => Ok((be.rope(&n, cos, sin)?, None)),
    }
}
