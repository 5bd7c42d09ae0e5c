//! The sampler with `--solver unipc` against Wan2.1's `FlowUniPCMultistepScheduler` and
//! diffusers' `UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")`
//! (`tools/make_unipc_golden.py`, goldens in `tests/fixtures/unipc/`): the whole trajectory of
//! an analytic velocity field under CFG, for 50 steps (shift 5 and 8) and other step counts,
//! and Jenga-Wan's ProRes switch sequence (two and three stages, Wan re-noise convention).
//! The "model" is the field itself, run through the real `sample` loop.

use jenga_carve::{AttentionPolicy, AttnCtx, Dense};
use jenga_models::{Conditioning, Denoiser, Result, SafetensorsWeights, WeightSource};
use jenga_pipeline::{sample_with_noise, Renoise, SampleSpec, SolverKind, StagePlan};
use jenga_tensor::{CpuBackend, CpuTensor, TensorMeta};
use std::path::PathBuf;
use std::sync::Arc;

const C: usize = 4;
const F: usize = 2;
const H: usize = 8;
const W: usize = 8;

/// `v = v_u + g·(v_c − v_u)` with `v_b(x, t) = a_b[ch]·x + b_b[ch]·t/1000 + c_b[ch]`; the
/// sampler does the guidance combine, so the head returns `[v_c; v_u]`.
struct Field {
    coef: [[Vec<f32>; 3]; 2],
    /// Every timestep the model was fed, in order.
    seen_t: std::sync::Mutex<Vec<f64>>,
    /// The latent entering each step (row 0 of the CFG batch: the model input).
    traj: std::sync::Mutex<Vec<Vec<f32>>>,
}

struct Step {
    x: CpuTensor,
    t: f64,
}

impl Denoiser<CpuBackend> for Field {
    type Stage = ();
    type Step = Step;
    type Cond = ();
    fn latent_channels(&self) -> usize {
        C
    }
    fn patch(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn num_layers(&self) -> usize {
        1
    }
    fn grid(&self, f: usize, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        Ok((f, h, w))
    }
    fn stage(
        &self,
        _: &CpuBackend,
        _: (usize, usize, usize),
        _: Option<Arc<Vec<u32>>>,
    ) -> Result<()> {
        Ok(())
    }
    fn stage_tokens(&self, _: &()) -> usize {
        0
    }
    fn condition(&self, _: &CpuBackend, _: &Conditioning<CpuBackend>) -> Result<()> {
        Ok(())
    }
    fn cond_batch(&self, _: &()) -> usize {
        2
    }
    fn embed(&self, _: &CpuBackend, x: &CpuTensor, t: f64, _: &(), _: &()) -> Result<Step> {
        self.seen_t.lock().unwrap().push(t);
        let d = x.data();
        self.traj.lock().unwrap().push(d[..d.len() / 2].to_vec());
        Ok(Step { x: x.clone(), t })
    }
    fn hidden<'a>(&self, step: &'a Step) -> &'a CpuTensor {
        &step.x
    }
    fn blocks(
        &self,
        _: &CpuBackend,
        step: &Step,
        _: &(),
        _: &(),
        _: &dyn AttentionPolicy<CpuBackend>,
        _: &AttnCtx,
    ) -> Result<CpuTensor> {
        Ok(step.x.clone())
    }
    fn head(&self, _: &CpuBackend, hidden: &CpuTensor, step: &Step, _: &()) -> Result<CpuTensor> {
        let shape = hidden.shape().to_vec();
        let per = shape[2] * shape[3] * shape[4];
        let tt = step.t as f32 / 1000.0;
        let x = hidden.data();
        let n = x.len() / 2;
        let mut v = vec![0f32; x.len()];
        for (b, coef) in self.coef.iter().enumerate() {
            for i in 0..n {
                let ch = i / per;
                v[b * n + i] = coef[0][ch] * x[b * n + i] + coef[1][ch] * tt + coef[2][ch];
            }
        }
        Ok(CpuTensor::new(v, &shape).unwrap())
    }
    fn skip_signal(&self, _: &CpuBackend, _: f64) -> Result<CpuTensor> {
        unreachable!("no skip in these runs")
    }
    fn teacache_coefficients(&self) -> Option<Vec<f64>> {
        None
    }
}

fn golden() -> SafetensorsWeights {
    golden_file("unipc.safetensors")
}

fn golden_file(file: &str) -> SafetensorsWeights {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/unipc"
    ))
    .join(file);
    SafetensorsWeights::open(&p)
        .unwrap_or_else(|e| panic!("golden {} unreadable: {e:?}", p.display()))
}

fn load(g: &SafetensorsWeights, name: &str, shape: &[usize]) -> Vec<f32> {
    g.load(name, shape)
        .unwrap_or_else(|e| panic!("golden tensor {name}: {e:?}"))
}

fn field(g: &SafetensorsWeights) -> Field {
    let l = |k: &str| load(g, k, &[C]);
    Field {
        coef: [
            [l("a_c"), l("b_c"), l("c_c")],
            [l("a_u"), l("b_u"), l("c_u")],
        ],
        seen_t: Default::default(),
        traj: Default::default(),
    }
}

/// Runs the sampler and returns (latent entering each step + the final one, timesteps fed).
fn run(model: &Field, spec: &SampleSpec, noises: Vec<Vec<f32>>) -> (Vec<Vec<f32>>, Vec<f64>) {
    let be = CpuBackend::new();
    model.seen_t.lock().unwrap().clear();
    model.traj.lock().unwrap().clear();
    let mut draw = |s: usize, n: usize| -> Result<Vec<f32>> {
        assert_eq!(noises[s].len(), n, "noise of stage {s}");
        Ok(noises[s].clone())
    };
    let out = sample_with_noise(&be, model, &(), spec, &Dense, &mut draw, &mut |_| {}).unwrap();
    let mut t = std::mem::take(&mut *model.traj.lock().unwrap());
    t.push(out.video);
    let seen = model.seen_t.lock().unwrap().clone();
    (t, seen)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn unipc_trajectories_equal_wan_and_diffusers() {
    let g = golden();
    let model = field(&g);
    let guidance = load(&g, "guidance", &[1])[0];
    let x0 = load(&g, "x0", &[C, F, H, W]);
    let n = C * F * H * W;
    for (steps, shift) in [
        (50, 5.0),
        (50, 8.0),
        (30, 3.0),
        (10, 3.0),
        (4, 1.0),
        (1, 5.0),
    ] {
        let name = format!("n{steps}_s{shift}");
        let mut spec = SampleSpec::single(F, H, W, steps, shift, guidance, 0);
        spec.solver = SolverKind::UniPc;
        let (traj, seen) = run(&model, &spec, vec![x0.clone()]);
        let t_gold = load(&g, &format!("{name}.t"), &[steps]);
        assert_eq!(
            seen,
            t_gold.iter().map(|&t| t as f64).collect::<Vec<_>>(),
            "{name}: timesteps fed to the model"
        );
        for reference in ["wan", "diffusers"] {
            let gold = load(&g, &format!("{name}.{reference}"), &[steps + 1, n]);
            let err = (0..=steps)
                .map(|i| max_abs(&traj[i], &gold[i * n..][..n]))
                .fold(0.0, f32::max);
            println!("{name} vs {reference}: trajectory max abs {err:.2e}");
            assert!(err <= 1e-5, "{name} vs {reference}: max abs {err}");
        }
        // Euler on the same grid is a different trajectory (the test can fail)
        if steps == 50 {
            let mut e = spec.clone();
            e.solver = SolverKind::Euler;
            let (et, _) = run(&model, &e, vec![x0.clone()]);
            let gold = load(&g, &format!("{name}.wan"), &[steps + 1, n]);
            assert!(max_abs(&et[steps], &gold[steps * n..]) > 1e-3);
        }
    }
}

/// One ProRes case against its golden `gold` (`NAME.x0`, `NAME.noiseK`, `NAME.traj`,
/// `NAME.t`): the timesteps fed and the whole trajectory to 1e-5, and `other` (another
/// re-noise convention) away from it, so the check sees the convention.
#[allow(clippy::too_many_arguments)]
fn check_prores(
    model: &Field,
    gold: &SafetensorsWeights,
    name: &str,
    solver: SolverKind,
    renoise: Renoise,
    other: Renoise,
    shifts: &[f64],
    ends: &[usize],
    res: &[f64],
    reference: &str,
) {
    let steps = 50;
    let n = C * F * H * W;
    let guidance = load(&golden(), "guidance", &[1])[0];
    let mut spec = SampleSpec::single(F, H, W, steps, shifts[0], guidance, 0);
    spec.solver = solver;
    spec.renoise = renoise;
    spec.stages = (0..shifts.len())
        .map(|s| StagePlan {
            res_rate: res[s],
            end_step: ends[s],
            shift: shifts[s],
        })
        .collect();
    let sizes: Vec<[usize; 4]> = res
        .iter()
        .map(|r| [C, F, (H as f64 * r) as usize, (W as f64 * r) as usize])
        .collect();
    let noises = || {
        let mut v = vec![load(gold, &format!("{name}.x0"), &sizes[0])];
        for (k, &sz) in sizes.iter().enumerate().skip(1) {
            v.push(load(gold, &format!("{name}.noise{k}"), &sz[..]));
        }
        v
    };
    let (traj, seen) = run(model, &spec, noises());
    // the references compute their timesteps in f32 (Hunyuan's linspace and shift are not
    // integers): equal to 3 f32 ulps at 1000 (seen: 1.1e-4 at step 15)
    let t_gold = load(gold, &format!("{name}.t"), &[steps]);
    assert_eq!(seen.len(), steps);
    for (i, (&a, &b)) in seen.iter().zip(&t_gold).enumerate() {
        assert!(
            (a - b as f64).abs() <= 4e-4,
            "{name}: step {i} fed t {a}, reference {b}"
        );
    }
    let want = load(gold, &format!("{name}.traj"), &[steps + 1, n]);
    let mut err = 0.0f32;
    for (i, x) in traj.iter().enumerate() {
        err = err.max(max_abs(x, &want[i * n..][..x.len()]));
    }
    println!("{name} vs {reference}: trajectory max abs {err:.2e}");
    assert!(err <= 1e-5, "{name}: max abs {err}");
    let mut o = spec.clone();
    o.renoise = other;
    let (ot, _) = run(model, &o, noises());
    assert!(max_abs(&ot[steps], &want[steps * n..]) > 1e-4);
}

#[test]
fn prores_switch_equals_jenga_wan() {
    let g = golden();
    let model = field(&g);
    check_prores(
        &model,
        &g,
        "prores2_n50",
        SolverKind::UniPc,
        Renoise::Wan,
        Renoise::Consistent,
        &[8.0, 10.0],
        &[26, 50],
        &[0.75, 1.0],
        "Jenga-Wan",
    );
    check_prores(
        &model,
        &g,
        "prores3_n50",
        SolverKind::UniPc,
        Renoise::Wan,
        Renoise::Consistent,
        &[5.0, 7.0, 9.0],
        &[16, 26, 50],
        &[0.5, 0.75, 1.0],
        "Jenga-Wan",
    );
}

/// The official HunyuanVideo switch (`tools/make_hunyuan_prores_golden.py`: Jenga's
/// `pipeline_hunyuan_video_prores.py` loop with its `FlowMatchDiscreteScheduler`): re-shift
/// first, x̂0 and re-noise on the new grid, Euler.
#[test]
fn prores_switch_equals_jenga_hunyuan() {
    let model = field(&golden());
    let g = golden_file("hunyuan.safetensors");
    check_prores(
        &model,
        &g,
        "hy_prores2_n50",
        SolverKind::Euler,
        Renoise::Hunyuan,
        Renoise::Wan,
        &[7.0, 9.0],
        &[26, 50],
        &[0.75, 1.0],
        "Jenga-HunyuanVideo",
    );
    check_prores(
        &model,
        &g,
        "hy_prores3_n50",
        SolverKind::Euler,
        Renoise::Hunyuan,
        Renoise::Wan,
        &[7.0, 9.0, 11.0],
        &[16, 26, 50],
        &[0.5, 0.75, 1.0],
        "Jenga-HunyuanVideo",
    );
}

#[test]
fn equal_resolution_stages_do_not_renoise() {
    // HunyuanVideo Base's 1.0 → 1.0 at 0.5: only the drop rate changes. With one shift the
    // run is the single-stage run bit for bit, for both solvers; nothing is re-noised.
    let g = golden();
    let model = field(&g);
    let x0 = load(&g, "x0", &[C, F, H, W]);
    for solver in [SolverKind::UniPc, SolverKind::Euler] {
        let mut one = SampleSpec::single(F, H, W, 20, 7.0, 5.0, 0);
        one.solver = solver;
        let mut two = one.clone();
        two.stages = vec![
            StagePlan {
                res_rate: 1.0,
                end_step: 11,
                shift: 7.0,
            },
            StagePlan {
                res_rate: 1.0,
                end_step: 20,
                shift: 7.0,
            },
        ];
        let plan = jenga_pipeline::step_plan(&two, [1, 1, 1]);
        assert!(plan.iter().all(|s| s.switch.is_none()));
        assert!(plan[11].stage == 1 && !plan[11].new_grid);
        let (a, _) = run(&model, &one, vec![x0.clone()]);
        // a re-noise would draw stage 1's noise: none is given, so drawing it would panic
        let (b, _) = run(&model, &two, vec![x0.clone()]);
        let first = (0..a.len()).find(|&i| a[i] != b[i]);
        assert_eq!(first, None, "{solver:?}: first differing step");
        // another shift in stage 1 steps on to its grid without a re-noise
        two.stages[1].shift = 9.0;
        let (c, seen) = run(&model, &two, vec![x0.clone()]);
        assert!(a[20] != c[20]);
        assert_eq!(seen[11], two.grid(1).t[11]);
        // steps 0..=10 are stage 0's; step 10 already steps to the new grid's σ[11]
        assert!(a[..11] == c[..11] && a[11] != c[11]);
    }
}
