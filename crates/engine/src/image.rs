//! Image-to-video conditioning (Wan2.1 I2V), as `WanImageToVideoPipeline` and Wan's
//! `image2video.py` build it: the image read from `--image`, its CLIP ViT-H penultimate states
//! (the cross-attention's 257 image rows), and the conditioning latent — the image resized to
//! the video size, followed by zero frames, VAE-encoded, with the first-frame mask in front.

use anyhow::{bail, Context, Result};
use jenga_models::image::preprocess::{clip_pixels, vae_pixels};
use jenga_models::image::{ClipVision, ClipVisionConfig, Preprocess, Rgb8};
use jenga_models::layout::Component;
use jenga_models::vae::WanVaeCodec;
use jenga_models::wan::i2v_condition;
use jenga_models::{Frames, Vae, WeightSource};
use jenga_tensor::Backend;
use std::path::Path;

/// `--image FILE` → RGB, 8 bits. One line naming the file and what is wrong with it.
pub fn read_image(path: &Path) -> Result<Rgb8> {
    let flag = || format!("--image {}", path.display());
    let bytes = std::fs::read(path).with_context(flag)?;
    let format = image::guess_format(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: not a PNG, JPEG or WebP image (unrecognised file signature)",
            flag()
        )
    })?;
    if !matches!(
        format,
        image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP
    ) {
        bail!(
            "{}: a {format:?} image; supported are PNG, JPEG and WebP",
            flag()
        );
    }
    let img = image::load_from_memory_with_format(&bytes, format)
        .map_err(|e| anyhow::anyhow!("{}: cannot decode the {format:?} image: {e}", flag()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w < 16 || h < 16 {
        bail!("{}: {w}x{h} px is too small (at least 16x16)", flag());
    }
    Ok(Rgb8 {
        width: w as usize,
        height: h as usize,
        data: img.into_raw(),
    })
}

/// What an image-to-video run is conditioned on besides the text (host).
pub struct ImageCondition {
    /// The CLIP penultimate states `[tokens, hidden]`.
    pub clip: Vec<f32>,
    /// The conditioning latent `[20, T, h, w]` of each latent size the run samples at.
    pub latents: Vec<(Vec<f32>, [usize; 4])>,
}

/// The image encoder of an image-to-video checkpoint, found and checked.
pub struct ImageEncoder {
    pub cfg: ClipVisionConfig,
    pub preprocess: Preprocess,
}

impl ImageEncoder {
    /// The config from the component's `config.json` (diffusers) or its tensor shapes.
    pub fn open(c: &Component, preprocess: Preprocess) -> Result<ImageEncoder> {
        let cfg = match &c.config {
            Some(p) => ClipVisionConfig::from_hf_file(p)?,
            None => ClipVisionConfig::from_shapes(c.weights.as_ref(), &c.path)?,
        };
        Ok(ImageEncoder { cfg, preprocess })
    }

    /// The penultimate CLIP states `[tokens, hidden]` (host) of `img`; the tower is loaded
    /// for the call and freed after it.
    pub fn states<B: Backend>(
        &self,
        be: &B,
        weights: &dyn WeightSource,
        img: &Rgb8,
    ) -> Result<Vec<f32>> {
        let clip = ClipVision::load(be, &self.cfg, weights)?;
        let px = clip_pixels(img, self.cfg.image, self.preprocess);
        Ok(be.download(&clip.penultimate(be, &px)?)?)
    }
}

/// The conditioning latent `[20, T, h, w]` (host) for a video of `frames` × `height` ×
/// `width` pixels: the image resized to the video size, then `frames − 1` zero frames,
/// through the VAE's encoder (normalised mean), the mask channels in front.
/// `vae` is loaded once by the caller for every stage size; `tiled` sets its tiling.
pub fn condition_latent<B: Backend>(
    vae: &mut WanVaeCodec<B, &B>,
    tiled: bool,
    img: &Rgb8,
    preprocess: Preprocess,
    frames: usize,
    (height, width): (usize, usize),
) -> Result<(Vec<f32>, [usize; 4])> {
    let first = vae_pixels(img, height, width, preprocess);
    let plane = height * width;
    let mut data = vec![0f32; 3 * frames * plane];
    for c in 0..3 {
        data[c * frames * plane..c * frames * plane + plane]
            .copy_from_slice(&first[c * plane..(c + 1) * plane]);
    }
    vae.vae.tiling = tiled.then(jenga_models::vae::wan::Tiling::default);
    let (z, shape) = vae
        .encode(&Frames {
            data,
            shape: [3, frames, height, width],
        })
        .context("the VAE has no encoder")??;
    let y = i2v_condition(&z, shape)?;
    Ok((y, [4 + shape[0], shape[1], shape[2], shape[3]]))
}
