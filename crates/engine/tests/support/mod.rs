//! Helpers shared by the engine's golden tests.
#![allow(dead_code)]

use jenga_engine::{DeviceRequest, Engine};

/// PSNR (dB) of our u8 frames against reference frames in [0, 1].
pub fn psnr(ours: &[u8], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let mse: f64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| {
            let d = a as f64 - (b as f64 * 255.0);
            d * d
        })
        .sum::<f64>()
        / ours.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}

/// Relative L2 distance of `a` from `b`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

pub fn cpu_engine() -> Engine {
    Engine::new(&DeviceRequest {
        device: "cpu".into(),
        threads: None,
    })
    .unwrap()
}
