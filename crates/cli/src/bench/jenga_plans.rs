//! Jenga plans for `jenga bench attention --policy jenga`: the real selection rule on the
//! benchmark's inputs, at the latent grid of the shape, with the top-k floor tuned so the
//! kept fraction lands on each requested density.
//!
//! Random q/k give near-uniform block scores, so the importance part behaves like a random
//! pick; what these plans add over `--policy random` is Jenga's structure (the curve
//! adjacency band, the first-frame or text blocks, text query rows kept dense) and the
//! on-device mask building, which is timed here against the sparse attention it feeds.

use super::attention::{random_data, Shape};
use super::time_ms;
use anyhow::{bail, Context, Result};
use jenga_carve::BlockSelect;
use jenga_carve::{AttnCtx, JengaConfig, JengaPolicy, Layout};
use jenga_tensor::{AttnPlan, BlockPlan, TensorMeta};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The Jenga setup of one benchmark shape: policy (curve, adjacency, first-frame/text
/// blocks), call context (grid, condition tokens) and the host copies of the pooled q̂/k̂.
pub struct JengaShape {
    policy: JengaPolicy,
    ctx: AttnCtx,
    layout: Layout,
    heads: usize,
    dim: usize,
    qhat: Vec<f32>,
    khat: Vec<f32>,
    /// Plans already built, by top-k floor (the search revisits them).
    built: BTreeMap<usize, Arc<BlockPlan>>,
}

/// Latent grid (frames, rows, cols) and condition tokens of the named shapes.
pub fn grid_of(sh: &Shape) -> Result<(JengaConfig, (usize, usize, usize), usize)> {
    // p = 0: the top-k floor alone sets the importance part, so k can be tuned to a density.
    let (cfg, grid, cond) = match sh.label.as_str() {
        // Wan2.1 81 frames 480x832: latent 21x60x104, patch 1x2x2; no text in self-attention.
        "wan480p" => (JengaConfig::wan(&[0.5], 0.0), (21, 30, 52), 0),
        // HunyuanVideo 129 frames 720x1280: latent 33x90x160, patch 1x2x2; 256 text tokens.
        "hunyuan720p" => (JengaConfig::hunyuan(&[0.5], 0.0, &[1.0]), (33, 45, 80), 256),
        other => {
            bail!("--policy jenga: shape {other} has no latent grid; use wan480p or hunyuan720p")
        }
    };
    if grid.0 * grid.1 * grid.2 + cond != sh.seq {
        bail!(
            "--policy jenga: shape {} has {} tokens, not {}x{}x{} + {cond}",
            sh.label,
            sh.seq,
            grid.0,
            grid.1,
            grid.2
        );
    }
    Ok((cfg, grid, cond))
}

impl JengaShape {
    /// Pools q/k once on the backend and keeps the host copies for the plan search.
    pub fn new<B: jenga_engine::EngineBackend>(
        be: &B,
        sh: &Shape,
        block: usize,
        q: &B::Tensor,
        k: &B::Tensor,
    ) -> Result<Self> {
        let (mut cfg, grid, cond_tokens) = grid_of(sh)?;
        cfg.block = block;
        let policy = JengaPolicy::new(cfg)?;
        let ctx = AttnCtx {
            step: 0,
            num_steps: 1,
            layer: 0,
            num_layers: 1,
            stage: 0,
            grid,
            cond_tokens,
        };
        let layout = Layout::new(grid.0 * grid.1 * grid.2, cond_tokens, block)?;
        let pool = |x: &B::Tensor| -> Result<Vec<f32>> {
            Ok(be.download(&be.block_mean_pool(x, block)?)?)
        };
        Ok(JengaShape {
            qhat: pool(q).context("pooling q")?,
            khat: pool(k).context("pooling k")?,
            policy,
            ctx,
            layout,
            heads: sh.heads,
            dim: sh.dim,
            built: BTreeMap::new(),
        })
    }

    /// Host plan with top-k floor `top_k` (p = 0), the CPU reference rule.
    fn plan(&mut self, top_k: usize) -> Result<Arc<BlockPlan>> {
        if let Some(p) = self.built.get(&top_k) {
            return Ok(p.clone());
        }
        let m = self.layout.video_blocks.max(1) as f64;
        // Layout::top_k truncates (1 − drop)·M; aim at the middle of the integer.
        let drop = (1.0 - (top_k as f64 + 0.5) / m).clamp(0.0, 1.0);
        let p = Arc::new(self.policy.plan_from_pooled(
            &self.qhat, &self.khat, 1, self.heads, self.dim, &self.ctx, drop,
        )?);
        self.built.insert(top_k, p.clone());
        Ok(p)
    }

    /// The plan whose density is closest to `target` (density grows with the floor, so a
    /// bisection over top-k finds it), and its floor.
    pub fn plan_near(&mut self, target: f64) -> Result<(usize, Arc<BlockPlan>)> {
        let (mut lo, mut hi) = (0usize, self.layout.video_blocks);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.plan(mid)?.density() < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let above = self.plan(lo)?;
        if lo > 0 {
            let below = self.plan(lo - 1)?;
            if (target - below.density()) < (above.density() - target) {
                return Ok((lo - 1, below));
            }
        }
        Ok((lo, above))
    }

    fn select(&self, top_k: usize) -> Result<BlockSelect> {
        Ok(BlockSelect {
            block: self.layout.block,
            scored_blocks: self.layout.video_blocks,
            p: 0.0,
            top_k,
            fixed: self.policy.fixed_plan(&self.ctx)?,
        })
    }

    /// The same selection on the device (`Backend::select_blocks`); `None` where the backend
    /// builds plans on the host only.
    pub fn device_plan<B: jenga_engine::EngineBackend>(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        top_k: usize,
    ) -> Result<Option<AttnPlan>> {
        Ok(be.select_blocks(q, k, &self.select(top_k)?)?)
    }

    /// Mask-building cost as the model pays it (ms): the block means come out of the RoPE
    /// pass that writes q and k (`rope_pooled` minus plain `rope`), then
    /// `select_blocks_pooled`. `None` where the backend has no device selection.
    pub fn fused_mask_ms<B: jenga_engine::EngineBackend>(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        top_k: usize,
        repeats: usize,
    ) -> Result<Option<f64>> {
        let (l, dh) = (q.shape()[1], q.shape()[3]);
        let table = |seed| be.upload(&random_data(seed, l * dh / 2), &[l, dh / 2]);
        let (cos, sin) = (table(11)?, table(12)?);
        let block = self.layout.block;
        let (_, qhat) = be.rope_pooled(q, &cos, &sin, block)?;
        let (_, khat) = be.rope_pooled(k, &cos, &sin, block)?;
        let (Some(qhat), Some(khat)) = (qhat, khat) else {
            return Ok(None);
        };
        let sel = self.select(top_k)?;
        if be.select_blocks_pooled(&qhat, &khat, &sel)?.is_none() {
            return Ok(None);
        }
        let plain = time_ms(be, repeats, || {
            be.rope(q, &cos, &sin)?;
            be.rope(k, &cos, &sin)?;
            Ok(())
        })?;
        let fused = time_ms(be, repeats, || {
            be.rope_pooled(q, &cos, &sin, block)?;
            be.rope_pooled(k, &cos, &sin, block)?;
            Ok(())
        })?;
        let select = time_ms(be, repeats, || {
            be.select_blocks_pooled(&qhat, &khat, &sel)?;
            Ok(())
        })?;
        Ok(Some((fused - plain).max(0.0) + select))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jenga_tensor::Backend;
    use jenga_tensor::CpuBackend;

    #[test]
    fn jenga_plans_hit_the_density_and_keep_the_fixed_blocks() {
        // Wan 480p's grid with 2 heads of 64 dims: small enough for the CPU.
        let sh = Shape {
            label: "wan480p".into(),
            heads: 2,
            seq: 32760,
            dim: 64,
        };
        let be = CpuBackend::new();
        let n = sh.heads * sh.seq * sh.dim;
        let shape = [1, sh.seq, sh.heads, sh.dim];
        let q = be.upload(&random_data(1, n), &shape).unwrap();
        let k = be.upload(&random_data(2, n), &shape).unwrap();
        let mut js = JengaShape::new(&be, &sh, 128, &q, &k).unwrap();
        let fixed = js.policy.fixed_plan(&js.ctx).unwrap();
        let floor = js.plan(0).unwrap().density();
        assert!(
            floor > 0.0 && floor < 0.2,
            "adjacency + first frame alone: {floor}"
        );
        let mut last = 0.0;
        for target in [0.2, 0.3, 0.5] {
            let (top_k, plan) = js.plan_near(target).unwrap();
            let d = plan.density();
            // One more block per row moves the density by 1/256: the search lands within that.
            assert!(
                (d - target).abs() <= 1.0 / 256.0,
                "target {target}: {d} (top-k {top_k})"
            );
            assert!(d > last);
            last = d;
            plan.validate(1, sh.heads, sh.seq, sh.seq).unwrap();
            for h in 0..sh.heads {
                for qb in 0..plan.q_blocks {
                    let r = h * plan.q_blocks + qb;
                    let row = &plan.col_idx[plan.row_ptr[r] as usize..plan.row_ptr[r + 1] as usize];
                    let want =
                        &fixed.col_idx[fixed.row_ptr[qb] as usize..fixed.row_ptr[qb + 1] as usize];
                    assert!(want.iter().all(|c| row.contains(c)), "head {h} row {qb}");
                    assert!(row.len() >= top_k.min(plan.k_blocks));
                }
            }
        }
        // The CPU backend has no device selection: the bench then times host plans only.
        assert!(js.device_plan(&be, &q, &k, 10).unwrap().is_none());
        let other = Shape {
            label: "12x32760x128".into(),
            ..sh
        };
        assert!(JengaShape::new(&be, &other, 128, &q, &k).is_err());
    }
}
