//! Loading a bf16 checkpoint onto the CPU backend allocates no host buffer larger than the
//! largest tensor as f32 (the CPU backend stores f32): weights go tensor by tensor from the
//! mmap, never as a whole-model copy. A counting global allocator records the largest single
//! allocation while the load runs. (The CUDA variant: `crates/cuda/tests/load_alloc.rs`.)

use jenga_models::{
    export_bf16, ModelBundle, RandomWeights, SafetensorsWeights, WanConfig, WanModel,
};
use jenga_tensor::CpuBackend;

#[path = "support/count_alloc.rs"]
mod count_alloc;
use count_alloc::{largest_alloc, Counting, Scope};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn largest_tensor(w: &SafetensorsWeights) -> usize {
    w.entries()
        .values()
        .map(|e| e.shape.iter().product::<usize>())
        .max()
        .unwrap()
}

/// Headroom for the loader's own small allocations (key strings, the block list).
const SLACK: usize = 64 << 10;

#[test]
fn cpu_load_allocates_at_most_the_largest_tensor_as_f32() {
    let be = CpuBackend::new();
    // the embedded tiny-wan (bf16) and a mid-size bf16 checkpoint read through the mmap
    let tiny = ModelBundle::embedded().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mid = WanConfig {
        dim: 512,
        ffn_dim: 2048,
        num_heads: 4,
        num_layers: 2,
        ..tiny.config.clone()
    };
    let p = t.path().join("mid.safetensors");
    export_bf16(&RandomWeights { seed: 1 }, &mid.tensor_shapes(), &p).unwrap();
    let mid_w = SafetensorsWeights::open(&p).unwrap();
    for (cfg, w) in [(&tiny.config, &tiny.weights), (&mid, &mid_w)] {
        assert!(w.entries().values().all(|e| e.dtype == "BF16"));
        let limit = largest_tensor(w) * 4;
        let mut model = None;
        let (got, ()) = largest_alloc(Scope::AllThreads, || {
            model = Some(WanModel::load(&be, cfg, w).unwrap())
        });
        assert_eq!(model.unwrap().num_layers(), cfg.num_layers);
        // the CPU backend holds the largest tensor as f32: the counter must have seen it
        assert!(got >= limit, "dim {}: counter saw only {got} B", cfg.dim);
        assert!(
            got <= limit + SLACK,
            "dim {}: largest host allocation {got} B, largest tensor as f32 {limit} B",
            cfg.dim
        );
        println!(
            "dim {}: largest host allocation {got} B (largest tensor as f32 {limit} B)",
            cfg.dim
        );
        // and the whole model as f32 would be far larger
        assert!(limit * 4 < cfg.num_params() * 4);
    }
}
