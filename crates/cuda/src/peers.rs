//! The peer policies' plan building on the GPU: Sparse VideoGen's online profiling
//! ([`jenga_carve::PolicyKernels::svg_select`]) and DraftAttention's pooling, draft map and selection
//! ([`jenga_carve::PolicyKernels::draft_select`]). Kernels: `kernels/peers.cu`. Both return an
//! [`AttnPlan::Device`] (CSR on the device, same form as the host plans, so the same attention
//! kernels run it) and a count left on the device (SVG: temporal heads; Draft: topped-up
//! rows); nothing waits for the device.
//!
//! Differences from the host (`jenga_carve::svg` / `draft`), all in summation order only:
//! SVG sums the sampled rows' masses in f32 (host f64) with `__expf`, so a head whose two
//! masses agree to ≈1e-5 relative may choose the other pattern; Draft's map is f32 on both sides
//! (the pooling is bit-identical, the dot products and softmax sums are ordered differently),
//! so an entry within rounding of the global threshold may flip.

use crate::arc_cache::ArcCache;
use crate::block_select::{CsrOut, Select, SquarePlan};
use crate::core::CudaTensor;
use crate::error::{alloc_err, dev, drv};
use crate::nvrtc;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use jenga_carve::{DraftSelect, SvgSelect};
use jenga_tensor::{AttnPlan, DeviceCount, Error, Result, TensorMeta};
use std::sync::{Arc, OnceLock};

const SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/peers.cu")
);
/// Must match `peers.cu`.
const SVG_RG: usize = 32;
const SVG_TILE: usize = 256;
const MAX_WORDS: usize = 128;
/// Largest number of keys per CTA of `svg_partial`; smaller chunks (whole tiles) when there
/// are too few (batch·head, row group) pairs to fill the GPU.
const SVG_CHUNK: usize = 2048;

struct Kernels {
    svg_partial: CudaFunction,
    svg_choose: CudaFunction,
    svg_assemble: CudaFunction,
    draft_pool: CudaFunction,
    draft_map: CudaFunction,
    draft_thresh: CudaFunction,
    draft_keep: CudaFunction,
    draft_blocks: CudaFunction,
    smem_max: usize,
}

/// Per-backend state: kernels (compiled on first use) and Draft's per-grid tables.
#[derive(Default)]
pub(crate) struct PeerState {
    kernels: OnceLock<std::result::Result<Kernels, String>>,
    /// Draft's per-grid tables on the device, while the host copy lives.
    tables: ArcCache<Vec<u32>, Arc<CudaSlice<u32>>>,
}

/// SVG's per-head profiling result, downloaded (for tests and checks).
#[derive(Clone, Debug, PartialEq)]
pub struct SvgProfile {
    /// Per (batch, head): summed kept mass of candidate 0 and 1 over the sampled rows.
    pub mass: Vec<[f32; 2]>,
    /// Per (batch, head): the chosen candidate.
    pub choice: Vec<u32>,
}

/// The peer policies' plan building, borrowed with block selection (for the CSR kernels) and
/// the core.
pub(crate) struct Peers<'a> {
    pub(crate) sel: Select<'a>,
    pub(crate) peers: &'a PeerState,
}

impl<'a> std::ops::Deref for Peers<'a> {
    type Target = Select<'a>;
    fn deref(&self) -> &Select<'a> {
        &self.sel
    }
}

impl Peers<'_> {
    fn peer_kernels(&self) -> Result<&Kernels> {
        let k = self.peers.kernels.get_or_init(|| {
            let build = || -> Result<Kernels> {
                let m = nvrtc::load_module(self.context(), "jenga_peers", SRC, &[])?;
                let f = |n: &str| nvrtc::function(&m, n);
                let smem_max = nvrtc::smem_optin(self.context())?;
                let svg_partial = f("svg_partial")?;
                // 32 rows × (Dh + 256 keys) floats: 48 KiB at Dh 128, beyond the default limit
                // with the static part.
                let want = (SVG_RG * (128 + SVG_TILE) * 4).min(smem_max);
                nvrtc::allow_dynamic_smem(&svg_partial, "svg_partial", want)?;
                Ok(Kernels {
                    svg_partial,
                    svg_choose: f("svg_choose")?,
                    svg_assemble: f("svg_assemble")?,
                    draft_pool: f("draft_pool")?,
                    draft_map: f("draft_map")?,
                    draft_thresh: f("draft_thresh")?,
                    draft_keep: f("draft_keep")?,
                    draft_blocks: f("draft_blocks")?,
                    smem_max: want,
                })
            };
            build().map_err(|e| e.to_string())
        });
        k.as_ref()
            .map_err(|e| dev(format!("peer policy kernels: {e}")))
    }

    fn check_qk(op: &'static str, q: &CudaTensor, k: &CudaTensor) -> Result<[usize; 4]> {
        let s = q.shape();
        if s.len() != 4 || k.shape() != s {
            return Err(Error::shape(
                op,
                format!(
                    "q {:?}, k {:?} (expected equal [B, L, H, Dh])",
                    s,
                    k.shape()
                ),
            ));
        }
        Ok([s[0], s[1], s[2], s[3]])
    }

    /// SVG profiling kernels: choices `[B·H]`, masses `[B·H, 2]` and the choice-1 count on the
    /// device. `Ok(None)`: shapes the kernels do not take.
    #[allow(clippy::type_complexity)]
    fn svg_profile_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &SvgSelect,
    ) -> Result<Option<(CudaSlice<u32>, CudaSlice<f32>, CudaSlice<u32>)>> {
        let [b, l, h, d] = Self::check_qk("svg_select", q, k)?;
        let video = sel.frames * sel.frame_size;
        if video > l || sel.ref_block == 0 || sel.row_hi == 0 || sel.row_hi > l {
            return Err(Error::invalid(
                "svg_select",
                format!(
                    "{} frames × {} tokens, rows below {}, for {l} tokens (ref block {})",
                    sel.frames, sel.frame_size, sel.row_hi, sel.ref_block
                ),
            ));
        }
        let bh = b * h;
        let kp = self.ptr(k);
        if bh == 0
            || sel.rows == 0
            || d == 0
            || d > 128
            || !d.is_multiple_of(8)
            || !kp.is_multiple_of(16)
            || bh > 65535
            || l >= i32::MAX as usize / 2
        {
            return Ok(None);
        }
        let kern = self.peer_kernels()?;
        let smem = SVG_RG * (d + SVG_TILE) * 4;
        if smem > kern.smem_max {
            return Ok(None);
        }
        let st = self.stream();
        let groups = sel.rows.div_ceil(SVG_RG);
        // about two CTAs per SM, in whole tiles, at most SVG_CHUNK keys each
        let want = (2 * self.sm_count()).div_ceil(bh * groups).max(1);
        let chunk = l
            .div_ceil(want)
            .next_multiple_of(SVG_TILE)
            .clamp(SVG_TILE, SVG_CHUNK);
        let chunks = l.div_ceil(chunk);
        let part = self.alloc_f32(bh * sel.rows * chunks * 4)?;
        let mass = self.alloc_f32(bh * 2)?;
        let choice = self.alloc_u32(bh)?;
        let count = self.zero_u32()?;
        let qp = self.ptr(q);
        let (pp, _) = part.device_ptr(st);
        let (mp, _) = mass.device_ptr(st);
        let (cp, _) = choice.device_ptr(st);
        let (np, _) = count.device_ptr(st);
        let i = |v: usize| v as i32;
        let (l_i, h_i, d_i, rows_i, hi_i) = (i(l), i(h), i(d), i(sel.rows), i(sel.row_hi));
        let (f_i, fs_i, v_i, rb_i, band_i, ch_i) = (
            i(sel.frames),
            i(sel.frame_size),
            i(video),
            i(sel.ref_block),
            i(sel.band_blocks.min(i32::MAX as usize)),
            i(chunk),
        );
        let chunks_i = i(chunks);
        let seed = sel.seed;
        let scale = 1.0f32 / (d as f32).sqrt();
        let mut lb = st.launch_builder(&kern.svg_partial);
        lb.arg(&qp)
            .arg(&kp)
            .arg(&pp)
            .arg(&l_i)
            .arg(&h_i)
            .arg(&d_i)
            .arg(&rows_i)
            .arg(&hi_i)
            .arg(&seed)
            .arg(&f_i)
            .arg(&fs_i)
            .arg(&v_i)
            .arg(&rb_i)
            .arg(&band_i)
            .arg(&ch_i)
            .arg(&scale);
        unsafe {
            lb.launch(LaunchConfig {
                grid_dim: (chunks as u32, bh as u32, groups as u32),
                block_dim: (SVG_TILE as u32, 1, 1),
                shared_mem_bytes: smem as u32,
            })
        }
        .map_err(drv("launching svg_partial"))?;
        let mut lb = st.launch_builder(&kern.svg_choose);
        lb.arg(&pp)
            .arg(&mp)
            .arg(&cp)
            .arg(&np)
            .arg(&rows_i)
            .arg(&chunks_i);
        unsafe {
            lb.launch(LaunchConfig {
                grid_dim: (bh as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(drv("launching svg_choose"))?;
        Ok(Some((choice, mass, count)))
    }

    /// SVG's profiling result, downloaded (tests; synchronises). `Ok(None)`: not supported.
    pub fn svg_profile(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &SvgSelect,
    ) -> Result<Option<SvgProfile>> {
        let Some((choice, mass, _)) = self.svg_profile_device(q, k, sel)? else {
            return Ok(None);
        };
        let st = self.stream();
        let m = st.clone_dtoh(&mass).map_err(drv("downloading masses"))?;
        let c = st.clone_dtoh(&choice).map_err(drv("downloading choices"))?;
        let n = c.len();
        Ok(Some(SvgProfile {
            mass: (0..n).map(|i| [m[2 * i], m[2 * i + 1]]).collect(),
            choice: c,
        }))
    }

    /// [`jenga_carve::PolicyKernels::svg_select`] on this GPU.
    pub fn svg_select_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &SvgSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        let [b, l, h, _] = Self::check_qk("svg_select", q, k)?;
        let c = &sel.candidates;
        let nb = c[0].q_blocks;
        for p in c.iter() {
            if p.batch != 1
                || p.heads != 1
                || p.q_blocks != nb
                || p.k_blocks != nb
                || p.block != c[0].block
                || p.block == 0
                || nb != l.div_ceil(p.block)
                || p.row_ptr.len() != nb + 1
            {
                return Err(Error::invalid(
                    "svg_select",
                    format!(
                        "candidate plan {}x{} heads, {}x{} blocks of {} for {l} tokens",
                        p.batch, p.heads, p.q_blocks, p.k_blocks, p.block
                    ),
                ));
            }
        }
        let bh = b * h;
        let rows = bh * nb;
        let worst = bh * c[0].col_idx.len().max(c[1].col_idx.len());
        if rows >= u32::MAX as usize || worst >= u32::MAX as usize {
            return Ok(None);
        }
        let Some((choice, _mass, count)) = self.svg_profile_device(q, k, sel)? else {
            return Ok(None);
        };
        let kern = self.peer_kernels()?;
        let (d0, d1) = (self.device_plan(&c[0])?, self.device_plan(&c[1])?);
        let st = self.stream();
        let row_ptr = self.alloc_u32(rows + 1)?;
        let col_idx = self.alloc_u32(worst)?;
        let nnz = self.alloc_u32(1)?;
        let (chp, _) = choice.device_ptr(st);
        let (r0, _) = d0.row_ptr.device_ptr(st);
        let (c0, _) = d0.col_idx.device_ptr(st);
        let (r1, _) = d1.row_ptr.device_ptr(st);
        let (c1, _) = d1.col_idx.device_ptr(st);
        let (rp, _) = row_ptr.device_ptr(st);
        let (ip, _) = col_idx.device_ptr(st);
        let (np, _) = nnz.device_ptr(st);
        let (nb_i, bh_i) = (nb as i32, bh as i32);
        let mut lb = st.launch_builder(&kern.svg_assemble);
        lb.arg(&chp)
            .arg(&r0)
            .arg(&c0)
            .arg(&r1)
            .arg(&c1)
            .arg(&rp)
            .arg(&ip)
            .arg(&np)
            .arg(&nb_i)
            .arg(&bh_i);
        unsafe {
            lb.launch(LaunchConfig {
                grid_dim: (rows.div_ceil(256) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(drv("launching svg_assemble"))?;
        let shape = SquarePlan {
            batch: b,
            heads: h,
            block: c[0].block,
            blocks: nb,
        };
        let plan = self.square_device_plan(shape, row_ptr, col_idx, nnz);
        Ok(Some((plan, self.device_count(count))))
    }

    /// Draft's tables on the device (`region_start`, then `block_regions` flattened), uploaded
    /// once while `region_start`'s Arc lives.
    fn draft_tables(&self, sel: &DraftSelect) -> Result<Arc<CudaSlice<u32>>> {
        let key = &sel.region_start;
        self.peers.tables.get_or_try_insert("draft table", key, || {
            let mut v: Vec<u32> = sel.region_start.as_ref().clone();
            v.extend(sel.block_regions.iter().flatten());
            Ok(Arc::new(
                self.stream()
                    .clone_htod(&v)
                    .map_err(alloc_err(v.len() * 4))?,
            ))
        })
    }

    /// [`jenga_carve::PolicyKernels::draft_select`] on this GPU.
    pub fn draft_select_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &DraftSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        let op = "draft_select";
        let [b, l, h, d] = Self::check_qk(op, q, k)?;
        let s = sel.region_start.len().saturating_sub(1);
        let nb = sel.block_regions.len();
        let bad_region = sel.region_start.windows(2).any(|w| w[0] > w[1])
            || sel.region_start.last().is_some_and(|&e| e as usize > l);
        let bad_block = sel
            .block_regions
            .iter()
            .any(|r| r[0] > r[1] || r[1] as usize > s);
        if s == 0 || sel.block == 0 || nb != l.div_ceil(sel.block) || bad_region || bad_block {
            return Err(Error::invalid(
                op,
                format!(
                    "{s} regions, {nb} blocks of {} for {l} tokens (regions ordered and in range: {})",
                    sel.block,
                    !(bad_region || bad_block)
                ),
            ));
        }
        let bh = b * h;
        let (ws, wb) = (s.div_ceil(32), nb.div_ceil(32));
        let rows = bh * nb;
        if bh == 0
            || d == 0
            || ws > MAX_WORDS
            || wb > MAX_WORDS
            || bh > 65535
            || rows.saturating_mul(nb) >= u32::MAX as usize
            || h * d > 65535 * 256
            || b > 65535
        {
            return Ok(None);
        }
        let kern = self.peer_kernels()?;
        let tables = self.draft_tables(sel)?;
        let st = self.stream();
        let qh = self.alloc_f32(bh * s * d)?;
        let kh = self.alloc_f32(bh * s * d)?;
        let map = self.alloc_f32(bh * s * s)?;
        let thr = self.alloc_f32(bh)?;
        let keep = self.alloc_u32(bh * s * ws)?;
        let topped = self.zero_u32()?;
        let bits = self.alloc_u32(rows * wb)?;
        let counts = self.alloc_u32(rows)?;
        let row_ptr = self.alloc_u32(rows + 1)?;
        let col_idx = self.alloc_u32(rows * nb)?;
        let nnz = self.alloc_u32(1)?;
        let (qp, kp) = (self.ptr(q), self.ptr(k));
        let (tp, _) = tables.device_ptr(st);
        let bt = tp + (4 * (s + 1)) as u64; // block_regions after region_start
        let (qhp, _) = qh.device_ptr(st);
        let (khp, _) = kh.device_ptr(st);
        let (mp, _) = map.device_ptr(st);
        let (thp, _) = thr.device_ptr(st);
        let (kep, _) = keep.device_ptr(st);
        let (top, _) = topped.device_ptr(st);
        let (bp, _) = bits.device_ptr(st);
        let (cp, _) = counts.device_ptr(st);
        let (rp, _) = row_ptr.device_ptr(st);
        let (ip, _) = col_idx.device_ptr(st);
        let (np, _) = nnz.device_ptr(st);
        let i = |v: usize| v as i32;
        let (l_i, h_i, d_i, s_i, nb_i, ws_i, wb_i) = (i(l), i(h), i(d), i(s), i(nb), i(ws), i(wb));
        let min_i = i(sel.min_per_row.min(s));
        let scale = 1.0f32 / (d as f32).sqrt();
        let (n, excl) = ((s * s) as i64, sel.exclude.min(s * s) as i64);
        let cfg = |g: (u32, u32, u32), t: u32| LaunchConfig {
            grid_dim: g,
            block_dim: (t, 1, 1),
            shared_mem_bytes: 0,
        };

        let mut lb = st.launch_builder(&kern.draft_pool);
        lb.arg(&qp)
            .arg(&kp)
            .arg(&tp)
            .arg(&qhp)
            .arg(&khp)
            .arg(&l_i)
            .arg(&h_i)
            .arg(&d_i)
            .arg(&s_i);
        unsafe { lb.launch(cfg((s as u32, b as u32, (h * d).div_ceil(256) as u32), 256)) }
            .map_err(drv("launching draft_pool"))?;

        let mut lb = st.launch_builder(&kern.draft_map);
        lb.arg(&qhp)
            .arg(&khp)
            .arg(&mp)
            .arg(&s_i)
            .arg(&d_i)
            .arg(&scale);
        unsafe { lb.launch(cfg((s.div_ceil(8) as u32, bh as u32, 1), 256)) }
            .map_err(drv("launching draft_map"))?;

        let mut lb = st.launch_builder(&kern.draft_thresh);
        lb.arg(&mp).arg(&thp).arg(&n).arg(&excl);
        unsafe { lb.launch(cfg((bh as u32, 1, 1), 1024)) }
            .map_err(drv("launching draft_thresh"))?;

        let mut lb = st.launch_builder(&kern.draft_keep);
        lb.arg(&mp)
            .arg(&thp)
            .arg(&kep)
            .arg(&top)
            .arg(&s_i)
            .arg(&ws_i)
            .arg(&min_i);
        unsafe { lb.launch(cfg((s.div_ceil(8) as u32, bh as u32, 1), 256)) }
            .map_err(drv("launching draft_keep"))?;

        let mut lb = st.launch_builder(&kern.draft_blocks);
        lb.arg(&kep)
            .arg(&bt)
            .arg(&bp)
            .arg(&cp)
            .arg(&s_i)
            .arg(&ws_i)
            .arg(&nb_i)
            .arg(&wb_i);
        unsafe { lb.launch(cfg((nb.div_ceil(8) as u32, bh as u32, 1), 256)) }
            .map_err(drv("launching draft_blocks"))?;

        self.bits_to_csr(
            CsrOut {
                counts: cp,
                bits: bp,
                row_ptr: rp,
                col_idx: ip,
                nnz: np,
            },
            rows,
            wb,
        )?;

        let shape = SquarePlan {
            batch: b,
            heads: h,
            block: sel.block,
            blocks: nb,
        };
        let plan = self.square_device_plan(shape, row_ptr, col_idx, nnz);
        Ok(Some((plan, self.device_count(topped))))
    }

    /// [`jenga_tensor::Backend::host_plan`]: device plans downloaded (synchronises).
    pub fn host_plan_of(&self, plan: &AttnPlan) -> Result<AttnPlan> {
        match plan {
            AttnPlan::Device(dp) => Ok(AttnPlan::Sparse(Arc::new(self.download_plan(dp)?))),
            p => Ok(p.clone()),
        }
    }
}
