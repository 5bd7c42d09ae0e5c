//! The Wan VAE's layers (diffusers' `WanCausalConv3d`, `WanRMS_norm`, `WanResidualBlock`,
//! `WanAttentionBlock`, `WanResample`) and the causal feature cache that lets the video run
//! chunk by chunk in time. Activations are channels-first `[B, C, F, H, W]`.

use super::conv::{conv3d, zeros_along, ConvPath, Kernel};
use crate::nn::VarBuilder;
use crate::Result;
use jenga_tensor::{Act, AttnPlan, Backend, CpuBackend, TensorMeta};

/// Frames a causal conv keeps from the previous chunk (diffusers' `CACHE_T`).
const CACHE_T: usize = 2;

/// One cache entry per causal conv, in call order (diffusers' `feat_cache` list).
pub enum Slot<T> {
    Empty,
    /// An `upsample3d` that has seen its first chunk (diffusers' `"Rep"` marker).
    Rep,
    Frames(T),
}

/// The feature cache of one encode or decode pass over a video.
pub struct Cache<T> {
    slots: Vec<Slot<T>>,
    idx: usize,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            slots: Vec::new(),
            idx: 0,
        }
    }
}

impl<T> Cache<T> {
    /// Back to the first conv, for the next chunk.
    pub fn next_chunk(&mut self) {
        self.idx = 0;
    }
    fn slot(&mut self) -> &mut Slot<T> {
        if self.idx == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        self.idx += 1;
        &mut self.slots[self.idx - 1]
    }
}

fn frames<B: Backend>(be: &B, x: &B::Tensor, start: usize, len: usize) -> Result<B::Tensor> {
    Ok(be.narrow(x, 2, start, len)?)
}

fn last_frames<B: Backend>(be: &B, x: &B::Tensor, n: usize) -> Result<B::Tensor> {
    let t = x.shape()[2];
    let n = n.min(t);
    frames(be, x, t - n, n)
}

/// `WanCausalConv3d`: zero padding in space, `2·pad_t` frames in front in time, of which the
/// previous chunk's cached frames take the place of as many zeros.
pub struct CausalConv<B: Backend> {
    k: Kernel<B>,
    stride: [usize; 3],
    pad: [usize; 3],
}

impl<B: Backend> CausalConv<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder<B>,
        path: ConvPath,
        inp: usize,
        out: usize,
        k: [usize; 3],
        stride: [usize; 3],
        pad: [usize; 3],
    ) -> Result<Self> {
        let w = vb.get(&[out, inp, k[0], k[1], k[2]], "weight")?;
        Ok(CausalConv {
            k: Kernel::new(vb.backend(), w, vb.get(&[out], "bias")?, path)?,
            stride,
            pad,
        })
    }

    /// 3x3x3, padding 1 (most of the VAE's convs).
    pub fn k3(vb: &VarBuilder<B>, path: ConvPath, inp: usize, out: usize) -> Result<Self> {
        Self::new(vb, path, inp, out, [3; 3], [1; 3], [1; 3])
    }

    /// 1x1x1 (shortcuts, quant convs).
    pub fn k1(vb: &VarBuilder<B>, path: ConvPath, inp: usize, out: usize) -> Result<Self> {
        Self::new(vb, path, inp, out, [1; 3], [1; 3], [0; 3])
    }

    /// A `Conv2d` (weight `[out, in, kh, kw]`) run per frame as a conv3d of time kernel 1.
    pub fn conv2d(
        vb: &VarBuilder<B>,
        path: ConvPath,
        inp: usize,
        out: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let w = vb.get_as(&[out, inp, 3, 3], "weight", &[out, inp, 1, 3, 3])?;
        Ok(CausalConv {
            k: Kernel::new(vb.backend(), w, vb.get(&[out], "bias")?, path)?,
            stride: [1, stride, stride],
            pad: [0, pad, pad],
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor, cache: Option<&B::Tensor>) -> Result<B::Tensor> {
        let front = 2 * self.pad[0];
        let cached = match cache {
            Some(c) if front > 0 => c,
            _ => return conv3d(be, x, &self.k, self.stride, self.pad, true),
        };
        let n = cached.shape()[2].min(front);
        let c = last_frames(be, cached, n)?;
        let x = if front > n {
            let z = zeros_along(be, x, 2, front - n)?;
            be.cat(&[&z, &c, x], 2)?
        } else {
            be.cat(&[&c, x], 2)?
        };
        let pad = [0, self.pad[1], self.pad[2]];
        conv3d(be, &x, &self.k, self.stride, pad, false)
    }

    /// The conv with its cache slot, as every cached call site of the reference does: the
    /// slot keeps the input's last two frames (topped up with the previous chunk's last frame
    /// when this chunk has one).
    pub fn fwd_cached(
        &self,
        be: &B,
        x: &B::Tensor,
        cache: &mut Cache<B::Tensor>,
    ) -> Result<B::Tensor> {
        let slot = cache.slot();
        let mut keep = last_frames(be, x, CACHE_T)?;
        let prev = match slot {
            Slot::Frames(p) => Some(&*p),
            _ => None,
        };
        if keep.shape()[2] < CACHE_T {
            if let Some(p) = prev {
                keep = be.cat(&[&last_frames(be, p, 1)?, &keep], 2)?;
            }
        }
        let y = self.fwd(be, x, prev)?;
        *slot = Slot::Frames(keep);
        Ok(y)
    }
}

/// `WanRMS_norm` over channels: `x / ‖x‖₂ · √C · γ` at every position, as an RMS norm of the
/// channels-last view (`F.normalize`'s `max(‖x‖, 1e-12)` becomes the tiny eps).
pub struct ChannelRms<B: Backend> {
    gamma: B::Tensor,
}

const RMS_EPS: f32 = 1e-24;

impl<B: Backend> ChannelRms<B> {
    /// `gamma` stored `[C, 1, 1, 1]` (`images`: `[C, 1, 1]`).
    pub fn new(vb: &VarBuilder<B>, c: usize, images: bool) -> Result<Self> {
        let stored: &[usize] = if images { &[c, 1, 1] } else { &[c, 1, 1, 1] };
        Ok(ChannelRms {
            gamma: vb.get_as(stored, "gamma", &[c])?,
        })
    }

    /// Channels-last tokens `[.., C]`.
    pub fn fwd_last(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.rms_norm(x, &self.gamma, RMS_EPS)?)
    }

    /// `[B, C, F, H, W]`.
    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let s = x.shape().to_vec();
        let t = be.patchify(x, [1, 1, 1], None)?;
        let t = self.fwd_last(be, &t)?;
        Ok(be.unpatchify(&t, (s[2], s[3], s[4]), [1, 1, 1], s[1], None)?)
    }
}

/// `WanResidualBlock`: norm, SiLU, conv, norm, SiLU, conv, plus the (1x1x1 conv) shortcut.
pub struct ResBlock<B: Backend> {
    norm1: ChannelRms<B>,
    conv1: CausalConv<B>,
    norm2: ChannelRms<B>,
    conv2: CausalConv<B>,
    shortcut: Option<CausalConv<B>>,
}

impl<B: Backend> ResBlock<B> {
    pub fn new(vb: &VarBuilder<B>, path: ConvPath, inp: usize, out: usize) -> Result<Self> {
        let r = vb.pp("residual");
        Ok(ResBlock {
            norm1: ChannelRms::new(&r.pp(0), inp, false)?,
            conv1: CausalConv::k3(&r.pp(2), path, inp, out)?,
            norm2: ChannelRms::new(&r.pp(3), out, false)?,
            conv2: CausalConv::k3(&r.pp(6), path, out, out)?,
            shortcut: if inp != out {
                Some(CausalConv::k1(&vb.pp("shortcut"), path, inp, out)?)
            } else {
                None
            },
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor, cache: &mut Cache<B::Tensor>) -> Result<B::Tensor> {
        let h = match &self.shortcut {
            Some(s) => s.fwd(be, x, None)?,
            None => x.clone(),
        };
        let y = be.act(&self.norm1.fwd(be, x)?, Act::Silu)?;
        let y = self.conv1.fwd_cached(be, &y, cache)?;
        let y = be.act(&self.norm2.fwd(be, &y)?, Act::Silu)?;
        let y = self.conv2.fwd_cached(be, &y, cache)?;
        Ok(be.add_gated(&y, &h, None)?)
    }
}

/// `WanAttentionBlock`: one head of width C over the positions of each frame.
pub struct AttnBlock<B: Backend> {
    norm: ChannelRms<B>,
    qkv_w: B::Tensor,
    qkv_b: B::Tensor,
    proj_w: B::Tensor,
    proj_b: B::Tensor,
    c: usize,
}

impl<B: Backend> AttnBlock<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize) -> Result<Self> {
        Ok(AttnBlock {
            norm: ChannelRms::new(&vb.pp("norm"), c, true)?,
            qkv_w: vb.get_as(&[3 * c, c, 1, 1], "to_qkv.weight", &[3 * c, c])?,
            qkv_b: vb.get(&[3 * c], "to_qkv.bias")?,
            proj_w: vb.get_as(&[c, c, 1, 1], "proj.weight", &[c, c])?,
            proj_b: vb.get(&[c], "proj.bias")?,
            c,
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let s = x.shape().to_vec();
        let (b, c, t, hw) = (s[0], self.c, s[2], s[3] * s[4]);
        let tok = be.patchify(x, [1, 1, 1], None)?;
        let tok = be.reshape(&tok, &[b * t, hw, c])?;
        let n = self.norm.fwd_last(be, &tok)?;
        let qkv = be.linear(&n, &self.qkv_w, Some(&self.qkv_b), Act::None)?;
        let part = |i: usize| -> Result<B::Tensor> {
            let p = be.narrow(&qkv, 2, i * c, c)?;
            Ok(be.reshape(&p, &[b * t, hw, 1, c])?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let o = attention(be, &q, &k, &v)?;
        let o = be.reshape(&o, &[b * t, hw, c])?;
        let o = be.linear(&o, &self.proj_w, Some(&self.proj_b), Act::None)?;
        let o = be.reshape(&o, &[b, t * hw, c])?;
        let o = be.unpatchify(&o, (t, s[3], s[4]), [1, 1, 1], c, None)?;
        Ok(be.add_gated(&o, x, None)?)
    }
}

/// Dense attention through the backend; where it refuses the head width (the CUDA kernels
/// take Dh ≤ 128, the VAE's middle attention has Dh = C = 384) it runs on the host's CPU
/// backend. TODO(gpu): a wide-head (or softmax) kernel instead of the host round trip.
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

/// `WanResample`'s modes (`none` is never built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up2d,
    Up3d,
    Down2d,
    Down3d,
}

/// `WanResample`: 2x nearest upsampling + 3x3 conv (halving the channels), or zero padding
/// right/bottom + 3x3 conv of stride 2; the 3d modes add a causal time conv (upsampling: one
/// conv making two frames of each; downsampling: stride 2 in time).
pub struct Resample<B: Backend> {
    mode: Mode,
    conv: CausalConv<B>,
    time: Option<CausalConv<B>>,
    c: usize,
}

impl<B: Backend> Resample<B> {
    /// Upsampling: `c` → `c / 2` channels; downsampling keeps `c`.
    pub fn new(vb: &VarBuilder<B>, path: ConvPath, c: usize, mode: Mode) -> Result<Self> {
        let conv = vb.pp("resample").pp(1);
        let tc = vb.pp("time_conv");
        let (conv, time) = match mode {
            Mode::Up2d => (CausalConv::conv2d(&conv, path, c, c / 2, 1, 1)?, None),
            Mode::Up3d => (
                CausalConv::conv2d(&conv, path, c, c / 2, 1, 1)?,
                Some(CausalConv::new(
                    &tc,
                    path,
                    c,
                    2 * c,
                    [3, 1, 1],
                    [1; 3],
                    [1, 0, 0],
                )?),
            ),
            Mode::Down2d => (CausalConv::conv2d(&conv, path, c, c, 2, 0)?, None),
            Mode::Down3d => (
                CausalConv::conv2d(&conv, path, c, c, 2, 0)?,
                Some(CausalConv::new(
                    &tc,
                    path,
                    c,
                    c,
                    [3, 1, 1],
                    [2, 1, 1],
                    [0; 3],
                )?),
            ),
        };
        Ok(Resample {
            mode,
            conv,
            time,
            c,
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor, cache: &mut Cache<B::Tensor>) -> Result<B::Tensor> {
        let mut x = x.clone();
        if let (Mode::Up3d, Some(tc)) = (self.mode, &self.time) {
            x = self.time_up(be, tc, &x, cache)?;
        }
        x = match self.mode {
            Mode::Up2d | Mode::Up3d => {
                let u = be.upsample_nearest(&x)?;
                self.conv.fwd(be, &u, None)?
            }
            Mode::Down2d | Mode::Down3d => {
                // nn.ZeroPad2d((0, 1, 0, 1)): one zero column right, one zero row below.
                let zc = zeros_along(be, &x, 4, 1)?;
                let p = be.cat(&[&x, &zc], 4)?;
                let zr = zeros_along(be, &p, 3, 1)?;
                let p = be.cat(&[&p, &zr], 3)?;
                self.conv.fwd(be, &p, None)?
            }
        };
        if let (Mode::Down3d, Some(tc)) = (self.mode, &self.time) {
            let slot = cache.slot();
            let keep = last_frames(be, &x, 1)?;
            if let Slot::Frames(prev) = slot {
                let inp = be.cat(&[&*prev, &x], 2)?;
                x = tc.fwd(be, &inp, None)?;
            }
            // The first chunk (one frame) passes unchanged; later ones see its last frame.
            *slot = Slot::Frames(keep);
        }
        Ok(x)
    }

    /// Time upsampling: the first chunk passes (one frame stays one frame); each later frame
    /// becomes two (the conv's two channel halves, interleaved in time).
    fn time_up(
        &self,
        be: &B,
        tc: &CausalConv<B>,
        x: &B::Tensor,
        cache: &mut Cache<B::Tensor>,
    ) -> Result<B::Tensor> {
        let slot = cache.slot();
        let prev = match slot {
            Slot::Empty => {
                *slot = Slot::Rep;
                return Ok(x.clone());
            }
            Slot::Rep => None,
            Slot::Frames(p) => Some(&*p),
        };
        let mut keep = last_frames(be, x, CACHE_T)?;
        if keep.shape()[2] < CACHE_T {
            let before = match prev {
                Some(p) => last_frames(be, p, 1)?,
                None => zeros_along(be, &keep, 2, 1)?,
            };
            keep = be.cat(&[&before, &keep], 2)?;
        }
        let y = tc.fwd(be, x, prev)?;
        *slot = Slot::Frames(keep);
        let (c, t) = (self.c, x.shape()[2]);
        let (a, b) = (be.narrow(&y, 1, 0, c)?, be.narrow(&y, 1, c, c)?);
        let mut parts = Vec::with_capacity(2 * t);
        for i in 0..t {
            parts.push(frames(be, &a, i, 1)?);
            parts.push(frames(be, &b, i, 1)?);
        }
        let refs: Vec<&B::Tensor> = parts.iter().collect();
        Ok(be.cat(&refs, 2)?)
    }
}
