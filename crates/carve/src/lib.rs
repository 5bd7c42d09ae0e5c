//! jenga-carve: the Jenga paper's ideas (and its peers'), independent of device and model.

pub mod adjacency;
pub mod condition;
pub mod curve;
pub mod importance;
pub mod layout;
pub mod mask;
pub mod policy;
pub mod schedule;

pub use adjacency::Adjacency;
pub use condition::FirstFrame;
pub use curve::{gilbert3d, inverse, sliced, CurveKind};
pub use layout::{Layout, DEFAULT_BLOCK};
pub use mask::BlockMask;
pub use policy::{AttentionPolicy, AttnCtx, Dense};
pub use schedule::{DropMode, Schedule};
