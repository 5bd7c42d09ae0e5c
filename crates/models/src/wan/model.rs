//! Wan2.1 DiT (text-to-video), as `wan/modules/model.py`, written against the `Backend` ops.
//!
//! The model never sees which attention policy runs: self-attention hands q/k/v to the policy
//! (`attend`: a plan and the attention, with the block means of q/k when the policy asked for
//! them via `pooled_block`; the backend computes them inside the RoPE pass), and the token order of a
//! stage (Hilbert curve for Jenga) only changes the `Geometry` (the order `patchify` writes
//! tokens in and which RoPE angles each position gets).

use super::WanKeys;
use crate::nn::{LayerNorm, Linear, RmsNorm, VarBuilder};
use crate::{ModelError, Result, WanConfig, WeightSource};
use jenga_carve::{AttentionPolicy, AttnCtx};
use jenga_tensor::{Act, AttnPlan, Backend, FusedOps, TensorMeta};
use std::sync::Arc;

struct Attention<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    norm_q: Option<B::Tensor>,
    norm_k: Option<B::Tensor>,
}

impl<B: FusedOps> Attention<B> {
    fn load(vb: &VarBuilder<B>, cfg: &WanConfig) -> Result<Self> {
        let d = cfg.dim;
        let norm = |n: &str| -> Result<Option<B::Tensor>> {
            if cfg.qk_norm {
                Ok(Some(RmsNorm::new(&vb.pp(n), d, cfg.eps as f32)?.w))
            } else {
                Ok(None)
            }
        };
        Ok(Attention {
            q: Linear::new(&vb.pp("q"), d, d)?,
            k: Linear::new(&vb.pp("k"), d, d)?,
            v: Linear::new(&vb.pp("v"), d, d)?,
            o: Linear::new(&vb.pp("o"), d, d)?,
            norm_q: norm("norm_q")?,
            norm_k: norm("norm_k")?,
        })
    }

    /// q/k/v projections with RMS q/k-norm, split into heads `[B, L, H, Dh]`.
    fn project(
        &self,
        be: &B,
        lin: &Linear<B>,
        norm: &Option<B::Tensor>,
        x: &B::Tensor,
        heads: usize,
        eps: f32,
    ) -> Result<B::Tensor> {
        let mut y = lin.fwd(be, x, Act::None)?;
        if let Some(w) = norm {
            y = be.rms_norm(&y, w, eps)?;
        }
        let s = y.shape().to_vec();
        Ok(be.reshape(&y, &[s[0], s[1], heads, s[2] / heads])?)
    }

    fn finish(&self, be: &B, o: &B::Tensor) -> Result<B::Tensor> {
        let s = o.shape().to_vec();
        let o = be.reshape(o, &[s[0], s[1], s[2] * s[3]])?;
        self.o.fwd(be, &o, Act::None)
    }
}

/// Image-to-video: the cross-attention's extra keys/values over the CLIP tokens.
struct ImageKv<B: Backend> {
    k: Linear<B>,
    v: Linear<B>,
    norm_k: Option<B::Tensor>,
}

/// Image-to-video: CLIP features `[B, 257, image_dim]` → context rows `[B, 257, D]`
/// (`MLPProj`: LayerNorm, Linear, exact GELU, Linear, LayerNorm).
struct ImageEmbed<B: Backend> {
    norm0: LayerNorm<B>,
    fc1: Linear<B>,
    fc3: Linear<B>,
    norm4: LayerNorm<B>,
}

struct Block<B: Backend> {
    self_attn: Attention<B>,
    cross_attn: Attention<B>,
    image_kv: Option<ImageKv<B>>,
    norm3: Option<(B::Tensor, B::Tensor)>,
    ffn0: Linear<B>,
    ffn2: Linear<B>,
    /// `[1, 6, D]`: shift1, scale1, gate1, shift2, scale2, gate2 (added to the time projection).
    modulation: B::Tensor,
}

/// Where the tokens of one stage sit: grid, token order (curve) and RoPE tables in that order.
pub struct Geometry<B: Backend> {
    /// Patch grid (frames, rows, cols).
    pub grid: (usize, usize, usize),
    /// `order[k]` = raster index of the k-th token; `None` = raster order.
    pub order: Option<Arc<Vec<u32>>>,
    /// Sequence parallelism: the tokens (positions in `order`) this rank holds; `None` = all.
    pub shard: Option<std::ops::Range<usize>>,
    /// RoPE tables of the tokens held, in order.
    cos: B::Tensor,
    sin: B::Tensor,
}

impl<B: Backend> Geometry<B> {
    /// Tokens of the whole stage (all ranks).
    pub fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1 * self.grid.2
    }
    /// Tokens this rank holds.
    pub fn local_tokens(&self) -> usize {
        self.shard.as_ref().map_or(self.tokens(), |r| r.len())
    }
}

/// Output of the embedding stage of one forward: what the blocks consume, and what a skipped
/// step (residual reuse) needs to rebuild the blocks' output.
pub struct Embedded<B: Backend> {
    /// Hidden states `[B, L, D]`, in the geometry's token order.
    pub x: B::Tensor,
    /// Time embedding `[B, D]` (drives the head).
    pub e: B::Tensor,
    /// Per-block modulation rows, each `[B, D]` (6 per block).
    mods: Vec<[B::Tensor; 6]>,
}

pub struct WanModel<B: Backend> {
    pub cfg: WanConfig,
    patch: Linear<B>,
    text0: Linear<B>,
    text2: Linear<B>,
    time0: Linear<B>,
    time2: Linear<B>,
    time_proj: Linear<B>,
    blocks: Vec<Block<B>>,
    head: Linear<B>,
    /// `[1, 2, D]`: shift, scale.
    head_mod: B::Tensor,
    image_embed: Option<ImageEmbed<B>>,
}

/// Sinusoidal timestep embedding in f64, `[cos, sin]` order (Wan's `sinusoidal_embedding_1d`).
pub fn timestep_embedding(t: f64, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; dim];
    for i in 0..half {
        let arg = t * 10000f64.powf(-(i as f64) / half as f64);
        out[i] = arg.cos() as f32;
        out[half + i] = arg.sin() as f32;
    }
    out
}

/// RoPE cos/sin tables `[L, Dh/2]` for tokens in `order` (raster when `None`): pairs split
/// frame/row/col as Wan (`d − 4·(d/6)`, `2·(d/6)`, `2·(d/6)` real dims), angles in f64.
pub fn rope_tables(
    grid: (usize, usize, usize),
    order: Option<&[u32]>,
    head_dim: usize,
) -> (Vec<f32>, Vec<f32>) {
    let axes = [
        head_dim - 4 * (head_dim / 6),
        2 * (head_dim / 6),
        2 * (head_dim / 6),
    ];
    crate::nn::axes_rope(grid, order, &axes, 10000.0, head_dim / 2)
}

/// `[1, D]` → `[bsz, D]` (the time embedding is shared by the CFG batch).
fn expand<B: Backend>(be: &B, v: &B::Tensor, bsz: usize) -> Result<B::Tensor> {
    let copies: Vec<&B::Tensor> = std::iter::repeat_n(v, bsz).collect();
    Ok(be.cat(&copies, 0)?)
}

impl<B: FusedOps> WanModel<B> {
    /// Load every tensor, under its original Wan name (`blocks.{i}.self_attn.q.weight`, ...) or
    /// diffusers' (detected from the keys, see [`WanKeys::detect`]).
    pub fn load(be: &B, cfg: &WanConfig, src: &dyn WeightSource) -> Result<Self> {
        Self::load_with_progress(be, cfg, src, &mut |_, _| {})
    }

    /// As [`WanModel::load`], calling `progress(done_layers, total_layers)` for long loads.
    pub fn load_with_progress(
        be: &B,
        cfg: &WanConfig,
        src: &dyn WeightSource,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let keys = WanKeys::detect(src);
        Self::from_builder(&VarBuilder::with_keys(be, src, &keys), cfg, progress)
    }

    /// Load from a builder at the model's root (keys as in Wan's `WanModel.state_dict()`).
    pub fn from_builder(
        vb: &VarBuilder<B>,
        cfg: &WanConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let d = cfg.dim;
        let p: usize = cfg.patch_size.iter().product();
        let patch =
            Linear::from_patch_conv(&vb.pp("patch_embedding"), d, cfg.in_dim, &cfg.patch_size)?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            progress(i, cfg.num_layers);
            let vb = vb.pp("blocks").pp(i);
            let norm3 = if cfg.cross_attn_norm {
                let n = LayerNorm::new(&vb.pp("norm3"), d, cfg.eps as f32)?;
                n.w.zip(n.b)
            } else {
                None
            };
            let ca = vb.pp("cross_attn");
            let image_kv = match cfg.image_dim {
                Some(_) => Some(ImageKv {
                    k: Linear::new(&ca.pp("k_img"), d, d)?,
                    v: Linear::new(&ca.pp("v_img"), d, d)?,
                    norm_k: if cfg.qk_norm {
                        Some(RmsNorm::new(&ca.pp("norm_k_img"), d, cfg.eps as f32)?.w)
                    } else {
                        None
                    },
                }),
                None => None,
            };
            blocks.push(Block {
                self_attn: Attention::load(&vb.pp("self_attn"), cfg)?,
                cross_attn: Attention::load(&ca, cfg)?,
                image_kv,
                norm3,
                ffn0: Linear::new(&vb.pp("ffn").pp(0), cfg.ffn_dim, d)?,
                ffn2: Linear::new(&vb.pp("ffn").pp(2), d, cfg.ffn_dim)?,
                modulation: vb.get(&[1, 6, d], "modulation")?,
            });
        }
        progress(cfg.num_layers, cfg.num_layers);
        let (text, time) = (vb.pp("text_embedding"), vb.pp("time_embedding"));
        let image_embed = match cfg.image_dim {
            Some(w) => {
                let p = vb.pp("img_emb").pp("proj");
                // nn.LayerNorm's default eps
                Some(ImageEmbed {
                    norm0: LayerNorm::new(&p.pp(0), w, 1e-5)?,
                    fc1: Linear::new(&p.pp(1), w, w)?,
                    fc3: Linear::new(&p.pp(3), d, w)?,
                    norm4: LayerNorm::new(&p.pp(4), d, 1e-5)?,
                })
            }
            None => None,
        };
        Ok(WanModel {
            image_embed,
            patch,
            text0: Linear::new(&text.pp(0), d, cfg.text_dim)?,
            text2: Linear::new(&text.pp(2), d, d)?,
            time0: Linear::new(&time.pp(0), d, cfg.freq_dim)?,
            time2: Linear::new(&time.pp(2), d, d)?,
            time_proj: Linear::new(&vb.pp("time_projection").pp(1), 6 * d, d)?,
            blocks,
            head: Linear::new(&vb.pp("head").pp("head"), cfg.out_dim * p, d)?,
            head_mod: vb.pp("head").get(&[1, 2, d], "modulation")?,
            cfg: cfg.clone(),
        })
    }

    /// Patch grid of a video of `frames × height × width` (latent units).
    pub fn grid(
        &self,
        frames: usize,
        height: usize,
        width: usize,
    ) -> Result<(usize, usize, usize)> {
        crate::denoiser::patch_grid(self.cfg.patch_size, frames, height, width)
    }

    /// Geometry of a stage: the token order and its RoPE tables (build once per stage).
    pub fn geometry(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
    ) -> Result<Geometry<B>> {
        self.geometry_shard(be, grid, order, None)
    }

    /// [`WanModel::geometry`] for a rank holding only the tokens `shard` (positions in the
    /// stage's order) under sequence parallelism.
    pub fn geometry_shard(
        &self,
        be: &B,
        grid: (usize, usize, usize),
        order: Option<Arc<Vec<u32>>>,
        shard: Option<std::ops::Range<usize>>,
    ) -> Result<Geometry<B>> {
        let l = grid.0 * grid.1 * grid.2;
        crate::denoiser::check_shard(shard.as_ref(), l)?;
        if let Some(o) = &order {
            if o.len() != l {
                return Err(ModelError::Invalid(format!(
                    "token order has {} entries for {l} tokens",
                    o.len()
                )));
            }
        }
        let dh = self.cfg.head_dim();
        let (cos, sin) = rope_tables(grid, order.as_deref().map(|v| v.as_slice()), dh);
        let rows = shard.clone().unwrap_or(0..l);
        let (cos, sin) = crate::nn::upload_rope_rows(be, (&cos, &sin), rows, dh / 2)?;
        Ok(Geometry {
            grid,
            order,
            cos,
            sin,
            shard,
        })
    }

    /// Image-to-video: CLIP features `[B, 257, image_dim]` → image context rows `[B, 257, D]`.
    /// The exact GELU runs on the host (once per generation, 257 × image_dim values: the op
    /// vocabulary has the tanh one only).
    pub fn embed_image(&self, be: &B, clip: &B::Tensor) -> Result<B::Tensor> {
        let Some(m) = &self.image_embed else {
            return Err(ModelError::Invalid(
                "image features given to a text-to-video DiT".into(),
            ));
        };
        let h = m.fc1.fwd(be, &m.norm0.fwd(be, clip)?, Act::None)?;
        let h = crate::nn::gelu_exact_host(be, &h)?;
        m.norm4.fwd(be, &m.fc3.fwd(be, &h, Act::None)?)
    }

    /// The cross-attention context: text rows, after the image rows for image-to-video
    /// (`[B, 257 + text_len, D]`, as Wan concatenates them).
    pub fn embed_context(
        &self,
        be: &B,
        text: &B::Tensor,
        clip: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let t = self.embed_text(be, text)?;
        match (clip, &self.image_embed) {
            (Some(c), Some(_)) => Ok(be.cat(&[&self.embed_image(be, c)?, &t], 1)?),
            (None, None) => Ok(t),
            (None, Some(_)) => Err(ModelError::Invalid(
                "an image-to-video DiT needs the image's CLIP features".into(),
            )),
            (Some(_), None) => Err(ModelError::Invalid(
                "image features given to a text-to-video DiT".into(),
            )),
        }
    }

    /// Text encoder states `[B, text_len, text_dim]` → context `[B, text_len, D]`.
    pub fn embed_text(&self, be: &B, ctx: &B::Tensor) -> Result<B::Tensor> {
        let h = self.text0.fwd(be, ctx, Act::GeluTanh)?;
        self.text2.fwd(be, &h, Act::None)
    }

    /// Time embedding `e` `[1, D]` and projection `e0` `[1, 6, D]` for `t` (= σ·1000).
    pub fn time_embed(&self, be: &B, t: f64) -> Result<(B::Tensor, B::Tensor)> {
        let f = timestep_embedding(t, self.cfg.freq_dim);
        let f = be.upload(&f, &[1, self.cfg.freq_dim])?;
        let e = self
            .time2
            .fwd(be, &self.time0.fwd(be, &f, Act::Silu)?, Act::None)?;
        let e0 = self.time_proj.fwd(be, &be.act(&e, Act::Silu)?, Act::None)?;
        Ok((e.clone(), be.reshape(&e0, &[1, 6, self.cfg.dim])?))
    }

    /// Patchify + embed the video `[B, C, F, H, W]`, gather tokens into the geometry's order,
    /// and prepare the modulation rows for time `t`.
    pub fn embed(&self, be: &B, x: &B::Tensor, t: f64, geom: &Geometry<B>) -> Result<Embedded<B>> {
        let s = x.shape().to_vec();
        if s.len() != 5 || s[1] != self.cfg.in_dim {
            return Err(ModelError::Invalid(format!(
                "input video shape {s:?}, expected [B, {}, F, H, W]",
                self.cfg.in_dim
            )));
        }
        let grid = self.grid(s[2], s[3], s[4])?;
        if grid != geom.grid {
            return Err(ModelError::Invalid(format!(
                "video grid {grid:?} does not match the stage geometry {:?}",
                geom.grid
            )));
        }
        let bsz = s[0];
        // Tokens leave patchify already in the stage's order: no gather pass of their own.
        let mut tokens = be.patchify(
            x,
            self.cfg.patch_size,
            geom.order.as_deref().map(|o| o.as_slice()),
        )?;
        if let Some(r) = &geom.shard {
            // this rank embeds and carries only its share of the sequence
            tokens = be.narrow(&tokens, 1, r.start, r.len())?;
        }
        let h = self.patch.fwd(be, &tokens, Act::None)?;
        let (e, e0) = self.time_embed(be, t)?;
        let d = self.cfg.dim;
        let expand = |v: &B::Tensor| expand(be, &be.reshape(v, &[1, d])?, bsz);
        let mut mods = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let m = be.add_gated(&blk.modulation, &e0, None)?;
            let row = |i: usize| -> Result<B::Tensor> { expand(&be.narrow(&m, 1, i, 1)?) };
            mods.push([row(0)?, row(1)?, row(2)?, row(3)?, row(4)?, row(5)?]);
        }
        Ok(Embedded {
            x: h,
            e: expand(&e)?,
            mods,
        })
    }

    /// The input of block 0's self-attention (`LN(x)·(1+scale1)+shift1`): TeaCache measures
    /// how much it changes between steps to decide which steps to skip.
    pub fn first_block_input(&self, be: &B, emb: &Embedded<B>) -> Result<B::Tensor> {
        let m = &emb.mods[0];
        Ok(be.norm_modulate(&emb.x, &m[0], &m[1], self.cfg.eps as f32)?)
    }

    /// One transformer block.
    #[allow(clippy::too_many_arguments)]
    pub fn block(
        &self,
        be: &B,
        i: usize,
        x: &B::Tensor,
        emb: &Embedded<B>,
        context: &B::Tensor,
        geom: &Geometry<B>,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        let (blk, m) = (&self.blocks[i], &emb.mods[i]);
        let (heads, eps) = (self.cfg.num_heads, self.cfg.eps as f32);
        // self-attention
        let xn = be.norm_modulate(x, &m[0], &m[1], eps)?;
        let sa = &blk.self_attn;
        let ctx = AttnCtx {
            layer: i,
            ..actx.clone()
        };
        // q/k-norm, RoPE, and the block means of q/k when the policy scores blocks (one fused
        // pass where the backend has it).
        let pool = policy.pooled_block(&ctx);
        let rope =
            |lin: &Linear<B>, norm: &Option<B::Tensor>| -> Result<(B::Tensor, Option<B::Tensor>)> {
                let x = sa.project(be, lin, &None, &xn, heads, eps)?;
                let (cos, sin) = (&geom.cos, &geom.sin);
                Ok(match (norm, pool) {
                    (Some(w), _) => be.rms_norm_rope(&x, w, eps, cos, sin, pool)?,
                    (None, Some(m)) => be.rope_pooled(&x, cos, sin, m)?,
                    (None, None) => (be.rope(&x, cos, sin)?, None),
                })
            };
        let (q, qhat) = rope(&sa.q, &sa.norm_q)?;
        let (k, khat) = rope(&sa.k, &sa.norm_k)?;
        let v = sa.project(be, &sa.v, &None, &xn, heads, eps)?;
        // The policy runs the call: its plan, or (SVG) its own per-head token placement too.
        let o = policy.attend(be, &q, &k, &v, qhat.as_ref().zip(khat.as_ref()), &ctx)?;
        // residual, and the cross-attention's input norm in the same pass
        let sa_out = sa.finish(be, &o)?;
        let (x, xn) = match &blk.norm3 {
            Some((w, b)) => {
                be.add_gated_layer_norm(x, &sa_out, Some(&m[2]), Some(w), Some(b), eps)?
            }
            None => {
                let x = be.add_gated(x, &sa_out, Some(&m[2]))?;
                (x.clone(), x)
            }
        };
        // cross-attention on the text context (dense: 16–512 keys); image-to-video also
        // attends to the image rows in front of it with its own keys/values, and adds the two
        let ca = &blk.cross_attn;
        let q = ca.project(be, &ca.q, &ca.norm_q, &xn, heads, eps)?;
        let (text, image) = match &blk.image_kv {
            Some(_) => {
                let n = context.shape()[1];
                let n_img = n
                    .checked_sub(self.cfg.text_len)
                    .filter(|&m| m > 0)
                    .ok_or_else(|| {
                        ModelError::Invalid(format!(
                        "image-to-video context of {n} rows: expected image rows + {} text rows",
                        self.cfg.text_len
                    ))
                    })?;
                (
                    be.narrow(context, 1, n_img, n - n_img)?,
                    Some(be.narrow(context, 1, 0, n_img)?),
                )
            }
            None => (context.clone(), None),
        };
        let k = ca.project(be, &ca.k, &ca.norm_k, &text, heads, eps)?;
        let v = ca.project(be, &ca.v, &None, &text, heads, eps)?;
        let mut o = be.attention(&q, &k, &v, &AttnPlan::Dense, None)?;
        if let (Some(ikv), Some(img)) = (&blk.image_kv, &image) {
            let k = ca.project(be, &ikv.k, &ikv.norm_k, img, heads, eps)?;
            let v = ca.project(be, &ikv.v, &None, img, heads, eps)?;
            let oi = be.attention(&q, &k, &v, &AttnPlan::Dense, None)?;
            o = be.add_gated(&o, &oi, None)?;
        }
        // residual, and the feed-forward's modulated norm in the same pass
        let (x, xn) =
            be.add_gated_norm_modulate(&x, &ca.finish(be, &o)?, None, &m[3], &m[4], eps)?;
        // feed-forward
        let y = blk
            .ffn2
            .fwd(be, &blk.ffn0.fwd(be, &xn, Act::GeluTanh)?, Act::None)?;
        Ok(be.add_gated(&x, &y, Some(&m[5]))?)
    }

    /// All blocks: hidden states `[B, L, D]` in token order.
    pub fn blocks(
        &self,
        be: &B,
        emb: &Embedded<B>,
        context: &B::Tensor,
        geom: &Geometry<B>,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        let mut x = emb.x.clone();
        for i in 0..self.blocks.len() {
            x = self.block(be, i, &x, emb, context, geom, policy, actx)?;
        }
        Ok(x)
    }

    /// Output head + un-permute + unpatchify: hidden `[B, L, D]` (token order) → `[B, C, F, H, W]`.
    pub fn head(
        &self,
        be: &B,
        x: &B::Tensor,
        emb: &Embedded<B>,
        geom: &Geometry<B>,
    ) -> Result<B::Tensor> {
        if geom.shard.is_some() {
            return Err(ModelError::Invalid(
                "the head of a token shard gives tokens: gather them, then unpatchify".into(),
            ));
        }
        let y = self.head_tokens(be, x, emb)?;
        self.unpatchify(be, &y, geom)
    }

    /// The output head per token: hidden `[B, L, D]` → `[B, L, C·pt·ph·pw]` (any token range).
    pub fn head_tokens(&self, be: &B, x: &B::Tensor, emb: &Embedded<B>) -> Result<B::Tensor> {
        let d = self.cfg.dim;
        let bsz = emb.e.shape()[0];
        // head.modulation rows (shift, scale) + e, per sample
        let row = |i: usize| -> Result<B::Tensor> {
            let r = be.reshape(&be.narrow(&self.head_mod, 1, i, 1)?, &[1, d])?;
            Ok(be.add_gated(&expand(be, &r, bsz)?, &emb.e, None)?)
        };
        let (shift, scale) = (row(0)?, row(1)?);
        let xn = be.norm_modulate(x, &shift, &scale, self.cfg.eps as f32)?;
        self.head.fwd(be, &xn, Act::None)
    }

    /// Per-token head outputs of the whole stage `[B, L, C·p]` (token order) → `[B, C, F, H, W]`.
    pub fn unpatchify(&self, be: &B, y: &B::Tensor, geom: &Geometry<B>) -> Result<B::Tensor> {
        let order = geom.order.as_deref().map(|o| o.as_slice());
        Ok(be.unpatchify(y, geom.grid, self.cfg.patch_size, self.cfg.out_dim, order)?)
    }

    /// Full forward: velocity for video `x` `[B, C, F, H, W]` at time `t` (σ·1000).
    #[allow(clippy::too_many_arguments)] // the forward's inputs, each one distinct
    pub fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        t: f64,
        context: &B::Tensor,
        geom: &Geometry<B>,
        policy: &dyn AttentionPolicy<B>,
        actx: &AttnCtx,
    ) -> Result<B::Tensor> {
        let emb = self.embed(be, x, t, geom)?;
        let h = self.blocks(be, &emb, context, geom, policy, actx)?;
        self.head(be, &h, &emb, geom)
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }
}
