//! 3D resize of a video `[C, F, H, W]` between ProRes stages (frames are kept; H, W change).
//! Trilinear as the reference code (`F.interpolate(mode="trilinear", align_corners=False)`),
//! area as the paper.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    Trilinear,
    Area,
}

impl std::str::FromStr for Interp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "trilinear" => Ok(Interp::Trilinear),
            "area" => Ok(Interp::Area),
            _ => Err(format!(
                "unknown interpolation `{s}` (expected trilinear or area)"
            )),
        }
    }
}

/// Resize `[C, F, H, W]` to `[C, F, h2, w2]`.
pub fn resize(
    x: &[f32],
    (c, f, h, w): (usize, usize, usize, usize),
    (h2, w2): (usize, usize),
    mode: Interp,
) -> Vec<f32> {
    let mut out = vec![0f32; c * f * h2 * w2];
    for plane in 0..c * f {
        let src = &x[plane * h * w..][..h * w];
        let dst = &mut out[plane * h2 * w2..][..h2 * w2];
        match mode {
            Interp::Trilinear => bilinear(src, h, w, dst, h2, w2),
            Interp::Area => area(src, h, w, dst, h2, w2),
        }
    }
    out
}

/// With frames unchanged, trilinear is bilinear per frame. align_corners=False source coords.
fn bilinear(src: &[f32], h: usize, w: usize, dst: &mut [f32], h2: usize, w2: usize) {
    let coord = |o: usize, n_in: usize, n_out: usize| -> (usize, usize, f32) {
        let s = ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, s - i0 as f32)
    };
    for y in 0..h2 {
        let (y0, y1, fy) = coord(y, h, h2);
        for x in 0..w2 {
            let (x0, x1, fx) = coord(x, w, w2);
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bot = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            dst[y * w2 + x] = top * (1.0 - fy) + bot * fy;
        }
    }
}

/// Area (adaptive average pooling) weights: the overlap of each output cell with input cells.
/// For upsampling this is nearest-like, as PyTorch's `mode="area"`.
fn area(src: &[f32], h: usize, w: usize, dst: &mut [f32], h2: usize, w2: usize) {
    let range =
        |o: usize, n_in: usize, n_out: usize| (o * n_in / n_out, ((o + 1) * n_in).div_ceil(n_out));
    for y in 0..h2 {
        let (ya, yb) = range(y, h, h2);
        for x in 0..w2 {
            let (xa, xb) = range(x, w, w2);
            let mut s = 0.0;
            for yy in ya..yb {
                for xx in xa..xb {
                    s += src[yy * w + xx];
                }
            }
            dst[y * w2 + x] = s / ((yb - ya) * (xb - xa)) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_pytorch_align_corners_false() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False)
        let out = resize(
            &[0.0, 1.0, 2.0, 3.0],
            (1, 1, 2, 2),
            (4, 4),
            Interp::Trilinear,
        );
        let expect = [
            0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0,
        ];
        for (a, b) in out.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn area_downsample_is_block_mean_and_constant_is_preserved() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = resize(&x, (1, 1, 4, 4), (2, 2), Interp::Area);
        assert_eq!(out, vec![2.5, 4.5, 10.5, 12.5]);
        for mode in [Interp::Area, Interp::Trilinear] {
            let c = resize(&[0.7; 2 * 3 * 6 * 6], (2, 3, 6, 6), (8, 10), mode);
            assert!(c.iter().all(|v| (v - 0.7).abs() < 1e-6));
        }
    }
}
