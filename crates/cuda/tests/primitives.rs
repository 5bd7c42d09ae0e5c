//! The VAE / text-encoder primitives on the GPU against the CPU reference (bf16 storage:
//! relative L2 ≤ 2e-2). Skips without a CUDA driver.

use jenga_cuda::{selftest::rel_l2, CudaBackend};
use jenga_tensor::{AttnMask, Backend, CpuBackend, DType};

fn backend() -> Option<CudaBackend> {
    jenga_cuda::selftest::test_backend()
}

fn data(n: usize, s: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * s).sin()).collect()
}

fn both(
    gpu: &CudaBackend,
    cpu: &CpuBackend,
    v: &[f32],
    s: &[usize],
) -> (jenga_cuda::CudaTensor, jenga_tensor::CpuTensor) {
    (gpu.upload(v, s).unwrap(), cpu.upload(v, s).unwrap())
}

#[test]
fn primitives_match_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let check = |name: &str, g: Vec<f32>, c: Vec<f32>| {
        let e = rel_l2(&g, &c);
        eprintln!("{name:<28} rel L2 {e:.2e}");
        assert!(e <= 2e-2, "{name}: rel L2 {e}");
    };
    // bf16 bytes go up and come back exactly.
    let bytes: Vec<u8> = (0..64u16)
        .flat_map(|i| (0x3f80 + i).to_le_bytes())
        .collect();
    let t = gpu.upload_raw(&bytes, DType::BF16, &[8, 8]).unwrap();
    assert_eq!(gpu.download_raw(&t, DType::BF16).unwrap(), bytes);
    assert_eq!(gpu.storage_dtype(), DType::BF16);
    let h: Vec<u8> = [1.0f32, -2.5, 0.25]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
        .collect();
    let t = gpu.upload_raw(&h, DType::F16, &[3]).unwrap();
    assert_eq!(gpu.download(&t).unwrap(), vec![1.0, -2.5, 0.25]);
    assert_eq!(gpu.download_raw(&t, DType::F16).unwrap(), h);

    let (tg, tc) = both(&gpu, &cpu, &data(50 * 16, 0.3), &[50, 16]);
    let ids = [3u32, 49, 0, 7, 7];
    check(
        "embedding",
        gpu.download(&gpu.embedding(&tg, &ids).unwrap()).unwrap(),
        cpu.download(&cpu.embedding(&tc, &ids).unwrap()).unwrap(),
    );

    let (xg, xc) = both(&gpu, &cpu, &data(2 * 4 * 5 * 6 * 6, 0.17), &[2, 4, 5, 6, 6]);
    let (wg, wc) = both(&gpu, &cpu, &data(8 * 4 * 3 * 3 * 3, 0.41), &[8, 4, 3, 3, 3]);
    let (bg, bc) = both(&gpu, &cpu, &data(8, 0.9), &[8]);
    for (stride, causal) in [([1, 1, 1], true), ([1, 2, 2], false), ([2, 1, 1], true)] {
        let g = gpu
            .conv3d(&xg, &wg, Some(&bg), stride, [1, 1, 1], causal)
            .unwrap();
        let c = cpu
            .conv3d(&xc, &wc, Some(&bc), stride, [1, 1, 1], causal)
            .unwrap();
        check(
            &format!("conv3d {stride:?} causal {causal}"),
            gpu.download(&g).unwrap(),
            cpu.download(&c).unwrap(),
        );
    }
    let (ng, nc) = both(&gpu, &cpu, &data(4, 1.3), &[4]);
    check(
        "group_norm",
        gpu.download(&gpu.group_norm(&xg, 2, Some(&ng), Some(&ng), 1e-6).unwrap())
            .unwrap(),
        cpu.download(&cpu.group_norm(&xc, 2, Some(&nc), Some(&nc), 1e-6).unwrap())
            .unwrap(),
    );
    check(
        "upsample_nearest",
        gpu.download(&gpu.upsample_nearest(&xg).unwrap()).unwrap(),
        cpu.download(&cpu.upsample_nearest(&xc).unwrap()).unwrap(),
    );

    let s = [2, 40, 2, 64];
    let n = s.iter().product();
    let (qg, qc) = both(&gpu, &cpu, &data(n, 0.37), &s);
    let (kg, kc) = both(&gpu, &cpu, &data(n, 0.91), &s);
    let (vg, vc) = both(&gpu, &cpu, &data(n, 1.7), &s);
    for m in [
        AttnMask::None,
        AttnMask::Causal,
        AttnMask::KeyPadding(vec![13, 40]),
    ] {
        let g = gpu.attention_masked(&qg, &kg, &vg, &m, None).unwrap();
        let c = cpu.attention_masked(&qc, &kc, &vc, &m, None).unwrap();
        check(
            &format!("attention {m:?}"),
            gpu.download(&g).unwrap(),
            cpu.download(&c).unwrap(),
        );
    }
}
