//! CPU backend: f32, multi-threaded with rayon, matrix products through the `gemm` crate.
//!
//! It is the reference every other backend is checked against, so ops are written plainly;
//! the only non-trivial one is attention, which walks key blocks with an online softmax so
//! that dense and block-sparse plans run through the same code (the GPU kernels do the same).

use crate::{Act, AttnPlan, Backend, Error, KeyBias, Result, TensorMeta};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct CpuTensor {
    data: Arc<Vec<f32>>,
    shape: Vec<usize>,
}

impl CpuTensor {
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        if data.len() != crate::numel(shape) {
            return Err(Error::shape(
                "CpuTensor::new",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        Ok(CpuTensor {
            data: Arc::new(data),
            shape: shape.to_vec(),
        })
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    fn last(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
}

impl TensorMeta for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The CPU backend. Ops run on the global rayon pool unless built with [`CpuBackend::with_threads`].
pub struct CpuBackend {
    pool: Option<rayon::ThreadPool>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Query rows handled together by one attention task (the GPU kernels use the same block).
const ATTN_Q_TILE: usize = 128;
/// Keys processed per online-softmax update when a run of kept blocks is contiguous.
const ATTN_K_CHUNK: usize = 512;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend { pool: None }
    }
    pub fn with_threads(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::invalid("CpuBackend", format!("thread pool: {e}")))?;
        Ok(CpuBackend { pool: Some(pool) })
    }
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}

fn out(data: Vec<f32>, shape: &[usize]) -> Result<CpuTensor> {
    CpuTensor::new(data, shape)
}

fn check_same(op: &'static str, a: &CpuTensor, b: &CpuTensor) -> Result<()> {
    if a.shape != b.shape {
        return Err(Error::shape(op, format!("{:?} vs {:?}", a.shape, b.shape)));
    }
    Ok(())
}

/// `[B, .., D]` activations with `[B, D]` per-sample vectors: returns (B, rows per sample, D).
fn per_sample_dims(
    op: &'static str,
    x: &CpuTensor,
    v: &CpuTensor,
) -> Result<(usize, usize, usize)> {
    let d = x.last();
    let b = x.shape.first().copied().unwrap_or(1);
    if v.shape != [b, d] || x.dims() < 2 {
        return Err(Error::shape(
            op,
            format!("x {:?} with per-sample vector {:?}", x.shape, v.shape),
        ));
    }
    Ok((b, x.numel() / (b * d).max(1), d))
}

/// `e^x` to ~1e-7 relative error, branch-free so loops over it vectorise (libm's `expf` is a
/// call per element; softmax and GELU spent a third of a CPU forward in it).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round to nearest via the 1.5·2^23 trick (vectorises, unlike `round`)
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // Cody–Waite: ln2 split in a part exact in f32 and a remainder keeps f accurate for large |x|.
    let f = (x - n * 0.693_145_75) - n * 1.428_606_8e-6; // |f| ≤ ln2/2
                                                         // Taylor series of e^f to degree 7: truncation < 2e-9 relative on |f| ≤ 0.347.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let y = C * (x + 0.044715 * x * x * x);
    // tanh(y) = 1 − 2/(e^{2y} + 1)
    0.5 * x * (2.0 - 2.0 / (fast_exp(2.0 * y) + 1.0))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + fast_exp(-x))
}

fn apply_act(v: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::GeluTanh => v
            .par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|x| *x = gelu_tanh(*x))),
        Act::Silu => v
            .par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|x| *x = silu(*x))),
    }
}

/// Mean and 1/std of a row (two-pass for accuracy: activations of diffusion models grow large).
#[inline]
fn row_stats(r: &[f32], eps: f32) -> (f32, f32) {
    let n = r.len() as f32;
    let mean = r.iter().sum::<f32>() / n;
    let var = r.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Raw pointer that may be shared by tasks writing disjoint regions.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    // A method (not field access) so closures capture the whole Send+Sync wrapper.
    fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` with explicit strides (row stride, col stride).
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    par: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(data.to_vec(), shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.to_vec())
    }

    fn reshape(&self, t: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        if crate::numel(shape) != t.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?}", t.shape),
            ));
        }
        Ok(CpuTensor {
            data: t.data.clone(),
            shape: shape.to_vec(),
        })
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
        act: Act,
    ) -> Result<CpuTensor> {
        let k = x.last();
        if w.dims() != 2 || w.shape[1] != k {
            return Err(Error::shape(
                "linear",
                format!("x {:?} with weight {:?}", x.shape, w.shape),
            ));
        }
        let n_out = w.shape[0];
        if let Some(b) = b {
            if b.shape != [n_out] {
                return Err(Error::shape(
                    "linear",
                    format!("bias {:?} for {n_out} outputs", b.shape),
                ));
            }
        }
        let m = x.numel() / k.max(1);
        let mut y = vec![0f32; m * n_out];
        if let Some(b) = b {
            y.par_chunks_mut(n_out)
                .for_each(|row| row.copy_from_slice(b.data()));
        }
        let threads = self.threads();
        self.run(|| unsafe {
            matmul(
                m,
                n_out,
                k,
                y.as_mut_ptr(),
                n_out,
                b.is_some(),
                x.data.as_ptr(),
                k,
                1,
                w.data.as_ptr(),
                1,
                k,
                if threads > 1 {
                    Parallelism::Rayon(threads)
                } else {
                    Parallelism::None
                },
            )
        });
        self.run(|| apply_act(&mut y, act));
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = n_out;
        out(y, &shape)
    }

    fn act(&self, x: &CpuTensor, act: Act) -> Result<CpuTensor> {
        let mut y = x.data.to_vec();
        self.run(|| apply_act(&mut y, act));
        out(y, &x.shape)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: Option<&CpuTensor>,
        b: Option<&CpuTensor>,
        eps: f32,
    ) -> Result<CpuTensor> {
        let d = x.last();
        for (name, p) in [("weight", w), ("bias", b)] {
            if let Some(p) = p {
                if p.shape != [d] {
                    return Err(Error::shape(
                        "layer_norm",
                        format!("{name} {:?} for dim {d}", p.shape),
                    ));
                }
            }
        }
        let mut y = vec![0f32; x.numel()];
        self.run(|| {
            y.par_chunks_mut(d)
                .zip(x.data.par_chunks(d))
                .for_each(|(o, r)| {
                    let (mean, rstd) = row_stats(r, eps);
                    for i in 0..d {
                        let mut v = (r[i] - mean) * rstd;
                        if let Some(w) = w {
                            v *= w.data[i];
                        }
                        if let Some(b) = b {
                            v += b.data[i];
                        }
                        o[i] = v;
                    }
                })
        });
        out(y, &x.shape)
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        let d = x.last();
        if w.shape != [d] {
            return Err(Error::shape(
                "rms_norm",
                format!("weight {:?} for dim {d}", w.shape),
            ));
        }
        let mut y = vec![0f32; x.numel()];
        self.run(|| {
            y.par_chunks_mut(d)
                .zip(x.data.par_chunks(d))
                .for_each(|(o, r)| {
                    let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
                    let s = 1.0 / (ms + eps).sqrt();
                    for i in 0..d {
                        o[i] = r[i] * s * w.data[i];
                    }
                })
        });
        out(y, &x.shape)
    }

    fn norm_modulate(
        &self,
        x: &CpuTensor,
        shift: &CpuTensor,
        scale: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        let (_, rows, d) = per_sample_dims("norm_modulate", x, shift)?;
        check_same("norm_modulate", shift, scale)?;
        let mut y = vec![0f32; x.numel()];
        self.run(|| {
            y.par_chunks_mut(d)
                .zip(x.data.par_chunks(d))
                .enumerate()
                .for_each(|(i, (o, r))| {
                    let bi = i / rows.max(1);
                    let (sh, sc) = (&shift.data[bi * d..][..d], &scale.data[bi * d..][..d]);
                    let (mean, rstd) = row_stats(r, eps);
                    for j in 0..d {
                        o[j] = (r[j] - mean) * rstd * (1.0 + sc[j]) + sh[j];
                    }
                })
        });
        out(y, &x.shape)
    }

    fn add_gated(
        &self,
        x: &CpuTensor,
        y: &CpuTensor,
        gate: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        check_same("add_gated", x, y)?;
        let mut o = x.data.to_vec();
        match gate {
            None => self.run(|| {
                o.par_iter_mut()
                    .zip(y.data.par_iter())
                    .for_each(|(a, b)| *a += b)
            }),
            Some(g) => {
                let (_, rows, d) = per_sample_dims("add_gated", x, g)?;
                self.run(|| {
                    o.par_chunks_mut(d)
                        .zip(y.data.par_chunks(d))
                        .enumerate()
                        .for_each(|(i, (a, b))| {
                            let gv = &g.data[(i / rows.max(1)) * d..][..d];
                            for j in 0..d {
                                a[j] += gv[j] * b[j];
                            }
                        })
                });
            }
        }
        out(o, &x.shape)
    }

    fn axpby(&self, a: f32, x: &CpuTensor, b: f32, y: &CpuTensor) -> Result<CpuTensor> {
        check_same("axpby", x, y)?;
        let o = self.run(|| {
            x.data
                .par_iter()
                .zip(y.data.par_iter())
                .map(|(p, q)| a * p + b * q)
                .collect()
        });
        out(o, &x.shape)
    }

    fn rope(&self, x: &CpuTensor, cos: &CpuTensor, sin: &CpuTensor) -> Result<CpuTensor> {
        check_same("rope", cos, sin)?;
        if x.dims() != 4
            || cos.shape != [x.shape[1], x.shape[3] / 2]
            || !x.shape[3].is_multiple_of(2)
        {
            return Err(Error::shape(
                "rope",
                format!("x {:?} with table {:?}", x.shape, cos.shape),
            ));
        }
        let (l, h, dh) = (x.shape[1], x.shape[2], x.shape[3]);
        let half = dh / 2;
        let mut o = x.data.to_vec();
        self.run(|| {
            o.par_chunks_mut(h * dh).enumerate().for_each(|(tok, row)| {
                let li = tok % l;
                let (c, s) = (
                    &cos.data[li * half..][..half],
                    &sin.data[li * half..][..half],
                );
                for head in row.chunks_mut(dh) {
                    for i in 0..half {
                        let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = x0 * c[i] - x1 * s[i];
                        head[2 * i + 1] = x0 * s[i] + x1 * c[i];
                    }
                }
            })
        });
        out(o, &x.shape)
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        plan: &AttnPlan,
        bias: Option<KeyBias>,
    ) -> Result<CpuTensor> {
        check_same("attention (k, v)", k, v)?;
        if q.dims() != 4
            || k.dims() != 4
            || q.shape[0] != k.shape[0]
            || q.shape[2..] != k.shape[2..]
        {
            return Err(Error::shape(
                "attention",
                format!("q {:?}, k {:?}", q.shape, k.shape),
            ));
        }
        let (bsz, lq, h, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let lk = k.shape[1];
        if let AttnPlan::Device(_) = plan {
            return Err(Error::invalid(
                "attention",
                "a device-built plan (AttnPlan::Device) cannot run on the CPU backend",
            ));
        }
        if let AttnPlan::Sparse(p) = plan {
            p.validate(bsz, h, lq, lk)?;
            if p.block != ATTN_Q_TILE {
                // The tile of query rows must be the plan's block so each task reads one CSR row.
                return Err(Error::invalid(
                    "attention",
                    format!("plan block {} (CPU supports {ATTN_Q_TILE})", p.block),
                ));
            }
        }
        let mut o = vec![0f32; q.numel()];
        let optr = SendPtr(o.as_mut_ptr());
        let q_tiles = lq.div_ceil(ATTN_Q_TILE);
        let scale = 1.0 / (d as f32).sqrt();
        self.run(|| {
            (0..bsz * h * q_tiles).into_par_iter().for_each(|task| {
                let (bh, qt) = (task / q_tiles, task % q_tiles);
                let (b, hh) = (bh / h, bh % h);
                // Key ranges to visit: every key (dense), or the runs of consecutive kept blocks.
                let ranges: Vec<(usize, usize)> = match plan {
                    AttnPlan::Dense => (0..lk)
                        .step_by(ATTN_K_CHUNK)
                        .map(|s| (s, (s + ATTN_K_CHUNK).min(lk)))
                        .collect(),
                    AttnPlan::Sparse(p) => {
                        let mut r: Vec<(usize, usize)> = Vec::new();
                        for &kb in p.row(b, hh, qt) {
                            let (s, e) =
                                (kb as usize * p.block, ((kb as usize + 1) * p.block).min(lk));
                            match r.last_mut() {
                                Some(last) if last.1 == s && e - last.0 <= ATTN_K_CHUNK => {
                                    last.1 = e
                                }
                                _ => r.push((s, e)),
                            }
                        }
                        r
                    }
                    AttnPlan::Device(_) => unreachable!("rejected above"),
                };
                let q0 = qt * ATTN_Q_TILE;
                let rows = ATTN_Q_TILE.min(lq - q0);
                let ts = h * d; // token stride
                let qp = unsafe { q.data.as_ptr().add((b * lq + q0) * ts + hh * d) };
                let mut acc = vec![0f32; rows * d];
                let mut mx = vec![f32::NEG_INFINITY; rows];
                let mut den = vec![0f32; rows];
                let mut s = vec![0f32; rows * ATTN_K_CHUNK];
                for (k0, k1) in ranges {
                    let n = k1 - k0;
                    let kp = unsafe { k.data.as_ptr().add((b * lk + k0) * ts + hh * d) };
                    let vp = unsafe { v.data.as_ptr().add((b * lk + k0) * ts + hh * d) };
                    // s = q · kᵀ
                    unsafe {
                        matmul(
                            rows,
                            n,
                            d,
                            s.as_mut_ptr(),
                            n,
                            false,
                            qp,
                            ts,
                            1,
                            kp,
                            1,
                            ts,
                            Parallelism::None,
                        )
                    };
                    for r in 0..rows {
                        let sr = &mut s[r * n..(r + 1) * n];
                        // Plain slice loops so each pass vectorises.
                        sr.iter_mut().for_each(|x| *x *= scale);
                        if let Some(kb) = bias {
                            let from = kb.from_key.saturating_sub(k0).min(n);
                            sr[from..].iter_mut().for_each(|x| *x += kb.bias);
                        }
                        let m = sr.iter().fold(mx[r], |a, &b| a.max(b));
                        let corr = fast_exp(mx[r] - m);
                        sr.iter_mut().for_each(|x| *x = fast_exp(*x - m));
                        let sum: f32 = sr.iter().sum();
                        den[r] = den[r] * corr + sum;
                        mx[r] = m;
                        if corr != 1.0 {
                            acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= corr);
                        }
                    }
                    // acc += p · v
                    unsafe {
                        matmul(
                            rows,
                            d,
                            n,
                            acc.as_mut_ptr(),
                            d,
                            true,
                            s.as_ptr(),
                            n,
                            1,
                            vp,
                            ts,
                            1,
                            Parallelism::None,
                        )
                    };
                }
                for r in 0..rows {
                    // A row with no kept key (impossible for Jenga plans, which keep the diagonal)
                    // yields zeros rather than NaN.
                    let inv = if den[r] > 0.0 { 1.0 / den[r] } else { 0.0 };
                    let dst = optr.at((b * lq + q0 + r) * ts + hh * d);
                    for j in 0..d {
                        unsafe { *dst.add(j) = acc[r * d + j] * inv };
                    }
                }
            })
        });
        out(o, &q.shape)
    }

    fn block_mean_pool(&self, x: &CpuTensor, block: usize) -> Result<CpuTensor> {
        if x.dims() != 4 || block == 0 {
            return Err(Error::shape(
                "block_mean_pool",
                format!("x {:?}, block {block}", x.shape),
            ));
        }
        let (b, l, h, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let nb = l.div_ceil(block);
        let mut o = vec![0f32; b * h * nb * d];
        self.run(|| {
            o.par_chunks_mut(d).enumerate().for_each(|(i, dst)| {
                let (bi, hi, kb) = (i / (h * nb), (i / nb) % h, i % nb);
                for t in kb * block..((kb + 1) * block).min(l) {
                    let src = &x.data[((bi * l + t) * h + hi) * d..][..d];
                    dst.iter_mut().zip(src).for_each(|(a, s)| *a += s);
                }
                dst.iter_mut().for_each(|a| *a /= block as f32);
            })
        });
        out(o, &[b, h, nb, d])
    }

    fn gather_tokens(&self, x: &CpuTensor, idx: &[u32]) -> Result<CpuTensor> {
        if x.dims() < 2 {
            return Err(Error::shape("gather_tokens", format!("x {:?}", x.shape)));
        }
        let (b, l) = (x.shape[0], x.shape[1]);
        let inner = x.numel() / (b * l).max(1);
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= l) {
            return Err(Error::invalid(
                "gather_tokens",
                format!("index {bad} out of {l} tokens"),
            ));
        }
        let mut o = vec![0f32; b * idx.len() * inner];
        self.run(|| {
            o.par_chunks_mut(inner).enumerate().for_each(|(i, dst)| {
                let (bi, t) = (i / idx.len(), idx[i % idx.len()] as usize);
                dst.copy_from_slice(&x.data[(bi * l + t) * inner..][..inner]);
            })
        });
        let mut shape = x.shape.clone();
        shape[1] = idx.len();
        out(o, &shape)
    }

    fn narrow(&self, x: &CpuTensor, dim: usize, start: usize, len: usize) -> Result<CpuTensor> {
        if dim >= x.dims() || start + len > x.shape[dim] {
            return Err(Error::shape(
                "narrow",
                format!("{:?} dim {dim} [{start}, {})", x.shape, start + len),
            ));
        }
        let outer: usize = x.shape[..dim].iter().product();
        let inner: usize = x.shape[dim + 1..].iter().product();
        let n = x.shape[dim];
        let mut o = Vec::with_capacity(outer * len * inner);
        for i in 0..outer {
            o.extend_from_slice(&x.data[(i * n + start) * inner..(i * n + start + len) * inner]);
        }
        let mut shape = x.shape.clone();
        shape[dim] = len;
        out(o, &shape)
    }

    fn cat(&self, xs: &[&CpuTensor], dim: usize) -> Result<CpuTensor> {
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("cat", "no tensors"))?;
        let ok = xs.iter().all(|t| {
            t.dims() == first.dims()
                && dim < t.dims()
                && t.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b)
        });
        if !ok {
            let shapes: Vec<_> = xs.iter().map(|t| t.shape.clone()).collect();
            return Err(Error::shape("cat", format!("{shapes:?} along dim {dim}")));
        }
        let outer: usize = first.shape[..dim].iter().product();
        let inner: usize = first.shape[dim + 1..].iter().product();
        let total: usize = xs.iter().map(|t| t.shape[dim]).sum();
        let mut o = Vec::with_capacity(outer * total * inner);
        for i in 0..outer {
            for t in xs {
                let n = t.shape[dim] * inner;
                o.extend_from_slice(&t.data[i * n..(i + 1) * n]);
            }
        }
        let mut shape = first.shape.clone();
        shape[dim] = total;
        out(o, &shape)
    }

    fn mean_abs(&self, x: &CpuTensor) -> Result<f32> {
        let s: f64 = self.run(|| x.data.par_iter().map(|v| v.abs() as f64).sum());
        Ok((s / x.numel().max(1) as f64) as f32)
    }
}
