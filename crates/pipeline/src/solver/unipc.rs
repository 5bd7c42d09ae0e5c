//! UniPC (order 2, B(h) = e^h − 1 "bh2", predict-x0, corrector on, lower-order final step) for
//! flow matching, as Wan2.1's `FlowUniPCMultistepScheduler.step`:
//!
//! 1. `m = x − σ·v` (the x0 prediction, `convert_model_output`);
//! 2. corrector (UniC), from the second step on: the last predictor's input `x_prev` is
//!    re-stepped with the new `m` (`multistep_uni_c_bh_update`), and replaces `x`;
//! 3. predictor (UniP) of order `min(2, steps left, steps since the history began)`
//!    (`multistep_uni_p_bh_update`).
//!
//! With `α = 1 − σ`, `λ = ln α − ln σ`, `h = λ_t − λ_s0`, `φ = e^{−h} − 1`, `B = φ`:
//! predictor `x_t = (σ_t/σ_s0)·x − α_t·φ·m0 − α_t·B·ρ·D1`, `D1 = (m1 − m0)/r1`,
//! `r1 = (λ_s1 − λ_s0)/h`, `ρ = ½`; corrector the same with `ρ` solved from `R·ρ = b` and the
//! term `ρ_last·(m_t − m0)`. Each update is one `latent_combine` of at most 4 latents.
//! The history keeps the σ each x0 prediction was made at, so a grid change without a reset
//! (an equal-resolution stage with another shift) stays consistent.

use jenga_tensor::{Result, SolverOps};

pub struct UniPc<L> {
    /// (σ, m) of the last two x0 predictions, oldest first.
    hist: Vec<(f64, L)>,
    /// The predictor's last input and its σ (the corrector re-steps it).
    last: Option<(f64, L)>,
    /// The order of the last predictor (the next corrector's).
    this_order: usize,
    /// Steps since the history began (the multistep warm-up), at most 2.
    lower_order_nums: usize,
}

impl<L> Default for UniPc<L> {
    fn default() -> Self {
        UniPc {
            hist: Vec::new(),
            last: None,
            this_order: 1,
            lower_order_nums: 0,
        }
    }
}

const ORDER: usize = 2;

fn lambda(sigma: f64) -> f64 {
    (1.0 - sigma).ln() - sigma.ln()
}

/// The B(h) quantities of one update from `s0` to `t`: (σ_t/σ_s0, α_t, φ = e^{−h} − 1, h).
fn phi(sigma_s0: f64, sigma_t: f64) -> (f64, f64, f64, f64) {
    let h = lambda(sigma_t) - lambda(sigma_s0);
    ((sigma_t / sigma_s0), 1.0 - sigma_t, (-h).exp_m1(), h)
}

impl<L> UniPc<L> {
    /// `steps_left`: steps of the run from this one on (1 on the last step).
    #[allow(clippy::too_many_arguments)]
    pub fn step<B: SolverOps<Latent = L>>(
        &mut self,
        be: &B,
        x: &mut L,
        out: &B::Tensor,
        guidance: Option<f32>,
        sigma: f64,
        sigma_next: f64,
        steps_left: usize,
    ) -> Result<()> {
        // 1. x0 prediction m = x − σ·v
        let mut m = be.latent_combine(&[(1.0, x)])?;
        be.latent_step(&mut m, out, guidance, -sigma as f32)?;
        // 2. corrector with the previous predictor's order
        if let Some((sigma_s0, x_prev)) = &self.last {
            *x = self.corrector(be, x_prev, *sigma_s0, &m, sigma)?;
        }
        if self.hist.len() == ORDER {
            self.hist.remove(0);
        }
        self.hist.push((sigma, m));
        let order = ORDER.min(steps_left).min(self.lower_order_nums + 1);
        self.this_order = order;
        // 3. predictor from the (corrected) x
        let next = self.predictor(be, x, sigma, sigma_next, order)?;
        self.last = Some((sigma, std::mem::replace(x, next)));
        self.lower_order_nums = (self.lower_order_nums + 1).min(ORDER);
        Ok(())
    }

    fn predictor<B: SolverOps<Latent = L>>(
        &self,
        be: &B,
        x: &L,
        sigma_s0: f64,
        sigma_t: f64,
        order: usize,
    ) -> Result<L> {
        let (ratio, alpha_t, phi1, h) = phi(sigma_s0, sigma_t);
        let b_h = phi1; // bh2
        let (_, m0) = &self.hist[self.hist.len() - 1];
        if order == 1 || self.hist.len() < 2 {
            return be.latent_combine(&[(ratio as f32, x), ((-alpha_t * phi1) as f32, m0)]);
        }
        let (sigma_s1, m1) = &self.hist[self.hist.len() - 2];
        let r1 = (lambda(*sigma_s1) - lambda(sigma_s0)) / h;
        let rho = 0.5;
        // x_t = ratio·x − α_t·φ·m0 − α_t·B·ρ·(m1 − m0)/r1
        let k = alpha_t * b_h * rho / r1;
        be.latent_combine(&[
            (ratio as f32, x),
            ((-alpha_t * phi1 + k) as f32, m0),
            ((-k) as f32, m1),
        ])
    }

    /// UniC of order `this_order` from `x_prev` (at σ_s0, the latest history entry m0 made
    /// there) to σ_t with the new prediction `m_t`.
    fn corrector<B: SolverOps<Latent = L>>(
        &self,
        be: &B,
        x_prev: &L,
        sigma_s0: f64,
        m_t: &L,
        sigma_t: f64,
    ) -> Result<L> {
        let (ratio, alpha_t, phi1, h) = phi(sigma_s0, sigma_t);
        let hh = -h;
        let b_h = phi1;
        let (_, m0) = &self.hist[self.hist.len() - 1];
        let order = self.this_order;
        if order == 1 || self.hist.len() < 2 {
            // ρ_c = ½: x = ratio·x − α_t·φ·m0 − α_t·B·½·(m_t − m0)
            let k = alpha_t * b_h * 0.5;
            return be.latent_combine(&[
                (ratio as f32, x_prev),
                ((-alpha_t * phi1 + k) as f32, m0),
                ((-k) as f32, m_t),
            ]);
        }
        let (sigma_s1, m1) = &self.hist[self.hist.len() - 2];
        let r1 = (lambda(*sigma_s1) - lambda(sigma_s0)) / h;
        // b_i = h_phi_i·i!/B(h) for i = 1, 2 (the reference's recursion), R = [[1, 1], [r1, 1]]
        let mut h_phi_k = phi1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = [0.0f64; 2];
        for (i, bi) in b.iter_mut().enumerate() {
            *bi = h_phi_k * factorial / b_h;
            factorial *= (i + 2) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        // solve [[1, 1], [r1, 1]]·ρ = b
        let det = 1.0 - r1;
        let rho0 = (b[0] - b[1]) / det;
        let rho1 = (b[1] - r1 * b[0]) / det;
        // x = ratio·x − α_t·φ·m0 − α_t·B·(ρ0·(m1 − m0)/r1 + ρ1·(m_t − m0))
        let k = alpha_t * b_h;
        be.latent_combine(&[
            (ratio as f32, x_prev),
            ((-alpha_t * phi1 + k * (rho0 / r1 + rho1)) as f32, m0),
            ((-k * rho0 / r1) as f32, m1),
            ((-k * rho1) as f32, m_t),
        ])
    }
}
