//! The HunyuanVideo VAE decoder's layers (diffusers' `HunyuanVideoCausalConv3d`,
//! `HunyuanVideoResnetBlockCausal3D`, the mid block's `Attention`, `HunyuanVideoUpsampleCausal3D`),
//! composed from the [`Backend`] ops. Activations are channels-first `[B, C, F, H, W]`.

use crate::nn::VarBuilder;
use crate::vae::wan::conv::{conv3d, ConvPath, Kernel};
use crate::Result;
use jenga_tensor::{Act, AttnPlan, Backend, CpuBackend, TensorMeta};

/// Every GroupNorm of the VAE (resnets, attention, `conv_norm_out`) uses this eps.
pub const EPS: f32 = 1e-6;

/// `x` with `lo` copies of its first and `hi` copies of its last slice along `dim`
/// (`F.pad(mode="replicate")` on one axis).
fn replicate<B: Backend>(
    be: &B,
    x: &B::Tensor,
    dim: usize,
    lo: usize,
    hi: usize,
) -> Result<B::Tensor> {
    if lo == 0 && hi == 0 {
        return Ok(x.clone());
    }
    let n = x.shape()[dim];
    let first = be.narrow(x, dim, 0, 1)?;
    let last = be.narrow(x, dim, n - 1, 1)?;
    let mut parts: Vec<&B::Tensor> = Vec::with_capacity(lo + hi + 1);
    parts.extend(std::iter::repeat_n(&first, lo));
    parts.push(x);
    parts.extend(std::iter::repeat_n(&last, hi));
    Ok(be.cat(&parts, dim)?)
}

/// `HunyuanVideoCausalConv3d` (stride 1, cubic kernel `k`): replicate padding `k/2` on both
/// sides in space and `k − 1` frames in front in time (copies of the first frame), then the
/// conv without padding. Weight `conv.weight` `[out, in, k, k, k]`, bias `conv.bias`.
pub struct CausalConv<B: Backend> {
    k: Kernel<B>,
    size: usize,
}

impl<B: Backend> CausalConv<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        path: ConvPath,
        inp: usize,
        out: usize,
        size: usize,
    ) -> Result<Self> {
        let c = vb.pp("conv");
        let w = c.get(&[out, inp, size, size, size], "weight")?;
        Ok(CausalConv {
            k: Kernel::new(vb.backend(), w, c.get(&[out], "bias")?, path)?,
            size,
        })
    }

    /// A plain `nn.Conv3d` of kernel 1 (`post_quant_conv`): `weight`/`bias` directly under `vb`.
    pub fn pointwise(vb: &VarBuilder<B>, path: ConvPath, inp: usize, out: usize) -> Result<Self> {
        let w = vb.get(&[out, inp, 1, 1, 1], "weight")?;
        Ok(CausalConv {
            k: Kernel::new(vb.backend(), w, vb.get(&[out], "bias")?, path)?,
            size: 1,
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let (s, p) = (self.size, self.size / 2);
        let x = replicate(be, x, 4, p, p)?;
        let x = replicate(be, &x, 3, p, p)?;
        let x = replicate(be, &x, 2, s - 1, 0)?;
        conv3d(be, &x, &self.k, [1; 3], [0; 3], false)
    }
}

/// `nn.GroupNorm(groups, C, eps=1e-6, affine=True)`: `weight`, `bias` `[C]` under `vb`.
pub struct GroupNorm<B: Backend> {
    w: B::Tensor,
    b: B::Tensor,
    groups: usize,
}

impl<B: Backend> GroupNorm<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize, groups: usize) -> Result<Self> {
        Ok(GroupNorm {
            w: vb.get(&[c], "weight")?,
            b: vb.get(&[c], "bias")?,
            groups,
        })
    }

    /// `[B, C, ...]`.
    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.group_norm(x, self.groups, Some(&self.w), Some(&self.b), EPS)?)
    }

    /// GroupNorm then SiLU.
    pub fn fwd_silu(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.act(&self.fwd(be, x)?, Act::Silu)?)
    }
}

/// `HunyuanVideoResnetBlockCausal3D`: norm1, SiLU, conv1, norm2, SiLU, conv2, plus the
/// residual (through `conv_shortcut`, a 1x1x1 causal conv, when the width changes).
pub struct ResBlock<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: CausalConv<B>,
    norm2: GroupNorm<B>,
    conv2: CausalConv<B>,
    shortcut: Option<CausalConv<B>>,
}

impl<B: Backend> ResBlock<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        path: ConvPath,
        inp: usize,
        out: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(ResBlock {
            norm1: GroupNorm::new(&vb.pp("norm1"), inp, groups)?,
            conv1: CausalConv::new(&vb.pp("conv1"), path, inp, out, 3)?,
            norm2: GroupNorm::new(&vb.pp("norm2"), out, groups)?,
            conv2: CausalConv::new(&vb.pp("conv2"), path, out, out, 3)?,
            shortcut: if inp != out {
                Some(CausalConv::new(&vb.pp("conv_shortcut"), path, inp, out, 1)?)
            } else {
                None
            },
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let y = self.conv1.fwd(be, &self.norm1.fwd_silu(be, x)?)?;
        let y = self.conv2.fwd(be, &self.norm2.fwd_silu(be, &y)?)?;
        let r = match &self.shortcut {
            Some(s) => s.fwd(be, x)?,
            None => x.clone(),
        };
        Ok(be.add_gated(&y, &r, None)?)
    }
}

/// The mid block's `Attention` (one head of width C, GroupNorm in front, residual): over all
/// F·H·W tokens of the clip with diffusers' `prepare_causal_attention_mask` — token i sees
/// token j iff frame(j) ≤ frame(i) — which is computed as it is structured: the queries of
/// frame t attend to the keys of frames 0..=t (no −inf scores are ever formed).
pub struct MidAttention<B: Backend> {
    norm: GroupNorm<B>,
    q: (B::Tensor, B::Tensor),
    k: (B::Tensor, B::Tensor),
    v: (B::Tensor, B::Tensor),
    out: (B::Tensor, B::Tensor),
    c: usize,
}

impl<B: Backend> MidAttention<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize, groups: usize) -> Result<Self> {
        let lin = |name: &str| -> Result<(B::Tensor, B::Tensor)> {
            let l = vb.pp(name);
            Ok((l.get(&[c, c], "weight")?, l.get(&[c], "bias")?))
        };
        Ok(MidAttention {
            norm: GroupNorm::new(&vb.pp("group_norm"), c, groups)?,
            q: lin("to_q")?,
            k: lin("to_k")?,
            v: lin("to_v")?,
            out: lin("to_out.0")?,
            c,
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let s = x.shape().to_vec();
        let (b, c, f, h, w) = (s[0], self.c, s[2], s[3], s[4]);
        let hw = h * w;
        // GroupNorm of the [B, C, N] token view = GroupNorm of the [B, C, F, H, W] video.
        let n = be.patchify(&self.norm.fwd(be, x)?, [1, 1, 1], None)?;
        let proj = |p: &(B::Tensor, B::Tensor)| -> Result<B::Tensor> {
            let y = be.linear(&n, &p.0, Some(&p.1), Act::None)?;
            Ok(be.reshape(&y, &[b, f * hw, 1, c])?)
        };
        let (q, k, v) = (proj(&self.q)?, proj(&self.k)?, proj(&self.v)?);
        let mut parts = Vec::with_capacity(f);
        for t in 0..f {
            let qt = be.narrow(&q, 1, t * hw, hw)?;
            let kt = be.narrow(&k, 1, 0, (t + 1) * hw)?;
            let vt = be.narrow(&v, 1, 0, (t + 1) * hw)?;
            parts.push(attention(be, &qt, &kt, &vt)?);
        }
        let refs: Vec<&B::Tensor> = parts.iter().collect();
        let o = be.reshape(&be.cat(&refs, 1)?, &[b, f * hw, c])?;
        let o = be.linear(&o, &self.out.0, Some(&self.out.1), Act::None)?;
        let o = be.unpatchify(&o, (f, h, w), [1, 1, 1], c, None)?;
        Ok(be.add_gated(&o, x, None)?)
    }
}

/// Dense attention through the backend; where it refuses the head width (the CUDA kernels
/// take Dh ≤ 128, the real VAE's mid attention has Dh = C = 512) it runs on the host's CPU
/// backend, as the Wan VAE does. TODO(gpu): a wide-head kernel instead of the round trip.
fn attention<B: Backend>(be: &B, q: &B::Tensor, k: &B::Tensor, v: &B::Tensor) -> Result<B::Tensor> {
    match be.attention(q, k, v, &AttnPlan::Dense, None) {
        Ok(o) => Ok(o),
        Err(e) if q.shape()[3] <= 128 => Err(e.into()),
        Err(_) => {
            let cpu = CpuBackend::new();
            let up = |t: &B::Tensor| -> Result<_> { Ok(cpu.upload(&be.download(t)?, t.shape())?) };
            let o = cpu.attention(&up(q)?, &up(k)?, &up(v)?, &AttnPlan::Dense, None)?;
            Ok(be.upload(&cpu.download(&o)?, q.shape())?)
        }
    }
}

/// `HunyuanVideoUpsampleCausal3D`: nearest upsampling — the first frame in space only, the
/// others in space and (when `time`) 2x in time, each frame repeated — then a 3x3x3 causal
/// conv (`conv.conv.*`).
pub struct Upsample<B: Backend> {
    conv: CausalConv<B>,
    space: bool,
    time: bool,
}

impl<B: Backend> Upsample<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        path: ConvPath,
        c: usize,
        space: bool,
        time: bool,
    ) -> Result<Self> {
        Ok(Upsample {
            conv: CausalConv::new(&vb.pp("conv"), path, c, c, 3)?,
            space,
            time,
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let f = x.shape()[2];
        let sp = |t: &B::Tensor| -> Result<B::Tensor> {
            if self.space {
                Ok(be.upsample_nearest(t)?)
            } else {
                Ok(t.clone())
            }
        };
        let first = sp(&be.narrow(x, 2, 0, 1)?)?;
        let y = if f > 1 {
            let rest = sp(&be.narrow(x, 2, 1, f - 1)?)?;
            let rest = if self.time {
                let frames: Vec<B::Tensor> = (0..f - 1)
                    .map(|i| be.narrow(&rest, 2, i, 1))
                    .collect::<std::result::Result<_, _>>()?;
                let refs: Vec<&B::Tensor> = frames.iter().flat_map(|t| [t, t]).collect();
                be.cat(&refs, 2)?
            } else {
                rest
            };
            be.cat(&[&first, &rest], 2)?
        } else {
            first
        };
        self.conv.fwd(be, &y)
    }
}
