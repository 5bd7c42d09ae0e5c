//! `CudaBackend`: the `jenga_tensor::Backend` ops on one GPU, one stream, bf16 storage.
//!
//! Everything is queued on a single stream, so allocations use the stream-ordered pool
//! (`cuMemAllocAsync`) and a tensor dropped right after the launch that reads it is freed only
//! after that launch: no synchronisation inside ops. cudarc's per-buffer event tracking is off
//! for the same reason (it adds two events per launch argument and buys nothing on one stream).

use crate::attention::PlanRef;
use crate::error::{alloc_err, dev, drv};
use crate::gemm::{Epilogue, Gemm, GemmPtrs, GemmShape};
use crate::{device, nvrtc};
use cudarc::driver::{
    sys::CUdevice_attribute, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr,
    LaunchConfig, PushKernelArg,
};
use half::bf16;
use jenga_tensor::{
    check_order, Act, AttnPlan, Backend, BlockPlan, BlockSelect, Error, KeyBias, Result, TensorMeta,
};
use std::sync::Arc;

const OPS_SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/elementwise.cu"),
    "\n",
    include_str!("../kernels/norm.cu"),
    "\n",
    include_str!("../kernels/vec.cu")
);
const ATTN_NAIVE_SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/attention_naive.cu")
);
const MMA_ATTN_SRC: &str = concat!(
    include_str!("../kernels/common.cuh"),
    "\n",
    include_str!("../kernels/mma_attention.cu")
);
/// Query rows / keys per CTA tile of `mma_attention.cu`.
const MMA_TILE: usize = 64;
/// Must match `attention_naive.cu`.
const NAIVE_WARPS: usize = 8;
const NAIVE_TK: usize = 32;
pub(crate) const NAIVE_MAX_DH: usize = 128;

/// A contiguous bf16 tensor on the device: a shared buffer, an element offset into it (so
/// leading-dim `narrow`s and `reshape`s are free) and a shape.
#[derive(Clone)]
pub struct CudaTensor {
    buf: Arc<CudaSlice<bf16>>,
    offset: usize,
    shape: Vec<usize>,
}

impl std::fmt::Debug for CudaTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaTensor(bf16 {:?})", self.shape)
    }
}

impl TensorMeta for CudaTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl CudaTensor {
    /// Device address of the first element (for kernels written elsewhere in the crate).
    pub fn device_ptr(&self, stream: &CudaStream) -> u64 {
        let (p, _sync) = self.buf.device_ptr(stream);
        p + (self.offset * std::mem::size_of::<bf16>()) as u64
    }
}

struct Kernels {
    act: CudaFunction,
    bias_act: CudaFunction,
    add_gated: CudaFunction,
    axpby: CudaFunction,
    rope: CudaFunction,
    copy_rows: CudaFunction,
    gather: CudaFunction,
    pool: CudaFunction,
    sum_abs: CudaFunction,
    layer_norm: CudaFunction,
    norm_modulate: CudaFunction,
    rms_norm: CudaFunction,
    attn_naive: CudaFunction,
    act_v8: CudaFunction,
    bias_act_v8: CudaFunction,
    add_gated_v8: CudaFunction,
    axpby_v8: CudaFunction,
    rope_v8: CudaFunction,
    rope_pool_v8: CudaFunction,
    layer_norm_v8: CudaFunction,
    norm_modulate_v8: CudaFunction,
    rms_norm_v8: CudaFunction,
    add_gated_norm_v8: CudaFunction,
    rms_rope_v8: CudaFunction,
    rms_rope_pool_v8: CudaFunction,
    patchify: CudaFunction,
    unpatchify: CudaFunction,
}

/// A `BlockPlan`'s CSR arrays on the device: uploaded from a host plan (`device_plan`), or
/// built on the device (`select_blocks`, [`AttnPlan::Device`]); the attention kernels get them
/// through a [`crate::PlanRef`]. For device-built plans `col_idx` is allocated for every block
/// (only `row_ptr[rows]` entries are valid).
pub struct DevicePlanBufs {
    pub row_ptr: CudaSlice<u32>,
    pub col_idx: CudaSlice<u32>,
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// cuBLASLt linears: cached descriptors and tuned algorithms (`crate::gemm`).
    pub(crate) gemm: Gemm,
    k: Kernels,
    name: String,
    sm_count: usize,
    /// Plans are reused across the layers of a step: upload each once (keyed by the Arc).
    plans: crate::arc_cache::ArcCache<BlockPlan, Arc<DevicePlanBufs>>,
    /// Which attention kernels may run (tests and selftest pin one).
    attn_path: std::sync::atomic::AtomicU8,
    /// Tensor-core kernels for head dim 64 / 128 (sm_80+; `None` on older GPUs).
    mma_attn: Option<MmaKernels>,
    /// Hopper wgmma attention (sm_90 only; `None` elsewhere or if it failed to build).
    pub(crate) hopper_attn: Option<crate::attention::AttentionKernels>,
    /// Block selection on the device (`crate::block_select`).
    pub(crate) select: crate::block_select::SelectState,
    /// Peer policies' plan building on the device (`crate::peers`).
    pub(crate) peers: crate::peers::PeerState,
    pub(crate) op_times: crate::op_times::OpTimes,
}

struct MmaKernels {
    /// 64-row CTAs, synchronous tile loads: any plan block that is a multiple of 64.
    simple: (CudaFunction, CudaFunction),
    /// 128-row CTAs, cp.async double buffering: dense, or plan blocks multiple of 128.
    piped: (CudaFunction, CudaFunction),
}

/// Dynamic shared memory of the pipelined mma kernel: 2 stages x (K, V) x 64 rows x (Dh + 8).
fn mma_piped_smem(dh: usize) -> usize {
    2 * 2 * MMA_TILE * (dh + 8) * std::mem::size_of::<bf16>()
}

/// Attention kernel selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnPath {
    /// Fastest available: Hopper kernels, then the portable tensor-core kernel, then the
    /// reference kernel for what neither covers.
    Auto = 0,
    /// The portable mma.sync kernels where they apply (pipelined first), else the reference.
    Mma = 1,
    /// Only the simple (unpipelined) mma.sync kernel, else the reference.
    MmaSimple = 3,
    /// The reference kernel only.
    Naive = 2,
}

fn elems_cfg(n: usize, sm_count: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, sm_count.max(1) * 32);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Whether the 8-wide kernels apply: every address 16-byte aligned (null = absent is fine) and
/// every count a multiple of 8.
fn vec8(ptrs: &[u64], counts: &[usize]) -> bool {
    ptrs.iter().all(|p| p.is_multiple_of(16)) && counts.iter().all(|c| c.is_multiple_of(8))
}

/// Row-norm launch for the register-resident kernels: one 16-byte chunk per thread when the
/// row fits 1024 threads, up to `VEC_NORM_CHUNKS` otherwise. `None` if the row is too long.
fn norm_v8_cfg(rows: usize, d: usize) -> Option<LaunchConfig> {
    const VEC_NORM_CHUNKS: usize = 4; // NCH in vec.cu
    let d8 = d / 8;
    let per_thread = d8.div_ceil(1024);
    if per_thread > VEC_NORM_CHUNKS || d8 == 0 {
        return None;
    }
    let threads = d8.div_ceil(per_thread).div_ceil(32) * 32;
    Some(LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn act_code(act: Act) -> i32 {
    match act {
        Act::None => 0,
        Act::GeluTanh => 1,
        Act::Silu => 2,
    }
}

impl CudaBackend {
    /// Open device `ordinal`, compile (or load cached) kernels and create the cuBLASLt handle.
    /// Returns `Err` — never panics — when the driver, NVRTC, cuBLASLt or the device is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        let ctx = device::open_context(ordinal)?;
        // One stream: cross-stream event tracking is pure overhead (see module docs).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("creating a CUDA stream"))?;
        Self::keep_freed_memory_pooled(ordinal);
        device::preload_toolkit_libs();
        let present =
            std::panic::catch_unwind(|| unsafe { cudarc::cublaslt::sys::is_culib_present() })
                .unwrap_or(false);
        if !present {
            return Err(dev(
                "libcublasLt could not be loaded (CUDA 13 cuBLAS runtime needed)",
            ));
        }
        let gemm = std::panic::catch_unwind(|| Gemm::new(stream.clone()))
            .map_err(|_| dev("cuBLASLt initialisation panicked"))??;

        let (major, minor) = ctx
            .compute_capability()
            .map_err(drv("querying compute capability"))?;
        let ops = nvrtc::load_module(&ctx, "jenga_ops", OPS_SRC, &[])?;
        let attn = nvrtc::load_module(&ctx, "jenga_attention_naive", ATTN_NAIVE_SRC, &[])?;
        let f = nvrtc::function;
        let k = Kernels {
            act: f(&ops, "act_bf16")?,
            bias_act: f(&ops, "bias_act_bf16")?,
            add_gated: f(&ops, "add_gated_bf16")?,
            axpby: f(&ops, "axpby_bf16")?,
            rope: f(&ops, "rope_bf16")?,
            copy_rows: f(&ops, "copy_rows_bf16")?,
            gather: f(&ops, "gather_tokens_bf16")?,
            pool: f(&ops, "block_mean_pool_bf16")?,
            sum_abs: f(&ops, "sum_abs_bf16")?,
            layer_norm: f(&ops, "layer_norm_bf16")?,
            norm_modulate: f(&ops, "norm_modulate_bf16")?,
            rms_norm: f(&ops, "rms_norm_bf16")?,
            attn_naive: f(&attn, "attn_naive_bf16")?,
            act_v8: f(&ops, "act_v8")?,
            bias_act_v8: f(&ops, "bias_act_v8")?,
            add_gated_v8: f(&ops, "add_gated_v8")?,
            axpby_v8: f(&ops, "axpby_v8")?,
            rope_v8: f(&ops, "rope_v8")?,
            rope_pool_v8: f(&ops, "rope_pool_v8")?,
            layer_norm_v8: f(&ops, "layer_norm_v8")?,
            norm_modulate_v8: f(&ops, "norm_modulate_v8")?,
            rms_norm_v8: f(&ops, "rms_norm_v8")?,
            add_gated_norm_v8: f(&ops, "add_gated_norm_v8")?,
            rms_rope_v8: f(&ops, "rms_rope_v8")?,
            rms_rope_pool_v8: f(&ops, "rms_rope_pool_v8")?,
            patchify: f(&ops, "patchify_bf16")?,
            unpatchify: f(&ops, "unpatchify_bf16")?,
        };
        // mma.sync with bf16 operands needs sm_80.
        let mma_attn = if major >= 8 {
            let m = nvrtc::load_module(&ctx, "jenga_mma_attention", MMA_ATTN_SRC, &[])?;
            let piped = (f(&m, "attn_mma2_d64")?, f(&m, "attn_mma2_d128")?);
            nvrtc::allow_dynamic_smem(&piped.0, "attn_mma2_d64", mma_piped_smem(64))?;
            nvrtc::allow_dynamic_smem(&piped.1, "attn_mma2_d128", mma_piped_smem(128))?;
            Some(MmaKernels {
                simple: (f(&m, "attn_mma_d64")?, f(&m, "attn_mma_d128")?),
                piped,
            })
        } else {
            None
        };
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("querying SM count"))? as usize;
        let gpu = ctx.name().map_err(drv("querying device name"))?;
        let hopper_attn = crate::attention::AttentionKernels::build(&ctx);
        Ok(CudaBackend {
            name: format!("cuda:{ordinal} {gpu} (sm_{major}{minor})"),
            ctx,
            stream,
            gemm,
            k,
            sm_count,
            plans: Default::default(),
            attn_path: std::sync::atomic::AtomicU8::new(AttnPath::Auto as u8),
            mma_attn,
            select: Default::default(),
            peers: Default::default(),
            op_times: Default::default(),
            hopper_attn,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    /// Pin the attention kernels (for checking the fast ones against the reference).
    pub fn set_attention_path(&self, path: AttnPath) {
        self.attn_path
            .store(path as u8, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn attention_path(&self) -> AttnPath {
        match self.attn_path.load(std::sync::atomic::Ordering::Relaxed) {
            1 => AttnPath::Mma,
            2 => AttnPath::Naive,
            3 => AttnPath::MmaSimple,
            _ => AttnPath::Auto,
        }
    }

    /// The portable tensor-core kernel, if it covers this call (head dim 64/128, 16-byte
    /// aligned tensors, plan block a multiple of 64).
    pub fn attention_mma(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: PlanRef<'_>,
        bias: Option<KeyBias>,
    ) -> Result<Option<CudaTensor>> {
        let Some(mk) = &self.mma_attn else {
            return Ok(None);
        };
        let (b, lq, h, dh) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let lk = k.shape[1];
        if dh != 64 && dh != 128 {
            return Ok(None);
        }
        let block = plan.block();
        let piped = self.attention_path() != AttnPath::MmaSimple
            && block.is_none_or(|bl| bl.is_multiple_of(2 * MMA_TILE));
        if !piped && block.is_some_and(|bl| !bl.is_multiple_of(MMA_TILE)) {
            return Ok(None);
        }
        let pair = if piped { &mk.piped } else { &mk.simple };
        let f = if dh == 64 { &pair.0 } else { &pair.1 };
        let (rows, threads, smem) = if piped {
            (2 * MMA_TILE, 256, mma_piped_smem(dh))
        } else {
            (MMA_TILE, 128, 0)
        };
        let out = self.empty(&q.shape)?;
        let ptrs = [self.ptr(q), self.ptr(k), self.ptr(v), self.ptr(&out)];
        if !vec8(&ptrs, &[]) {
            return Ok(None);
        }
        if out.numel() == 0 {
            return Ok(Some(out));
        }
        let log2e = std::f32::consts::LOG2_E;
        let (bias_from, bias_log2) = match bias {
            Some(kb) => (kb.from_key.min(i32::MAX as usize) as i32, kb.bias * log2e),
            None => (i32::MAX, 0.0),
        };
        let (row_ptr, col_idx, g) = plan.kernel_args(&self.stream);
        let (block, q_blocks) = (g.block, g.q_blocks);
        let cfg = LaunchConfig {
            grid_dim: (lq.div_ceil(rows) as u32, h as u32, b as u32),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        self.launch(
            f,
            cfg,
            "attention (mma kernel)",
            &[
                KArg::U64(ptrs[0]),
                KArg::U64(ptrs[1]),
                KArg::U64(ptrs[2]),
                KArg::U64(ptrs[3]),
                KArg::I32(lq as i32),
                KArg::I32(lk as i32),
                KArg::I32(h as i32),
                KArg::F32(log2e / (dh as f32).sqrt()),
                KArg::U64(row_ptr),
                KArg::U64(col_idx),
                KArg::I32(block as i32),
                KArg::I32(q_blocks as i32),
                KArg::I32(bias_from),
                KArg::F32(bias_log2),
            ],
        )?;
        Ok(Some(out))
    }

    /// Auto / Mma / Naive dispatch shared by dense and sparse calls. Auto tries the Hopper
    /// kernel first (`crate::attention`); each kernel answers `Ok(None)` for calls it does not
    /// cover, and the next one takes them.
    fn attention_dispatch(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: PlanRef<'_>,
        bias: Option<KeyBias>,
    ) -> Result<CudaTensor> {
        let path = self.attention_path();
        if path == AttnPath::Auto {
            if let Some(out) = self.attention_hopper(q, k, v, plan, bias)? {
                return Ok(out);
            }
        }
        if path != AttnPath::Naive {
            if let Some(out) = self.attention_mma(q, k, v, plan, bias)? {
                return Ok(out);
            }
        }
        self.attention_naive(q, k, v, plan, bias)
    }

    /// Uninitialised device tensor (every op overwrites all of its output).
    pub fn empty(&self, shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        let buf = unsafe { self.stream.alloc::<bf16>(n.max(1)) }
            .map_err(alloc_err(n.max(1) * std::mem::size_of::<bf16>()))?;
        Ok(CudaTensor {
            buf: Arc::new(buf),
            offset: 0,
            shape: shape.to_vec(),
        })
    }

    /// Upload bf16 data as is (weights already stored in bf16 skip the f32 round trip).
    pub fn upload_bf16(&self, data: &[bf16], shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "upload",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        let mut t = self.empty(shape)?;
        if n > 0 {
            let buf = Arc::get_mut(&mut t.buf).expect("fresh buffer is unshared");
            self.stream
                .memcpy_htod(data, &mut buf.slice_mut(0..n))
                .map_err(drv("copying to the device"))?;
        }
        Ok(t)
    }

    /// Download as bf16, exactly as stored.
    pub fn download_bf16(&self, t: &CudaTensor) -> Result<Vec<bf16>> {
        let n = t.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let view = t.buf.slice(t.offset..t.offset + n);
        self.stream
            .clone_dtoh(&view)
            .map_err(drv("copying from the device"))
    }

    pub(crate) fn ptr(&self, t: &CudaTensor) -> u64 {
        t.device_ptr(&self.stream)
    }

    /// Raise the release threshold of the device's default memory pool (the one stream-ordered
    /// allocations draw from). At the default threshold 0, every synchronize hands freed memory
    /// back to the driver and the next call maps it again (≈ 0.5 ms for a 100 MB attention output,
    /// a fifth of a 20 %-density attention call); torch's caching allocator never pays that.
    /// Best effort: on failure allocations still work, just slower.
    fn keep_freed_memory_pooled(ordinal: usize) {
        use cudarc::driver::{result, sys};
        let Ok(dev) = result::device::get(ordinal as i32) else {
            return;
        };
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver calls on a valid device with out-pointers to locals.
        unsafe {
            if sys::cuDeviceGetDefaultMemPool(&mut pool, dev) != sys::CUresult::CUDA_SUCCESS {
                return;
            }
            let mut keep = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut keep as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }

    /// A small index table on the device (freed in stream order after the kernels using it).
    fn upload_u32(&self, v: Option<&[u32]>) -> Result<Option<CudaSlice<u32>>> {
        v.map(|v| {
            self.stream
                .clone_htod(v)
                .map_err(alloc_err(std::mem::size_of_val(v)))
        })
        .transpose()
    }

    fn launch(&self, f: &CudaFunction, cfg: LaunchConfig, what: &str, args: &[KArg]) -> Result<()> {
        self.timed(what, || {
            let mut b = self.stream.launch_builder(f);
            for a in args {
                match a {
                    KArg::U64(v) => b.arg(v),
                    KArg::I64(v) => b.arg(v),
                    KArg::I32(v) => b.arg(v),
                    KArg::F32(v) => b.arg(v),
                };
            }
            unsafe { b.launch(cfg) }
                .map(|_| ())
                .map_err(drv(&format!("launching {what}")))
        })
    }

    fn same_shape(op: &'static str, a: &CudaTensor, b: &CudaTensor) -> Result<()> {
        if a.shape != b.shape {
            return Err(Error::shape(op, format!("{:?} vs {:?}", a.shape, b.shape)));
        }
        Ok(())
    }

    fn last_dim(op: &'static str, x: &CudaTensor) -> Result<usize> {
        match x.shape.last() {
            Some(&d) if d > 0 => Ok(d),
            _ => Err(Error::shape(op, format!("x {:?} has no last dim", x.shape))),
        }
    }

    fn vec_of(op: &'static str, what: &str, t: &CudaTensor, d: usize) -> Result<()> {
        if t.shape != [d] {
            return Err(Error::shape(
                op,
                format!("{what} {:?} for dim {d}", t.shape),
            ));
        }
        Ok(())
    }

    /// Device CSR arrays of `plan` (uploaded on first use, then reused while the Arc lives).
    pub fn device_plan(&self, plan: &Arc<BlockPlan>) -> Result<Arc<DevicePlanBufs>> {
        self.plans.get_or_try_insert("plan", plan, || {
            // Indices are checked here, once per plan, against the plan's own geometry.
            plan.validate(
                plan.batch,
                plan.heads,
                plan.q_blocks * plan.block,
                plan.k_blocks * plan.block,
            )?;
            let up = |v: &[u32]| -> Result<CudaSlice<u32>> {
                let v = if v.is_empty() { &[0u32][..] } else { v };
                self.stream
                    .clone_htod(v)
                    .map_err(alloc_err(std::mem::size_of_val(v)))
            };
            Ok(Arc::new(DevicePlanBufs {
                row_ptr: up(&plan.row_ptr)?,
                col_idx: up(&plan.col_idx)?,
            }))
        })
    }

    /// The reference attention kernel (any Dh ≤ 128), dense or over a device plan.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_naive(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: PlanRef<'_>,
        bias: Option<KeyBias>,
    ) -> Result<CudaTensor> {
        let (b, lq, h, dh) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let lk = k.shape[1];
        if dh > NAIVE_MAX_DH {
            return Err(Error::invalid(
                "attention",
                format!("head dim {dh} > {NAIVE_MAX_DH} is not supported on CUDA"),
            ));
        }
        let out = self.empty(&q.shape)?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let log2e = std::f32::consts::LOG2_E;
        let scale_log2 = log2e / (dh as f32).sqrt();
        let (bias_from, bias_log2) = match bias {
            Some(kb) => (kb.from_key.min(i32::MAX as usize) as i32, kb.bias * log2e),
            None => (i32::MAX, 0.0),
        };
        let (row_ptr, col_idx, g) = plan.kernel_args(&self.stream);
        let (block, q_blocks) = (g.block, g.q_blocks);
        let (chunks, grid_x) = match plan {
            PlanRef::Dense => (1, lq.div_ceil(NAIVE_WARPS)),
            _ => {
                let chunks = block.div_ceil(NAIVE_WARPS);
                (chunks, q_blocks * chunks)
            }
        };
        let smem = (2 * NAIVE_TK * (dh + 1) + NAIVE_WARPS * dh) * 4;
        let cfg = LaunchConfig {
            grid_dim: (grid_x as u32, h as u32, b as u32),
            block_dim: ((NAIVE_WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        self.launch(
            &self.k.attn_naive,
            cfg,
            "attention (reference kernel)",
            &[
                KArg::U64(self.ptr(q)),
                KArg::U64(self.ptr(k)),
                KArg::U64(self.ptr(v)),
                KArg::U64(self.ptr(&out)),
                KArg::I32(lq as i32),
                KArg::I32(lk as i32),
                KArg::I32(h as i32),
                KArg::I32(dh as i32),
                KArg::F32(scale_log2),
                KArg::U64(row_ptr),
                KArg::U64(col_idx),
                KArg::I32(block as i32),
                KArg::I32(q_blocks as i32),
                KArg::I32(chunks as i32),
                KArg::I32(bias_from),
                KArg::F32(bias_log2),
            ],
        )?;
        Ok(out)
    }

    fn copy_rows(
        &self,
        src: u64,
        dst: u64,
        rows: usize,
        width: usize,
        src_stride: usize,
        dst_stride: usize,
    ) -> Result<()> {
        if rows * width == 0 {
            return Ok(());
        }
        self.launch(
            &self.k.copy_rows,
            elems_cfg(rows * width, self.sm_count),
            "copy_rows",
            &[
                KArg::U64(src),
                KArg::U64(dst),
                KArg::I64(rows as i64),
                KArg::I64(width as i64),
                KArg::I64(src_stride as i64),
                KArg::I64(dst_stride as i64),
            ],
        )
    }
}

enum KArg {
    U64(u64),
    I64(i64),
    I32(i32),
    F32(f32),
}

const BF16_BYTES: u64 = 2;

impl Backend for CudaBackend {
    type Tensor = CudaTensor;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        // The sampler moves the latent across every step while the GPU waits: convert in
        // parallel (a 480p Wan latent is 2.1M values, several ms on one core).
        use rayon::prelude::*;
        let host: Vec<bf16> = data.par_iter().map(|&v| bf16::from_f32(v)).collect();
        self.upload_bf16(&host, shape)
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        Ok(self
            .download_bf16(t)?
            .par_iter()
            .map(|v| v.to_f32())
            .collect())
    }

    fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        if shape.iter().product::<usize>() != t.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?}", t.shape),
            ));
        }
        Ok(CudaTensor {
            shape: shape.to_vec(),
            ..t.clone()
        })
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        act: Act,
    ) -> Result<CudaTensor> {
        // Per-op timing tells the linears apart by shape (K→N, rows, epilogue).
        let name = match self.op_timing_on() {
            true => format!(
                "linear {}x{}->{}{}{}",
                x.numel() / x.shape.last().copied().unwrap_or(1).max(1),
                x.shape.last().copied().unwrap_or(0),
                w.shape.first().copied().unwrap_or(0),
                if b.is_some() { " +bias" } else { "" },
                if act == Act::None { "" } else { " +act" }
            ),
            false => String::new(),
        };
        self.timed(&name, || {
            let k_in = Self::last_dim("linear", x)?;
            // cuBLASLt works on the calling thread's current context.
            self.ctx
                .bind_to_thread()
                .map_err(drv("binding the CUDA context"))?;
            if w.dims() != 2 || w.shape[1] != k_in {
                return Err(Error::shape(
                    "linear",
                    format!("x {:?}, w {:?} (expected [out, {k_in}])", x.shape, w.shape),
                ));
            }
            let n_out = w.shape[0];
            if let Some(b) = b {
                Self::vec_of("linear", "bias", b, n_out)?;
            }
            let rows = x.numel() / k_in;
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("checked") = n_out;
            let out = self.empty(&shape)?;
            if rows == 0 || n_out == 0 {
                return Ok(out);
            }
            // Row-major y[rows, out] = x · wᵀ is column-major yᵀ[out, rows] = W(ᵀ as stored) · xᵀ:
            // A = w (stored k×m column-major, transposed), B = x (k×n column-major), C = y (m×n).
            let gemm_shape = |epilogue| GemmShape {
                transa: true,
                transb: false,
                m: n_out as u64,
                n: rows as u64,
                k: k_in as u64,
                lda: k_in as i64,
                ldb: k_in as i64,
                ldc: n_out as i64,
                batch: 1,
                stride_a: 0,
                stride_b: 0,
                stride_c: 0,
                epilogue,
            };
            let ptrs = GemmPtrs {
                a: self.ptr(w),
                b: self.ptr(x),
                d: self.ptr(&out),
                bias: b.map(|t| self.ptr(t)).unwrap_or(0),
            };
            let epilogue = match (b.is_some(), act) {
                (true, Act::GeluTanh) => Epilogue::GeluBias,
                (true, _) => Epilogue::Bias,
                (false, Act::GeluTanh) => Epilogue::Gelu,
                (false, _) => Epilogue::None,
            };
            // The output buffer is freshly allocated and unshared.
            let fused = unsafe { self.gemm.matmul(&gemm_shape(epilogue), ptrs) };
            let rest_act = match (fused, act) {
                (Ok(true), Act::Silu) => Some((None, Act::Silu)),
                (Ok(true), _) => None,
                // Some epilogues have no kernel for a shape/type: plain GEMM, then our own kernel.
                _ => {
                    let plain = unsafe { self.gemm.matmul(&gemm_shape(Epilogue::None), ptrs) }?;
                    if !plain {
                        return Err(dev(format!(
                            "cuBLASLt has no algorithm for matmul {rows}x{k_in}x{n_out}"
                        )));
                    }
                    Some((b, act))
                }
            };
            if let Some((bias, a)) = rest_act {
                let n = out.numel();
                let p = self.ptr(&out);
                let bp = bias.map(|t| self.ptr(t)).unwrap_or(0);
                let v = vec8(&[p, bp], &[n, n_out]);
                let units = if v { n / 8 } else { n };
                self.launch(
                    if v {
                        &self.k.bias_act_v8
                    } else {
                        &self.k.bias_act
                    },
                    elems_cfg(units, self.sm_count),
                    "linear epilogue",
                    &[
                        KArg::U64(p),
                        KArg::U64(bp),
                        KArg::U64(p),
                        KArg::I64(units as i64),
                        KArg::I32(n_out as i32),
                        KArg::I32(act_code(a)),
                    ],
                )?;
            }
            Ok(out)
        })
    }

    fn act(&self, x: &CudaTensor, act: Act) -> Result<CudaTensor> {
        let out = self.empty(&x.shape)?;
        let n = x.numel();
        if n > 0 {
            let (xp, op) = (self.ptr(x), self.ptr(&out));
            let v = vec8(&[xp, op], &[n]);
            self.launch(
                if v { &self.k.act_v8 } else { &self.k.act },
                elems_cfg(if v { n / 8 } else { n }, self.sm_count),
                "act",
                &[
                    KArg::U64(xp),
                    KArg::U64(op),
                    KArg::I64((if v { n / 8 } else { n }) as i64),
                    KArg::I32(act_code(act)),
                ],
            )?;
        }
        Ok(out)
    }

    fn layer_norm(
        &self,
        x: &CudaTensor,
        w: Option<&CudaTensor>,
        b: Option<&CudaTensor>,
        eps: f32,
    ) -> Result<CudaTensor> {
        let d = Self::last_dim("layer_norm", x)?;
        if let Some(w) = w {
            Self::vec_of("layer_norm", "weight", w, d)?;
        }
        if let Some(b) = b {
            Self::vec_of("layer_norm", "bias", b, d)?;
        }
        let out = self.empty(&x.shape)?;
        let rows = x.numel() / d;
        if rows > 0 {
            let (xp, op) = (self.ptr(x), self.ptr(&out));
            let wp = w.map(|t| self.ptr(t)).unwrap_or(0);
            let bp = b.map(|t| self.ptr(t)).unwrap_or(0);
            let vcfg = norm_v8_cfg(rows, d).filter(|_| vec8(&[xp, op, wp, bp], &[d]));
            self.launch(
                if vcfg.is_some() {
                    &self.k.layer_norm_v8
                } else {
                    &self.k.layer_norm
                },
                vcfg.unwrap_or_else(|| norm_cfg(rows, d)),
                "layer_norm",
                &[
                    KArg::U64(xp),
                    KArg::U64(wp),
                    KArg::U64(bp),
                    KArg::U64(op),
                    KArg::I32(d as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(out)
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        let d = Self::last_dim("rms_norm", x)?;
        Self::vec_of("rms_norm", "weight", w, d)?;
        let out = self.empty(&x.shape)?;
        let rows = x.numel() / d;
        if rows > 0 {
            let (xp, wp, op) = (self.ptr(x), self.ptr(w), self.ptr(&out));
            let vcfg = norm_v8_cfg(rows, d).filter(|_| vec8(&[xp, op, wp], &[d]));
            self.launch(
                if vcfg.is_some() {
                    &self.k.rms_norm_v8
                } else {
                    &self.k.rms_norm
                },
                vcfg.unwrap_or_else(|| norm_cfg(rows, d)),
                "rms_norm",
                &[
                    KArg::U64(xp),
                    KArg::U64(wp),
                    KArg::U64(op),
                    KArg::I32(d as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(out)
    }

    fn norm_modulate(
        &self,
        x: &CudaTensor,
        shift: &CudaTensor,
        scale: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        if x.dims() != 3
            || shift.shape != [x.shape[0], x.shape[2]]
            || scale.shape != shift.shape
            || x.shape[2] == 0
        {
            return Err(Error::shape(
                "norm_modulate",
                format!(
                    "x {:?}, shift {:?}, scale {:?} (expected [B, L, D], [B, D], [B, D])",
                    x.shape, shift.shape, scale.shape
                ),
            ));
        }
        let (l, d) = (x.shape[1], x.shape[2]);
        let out = self.empty(&x.shape)?;
        let rows = x.numel() / d;
        if rows > 0 {
            let (xp, hp, cp, op) = (
                self.ptr(x),
                self.ptr(shift),
                self.ptr(scale),
                self.ptr(&out),
            );
            let vcfg = norm_v8_cfg(rows, d).filter(|_| vec8(&[xp, hp, cp, op], &[d]));
            self.launch(
                if vcfg.is_some() {
                    &self.k.norm_modulate_v8
                } else {
                    &self.k.norm_modulate
                },
                vcfg.unwrap_or_else(|| norm_cfg(rows, d)),
                "norm_modulate",
                &[
                    KArg::U64(xp),
                    KArg::U64(hp),
                    KArg::U64(cp),
                    KArg::U64(op),
                    KArg::I32(d as i32),
                    KArg::I32(l as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok(out)
    }

    fn add_gated(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        Self::same_shape("add_gated", x, y)?;
        let (per_batch, d) = match gate {
            Some(g) => {
                if x.dims() != 3 || g.shape != [x.shape[0], x.shape[2]] {
                    return Err(Error::shape(
                        "add_gated",
                        format!(
                            "x {:?}, gate {:?} (expected [B, L, D], [B, D])",
                            x.shape, g.shape
                        ),
                    ));
                }
                (x.shape[1] * x.shape[2], x.shape[2])
            }
            None => (1, 1),
        };
        let out = self.empty(&x.shape)?;
        let n = x.numel();
        if n > 0 {
            let (xp, yp, op) = (self.ptr(x), self.ptr(y), self.ptr(&out));
            let gp = gate.map(|g| self.ptr(g)).unwrap_or(0);
            // Ungated: `d` is a dummy 1, only `n` matters.
            let v = vec8(&[xp, yp, gp, op], &[n, if gate.is_some() { d } else { 8 }]);
            let units = if v { n / 8 } else { n };
            self.launch(
                if v {
                    &self.k.add_gated_v8
                } else {
                    &self.k.add_gated
                },
                elems_cfg(units, self.sm_count),
                "add_gated",
                &[
                    KArg::U64(xp),
                    KArg::U64(yp),
                    KArg::U64(gp),
                    KArg::U64(op),
                    KArg::I64(units as i64),
                    KArg::I64(per_batch as i64),
                    KArg::I32(d as i32),
                ],
            )?;
        }
        Ok(out)
    }

    fn axpby(&self, a: f32, x: &CudaTensor, b: f32, y: &CudaTensor) -> Result<CudaTensor> {
        Self::same_shape("axpby", x, y)?;
        let out = self.empty(&x.shape)?;
        let n = x.numel();
        if n > 0 {
            let (xp, yp, op) = (self.ptr(x), self.ptr(y), self.ptr(&out));
            let v = vec8(&[xp, yp, op], &[n]);
            let units = if v { n / 8 } else { n };
            self.launch(
                if v { &self.k.axpby_v8 } else { &self.k.axpby },
                elems_cfg(units, self.sm_count),
                "axpby",
                &[
                    KArg::F32(a),
                    KArg::U64(xp),
                    KArg::F32(b),
                    KArg::U64(yp),
                    KArg::U64(op),
                    KArg::I64(units as i64),
                ],
            )?;
        }
        Ok(out)
    }

    fn rope(&self, x: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor) -> Result<CudaTensor> {
        if x.dims() != 4
            || !x.shape[3].is_multiple_of(2)
            || cos.shape != [x.shape[1], x.shape[3] / 2]
            || sin.shape != cos.shape
        {
            return Err(Error::shape(
                "rope",
                format!(
                    "x {:?}, cos {:?}, sin {:?} (expected [B, L, H, Dh], [L, Dh/2])",
                    x.shape, cos.shape, sin.shape
                ),
            ));
        }
        let out = self.empty(&x.shape)?;
        let pairs = x.numel() / 2;
        if pairs > 0 {
            let (xp, cp, sp, op) = (self.ptr(x), self.ptr(cos), self.ptr(sin), self.ptr(&out));
            // 4 pairs per thread: the half-dim must split into groups of 4.
            let v = vec8(&[xp, cp, sp, op], &[pairs * 2, x.shape[3]]);
            let units = if v { pairs / 4 } else { pairs };
            self.launch(
                if v { &self.k.rope_v8 } else { &self.k.rope },
                elems_cfg(units, self.sm_count),
                "rope",
                &[
                    KArg::U64(xp),
                    KArg::U64(cp),
                    KArg::U64(sp),
                    KArg::U64(op),
                    KArg::I64(units as i64),
                    KArg::I32(x.shape[1] as i32),
                    KArg::I32(x.shape[2] as i32),
                    KArg::I32((x.shape[3] / 2) as i32),
                ],
            )?;
        }
        Ok(out)
    }

    fn rope_pooled(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        block: usize,
    ) -> Result<(CudaTensor, Option<CudaTensor>)> {
        // One pass (`rope_pool_v8`): y bit-identical to `rope`, the means to
        // `block_mean_pool(y)`. Shapes the kernel does not take go the unfused way.
        let s = &x.shape;
        let fused = s.len() == 4
            && block > 0
            && s[3] > 0
            && s[3].is_multiple_of(8)
            && cos.shape == [s[1], s[3] / 2]
            && sin.shape == cos.shape
            && vec8(&[self.ptr(x), self.ptr(cos), self.ptr(sin)], &[]);
        if !fused {
            let y = self.rope(x, cos, sin)?;
            let p = self.block_mean_pool(&y, block)?;
            return Ok((y, Some(p)));
        }
        let (b, l, h, d) = (s[0], s[1], s[2], s[3]);
        let nb = l.div_ceil(block);
        let y = self.empty(s)?;
        let pooled = self.empty(&[b, h, nb, d])?;
        if !vec8(&[self.ptr(&y), self.ptr(&pooled)], &[]) {
            let y = self.rope(x, cos, sin)?;
            let p = self.block_mean_pool(&y, block)?;
            return Ok((y, Some(p)));
        }
        let units = b * nb * h * d / 8;
        if units > 0 {
            // 64-thread CTAs: few threads in all (one per block, head and 8 channels), spread
            // evenly over the SMs.
            let cfg = LaunchConfig {
                grid_dim: (units.div_ceil(64) as u32, 1, 1),
                block_dim: (64, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                &self.k.rope_pool_v8,
                cfg,
                "rope_pool_v8",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(cos)),
                    KArg::U64(self.ptr(sin)),
                    KArg::U64(self.ptr(&y)),
                    KArg::U64(self.ptr(&pooled)),
                    KArg::I64(units as i64),
                    KArg::I32(l as i32),
                    KArg::I32(h as i32),
                    KArg::I32((d / 2) as i32),
                    KArg::I32(nb as i32),
                    KArg::I32(block as i32),
                ],
            )?;
        }
        Ok((y, Some(pooled)))
    }

    fn rms_norm_rope(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        cos: &CudaTensor,
        sin: &CudaTensor,
        pool: Option<usize>,
    ) -> Result<(CudaTensor, Option<CudaTensor>)> {
        self.timed("rms_norm_rope", || {
            self.rms_norm_rope_fused(x, w, eps, cos, sin, pool)
        })
    }

    fn add_gated_layer_norm(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
        w: Option<&CudaTensor>,
        b: Option<&CudaTensor>,
        eps: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.timed("add_gated_layer_norm", || {
            self.add_gated_norm(x, y, gate, GatedNorm::Affine(w, b), eps)
        })
    }

    fn add_gated_norm_modulate(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
        shift: &CudaTensor,
        scale: &CudaTensor,
        eps: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.timed("add_gated_norm_modulate", || {
            self.add_gated_norm(x, y, gate, GatedNorm::Modulate(shift, scale), eps)
        })
    }

    fn attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: &AttnPlan,
        bias: Option<KeyBias>,
    ) -> Result<CudaTensor> {
        self.timed(
            match plan {
                AttnPlan::Dense if q.shape.get(1) == k.shape.get(1) => "self-attention, dense",
                AttnPlan::Dense => "attention, dense (Lq != Lk)",
                _ => "self-attention, sparse",
            },
            || {
                if q.dims() != 4
                    || k.dims() != 4
                    || k.shape != v.shape
                    || k.shape[0] != q.shape[0]
                    || k.shape[2] != q.shape[2]
                    || k.shape[3] != q.shape[3]
                {
                    return Err(Error::shape(
                        "attention",
                        format!(
                            "q {:?}, k {:?}, v {:?} (expected [B, Lq, H, Dh], [B, Lk, H, Dh] x2)",
                            q.shape, k.shape, v.shape
                        ),
                    ));
                }
                let (b, lq, h) = (q.shape[0], q.shape[1], q.shape[2]);
                let lk = k.shape[1];
                // Grid y/z carry heads/batch; kernels index tokens with 32-bit ints.
                if h > 65535 || b > 65535 || lq.max(lk) > i32::MAX as usize / 2 {
                    return Err(Error::invalid(
                        "attention",
                        format!("B={b}, H={h}, Lq={lq}, Lk={lk} exceed the CUDA kernels' limits"),
                    ));
                }
                match plan {
                    AttnPlan::Dense => self.attention_dispatch(q, k, v, PlanRef::Dense, bias),
                    AttnPlan::Sparse(p) => {
                        // Every index is checked once, when the plan is uploaded (a 720p plan has
                        // millions: checking them per call cost ~6 ms); the geometry on every call.
                        let fits = p.batch == b
                            && p.heads == h
                            && p.block > 0
                            && p.q_blocks == lq.div_ceil(p.block)
                            && p.k_blocks == lk.div_ceil(p.block);
                        if !fits {
                            p.validate(b, h, lq, lk)?;
                        }
                        let d = self.device_plan(p)?;
                        self.attention_dispatch(q, k, v, PlanRef::host(p, &d), bias)
                    }
                    AttnPlan::Device(dp) => {
                        dp.validate(b, h, lq, lk)?;
                        let d = (*dp.bufs).downcast_ref::<DevicePlanBufs>().ok_or_else(|| {
                            Error::invalid("attention", "device plan built by another backend")
                        })?;
                        let plan = PlanRef::device(dp.geometry(), d)?;
                        self.attention_dispatch(q, k, v, plan, bias)
                    }
                }
            },
        )
    }

    fn select_blocks(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        self.timed("mask building (pool + select)", || {
            self.select_blocks_device(q, k, sel)
        })
    }

    fn select_blocks_pooled(
        &self,
        qhat: &CudaTensor,
        khat: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        self.timed("mask building (select)", || {
            CudaBackend::select_blocks_pooled(self, qhat, khat, sel)
        })
    }

    fn svg_select(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &jenga_tensor::SvgSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn jenga_tensor::DeviceCount>)>> {
        self.svg_select_device(q, k, sel)
    }

    fn draft_select(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &jenga_tensor::DraftSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn jenga_tensor::DeviceCount>)>> {
        self.draft_select_device(q, k, sel)
    }

    fn host_plan(&self, plan: &AttnPlan) -> Result<AttnPlan> {
        self.host_plan_of(plan)
    }

    fn block_mean_pool(&self, x: &CudaTensor, block: usize) -> Result<CudaTensor> {
        if x.dims() != 4 || block == 0 {
            return Err(Error::shape(
                "block_mean_pool",
                format!("x {:?}, block {block}", x.shape),
            ));
        }
        let (b, l, h, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let nb = l.div_ceil(block);
        let out = self.empty(&[b, h, nb, d])?;
        let n = out.numel();
        if n > 0 {
            self.launch(
                &self.k.pool,
                elems_cfg(n, self.sm_count),
                "block_mean_pool",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(&out)),
                    KArg::I64(n as i64),
                    KArg::I32(l as i32),
                    KArg::I32(h as i32),
                    KArg::I32(d as i32),
                    KArg::I32(nb as i32),
                    KArg::I32(block as i32),
                ],
            )?;
        }
        Ok(out)
    }

    fn gather_tokens(&self, x: &CudaTensor, idx: &[u32]) -> Result<CudaTensor> {
        if x.dims() < 2 {
            return Err(Error::shape("gather_tokens", format!("x {:?}", x.shape)));
        }
        let l = x.shape[1];
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= l) {
            return Err(Error::invalid(
                "gather_tokens",
                format!("index {bad} out of range for {l} tokens"),
            ));
        }
        let mut shape = x.shape.clone();
        shape[1] = idx.len();
        let out = self.empty(&shape)?;
        let n = out.numel();
        if n == 0 {
            return Ok(out);
        }
        let rest: usize = x.shape[2..].iter().product();
        let didx = self
            .stream
            .clone_htod(idx)
            .map_err(alloc_err(std::mem::size_of_val(idx)))?;
        let (ip, _) = didx.device_ptr(&self.stream);
        self.launch(
            &self.k.gather,
            elems_cfg(n, self.sm_count),
            "gather_tokens",
            &[
                KArg::U64(self.ptr(x)),
                KArg::U64(ip),
                KArg::U64(self.ptr(&out)),
                KArg::I64(n as i64),
                KArg::I32(l as i32),
                KArg::I32(idx.len() as i32),
                KArg::I64(rest as i64),
            ],
        )?;
        Ok(out)
    }

    fn narrow(&self, x: &CudaTensor, dim: usize, start: usize, len: usize) -> Result<CudaTensor> {
        if dim >= x.dims() || start + len > x.shape[dim] {
            return Err(Error::shape(
                "narrow",
                format!("x {:?}, dim {dim}, {start}..{}", x.shape, start + len),
            ));
        }
        let outer: usize = x.shape[..dim].iter().product();
        let inner: usize = x.shape[dim + 1..].iter().product();
        let mut shape = x.shape.clone();
        shape[dim] = len;
        if outer == 1 || len == x.shape[dim] {
            // Contiguous already: a view.
            return Ok(CudaTensor {
                buf: x.buf.clone(),
                offset: x.offset + start * inner,
                shape,
            });
        }
        let out = self.empty(&shape)?;
        self.copy_rows(
            self.ptr(x) + (start * inner) as u64 * BF16_BYTES,
            self.ptr(&out),
            outer,
            len * inner,
            x.shape[dim] * inner,
            len * inner,
        )?;
        Ok(out)
    }

    fn cat(&self, xs: &[&CudaTensor], dim: usize) -> Result<CudaTensor> {
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("cat", "no tensors"))?;
        if dim >= first.dims() {
            return Err(Error::shape(
                "cat",
                format!("dim {dim} of {:?}", first.shape),
            ));
        }
        for x in xs {
            if x.dims() != first.dims()
                || x.shape[..dim] != first.shape[..dim]
                || x.shape[dim + 1..] != first.shape[dim + 1..]
            {
                return Err(Error::shape(
                    "cat",
                    format!("{:?} vs {:?} along dim {dim}", first.shape, x.shape),
                ));
            }
        }
        let total: usize = xs.iter().map(|x| x.shape[dim]).sum();
        let mut shape = first.shape.clone();
        shape[dim] = total;
        let outer: usize = first.shape[..dim].iter().product();
        let inner: usize = first.shape[dim + 1..].iter().product();
        let out = self.empty(&shape)?;
        let base = self.ptr(&out);
        let mut at = 0usize;
        for x in xs {
            let w = x.shape[dim] * inner;
            self.copy_rows(
                self.ptr(x),
                base + (at * inner) as u64 * BF16_BYTES,
                outer,
                w,
                w,
                total * inner,
            )?;
            at += x.shape[dim];
        }
        Ok(out)
    }

    fn mean_abs(&self, x: &CudaTensor) -> Result<f32> {
        let n = x.numel();
        if n == 0 {
            return Ok(0.0);
        }
        let acc = self.stream.alloc_zeros::<f32>(1).map_err(alloc_err(4))?;
        let (ap, _) = acc.device_ptr(&self.stream);
        self.launch(
            &self.k.sum_abs,
            elems_cfg(n, self.sm_count),
            "mean_abs",
            &[KArg::U64(self.ptr(x)), KArg::U64(ap), KArg::I64(n as i64)],
        )?;
        let s = self
            .stream
            .clone_dtoh(&acc)
            .map_err(drv("copying mean_abs to the host"))?;
        Ok(s[0] / n as f32)
    }

    fn patchify(
        &self,
        x: &CudaTensor,
        patch: [usize; 3],
        order: Option<&[u32]>,
    ) -> Result<CudaTensor> {
        let s = &x.shape;
        let [pt, ph, pw] = patch;
        if s.len() != 5
            || pt * ph * pw == 0
            || !s[2].is_multiple_of(pt)
            || !s[3].is_multiple_of(ph)
            || !s[4].is_multiple_of(pw)
        {
            return Err(Error::shape(
                "patchify",
                format!("{s:?} with patch {patch:?}"),
            ));
        }
        let (b, c, f, h, w) = (s[0], s[1], s[2], s[3], s[4]);
        let toks = (f / pt) * (h / ph) * (w / pw);
        check_order("patchify", order, toks)?;
        let out = self.empty(&[b, toks, c * pt * ph * pw])?;
        let n = out.numel();
        if n > 0 {
            let order = self.upload_u32(order)?;
            self.launch(
                &self.k.patchify,
                elems_cfg(n, self.sm_count),
                "patchify",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(&out)),
                    KArg::U64(order.as_ref().map_or(0, |o| o.device_ptr(&self.stream).0)),
                    KArg::I64(n as i64),
                    KArg::I32(c as i32),
                    KArg::I32(f as i32),
                    KArg::I32(h as i32),
                    KArg::I32(w as i32),
                    KArg::I32(pt as i32),
                    KArg::I32(ph as i32),
                    KArg::I32(pw as i32),
                ],
            )?;
        }
        Ok(out)
    }

    fn unpatchify(
        &self,
        x: &CudaTensor,
        grid: (usize, usize, usize),
        patch: [usize; 3],
        channels: usize,
        order: Option<&[u32]>,
    ) -> Result<CudaTensor> {
        let s = &x.shape;
        let [pt, ph, pw] = patch;
        let (gf, gh, gw) = grid;
        if s.len() != 3 || s[1] != gf * gh * gw || s[2] != pt * ph * pw * channels {
            return Err(Error::shape(
                "unpatchify",
                format!("{s:?} for grid {grid:?}, patch {patch:?}, {channels} channels"),
            ));
        }
        check_order("unpatchify", order, gf * gh * gw)?;
        let out = self.empty(&[s[0], channels, gf * pt, gh * ph, gw * pw])?;
        let n = out.numel();
        if n > 0 {
            // The kernel reads per output element, so it wants raster → row.
            let inv = order.map(|o| {
                let mut inv = vec![0u32; o.len()];
                for (k, &r) in o.iter().enumerate() {
                    inv[r as usize] = k as u32;
                }
                inv
            });
            let inv = self.upload_u32(inv.as_deref())?;
            self.launch(
                &self.k.unpatchify,
                elems_cfg(n, self.sm_count),
                "unpatchify",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(&out)),
                    KArg::U64(inv.as_ref().map_or(0, |o| o.device_ptr(&self.stream).0)),
                    KArg::I64(n as i64),
                    KArg::I32(channels as i32),
                    KArg::I32(gf as i32),
                    KArg::I32(gh as i32),
                    KArg::I32(gw as i32),
                    KArg::I32(pt as i32),
                    KArg::I32(ph as i32),
                    KArg::I32(pw as i32),
                ],
            )?;
        }
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(drv("synchronizing the stream"))?;
        self.ctx.check_err().map_err(drv("deferred driver error"))
    }
}

/// The norm that [`CudaBackend::add_gated_norm`] applies to the residual sum.
#[derive(Clone, Copy)]
enum GatedNorm<'a> {
    /// LayerNorm with optional weight and bias.
    Affine(Option<&'a CudaTensor>, Option<&'a CudaTensor>),
    /// `LN·(1 + scale) + shift`, shift/scale `[B, D]`.
    Modulate(&'a CudaTensor, &'a CudaTensor),
}

impl CudaBackend {
    /// `add_gated` then a row norm of the sum in one pass (`add_gated_norm_v8`, bit-identical
    /// to the two ops); shapes or alignments the kernel does not take run the two ops.
    fn add_gated_norm(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
        norm: GatedNorm,
        eps: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let unfused = || -> Result<(CudaTensor, CudaTensor)> {
            let s = self.add_gated(x, y, gate)?;
            let n = match norm {
                GatedNorm::Affine(w, b) => self.layer_norm(&s, w, b, eps)?,
                GatedNorm::Modulate(sh, sc) => self.norm_modulate(&s, sh, sc, eps)?,
            };
            Ok((s, n))
        };
        let xs = &x.shape;
        if xs.len() != 3 || y.shape != *xs || xs[2] == 0 {
            return unfused();
        }
        let (bsz, l, d) = (xs[0], xs[1], xs[2]);
        let rows = bsz * l;
        let per_sample = |t: &CudaTensor| t.shape == [bsz, d];
        let per_dim = |t: Option<&CudaTensor>| t.is_none_or(|t| t.shape == [d]);
        let (wp, bp, hp, cp) = match norm {
            GatedNorm::Affine(w, b) if per_dim(w) && per_dim(b) => (
                w.map_or(0, |t| self.ptr(t)),
                b.map_or(0, |t| self.ptr(t)),
                0,
                0,
            ),
            GatedNorm::Modulate(sh, sc) if per_sample(sh) && per_sample(sc) => {
                (0, 0, self.ptr(sh), self.ptr(sc))
            }
            _ => return unfused(),
        };
        if !gate.is_none_or(per_sample) {
            return unfused();
        }
        let (xp, yp, gp) = (self.ptr(x), self.ptr(y), gate.map_or(0, |g| self.ptr(g)));
        let Some(cfg) =
            norm_v8_cfg(rows, d).filter(|_| rows > 0 && vec8(&[xp, yp, gp, wp, bp, hp, cp], &[d]))
        else {
            return unfused();
        };
        let (s, out) = (self.empty(xs)?, self.empty(xs)?);
        let (sp, op) = (self.ptr(&s), self.ptr(&out));
        if !vec8(&[sp, op], &[]) {
            return unfused();
        }
        self.launch(
            &self.k.add_gated_norm_v8,
            cfg,
            "add_gated_norm_v8",
            &[
                KArg::U64(xp),
                KArg::U64(yp),
                KArg::U64(gp),
                KArg::U64(wp),
                KArg::U64(bp),
                KArg::U64(hp),
                KArg::U64(cp),
                KArg::U64(sp),
                KArg::U64(op),
                KArg::I32(d as i32),
                KArg::I32(l as i32),
                KArg::F32(eps),
            ],
        )?;
        Ok((s, out))
    }

    /// `rms_norm` over each token's `H·Dh` row, `rope`, and with `pool` the block means, in one
    /// pass (`rms_rope_v8`: a token per CTA; `rms_rope_pool_v8`: a pool block per CTA;
    /// bit-identical to the unfused ops); other shapes, and rows wider than the kernel's
    /// registers allow a CTA, run those ops.
    fn rms_norm_rope_fused(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        cos: &CudaTensor,
        sin: &CudaTensor,
        pool: Option<usize>,
    ) -> Result<(CudaTensor, Option<CudaTensor>)> {
        let s = x.shape.clone();
        let unfused = || jenga_tensor::rms_norm_rope_composed(self, x, w, eps, cos, sin, pool);
        let fits = s.len() == 4
            && s[3] > 0
            && s[3].is_multiple_of(8)
            && s[2] * s[3] / 8 <= 1024
            && w.shape == [s[2] * s[3]]
            && cos.shape == [s[1], s[3] / 2]
            && sin.shape == cos.shape
            && pool != Some(0);
        if !fits {
            return unfused();
        }
        let (b, l, h, dh) = (s[0], s[1], s[2], s[3]);
        let (func, name, block) = match pool {
            Some(p) => (&self.k.rms_rope_pool_v8, "rms_rope_pool_v8", p),
            None => (&self.k.rms_rope_v8, "rms_rope_v8", 1),
        };
        let threads = (h * dh / 8).div_ceil(32) * 32;
        let max_threads = func.max_threads_per_block().unwrap_or(0).max(0) as usize;
        if threads > max_threads {
            return unfused();
        }
        let nb = l.div_ceil(block);
        let y = self.empty(&s)?;
        let pooled = match pool {
            Some(_) => Some(self.empty(&[b, h, nb, dh])?),
            None => None,
        };
        let ptrs = [
            self.ptr(x),
            self.ptr(w),
            self.ptr(cos),
            self.ptr(sin),
            self.ptr(&y),
            pooled.as_ref().map_or(0, |p| self.ptr(p)),
        ];
        if !vec8(&ptrs, &[]) || b * nb > i32::MAX as usize {
            return unfused();
        }
        if b * nb > 0 {
            let cfg = LaunchConfig {
                grid_dim: ((b * nb) as u32, 1, 1),
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                func,
                cfg,
                name,
                &[
                    KArg::U64(ptrs[0]),
                    KArg::U64(ptrs[1]),
                    KArg::U64(ptrs[2]),
                    KArg::U64(ptrs[3]),
                    KArg::U64(ptrs[4]),
                    KArg::U64(ptrs[5]),
                    KArg::I32(l as i32),
                    KArg::I32(h as i32),
                    KArg::I32((dh / 2) as i32),
                    KArg::I32(nb as i32),
                    KArg::I32(block as i32),
                    KArg::F32(eps),
                ],
            )?;
        }
        Ok((y, pooled))
    }
}

/// One block per row; enough threads to cover the row in a few strides.
fn norm_cfg(rows: usize, d: usize) -> LaunchConfig {
    let threads = d.div_ceil(32).clamp(1, 32) * 32;
    let threads = threads.min(512);
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}
