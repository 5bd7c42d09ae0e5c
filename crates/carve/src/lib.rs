//! jenga-carve: the Jenga paper's ideas (and its peers'), independent of device and model.

pub mod policy;

pub use policy::{AttentionPolicy, AttnCtx, Dense};
