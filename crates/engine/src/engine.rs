//! The engine: a request is prepared (model source opened, flags resolved against the model's
//! defaults, policy built: everything a user can get wrong, before anything loads), the device
//! is chosen once, the memory is checked, the model is loaded (or reused) and the video is
//! generated, with progress as events.

use crate::device::{self, Device, EngineBackend, OnDevice};
use crate::memory::{self, MemEstimate};
use crate::parallel::RankSetup;
use crate::plan::{plan_with_image, skip_name, Plan};
use crate::policy::{self, Policy};
use crate::request::{DeviceRequest, GenerateRequest, ModelSource};
use crate::source::Source;
use anyhow::{bail, Context, Result};
use jenga_carve::{AttentionPolicy, DensityStats};
use jenga_models::image::Rgb8;
use jenga_models::wan::WanI2v;
use jenga_models::{Conditioning, Denoiser, WanModel};
use jenga_models::{SafetensorsWeights, WeightSource};
use jenga_parallel::ParallelLayout;
use jenga_pipeline::{computed_schedule, sample, Event, SampleOutput, SkipRule};
use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fewer computed steps than this gives a blank or noisy video on any model.
pub const MIN_COMPUTED_STEPS: usize = 5;

/// A request resolved and checked, ready to run on any device.
pub struct Prepared {
    pub request: GenerateRequest,
    pub source: Source,
    pub plan: Plan,
    pub policy: Policy,
    /// Integer upscale of the written frames (resolved default).
    pub upscale: u32,
    /// What the prompt will really do (dropped words, wrong slots, empty prompt).
    pub notes: Vec<String>,
    /// `--init-noise`: the stage-0 start latent, read and checked at prepare time.
    pub init_noise: Option<Vec<f32>>,
    /// `--image`: the first frame of an image-to-video run, read at prepare time.
    pub image: Option<Rgb8>,
    /// Several ranks per video (`--gpus`/`--ranks`): the layout, checked against the model,
    /// the guidance, the policy and every stage's tokens.
    pub parallel: Option<ParallelLayout>,
}

/// Opens the model source, resolves the request against its defaults and builds the policy.
pub fn prepare(request: &GenerateRequest) -> Result<Prepared> {
    let source = Source::open(&request.model)?;
    prepare_with(request, source)
}

/// As `prepare`, with a source already open (runs that share one: eval, benches).
pub fn prepare_with(request: &GenerateRequest, source: Source) -> Result<Prepared> {
    let image = match &request.sampling.image {
        Some(p) if source.config().is_i2v() => Some(crate::image::read_image(p)?),
        _ => None,
    };
    let plan = plan_with_image(
        request,
        &source,
        image.as_ref().map(|i| (i.height, i.width)),
    )?;
    let upscale = match request.upscale {
        Some(u) if !(1..=32).contains(&u) => bail!("--upscale {u}: must be in 1..=32"),
        Some(u) => u,
        None if source.pixel_space() => (256 / plan.spec.width.max(1)).max(1) as u32,
        None => 1,
    };
    let policy = policy::build(&plan, &request.policy, source.config().patch_size)?;
    let notes = source.prompt_notes(&plan.prompt);
    let init_noise = match &request.sampling.init_noise {
        Some(path) => Some(read_init_noise(path, source.config().out_dim, &plan)?),
        None => None,
    };
    let cfg = source.config();
    let parallel = crate::parallel::resolve(
        &request.parallel,
        cfg.num_heads,
        if plan.spec.guidance > 1.0 { 2 } else { 1 },
        AttentionPolicy::<jenga_tensor::CpuBackend>::per_head_order(&policy),
        &crate::parallel::stage_tokens(&plan.spec, cfg.patch_size),
        cfg.is_i2v(),
    )?;
    Ok(Prepared {
        request: request.clone(),
        source,
        plan,
        policy,
        upscale,
        notes,
        init_noise,
        image,
        parallel,
    })
}

/// `--init-noise FILE`: tensor `noise` of the stage-0 latent shape `[C, T, H, W]` (a leading
/// batch of 1 is accepted), any float dtype.
pub(crate) fn read_init_noise(path: &Path, channels: usize, plan: &Plan) -> Result<Vec<f32>> {
    let flag = || format!("--init-noise {}", path.display());
    let w = SafetensorsWeights::open(path).with_context(flag)?;
    let info = w.info("noise").ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no tensor `noise` (it holds {})",
            flag(),
            w.names().join(", ")
        )
    })?;
    let spec = &plan.spec;
    let patch = plan.family.patch;
    let (h, wd) = spec.stage_size(0, patch);
    let want = [channels, spec.frames, h, wd];
    let shape: Vec<usize> = match info.shape.as_slice() {
        [1, rest @ ..] if rest.len() == 4 => rest.to_vec(),
        s => s.to_vec(),
    };
    if shape != want {
        bail!(
            "{}: `noise` has shape {:?}, this run's start latent is {want:?} (channels, latent frames, height, width{})",
            flag(),
            info.shape,
            if spec.stages.len() > 1 { ", at the first ProRes stage's size" } else { "" }
        );
    }
    let x = w.load("noise", &info.shape).with_context(flag)?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!("{}: `noise` has a non-finite value at index {i}", flag());
    }
    Ok(x)
}

/// Progress of a generation, for a front end to show.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Settings line (Jenga runs): drop rates, stages, skip with its real computed count.
    Settings(String),
    Warning(String),
    /// The model is loaded; the run's header line.
    Started(String),
    StageSwitch {
        stage: usize,
        height: usize,
        width: usize,
        tokens: usize,
    },
    Step {
        step: usize,
        total: usize,
        computed: bool,
    },
    /// The DiT steps are done.
    Sampled,
}

impl From<Event> for Progress {
    /// The sampler's events as the front ends get them.
    fn from(e: Event) -> Progress {
        match e {
            Event::Step {
                step,
                total,
                computed,
                ..
            } => Progress::Step {
                step,
                total,
                computed,
            },
            Event::StageSwitch {
                stage,
                height,
                width,
                tokens,
            } => Progress::StageSwitch {
                stage,
                height,
                width,
                tokens,
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub load: Duration,
    pub text: Duration,
    /// Image-to-video: the CLIP image encoder and the VAE encode of the first frame.
    pub image: Duration,
    pub dit: Duration,
    pub decode: Duration,
}

/// A generated video and what it cost.
pub struct Generated {
    pub video: jenga_video::Video,
    /// The DiT's final latent `[C, F, H, W]` (normalised, as the VAE's input), host f32.
    pub latent: Vec<f32>,
    pub latent_shape: [usize; 4],
    pub upscale: u32,
    pub timings: Timings,
    pub computed_steps: usize,
    pub steps: usize,
    pub density: Vec<DensityStats>,
    /// What the policy chose on its own (SVG head patterns, Draft top-ups).
    pub choices: Option<String>,
}

/// A loaded model kept for the next request with the same source.
struct Cached {
    key: ModelSource,
    model: Arc<dyn Any + Send + Sync>,
}

/// One device, and the model last loaded on it.
pub struct Engine {
    device: Device,
    notes: Vec<String>,
    cache: Mutex<Option<Cached>>,
    /// This process's rank of a multi-process run (`Engine::with_rank`).
    rank: Option<RankSetup>,
}

impl Engine {
    pub fn new(req: &DeviceRequest) -> Result<Engine> {
        let mut notes = Vec::new();
        let device = device::select(&req.device, req.threads, &mut |n| notes.push(n))?;
        Ok(Engine {
            device,
            notes,
            cache: Mutex::new(None),
            rank: None,
        })
    }

    /// This engine as one rank of a multi-process run: its generations take part in the
    /// run's collectives (NCCL), and only rank 0 encodes the text and decodes the video
    /// (the others return no frames).
    pub fn with_rank(mut self, rank: RankSetup) -> Engine {
        self.rank = Some(rank);
        self
    }

    /// This process's rank of a multi-process run, if it is one.
    pub fn rank(&self) -> Option<&RankSetup> {
        self.rank.as_ref()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Notes from choosing the device (e.g. `auto` without a CUDA driver).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Refuses a run that would not fit this device (and the host, for the frames).
    pub fn check_memory(&self, p: &Prepared) -> Result<()> {
        let cuda = self.device.is_cuda();
        let mut est = MemEstimate::new(
            p.source.config(),
            &p.plan.spec,
            cuda,
            p.plan.policy != "dense",
            p.upscale,
        );
        if let Source::Checkpoint(c) = &p.source {
            let spec = &p.plan.spec;
            est = est.with_pipeline(
                cuda,
                c.text.parameters(),
                c.layout.vae.weights.param_count().unwrap_or(0),
                c.vae.base_dim,
                p.plan.out_size,
                crate::source::vae_tiled(spec.height, spec.width),
            );
        }
        memory::check(&est, self.device.memory_free(), memory::host_available())
    }

    /// Runs `task` with this engine's backend and model cache.
    pub fn run<T: ModelTask>(&self, task: T) -> Result<T::Output> {
        self.device.run(WithCx { engine: self, task })
    }

    /// The whole generation: memory check, load (or reuse), text, DiT steps, decode.
    pub fn generate(&self, p: &Prepared, on_event: &mut dyn FnMut(Progress)) -> Result<Generated> {
        self.generate_as(p, self.rank.clone(), on_event)
    }

    /// [`Engine::generate`] as `rank` of a multi-process run (`None`: this process alone).
    /// A bench runs one request both ways: a one-rank run (`world` 1) takes the NCCL path.
    pub fn generate_as(
        &self,
        p: &Prepared,
        rank: Option<RankSetup>,
        on_event: &mut dyn FnMut(Progress),
    ) -> Result<Generated> {
        self.check_memory(p)?;
        self.run(GenerateTask { p, on_event, rank })
    }
}

/// Work generic over the backend that needs the engine's model cache (eval, benches).
pub trait ModelTask {
    type Output;
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Self::Output>;
}

/// A backend plus the engine's model cache.
pub struct ModelCx<'a, B: EngineBackend> {
    pub be: &'a B,
    engine: &'a Engine,
}

impl<B: EngineBackend> ModelCx<'_, B> {
    /// The model of `source`, loaded onto this backend, or the one loaded for the last request
    /// with the same `key`; the load time is zero when it was reused.
    pub fn model(&self, key: &ModelSource, source: &Source) -> Result<(Arc<WanModel<B>>, Duration)>
    where
        B::Tensor: Send + Sync,
    {
        let mut cache = self.engine.cache.lock().expect("model cache lock");
        if let Some(c) = cache.as_ref().filter(|c| &c.key == key) {
            if let Ok(m) = c.model.clone().downcast::<WanModel<B>>() {
                return Ok((m, Duration::ZERO));
            }
        }
        *cache = None; // free the previous model before loading the next
        let t0 = Instant::now();
        let model = Arc::new(
            WanModel::load(self.be, source.config(), source.weights())
                .context("loading the DiT")?,
        );
        self.be.synchronize()?;
        let took = t0.elapsed();
        *cache = Some(Cached {
            key: key.clone(),
            model: model.clone(),
        });
        Ok((model, took))
    }
}

struct WithCx<'e, T> {
    engine: &'e Engine,
    task: T,
}

impl<T: ModelTask> OnDevice for WithCx<'_, T> {
    type Output = T::Output;
    fn run<B: EngineBackend>(self, be: &B) -> Result<T::Output> {
        self.task.run(&ModelCx {
            be,
            engine: self.engine,
        })
    }
}

/// What the run's policy measured (density per stage) and chose: rank 0's own policy when the
/// ranks ran as threads (each with its own), else the prepared one.
pub(crate) fn policy_report<B: EngineBackend>(
    prepared: &Policy,
    rank0: Option<&Policy>,
) -> (Vec<DensityStats>, Option<String>) {
    let p = rank0.unwrap_or(prepared);
    (AttentionPolicy::<B>::density_stats(p), p.choices())
}

/// The settings line of a Jenga run and a warning when the skip schedule computes too few
/// steps; `computed` is the real count (`computed_schedule`), stage starts included.
pub fn schedule_report(plan: &Plan, computed: usize) -> (Option<String>, Option<String>) {
    let spec = &plan.spec;
    let settings = plan.jenga.as_ref().map(|js| {
        format!(
            "jenga settings: policy {} | sa-drop-rates {:?} p-remain {:?} | res {:?} steps {:?} shifts {:?} | solver {} | prores-renoise {} | skip {} | from {}",
            plan.policy, js.sa_drop_rates, js.p_remain_rates, js.res_rate_list, js.step_rate_list, js.scheduler_shift_list,
            spec.solver.name(), spec.renoise.name(),
            skip_name(&spec.skip, computed), js.source
        )
    });
    let warning = (computed < MIN_COMPUTED_STEPS.min(spec.steps)).then(|| {
        format!(
            "only {computed} of {} steps run the transformer (skip {}); fewer than {MIN_COMPUTED_STEPS} gives a blank or noisy video: use more --steps, --skip none{}",
            spec.steps,
            skip_name(&spec.skip, computed),
            if matches!(spec.skip, SkipRule::TeaCache { .. }) {
                " or a lower --teacache-thresh"
            } else {
                " or a higher --skip-keep"
            }
        )
    });
    (settings, warning)
}

struct GenerateTask<'a> {
    p: &'a Prepared,
    on_event: &'a mut dyn FnMut(Progress),
    rank: Option<RankSetup>,
}

impl ModelTask for GenerateTask<'_> {
    type Output = Generated;
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Generated> {
        let (p, on_event, be) = (self.p, self.on_event, cx.be);
        let mut t = Timings::default();
        let spec = &p.plan.spec;
        // The text encoder runs (and is freed) before the DiT loads: umT5-XXL and the 14B DiT
        // are not resident together.
        let t0 = Instant::now();
        let prompts = Source::prompts(&p.plan.prompt, &p.plan.negative, spec.guidance);
        // A multi-process run: the collectives first (every rank meets there), then rank 0's
        // text states go to every rank.
        let procs = match (&self.rank, p.parallel) {
            (Some(r), Some(layout)) => Some((be.process_comm(r)?, layout)),
            (Some(_), None) => bail!("a rank of a multi-process run without a parallel layout"),
            _ => None,
        };
        // A rank that fails from here on aborts the run's collectives, so the others stop
        // instead of waiting in theirs.
        let guard = procs
            .as_ref()
            .map(|(c, _)| jenga_tensor::AbortOnDrop::new(c.as_ref()));
        let states = match &procs {
            Some((comm, _)) => {
                let cfg = p.source.config();
                let len = prompts.len() * cfg.text_len * cfg.text_dim;
                let mine = if comm.rank() == 0 {
                    p.source.encode(be, &prompts)?
                } else {
                    vec![0.0; len]
                };
                crate::parallel::broadcast_states(be, comm.as_ref(), mine, len)?
            }
            None => p.source.encode(be, &prompts)?,
        };
        be.synchronize()?;
        t.text = t0.elapsed();
        // Image-to-video: CLIP and the VAE encoder run (and are freed) before the DiT loads.
        let t0 = Instant::now();
        let image = match (&p.source, &p.image) {
            (Source::Checkpoint(c), Some(img)) => {
                let patch = p.plan.family.patch;
                let mut sizes: Vec<(usize, usize)> = (0..spec.stages.len())
                    .map(|i| spec.stage_size(i, patch))
                    .collect();
                sizes.dedup();
                Some(c.image_condition(be, img, p.plan.out_size.0, &sizes)?)
            }
            _ => None,
        };
        be.synchronize()?;
        t.image = t0.elapsed();
        let (model, load) = cx.model(&p.request.model, &p.source)?;
        t.load = load;
        let computed = computed_schedule(be, model.as_ref(), spec)?
            .iter()
            .filter(|&&c| c)
            .count();
        let (settings, warning) = schedule_report(&p.plan, computed);
        if let Some(w) = warning {
            on_event(Progress::Warning(w));
        }
        if let Some(s) = settings {
            on_event(Progress::Settings(s));
        }
        let policy: &dyn AttentionPolicy<B> = &p.policy;
        let (of, oh, ow) = p.plan.out_size;
        on_event(Progress::Started(format!(
            "jenga: {} on {} | {of}x{oh}x{ow} (frames x h x w{}), {} steps {}, shift {}, guidance {}, seed {}{}, policy {} | defaults: {}",
            p.source.name(), be.name(),
            if p.source.has_vae() { format!(" px; latent {}x{}x{}", spec.frames, spec.height, spec.width) } else { String::new() },
            spec.steps, spec.solver.name(), spec.stages[0].shift, spec.guidance, spec.seed,
            if p.init_noise.is_some() { " (start noise from --init-noise)" } else { "" },
            policy.name(), p.plan.family.source
        )));

        let mut on_sample = |e: Event| on_event(e.into());
        let noise = p.init_noise.as_deref();
        let mut rank0_policy: Option<Policy> = None;
        // the embedded context (and the CLIP rows) count as text time
        let t0 = Instant::now();
        let out: SampleOutput = match image {
            Some(crate::image::ImageCondition { clip, latents }) => {
                let cfg = p.source.config();
                let n = states.len() / (cfg.text_len * cfg.text_dim).max(1);
                let ys = latents
                    .iter()
                    .map(|(y, s)| be.upload(y, &[1, s[0], s[1], s[2], s[3]]))
                    .collect::<jenga_tensor::Result<Vec<_>>>()?;
                let hidden = cfg.image_dim.unwrap_or(0);
                let tokens = clip.len() / hidden.max(1);
                let d = WanI2v {
                    model: model.as_ref(),
                    ys,
                };
                let cond = Conditioning::Image {
                    states: be.upload(&states, &[n, cfg.text_len, cfg.text_dim])?,
                    image: be.upload(&clip.repeat(n), &[n, tokens, hidden])?,
                };
                let ctx = d.condition(be, &cond)?;
                be.synchronize()?;
                t.text += t0.elapsed();
                sample(be, &d, &ctx, spec, policy, noise, &mut on_sample)?
            }
            None => match p.parallel {
                None => {
                    let ctx = p.source.embed_states(be, &model, &states)?;
                    be.synchronize()?;
                    t.text += t0.elapsed();
                    sample(
                        be,
                        model.as_ref(),
                        &ctx,
                        spec,
                        policy,
                        noise,
                        &mut on_sample,
                    )?
                }
                Some(layout) => {
                    let cfg = p.source.config();
                    let rows = states.len() / (cfg.text_len * cfg.text_dim).max(1);
                    let cond = Conditioning::Text {
                        states: be.upload(&states, &[rows, cfg.text_len, cfg.text_dim])?,
                    };
                    let run = crate::parallel::RankRun {
                        be,
                        model: model.as_ref(),
                        cond: &cond,
                        spec,
                        noise,
                        layout,
                    };
                    match &procs {
                        Some((comm, _)) => run.process(comm.as_ref(), policy, &mut on_sample)?,
                        None => {
                            let patch = p.source.config().patch_size;
                            let make = || policy::build(&p.plan, &p.request.policy, patch);
                            let (out, rank0) = run.threads(&make, &mut on_sample)?;
                            rank0_policy = Some(rank0);
                            out
                        }
                    }
                }
            },
        };
        on_event(Progress::Sampled);
        t.dit = out.dit_time;

        let t0 = Instant::now();
        // the VAE runs on rank 0; the other ranks of a multi-process run end here
        let worker = procs.as_ref().is_some_and(|(c, _)| c.rank() != 0);
        let video = if worker {
            crate::no_frames()
        } else {
            let frames = p
                .source
                .decode(be, &out.video, out.shape)
                .context("decoding the latent")?;
            crate::frames_to_video(&frames, 8)
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
            upscale: p.upscale,
            timings: t,
            computed_steps: out.computed_steps,
            steps: spec.steps,
            density,
            choices,
        })
    }
}
