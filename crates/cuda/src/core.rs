//! The core handle every subsystem borrows: one GPU's context and stream, its SM count, the
//! stream-ordered allocator (`empty`), host transfers, the one kernel `launch` helper (timed
//! per op when op timing is on), shape checks and the device copies of host plans.
//!
//! Everything is queued on a single stream, so allocations use the stream-ordered pool
//! (`cuMemAllocAsync`) and a tensor dropped right after the launch that reads it is freed only
//! after that launch: no synchronisation inside ops. cudarc's per-buffer event tracking is off
//! for the same reason (it adds two events per launch argument and buys nothing on one stream).

use crate::arc_cache::ArcCache;
use crate::error::{alloc_err, drv};
use crate::op_times::{OpTime, OpTimes};
use cudarc::driver::{
    sys::CUdevice_attribute, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr,
    LaunchConfig, PushKernelArg,
};
use half::bf16;
use jenga_tensor::{BlockPlan, DType, DeviceCount, Error, Result, TensorMeta};
use std::sync::Arc;

/// A contiguous bf16 tensor on the device: a shared buffer, an element offset into it (so
/// leading-dim `narrow`s and `reshape`s are free) and a shape.
#[derive(Clone)]
pub struct CudaTensor {
    pub(crate) buf: Arc<CudaSlice<bf16>>,
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
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

/// A `BlockPlan`'s CSR arrays on the device: uploaded from a host plan (`device_plan`), or
/// built on the device (`select_blocks`, [`AttnPlan::Device`]); the attention kernels get them
/// through a [`crate::PlanRef`]. For device-built plans `col_idx` is allocated for every block
/// (only `row_ptr[rows]` entries are valid).
pub struct DevicePlanBufs {
    pub row_ptr: CudaSlice<u32>,
    pub col_idx: CudaSlice<u32>,
}

/// One GPU, one stream: what every op family and subsystem needs, and nothing of theirs.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) name: String,
    pub(crate) sm_count: usize,
    /// Compute capability (major, minor).
    pub(crate) cc: (i32, i32),
    /// Plans are reused across the layers of a step: upload each once (keyed by the Arc).
    plans: ArcCache<BlockPlan, Arc<DevicePlanBufs>>,
    pub(crate) op_times: OpTimes,
}

/// A kernel argument for [`Gpu::launch`].
pub(crate) enum KArg {
    U64(u64),
    I64(i64),
    I32(i32),
    F32(f32),
}

pub(crate) const BF16_BYTES: u64 = 2;

pub(crate) fn elems_cfg(n: usize, sm_count: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, sm_count.max(1) * 32);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Whether the 8-wide kernels apply: every address 16-byte aligned (null = absent is fine) and
/// every count a multiple of 8.
pub(crate) fn vec8(ptrs: &[u64], counts: &[usize]) -> bool {
    ptrs.iter().all(|p| p.is_multiple_of(16)) && counts.iter().all(|c| c.is_multiple_of(8))
}

/// A count on the device (u32: a plan's kept pairs, a number of heads), read on demand.
struct Count {
    stream: Arc<CudaStream>,
    buf: CudaSlice<u32>,
}

impl DeviceCount for Count {
    fn read(&self) -> Result<u64> {
        let v = self
            .stream
            .clone_dtoh(&self.buf)
            .map_err(drv("reading a device count"))?;
        Ok(v[0] as u64)
    }
}

impl Gpu {
    /// Open device `ordinal`: context, the one stream, the memory pool setting.
    pub(crate) fn open(ordinal: usize) -> Result<Self> {
        let ctx = crate::device::open_context(ordinal)?;
        // One stream: cross-stream event tracking is pure overhead (see module docs).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("creating a CUDA stream"))?;
        Self::keep_freed_memory_pooled(ordinal);
        crate::device::preload_toolkit_libs();
        let cc = ctx
            .compute_capability()
            .map_err(drv("querying compute capability"))?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("querying SM count"))? as usize;
        let gpu = ctx.name().map_err(drv("querying device name"))?;
        Ok(Gpu {
            name: format!("cuda:{ordinal} {gpu} (sm_{}{})", cc.0, cc.1),
            ctx,
            stream,
            sm_count,
            cc,
            plans: Default::default(),
            op_times: Default::default(),
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
    pub(crate) fn upload_u32(&self, v: Option<&[u32]>) -> Result<Option<CudaSlice<u32>>> {
        v.map(|v| {
            self.stream
                .clone_htod(v)
                .map_err(alloc_err(std::mem::size_of_val(v)))
        })
        .transpose()
    }

    pub(crate) fn launch(
        &self,
        f: &CudaFunction,
        cfg: LaunchConfig,
        what: &str,
        args: &[KArg],
    ) -> Result<()> {
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

    pub(crate) fn same_shape(op: &'static str, a: &CudaTensor, b: &CudaTensor) -> Result<()> {
        if a.shape != b.shape {
            return Err(Error::shape(op, format!("{:?} vs {:?}", a.shape, b.shape)));
        }
        Ok(())
    }

    pub(crate) fn last_dim(op: &'static str, x: &CudaTensor) -> Result<usize> {
        match x.shape.last() {
            Some(&d) if d > 0 => Ok(d),
            _ => Err(Error::shape(op, format!("x {:?} has no last dim", x.shape))),
        }
    }

    pub(crate) fn vec_of(op: &'static str, what: &str, t: &CudaTensor, d: usize) -> Result<()> {
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

    /// Host f32 in, converted to bf16.
    pub(crate) fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        // The sampler moves the latent across every step while the GPU waits: convert in
        // parallel (a 480p Wan latent is 2.1M values, several ms on one core).
        use rayon::prelude::*;
        let host: Vec<bf16> = data.par_iter().map(|&v| bf16::from_f32(v)).collect();
        self.upload_bf16(&host, shape)
    }

    /// Raw little-endian `dtype` bytes in: bf16 bytes go to the device as they are (no f32
    /// copy on the host), f16/f32 are converted to bf16 on the host in parallel.
    pub(crate) fn upload_raw(
        &self,
        bytes: &[u8],
        dtype: DType,
        shape: &[usize],
    ) -> Result<CudaTensor> {
        use rayon::prelude::*;
        if !bytes.len().is_multiple_of(dtype.size()) {
            return Err(Error::invalid(
                "upload_raw",
                format!("{} bytes is not a whole number of {dtype:?}", bytes.len()),
            ));
        }
        let two = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
        let host: Vec<bf16> = match dtype {
            DType::BF16 => {
                if let Ok(v) = bytemuck::try_cast_slice::<u8, bf16>(bytes) {
                    return self.upload_bf16(v, shape);
                }
                bytes
                    .par_chunks_exact(2)
                    .map(|c| bf16::from_bits(two(c)))
                    .collect()
            }
            DType::F16 => bytes
                .par_chunks_exact(2)
                .map(|c| bf16::from_f32(half::f16::from_bits(two(c)).to_f32()))
                .collect(),
            DType::F32 => bytes
                .par_chunks_exact(4)
                .map(|c| bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        };
        self.upload_bf16(&host, shape)
    }

    /// Out as little-endian `dtype` bytes (bf16: exactly as stored).
    pub(crate) fn download_raw(&self, t: &CudaTensor, dtype: DType) -> Result<Vec<u8>> {
        use rayon::prelude::*;
        let v = self.download_bf16(t)?;
        Ok(match dtype {
            DType::BF16 => bytemuck::cast_slice::<bf16, u8>(&v).to_vec(),
            DType::F16 => v
                .par_iter()
                .flat_map_iter(|x| half::f16::from_f32(x.to_f32()).to_bits().to_le_bytes())
                .collect(),
            DType::F32 => v
                .par_iter()
                .flat_map_iter(|x| x.to_f32().to_le_bytes())
                .collect(),
        })
    }

    /// Out as host f32.
    pub(crate) fn download_f32(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        Ok(self
            .download_bf16(t)?
            .par_iter()
            .map(|v| v.to_f32())
            .collect())
    }

    pub(crate) fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
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

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(drv("synchronizing the stream"))?;
        self.ctx.check_err().map_err(drv("deferred driver error"))
    }

    /// A count left on the device, read on demand.
    pub(crate) fn device_count(&self, buf: CudaSlice<u32>) -> Arc<dyn DeviceCount> {
        Arc::new(Count {
            stream: self.stream().clone(),
            buf,
        })
    }

    pub(crate) fn alloc_u32(&self, n: usize) -> Result<CudaSlice<u32>> {
        unsafe { self.stream().alloc::<u32>(n.max(1)) }.map_err(alloc_err(n.max(1) * 4))
    }

    pub(crate) fn alloc_f32(&self, n: usize) -> Result<CudaSlice<f32>> {
        unsafe { self.stream().alloc::<f32>(n.max(1)) }.map_err(alloc_err(n.max(1) * 4))
    }

    pub(crate) fn zero_u32(&self) -> Result<CudaSlice<u32>> {
        self.stream().alloc_zeros::<u32>(1).map_err(alloc_err(4))
    }

    /// Start (clearing earlier totals) or stop timing ops.
    pub fn set_op_timing(&self, on: bool) {
        self.op_times.set(on)
    }

    /// Whether ops are being timed now.
    pub(crate) fn op_timing_on(&self) -> bool {
        self.op_times.on()
    }

    /// Totals so far, most expensive first.
    pub fn op_times(&self) -> Vec<OpTime> {
        self.op_times.totals()
    }

    /// Run `f` as op `name` (timed when timing is on and no timed op encloses it).
    pub(crate) fn timed<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.op_times.timed(&self.stream, name, f)
    }
}
