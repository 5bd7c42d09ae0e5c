//! HunyuanVideo text-to-video through the engine: a diffusers directory (`model_index.json`
//! of `HunyuanVideoPipeline`: `transformer/`, `text_encoder/` Llama-3, `text_encoder_2/`
//! CLIP-L, `tokenizer*/`, `vae/`, `scheduler/`) → Llama states + CLIP pooled → the transformer
//! (embedded guidance, the run's attention policy, ProRes and the static skip list of the
//! HunyuanVideo presets) → the VAE → frames. Each component is loaded, run and freed in turn.
//!
//! Its own entry beside the Wan path for now ([`prepare`], [`Engine::generate_hunyuan`]); the
//! two meet in the sampler and the policies, not yet in one `Source`.

use crate::engine::{Engine, Generated, ModelCx, ModelTask, Progress, Timings};
use crate::parallel::RankSetup;
use crate::plan::{plan_for, Family, Plan};
use crate::policy::{self, Policy};
use crate::request::GenerateRequest;
use crate::EngineBackend;
use anyhow::{bail, Context, Result};
use jenga_carve::AttentionPolicy;
use jenga_models::hunyuan::{HunyuanConfig, HunyuanModel};
use jenga_models::text::clip_text::ClipTextEncoder;
use jenga_models::text::llama::{LlamaEncoder, LlamaTextOptions};
use jenga_models::vae::hunyuan::{HunyuanVae, HunyuanVaeCodec, HunyuanVaeConfig};
use jenga_models::vae::wan::Tiling;
use jenga_models::{
    Conditioning, Denoiser, PthWeights, SafetensorsWeights, TextEncoder, Vae, WeightSource,
};
use jenga_parallel::ParallelLayout;
use jenga_pipeline::{computed_schedule, sample, Event};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A HunyuanVideo directory, checked (nothing loaded yet).
pub struct HunyuanCheckpoint {
    pub root: PathBuf,
    pub name: String,
    pub dit: HunyuanConfig,
    pub vae: HunyuanVaeConfig,
    /// `scheduler/scheduler_config.json`'s `shift` (HunyuanVideo: 7).
    pub shift: Option<f64>,
    pub files: HunyuanFiles,
}

/// Where each component is, in either layout.
pub struct HunyuanFiles {
    /// diffusers: the `transformer/` folder; official: `mp_rank_00_model_states.pt`.
    pub transformer: PathBuf,
    pub text_encoder: PathBuf,
    pub tokenizer: PathBuf,
    pub text_encoder_2: PathBuf,
    pub tokenizer_2: PathBuf,
    /// diffusers: the `vae/` folder; official: `vae/pytorch_model.pt`.
    pub vae: PathBuf,
}

/// The official tree's transformer, under `ckpts/`.
const OFFICIAL_DIT: &str = "hunyuan-video-t2v-720p/transformers/mp_rank_00_model_states.pt";

/// Whether `dir` holds a HunyuanVideo pipeline: a diffusers one, or the official `ckpts/`.
pub fn is_hunyuan_dir(dir: &Path) -> bool {
    let class = |p: PathBuf| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        Some(v["_class_name"].as_str()?.to_string())
    };
    class(dir.join("model_index.json")).as_deref() == Some("HunyuanVideoPipeline")
        || class(dir.join("transformer/config.json")).as_deref()
            == Some("HunyuanVideoTransformer3DModel")
        || dir.join(OFFICIAL_DIT).is_file()
}

impl HunyuanCheckpoint {
    pub fn open(root: &Path) -> Result<Self> {
        if root.join(OFFICIAL_DIT).is_file() {
            return Self::open_official(root);
        }
        Self::open_diffusers(root)
    }

    /// The official tree (`Tencent/HunyuanVideo` `ckpts/`): the transformer and VAE as torch
    /// archives under `hunyuan-video-t2v-720p/`, `text_encoder/` (Llama-3 with its tokenizer)
    /// and `text_encoder_2/` (CLIP-L with its tokenizer). The transformer's config is the 13B
    /// model's unless a `config.json` sits beside its file.
    fn open_official(root: &Path) -> Result<Self> {
        let ck = root.join("hunyuan-video-t2v-720p");
        for d in ["text_encoder", "text_encoder_2"] {
            if !root.join(d).is_dir() {
                bail!(
                    "{}: the official HunyuanVideo tree needs {d}/ (ckpts: hunyuan-video-t2v-720p/, text_encoder/, text_encoder_2/)",
                    root.display()
                );
            }
        }
        let cfg_path = ck.join("transformers/config.json");
        let dit = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("{}", cfg_path.display()))?;
            HunyuanConfig::from_json(&text).with_context(|| format!("{}", cfg_path.display()))?
        } else {
            HunyuanConfig::default()
        };
        let vae_pt = ck.join("vae/pytorch_model.pt");
        if !vae_pt.is_file() {
            bail!("{}: missing (the official tree's VAE)", vae_pt.display());
        }
        let vae_cfg = ck.join("vae/config.json");
        let vae = if vae_cfg.is_file() {
            HunyuanVaeConfig::from_file(&vae_cfg)?
        } else {
            HunyuanVaeConfig::default()
        };
        Ok(HunyuanCheckpoint {
            root: root.to_path_buf(),
            name: format!("{} (HunyuanVideo, official ckpts)", dir_name(root)),
            dit,
            vae,
            shift: None,
            files: HunyuanFiles {
                transformer: root.join(OFFICIAL_DIT),
                text_encoder: root.join("text_encoder"),
                tokenizer: root.join("text_encoder"),
                text_encoder_2: root.join("text_encoder_2"),
                tokenizer_2: root.join("text_encoder_2"),
                vae: vae_pt,
            },
        })
    }

    fn open_diffusers(root: &Path) -> Result<Self> {
        for d in [
            "transformer",
            "text_encoder",
            "text_encoder_2",
            "tokenizer",
            "tokenizer_2",
            "vae",
        ] {
            if !root.join(d).is_dir() {
                bail!(
                    "{}: a HunyuanVideo directory needs {d}/ (diffusers layout: transformer, text_encoder, text_encoder_2, tokenizer, tokenizer_2, vae, scheduler)",
                    root.display()
                );
            }
        }
        let cfg_path = root.join("transformer/config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{}", cfg_path.display()))?;
        let dit =
            HunyuanConfig::from_json(&text).with_context(|| format!("{}", cfg_path.display()))?;
        let vae = HunyuanVaeConfig::from_file(&root.join("vae/config.json"))?;
        let shift = std::fs::read_to_string(root.join("scheduler/scheduler_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["shift"].as_f64());
        Ok(HunyuanCheckpoint {
            root: root.to_path_buf(),
            name: format!("{} (HunyuanVideo, diffusers)", dir_name(root)),
            dit,
            vae,
            shift,
            files: HunyuanFiles {
                transformer: root.join("transformer"),
                text_encoder: root.join("text_encoder"),
                tokenizer: root.join("tokenizer"),
                text_encoder_2: root.join("text_encoder_2"),
                tokenizer_2: root.join("tokenizer_2"),
                vae: root.join("vae"),
            },
        })
    }

    /// A component's weights: safetensors (a file, a folder, shards) or a torch archive.
    fn weights(path: &Path) -> Result<Box<dyn WeightSource>> {
        Ok(
            if path.extension().is_some_and(|e| e == "pt" || e == "pth") {
                Box::new(PthWeights::open(path)?)
            } else {
                Box::new(SafetensorsWeights::open(path)?)
            },
        )
    }

    /// The official defaults, with the directory's scheduler shift; sizes in pixels.
    pub fn family(&self) -> Family {
        let mut f = Family::hunyuan();
        f.patch = self.dit.patch();
        f.vae_stride = Some([4, 8, 8]);
        f.size = (33, 90, 160);
        // no classifier-free guidance: --guidance is the embedded (distilled) scale
        f.real_text = false;
        if let Some(s) = self.shift {
            f.shift = s;
            f.source = "official HunyuanVideo defaults (50 steps, embedded guidance 6, Euler), shift from scheduler/scheduler_config.json";
        }
        f
    }
}

fn dir_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| root.display().to_string())
}

/// A HunyuanVideo run resolved and checked before anything loads.
pub struct HunyuanPrepared {
    pub request: GenerateRequest,
    pub ckpt: HunyuanCheckpoint,
    pub plan: Plan,
    pub policy: Policy,
    pub init_noise: Option<Vec<f32>>,
    /// Several ranks (`--ranks`, `--gpus`): Ulysses over the video tokens, the text whole on
    /// every rank (no CFG rows: the guidance is embedded).
    pub parallel: Option<ParallelLayout>,
}

pub fn prepare(request: &GenerateRequest, root: &Path) -> Result<HunyuanPrepared> {
    let ckpt = HunyuanCheckpoint::open(root)?;
    if request.sampling.image.is_some() {
        bail!("--image: HunyuanVideo image-to-video is not built (text-to-video only)");
    }
    let plan = plan_for(request, ckpt.family())?;
    let policy = policy::build(&plan, &request.policy, ckpt.dit.patch())?;
    let parallel = crate::parallel::resolve(
        &request.parallel,
        ckpt.dit.num_attention_heads,
        1,
        AttentionPolicy::<jenga_tensor::CpuBackend>::per_head_order(&policy),
        &crate::parallel::stage_tokens(&plan.spec, ckpt.dit.patch()),
        false,
    )?;
    if parallel.is_some_and(|l| l.ring > 1) {
        bail!("--ring: HunyuanVideo's joint attention (text tokens in self-attention) runs with --ulysses only (24 heads: 2, 3, 4, 6, 8 ranks)");
    }
    let init_noise = match &request.sampling.init_noise {
        Some(path) => Some(crate::engine::read_init_noise(
            path,
            ckpt.dit.in_channels,
            &plan,
        )?),
        None => None,
    };
    Ok(HunyuanPrepared {
        request: request.clone(),
        ckpt,
        plan,
        policy,
        init_noise,
        parallel,
    })
}

impl Engine {
    /// The whole HunyuanVideo generation: text encoders, DiT steps, VAE decode.
    pub fn generate_hunyuan(
        &self,
        p: &HunyuanPrepared,
        on_event: &mut dyn FnMut(Progress),
    ) -> Result<Generated> {
        self.run(HunyuanTask {
            p,
            on_event,
            rank: self.rank().cloned(),
        })
    }
}

struct HunyuanTask<'a> {
    p: &'a HunyuanPrepared,
    on_event: &'a mut dyn FnMut(Progress),
    rank: Option<RankSetup>,
}

impl ModelTask for HunyuanTask<'_> {
    type Output = Generated;
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Generated> {
        let (p, on_event, be) = (self.p, self.on_event, cx.be);
        let (files, spec) = (&p.ckpt.files, &p.plan.spec);
        let mut t = Timings::default();
        // A multi-process run: the collectives first, then rank 0's text for every rank.
        let procs = match (&self.rank, p.parallel) {
            (Some(r), Some(_)) => Some(be.process_comm(r)?),
            (Some(_), None) => bail!("a rank of a multi-process run without a parallel layout"),
            _ => None,
        };
        let guard = procs
            .as_ref()
            .map(|c| jenga_tensor::AbortOnDrop::new(c.as_ref()));
        let speaks = procs.as_ref().is_none_or(|c| c.rank() == 0);
        // Llama-3, then CLIP-L, each freed before the next loads
        let t0 = Instant::now();
        let (rows, dim, pd) = (
            LlamaTextOptions::default().max_len,
            p.ckpt.dit.text_embed_dim,
            p.ckpt.dit.pooled_projection_dim,
        );
        let (mut states, mut valid, mut pooled) = (vec![0.0; rows * dim], 0usize, vec![0.0; pd]);
        if speaks {
            let llama = LlamaEncoder::load(be, &files.text_encoder, &files.tokenizer)
                .context("loading the Llama text encoder")?;
            let st = llama.encode(&p.plan.prompt)?;
            if st.dim != dim || st.len != rows {
                bail!(
                    "text_encoder/ gives {}x{} states, the transformer takes {rows}x{dim}",
                    st.len,
                    st.dim
                );
            }
            valid = st.mask.iter().filter(|&&m| m).count();
            states = st.states;
            drop(llama);
            let clip = ClipTextEncoder::load(be, &files.text_encoder_2, &files.tokenizer_2)
                .context("loading the CLIP text encoder")?;
            pooled = clip.encode(&p.plan.prompt)?;
            if pooled.len() != pd {
                bail!(
                    "text_encoder_2/ gives a {}-wide pooled vector, the transformer takes {pd}",
                    pooled.len()
                );
            }
        }
        if let Some(c) = &procs {
            // the valid length rides along as one value (exact in bf16: at most 256)
            let mut all = states;
            all.extend(&pooled);
            all.push(valid as f32);
            let n = all.len();
            let all = crate::parallel::broadcast_states(be, c.as_ref(), all, n)?;
            states = all[..rows * dim].to_vec();
            pooled = all[rows * dim..rows * dim + pd].to_vec();
            valid = all[n - 1].round() as usize;
        }
        let (states, pooled) = (
            be.upload(&states, &[1, rows, dim])?,
            be.upload(&pooled, &[1, pd])?,
        );
        be.synchronize()?;
        t.text = t0.elapsed();
        let t0 = Instant::now();
        let w = HunyuanCheckpoint::weights(&files.transformer)?;
        let model = HunyuanModel::load(be, &p.ckpt.dit, w.as_ref())
            .context("loading the HunyuanVideo transformer")?;
        drop(w);
        be.synchronize()?;
        t.load = t0.elapsed();
        let joint = Conditioning::JointText {
            states,
            lens: vec![valid],
            pooled,
            guidance: Some(spec.guidance),
        };
        let cond = model.condition(be, &joint)?;
        let computed = computed_schedule(be, &model, spec)?
            .iter()
            .filter(|&&c| c)
            .count();
        let (settings, warning) = crate::engine::schedule_report(&p.plan, computed);
        if let Some(w) = warning {
            on_event(Progress::Warning(w));
        }
        if let Some(s) = settings {
            on_event(Progress::Settings(s));
        }
        let policy: &dyn AttentionPolicy<B> = &p.policy;
        let (of, oh, ow) = p.plan.out_size;
        on_event(Progress::Started(format!(
            "jenga: {} on {} | {of}x{oh}x{ow} px (latent {}x{}x{}), {} steps {}, shift {}, embedded guidance {}, seed {}{}, {} text tokens, policy {} | defaults: {}",
            p.ckpt.name, be.name(), spec.frames, spec.height, spec.width, spec.steps,
            spec.solver.name(), spec.stages[0].shift, spec.guidance, spec.seed,
            if p.init_noise.is_some() { " (start noise from --init-noise)" } else { "" },
            valid, policy.name(), p.plan.family.source
        )));
        let mut on_sample = |e: Event| on_event(e.into());
        let noise = p.init_noise.as_deref();
        let mut rank0_policy: Option<Policy> = None;
        let out = match p.parallel {
            None => sample(be, &model, &cond, spec, policy, noise, &mut on_sample)?,
            Some(layout) => {
                let run = crate::parallel::RankRun {
                    be,
                    model: &model,
                    cond: &joint,
                    spec,
                    noise,
                    layout,
                };
                match &procs {
                    Some(c) => run.process(c.as_ref(), policy, &mut on_sample)?,
                    None => {
                        let patch = p.ckpt.dit.patch();
                        let make = || policy::build(&p.plan, &p.request.policy, patch);
                        let (out, r0) = run.threads(&make, &mut on_sample)?;
                        rank0_policy = Some(r0);
                        out
                    }
                }
            }
        };
        on_event(Progress::Sampled);
        t.dit = out.dit_time;
        drop(model);
        let t0 = Instant::now();
        let video = if speaks {
            let mut vae = HunyuanVae::load(
                be,
                HunyuanCheckpoint::weights(&files.vae)?.as_ref(),
                p.ckpt.vae.clone(),
            )
            .context("loading the HunyuanVideo VAE")?;
            // diffusers tiles the decode spatially at sizes above its tile (256 px)
            if oh > 256 || ow > 256 {
                vae.tiling = Some(Tiling::default());
            }
            let frames = HunyuanVaeCodec { be, vae }
                .decode(&out.video, out.shape)
                .context("decoding the latent")?;
            crate::frames_to_video(&frames, 8)
        } else {
            // the VAE runs on rank 0; the other ranks of a multi-process run end here
            crate::no_frames()
        };
        be.synchronize()?;
        t.decode = t0.elapsed();
        if let Some(g) = guard {
            g.disarm();
        }
        let (density, choices) =
            crate::engine::policy_report::<B>(&p.policy, rank0_policy.as_ref());
        Ok(Generated {
            video,
            latent: out.video,
            latent_shape: out.shape,
            upscale: 1,
            timings: t,
            computed_steps: out.computed_steps,
            steps: spec.steps,
            density,
            choices,
        })
    }
}
