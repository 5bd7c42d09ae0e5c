//! HunyuanVideo's joint attention under Ulysses (threads with `LocalComm`): every rank holds
//! the whole text, the video rows trade tokens for heads. The reduced-width transformer of
//! `tests/fixtures/hunyuan_dit/` on a 4x32x48 latent (1536 video tokens + 5 text tokens) gives
//! the one-device velocity, dense and with Jenga's plans and text amplifier, and a ProRes +
//! skip generation gives the one-device latent; a ring is refused.

use jenga_carve::{AttentionPolicy, AttnCtx, Dense, JengaConfig, JengaPolicy};
use jenga_models::hunyuan::{HunyuanConfig, HunyuanModel};
use jenga_models::{Conditioning, Denoiser, ModelError, SafetensorsWeights, WeightSource};
use jenga_parallel::{Parallel, ParallelLayout};
use jenga_pipeline::{sample, SampleSpec, SkipRule, SolverKind, StagePlan};
use jenga_tensor::{run_local, Backend, Communicator, CpuBackend};
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const SIZE: (usize, usize, usize) = (4, 32, 48);

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hunyuan_dit"
    ))
    .join(p)
}

struct Setup {
    model: HunyuanModel<CpuBackend>,
    text: Vec<f32>,
    pooled: Vec<f32>,
    x: Vec<f32>,
}

fn setup() -> Setup {
    let be = CpuBackend::new();
    let cfg = HunyuanConfig::from_json(
        &std::fs::read_to_string(fixture("transformer/config.json")).unwrap(),
    )
    .unwrap();
    let w = SafetensorsWeights::open(&fixture("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let model = HunyuanModel::load(&be, &cfg, &w).unwrap();
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    let (f, h, w) = SIZE;
    Setup {
        model,
        text: g.load("text", &[1, 7, 40]).unwrap(),
        pooled: g.load("pooled", &[1, 24]).unwrap(),
        x: jenga_pipeline::noise(5, 4 * f * h * w),
    }
}

fn cond<B: Backend>(be: &B, s: &Setup) -> Conditioning<B> {
    Conditioning::JointText {
        states: be.upload(&s.text, &[1, 7, 40]).unwrap(),
        lens: vec![5],
        pooled: be.upload(&s.pooled, &[1, 24]).unwrap(),
        guidance: Some(6.0),
    }
}

fn jenga() -> JengaPolicy {
    // first stage of a two-stage run at a quarter of the tokens: sparse, amplified
    JengaPolicy::new(JengaConfig::hunyuan(&[0.6, 0.6], 0.3, &[0.25, 1.0])).unwrap()
}

fn forward<M: Denoiser<CpuBackend>>(
    be: &CpuBackend,
    m: &M,
    s: &Setup,
    pol: &dyn AttentionPolicy<CpuBackend>,
) -> Result<Vec<f32>, ModelError> {
    let (f, h, w) = SIZE;
    let c = m.condition(be, &cond(be, s))?;
    let grid = m.grid(f, h, w)?;
    let stage = m.stage(be, grid, pol.token_order(grid))?;
    let x = be.upload(&s.x, &[1, 4, f, h, w])?;
    let step = m.embed(be, &x, 700.0, &stage, &c)?;
    let actx = AttnCtx {
        step: 10,
        num_steps: 50,
        cond_tokens: m.cond_tokens(&c),
        ..AttnCtx::one_forward(grid, m.num_layers())
    };
    let hid = m.blocks(be, &step, &c, &stage, pol, &actx)?;
    Ok(be.download(&m.head(be, &hid, &step, &stage)?)?)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ulysses(n: usize) -> ParallelLayout {
    ParallelLayout {
        cfg: 1,
        ring: 1,
        ulysses: n,
    }
}

#[test]
fn joint_attention_under_ulysses_equals_one_device() {
    let s = setup();
    let be = CpuBackend::new();
    for name in ["dense", "jenga"] {
        let pol: Box<dyn AttentionPolicy<CpuBackend>> = match name {
            "dense" => Box::new(Dense),
            _ => Box::new(jenga()),
        };
        let want = forward(&be, &s.model, &s, pol.as_ref()).unwrap();
        if name == "jenga" {
            assert!(pol.density_stats().iter().any(|d| d.mean_density < 0.9));
        }
        let got = run_local::<CpuBackend, _, ModelError, _>(2, T, |_, comm| {
            let pol: Box<dyn AttentionPolicy<CpuBackend>> = match name {
                "dense" => Box::new(Dense),
                _ => Box::new(jenga()),
            };
            let par = Parallel::new(&s.model, comm as &dyn Communicator<_>, ulysses(2))?;
            forward(&be, &par, &s, pol.as_ref())
        })
        .unwrap();
        for (rank, v) in got.iter().enumerate() {
            let e = max_abs(v, &want);
            assert!(e <= 1e-5, "{name} rank {rank}: max-abs {e:.3e}");
        }
    }
}

#[test]
fn a_prores_and_skip_generation_under_ulysses_is_the_one_device_latent() {
    let s = setup();
    let be = CpuBackend::new();
    let (f, h, w) = SIZE;
    let mut spec = SampleSpec::single(f, h, w, 6, 7.0, 1.0, 2);
    spec.solver = SolverKind::Euler;
    spec.renoise = jenga_pipeline::Renoise::Hunyuan;
    spec.stages = vec![
        StagePlan {
            res_rate: 0.5,
            end_step: 3,
            shift: 7.0,
        },
        StagePlan {
            res_rate: 1.0,
            end_step: 6,
            shift: 9.0,
        },
    ];
    spec.skip = SkipRule::Static(vec![true, false, true, true, false, true]);
    let one = {
        let c = s.model.condition(&be, &cond(&be, &s)).unwrap();
        sample(&be, &s.model, &c, &spec, &jenga(), None, &mut |_| {}).unwrap()
    };
    let got = run_local::<CpuBackend, _, ModelError, _>(2, T, |_, comm| {
        let par = Parallel::new(&s.model, comm as &dyn Communicator<_>, ulysses(2))?;
        let c = par.condition(&be, &cond(&be, &s))?;
        Ok(sample(&be, &par, &c, &spec, &jenga(), None, &mut |_| {})?.video)
    })
    .unwrap();
    for v in &got {
        let e = max_abs(v, &one.video);
        assert!(e <= 1e-5, "max-abs {e:.3e}");
    }
}

#[test]
fn a_ring_with_joint_attention_is_refused() {
    let s = setup();
    let be = CpuBackend::new();
    let err = run_local::<CpuBackend, (), ModelError, _>(2, T, |_, comm| {
        let ring = ParallelLayout {
            cfg: 1,
            ring: 2,
            ulysses: 1,
        };
        let par = Parallel::new(&s.model, comm as &dyn Communicator<_>, ring)?;
        forward(&be, &par, &s, &Dense)?;
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--ulysses"), "{err}");
}
