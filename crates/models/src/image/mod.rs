//! Image encoders: the CLIP vision tower Wan2.1 image-to-video conditions on.

pub mod clip;

pub use clip::{ClipVision, ClipVisionConfig};
