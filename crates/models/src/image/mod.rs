//! Image encoders: the CLIP vision tower Wan2.1 image-to-video conditions on, and the image
//! preprocessing of the references.

pub mod clip;
pub mod preprocess;

pub use clip::{ClipVision, ClipVisionConfig};
pub use preprocess::{Preprocess, Rgb8};
