//! A Wan DiT loads from a bf16 `.pth` (tests/fixtures/pth/dit_tiny.pth, written by torch.save)
//! through `WeightSource`, tensor by tensor from the mmap: no host buffer larger than the
//! largest tensor as f32 (the CPU backend stores f32) is allocated. On CUDA the bytes go up as
//! stored (bf16), borrowed from the map.

use jenga_models::layout::config_from_shapes;
use jenga_models::{PthWeights, TensorData, WanModel, WeightSource};
use jenga_tensor::CpuBackend;
use std::path::Path;

#[path = "support/count_alloc.rs"]
mod count_alloc;
use count_alloc::{largest_alloc, Counting, Scope};

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
    let (got, model) = largest_alloc(Scope::AllThreads, || WanModel::load(&be, &cfg, &w));
    let model = model.unwrap();
    assert_eq!(model.num_layers(), 1);
    assert!(got >= largest_f32, "the counter saw only {got} B");
    assert!(
        got <= largest_f32 + (64 << 10),
        "largest host allocation {got} B, largest tensor as f32 {largest_f32} B"
    );
    assert!(largest_f32 * 2 < cfg.num_params() * 4);
}
