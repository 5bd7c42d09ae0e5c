//! Where a forward's GPU time goes, op by op (`jenga bench dit --op-times`).
//!
//! Off by default and free then (one relaxed load per op). On, each timed op runs between two
//! stream synchronizes and its host wall time is added to its name's total, so the figures
//! include one launch latency per op (a few µs) and the sum exceeds an unsynchronised forward
//! by that much; shares are what this is for. Ops nested inside a timed op (a linear's bias
//! kernel, say) count toward the outer op only.

use crate::error::drv;
use cudarc::driver::CudaStream;
use jenga_tensor::Result;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Per-op totals while timing is on.
#[derive(Default)]
pub struct OpTimes {
    on: AtomicBool,
    totals: Mutex<Vec<OpTime>>,
}

/// One op's calls and summed time.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub op: String,
    pub calls: u64,
    pub seconds: f64,
}

impl OpTimes {
    /// Start (clearing earlier totals) or stop timing ops.
    pub(crate) fn set(&self, on: bool) {
        if on {
            if let Ok(mut t) = self.totals.lock() {
                t.clear();
            }
        }
        self.on.store(on, Ordering::Relaxed);
    }

    /// Whether ops are being timed now.
    pub(crate) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Totals so far, most expensive first.
    pub(crate) fn totals(&self) -> Vec<OpTime> {
        let mut v = self.totals.lock().map(|t| t.clone()).unwrap_or_default();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }

    /// Run `f` as op `name` (timed when timing is on and no timed op encloses it).
    pub(crate) fn timed<T>(
        &self,
        stream: &CudaStream,
        name: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if !self.on.load(Ordering::Relaxed) || DEPTH.with(|d| d.get()) > 0 {
            return f();
        }
        let sync = || {
            stream
                .synchronize()
                .map_err(drv("synchronizing for op timing"))
        };
        sync()?;
        let t0 = Instant::now();
        DEPTH.with(|d| d.set(d.get() + 1));
        let r = f();
        DEPTH.with(|d| d.set(d.get() - 1));
        let r = r?;
        sync()?;
        let dt = t0.elapsed().as_secs_f64();
        if let Ok(mut t) = self.totals.lock() {
            match t.iter_mut().find(|o| o.op == name) {
                Some(o) => {
                    o.calls += 1;
                    o.seconds += dt;
                }
                None => t.push(OpTime {
                    op: name.to_string(),
                    calls: 1,
                    seconds: dt,
                }),
            }
        }
        Ok(r)
    }
}
