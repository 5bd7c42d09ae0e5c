//! A model on several ranks behind the same `Denoiser` contract, so the sampler, ProRes and
//! step skip run unchanged on every rank. Each rank embeds and carries its shard of the
//! tokens (and, under CFG parallelism, one of the two guidance rows); self-attention goes
//! through [`SeqAttention`]; the head's per-token outputs are gathered, so every rank holds
//! the whole model output and takes the same solver step. A skipped step reuses the rank's
//! own residual (the cache is of the tokens it holds).

use crate::attention::{gather_cat, SeqAttention};
use crate::layout::{ParallelLayout, SHARD_ALIGN};
use jenga_carve::{AttentionPolicy, AttnCtx, PolicyKernels};
use jenga_models::{Conditioning, Denoiser, ModelError, Result};
use jenga_tensor::{Communicator, FusedOps};
use std::ops::Range;
use std::sync::Arc;

pub struct Parallel<'a, B: PolicyKernels, M> {
    pub model: &'a M,
    pub comm: &'a dyn Communicator<B>,
    pub layout: ParallelLayout,
}

/// A stage on one rank: the model's stage for this rank's tokens, and every rank's shard.
pub struct ParStage<S> {
    pub inner: S,
    pub tokens: usize,
    pub shards: Vec<Range<usize>>,
}

/// The model's conditioning for this rank's guidance rows, and the run's row count.
pub struct ParCond<C> {
    pub inner: C,
    pub batch: usize,
}

impl<'a, B: PolicyKernels + FusedOps, M: Denoiser<B>> Parallel<'a, B, M> {
    /// Checks the layout against the communicator before anything runs.
    pub fn new(
        model: &'a M,
        comm: &'a dyn Communicator<B>,
        layout: ParallelLayout,
    ) -> Result<Self> {
        if comm.world() != layout.world() {
            return Err(ModelError::Invalid(format!(
                "parallel layout {layout} needs {} ranks, the communicator has {}",
                layout.world(),
                comm.world()
            )));
        }
        Ok(Parallel {
            model,
            comm,
            layout,
        })
    }

    fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// `x` gathered along `dim` over `group` (its members' extents there from `len`).
    fn gather(
        &self,
        be: &B,
        x: &B::Tensor,
        group: &[usize],
        dim: usize,
        len: &dyn Fn(usize) -> usize,
    ) -> Result<B::Tensor> {
        Ok(gather_cat(self.comm, be, x, group, dim, len)?)
    }
}

impl<B: PolicyKernels + FusedOps, M: Denoiser<B>> Denoiser<B> for Parallel<'_, B, M> {
    type Stage = ParStage<M::Stage>;
    type Step = M::Step;
    type Cond = ParCond<M::Cond>;

    fn latent_channels(&self) -> usize {
        self.model.latent_channels()
    }
    fn patch(&self) -> [usize; 3] {
        self.model.patch()
    }
    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }
    fn grid(&self, f: usize, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        self.model.grid(f, h, w)
    }
    fn stage(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<Self::Stage> {
        let tokens = grid.0 * grid.1 * grid.2;
        let shards = self
            .layout
            .token_shards(tokens, SHARD_ALIGN)
            .map_err(ModelError::Invalid)?;
        let mine = shards[self.layout.seq_index(self.rank())].clone();
        let inner = self.model.stage_shard(be, grid, order, mine)?;
        Ok(ParStage {
            inner,
            tokens,
            shards,
        })
    }
    fn stage_tokens(&self, stage: &Self::Stage) -> usize {
        stage.tokens
    }
    fn cond_tokens(&self, cond: &Self::Cond) -> usize {
        self.model.cond_tokens(&cond.inner)
    }
    fn condition(&self, be: &B, c: &Conditioning<B>) -> Result<Self::Cond> {
        if self.layout.cfg == 1 {
            let inner = self.model.condition(be, c)?;
            let batch = self.model.cond_batch(&inner);
            return Ok(ParCond { inner, batch });
        }
        let row = self.layout.coords(self.rank()).cfg;
        let inner = self.model.condition(be, &c.rows(be, row, 1)?)?;
        Ok(ParCond {
            inner,
            batch: self.layout.cfg,
        })
    }
    fn cond_batch(&self, cond: &Self::Cond) -> usize {
        cond.batch
    }
    fn embed(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        stage: &Self::Stage,
        cond: &Self::Cond,
    ) -> Result<Self::Step> {
        let x = if self.layout.cfg > 1 {
            let row = self.layout.coords(self.rank()).cfg;
            be.narrow(x, 0, row, 1)?
        } else {
            x.clone()
        };
        self.model.embed(be, &x, t, &stage.inner, &cond.inner)
    }
    fn hidden<'s>(&self, step: &'s Self::Step) -> &'s B::Tensor {
        self.model.hidden(step)
    }
    fn blocks(
        &self,
        be: &B,
        step: &Self::Step,
        cond: &Self::Cond,
        stage: &Self::Stage,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        if self.layout.seq() == 1 {
            return self
                .model
                .blocks(be, step, &cond.inner, &stage.inner, policy, actx);
        }
        let seq = SeqAttention {
            inner: policy,
            comm: self.comm,
            layout: self.layout,
            shards: &stage.shards,
        };
        self.model
            .blocks(be, step, &cond.inner, &stage.inner, &seq, actx)
    }
    fn head(
        &self,
        be: &B,
        hidden: &B::Tensor,
        step: &Self::Step,
        stage: &Self::Stage,
    ) -> Result<B::Tensor> {
        let me = self.rank();
        let y = self.model.head_tokens(be, hidden, step, &stage.inner)?;
        let seq_len = |r: usize| stage.shards[self.layout.seq_index(r)].len();
        let y = self.gather(be, &y, &self.layout.seq_group(me), 1, &seq_len)?;
        let y = self.gather(be, &y, &self.layout.cfg_group(me), 0, &|_| 1)?;
        self.model.unpatchify(be, &y, &stage.inner)
    }
    fn skip_signal(&self, be: &B, t: f64) -> Result<B::Tensor> {
        self.model.skip_signal(be, t)
    }
    fn teacache_coefficients(&self) -> Option<Vec<f64>> {
        self.model.teacache_coefficients()
    }
}
