//! Plain request types (serde): what a front end asks the engine for. Field names follow the
//! command line's flags (`sa_drop_rates` ↔ `--sa-drop-rates`), and errors name the flag, so a
//! request read from JSON and one built from the command line fail the same way.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the model comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// The embedded tiny-wan.
    #[default]
    Embedded,
    /// A model directory: a diffusers pipeline, the original Wan repo, or a tiny-wan-style
    /// bundle (config.json + safetensors + its own text encoder).
    Dir(PathBuf),
    /// Single files as ComfyUI users keep them (`--dit`, `--text-encoder`, `--vae`,
    /// `--tokenizer`).
    Files(ModelFiles),
    /// Seeded random weights for a built-in config: wan-1.3b, wan-14b, tiny.
    Random(String),
}

/// The component files of [`ModelSource::Files`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelFiles {
    pub dit: PathBuf,
    pub text_encoder: PathBuf,
    pub vae: PathBuf,
    /// `tokenizer.json` or its folder (google/umt5-xxl's).
    pub tokenizer: Option<PathBuf>,
    /// The CLIP vision tower of image-to-video (ComfyUI's `clip_vision_h.safetensors`).
    #[serde(default)]
    pub clip_vision: Option<PathBuf>,
}

/// `auto | cpu | cuda | cuda:N` and the CPU thread count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceRequest {
    pub device: String,
    pub threads: Option<usize>,
}

impl Default for DeviceRequest {
    fn default() -> Self {
        DeviceRequest {
            device: "auto".into(),
            threads: None,
        }
    }
}

/// Video size; None = the model's default. Pixels for models with a VAE (checkpoints: frames
/// 4k+1, height and width multiples of 16) and for tiny-wan (pixel space); latent units for
/// random weights, which have no VAE.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VideoSize {
    pub frames: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
}

/// Prompt and sampler settings; None = the model's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub prompt: String,
    /// None: the model's default (Wan's negative prompt with a real text encoder, else empty);
    /// `Some("")` is an empty one.
    pub negative_prompt: Option<String>,
    pub steps: Option<usize>,
    pub shift: Option<f64>,
    pub guidance: Option<f32>,
    pub seed: u64,
    /// unipc | euler (None: the model family's: UniPC for Wan, Euler for HunyuanVideo).
    pub solver: Option<String>,
    /// A safetensors file whose tensor `noise` (the stage-0 latent shape `[C, T, H, W]`)
    /// replaces the seeded start noise, to reproduce a run of another engine exactly.
    pub init_noise: Option<PathBuf>,
    /// Image-to-video: the first frame (PNG, JPEG or WebP). The video's size follows its
    /// aspect ratio at the requested (or default) area.
    pub image: Option<PathBuf>,
}

/// Sparse VideoGen settings (the reference scripts' Wan2.1 defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SvgOptions {
    pub svg_sparsity: f64,
    pub svg_sampled_rows: usize,
    pub svg_first_times_fp: f64,
    pub svg_first_layers_fp: f64,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            svg_sparsity: 0.3,
            svg_sampled_rows: 64,
            svg_first_times_fp: 0.2,
            svg_first_layers_fp: 0.03,
        }
    }
}

/// DraftAttention settings (the reference scripts' Wan2.1 defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DraftOptions {
    pub draft_sparsity: f64,
    /// ROWSxCOLS of latent tokens per frame.
    pub draft_pool: String,
    pub draft_dense_layers: usize,
    pub draft_dense_timestep: f64,
    pub draft_min_blocks: usize,
}

impl Default for DraftOptions {
    fn default() -> Self {
        DraftOptions {
            draft_sparsity: 0.75,
            draft_pool: "8x16".into(),
            draft_dense_layers: 1,
            draft_dense_timestep: 925.0,
            draft_min_blocks: 1,
        }
    }
}

/// Attention policy, ProRes and step skip (the Jenga seed's names); None = the preset's or
/// the policy's default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyOptions {
    /// dense | jenga | svg | draft (default: jenga when a preset or Jenga option is set).
    pub policy: Option<String>,
    /// base | turbo | flash | 3stage.
    pub preset: Option<String>,
    pub sa_drop_rates: Option<Vec<f64>>,
    pub p_remain_rates: Option<Vec<f64>>,
    pub res_rate_list: Option<Vec<f64>>,
    pub step_rate_list: Option<Vec<f64>>,
    pub scheduler_shift_list: Option<Vec<f64>>,
    /// wan | hunyuan | consistent: how a ProRes switch re-noises (None: the family's).
    pub prores_renoise: Option<String>,
    /// trilinear | area.
    pub interp: String,
    /// none | static | teacache.
    pub skip: Option<String>,
    pub skip_keep: Option<usize>,
    pub teacache_thresh: Option<f64>,
    pub text_amp_rho: f64,
    /// sliced | gilbert3d.
    pub curve: String,
    pub block: usize,
    pub svg: SvgOptions,
    pub draft: DraftOptions,
}

impl Default for PolicyOptions {
    /// Dense attention, no ProRes, no skip: what a run without policy options does.
    fn default() -> Self {
        PolicyOptions {
            policy: None,
            preset: None,
            sa_drop_rates: None,
            p_remain_rates: None,
            res_rate_list: None,
            step_rate_list: None,
            scheduler_shift_list: None,
            prores_renoise: None,
            interp: "trilinear".into(),
            skip: None,
            skip_keep: None,
            teacache_thresh: None,
            text_amp_rho: 0.5,
            curve: "auto".into(),
            block: 128,
            svg: SvgOptions::default(),
            draft: DraftOptions::default(),
        }
    }
}

/// One generation: model, size, sampling, policy. The device is the engine's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateRequest {
    pub model: ModelSource,
    pub video: VideoSize,
    pub sampling: Sampling,
    pub policy: PolicyOptions,
    /// Integer upscale of the frames the front end will write (None: tiny-wan's 32 px to
    /// 256 px, else 1); counted in the memory estimate.
    pub upscale: Option<u32>,
    /// Several ranks per video.
    pub parallel: ParallelOptions,
}

/// Several ranks for one video: `--gpus N` (one process per GPU, NCCL) or `--ranks N`
/// (threads of one process, the CPU), with the layout as `--ulysses`, `--ring`,
/// `--cfg-parallel` (all None: chosen from the count, the heads and the guidance).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParallelOptions {
    /// Ranks per video; 0 = one device, the plain path; 1 = one rank through the parallel
    /// path (to measure what it costs).
    pub ranks: usize,
    pub ulysses: Option<usize>,
    pub ring: Option<usize>,
    /// The two guidance rows on different ranks (None: when the count is even and guidance
    /// is on).
    pub cfg_parallel: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_through_json_and_defaults_fill_in() {
        let mut r = GenerateRequest::default();
        r.sampling.prompt = "a red circle moving right on a blue background".into();
        r.policy.preset = Some("flash".into());
        r.model = ModelSource::Random("wan-1.3b".into());
        let text = serde_json::to_string(&r).unwrap();
        let back: GenerateRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(text.contains("\"random\":\"wan-1.3b\""), "{text}");
        // a front end sends only what it sets
        let short: GenerateRequest =
            serde_json::from_str(r#"{"sampling": {"prompt": "x", "steps": 4}}"#).unwrap();
        assert_eq!(short.sampling.steps, Some(4));
        assert_eq!(short.policy, PolicyOptions::default());
    }
}
