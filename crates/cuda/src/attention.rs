//! Hopper attention (`kernels/hopper_attention.cu`): wgmma tensor-core kernels built for the
//! architecture-specific `sm_90a` target, head dim 128, dense or block-sparse (CSR plan with a
//! block that is a multiple of 128). Tried first on `AttnPath::Auto` (`crate::ops::attention`); on any
//! other GPU, head dim or plan block [`crate::CudaBackend::attention_hopper`] answers `Ok(None)` and the
//! portable kernels take the call.
//!
//! Kernel (one per SM, persistent): a producer warpgroup loads Q and K/V tiles with TMA
//! (tensor maps built here, 128-byte swizzle, L2 hints) into a shared-memory ring (full/empty
//! mbarriers): 128-key tiles in 3 stages for sparse launches, 176-key tiles in 2 stages (K and V
//! on separate barriers) for dense ones; two consumer warpgroups of 64 query rows each run
//! S = QKᵀ and O += PV as `wgmma.mma_async` (P from registers), the softmax of one tile
//! overlapping the P·V product of the previous one, and take turns to issue (named barriers) so
//! one's softmax overlaps the other's GEMMs. Work items (128 query rows of one head) come from an
//! atomic counter. Sparse launches walk a work list: heads in order, and inside a head the query
//! blocks with the most kept key blocks first, built on the host from the plan (cached per plan)
//! or, for plans built on the device ([`PlanRef::Device`]), by a small kernel from the device
//! row pointers.
//! Dense launches cut the last round's query tiles into key ranges ([`dense_tail_split`]) whose
//! partial results the CTA that finishes last merges.

use crate::core::{CudaTensor, DevicePlanBufs, Gpu};
use crate::error::{alloc_err, dev, drv};
use crate::nvrtc;
use cudarc::driver::{
    sys::{self, CUdevice_attribute},
    CudaContext, CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use jenga_tensor::{BlockPlan, KeyBias, PlanGeometry, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/hopper_attention.cu")
);
/// Query rows per work item (`HB_M`) and keys per tile of sparse launches in the kernel.
pub const HOPPER_TILE: usize = 128;
/// Key tiles of dense launches: 176 keys in 2 stages (FA3's choice for head dim 128) or 128.
pub const HOPPER_DENSE_TILES: [usize; 2] = [176, 128];
/// Threads per CTA: a producer warpgroup and two consumer warpgroups.
const WS_THREADS: u32 = 384;

/// Ring stages for a key tile of `bn` keys: 3 of 128, 2 of 176.
const fn stages(bn: usize) -> usize {
    if bn == 128 {
        3
    } else {
        2
    }
}

/// Dynamic shared memory: the Q tile (128 x 128 bf16), `stages` x (K, V) tiles of `bn` x 128
/// bf16, mbarriers and 2 words (128 bytes), plus 1 KiB so the base can be rounded up to the
/// 1024-byte alignment of the swizzle pattern.
const fn smem_bytes(bn: usize) -> usize {
    32768 + stages(bn) * 2 * bn * 256 + 1024 + 128
}

static BUILD_NOTE: OnceLock<String> = OnceLock::new();

/// Why the Hopper kernels are not in use on this backend (`None` once they are built).
pub fn hopper_attention_note() -> Option<String> {
    BUILD_NOTE.get().cloned()
}

/// The compiled Hopper attention kernels of one backend.
pub struct AttentionKernels {
    /// The warp-specialized persistent kernel (TMA producer warpgroup) with 128-key tiles in 3
    /// stages (sparse launches, and dense ones on request) ...
    ws128: CudaFunction,
    /// ... and with 176-key tiles in 2 stages, K and V on separate barriers, O rescale skipped
    /// when no row max of a warp moved (dense launches).
    ws176: CudaFunction,
    /// Work order of device-built plans (`hb_device_work_order`).
    device_order: CudaFunction,
    /// Key tile of dense launches (176 or 128; `JENGA_HOPPER_DENSE_TILE`).
    dense_tile: AtomicUsize,
    /// L2 cache hints on the persistent kernel's loads (Q evict-first, K/V evict-last).
    l2hint: AtomicBool,
    /// Multiprocessors: the persistent kernel's grid.
    sms: u32,
    /// Scratch of the persistent kernel: work-item counter and split-tail counters (zeroed
    /// before each launch), and the split-tail partial results (`sms` slots).
    scratch: Mutex<Option<(CudaSlice<u32>, CudaSlice<f32>)>>,
    /// Sparse work lists, keyed by a hash of the plan's CSR row pointers and dims.
    orders: Mutex<Vec<(u64, Arc<CudaSlice<u32>>)>>,
    /// Work list of the last device-built plan (rewritten on the stream before each launch).
    device_orders: Mutex<Option<CudaSlice<u32>>>,
}

impl AttentionKernels {
    /// Build for this context; `None` (with [`hopper_attention_note`] set) on anything but a
    /// compute-capability 9.0 GPU, when `JENGA_HOPPER_ATTN=0`, or when compiling fails — the
    /// backend then runs the portable kernels.
    pub(crate) fn build(ctx: &Arc<CudaContext>) -> Option<Self> {
        match Self::try_build(ctx) {
            Ok(k) => Some(k),
            Err(e) => {
                let _ = BUILD_NOTE.set(e.to_string());
                None
            }
        }
    }

    fn try_build(ctx: &Arc<CudaContext>) -> Result<Self> {
        if std::env::var("JENGA_HOPPER_ATTN").is_ok_and(|v| v == "0") {
            return Err(dev("disabled by JENGA_HOPPER_ATTN=0"));
        }
        let (major, minor) = ctx
            .compute_capability()
            .map_err(drv("querying compute capability"))?;
        if (major, minor) != (9, 0) {
            return Err(dev(format!(
                "needs an sm_90 (Hopper) GPU, this one is sm_{major}{minor}"
            )));
        }
        let optin = nvrtc::smem_optin(ctx)?;
        let need = smem_bytes(128).max(smem_bytes(176));
        if optin < need {
            return Err(dev(format!(
                "needs {need} bytes of shared memory per block, the GPU allows {optin}"
            )));
        }
        let m = nvrtc::load_module(ctx, "jenga_hopper_attention", SRC, &[nvrtc::ARCH_SPECIFIC])?;
        let sms = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("querying the multiprocessor count"))?
            .max(1) as u32;
        let load = |name: &str, smem: usize| -> Result<CudaFunction> {
            let f = nvrtc::function(&m, name)?;
            nvrtc::allow_dynamic_smem(&f, name, smem)?;
            Ok(f)
        };
        let (s128, s176) = (smem_bytes(128), smem_bytes(176));
        let dense_tile = std::env::var("JENGA_HOPPER_DENSE_TILE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|t| HOPPER_DENSE_TILES.contains(t))
            .unwrap_or(HOPPER_DENSE_TILES[0]);
        Ok(AttentionKernels {
            ws128: load("attn_hopper_ws_d128_n128", s128)?,
            ws176: load("attn_hopper_ws_d128_n176", s176)?,
            device_order: nvrtc::function(&m, "hb_device_work_order")?,
            dense_tile: AtomicUsize::new(dense_tile),
            l2hint: AtomicBool::new(
                std::env::var("JENGA_HOPPER_L2HINT").map_or(true, |v| v != "0"),
            ),
            sms,
            scratch: Mutex::new(None),
            orders: Mutex::new(Vec::new()),
            device_orders: Mutex::new(None),
        })
    }
}

/// Sparse work list: item `row * subs + sub` for CSR row `row = (b * heads + h) * q_blocks + qb`
/// and 128-row sub-tile `sub` of that query block. Heads stay in order (their K/V stay hot in
/// L2); inside a head, rows with more kept key blocks come first (ties: plan order).
pub fn sparse_work_order(plan: &BlockPlan, subs: usize) -> Vec<u32> {
    let qb = plan.q_blocks;
    let mut out = Vec::with_capacity(plan.batch * plan.heads * qb * subs);
    let mut rows: Vec<usize> = Vec::with_capacity(qb);
    for bh in 0..plan.batch * plan.heads {
        rows.clear();
        rows.extend(bh * qb..(bh + 1) * qb);
        rows.sort_by_key(|&r| std::cmp::Reverse(plan.row_ptr[r + 1] - plan.row_ptr[r]));
        for &r in &rows {
            for s in 0..subs {
                out.push((r * subs + s) as u32);
            }
        }
    }
    out
}

/// Floats per split-tail partial slot: O (128 x 128) and (max, sum) per row.
const PART_FLOATS: usize = 128 * 128 + 2 * 128;

/// Split-key tail of a dense persistent launch of `items` query tiles on `grid` CTAs: when the
/// last round holds `r = items % grid` tiles and `r <= grid / 2`, those tiles are cut into
/// `splits` key ranges of `chunk` key tiles (of `tile` keys) each (`r * splits <= grid`, at
/// least 2 ranges). Returns `(tail_from, splits, chunk)`: items `tail_from..` are the split
/// tiles; `(items, 1, 1)` when nothing is split.
pub fn dense_tail_split(
    items: usize,
    grid: usize,
    lk: usize,
    tile: usize,
) -> (usize, usize, usize) {
    let none = (items, 1, 1);
    if grid == 0 || items <= grid || tile == 0 {
        return none;
    }
    let r = items % grid;
    let nk = lk.div_ceil(tile);
    if r == 0 || 2 * r > grid || nk < 2 {
        return none;
    }
    let want = (grid / r).min(nk);
    let chunk = nk.div_ceil(want);
    let splits = nk.div_ceil(chunk);
    if splits < 2 {
        return none;
    }
    (items - r, splits, chunk)
}

/// A `CUtensorMap` passed by value (`__grid_constant__`) to the warp-specialized kernel.
#[repr(transparent)]
struct TensorMap(sys::CUtensorMap);
// SAFETY: plain bytes, copied into the kernel's parameter space.
unsafe impl DeviceRepr for TensorMap {}

/// Tensor map over a `[batch, tokens, heads, 128]` bf16 tensor seen as 4-D (dim, head, token,
/// batch), box 64 x 1 x `rows` x 1 (one 128-byte-swizzled panel of `rows` tokens), zeros out
/// of bounds.
fn tensor_map(ptr: u64, b: usize, l: usize, h: usize, rows: u32) -> Result<TensorMap> {
    let dims: [u64; 4] = [128, h as u64, l as u64, b as u64];
    let strides: [u64; 3] = [256, (h * 256) as u64, (l * h * 256) as u64];
    let boxd: [u32; 4] = [64, 1, rows, 1];
    let estr: [u32; 4] = [1, 1, 1, 1];
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    let rc = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            4,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxd.as_ptr(),
            estr.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if rc != sys::CUresult::CUDA_SUCCESS {
        return Err(dev(format!("cuTensorMapEncodeTiled failed: {rc:?}")));
    }
    Ok(TensorMap(unsafe { map.assume_init() }))
}

/// The plan an attention kernel runs (Hopper, mma or reference), with its CSR arrays on the
/// device. Host and device-built plans are separate variants because the host can read only
/// the former's CSR: the Hopper kernel's work list is built (and cached) from the host arrays
/// of a [`PlanRef::Host`], on the device for a [`PlanRef::Device`]; the kernels themselves
/// read the same device buffers either way.
#[derive(Clone, Copy)]
pub enum PlanRef<'a> {
    /// Every query attends to every key.
    Dense,
    /// A host plan ([`jenga_tensor::AttnPlan::Sparse`]) and its uploaded copy
    /// ([`crate::CudaBackend::device_plan`], indices checked there).
    Host {
        plan: &'a BlockPlan,
        bufs: &'a DevicePlanBufs,
    },
    /// A plan built on the device ([`jenga_tensor::AttnPlan::Device`]): the host knows its
    /// geometry only.
    Device {
        geometry: PlanGeometry,
        bufs: &'a DevicePlanBufs,
    },
}

impl<'a> PlanRef<'a> {
    /// A host plan with its device copy.
    pub fn host(plan: &'a BlockPlan, bufs: &'a DevicePlanBufs) -> Self {
        PlanRef::Host { plan, bufs }
    }

    /// A device-built plan: `bufs` must hold `geometry.rows() + 1` row pointers (checked here,
    /// no device access; the columns were written by the kernel that built the plan).
    pub fn device(geometry: PlanGeometry, bufs: &'a DevicePlanBufs) -> Result<Self> {
        let rows = geometry.rows();
        if bufs.row_ptr.len() < rows + 1 {
            return Err(jenga_tensor::Error::invalid(
                "attention",
                format!(
                    "device plan has {} row pointers, its geometry needs {}",
                    bufs.row_ptr.len(),
                    rows + 1
                ),
            ));
        }
        Ok(PlanRef::Device { geometry, bufs })
    }

    /// The plan's geometry and device CSR; `None` for dense attention.
    pub fn csr(&self) -> Option<(PlanGeometry, &'a DevicePlanBufs)> {
        match *self {
            PlanRef::Dense => None,
            PlanRef::Host { plan, bufs } => Some((plan.geometry(), bufs)),
            PlanRef::Device { geometry, bufs } => Some((geometry, bufs)),
        }
    }

    /// Block size of a sparse plan; `None` for dense attention.
    pub fn block(&self) -> Option<usize> {
        self.csr().map(|(g, _)| g.block)
    }

    /// Device addresses of the CSR arrays `(row_ptr, col_idx)` and the geometry, as the
    /// kernels take them (null pointers and a zero geometry for dense attention).
    pub(crate) fn kernel_args(
        &self,
        stream: &Arc<cudarc::driver::CudaStream>,
    ) -> (u64, u64, PlanGeometry) {
        match self.csr() {
            Some((g, d)) => (
                d.row_ptr.device_ptr(stream).0,
                d.col_idx.device_ptr(stream).0,
                g,
            ),
            None => (
                0,
                0,
                PlanGeometry {
                    batch: 0,
                    heads: 0,
                    block: 0,
                    q_blocks: 0,
                    k_blocks: 0,
                },
            ),
        }
    }
}

/// Threads of `hb_device_work_order` (one CTA per (batch, head)).
const ORDER_THREADS: u32 = 256;
/// Query blocks per head that `hb_device_work_order` sorts (their lengths fill 48 KiB of shared
/// memory); longer device plans run in plain row order.
const ORDER_MAX_ROWS: usize = 12288;

/// Queue `hb_device_work_order`: the work list of [`sparse_work_order`] built on the device
/// from the CSR row pointers at `row_ptr` into `order` (`heads * q_blocks * subs` entries).
fn launch_device_work_order(
    hk: &AttentionKernels,
    stream: &Arc<cudarc::driver::CudaStream>,
    row_ptr: u64,
    order: u64,
    heads: usize,
    q_blocks: usize,
    subs: usize,
) -> Result<()> {
    if heads == 0 || q_blocks == 0 || q_blocks > ORDER_MAX_ROWS {
        return Err(dev(format!(
            "device work order of {heads} x {q_blocks} rows (at most {ORDER_MAX_ROWS} per head)"
        )));
    }
    let (qb_i, subs_i) = (q_blocks as i32, subs as i32);
    let mut lb = stream.launch_builder(&hk.device_order);
    lb.arg(&row_ptr).arg(&order).arg(&qb_i).arg(&subs_i);
    let cfg = LaunchConfig {
        grid_dim: (heads as u32, 1, 1),
        block_dim: (ORDER_THREADS, 1, 1),
        shared_mem_bytes: (q_blocks * 4) as u32,
    };
    unsafe { lb.launch(cfg) }.map_err(drv("launching hb_device_work_order"))?;
    Ok(())
}

fn plan_key(plan: &BlockPlan, subs: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for x in [plan.batch, plan.heads, plan.block, plan.q_blocks, subs] {
        eat(x as u64);
    }
    for &r in &plan.row_ptr {
        eat(r as u64);
    }
    h
}

/// The Hopper kernels (if built) borrowed with the core they run on.
pub(crate) struct Hopper<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) hopper_attn: &'a Option<AttentionKernels>,
}

impl std::ops::Deref for Hopper<'_> {
    type Target = Gpu;
    fn deref(&self) -> &Gpu {
        self.gpu
    }
}

impl Hopper<'_> {
    /// Whether the Hopper attention kernels are built and in use on `AttnPath::Auto`.
    pub fn hopper_attention_available(&self) -> bool {
        self.hopper_attn.is_some()
    }

    /// L2 cache hints on the warp-specialized kernel's TMA loads (Q evict-first, K/V
    /// evict-last); on by default (`JENGA_HOPPER_L2HINT=0` turns them off at start).
    pub fn set_hopper_attention_l2_hints(&self, on: bool) {
        if let Some(hk) = &self.hopper_attn {
            hk.l2hint.store(on, Ordering::Relaxed);
        }
    }

    /// Key tile of the Hopper kernel's dense launches (for benchmarks and tests): 176 (the
    /// default; `JENGA_HOPPER_DENSE_TILE` sets it at start) or 128 (the sparse launches' kernel);
    /// other values are ignored.
    pub fn set_hopper_attention_dense_tile(&self, tile: usize) {
        if let Some(hk) = &self.hopper_attn {
            if HOPPER_DENSE_TILES.contains(&tile) {
                hk.dense_tile.store(tile, Ordering::Relaxed);
            }
        }
    }

    /// The work list the Hopper kernel builds on the device for a device-resident plan
    /// (`geometry` gives batch, heads, q_blocks and block; the CSR row pointers are in `bufs`),
    /// downloaded (synchronises; for tests). `None` without the Hopper kernels, or for a plan
    /// the order kernel does not cover (block not a multiple of 128, too many rows per head).
    pub fn hopper_device_work_order(
        &self,
        geometry: PlanGeometry,
        bufs: &DevicePlanBufs,
    ) -> Result<Option<Vec<u32>>> {
        let Some(hk) = &self.hopper_attn else {
            return Ok(None);
        };
        PlanRef::device(geometry, bufs)?;
        if geometry.block == 0
            || !geometry.block.is_multiple_of(HOPPER_TILE)
            || geometry.q_blocks > ORDER_MAX_ROWS
        {
            return Ok(None);
        }
        let subs = geometry.block / HOPPER_TILE;
        let heads = geometry.batch * geometry.heads;
        let n = heads * geometry.q_blocks * subs;
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        let stream = self.stream();
        let mut out = stream
            .alloc_zeros::<u32>(n.max(1))
            .map_err(alloc_err(n.max(1) * 4))?;
        {
            let (rp, _) = bufs.row_ptr.device_ptr(stream);
            let (op, _) = out.device_ptr_mut(stream);
            launch_device_work_order(hk, stream, rp, op, heads, geometry.q_blocks, subs)?;
        }
        let mut v = stream
            .clone_dtoh(&out)
            .map_err(drv("downloading the device work order"))?;
        v.truncate(n);
        Ok(Some(v))
    }

    /// The Hopper (sm_90a, wgmma) kernel, if it covers this call: Hopper GPU, head dim 128,
    /// 16-byte aligned tensors, plan block a multiple of 128. `Ok(None)` otherwise.
    pub fn attention_hopper(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: PlanRef<'_>,
        bias: Option<KeyBias>,
    ) -> Result<Option<CudaTensor>> {
        let Some(hk) = &self.hopper_attn else {
            return Ok(None);
        };
        use jenga_tensor::TensorMeta;
        let (qs, ks) = (q.shape(), k.shape());
        if qs.len() != 4 || ks.len() != 4 || qs[3] != 128 {
            return Ok(None);
        }
        let (b, lq, h, dh) = (qs[0], qs[1], qs[2], qs[3]);
        let lk = ks[1];
        if plan
            .block()
            .is_some_and(|bl| bl == 0 || !bl.is_multiple_of(HOPPER_TILE))
        {
            return Ok(None);
        }
        if lq.max(lk) > (i32::MAX as usize) / 2 || h > 65535 || b > 65535 {
            return Ok(None);
        }
        let out = self.empty(qs)?;
        let ptrs = [self.ptr(q), self.ptr(k), self.ptr(v), self.ptr(&out)];
        if ptrs.iter().any(|p| !p.is_multiple_of(16)) {
            return Ok(None);
        }
        if out.numel() == 0 {
            return Ok(Some(out));
        }
        let stream = self.stream();
        let log2e = std::f32::consts::LOG2_E;
        let scale_log2 = log2e / (dh as f32).sqrt();
        let (bias_from, bias_to, bias_log2) = kernel_bias(bias);
        // Keeps the host-built work list alive until the launch is queued (stream-ordered frees).
        let mut order_buf: Option<Arc<CudaSlice<u32>>> = None;
        // A device-built plan's work list, written on the stream just before the launch.
        let mut device_orders = None;
        let (row_ptr, col_idx, g) = plan.kernel_args(stream);
        let (subs, items) = match plan.csr() {
            Some(_) => {
                let subs = g.block / HOPPER_TILE;
                let items = g.rows() * subs;
                if items > u32::MAX as usize / 2 {
                    return Ok(None);
                }
                (subs, items)
            }
            None => (1, b * h * lq.div_ceil(HOPPER_TILE)),
        };
        match plan {
            PlanRef::Dense => {}
            // Heaviest rows first, from the host CSR (built once per plan, cached).
            PlanRef::Host { plan: p, .. } => {
                let key = plan_key(p, subs);
                let mut cache = hk
                    .orders
                    .lock()
                    .map_err(|_| dev("work-list cache lock poisoned"))?;
                let buf = match cache.iter().find(|(k, _)| *k == key) {
                    Some((_, buf)) => buf.clone(),
                    None => {
                        let order = sparse_work_order(p, subs);
                        let buf = Arc::new(
                            stream
                                .clone_htod(&order)
                                .map_err(alloc_err(order.len() * 4))?,
                        );
                        if cache.len() >= 8 {
                            cache.remove(0);
                        }
                        cache.push((key, buf.clone()));
                        buf
                    }
                };
                drop(cache);
                order_buf = Some(buf);
            }
            // Heaviest rows first, sorted on the device from the device row pointers (no host
            // sync).
            PlanRef::Device { .. } if g.q_blocks <= ORDER_MAX_ROWS => {
                let mut slot = hk
                    .device_orders
                    .lock()
                    .map_err(|_| dev("device work-list lock poisoned"))?;
                if slot.as_ref().is_none_or(|b| b.len() < items) {
                    let buf =
                        unsafe { stream.alloc::<u32>(items) }.map_err(alloc_err(items * 4))?;
                    *slot = Some(buf);
                }
                let buf = slot.as_mut().expect("allocated above");
                launch_device_work_order(
                    hk,
                    stream,
                    row_ptr,
                    buf.device_ptr_mut(stream).0,
                    g.batch * g.heads,
                    g.q_blocks,
                    subs,
                )?;
                device_orders = Some(slot);
            }
            // Longer device plans: plain row order (no work list).
            PlanRef::Device { .. } => {}
        }
        let (block, q_blocks) = (g.block, g.q_blocks);
        let order_ptr = match (&order_buf, &device_orders) {
            (Some(buf), _) => buf.device_ptr(stream).0,
            (None, Some(slot)) => slot.as_ref().expect("allocated above").device_ptr(stream).0,
            (None, None) => 0u64,
        };
        let (lq_i, lk_i, h_i) = (lq as i32, lk as i32, h as i32);
        let (block_i, qb_i, subs_i) = (block as i32, q_blocks as i32, subs as i32);
        // Persistent warp-specialized kernel: one CTA per SM pulls work items.
        {
            if items > i32::MAX as usize / 2 {
                return Ok(None);
            }
            let grid_x = (items as u32).min(hk.sms);
            // Key tile: 128 for sparse launches (the plan's blocks are multiples of 128), the
            // dense tile otherwise.
            let (bn, func) = match plan {
                PlanRef::Dense if hk.dense_tile.load(Ordering::Relaxed) == 176 => (176, &hk.ws176),
                _ => (128, &hk.ws128),
            };
            // Dense: cut the last query tiles (when fewer than half the CTAs are left for
            // them) into key ranges so that the final round is balanced.
            let (tail_from, splits, chunk) = match plan {
                PlanRef::Dense => dense_tail_split(items, grid_x as usize, lk, bn),
                _ => (items, 1, 1),
            };
            let total = items + (items - tail_from) * (splits - 1);
            let (items_i, qtiles_i) = (total as i32, lq.div_ceil(HOPPER_TILE) as i32);
            let (tail_i, splits_i, chunk_i) = (tail_from as i32, splits as i32, chunk as i32);
            let l2hint = hk.l2hint.load(Ordering::Relaxed) as i32;
            let tq = tensor_map(ptrs[0], b, lq, h, HOPPER_TILE as u32)?;
            let tk = tensor_map(ptrs[1], b, lk, h, bn as u32)?;
            let tv = tensor_map(ptrs[2], b, lk, h, bn as u32)?;
            let mut scratch = hk
                .scratch
                .lock()
                .map_err(|_| dev("attention scratch lock poisoned"))?;
            if scratch.is_none() {
                let n = hk.sms as usize;
                let c = stream
                    .alloc_zeros::<u32>(n + 1)
                    .map_err(alloc_err((n + 1) * 4))?;
                let floats = n * PART_FLOATS;
                let p = stream
                    .alloc_zeros::<f32>(floats)
                    .map_err(alloc_err(floats * 4))?;
                *scratch = Some((c, p));
            }
            let (cbuf, pbuf) = scratch.as_mut().expect("allocated above");
            stream
                .memset_zeros(cbuf)
                .map_err(drv("zeroing the attention work counter"))?;
            let counter_ptr = cbuf.device_ptr(stream).0;
            let part_ptr = pbuf.device_ptr(stream).0;
            let cfg = LaunchConfig {
                grid_dim: (grid_x, 1, 1),
                block_dim: (WS_THREADS, 1, 1),
                shared_mem_bytes: smem_bytes(bn) as u32,
            };
            let mut lb = stream.launch_builder(func);
            lb.arg(&tq)
                .arg(&tk)
                .arg(&tv)
                .arg(&ptrs[3])
                .arg(&lq_i)
                .arg(&lk_i)
                .arg(&h_i)
                .arg(&scale_log2)
                .arg(&row_ptr)
                .arg(&col_idx)
                .arg(&block_i)
                .arg(&qb_i)
                .arg(&bias_from)
                .arg(&bias_log2)
                .arg(&bias_to)
                .arg(&order_ptr)
                .arg(&subs_i)
                .arg(&items_i)
                .arg(&qtiles_i)
                .arg(&tail_i)
                .arg(&splits_i)
                .arg(&chunk_i)
                .arg(&part_ptr)
                .arg(&counter_ptr)
                .arg(&l2hint);
            unsafe { lb.launch(cfg) }.map_err(drv("launching attention (Hopper kernel)"))?;
            drop(scratch);
            drop(order_buf);
            drop(device_orders);
        }
        Ok(Some(out))
    }
}

/// The attention kernels' key-bias arguments `(bias_from, bias_to, bias_log2)`: keys `>=
/// bias_from` of query rows `< bias_to` (row and key indices in the sequence order of q and k)
/// get `bias_log2` added to their exp2-domain scores. No bias: no key (`i32::MAX`) and no row.
pub(crate) fn kernel_bias(bias: Option<KeyBias>) -> (i32, i32, f32) {
    let clamp = |x: usize| x.min(i32::MAX as usize) as i32;
    match bias {
        Some(kb) => (
            clamp(kb.from_key),
            clamp(kb.to_query),
            kb.bias * std::f32::consts::LOG2_E,
        ),
        None => (i32::MAX, 0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_bias_clamps_and_converts() {
        assert_eq!(kernel_bias(None), (i32::MAX, 0, 0.0));
        let kb = KeyBias {
            from_key: 96,
            to_query: 96,
            bias: 2.0,
        };
        let (from, to, b) = kernel_bias(Some(kb));
        assert_eq!((from, to), (96, 96));
        assert!((b - 2.0 * std::f32::consts::LOG2_E).abs() < 1e-6);
        let every = KeyBias {
            to_query: usize::MAX,
            ..kb
        };
        assert_eq!(kernel_bias(Some(every)).1, i32::MAX);
    }

    #[test]
    fn work_order_is_a_permutation_heavy_rows_first_heads_in_order() {
        // 1 batch, 2 heads, 3 query blocks, 3 key blocks.
        let mask = [
            true, false, false, // h0 qb0: 1
            true, true, true, // h0 qb1: 3
            false, true, true, // h0 qb2: 2
            false, false, false, // h1 qb0: 0
            true, true, false, // h1 qb1: 2
            true, true, true, // h1 qb2: 3
        ];
        let plan = BlockPlan::from_mask(1, 2, 256, 3, 3, &mask).unwrap();
        let order = sparse_work_order(&plan, 2);
        assert_eq!(order, vec![2, 3, 4, 5, 0, 1, 10, 11, 8, 9, 6, 7]);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..12).collect::<Vec<u32>>());
    }

    #[test]
    fn dense_tail_split_balances_the_last_round() {
        // 12 x 32760 on 132 SMs: 3072 tiles, 36 in the last round, 256 key tiles.
        let (from, splits, chunk) = dense_tail_split(3072, 132, 32760, 128);
        assert_eq!(from, 3072 - 36);
        assert_eq!((splits, chunk), (3, 86));
        assert!(36 * splits <= 132 && splits * chunk >= 256 && (splits - 1) * chunk < 256);
        // Full last round, few items, short keys, or a large remainder: no split.
        assert_eq!(dense_tail_split(264, 132, 4096, 128), (264, 1, 1));
        assert_eq!(dense_tail_split(100, 132, 4096, 128), (100, 1, 1));
        assert_eq!(dense_tail_split(136, 132, 100, 128), (136, 1, 1));
        assert_eq!(dense_tail_split(132 + 100, 132, 4096, 128), (232, 1, 1));
        // 17 heads x 8 tiles (L1000) on 132: 4 left, split into the 8 key tiles.
        assert_eq!(dense_tail_split(136, 132, 1000, 128), (132, 8, 1));
        // 176-key tiles: 187 of them, 3 ranges of 63.
        assert_eq!(dense_tail_split(3072, 132, 32760, 176), (3036, 3, 63));
    }

    #[test]
    fn plan_key_tells_plans_apart() {
        let a = BlockPlan::from_mask(1, 1, 128, 2, 2, &[true, false, true, true]).unwrap();
        let b = BlockPlan::from_mask(1, 1, 128, 2, 2, &[true, true, true, false]).unwrap();
        assert_ne!(plan_key(&a, 1), plan_key(&b, 1));
        assert_eq!(plan_key(&a, 1), plan_key(&a.clone(), 1));
        assert_ne!(plan_key(&a, 1), plan_key(&a, 2));
    }
}
