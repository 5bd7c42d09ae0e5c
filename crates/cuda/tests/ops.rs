//! Every op against the CPU reference on random data (criterion in `selftest`: relative L2
//! ≤ 1e-2 after bf16 rounding of the inputs), plus error paths. Skips without a CUDA driver.

use jenga_cuda::{cuda_available, nvrtc, selftest, CudaBackend};
use jenga_tensor::{Act, Backend, Error};

fn backend() -> Option<CudaBackend> {
    jenga_cuda::selftest::test_backend()
}

#[test]
fn every_op_matches_cpu() {
    let Some(be) = backend() else { return };
    let checks = selftest::selftest(&be).expect("selftest runs");
    let mut failed = Vec::new();
    for (name, err, ok) in &checks {
        eprintln!(
            "{:<40} rel L2 {err:.2e} {}",
            name,
            if *ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failed.push(name.clone());
        }
    }
    assert!(checks.len() > 30, "only {} checks ran", checks.len());
    assert!(failed.is_empty(), "ops off the CPU reference: {failed:?}");
}

#[test]
fn missing_device_is_an_error_not_a_panic() {
    // Without a driver every ordinal fails; with one, an absurd ordinal does.
    let r = CudaBackend::new(9999);
    match r {
        Err(Error::Device(msg)) => assert!(!msg.is_empty()),
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("cuda:9999 opened"),
    }
    if !cuda_available() {
        assert!(CudaBackend::new(0).is_err());
    }
}

#[test]
fn huge_allocation_is_out_of_memory() {
    let Some(be) = backend() else { return };
    // 2^42 bf16 = 8 TiB: no GPU has it.
    match be.empty(&[1 << 42]) {
        Err(Error::OutOfMemory(msg)) => assert!(msg.contains("bytes"), "{msg}"),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // The backend still works afterwards.
    let x = be.upload(&[1.0, -2.0, 3.0], &[1, 3]).unwrap();
    assert_eq!(
        be.download(&be.act(&x, Act::None).unwrap()).unwrap(),
        vec![1.0, -2.0, 3.0]
    );
}

#[test]
fn bad_shapes_are_errors() {
    let Some(be) = backend() else { return };
    let x = be.upload(&[0.0; 12], &[1, 3, 4]).unwrap();
    let w = be.upload(&[0.0; 10], &[2, 5]).unwrap();
    assert!(matches!(
        be.linear(&x, &w, None, Act::None),
        Err(Error::Shape { .. })
    ));
    assert!(be.narrow(&x, 1, 2, 2).is_err());
    assert!(be.gather_tokens(&x, &[0, 3]).is_err());
    assert!(be.reshape(&x, &[5, 2]).is_err());
    let q = be.upload(&[0.0; 2 * 3 * 4], &[1, 2, 3, 4]).unwrap();
    let k = be.upload(&[0.0; 2 * 2 * 4], &[1, 2, 2, 4]).unwrap();
    assert!(be
        .attention(&q, &k, &k, &jenga_tensor::AttnPlan::Dense, None)
        .is_err());
}

#[test]
fn nvrtc_reports_compile_errors_and_caches() {
    let Some(be) = backend() else { return };
    let bad = nvrtc::load_module(
        be.context(),
        "bad",
        "extern \"C\" __global__ void f() { oops; }",
        &[],
    );
    match bad {
        Err(Error::Device(msg)) => assert!(msg.contains("oops"), "log missing: {msg}"),
        other => panic!("expected a compile error, got {:?}", other.map(|_| ())),
    }
    let src = format!(
        "extern \"C\" __global__ void cache_probe() {{}} // {}",
        std::process::id()
    );
    let m = nvrtc::load_module(be.context(), "cache_probe", &src, &[]).expect("compiles");
    m.load_function("cache_probe").expect("kernel present");
    // A read-only cache location is legal (the product only recompiles): check where writable.
    if let Some(dir) = nvrtc::cache_dir().filter(|d| std::fs::create_dir_all(d).is_ok()) {
        let hit = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("cache_probe-"))
            })
            .unwrap_or(false);
        assert!(hit, "no cache_probe-* file in {}", dir.display());
    }
    // Architecture-specific target compiles on Hopper and falls back elsewhere.
    nvrtc::load_module(
        be.context(),
        "arch_probe",
        "extern \"C\" __global__ void g() {}",
        &[nvrtc::ARCH_SPECIFIC],
    )
    .expect("arch-specific compile");
}
