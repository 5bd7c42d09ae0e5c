//! `CudaBackend`: the `jenga_tensor::Backend` ops on one GPU, one stream, bf16 storage.
//!
//! It is the core handle ([`Gpu`]: context, stream, allocator, the one launch helper) plus the
//! subsystems that borrow it: the op families (`crate::ops`), the cuBLASLt linears
//! (`crate::gemm`), the attention kernels (`crate::ops::attention`, `crate::attention`), block
//! selection (`crate::block_select`) and the peer policies (`crate::peers`). The trait impls
//! here only forward; no subsystem imports this file.

use crate::attention::Hopper;
use crate::attention::PlanRef;
use crate::block_select::{Select, SelectState};
use crate::core::{CudaTensor, DevicePlanBufs, Gpu};
use crate::error::dev;
use crate::gemm::{Gemm, GemmTune};
use crate::op_times::OpTime;
use crate::ops::attention::{Attn, AttnKernels, AttnPath};
use crate::ops::fused::GatedNorm;
use crate::ops::{Kernels, Ops};
use crate::peers::{PeerState, Peers, SvgProfile};
use cudarc::driver::{CudaContext, CudaStream};
use half::bf16;
use jenga_carve::{BlockSelect, DraftSelect, PolicyKernels, SvgSelect};
use jenga_tensor::{
    Act, AttnPlan, Backend, BlockPlan, DType, DeviceCount, DevicePlan, FusedOps, KeyBias,
    PlanGeometry, Result,
};
use std::sync::Arc;

use crate::solver::{CudaLatent, Solver, SolverKernels};
use jenga_tensor::SolverOps;

pub struct CudaBackend {
    /// The core and the op families' kernels.
    ops: Ops,
    /// cuBLASLt linears: cached descriptors and tuned algorithms (`crate::gemm`).
    gemm: Gemm,
    attn: AttnKernels,
    /// Block selection on the device (`crate::block_select`).
    select: SelectState,
    /// Peer policies' plan building on the device (`crate::peers`).
    peers: PeerState,
    /// The sampler's latent update (`crate::solver`).
    solver: SolverKernels,
}

impl CudaBackend {
    /// Open device `ordinal`, compile (or load cached) kernels and create the cuBLASLt handle.
    /// Returns `Err` — never panics — when the driver, NVRTC, cuBLASLt or the device is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        let gpu = Gpu::open(ordinal)?;
        let present =
            std::panic::catch_unwind(|| unsafe { cudarc::cublaslt::sys::is_culib_present() })
                .unwrap_or(false);
        if !present {
            return Err(dev(
                "libcublasLt could not be loaded (CUDA 13 cuBLAS runtime needed)",
            ));
        }
        let stream = gpu.stream.clone();
        let gemm = std::panic::catch_unwind(|| Gemm::new(stream))
            .map_err(|_| dev("cuBLASLt initialisation panicked"))??;
        let k = Kernels::load(&gpu)?;
        let attn = AttnKernels::load(&gpu)?;
        Ok(CudaBackend {
            ops: Ops { gpu, k },
            gemm,
            attn,
            select: Default::default(),
            peers: Default::default(),
            solver: Default::default(),
        })
    }

    fn gpu(&self) -> &Gpu {
        &self.ops.gpu
    }
    fn solver(&self) -> Solver<'_> {
        Solver {
            gpu: self.gpu(),
            kernels: &self.solver,
        }
    }
    fn attn(&self) -> Attn<'_> {
        Attn {
            gpu: self.gpu(),
            kernels: &self.attn,
        }
    }
    fn hopper(&self) -> Hopper<'_> {
        Hopper {
            gpu: self.gpu(),
            hopper_attn: &self.attn.hopper,
        }
    }
    fn sel(&self) -> Select<'_> {
        Select {
            ops: &self.ops,
            select: &self.select,
        }
    }
    fn peer(&self) -> Peers<'_> {
        Peers {
            sel: self.sel(),
            peers: &self.peers,
        }
    }

    // --- the core ---

    pub fn context(&self) -> &Arc<CudaContext> {
        self.gpu().context()
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        self.gpu().stream()
    }
    pub fn sm_count(&self) -> usize {
        self.gpu().sm_count()
    }
    /// Uninitialised device tensor (every op overwrites all of its output).
    pub fn empty(&self, shape: &[usize]) -> Result<CudaTensor> {
        self.gpu().empty(shape)
    }
    /// Upload bf16 data as is (weights already stored in bf16 skip the f32 round trip).
    pub fn upload_bf16(&self, data: &[bf16], shape: &[usize]) -> Result<CudaTensor> {
        self.gpu().upload_bf16(data, shape)
    }
    /// Download as bf16, exactly as stored.
    pub fn download_bf16(&self, t: &CudaTensor) -> Result<Vec<bf16>> {
        self.gpu().download_bf16(t)
    }
    /// Device CSR arrays of `plan` (uploaded on first use, then reused while the Arc lives).
    pub fn device_plan(&self, plan: &Arc<BlockPlan>) -> Result<Arc<DevicePlanBufs>> {
        self.gpu().device_plan(plan)
    }
    /// Start (clearing earlier totals) or stop timing ops.
    pub fn set_op_timing(&self, on: bool) {
        self.gpu().set_op_timing(on)
    }
    /// Totals so far, most expensive first.
    pub fn op_times(&self) -> Vec<OpTime> {
        self.gpu().op_times()
    }

    // --- cuBLASLt ---

    /// Time cuBLASLt's candidate algorithms on each new GEMM problem (`true`, the default unless
    /// `JENGA_GEMM_TUNE=0`) or take its first heuristic answer. Problems already planned in the
    /// other mode keep their plan; each mode has its own.
    pub fn set_gemm_tuning(&self, on: bool) {
        self.gemm.set_gemm_tuning(on)
    }
    /// Whether new GEMM problems are tuned.
    pub fn gemm_tuning(&self) -> bool {
        self.gemm.gemm_tuning()
    }
    /// Take heuristic answer `rank` (clamped to those offered) for new GEMM problems instead of
    /// tuning; `None` restores normal operation. For measuring the candidates themselves.
    #[doc(hidden)]
    pub fn set_gemm_forced_rank(&self, rank: Option<usize>) {
        self.gemm.set_gemm_forced_rank(rank)
    }
    /// The GEMM plans made so far and how each algorithm was chosen.
    pub fn gemm_tunes(&self) -> Vec<GemmTune> {
        self.gemm.gemm_tunes()
    }

    // --- attention ---

    /// Pin the attention kernels (for checking the fast ones against the reference).
    pub fn set_attention_path(&self, path: AttnPath) {
        self.attn().set_attention_path(path)
    }
    pub fn attention_path(&self) -> AttnPath {
        self.attn().attention_path()
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
        self.attn().attention_mma(q, k, v, plan, bias)
    }
    /// The reference attention kernel (any Dh ≤ 128), dense or over a device plan.
    pub fn attention_naive(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: PlanRef<'_>,
        bias: Option<KeyBias>,
    ) -> Result<CudaTensor> {
        self.attn().attention_naive(q, k, v, plan, bias)
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
        self.hopper().attention_hopper(q, k, v, plan, bias)
    }
    /// Whether the Hopper attention kernels are built and in use on `AttnPath::Auto`.
    pub fn hopper_attention_available(&self) -> bool {
        self.hopper().hopper_attention_available()
    }
    /// L2 cache hints on the warp-specialized kernel's TMA loads (Q evict-first, K/V
    /// evict-last); on by default (`JENGA_HOPPER_L2HINT=0` turns them off at start).
    pub fn set_hopper_attention_l2_hints(&self, on: bool) {
        self.hopper().set_hopper_attention_l2_hints(on)
    }
    /// Key tile of the Hopper kernel's dense launches (for benchmarks and tests): 176 (the
    /// default; `JENGA_HOPPER_DENSE_TILE` sets it at start) or 128 (the sparse launches' kernel);
    /// other values are ignored.
    pub fn set_hopper_attention_dense_tile(&self, tile: usize) {
        self.hopper().set_hopper_attention_dense_tile(tile)
    }
    /// The work list the Hopper kernel builds on the device for a device-resident plan,
    /// downloaded (synchronises; for tests). See `crate::attention`.
    pub fn hopper_device_work_order(
        &self,
        geometry: PlanGeometry,
        bufs: &DevicePlanBufs,
    ) -> Result<Option<Vec<u32>>> {
        self.hopper().hopper_device_work_order(geometry, bufs)
    }

    // --- policy kernels ---

    /// Block means of q and k in one launch (see `crate::block_select`).
    pub fn block_mean_pool_pair(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        block: usize,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.sel().block_mean_pool_pair(q, k, block)
    }
    /// [`PolicyKernels::select_blocks`] on this GPU: pool q and k
    /// ([`Self::block_mean_pool_pair`]), then [`Self::select_blocks_pooled`].
    pub fn select_blocks_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        self.sel().select_blocks_device(q, k, sel)
    }
    /// Selection from pooled q̂/k̂ `[B, H, nb, Dh]`. `Ok(None)` for shapes the kernels do not
    /// take (too many blocks for shared memory or 32-bit indices).
    pub fn select_blocks_pooled(
        &self,
        qhat: &CudaTensor,
        khat: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        self.sel().select_blocks_pooled(qhat, khat, sel)
    }
    /// Download a device plan's CSR as a [`BlockPlan`] (for tests and checks; synchronises).
    pub fn download_plan(&self, plan: &DevicePlan) -> Result<BlockPlan> {
        self.sel().download_plan(plan)
    }
    /// SVG's per-head profiling on the device, downloaded (see `crate::peers`).
    pub fn svg_profile(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &SvgSelect,
    ) -> Result<Option<SvgProfile>> {
        self.peer().svg_profile(q, k, sel)
    }
    /// [`PolicyKernels::svg_select`] on this GPU.
    pub fn svg_select_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &SvgSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        self.peer().svg_select_device(q, k, sel)
    }
    /// [`PolicyKernels::draft_select`] on this GPU.
    pub fn draft_select_device(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &DraftSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        self.peer().draft_select_device(q, k, sel)
    }
    /// A device plan downloaded as a host plan; others as they are.
    pub fn host_plan_of(&self, plan: &AttnPlan) -> Result<AttnPlan> {
        self.peer().host_plan_of(plan)
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;

    fn name(&self) -> String {
        self.gpu().name.clone()
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        self.gpu().upload_f32(data, shape)
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        self.gpu().download_f32(t)
    }

    fn storage_dtype(&self) -> DType {
        DType::BF16
    }

    fn upload_raw(&self, bytes: &[u8], dtype: DType, shape: &[usize]) -> Result<CudaTensor> {
        self.gpu().upload_raw(bytes, dtype, shape)
    }

    fn download_raw(&self, t: &CudaTensor, dtype: DType) -> Result<Vec<u8>> {
        self.gpu().download_raw(t, dtype)
    }

    fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        self.gpu().reshape(t, shape)
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        act: Act,
    ) -> Result<CudaTensor> {
        self.ops.linear(&self.gemm, x, w, b, act)
    }

    fn act(&self, x: &CudaTensor, act: Act) -> Result<CudaTensor> {
        self.ops.act(x, act)
    }

    fn layer_norm(
        &self,
        x: &CudaTensor,
        w: Option<&CudaTensor>,
        b: Option<&CudaTensor>,
        eps: f32,
    ) -> Result<CudaTensor> {
        self.ops.layer_norm(x, w, b, eps)
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        self.ops.rms_norm(x, w, eps)
    }

    fn norm_modulate(
        &self,
        x: &CudaTensor,
        shift: &CudaTensor,
        scale: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        self.ops.norm_modulate(x, shift, scale, eps)
    }

    fn add_gated(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        gate: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        self.ops.add_gated(x, y, gate)
    }

    fn axpby(&self, a: f32, x: &CudaTensor, b: f32, y: &CudaTensor) -> Result<CudaTensor> {
        self.ops.axpby(a, x, b, y)
    }

    fn rope(&self, x: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor) -> Result<CudaTensor> {
        self.ops.rope(x, cos, sin)
    }

    fn attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: &AttnPlan,
        bias: Option<KeyBias>,
    ) -> Result<CudaTensor> {
        self.attn().attention(q, k, v, plan, bias)
    }

    fn block_mean_pool(&self, x: &CudaTensor, block: usize) -> Result<CudaTensor> {
        self.ops.block_mean_pool(x, block)
    }

    fn gather_tokens(&self, x: &CudaTensor, idx: &[u32]) -> Result<CudaTensor> {
        self.ops.gather_tokens(x, idx)
    }

    fn narrow(&self, x: &CudaTensor, dim: usize, start: usize, len: usize) -> Result<CudaTensor> {
        self.ops.narrow(x, dim, start, len)
    }

    fn cat(&self, xs: &[&CudaTensor], dim: usize) -> Result<CudaTensor> {
        self.ops.cat(xs, dim)
    }

    fn mean_abs(&self, x: &CudaTensor) -> Result<f32> {
        self.ops.mean_abs(x)
    }

    fn patchify(
        &self,
        x: &CudaTensor,
        patch: [usize; 3],
        order: Option<&[u32]>,
    ) -> Result<CudaTensor> {
        self.ops.patchify(x, patch, order)
    }

    fn unpatchify(
        &self,
        x: &CudaTensor,
        grid: (usize, usize, usize),
        patch: [usize; 3],
        channels: usize,
        order: Option<&[u32]>,
    ) -> Result<CudaTensor> {
        self.ops.unpatchify(x, grid, patch, channels, order)
    }

    fn synchronize(&self) -> Result<()> {
        self.gpu().synchronize()
    }
}

/// The fused passes (`crate::ops::fused`, `crate::ops::rope`); shapes their kernels do not take
/// run the composed ops.
impl FusedOps for CudaBackend {
    fn rope_pooled(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        block: usize,
    ) -> Result<(CudaTensor, Option<CudaTensor>)> {
        self.ops.rope_pooled(x, cos, sin, block)
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
        self.gpu().timed("rms_norm_rope", || {
            match self.ops.rms_norm_rope_fused(x, w, eps, cos, sin, pool)? {
                Some(r) => Ok(r),
                None => jenga_tensor::rms_norm_rope_composed(self, x, w, eps, cos, sin, pool),
            }
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
        self.gpu().timed("add_gated_layer_norm", || {
            self.ops
                .add_gated_norm(x, y, gate, GatedNorm::Affine(w, b), eps)
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
        self.gpu().timed("add_gated_norm_modulate", || {
            self.ops
                .add_gated_norm(x, y, gate, GatedNorm::Modulate(shift, scale), eps)
        })
    }
}

/// The policy kernels (`jenga_carve`'s hooks) on this GPU: `crate::block_select`, `crate::peers`.
impl PolicyKernels for CudaBackend {
    fn select_blocks(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        self.gpu().timed("mask building (pool + select)", || {
            self.select_blocks_device(q, k, sel)
        })
    }

    fn select_blocks_pooled(
        &self,
        qhat: &CudaTensor,
        khat: &CudaTensor,
        sel: &BlockSelect,
    ) -> Result<Option<AttnPlan>> {
        self.gpu().timed("mask building (select)", || {
            CudaBackend::select_blocks_pooled(self, qhat, khat, sel)
        })
    }

    fn svg_select(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &SvgSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        self.svg_select_device(q, k, sel)
    }

    fn draft_select(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        sel: &DraftSelect,
    ) -> Result<Option<(AttnPlan, Arc<dyn DeviceCount>)>> {
        self.draft_select_device(q, k, sel)
    }

    fn host_plan(&self, plan: &AttnPlan) -> Result<AttnPlan> {
        self.host_plan_of(plan)
    }
}

impl SolverOps for CudaBackend {
    type Latent = CudaLatent;

    fn latent_upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaLatent> {
        self.solver().upload(data, shape)
    }
    fn latent_download(&self, x: &CudaLatent) -> Result<Vec<f32>> {
        self.solver().download(x)
    }
    fn latent_shape<'a>(&self, x: &'a CudaLatent) -> &'a [usize] {
        &x.shape
    }
    fn latent_input(&self, x: &CudaLatent, batch: usize) -> Result<CudaTensor> {
        self.solver().input(x, batch)
    }
    fn latent_step(
        &self,
        x: &mut CudaLatent,
        out: &CudaTensor,
        guidance: Option<f32>,
        dt: f32,
    ) -> Result<()> {
        self.solver().step(x, out, guidance, dt)
    }
    fn latent_combine(&self, terms: &[(f32, &CudaLatent)]) -> Result<CudaLatent> {
        self.solver().combine(terms)
    }
}
