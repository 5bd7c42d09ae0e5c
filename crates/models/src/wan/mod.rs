//! The Wan2.1 family: config, DiT, checkpoint key names.

pub mod config;
mod denoiser;
pub mod i2v;
pub mod model;
pub mod naming;

pub use config::WanConfig;
pub use denoiser::{TEACACHE_T2V_14B, TEACACHE_T2V_1_3B};
pub use i2v::{i2v_condition, WanI2v};
pub use model::{rope_tables, timestep_embedding, Embedded, Geometry, WanModel};
pub use naming::{to_diffusers, WanKeys};
