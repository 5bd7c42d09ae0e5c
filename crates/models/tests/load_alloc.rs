//! Loading a bf16 checkpoint onto the CPU backend allocates no host buffer larger than the
//! largest tensor as f32 (the CPU backend stores f32): weights go tensor by tensor from the
//! mmap, never as a whole-model copy. A counting global allocator records the largest single
//! allocation while the load runs. (The CUDA variant: `crates/cuda/tests/load_alloc.rs`.)

use jenga_models::{
    export_bf16, ModelBundle, RandomWeights, SafetensorsWeights, WanConfig, WanModel,
};
use jenga_tensor::CpuBackend;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if ARMED.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Largest single host allocation while `f` runs.
fn largest_alloc(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    f();
    ARMED.store(false, Ordering::SeqCst);
    LARGEST.load(Ordering::SeqCst)
}

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
        let got = largest_alloc(|| model = Some(WanModel::load(&be, cfg, w).unwrap()));
        assert_eq!(model.unwrap().num_layers(), cfg.num_layers);
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
