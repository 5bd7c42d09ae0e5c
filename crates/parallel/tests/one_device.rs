//! Several ranks (threads with `LocalComm`) give what one device gives, on the embedded
//! tiny-wan in f32: one forward under every layout of 2, 3 and 4 ranks (Ulysses, ring, CFG
//! parallel and their products) with dense, Jenga, Draft and SVG plans, and a whole
//! generation with ProRes and step skip.

use jenga_carve::{
    AttentionPolicy, AttnCtx, Dense, DraftConfig, DraftPolicy, JengaConfig, JengaPolicy, SvgConfig,
    SvgPolicy,
};
use jenga_models::{Conditioning, Denoiser, ModelBundle, WanModel};
use jenga_parallel::{Parallel, ParallelLayout};
use jenga_pipeline::{sample, SampleSpec, SkipRule, StagePlan};
use jenga_tensor::{run_local, Backend, Communicator, CpuBackend};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);
/// Pixel-space tiny-wan: 8 frames of 32×32 → a grid of 8×16×16 = 2048 tokens (16 blocks).
const VIDEO: (usize, usize, usize) = (8, 32, 32);

fn lay(cfg: usize, ring: usize, ulysses: usize) -> ParallelLayout {
    ParallelLayout { cfg, ring, ulysses }
}

/// Every layout of 2, 3 and 4 ranks the tiny model (2 heads) allows.
fn layouts() -> Vec<ParallelLayout> {
    vec![
        lay(1, 1, 2),
        lay(1, 2, 1),
        lay(2, 1, 1),
        lay(1, 3, 1),
        lay(2, 1, 2),
        lay(1, 2, 2),
        lay(1, 4, 1),
        lay(2, 2, 1),
    ]
}

fn policy(name: &str) -> Box<dyn AttentionPolicy<CpuBackend>> {
    match name {
        "dense" => Box::new(Dense),
        "jenga" => Box::new(JengaPolicy::new(JengaConfig::wan(&[0.8], 0.3)).unwrap()),
        "draft" => Box::new(DraftPolicy::new(DraftConfig::default()).unwrap()),
        "svg" => Box::new(SvgPolicy::new(SvgConfig::default()).unwrap()),
        _ => unreachable!(),
    }
}

struct Setup {
    bundle: ModelBundle,
    model: WanModel<CpuBackend>,
    /// Conditional and unconditional text states `[2, text_len, text_dim]`.
    states: Vec<f32>,
    x: Vec<f32>,
}

fn setup() -> Setup {
    let be = CpuBackend::new();
    let bundle = ModelBundle::embedded().unwrap();
    let model = WanModel::load(&be, &bundle.config, &bundle.weights).unwrap();
    let mut states = bundle.encode_prompt("a red circle moving right").unwrap();
    states.extend(bundle.encode_prompt("").unwrap());
    let (f, h, w) = VIDEO;
    let n = 2 * bundle.config.in_dim * f * h * w;
    let x = jenga_pipeline::noise(11, n);
    Setup {
        bundle,
        model,
        states,
        x,
    }
}

fn text<B: Backend>(be: &B, s: &Setup) -> Conditioning<B> {
    let c = &s.bundle.config;
    Conditioning::Text {
        states: be.upload(&s.states, &[2, c.text_len, c.text_dim]).unwrap(),
    }
}

/// One forward of `model` at a sparse step of a 50-step run (Jenga and SVG plan there).
fn forward<M: Denoiser<CpuBackend>>(
    be: &CpuBackend,
    model: &M,
    s: &Setup,
    pol: &dyn AttentionPolicy<CpuBackend>,
) -> jenga_models::Result<Vec<f32>> {
    let c = &s.bundle.config;
    let (f, h, w) = VIDEO;
    let cond = model.condition(be, &text(be, s))?;
    let grid = model.grid(f, h, w)?;
    let stage = model.stage(be, grid, pol.token_order(grid))?;
    let x = be.upload(&s.x, &[2, c.in_dim, f, h, w])?;
    let step = model.embed(be, &x, 700.0, &stage, &cond)?;
    let actx = AttnCtx {
        step: 30,
        num_steps: 50,
        ..AttnCtx::one_forward(grid, model.num_layers())
    };
    let hid = model.blocks(be, &step, &cond, &stage, pol, &actx)?;
    let v = model.head(be, &hid, &step, &stage)?;
    Ok(be.download(&v)?)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn parallel_forward_equals_one_device() {
    let s = setup();
    let be = CpuBackend::new();
    for name in ["dense", "jenga", "draft", "svg"] {
        let pol = policy(name);
        let want = forward(&be, &s.model, &s, pol.as_ref()).unwrap();
        let density = pol.density_stats();
        if name != "dense" {
            // the check is only worth something where the plans are sparse
            assert!(
                density.iter().any(|d| d.mean_density < 0.9),
                "{name}: {density:?}"
            );
        }
        for layout in layouts() {
            if name == "svg" && layout.ring > 1 {
                continue; // refused (tested below)
            }
            let got = run_local::<CpuBackend, _, jenga_models::ModelError, _>(
                layout.world(),
                TIMEOUT,
                |_, comm| {
                    let pol = policy(name);
                    let par = Parallel::new(&s.model, comm as &dyn Communicator<_>, layout)?;
                    forward(&be, &par, &s, pol.as_ref())
                },
            )
            .unwrap_or_else(|e| panic!("{name} {layout}: {e}"));
            for (rank, v) in got.iter().enumerate() {
                let err = max_abs(v, &want);
                assert!(
                    err <= 1e-5,
                    "{name} {layout} rank {rank}: max-abs {err:.3e}"
                );
            }
            println!("{name:5} {layout}: every rank within 1e-5 of one device");
        }
    }
}

#[test]
fn a_whole_generation_with_prores_and_skip_is_the_one_device_video() {
    let s = setup();
    let be = CpuBackend::new();
    let (f, h, w) = VIDEO;
    let mut spec = SampleSpec::single(f, h, w, 8, 5.0, 4.0, 3);
    spec.stages = vec![
        StagePlan {
            res_rate: 0.5,
            end_step: 3,
            shift: 5.0,
        },
        StagePlan {
            res_rate: 1.0,
            end_step: 8,
            shift: 5.0,
        },
    ];
    spec.skip = SkipRule::Static(vec![true, false, true, true, true, false, true, true]);
    let run = |model: &dyn Fn(&CpuBackend) -> jenga_models::Result<Vec<f32>>| model(&be);
    let one = |be: &CpuBackend| -> jenga_models::Result<Vec<f32>> {
        let pol = JengaPolicy::new(JengaConfig::wan(&[0.7, 0.8], 0.3))?;
        let cond = s.model.condition(be, &text(be, &s))?;
        Ok(sample(be, &s.model, &cond, &spec, &pol, None, &mut |_| {})?.video)
    };
    let want = run(&one).unwrap();
    for layout in [lay(1, 1, 2), lay(1, 3, 1), lay(2, 1, 2)] {
        let got = run_local::<CpuBackend, _, jenga_models::ModelError, _>(
            layout.world(),
            TIMEOUT,
            |_, comm| {
                let pol = JengaPolicy::new(JengaConfig::wan(&[0.7, 0.8], 0.3))?;
                let par = Parallel::new(&s.model, comm as &dyn Communicator<_>, layout)?;
                let cond = par.condition(&be, &text(&be, &s))?;
                let out = sample(&be, &par, &cond, &spec, &pol, None, &mut |_| {})?;
                assert_eq!(out.computed_steps, 6);
                Ok(out.video)
            },
        )
        .unwrap_or_else(|e| panic!("{layout}: {e}"));
        for (rank, v) in got.iter().enumerate() {
            let err = max_abs(v, &want);
            assert!(err <= 1e-5, "{layout} rank {rank}: max-abs {err:.3e}");
        }
    }
}

#[test]
fn layouts_that_cannot_run_are_refused_before_compute() {
    let s = setup();
    let be = CpuBackend::new();
    // ring with SVG's per-head token order
    let svg = SvgPolicy::new(SvgConfig::default()).unwrap();
    let e = lay(1, 2, 1)
        .check(2, 2, AttentionPolicy::<CpuBackend>::per_head_order(&svg))
        .unwrap_err();
    assert!(e.contains("SVG"), "{e}");
    // three Ulysses ranks for two heads
    assert!(lay(1, 1, 3)
        .check(2, 2, false)
        .unwrap_err()
        .contains("heads"));
    // more sequence ranks than blocks of tokens: 16 blocks, 32 ranks
    let err = run_local::<CpuBackend, (), jenga_models::ModelError, _>(32, TIMEOUT, |_, comm| {
        let par = Parallel::new(&s.model, comm as &dyn Communicator<_>, lay(1, 32, 1))?;
        par.stage(&be, (8, 16, 16), None)?;
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("fewer than one block"), "{err}");
    // a communicator of the wrong size
    let err = run_local::<CpuBackend, (), jenga_models::ModelError, _>(2, TIMEOUT, |_, comm| {
        Parallel::new(&s.model, comm as &dyn Communicator<_>, lay(1, 1, 4))?;
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs 4 ranks"), "{err}");
}
