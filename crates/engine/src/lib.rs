//! jenga-engine: the library every front end (the `jenga` cli, its benches, a server) uses.
//!
//! A `GenerateRequest` (plain serde types) is `prepare`d — model source opened, options resolved
//! against the model's defaults and checked, policy built — before anything loads; an `Engine`
//! owns the device, chosen once, checks the memory, loads (or reuses) the model and generates,
//! streaming `Progress` events.

pub mod device;
pub mod engine;
pub mod hunyuan;
pub mod image;
pub mod memory;
pub mod parallel;
pub mod plan;
pub mod policy;
pub mod request;
pub mod source;

pub use device::{Device, EngineBackend, OnDevice};
pub use engine::{
    prepare, prepare_with, schedule_report, Engine, Generated, ModelCx, ModelTask, Prepared,
    Progress, Timings, MIN_COMPUTED_STEPS,
};
pub use parallel::RankSetup;
pub use plan::{plan, plan_for, skip_name, Family, Plan, WAN_NEG_PROMPT};
pub use policy::Policy;
pub use request::{
    DeviceRequest, DraftOptions, GenerateRequest, ModelFiles, ModelSource, ParallelOptions,
    PolicyOptions, Sampling, SvgOptions, VideoSize,
};
pub use source::{random_config, Checkpoint, Source};

use jenga_models::{Frames, Vae};

/// `1.23 B`, `6.95 M`, `12.0 K`.
pub fn fmt_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// `1.50 GiB`, `13.2 MiB`, `4.0 KiB`.
pub fn fmt_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}

/// `[C, F, H, W]` in [-1, 1] → RGB u8 frames. Pixel-space models map channels 0..3 to RGB
/// ([`jenga_models::Identity`]); latent models (no VAE bundled) get a preview of latent
/// channels 0..3 ([`jenga_models::LatentPreview`]).
pub fn to_video(x: &[f32], shape: [usize; 4], fps: u32, pixel_space: bool) -> jenga_video::Video {
    let vae: &dyn Vae = if pixel_space {
        &jenga_models::Identity
    } else {
        &jenga_models::LatentPreview
    };
    decode_video(vae, x, shape, fps).expect("latent holds C·F·H·W values")
}

/// Latent `[C, F, H, W]` → RGB u8 frames through `vae`.
pub fn decode_video(
    vae: &dyn Vae,
    x: &[f32],
    shape: [usize; 4],
    fps: u32,
) -> jenga_models::Result<jenga_video::Video> {
    Ok(frames_to_video(&vae.decode(x, shape)?, fps))
}

/// RGB planes `[3, F, H, W]` in [-1, 1] → u8 frames.
/// No frames: what a rank other than 0 of a multi-process run returns (rank 0 decodes).
pub(crate) fn no_frames() -> jenga_video::Video {
    jenga_video::Video {
        frames: 0,
        height: 0,
        width: 0,
        rgb: Vec::new(),
        fps: 8,
    }
}

pub fn frames_to_video(frames: &Frames, fps: u32) -> jenga_video::Video {
    let [_, f, h, w] = frames.shape;
    let x = &frames.data;
    let mut rgb = vec![0u8; f * h * w * 3];
    for fi in 0..f {
        for p in 0..h * w {
            for ch in 0..3 {
                let v = x[(ch * f + fi) * h * w + p];
                rgb[(fi * h * w + p) * 3 + ch] = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
            }
        }
    }
    jenga_video::Video {
        frames: f,
        height: h,
        width: w,
        rgb,
        fps,
    }
}
