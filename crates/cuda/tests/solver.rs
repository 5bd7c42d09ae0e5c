//! The sampler's latent ops on the GPU (`SolverOps`) against the host arithmetic they
//! replace: the model input is exactly the bf16 upload of the f32 latent (CFG batch
//! included), and the CFG combine + Euler update leaves the f32 latent bit-identical to the
//! host `cfg_euler` on the downloaded model output; the UniPC linear combination equals the
//! host `lin_combine` bit for bit. Skips without a CUDA driver.

use jenga_cuda::selftest::Rng;
use jenga_cuda::CudaBackend;
use jenga_tensor::{cfg_euler, lin_combine, Backend, SolverOps, TensorMeta};

fn backend() -> Option<CudaBackend> {
    jenga_cuda::selftest::test_backend()
}

#[test]
fn latent_input_and_cfg_step_match_the_host_bit_for_bit() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(7);
    // Wan-1.3B's 480p latent (16 x 21 x 60 x 104) and an odd small one
    for shape in [vec![16, 21, 60, 104], vec![3, 1, 5, 7]] {
        let n: usize = shape.iter().product();
        let x0 = rng.normal_vec(n, 1.0);
        let mut x = be.latent_upload(&x0, &shape).unwrap();
        for (batch, guidance) in [(2usize, Some(5.0f32)), (1, None)] {
            let input = be.latent_input(&x, batch).unwrap();
            assert_eq!(input.shape()[0], batch);
            assert_eq!(&input.shape()[1..], &shape[..]);
            let host_now = be.latent_download(&x).unwrap();
            let expect: Vec<f32> = be
                .download(&be.upload(&host_now.repeat(batch), input.shape()).unwrap())
                .unwrap();
            assert_eq!(be.download(&input).unwrap(), expect, "{shape:?} input");
            // a model output in bf16, as the head returns it
            let out_host = rng.normal_vec(batch * n, 1.0);
            let out = be.upload(&out_host, input.shape()).unwrap();
            let v = be.download(&out).unwrap();
            let dt = -0.0371f32;
            let mut host = host_now.clone();
            cfg_euler(&mut host, &v, guidance, dt);
            be.latent_step(&mut x, &out, guidance, dt).unwrap();
            let dev = be.latent_download(&x).unwrap();
            assert!(
                dev.iter()
                    .zip(&host)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{shape:?} batch {batch}: device update differs from the host's"
            );
        }
        // a model output of the wrong batch is refused, naming the op
        let wrong = be.latent_input(&x, 1).unwrap();
        let err = be.latent_step(&mut x, &wrong, Some(5.0), 0.1).unwrap_err();
        assert!(err.to_string().contains("latent_step"), "{err}");
    }
}

#[test]
fn latent_combine_matches_the_host_bit_for_bit() {
    let Some(be) = backend() else { return };
    let mut rng = Rng::new(11);
    for shape in [vec![16, 21, 60, 104], vec![3, 1, 5, 7]] {
        let n: usize = shape.iter().product();
        let hosts: Vec<Vec<f32>> = (0..4).map(|_| rng.normal_vec(n, 1.0)).collect();
        let devs: Vec<_> = hosts
            .iter()
            .map(|h| be.latent_upload(h, &shape).unwrap())
            .collect();
        // UniPC-like coefficients: a ratio near 1, then small weights of both signs
        let coef = [0.98731f32, -0.0123457, 0.5000001, -0.3333333];
        for k in 1..=4 {
            let terms: Vec<(f32, &_)> = (0..k).map(|j| (coef[j], &devs[j])).collect();
            let dev = be
                .latent_download(&be.latent_combine(&terms).unwrap())
                .unwrap();
            let mut host = vec![0f32; n];
            let ht: Vec<(f32, &[f32])> = (0..k).map(|j| (coef[j], hosts[j].as_slice())).collect();
            lin_combine(&mut host, &ht);
            assert!(
                dev.iter()
                    .zip(&host)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{shape:?} with {k} terms: device combine differs from the host's"
            );
        }
        // five terms, or latents of two shapes, are refused naming the op
        let five: Vec<(f32, &_)> = (0..5).map(|j| (1.0, &devs[j % 4])).collect();
        let Err(err) = be.latent_combine(&five) else {
            panic!("five terms accepted")
        };
        assert!(err.to_string().contains("latent_combine"), "{err}");
    }
    let a = be.latent_upload(&[1.0; 6], &[1, 1, 2, 3]).unwrap();
    let b = be.latent_upload(&[1.0; 6], &[1, 1, 3, 2]).unwrap();
    assert!(be.latent_combine(&[(1.0, &a), (1.0, &b)]).is_err());
}
