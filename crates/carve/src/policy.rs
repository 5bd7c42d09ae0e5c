//! The seam between models and sparse-attention methods.
//!
//! A model asks the policy, once per stage, for a token order (the curve), and, for every
//! self-attention call, for a plan. The model never knows which policy runs; a policy never
//! knows which model calls it.

use jenga_tensor::{AttnPlan, Backend, DeviceCount, KeyBias, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where in the generation an attention call happens.
#[derive(Clone, Debug)]
pub struct AttnCtx {
    /// Denoising step index (0-based) and total steps of the whole run.
    pub step: usize,
    pub num_steps: usize,
    /// Transformer layer (0-based) and layer count.
    pub layer: usize,
    pub num_layers: usize,
    /// ProRes stage (0-based).
    pub stage: usize,
    /// Latent token grid (frames, rows, cols) of this stage, after patchify.
    pub grid: (usize, usize, usize),
    /// Condition (text) tokens appended after the video tokens in this attention's sequence
    /// (0 for Wan self-attention, where text enters through cross-attention).
    pub cond_tokens: usize,
}

impl AttnCtx {
    /// One forward outside a run (benches, goldens): step 0 of 1, the first layer and stage,
    /// no condition tokens in self-attention.
    pub fn one_forward(grid: (usize, usize, usize), num_layers: usize) -> AttnCtx {
        AttnCtx {
            step: 0,
            num_steps: 1,
            layer: 0,
            num_layers,
            stage: 0,
            grid,
            cond_tokens: 0,
        }
    }
}

pub trait AttentionPolicy<B: Backend>: Send + Sync {
    /// For wrappers (a policy picked at run time, a timer, a probe): the policy that every
    /// method not overridden forwards to, with the plan calls passing through
    /// [`AttentionPolicy::on_plan`]. `None` (default) for a policy of its own.
    fn delegate(&self) -> Option<&dyn AttentionPolicy<B>> {
        None
    }
    /// Around each plan call of a wrapper: `make` runs the delegate's (`plan` or
    /// `plan_pooled`); the default just runs it.
    fn on_plan(
        &self,
        _be: &B,
        _q: &B::Tensor,
        _k: &B::Tensor,
        _ctx: &AttnCtx,
        make: &mut dyn FnMut() -> Result<AttnPlan>,
    ) -> Result<AttnPlan> {
        make()
    }
    fn name(&self) -> String {
        self.delegate()
            .map_or_else(|| "unnamed".into(), |d| d.name())
    }
    /// Order in which video tokens are laid out for a stage grid: `order[k]` = raster index of
    /// the k-th token. `None` keeps raster order.
    fn token_order(&self, grid: (usize, usize, usize)) -> Option<Arc<Vec<u32>>> {
        self.delegate().and_then(|d| d.token_order(grid))
    }
    /// Plan for one self-attention call; q/k are `[B, L, H, Dh]` in token order.
    fn plan(&self, be: &B, q: &B::Tensor, k: &B::Tensor, ctx: &AttnCtx) -> Result<AttnPlan> {
        let d = self.delegate().ok_or_else(|| {
            jenga_tensor::Error::invalid("plan", "policy implements neither plan nor delegate")
        })?;
        self.on_plan(be, q, k, ctx, &mut || d.plan(be, q, k, ctx))
    }
    /// Block size `m` for which this call's plan wants the block means of q and k
    /// (`[B, H, ceil(L/m), Dh]`, as [`Backend::block_mean_pool`]); the model then computes them
    /// with `FusedOps::rope_pooled` (fused into RoPE where the backend can) and hands them to
    /// [`AttentionPolicy::plan_pooled`]. `None` (default): not needed.
    fn pooled_block(&self, ctx: &AttnCtx) -> Option<usize> {
        self.delegate().and_then(|d| d.pooled_block(ctx))
    }
    /// [`AttentionPolicy::plan`] with the block means asked for by
    /// [`AttentionPolicy::pooled_block`] (`None` when the backend did not compute them); the
    /// default ignores them (or, for a wrapper, hands them to its delegate).
    fn plan_pooled(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
    ) -> Result<AttnPlan> {
        match self.delegate() {
            Some(d) => self.on_plan(be, q, k, ctx, &mut || d.plan_pooled(be, q, k, pooled, ctx)),
            None => self.plan(be, q, k, ctx),
        }
    }
    /// One self-attention call: q/k/v `[B, L, H, Dh]` in token order → output, same shape.
    /// The default asks for a plan ([`AttentionPolicy::plan_pooled`]) and runs
    /// [`Backend::attention`]; a policy that needs v or lays tokens out per head (SVG's head
    /// placement) overrides [`AttentionPolicy::attend_hooked`]. Models call this.
    fn attend(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
    ) -> Result<B::Tensor> {
        self.attend_hooked(be, q, k, v, pooled, ctx, &|_, _, _, _, make| make())
    }
    /// [`AttentionPolicy::attend`] with `hook` around the plan call (the wrappers' `on_plan`,
    /// outermost first). `hook` gets the q/k the plan is for: with a per-head placement,
    /// the placed ones. A wrapper forwards to its delegate, adding its own `on_plan`.
    #[allow(clippy::too_many_arguments)] // the call's tensors, its context and the hook
    fn attend_hooked(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
        hook: &PlanHook<'_, B>,
    ) -> Result<B::Tensor> {
        match self.delegate() {
            Some(d) => d.attend_hooked(be, q, k, v, pooled, ctx, &|be, q, k, ctx, make| {
                hook(be, q, k, ctx, &mut || self.on_plan(be, q, k, ctx, make))
            }),
            None => {
                let plan = hook(be, q, k, ctx, &mut || {
                    self.plan_pooled(be, q, k, pooled, ctx)
                })?;
                be.attention(q, k, v, &plan, self.key_bias(ctx))
            }
        }
    }
    /// Whether this policy lays tokens out per head inside its call (SVG's temporal heads),
    /// so its plans are not in the shared token order (a ring cannot cut them by rows).
    fn per_head_order(&self) -> bool {
        self.delegate().is_some_and(|d| d.per_head_order())
    }
    /// Optional score bias on condition keys (text-attention amplifier).
    fn key_bias(&self, ctx: &AttnCtx) -> Option<KeyBias> {
        self.delegate().and_then(|d| d.key_bias(ctx))
    }
    /// Kept-block density per stage so far (empty for policies that do not track it).
    fn density_stats(&self) -> Vec<DensityStats> {
        self.delegate()
            .map(|d| d.density_stats())
            .unwrap_or_default()
    }
}

/// What wraps a plan call in [`AttentionPolicy::attend_hooked`]: `(be, q, k, ctx, make)`,
/// running `make` (the plan) once and returning its plan.
pub type PlanHook<'h, B> = dyn Fn(
        &B,
        &<B as Backend>::Tensor,
        &<B as Backend>::Tensor,
        &AttnCtx,
        &mut dyn FnMut() -> Result<AttnPlan>,
    ) -> Result<AttnPlan>
    + 'h;

/// Attention density of one ProRes stage, averaged over the plan calls of that stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DensityStats {
    pub stage: usize,
    /// Plan calls in this stage (dense and sparse).
    pub calls: u64,
    /// Calls that returned a sparse plan.
    pub sparse_calls: u64,
    /// Mean fraction of (query block, key block) pairs computed, dense calls counting 1.0.
    pub mean_density: f64,
    /// Mean density over sparse calls only (0 when there were none).
    pub mean_sparse_density: f64,
}

/// Per-stage density bookkeeping behind [`AttentionPolicy::density_stats`], shared by the
/// policies. Plans built on the device are counted when made and their density read later in
/// batches ([`DensityLog::drain`]), since reading waits for the device; `E` is whatever else a
/// policy reads from the device with them (SVG: heads per pattern, Draft: topped-up rows).
pub(crate) struct DensityLog<E = ()> {
    stages: Mutex<BTreeMap<usize, Acc>>,
    pending: Mutex<Vec<Pending<E>>>,
}

/// A device-built plan not read yet: stage, kept pairs (on the device), pairs of the full plan,
/// the policy's extra.
type Pending<E> = (usize, Arc<dyn DeviceCount>, u64, E);
/// Device-built plans kept before their counts are read.
const MAX_PENDING: usize = 8192;

impl<E> Default for DensityLog<E> {
    fn default() -> Self {
        DensityLog {
            stages: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Acc {
    calls: u64,
    sparse: u64,
    /// Densities of all calls (dense ones count 1) / of sparse calls only.
    sum: f64,
    sparse_sum: f64,
}

impl<E> DensityLog<E> {
    /// Record a call: `Some(density)` for a sparse plan, `None` for a dense call.
    pub(crate) fn record(&self, stage: usize, density: Option<f64>) {
        let mut s = lock(&self.stages);
        let a = s.entry(stage).or_default();
        a.calls += 1;
        match density {
            Some(d) => {
                a.sparse += 1;
                a.sum += d;
                a.sparse_sum += d;
            }
            None => a.sum += 1.0,
        }
    }

    /// Record a sparse call whose plan stays on the device: counted now, its density (`nnz` of
    /// `pairs`) read at the next [`DensityLog::drain`], which runs here once `MAX_PENDING`
    /// plans wait (`on_extra` then gets their extras).
    pub(crate) fn record_device(
        &self,
        stage: usize,
        nnz: Arc<dyn DeviceCount>,
        pairs: u64,
        extra: E,
        on_extra: impl FnMut(E),
    ) {
        {
            let mut s = lock(&self.stages);
            let a = s.entry(stage).or_default();
            a.calls += 1;
            a.sparse += 1;
        }
        let full = {
            let mut p = lock(&self.pending);
            p.push((stage, nnz, pairs, extra));
            p.len() >= MAX_PENDING
        };
        if full {
            self.drain(on_extra);
        }
    }

    /// Read the densities of the device-built plans recorded so far (waits for the device);
    /// each one's extra goes to `on_extra`.
    pub(crate) fn drain(&self, mut on_extra: impl FnMut(E)) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for (stage, nnz, pairs, extra) in pending {
            let d = match nnz.read() {
                Ok(n) if pairs > 0 => n as f64 / pairs as f64,
                Ok(_) => 0.0,
                Err(e) => {
                    eprintln!("warning: density of a device plan unavailable ({e}); counted as 1");
                    1.0
                }
            };
            {
                let mut s = lock(&self.stages);
                let a = s.entry(stage).or_default();
                a.sum += d;
                a.sparse_sum += d;
            }
            on_extra(extra);
        }
    }

    pub(crate) fn stats(&self) -> Vec<DensityStats> {
        lock(&self.stages)
            .iter()
            .map(|(&stage, a)| DensityStats {
                stage,
                calls: a.calls,
                sparse_calls: a.sparse,
                mean_density: if a.calls > 0 {
                    a.sum / a.calls as f64
                } else {
                    0.0
                },
                mean_sparse_density: if a.sparse > 0 {
                    a.sparse_sum / a.sparse as f64
                } else {
                    0.0
                },
            })
            .collect()
    }

    pub(crate) fn reset(&self) {
        lock(&self.pending).clear();
        lock(&self.stages).clear();
    }
}

/// A poisoned lock still guards plain data that is valid: a panic elsewhere must not take the
/// policies down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Full attention everywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dense;

impl<B: Backend> AttentionPolicy<B> for Dense {
    fn name(&self) -> String {
        "dense".into()
    }
    fn plan(&self, _be: &B, _q: &B::Tensor, _k: &B::Tensor, _ctx: &AttnCtx) -> Result<AttnPlan> {
        Ok(AttnPlan::Dense)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "device" count that is just a number, and remembers whether it was read.
    struct Fixed(u64, std::sync::atomic::AtomicBool);
    impl DeviceCount for Fixed {
        fn read(&self) -> Result<u64> {
            self.1.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(self.0)
        }
    }

    #[test]
    fn device_plans_are_counted_at_once_and_their_density_read_at_drain() {
        let log: DensityLog<u32> = DensityLog::default();
        let a = Arc::new(Fixed(30, Default::default()));
        let b = Arc::new(Fixed(50, Default::default()));
        let mut extras = Vec::new();
        log.record_device(1, a.clone(), 100, 7, |e| extras.push(e));
        log.record_device(1, b.clone(), 100, 8, |e| extras.push(e));
        log.record(1, Some(0.2));
        log.record(1, None);
        // Counted, not read yet: the calls are known, the device densities not.
        let s = log.stats();
        assert_eq!((s[0].calls, s[0].sparse_calls), (4, 3));
        assert!(!a.1.load(std::sync::atomic::Ordering::Relaxed) && extras.is_empty());
        log.drain(|e| extras.push(e));
        assert_eq!(extras, vec![7, 8]);
        let s = log.stats();
        assert!((s[0].mean_sparse_density - (0.3 + 0.5 + 0.2) / 3.0).abs() < 1e-12);
        assert!((s[0].mean_density - (0.3 + 0.5 + 0.2 + 1.0) / 4.0).abs() < 1e-12);
        // Reset forgets both the stats and anything still pending.
        log.record_device(2, a, 100, 9, |e| extras.push(e));
        log.reset();
        log.drain(|e| extras.push(e));
        assert!(log.stats().is_empty() && extras == vec![7, 8]);
    }
}
