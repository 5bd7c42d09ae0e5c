//! HunyuanVideo text-to-video (issue 18): the transformer. Text encoders (Llama-3, CLIP-L)
//! are in `text/`, the VAE in `vae/`.

pub mod config;
mod denoiser;
pub mod model;
pub mod naming;

pub use config::HunyuanConfig;
pub use model::{HunyuanCond, HunyuanGeometry, HunyuanModel, HunyuanStep};
