//! Which files of a checkpoint hold which component, for the three layouts users have:
//! (a) a diffusers pipeline directory (`model_index.json`, `transformer/`, `text_encoder/`,
//! `tokenizer/`, `vae/`, `scheduler/`), (b) the original Wan repo (`config.json`,
//! `diffusion_pytorch_model*.safetensors`, `models_t5_umt5-xxl-enc-bf16.pth`,
//! `Wan2.1_VAE.pth`, `google/umt5-xxl/`), (c) single files as ComfyUI users keep them
//! (`--dit FILE --text-encoder FILE --vae FILE`: the `model.diffusion_model.` prefix stripped,
//! "scaled" fp8 dequantised on load). A layout missing a file is one error line naming it.
//! The models detect their own key naming from the sources; `naming` here is for display.

use crate::weights::{open_weights, Prefixed, ScaledFp8};
use crate::{config_for_class, ModelError, Result, WanConfig, WanKeys, WeightSource};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    Diffusers,
    OriginalWan,
    SingleFiles,
}

impl LayoutKind {
    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Diffusers => "diffusers pipeline",
            LayoutKind::OriginalWan => "original Wan repo",
            LayoutKind::SingleFiles => "single files (ComfyUI)",
        }
    }
}

/// One component's weights.
pub struct Component {
    /// The path the weights were opened from (a file, a directory, or an index).
    pub path: PathBuf,
    pub weights: Box<dyn WeightSource>,
    /// Key naming found: `original` / `diffusers` (DiT, VAE), `wan` / `transformers` (umT5).
    pub naming: &'static str,
    /// The component's own `config.json`, where the layout has one.
    pub config: Option<PathBuf>,
}

pub struct Layout {
    pub kind: LayoutKind,
    pub transformer: Component,
    /// The DiT's config (read from its `config.json`; single files: from the tensor shapes).
    pub dit_config: WanConfig,
    pub text_encoder: Component,
    /// The tokenizer's `tokenizer.json`.
    pub tokenizer: PathBuf,
    pub vae: Component,
    /// diffusers' `scheduler/scheduler_config.json` (its `shift` is the sampling shift).
    pub scheduler_config: Option<PathBuf>,
    /// The CLIP vision tower of image-to-video checkpoints (diffusers `image_encoder/`, Wan's
    /// [`WAN_CLIP`], ComfyUI's `clip_vision_h.safetensors` by `--clip-vision`), where present.
    pub image_encoder: Option<Component>,
}

/// The files of layout (c).
#[derive(Clone, Debug, Default)]
pub struct SingleFiles {
    pub dit: PathBuf,
    pub text_encoder: PathBuf,
    pub vae: PathBuf,
    /// A `tokenizer.json` or a directory holding one (ComfyUI keeps none next to the weights).
    pub tokenizer: Option<PathBuf>,
    /// The CLIP vision tower (image-to-video), e.g. ComfyUI's `clip_vision_h.safetensors`.
    pub clip_vision: Option<PathBuf>,
}

pub const WAN_T5: &str = "models_t5_umt5-xxl-enc-bf16.pth";
pub const WAN_VAE: &str = "Wan2.1_VAE.pth";
pub const WAN_TOKENIZER: &str = "google/umt5-xxl";
/// The original I2V repo's image encoder (open-clip XLM-RoBERTa-large ViT-H/14; `visual.` keys).
pub const WAN_CLIP: &str = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth";
/// The key prefix of ComfyUI's DiT files.
pub const COMFY_PREFIX: &str = "model.diffusion_model.";

fn missing(layout: LayoutKind, path: &Path, what: &str) -> ModelError {
    ModelError::Invalid(format!(
        "{}: not found ({what} of the {} layout)",
        path.display(),
        layout.name()
    ))
}

fn need(layout: LayoutKind, path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(missing(layout, &path, what))
    }
}

/// The `tokenizer.json` of `p` (the file itself or a directory holding it).
fn tokenizer_json(layout: LayoutKind, p: &Path) -> Result<PathBuf> {
    if p.is_dir() {
        need(layout, p.join("tokenizer.json"), "the tokenizer")
    } else {
        need(layout, p.to_path_buf(), "the tokenizer")
    }
}

/// Strips ComfyUI's prefix and dequantises scaled fp8, where the file has them.
fn adapt(src: Box<dyn WeightSource>, prefix: &str) -> Result<Box<dyn WeightSource>> {
    let src: Box<dyn WeightSource> = if src.names().iter().any(|n| n.starts_with(prefix)) {
        Box::new(Prefixed {
            inner: src,
            prefix: prefix.into(),
        })
    } else {
        src
    };
    if ScaledFp8::has_fp8(src.as_ref()) {
        Ok(Box::new(ScaledFp8::new(src)?))
    } else {
        Ok(src)
    }
}

fn dit_naming(w: &dyn WeightSource) -> &'static str {
    match WanKeys::detect(w) {
        WanKeys::Original => "original",
        WanKeys::Diffusers => "diffusers",
    }
}

fn text_naming(w: &dyn WeightSource) -> &'static str {
    if w.contains("token_embedding.weight") || w.contains("blocks.0.attn.q.weight") {
        "wan"
    } else {
        "transformers"
    }
}

fn vae_naming(w: &dyn WeightSource) -> &'static str {
    if w.contains("encoder.conv_in.weight") {
        "diffusers"
    } else {
        "original"
    }
}

fn clip_naming(w: &dyn WeightSource) -> &'static str {
    crate::image::clip::naming(w)
}

fn component(
    path: PathBuf,
    weights: Box<dyn WeightSource>,
    naming: fn(&dyn WeightSource) -> &'static str,
    config: Option<PathBuf>,
) -> Component {
    Component {
        naming: naming(weights.as_ref()),
        path,
        weights,
        config,
    }
}

fn dit_config(path: &Path) -> Result<WanConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    Ok(config_for_class(path, &text)?.2)
}

/// Whether `dir` holds a whole pipeline (diffusers or the original Wan repo) rather than a
/// DiT alone or a tiny-wan bundle.
pub fn is_pipeline_dir(dir: &Path) -> bool {
    ["model_index.json", WAN_VAE, WAN_T5]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// The layout of model directory `dir`, (a) or (b), found from its files.
pub fn detect(dir: &Path) -> Result<Layout> {
    if !dir.is_dir() {
        return Err(ModelError::Invalid(format!(
            "{}: not a model directory",
            dir.display()
        )));
    }
    if dir.join("model_index.json").is_file() {
        return diffusers(dir);
    }
    if [WAN_T5, WAN_VAE, "config.json"]
        .iter()
        .any(|f| dir.join(f).exists())
    {
        return original(dir);
    }
    Err(ModelError::Invalid(format!(
        "{}: no checkpoint layout found: expected model_index.json (diffusers) or config.json + {WAN_T5} + {WAN_VAE} (original Wan repo); for single files pass --dit, --text-encoder and --vae",
        dir.display()
    )))
}

fn diffusers(dir: &Path) -> Result<Layout> {
    let k = LayoutKind::Diffusers;
    let sub = |name: &str| need(k, dir.join(name), &format!("the `{name}` folder"));
    let (t, te, tok, v) = (
        sub("transformer")?,
        sub("text_encoder")?,
        sub("tokenizer")?,
        sub("vae")?,
    );
    let t_cfg = need(k, t.join("config.json"), "the transformer config")?;
    let te_cfg = need(k, te.join("config.json"), "the text encoder config")?;
    let v_cfg = need(k, v.join("config.json"), "the VAE config")?;
    let sched = need(
        k,
        dir.join("scheduler/scheduler_config.json"),
        "the scheduler config",
    )?;
    let tokenizer = tokenizer_json(k, &tok)?;
    let dit_config = dit_config(&t_cfg)?;
    let image_encoder = match dir.join("image_encoder") {
        ie if ie.is_dir() => {
            let cfg = need(k, ie.join("config.json"), "the image encoder config")?;
            Some(component(
                ie.clone(),
                open_weights(&ie)?,
                clip_naming,
                Some(cfg),
            ))
        }
        _ => None,
    };
    Ok(Layout {
        kind: k,
        image_encoder,
        transformer: component(t.clone(), open_weights(&t)?, dit_naming, Some(t_cfg)),
        dit_config,
        text_encoder: component(te.clone(), open_weights(&te)?, text_naming, Some(te_cfg)),
        tokenizer,
        vae: component(v.clone(), open_weights(&v)?, vae_naming, Some(v_cfg)),
        scheduler_config: Some(sched),
    })
}

fn original(dir: &Path) -> Result<Layout> {
    let k = LayoutKind::OriginalWan;
    let cfg = need(k, dir.join("config.json"), "the DiT config")?;
    let t5 = need(k, dir.join(WAN_T5), "the umT5 text encoder")?;
    let vae = need(k, dir.join(WAN_VAE), "the VAE")?;
    let tok = need(k, dir.join(WAN_TOKENIZER), "the tokenizer folder")?;
    let tokenizer = tokenizer_json(k, &tok)?;
    let dit_config = dit_config(&cfg)?;
    let image_encoder = match dir.join(WAN_CLIP) {
        c if c.is_file() => Some(component(c.clone(), open_weights(&c)?, clip_naming, None)),
        _ => None,
    };
    Ok(Layout {
        kind: k,
        image_encoder,
        transformer: component(dir.into(), open_weights(dir)?, dit_naming, Some(cfg)),
        dit_config,
        text_encoder: component(t5.clone(), open_weights(&t5)?, text_naming, None),
        tokenizer,
        vae: component(vae.clone(), open_weights(&vae)?, vae_naming, None),
        scheduler_config: None,
    })
}

/// Layout (c): each component from its own file.
pub fn single_files(f: &SingleFiles) -> Result<Layout> {
    let k = LayoutKind::SingleFiles;
    let dit = need(k, f.dit.clone(), "the DiT (--dit)")?;
    let te = need(
        k,
        f.text_encoder.clone(),
        "the text encoder (--text-encoder)",
    )?;
    let vae = need(k, f.vae.clone(), "the VAE (--vae)")?;
    let tokenizer = match &f.tokenizer {
        Some(p) => tokenizer_json(k, p)?,
        None => {
            return Err(ModelError::Invalid(
                "no tokenizer: single files need --tokenizer (google/umt5-xxl's tokenizer.json or its folder)".into(),
            ))
        }
    };
    let dit_w = adapt(open_weights(&dit)?, COMFY_PREFIX)?;
    let dit_config = config_from_shapes(dit_w.as_ref(), &dit)?;
    let image_encoder = match &f.clip_vision {
        Some(p) => {
            let p = need(k, p.clone(), "the image encoder (--clip-vision)")?;
            Some(component(
                p.clone(),
                adapt(open_weights(&p)?, "")?,
                clip_naming,
                None,
            ))
        }
        None => None,
    };
    Ok(Layout {
        kind: k,
        image_encoder,
        transformer: component(dit, dit_w, dit_naming, None),
        dit_config,
        text_encoder: component(
            te.clone(),
            adapt(open_weights(&te)?, "")?,
            text_naming,
            None,
        ),
        tokenizer,
        vae: component(
            vae.clone(),
            adapt(open_weights(&vae)?, "")?,
            vae_naming,
            None,
        ),
        scheduler_config: None,
    })
}

/// A Wan DiT's config from its tensor shapes (either naming; heads of 128 as every Wan2.1).
pub fn config_from_shapes(w: &dyn WeightSource, file: &Path) -> Result<WanConfig> {
    let diffusers = WanKeys::detect(w) == WanKeys::Diffusers;
    let key = |n: &str| {
        if diffusers {
            crate::wan::to_diffusers(n)
        } else {
            n.to_string()
        }
    };
    let shape = |n: &str| {
        w.info(&key(n)).map(|i| i.shape).ok_or_else(|| {
            ModelError::Invalid(format!(
                "{}: tensor `{}` not found: cannot tell the DiT's config (expected a Wan2.1 DiT)",
                file.display(),
                key(n)
            ))
        })
    };
    let has = |n: &str| w.contains(&key(n));
    let dim_of = |s: &[usize], i: usize, n: &str| {
        s.get(i).copied().ok_or_else(|| {
            ModelError::Invalid(format!("{}: tensor `{n}` has shape {s:?}", file.display()))
        })
    };
    let pe = shape("patch_embedding.weight")?;
    let dim = dim_of(&pe, 0, "patch_embedding.weight")?;
    let patch = [
        dim_of(&pe, 2, "patch_embedding.weight")?,
        dim_of(&pe, 3, "patch_embedding.weight")?,
        dim_of(&pe, 4, "patch_embedding.weight")?,
    ];
    let ffn = shape("blocks.0.ffn.0.weight")?;
    let head = shape("head.head.weight")?;
    let num_layers = (0..)
        .take_while(|i| has(&format!("blocks.{i}.ffn.0.weight")))
        .count();
    let cfg = WanConfig {
        model_type: if has("img_emb.proj.0.weight") {
            "i2v".into()
        } else {
            "t2v".into()
        },
        image_dim: if has("img_emb.proj.0.weight") {
            Some(dim_of(
                &shape("img_emb.proj.0.weight")?,
                0,
                "img_emb.proj.0.weight",
            )?)
        } else {
            None
        },
        patch_size: patch,
        in_dim: dim_of(&pe, 1, "patch_embedding.weight")?,
        dim,
        ffn_dim: dim_of(&ffn, 0, "blocks.0.ffn.0.weight")?,
        freq_dim: dim_of(
            &shape("time_embedding.0.weight")?,
            1,
            "time_embedding.0.weight",
        )?,
        text_dim: dim_of(
            &shape("text_embedding.0.weight")?,
            1,
            "text_embedding.0.weight",
        )?,
        out_dim: dim_of(&head, 0, "head.head.weight")? / patch.iter().product::<usize>().max(1),
        num_heads: (dim / 128).max(1),
        num_layers,
        qk_norm: has("blocks.0.self_attn.norm_q.weight"),
        cross_attn_norm: has("blocks.0.norm3.weight"),
        ..WanConfig::wan_1_3b()
    };
    Ok(cfg)
}

impl Layout {
    /// One line per component for `jenga inspect`: files, naming, dtypes, parameters.
    pub fn describe(&self) -> Vec<String> {
        let line = |what: &str, c: &Component| {
            let mut dtypes: Vec<String> = c
                .weights
                .names()
                .iter()
                .filter_map(|n| c.weights.info(n).map(|i| i.dtype))
                .collect();
            dtypes.sort();
            dtypes.dedup();
            format!(
                "{what}: {} ({} naming, {} parameters, {})",
                c.weights.describe(),
                c.naming,
                c.weights.param_count().unwrap_or(0),
                dtypes.join("/")
            )
        };
        let mut out = vec![
            format!("layout: {}", self.kind.name()),
            line("transformer", &self.transformer),
            line("text encoder", &self.text_encoder),
            format!("tokenizer: {}", self.tokenizer.display()),
            line("vae", &self.vae),
        ];
        if let Some(c) = &self.image_encoder {
            out.push(line("image encoder", c));
        }
        if let Some(s) = &self.scheduler_config {
            out.push(format!("scheduler config: {}", s.display()));
        }
        out
    }
}
