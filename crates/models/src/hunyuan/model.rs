//! HunyuanVideo's transformer, as diffusers' `HunyuanVideoTransformer3DModel`
//! (`transformer_hunyuan_video.py`), written against the `Backend` ops.
//!
//! Video tokens (in the stage's token order: the Jenga curve) and text tokens form one
//! sequence `[video, text]` in self-attention, so the text is what the attention policy sees
//! as condition tokens after the video (`AttnCtx::cond_tokens`: Jenga keeps their rows and
//! columns and may bias video queries × text keys). Dual-stream blocks keep separate weights
//! per stream, single-stream blocks one set over the joint sequence. The text passes a token
//! refiner first (conditioned on the time and its own mean). Padded text tokens are cropped
//! before the model (batch 1): diffusers masks them as keys, which gives the same video.

use super::config::HunyuanConfig;
use super::naming::OfficialNames;
use crate::nn::{Linear, VarBuilder};
use crate::wan::timestep_embedding;
use crate::{ModelError, Result, WeightSource};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::{Act, AttnPlan, Backend, FusedOps, TensorMeta};
use std::sync::Arc;

const EPS: f32 = 1e-6;

/// `linear_2(act(linear_1(x)))` (diffusers' `TimestepEmbedding`, `PixArtAlphaTextProjection`).
struct Mlp2<B: Backend> {
    l1: Linear<B>,
    l2: Linear<B>,
}

impl<B: Backend> Mlp2<B> {
    fn new(vb: &VarBuilder<B>, inp: usize, hid: usize, out: usize) -> Result<Self> {
        Ok(Mlp2 {
            l1: Linear::new(&vb.pp("linear_1"), hid, inp)?,
            l2: Linear::new(&vb.pp("linear_2"), out, hid)?,
        })
    }
    fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.l2.fwd(be, &self.l1.fwd(be, x, Act::Silu)?, Act::None)
    }
}

/// q/k/v (and output) projections of one stream, with the per-head RMS q/k norm.
struct Qkv<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    norm_q: Option<B::Tensor>,
    norm_k: Option<B::Tensor>,
}

impl<B: Backend> Qkv<B> {
    fn new(
        vb: &VarBuilder<B>,
        names: [&str; 5],
        d: usize,
        dh: usize,
        qk_norm: bool,
    ) -> Result<Self> {
        let norm = |n: &str| -> Result<Option<B::Tensor>> {
            if qk_norm {
                Ok(Some(vb.pp(n).get(&[dh], "weight")?))
            } else {
                Ok(None)
            }
        };
        Ok(Qkv {
            q: Linear::new(&vb.pp(names[0]), d, d)?,
            k: Linear::new(&vb.pp(names[1]), d, d)?,
            v: Linear::new(&vb.pp(names[2]), d, d)?,
            norm_q: norm(names[3])?,
            norm_k: norm(names[4])?,
        })
    }

    /// `[B, L, D]` → q, k, v `[B, L, H, Dh]`, q/k normed per head.
    fn project(&self, be: &B, x: &B::Tensor, heads: usize) -> Result<[B::Tensor; 3]> {
        let split = |lin: &Linear<B>, norm: &Option<B::Tensor>| -> Result<B::Tensor> {
            let y = lin.fwd(be, x, Act::None)?;
            let s = y.shape().to_vec();
            let y = be.reshape(&y, &[s[0], s[1], heads, s[2] / heads])?;
            Ok(match norm {
                Some(w) => be.rms_norm(&y, w, EPS)?,
                None => y,
            })
        };
        Ok([
            split(&self.q, &self.norm_q)?,
            split(&self.k, &self.norm_k)?,
            split(&self.v, &None)?,
        ])
    }
}

/// `net.2(act(net.0.proj(x)))`: diffusers' `FeedForward`.
struct Ff<B: Backend> {
    up: Linear<B>,
    down: Linear<B>,
    act: Act,
}

impl<B: Backend> Ff<B> {
    fn new(vb: &VarBuilder<B>, d: usize, hid: usize, act: Act) -> Result<Self> {
        Ok(Ff {
            up: Linear::new(&vb.pp("net").pp(0).pp("proj"), hid, d)?,
            down: Linear::new(&vb.pp("net").pp(2), d, hid)?,
            act,
        })
    }
    fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.down.fwd(be, &self.up.fwd(be, x, self.act)?, Act::None)
    }
}

struct RefinerBlock<B: Backend> {
    norm1: (B::Tensor, B::Tensor),
    attn: Qkv<B>,
    out: Linear<B>,
    norm2: (B::Tensor, B::Tensor),
    ff: Ff<B>,
    /// `norm_out.linear`: gate_msa, gate_mlp from the refiner's time-text vector.
    gates: Linear<B>,
}

struct DualBlock<B: Backend> {
    /// `norm1.linear` / `norm1_context.linear`: 6 modulation rows per stream.
    mod_x: Linear<B>,
    mod_c: Linear<B>,
    x: Qkv<B>,
    c: Qkv<B>,
    out_x: Linear<B>,
    out_c: Linear<B>,
    ff_x: Ff<B>,
    ff_c: Ff<B>,
}

struct SingleBlock<B: Backend> {
    /// `norm.linear`: shift, scale, gate.
    modulation: Linear<B>,
    qkv: Qkv<B>,
    mlp: Linear<B>,
    out: Linear<B>,
}

pub struct HunyuanModel<B: Backend> {
    pub cfg: HunyuanConfig,
    patch: Linear<B>,
    // the text path (`context_embedder`)
    refiner_time: Mlp2<B>,
    refiner_text: Mlp2<B>,
    refiner_in: Linear<B>,
    refiner: Vec<RefinerBlock<B>>,
    // `time_text_embed`
    time: Mlp2<B>,
    guidance: Option<Mlp2<B>>,
    pooled: Mlp2<B>,
    dual: Vec<DualBlock<B>>,
    single: Vec<SingleBlock<B>>,
    /// `norm_out.linear`: scale, shift (in that order).
    norm_out: Linear<B>,
    /// `proj_out`, its rows reordered from diffusers' (c, pt, ph, pw) to the (pt, ph, pw, c)
    /// that [`Backend::unpatchify`] reads.
    proj_out: Linear<B>,
}

/// Where the video tokens of one stage sit: grid, token order, RoPE tables in that order.
pub struct HunyuanGeometry<B: Backend> {
    pub grid: (usize, usize, usize),
    pub order: Option<Arc<Vec<u32>>>,
    /// Sequence parallelism: the video tokens (positions in `order`) this rank holds.
    pub shard: Option<std::ops::Range<usize>>,
    /// RoPE tables of the video tokens held, in order.
    cos: B::Tensor,
    sin: B::Tensor,
}

impl<B: Backend> HunyuanGeometry<B> {
    pub fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1 * self.grid.2
    }
}

/// One step's embedded input: video tokens, refined text tokens and the modulation vector.
pub struct HunyuanStep<B: Backend> {
    /// Video tokens `[B, Lv, D]` in the geometry's order.
    pub x: B::Tensor,
    /// Refined text tokens `[B, Lt, D]` (its valid tokens only).
    pub text: B::Tensor,
    /// `temb`: time + guidance + pooled text, `[B, D]`.
    pub temb: B::Tensor,
}

/// The conditioning, cropped to the valid text tokens: text states `[1, Lt, text_dim]`,
/// pooled CLIP vector `[1, pooled_dim]`, embedded guidance (×1000, as the pipeline feeds it).
pub struct HunyuanCond<B: Backend> {
    pub text: B::Tensor,
    pub pooled: B::Tensor,
    pub guidance: Option<f32>,
}

fn ln<B: Backend>(vb: &VarBuilder<B>, d: usize) -> Result<(B::Tensor, B::Tensor)> {
    Ok((vb.get(&[d], "weight")?, vb.get(&[d], "bias")?))
}

/// The `n` rows of `[B, n·D]` modulation, each `[B, D]`.
fn chunks<B: Backend>(be: &B, m: &B::Tensor, n: usize) -> Result<Vec<B::Tensor>> {
    let d = m.shape()[1] / n;
    (0..n).map(|i| Ok(be.narrow(m, 1, i * d, d)?)).collect()
}

impl<B: FusedOps> HunyuanModel<B> {
    /// Load from diffusers' `transformer/` weights or the official checkpoint (its names are
    /// recognised and mapped, `super::naming`).
    pub fn load(be: &B, cfg: &HunyuanConfig, src: &dyn WeightSource) -> Result<Self> {
        cfg.validate()?;
        let official;
        let src: &dyn WeightSource = if OfficialNames::detect(src) {
            official = OfficialNames::new(src, cfg.dim());
            &official
        } else {
            src
        };
        let vb = VarBuilder::new(be, src);
        let (d, dh, mlp) = (cfg.dim(), cfg.attention_head_dim, cfg.mlp_dim());
        let td = cfg.text_embed_dim;
        let qk = cfg.qk_norm == "rms_norm";
        let patch = Linear::from_patch_conv(
            &vb.pp("x_embedder").pp("proj"),
            d,
            cfg.in_channels,
            &cfg.patch(),
        )?;
        let ce = vb.pp("context_embedder");
        let mut refiner = Vec::with_capacity(cfg.num_refiner_layers);
        for i in 0..cfg.num_refiner_layers {
            let b = ce.pp("token_refiner").pp("refiner_blocks").pp(i);
            refiner.push(RefinerBlock {
                norm1: ln(&b.pp("norm1"), d)?,
                attn: Qkv::new(
                    &b.pp("attn"),
                    ["to_q", "to_k", "to_v", "", ""],
                    d,
                    dh,
                    false,
                )?,
                out: Linear::new(&b.pp("attn").pp("to_out").pp(0), d, d)?,
                norm2: ln(&b.pp("norm2"), d)?,
                ff: Ff::new(
                    &b.pp("ff"),
                    d,
                    (d as f64 * cfg.mlp_ratio) as usize,
                    Act::Silu,
                )?,
                gates: Linear::new(&b.pp("norm_out").pp("linear"), 2 * d, d)?,
            });
        }
        let mut dual = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = vb.pp("transformer_blocks").pp(i);
            let a = b.pp("attn");
            dual.push(DualBlock {
                mod_x: Linear::new(&b.pp("norm1").pp("linear"), 6 * d, d)?,
                mod_c: Linear::new(&b.pp("norm1_context").pp("linear"), 6 * d, d)?,
                x: Qkv::new(&a, ["to_q", "to_k", "to_v", "norm_q", "norm_k"], d, dh, qk)?,
                c: Qkv::new(
                    &a,
                    [
                        "add_q_proj",
                        "add_k_proj",
                        "add_v_proj",
                        "norm_added_q",
                        "norm_added_k",
                    ],
                    d,
                    dh,
                    qk,
                )?,
                out_x: Linear::new(&a.pp("to_out").pp(0), d, d)?,
                out_c: Linear::new(&a.pp("to_add_out"), d, d)?,
                ff_x: Ff::new(&b.pp("ff"), d, mlp, Act::GeluTanh)?,
                ff_c: Ff::new(&b.pp("ff_context"), d, mlp, Act::GeluTanh)?,
            });
        }
        let mut single = Vec::with_capacity(cfg.num_single_layers);
        for i in 0..cfg.num_single_layers {
            let b = vb.pp("single_transformer_blocks").pp(i);
            single.push(SingleBlock {
                modulation: Linear::new(&b.pp("norm").pp("linear"), 3 * d, d)?,
                qkv: Qkv::new(
                    &b.pp("attn"),
                    ["to_q", "to_k", "to_v", "norm_q", "norm_k"],
                    d,
                    dh,
                    qk,
                )?,
                mlp: Linear::new(&b.pp("proj_mlp"), mlp, d)?,
                out: Linear::new(&b.pp("proj_out"), d, d + mlp)?,
            });
        }
        let tte = vb.pp("time_text_embed");
        let [pt, ph, pw] = cfg.patch();
        let c = cfg.out_channels;
        let rows = pt * ph * pw * c;
        // (c, pt, ph, pw) → (pt, ph, pw, c)
        let perm: Vec<usize> = (0..rows)
            .map(|r| {
                let (k, ci) = (r / c, r % c);
                ci * (pt * ph * pw) + k
            })
            .collect();
        let w = vb.pp("proj_out").get_host(&[rows, d], "weight")?;
        let bias = vb.pp("proj_out").get_host(&[rows], "bias")?;
        let w: Vec<f32> = perm
            .iter()
            .flat_map(|&r| &w[r * d..(r + 1) * d])
            .copied()
            .collect();
        let bias: Vec<f32> = perm.iter().map(|&r| bias[r]).collect();
        Ok(HunyuanModel {
            patch,
            refiner_time: Mlp2::new(&ce.pp("time_text_embed").pp("timestep_embedder"), 256, d, d)?,
            refiner_text: Mlp2::new(&ce.pp("time_text_embed").pp("text_embedder"), td, d, d)?,
            refiner_in: Linear::new(&ce.pp("proj_in"), d, td)?,
            refiner,
            time: Mlp2::new(&tte.pp("timestep_embedder"), 256, d, d)?,
            guidance: if cfg.guidance_embeds {
                Some(Mlp2::new(&tte.pp("guidance_embedder"), 256, d, d)?)
            } else {
                None
            },
            pooled: Mlp2::new(&tte.pp("text_embedder"), cfg.pooled_projection_dim, d, d)?,
            dual,
            single,
            norm_out: Linear::new(&vb.pp("norm_out").pp("linear"), 2 * d, d)?,
            proj_out: Linear {
                w: be.upload(&w, &[rows, d])?,
                b: Some(be.upload(&bias, &[rows])?),
            },
            cfg: cfg.clone(),
        })
    }

    /// Patch grid of a latent `frames × height × width`.
    pub fn grid(&self, f: usize, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        crate::denoiser::patch_grid(self.cfg.patch(), f, h, w)
    }

    pub fn geometry(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<HunyuanGeometry<B>> {
        self.geometry_shard(be, grid, order, None)
    }

    /// [`HunyuanModel::geometry`] for a rank holding only the video tokens `shard`.
    pub fn geometry_shard(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
        shard: Option<std::ops::Range<usize>>,
    ) -> Result<HunyuanGeometry<B>> {
        let l = grid.0 * grid.1 * grid.2;
        crate::denoiser::check_shard(shard.as_ref(), l)?;
        jenga_tensor::check_order(
            "HunyuanVideo geometry",
            order.as_deref().map(|o| o.as_slice()),
            l,
        )?;
        // adjacent pairs, θ^(−2j/d) per axis: diffusers' `get_1d_rotary_pos_embed(use_real)`
        let h = self.cfg.attention_head_dim / 2;
        let (cos, sin) = crate::nn::axes_rope(
            grid,
            order.as_deref().map(|o| o.as_slice()),
            &self.cfg.rope_axes_dim,
            self.cfg.rope_theta,
            h,
        );
        let rows = shard.clone().unwrap_or(0..l);
        let (cos, sin) = crate::nn::upload_rope_rows(be, (&cos, &sin), rows, h)?;
        Ok(HunyuanGeometry {
            grid,
            order,
            cos,
            sin,
            shard,
        })
    }

    /// The time embedding of `t` alone, `[1, D]` (the skip signal).
    pub fn time_embedding(&self, be: &B, t: f64) -> Result<B::Tensor> {
        self.embed_scalar(be, &self.time, t)
    }

    /// A sinusoidal embedding of `t` through `mlp`, `[1, D]`.
    fn embed_scalar(&self, be: &B, mlp: &Mlp2<B>, t: f64) -> Result<B::Tensor> {
        // angles in f64: the references' float32 sinusoids (torch's vectorised sin) are ~4e-4 rad
        // off at the guidance input (6000); `tools/make_hunyuan_dit_golden.py` measures both
        let f = be.upload(&timestep_embedding(t, 256), &[1, 256])?;
        mlp.fwd(be, &f)
    }

    /// The token refiner: text states `[1, Lt, text_dim]` (valid tokens) at time `t` →
    /// `[1, Lt, D]`.
    pub fn refine_text(&self, be: &B, text: &B::Tensor, t: f64) -> Result<B::Tensor> {
        let s = text.shape().to_vec();
        let (b, lt) = (s[0], s[1]);
        // the mean over the valid tokens conditions the refiner
        let mean = {
            let host = be.download(text)?;
            let td = s[2];
            let mut m = vec![0f32; b * td];
            for bi in 0..b {
                for i in 0..lt {
                    for j in 0..td {
                        m[bi * td + j] += host[(bi * lt + i) * td + j] / lt as f32;
                    }
                }
            }
            be.upload(&m, &[b, td])?
        };
        let temb = be.add_gated(
            &self.embed_scalar(be, &self.refiner_time, t)?,
            &self.refiner_text.fwd(be, &mean)?,
            None,
        )?;
        let heads = self.cfg.num_attention_heads;
        let mut x = self.refiner_in.fwd(be, text, Act::None)?;
        let temb_act = be.act(&temb, Act::Silu)?;
        for blk in &self.refiner {
            let g = chunks(be, &blk.gates.fwd(be, &temb_act, Act::None)?, 2)?;
            let n = be.layer_norm(&x, Some(&blk.norm1.0), Some(&blk.norm1.1), EPS)?;
            let [q, k, v] = blk.attn.project(be, &n, heads)?;
            let o = be.attention(&q, &k, &v, &AttnPlan::Dense, None)?;
            let o = blk
                .out
                .fwd(be, &be.reshape(&o, &[b, lt, self.cfg.dim()])?, Act::None)?;
            x = be.add_gated(&x, &o, Some(&g[0]))?;
            let n = be.layer_norm(&x, Some(&blk.norm2.0), Some(&blk.norm2.1), EPS)?;
            x = be.add_gated(&x, &blk.ff.fwd(be, &n)?, Some(&g[1]))?;
        }
        Ok(x)
    }

    /// Patchify the latent `[1, C, F, H, W]` into the geometry's order, refine the text, and
    /// the modulation vector for time `t`.
    pub fn embed(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        geom: &HunyuanGeometry<B>,
        cond: &HunyuanCond<B>,
    ) -> Result<HunyuanStep<B>> {
        let s = x.shape().to_vec();
        if s.len() != 5 || s[1] != self.cfg.in_channels {
            return Err(ModelError::Invalid(format!(
                "HunyuanVideo input {s:?}, expected [B, {}, F, H, W]",
                self.cfg.in_channels
            )));
        }
        if self.grid(s[2], s[3], s[4])? != geom.grid {
            return Err(ModelError::Invalid(format!(
                "latent {s:?} does not match the stage grid {:?}",
                geom.grid
            )));
        }
        let mut tokens = be.patchify(
            x,
            self.cfg.patch(),
            geom.order.as_deref().map(|o| o.as_slice()),
        )?;
        if let Some(r) = &geom.shard {
            // this rank embeds and carries only its share of the video tokens
            tokens = be.narrow(&tokens, 1, r.start, r.len())?;
        }
        let h = self.patch.fwd(be, &tokens, Act::None)?;
        let mut temb = be.add_gated(
            &self.embed_scalar(be, &self.time, t)?,
            &self.pooled.fwd(be, &cond.pooled)?,
            None,
        )?;
        match (&self.guidance, cond.guidance) {
            (Some(g), Some(scale)) => {
                temb = be.add_gated(&temb, &self.embed_scalar(be, g, scale as f64)?, None)?
            }
            (Some(_), None) => {
                return Err(ModelError::Invalid(
                    "this HunyuanVideo is guidance-distilled: it needs --embedded-guidance".into(),
                ))
            }
            (None, _) => {}
        }
        Ok(HunyuanStep {
            x: h,
            text: self.refine_text(be, &cond.text, t)?,
            temb,
        })
    }

    /// q and k of the joint sequence with RoPE on the video rows only (text is unrotated).
    fn joint(
        &self,
        be: &B,
        geom: &HunyuanGeometry<B>,
        vid: [B::Tensor; 3],
        txt: [B::Tensor; 3],
    ) -> Result<[B::Tensor; 3]> {
        let [q, k, v] = vid;
        let [qc, kc, vc] = txt;
        let q = be.rope(&q, &geom.cos, &geom.sin)?;
        let k = be.rope(&k, &geom.cos, &geom.sin)?;
        Ok([
            be.cat(&[&q, &qc], 1)?,
            be.cat(&[&k, &kc], 1)?,
            be.cat(&[&v, &vc], 1)?,
        ])
    }

    fn attend(
        &self,
        be: &B,
        qkv: [B::Tensor; 3],
        policy: &dyn AttentionPolicy<B>,
        ctx: &AttnCtx,
    ) -> Result<B::Tensor> {
        let [q, k, v] = qkv;
        let o = policy.attend(be, &q, &k, &v, None, ctx)?;
        let s = o.shape().to_vec();
        Ok(be.reshape(&o, &[s[0], s[1], s[2] * s[3]])?)
    }

    /// All blocks: video `[B, Lv, D]` (text refined in `step`) → video hidden states.
    pub fn blocks(
        &self,
        be: &B,
        step: &HunyuanStep<B>,
        geom: &HunyuanGeometry<B>,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        let heads = self.cfg.num_attention_heads;
        let (lv, lt) = (step.x.shape()[1], step.text.shape()[1]);
        let temb = be.act(&step.temb, Act::Silu)?;
        let (mut x, mut c) = (step.x.clone(), step.text.clone());
        let n_dual = self.dual.len();
        for (i, blk) in self.dual.iter().enumerate() {
            let ctx = AttnCtx {
                layer: i,
                cond_tokens: lt,
                ..actx.clone()
            };
            let m = chunks(be, &blk.mod_x.fwd(be, &temb, Act::None)?, 6)?;
            let mc = chunks(be, &blk.mod_c.fwd(be, &temb, Act::None)?, 6)?;
            let nx = be.norm_modulate(&x, &m[0], &m[1], EPS)?;
            let nc = be.norm_modulate(&c, &mc[0], &mc[1], EPS)?;
            let qkv = self.joint(
                be,
                geom,
                blk.x.project(be, &nx, heads)?,
                blk.c.project(be, &nc, heads)?,
            )?;
            let o = self.attend(be, qkv, policy, &ctx)?;
            let ox = blk.out_x.fwd(be, &be.narrow(&o, 1, 0, lv)?, Act::None)?;
            let oc = blk.out_c.fwd(be, &be.narrow(&o, 1, lv, lt)?, Act::None)?;
            x = be.add_gated(&x, &ox, Some(&m[2]))?;
            c = be.add_gated(&c, &oc, Some(&mc[2]))?;
            let nx = be.norm_modulate(&x, &m[3], &m[4], EPS)?;
            let nc = be.norm_modulate(&c, &mc[3], &mc[4], EPS)?;
            x = be.add_gated(&x, &blk.ff_x.fwd(be, &nx)?, Some(&m[5]))?;
            c = be.add_gated(&c, &blk.ff_c.fwd(be, &nc)?, Some(&mc[5]))?;
        }
        let mut xc = be.cat(&[&x, &c], 1)?;
        for (i, blk) in self.single.iter().enumerate() {
            let ctx = AttnCtx {
                layer: n_dual + i,
                cond_tokens: lt,
                ..actx.clone()
            };
            let m = chunks(be, &blk.modulation.fwd(be, &temb, Act::None)?, 3)?;
            let n = be.norm_modulate(&xc, &m[0], &m[1], EPS)?;
            let mlp = blk.mlp.fwd(be, &n, Act::GeluTanh)?;
            let [q, k, v] = blk.qkv.project(be, &n, heads)?;
            let part = |t: &B::Tensor, s: usize, l: usize| be.narrow(t, 1, s, l);
            let qkv = self.joint(
                be,
                geom,
                [part(&q, 0, lv)?, part(&k, 0, lv)?, part(&v, 0, lv)?],
                [part(&q, lv, lt)?, part(&k, lv, lt)?, part(&v, lv, lt)?],
            )?;
            let o = self.attend(be, qkv, policy, &ctx)?;
            let y = blk.out.fwd(be, &be.cat(&[&o, &mlp], 2)?, Act::None)?;
            xc = be.add_gated(&xc, &y, Some(&m[2]))?;
        }
        Ok(be.narrow(&xc, 1, 0, lv)?)
    }

    /// Video hidden `[B, Lv, D]` → per-token outputs `[B, Lv, pt·ph·pw·C]`.
    pub fn head_tokens(&self, be: &B, x: &B::Tensor, step: &HunyuanStep<B>) -> Result<B::Tensor> {
        let temb = be.act(&step.temb, Act::Silu)?;
        let m = chunks(be, &self.norm_out.fwd(be, &temb, Act::None)?, 2)?;
        // AdaLayerNormContinuous: scale first, then shift
        let n = be.norm_modulate(x, &m[1], &m[0], EPS)?;
        self.proj_out.fwd(be, &n, Act::None)
    }

    pub fn unpatchify(
        &self,
        be: &B,
        y: &B::Tensor,
        geom: &HunyuanGeometry<B>,
    ) -> Result<B::Tensor> {
        let order = geom.order.as_deref().map(|o| o.as_slice());
        Ok(be.unpatchify(y, geom.grid, self.cfg.patch(), self.cfg.out_channels, order)?)
    }

    /// Full forward: the velocity for latent `x` `[1, C, F, H, W]` at time `t` (0–1000).
    #[allow(clippy::too_many_arguments)] // the forward's inputs, each one distinct (as Wan's)
    pub fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        cond: &HunyuanCond<B>,
        geom: &HunyuanGeometry<B>,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        let step = self.embed(be, x, t, geom, cond)?;
        let h = self.blocks(be, &step, geom, policy, actx)?;
        let y = self.head_tokens(be, &h, &step)?;
        self.unpatchify(be, &y, geom)
    }

    pub fn num_layers(&self) -> usize {
        self.dual.len() + self.single.len()
    }
}
