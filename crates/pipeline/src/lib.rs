//! jenga-pipeline: from conditioning to frames — flow-matching sampler (UniPC, Euler) with classifier-free
//! guidance, ProRes stages, step skipping, and the resize between stages.

pub mod metrics;
pub mod presets;
pub mod probe;
pub mod resize;
pub mod sampler;
pub mod schedule;
pub mod solver;

pub use presets::{
    official_static_schedule, JengaSettings, PresetFamily, PresetSkip, HUNYUAN_STATIC_STEPS,
    PRESETS, WAN_P_REMAIN,
};
pub use sampler::{
    computed_schedule, sample, sample_with_noise, static_skip_schedule, step_plan, Event, Renoise,
    SampleOutput, SampleSpec, SkipRule, StagePlan, StepInfo, Switch, TEACACHE_WAN_1_3B,
};
pub use schedule::flow_sigmas;
pub use solver::{Grid, SolverKind};

/// Deterministic standard-normal noise: same seed → bit-identical values on every run.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect()
}
