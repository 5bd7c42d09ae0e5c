//! A Wan DiT loads from a bf16 `.pth` (tests/fixtures/pth/dit_tiny.pth, written by torch.save)
//! through `WeightSource`, tensor by tensor from the mmap: no host buffer larger than the
//! largest tensor as f32 (the CPU backend stores f32) is allocated. On CUDA the bytes go up as
//! stored (bf16), borrowed from the map.

use jenga_models::layout::config_from_shapes;
use jenga_models::{PthWeights, TensorData, WanModel, WeightSource};
use jenga_tensor::CpuBackend;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
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

#[test]
fn a_wan_dit_loads_from_a_bf16_pth_tensor_by_tensor() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pth/dit_tiny.pth");
    let w = PthWeights::open(&p).unwrap();
    let cfg = config_from_shapes(&w, &p).unwrap();
    assert_eq!(
        (cfg.dim, cfg.num_layers, cfg.ffn_dim, cfg.in_dim),
        (64, 1, 128, 4)
    );
    assert_eq!(w.param_count(), Some(cfg.num_params()));
    // every tensor is served from the map as stored
    for n in w.names() {
        let shape = w.info(&n).unwrap().shape;
        let r = w.raw(&n, &shape).unwrap();
        assert!(
            matches!(
                r.data,
                TensorData::Stored {
                    dtype: jenga_tensor::DType::BF16,
                    ..
                }
            ),
            "`{n}` borrowed as bf16"
        );
    }
    let largest_f32 = w
        .names()
        .iter()
        .map(|n| w.info(n).unwrap().shape.iter().product::<usize>())
        .max()
        .unwrap()
        * 4;
    let be = CpuBackend::new();
    LARGEST.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let model = WanModel::load(&be, &cfg, &w);
    ARMED.store(false, Ordering::SeqCst);
    let model = model.unwrap();
    assert_eq!(model.num_layers(), 1);
    let got = LARGEST.load(Ordering::SeqCst);
    assert!(
        got <= largest_f32 + (64 << 10),
        "largest host allocation {got} B, largest tensor as f32 {largest_f32} B"
    );
    assert!(largest_f32 * 2 < cfg.num_params() * 4);
}
