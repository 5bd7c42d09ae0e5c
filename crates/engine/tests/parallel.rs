//! `--ranks N` through the engine: the embedded model's generation as threads of one process
//! (Ulysses, ring, CFG parallel) is the one-device generation, with a ProRes + skip preset,
//! and layouts that cannot run are refused at prepare time.

mod support;

use jenga_engine::{prepare, GenerateRequest, Generated, ParallelOptions};

fn request(preset: Option<&str>, parallel: ParallelOptions) -> GenerateRequest {
    let mut r = GenerateRequest::default();
    r.sampling.prompt = "a red circle moving right on a blue background".into();
    r.sampling.steps = Some(10);
    r.policy.preset = preset.map(String::from);
    r.parallel = parallel;
    r
}

fn generate(r: &GenerateRequest) -> Generated {
    let p = prepare(r).unwrap();
    support::cpu_engine().generate(&p, &mut |_| {}).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn ranks_as_threads_give_the_one_device_video() {
    for preset in [None, Some("flash")] {
        let one = generate(&request(preset, ParallelOptions::default()));
        if preset.is_some() {
            // the preset does what this test is about: two resolutions and skipped steps
            assert!(one.computed_steps < 10, "{}", one.computed_steps);
            assert_eq!(one.density.len(), 2, "{:?}", one.density);
        }
        for (ranks, ulysses, ring, cfg) in [
            (2, None, None, None),           // auto: CFG 2
            (2, Some(2), None, Some(false)), // Ulysses 2
            (3, None, Some(3), None),        // ring 3
            (4, None, None, None),           // auto: CFG 2 x Ulysses 2
        ] {
            let par = ParallelOptions {
                ranks,
                ulysses,
                ring,
                cfg_parallel: cfg,
            };
            let p = prepare(&request(preset, par.clone())).unwrap();
            let layout = p.parallel.expect("a parallel layout");
            assert_eq!(layout.world(), ranks);
            let got = support::cpu_engine().generate(&p, &mut |_| {}).unwrap();
            let err = max_abs(&got.latent, &one.latent);
            assert!(err <= 1e-5, "{preset:?} {layout}: latent max-abs {err:.3e}");
            assert_eq!(got.computed_steps, one.computed_steps);
            assert_eq!(got.video.rgb, one.video.rgb, "{preset:?} {layout}: frames");
        }
    }
}

#[test]
fn layouts_that_cannot_run_are_refused_at_prepare() {
    let bad = |par: ParallelOptions| {
        prepare(&request(None, par))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    // tiny-wan has 2 heads
    let e = bad(ParallelOptions {
        ulysses: Some(4),
        ..Default::default()
    });
    assert!(e.contains("2 heads") && e.contains("--ring"), "{e}");
    // CFG parallel without guidance
    let mut r = request(
        None,
        ParallelOptions {
            ranks: 2,
            cfg_parallel: Some(true),
            ..Default::default()
        },
    );
    r.sampling.guidance = Some(1.0);
    let e = format!("{:#}", prepare(&r).err().unwrap());
    assert!(e.contains("guidance"), "{e}");
    // ring with SVG
    let mut r = request(
        None,
        ParallelOptions {
            ring: Some(2),
            ..Default::default()
        },
    );
    r.policy.policy = Some("svg".into());
    let e = format!("{:#}", prepare(&r).err().unwrap());
    assert!(e.contains("SVG"), "{e}");
    // more ranks than blocks of tokens (2048 tokens = 16 blocks)
    let e = bad(ParallelOptions {
        ranks: 32,
        ring: Some(32),
        ..Default::default()
    });
    assert!(e.contains("fewer than one block"), "{e}");
}
