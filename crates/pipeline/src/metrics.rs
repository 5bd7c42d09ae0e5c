//! Fidelity measures between videos, and a check that a tiny-wan video still shows its
//! caption (colours, shape position, direction of motion).
//!
//! Videos here are `[C, F, H, W]` f32 in [-1, 1] (the sampler's output); they are quantised to
//! u8 first, as the written file would be.

fn q(v: f32) -> f64 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as f64
}

/// PSNR in dB over all channels and frames (∞ for identical videos).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "videos of different sizes");
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (q(*x) - q(*y)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Mean SSIM (Wang et al. 2004; 7×7 uniform windows, K1 = 0.01, K2 = 0.03, L = 255) over every
/// channel plane of every frame.
pub fn ssim(a: &[f32], b: &[f32], [c, f, h, w]: [usize; 4]) -> f64 {
    assert_eq!(a.len(), c * f * h * w);
    assert_eq!(b.len(), a.len());
    let win = 7.min(h).min(w);
    let (c1, c2) = ((0.01 * 255.0f64).powi(2), (0.03 * 255.0f64).powi(2));
    let (mut total, mut count) = (0.0, 0usize);
    for plane in 0..c * f {
        let pa = &a[plane * h * w..][..h * w];
        let pb = &b[plane * h * w..][..h * w];
        for y in 0..=h - win {
            for x in 0..=w - win {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for yy in y..y + win {
                    for xx in x..x + win {
                        let (u, v) = (q(pa[yy * w + xx]), q(pb[yy * w + xx]));
                        sa += u;
                        sb += v;
                        saa += u * u;
                        sbb += v * v;
                        sab += u * v;
                    }
                }
                let n = (win * win) as f64;
                let (ma, mb) = (sa / n, sb / n);
                let (va, vb, cov) = (saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    total / count.max(1) as f64
}

/// What a tiny-wan video shows: background and foreground colours, and the foreground's
/// centroid path.
#[derive(Clone, Debug)]
pub struct SceneReading {
    pub background: [f64; 3],
    pub foreground: [f64; 3],
    /// Fraction of pixels classified as foreground (over all frames).
    pub fg_fraction: f64,
    /// Centroid (x, y) in pixels of the first and last frame that have foreground.
    pub start: (f64, f64),
    pub end: (f64, f64),
    /// Frames with at least `MIN_OBJECT_PIXELS` foreground pixels, of `frames`.
    pub object_frames: usize,
    pub frames: usize,
}

/// Fewer foreground pixels than this in a frame is noise, not an object (the embedded model's
/// smallest shape covers ~30 px at 32×32).
pub const MIN_OBJECT_PIXELS: usize = 4;

impl SceneReading {
    /// Whether an object is seen: in at least half of the frames.
    pub fn has_object(&self) -> bool {
        self.frames > 0 && 2 * self.object_frames >= self.frames
    }

    /// Dominant direction of motion: "left", "right", "up", "down", "still" when the
    /// centroid moved less than `min_px`, or "no object" when there is none to follow.
    pub fn direction(&self, min_px: f64) -> &'static str {
        let (dx, dy) = (self.end.0 - self.start.0, self.end.1 - self.start.1);
        if !self.has_object() {
            "no object"
        } else if dx.abs().max(dy.abs()) < min_px {
            "still"
        } else if dx.abs() >= dy.abs() {
            if dx > 0.0 {
                "right"
            } else {
                "left"
            }
        } else if dy > 0.0 {
            "down"
        } else {
            "up"
        }
    }
}

/// Read a video `[3, F, H, W]`: background = median colour of the border pixels; foreground =
/// pixels farther than `thresh` (0–255 RGB distance) from it.
pub fn read_scene(x: &[f32], [c, f, h, w]: [usize; 4], thresh: f64) -> SceneReading {
    assert!(c >= 3 && x.len() == c * f * h * w);
    let px = |fi: usize, y: usize, xx: usize| -> [f64; 3] {
        [0, 1, 2].map(|ch| q(x[((ch * f + fi) * h + y) * w + xx]))
    };
    let mut border: Vec<[f64; 3]> = Vec::new();
    for fi in 0..f {
        for y in 0..h {
            for xx in 0..w {
                if y == 0 || xx == 0 || y + 1 == h || xx + 1 == w {
                    border.push(px(fi, y, xx));
                }
            }
        }
    }
    let median = |ch: usize| {
        let mut v: Vec<f64> = border.iter().map(|p| p[ch]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let bg = [median(0), median(1), median(2)];
    let dist = |p: [f64; 3]| {
        ((p[0] - bg[0]).powi(2) + (p[1] - bg[1]).powi(2) + (p[2] - bg[2]).powi(2)).sqrt()
    };
    let (mut fg_sum, mut fg_n) = ([0.0; 3], 0usize);
    let mut centroids = Vec::new();
    let mut object_frames = 0;
    for fi in 0..f {
        let (mut cx, mut cy, mut n) = (0.0, 0.0, 0usize);
        for y in 0..h {
            for xx in 0..w {
                let p = px(fi, y, xx);
                if dist(p) > thresh {
                    (0..3).for_each(|ch| fg_sum[ch] += p[ch]);
                    fg_n += 1;
                    cx += xx as f64;
                    cy += y as f64;
                    n += 1;
                }
            }
        }
        if n >= MIN_OBJECT_PIXELS {
            centroids.push((cx / n as f64, cy / n as f64));
            object_frames += 1;
        }
    }
    let fg = if fg_n > 0 {
        fg_sum.map(|s| s / fg_n as f64)
    } else {
        bg
    };
    let (start, end) = match (centroids.first(), centroids.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => ((0.0, 0.0), (0.0, 0.0)),
    };
    SceneReading {
        background: bg,
        foreground: fg,
        fg_fraction: fg_n as f64 / (f * h * w) as f64,
        start,
        end,
        object_frames,
        frames: f,
    }
}

/// Distance between two RGB colours (0–255 units).
pub fn colour_distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×F×H×W video with a `fg` square on `bg` moving by `step` px per frame in x.
    fn scene(f: usize, h: usize, w: usize, fg: [f32; 3], bg: [f32; 3], step: isize) -> Vec<f32> {
        let mut v = vec![0f32; 3 * f * h * w];
        for fi in 0..f {
            let x0 = (if step < 0 { 24 } else { 4 } + step * fi as isize) as usize;
            for y in 0..h {
                for x in 0..w {
                    let inside = (x0..x0 + 6).contains(&x) && (10..16).contains(&y);
                    for ch in 0..3 {
                        v[((ch * f + fi) * h + y) * w + x] =
                            if inside { fg[ch] } else { bg[ch] } / 127.5 - 1.0;
                    }
                }
            }
        }
        v
    }

    #[test]
    fn psnr_and_ssim_known_values() {
        let a = scene(4, 32, 32, [220.0, 40.0, 40.0], [50.0, 90.0, 230.0], 3);
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        assert!((ssim(&a, &a, [3, 4, 32, 32]) - 1.0).abs() < 1e-12);
        // a uniform offset of 2 grey levels: MSE = 4 → PSNR = 10·log10(255²/4) = 42.11 dB
        let b: Vec<f32> = a.iter().map(|v| v + 2.0 / 127.5).collect();
        assert!((psnr(&a, &b) - 42.110).abs() < 0.01, "{}", psnr(&a, &b));
        let c = scene(4, 32, 32, [220.0, 40.0, 40.0], [50.0, 90.0, 230.0], -3);
        assert!(ssim(&a, &c, [3, 4, 32, 32]) < ssim(&a, &b, [3, 4, 32, 32]));
    }

    #[test]
    fn an_empty_video_has_no_object_and_no_direction() {
        let bg = [50.0, 90.0, 230.0];
        let mut v = scene(4, 32, 32, bg, bg, 3);
        assert_eq!(
            read_scene(&v, [3, 4, 32, 32], 60.0).direction(1.0),
            "no object"
        );
        // two stray pixels, in the first and last frame, far apart: still no object
        let n = 32 * 32;
        for ch in 0..3 {
            v[(ch * 4) * n + 5 * 32 + 2] = 1.0;
            v[(ch * 4 + 3) * n + 20 * 32 + 30] = 1.0;
        }
        let r = read_scene(&v, [3, 4, 32, 32], 60.0);
        assert!(!r.has_object());
        assert_eq!(r.direction(1.0), "no object");
    }

    #[test]
    fn reads_colours_and_direction() {
        let v = scene(8, 32, 32, [220.0, 40.0, 40.0], [50.0, 90.0, 230.0], 2);
        let r = read_scene(&v, [3, 8, 32, 32], 60.0);
        assert!(colour_distance(r.background, [50.0, 90.0, 230.0]) < 1.5);
        assert!(colour_distance(r.foreground, [220.0, 40.0, 40.0]) < 1.5);
        assert_eq!(r.direction(2.0), "right");
        let v = scene(8, 32, 32, [220.0, 40.0, 40.0], [50.0, 90.0, 230.0], -2);
        assert_eq!(read_scene(&v, [3, 8, 32, 32], 60.0).direction(2.0), "left");
    }
}
