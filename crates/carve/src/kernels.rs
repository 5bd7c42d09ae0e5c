//! The policy kernels: what the attention policies of this crate ask a backend to compute on
//! its device (block selection, Sparse VideoGen's profiling, DraftAttention's selection), and
//! the specs of those calls. Owned here, not by `jenga-tensor`, so the tensor crate knows no
//! policy; a backend implements [`PolicyKernels`] (the CPU with the defaults: every hook answers
//! `Ok(None)` and the policy builds its plan on the host; CUDA with its kernels).

use jenga_tensor::{AttnPlan, Backend, BlockPlan, CpuBackend, DeviceCount, Result};
use std::sync::Arc;

/// Device-side plan building for the policies (see the module docs). Every method has a
/// default: "not supported here", so a backend may implement only what it has kernels for.
pub trait PolicyKernels: Backend {
    /// Mask building on the device (see [`BlockSelect`]) for q/k `[B, L, H, Dh]`: block means
    /// (as [`Backend::block_mean_pool`]), scores, the importance rule, ∪ the fixed blocks → a
    /// plan for this backend's [`Backend::attention`], typically [`AttnPlan::Device`], with no
    /// host synchronisation. `Ok(None)`: not supported here; the caller builds the plan on the
    /// host.
    fn select_blocks(
        &self,
        _q: &Self::Tensor,
        _k: &Self::Tensor,
        _sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        Ok(None)
    }

    /// [`PolicyKernels::select_blocks`] from block means already computed (`qhat`/`khat`
    /// `[B, H, ceil(L/block), Dh]`, as [`Backend::block_mean_pool`] writes them, e.g. by
    /// `rope_pooled`). `Ok(None)`: not supported here.
    fn select_blocks_pooled(
        &self,
        _qhat: &Self::Tensor,
        _khat: &Self::Tensor,
        _sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        Ok(None)
    }

    /// Sparse VideoGen's profiling by kept softmax mass and plan on the device (see
    /// [`SvgSelect`]). No longer called by `SvgPolicy`, which chooses by the MSE of the
    /// outputs (as the reference) and places heads; kept for its kernel test. For q/k
    /// `[B, L, H, Dh]`: the plan (typically [`AttnPlan::Device`]) and the number of heads that
    /// chose candidate 1 (temporal), left on the device. `Ok(None)`: not supported here; the
    /// caller profiles on the host.
    fn svg_select(
        &self,
        _q: &Self::Tensor,
        _k: &Self::Tensor,
        _sel: &SvgSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        Ok(None)
    }

    /// DraftAttention's pooling, draft map and selection on the device (see [`DraftSelect`])
    /// for q/k `[B, L, H, Dh]`: the plan and the number of draft rows topped up, left on the
    /// device. `Ok(None)`: not supported here; the caller pools and selects on the host.
    fn draft_select(
        &self,
        _q: &Self::Tensor,
        _k: &Self::Tensor,
        _sel: &DraftSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        Ok(None)
    }

    /// A plan readable on the host: [`AttnPlan::Device`] plans built by this backend are
    /// downloaded as [`AttnPlan::Sparse`] (waits for the device); others are returned as is.
    fn host_plan(&self, plan: &AttnPlan) -> Result<AttnPlan> {
        match plan {
            AttnPlan::Device(_) => Err(jenga_tensor::Error::invalid(
                "host_plan",
                "this backend builds no device plans",
            )),
            p => Ok(p.clone()),
        }
    }
}

/// The CPU has no device: every policy builds its plans on the host.
impl PolicyKernels for CpuBackend {}

/// What [`PolicyKernels::select_blocks`] computes, from q̂/k̂ = block means of q/k over
/// `block` tokens, per (batch, head, query block) row `qb`:
/// - `qb < scored_blocks`: scores `q̂·k̂ᵀ/√d` over the first `scored_blocks` key blocks, softmax,
///   keep the most probable blocks until their mass exceeds `p` (at least `top_k`; ties at
///   the cut go to the lower block index) — the Jenga importance rule
///   ([`crate::importance::select_row`]);
/// - every row: ∪ the row `qb` of `fixed`.
#[derive(Clone, Debug)]
pub struct BlockSelect {
    /// Tokens per block (the pooling block of q̂/k̂).
    pub block: usize,
    /// Leading (video) blocks that are scored; the remaining (condition) query rows come from
    /// `fixed` alone.
    pub scored_blocks: usize,
    pub p: f32,
    pub top_k: usize,
    /// Always-kept key blocks per query block (adjacency ∪ condition ∪ first-frame), shared
    /// by every batch and head: `batch = heads = 1`, `q_blocks = k_blocks` = the block count.
    /// Backends may cache its device copy while the `Arc` lives.
    pub fixed: Arc<BlockPlan>,
}

/// What [`PolicyKernels::svg_select`] computes (Sparse VideoGen's `sample_mse` profiling, the
/// reference being `jenga_carve::svg`). Tokens `< frames·frame_size` are video tokens in
/// frame-major order, the rest condition tokens. Per (batch, head):
/// - sampled query rows: `rows` values of the splitmix64 sequence seeded with `seed` (the i-th
///   is `mix(seed + (i + 1)·0x9e3779b97f4a7c15) % row_hi`, as `jenga_carve::svg::sample_rows`);
/// - for each row, exact scores `q·kᵀ/√Dh` against every key, softmax, and the mass each
///   candidate's profiling mask keeps. Mask of candidate `c` at (query `i`, key `j`), both
///   video tokens: with `a`, `b` their indices in the candidate's layout (`c = 0`: as is,
///   `c = 1`: position-major `(f, p) → p·frames + f`), kept iff `b < frame_size` or
///   `|a / ref_block − b / ref_block| < band_blocks`; pairs with a condition token are kept;
/// - the head takes candidate 1 iff its summed mass is larger (ties → 0), and its plan rows
///   are that candidate's (`candidates[c]`, one (batch, head) each, same geometry).
#[derive(Clone, Debug)]
pub struct SvgSelect {
    pub frames: usize,
    pub frame_size: usize,
    pub rows: usize,
    pub row_hi: usize,
    pub seed: u64,
    pub ref_block: usize,
    pub band_blocks: usize,
    pub candidates: [Arc<jenga_tensor::BlockPlan>; 2],
}

/// What [`PolicyKernels::draft_select`] computes (DraftAttention, the reference being
/// `jenga_carve::draft`). Per (batch, head):
/// - q̂/k̂: means over the `S` regions (region `r` = token positions
///   `region_start[r]..region_start[r + 1]`, f32 sum in token order times the reciprocal of
///   the count);
/// - draft map `softmax(q̂ k̂ᵀ/√Dh)` (`S × S`, per row);
/// - keep the entries `≥` the `exclude`-th smallest of the whole map (all when `exclude` is
///   0), then every row keeping fewer than `min(min_per_row, S)` entries also keeps its
///   `min_per_row` largest (ties → lower index) and counts as topped up;
/// - plan block `i` (of `block` tokens) keeps block `j` iff a region of `i` keeps a region of
///   `j`, where `block_regions[i] = [lo, hi, cond]`: the regions `lo..hi` it overlaps and
///   whether it holds condition tokens (condition blocks: full rows, and kept in every row).
#[derive(Clone, Debug)]
pub struct DraftSelect {
    pub region_start: Arc<Vec<u32>>,
    pub block_regions: Arc<Vec<[u32; 3]>>,
    pub block: usize,
    pub exclude: usize,
    pub min_per_row: usize,
}
