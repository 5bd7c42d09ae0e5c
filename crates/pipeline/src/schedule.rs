//! Flow-matching sigma grid with shift: `linspace(1, 0, N + 1)` shifted — Wan's dpm++ grid
//! (`get_sampling_sigmas`) and HunyuanVideo's `FlowMatchDiscreteScheduler` (Euler) grid. Wan's
//! UniPC grid starts at 0.999 instead ([`crate::solver::Grid`]).

/// `σ_i = shift·s_i / (1 + (shift − 1)·s_i)`, `s = linspace(1, 0, steps + 1)`: steps + 1 values
/// from 1 down to 0.
pub fn flow_sigmas(steps: usize, shift: f64) -> Vec<f64> {
    (0..=steps)
        .map(|i| {
            let s = 1.0 - i as f64 / steps as f64;
            shift * s / (1.0 + (shift - 1.0) * s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn endpoints_and_shift() {
        let s = flow_sigmas(10, 3.0);
        assert_eq!(s.len(), 11);
        assert_eq!(s[0], 1.0);
        assert_eq!(s[10], 0.0);
        // s = 0.5 → 3·0.5 / (1 + 2·0.5) = 0.75
        assert!((s[5] - 0.75).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        // shift 1 is linear
        assert!((flow_sigmas(4, 1.0)[1] - 0.75).abs() < 1e-12);
    }
}
