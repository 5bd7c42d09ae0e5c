//! jenga-parallel: one video on several devices.
//!
//! - [`ParallelLayout`]: `world = cfg × ring × ulysses` ranks, each rank's token shard.
//! - [`SeqAttention`]: the attention seam's wrapper (Ulysses all-to-all, ring gather); every
//!   rank plans its own heads over the whole sequence with the run's policy.
//! - [`Parallel`]: any [`jenga_models::Denoiser`] that can shard its tokens, run on one rank;
//!   the sampler runs it unchanged.
//!
//! The collectives are `jenga_tensor::Communicator`s: NCCL between GPUs, threads in CI.

mod attention;
mod denoiser;
mod layout;

pub use attention::SeqAttention;
pub use denoiser::{ParCond, ParStage, Parallel};
pub use layout::{shards, Coords, ParallelLayout, SHARD_ALIGN};
