//! Timing helpers shared by `eval` and the benches: process CPU time, and a wrapper policy
//! that adds up the time spent building attention plans.

use jenga_carve::policy::DensityStats;
use jenga_carve::PolicyKernels;
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::FusedOps;
use jenga_tensor::{AttnPlan, KeyBias};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// CPU time (user + system, all threads) of this process so far, in seconds: steadier than
/// wall time on a shared machine, and what a CPU run costs.
pub fn process_cpu_secs() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wraps a policy and adds up the wall time of its `plan` calls. With `sync`, each call sits
/// between two device synchronisations, so the time is the plan's own GPU cost (a profiling
/// run only: the syncs slow the whole run down).
pub struct PlanClock<'a, B: PolicyKernels + FusedOps> {
    inner: &'a dyn AttentionPolicy<B>,
    sync: bool,
    /// (seconds, calls)
    acc: Mutex<(f64, u64)>,
}

impl<'a, B: PolicyKernels + FusedOps> PlanClock<'a, B> {
    pub fn new(inner: &'a dyn AttentionPolicy<B>, sync: bool) -> Self {
        PlanClock {
            inner,
            sync,
            acc: Mutex::new((0.0, 0)),
        }
    }

    /// Seconds spent in `plan` so far, and the number of calls.
    pub fn spent(&self) -> (f64, u64) {
        *self.acc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: PolicyKernels + FusedOps> AttentionPolicy<B> for PlanClock<'_, B> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn token_order(&self, grid: (usize, usize, usize)) -> Option<Arc<Vec<u32>>> {
        self.inner.token_order(grid)
    }
    fn plan(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        ctx: &AttnCtx,
    ) -> jenga_tensor::Result<AttnPlan> {
        self.plan_pooled(be, q, k, None, ctx)
    }
    fn pooled_block(&self, ctx: &AttnCtx) -> Option<usize> {
        self.inner.pooled_block(ctx)
    }
    /// Times the plan only: pooling fused into RoPE (`pooled`) counts in the model's time.
    fn plan_pooled(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
    ) -> jenga_tensor::Result<AttnPlan> {
        if self.sync {
            be.synchronize()?;
        }
        let t = Instant::now();
        let p = self.inner.plan_pooled(be, q, k, pooled, ctx)?;
        if self.sync {
            be.synchronize()?;
        }
        let mut a = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        a.0 += t.elapsed().as_secs_f64();
        a.1 += 1;
        Ok(p)
    }
    fn key_bias(&self, ctx: &AttnCtx) -> Option<KeyBias> {
        self.inner.key_bias(ctx)
    }
    fn density_stats(&self) -> Vec<DensityStats> {
        self.inner.density_stats()
    }
}
