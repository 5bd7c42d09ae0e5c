//! The HunyuanVideo VAE decoder (diffusers' `AutoencoderKLHunyuanVideo`, the official repo's
//! `AutoencoderKLCausal3D`): a causal 3D conv decoder, 8x in space and 4x in time (`1 + k`
//! latent frames → `1 + 4k` frames), with replicate-padded causal convs, GroupNorm + SiLU,
//! one frame-causal attention over the whole clip in the mid block, and up blocks doubling
//! space (and time, after the first frame). Written once against the [`Backend`] ops.
//!
//! Scaling: [`HunyuanVae::decode_raw`] takes the latent as diffusers' `vae.decode` does
//! (already divided by `scaling_factor`, 0.476986); [`HunyuanVaeCodec`] (the [`Vae`]) takes the
//! DiT's latent and divides it, as `HunyuanVideoPipeline` does before decoding.
//!
//! Long and large clips run as diffusers' `_temporal_tiled_decode` (on by default: tiles of
//! `1 + 16/4` latent frames, 3 apart, blended over 4 frames) and `tiled_decode` (with
//! [`HunyuanVae::tiling`]: tiles of 256 pixels, 192 apart, blended over 64), so the output is
//! diffusers' `decode` with the same settings, and memory is bounded by one tile.
//!
//! Weight names: the official `pytorch_model.pt` (a `{"state_dict": …}` archive) holds the
//! same keys as diffusers' `diffusion_pytorch_model.safetensors` (diffusers' converter
//! `convert_hunyuan_video_to_diffusers.py` renames nothing: `VAE_KEYS_RENAME_DICT = {}`); the
//! official loader also accepts them under a `vae.` prefix, which [`HunyuanVaeKeys`] detects.

mod blocks;

use crate::nn::{KeyMap, VarBuilder};
use crate::vae::wan::conv::ConvPath;
use crate::vae::wan::tiling::{blend_assemble, check_latent, map_tiles, to_host, HostVideo};
use crate::vae::wan::Tiling;
use crate::vae::{Frames, Vae};
use crate::{ModelError, Result, WeightSource};
use blocks::{CausalConv, GroupNorm, MidAttention, ResBlock, Upsample};
use jenga_tensor::Backend;
use serde::Deserialize;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// diffusers' `AutoencoderKLHunyuanVideo.scaling_factor`.
pub const HUNYUAN_VAE_SCALING: f32 = 0.476986;

/// `AutoencoderKLHunyuanVideo`'s config (`vae/config.json`; the official `config.json` of
/// `AutoencoderKLCausal3D` too: `time_compression_ratio` is read as the temporal ratio). The
/// defaults are the real HunyuanVideo VAE's.
#[derive(Clone, Debug, Deserialize)]
pub struct HunyuanVaeConfig {
    #[serde(default = "d_rgb")]
    pub out_channels: usize,
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    #[serde(default = "d_blocks")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f32,
    #[serde(default = "d_space")]
    pub spatial_compression_ratio: usize,
    #[serde(default = "d_time", alias = "time_compression_ratio")]
    pub temporal_compression_ratio: usize,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_act")]
    pub act_fn: String,
}

fn d_rgb() -> usize {
    3
}
fn d_latent() -> usize {
    16
}
fn d_blocks() -> Vec<usize> {
    vec![128, 256, 512, 512]
}
fn d_layers() -> usize {
    2
}
fn d_groups() -> usize {
    32
}
fn d_scaling() -> f32 {
    HUNYUAN_VAE_SCALING
}
fn d_space() -> usize {
    8
}
fn d_time() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_act() -> String {
    "silu".into()
}

impl Default for HunyuanVaeConfig {
    /// The HunyuanVideo VAE (`hunyuan-video-t2v-720p/vae`).
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl HunyuanVaeConfig {
    /// A `vae/config.json` (diffusers' or the official one).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: HunyuanVaeConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Config {
                path: path.to_path_buf(),
                detail: format!("not an AutoencoderKLHunyuanVideo config: {e}"),
            })?;
        cfg.check().map_err(|detail| ModelError::Config {
            path: path.to_path_buf(),
            detail,
        })?;
        Ok(cfg)
    }

    /// What this implementation takes, else why not.
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.block_out_channels.contains(&0) {
            return Err("block_out_channels must be non-empty and positive".into());
        }
        if self.temporal_compression_ratio != 4 {
            return Err(format!(
                "temporal_compression_ratio {} (the decoder supports 4, as diffusers')",
                self.temporal_compression_ratio
            ));
        }
        let s = self.spatial_compression_ratio;
        if !s.is_power_of_two() || s.trailing_zeros() as usize > n - 1 {
            return Err(format!(
                "spatial_compression_ratio {s} with {n} blocks (a power of two up to 2^{})",
                n - 1
            ));
        }
        if n < 3 {
            return Err(format!(
                "{n} up blocks: a 4x time upsampling needs 3 or more"
            ));
        }
        if self.norm_num_groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "norm_num_groups {} does not divide block_out_channels {:?}",
                self.norm_num_groups, self.block_out_channels
            ));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| {
            !matches!(
                t.as_str(),
                "HunyuanVideoUpBlock3D" | "UpDecoderBlockCausal3D"
            )
        }) {
            return Err(format!("up block type `{t}` is not supported"));
        }
        if !self.up_block_types.is_empty() && self.up_block_types.len() != n {
            return Err(format!(
                "{} up_block_types for {n} block_out_channels",
                self.up_block_types.len()
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(format!("act_fn `{}` (only silu)", self.act_fn));
        }
        if self.latent_channels == 0 || self.scaling_factor.is_nan() || self.scaling_factor <= 0.0 {
            return Err("latent_channels and scaling_factor must be positive".into());
        }
        Ok(())
    }

    /// Whether up block `i` doubles (space, time) — diffusers' `HunyuanVideoDecoder3D` rule
    /// for a temporal ratio of 4.
    fn upsampling(&self, i: usize) -> (bool, bool) {
        let n = self.block_out_channels.len();
        let space = i < self.spatial_compression_ratio.trailing_zeros() as usize;
        let tl = self.temporal_compression_ratio.trailing_zeros() as usize;
        let time = i + 1 + tl >= n && i + 1 != n;
        (space, time)
    }
}

/// Framewise decoding (diffusers' `use_framewise_decoding`, on by default), in video frames:
/// latents of more than `min_frames / 4` frames decode in tiles of `1 + min_frames / 4` latent
/// frames, `stride_frames / 4` apart, blended over `min_frames − stride_frames` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTiling {
    pub min_frames: usize,
    pub stride_frames: usize,
}

impl Default for FrameTiling {
    fn default() -> Self {
        FrameTiling {
            min_frames: 16,
            stride_frames: 12,
        }
    }
}

/// How a HunyuanVideo VAE checkpoint names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HunyuanVaeKeys {
    /// diffusers' names, which are also the official `pytorch_model.pt`'s.
    Diffusers,
    /// The same under `vae.` (a training checkpoint; the official loader strips it).
    VaePrefix,
}

impl HunyuanVaeKeys {
    pub fn detect(src: &dyn WeightSource) -> Self {
        if !src.contains("post_quant_conv.weight") && src.contains("vae.post_quant_conv.weight") {
            HunyuanVaeKeys::VaePrefix
        } else {
            HunyuanVaeKeys::Diffusers
        }
    }
}

impl KeyMap for HunyuanVaeKeys {
    fn stored_key(&self, key: &str) -> String {
        match self {
            HunyuanVaeKeys::Diffusers => key.to_string(),
            HunyuanVaeKeys::VaePrefix => format!("vae.{key}"),
        }
    }
    fn naming(&self) -> &'static str {
        match self {
            HunyuanVaeKeys::Diffusers => "diffusers",
            HunyuanVaeKeys::VaePrefix => "original (vae.)",
        }
    }
}

struct UpBlock<B: Backend> {
    resnets: Vec<ResBlock<B>>,
    up: Option<Upsample<B>>,
}

/// `HunyuanVideoDecoder3D`.
struct Decoder<B: Backend> {
    conv_in: CausalConv<B>,
    mid_res0: ResBlock<B>,
    mid_attn: Option<MidAttention<B>>,
    mid_res1: ResBlock<B>,
    up: Vec<UpBlock<B>>,
    norm_out: GroupNorm<B>,
    conv_out: CausalConv<B>,
}

impl<B: Backend> Decoder<B> {
    fn new(vb: &VarBuilder<B>, p: ConvPath, cfg: &HunyuanVaeConfig) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let top = rev[0];
        let mid = vb.pp("mid_block");
        let mut up = Vec::with_capacity(rev.len());
        let mut prev = top;
        for (i, &out) in rev.iter().enumerate() {
            let ub = vb.pp("up_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let inp = if j == 0 { prev } else { out };
                    ResBlock::new(&ub.pp("resnets").pp(j), p, inp, out, g)
                })
                .collect::<Result<Vec<_>>>()?;
            let (space, time) = cfg.upsampling(i);
            let up_layer = if space || time {
                Some(Upsample::new(
                    &ub.pp("upsamplers").pp(0),
                    p,
                    out,
                    space,
                    time,
                )?)
            } else {
                None
            };
            up.push(UpBlock {
                resnets,
                up: up_layer,
            });
            prev = out;
        }
        Ok(Decoder {
            conv_in: CausalConv::new(&vb.pp("conv_in"), p, cfg.latent_channels, top, 3)?,
            mid_res0: ResBlock::new(&mid.pp("resnets").pp(0), p, top, top, g)?,
            mid_attn: if cfg.mid_block_add_attention {
                Some(MidAttention::new(&mid.pp("attentions").pp(0), top, g)?)
            } else {
                None
            },
            mid_res1: ResBlock::new(&mid.pp("resnets").pp(1), p, top, top, g)?,
            up,
            norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), cfg.block_out_channels[0], g)?,
            conv_out: CausalConv::new(
                &vb.pp("conv_out"),
                p,
                cfg.block_out_channels[0],
                cfg.out_channels,
                3,
            )?,
        })
    }

    fn fwd(&self, be: &B, z: &B::Tensor) -> Result<B::Tensor> {
        let mut x = self.conv_in.fwd(be, z)?;
        x = self.mid_res0.fwd(be, &x)?;
        if let Some(a) = &self.mid_attn {
            x = a.fwd(be, &x)?;
        }
        x = self.mid_res1.fwd(be, &x)?;
        for b in &self.up {
            for r in &b.resnets {
                x = r.fwd(be, &x)?;
            }
            if let Some(u) = &b.up {
                x = u.fwd(be, &x)?;
            }
        }
        self.conv_out.fwd(be, &self.norm_out.fwd_silu(be, &x)?)
    }
}

/// The HunyuanVideo VAE's decoder weights on backend `B`.
pub struct HunyuanVae<B: Backend> {
    pub cfg: HunyuanVaeConfig,
    pub keys: HunyuanVaeKeys,
    post_quant: CausalConv<B>,
    decoder: Decoder<B>,
    /// Spatial tiling (diffusers' `enable_tiling`; off by default, as in diffusers).
    pub tiling: Option<Tiling>,
    /// Framewise decoding (diffusers' default: on, 16 / 12 frames); `None` decodes the clip
    /// in one pass (diffusers' `use_framewise_decoding = False`).
    pub frames: Option<FrameTiling>,
}

impl<B: Backend> HunyuanVae<B> {
    /// The decoder (`decoder.*`, `post_quant_conv.*`) from `src` in either naming (detected),
    /// convolutions on the backend's default path.
    pub fn load(be: &B, src: &dyn WeightSource, cfg: HunyuanVaeConfig) -> Result<Self> {
        Self::load_with(be, src, cfg, ConvPath::auto(be))
    }

    /// [`HunyuanVae::load`] with the convolutions on `path`.
    pub fn load_with(
        be: &B,
        src: &dyn WeightSource,
        cfg: HunyuanVaeConfig,
        p: ConvPath,
    ) -> Result<Self> {
        cfg.check().map_err(ModelError::Invalid)?;
        let keys = HunyuanVaeKeys::detect(src);
        let vb = VarBuilder::with_keys(be, src, &keys);
        let z = cfg.latent_channels;
        let post_quant = CausalConv::pointwise(&vb.pp("post_quant_conv"), p, z, z)?;
        let decoder = Decoder::new(&vb.pp("decoder"), p, &cfg)?;
        Ok(HunyuanVae {
            cfg,
            keys,
            post_quant,
            decoder,
            tiling: None,
            frames: Some(FrameTiling::default()),
        })
    }

    /// Frames a latent of `f` frames decodes to.
    pub fn frames_for(&self, f: usize) -> usize {
        1 + self.cfg.temporal_compression_ratio * f.saturating_sub(1)
    }

    /// diffusers' `vae.decode(z)` of one sample: `z` `[C, F, H, W]` (host, already divided by
    /// `scaling_factor`) → frames `[3, 1 + 4(F−1), 8H, 8W]`, not clamped. Framewise when
    /// [`HunyuanVae::frames`] is set and F exceeds a tile, spatially tiled when
    /// [`HunyuanVae::tiling`] is set and H or W exceeds a tile.
    pub fn decode_raw(&self, be: &B, z: &[f32], shape: [usize; 4]) -> Result<HostVideo> {
        check_latent(z.len(), shape, self.cfg.latent_channels, "HunyuanVideo")?;
        let z = HostVideo {
            data: z.to_vec(),
            shape,
        };
        let tf = self.cfg.temporal_compression_ratio;
        match self.frames {
            Some(ft) if shape[1] > ft.min_frames / tf => self.temporal_tiled(be, &z, ft),
            _ => self.spatial(be, &z),
        }
    }

    /// A batch `[B, C, F, H, W]` → `[B, 3, 1 + 4(F−1), 8H, 8W]` (one sample at a time, as
    /// diffusers' `use_slicing`), host data.
    pub fn decode_batch(&self, be: &B, z: &[f32], shape: [usize; 5]) -> Result<Vec<f32>> {
        let per: usize = shape[1..].iter().product();
        if shape[0] == 0 || z.len() != shape[0] * per {
            return Err(ModelError::Invalid(format!(
                "latent batch of {} values for shape {shape:?}",
                z.len()
            )));
        }
        let mut out = Vec::new();
        for s in z.chunks(per) {
            out.extend(
                self.decode_raw(be, s, [shape[1], shape[2], shape[3], shape[4]])?
                    .data,
            );
        }
        Ok(out)
    }

    /// Spatially tiled when set and needed, else one pass.
    fn spatial(&self, be: &B, z: &HostVideo) -> Result<HostVideo> {
        let s = self.cfg.spatial_compression_ratio;
        let [_, _, h, w] = z.shape;
        match self.tiling {
            Some(t) if w > t.min_w / s || h > t.min_h / s => self.tiled(be, z, t),
            _ => self.decode_tile(be, z),
        }
    }

    /// One (tile of a) latent through `post_quant_conv` and the decoder.
    fn decode_tile(&self, be: &B, z: &HostVideo) -> Result<HostVideo> {
        let [c, f, h, w] = z.shape;
        let x = be.upload(&z.data, &[1, c, f, h, w])?;
        let x = self.post_quant.fwd(be, &x)?;
        to_host(be, &self.decoder.fwd(be, &x)?)
    }

    /// diffusers' `tiled_decode`.
    fn tiled(&self, be: &B, z: &HostVideo, t: Tiling) -> Result<HostVideo> {
        let s = self.cfg.spatial_compression_ratio;
        let [_, _, h, w] = z.shape;
        let (min_h, min_w) = (t.min_h / s, t.min_w / s);
        let (st_h, st_w) = (t.stride_h / s, t.stride_w / s);
        if st_h == 0 || st_w == 0 || min_h == 0 || min_w == 0 || t.stride_h > t.min_h {
            return Err(ModelError::Invalid(format!(
                "tiling {t:?}: tiles and strides of at least one latent pixel ({s} pixels), \
                 strides no larger than the tiles"
            )));
        }
        let mut rows = map_tiles(z, (min_h, min_w), (st_h, st_w), |t| self.decode_tile(be, t))?;
        Ok(blend_assemble(
            &mut rows,
            (t.min_h - t.stride_h, t.min_w - t.stride_w),
            (t.stride_h, t.stride_w),
            (h * s, w * s),
        ))
    }

    /// diffusers' `_temporal_tiled_decode`.
    fn temporal_tiled(&self, be: &B, z: &HostVideo, ft: FrameTiling) -> Result<HostVideo> {
        let tf = self.cfg.temporal_compression_ratio;
        let f = z.shape[1];
        let (min_l, st_l) = (ft.min_frames / tf, ft.stride_frames / tf);
        if st_l == 0 || ft.stride_frames > ft.min_frames {
            return Err(ModelError::Invalid(format!(
                "frame tiling {ft:?}: a stride of at least {tf} frames, no larger than the tile"
            )));
        }
        let blend = ft.min_frames - ft.stride_frames;
        let mut row: Vec<HostVideo> = Vec::new();
        for i in (0..f).step_by(st_l) {
            let tile = frame_range(z, i, (i + min_l + 1).min(f));
            let mut dec = self.spatial(be, &tile)?;
            if i > 0 {
                dec = frame_range(&dec, 1, dec.shape[1]);
            }
            row.push(dec);
        }
        let mut kept = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let keep = if i > 0 {
                let (a, b) = row.split_at_mut(i);
                blend_t(&a[i - 1], &mut b[0], blend);
                ft.stride_frames
            } else {
                ft.stride_frames + 1
            };
            let t = &row[i];
            kept.push(frame_range(t, 0, keep.min(t.shape[1])));
        }
        let out = HostVideo::cat_frames(&kept);
        let n = self.frames_for(f).min(out.shape[1]);
        Ok(frame_range(&out, 0, n))
    }
}

/// Frames `a..b` of `v`.
fn frame_range(v: &HostVideo, a: usize, b: usize) -> HostVideo {
    let [c, f, h, w] = v.shape;
    let plane = h * w;
    let n = b - a;
    let mut data = Vec::with_capacity(c * n * plane);
    for ch in 0..c {
        data.extend_from_slice(&v.data[(ch * f + a) * plane..(ch * f + b) * plane]);
    }
    HostVideo {
        data,
        shape: [c, n, h, w],
    }
}

/// diffusers' `blend_t`: `b`'s first frames fade in from `a`'s last frames (in place).
fn blend_t(a: &HostVideo, b: &mut HostVideo, extent: usize) {
    let [c, fa, h, w] = a.shape;
    let fb = b.shape[1];
    let e = extent.min(fa).min(fb);
    let plane = h * w;
    for ch in 0..c {
        for x in 0..e {
            let t = x as f32 / e as f32;
            let pa = &a.data[(ch * fa + fa - e + x) * plane..][..plane];
            let pb = &mut b.data[(ch * fb + x) * plane..][..plane];
            for (o, &va) in pb.iter_mut().zip(pa) {
                *o = va * (1.0 - t) + *o * t;
            }
        }
    }
}

/// A [`HunyuanVae`] with its backend: the [`Vae`] the pipeline decodes through.
pub struct HunyuanVaeCodec<B: Backend, H: Deref<Target = B> + Send + Sync = Arc<B>> {
    pub be: H,
    pub vae: HunyuanVae<B>,
}

impl<B: Backend, H: Deref<Target = B> + Send + Sync> Vae for HunyuanVaeCodec<B, H> {
    /// The DiT's latent → frames: divided by `scaling_factor` (as `HunyuanVideoPipeline`),
    /// decoded, clamped to [-1, 1].
    fn decode(&self, latent: &[f32], shape: [usize; 4]) -> Result<Frames> {
        let sf = self.vae.cfg.scaling_factor;
        let z: Vec<f32> = latent.iter().map(|v| v / sf).collect();
        let mut v = self.vae.decode_raw(&self.be, &z, shape)?;
        for x in &mut v.data {
            *x = x.clamp(-1.0, 1.0);
        }
        Ok(Frames {
            data: v.data,
            shape: v.shape,
        })
    }

    fn name(&self) -> &'static str {
        "HunyuanVideo VAE (AutoencoderKLHunyuanVideo)"
    }
}
