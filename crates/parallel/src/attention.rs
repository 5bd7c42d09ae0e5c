//! Sequence parallelism at the attention seam: the model runs on its rank's tokens, and only
//! self-attention sees the whole sequence. A wrapper policy, so models and policies are
//! unchanged (as `wan/distributed/xdit_context_parallel.py` swaps only the attention).
//!
//! - **Ulysses**: one all-to-all turns `[B, L/U, H, Dh]` (q, k and v stacked) into
//!   `[B, L, H/U, Dh]`; the wrapped policy plans and attends its heads over the whole
//!   sequence in the curve order (Jenga, SVG and Draft plans are per head, so each rank's
//!   plans are the single device's for those heads); one all-to-all brings the output back.
//! - **Ring**: for what Ulysses cannot divide. k and v (and q, so the policy plans the whole
//!   sequence as one device does) are all-gathered over the ring; each rank computes only its
//!   own query rows, against every key, with its rows of the whole-sequence plan. Same bytes
//!   as a ring of K/V chunks, but no overlap of transfer and compute (a chunked ring with
//!   log-sum-exp merging would overlap; not built yet).

use crate::layout::ParallelLayout;
use jenga_carve::{AttentionPolicy, AttnCtx, PlanHook, PolicyKernels};
use jenga_tensor::{AttnPlan, Communicator, Error, KeyBias, Result, TensorMeta};
use std::ops::Range;
use std::sync::Arc;

/// The policy a sequence-parallel rank hands its model: `inner` (the run's policy) for the
/// plans, collectives around it.
pub struct SeqAttention<'a, B: PolicyKernels> {
    pub inner: &'a dyn AttentionPolicy<B>,
    pub comm: &'a dyn Communicator<B>,
    pub layout: ParallelLayout,
    /// This stage's token shards, one per sequence rank.
    pub shards: &'a [Range<usize>],
}

impl<B: PolicyKernels> SeqAttention<'_, B> {
    fn shard_of(&self, rank: usize) -> Range<usize> {
        self.shards[self.layout.seq_index(rank)].clone()
    }
    /// Tokens held by a Ulysses group (contiguous: its members are neighbours in shard order).
    fn group_range(&self, group: &[usize]) -> Range<usize> {
        self.shard_of(group[0]).start..self.shard_of(*group.last().expect("group")).end
    }

    /// `x` `[B, Lr, H, W]` (this rank's tokens, every head) → `[B, Lu, H/U, W]` (the group's
    /// tokens, this rank's heads). `tok_dim`/`head_dim` name where tokens and heads sit
    /// (the block means are `[B, H, blocks, W]`); `len(rank)` is a member's extent along the
    /// token dim.
    fn tokens_to_heads(
        &self,
        be: &B,
        x: &B::Tensor,
        group: &[usize],
        tok_dim: usize,
        head_dim: usize,
        len: &dyn Fn(usize) -> usize,
    ) -> Result<B::Tensor> {
        let n = self.comm.world();
        let s = x.shape().to_vec();
        let hu = s[head_dim] / group.len();
        let (mut send, mut recv) = (vec![None; n], vec![None; n]);
        for (j, &r) in group.iter().enumerate() {
            send[r] = Some(be.narrow(x, head_dim, j * hu, hu)?);
            let mut shape = s.clone();
            shape[head_dim] = hu;
            shape[tok_dim] = len(r);
            recv[r] = Some(shape);
        }
        let got = self.comm.exchange(be, &send, &recv)?;
        let parts = group_parts(got, group)?;
        be.cat(&parts.iter().collect::<Vec<_>>(), tok_dim)
    }

    /// The inverse for the output: `[B, Lu, H/U, Dh]` → `[B, Lr, H, Dh]`.
    fn heads_to_tokens(&self, be: &B, o: &B::Tensor, group: &[usize]) -> Result<B::Tensor> {
        let n = self.comm.world();
        let s = o.shape().to_vec();
        let base = self.shard_of(group[0]).start;
        let mine = self.shard_of(self.comm.rank()).len();
        let (mut send, mut recv) = (vec![None; n], vec![None; n]);
        for &r in group {
            let sh = self.shard_of(r);
            send[r] = Some(be.narrow(o, 1, sh.start - base, sh.len())?);
            recv[r] = Some(vec![s[0], mine, s[2], s[3]]);
        }
        let got = self.comm.exchange(be, &send, &recv)?;
        let parts = group_parts(got, group)?;
        be.cat(&parts.iter().collect::<Vec<_>>(), 2)
    }

    fn ring_gather(
        &self,
        be: &B,
        x: &B::Tensor,
        ring: &[usize],
        dim: usize,
        len: &dyn Fn(usize) -> usize,
    ) -> Result<B::Tensor> {
        gather_cat(self.comm, be, x, ring, dim, len)
    }
}

/// `x` all-gathered over `group` and concatenated along `dim` in group order, member `r`
/// being `len(r)` long there (a group of one: `x` itself).
pub(crate) fn gather_cat<B: PolicyKernels>(
    comm: &dyn Communicator<B>,
    be: &B,
    x: &B::Tensor,
    group: &[usize],
    dim: usize,
    len: &dyn Fn(usize) -> usize,
) -> Result<B::Tensor> {
    if group.len() == 1 {
        return Ok(x.clone());
    }
    let shapes: Vec<Vec<usize>> = group
        .iter()
        .map(|&r| {
            let mut s = x.shape().to_vec();
            s[dim] = len(r);
            s
        })
        .collect();
    let parts = comm.all_gather(be, x, group, &shapes)?;
    be.cat(&parts.iter().collect::<Vec<_>>(), dim)
}

/// The entries of `group`'s members, in group order.
fn group_parts<T>(mut got: Vec<Option<T>>, group: &[usize]) -> Result<Vec<T>> {
    group
        .iter()
        .map(|&r| {
            got[r]
                .take()
                .ok_or_else(|| Error::invalid("sequence parallel", "a rank's part went missing"))
        })
        .collect()
}

fn split3<B: PolicyKernels>(
    be: &B,
    x: &B::Tensor,
    dh: usize,
) -> Result<(B::Tensor, B::Tensor, B::Tensor)> {
    Ok((
        be.narrow(x, 3, 0, dh)?,
        be.narrow(x, 3, dh, dh)?,
        be.narrow(x, 3, 2 * dh, dh)?,
    ))
}

/// A plan for the whole sequence, cut to the query blocks of `rows` (which start on a block).
fn plan_rows<B: PolicyKernels>(be: &B, plan: &AttnPlan, rows: &Range<usize>) -> Result<AttnPlan> {
    let plan = match plan {
        AttnPlan::Device(_) => be.host_plan(plan)?,
        p => p.clone(),
    };
    match &plan {
        AttnPlan::Sparse(p) => {
            if !rows.start.is_multiple_of(p.block) {
                return Err(Error::invalid(
                    "ring attention",
                    format!(
                        "query rows start at token {}, not on a plan block of {}",
                        rows.start, p.block
                    ),
                ));
            }
            let n = rows.len().div_ceil(p.block);
            Ok(AttnPlan::Sparse(Arc::new(
                p.query_rows(rows.start / p.block, n)?,
            )))
        }
        p => Ok(p.clone()),
    }
}

impl<B: PolicyKernels> SeqAttention<'_, B> {
    /// Joint attention (condition tokens after the video: HunyuanVideo's text). Every rank
    /// holds the whole text: the video rows go through the all-to-all, the text rows of this
    /// rank's heads are cut locally; after the policy's call the video rows go back and the
    /// text rows are gathered over the heads (every rank continues the whole text stream).
    #[allow(clippy::too_many_arguments)]
    fn attend_joint(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        ctx: &AttnCtx,
        hook: &PlanHook<'_, B>,
        ug: &[usize],
    ) -> Result<B::Tensor> {
        let me = self.comm.rank();
        if self.layout.ring > 1 {
            return Err(Error::invalid(
                "ring attention",
                "joint attention (text tokens in self-attention) runs with --ulysses, not --ring",
            ));
        }
        let s = q.shape().to_vec();
        let (h, dh, lt) = (s[2], s[3], ctx.cond_tokens);
        let lr = self.shard_of(me).len();
        if s[1] != lr + lt {
            return Err(Error::shape(
                "sequence parallel",
                format!(
                    "rank {me} attends {} tokens, its shard {lr} + {lt} text",
                    s[1]
                ),
            ));
        }
        if !h.is_multiple_of(ug.len()) {
            return Err(Error::invalid(
                "ulysses",
                format!("{h} heads over {} ranks", ug.len()),
            ));
        }
        let hu = h / ug.len();
        let mine = ug.iter().position(|&r| r == me).expect("in its group");
        let x = be.cat(&[q, k, v], 3)?;
        let vid = be.narrow(&x, 1, 0, lr)?;
        let txt = be.narrow(&be.narrow(&x, 1, lr, lt)?, 2, mine * hu, hu)?;
        let vid = self.tokens_to_heads(be, &vid, ug, 1, 2, &|r| self.shard_of(r).len())?;
        let joint = be.cat(&[&vid, &txt], 1)?;
        let (q, k, v) = split3(be, &joint, dh)?;
        let o = self.inner.attend_hooked(be, &q, &k, &v, None, ctx, hook)?;
        let lv = o.shape()[1] - lt;
        let ov = self.heads_to_tokens(be, &be.narrow(&o, 1, 0, lv)?, ug)?;
        let ot = gather_cat(self.comm, be, &be.narrow(&o, 1, lv, lt)?, ug, 2, &|_| hu)?;
        be.cat(&[&ov, &ot], 1)
    }
}

impl<B: PolicyKernels> AttentionPolicy<B> for SeqAttention<'_, B> {
    fn delegate(&self) -> Option<&dyn AttentionPolicy<B>> {
        Some(self.inner)
    }
    fn name(&self) -> String {
        self.inner.name()
    }

    fn attend_hooked(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        pooled: Option<(&B::Tensor, &B::Tensor)>,
        ctx: &AttnCtx,
        hook: &PlanHook<'_, B>,
    ) -> Result<B::Tensor> {
        let me = self.comm.rank();
        let ug = self.layout.ulysses_group(me);
        if ctx.cond_tokens > 0 {
            return self.attend_joint(be, q, k, v, ctx, hook, &ug);
        }
        let s = q.shape().to_vec();
        let (h, dh) = (s[2], s[3]);
        if s[1] != self.shard_of(me).len() {
            return Err(Error::shape(
                "sequence parallel",
                format!(
                    "rank {me} attends {} tokens, its shard is {:?}",
                    s[1],
                    self.shard_of(me)
                ),
            ));
        }
        // The block means are exact for the whole sequence when every shard starts on a
        // block of them; otherwise the policy computes its own from the gathered q/k.
        let m = self.inner.pooled_block(ctx);
        let pooled = pooled
            .filter(|_| m.is_some_and(|m| self.shards.iter().all(|r| r.start.is_multiple_of(m))));
        let nblk = |len: usize| len.div_ceil(m.unwrap_or(1));

        // 1. Ulysses: this rank's tokens of every head → the group's tokens of its heads.
        let (q, k, v, pooled) = if ug.len() > 1 {
            if !h.is_multiple_of(ug.len()) {
                return Err(Error::invalid(
                    "ulysses",
                    format!("{h} heads over {} ranks", ug.len()),
                ));
            }
            let x = be.cat(&[q, k, v], 3)?;
            let x = self.tokens_to_heads(be, &x, &ug, 1, 2, &|r| self.shard_of(r).len())?;
            let (q, k, v) = split3(be, &x, dh)?;
            let pooled = match pooled {
                Some((qh, kh)) => {
                    let p = be.cat(&[qh, kh], 3)?;
                    let p =
                        self.tokens_to_heads(be, &p, &ug, 2, 1, &|r| nblk(self.shard_of(r).len()))?;
                    Some((be.narrow(&p, 3, 0, dh)?, be.narrow(&p, 3, dh, dh)?))
                }
                None => None,
            };
            (q, k, v, pooled)
        } else {
            (
                q.clone(),
                k.clone(),
                v.clone(),
                pooled.map(|(a, b)| (a.clone(), b.clone())),
            )
        };
        let pooled_ref = pooled.as_ref().map(|(a, b)| (a, b));

        // 2. The attention of this rank's heads: the policy's own call, or in a ring this
        // rank's query rows against every key.
        let ring = self.layout.ring_group(me);
        let o = if ring.len() > 1 {
            let urange = |r: usize| self.group_range(&self.layout.ulysses_group(r));
            let x = be.cat(&[&q, &k, &v], 3)?;
            let full = self.ring_gather(be, &x, &ring, 1, &|r| urange(r).len())?;
            let (qf, kf, vf) = split3(be, &full, dh)?;
            let pooled_full = match pooled_ref {
                Some((qh, kh)) => {
                    let p = be.cat(&[qh, kh], 3)?;
                    let p = self.ring_gather(be, &p, &ring, 2, &|r| nblk(urange(r).len()))?;
                    Some((be.narrow(&p, 3, 0, dh)?, be.narrow(&p, 3, dh, dh)?))
                }
                None => None,
            };
            let plan = hook(be, &qf, &kf, ctx, &mut || {
                self.inner
                    .plan_pooled(be, &qf, &kf, pooled_full.as_ref().map(|(a, b)| (a, b)), ctx)
            })?;
            let rows = urange(me);
            let local = plan_rows(be, &plan, &rows)?;
            let bias = self.inner.key_bias(ctx).map(|b| KeyBias {
                to_query: b.to_query.saturating_sub(rows.start),
                ..b
            });
            be.attention(&q, &kf, &vf, &local, bias)?
        } else {
            self.inner
                .attend_hooked(be, &q, &k, &v, pooled_ref, ctx, hook)?
        };

        // 3. Back to this rank's tokens of every head.
        if ug.len() > 1 {
            self.heads_to_tokens(be, &o, &ug)
        } else {
            Ok(o)
        }
    }
}
