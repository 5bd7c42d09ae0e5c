//! The HunyuanVideo transformer against diffusers' `HunyuanVideoTransformer3DModel` at reduced
//! width (`tools/make_hunyuan_dit_golden.py`: 2 dual + 2 single blocks, a refiner block, a
//! 3x8x12 latent, 7 text tokens of which 5 are valid), f32 on the CPU; and the Jenga seam on
//! the joint sequence (text as condition tokens after the video).

#[path = "support/rel_l2.rs"]
mod rel_l2;

use jenga_carve::{AttentionPolicy, AttnCtx, Dense, JengaConfig, JengaPolicy};
use jenga_models::hunyuan::{HunyuanCond, HunyuanConfig, HunyuanModel};
use jenga_models::{SafetensorsWeights, WeightSource};
use jenga_tensor::{Backend, CpuBackend};
use rel_l2::rel_l2;
use std::path::PathBuf;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hunyuan_dit"
    ))
    .join(p)
}

struct Golden {
    model: HunyuanModel<CpuBackend>,
    g: SafetensorsWeights,
}

fn load(be: &CpuBackend) -> Golden {
    let text = std::fs::read_to_string(fixture("transformer/config.json")).unwrap();
    let cfg = HunyuanConfig::from_json(&text).unwrap();
    let w = SafetensorsWeights::open(&fixture("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let model = HunyuanModel::load(be, &cfg, &w).unwrap();
    let g = SafetensorsWeights::open(&fixture("golden.safetensors")).unwrap();
    Golden { model, g }
}

/// The forward of the golden's inputs with the padded text rows cropped (as the engine feeds).
fn forward(
    be: &CpuBackend,
    gd: &Golden,
    pol: &dyn AttentionPolicy<CpuBackend>,
    step: usize,
) -> Vec<f32> {
    let x = gd.g.load("x", &[1, 4, 3, 8, 12]).unwrap();
    forward_at(be, gd, pol, step, &x, (3, 8, 12))
}

/// The golden model and text on latent `x` of `size` (frames, height, width).
fn forward_at(
    be: &CpuBackend,
    gd: &Golden,
    pol: &dyn AttentionPolicy<CpuBackend>,
    step: usize,
    x: &[f32],
    size: (usize, usize, usize),
) -> Vec<f32> {
    let g = &gd.g;
    let (f, h, w) = size;
    let text = g.load("text", &[1, 7, 40]).unwrap();
    let mask = g.load("mask", &[1, 7]).unwrap();
    let valid = mask.iter().filter(|&&m| m > 0.5).count();
    let cond = HunyuanCond {
        text: be.upload(&text[..valid * 40], &[1, valid, 40]).unwrap(),
        pooled: be
            .upload(&g.load("pooled", &[1, 24]).unwrap(), &[1, 24])
            .unwrap(),
        guidance: Some(g.load("guidance", &[1]).unwrap()[0]),
    };
    let t = g.load("t", &[1]).unwrap()[0] as f64;
    let m = &gd.model;
    let grid = m.grid(f, h, w).unwrap();
    let geom = m.geometry(be, grid, pol.token_order(grid)).unwrap();
    let actx = AttnCtx {
        step,
        num_steps: 50,
        ..AttnCtx::one_forward(grid, m.num_layers())
    };
    let xt = be.upload(x, &[1, 4, f, h, w]).unwrap();
    let v = m.forward(be, &xt, t, &cond, &geom, pol, &actx).unwrap();
    be.download(&v).unwrap()
}

#[test]
fn transformer_forward_matches_diffusers() {
    let be = CpuBackend::new();
    let gd = load(&be);
    let got = forward(&be, &gd, &Dense, 0);
    // `v_exact`: diffusers with its time/guidance sinusoids in f64, as ours
    let exact = rel_l2(&got, &gd.g.load("v_exact", &[1, 4, 3, 8, 12]).unwrap());
    // `v`: stock diffusers, whose float32 sin is ~4e-4 rad off at the guidance input (6000)
    let stock = rel_l2(&got, &gd.g.load("v", &[1, 4, 3, 8, 12]).unwrap());
    println!(
        "HunyuanVideo transformer vs diffusers: rel-L2 {exact:.2e} (stock diffusers {stock:.2e})"
    );
    assert!(exact < 1e-5, "rel-L2 {exact}");
    assert!(stock < 2e-4, "rel-L2 vs stock diffusers {stock}");
}

#[test]
fn the_official_checkpoint_gives_the_same_velocity() {
    // `official/mp_rank_00_model_states.pt`: the same weights in hyvideo's names (fused
    // q|k|v, single-block linear1 = q|k|v|mlp, final modulation shift|scale), torch.save'd
    let be = CpuBackend::new();
    let mut gd = load(&be);
    let pth =
        jenga_models::PthWeights::open(&fixture("official/mp_rank_00_model_states.pt")).unwrap();
    gd.model = HunyuanModel::load(&be, &gd.model.cfg.clone(), &pth).unwrap();
    let got = forward(&be, &gd, &Dense, 0);
    let err = rel_l2(&got, &gd.g.load("v_exact", &[1, 4, 3, 8, 12]).unwrap());
    assert!(err < 1e-5, "rel-L2 {err}");
}

#[test]
fn the_curve_order_gives_the_same_velocity() {
    // Jenga's curve reorders tokens (patchify, RoPE, unpatchify follow it); with every block
    // kept the velocity is the raster one.
    let be = CpuBackend::new();
    let gd = load(&be);
    let want = gd.g.load("v_exact", &[1, 4, 3, 8, 12]).unwrap();
    let pol = JengaPolicy::new(JengaConfig::hunyuan(&[0.0], 1.0, &[1.0])).unwrap();
    assert!(AttentionPolicy::<CpuBackend>::token_order(&pol, (3, 4, 6)).is_some());
    let got = forward(&be, &gd, &pol, 0);
    let err = rel_l2(&got, &want);
    assert!(err < 1e-5, "rel-L2 {err}");
}

#[test]
fn a_bad_config_or_a_missing_tensor_is_one_clear_error() {
    let text = std::fs::read_to_string(fixture("transformer/config.json")).unwrap();
    let bad = text.replace(
        "\"rope_axes_dim\": [\n    4,",
        "\"rope_axes_dim\": [\n    6,",
    );
    let e = HunyuanConfig::from_json(&bad).unwrap_err().to_string();
    assert!(e.contains("rope_axes_dim"), "{e}");
    // weights of another config: the first tensor whose shape differs is named
    let mut cfg = HunyuanConfig::from_json(&text).unwrap();
    cfg.text_embed_dim = 48;
    let w = SafetensorsWeights::open(&fixture("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let e = match HunyuanModel::load(&CpuBackend::new(), &cfg, &w) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded with the wrong text width"),
    };
    assert!(e.contains("context_embedder"), "{e}");
}

/// The first joint-attention call a policy makes: its q/k/v, plan and bias.
type Call = (
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
    Vec<usize>,
    jenga_tensor::AttnPlan,
    Option<jenga_tensor::KeyBias>,
);

/// Records the first call, then lets the wrapped policy run it.
struct Spy<'a> {
    inner: &'a dyn AttentionPolicy<CpuBackend>,
    first: std::sync::Mutex<Option<Call>>,
}

impl AttentionPolicy<CpuBackend> for Spy<'_> {
    fn delegate(&self) -> Option<&dyn AttentionPolicy<CpuBackend>> {
        Some(self.inner)
    }
    fn attend_hooked(
        &self,
        be: &CpuBackend,
        q: &jenga_tensor::CpuTensor,
        k: &jenga_tensor::CpuTensor,
        v: &jenga_tensor::CpuTensor,
        pooled: Option<(&jenga_tensor::CpuTensor, &jenga_tensor::CpuTensor)>,
        ctx: &AttnCtx,
        hook: &jenga_carve::PlanHook<'_, CpuBackend>,
    ) -> jenga_tensor::Result<jenga_tensor::CpuTensor> {
        let plan = self.inner.plan_pooled(be, q, k, pooled, ctx)?;
        let bias = self.inner.key_bias(ctx);
        let mut first = self.first.lock().unwrap();
        if first.is_none() {
            use jenga_tensor::TensorMeta;
            *first = Some((
                be.download(q)?,
                be.download(k)?,
                be.download(v)?,
                q.shape().to_vec(),
                plan.clone(),
                bias,
            ));
        }
        let _ = hook;
        be.attention(q, k, v, &plan, bias)
    }
}

/// Softmax attention by hand: row i of head h over the keys its plan keeps, `bias` added to
/// the logits of video-query × text-key pairs.
fn by_hand(c: &Call, block: usize, video: usize, beta: f32) -> Vec<f32> {
    let (q, k, v, s) = (&c.0, &c.1, &c.2, &c.3);
    let (l, h, dh) = (s[1], s[2], s[3]);
    let plan = match &c.4 {
        jenga_tensor::AttnPlan::Sparse(p) => p.clone(),
        p => panic!("expected a sparse plan, got {p:?}"),
    };
    let mut o = vec![0f32; l * h * dh];
    for hi in 0..h {
        for i in 0..l {
            let kept = plan.row(0, hi, i / block);
            let keys: Vec<usize> = (0..l)
                .filter(|j| kept.contains(&((j / block) as u32)))
                .collect();
            let logits: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let dot: f64 = (0..dh)
                        .map(|d| (q[(i * h + hi) * dh + d] * k[(j * h + hi) * dh + d]) as f64)
                        .sum();
                    dot / (dh as f64).sqrt()
                        + if i < video && j >= video {
                            beta as f64
                        } else {
                            0.0
                        }
                })
                .collect();
            let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = logits.iter().map(|x| (x - mx).exp()).collect();
            let z: f64 = w.iter().sum();
            for d in 0..dh {
                let acc: f64 = keys
                    .iter()
                    .zip(&w)
                    .map(|(&j, wj)| wj * v[(j * h + hi) * dh + d] as f64)
                    .sum();
                o[(i * h + hi) * dh + d] = (acc / z) as f32;
            }
        }
    }
    o
}

#[test]
fn the_text_amplifier_biases_video_queries_on_text_keys_and_condition_blocks_are_kept() {
    let be = CpuBackend::new();
    let gd = load(&be);
    // stage 0 of a run whose first stage has a quarter of the final tokens: β = −0.5·ln 0.25
    let jenga = JengaPolicy::new(JengaConfig::hunyuan(&[0.6, 0.6], 0.3, &[0.25, 1.0])).unwrap();
    let spy = Spy {
        inner: &jenga,
        first: Default::default(),
    };
    // 4 x 32 x 48 latent: 4 x 16 x 24 = 1536 video tokens, 12 blocks of 128, + 5 text tokens
    let mut seed = 1u64;
    let x: Vec<f32> = (0..4 * 4 * 32 * 48)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let _ = forward_at(&be, &gd, &spy, 10, &x, (4, 32, 48));
    let call = spy.first.lock().unwrap().take().expect("an attention call");
    let (video, text) = (1536, 5);
    assert_eq!(call.3[1], video + text, "joint sequence: video then text");
    let b = call.5.expect("the amplifier is on in the first stage");
    let beta = -0.5 * 0.25f64.ln();
    assert_eq!((b.from_key, b.to_query), (video, video));
    assert!(
        (b.bias as f64 - beta).abs() < 1e-6,
        "β {} vs {beta}",
        b.bias
    );
    // the plan is sparse, and every query block keeps the text's key blocks; text rows are dense
    let plan = match &call.4 {
        jenga_tensor::AttnPlan::Sparse(p) => p.clone(),
        p => panic!("expected a sparse plan, got {p:?}"),
    };
    assert!(plan.density() < 0.95, "density {}", plan.density());
    let nb = plan.k_blocks;
    let text_blocks: Vec<u32> = ((video / 128) as u32..nb as u32).collect();
    for h in 0..2 {
        for qb in 0..plan.q_blocks {
            let row = plan.row(0, h, qb);
            assert!(
                text_blocks.iter().all(|t| row.contains(t)),
                "head {h} qb {qb}: {row:?}"
            );
            if qb * 128 >= video {
                assert_eq!(row.len(), nb, "text query block {qb} must be dense");
            }
        }
    }
    // by the right amount: the kernel's output is the hand softmax with +β on video × text
    let q = be.upload(&call.0, &call.3).unwrap();
    let k = be.upload(&call.1, &call.3).unwrap();
    let v = be.upload(&call.2, &call.3).unwrap();
    let got = be
        .download(&be.attention(&q, &k, &v, &call.4, Some(b)).unwrap())
        .unwrap();
    let want = by_hand(&call, 128, video, b.bias);
    assert!(rel_l2(&got, &want) < 1e-5, "rel-L2 {}", rel_l2(&got, &want));
    let plain = be
        .download(&be.attention(&q, &k, &v, &call.4, None).unwrap())
        .unwrap();
    let row = 2 * 16;
    let (vid_diff, txt_diff): (f32, f32) = got.chunks(row).zip(plain.chunks(row)).enumerate().fold(
        (0.0, 0.0),
        |(a, t), (i, (g, p))| {
            let d = g
                .iter()
                .zip(p)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            if i < video {
                (a.max(d), t)
            } else {
                (a, t.max(d))
            }
        },
    );
    assert!(
        vid_diff > 1e-2,
        "the bias does not move video queries ({vid_diff})"
    );
    assert_eq!(txt_diff, 0.0, "text queries must not be biased");
}
