//! Run-time check of every op against the CPU reference (`jenga selftest --device cuda`; the
//! crate's tests run the same list).
//!
//! Inputs are random, rounded to bf16 before the CPU sees them, so the comparison measures
//! only what the GPU path changes: bf16 rounding of outputs (relative 2⁻⁹ per element) and
//! f32 summation order. Criterion: relative L2 error `‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-2`.

use crate::{AttnPath, CudaBackend};
use half::bf16;
use jenga_tensor::{
    Act, AttnPlan, Backend, BlockPlan, CpuBackend, CpuTensor, KeyBias, Result, TensorMeta,
};
use std::sync::Arc;

/// The GPU tests' backend: device 0, or `None` without a CUDA driver after printing the
/// `skipped: no CUDA driver (TEST)` line that `.ci/run` counts (the test's name makes
/// repeated calls in one test count once).
pub fn test_backend() -> Option<CudaBackend> {
    if !crate::cuda_available() {
        eprintln!(
            "skipped: no CUDA driver ({})",
            std::thread::current().name().unwrap_or("?")
        );
        return None;
    }
    Some(CudaBackend::new(0).expect("a visible device must open"))
}

/// Relative L2 tolerance for every check.
pub const TOLERANCE: f64 = 1e-2;

/// One check: name, relative L2 error, pass.
pub type Check = (String, f64, bool);

/// Small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller), rounded to bf16.
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1 = self.uniform().max(1e-7);
                let u2 = self.uniform();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                bf16::from_f32(z * std).to_f32()
            })
            .collect()
    }
}

/// Relative L2 error of `got` against `want`.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    if !num.is_finite() {
        return f64::INFINITY;
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

/// A pair of tensors holding the same (bf16-exact) data on both backends.
struct Pair {
    g: crate::CudaTensor,
    c: CpuTensor,
}

struct Ctx<'a> {
    gpu: &'a CudaBackend,
    cpu: CpuBackend,
    rng: Rng,
    out: Vec<Check>,
}

impl Ctx<'_> {
    fn rand(&mut self, shape: &[usize], std: f32) -> Result<Pair> {
        let n = shape.iter().product();
        let data = self.rng.normal_vec(n, std);
        Ok(Pair {
            g: self.gpu.upload(&data, shape)?,
            c: CpuTensor::new(data, shape)?,
        })
    }

    fn check(&mut self, name: &str, g: &crate::CudaTensor, c: &CpuTensor) -> Result<()> {
        let err = if g.shape() != c.shape() {
            f64::INFINITY
        } else {
            rel_l2(&self.gpu.download(g)?, c.data())
        };
        self.out.push((name.to_string(), err, err <= TOLERANCE));
        Ok(())
    }

    /// [`Ctx::check`] on the rows `rows` (dim 1) of `[B, L, ...]` tensors only.
    fn check_rows(
        &mut self,
        name: &str,
        g: &crate::CudaTensor,
        c: &CpuTensor,
        rows: std::ops::Range<usize>,
    ) -> Result<()> {
        let s = c.shape();
        let err = if g.shape() != s || s.len() < 2 || rows.end > s[1] {
            f64::INFINITY
        } else {
            let (b, l, row) = (s[0], s[1], s[2..].iter().product::<usize>());
            let pick = |x: &[f32]| -> Vec<f32> {
                (0..b)
                    .flat_map(|bi| &x[(bi * l + rows.start) * row..(bi * l + rows.end) * row])
                    .copied()
                    .collect()
            };
            rel_l2(&pick(&self.gpu.download(g)?), &pick(c.data()))
        };
        self.out.push((name.to_string(), err, err <= TOLERANCE));
        Ok(())
    }
}

/// Run every op on random data on `be` and on the CPU backend; one entry per check.
pub fn selftest(be: &CudaBackend) -> Result<Vec<Check>> {
    let mut t = Ctx {
        gpu: be,
        cpu: CpuBackend::new(),
        rng: Rng::new(0x6a656e6761),
        out: Vec::new(),
    };
    elementwise(&mut t)?;
    scalar_paths(&mut t)?;
    norms(&mut t)?;
    layout(&mut t)?;
    attention(&mut t)?;
    block_select(&mut t)?;
    be.synchronize()?;
    Ok(t.out)
}

fn elementwise(t: &mut Ctx) -> Result<()> {
    let x = t.rand(&[2, 37, 96], 1.0)?;
    for (bias, act, name) in [
        (true, Act::None, "linear+bias"),
        (false, Act::None, "linear"),
        (true, Act::GeluTanh, "linear+bias+gelu"),
        (false, Act::GeluTanh, "linear+gelu"),
        (true, Act::Silu, "linear+bias+silu"),
    ] {
        let w = t.rand(&[80, 96], 0.1)?;
        let b = t.rand(&[80], 0.5)?;
        let g = t.gpu.linear(&x.g, &w.g, bias.then_some(&b.g), act)?;
        let c = t.cpu.linear(&x.c, &w.c, bias.then_some(&b.c), act)?;
        t.check(name, &g, &c)?;
    }
    // A shape that is not a multiple of anything (cuBLASLt alignment fallbacks).
    let x3 = t.rand(&[3, 7, 33], 1.0)?;
    let w3 = t.rand(&[17, 33], 0.2)?;
    let b3 = t.rand(&[17], 0.5)?;
    let g = t.gpu.linear(&x3.g, &w3.g, Some(&b3.g), Act::GeluTanh)?;
    let c = t.cpu.linear(&x3.c, &w3.c, Some(&b3.c), Act::GeluTanh)?;
    t.check("linear odd shape", &g, &c)?;

    for (act, name) in [(Act::GeluTanh, "act gelu"), (Act::Silu, "act silu")] {
        let g = t.gpu.act(&x.g, act)?;
        let c = t.cpu.act(&x.c, act)?;
        t.check(name, &g, &c)?;
    }
    let y = t.rand(&[2, 37, 96], 1.0)?;
    let gate = t.rand(&[2, 96], 1.0)?;
    let g = t.gpu.add_gated(&x.g, &y.g, Some(&gate.g))?;
    let c = t.cpu.add_gated(&x.c, &y.c, Some(&gate.c))?;
    t.check("add_gated", &g, &c)?;
    let g = t.gpu.add_gated(&x.g, &y.g, None)?;
    let c = t.cpu.add_gated(&x.c, &y.c, None)?;
    t.check("add (no gate)", &g, &c)?;
    let g = t.gpu.axpby(0.7, &x.g, -1.3, &y.g)?;
    let c = t.cpu.axpby(0.7, &x.c, -1.3, &y.c)?;
    t.check("axpby", &g, &c)?;

    let xr = t.rand(&[2, 17, 3, 64], 1.0)?;
    let ang: Vec<f32> = (0..17 * 32)
        .map(|i| (i / 32) as f32 * 0.37 * (1.0 + (i % 32) as f32).recip())
        .collect();
    let cos: Vec<f32> = ang
        .iter()
        .map(|a| bf16::from_f32(a.cos()).to_f32())
        .collect();
    let sin: Vec<f32> = ang
        .iter()
        .map(|a| bf16::from_f32(a.sin()).to_f32())
        .collect();
    let (gc, gs) = (
        t.gpu.upload(&cos, &[17, 32])?,
        t.gpu.upload(&sin, &[17, 32])?,
    );
    let (cc, cs) = (
        CpuTensor::new(cos, &[17, 32])?,
        CpuTensor::new(sin, &[17, 32])?,
    );
    let g = t.gpu.rope(&xr.g, &gc, &gs)?;
    let c = t.cpu.rope(&xr.c, &cc, &cs)?;
    t.check("rope", &g, &c)?;

    let gm = t.gpu.mean_abs(&x.g)?;
    let cm = t.cpu.mean_abs(&x.c)?;
    let err = ((gm - cm) as f64).abs() / (cm as f64).abs().max(1e-30);
    t.out.push(("mean_abs".into(), err, err <= TOLERANCE));
    Ok(())
}

/// Sizes that are not multiples of 8 take the scalar kernels instead of the 16-byte ones.
fn scalar_paths(t: &mut Ctx) -> Result<()> {
    let x = t.rand(&[2, 5, 100], 1.0)?;
    let y = t.rand(&[2, 5, 100], 1.0)?;
    let w = t.rand(&[100], 1.0)?;
    let b = t.rand(&[100], 1.0)?;
    let g = t.gpu.layer_norm(&x.g, Some(&w.g), Some(&b.g), 1e-6)?;
    let c = t.cpu.layer_norm(&x.c, Some(&w.c), Some(&b.c), 1e-6)?;
    t.check("layer_norm D=100 (scalar)", &g, &c)?;
    let g = t.gpu.rms_norm(&x.g, &w.g, 1e-6)?;
    let c = t.cpu.rms_norm(&x.c, &w.c, 1e-6)?;
    t.check("rms_norm D=100 (scalar)", &g, &c)?;
    let sh = t.rand(&[2, 100], 1.0)?;
    let sc = t.rand(&[2, 100], 0.5)?;
    let g = t.gpu.norm_modulate(&x.g, &sh.g, &sc.g, 1e-6)?;
    let c = t.cpu.norm_modulate(&x.c, &sh.c, &sc.c, 1e-6)?;
    t.check("norm_modulate D=100 (scalar)", &g, &c)?;
    let g = t.gpu.add_gated(&x.g, &y.g, Some(&sh.g))?;
    let c = t.cpu.add_gated(&x.c, &y.c, Some(&sh.c))?;
    t.check("add_gated D=100 (scalar)", &g, &c)?;
    let xo = t.rand(&[3, 7, 11], 1.0)?;
    let yo = t.rand(&[3, 7, 11], 1.0)?;
    let g = t.gpu.axpby(0.3, &xo.g, 2.0, &yo.g)?;
    let c = t.cpu.axpby(0.3, &xo.c, 2.0, &yo.c)?;
    t.check("axpby n=231 (scalar)", &g, &c)?;
    let g = t.gpu.act(&xo.g, Act::GeluTanh)?;
    let c = t.cpu.act(&xo.c, Act::GeluTanh)?;
    t.check("act n=231 (scalar)", &g, &c)?;
    let g = t.gpu.add_gated(&xo.g, &yo.g, None)?;
    let c = t.cpu.add_gated(&xo.c, &yo.c, None)?;
    t.check("add n=231 (scalar)", &g, &c)?;
    let wl = t.rand(&[17, 11], 0.3)?;
    let bl = t.rand(&[17], 0.3)?;
    let g = t.gpu.linear(&xo.g, &wl.g, Some(&bl.g), Act::Silu)?;
    let c = t.cpu.linear(&xo.c, &wl.c, Some(&bl.c), Act::Silu)?;
    t.check("linear+bias+silu out=17 (scalar)", &g, &c)?;
    let xr = t.rand(&[1, 9, 2, 12], 1.0)?;
    let cs = t.rand(&[9, 6], 0.7)?;
    let sn = t.rand(&[9, 6], 0.7)?;
    let g = t.gpu.rope(&xr.g, &cs.g, &sn.g)?;
    let c = t.cpu.rope(&xr.c, &cs.c, &sn.c)?;
    t.check("rope Dh=12 (scalar)", &g, &c)?;
    Ok(())
}

fn norms(t: &mut Ctx) -> Result<()> {
    // Offset mean so the two-pass variance matters.
    let mut x = t.rand(&[2, 33, 200], 2.0)?;
    let shifted: Vec<f32> =
        x.c.data()
            .iter()
            .map(|v| bf16::from_f32(v + 3.0).to_f32())
            .collect();
    x.g = t.gpu.upload(&shifted, &[2, 33, 200])?;
    x.c = CpuTensor::new(shifted, &[2, 33, 200])?;
    let w = t.rand(&[200], 1.0)?;
    let b = t.rand(&[200], 1.0)?;
    let g = t.gpu.layer_norm(&x.g, Some(&w.g), Some(&b.g), 1e-6)?;
    let c = t.cpu.layer_norm(&x.c, Some(&w.c), Some(&b.c), 1e-6)?;
    t.check("layer_norm affine", &g, &c)?;
    let g = t.gpu.layer_norm(&x.g, None, None, 1e-6)?;
    let c = t.cpu.layer_norm(&x.c, None, None, 1e-6)?;
    t.check("layer_norm", &g, &c)?;
    let g = t.gpu.rms_norm(&x.g, &w.g, 1e-6)?;
    let c = t.cpu.rms_norm(&x.c, &w.c, 1e-6)?;
    t.check("rms_norm", &g, &c)?;
    let shift = t.rand(&[2, 200], 1.0)?;
    let scale = t.rand(&[2, 200], 0.5)?;
    let g = t.gpu.norm_modulate(&x.g, &shift.g, &scale.g, 1e-6)?;
    let c = t.cpu.norm_modulate(&x.c, &shift.c, &scale.c, 1e-6)?;
    t.check("norm_modulate", &g, &c)?;
    // Wide rows (Wan 14B's D = 5120) exercise the multi-stride loops.
    let xw = t.rand(&[1, 3, 5120], 1.0)?;
    let sw = t.rand(&[1, 5120], 1.0)?;
    let cw = t.rand(&[1, 5120], 0.5)?;
    let g = t.gpu.norm_modulate(&xw.g, &sw.g, &cw.g, 1e-6)?;
    let c = t.cpu.norm_modulate(&xw.c, &sw.c, &cw.c, 1e-6)?;
    t.check("norm_modulate D=5120", &g, &c)?;
    Ok(())
}

fn layout(t: &mut Ctx) -> Result<()> {
    let x = t.rand(&[2, 70, 3, 24], 1.0)?;
    let g = t.gpu.block_mean_pool(&x.g, 16)?;
    let c = t.cpu.block_mean_pool(&x.c, 16)?;
    t.check("block_mean_pool (partial block)", &g, &c)?;
    let idx: Vec<u32> = (0..50).map(|i| (i * 37 % 70) as u32).collect();
    let g = t.gpu.gather_tokens(&x.g, &idx)?;
    let c = t.cpu.gather_tokens(&x.c, &idx)?;
    t.check("gather_tokens", &g, &c)?;
    for (dim, s, l) in [(0, 1, 1), (1, 5, 40), (2, 1, 2), (3, 8, 10)] {
        let g = t.gpu.narrow(&x.g, dim, s, l)?;
        let c = t.cpu.narrow(&x.c, dim, s, l)?;
        t.check(&format!("narrow dim {dim}"), &g, &c)?;
        // Ops must accept views (offset buffers) as inputs.
        let g2 = t.gpu.act(&g, Act::Silu)?;
        let c2 = t.cpu.act(&c, Act::Silu)?;
        t.check(&format!("op on narrow dim {dim}"), &g2, &c2)?;
    }
    let y = t.rand(&[2, 11, 3, 24], 1.0)?;
    let g = t.gpu.cat(&[&x.g, &y.g, &x.g], 1)?;
    let c = t.cpu.cat(&[&x.c, &y.c, &x.c], 1)?;
    t.check("cat dim 1", &g, &c)?;
    let z = t.rand(&[2, 70, 3, 8], 1.0)?;
    let g = t.gpu.cat(&[&x.g, &z.g], 3)?;
    let c = t.cpu.cat(&[&x.c, &z.c], 3)?;
    t.check("cat last dim", &g, &c)?;
    let g = t.gpu.reshape(&x.g, &[140, 72])?;
    let c = t.cpu.reshape(&x.c, &[140, 72])?;
    t.check("reshape", &g, &c)?;
    let v = t.rand(&[1, 4, 6, 8, 10], 1.0)?;
    let g = t.gpu.patchify(&v.g, [1, 2, 2], None)?;
    let c = t.cpu.patchify(&v.c, [1, 2, 2], None)?;
    t.check("patchify", &g, &c)?;
    let v = t.rand(&[2, 3, 4, 6, 10], 1.0)?;
    let order = [2u32, 0, 7, 3, 5, 1, 6, 4]; // 2x2x2 tokens
    let g = t.gpu.patchify(&v.g, [2, 3, 5], Some(&order))?;
    let c = t.cpu.patchify(&v.c, [2, 3, 5], Some(&order))?;
    t.check("patchify [2,3,5] in a token order", &g, &c)?;
    let tk = t.rand(&[2, 2 * 3 * 4, 2 * 2 * 2 * 5], 1.0)?;
    let g = t.gpu.unpatchify(&tk.g, (2, 3, 4), [2, 2, 2], 5, None)?;
    let c = t.cpu.unpatchify(&tk.c, (2, 3, 4), [2, 2, 2], 5, None)?;
    t.check("unpatchify", &g, &c)?;
    // 7 is coprime with 24: a permutation that moves every token but the first.
    let order: Vec<u32> = (0..24).map(|i| (i * 7) % 24).collect();
    let g = t
        .gpu
        .unpatchify(&tk.g, (2, 3, 4), [2, 2, 2], 5, Some(&order))?;
    let c = t
        .cpu
        .unpatchify(&tk.c, (2, 3, 4), [2, 2, 2], 5, Some(&order))?;
    t.check("unpatchify in a token order", &g, &c)?;
    Ok(())
}

fn attention(t: &mut Ctx) -> Result<()> {
    let path_before = t.gpu.attention_path();
    // Each case runs on the default path (fastest kernel), the portable mma kernels and the
    // reference kernel.
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, usize, usize, usize, usize, usize, bool, bool)> = vec![
        // name, B, Lq, Lk, H, Dh, sparse, bias
        ("dense Dh=64", 1, 300, 300, 2, 64, false, false),
        ("dense Dh=128", 2, 200, 200, 2, 128, false, false),
        ("dense Dh=40", 1, 77, 77, 3, 40, false, false),
        ("cross Lk=19", 2, 150, 19, 2, 64, false, false),
        ("cross Lk=500 Dh=128", 1, 70, 500, 2, 128, false, true),
        ("dense+key bias", 1, 260, 260, 2, 128, false, true),
        ("sparse block=128", 1, 300, 300, 2, 64, true, false),
        ("sparse block=128 long", 1, 700, 700, 1, 128, true, false),
        ("sparse Dh=128+bias", 2, 400, 400, 2, 128, true, true),
    ];
    for (name, b, lq, lk, h, dh, sparse, with_bias) in cases {
        let q = t.rand(&[b, lq, h, dh], 1.0)?;
        let k = t.rand(&[b, lk, h, dh], 1.0)?;
        let v = t.rand(&[b, lk, h, dh], 1.0)?;
        let plan = if sparse {
            let (qb, kb) = (lq.div_ceil(128), lk.div_ceil(128));
            // Random mask; keep the diagonal except in one row, left empty on purpose
            // (a query block with no key: output must be zeros on both backends).
            let mut mask = vec![false; b * h * qb * kb];
            for (i, m) in mask.iter_mut().enumerate() {
                let (row, col) = (i / kb, i % kb);
                *m = (row % qb == col || t.rng.uniform() < 0.4) && row != 1;
            }
            AttnPlan::Sparse(Arc::new(BlockPlan::from_mask(b, h, 128, qb, kb, &mask)?))
        } else {
            AttnPlan::Dense
        };
        // Biased query rows end inside a query tile of every kernel (64 and 128 rows); the
        // rows after them (condition queries) get no bias.
        let bias = with_bias.then_some(KeyBias {
            from_key: lk * 2 / 3,
            to_query: lq * 3 / 5,
            bias: 1.5,
        });
        let c = t.cpu.attention(&q.c, &k.c, &v.c, &plan, bias)?;
        for (path, tag) in [
            (AttnPath::Auto, ""),
            (AttnPath::Mma, " (mma)"),
            (AttnPath::MmaSimple, " (mma simple)"),
            (AttnPath::Naive, " (reference)"),
        ] {
            t.gpu.set_attention_path(path);
            let g = t.gpu.attention(&q.g, &k.g, &v.g, &plan, bias);
            t.gpu.set_attention_path(path_before);
            let g = g?;
            t.check(&format!("attention {name}{tag}"), &g, &c)?;
            if let Some(kb) = bias {
                // The unbiased rows on their own (a kernel biasing them fails here even where
                // the whole-tensor error stays small).
                let rows = kb.to_query..lq;
                t.check_rows(
                    &format!("attention {name}{tag} rows >= to_query"),
                    &g,
                    &c,
                    rows,
                )?;
            }
        }
    }
    Ok(())
}

/// Block selection on the device against the host reference of the rule
/// (`block_select::reference_plan`), and attention over the device plan against the CPU over
/// the same plan downloaded. The first check's "error" is the fraction of rows that differ
/// (allowed: float near-ties at the cut, ≤ 1%).
fn block_select(t: &mut Ctx) -> Result<()> {
    let (b, h, d, l) = (2usize, 3usize, 64usize, 1500usize);
    let nb = l.div_ceil(128); // 12 blocks, the last one partial and a "condition" block
    let nv = nb - 1;
    let mut fixed = vec![false; nb * nb];
    for q in 0..nb {
        for j in 0..nb {
            fixed[q * nb + j] = q == j || j >= nv || q >= nv || (q < 2 && j < 2);
        }
    }
    let sel = jenga_carve::BlockSelect {
        block: 128,
        scored_blocks: nv,
        p: 0.5,
        top_k: 2,
        fixed: Arc::new(BlockPlan::from_mask(1, 1, 128, nb, nb, &fixed)?),
    };
    let qh = t.rng.normal_vec(b * h * nb * d, 1.0);
    let kh = t.rng.normal_vec(b * h * nb * d, 1.0);
    let shape = [b, h, nb, d];
    let plan = t.gpu.select_blocks_pooled(
        &t.gpu.upload(&qh, &shape)?,
        &t.gpu.upload(&kh, &shape)?,
        &sel,
    )?;
    let Some(AttnPlan::Device(dp)) = plan else {
        t.out
            .push(("block_select (no device plan)".into(), f64::INFINITY, false));
        return Ok(());
    };
    let got = t.gpu.download_plan(&dp)?;
    let want = crate::block_select::reference_plan(&qh, &kh, b, h, d, &sel);
    let rows = b * h * nb;
    let differ = (0..rows)
        .filter(|&r| {
            let (bi, hi, q) = (r / (h * nb), (r / nb) % h, r % nb);
            got.row(bi, hi, q) != want.row(bi, hi, q)
        })
        .count();
    let frac = differ as f64 / rows as f64;
    let consistent = got.validate(b, h, l, l).is_ok()
        && (dp.density()? - got.density()).abs() < 1e-12
        && got.density() < 1.0;
    t.out.push((
        "block_select rows vs reference".into(),
        frac,
        frac <= 0.01 && consistent,
    ));
    let q = t.rand(&[b, l, h, d], 1.0)?;
    let k = t.rand(&[b, l, h, d], 1.0)?;
    let v = t.rand(&[b, l, h, d], 1.0)?;
    let g = t
        .gpu
        .attention(&q.g, &k.g, &v.g, &AttnPlan::Device(dp), None)?;
    let c = t
        .cpu
        .attention(&q.c, &k.c, &v.c, &AttnPlan::Sparse(Arc::new(got)), None)?;
    t.check("attention over a device-built plan", &g, &c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_l2_measures_relative_error() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        let e = rel_l2(&[3.0, 4.0 * 1.01], &[3.0, 4.0]);
        assert!((e - 0.04 / 5.0).abs() < 1e-6, "{e}");
        assert!(rel_l2(&[1.0], &[1.0, 2.0]).is_infinite());
        assert!(rel_l2(&[f32::NAN], &[1.0]).is_infinite());
    }

    #[test]
    fn rng_is_deterministic_and_bf16_exact() {
        let a = Rng::new(3).normal_vec(1000, 1.0);
        assert_eq!(a, Rng::new(3).normal_vec(1000, 1.0));
        assert!(a.iter().all(|&v| bf16::from_f32(v).to_f32() == v));
        let mean = a.iter().sum::<f32>() / 1000.0;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 1000.0;
        assert!(
            mean.abs() < 0.1 && (var - 1.0).abs() < 0.15,
            "mean {mean} var {var}"
        );
    }
}
