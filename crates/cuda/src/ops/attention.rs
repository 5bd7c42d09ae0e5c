//! Attention on the GPU: the shape checks, the plan forms (dense, host CSR uploaded once,
//! device-built CSR) and the kernel dispatch — the Hopper kernel (`crate::attention`), then the
//! portable tensor-core kernels (`kernels/mma_attention.cu`), then the reference kernel
//! (`kernels/attention_naive.cu`), each answering `Ok(None)` for calls it does not cover.

use crate::attention::{kernel_bias, AttentionKernels, Hopper, PlanRef};
use crate::core::{vec8, CudaTensor, DevicePlanBufs, Gpu, KArg};
use crate::nvrtc;
use cudarc::driver::{CudaFunction, LaunchConfig};
use half::bf16;
use jenga_tensor::{AttnPlan, Error, KeyBias, Result, TensorMeta};

const ATTN_NAIVE_SRC: &str = concat!(
    include_str!("../../kernels/common.cuh"),
    "\n",
    include_str!("../../kernels/attention_naive.cu")
);
const MMA_ATTN_SRC: &str = concat!(
    include_str!("../../kernels/common.cuh"),
    "\n",
    include_str!("../../kernels/mma_attention.cu")
);
/// Query rows / keys per CTA tile of `mma_attention.cu`.
const MMA_TILE: usize = 64;
/// Must match `attention_naive.cu`.
const NAIVE_WARPS: usize = 8;
const NAIVE_TK: usize = 32;
pub(crate) const NAIVE_MAX_DH: usize = 128;

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

/// The attention kernels of one GPU and the path pinned for them.
pub(crate) struct AttnKernels {
    naive: CudaFunction,
    /// Tensor-core kernels for head dim 64 / 128 (sm_80+; `None` on older GPUs).
    mma: Option<MmaKernels>,
    /// Hopper wgmma attention (sm_90 only; `None` elsewhere or if it failed to build).
    pub(crate) hopper: Option<AttentionKernels>,
    /// Which attention kernels may run (tests and selftest pin one).
    path: std::sync::atomic::AtomicU8,
}

impl AttnKernels {
    pub(crate) fn load(gpu: &Gpu) -> Result<Self> {
        let ctx = &gpu.ctx;
        let (major, _) = gpu.cc;
        let f = nvrtc::function;
        let attn = nvrtc::load_module(ctx, "jenga_attention_naive", ATTN_NAIVE_SRC, &[])?;
        let naive = f(&attn, "attn_naive_bf16")?;
        // mma.sync with bf16 operands needs sm_80.
        let mma = if major >= 8 {
            let m = nvrtc::load_module(ctx, "jenga_mma_attention", MMA_ATTN_SRC, &[])?;
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
        Ok(AttnKernels {
            naive,
            mma,
            hopper: AttentionKernels::build(ctx),
            path: std::sync::atomic::AtomicU8::new(AttnPath::Auto as u8),
        })
    }
}

/// The attention kernels borrowed with the core they run on.
pub(crate) struct Attn<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) kernels: &'a AttnKernels,
}

impl std::ops::Deref for Attn<'_> {
    type Target = Gpu;
    fn deref(&self) -> &Gpu {
        self.gpu
    }
}

impl Attn<'_> {
    /// The Hopper kernels' view.
    pub(crate) fn hopper(&self) -> Hopper<'_> {
        Hopper {
            gpu: self.gpu,
            hopper_attn: &self.kernels.hopper,
        }
    }

    /// Softmax attention (see `jenga_tensor::Backend::attention`), checked, timed, dispatched.
    pub(crate) fn attention(
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

    /// Pin the attention kernels (for checking the fast ones against the reference).
    pub(crate) fn set_attention_path(&self, path: AttnPath) {
        self.kernels
            .path
            .store(path as u8, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn attention_path(&self) -> AttnPath {
        match self.kernels.path.load(std::sync::atomic::Ordering::Relaxed) {
            1 => AttnPath::Mma,
            2 => AttnPath::Naive,
            3 => AttnPath::MmaSimple,
            _ => AttnPath::Auto,
        }
    }

    /// The portable tensor-core kernel, if it covers this call (head dim 64/128, 16-byte
    /// aligned tensors, plan block a multiple of 64).
    pub(crate) fn attention_mma(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: PlanRef<'_>,
        bias: Option<KeyBias>,
    ) -> Result<Option<CudaTensor>> {
        let Some(mk) = &self.kernels.mma else {
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
        let (bias_from, bias_to, bias_log2) = kernel_bias(bias);
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
                KArg::I32(bias_to),
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
            if let Some(out) = self.hopper().attention_hopper(q, k, v, plan, bias)? {
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

    /// The reference attention kernel (any Dh ≤ 128), dense or over a device plan.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_naive(
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
        let (bias_from, bias_to, bias_log2) = kernel_bias(bias);
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
            &self.kernels.naive,
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
                KArg::I32(bias_to),
            ],
        )?;
        Ok(out)
    }
}
