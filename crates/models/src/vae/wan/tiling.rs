//! Spatial tiling as diffusers' `enable_tiling`: overlapping tiles run one at a time (each
//! with its own feature cache), then blended on the host — the row above and the tile to the
//! left fade in linearly over the overlap — and cropped to the stride.

use crate::{ModelError, Result};
use jenga_tensor::{Backend, TensorMeta};

/// `f` on each tile of `x`: `size` rows × cols every `step`, row by row (the references'
/// tiled loops); the tiles are then blended by [`blend_assemble`].
pub fn map_tiles(
    x: &HostVideo,
    size: (usize, usize),
    step: (usize, usize),
    mut f: impl FnMut(&HostVideo) -> Result<HostVideo>,
) -> Result<Vec<Vec<HostVideo>>> {
    let [_, _, h, w] = x.shape;
    let mut rows = Vec::new();
    for i in (0..h).step_by(step.0) {
        let mut row = Vec::new();
        for j in (0..w).step_by(step.1) {
            row.push(f(&x.crop(i, i + size.0, j, j + size.1))?);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A latent `[c, f, h, w]` of `len` values for a VAE of `channels` latent channels, or the
/// error naming the mismatch (`vae`: "Wan", "HunyuanVideo").
pub fn check_latent(
    len: usize,
    [c, f, h, w]: [usize; 4],
    channels: usize,
    vae: &str,
) -> Result<()> {
    if c != channels {
        return Err(ModelError::Invalid(format!(
            "latent has {c} channels, the {vae} VAE takes {channels}"
        )));
    }
    if f == 0 || h == 0 || w == 0 || len != c * f * h * w {
        return Err(ModelError::Invalid(format!(
            "latent of {len} values for shape {:?}",
            [c, f, h, w]
        )));
    }
    Ok(())
}

/// `[1, C, F, H, W]` on the device → host `[C, F, H, W]`.
pub fn to_host<B: Backend>(be: &B, y: &B::Tensor) -> Result<HostVideo> {
    let s = y.shape();
    Ok(HostVideo {
        data: be.download(y)?,
        shape: [s[1], s[2], s[3], s[4]],
    })
}

/// A host tensor `[C, F, H, W]`.
#[derive(Clone, Debug)]
pub struct HostVideo {
    pub data: Vec<f32>,
    pub shape: [usize; 4],
}

impl HostVideo {
    pub fn zeros(shape: [usize; 4]) -> Self {
        HostVideo {
            data: vec![0f32; shape.iter().product()],
            shape,
        }
    }

    /// Rows `y0..y1`, columns `x0..x1` (clipped to the extent).
    pub fn crop(&self, y0: usize, y1: usize, x0: usize, x1: usize) -> HostVideo {
        let [c, f, h, w] = self.shape;
        let (y1, x1) = (y1.min(h), x1.min(w));
        let (th, tw) = (y1.saturating_sub(y0), x1.saturating_sub(x0));
        let mut o = HostVideo::zeros([c, f, th, tw]);
        for p in 0..c * f {
            for y in 0..th {
                let src = &self.data[(p * h + y0 + y) * w + x0..][..tw];
                o.data[(p * th + y) * tw..][..tw].copy_from_slice(src);
            }
        }
        o
    }

    /// Writes `t` at rows `y0..`, columns `x0..`.
    pub fn paste(&mut self, t: &HostVideo, y0: usize, x0: usize) {
        let [c, f, h, w] = self.shape;
        let [_, _, th, tw] = t.shape;
        for p in 0..c * f {
            for y in 0..th {
                let dst = &mut self.data[(p * h + y0 + y) * w + x0..][..tw];
                dst.copy_from_slice(&t.data[(p * th + y) * tw..][..tw]);
            }
        }
    }

    /// Frames concatenated in time (same C, H, W).
    pub fn cat_frames(parts: &[HostVideo]) -> HostVideo {
        let [c, _, h, w] = parts[0].shape;
        let f: usize = parts.iter().map(|p| p.shape[1]).sum();
        let mut o = HostVideo::zeros([c, f, h, w]);
        let plane = h * w;
        for ch in 0..c {
            let mut at = ch * f * plane;
            for p in parts {
                let n = p.shape[1] * plane;
                o.data[at..at + n].copy_from_slice(&p.data[ch * n..(ch + 1) * n]);
                at += n;
            }
        }
        o
    }
}

/// diffusers' `blend_v`: `b`'s first rows fade in from `a`'s last rows.
pub fn blend_v(a: &HostVideo, b: &mut HostVideo, extent: usize) {
    let [c, f, ha, w] = a.shape;
    let hb = b.shape[2];
    let e = extent.min(ha).min(hb);
    for p in 0..c * f {
        for y in 0..e {
            let t = y as f32 / e as f32;
            let ra = &a.data[(p * ha + ha - e + y) * w..][..w];
            let rb = &mut b.data[(p * hb + y) * w..][..w];
            for (o, &va) in rb.iter_mut().zip(ra) {
                *o = va * (1.0 - t) + *o * t;
            }
        }
    }
}

/// diffusers' `blend_h`: `b`'s first columns fade in from `a`'s last columns.
pub fn blend_h(a: &HostVideo, b: &mut HostVideo, extent: usize) {
    let [c, f, h, wa] = a.shape;
    let wb = b.shape[3];
    let e = extent.min(wa).min(wb);
    for p in 0..c * f {
        for y in 0..h {
            for x in 0..e {
                let t = x as f32 / e as f32;
                let va = a.data[(p * h + y) * wa + wa - e + x];
                let o = &mut b.data[(p * h + y) * wb + x];
                *o = va * (1.0 - t) + *o * t;
            }
        }
    }
}

/// Tiles `rows[i][j]` (tile origins `stride` apart) blended in place in the reference's order
/// and assembled into `[C, F, out_h, out_w]`; `keep` is the stride (each tile's kept part).
pub fn blend_assemble(
    rows: &mut [Vec<HostVideo>],
    blend: (usize, usize),
    keep: (usize, usize),
    out_hw: (usize, usize),
) -> HostVideo {
    let [c, f, _, _] = rows[0][0].shape;
    let mut out = HostVideo::zeros([c, f, out_hw.0, out_hw.1]);
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                blend_v(&rows[i - 1][j], &mut tile, blend.0);
            }
            if j > 0 {
                blend_h(&rows[i][j - 1], &mut tile, blend.1);
            }
            let (y0, x0) = (i * keep.0, j * keep.1);
            if y0 < out_hw.0 && x0 < out_hw.1 {
                let kept = tile.crop(0, keep.0.min(out_hw.0 - y0), 0, keep.1.min(out_hw.1 - x0));
                out.paste(&kept, y0, x0);
            }
            rows[i][j] = tile;
        }
    }
    out
}
