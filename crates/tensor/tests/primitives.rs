//! The VAE / text-encoder primitives on the CPU backend against hand-computed values:
//! dtype-aware transfer, embedding, conv3d (causal and not), group norm, nearest upsampling,
//! masked attention.

use jenga_tensor::{AttnMask, AttnPlan, Backend, CpuBackend, DType, TensorMeta};

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn raw_transfer_keeps_each_dtype() {
    let be = CpuBackend::new();
    let bf = [0x80u8, 0x3f, 0x20, 0xc0]; // bf16 1.0, -2.5
    let t = be.upload_raw(&bf, DType::BF16, &[2]).unwrap();
    assert_eq!(be.download(&t).unwrap(), vec![1.0, -2.5]);
    assert_eq!(be.download_raw(&t, DType::BF16).unwrap(), bf);
    let h = [0x00u8, 0x3c, 0x00, 0xc1]; // f16 1.0, -2.5
    let t = be.upload_raw(&h, DType::F16, &[2]).unwrap();
    assert_eq!(be.download(&t).unwrap(), vec![1.0, -2.5]);
    assert_eq!(be.download_raw(&t, DType::F16).unwrap(), h);
    let f: Vec<u8> = [0.1f32, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = be.upload_raw(&f, DType::F32, &[1, 2]).unwrap();
    assert_eq!(be.download(&t).unwrap(), vec![0.1, 3.0]);
    assert_eq!(be.download_raw(&t, DType::F32).unwrap(), f);
    // f16 subnormal and bf16 rounding to nearest even.
    let t = be
        .upload(&[f32::from_bits(0x3380_0000), 1.0 + 1.0 / 256.0], &[2])
        .unwrap();
    assert_eq!(be.download_raw(&t, DType::F16).unwrap()[..2], [1, 0]);
    assert_eq!(be.download_raw(&t, DType::BF16).unwrap()[2..], [0x80, 0x3f]);
    assert!(be.upload_raw(&[0u8; 3], DType::BF16, &[1]).is_err());
    assert_eq!(DType::BF16.size(), 2);
}

#[test]
fn embedding_picks_rows() {
    let be = CpuBackend::new();
    let table = be.upload(&[1., 2., 3., 4., 5., 6.], &[3, 2]).unwrap();
    let e = be.embedding(&table, &[2, 0, 2]).unwrap();
    assert_eq!(e.shape(), &[3, 2]);
    assert_eq!(be.download(&e).unwrap(), vec![5., 6., 1., 2., 5., 6.]);
    assert!(be.embedding(&table, &[3]).is_err());
}

#[test]
fn conv3d_time_padding_causal_and_symmetric() {
    let be = CpuBackend::new();
    let x = be.upload(&[1., 2., 3.], &[1, 1, 3, 1, 1]).unwrap();
    let w = be.upload(&[1., 10., 100.], &[1, 1, 3, 1, 1]).unwrap();
    let b = be.upload(&[0.5], &[1]).unwrap();
    // causal: 2 frames in front, none behind.
    let y = be
        .conv3d(&x, &w, Some(&b), [1, 1, 1], [1, 0, 0], true)
        .unwrap();
    assert_eq!(y.shape(), &[1, 1, 3, 1, 1]);
    close(&be.download(&y).unwrap(), &[100.5, 210.5, 321.5], 1e-4);
    let y = be
        .conv3d(&x, &w, None, [1, 1, 1], [1, 0, 0], false)
        .unwrap();
    close(&be.download(&y).unwrap(), &[210., 321., 32.], 1e-4);
    // stride 2 in time, causal: frames 0 and 2.
    let y = be.conv3d(&x, &w, None, [2, 1, 1], [1, 0, 0], true).unwrap();
    close(&be.download(&y).unwrap(), &[100., 321.], 1e-4);
}

#[test]
fn conv3d_spatial_channels_and_padding() {
    let be = CpuBackend::new();
    let x = be.upload(&[1., 2., 3., 4.], &[1, 1, 1, 2, 2]).unwrap();
    let w = be
        .upload(&[1., 1., 1., 1., 1., 0., 0., -1.], &[2, 1, 1, 2, 2])
        .unwrap();
    let y = be
        .conv3d(&x, &w, None, [1, 1, 1], [0, 0, 0], false)
        .unwrap();
    assert_eq!(y.shape(), &[1, 2, 1, 1, 1]);
    close(&be.download(&y).unwrap(), &[10., -3.], 1e-5);
    // 1x1 kernel, spatial padding 1: a zero border.
    let w = be.upload(&[2.], &[1, 1, 1, 1, 1]).unwrap();
    let y = be
        .conv3d(&x, &w, None, [1, 1, 1], [0, 1, 1], false)
        .unwrap();
    assert_eq!(y.shape(), &[1, 1, 1, 4, 4]);
    let v = be.download(&y).unwrap();
    close(&v[4..8], &[0., 2., 4., 0.], 1e-6);
    close(&v[8..12], &[0., 6., 8., 0.], 1e-6);
    assert!(be.conv3d(&x, &w, None, [1, 1, 1], [0, 0, 0], false).is_ok());
    let bad = be.upload(&[1.; 2], &[1, 2, 1, 1, 1]).unwrap();
    assert!(be
        .conv3d(&x, &bad, None, [1, 1, 1], [0, 0, 0], false)
        .is_err());
}

#[test]
fn group_norm_per_group_then_affine() {
    let be = CpuBackend::new();
    let x = be
        .upload(&[1., 2., 3., 4., 5., 6., 7., 8.], &[1, 4, 2])
        .unwrap();
    let w = be.upload(&[1., 2., 1., 1.], &[4]).unwrap();
    let b = be.upload(&[0., 0., 1., 0.], &[4]).unwrap();
    let y = be.group_norm(&x, 2, Some(&w), Some(&b), 0.0).unwrap();
    let (a, c) = (1.341_640_8, 0.447_213_6);
    close(
        &be.download(&y).unwrap(),
        &[-a, -c, 2. * c, 2. * a, 1. - a, 1. - c, c, a],
        1e-5,
    );
    assert!(be.group_norm(&x, 3, None, None, 1e-5).is_err());
}

#[test]
fn upsample_nearest_doubles_h_and_w() {
    let be = CpuBackend::new();
    let x = be.upload(&[1., 2., 3., 4.], &[1, 1, 2, 2]).unwrap();
    let y = be.upsample_nearest(&x).unwrap();
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    assert_eq!(
        be.download(&y).unwrap(),
        vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
    );
}

#[test]
fn masked_attention_causal_and_key_padding() {
    let be = CpuBackend::new();
    // Equal scores: each query averages the values it sees.
    let q = be.upload(&[1., 1.], &[1, 2, 1, 1]).unwrap();
    let k = be.upload(&[0., 0.], &[1, 2, 1, 1]).unwrap();
    let v = be.upload(&[2., 4.], &[1, 2, 1, 1]).unwrap();
    let run = |m: &AttnMask| {
        be.download(&be.attention_masked(&q, &k, &v, m, None).unwrap())
            .unwrap()
    };
    close(&run(&AttnMask::Causal), &[2., 3.], 1e-6);
    close(&run(&AttnMask::KeyPadding(vec![1])), &[2., 2.], 1e-6);
    close(&run(&AttnMask::None), &[3., 3.], 1e-6);
    close(&run(&AttnMask::KeyPadding(vec![0])), &[0., 0.], 0.0);
    assert!(be
        .attention_masked(&q, &k, &v, &AttnMask::KeyPadding(vec![3]), None)
        .is_err());
}

#[test]
fn masked_attention_without_masking_is_dense_attention() {
    let be = CpuBackend::new();
    let (b, l, h, d) = (2, 5, 2, 4);
    let n = b * l * h * d;
    let data = |s: f32| (0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<_>>();
    let sh = [b, l, h, d];
    let (q, k, v) = (
        be.upload(&data(0.37), &sh).unwrap(),
        be.upload(&data(0.91), &sh).unwrap(),
        be.upload(&data(1.7), &sh).unwrap(),
    );
    let dense = be
        .download(&be.attention(&q, &k, &v, &AttnPlan::Dense, None).unwrap())
        .unwrap();
    let full = AttnMask::KeyPadding(vec![l; b]);
    let padded = be
        .download(&be.attention_masked(&q, &k, &v, &full, None).unwrap())
        .unwrap();
    close(&padded, &dense, 1e-5);
    // The last query of a causal mask sees every key.
    let causal = be
        .download(
            &be.attention_masked(&q, &k, &v, &AttnMask::Causal, None)
                .unwrap(),
        )
        .unwrap();
    for bi in 0..b {
        let at = (bi * l + l - 1) * h * d;
        close(&causal[at..at + h * d], &dense[at..at + h * d], 1e-5);
    }
}
