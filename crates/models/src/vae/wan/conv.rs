//! The VAE's one convolution entry point, with two paths:
//!
//! - [`ConvPath::Backend`]: the backend's `conv3d` (its default: im2col on the host, then the
//!   backend's GEMM — on the CPU the `gemm` crate);
//! - [`ConvPath::Taps`]: on the device, a sum of GEMMs over the kernel's (time, row) taps on
//!   the channels-last activation, the three column taps folded into the GEMM's inner
//!   dimension (`K = kw·Cin`): no host round trip and 3x the activation in scratch instead of
//!   im2col's 27x. Stride-1 convs only (the strided ones, encoder-only, take the backend's).
//!
//! A cuDNN conv would replace both here.

use crate::Result;
use jenga_tensor::{Act, Backend, TensorMeta};

/// Which implementation runs the VAE's convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    Backend,
    Taps,
}

impl ConvPath {
    /// Taps on every backend: on CUDA the backend's `conv3d` goes through the host, and on
    /// the CPU taps measured faster too (full-width Wan2.1 VAE, latent 2x4x4, 2 threads:
    /// 2.6 s against 3.8 s for im2col + `gemm`).
    pub fn auto<B: Backend>(_be: &B) -> ConvPath {
        ConvPath::Taps
    }
}

/// A conv kernel, as loaded (`w` `[Cout, Cin, kt, kh, kw]`) and, for [`ConvPath::Taps`], as
/// `kt·kh` matrices `[Cout, kw·Cin]` (column `dx·Cin + c`).
pub struct Kernel<B: Backend> {
    pub w: B::Tensor,
    pub b: B::Tensor,
    taps: Option<Vec<B::Tensor>>,
}

impl<B: Backend> Kernel<B> {
    pub fn new(be: &B, w: B::Tensor, b: B::Tensor, path: ConvPath) -> Result<Self> {
        let taps = match path {
            ConvPath::Backend => None,
            ConvPath::Taps => {
                let s = w.shape().to_vec();
                let (co, ci, kt, kh, kw) = (s[0], s[1], s[2], s[3], s[4]);
                let host = be.download(&w)?;
                let mut taps = Vec::with_capacity(kt * kh);
                for a in 0..kt {
                    for dy in 0..kh {
                        let mut m = vec![0f32; co * kw * ci];
                        for o in 0..co {
                            for c in 0..ci {
                                for dx in 0..kw {
                                    m[o * kw * ci + dx * ci + c] =
                                        host[(((o * ci + c) * kt + a) * kh + dy) * kw + dx];
                                }
                            }
                        }
                        taps.push(be.upload(&m, &[co, kw * ci])?);
                    }
                }
                Some(taps)
            }
        };
        Ok(Kernel { w, b, taps })
    }
}

/// Zeros shaped as `x` with `dim` of size `len`.
pub fn zeros_along<B: Backend>(be: &B, x: &B::Tensor, dim: usize, len: usize) -> Result<B::Tensor> {
    let mut s = x.shape().to_vec();
    s[dim] = len;
    Ok(be.upload(&vec![0f32; s.iter().product()], &s)?)
}

/// `x` with `lo` zeros before and `hi` after along `dim`.
fn pad<B: Backend>(be: &B, x: &B::Tensor, dim: usize, lo: usize, hi: usize) -> Result<B::Tensor> {
    if lo == 0 && hi == 0 {
        return Ok(x.clone());
    }
    let (zl, zh) = (zeros_along(be, x, dim, lo)?, zeros_along(be, x, dim, hi)?);
    let mut parts = Vec::with_capacity(3);
    if lo > 0 {
        parts.push(&zl);
    }
    parts.push(x);
    if hi > 0 {
        parts.push(&zh);
    }
    Ok(be.cat(&parts, dim)?)
}

/// Every convolution of the VAE: x `[B, Cin, F, H, W]` → `[B, Cout, Fo, Ho, Wo]`, zero
/// padding `padding` (time: `2·padding[0]` in front when `causal`, as `Backend::conv3d`).
pub fn conv3d<B: Backend>(
    be: &B,
    x: &B::Tensor,
    k: &Kernel<B>,
    stride: [usize; 3],
    padding: [usize; 3],
    causal: bool,
) -> Result<B::Tensor> {
    match &k.taps {
        Some(taps) if stride == [1, 1, 1] => conv_taps(be, x, k, taps, padding, causal),
        _ => Ok(be.conv3d(x, &k.w, Some(&k.b), stride, padding, causal)?),
    }
}

fn conv_taps<B: Backend>(
    be: &B,
    x: &B::Tensor,
    k: &Kernel<B>,
    taps: &[B::Tensor],
    padding: [usize; 3],
    causal: bool,
) -> Result<B::Tensor> {
    let (xs, ws) = (x.shape().to_vec(), k.w.shape().to_vec());
    let (out, front) = jenga_tensor::reference::conv3d_geometry(&xs, &ws, [1; 3], padding, causal)?;
    let (b, c, f, h, w) = (xs[0], xs[1], xs[2], xs[3], xs[4]);
    let (co, kt, kh, kw) = (ws[0], ws[2], ws[3], ws[4]);
    let [fo, ho, wo] = out;
    // Channels last: [B, F, H, W, C], padded.
    let t = be.patchify(x, [1, 1, 1], None)?;
    let t = be.reshape(&t, &[b, f, h, w, c])?;
    let back = if causal { 0 } else { padding[0] };
    let t = pad(be, &t, 1, front, back)?;
    let t = pad(be, &t, 2, padding[1], padding[1])?;
    let t = pad(be, &t, 3, padding[2], padding[2])?;
    // The kw column taps side by side in the channel dim: [B, Fp, Hp, Wo, kw·C].
    let cols = if kw == 1 {
        t
    } else {
        let parts: Vec<B::Tensor> = (0..kw)
            .map(|dx| be.narrow(&t, 3, dx, wo))
            .collect::<std::result::Result<_, _>>()?;
        let refs: Vec<&B::Tensor> = parts.iter().collect();
        be.cat(&refs, 4)?
    };
    let mut acc: Option<B::Tensor> = None;
    for a in 0..kt {
        let fa = be.narrow(&cols, 1, a, fo)?;
        for dy in 0..kh {
            let win = be.narrow(&fa, 2, dy, ho)?;
            let tap = &taps[a * kh + dy];
            acc = Some(match acc {
                None => be.linear(&win, tap, Some(&k.b), Act::None)?,
                Some(s) => {
                    let y = be.linear(&win, tap, None, Act::None)?;
                    be.add_gated(&s, &y, None)?
                }
            });
        }
    }
    let acc = acc.ok_or_else(|| crate::ModelError::Invalid("conv3d: empty kernel".into()))?;
    let acc = be.reshape(&acc, &[b, fo * ho * wo, co])?;
    Ok(be.unpatchify(&acc, (fo, ho, wo), [1, 1, 1], co, None)?)
}
