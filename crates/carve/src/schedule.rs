//! Drop-rate schedule: which fraction of key blocks the importance floor may drop, per step.
//!
//! Two reference behaviours, both expressible here:
//! - **Wan** (`jenga_wan.py`): step index `≤ 25` uses `sa_drop_rates[0]`, later steps
//!   `sa_drop_rates[1]` ([`DropMode::ByStep`] with `step_ends = [25]`), with the warm-up ramp
//!   `drop = min(drop, (idx / (N − 1) · 10) · drop)`, and full attention whenever the resulting
//!   rate is `≤ 0.25` (`model_mul.py`: "directly use FA Full").
//! - **HunyuanVideo** (`pipeline_hunyuan_video_prores.py`): one drop rate per ProRes stage
//!   ([`DropMode::ByStage`]), no ramp, full attention only when the rate is exactly 0.
//!
//! `p` (`--p-remain-rates`) is a single value in both references; here it may vary per stage
//! (the last value repeats).

use jenga_tensor::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum DropMode {
    /// `drop_rates[stage]` (last value repeats).
    ByStage,
    /// Range `i` covers steps `step_ends[i-1] < step ≤ step_ends[i]` and uses `drop_rates[i]`;
    /// steps after the last end use the next rate (the last one given).
    ByStep { step_ends: Vec<usize> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub drop_rates: Vec<f64>,
    pub p_remain: Vec<f64>,
    pub mode: DropMode,
    /// Apply the warm-up ramp over the first 10% of steps.
    pub warmup: bool,
    /// Rates at or below this run dense attention (Wan 0.25, Hunyuan 0.0).
    pub dense_at_or_below: f64,
}

impl Schedule {
    /// Wan reference: by step (boundary after step 25), warm-up ramp, dense at ≤ 0.25.
    pub fn wan(drop_rates: &[f64], p: f64) -> Self {
        Schedule {
            drop_rates: drop_rates.to_vec(),
            p_remain: vec![p],
            mode: DropMode::ByStep {
                step_ends: vec![25],
            },
            warmup: true,
            dense_at_or_below: 0.25,
        }
    }

    /// HunyuanVideo reference: one rate per ProRes stage, no ramp, dense only at 0.
    pub fn hunyuan(stage_drop_rates: &[f64], p: f64) -> Self {
        Schedule {
            drop_rates: stage_drop_rates.to_vec(),
            p_remain: vec![p],
            mode: DropMode::ByStage,
            warmup: false,
            dense_at_or_below: 0.0,
        }
    }

    /// Never sparse.
    pub fn dense() -> Self {
        Schedule::hunyuan(&[0.0], 1.0)
    }

    pub fn validate(&self) -> Result<()> {
        let op = "Schedule";
        if self.drop_rates.is_empty() || self.p_remain.is_empty() {
            return Err(Error::invalid(
                op,
                "needs at least one drop rate and one p value",
            ));
        }
        if let Some(d) = self.drop_rates.iter().find(|d| !(0.0..1.0).contains(*d)) {
            return Err(Error::invalid(op, format!("drop rate {d} outside [0, 1)")));
        }
        if let Some(p) = self.p_remain.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(Error::invalid(op, format!("p {p} outside [0, 1]")));
        }
        if let DropMode::ByStep { step_ends } = &self.mode {
            if step_ends.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::invalid(op, "step boundaries must increase"));
            }
        }
        Ok(())
    }

    /// Scheduled rate before the ramp.
    pub fn base_drop(&self, step: usize, stage: usize) -> f64 {
        let i = match &self.mode {
            DropMode::ByStage => stage,
            DropMode::ByStep { step_ends } => step_ends
                .iter()
                .position(|&end| step <= end)
                .unwrap_or(step_ends.len()),
        };
        pick(&self.drop_rates, i)
    }

    /// Effective drop rate at `step` of `num_steps` in `stage` (ramp applied).
    pub fn drop_rate(&self, step: usize, num_steps: usize, stage: usize) -> f64 {
        let drop = self.base_drop(step, stage);
        if self.warmup && num_steps > 1 {
            // Same expression order as the reference for identical rounding.
            let step_normed = step as f64 / (num_steps - 1) as f64 * 10.0;
            drop.min(step_normed * drop)
        } else {
            drop
        }
    }

    /// Whether a rate means full attention.
    pub fn is_dense(&self, drop: f64) -> bool {
        drop <= self.dense_at_or_below
    }

    /// Probability mass `p` for a stage.
    pub fn p(&self, stage: usize) -> f64 {
        pick(&self.p_remain, stage)
    }
}

fn pick(v: &[f64], i: usize) -> f64 {
    v.get(i).or(v.last()).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_steps_and_ramp() {
        let s = Schedule::wan(&[0.75, 0.85], 0.9);
        s.validate().unwrap();
        let n = 50;
        // Ramp: idx/49*10*drop; step 0 -> 0 (dense), step 1 -> 0.153 (dense, <= 0.25),
        // step 2 -> 0.306, step 4 -> 0.612, step 5 -> full 0.75.
        assert_eq!(s.drop_rate(0, n, 0), 0.0);
        assert!(s.is_dense(s.drop_rate(0, n, 0)));
        let d1 = s.drop_rate(1, n, 0);
        assert!((d1 - 1.0 / 49.0 * 10.0 * 0.75).abs() < 1e-15 && s.is_dense(d1));
        let d2 = s.drop_rate(2, n, 0);
        assert!((d2 - 0.30612244897959184).abs() < 1e-12 && !s.is_dense(d2));
        assert_eq!(s.drop_rate(5, n, 0), 0.75);
        assert_eq!(s.drop_rate(25, n, 0), 0.75);
        assert_eq!(s.drop_rate(26, n, 1), 0.85);
        assert_eq!(s.drop_rate(49, n, 1), 0.85);
        assert_eq!(s.p(0), 0.9);
        assert_eq!(s.p(3), 0.9);
        // One rate: used everywhere.
        let one = Schedule::wan(&[0.7], 0.9);
        assert_eq!(one.drop_rate(40, n, 0), 0.7);
    }

    #[test]
    fn hunyuan_by_stage() {
        let s = Schedule::hunyuan(&[0.75, 0.85, 0.9], 0.3);
        assert_eq!(s.drop_rate(0, 50, 0), 0.75);
        assert_eq!(s.drop_rate(30, 50, 1), 0.85);
        assert_eq!(s.drop_rate(49, 50, 2), 0.9);
        assert_eq!(s.drop_rate(49, 50, 7), 0.9);
        assert!(!s.is_dense(0.01) && s.is_dense(0.0));
        assert!(Schedule::dense().is_dense(Schedule::dense().drop_rate(3, 10, 0)));
    }

    #[test]
    fn general_step_ranges_and_validation() {
        let s = Schedule {
            drop_rates: vec![0.5, 0.6, 0.7],
            p_remain: vec![0.3, 0.5],
            mode: DropMode::ByStep {
                step_ends: vec![9, 19],
            },
            warmup: false,
            dense_at_or_below: 0.0,
        };
        s.validate().unwrap();
        assert_eq!(s.drop_rate(9, 30, 0), 0.5);
        assert_eq!(s.drop_rate(10, 30, 0), 0.6);
        assert_eq!(s.drop_rate(20, 30, 0), 0.7);
        assert_eq!(s.p(1), 0.5);
        let mut bad = s.clone();
        bad.drop_rates = vec![1.0];
        assert!(bad.validate().is_err());
        let mut bad = s.clone();
        bad.mode = DropMode::ByStep {
            step_ends: vec![5, 5],
        };
        assert!(bad.validate().is_err());
        let mut bad = s;
        bad.p_remain.clear();
        assert!(bad.validate().is_err());
        // A one-step run has no ramp (the reference would divide by zero).
        assert_eq!(Schedule::wan(&[0.8], 0.9).drop_rate(0, 1, 0), 0.8);
    }
}
