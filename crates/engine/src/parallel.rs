//! One video on several ranks: the layout resolved and checked at prepare time, and the
//! sampling run either as threads of this process (`--ranks`, the CPU: the parallel code
//! under test in CI) or as this process's rank of a multi-process NCCL run (`--gpus`, one
//! process per GPU, started by the cli's launcher). Text encoding and the VAE run on rank 0;
//! the text states are broadcast; the DiT is replicated, every rank maps the same checkpoint.

use crate::device::EngineBackend;
use crate::request::ParallelOptions;
use anyhow::{bail, Context, Result};
use jenga_carve::AttentionPolicy;
use jenga_models::{Conditioning, Denoiser};
use jenga_parallel::{shards, Parallel, ParallelLayout, SHARD_ALIGN};
use jenga_pipeline::{sample, Event, SampleOutput, SampleSpec};
use jenga_tensor::{run_local, Communicator};
use std::time::Duration;

/// This process's place in a multi-process run (from the launcher's environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankSetup {
    pub rank: usize,
    pub world: usize,
    /// The NCCL unique id made by rank 0's launcher, hex.
    pub nccl_id: String,
}

/// How long a thread rank waits in a collective before it calls the run failed.
const THREAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The layout a request asks for, checked against the model and the run before anything
/// loads. `None`: one device.
pub fn resolve(
    o: &ParallelOptions,
    heads: usize,
    guidance_rows: usize,
    per_head_order: bool,
    stage_tokens: &[usize],
    i2v: bool,
) -> Result<Option<ParallelLayout>> {
    let explicit = o.ulysses.is_some() || o.ring.is_some() || o.cfg_parallel == Some(true);
    if o.ranks == 0 && !explicit {
        return Ok(None);
    }
    let layout = if explicit {
        let l = ParallelLayout {
            cfg: if o.cfg_parallel == Some(true) { 2 } else { 1 },
            ring: o.ring.unwrap_or(1),
            ulysses: o.ulysses.unwrap_or(1),
        };
        if o.ranks > 1 && o.ranks != l.world() {
            bail!(
                "--gpus/--ranks {} but the layout ({l}) has {} ranks",
                o.ranks,
                l.world()
            );
        }
        l
    } else {
        let rows = if o.cfg_parallel == Some(false) {
            1
        } else {
            guidance_rows
        };
        ParallelLayout::auto(o.ranks, heads, rows)
    };
    // One rank asked for by count (`--gpus 1`, `--ranks 1`) runs the parallel path alone:
    // what it costs over the plain path is then measurable.
    if layout.world() == 1 && o.ranks != 1 {
        return Ok(None);
    }
    if i2v {
        bail!("image-to-video runs on one device for now: drop --gpus/--ranks");
    }
    layout
        .check(heads, guidance_rows, per_head_order)
        .map_err(anyhow::Error::msg)?;
    for &t in stage_tokens {
        shards(t, layout.seq(), SHARD_ALIGN)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("parallel layout {layout}"))?;
    }
    Ok(Some(layout))
}

/// Everything one rank's sampling needs besides its communicator.
pub(crate) struct RankRun<'a, B: EngineBackend, M> {
    pub be: &'a B,
    /// Any model family that can shard its tokens.
    pub model: &'a M,
    /// The whole run's conditioning (both guidance rows; each rank takes its own).
    pub cond: &'a Conditioning<B>,
    pub spec: &'a SampleSpec,
    pub noise: Option<&'a [f32]>,
    pub layout: ParallelLayout,
}

impl<B: EngineBackend, M: Denoiser<B>> RankRun<'_, B, M> {
    fn sample(
        &self,
        comm: &dyn Communicator<B>,
        policy: &dyn AttentionPolicy<B>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<SampleOutput> {
        let par = Parallel::new(self.model, comm, self.layout)?;
        let cond = par.condition(self.be, self.cond)?;
        Ok(sample(
            self.be, &par, &cond, self.spec, policy, self.noise, on_event,
        )?)
    }

    /// All ranks as threads of this process, each with its own policy (`make_policy`);
    /// rank 0's events reach `on_event`, rank 0's output is returned (every rank holds the
    /// same latent).
    pub fn threads<P: AttentionPolicy<B>>(
        &self,
        make_policy: &(dyn Fn() -> Result<P> + Sync),
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(SampleOutput, P)> {
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        let world = self.layout.world();
        let run = |tx: std::sync::mpsc::Sender<Event>| {
            run_local::<B, _, anyhow::Error, _>(world, THREAD_TIMEOUT, move |rank, comm| {
                let policy = make_policy()?;
                let tx = tx.clone();
                let mut events = |e: Event| {
                    if rank == 0 {
                        let _ = tx.send(e);
                    }
                };
                let out = self.sample(comm, &policy, &mut events)?;
                Ok((out, policy))
            })
        };
        let outs = std::thread::scope(|s| {
            let h = s.spawn(|| run(tx));
            // forward rank 0's progress while the ranks run; ends when they are done
            for e in rx {
                on_event(e);
            }
            h.join()
        })
        .map_err(|_| anyhow::anyhow!("the parallel run panicked"))??;
        outs.into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no rank returned"))
    }

    /// This process's rank of a multi-process run.
    pub fn process(
        &self,
        comm: &dyn Communicator<B>,
        policy: &dyn AttentionPolicy<B>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<SampleOutput> {
        self.sample(comm, policy, on_event)
    }
}

/// Rank 0's text states on every rank (`len` values; the others pass zeros of that length).
pub(crate) fn broadcast_states<B: EngineBackend>(
    be: &B,
    comm: &dyn Communicator<B>,
    states: Vec<f32>,
    len: usize,
) -> Result<Vec<f32>> {
    if states.len() != len {
        bail!(
            "rank {}: text states of {} values, expected {len}",
            comm.rank(),
            states.len()
        );
    }
    let x = be.upload(&states, &[len])?;
    let x = comm
        .broadcast(be, &x, 0)
        .context("broadcasting the text states")?;
    Ok(be.download(&x)?)
}

/// The model's token count of each stage of `spec` (what the shards must cover).
pub fn stage_tokens(spec: &SampleSpec, patch: [usize; 3]) -> Vec<usize> {
    (0..spec.stages.len())
        .map(|s| {
            let (h, w) = spec.stage_size(s, patch);
            (spec.frames / patch[0].max(1)) * (h / patch[1].max(1)) * (w / patch[2].max(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ranks: usize) -> ParallelOptions {
        ParallelOptions {
            ranks,
            ..Default::default()
        }
    }

    #[test]
    fn layouts_resolve_or_are_refused_with_the_flag() {
        assert_eq!(
            resolve(&opts(0), 12, 2, false, &[32760], false).unwrap(),
            None
        );
        // one rank asked for by count runs the parallel path alone (its cost is measured)
        assert_eq!(
            resolve(&opts(1), 12, 2, false, &[32760], false).unwrap(),
            Some(ParallelLayout::SINGLE)
        );
        let l = resolve(&opts(8), 12, 2, false, &[32760], false)
            .unwrap()
            .unwrap();
        assert_eq!((l.cfg, l.ring, l.ulysses), (2, 1, 4));
        let o = ParallelOptions {
            ranks: 4,
            ulysses: Some(8),
            ..Default::default()
        };
        let e = resolve(&o, 12, 2, false, &[32760], false).unwrap_err();
        assert!(e.to_string().contains("has 8 ranks"), "{e}");
        let o = ParallelOptions {
            ulysses: Some(8),
            ..Default::default()
        };
        let e = resolve(&o, 12, 2, false, &[32760], false).unwrap_err();
        assert!(e.to_string().contains("--ulysses 4 --ring 2"), "{e}");
        let e = resolve(&opts(4), 2, 2, false, &[32760], true).unwrap_err();
        assert!(e.to_string().contains("image-to-video"), "{e}");
        // a ProRes stage too small for the ranks
        let e = resolve(&opts(4), 2, 1, false, &[256, 2048], false).unwrap_err();
        assert!(format!("{e:#}").contains("fewer than one block"), "{e:#}");
    }
}
