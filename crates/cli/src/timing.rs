//! Timing helpers shared by `eval` and the benches: process CPU time, and a wrapper policy
//! that adds up the time spent building attention plans.

use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::AttnPlan;
use std::sync::Mutex;
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

/// The CPU backend's DiT rate, GFLOP/s per thread: a tiny-wan forward (≈ 48 GFLOP at 2048
/// tokens) takes ≈ 1.1 s on 2 threads.
const CPU_GFLOPS_PER_THREAD: f64 = 22.0;

/// On the CPU, a note with the rough duration of `gflop` of DiT work when it exceeds a minute,
/// so a bench meant for a GPU does not look hung.
pub fn warn_cpu_cost(on_cpu: bool, threads: Option<usize>, gflop: f64, what: &str) {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let secs = gflop / (CPU_GFLOPS_PER_THREAD * threads as f64);
    if on_cpu && secs > 60.0 {
        let t = match secs {
            s if s > 7200.0 => format!("{:.0} hours", s / 3600.0),
            s if s > 120.0 => format!("{:.0} minutes", s / 60.0),
            s => format!("{s:.0} s"),
        };
        eprintln!(
            "note: {what} is about {:.1} TFLOP of work: roughly {t} on {threads} CPU threads (seconds on a GPU: --device cuda); Ctrl-C stops it",
            gflop / 1e3
        );
    }
}

/// Wraps a policy and adds up the wall time of its `plan` calls. With `sync`, each call sits
/// between two device synchronisations, so the time is the plan's own GPU cost (a profiling
/// run only: the syncs slow the whole run down).
pub struct PlanClock<'a, B: jenga_engine::EngineBackend> {
    inner: &'a dyn AttentionPolicy<B>,
    sync: bool,
    /// (seconds, calls)
    acc: Mutex<(f64, u64)>,
}

impl<'a, B: jenga_engine::EngineBackend> PlanClock<'a, B> {
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

impl<B: jenga_engine::EngineBackend> AttentionPolicy<B> for PlanClock<'_, B> {
    fn delegate(&self) -> Option<&dyn AttentionPolicy<B>> {
        Some(self.inner)
    }
    /// Times the plan only: pooling fused into RoPE (`pooled`) counts in the model's time.
    fn on_plan(
        &self,
        be: &B,
        _q: &B::Tensor,
        _k: &B::Tensor,
        _ctx: &AttnCtx,
        make: &mut dyn FnMut() -> jenga_tensor::Result<AttnPlan>,
    ) -> jenga_tensor::Result<AttnPlan> {
        if self.sync {
            be.synchronize()?;
        }
        let t = Instant::now();
        let p = make()?;
        if self.sync {
            be.synchronize()?;
        }
        let mut a = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        a.0 += t.elapsed().as_secs_f64();
        a.1 += 1;
        Ok(p)
    }
}
