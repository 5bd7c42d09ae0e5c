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
    /// The preset's base shift and guidance (None: the model's); explicit flags win.
    pub shift: Option<f64>,
    pub guidance: Option<f32>,
    /// Where the values come from (printed at start).
    pub source: String,
}

/// A preset's step-skip rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PresetSkip {
    None,
    /// jenga-rs's own static schedule: keep this many of every 50 steps
    /// ([`crate::static_skip_schedule`]), plus the last step of every ProRes stage.
    Static {
        keep_of_50: usize,
    },
    /// The official HunyuanVideo list ([`HUNYUAN_STATIC_STEPS`]).
    OfficialList,
    /// TeaCache with this threshold (the Wan scripts' `--teacache_thresh`, `--use_ret_step`).
    TeaCache {
        threshold: f64,
    },
}

/// The steps `jenga_hyvideo.py` (L28, `non_skip_steps`) computes; every other step reuses the
/// last residual, except step 0 and the first step on a new resolution.
pub const HUNYUAN_STATIC_STEPS: [usize; 23] = [
    0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25, 26, 29, 32, 35, 38, 41, 43, 45, 46, 47, 49,
];

/// The official static list as a mask over `steps` (indices past the run are dropped, as the
/// reference's counter never reaches them).
pub fn official_static_schedule(steps: usize) -> Vec<bool> {
    let mut c = vec![false; steps];
    for &i in HUNYUAN_STATIC_STEPS.iter().filter(|&&i| i < steps) {
        c[i] = true;
    }
    c
}

/// The model family a preset is for (the official scripts differ per checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetFamily {
    Wan1_3B,
    Wan14B,
    HunyuanVideo,
}

impl PresetFamily {
    pub fn name(self) -> &'static str {
        match self {
            PresetFamily::Wan1_3B => "wan-1.3b",
            PresetFamily::Wan14B => "wan-14b",
            PresetFamily::HunyuanVideo => "hunyuan",
        }
    }
    /// The presets this family takes.
    pub fn presets(self) -> &'static [&'static str] {
        match self {
            PresetFamily::HunyuanVideo => &PRESETS_HUNYUAN,
            _ => &PRESETS_WAN,
        }
    }
}

/// The importance cutoff of the official Wan2.1-1.3B scripts (the Hunyuan ones use 0.3/0.5).
pub const WAN_P_REMAIN: f64 = 0.9;

/// Steps computed out of 50 by jenga-rs's own static schedule on Wan models (`turbo-15`,
/// `flash-wan`, `3stage-wan`): TeaCache-fast's count on Wan2.1-1.3B, and the paper's Wan Jenga
/// row (Table 2a: 15 NFE). `--skip-keep 23` gives the HunyuanVideo count.
pub const WAN_STATIC_KEEP: usize = 15;

/// Wan presets: the official `base`, `turbo` (scripts/wan_{1.3B,14B}_jenga_*.sh), and
/// jenga-rs's own variants (`flash` and `3stage` are aliases of `flash-wan` and `3stage-wan`).
pub const PRESETS_WAN: [&str; 7] = [
    "base",
    "turbo",
    "turbo-15",
    "flash-wan",
    "3stage-wan",
    "flash",
    "3stage",
];
/// HunyuanVideo presets (scripts/hyvideo_jenga_*.sh).
pub const PRESETS_HUNYUAN: [&str; 4] = ["base", "turbo", "flash", "3stage"];
/// Every preset name (for help texts).
pub const PRESETS: [&str; 7] = [
    "base",
    "turbo",
    "flash",
    "3stage",
    "turbo-15",
    "flash-wan",
    "3stage-wan",
];

impl JengaSettings {
    /// A preset for a model family. `shift`: the user's `--shift` (replaces the preset's base
    /// shift; the stages keep their offsets), `model_shift`: the model's default (the base of
    /// jenga-rs's own variants).
    ///
    /// Official (scripts/*.sh of dvlab-research/Jenga@6905150):
    /// - Wan-1.3B `base`: drop 0.75/0.85, p 0.9, TeaCache 0.15, shift 8, guidance 6; `turbo`
    ///   adds the 0.75-resolution ProRes stage (shift 8 → 10).
    /// - Wan-14B `base`: drop 0.7/0.8, p 0.8; `turbo`: drop 0.5/0.9, p 0.9 + ProRes; both
    ///   TeaCache 0.15, shift 8, guidance 6.
    /// - HunyuanVideo `base` (1.0/1.0 at 0.5, drop 0.75/0.85), `turbo` (0.75/1.0, drop
    ///   0.7/0.8), `flash` (0.75/1.0, drop 0.8/0.95, p 0.5), `3stage` (0.5/0.75/1.0 at 0.3/0.5,
    ///   drop 0.75/0.85/0.85); p 0.3 unless said, shifts 7 (+2 per resized stage), embedded
    ///   guidance 6, the static list.
    ///
    /// jenga-rs's own (Wan): `turbo-15` (HunyuanVideo's turbo rates at p 0.9 with the 15-of-50
    /// static schedule), `flash-wan`, `3stage-wan` (HunyuanVideo's flash / 3stage rates at p 0.9,
    /// same schedule), at the model's shift (+2 per stage).
    pub fn preset(
        name: &str,
        family: PresetFamily,
        shift: Option<f64>,
        model_shift: f64,
    ) -> Result<Self, String> {
        use PresetFamily::*;
        let ours = PresetSkip::Static {
            keep_of_50: WAN_STATIC_KEEP,
        };
        let tea = PresetSkip::TeaCache { threshold: 0.15 };
        let wan_script = |n: &str| {
            format!(
                "official: dvlab-research/Jenga scripts/wan_{}_jenga_{n}.sh",
                if family == Wan14B { "14B" } else { "1.3B" }
            )
        };
        let hy_script =
            |n: &str| format!("official: dvlab-research/Jenga scripts/hyvideo_jenga_{n}.sh");
        let own = |n: &str| format!("jenga-rs's own ({n}: not an official Wan configuration)");
        #[allow(clippy::type_complexity)]
        let (drop, p, res, steps, offsets, skip, base, guidance, source): (
            &[f64],
            f64,
            &[f64],
            &[f64],
            &[f64],
            PresetSkip,
            Option<f64>,
            Option<f32>,
            String,
        ) = match (family, name) {
            (Wan1_3B, "base") => (
                &[0.75, 0.85],
                0.9,
                &[1.0],
                &[1.0],
                &[0.0],
                tea,
                Some(8.0),
                Some(6.0),
                wan_script("base"),
            ),
            (Wan1_3B, "turbo") => (
                &[0.75, 0.85],
                0.9,
                &[0.75, 1.0],
                &[0.5, 1.0],
                &[0.0, 2.0],
                tea,
                Some(8.0),
                Some(6.0),
                wan_script("turbo"),
            ),
            (Wan14B, "base") => (
                &[0.7, 0.8],
                0.8,
                &[1.0],
                &[1.0],
                &[0.0],
                tea,
                Some(8.0),
                Some(6.0),
                wan_script("base"),
            ),
            (Wan14B, "turbo") => (
                &[0.5, 0.9],
                0.9,
                &[0.75, 1.0],
                &[0.5, 1.0],
                &[0.0, 2.0],
                tea,
                Some(8.0),
                Some(6.0),
                wan_script("turbo"),
            ),
            (Wan1_3B | Wan14B, "turbo-15") => (
                &[0.7, 0.8],
                WAN_P_REMAIN,
                &[0.75, 1.0],
                &[0.5, 1.0],
                &[0.0, 2.0],
                ours,
                None,
                None,
                own("turbo-15"),
            ),
            (Wan1_3B | Wan14B, "flash-wan" | "flash") => (
                &[0.8, 0.95],
                WAN_P_REMAIN,
                &[0.75, 1.0],
                &[0.5, 1.0],
                &[0.0, 2.0],
                ours,
                None,
                None,
                own("flash-wan"),
            ),
            (Wan1_3B | Wan14B, "3stage-wan" | "3stage") => (
                &[0.75, 0.85, 0.85],
                WAN_P_REMAIN,
                &[0.5, 0.75, 1.0],
                &[0.3, 0.5, 1.0],
                &[0.0, 2.0, 4.0],
                ours,
                None,
                None,
                own("3stage-wan"),
            ),
            (HunyuanVideo, "base") => (
                &[0.75, 0.85],
                0.3,
                &[1.0, 1.0],
                &[0.5, 1.0],
                &[0.0, 0.0],
                PresetSkip::OfficialList,
                Some(7.0),
                Some(6.0),
                hy_script("base"),
            ),
            (HunyuanVideo, "turbo") => (
                &[0.7, 0.8],
                0.3,
                &[0.75, 1.0],
                &[0.5, 1.0],
                &[0.0, 2.0],
                PresetSkip::OfficialList,
                Some(7.0),
                Some(6.0),
                hy_script("turbo"),
            ),
            (HunyuanVideo, "flash") => (
                &[0.8, 0.95],
                0.5,
                &[0.75, 1.0],
                &[0.5, 1.0],
                &[0.0, 2.0],
                PresetSkip::OfficialList,
                Some(7.0),
                Some(6.0),
                hy_script("flash"),
            ),
            (HunyuanVideo, "3stage") => (
                &[0.75, 0.85, 0.85],
                0.3,
                &[0.5, 0.75, 1.0],
                &[0.3, 0.5, 1.0],
                &[0.0, 2.0, 4.0],
                PresetSkip::OfficialList,
                Some(7.0),
                Some(6.0),
                hy_script("3stage"),
            ),
            (f, other) => {
                return Err(format!(
                    "--preset {other}: unknown for {} (expected one of {})",
                    f.name(),
                    f.presets().join(", ")
                ))
            }
        };
        let s = shift.or(base).unwrap_or(model_shift);
        Ok(JengaSettings {
            sa_drop_rates: drop.to_vec(),
            p_remain_rates: vec![p],
            res_rate_list: res.to_vec(),
            step_rate_list: steps.to_vec(),
            scheduler_shift_list: offsets.iter().map(|o| s + o).collect(),
            skip,
            shift: base,
            guidance,
            source,
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
            shift: None,
            guidance: None,
            source: "Jenga flags over the Wan scripts' attention defaults (drop 0.75/0.85, p 0.9)"
                .into(),
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
    fn presets_are_the_official_scripts_values() {
        use PresetFamily::*;
        let p = |n, f| JengaSettings::preset(n, f, None, 5.0).unwrap();
        // scripts/wan_1.3B_jenga_{base,turbo}.sh
        let b = p("base", Wan1_3B);
        assert_eq!(b.sa_drop_rates, vec![0.75, 0.85]);
        assert_eq!(b.p_remain_rates, vec![0.9]);
        assert_eq!((b.shift, b.guidance), (Some(8.0), Some(6.0)));
        assert_eq!(b.scheduler_shift_list, vec![8.0]);
        assert_eq!(b.skip, PresetSkip::TeaCache { threshold: 0.15 });
        assert!(
            b.source.contains("scripts/wan_1.3B_jenga_base.sh"),
            "{}",
            b.source
        );
        let t = p("turbo", Wan1_3B);
        assert_eq!(t.res_rate_list, vec![0.75, 1.0]);
        assert_eq!(t.scheduler_shift_list, vec![8.0, 10.0]);
        assert_eq!(t.sa_drop_rates, vec![0.75, 0.85]);
        // scripts/wan_14B_jenga_{base,turbo}.sh: their own rates and p
        let b14 = p("base", Wan14B);
        assert_eq!(
            (b14.sa_drop_rates.as_slice(), b14.p_remain_rates[0]),
            (&[0.7, 0.8][..], 0.8)
        );
        assert!(b14.source.contains("wan_14B_jenga_base"));
        let t14 = p("turbo", Wan14B);
        assert_eq!(
            (t14.sa_drop_rates.as_slice(), t14.p_remain_rates[0]),
            (&[0.5, 0.9][..], 0.9)
        );
        // scripts/hyvideo_jenga_*.sh: shifts 7 7 / 7 9 / 7 9 11, the static list
        let hb = p("base", HunyuanVideo);
        assert_eq!(hb.res_rate_list, vec![1.0, 1.0]);
        assert_eq!(hb.scheduler_shift_list, vec![7.0, 7.0]);
        assert_eq!(hb.p_remain_rates, vec![0.3]);
        assert_eq!(hb.skip, PresetSkip::OfficialList);
        assert_eq!(p("flash", HunyuanVideo).p_remain_rates, vec![0.5]);
        assert_eq!(p("flash", HunyuanVideo).sa_drop_rates, vec![0.8, 0.95]);
        let h3 = p("3stage", HunyuanVideo);
        assert_eq!(h3.scheduler_shift_list, vec![7.0, 9.0, 11.0]);
        assert_eq!(h3.step_rate_list, vec![0.3, 0.5, 1.0]);
        // --shift replaces the base and keeps the offsets
        let ts = JengaSettings::preset("turbo", Wan1_3B, Some(5.0), 3.0).unwrap();
        assert_eq!(ts.scheduler_shift_list, vec![5.0, 7.0]);
        // ours keep their names, the model's shift and say so
        let o = JengaSettings::preset("turbo-15", Wan1_3B, None, 3.0).unwrap();
        assert_eq!(o.sa_drop_rates, vec![0.7, 0.8]);
        assert_eq!(o.scheduler_shift_list, vec![3.0, 5.0]);
        assert_eq!(o.skip, PresetSkip::Static { keep_of_50: 15 });
        assert_eq!((o.shift, o.guidance), (None, None));
        assert!(o.source.contains("jenga-rs's own"), "{}", o.source);
        assert_eq!(
            JengaSettings::preset("flash", Wan1_3B, None, 3.0).unwrap(),
            JengaSettings::preset("flash-wan", Wan1_3B, None, 3.0).unwrap()
        );
        for f in [Wan1_3B, Wan14B, HunyuanVideo] {
            for n in f.presets() {
                p(n, f).validate().unwrap();
            }
        }
        assert!(JengaSettings::preset("warp", Wan1_3B, None, 3.0)
            .unwrap_err()
            .contains("--preset warp"));
        assert!(JengaSettings::preset("turbo-15", HunyuanVideo, None, 3.0).is_err());
    }

    #[test]
    fn the_official_static_list_exactly() {
        let c = official_static_schedule(50);
        let kept: Vec<usize> = (0..50).filter(|&i| c[i]).collect();
        assert_eq!(
            kept,
            vec![
                0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25, 26, 29, 32, 35, 38, 41, 43, 45, 46, 47,
                49
            ]
        );
        // shorter runs keep the entries they reach
        assert_eq!(
            official_static_schedule(6),
            vec![true, true, true, true, true, false]
        );
    }

    #[test]
    fn stage_plan_arithmetic() {
        let s = JengaSettings::preset("3stage-wan", PresetFamily::Wan1_3B, None, 3.0).unwrap();
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
        let t = JengaSettings::preset("turbo", PresetFamily::HunyuanVideo, None, 3.0).unwrap();
        let st = t.stages(50, 32, 32, [1, 2, 2]).unwrap();
        assert_eq!((st[0].end_step, st[1].end_step), (26, 50));
        // (drop rate and p per step/stage: `jenga_carve::schedule`, tested there)
    }

    #[test]
    fn bad_flags_are_rejected_with_the_flag_named() {
        let base = JengaSettings::preset("turbo-15", PresetFamily::Wan1_3B, None, 3.0).unwrap();
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
