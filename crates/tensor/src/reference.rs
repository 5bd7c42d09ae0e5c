//! Host (f32) reference code for the primitives the VAE and text encoder need, by family. The
//! [`crate::Backend`] defaults run these on downloaded data; the CPU backend takes those
//! defaults as its implementation, and device backends are checked against them.

use crate::{Error, KeyBias, Result};

/// Element types a tensor may be stored or transferred as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

// --- transfer ---

/// Little-endian `bytes` of `dtype` → f32 values.
pub fn bytes_to_f32(bytes: &[u8], dtype: DType) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(dtype.size()) {
        return Err(Error::invalid(
            "upload_raw",
            format!("{} bytes is not a whole number of {dtype:?}", bytes.len()),
        ));
    }
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    })
}

/// f32 values → little-endian bytes of `dtype` (round to nearest even).
pub fn f32_to_bytes(v: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| f32_to_bf16_bits(x).to_le_bytes())
            .collect(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| f32_to_f16_bits(x).to_le_bytes())
            .collect(),
    }
}

fn f32_to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn f16_to_f32(h: u16) -> f32 {
    let s = ((h as u32) & 0x8000) << 16;
    let e = ((h >> 10) & 0x1f) as u32;
    let m = (h & 0x3ff) as u32;
    let bits = match (e, m) {
        (0, 0) => s,
        (0, m) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            s | (e << 23) | ((m & 0x3ff) << 13)
        }
        (31, 0) => s | 0x7f80_0000,
        (31, m) => s | 0x7f80_0000 | (m << 13),
        (e, m) => s | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

fn f32_to_f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let s = ((b >> 16) & 0x8000) as u16;
    let e = ((b >> 23) & 0xff) as i32;
    let m = b & 0x7f_ffff;
    if e == 255 {
        return s | 0x7c00 | if m != 0 { 0x200 } else { 0 };
    }
    let e16 = e - 127 + 15;
    if e16 >= 31 {
        return s | 0x7c00;
    }
    if e16 <= 0 {
        if e16 < -10 {
            return s;
        }
        let m = m | 0x80_0000;
        let shift = (14 - e16) as u32;
        let half = 1u32 << (shift - 1);
        let r = m & ((1 << shift) - 1);
        let mut v = m >> shift;
        if r > half || (r == half && v & 1 == 1) {
            v += 1;
        }
        return s | v as u16;
    }
    let mut v = ((e16 as u32) << 10) | (m >> 13);
    let r = m & 0x1fff;
    if r > 0x1000 || (r == 0x1000 && v & 1 == 1) {
        v += 1;
    }
    s | v as u16
}

// --- conv ---

/// Temporal padding of a [`crate::Backend::conv3d`]: `(front, back)` frames.
pub fn conv_time_pad(pad_t: usize, causal: bool) -> (usize, usize) {
    if causal {
        (2 * pad_t, 0)
    } else {
        (pad_t, pad_t)
    }
}

/// Output extent of a conv axis, `None` if the kernel does not fit.
fn conv_out(n: usize, lo: usize, hi: usize, k: usize, stride: usize) -> Option<usize> {
    let padded = n + lo + hi;
    (stride > 0 && k > 0 && padded >= k).then(|| (padded - k) / stride + 1)
}

/// Geometry of a conv3d call: `(out [F, H, W], time pad front)`, checked.
pub fn conv3d_geometry(
    x: &[usize],
    w: &[usize],
    stride: [usize; 3],
    padding: [usize; 3],
    causal: bool,
) -> Result<([usize; 3], usize)> {
    let bad = || {
        Error::shape(
            "conv3d",
            format!("x {x:?}, w {w:?}, stride {stride:?}, padding {padding:?}"),
        )
    };
    if x.len() != 5 || w.len() != 5 || w[1] != x[1] {
        return Err(bad());
    }
    let (tf, tb) = conv_time_pad(padding[0], causal);
    let fo = conv_out(x[2], tf, tb, w[2], stride[0]).ok_or_else(bad)?;
    let ho = conv_out(x[3], padding[1], padding[1], w[3], stride[1]).ok_or_else(bad)?;
    let wo = conv_out(x[4], padding[2], padding[2], w[4], stride[2]).ok_or_else(bad)?;
    Ok(([fo, ho, wo], tf))
}

/// im2col of x `[B, C, F, H, W]`: rows (b, fo, ho, wo), columns (c, kt, kh, kw), zeros where
/// the window leaves x.
pub fn im2col3d(
    x: &[f32],
    xs: &[usize],
    k: [usize; 3],
    out: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
) -> Vec<f32> {
    let (b, c, f, h, w) = (xs[0], xs[1], xs[2], xs[3], xs[4]);
    let [kt, kh, kw] = k;
    let [fo, ho, wo] = out;
    let cols = c * kt * kh * kw;
    let mut o = vec![0f32; b * fo * ho * wo * cols];
    let mut r = 0;
    for bi in 0..b {
        for zf in 0..fo {
            for zy in 0..ho {
                for zx in 0..wo {
                    let row = &mut o[r * cols..][..cols];
                    let mut i = 0;
                    for ci in 0..c {
                        for a in 0..kt {
                            for dy in 0..kh {
                                for dx in 0..kw {
                                    let ff = (zf * stride[0] + a) as isize - pad[0] as isize;
                                    let yy = (zy * stride[1] + dy) as isize - pad[1] as isize;
                                    let xx = (zx * stride[2] + dx) as isize - pad[2] as isize;
                                    if ff >= 0
                                        && yy >= 0
                                        && xx >= 0
                                        && (ff as usize) < f
                                        && (yy as usize) < h
                                        && (xx as usize) < w
                                    {
                                        let (ff, yy, xx) = (ff as usize, yy as usize, xx as usize);
                                        row[i] = x[(((bi * c + ci) * f + ff) * h + yy) * w + xx];
                                    }
                                    i += 1;
                                }
                            }
                        }
                    }
                    r += 1;
                }
            }
        }
    }
    o
}

/// `[B·F·H·W, C]` rows → `[B, C, F, H, W]`.
pub fn rows_to_channels_first(y: &[f32], b: usize, c: usize, sp: usize) -> Vec<f32> {
    let mut o = vec![0f32; y.len()];
    for bi in 0..b {
        for s in 0..sp {
            for ci in 0..c {
                o[(bi * c + ci) * sp + s] = y[(bi * sp + s) * c + ci];
            }
        }
    }
    o
}

// --- norm ---

/// GroupNorm over x `[B, C, ...]`: per (sample, group of `C/groups` channels) mean and variance
/// over the group's channels and every position, then the per-channel affine.
pub fn group_norm(
    x: &[f32],
    shape: &[usize],
    groups: usize,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
) -> Result<Vec<f32>> {
    if shape.len() < 2 || groups == 0 || !shape[1].is_multiple_of(groups) {
        return Err(Error::shape(
            "group_norm",
            format!("x {shape:?} with {groups} groups"),
        ));
    }
    let (n, c) = (shape[0], shape[1]);
    if w.is_some_and(|w| w.len() != c) || b.is_some_and(|b| b.len() != c) {
        return Err(Error::shape(
            "group_norm",
            format!("affine for {c} channels"),
        ));
    }
    let sp: usize = shape[2..].iter().product();
    let cg = c / groups;
    let mut o = vec![0f32; x.len()];
    for bi in 0..n {
        for g in 0..groups {
            let at = (bi * c + g * cg) * sp;
            let r = &x[at..at + cg * sp];
            let len = r.len().max(1) as f64;
            let mean = r.iter().map(|&v| v as f64).sum::<f64>() / len;
            let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for cl in 0..cg {
                let ch = g * cg + cl;
                let (sw, sb) = (w.map_or(1.0, |w| w[ch]), b.map_or(0.0, |b| b[ch]));
                for s in 0..sp {
                    let i = at + cl * sp + s;
                    o[i] = (((x[i] as f64 - mean) * rstd) as f32) * sw + sb;
                }
            }
        }
    }
    Ok(o)
}

// --- upsample ---

/// Nearest-neighbour 2x upsampling of the last two (spatial) dims of x (rank ≥ 3).
pub fn upsample_nearest2x(x: &[f32], shape: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
    if shape.len() < 3 {
        return Err(Error::shape("upsample_nearest", format!("x {shape:?}")));
    }
    let r = shape.len();
    let (h, w) = (shape[r - 2], shape[r - 1]);
    let outer: usize = shape[..r - 2].iter().product();
    let mut o = vec![0f32; outer * 4 * h * w];
    for p in 0..outer {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                o[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2];
            }
        }
    }
    let mut s = shape.to_vec();
    s[r - 2] *= 2;
    s[r - 1] *= 2;
    Ok((o, s))
}

// --- masked attention ---

/// Which (query, key) pairs a dense attention may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttnMask {
    /// Every pair.
    None,
    /// Query `i` sees keys `j ≤ i + (Lk − Lq)` (the queries are the last `Lq` positions).
    Causal,
    /// Per batch entry, only its first `lens[b]` keys (the rest is padding).
    KeyPadding(Vec<usize>),
}

/// Dense softmax attention with a mask (and an optional key bias, on query rows `<
/// to_query` only), f64 accumulation: q `[B, Lq, H, Dh]`, k/v `[B, Lk, H, Dh]`. A query row
/// with no visible key gives zeros.
pub fn attention_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    qs: &[usize],
    lk: usize,
    mask: &AttnMask,
    bias: Option<KeyBias>,
) -> Result<Vec<f32>> {
    let (b, lq, h, d) = (qs[0], qs[1], qs[2], qs[3]);
    if let AttnMask::KeyPadding(lens) = mask {
        if lens.len() != b || lens.iter().any(|&l| l > lk) {
            return Err(Error::invalid(
                "attention_masked",
                format!("key lengths {lens:?} for batch {b}, {lk} keys"),
            ));
        }
    }
    let scale = 1.0 / (d as f64).sqrt();
    let mut o = vec![0f32; q.len()];
    let mut s = vec![0f64; lk];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..lq {
                let visible = match mask {
                    AttnMask::None => lk,
                    AttnMask::Causal => (i + lk).saturating_sub(lq).saturating_add(1).min(lk),
                    AttnMask::KeyPadding(lens) => lens[bi],
                };
                if visible == 0 {
                    continue;
                }
                let qr = &q[((bi * lq + i) * h + hi) * d..][..d];
                let row_bias = bias.filter(|kb| kb.on_row(i));
                let mut m = f64::NEG_INFINITY;
                for (j, sj) in s.iter_mut().enumerate().take(visible) {
                    let kr = &k[((bi * lk + j) * h + hi) * d..][..d];
                    let mut dot = qr
                        .iter()
                        .zip(kr)
                        .map(|(a, c)| *a as f64 * *c as f64)
                        .sum::<f64>()
                        * scale;
                    if let Some(kb) = row_bias {
                        if j >= kb.from_key {
                            dot += kb.bias as f64;
                        }
                    }
                    *sj = dot;
                    m = m.max(dot);
                }
                let mut z = 0.0;
                for sj in s.iter_mut().take(visible) {
                    *sj = (*sj - m).exp();
                    z += *sj;
                }
                let or = &mut o[((bi * lq + i) * h + hi) * d..][..d];
                for (j, &p) in s.iter().enumerate().take(visible) {
                    let vr = &v[((bi * lk + j) * h + hi) * d..][..d];
                    for (acc, &vv) in or.iter_mut().zip(vr) {
                        *acc += (p / z * vv as f64) as f32;
                    }
                }
            }
        }
    }
    Ok(o)
}

/// Dense softmax attention with a per-head additive score bias and an explicit scale,
/// `softmax(scale·q·kᵀ + bias[h])·v` with f64 accumulation: q `[B, Lq, H, Dh]`, k/v
/// `[B, Lk, H, Dh]`, bias `[H, Lq, Lk]` (shared by the batch). T5's relative-position
/// attention (scale 1, the bias from the position buckets). Parallel over (batch, head, query).
pub fn attention_biased(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    qs: &[usize],
    lk: usize,
    scale: f32,
) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let (b, lq, h, d) = (qs[0], qs[1], qs[2], qs[3]);
    if q.len() != b * lq * h * d
        || k.len() != b * lk * h * d
        || v.len() != k.len()
        || bias.len() != h * lq * lk
    {
        return Err(Error::shape(
            "attention_biased",
            format!(
                "q {qs:?}, {lk} keys: {} q, {} k, {} v, {} bias values",
                q.len(),
                k.len(),
                v.len(),
                bias.len()
            ),
        ));
    }
    let mut o = vec![0f32; q.len()];
    // One chunk per (batch, query): its H·Dh outputs are contiguous.
    o.par_chunks_mut(h * d).enumerate().for_each(|(row, out)| {
        let (bi, i) = (row / lq, row % lq);
        let mut s = vec![0f64; lk];
        for hi in 0..h {
            let qr = &q[((bi * lq + i) * h + hi) * d..][..d];
            let br = &bias[(hi * lq + i) * lk..][..lk];
            let mut m = f64::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate() {
                let kr = &k[((bi * lk + j) * h + hi) * d..][..d];
                let dot: f64 = qr.iter().zip(kr).map(|(a, c)| *a as f64 * *c as f64).sum();
                *sj = dot * scale as f64 + br[j] as f64;
                m = m.max(*sj);
            }
            let mut z = 0.0;
            for sj in s.iter_mut() {
                *sj = (*sj - m).exp();
                z += *sj;
            }
            let mut acc = vec![0f64; d];
            for (j, &p) in s.iter().enumerate() {
                let vr = &v[((bi * lk + j) * h + hi) * d..][..d];
                for (a, &vv) in acc.iter_mut().zip(vr) {
                    *a += p * vv as f64;
                }
            }
            for (dst, a) in out[hi * d..][..d].iter_mut().zip(acc) {
                *dst = (a / z) as f32;
            }
        }
    });
    Ok(o)
}
