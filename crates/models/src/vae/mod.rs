//! Latent ↔ pixel codecs behind one [`Vae`] trait: [`WanVae`] (Wan2.1's causal 3D VAE),
//! [`Identity`] for the pixel-space tiny model, [`LatentPreview`] (latent channels 0..3 at half
//! scale) for latent-space models without a VAE.

use crate::{ModelError, Result};

/// Frames `[3, F, H, W]` (RGB planes) in [-1, 1], row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    pub data: Vec<f32>,
    /// `[3, F, H, W]`.
    pub shape: [usize; 4],
}

pub mod hunyuan;
pub mod wan;

pub use wan::{WanVae, WanVaeCodec, WanVaeConfig, WanVaeKeys};

/// Latent `[C, F, H, W]` (one sample, host f32) → frames.
pub trait Vae: Send + Sync {
    fn decode(&self, latent: &[f32], shape: [usize; 4]) -> Result<Frames>;
    /// Frames → latent; `None` for codecs that cannot encode.
    fn encode(&self, _frames: &Frames) -> Option<Result<(Vec<f32>, [usize; 4])>> {
        None
    }
    /// For logs and `jenga inspect`.
    fn name(&self) -> &'static str;
}

/// Channels 0..3 × `scale` as RGB (missing channels are zeros).
fn rgb_planes(x: &[f32], [c, f, h, w]: [usize; 4], scale: f32) -> Result<Frames> {
    let plane = f * h * w;
    if x.len() != c * plane {
        return Err(ModelError::Invalid(format!(
            "latent of {} values for shape {:?}",
            x.len(),
            [c, f, h, w]
        )));
    }
    let mut data = vec![0f32; 3 * plane];
    for ch in 0..3.min(c) {
        for (o, &v) in data[ch * plane..(ch + 1) * plane]
            .iter_mut()
            .zip(&x[ch * plane..(ch + 1) * plane])
        {
            *o = v * scale;
        }
    }
    Ok(Frames {
        data,
        shape: [3, f, h, w],
    })
}

/// Pixel-space models: the "latent" is the video.
pub struct Identity;

impl Vae for Identity {
    fn decode(&self, latent: &[f32], shape: [usize; 4]) -> Result<Frames> {
        rgb_planes(latent, shape, 1.0)
    }
    fn encode(&self, frames: &Frames) -> Option<Result<(Vec<f32>, [usize; 4])>> {
        Some(Ok((frames.data.clone(), frames.shape)))
    }
    fn name(&self) -> &'static str {
        "identity (pixel space)"
    }
}

/// Latent-space models without a bundled VAE: a preview of latent channels 0..3 at half scale.
pub struct LatentPreview;

impl Vae for LatentPreview {
    fn decode(&self, latent: &[f32], shape: [usize; 4]) -> Result<Frames> {
        rgb_planes(latent, shape, 0.5)
    }
    fn name(&self) -> &'static str {
        "latent preview (channels 0..3, no VAE bundled)"
    }
}
