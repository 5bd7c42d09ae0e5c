//! Jenga settings: the seed's flags (`--sa-drop-rates`, `--p-remain-rates`, `--res-rate-list`,
//! `--step-rate-list`, `--scheduler-shift-list`) and the presets that expand to them.

use crate::sampler::StagePlan;

#[derive(Clone, Debug, PartialEq)]
pub struct JengaSettings {
    /// Attention drop rates (keep ratio k = 1 − drop): one per ProRes stage, or, with a
    /// single stage, two values split at the middle step (the Wan scripts' `step ≤ 25 of 50`).
    pub sa_drop_rates: Vec<f64>,
    /// Cumulative-probability cutoff p of the importance mask (one value, or one per stage).
    pub p_remain_rates: Vec<f64>,
    pub res_rate_list: Vec<f64>,
    pub step_rate_list: Vec<f64>,
    /// Absolute shifts per stage.
    pub scheduler_shift_list: Vec<f64>,
    /// Step skipping the preset asks for (an explicit `--skip` wins).
    pub skip: PresetSkip,
}

/// A preset's step-skip rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PresetSkip {
    None,
    /// The paper's static schedule: keep this many of every 50 steps.
    Static {
        keep_of_50: usize,
    },
    /// TeaCache with this threshold (the Wan scripts' `--teacache_thresh`).
    TeaCache {
        threshold: f64,
    },
}

/// The importance cutoff of the official Wan2.1 scripts (the Hunyuan table uses 0.3/0.5).
pub const WAN_P_REMAIN: f64 = 0.9;

/// Steps computed out of 50 by the ProRes presets on Wan models. The paper replaces TeaCache
/// by a static schedule with TeaCache-fast's step count ("23 steps, same as TeaCache-fast", on
/// HunyuanVideo); on Wan2.1-1.3B TeaCache-fast computes 15 of 50 steps, and so does the paper's
/// Wan Jenga row (Table 2a: 15 NFE, 6.52x). `--skip-keep 23` gives the HunyuanVideo count.
pub const WAN_STATIC_KEEP: usize = 15;

pub const PRESETS: [&str; 4] = ["base", "turbo", "flash", "3stage"];

impl JengaSettings {
    /// The seed's presets for Wan2.1 models.
    ///
    /// - `base` is the official Wan script's Base: drop 0.75/0.85 (switch at the middle step),
    ///   p 0.9, TeaCache 0.15.
    /// - `turbo`, `flash`, `3stage` take the drop rates, resolutions, step splits and shift
    ///   offsets of the seed's table (HunyuanVideo, shift 7 9 11 → s, s+2, s+4) with the Wan
    ///   scripts' p = 0.9 (the table's 0.3/0.5 keep too little of Wan's diffuse attention:
    ///   docs/JENGA.md), and the paper's static schedule at Wan's TeaCache-fast step count
    ///   ([`WAN_STATIC_KEEP`] = 15 of every 50 steps).
    pub fn preset(name: &str, base_shift: f64) -> Result<Self, String> {
        let s = base_shift;
        let p = WAN_P_REMAIN;
        let paper_skip = PresetSkip::Static {
            keep_of_50: WAN_STATIC_KEEP,
        };
        #[allow(clippy::type_complexity)]
        let (drop, res, steps, shifts, skip): (
            &[f64],
            &[f64],
            &[f64],
            Vec<f64>,
            PresetSkip,
        ) = match name {
            "base" => (
                &[0.75, 0.85],
                &[1.0],
                &[1.0],
                vec![s],
                PresetSkip::TeaCache { threshold: 0.15 },
            ),
            "turbo" => (
                &[0.7, 0.8],
                &[0.75, 1.0],
                &[0.5, 1.0],
                vec![s, s + 2.0],
                paper_skip,
            ),
            "flash" => (
                &[0.8, 0.95],
                &[0.75, 1.0],
                &[0.5, 1.0],
                vec![s, s + 2.0],
                paper_skip,
            ),
            "3stage" => (
                &[0.75, 0.85, 0.85],
                &[0.5, 0.75, 1.0],
                &[0.3, 0.5, 1.0],
                vec![s, s + 2.0, s + 4.0],
                paper_skip,
            ),
            other => {
                return Err(format!(
                    "--preset {other}: unknown (expected one of {})",
                    PRESETS.join(", ")
                ))
            }
        };
        Ok(JengaSettings {
            sa_drop_rates: drop.to_vec(),
            p_remain_rates: vec![p],
            res_rate_list: res.to_vec(),
            step_rate_list: steps.to_vec(),
            scheduler_shift_list: shifts,
            skip,
        })
    }

    /// Attention carving only (no ProRes, no skip), at the model's shift.
    pub fn attention_only(base_shift: f64) -> Self {
        JengaSettings {
            sa_drop_rates: vec![0.75, 0.85],
            p_remain_rates: vec![WAN_P_REMAIN],
            res_rate_list: vec![1.0],
            step_rate_list: vec![1.0],
            scheduler_shift_list: vec![base_shift],
            skip: PresetSkip::None,
        }
    }

    /// Flag-level checks, before any compute; messages name the flag.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.res_rate_list.len();
        if n == 0 {
            return Err("--res-rate-list: at least one stage is needed".into());
        }
        if self.step_rate_list.len() != n || self.scheduler_shift_list.len() != n {
            return Err(format!(
                "--res-rate-list ({n}), --step-rate-list ({}) and --scheduler-shift-list ({}) must have the same length",
                self.step_rate_list.len(),
                self.scheduler_shift_list.len()
            ));
        }
        let in_unit = |v: f64| v > 0.0 && v <= 1.0;
        for (flag, list) in [
            ("--sa-drop-rates", &self.sa_drop_rates),
            ("--p-remain-rates", &self.p_remain_rates),
            ("--res-rate-list", &self.res_rate_list),
            ("--step-rate-list", &self.step_rate_list),
        ] {
            if let Some(v) = list.iter().find(|v| !in_unit(**v)) {
                return Err(format!("{flag}: {v} is outside (0, 1]"));
            }
        }
        if self.sa_drop_rates.iter().any(|&d| d >= 1.0) {
            return Err("--sa-drop-rates: a drop rate of 1 would keep no block".into());
        }
        let drops_ok = self.sa_drop_rates.len() == n
            || (n == 1 && self.sa_drop_rates.len() == 2)
            || self.sa_drop_rates.len() == 1;
        if !drops_ok {
            return Err(format!("--sa-drop-rates: {} values for {n} stage(s) (give 1, one per stage, or 2 for one stage)", self.sa_drop_rates.len()));
        }
        if !(self.p_remain_rates.len() == 1 || self.p_remain_rates.len() == n) {
            return Err(format!(
                "--p-remain-rates: {} values for {n} stage(s) (give 1 or one per stage)",
                self.p_remain_rates.len()
            ));
        }
        if self.step_rate_list.windows(2).any(|w| w[1] <= w[0]) {
            return Err(format!(
                "--step-rate-list {:?}: must increase",
                self.step_rate_list
            ));
        }
        if self.res_rate_list.windows(2).any(|w| w[1] < w[0]) {
            return Err(format!(
                "--res-rate-list {:?}: must not decrease",
                self.res_rate_list
            ));
        }
        if (self.step_rate_list[n - 1] - 1.0).abs() > 1e-9
            || (self.res_rate_list[n - 1] - 1.0).abs() > 1e-9
        {
            return Err("--step-rate-list and --res-rate-list must end with 1.0 (the last stage is full size and ends the run)".into());
        }
        if let Some(v) = self
            .scheduler_shift_list
            .iter()
            .find(|v| v.is_nan() || **v <= 0.0)
        {
            return Err(format!("--scheduler-shift-list: {v} must be positive"));
        }
        if let PresetSkip::Static { keep_of_50: k } = self.skip {
            if k == 0 || k > 50 {
                return Err(format!("--skip-keep {k}: must be in 1..=50"));
            }
        }
        Ok(())
    }

    /// Stage plans for a run of `steps`: a non-final stage ends after the model call of step
    /// `int(steps · step_rate[s])` (both official pipelines switch there: 26 + 24 steps at 50,
    /// 16/10/24 for three stages), the last at `steps`. Also checks that every stage gets at
    /// least one step and whole patches.
    pub fn stages(
        &self,
        steps: usize,
        height: usize,
        width: usize,
        patch: [usize; 3],
    ) -> Result<Vec<StagePlan>, String> {
        self.validate()?;
        let mut out = Vec::new();
        let mut prev = 0;
        for (i, ((&r, &sr), &sh)) in self
            .res_rate_list
            .iter()
            .zip(&self.step_rate_list)
            .zip(&self.scheduler_shift_list)
            .enumerate()
        {
            let last = i + 1 == self.res_rate_list.len();
            let end = match last {
                true => steps,
                false => ((steps as f64 * sr) as usize + 1).min(steps),
            };
            if end <= prev {
                return Err(format!(
                    "--step-rate-list: stage {i} gets no step of {steps} (rates {:?})",
                    self.step_rate_list
                ));
            }
            let (h2, w2) = ((height as f64 * r) as usize, (width as f64 * r) as usize);
            if h2 < patch[1] || w2 < patch[2] {
                return Err(format!(
                    "--res-rate-list: {r} makes stage {i} {h2}x{w2}, smaller than one {}x{} patch",
                    patch[1], patch[2]
                ));
            }
            out.push(StagePlan {
                res_rate: r,
                end_step: end,
                shift: sh,
            });
            prev = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_expand_to_the_seed_values_and_validate() {
        let t = JengaSettings::preset("turbo", 7.0).unwrap();
        assert_eq!(t.sa_drop_rates, vec![0.7, 0.8]);
        assert_eq!(t.res_rate_list, vec![0.75, 1.0]);
        assert_eq!(t.scheduler_shift_list, vec![7.0, 9.0]);
        assert_eq!(t.p_remain_rates, vec![WAN_P_REMAIN]);
        assert_eq!(t.skip, PresetSkip::Static { keep_of_50: 15 });
        // base is the official Wan script's: p 0.9 with TeaCache 0.15
        let b = JengaSettings::preset("base", 7.0).unwrap();
        assert_eq!(b.skip, PresetSkip::TeaCache { threshold: 0.15 });
        assert_eq!(
            (b.sa_drop_rates.as_slice(), b.p_remain_rates[0]),
            (&[0.75, 0.85][..], 0.9)
        );
        for p in PRESETS {
            JengaSettings::preset(p, 3.0).unwrap().validate().unwrap();
        }
        assert!(JengaSettings::preset("warp", 3.0)
            .unwrap_err()
            .contains("--preset warp"));
    }

    #[test]
    fn stage_plan_arithmetic() {
        let s = JengaSettings::preset("3stage", 3.0).unwrap();
        let st = s.stages(50, 32, 32, [1, 2, 2]).unwrap();
        assert_eq!(
            st.iter().map(|s| s.end_step).collect::<Vec<_>>(),
            vec![16, 26, 50]
        );
        assert_eq!(
            st.iter().map(|s| s.shift).collect::<Vec<_>>(),
            vec![3.0, 5.0, 7.0]
        );
        // Turbo's two stages: 26 low-res + 24 full-res steps at 50
        let t = JengaSettings::preset("turbo", 3.0).unwrap();
        let st = t.stages(50, 32, 32, [1, 2, 2]).unwrap();
        assert_eq!((st[0].end_step, st[1].end_step), (26, 50));
        // (drop rate and p per step/stage: `jenga_carve::schedule`, tested there)
    }

    #[test]
    fn bad_flags_are_rejected_with_the_flag_named() {
        let base = JengaSettings::preset("turbo", 3.0).unwrap();
        let mut s = base.clone();
        s.step_rate_list = vec![1.0];
        assert!(s.validate().unwrap_err().contains("same length"));
        let mut s = base.clone();
        s.sa_drop_rates = vec![0.7, 1.5];
        assert!(s.validate().unwrap_err().contains("--sa-drop-rates"));
        let mut s = base.clone();
        s.step_rate_list = vec![1.0, 0.5];
        assert!(s.validate().unwrap_err().contains("--step-rate-list"));
        let mut s = base.clone();
        s.p_remain_rates = vec![0.0];
        assert!(s.validate().unwrap_err().contains("--p-remain-rates"));
        let mut s = base.clone();
        s.res_rate_list = vec![0.01, 1.0];
        assert!(s
            .stages(30, 32, 32, [1, 2, 2])
            .unwrap_err()
            .contains("--res-rate-list"));
        let mut s = base;
        s.res_rate_list = vec![0.5, 0.75, 1.0];
        s.scheduler_shift_list = vec![3.0; 3];
        s.sa_drop_rates = vec![0.7];
        s.step_rate_list = vec![0.5, 0.51, 1.0];
        // both non-final stages end after step int(10·r) = 5: the second gets no step
        assert!(s
            .stages(10, 32, 32, [1, 2, 2])
            .unwrap_err()
            .contains("no step"));
    }
}
