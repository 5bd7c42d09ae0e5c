//! Loading a bf16 checkpoint onto CUDA allocates no host buffer larger than the largest tensor
//! as bf16: the stored bytes go from the mmap to the device as they are (no f32 host copy, no
//! whole-model copy). A counting global allocator records the largest single Rust allocation
//! while the load runs (the CUDA driver's own allocations are not Rust's). The CPU variant:
//! `crates/models/tests/load_alloc.rs`.

use jenga_cuda::CudaBackend;
use jenga_models::{
    export_bf16, ModelBundle, RandomWeights, SafetensorsWeights, WanConfig, WanModel,
};

#[path = "../../models/tests/support/count_alloc.rs"]
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

const SLACK: usize = 64 << 10;

#[test]
fn cuda_load_allocates_at_most_the_largest_tensor_as_bf16() {
    if jenga_cuda::device_count().is_err() {
        eprintln!("skipped: no CUDA driver (load_alloc)");
        return;
    }
    let gpu = CudaBackend::new(0).expect("device opens");
    let tiny = ModelBundle::embedded().unwrap();
    let mid = WanConfig {
        dim: 1024,
        ffn_dim: 4096,
        num_heads: 8,
        num_layers: 4,
        ..tiny.config.clone()
    };
    let p = std::env::temp_dir().join(format!(
        "jenga-load-alloc-{}.safetensors",
        std::process::id()
    ));
    export_bf16(&RandomWeights { seed: 1 }, &mid.tensor_shapes(), &p).unwrap();
    let mid_w = SafetensorsWeights::open(&p).unwrap();
    for (cfg, w) in [(&tiny.config, &tiny.weights), (&mid, &mid_w)] {
        assert!(w.entries().values().all(|e| e.dtype == "BF16"));
        let limit = largest_tensor(w) * 2;
        let mut model = None;
        let (got, ()) = largest_alloc(Scope::AllThreads, || {
            model = Some(WanModel::load(&gpu, cfg, w).unwrap())
        });
        assert_eq!(model.unwrap().num_layers(), cfg.num_layers);
        println!(
            "dim {}: largest host allocation {got} B (largest tensor as bf16 {limit} B, model {} B)",
            cfg.dim,
            cfg.num_params() * 2
        );
        assert!(
            got <= limit + SLACK,
            "dim {}: largest host allocation {got} B, largest tensor as bf16 {limit} B",
            cfg.dim
        );
    }
    let _ = std::fs::remove_file(&p);
}
