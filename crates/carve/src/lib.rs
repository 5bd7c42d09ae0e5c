//! jenga-carve: the Jenga paper's ideas (and its peers'), independent of device and model.

pub mod curve;
pub mod policy;

pub use curve::{gilbert3d, inverse, sliced, CurveKind};
pub use policy::{AttentionPolicy, AttnCtx, Dense};
