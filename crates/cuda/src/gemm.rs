//! cuBLASLt matmuls with cached descriptors and a measured algorithm choice (the backend's
//! `linear`).
//!
//! cudarc's safe `CudaBlasLT::matmul` builds the layouts, the descriptor and the preference on
//! every call and runs cuBLASLt's first heuristic answer. Here each distinct problem (shape,
//! leading dims, transposes, epilogue, batch, pointer alignment) gets a [`Plan`] once: the
//! descriptors are kept, cuBLASLt is asked for up to [`MAX_CANDIDATES`] algorithms that fit our
//! workspace, and on first use each candidate is timed with CUDA events on the real buffers
//! (one warm-up each, then [`ROUNDS`] round-robin blocks of launches of about 2 ms each, median
//! per candidate; the output is overwritten by every candidate, and all of them compute the same
//! GEMM, so only bf16 rounding can differ) and the fastest is kept if it beats heuristic #0 by
//! the margin (1 %, `JENGA_GEMM_TUNE_MARGIN`).
//! `JENGA_GEMM_TUNE=0` takes heuristic answer #0 instead, as cudarc does
//! ([`crate::CudaBackend::set_gemm_tuning`] switches at run time). `JENGA_GEMM_LOG=1` prints one line per
//! new plan to stderr: each candidate's time, the choice and what tuning cost.
//!
//! Operands are bf16, accumulation and scaling f32, `alpha = 1`, `beta = 0` (C is not read).
//!
//! Measured on an H100 (`examples/gemm_tune.rs`: every candidate through `linear`, steady state,
//! interleaved; docs/bench/gemm-tune-h100.txt): cuBLASLt offers 8 candidates for the Wan-1.3B
//! shapes; at 32760 tokens heuristic #0 is already the fastest for the 1536-wide projections,
//! the tuned choice gains 1.4–2.2 % on the FFN GEMMs, 5 % on 8192³ and 25 % on the 512-token
//! text-embedding GEMM. Tuning a new shape takes 10–180 ms, once, on the first forward.

use crate::error::{alloc_err, dev, drv};
use cudarc::cublaslt::{result, sys};
use cudarc::driver::{sys::CUevent_flags, CudaSlice, CudaStream, DevicePtr};
use jenga_tensor::Result;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// cuBLASLt workspace (NVIDIA's recommendation for Hopper, as cudarc).
const WORKSPACE_BYTES: usize = 32 << 20;
/// Heuristic answers asked for and timed.
pub(crate) const MAX_CANDIDATES: usize = 16;
/// Timing rounds: every candidate is timed once per round, round-robin, and its median kept,
/// so that clock and power drift over the tuning affects all candidates alike.
pub(crate) const ROUNDS: usize = 3;
/// Launches per timed block are chosen so that a block lasts about this long (µs), between
/// [`MIN_REPS`] and [`MAX_REPS`]: long enough for sustained clocks, short enough to tune fast.
const BLOCK_US: f64 = 2000.0;
const MIN_REPS: usize = 3;
const MAX_REPS: usize = 50;
/// Another candidate replaces heuristic #0 only if it is at least this much faster (relative):
/// differences below it are within what the timing resolves. `JENGA_GEMM_TUNE_MARGIN`
/// overrides.
const DEFAULT_MARGIN: f64 = 0.01;

/// What runs after the product, fused into the GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    None,
    /// `+ bias[row of D]` (bf16, one per output row in cuBLAS's column-major terms).
    Bias,
    /// `gelu_tanh(· + bias)`.
    GeluBias,
    /// `gelu_tanh(·)`.
    Gelu,
}

impl Epilogue {
    fn has_bias(self) -> bool {
        matches!(self, Epilogue::Bias | Epilogue::GeluBias)
    }

    fn sys(self) -> sys::cublasLtEpilogue_t {
        use sys::cublasLtEpilogue_t::*;
        match self {
            Epilogue::None => CUBLASLT_EPILOGUE_DEFAULT,
            Epilogue::Bias => CUBLASLT_EPILOGUE_BIAS,
            Epilogue::GeluBias => CUBLASLT_EPILOGUE_GELU_BIAS,
            Epilogue::Gelu => CUBLASLT_EPILOGUE_GELU,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Epilogue::None => "none",
            Epilogue::Bias => "bias",
            Epilogue::GeluBias => "gelu+bias",
            Epilogue::Gelu => "gelu",
        }
    }
}

/// One GEMM problem in cuBLAS's column-major terms: `D[m×n] = op(A) · op(B)`, `op(A)` m×k,
/// `op(B)` k×n, `batch` of them at the given element strides (ignored for `batch == 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmShape {
    pub transa: bool,
    pub transb: bool,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub lda: i64,
    pub ldb: i64,
    pub ldc: i64,
    pub batch: i32,
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
    pub epilogue: Epilogue,
}

impl GemmShape {
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch.max(1) as f64
    }
}

/// How a plan's algorithm was chosen (for logs, benchmarks and tests).
#[derive(Clone, Debug)]
pub struct GemmTune {
    pub shape: GemmShape,
    /// Whether the candidates were timed (`false`: heuristic #0 taken as is).
    pub tuned: bool,
    /// Heuristic answers that fit the workspace.
    pub candidates: usize,
    /// Heuristic rank of the algorithm in use.
    pub chosen: usize,
    /// Median over the rounds of the mean µs per launch of each candidate, by heuristic rank
    /// (NaN: failed or not timed).
    pub times_us: Vec<f64>,
    /// Launches per timed block.
    pub reps: usize,
    /// Host wall time spent choosing (descriptors, heuristic, timing; not the wait for work
    /// queued before), ms. The first launch of a kernel includes loading it.
    pub tune_ms: f64,
}

impl GemmTune {
    /// Rate of candidate `rank` in TFLOP/s (NaN if it was not timed).
    pub fn tflops(&self, rank: usize) -> f64 {
        let us = self.times_us.get(rank).copied().unwrap_or(f64::NAN);
        self.shape.flops() / us / 1e6
    }

    fn log_line(&self) -> String {
        let s = &self.shape;
        let mut line = format!(
            "gemm m={} n={} k={}{} {}: ",
            s.m,
            s.n,
            s.k,
            if s.batch > 1 {
                format!(" batch={}", s.batch)
            } else {
                String::new()
            },
            s.epilogue.name()
        );
        if self.tuned {
            line += &format!(
                "#{} of {} ({:.1} us, {:.0} TFLOP/s; heuristic #0 {:.1} us, {:.0} TFLOP/s), \
                 tuning {:.1} ms ({} x {} launches each); all us:",
                self.chosen,
                self.candidates,
                self.times_us[self.chosen],
                self.tflops(self.chosen),
                self.times_us[0],
                self.tflops(0),
                self.tune_ms,
                ROUNDS,
                self.reps
            );
            for t in &self.times_us {
                line += &format!(" {t:.1}");
            }
        } else {
            line += &format!(
                "heuristic #{} of {} (untuned)",
                self.chosen, self.candidates
            );
        }
        line
    }
}

struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(rows: u64, cols: u64, ld: i64, batch: i32, stride: i64) -> Result<Self> {
        let l = Layout(
            result::create_matrix_layout(sys::cudaDataType_t::CUDA_R_16BF, rows, cols, ld)
                .map_err(blas("creating a matrix layout"))?,
        );
        if batch > 1 {
            use sys::cublasLtMatrixLayoutAttribute_t::*;
            unsafe {
                result::set_matrix_layout_attribute(
                    l.0,
                    CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                    &batch as *const i32 as *const c_void,
                    size_of::<i32>(),
                )
                .map_err(blas("setting a batch count"))?;
                result::set_matrix_layout_attribute(
                    l.0,
                    CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                    &stride as *const i64 as *const c_void,
                    size_of::<i64>(),
                )
                .map_err(blas("setting a batch stride"))?;
            }
        }
        Ok(l)
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = unsafe { result::destroy_matrix_layout(self.0) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);

impl Desc {
    unsafe fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, v: &T) -> Result<()> {
        result::set_matmul_desc_attribute(
            self.0,
            attr,
            v as *const T as *const c_void,
            size_of::<T>(),
        )
        .map_err(blas("setting a matmul descriptor attribute"))
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        let _ = unsafe { result::destroy_matmul_desc(self.0) };
    }
}

struct Pref(sys::cublasLtMatmulPreference_t);

impl Pref {
    unsafe fn set<T>(&self, attr: sys::cublasLtMatmulPreferenceAttributes_t, v: &T) -> Result<()> {
        result::set_matmul_pref_attribute(
            self.0,
            attr,
            v as *const T as *const c_void,
            size_of::<T>(),
        )
        .map_err(blas("setting a matmul preference"))
    }
}

impl Drop for Pref {
    fn drop(&mut self) {
        let _ = unsafe { result::destroy_matmul_pref(self.0) };
    }
}

/// A problem's descriptors and chosen algorithm.
struct Plan {
    /// Locked while its bias pointer is set and the matmul enqueued.
    desc: Mutex<Desc>,
    a: Layout,
    b: Layout,
    c: Layout,
    epilogue: Epilogue,
    algo: sys::cublasLtMatmulAlgo_t,
    tune: GemmTune,
}

// The descriptors are host objects; the only mutation (the bias pointer) happens under `desc`'s
// lock, and the layouts are read-only after creation.
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    shape: GemmShape,
    /// Smallest alignment (bytes, ≤ 256) of the A, B and D pointers: the heuristic may only
    /// offer kernels that need what the pointers have.
    align: u32,
    tuned: bool,
    /// Heuristic rank to take (`u8::MAX`: none forced; diagnostics only).
    forced: u8,
}

/// The device pointers of one call (`bias` 0 when the epilogue has none).
#[derive(Clone, Copy, Debug)]
pub struct GemmPtrs {
    pub a: u64,
    pub b: u64,
    pub d: u64,
    pub bias: u64,
}

/// cuBLASLt handle, workspace and plan cache of one backend (one stream).
pub(crate) struct Gemm {
    handle: sys::cublasLtHandle_t,
    /// Kept alive for `workspace_ptr`.
    _workspace: CudaSlice<u8>,
    workspace_ptr: u64,
    stream: Arc<CudaStream>,
    tune: AtomicBool,
    forced: AtomicU8,
    margin: f64,
    log: bool,
    /// `None`: cuBLASLt has no algorithm for the problem (callers fall back).
    plans: Mutex<HashMap<Key, Option<Arc<Plan>>>>,
}

// The handle is used only through cuBLASLt calls, which are thread-safe for one handle.
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

fn blas(context: &str) -> impl FnOnce(result::CublasError) -> jenga_tensor::Error + '_ {
    move |e| dev(format!("cuBLASLt {context}: {e:?}"))
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(v) => !matches!(v.trim(), "0" | "" | "false" | "off" | "no"),
        Err(_) => default,
    }
}

/// Largest power of two ≤ 256 dividing `p`.
fn alignment(p: u64) -> u32 {
    if p == 0 {
        256
    } else {
        1u32 << p.trailing_zeros().min(8)
    }
}

/// Rough µs per launch (sizes the timed blocks): 600 TFLOP/s plus a launch.
fn estimate_us(s: &GemmShape) -> f64 {
    s.flops() / 6e8 + 8.0
}

impl Gemm {
    pub(crate) fn new(stream: Arc<CudaStream>) -> Result<Self> {
        stream
            .context()
            .bind_to_thread()
            .map_err(drv("binding the CUDA context"))?;
        let workspace =
            unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }.map_err(alloc_err(WORKSPACE_BYTES))?;
        let (workspace_ptr, _) = workspace.device_ptr(&stream);
        let handle = result::create_handle().map_err(blas("creating a handle"))?;
        Ok(Gemm {
            handle,
            _workspace: workspace,
            workspace_ptr,
            stream,
            tune: AtomicBool::new(env_flag("JENGA_GEMM_TUNE", true)),
            forced: AtomicU8::new(u8::MAX),
            margin: std::env::var("JENGA_GEMM_TUNE_MARGIN")
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|m| (0.0..1.0).contains(m))
                .unwrap_or(DEFAULT_MARGIN),
            log: env_flag("JENGA_GEMM_LOG", false),
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Enqueue `D = op(A)·op(B)` (+ epilogue) on the stream. `Ok(false)`: cuBLASLt has no
    /// algorithm for this problem (nothing was enqueued; e.g. an epilogue without a kernel).
    ///
    /// # Safety
    /// The pointers must address device buffers of the sizes `shape` implies, the bias (if the
    /// epilogue has one) `m` elements, all bf16; the context must be current on this thread.
    pub(crate) unsafe fn matmul(&self, shape: &GemmShape, p: GemmPtrs) -> Result<bool> {
        let key = Key {
            shape: *shape,
            align: alignment(p.a).min(alignment(p.b)).min(alignment(p.d)),
            tuned: self.tune.load(Ordering::Relaxed),
            forced: self.forced.load(Ordering::Relaxed),
        };
        let plan = {
            let mut plans = self
                .plans
                .lock()
                .map_err(|_| dev("gemm plan cache poisoned"))?;
            match plans.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let plan = self.plan(&key, p)?.map(Arc::new);
                    if self.log {
                        match &plan {
                            Some(pl) => eprintln!("{}", pl.tune.log_line()),
                            None => eprintln!(
                                "gemm m={} n={} k={} {}: no cuBLASLt algorithm",
                                shape.m,
                                shape.n,
                                shape.k,
                                shape.epilogue.name()
                            ),
                        }
                    }
                    plans.insert(key, plan.clone());
                    plan
                }
            }
        };
        match plan {
            Some(plan) => {
                self.launch(&plan, &plan.algo, p)
                    .map_err(blas(&format!("matmul {:?}", shape)))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    unsafe fn launch(
        &self,
        plan: &Plan,
        algo: &sys::cublasLtMatmulAlgo_t,
        p: GemmPtrs,
    ) -> std::result::Result<(), result::CublasError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let desc = plan.desc.lock().unwrap_or_else(|e| e.into_inner());
        if plan.epilogue.has_bias() {
            result::set_matmul_desc_attribute(
                desc.0,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &p.bias as *const u64 as *const c_void,
                size_of::<u64>(),
            )?;
        }
        result::matmul(
            self.handle,
            desc.0,
            &alpha as *const f32 as *const c_void,
            &beta as *const f32 as *const c_void,
            p.a as *const c_void,
            plan.a.0,
            p.b as *const c_void,
            plan.b.0,
            p.d as *const c_void,
            plan.c.0,
            p.d as *mut c_void,
            plan.c.0,
            algo,
            self.workspace_ptr as *mut c_void,
            WORKSPACE_BYTES,
            self.stream.cu_stream() as sys::cudaStream_t,
        )
    }

    /// Descriptors, candidates and (when tuning) the timed choice for `key`.
    unsafe fn plan(&self, key: &Key, p: GemmPtrs) -> Result<Option<Plan>> {
        let s = &key.shape;
        if key.tuned {
            // Wait for the work already queued (a whole forward, for its last linear), so that
            // the tuning time reported below is the tuning's own.
            self.stream
                .synchronize()
                .map_err(drv("synchronizing before GEMM tuning"))?;
        }
        let t0 = Instant::now();
        let (ar, ac) = if s.transa { (s.k, s.m) } else { (s.m, s.k) };
        let (br, bc) = if s.transb { (s.n, s.k) } else { (s.k, s.n) };
        let a = Layout::new(ar, ac, s.lda, s.batch, s.stride_a)?;
        let b = Layout::new(br, bc, s.ldb, s.batch, s.stride_b)?;
        let c = Layout::new(s.m, s.n, s.ldc, s.batch, s.stride_c)?;
        let desc = Desc(
            result::create_matmul_desc(
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cudaDataType_t::CUDA_R_32F,
            )
            .map_err(blas("creating a matmul descriptor"))?,
        );
        {
            use sys::cublasLtMatmulDescAttributes_t::*;
            desc.set(CUBLASLT_MATMUL_DESC_TRANSA, &(s.transa as i32))?;
            desc.set(CUBLASLT_MATMUL_DESC_TRANSB, &(s.transb as i32))?;
            desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, &s.epilogue.sys())?;
            if s.epilogue.has_bias() {
                desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias)?;
            }
        }
        let pref = Pref(result::create_matmul_pref().map_err(blas("creating a preference"))?);
        {
            use sys::cublasLtMatmulPreferenceAttributes_t::*;
            pref.set(
                CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &(WORKSPACE_BYTES as u64),
            )?;
            for attr in [
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ] {
                pref.set(attr, &key.align)?;
            }
        }
        let mut found: [sys::cublasLtMatmulHeuristicResult_t; MAX_CANDIDATES] = std::mem::zeroed();
        let mut count = 0i32;
        let st = sys::cublasLtMatmulAlgoGetHeuristic(
            self.handle,
            desc.0,
            a.0,
            b.0,
            c.0,
            c.0,
            pref.0,
            MAX_CANDIDATES as i32,
            found.as_mut_ptr(),
            &mut count,
        );
        // No algorithm for this problem (NOT_SUPPORTED, or a zero count): the caller falls back.
        if st.result().is_err() {
            return Ok(None);
        }
        let algos: Vec<sys::cublasLtMatmulAlgo_t> = found
            [..count.clamp(0, MAX_CANDIDATES as i32) as usize]
            .iter()
            .filter(|h| {
                h.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                    && h.workspaceSize <= WORKSPACE_BYTES
            })
            .map(|h| h.algo)
            .collect();
        if algos.is_empty() {
            return Ok(None);
        }
        let mut plan = Plan {
            desc: Mutex::new(desc),
            a,
            b,
            c,
            epilogue: s.epilogue,
            algo: algos[0],
            tune: GemmTune {
                shape: *s,
                tuned: false,
                candidates: algos.len(),
                chosen: 0,
                times_us: vec![f64::NAN; algos.len()],
                reps: 0,
                tune_ms: 0.0,
            },
        };
        if key.forced != u8::MAX {
            let r = (key.forced as usize).min(algos.len() - 1);
            plan.algo = algos[r];
            plan.tune.chosen = r;
        } else if key.tuned && algos.len() > 1 {
            let reps = ((BLOCK_US / estimate_us(s)).round() as usize).clamp(MIN_REPS, MAX_REPS);
            let times = self.time_candidates(&plan, &algos, p, reps)?;
            let best = (0..times.len())
                .filter(|&i| times[i].is_finite())
                .min_by(|&i, &j| times[i].total_cmp(&times[j]));
            let chosen = match best {
                // #0 stays unless another is faster by the margin.
                Some(i) if times[0].is_finite() && times[i] > times[0] * (1.0 - self.margin) => 0,
                Some(i) => i,
                // Every candidate failed to launch: no usable algorithm.
                None => return Ok(None),
            };
            plan.algo = algos[chosen];
            plan.tune.chosen = chosen;
            plan.tune.times_us = times;
            plan.tune.reps = reps;
            plan.tune.tuned = true;
        }
        plan.tune.tune_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(Some(plan))
    }

    /// Per candidate, the median over [`ROUNDS`] round-robin blocks of `reps` launches of the
    /// mean µs per launch, on the real buffers (NaN where a launch failed). Events are recorded
    /// around each block only, so work already queued on the stream is not counted.
    unsafe fn time_candidates(
        &self,
        plan: &Plan,
        algos: &[sys::cublasLtMatmulAlgo_t],
        p: GemmPtrs,
        reps: usize,
    ) -> Result<Vec<f64>> {
        let ctx = self.stream.context();
        // Warm-up (also weeds out candidates that refuse these pointers).
        let mut ok: Vec<bool> = algos
            .iter()
            .map(|algo| self.launch(plan, algo, p).is_ok())
            .collect();
        let event = || {
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("creating a timing event"))
        };
        let mut blocks = Vec::with_capacity(ROUNDS * algos.len());
        for _ in 0..ROUNDS {
            for (i, algo) in algos.iter().enumerate() {
                if !ok[i] {
                    continue;
                }
                let (start, end) = (event()?, event()?);
                start
                    .record(&self.stream)
                    .map_err(drv("recording a timing event"))?;
                ok[i] = (0..reps).all(|_| self.launch(plan, algo, p).is_ok());
                end.record(&self.stream)
                    .map_err(drv("recording a timing event"))?;
                blocks.push((i, start, end));
            }
        }
        let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); algos.len()];
        for (i, start, end) in blocks {
            let ms = start
                .elapsed_ms(&end)
                .map_err(drv("reading GEMM timing events"))?;
            per[i].push(ms as f64 * 1e3 / reps as f64);
        }
        Ok(per
            .into_iter()
            .zip(ok)
            .map(|(mut v, ok)| {
                if !ok || v.is_empty() {
                    return f64::NAN;
                }
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect())
    }

    fn tunes(&self) -> Vec<GemmTune> {
        let plans = match self.plans.lock() {
            Ok(p) => p,
            Err(e) => e.into_inner(),
        };
        plans.values().flatten().map(|p| p.tune.clone()).collect()
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        if let Ok(mut p) = self.plans.lock() {
            p.clear();
        }
        // The workspace is freed (stream-ordered) after this.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

impl Gemm {
    /// Time cuBLASLt's candidate algorithms on each new GEMM problem (`true`, the default unless
    /// `JENGA_GEMM_TUNE=0`) or take its first heuristic answer. Problems already planned in the
    /// other mode keep their plan; each mode has its own.
    pub fn set_gemm_tuning(&self, on: bool) {
        self.tune.store(on, Ordering::Relaxed);
    }

    /// Whether new GEMM problems are tuned.
    pub fn gemm_tuning(&self) -> bool {
        self.tune.load(Ordering::Relaxed)
    }

    /// Take heuristic answer `rank` (clamped to those offered) for new GEMM problems instead of
    /// tuning; `None` restores normal operation. For measuring the candidates themselves.
    #[doc(hidden)]
    pub fn set_gemm_forced_rank(&self, rank: Option<usize>) {
        let r = rank
            .map(|r| r.min(u8::MAX as usize - 1) as u8)
            .unwrap_or(u8::MAX);
        self.forced.store(r, Ordering::Relaxed);
    }

    /// The GEMM plans made so far and how each algorithm was chosen.
    pub fn gemm_tunes(&self) -> Vec<GemmTune> {
        self.tunes()
    }
}
