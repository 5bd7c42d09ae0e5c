//! Solvers of the flow-matching ODE and their time grids.
//!
//! - [`SolverKind::UniPc`]: Wan2.1's `FlowUniPCMultistepScheduler` (`wan/utils/fm_solvers_unipc.py`,
//!   the official Wan and Jenga-Wan default): order 2, `bh2`, predict-x0, corrector, lower-order
//!   final steps, final σ = 0, the grid `linspace(0.999, 0, N + 1)[:-1]` shifted, the model fed
//!   the integer-truncated `t = ⌊1000·σ⌋`. Same arithmetic as diffusers'
//!   `UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")` fed that
//!   grid (`tests/unipc_golden.rs`).
//! - [`SolverKind::UniPcDiffusers`]: the same solver on diffusers' own default grid, as
//!   `WanPipeline` runs it from a diffusers checkpoint's `scheduler_config.json`:
//!   `linspace(1, 1/1000, N + 1)[:-1]` shifted, σ₀ = 1 − 10⁻⁶, `t = ⌊1000·σ⌋` (999, 964, 923, …
//!   at 10 steps shift 3, where Wan's grid gives 999, 963, 922, …).
//! - [`SolverKind::Euler`]: HunyuanVideo's `FlowMatchDiscreteScheduler` (and Wan's dpm++ grid):
//!   `σ = shift(linspace(1, 0, N + 1))`, float `t = 1000·σ`, `x += (σ_{i+1} − σ_i)·v`.
//!
//! The latent stays on the device: every update is a [`SolverOps`] op (`latent_step`,
//! `latent_combine`) with coefficients computed here on the host.

mod unipc;

pub use unipc::UniPc;

use crate::flow_sigmas;
use jenga_tensor::{Result, SolverOps};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverKind {
    Euler,
    UniPc,
    UniPcDiffusers,
}

impl SolverKind {
    pub fn name(self) -> &'static str {
        match self {
            SolverKind::Euler => "euler",
            SolverKind::UniPc => "unipc",
            SolverKind::UniPcDiffusers => "unipc-diffusers",
        }
    }
}

impl std::str::FromStr for SolverKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "euler" => Ok(SolverKind::Euler),
            "unipc" => Ok(SolverKind::UniPc),
            "unipc-diffusers" => Ok(SolverKind::UniPcDiffusers),
            _ => Err(format!(
                "--solver {s}: expected unipc, unipc-diffusers or euler"
            )),
        }
    }
}

/// The time grid of one schedule (one shift): `sigmas` has `steps + 1` values ending at 0,
/// `t` the `steps` timesteps the model is fed.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub sigmas: Vec<f64>,
    pub t: Vec<f64>,
}

/// `σ_max` of Wan's scheduler: `1 − 1/1000` of its training grid, stored in f32.
const WAN_SIGMA_MAX: f32 = 0.999;

impl Grid {
    pub fn new(kind: SolverKind, steps: usize, shift: f64) -> Grid {
        match kind {
            SolverKind::Euler => {
                let sigmas = flow_sigmas(steps, shift);
                let t = sigmas[..steps].iter().map(|s| s * 1000.0).collect();
                Grid { sigmas, t }
            }
            SolverKind::UniPc => {
                // set_timesteps: np.linspace(σ_max, σ_min = 0, N + 1)[:-1] in f64, shifted;
                // timesteps = (σ·1000) cast to int64 (truncation); sigmas stored as f32.
                let hi = WAN_SIGMA_MAX as f64;
                let mut sigmas = Vec::with_capacity(steps + 1);
                let mut t = Vec::with_capacity(steps);
                for i in 0..steps {
                    let s = linspace_at(hi, 0.0, steps + 1, i);
                    let s = shift * s / (1.0 + (shift - 1.0) * s);
                    t.push((s * 1000.0).trunc());
                    sigmas.push(s as f32 as f64);
                }
                sigmas.push(0.0);
                Grid { sigmas, t }
            }
            SolverKind::UniPcDiffusers => {
                // scheduling_unipc_multistep.py, use_flow_sigmas: np.linspace(1, 1/1000,
                // N + 1)[:-1], shifted, σ₀ pulled 1e-6 below 1, timesteps cast to int64.
                let mut sigmas = Vec::with_capacity(steps + 1);
                let mut t = Vec::with_capacity(steps);
                for i in 0..steps {
                    let s = linspace_at(1.0, 1.0 / 1000.0, steps + 1, i);
                    let mut s = shift * s / (1.0 + (shift - 1.0) * s);
                    if i == 0 && (s - 1.0).abs() < 1e-6 {
                        s -= 1e-6;
                    }
                    t.push((s * 1000.0).trunc());
                    sigmas.push(s as f32 as f64);
                }
                sigmas.push(0.0);
                Grid { sigmas, t }
            }
        }
    }

    /// The index `add_noise(…, timesteps[i])` reads σ at: the first step whose timestep equals
    /// `t[i]`, or the second when several do (`index_for_timestep`, both references).
    pub fn noise_index(&self, i: usize) -> usize {
        let Some(&ti) = self.t.get(i) else {
            return self.sigmas.len() - 1;
        };
        let hits: Vec<usize> = (0..self.t.len()).filter(|&k| self.t[k] == ti).collect();
        if hits.len() > 1 {
            hits[1]
        } else {
            hits[0]
        }
    }
}

/// `numpy.linspace(a, b, n)[i]` (the same expression: `a + i·step`, the last point exact).
fn linspace_at(a: f64, b: f64, n: usize, i: usize) -> f64 {
    if n < 2 {
        return a;
    }
    if i == n - 1 {
        return b;
    }
    let step = (b - a) / (n - 1) as f64;
    a + i as f64 * step
}

/// The solver's state over device latents.
pub enum Solver<L> {
    Euler,
    UniPc(UniPc<L>),
}

impl<L> Solver<L> {
    pub fn new(kind: SolverKind) -> Self {
        match kind {
            SolverKind::Euler => Solver::Euler,
            SolverKind::UniPc | SolverKind::UniPcDiffusers => Solver::UniPc(UniPc::default()),
        }
    }

    /// Forget the history (a ProRes switch to another grid: the next step is first order and
    /// uncorrected, as Jenga's copy of the scheduler does).
    pub fn reset(&mut self) {
        if let Solver::UniPc(u) = self {
            *u = UniPc::default();
        }
    }

    /// One step of the latent `x` at noise `sigma` to `sigma_next`, from the model output
    /// `out` (`[c; u]` under guidance). `step`/`steps`: the step index in the run and the
    /// run's length (UniPC lowers its order on the last step).
    #[allow(clippy::too_many_arguments)]
    pub fn step<B: SolverOps<Latent = L>>(
        &mut self,
        be: &B,
        x: &mut L,
        out: &B::Tensor,
        guidance: Option<f32>,
        sigma: f64,
        sigma_next: f64,
        step: usize,
        steps: usize,
    ) -> Result<()> {
        match self {
            Solver::Euler => be.latent_step(x, out, guidance, (sigma_next - sigma) as f32),
            Solver::UniPc(u) => u.step(be, x, out, guidance, sigma, sigma_next, steps - step),
        }
    }
}

/// `x̂0 = x − σ·v` in place (the clean estimate carried across a ProRes switch).
pub fn to_x0<B: SolverOps>(
    be: &B,
    x: &mut B::Latent,
    out: &B::Tensor,
    guidance: Option<f32>,
    sigma: f64,
) -> Result<()> {
    be.latent_step(x, out, guidance, -sigma as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unipc_diffusers_grid_is_wan_pipelines() {
        // UniPCMultistepScheduler(use_flow_sigmas, flow_shift=3).set_timesteps(10) (0.42.1)
        let g = Grid::new(SolverKind::UniPcDiffusers, 10, 3.0);
        let want = [
            999.0, 964.0, 923.0, 875.0, 818.0, 750.0, 667.0, 563.0, 429.0, 251.0,
        ];
        assert_eq!(g.t, want);
        assert_ne!(Grid::new(SolverKind::UniPc, 10, 3.0).t, want);
        assert_eq!(g.sigmas[10], 0.0);
    }

    #[test]
    fn unipc_grid_is_wans() {
        // Wan 50 steps shift 5: t = 999, 995, 991, 987, 982, …, 241, 172, 92 (the golden's)
        let g = Grid::new(SolverKind::UniPc, 50, 5.0);
        assert_eq!(&g.t[..5], &[999.0, 995.0, 991.0, 987.0, 982.0]);
        assert_eq!(&g.t[47..], &[241.0, 172.0, 92.0]);
        assert_eq!(g.sigmas.len(), 51);
        assert_eq!(g.sigmas[50], 0.0);
        // σ_0 = shift(0.999) = 4.995 / 4.996 in f32
        assert_eq!(
            g.sigmas[0],
            (5.0 * 0.999f32 as f64 / (1.0 + 4.0 * 0.999f32 as f64)) as f32 as f64
        );
        // Euler keeps the grid from 1.0 and float t
        let e = Grid::new(SolverKind::Euler, 10, 3.0);
        assert_eq!((e.sigmas[0], e.t[0]), (1.0, 1000.0));
        assert!((e.t[5] - 750.0).abs() < 1e-9);
        assert_eq!(g.noise_index(26), 26);
        let dup = Grid {
            sigmas: vec![1.0, 0.9, 0.8, 0.0],
            t: vec![1000.0, 999.0, 999.0],
        };
        assert_eq!(
            (dup.noise_index(1), dup.noise_index(2), dup.noise_index(3)),
            (2, 2, 3)
        );
        assert!("dpm"
            .parse::<SolverKind>()
            .unwrap_err()
            .contains("--solver dpm"));
    }
}
