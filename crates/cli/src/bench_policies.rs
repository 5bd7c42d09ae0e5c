//! `jenga bench policies`: the attention policies side by side on one prompt, size and seed —
//! dense (the reference), Jenga, Sparse VideoGen, DraftAttention, or any variant given as
//! `generate` policy flags — with density, attention recall, PSNR/SSIM against dense, wall and
//! CPU time and speed-up, in one table (and, with `--report FILE`, in a marked section of a
//! markdown file such as docs/POLICIES.md).
//!
//! Recall is measured by [`Probe`] on sampled query rows of every `--recall-every`-th step. On
//! the CPU the time it takes (host f64 scores) is measured around it and subtracted, so times
//! are those of the policy alone (plan building included). On a GPU each variant runs twice:
//! timed, with plans built and kept on the device as in `generate`, then (when recall is
//! asked for) once more with plans downloaded for the probe, untimed. Before any timing on a
//! GPU, one dense step and one plan + attention call per variant compile the kernels.

use crate::args::{ModelArgs, PoliciesArgs, RunArgs};
use crate::timing::PlanClock;
use anyhow::{bail, Context, Result};
use clap::Parser;
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_engine::policy::build;
use jenga_engine::{plan, Engine, EngineBackend, ModelCx, ModelTask, Plan, Policy, Source};
use jenga_models::WanModel;
use jenga_pipeline::metrics::{psnr, ssim};
use jenga_pipeline::probe::Probe;
use jenga_pipeline::{sample, SampleOutput};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// A variant's `generate` flags, parsed by clap exactly as on the command line.
#[derive(Parser, Debug)]
#[command(name = "variant", no_binary_name = true)]
struct VariantFlags {
    #[command(flatten)]
    gen: RunArgs,
}

/// `generate` arguments for one variant (`policy` + extra flags) of this bench.
fn gen_args(p: &PoliciesArgs, model: &ModelArgs, variant: &str) -> Result<RunArgs> {
    let mut words: Vec<String> = variant.split_whitespace().map(String::from).collect();
    let Some(name) = words.first().cloned() else {
        bail!("--variants: empty variant");
    };
    jenga_engine::policy::check_name(&name).with_context(|| format!("--variants `{variant}`"))?;
    words.remove(0);
    let mut argv: Vec<String> = vec![
        "--prompt".into(),
        p.prompt.clone(),
        "--policy".into(),
        name,
        "--seed".into(),
        p.seed.to_string(),
    ];
    argv.extend(p.size.to_argv());
    if let Some(v) = p.steps {
        argv.extend(["--steps".to_string(), v.to_string()]);
    }
    argv.extend(words);
    let mut g = VariantFlags::try_parse_from(&argv)
        .map_err(|e| {
            let msg = e.to_string();
            anyhow::anyhow!(
                "--variants `{variant}`: {}",
                msg.lines()
                    .next()
                    .unwrap_or("bad flags")
                    .trim_start_matches("error: ")
            )
        })?
        .gen;
    g.model = model.clone();
    Ok(g)
}

/// One row of the table.
struct Row {
    label: String,
    settings: String,
    notes: String,
    wall: f64,
    cpu: Option<f64>,
    density: f64,
    sparse_density: Option<f64>,
    recall: Option<f64>,
    psnr: f64,
    ssim: f64,
}

struct Variant {
    label: String,
    plan: Plan,
    policy: Policy,
}

pub fn run(
    p: &PoliciesArgs,
    model: &ModelArgs,
    json: Option<&Path>,
    engine: &Engine,
) -> Result<()> {
    if let Some(r) = &p.report {
        jenga_video::check_parent_writable(r)
            .with_context(|| format!("--report {}", r.display()))?;
    }
    let key = crate::request::model(model)?;
    let src = Source::open(&key)?;
    let patch = src.config().patch_size;
    // Every variant is resolved (flags checked, policies built) before any compute.
    let dense_args = gen_args(p, model, "dense")?;
    let dense = plan(&crate::request::generate(&dense_args, None)?, &src)?;
    let mut vars = Vec::new();
    for v in &p.variants {
        let g = gen_args(p, model, v)?;
        let pl = plan(&crate::request::generate(&g, None)?, &src)
            .with_context(|| format!("--variants `{v}`"))?;
        if pl.spec.stages.len() != 1 || pl.spec.steps != dense.spec.steps {
            bail!("--variants `{v}`: ProRes stages are not compared here (one stage, same steps as dense)");
        }
        let policy = build(&pl, &crate::request::policy(&g.jenga), patch)
            .with_context(|| format!("--variants `{v}`"))?;
        vars.push(Variant {
            label: v.trim().to_string(),
            plan: pl,
            policy,
        });
    }
    let cpu_device = !engine.device().is_cuda();
    let dev_name = engine.device().name();
    let rows = engine.run(PoliciesTask {
        p,
        key: &key,
        src: &src,
        dense: &dense,
        vars: &vars,
        cpu: cpu_device,
    })?;
    let table = render(p, &rows, &dev_name, &src, &dense, cpu_device);
    println!("{table}");
    if let Some(path) = &p.report {
        write_section(path, &table).with_context(|| format!("--report {}", path.display()))?;
        eprintln!("wrote the table into {}", path.display());
    }
    if let Some(path) = json {
        let mut o = String::new();
        for r in &rows {
            let v = serde_json::json!({
                "name": format!("policy {}", r.label), "device": dev_name, "model": src.name(),
                "wall_s": r.wall, "cpu_s": r.cpu, "speedup_wall": rows[0].wall / r.wall,
                "density": r.density, "sparse_density": r.sparse_density, "recall": r.recall,
                "psnr_db": if r.psnr.is_finite() { Some(r.psnr) } else { None }, "ssim": r.ssim,
            });
            let _ = writeln!(o, "{v}");
        }
        std::fs::write(path, o).with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

/// Plans kept on the device (`true`, as `generate` runs) or built/downloaded to the host for
/// wrappers that read them (`false`).
fn device_plans(p: &Policy, on: bool) {
    match p {
        Policy::Jenga(j) => j.set_device_select(on),
        Policy::Svg(s) => s.set_device_plans(on),
        Policy::Draft(d) => d.set_device_plans(on),
        Policy::Dense(_) => {}
    }
}

fn reset_stats(p: &Policy) {
    match p {
        Policy::Jenga(j) => j.reset_stats(),
        Policy::Svg(s) => s.reset_stats(),
        Policy::Draft(d) => d.reset_stats(),
        Policy::Dense(_) => {}
    }
}

/// One plan + attention call of a policy on synthetic q/k at the run's last step and layer
/// (a sparse call for every policy), so that its kernels are compiled before timing.
fn warm_up<B: jenga_engine::EngineBackend>(
    be: &B,
    pol: &dyn AttentionPolicy<B>,
    spec: &jenga_pipeline::SampleSpec,
    cfg: &jenga_models::WanConfig,
) -> Result<()> {
    let pt = cfg.patch_size;
    let grid = (
        spec.frames / pt[0].max(1),
        spec.height / pt[1].max(1),
        spec.width / pt[2].max(1),
    );
    let (l, h) = (grid.0 * grid.1 * grid.2, cfg.num_heads);
    let d = cfg.dim / h.max(1);
    let x: Vec<f32> = (0..l * h * d)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let t = be.upload(&x, &[1, l, h, d])?;
    let ctx = AttnCtx {
        step: spec.steps.saturating_sub(1),
        num_steps: spec.steps,
        layer: cfg.num_layers.saturating_sub(1),
        num_layers: cfg.num_layers,
        stage: 0,
        grid,
        cond_tokens: 0,
    };
    let plan = pol.plan(be, &t, &t, &ctx)?;
    be.attention(&t, &t, &t, &plan, None)?;
    be.synchronize()?;
    Ok(())
}

struct PoliciesTask<'a> {
    p: &'a PoliciesArgs,
    key: &'a jenga_engine::ModelSource,
    src: &'a Source,
    dense: &'a Plan,
    vars: &'a [Variant],
    cpu: bool,
}

impl ModelTask for PoliciesTask<'_> {
    type Output = Vec<Row>;
    fn run<B: EngineBackend>(self, cx: &ModelCx<'_, B>) -> Result<Vec<Row>> {
        let (model, _) = cx.model(self.key, self.src)?;
        run_on(
            cx.be, &model, self.p, self.src, self.dense, self.vars, self.cpu,
        )
    }
}

fn run_on<B: EngineBackend>(
    be: &B,
    model: &WanModel<B>,
    p: &PoliciesArgs,
    src: &Source,
    dense: &Plan,
    vars: &[Variant],
    cpu: bool,
) -> Result<Vec<Row>> {
    let cfg = src.config();
    let ctx = src.text_context(be, model, &p.prompt, "", dense.spec.guidance)?;
    let timed =
        |pl: &Plan, pol: &dyn AttentionPolicy<B>| -> Result<(SampleOutput, f64, Option<f64>)> {
            be.synchronize()?;
            let (t, c) = (Instant::now(), crate::timing::process_cpu_secs());
            let out = sample(be, model, &ctx, &pl.spec, pol, None, &mut |_| {})?;
            be.synchronize()?;
            let cpu = Some(crate::timing::process_cpu_secs() - c);
            Ok((out, t.elapsed().as_secs_f64(), cpu))
        };
    if !cpu {
        eprintln!("bench policies on {}: warm-up …", be.name());
        let mut spec = dense.spec.clone();
        spec.steps = 1;
        spec.stages[0].end_step = 1;
        sample(
            be,
            model,
            &ctx,
            &spec,
            &jenga_carve::Dense,
            None,
            &mut |_| {},
        )?;
        for v in vars {
            warm_up(be, &v.policy as &dyn AttentionPolicy<B>, &dense.spec, cfg)
                .with_context(|| format!("warm-up of {}", v.label))?;
            reset_stats(&v.policy);
        }
    }
    eprintln!("bench policies on {}: dense …", be.name());
    let (d_out, d_wall, d_cpu) = timed(dense, &jenga_carve::Dense)?;
    let mut rows = vec![Row {
        label: "dense".into(),
        settings: "full attention".into(),
        notes: String::new(),
        wall: d_wall,
        cpu: d_cpu,
        density: 1.0,
        sparse_density: None,
        recall: None,
        psnr: f64::INFINITY,
        ssim: 1.0,
    }];
    for v in vars {
        eprintln!("bench policies: {} …", v.label);
        let (out, wall, cpu_s, probe_secs, mut recall) = if cpu {
            let inner = PlanClock::new(&v.policy as &dyn AttentionPolicy<B>, false);
            let probe = Probe::new(&inner, p.recall_every);
            let outer = PlanClock::new(&probe, false);
            let (out, wall, cpu_s) = timed(&v.plan, &outer)?;
            // What the probe spent measuring recall (single-threaded host work).
            let probe_secs = (outer.spent().0 - inner.spent().0).max(0.0);
            (out, wall, cpu_s, probe_secs, probe.mean_recall())
        } else {
            device_plans(&v.policy, true);
            let (out, wall, cpu_s) = timed(&v.plan, &v.policy as &dyn AttentionPolicy<B>)?;
            (out, wall, cpu_s, 0.0, None)
        };
        if out.shape != d_out.shape {
            bail!(
                "{}: output {:?}, dense {:?}",
                v.label,
                out.shape,
                d_out.shape
            );
        }
        let st = AttentionPolicy::<B>::density_stats(&v.policy);
        let calls: u64 = st.iter().map(|s| s.calls).sum();
        let sparse: u64 = st.iter().map(|s| s.sparse_calls).sum();
        let density = st
            .iter()
            .map(|s| s.mean_density * s.calls as f64)
            .sum::<f64>()
            / calls.max(1) as f64;
        let sparse_density = (sparse > 0).then(|| {
            st.iter()
                .map(|s| s.mean_sparse_density * s.sparse_calls as f64)
                .sum::<f64>()
                / sparse as f64
        });
        let mut notes = format!("{sparse} of {calls} calls sparse");
        if let Some(c) = v.policy.choices() {
            notes = format!("{notes}; {c}");
        }
        if !cpu && p.recall_every > 0 {
            // Recall reads kept blocks on the host: a second, untimed pass with the plans
            // downloaded (or built there, for Jenga: same rule as on the GPU).
            eprintln!("bench policies: {} (recall pass) …", v.label);
            device_plans(&v.policy, false);
            let probe = Probe::new(&v.policy as &dyn AttentionPolicy<B>, p.recall_every);
            sample(be, model, &ctx, &v.plan.spec, &probe, None, &mut |_| {})?;
            recall = probe.mean_recall();
            device_plans(&v.policy, true);
        }
        rows.push(Row {
            label: v.label.clone(),
            settings: v.policy.settings(),
            notes,
            wall: wall - probe_secs,
            cpu: cpu_s.map(|c| c - probe_secs),
            density: if calls > 0 { density } else { 1.0 },
            sparse_density,
            recall,
            psnr: psnr(&out.video, &d_out.video),
            ssim: ssim(&out.video, &d_out.video, out.shape),
        });
    }
    Ok(rows)
}

fn render(
    p: &PoliciesArgs,
    rows: &[Row],
    dev: &str,
    src: &Source,
    dense: &Plan,
    cpu_device: bool,
) -> String {
    let mut o = String::new();
    let cmd: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("\"{a}\"")
            } else {
                a
            }
        })
        .collect();
    let _ = writeln!(
        o,
        "`jenga {}` — {}, on {dev}.\n",
        cmd.join(" "),
        dense.describe(src.name())
    );
    let _ = writeln!(o, "| variant | density (all calls) | density (sparse calls) | recall | PSNR vs dense (dB) | SSIM | wall (s) | speed-up (wall) | CPU (s) | speed-up (CPU) |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    let (dw, dc) = (rows[0].wall, rows[0].cpu);
    for r in rows {
        let f3 = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
        let pct = |v: f64| format!("{:.1}%", 100.0 * v);
        let psnr = if r.psnr.is_finite() {
            format!("{:.2}", r.psnr)
        } else {
            "∞".into()
        };
        let (cpu, cpu_up) = match (cpu_device, r.cpu, dc) {
            (true, Some(c), Some(d)) => (format!("{c:.1}"), format!("{:.2}x", d / c)),
            _ => ("–".into(), "–".into()),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {psnr} | {:.4} | {} | {:.2}x | {cpu} | {cpu_up} |",
            r.label,
            pct(r.density),
            r.sparse_density.map_or("–".into(), pct),
            f3(r.recall),
            r.ssim,
            secs(r.wall),
            dw / r.wall,
        );
    }
    let _ = writeln!(o);
    for r in rows.iter().skip(1) {
        let _ = writeln!(o, "- **{}**: {}; {}.", r.label, r.settings, r.notes);
    }
    let recall = if p.recall_every == 0 {
        "Recall: not measured (`--recall-every 0`).".to_string()
    } else {
        format!(
            "Recall: softmax mass inside the kept blocks on 32 sampled query rows per head of \
             every {}-th step's sparse calls, against exact dense scores; {}",
            p.recall_every,
            if cpu_device {
                "times exclude that measurement."
            } else {
                "measured in a second, untimed pass with the plans downloaded."
            }
        )
    };
    let _ = writeln!(
        o,
        "\nDensity: fraction of (query block, key block) pairs computed, dense calls counting 1. \
         {recall}{}",
        if cpu_device {
            ""
        } else {
            " Timed passes keep every plan on the device (as `generate`); one dense step and one \
             plan + attention call per variant ran first to compile the kernels."
        }
    );
    o
}

/// Seconds with three significant digits below 100 s (GPU runs of the tiny model take 0.05 s).
fn secs(v: f64) -> String {
    match v {
        v if v < 1.0 => format!("{v:.3}"),
        v if v < 10.0 => format!("{v:.2}"),
        v => format!("{v:.1}"),
    }
}

const BEGIN: &str = "<!-- bench-policies:begin -->";
const END: &str = "<!-- bench-policies:end -->";

/// Replace the marked section of `path` with `table` (append one when absent; create the
/// file when missing). Written atomically.
fn write_section(path: &Path, table: &str) -> Result<()> {
    let section = format!("{BEGIN}\n{table}{END}\n");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            let rest = &old[b + END.len()..];
            format!(
                "{}{section}{}",
                &old[..a],
                rest.strip_prefix('\n').unwrap_or(rest)
            )
        }
        _ if old.is_empty() => format!("# Attention policies\n\n{section}"),
        _ => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_string() + "\n"
        ),
    };
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, new)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("P.md");
        write_section(&f, "T1\n").unwrap();
        let a = std::fs::read_to_string(&f).unwrap();
        assert!(a.starts_with("# Attention policies\n") && a.contains("T1"));
        std::fs::write(&f, format!("intro\n{}\nnotes after\n", a.trim_end())).unwrap();
        write_section(&f, "T2\n").unwrap();
        let b = std::fs::read_to_string(&f).unwrap();
        assert!(b.contains("T2") && !b.contains("T1"), "{b}");
        assert!(
            b.starts_with("intro\n") && b.ends_with("notes after\n"),
            "{b}"
        );
        assert_eq!(b.matches(BEGIN).count(), 1);
    }

    #[test]
    fn variants_parse_like_generate_flags() {
        let p = PoliciesArgs {
            prompt: "x".into(),
            size: Default::default(),
            steps: Some(3),
            seed: 1,
            variants: vec![],
            recall_every: 5,
            report: None,
        };
        let m = ModelArgs {
            model: None,
            random_weights: None,
            dit: None,
            text_encoder: None,
            vae: None,
            tokenizer: None,
            clip_vision: None,
            device: "cpu".into(),
            threads: None,
        };
        let g = gen_args(&p, &m, "draft --draft-sparsity 0.5 --block 128").unwrap();
        assert_eq!(g.jenga.policy.as_deref(), Some("draft"));
        assert_eq!(g.jenga.peers.draft_sparsity, 0.5);
        assert_eq!((g.steps, g.seed), (Some(3), 1));
        let g = gen_args(&p, &m, "jenga --sa-drop-rates 0.7 0.8").unwrap();
        assert_eq!(g.jenga.sa_drop_rates, Some(vec![0.7, 0.8]));
        let e = gen_args(&p, &m, "sparse").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown attention policy"),
            "{e:#}"
        );
        let e = gen_args(&p, &m, "svg --svg-nonsense 1").unwrap_err();
        assert!(format!("{e:#}").contains("--variants"), "{e:#}");
    }
}
