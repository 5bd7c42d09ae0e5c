//! `jenga bench e2e`: whole generations of a Wan-size DiT (seeded random weights unless
//! `--model` is given), dense attention vs the Jenga presets, on the same model, prompt, seed
//! and steps. DiT time only (no VAE, nothing written): per-step figures, speed-up vs dense,
//! effective attention density per stage, and, with `--profile-masks`, the share of the DiT
//! time spent building masks (a separate run per preset in which every `plan()` call is
//! bracketed by device synchronisations; the timed runs have no extra sync).
//!
//! Runs are short (`--steps`, default 8); a 50-step figure is **extrapolated**: the mean time
//! of each kind of step measured here (per stage, computed or skipped) times the number of
//! such steps in the same preset's 50-step schedule.
//!
//! `--mask-kernels` adds the block-selection micro-benchmark: mask building through the policy
//! next to the sparse attention over the plan it built (20 % density), unfused (two poolings +
//! selection) and fused (block means written by RoPE, selection only), at Wan-1.3B 480p
//! (12 heads × 256 blocks) and HunyuanVideo 720p (24 heads × 931 blocks); with
//! `--skip-dense` and no `--presets` it runs alone.

use crate::args::{E2eArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use jenga_carve::jenga::{JengaConfig, JengaPolicy};
use jenga_carve::{AttentionPolicy, AttnCtx, Dense, DensityStats};
use jenga_engine::{
    plan, skip_name, Device, Engine, EngineBackend, GenerateRequest, ModelCx, ModelTask, Plan,
    PolicyOptions, Source,
};
use jenga_models::WanModel;
use jenga_pipeline::{sample, Event};
use jenga_tensor::{AttnPlan, Backend, FusedOps};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const PROMPT: &str = "a red circle moving right on a blue background";

pub fn run(
    e: &E2eArgs,
    model: &ModelArgs,
    json_path: Option<&Path>,
    engine: &Engine,
) -> Result<()> {
    let dev = engine.device();
    let mut model = model.clone();
    if model.model.is_none() && model.random_weights.is_none() {
        model.random_weights = Some("wan-1.3b".into());
    }
    let key = crate::request::model(&model)?;
    let src = Source::open(&key)?;
    if src.has_vae() {
        // a whole checkpoint: text encoder, DiT and VAE, end to end
        return crate::bench_pipeline::run(e, &key, json_path, engine);
    }
    if e.reference.is_some() || e.dir.is_some() {
        bail!("bench e2e: --reference and --dir are for whole checkpoints (--model DIR of a diffusers pipeline or the original Wan repo, or single files)");
    }
    let mut variants = Vec::new();
    if !e.skip_dense {
        variants.push(("dense".to_string(), None));
    }
    for p in e.presets.iter().filter(|p| !p.is_empty()) {
        variants.push((p.clone(), Some(p.clone())));
    }
    if variants.is_empty() && !e.mask_kernels {
        bail!("bench e2e: nothing to run (no presets and --skip-dense)");
    }
    // Resolve every variant (N steps, and the 50-step schedule for the extrapolation) first.
    let mut runs = Vec::new();
    for (name, preset) in &variants {
        let (ga, p) = resolve(e, preset.as_deref(), e.steps, &src)
            .with_context(|| format!("bench e2e: {name}"))?;
        let (_, p50) = resolve(e, preset.as_deref(), 50, &src)?;
        runs.push(Variant {
            name: name.clone(),
            jenga: ga,
            plan: p,
            plan50: p50,
        });
    }
    let mut out = crate::bench_e2e::open_json(json_path)?;
    if let Some(r) = runs.first() {
        let spec = &r.plan.spec;
        let cfg = src.config();
        let [pt, ph, pw] = cfg.patch_size;
        let tokens = (spec.frames / pt) * (spec.height / ph) * (spec.width / pw);
        let (lin, attn) = cfg.forward_flops(tokens, cfg.text_len, 1.0);
        let batch = if spec.guidance != 1.0 { 2.0 } else { 1.0 };
        let gflop = (lin + attn) * batch * (e.steps * runs.len()) as f64 / 1e9;
        crate::timing::warn_cpu_cost(
            matches!(dev, Device::Cpu(_)),
            model.threads,
            gflop,
            "bench e2e",
        );
    }
    if e.mask_kernels && !dev.is_cuda() {
        bail!("bench e2e: --mask-kernels needs --device cuda");
    }
    let mut lines = if runs.is_empty() {
        Vec::new()
    } else {
        engine.run(E2eTask {
            e,
            key: &key,
            src: &src,
            runs: &runs,
        })?
    };
    if let (Device::Cuda(be), true) = (dev, e.mask_kernels) {
        lines.extend(mask_kernels(be.as_ref())?);
    }
    if let Some(f) = out.as_mut() {
        for l in &lines {
            writeln!(f, "{l}")?;
        }
    }
    Ok(())
}

/// `--json FILE` opened for appending (None without the flag).
pub(crate) fn open_json(path: Option<&Path>) -> Result<Option<std::fs::File>> {
    path.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("--json {}", p.display()))
    })
    .transpose()
}

struct Variant {
    name: String,
    jenga: PolicyOptions,
    plan: Plan,
    plan50: Plan,
}

/// One variant's request (the `generate` defaults, this bench's size/steps/guidance and the
/// preset) → its resolved plan, with the same checks as `generate`.
fn resolve(
    e: &E2eArgs,
    preset: Option<&str>,
    steps: usize,
    src: &Source,
) -> Result<(PolicyOptions, Plan)> {
    let mut r = GenerateRequest::default();
    r.sampling.prompt = PROMPT.into();
    r.sampling.steps = Some(steps);
    r.sampling.guidance = e.guidance;
    r.video = jenga_engine::VideoSize {
        frames: e.size.frames,
        height: e.size.height,
        width: e.size.width,
    };
    if let Some(p) = preset {
        // NAME@P: the preset with its importance cutoff p replaced.
        let (name, p_remain) = match p.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        r.policy.preset = Some(name.to_string());
        if let Some(v) = p_remain {
            let v: f64 = v
                .parse()
                .map_err(|_| anyhow::anyhow!("--presets {p}: expected NAME@P with a number P"))?;
            r.policy.p_remain_rates = Some(vec![v]);
        }
    }
    let p = plan(&r, src)?;
    Ok((r.policy, p))
}

/// Per-step record of one run.
#[derive(Clone, Copy)]
struct Step {
    stage: usize,
    computed: bool,
    ms: f64,
}

struct RunResult {
    dit: Duration,
    steps: Vec<Step>,
    computed: usize,
    density: Vec<DensityStats>,
}

fn run_variant<B: jenga_engine::EngineBackend>(
    be: &B,
    model: &WanModel<B>,
    ctx: &B::Tensor,
    plan: &Plan,
    policy: &dyn AttentionPolicy<B>,
) -> Result<RunResult> {
    be.synchronize()?;
    let mut steps = Vec::new();
    let mut last = Duration::ZERO;
    let out = sample(be, model, ctx, &plan.spec, policy, None, &mut |ev| {
        if let Event::Step {
            stage,
            computed,
            elapsed,
            ..
        } = ev
        {
            // The sampler downloads v every step, so step boundaries are synchronised.
            steps.push(Step {
                stage,
                computed,
                ms: (elapsed - last).as_secs_f64() * 1e3,
            });
            last = elapsed;
        }
    })?;
    Ok(RunResult {
        dit: out.dit_time,
        steps,
        computed: out.computed_steps,
        density: policy.density_stats(),
    })
}

/// 50-step DiT time from the measured mean of each (stage, computed) kind of step.
fn extrapolate(steps: &[Step], plan50: &Plan) -> Option<f64> {
    let spec = &plan50.spec;
    let computed50: Vec<bool> = match &spec.skip {
        jenga_pipeline::SkipRule::Static(c) => c.clone(),
        jenga_pipeline::SkipRule::None => vec![true; spec.steps],
        // Which steps TeaCache computes depends on the trajectory: assume the measured
        // fraction (the mean step time over the run, times 50).
        jenga_pipeline::SkipRule::TeaCache { .. } => {
            let mean = steps.iter().map(|s| s.ms).sum::<f64>() / steps.len().max(1) as f64;
            return Some(mean * spec.steps as f64 / 1e3);
        }
    };
    let mean = |stage: usize, computed: bool| -> Option<f64> {
        let v: Vec<f64> = steps
            .iter()
            .filter(|s| s.stage == stage && s.computed == computed)
            .map(|s| s.ms)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut total = 0.0;
    for s in 0..spec.stages.len() {
        let (a, b) = spec.stage_range(s);
        for (i, &c) in computed50.iter().enumerate().take(b).skip(a) {
            // The first step of a stage always computes (no residual yet), as in the sampler.
            let c = c || i == a;
            total += mean(s, c).or_else(|| mean(s, true))?;
        }
    }
    Some(total / 1e3)
}

struct E2eTask<'a> {
    e: &'a E2eArgs,
    key: &'a jenga_engine::ModelSource,
    src: &'a Source,
    runs: &'a [Variant],
}

impl ModelTask for E2eTask<'_> {
    type Output = Vec<String>;
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Vec<String>> {
        let (model, load) = cx.model(self.key, self.src)?;
        bench_on(cx.be, &model, load, self.e, self.src, self.runs)
    }
}

fn bench_on<B: EngineBackend>(
    be: &B,
    model: &WanModel<B>,
    load: Duration,
    e: &E2eArgs,
    src: &Source,
    runs: &[Variant],
) -> Result<Vec<String>> {
    let cfg = src.config();
    let load_s = load.as_secs_f64();
    let spec0 = &runs[0].plan.spec;
    let text = src.text_context(be, model, PROMPT, "", spec0.guidance)?;
    let grid = model.grid(spec0.frames, spec0.height, spec0.width)?;
    let tokens = grid.0 * grid.1 * grid.2;
    println!("device: {}", be.name());
    println!(
        "model: {} (loaded in {load_s:.1}s) | latent {}x{}x{} = {tokens} tokens | {} steps, guidance {} (batch {}), seed 0",
        src.name(),
        spec0.frames,
        spec0.height,
        spec0.width,
        e.steps,
        spec0.guidance,
        if spec0.guidance != 1.0 { 2 } else { 1 },
    );
    // Warm-up: one dense step at every stage size any variant runs (kernel loading, allocator
    // growth, GEMM algorithm choice per shape), so no variant pays a first-use cost another
    // variant already paid.
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    for v in runs {
        for s in 0..v.plan.spec.stages.len() {
            let hw = v.plan.spec.stage_size(s, cfg.patch_size);
            if !sizes.contains(&hw) {
                sizes.push(hw);
            }
        }
    }
    let wt = Instant::now();
    for &(h, w) in &sizes {
        let warm = jenga_pipeline::SampleSpec::single(
            spec0.frames,
            h,
            w,
            1,
            spec0.stages[0].shift,
            spec0.guidance,
            0,
        );
        sample(be, model, &text, &warm, &Dense, None, &mut |_| {})?;
    }
    println!(
        "warm-up (1 dense step at each of {} stage sizes): {:.2}s",
        sizes.len(),
        wt.elapsed().as_secs_f64()
    );

    let mut lines = Vec::new();
    let mut dense_s: Option<(f64, Option<f64>)> = None;
    println!(
        "{:<11} {:>8} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9} {:<26} {:>8}",
        "variant",
        "DiT s",
        "ms/step",
        "ms/comp.",
        "computed",
        "speedup",
        "50-step s",
        "speedup",
        "density per stage",
        "masks"
    );
    for (k, v) in runs.iter().enumerate() {
        eprintln!("bench e2e: {} ({}/{}) …", v.name, k + 1, runs.len());
        let jp = match &v.plan.jenga {
            Some(js) if v.plan.policy == "jenga" => Some(jenga_engine::policy::jenga(
                js,
                &v.plan.spec,
                &v.jenga,
                cfg.patch_size,
                v.plan.family.presets,
            )?),
            _ => None,
        };
        let policy: &dyn AttentionPolicy<B> = match &jp {
            Some(j) => j,
            None => &Dense,
        };
        let r = run_variant(be, model, &text, &v.plan, policy)?;
        let dit_s = r.dit.as_secs_f64();
        let ext50 = extrapolate(&r.steps, &v.plan50);
        if v.name == "dense" {
            dense_s = Some((dit_s, ext50));
        }
        // Mask-building share: a separate run with every plan() call between two syncs.
        let masks = if e.profile_masks && jp.is_some() {
            if let Some(j) = &jp {
                j.reset_stats();
            }
            let timed = crate::timing::PlanClock::new(policy, true);
            let rp = run_variant(be, model, &text, &v.plan, &timed)?;
            let (secs, calls) = timed.spent();
            Some((secs * 1e3, calls, rp.dit.as_secs_f64()))
        } else {
            None
        };
        let n = r.steps.len().max(1);
        let comp_ms: Vec<f64> = r
            .steps
            .iter()
            .filter(|s| s.computed)
            .map(|s| s.ms)
            .collect();
        let ms_comp = comp_ms.iter().sum::<f64>() / comp_ms.len().max(1) as f64;
        let speed = dense_s.map(|(d, _)| d / dit_s);
        let speed50 = match (dense_s.and_then(|d| d.1), ext50) {
            (Some(d), Some(x)) => Some(d / x),
            _ => None,
        };
        let dens: Vec<f64> = r.density.iter().map(|d| d.mean_density).collect();
        let dens_txt = if dens.is_empty() {
            "100%".to_string()
        } else {
            dens.iter()
                .map(|d| format!("{:.1}%", 100.0 * d))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let masks_txt = masks.map_or("–".into(), |(ms, _, s)| {
            format!("{:.2}%", 100.0 * ms / (s * 1e3))
        });
        println!(
            "{:<11} {:>8.2} {:>9.0} {:>10.0} {:>9} {:>9} {:>10} {:>9} {:<26} {:>8}",
            v.name,
            dit_s,
            dit_s * 1e3 / n as f64,
            ms_comp,
            format!("{}/{}", r.computed, n),
            speed.map_or("–".into(), |x| format!("{x:.2}x")),
            ext50.map_or("–".into(), |x| format!("{x:.1}")),
            speed50.map_or("–".into(), |x| format!("{x:.2}x")),
            dens_txt,
            masks_txt
        );
        let stages: Vec<serde_json::Value> = (0..v.plan.spec.stages.len())
            .map(|s| {
                let (h, w) = v.plan.spec.stage_size(s, cfg.patch_size);
                let (a, b) = v.plan.spec.stage_range(s);
                let d = r.density.iter().find(|d| d.stage == s);
                let ms: Vec<f64> = r.steps.iter().filter(|x| x.stage == s).map(|x| x.ms).collect();
                json!({
                    "stage": s, "latent_hw": [h, w], "steps": [a, b],
                    "tokens": spec0.frames / cfg.patch_size[0] * (h / cfg.patch_size[1]) * (w / cfg.patch_size[2]),
                    "density": d.map(|d| d.mean_density),
                    "sparse_density": d.map(|d| d.mean_sparse_density),
                    "sparse_calls": d.map(|d| d.sparse_calls), "calls": d.map(|d| d.calls),
                    "step_ms": ms.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>(),
                })
            })
            .collect();
        let js = v.plan.jenga.as_ref();
        lines.push(
            json!({
                "bench": "e2e", "name": format!("e2e {} {}", src.name(), v.name),
                "variant": v.name, "device": be.name(), "model": src.name(),
                "latent": [spec0.frames, spec0.height, spec0.width], "tokens": tokens,
                "guidance": v.plan.spec.guidance, "steps": n, "computed_steps": r.computed,
                "skip": skip_name(&v.plan.spec.skip, r.computed),
                "drop_rates": js.map(|s| s.sa_drop_rates.clone()),
                "p_remain": js.map(|s| s.p_remain_rates.clone()),
                "res_rates": js.map(|s| s.res_rate_list.clone()),
                "dit_s": round(dit_s, 3), "ms_per_step": round(dit_s * 1e3 / n as f64, 1),
                "ms_per_computed_step": round(ms_comp, 1),
                "speedup_vs_dense": speed.map(|x| round(x, 3)),
                "extrapolated_50_steps_s": ext50.map(|x| round(x, 2)),
                "extrapolated_speedup_50": speed50.map(|x| round(x, 3)),
                "stages": stages,
                "mask_ms": masks.map(|m| round(m.0, 2)), "mask_calls": masks.map(|m| m.1),
                "profiled_dit_s": masks.map(|m| round(m.2, 3)),
                "mask_share": masks.map(|m| round(m.0 / (m.2 * 1e3), 5)),
            })
            .to_string(),
        );
    }
    if runs.iter().any(|v| v.plan.jenga.is_some()) {
        println!(
            "(50-step s: extrapolated from the mean measured time of each kind of step — stage, computed or skipped — over the preset's 50-step schedule (TeaCache: the measured mean step time x 50); masks: share of the DiT time in plan() calls, from a separate synchronised run)"
        );
    }
    Ok(lines)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// `[1, L, H, D]` (bf16-exact) with one random mean per 128-token block and head plus
/// per-token noise, so pooled scores spread as in a real model.
fn structured(l: usize, h: usize, d: usize, seed: u64) -> Vec<f32> {
    let nb = l.div_ceil(128);
    let means = jenga_pipeline::noise(seed, nb * h * d);
    let noise = jenga_pipeline::noise(seed + 1, 128 * h * d);
    let mut x = vec![0f32; l * h * d];
    for (t, row) in x.chunks_mut(h * d).enumerate() {
        let (m, z) = (
            &means[t / 128 * h * d..][..h * d],
            &noise[t % 128 * h * d..][..h * d],
        );
        for ((o, a), b) in row.iter_mut().zip(m).zip(z) {
            *o = 0.35 * a + b;
        }
    }
    x
}

/// Mask building vs sparse attention over the plan it built, at the density `DENSITY` (the
/// cutoff p is bisected until the plan keeps that share of the blocks). Two ways of building:
/// unfused (`plan`: pool q and k, then select + scan + expand) and fused (RoPE writes the
/// block means, `rope_pooled`; `plan_pooled` runs select + scan + expand only), whose cost is
/// the selection plus what `rope_pooled` adds over plain `rope` for q and k.
fn mask_kernels(be: &jenga_cuda::CudaBackend) -> Result<Vec<String>> {
    use jenga_carve::BlockSelect;
    use jenga_carve::Layout;
    const DENSITY: f64 = 0.20;
    let mut lines = Vec::new();
    println!(
        "mask building vs sparse attention (one layer, batch 1, density ≈ {:.0}%):",
        100.0 * DENSITY
    );
    // (label, config for a cutoff p, grid, condition tokens, heads)
    type MakeCfg = fn(f64) -> JengaConfig;
    type Case = (&'static str, MakeCfg, (usize, usize, usize), usize, usize);
    let cases: [Case; 2] = [
        (
            "wan-1.3b 480p 12x256 blocks",
            |p| JengaConfig::wan(&[0.95, 0.95], p),
            (21, 30, 52),
            0,
            12,
        ),
        (
            "hunyuan 720p 24x931 blocks",
            |p| JengaConfig::hunyuan(&[0.95], p, &[1.0]),
            (33, 45, 80),
            256,
            24,
        ),
    ];
    for (label, make, grid, cond, h) in cases {
        let d = 128;
        let l = grid.0 * grid.1 * grid.2 + cond;
        // Pre-RoPE q/k and RoPE tables; q/k = their rotation, as the model has them.
        let xq = be.upload(&structured(l, h, d, 21), &[1, l, h, d])?;
        let xk = be.upload(&structured(l, h, d, 23), &[1, l, h, d])?;
        let ang = jenga_pipeline::noise(25, l * d / 2);
        let cos: Vec<f32> = ang.iter().map(|a| (3.0 * a).cos()).collect();
        let sin: Vec<f32> = ang.iter().map(|a| (3.0 * a).sin()).collect();
        let (cos, sin) = (be.upload(&cos, &[l, d / 2])?, be.upload(&sin, &[l, d / 2])?);
        let q = be.rope(&xq, &cos, &sin)?;
        let k = be.rope(&xk, &cos, &sin)?;
        let ctx = AttnCtx {
            step: 30,
            num_steps: 50,
            layer: 0,
            num_layers: 1,
            stage: 0,
            grid,
            cond_tokens: cond,
        };
        // Cutoff p for the target density (bisection on the device-built plan).
        let probe = JengaPolicy::new(make(0.5))?;
        let m = AttentionPolicy::<jenga_cuda::CudaBackend>::pooled_block(&probe, &ctx)
            .context("mask kernels: the benchmark call must be sparse")?;
        let (qh, kh) = be.block_mean_pool_pair(&q, &k, m)?;
        let layout = Layout::new(grid.0 * grid.1 * grid.2, cond, m)?;
        let fixed = probe.fixed_plan(&ctx)?;
        let density_at = |p: f64| -> Result<f64> {
            let sel = BlockSelect {
                block: m,
                scored_blocks: layout.video_blocks,
                p: p as f32,
                top_k: layout.top_k(probe.drop_rate(&ctx).0),
                fixed: fixed.clone(),
            };
            Ok(match be.select_blocks_pooled(&qh, &kh, &sel)? {
                Some(AttnPlan::Device(dp)) => dp.density()?,
                _ => bail!("mask kernels: no device plan"),
            })
        };
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        if density_at(lo)? >= DENSITY {
            hi = lo;
        } else {
            for _ in 0..14 {
                let mid = 0.5 * (lo + hi);
                if density_at(mid)? < DENSITY {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
        let p = if (density_at(lo)? - DENSITY).abs() <= (density_at(hi)? - DENSITY).abs() {
            lo
        } else {
            hi
        };
        let pol = JengaPolicy::new(make(p))?;
        let plan = pol.plan(be, &q, &k, &ctx)?;
        let density = match &plan {
            AttnPlan::Device(dp) => dp.density()?,
            AttnPlan::Sparse(p) => p.density(),
            AttnPlan::Dense => 1.0,
        };
        let timeit = |n: usize, f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
            f()?;
            be.synchronize()?;
            let t = Instant::now();
            for _ in 0..n {
                f()?;
            }
            be.synchronize()?;
            Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
        };
        // Unfused: pool q and k + select/scan/expand.
        let build = timeit(50, &mut || {
            pol.plan(be, &q, &k, &ctx)?;
            Ok(())
        })?;
        let pool = timeit(50, &mut || {
            be.block_mean_pool_pair(&q, &k, m)?;
            Ok(())
        })?;
        // Fused: select/scan/expand from the means RoPE wrote, + RoPE's extra cost.
        let (q2, qh2) = be.rope_pooled(&xq, &cos, &sin, m)?;
        let (k2, kh2) = be.rope_pooled(&xk, &cos, &sin, m)?;
        let pooled = qh2.as_ref().zip(kh2.as_ref());
        let select = timeit(50, &mut || {
            pol.plan_pooled(be, &q2, &k2, pooled, &ctx)?;
            Ok(())
        })?;
        let rope = timeit(20, &mut || {
            be.rope(&xq, &cos, &sin)?;
            be.rope(&xk, &cos, &sin)?;
            Ok(())
        })?;
        let rope_pooled = timeit(20, &mut || {
            be.rope_pooled(&xq, &cos, &sin, m)?;
            be.rope_pooled(&xk, &cos, &sin, m)?;
            Ok(())
        })?;
        let fused = select + (rope_pooled - rope).max(0.0);
        let attn = timeit(5, &mut || {
            be.attention(&q, &k, &q, &plan, None)?;
            Ok(())
        })?;
        // What building adds to a layer when queued with the attention (launch overhead on
        // the host hidden, as in the model): unfused plan + attention, and fused RoPE + plan +
        // attention against plain RoPE + attention.
        let both = timeit(5, &mut || {
            let p = pol.plan(be, &q, &k, &ctx)?;
            be.attention(&q, &k, &q, &p, None)?;
            Ok(())
        })?;
        let marginal = (both - attn).max(0.0);
        let layer_plain = timeit(5, &mut || {
            let (a, b) = (be.rope(&xq, &cos, &sin)?, be.rope(&xk, &cos, &sin)?);
            be.attention(&a, &b, &a, &plan, None)?;
            Ok(())
        })?;
        let layer_fused = timeit(5, &mut || {
            let (a, ah) = be.rope_pooled(&xq, &cos, &sin, m)?;
            let (b, bh) = be.rope_pooled(&xk, &cos, &sin, m)?;
            let p = pol.plan_pooled(be, &a, &b, ah.as_ref().zip(bh.as_ref()), &ctx)?;
            be.attention(&a, &b, &a, &p, None)?;
            Ok(())
        })?;
        let fused_marginal = (layer_fused - layer_plain).max(0.0);
        let host_pol = JengaPolicy::new(make(p))?;
        host_pol.set_device_select(false);
        let host = timeit(3, &mut || {
            host_pol.plan(be, &q, &k, &ctx)?;
            Ok(())
        })?;
        println!(
            "  {label}: density {:.1}% (p {p:.4}) | sparse attention {attn:.3} ms\n    unfused: pool+select+scan+expand {build:.3} ms (pooling alone {pool:.3}) = {:.2}% of attention, {marginal:.3} ms added to a layer = {:.2}%\n    fused:   select+scan+expand {select:.3} ms + RoPE extra {:.3} ms (rope q+k {rope:.3} → {rope_pooled:.3} ms) = {fused:.3} ms = {:.2}% of attention, {fused_marginal:.3} ms added to a layer = {:.2}%\n    (host-built plan: {host:.2} ms)",
            100.0 * density,
            100.0 * build / attn,
            100.0 * marginal / attn,
            (rope_pooled - rope).max(0.0),
            100.0 * fused / attn,
            100.0 * fused_marginal / attn,
        );
        lines.push(
            json!({
                "bench": "mask_building", "name": format!("mask building {label}"),
                "device": be.name(), "density": round(density, 4), "p": round(p, 5),
                "reference": "sparse attention over the same plan", "reference_ms": round(attn, 3),
                "ours_ms": round(build, 4), "ratio": round(build / attn, 5),
                "pool_ms": round(pool, 4),
                "marginal_ms": round(marginal, 4), "marginal_ratio": round(marginal / attn, 5),
                "fused_select_ms": round(select, 4), "rope_ms": round(rope, 4),
                "rope_pooled_ms": round(rope_pooled, 4), "fused_ms": round(fused, 4),
                "fused_ratio": round(fused / attn, 5),
                "fused_marginal_ms": round(fused_marginal, 4),
                "fused_marginal_ratio": round(fused_marginal / attn, 5),
                "host_plan_ms": round(host, 3),
            })
            .to_string(),
        );
    }
    Ok(lines)
}
