//! The Wan2.1 family: config, DiT, checkpoint key names.

pub mod config;
pub mod model;
pub mod naming;

pub use config::WanConfig;
pub use model::{rope_tables, timestep_embedding, Embedded, Geometry, WanModel};
pub use naming::{to_diffusers, WanKeys};
