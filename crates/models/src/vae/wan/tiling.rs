//! Spatial tiling as diffusers' `enable_tiling`: overlapping tiles run one at a time (each
//! with its own feature cache), then blended on the host — the row above and the tile to the
//! left fade in linearly over the overlap — and cropped to the stride.

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
