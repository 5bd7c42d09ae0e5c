//! 3D RoPE tables shared by the model families: each video token's (frame, row, col) position
//! rotates its own run of adjacent pairs, `θ^(−2j/d)` per axis of `d` real dims, angles in f64.

use crate::Result;
use jenga_tensor::Backend;
use std::ops::Range;

/// cos/sin tables `[L, half]` for the tokens of `grid` in `order` (raster when `None`): the
/// pairs split by `axes` (real dims per frame/row/col axis; Wan: `d − 4·(d/6)`, `2·(d/6)`,
/// `2·(d/6)` with θ 10000; HunyuanVideo: 16/56/56 with θ 256).
pub fn axes_rope(
    grid: (usize, usize, usize),
    order: Option<&[u32]>,
    axes: &[usize],
    theta: f64,
    half: usize,
) -> (Vec<f32>, Vec<f32>) {
    // pair index → (axis, inverse frequency)
    let mut pair_freq = Vec::with_capacity(half);
    for (axis, &d) in axes.iter().enumerate() {
        for j in 0..d / 2 {
            pair_freq.push((axis, theta.powf(-(2.0 * j as f64) / d as f64)));
        }
    }
    let (_, gh, gw) = grid;
    let l = grid.0 * gh * gw;
    let (mut cos, mut sin) = (vec![0f32; l * half], vec![0f32; l * half]);
    // 2M f64 sin/cos at 480p (≈ 80 ms on one core) at every stage switch, while the GPU waits.
    use rayon::prelude::*;
    cos.par_chunks_mut(half.max(1))
        .zip(sin.par_chunks_mut(half.max(1)))
        .enumerate()
        .for_each(|(k, (c, s))| {
            let r = order.map_or(k, |o| o[k] as usize);
            let pos = [r / (gh * gw), (r / gw) % gh, r % gw];
            for (i, &(axis, f)) in pair_freq.iter().enumerate() {
                let (sa, ca) = (pos[axis] as f64 * f).sin_cos();
                c[i] = ca as f32;
                s[i] = sa as f32;
            }
        });
    (cos, sin)
}

/// Rows `rows` of `[L, half]` tables on the device (a rank's token shard, or all of them).
pub fn upload_rope_rows<B: Backend>(
    be: &B,
    (cos, sin): (&[f32], &[f32]),
    rows: Range<usize>,
    half: usize,
) -> Result<(B::Tensor, B::Tensor)> {
    let cut = |t: &[f32]| -> Result<B::Tensor> {
        Ok(be.upload(&t[rows.start * half..rows.end * half], &[rows.len(), half])?)
    };
    Ok((cut(cos)?, cut(sin)?))
}
