//! The engine: a request is prepared (model source opened, flags resolved against the model's
//! defaults, policy built: everything a user can get wrong, before anything loads), the device
//! is chosen once, the memory is checked, the model is loaded (or reused) and the video is
//! generated, with progress as events.

use crate::device::{self, Device, EngineBackend, OnDevice};
use crate::memory::{self, MemEstimate};
use crate::plan::{plan, skip_name, Plan};
use crate::policy::{self, Policy};
use crate::request::{DeviceRequest, GenerateRequest, ModelSource};
use crate::source::Source;
use anyhow::{bail, Context, Result};
use jenga_carve::{AttentionPolicy, DensityStats};
use jenga_models::WanModel;
use jenga_pipeline::{computed_schedule, sample, Event, SampleOutput, SkipRule};
use std::any::Any;
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
}

/// Opens the model source, resolves the request against its defaults and builds the policy.
pub fn prepare(request: &GenerateRequest) -> Result<Prepared> {
    let source = Source::open(&request.model)?;
    prepare_with(request, source)
}

/// As `prepare`, with a source already open (runs that share one: eval, benches).
pub fn prepare_with(request: &GenerateRequest, source: Source) -> Result<Prepared> {
    let plan = plan(request, &source)?;
    let upscale = match request.upscale {
        Some(u) if !(1..=32).contains(&u) => bail!("--upscale {u}: must be in 1..=32"),
        Some(u) => u,
        None if source.pixel_space() => (256 / plan.spec.width.max(1)).max(1) as u32,
        None => 1,
    };
    let policy = policy::build(&plan, &request.policy, source.config().patch_size)?;
    let notes = source.prompt_notes(&plan.prompt);
    Ok(Prepared {
        request: request.clone(),
        source,
        plan,
        policy,
        upscale,
        notes,
    })
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

#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub load: Duration,
    pub text: Duration,
    pub dit: Duration,
    pub decode: Duration,
}

/// A generated video and what it cost.
pub struct Generated {
    pub video: jenga_video::Video,
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
}

impl Engine {
    pub fn new(req: &DeviceRequest) -> Result<Engine> {
        let mut notes = Vec::new();
        let device = device::select(&req.device, req.threads, &mut |n| notes.push(n))?;
        Ok(Engine {
            device,
            notes,
            cache: Mutex::new(None),
        })
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
        let est = MemEstimate::new(
            p.source.config(),
            &p.plan.spec,
            self.device.is_cuda(),
            p.plan.policy != "dense",
            p.upscale,
        );
        memory::check(&est, self.device.memory_free(), memory::host_available())
    }

    /// Runs `task` with this engine's backend and model cache.
    pub fn run<T: ModelTask>(&self, task: T) -> Result<T::Output> {
        self.device.run(WithCx { engine: self, task })
    }

    /// The whole generation: memory check, load (or reuse), text, DiT steps, decode.
    pub fn generate(&self, p: &Prepared, on_event: &mut dyn FnMut(Progress)) -> Result<Generated> {
        self.check_memory(p)?;
        self.run(GenerateTask { p, on_event })
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
}

impl ModelTask for GenerateTask<'_> {
    type Output = Generated;
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Generated> {
        let (p, on_event, be) = (self.p, self.on_event, cx.be);
        let mut t = Timings::default();
        let spec = &p.plan.spec;
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
        on_event(Progress::Started(format!(
            "jenga: {} on {} | {}x{}x{} (frames x h x w), {} steps {}, shift {}, guidance {}, seed {}, policy {} | defaults: {}",
            p.source.name(), be.name(), spec.frames, spec.height, spec.width, spec.steps, spec.solver.name(), spec.stages[0].shift, spec.guidance, spec.seed, policy.name(), p.plan.family.source
        )));

        let t0 = Instant::now();
        let ctx =
            p.source
                .text_context(be, &model, &p.plan.prompt, &p.plan.negative, spec.guidance)?;
        be.synchronize()?;
        t.text = t0.elapsed();

        let out: SampleOutput =
            sample(
                be,
                model.as_ref(),
                &ctx,
                spec,
                policy,
                None,
                &mut |e| match e {
                    Event::Step {
                        step,
                        total,
                        computed,
                        ..
                    } => on_event(Progress::Step {
                        step,
                        total,
                        computed,
                    }),
                    Event::StageSwitch {
                        stage,
                        height,
                        width,
                        tokens,
                    } => on_event(Progress::StageSwitch {
                        stage,
                        height,
                        width,
                        tokens,
                    }),
                },
            )?;
        on_event(Progress::Sampled);
        t.dit = out.dit_time;

        let t0 = Instant::now();
        let video = crate::decode_video(p.source.vae(), &out.video, out.shape, 8)?;
        t.decode = t0.elapsed();
        Ok(Generated {
            video,
            upscale: p.upscale,
            timings: t,
            computed_steps: out.computed_steps,
            steps: spec.steps,
            density: policy.density_stats(),
            choices: p.policy.choices(),
        })
    }
}
