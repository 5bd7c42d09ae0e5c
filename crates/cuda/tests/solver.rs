//! The sampler's latent ops on the GPU (`SolverOps`) against the host arithmetic they
//! replace: the model input is exactly the bf16 upload of the f32 latent (CFG batch
//! included), and the CFG combine + Euler update leaves the f32 latent bit-identical to the
//! host `cfg_euler` on the downloaded model output. Skips without a CUDA driver.

use jenga_cuda::selftest::Rng;
use jenga_cuda::CudaBackend;
use jenga_tensor::{cfg_euler, Backend, SolverOps, TensorMeta};

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
