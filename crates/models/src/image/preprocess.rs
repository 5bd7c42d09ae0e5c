//! Image preprocessing for Wan2.1 image-to-video, as the two references do it:
//!
//! - **diffusers** (`WanImageToVideoPipeline`): the CLIP input through `CLIPImageProcessor`
//!   (PIL bicubic resize of the shortest edge to 224, centre crop, CLIP mean/std) and the first
//!   frame through `VideoProcessor` (PIL Lanczos resize to the video size, `[-1, 1]`). The
//!   resizes are PIL's `Image.resize` exactly: separable, antialiased (the filter widened by
//!   the downscale factor), fixed-point coefficients, 8-bit rounding after each pass.
//! - **Wan** (`wan/image2video.py`, `wan/modules/clip.py`): the image in `[-1, 1]`, squashed
//!   to 224×224 for CLIP and to the video size for the VAE by `F.interpolate(mode="bicubic")`
//!   (PyTorch's: a = −0.75, no antialiasing, float).
//!
//! Output size from the image's aspect ratio at a pixel area, as diffusers' Wan I2V recipe:
//! `h = ⌊round(√(area·H/W)) / 16⌋·16`, `w = ⌊round(√(area·W/H)) / 16⌋·16`. (Wan's
//! `image2video.py` floors without rounding first, so float error makes an 832×480 image at
//! the 480×832 area 464×832 there; rounding first gives 480×832.)

use crate::{ModelError, Result};

/// An 8-bit RGB image, rows top to bottom, `[h, w, 3]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Which reference's preprocessing a checkpoint gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preprocess {
    /// diffusers' `CLIPImageProcessor` + `VideoProcessor` (PIL resizes).
    Diffusers,
    /// Wan's own (`F.interpolate` bicubic, squashed to 224×224 for CLIP).
    Wan,
}

/// open-clip's (and OpenAI CLIP's) normalisation, digits as the references write them.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The largest aspect ratio (long side / short side) an image may have: Wan2.1 I2V was made
/// for 16:9, 9:16 and in between; beyond 3:1 the short side falls under a few latent rows.
pub const MAX_ASPECT: f64 = 3.0;

/// The video size (height, width) in pixels for `img_h × img_w` at `area` pixels, multiples of
/// `multiple` (VAE stride × patch = 16 for Wan), as diffusers' Wan I2V example computes it.
pub fn size_for_aspect(
    img_h: usize,
    img_w: usize,
    area: usize,
    multiple: usize,
) -> Result<(usize, usize)> {
    if img_h == 0 || img_w == 0 {
        return Err(ModelError::Invalid("the image is empty".into()));
    }
    let ar = img_h as f64 / img_w as f64;
    let long = ar.max(1.0 / ar);
    if long > MAX_ASPECT {
        return Err(ModelError::Invalid(format!(
            "{img_w}x{img_h} px is {long:.2}:1; image-to-video takes aspect ratios up to {MAX_ASPECT}:1 (e.g. 16:9, 9:16, 4:3, 1:1): crop the image first"
        )));
    }
    // Python's round (ties to even), then integer division
    let h = (area as f64 * ar).sqrt().round_ties_even() as usize / multiple * multiple;
    let w = (area as f64 / ar).sqrt().round_ties_even() as usize / multiple * multiple;
    if h == 0 || w == 0 {
        return Err(ModelError::Invalid(format!(
            "an area of {area} px at {img_w}x{img_h}'s aspect gives no {multiple}-px rows or columns: ask for a larger --height x --width"
        )));
    }
    Ok((h, w))
}

// ---- PIL's resampling (libImaging/Resample.c), for 8-bit images ----

/// PIL's filters: support and kernel.
#[derive(Clone, Copy, Debug)]
pub enum PilFilter {
    Bicubic,
    Lanczos,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Bicubic => 2.0,
            PilFilter::Lanczos => 3.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        match self {
            PilFilter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            PilFilter::Lanczos => {
                let sinc = |x: f64| {
                    if x == 0.0 {
                        1.0
                    } else {
                        let p = x * std::f64::consts::PI;
                        p.sin() / p
                    }
                };
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel the first input
/// index and the fixed-point weights, for input span `[in0, in1)` of `in_size` pixels.
fn pil_coeffs(
    in_size: usize,
    in0: f64,
    in1: f64,
    out_size: usize,
    f: PilFilter,
) -> Vec<(usize, Vec<i32>)> {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = f.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = in0 + (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize)
                .saturating_sub(xmin);
            let mut k: Vec<f64> = (0..xmax)
                .map(|x| f.eval((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let one = (1u64 << PRECISION_BITS) as f64;
            let ki = k
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin, ki)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass along x (`horizontal`) or y of an `[h, w, 3]` u8 image.
fn pil_pass(img: &Rgb8, out_len: usize, f: PilFilter, horizontal: bool) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let in_len = if horizontal { w } else { h };
    let coeffs = pil_coeffs(in_len, 0.0, in_len as f64, out_len, f);
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = vec![0u8; ow * oh * 3];
    let half = 1i64 << (PRECISION_BITS - 1);
    for y in 0..oh {
        for x in 0..ow {
            let (start, k) = &coeffs[if horizontal { x } else { y }];
            for c in 0..3 {
                let mut ss = half;
                for (i, &kv) in k.iter().enumerate() {
                    let (sx, sy) = if horizontal {
                        (start + i, y)
                    } else {
                        (x, start + i)
                    };
                    ss += img.data[(sy * w + sx) * 3 + c] as i64 * kv as i64;
                }
                out[(y * ow + x) * 3 + c] = clip8(ss);
            }
        }
    }
    Rgb8 {
        width: ow,
        height: oh,
        data: out,
    }
}

/// PIL's `Image.resize((width, height), filter)` of an RGB image (no `reducing_gap`).
pub fn pil_resize(img: &Rgb8, width: usize, height: usize, f: PilFilter) -> Rgb8 {
    let mut x = img.clone();
    if width != img.width {
        x = pil_pass(&x, width, f, true);
    }
    if height != img.height {
        x = pil_pass(&x, height, f, false);
    }
    x
}

// ---- PyTorch's F.interpolate(mode="bicubic", align_corners=False), float ----

/// `[3, h, w]` planes → `[3, oh, ow]`, PyTorch's bicubic (a = −0.75, clamped borders).
pub fn torch_bicubic(x: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    let cc1 = |t: f32| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let cc2 = |t: f32| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A;
    let taps = |t: f32| [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
    // (first index, weights) per output coordinate
    let axis = |n_in: usize, n_out: usize| -> Vec<(isize, [f32; 4])> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let real = scale * (o as f32 + 0.5) - 0.5;
                let i = real.floor();
                (i as isize, taps(real - i))
            })
            .collect()
    };
    let (ys, xs) = (axis(h, oh), axis(w, ow));
    let at = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut out = vec![0f32; 3 * oh * ow];
    for c in 0..3 {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for (oy, (y0, wy)) in ys.iter().enumerate() {
            for (ox, (x0, wx)) in xs.iter().enumerate() {
                let mut acc = 0f32;
                for (j, wyj) in wy.iter().enumerate() {
                    let row = &plane[at(y0 - 1 + j as isize, h) * w..];
                    let mut r = 0f32;
                    for (i, wxi) in wx.iter().enumerate() {
                        r += row[at(x0 - 1 + i as isize, w)] * wxi;
                    }
                    acc += r * wyj;
                }
                out[(c * oh + oy) * ow + ox] = acc;
            }
        }
    }
    out
}

/// u8 `[h, w, 3]` → `[3, h, w]` planes of `v / 255 · scale + offset`.
fn planes(img: &Rgb8, scale: f32, offset: f32) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = px[c] as f32 / 255.0 * scale + offset;
        }
    }
    out
}

/// The CLIP tower's input `[3, size, size]`, normalised with [`CLIP_MEAN`]/[`CLIP_STD`].
pub fn clip_pixels(img: &Rgb8, size: usize, how: Preprocess) -> Vec<f32> {
    let x = match how {
        Preprocess::Diffusers => {
            // CLIPImageProcessor: shortest edge → size (int(size · long / short)), centre crop
            let (w, h) = (img.width, img.height);
            let (rw, rh) = if w <= h {
                (size, (size as f64 * h as f64 / w as f64) as usize)
            } else {
                ((size as f64 * w as f64 / h as f64) as usize, size)
            };
            let r = pil_resize(img, rw, rh, PilFilter::Bicubic);
            let (top, left) = ((rh - size) / 2, (rw - size) / 2);
            let mut data = Vec::with_capacity(size * size * 3);
            for y in top..top + size {
                data.extend_from_slice(&r.data[(y * rw + left) * 3..(y * rw + left + size) * 3]);
            }
            planes(
                &Rgb8 {
                    width: size,
                    height: size,
                    data,
                },
                1.0,
                0.0,
            )
        }
        Preprocess::Wan => {
            let x = planes(img, 2.0, -1.0);
            let mut y = torch_bicubic(&x, img.height, img.width, size, size);
            y.iter_mut().for_each(|v| *v = *v * 0.5 + 0.5);
            y
        }
    };
    let n = size * size;
    x.chunks_exact(n)
        .enumerate()
        .flat_map(|(c, p)| p.iter().map(move |&v| (v - CLIP_MEAN[c]) / CLIP_STD[c]))
        .collect()
}

/// The first frame for the VAE: `[3, height, width]` in `[-1, 1]`.
pub fn vae_pixels(img: &Rgb8, height: usize, width: usize, how: Preprocess) -> Vec<f32> {
    match how {
        Preprocess::Diffusers => {
            let r = if (img.width, img.height) == (width, height) {
                img.clone()
            } else {
                pil_resize(img, width, height, PilFilter::Lanczos)
            };
            planes(&r, 2.0, -1.0)
        }
        Preprocess::Wan => {
            let x = planes(img, 2.0, -1.0);
            torch_bicubic(&x, img.height, img.width, height, width)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Rgb8 {
        let data = (0..w * h * 3)
            .map(|i| ((i * 37 + i / 3 * 11) % 256) as u8)
            .collect();
        Rgb8 {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn same_size_resizes_are_identities() {
        let img = ramp(7, 5);
        assert_eq!(pil_resize(&img, 7, 5, PilFilter::Lanczos), img);
        let x = planes(&img, 1.0, 0.0);
        let y = torch_bicubic(&x, 5, 7, 5, 7);
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0., f32::max);
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn pil_weights_sum_to_one_and_constant_images_stay_constant() {
        for (n, m) in [(10, 3), (3, 10), (224, 97), (97, 224)] {
            for f in [PilFilter::Bicubic, PilFilter::Lanczos] {
                for (_, k) in pil_coeffs(n, 0.0, n as f64, m, f) {
                    let s: i64 = k.iter().map(|&v| v as i64).sum();
                    assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{s}");
                }
            }
        }
        let flat = Rgb8 {
            width: 9,
            height: 4,
            data: vec![200; 9 * 4 * 3],
        };
        let r = pil_resize(&flat, 31, 13, PilFilter::Lanczos);
        assert!(r.data.iter().all(|&v| v == 200));
    }

    #[test]
    fn aspect_sizes_follow_image2video() {
        // 832x480 image at the 480p area → 480x832 (image2video.py: 464x832); 4:3 → 544x720
        assert_eq!(
            size_for_aspect(480, 832, 480 * 832, 16).unwrap(),
            (480, 832)
        );
        assert_eq!(
            size_for_aspect(768, 1024, 480 * 832, 16).unwrap(),
            (544, 720)
        );
        assert_eq!(
            size_for_aspect(1280, 720, 720 * 1280, 16).unwrap(),
            (1280, 720)
        );
        let e = size_for_aspect(100, 400, 480 * 832, 16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4.00:1"), "{e}");
    }
}
