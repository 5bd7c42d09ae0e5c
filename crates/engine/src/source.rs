//! Where weights, config, text conditioning and the VAE come from: a checkpoint in one of the
//! layouts users have (umT5 + DiT + Wan VAE), a tiny-wan-style bundle (a directory or the
//! embedded model), or seeded random weights for a built-in config.

use crate::image::ImageEncoder;
use crate::request::{ModelFiles, ModelSource};
use anyhow::{bail, Context, Result};
use jenga_models::image::{Preprocess, Rgb8};
use jenga_models::layout::{self, Layout, LayoutKind, SingleFiles};
use jenga_models::vae::wan::Tiling;
use jenga_models::vae::{WanVae, WanVaeCodec, WanVaeConfig};
use jenga_models::{
    Frames, LatentPreview, ModelBundle, RandomWeights, TinySlots, Umt5Config, Umt5Text, Vae,
    WanConfig, WanModel, WeightSource,
};
use jenga_pipeline::SolverKind;
use jenga_tensor::{Backend, FusedOps};
use std::path::Path;

/// Where weights, config and text conditioning come from.
pub enum Source {
    /// A whole Wan pipeline: umT5, the DiT and the Wan VAE (diffusers, original, single files).
    Checkpoint(Box<Checkpoint>),
    Bundle(Box<ModelBundle>),
    Random {
        name: String,
        config: WanConfig,
        weights: RandomWeights,
    },
}

/// A checkpoint's components, found and checked (nothing loaded yet).
pub struct Checkpoint {
    pub name: String,
    pub layout: Layout,
    pub text: Umt5Config,
    pub vae: WanVaeConfig,
    /// The sampling shift of diffusers' `scheduler/scheduler_config.json` (`flow_shift`).
    pub scheduler_shift: Option<f64>,
    /// The solver that config asks for: diffusers' UniPC on its own flow grid
    /// (`UniPCMultistepScheduler` with `use_flow_sigmas`), as `WanPipeline` runs it.
    pub scheduler_solver: Option<SolverKind>,
    /// Image-to-video checkpoints: the CLIP image encoder (its weights are
    /// `layout.image_encoder`).
    pub image: Option<ImageEncoder>,
}

/// Latent area (in latent pixels) above which the VAE decodes in tiles: 480p (60×104) decodes
/// whole, as `WanPipeline` does; 720p tiles so it fits a 24 GB card.
const TILE_ABOVE: usize = 60 * 104;

/// Whether a latent of `h × w` decodes in tiles.
pub fn vae_tiled(h: usize, w: usize) -> bool {
    h * w > TILE_ABOVE
}

impl Checkpoint {
    fn open(layout: Layout, name: String) -> Result<Checkpoint> {
        let image = if layout.dit_config.is_i2v() {
            let Some(c) = &layout.image_encoder else {
                bail!(
                    "{}: an image-to-video DiT, and no image encoder: {}",
                    layout.transformer.path.display(),
                    match layout.kind {
                        LayoutKind::Diffusers => "expected an `image_encoder/` folder (CLIPVisionModel) beside `transformer/`".to_string(),
                        LayoutKind::OriginalWan => format!("expected {} beside the DiT", layout::WAN_CLIP),
                        LayoutKind::SingleFiles => "pass --clip-vision FILE (e.g. ComfyUI's clip_vision_h.safetensors)".to_string(),
                    }
                );
            };
            let how = match layout.kind {
                LayoutKind::Diffusers => Preprocess::Diffusers,
                _ => Preprocess::Wan,
            };
            let enc = ImageEncoder::open(c, how)
                .with_context(|| format!("image encoder {}", c.path.display()))?;
            let want = layout.dit_config.image_dim.unwrap_or(0);
            if enc.cfg.hidden != want {
                bail!(
                    "{}: the image encoder's width {} is not the DiT's image_dim {want}",
                    c.path.display(),
                    enc.cfg.hidden
                );
            }
            Some(enc)
        } else if layout.dit_config.model_type != "t2v" {
            bail!(
                "{}: a `{}` DiT: only Wan2.1 text-to-video (t2v) and image-to-video (i2v) checkpoints are supported",
                layout.transformer.path.display(),
                layout.dit_config.model_type
            );
        } else {
            None
        };
        let te = &layout.text_encoder;
        let text = match &te.config {
            Some(c) => Umt5Config::from_hf_file(c)?,
            None => Umt5Config::from_shapes(te.weights.as_ref(), &te.path)?,
        };
        if text.d_model != layout.dit_config.text_dim {
            bail!(
                "{}: the text encoder's width {} is not the DiT's text_dim {} ({})",
                te.path.display(),
                text.d_model,
                layout.dit_config.text_dim,
                layout.transformer.path.display()
            );
        }
        let vae = match &layout.vae.config {
            Some(c) => WanVaeConfig::from_file(c)?,
            None => WanVaeConfig::from_shapes(layout.vae.weights.as_ref(), &layout.vae.path)?,
        };
        // image-to-video: noise, the 4 mask channels and the encoded first frame
        let want_in = if image.is_some() {
            2 * vae.z_dim + 4
        } else {
            vae.z_dim
        };
        if want_in != layout.dit_config.in_dim || vae.z_dim != layout.dit_config.out_dim {
            bail!(
                "{}: the VAE's {} latent channels do not fit the DiT's in_dim {} / out_dim {}",
                layout.vae.path.display(),
                vae.z_dim,
                layout.dit_config.in_dim,
                layout.dit_config.out_dim
            );
        }
        let (scheduler_shift, scheduler_solver) = match &layout.scheduler_config {
            Some(p) => scheduler(p)?,
            None => (None, None),
        };
        Ok(Checkpoint {
            name,
            layout,
            text,
            vae,
            scheduler_shift,
            scheduler_solver,
            image,
        })
    }

    /// umT5 on `be` (loaded, run, freed: it is not resident while the DiT runs) → host states
    /// `[text_len, text_dim]` per prompt.
    fn encode<B: Backend>(&self, be: &B, prompts: &[&str], text_len: usize) -> Result<Vec<f32>> {
        let te = &self.layout.text_encoder;
        let states = Umt5Text::<B, &B>::encode_once(
            be,
            &self.text,
            te.weights.as_ref(),
            &self.layout.tokenizer,
            text_len,
            prompts,
        )
        .with_context(|| format!("text encoder {}", te.path.display()))?;
        Ok(states.into_iter().flat_map(|s| s.states).collect())
    }

    /// Image-to-video: the CLIP states `[tokens, hidden]` of `img` and the conditioning latent
    /// `[20, T, h, w]` of each latent size in `sizes` (ProRes stages), host.
    pub fn image_condition<B: Backend>(
        &self,
        be: &B,
        img: &Rgb8,
        frames: usize,
        sizes: &[(usize, usize)],
    ) -> Result<crate::image::ImageCondition> {
        let (Some(enc), Some(c)) = (&self.image, &self.layout.image_encoder) else {
            bail!("{}: not an image-to-video checkpoint", self.name);
        };
        let states = enc
            .states(be, c.weights.as_ref(), img)
            .with_context(|| format!("image encoder {}", c.path.display()))?;
        let s = self.vae.space_factor();
        let v = &self.layout.vae;
        let what = || format!("encoding --image with the VAE {}", v.path.display());
        let mut vae = WanVaeCodec {
            be,
            vae: WanVae::load(be, v.weights.as_ref(), self.vae.clone()).with_context(what)?,
        };
        let mut ys = Vec::new();
        for &(h, w) in sizes {
            ys.push(
                crate::image::condition_latent(
                    &mut vae,
                    vae_tiled(h, w),
                    img,
                    enc.preprocess,
                    frames,
                    (h * s, w * s),
                )
                .with_context(what)?,
            );
        }
        Ok(crate::image::ImageCondition {
            clip: states,
            latents: ys,
        })
    }

    /// Normalised latent `[16, F, H, W]` → frames through the Wan VAE on `be`.
    fn decode<B: Backend>(&self, be: &B, latent: &[f32], shape: [usize; 4]) -> Result<Frames> {
        let v = &self.layout.vae;
        let mut vae = WanVae::load(be, v.weights.as_ref(), self.vae.clone())
            .with_context(|| format!("loading the VAE {}", v.path.display()))?;
        if vae_tiled(shape[2], shape[3]) {
            vae.tiling = Some(Tiling::default());
        }
        Ok(WanVaeCodec { be, vae }.decode(latent, shape)?)
    }
}

/// diffusers' scheduler config: the shift (`flow_shift` of UniPC / DPM++ with flow sigmas,
/// or `shift` of FlowMatchEulerDiscrete) and, for `UniPCMultistepScheduler` with flow sigmas,
/// diffusers' grid. Other schedulers keep the official Wan solver.
fn scheduler(path: &Path) -> Result<(Option<f64>, Option<SolverKind>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let solver = (v["_class_name"] == "UniPCMultistepScheduler" && v["use_flow_sigmas"] == true)
        .then_some(SolverKind::UniPcDiffusers);
    for key in ["flow_shift", "shift"] {
        match v.get(key) {
            Some(serde_json::Value::Null) | None => {}
            Some(x) => match x.as_f64() {
                Some(s) if s.is_finite() && s > 0.0 => return Ok((Some(s), solver)),
                _ => bail!(
                    "{}: `{key}` is {x}, expected a positive number",
                    path.display()
                ),
            },
        }
    }
    Ok((None, solver))
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl Source {
    pub fn open(m: &ModelSource) -> Result<Source> {
        match m {
            ModelSource::Random(name) => {
                let config = random_config(name)?;
                Ok(Source::Random {
                    name: format!("{name} (random weights)"),
                    config,
                    weights: RandomWeights { seed: 0 },
                })
            }
            ModelSource::Dir(dir) if layout::is_pipeline_dir(dir) => {
                let l = layout::detect(dir)?;
                let name = format!("{} ({})", dir_name(dir), l.kind.name());
                Ok(Source::Checkpoint(Box::new(Checkpoint::open(l, name)?)))
            }
            ModelSource::Dir(dir) => Ok(Source::Bundle(Box::new(ModelBundle::open(dir)?))),
            ModelSource::Files(f) => {
                let ModelFiles {
                    dit,
                    text_encoder,
                    vae,
                    tokenizer,
                    clip_vision,
                } = f.clone();
                let l = layout::single_files(&SingleFiles {
                    dit,
                    text_encoder,
                    vae,
                    tokenizer,
                    clip_vision,
                })?;
                let name = format!("{} ({})", dir_name(&f.dit), LayoutKind::SingleFiles.name());
                Ok(Source::Checkpoint(Box::new(Checkpoint::open(l, name)?)))
            }
            ModelSource::Embedded => Ok(Source::Bundle(Box::new(ModelBundle::embedded()?))),
        }
    }
    pub fn config(&self) -> &WanConfig {
        match self {
            Source::Checkpoint(c) => &c.layout.dit_config,
            Source::Bundle(b) => &b.config,
            Source::Random { config, .. } => config,
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Source::Checkpoint(c) => &c.name,
            Source::Bundle(b) => &b.name,
            Source::Random { name, .. } => name,
        }
    }
    pub fn weights(&self) -> &dyn WeightSource {
        match self {
            Source::Checkpoint(c) => c.layout.transformer.weights.as_ref(),
            Source::Bundle(b) => &b.weights,
            Source::Random { weights, .. } => weights,
        }
    }
    /// Whether the video is decoded by a real VAE (sizes are then given in pixels and
    /// converted to latents: the Wan VAE's stride 4×8×8).
    pub fn has_vae(&self) -> bool {
        matches!(self, Source::Checkpoint(_))
    }
    /// Text-encoder states `[text_len, text_dim]` of each prompt, one after the other (umT5 on
    /// `be` for checkpoints, the bundle's tiny encoder, seeded random states for random
    /// models).
    pub fn encode<B: Backend>(&self, be: &B, prompts: &[&str]) -> Result<Vec<f32>> {
        let cfg = self.config();
        let mut out = Vec::with_capacity(prompts.len() * cfg.text_len * cfg.text_dim);
        match self {
            Source::Checkpoint(c) => return c.encode(be, prompts, cfg.text_len),
            Source::Bundle(b) => {
                for p in prompts {
                    out.extend(b.encode_prompt(p)?);
                }
            }
            Source::Random { .. } => {
                for p in prompts {
                    let seed = p.bytes().fold(1469598103934665603u64, |h, c| {
                        (h ^ c as u64).wrapping_mul(1099511628211)
                    });
                    out.extend(jenga_pipeline::noise(seed, cfg.text_len * cfg.text_dim));
                }
            }
        }
        Ok(out)
    }
    /// Notes on what the prompt will really do (embedded model: dropped words, words in the
    /// wrong slot of its caption template, an empty prompt).
    pub fn prompt_notes(&self, prompt: &str) -> Vec<String> {
        match self {
            Source::Bundle(b) => {
                match (&b.text, b.tiny.as_ref().and_then(TinySlots::from_config)) {
                    (Some((tok, _)), Some(slots)) => slots.prompt_notes(tok, prompt),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }
    pub fn pixel_space(&self) -> bool {
        matches!(self, Source::Bundle(b) if b.pixel_space)
    }
    /// Latent `[C, F, H, W]` → RGB frames: the Wan VAE on `be` (loaded for the call), the
    /// bundle's codec, or the latent preview for random weights.
    pub fn decode<B: Backend>(&self, be: &B, latent: &[f32], shape: [usize; 4]) -> Result<Frames> {
        Ok(match self {
            Source::Checkpoint(c) => c.decode(be, latent, shape)?,
            Source::Bundle(b) => b.vae.decode(latent, shape)?,
            Source::Random { .. } => LatentPreview.decode(latent, shape)?,
        })
    }
    /// The host-side codec of bundles and random weights, for reports that decode without a
    /// backend (None for checkpoints: their VAE runs on the device, see [`Source::decode`]).
    pub fn host_vae(&self) -> Option<&dyn Vae> {
        match self {
            Source::Checkpoint(_) => None,
            Source::Bundle(b) => Some(b.vae.as_ref()),
            Source::Random { .. } => Some(&LatentPreview),
        }
    }

    /// Host states of `encode` → the DiT's embedded context: the prompt alone, or (guidance
    /// ≠ 1) prompt and negative prompt as one batch of 2, in the sampler's order.
    pub fn embed_states<B: FusedOps>(
        &self,
        be: &B,
        model: &WanModel<B>,
        states: &[f32],
    ) -> Result<B::Tensor> {
        let cfg = self.config();
        let n = states.len() / (cfg.text_len * cfg.text_dim).max(1);
        let ctx = be.upload(states, &[n, cfg.text_len, cfg.text_dim])?;
        Ok(model.embed_text(be, &ctx)?)
    }

    /// The prompts `encode` takes for a run: the prompt, and the negative one under guidance.
    pub fn prompts<'a>(prompt: &'a str, negative: &'a str, guidance: f32) -> Vec<&'a str> {
        if guidance != 1.0 {
            vec![prompt, negative]
        } else {
            vec![prompt]
        }
    }

    /// Embedded text context for sampling ([`Source::encode`] then [`Source::embed_states`]).
    pub fn text_context<B: FusedOps>(
        &self,
        be: &B,
        model: &WanModel<B>,
        prompt: &str,
        negative: &str,
        guidance: f32,
    ) -> Result<B::Tensor> {
        let states = self.encode(be, &Self::prompts(prompt, negative, guidance))?;
        self.embed_states(be, model, &states)
    }
}

pub fn random_config(name: &str) -> Result<WanConfig> {
    Ok(match name {
        "wan-1.3b" | "wan2.1-1.3b" => WanConfig::wan_1_3b(),
        "wan-14b" | "wan2.1-14b" => WanConfig::wan_14b(),
        "tiny" => ModelBundle::embedded()?.config,
        other => {
            bail!("--random-weights {other}: unknown config (expected wan-1.3b, wan-14b or tiny)")
        }
    })
}
