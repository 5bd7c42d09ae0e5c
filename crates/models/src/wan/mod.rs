//! The Wan2.1 family: config, DiT.

pub mod config;
pub mod model;

pub use config::WanConfig;
pub use model::{rope_tables, timestep_embedding, Embedded, Geometry, WanModel};
