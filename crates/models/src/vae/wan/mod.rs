//! The Wan2.1 VAE (diffusers' `AutoencoderKLWan`, the original repo's `WanVAE_`): a causal 3D
//! conv autoencoder, 8x in space and 4x in time (`1 + 4k` frames ↔ `1 + k` latent frames).
//! Decoding runs one latent frame at a time through the causal feature cache (first frame →
//! one video frame, each next → four), encoding chunks of 1, 4, 4, … frames, as the
//! reference does, so memory stays at one chunk; spatial tiling (diffusers' `enable_tiling`)
//! bounds it at any size. Written once against the [`Backend`] ops.

mod blocks;
pub mod conv;
pub mod naming;
pub mod tiling;

pub use conv::ConvPath;
pub use naming::WanVaeKeys;

use crate::nn::VarBuilder;
use crate::vae::{Frames, Vae};
use crate::{ModelError, Result, WeightSource};
use blocks::{AttnBlock, Cache, CausalConv, ChannelRms, Mode, ResBlock, Resample};
use jenga_tensor::{Act, Backend};
use serde::Deserialize;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use tiling::{blend_assemble, check_latent, map_tiles, to_host, HostVideo};

/// Wan2.1's latent statistics (`WanVAE`'s `mean`/`std`, diffusers' defaults).
pub const WAN21_LATENTS_MEAN: [f32; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];
pub const WAN21_LATENTS_STD: [f32; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];

/// `AutoencoderKLWan`'s config (`vae/config.json`), the fields Wan2.1 uses.
#[derive(Clone, Debug, Deserialize)]
pub struct WanVaeConfig {
    #[serde(default = "d_base")]
    pub base_dim: usize,
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "d_z")]
    pub z_dim: usize,
    #[serde(default = "d_mult")]
    pub dim_mult: Vec<usize>,
    #[serde(default = "d_nrb")]
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    #[serde(default = "d_tdown")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default = "d_mean")]
    pub latents_mean: Vec<f32>,
    #[serde(default = "d_std")]
    pub latents_std: Vec<f32>,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default)]
    pub patch_size: Option<usize>,
    #[serde(default = "d_rgb")]
    pub in_channels: usize,
    #[serde(default = "d_rgb")]
    pub out_channels: usize,
}

fn d_base() -> usize {
    96
}
fn d_z() -> usize {
    16
}
fn d_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn d_nrb() -> usize {
    2
}
fn d_tdown() -> Vec<bool> {
    vec![false, true, true]
}
fn d_mean() -> Vec<f32> {
    WAN21_LATENTS_MEAN.to_vec()
}
fn d_std() -> Vec<f32> {
    WAN21_LATENTS_STD.to_vec()
}
fn d_rgb() -> usize {
    3
}

impl Default for WanVaeConfig {
    /// Wan2.1's VAE (the one `Wan2.1_VAE.pth` holds).
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl WanVaeConfig {
    /// A diffusers `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: WanVaeConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            detail: format!("not an AutoencoderKLWan config: {e}"),
        })?;
        cfg.check().map_err(|detail| ModelError::Config {
            path: path.to_path_buf(),
            detail,
        })?;
        Ok(cfg)
    }

    /// Wan2.1's VAE with the widths the weights hold (`base_dim` from the encoder's first
    /// convolution, `z_dim` from the post-quant convolution), for checkpoints without a config
    /// (`Wan2.1_VAE.pth`, ComfyUI files: [`WanVaeConfig::default`] for the real weights).
    pub fn from_shapes(src: &dyn WeightSource, file: &Path) -> Result<Self> {
        let dim0 = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| src.info(n))
                .and_then(|i| i.shape.first().copied())
                .ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "{}: neither `{}` nor `{}` found: not a Wan2.1 VAE",
                        file.display(),
                        names[0],
                        names[1]
                    ))
                })
        };
        let cfg = WanVaeConfig {
            base_dim: dim0(["encoder.conv1.weight", "encoder.conv_in.weight"])?,
            z_dim: dim0(["conv2.weight", "post_quant_conv.weight"])?,
            ..WanVaeConfig::default()
        };
        cfg.check()
            .map_err(|d| ModelError::Invalid(format!("{}: {d}", file.display())))?;
        Ok(cfg)
    }

    /// What this implementation takes (Wan2.1's VAE family), else why not.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.is_residual || self.patch_size.is_some() {
            return Err("the Wan2.2 VAE (is_residual / patch_size) is not supported".into());
        }
        if !self.attn_scales.is_empty() {
            return Err("attn_scales other than [] are not supported".into());
        }
        if self.dim_mult.is_empty() || self.temperal_downsample.len() + 1 != self.dim_mult.len() {
            return Err(format!(
                "temperal_downsample has {} entries for {} levels (expected one fewer)",
                self.temperal_downsample.len(),
                self.dim_mult.len()
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return Err(format!(
                "latents_mean/latents_std have {}/{} entries for z_dim {}",
                self.latents_mean.len(),
                self.latents_std.len(),
                self.z_dim
            ));
        }
        if self.base_dim == 0 || self.z_dim == 0 {
            return Err("base_dim and z_dim must be positive".into());
        }
        Ok(())
    }

    /// Time compression (4 for Wan2.1: two temporal downsamplings).
    pub fn time_factor(&self) -> usize {
        1 << self.temperal_downsample.iter().filter(|&&t| t).count()
    }

    /// Space compression (8: three downsamplings).
    pub fn space_factor(&self) -> usize {
        1 << (self.dim_mult.len() - 1)
    }
}

/// diffusers' tiling parameters, in pixels (defaults: tiles of 256, 192 apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub min_h: usize,
    pub min_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling {
            min_h: 256,
            min_w: 256,
            stride_h: 192,
            stride_w: 192,
        }
    }
}

enum DownLayer<B: Backend> {
    Res(ResBlock<B>),
    Resample(Resample<B>),
}

struct Mid<B: Backend> {
    res0: ResBlock<B>,
    attn: AttnBlock<B>,
    res1: ResBlock<B>,
}

impl<B: Backend> Mid<B> {
    fn new(vb: &VarBuilder<B>, p: ConvPath, c: usize) -> Result<Self> {
        Ok(Mid {
            res0: ResBlock::new(&vb.pp(0), p, c, c)?,
            attn: AttnBlock::new(&vb.pp(1), c)?,
            res1: ResBlock::new(&vb.pp(2), p, c, c)?,
        })
    }
    fn fwd(&self, be: &B, x: &B::Tensor, cache: &mut Cache<B::Tensor>) -> Result<B::Tensor> {
        let x = self.res0.fwd(be, x, cache)?;
        let x = self.attn.fwd(be, &x)?;
        self.res1.fwd(be, &x, cache)
    }
}

/// RMS norm, SiLU, conv (the encoder's and decoder's `head`).
struct Head<B: Backend> {
    norm: ChannelRms<B>,
    conv: CausalConv<B>,
}

impl<B: Backend> Head<B> {
    fn new(vb: &VarBuilder<B>, p: ConvPath, inp: usize, out: usize) -> Result<Self> {
        Ok(Head {
            norm: ChannelRms::new(&vb.pp(0), inp, false)?,
            conv: CausalConv::k3(&vb.pp(2), p, inp, out)?,
        })
    }
    fn fwd(&self, be: &B, x: &B::Tensor, cache: &mut Cache<B::Tensor>) -> Result<B::Tensor> {
        let y = be.act(&self.norm.fwd(be, x)?, Act::Silu)?;
        self.conv.fwd_cached(be, &y, cache)
    }
}

struct Encoder<B: Backend> {
    conv_in: CausalConv<B>,
    down: Vec<DownLayer<B>>,
    mid: Mid<B>,
    head: Head<B>,
}

impl<B: Backend> Encoder<B> {
    fn new(vb: &VarBuilder<B>, p: ConvPath, cfg: &WanVaeConfig) -> Result<Self> {
        let dims: Vec<usize> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .map(|m| m * cfg.base_dim)
            .collect();
        let conv_in = CausalConv::k3(&vb.pp("conv1"), p, cfg.in_channels, dims[0])?;
        let dv = vb.pp("downsamples");
        let mut down = Vec::new();
        let levels = cfg.dim_mult.len();
        for i in 0..levels {
            let (mut inp, out) = (dims[i], dims[i + 1]);
            for _ in 0..cfg.num_res_blocks {
                down.push(DownLayer::Res(ResBlock::new(
                    &dv.pp(down.len()),
                    p,
                    inp,
                    out,
                )?));
                inp = out;
            }
            if i + 1 != levels {
                let mode = if cfg.temperal_downsample[i] {
                    Mode::Down3d
                } else {
                    Mode::Down2d
                };
                down.push(DownLayer::Resample(Resample::new(
                    &dv.pp(down.len()),
                    p,
                    out,
                    mode,
                )?));
            }
        }
        let top = dims[levels];
        Ok(Encoder {
            conv_in,
            down,
            mid: Mid::new(&vb.pp("middle"), p, top)?,
            head: Head::new(&vb.pp("head"), p, top, 2 * cfg.z_dim)?,
        })
    }

    fn fwd(&self, be: &B, x: &B::Tensor, cache: &mut Cache<B::Tensor>) -> Result<B::Tensor> {
        let mut x = self.conv_in.fwd_cached(be, x, cache)?;
        for l in &self.down {
            x = match l {
                DownLayer::Res(r) => r.fwd(be, &x, cache)?,
                DownLayer::Resample(r) => r.fwd(be, &x, cache)?,
            };
        }
        let x = self.mid.fwd(be, &x, cache)?;
        self.head.fwd(be, &x, cache)
    }
}

struct UpLevel<B: Backend> {
    res: Vec<ResBlock<B>>,
    up: Option<Resample<B>>,
}

struct Decoder<B: Backend> {
    conv_in: CausalConv<B>,
    mid: Mid<B>,
    levels: Vec<UpLevel<B>>,
    head: Head<B>,
}

impl<B: Backend> Decoder<B> {
    fn new(vb: &VarBuilder<B>, p: ConvPath, cfg: &WanVaeConfig) -> Result<Self> {
        let base = cfg.decoder_base_dim.unwrap_or(cfg.base_dim);
        let rev: Vec<usize> = cfg.dim_mult.iter().rev().copied().collect();
        let dims: Vec<usize> = std::iter::once(rev[0])
            .chain(rev.iter().copied())
            .map(|m| m * base)
            .collect();
        let conv_in = CausalConv::k3(&vb.pp("conv1"), p, cfg.z_dim, dims[0])?;
        let mid = Mid::new(&vb.pp("middle"), p, dims[0])?;
        let uv = vb.pp("upsamples");
        let n = cfg.dim_mult.len();
        let mut flat = 0;
        let mut levels = Vec::new();
        for i in 0..n {
            // Wan2.1: each level after the first takes the previous upsampling's halved width.
            let mut inp = if i > 0 { dims[i] / 2 } else { dims[i] };
            let out = dims[i + 1];
            let mut res = Vec::new();
            for _ in 0..cfg.num_res_blocks + 1 {
                res.push(ResBlock::new(&uv.pp(flat), p, inp, out)?);
                flat += 1;
                inp = out;
            }
            let up = if i + 1 != n {
                // temperal_upsample = temperal_downsample reversed.
                let mode = if cfg.temperal_downsample[n - 2 - i] {
                    Mode::Up3d
                } else {
                    Mode::Up2d
                };
                let r = Resample::new(&uv.pp(flat), p, out, mode)?;
                flat += 1;
                Some(r)
            } else {
                None
            };
            levels.push(UpLevel { res, up });
        }
        Ok(Decoder {
            conv_in,
            mid,
            levels,
            head: Head::new(&vb.pp("head"), p, dims[n], cfg.out_channels)?,
        })
    }

    fn fwd(&self, be: &B, x: &B::Tensor, cache: &mut Cache<B::Tensor>) -> Result<B::Tensor> {
        let x = self.conv_in.fwd_cached(be, x, cache)?;
        let mut x = self.mid.fwd(be, &x, cache)?;
        for l in &self.levels {
            for r in &l.res {
                x = r.fwd(be, &x, cache)?;
            }
            if let Some(u) = &l.up {
                x = u.fwd(be, &x, cache)?;
            }
        }
        self.head.fwd(be, &x, cache)
    }
}

/// The Wan VAE's weights on backend `B`: `decode_raw`/`encode_raw` are diffusers'
/// `decode`/`encode(...).latent_dist.mode()`; [`WanVaeCodec`] is the [`Vae`] (the DiT's
/// normalised latents ↔ frames in [-1, 1]).
pub struct WanVae<B: Backend> {
    pub cfg: WanVaeConfig,
    pub keys: WanVaeKeys,
    encoder: Encoder<B>,
    decoder: Decoder<B>,
    quant: CausalConv<B>,
    post_quant: CausalConv<B>,
    /// Spatial tiling (off by default, as in diffusers and `WanPipeline`).
    pub tiling: Option<Tiling>,
}

impl<B: Backend> WanVae<B> {
    /// Weights from `src` in either naming (detected from the keys), convolutions on the
    /// backend's default path ([`ConvPath::auto`]).
    pub fn load(be: &B, src: &dyn WeightSource, cfg: WanVaeConfig) -> Result<Self> {
        Self::load_with(be, src, cfg, ConvPath::auto(be))
    }

    /// [`WanVae::load`] with the convolutions on `path`.
    pub fn load_with(
        be: &B,
        src: &dyn WeightSource,
        cfg: WanVaeConfig,
        p: ConvPath,
    ) -> Result<Self> {
        cfg.check().map_err(ModelError::Invalid)?;
        let keys = WanVaeKeys::detect(src, cfg.num_res_blocks);
        let vb = VarBuilder::with_keys(be, src, &keys);
        let z = cfg.z_dim;
        let encoder = Encoder::new(&vb.pp("encoder"), p, &cfg)?;
        let decoder = Decoder::new(&vb.pp("decoder"), p, &cfg)?;
        let quant = CausalConv::k1(&vb.pp("conv1"), p, 2 * z, 2 * z)?;
        let post_quant = CausalConv::k1(&vb.pp("conv2"), p, z, z)?;
        Ok(WanVae {
            cfg,
            keys,
            encoder,
            decoder,
            quant,
            post_quant,
            tiling: None,
        })
    }

    /// Un-normalised latent `[z, F, H, W]` (host) → frames `[3, 1 + 4(F−1), 8H, 8W]`,
    /// clamped to [-1, 1]; tiled when [`WanVae::tiling`] is set and the latent exceeds a tile.
    pub fn decode_raw(&self, be: &B, z: &[f32], shape: [usize; 4]) -> Result<HostVideo> {
        check_latent(z.len(), shape, self.cfg.z_dim, "Wan")?;
        let z = HostVideo {
            data: z.to_vec(),
            shape,
        };
        let s = self.cfg.space_factor();
        let mut out = match self.tiling {
            Some(t) if shape[3] > t.min_w / s || shape[2] > t.min_h / s => {
                self.tiled(be, &z, t, s, true)?
            }
            _ => self.decode_tile(be, &z)?,
        };
        for v in &mut out.data {
            *v = v.clamp(-1.0, 1.0);
        }
        Ok(out)
    }

    /// One (tile of a) latent through the decoder, a latent frame at a time.
    fn decode_tile(&self, be: &B, z: &HostVideo) -> Result<HostVideo> {
        let [c, f, h, w] = z.shape;
        let zt = be.upload(&z.data, &[1, c, f, h, w])?;
        let mut cache = Cache::default();
        let mut parts = Vec::with_capacity(f);
        for i in 0..f {
            cache.next_chunk();
            let x = be.narrow(&zt, 2, i, 1)?;
            let x = self.post_quant.fwd(be, &x, None)?;
            let y = self.decoder.fwd(be, &x, &mut cache)?;
            parts.push(to_host(be, &y)?);
        }
        Ok(HostVideo::cat_frames(&parts))
    }

    /// Frames `[3, 1 + 4k, H, W]` (host, in [-1, 1]) → the posterior mean `[z, 1 + k, H/8,
    /// W/8]`, un-normalised; tiled when [`WanVae::tiling`] is set and the frames exceed a tile.
    pub fn encode_raw(&self, be: &B, x: &[f32], shape: [usize; 4]) -> Result<HostVideo> {
        let [c, f, h, w] = shape;
        let tf = self.cfg.time_factor();
        if c != self.cfg.in_channels || x.len() != c * f * h * w || h == 0 || w == 0 {
            return Err(ModelError::Invalid(format!(
                "frames of {} values for shape {shape:?} (the Wan VAE takes {} channels)",
                x.len(),
                self.cfg.in_channels
            )));
        }
        if f % tf != 1 {
            return Err(ModelError::Invalid(format!(
                "{f} frames: the Wan VAE encodes 1 + {tf}k frames"
            )));
        }
        let v = HostVideo {
            data: x.to_vec(),
            shape,
        };
        let moments = match self.tiling {
            Some(t) if w > t.min_w || h > t.min_h => {
                self.tiled(be, &v, t, self.cfg.space_factor(), false)?
            }
            _ => self.encode_tile(be, &v)?,
        };
        Ok(moments.crop_channels(self.cfg.z_dim))
    }

    /// One (tile of a) video through the encoder and the quant conv: chunks of 1, 4, 4, …
    /// frames → `[2z, 1 + k, h, w]` (mean, then log-variance).
    fn encode_tile(&self, be: &B, v: &HostVideo) -> Result<HostVideo> {
        let [c, f, h, w] = v.shape;
        let tf = self.cfg.time_factor();
        let xt = be.upload(&v.data, &[1, c, f, h, w])?;
        let mut cache = Cache::default();
        let mut parts = Vec::new();
        for k in 0..1 + (f - 1) / tf {
            cache.next_chunk();
            let (start, len) = if k == 0 {
                (0, 1)
            } else {
                (1 + tf * (k - 1), tf)
            };
            let x = be.narrow(&xt, 2, start, len)?;
            let y = self.encoder.fwd(be, &x, &mut cache)?;
            let y = self.quant.fwd(be, &y, None)?;
            parts.push(to_host(be, &y)?);
        }
        Ok(HostVideo::cat_frames(&parts))
    }

    /// diffusers' `tiled_decode` (`decode`: input a latent) or `tiled_encode` (a video).
    fn tiled(&self, be: &B, x: &HostVideo, t: Tiling, s: usize, decode: bool) -> Result<HostVideo> {
        let [_, _, h, w] = x.shape;
        // Tile geometry in the input's units; blending and keeping in the output's.
        let (in_div, out_div) = if decode { (s, 1) } else { (1, s) };
        let (min_h, min_w) = (t.min_h / in_div, t.min_w / in_div);
        let (st_h, st_w) = (t.stride_h / in_div, t.stride_w / in_div);
        if st_h == 0 || st_w == 0 || min_h == 0 || min_w == 0 {
            return Err(ModelError::Invalid(format!(
                "tiling {t:?} is smaller than one latent pixel ({s} pixels)"
            )));
        }
        let mut rows = map_tiles(x, (min_h, min_w), (st_h, st_w), |tile| {
            if decode {
                self.decode_tile(be, tile)
            } else {
                self.encode_tile(be, tile)
            }
        })?;
        let (blend, keep, out) = if decode {
            (
                (t.min_h - t.stride_h, t.min_w - t.stride_w),
                (t.stride_h, t.stride_w),
                (h * s, w * s),
            )
        } else {
            (
                (
                    min_h / out_div - st_h / out_div,
                    min_w / out_div - st_w / out_div,
                ),
                (st_h / out_div, st_w / out_div),
                (h / out_div, w / out_div),
            )
        };
        Ok(blend_assemble(&mut rows, blend, keep, out))
    }
}

impl HostVideo {
    /// The first `n` channels.
    fn crop_channels(mut self, n: usize) -> HostVideo {
        let [_, f, h, w] = self.shape;
        self.data.truncate(n * f * h * w);
        self.shape[0] = n;
        self
    }
}

/// A [`WanVae`] with its backend (any handle: `Arc<B>`, `&B`): the [`Vae`] the pipeline
/// decodes through.
pub struct WanVaeCodec<B: Backend, H: Deref<Target = B> + Send + Sync = Arc<B>> {
    pub be: H,
    pub vae: WanVae<B>,
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> Vae for WanVaeCodec<B, H> {
    /// The DiT's latent → frames: de-normalised as `WanPipeline` does (`z·std + mean`, from
    /// the config's `latents_mean`/`latents_std`), then decoded.
    fn decode(&self, latent: &[f32], shape: [usize; 4]) -> Result<Frames> {
        let (be, vae) = (&*self.be, &self.vae);
        check_latent(latent.len(), shape, vae.cfg.z_dim, "Wan")?;
        let plane: usize = shape[1..].iter().product();
        let mut z = latent.to_vec();
        for (c, ch) in z.chunks_mut(plane).enumerate() {
            let (m, s) = (vae.cfg.latents_mean[c], vae.cfg.latents_std[c]);
            for v in ch {
                *v = *v * s + m;
            }
        }
        let v = vae.decode_raw(be, &z, shape)?;
        Ok(Frames {
            data: v.data,
            shape: v.shape,
        })
    }

    /// Frames → the normalised posterior mean (`(mean − latents_mean) / latents_std`, as Wan's
    /// image-to-video conditions on it).
    fn encode(&self, frames: &Frames) -> Option<Result<(Vec<f32>, [usize; 4])>> {
        let vae = &self.vae;
        Some(
            vae.encode_raw(&self.be, &frames.data, frames.shape)
                .map(|mut v| {
                    let plane: usize = v.shape[1..].iter().product();
                    for (c, ch) in v.data.chunks_mut(plane).enumerate() {
                        let (m, s) = (vae.cfg.latents_mean[c], vae.cfg.latents_std[c]);
                        for x in ch {
                            *x = (*x - m) / s;
                        }
                    }
                    (v.data, v.shape)
                }),
        )
    }

    fn name(&self) -> &'static str {
        "Wan2.1 VAE (AutoencoderKLWan)"
    }
}
