//! jenga-carve: the Jenga paper's ideas (and its peers'), independent of device and model.
//!
//! One file per concept: [`curve`] (token order), [`layout`] (blocks, padding, condition
//! blocks), the masks [`importance`], [`adjacency`], [`condition`] (their dense form
//! [`mask::BlockMask`]), [`schedule`] (drop rate per step/stage), [`jenga`] (the policy that
//! unions them into a [`jenga_tensor::BlockPlan`]), the peer policies [`svg`] (Sparse VideoGen)
//! and [`draft`] (DraftAttention) in the same plan form, [`picture`] (mask images).

pub mod adjacency;
pub mod condition;
pub mod curve;
pub mod draft;
pub mod importance;
pub mod jenga;
pub mod kernels;
pub mod layout;
pub mod mask;
pub mod picture;
pub mod policy;
pub mod schedule;
pub mod svg;

pub use adjacency::Adjacency;
pub use condition::FirstFrame;
pub use curve::{gilbert3d, inverse, sliced, CurveKind};
pub use draft::{DraftConfig, DraftPolicy};
pub use jenga::{build_plan, Geometry, JengaConfig, JengaPolicy, PlanInputs, TextAmp};
pub use kernels::{BlockSelect, DraftSelect, PolicyKernels, SvgSelect};
pub use layout::{Layout, DEFAULT_BLOCK};
pub use mask::BlockMask;
pub use picture::{render_mask, render_plan, Gray};
pub use policy::{AttentionPolicy, AttnCtx, Dense, DensityStats, PlanHook};
pub use schedule::{DropMode, Schedule};
pub use svg::{Pattern, SvgConfig, SvgPolicy};
