//! Flags → the engine's request types (the only place the cli's clap types are read).

use crate::args::{JengaArgs, ModelArgs, ParallelArgs, RunArgs};
use anyhow::{bail, Result};
use jenga_engine::{
    DeviceRequest, DraftOptions, GenerateRequest, ModelFiles, ModelSource, ParallelOptions,
    PolicyOptions, Sampling, SvgOptions, VideoSize,
};

pub fn model(m: &ModelArgs) -> Result<ModelSource> {
    let files = m.dit.is_some() || m.text_encoder.is_some() || m.vae.is_some();
    if files {
        if m.model.is_some() || m.random_weights.is_some() {
            bail!("--dit/--text-encoder/--vae cannot be used with --model or --random-weights");
        }
        let need = |p: &Option<std::path::PathBuf>, flag: &str| {
            p.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "{flag} missing: single files need --dit, --text-encoder, --vae and --tokenizer"
                )
            })
        };
        return Ok(ModelSource::Files(ModelFiles {
            dit: need(&m.dit, "--dit")?,
            text_encoder: need(&m.text_encoder, "--text-encoder")?,
            vae: need(&m.vae, "--vae")?,
            tokenizer: m.tokenizer.clone(),
            clip_vision: m.clip_vision.clone(),
        }));
    }
    if m.tokenizer.is_some() {
        bail!("--tokenizer is for single files (--dit, --text-encoder, --vae); a model directory has its own");
    }
    if m.clip_vision.is_some() {
        bail!("--clip-vision is for single files (--dit, --text-encoder, --vae); a model directory has its own image encoder");
    }
    Ok(match (&m.model, &m.random_weights) {
        (Some(_), Some(_)) => bail!("--model and --random-weights cannot be used together"),
        (None, Some(name)) => ModelSource::Random(name.clone()),
        (Some(dir), None) => ModelSource::Dir(dir.clone()),
        (None, None) => ModelSource::Embedded,
    })
}

pub fn device(m: &ModelArgs) -> DeviceRequest {
    DeviceRequest {
        device: m.device.clone(),
        threads: m.threads,
    }
}

pub fn policy(j: &JengaArgs) -> PolicyOptions {
    let p = &j.peers;
    PolicyOptions {
        policy: j.policy.clone(),
        preset: j.preset.clone(),
        sa_drop_rates: j.sa_drop_rates.clone(),
        p_remain_rates: j.p_remain_rates.clone(),
        res_rate_list: j.res_rate_list.clone(),
        step_rate_list: j.step_rate_list.clone(),
        scheduler_shift_list: j.scheduler_shift_list.clone(),
        prores_renoise: j.prores_renoise.clone(),
        interp: j.interp.clone(),
        skip: j.skip.clone(),
        skip_keep: j.skip_keep,
        teacache_thresh: j.teacache_thresh,
        text_amp_rho: j.text_amp_rho,
        curve: j.curve.clone(),
        block: j.block,
        svg: SvgOptions {
            svg_sparsity: p.svg_sparsity,
            svg_sampled_rows: p.svg_sampled_rows,
            svg_first_times_fp: p.svg_first_times_fp,
            svg_first_layers_fp: p.svg_first_layers_fp,
        },
        draft: DraftOptions {
            draft_sparsity: p.draft_sparsity,
            draft_pool: p.draft_pool.clone(),
            draft_dense_layers: p.draft_dense_layers,
            draft_dense_timestep: p.draft_dense_timestep,
            draft_min_blocks: p.draft_min_blocks,
        },
    }
}

pub fn generate(a: &RunArgs, upscale: Option<u32>) -> Result<GenerateRequest> {
    Ok(GenerateRequest {
        model: model(&a.model)?,
        video: VideoSize {
            frames: a.size.frames,
            height: a.size.height,
            width: a.size.width,
        },
        sampling: Sampling {
            prompt: a.prompt.clone(),
            negative_prompt: a.negative_prompt.clone(),
            steps: a.steps,
            shift: a.shift,
            guidance: a.guidance,
            seed: a.seed,
            solver: a.solver.clone(),
            init_noise: a.init_noise.clone(),
            image: a.image.clone(),
        },
        policy: policy(&a.jenga),
        upscale,
        parallel: parallel(&a.parallel),
    })
}

pub fn parallel(p: &ParallelArgs) -> ParallelOptions {
    ParallelOptions {
        ranks: p.ranks.or(p.gpus.map(|g| g * p.nodes)).unwrap_or(0),
        ulysses: p.ulysses,
        ring: p.ring,
        cfg_parallel: p.cfg_parallel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    #[test]
    fn flag_defaults_are_the_engines_defaults() {
        let cli = Cli::try_parse_from(["jenga", "generate", "--prompt", "x"]).unwrap();
        let Command::Generate(g) = cli.command else {
            panic!("expected generate");
        };
        let r = generate(&g.run, g.upscale).unwrap();
        assert_eq!(r.policy, PolicyOptions::default());
        assert_eq!(r.model, ModelSource::Embedded);
        assert_eq!(device(&g.run.model), DeviceRequest::default());
    }
}
