//! Importance mask (`_build_block_index_with_importance_optimized` in the reference, wan/ and
//! hyvideo/): which key blocks a query block attends to, judged from block-mean-pooled q̂, k̂.
//!
//! Per (batch, head, query block) row:
//! 1. scores = q̂ k̂ᵀ / √d over the **video key blocks only**;
//! 2. probs = softmax(scores) over those blocks;
//! 3. sort descending, cumulative sum, `need = #(cumsum ≤ p) + 1`, `need = max(need, top_k)`
//!    with `top_k = int((1 − drop) · M)` ([`crate::layout::top_k`]);
//! 4. keep the first `need` blocks of the sorted row.
//!
//! q̂/k̂ are means over 128-token blocks with the zero padding of the last block counted (as
//! the reference and [`jenga_tensor::Backend::block_mean_pool`] do), so the last block's score
//! is slightly damped; kept for parity. Arithmetic is f32 (the reference runs bf16 on GPU), so
//! rows with near-ties at the cut-off may differ from the reference by one block.

use crate::mask::BlockMask;
use jenga_tensor::cpu::fast_exp;
use jenga_tensor::{Error, Result};
use rayon::prelude::*;

/// `out[i*nk + j] = q̂_i · k̂_j / √d` for `nq` query rows and the first `nk` key rows.
/// `qhat` is `[nq, d]`, `khat` is `[≥nk, d]`, both row-major.
pub fn block_scores(qhat: &[f32], khat: &[f32], nq: usize, nk: usize, d: usize, out: &mut [f32]) {
    assert!(qhat.len() >= nq * d && khat.len() >= nk * d && out.len() >= nq * nk);
    if nq == 0 || nk == 0 {
        return;
    }
    if d == 0 {
        out[..nq * nk].fill(0.0);
        return;
    }
    let scale = 1.0 / (d as f32).sqrt();
    // SAFETY: the asserts above bound every access: dst is nq x nk (row stride nk), lhs is
    // nq x d (row stride d), rhs is k̂ᵀ, i.e. d x nk read with column stride d, row stride 1.
    unsafe {
        gemm::gemm(
            nq,
            nk,
            d,
            out.as_mut_ptr(),
            1,
            nk as isize,
            false,
            qhat.as_ptr(),
            1,
            d as isize,
            khat.as_ptr(),
            d as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Reusable per-thread buffers for [`select_row`] (kept for API stability; the threshold
/// search needs none today).
#[derive(Default)]
pub struct RowScratch {
    _private: (),
}

/// Apply the p/top-k rule to one row of `scores` (overwritten with probabilities) and set
/// `keep[j] = true` for every selected key block `j`. Returns how many blocks were selected.
///
/// The reference sorts the row; the kept set only depends on two order statistics, so this
/// finds them by binary search on the probability's bit pattern (vectorised count/mass passes,
/// no permutation): the `p` cut `τ*` = the largest value whose "≥ τ*" mass exceeds `p`, and,
/// when `top_k` asks for more, the `top_k`-th largest value. Ties at a cut go to the lower
/// block index (a stable descending sort). Masses are summed in a different order from the
/// reference's cumsum, so a row whose cumulative sum lands within float rounding of `p` may
/// keep one block more or less.
///
/// Non-finite scores (NaN/inf from a broken upstream) keep the whole row: a dense row is
/// always correct, only slower.
pub fn select_row(
    scores: &mut [f32],
    p: f32,
    top_k: usize,
    _scratch: &mut RowScratch,
    keep: &mut [bool],
) -> usize {
    let n = scores.len();
    if n == 0 {
        return 0;
    }
    let max = lane_max(scores);
    if !max.is_finite() {
        keep[..n].fill(true);
        return n;
    }
    // Separate loops (no reduction inside the exp loop) so both vectorise.
    scores.iter_mut().for_each(|s| *s = fast_exp(*s - max));
    let sum = lane_sum(scores);
    if !sum.is_finite() || sum <= 0.0 {
        // NaN somewhere in the row.
        keep[..n].fill(true);
        return n;
    }
    let inv = 1.0 / sum;
    scores.iter_mut().for_each(|s| *s *= inv);
    // Probabilities are ≥ 0, so their bit patterns order like the values.
    let probs: &[f32] = scores;
    let top = lane_max(probs).to_bits();

    // need_p = #(cumsum ≤ p) + 1 = the smallest m whose top-m mass exceeds p.
    let need_p;
    let mut cut_p = None;
    if lane_sum(probs) <= p {
        need_p = n;
    } else {
        // Largest threshold bits t with mass(≥ t) > p; t is then a value of the row.
        let (mut lo, mut hi) = (0u32, top + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if count_mass_ge(probs, mid).1 > p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let tau = f32::from_bits(lo);
        let (above, mass_above) = count_mass_ge(probs, lo + 1);
        let ties = count_mass_ge(probs, lo).0 - above;
        // Smallest j ≥ 1 with mass_above + j·τ > p.
        let j = if tau > 0.0 {
            ((((p - mass_above) / tau).floor().max(0.0) as usize) + 1).min(ties)
        } else {
            ties
        };
        need_p = above + j.max(1);
        cut_p = Some((lo, j.max(1)));
    }
    let need = need_p.max(top_k).min(n);
    if need == n {
        keep[..n].fill(true);
        return n;
    }
    let (cut, take_ties) = match cut_p {
        Some(c) if need == need_p => c,
        _ => {
            // The need-th largest value: largest t with count(≥ t) ≥ need.
            let (mut lo, mut hi) = (0u32, top + 1);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if count_mass_ge(probs, mid).0 >= need {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            (lo, need - count_mass_ge(probs, lo + 1).0)
        }
    };
    let mut ties_left = take_ties;
    for (k, &x) in keep.iter_mut().zip(probs) {
        let b = x.to_bits();
        if b > cut {
            *k = true;
        } else if b == cut && ties_left > 0 {
            *k = true;
            ties_left -= 1;
        }
    }
    need
}

/// Count and mass of the probabilities whose bit pattern is ≥ `t` (8 lanes, vectorises).
fn count_mass_ge(v: &[f32], t: u32) -> (usize, f32) {
    let mut c = [0u32; 8];
    let mut m = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..8 {
            let ge = ch[i].to_bits() >= t;
            c[i] += ge as u32;
            m[i] += if ge { ch[i] } else { 0.0 };
        }
    }
    let (mut count, mut mass) = (c.iter().sum::<u32>() as usize, m.iter().sum::<f32>());
    for &x in rest {
        if x.to_bits() >= t {
            count += 1;
            mass += x;
        }
    }
    (count, mass)
}

/// Max over 8 lanes (vectorises; NaN handling is left to the caller's sum check).
fn lane_max(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    let mut best = rest.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in m {
        best = best.max(x);
    }
    best
}

/// Sum over 8 lanes (vectorises).
fn lane_sum(v: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..8 {
            s[i] += c[i];
        }
    }
    s.iter().sum::<f32>() + rest
}

/// Importance mask for pooled `qhat` `[batch, heads, q_blocks, d]` and `khat`
/// `[batch, heads, k_blocks, d]`: scores over the first `video_key_blocks` key blocks, rule of
/// [`select_row`]. The result is `[batch, heads, q_blocks, k_blocks]`; condition columns are
/// left false here (see [`crate::condition`]).
#[allow(clippy::too_many_arguments)]
pub fn importance_mask(
    qhat: &[f32],
    khat: &[f32],
    batch: usize,
    heads: usize,
    q_blocks: usize,
    k_blocks: usize,
    d: usize,
    video_key_blocks: usize,
    p: f32,
    top_k: usize,
) -> Result<BlockMask> {
    if qhat.len() != batch * heads * q_blocks * d || khat.len() != batch * heads * k_blocks * d {
        return Err(Error::shape(
            "importance_mask",
            format!(
                "q̂ {} / k̂ {} values for {batch}x{heads}x({q_blocks}|{k_blocks})x{d}",
                qhat.len(),
                khat.len()
            ),
        ));
    }
    if video_key_blocks > k_blocks {
        return Err(Error::invalid(
            "importance_mask",
            format!("{video_key_blocks} video key blocks of {k_blocks}"),
        ));
    }
    let mut mask = BlockMask::new(batch, heads, q_blocks, k_blocks);
    let nkv = video_key_blocks;
    mask.data
        .par_chunks_mut((q_blocks * k_blocks).max(1))
        .enumerate()
        .for_each(|(bh, m)| {
            let mut scores = vec![0f32; q_blocks * nkv];
            let q = &qhat[bh * q_blocks * d..][..q_blocks * d];
            let k = &khat[bh * k_blocks * d..][..k_blocks * d];
            block_scores(q, k, q_blocks, nkv, d, &mut scores);
            let mut scratch = RowScratch::default();
            for qb in 0..q_blocks {
                select_row(
                    &mut scores[qb * nkv..][..nkv],
                    p,
                    top_k,
                    &mut scratch,
                    &mut m[qb * k_blocks..][..k_blocks],
                );
            }
        });
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scores: &[f32], p: f32, top_k: usize) -> Vec<usize> {
        let mut s = scores.to_vec();
        let mut keep = vec![false; s.len()];
        select_row(&mut s, p, top_k, &mut RowScratch::default(), &mut keep);
        (0..keep.len()).filter(|&j| keep[j]).collect()
    }

    #[test]
    fn p_cutoff_by_hand() {
        // Scores ln(0.5), ln(0.3), ln(0.15), ln(0.05): probs 0.5, 0.3, 0.15, 0.05 (sum 1).
        let s: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|x| x.ln()).collect();
        // Order by prob: blocks 0,1,2,3; cumsum 0.5, 0.8, 0.95, 1.0.
        // p = 0.7: #(cumsum <= 0.7) = 1 -> need 2 -> {0, 1}.
        assert_eq!(row(&s, 0.7, 0), vec![0, 1]);
        // p = 0.85: cumsums <= 0.85 are 0.5, 0.8 -> need 3.
        assert_eq!(row(&s, 0.85, 0), vec![0, 1, 2]);
        // p = 0.3: none below -> need 1 (the top block is always kept).
        assert_eq!(row(&s, 0.3, 0), vec![0]);
        // Order is by probability, not position.
        let rev: Vec<f32> = s.iter().rev().copied().collect();
        assert_eq!(row(&rev, 0.7, 0), vec![2, 3]);
    }

    #[test]
    fn top_k_floor_by_hand() {
        let s: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|x| x.ln()).collect();
        // p alone would keep 1 block; top_k = 3 raises it to the 3 most probable.
        assert_eq!(row(&s, 0.3, 3), vec![0, 1, 2]);
        // top_k larger than the row keeps the row.
        assert_eq!(row(&s, 0.3, 10), vec![0, 1, 2, 3]);
        // The p rule wins when it needs more than top_k.
        assert_eq!(row(&s, 0.9, 1), vec![0, 1, 2]);
    }

    #[test]
    fn non_finite_scores_keep_the_row() {
        assert_eq!(row(&[0.0, f32::NAN, 1.0], 0.1, 0), vec![0, 1, 2]);
    }

    #[test]
    fn mask_from_tiny_pooled_vectors() {
        // d = 2, one head, 2 query blocks, 3 key blocks of which 2 are video.
        // q̂0 = (4, 0), q̂1 = (0, 4); k̂ = (1,0), (0,1), (9,9) [condition, ignored].
        // Scores /√2: row0 = (2.83, 0) -> probs (0.944, 0.056); row1 = (0, 2.83).
        let q = [4.0, 0.0, 0.0, 4.0];
        let k = [1.0, 0.0, 0.0, 1.0, 9.0, 9.0];
        let m = importance_mask(&q, &k, 1, 1, 2, 3, 2, 2, 0.5, 0).unwrap();
        assert_eq!(m.kept(0, 0, 0), vec![0]);
        assert_eq!(m.kept(0, 0, 1), vec![1]);
        // p = 0.95 needs both video blocks; never the condition column.
        let m = importance_mask(&q, &k, 1, 1, 2, 3, 2, 2, 0.95, 0).unwrap();
        assert_eq!(m.kept(0, 0, 0), vec![0, 1]);
        // top_k = 2 with tiny p: both video blocks.
        let m = importance_mask(&q, &k, 1, 1, 2, 3, 2, 2, 0.0, 2).unwrap();
        assert_eq!(m.kept(0, 0, 1), vec![0, 1]);
        assert!(importance_mask(&q, &k, 1, 1, 2, 3, 2, 4, 0.5, 0).is_err());
        assert!(importance_mask(&q[..3], &k, 1, 1, 2, 3, 2, 2, 0.5, 0).is_err());
    }

    #[test]
    fn scores_match_naive() {
        let (nq, nk, d) = (5, 7, 16);
        let q: Vec<f32> = (0..nq * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let k: Vec<f32> = (0..nk * d)
            .map(|i| ((i * 53 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let mut out = vec![0f32; nq * nk];
        block_scores(&q, &k, nq, nk, d, &mut out);
        for i in 0..nq {
            for j in 0..nk {
                let want: f32 =
                    (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f32>() / (d as f32).sqrt();
                assert!((out[i * nk + j] - want).abs() < 1e-5, "{i},{j}");
            }
        }
    }
}
