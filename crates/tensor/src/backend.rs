//! The op vocabulary. It is what the Wan DiT needs and little more: models call only these,
//! so a new backend (CUDA) is a new implementation of this trait and nothing else.
//!
//! Layout conventions (row-major, last dim contiguous):
//! - activations `[B, L, D]`; per-sample vectors (modulation rows) `[B, D]`;
//! - attention inputs `[B, L, H, Dh]` (what a linear's `[B, L, H*Dh]` output already is);
//! - linear weights `[out, in]` (the PyTorch / safetensors layout).

use crate::reference::{self, AttnMask, DType};
use crate::{AttnPlan, Result};

/// Activation fused into a linear (or applied alone with [`Backend::act`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    /// GELU, tanh approximation (Wan's FFN and text embedding).
    GeluTanh,
    Silu,
}

/// Additive bias on attention scores of query rows before `to_query` on keys at or after
/// `from_key` (the Jenga text-attention amplifier: video queries × condition keys, with the
/// condition tokens after the video tokens). Applied to the scaled logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyBias {
    /// First biased key: keys `>= from_key` (in the sequence order the attention op sees) get
    /// `bias`.
    pub from_key: usize,
    /// End of the biased query rows: rows `< to_query` get the bias, rows at or beyond it get
    /// none (the condition-query rows of the Jenga amplifier). `usize::MAX`: every row.
    pub to_query: usize,
    pub bias: f32,
}

impl KeyBias {
    /// Whether query row `i` gets the bias.
    #[inline]
    pub fn on_row(&self, i: usize) -> bool {
        i < self.to_query
    }
}

pub trait TensorMeta {
    fn shape(&self) -> &[usize];
    fn dims(&self) -> usize {
        self.shape().len()
    }
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

pub trait Backend: Send + Sync {
    type Tensor: TensorMeta + Clone + Send + Sync + std::fmt::Debug;

    /// Human-readable device name ("cpu (8 threads)", "cuda:0 NVIDIA H100 ...").
    fn name(&self) -> String;

    /// Copy host f32 data in (converting to the backend's storage type).
    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    /// Copy out as host f32.
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// Same data, new shape (element count must match).
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// `x[.., in] · wᵀ + b`, with `w` `[out, in]`, then `act`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        act: Act,
    ) -> Result<Self::Tensor>;
    fn act(&self, x: &Self::Tensor, act: Act) -> Result<Self::Tensor>;

    /// LayerNorm over the last dim, optional affine.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        w: Option<&Self::Tensor>,
        b: Option<&Self::Tensor>,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// RMSNorm over the last dim with weight.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// `LN(x)·(1 + scale) + shift`: x `[B, L, D]`, shift/scale `[B, D]` (LN without affine).
    fn norm_modulate(
        &self,
        x: &Self::Tensor,
        shift: &Self::Tensor,
        scale: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// `x + gate·y` (x, y `[B, L, D]`, gate `[B, D]`), or `x + y` without gate.
    fn add_gated(
        &self,
        x: &Self::Tensor,
        y: &Self::Tensor,
        gate: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    /// `a·x + b·y`, same shapes.
    fn axpby(&self, a: f32, x: &Self::Tensor, b: f32, y: &Self::Tensor) -> Result<Self::Tensor>;

    /// Rotary embedding on adjacent pairs: x `[B, L, H, Dh]`, cos/sin `[L, Dh/2]` (shared by
    /// heads and batch). Pair i of token l: `(x0, x1) → (x0·c − x1·s, x0·s + x1·c)`.
    fn rope(
        &self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    /// Softmax attention, scale `1/√Dh`: q `[B, Lq, H, Dh]`, k/v `[B, Lk, H, Dh]` →
    /// `[B, Lq, H, Dh]`. A sparse plan computes only its kept (query block, key block) pairs.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        plan: &AttnPlan,
        bias: Option<KeyBias>,
    ) -> Result<Self::Tensor>;

    /// Mean over blocks of `block` tokens: x `[B, L, H, Dh]` → `[B, H, ceil(L/block), Dh]`.
    /// The partial last block is divided by `block` (zero padding counted), as the reference.
    fn block_mean_pool(&self, x: &Self::Tensor, block: usize) -> Result<Self::Tensor>;

    /// Token gather along dim 1: `out[b, i] = x[b, idx[i]]` for x `[B, L, ...]`.
    fn gather_tokens(&self, x: &Self::Tensor, idx: &[u32]) -> Result<Self::Tensor>;
    /// Slice `len` entries of dim `dim` starting at `start`.
    fn narrow(
        &self,
        x: &Self::Tensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Tensor>;
    /// Concatenate along `dim`.
    fn cat(&self, xs: &[&Self::Tensor], dim: usize) -> Result<Self::Tensor>;
    /// Mean of |x| (TeaCache's relative-L1 rule needs it; returns to the host).
    fn mean_abs(&self, x: &Self::Tensor) -> Result<f32>;
    /// Video `[B, C, F, H, W]` → patch tokens `[B, F/pt·H/ph·W/pw, C·pt·ph·pw]`, each token's
    /// vector ordered (c, kt, kh, kw) — a Conv3d with kernel = stride becomes a linear on
    /// these. Tokens come in raster order, or with `order` the k-th token is raster token
    /// `order[k]` (the curve permutation rides on this pass instead of a gather of its own).
    /// The default goes through the host; backends may override.
    fn patchify(
        &self,
        x: &Self::Tensor,
        patch: [usize; 3],
        order: Option<&[u32]>,
    ) -> Result<Self::Tensor> {
        let s = x.shape().to_vec();
        if s.len() != 5 || s[2] % patch[0] != 0 || s[3] % patch[1] != 0 || s[4] % patch[2] != 0 {
            return Err(crate::Error::shape(
                "patchify",
                format!("{s:?} with patch {patch:?}"),
            ));
        }
        let (b, c, f, h, w) = (s[0], s[1], s[2], s[3], s[4]);
        let [pt, ph, pw] = patch;
        let (gf, gh, gw) = (f / pt, h / ph, w / pw);
        check_order("patchify", order, gf * gh * gw)?;
        let host = self.download(x)?;
        let pv = c * pt * ph * pw;
        let mut o = vec![0f32; host.len()];
        for bi in 0..b {
            for k in 0..gf * gh * gw {
                let tok = order.map_or(k, |o| o[k] as usize);
                let (zf, zy, zx) = (tok / (gh * gw), (tok / gw) % gh, tok % gw);
                let dst = &mut o[(bi * gf * gh * gw + k) * pv..][..pv];
                let mut i = 0;
                for ci in 0..c {
                    for kt in 0..pt {
                        for ky in 0..ph {
                            for kx in 0..pw {
                                let (ff, yy, xx) = (zf * pt + kt, zy * ph + ky, zx * pw + kx);
                                dst[i] = host[(((bi * c + ci) * f + ff) * h + yy) * w + xx];
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
        self.upload(&o, &[b, gf * gh * gw, pv])
    }

    /// Inverse of a head's output layout: tokens `[B, gf·gh·gw, pt·ph·pw·C]` (vector ordered
    /// (kt, kh, kw, c), as Wan's `unpatchify`) → video `[B, C, gf·pt, gh·ph, gw·pw]`. With
    /// `order`, the k-th token is raster token `order[k]` (as [`Backend::patchify`] wrote it).
    fn unpatchify(
        &self,
        x: &Self::Tensor,
        grid: (usize, usize, usize),
        patch: [usize; 3],
        channels: usize,
        order: Option<&[u32]>,
    ) -> Result<Self::Tensor> {
        let s = x.shape().to_vec();
        let [pt, ph, pw] = patch;
        let (gf, gh, gw) = grid;
        if s.len() != 3 || s[1] != gf * gh * gw || s[2] != pt * ph * pw * channels {
            return Err(crate::Error::shape(
                "unpatchify",
                format!("{s:?} for grid {grid:?}, patch {patch:?}, {channels} channels"),
            ));
        }
        check_order("unpatchify", order, gf * gh * gw)?;
        let host = self.download(x)?;
        let (b, c) = (s[0], channels);
        let (f, h, w) = (gf * pt, gh * ph, gw * pw);
        let mut o = vec![0f32; host.len()];
        for bi in 0..b {
            for k in 0..gf * gh * gw {
                let tok = order.map_or(k, |o| o[k] as usize);
                let (zf, zy, zx) = (tok / (gh * gw), (tok / gw) % gh, tok % gw);
                let src = &host[(bi * gf * gh * gw + k) * s[2]..][..s[2]];
                let mut i = 0;
                for kt in 0..pt {
                    for ky in 0..ph {
                        for kx in 0..pw {
                            for ci in 0..c {
                                let (ff, yy, xx) = (zf * pt + kt, zy * ph + ky, zx * pw + kx);
                                o[(((bi * c + ci) * f + ff) * h + yy) * w + xx] = src[i];
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
        self.upload(&o, &[b, c, f, h, w])
    }

    /// The element type this backend stores tensors as.
    fn storage_dtype(&self) -> DType {
        DType::F32
    }

    /// Copy raw little-endian `dtype` bytes in (a checkpoint tensor as stored). The default
    /// converts on the host; a backend storing `dtype` takes the bytes as they are.
    fn upload_raw(&self, bytes: &[u8], dtype: DType, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload(&reference::bytes_to_f32(bytes, dtype)?, shape)
    }

    /// Copy out as little-endian `dtype` bytes.
    fn download_raw(&self, t: &Self::Tensor, dtype: DType) -> Result<Vec<u8>> {
        Ok(reference::f32_to_bytes(&self.download(t)?, dtype))
    }

    /// Rows of `table` `[V, D]` picked by `ids` → `[ids.len(), D]` (a token-embedding lookup).
    fn embedding(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor> {
        let s = table.shape().to_vec();
        if s.len() != 2 {
            return Err(crate::Error::shape(
                "embedding",
                format!("table {s:?} (expected [V, D])"),
            ));
        }
        let t = self.reshape(table, &[1, s[0], s[1]])?;
        let g = self.gather_tokens(&t, ids)?;
        self.reshape(&g, &[ids.len(), s[1]])
    }

    /// 3D convolution: x `[B, Cin, F, H, W]`, w `[Cout, Cin, kt, kh, kw]`, optional bias
    /// `[Cout]` → `[B, Cout, Fo, Ho, Wo]`. `padding` is zeros on both sides of each axis, except
    /// that with `causal` the time axis gets `2·padding[0]` frames in front and none behind
    /// (Wan's VAE `CausalConv3d`). The default runs im2col on the host and the product through
    /// [`Backend::linear`].
    #[allow(clippy::too_many_arguments)]
    fn conv3d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        stride: [usize; 3],
        padding: [usize; 3],
        causal: bool,
    ) -> Result<Self::Tensor> {
        let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
        let (out, front) = reference::conv3d_geometry(&xs, &ws, stride, padding, causal)?;
        let host = self.download(x)?;
        let k = [ws[2], ws[3], ws[4]];
        let pad = [front, padding[1], padding[2]];
        let cols = reference::im2col3d(&host, &xs, k, out, stride, pad);
        let (rows, kk) = (
            xs[0] * out.iter().product::<usize>(),
            ws[1] * k.iter().product::<usize>(),
        );
        let cols = self.upload(&cols, &[rows, kk])?;
        let wf = self.reshape(w, &[ws[0], kk])?;
        let y = self.download(&self.linear(&cols, &wf, b, Act::None)?)?;
        let sp = out.iter().product::<usize>();
        let y = reference::rows_to_channels_first(&y, xs[0], ws[0], sp);
        self.upload(&y, &[xs[0], ws[0], out[0], out[1], out[2]])
    }

    /// GroupNorm: x `[B, C, ...]`, `groups` dividing C, optional per-channel affine `[C]`.
    /// The default runs on the host.
    fn group_norm(
        &self,
        x: &Self::Tensor,
        groups: usize,
        w: Option<&Self::Tensor>,
        b: Option<&Self::Tensor>,
        eps: f32,
    ) -> Result<Self::Tensor> {
        let w = w.map(|t| self.download(t)).transpose()?;
        let b = b.map(|t| self.download(t)).transpose()?;
        let y = reference::group_norm(
            &self.download(x)?,
            x.shape(),
            groups,
            w.as_deref(),
            b.as_deref(),
            eps,
        )?;
        self.upload(&y, x.shape())
    }

    /// Nearest-neighbour 2x upsampling of the last two (spatial) dims (rank ≥ 3). The default
    /// runs on the host.
    fn upsample_nearest(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        let (y, s) = reference::upsample_nearest2x(&self.download(x)?, x.shape())?;
        self.upload(&y, &s)
    }

    /// Dense attention with a mask (see [`AttnMask`]); [`AttnMask::None`] is
    /// [`Backend::attention`] with a dense plan. The default runs masked calls on the host.
    fn attention_masked(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        mask: &AttnMask,
        bias: Option<KeyBias>,
    ) -> Result<Self::Tensor> {
        if *mask == AttnMask::None {
            return self.attention(q, k, v, &AttnPlan::Dense, bias);
        }
        let (qs, ks) = (q.shape().to_vec(), k.shape().to_vec());
        if qs.len() != 4
            || ks.len() != 4
            || v.shape() != ks.as_slice()
            || ks[0] != qs[0]
            || ks[2] != qs[2]
            || ks[3] != qs[3]
        {
            return Err(crate::Error::shape(
                "attention_masked",
                format!("q {qs:?}, k {ks:?}, v {:?}", v.shape()),
            ));
        }
        let o = reference::attention_masked(
            &self.download(q)?,
            &self.download(k)?,
            &self.download(v)?,
            &qs,
            ks[1],
            mask,
            bias,
        )?;
        self.upload(&o, &qs)
    }

    /// Dense softmax attention with a per-head additive score bias and an explicit scale:
    /// `softmax(scale·q·kᵀ + bias[h])·v`, q `[B, Lq, H, Dh]`, k/v `[B, Lk, H, Dh]`, bias
    /// `[H, Lq, Lk]` (shared by the batch) → `[B, Lq, H, Dh]`. T5/umT5's relative-position
    /// self-attention (scale 1: T5 does not scale the scores). The default runs on the host
    /// ([`reference::attention_biased`], f64 accumulation); it is the CPU backend's
    /// implementation, and a device backend should override it with a kernel.
    fn attention_biased(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        bias: &Self::Tensor,
        scale: f32,
    ) -> Result<Self::Tensor> {
        let (qs, ks) = (q.shape().to_vec(), k.shape().to_vec());
        if qs.len() != 4
            || ks.len() != 4
            || v.shape() != ks.as_slice()
            || ks[0] != qs[0]
            || ks[2] != qs[2]
            || ks[3] != qs[3]
            || bias.shape() != [qs[2], qs[1], ks[1]]
        {
            return Err(crate::Error::shape(
                "attention_biased",
                format!(
                    "q {qs:?}, k {ks:?}, v {:?}, bias {:?} (expected [H, Lq, Lk])",
                    v.shape(),
                    bias.shape()
                ),
            ));
        }
        let o = reference::attention_biased(
            &self.download(q)?,
            &self.download(k)?,
            &self.download(v)?,
            &self.download(bias)?,
            &qs,
            ks[1],
            scale,
        )?;
        self.upload(&o, &qs)
    }

    /// Wait for queued work (for timing); a no-op on the CPU.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// A token order for [`Backend::patchify`]/[`Backend::unpatchify`] must be a permutation of
/// `0..tokens`.
pub fn check_order(op: &'static str, order: Option<&[u32]>, tokens: usize) -> Result<()> {
    let Some(o) = order else { return Ok(()) };
    let mut seen = vec![false; tokens];
    let ok = o.len() == tokens
        && o.iter().all(|&i| {
            let i = i as usize;
            i < tokens && !std::mem::replace(&mut seen[i], true)
        });
    if ok {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            op,
            format!(
                "token order of {} entries is not a permutation of {tokens} tokens",
                o.len()
            ),
        ))
    }
}
