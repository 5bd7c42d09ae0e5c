//! Building blocks shared by the model families, each constructed from a [`VarBuilder`] and run
//! through the backend's ops.

pub mod rope;
pub mod var_builder;

pub use rope::{axes_rope, upload_rope_rows};
pub use var_builder::{KeyMap, SameKeys, VarBuilder};

use crate::Result;
use jenga_tensor::{Act, Backend, TensorMeta};

/// `y = x·Wᵀ + b`, weight `[out, in]` (PyTorch layout).
pub struct Linear<B: Backend> {
    pub w: B::Tensor,
    pub b: Option<B::Tensor>,
}

impl<B: Backend> Linear<B> {
    /// `weight` `[out, inp]` and `bias` `[out]` under `vb`.
    pub fn new(vb: &VarBuilder<B>, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            w: vb.get(&[out, inp], "weight")?,
            b: Some(vb.get(&[out], "bias")?),
        })
    }

    /// `weight` only.
    pub fn no_bias(vb: &VarBuilder<B>, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            w: vb.get(&[out, inp], "weight")?,
            b: None,
        })
    }

    /// A convolution whose kernel equals its stride (a patch embedding), as a linear over the
    /// flattened patch: weight stored `[out, inp, k...]`, used as `[out, inp·∏k]`.
    pub fn from_patch_conv(
        vb: &VarBuilder<B>,
        out: usize,
        inp: usize,
        k: &[usize],
    ) -> Result<Self> {
        let stored: Vec<usize> = [out, inp].iter().chain(k).copied().collect();
        let flat = inp * k.iter().product::<usize>();
        Ok(Linear {
            w: vb.get_as(&stored, "weight", &[out, flat])?,
            b: Some(vb.get(&[out], "bias")?),
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor, act: Act) -> Result<B::Tensor> {
        Ok(be.linear(x, &self.w, self.b.as_ref(), act)?)
    }
}

/// LayerNorm over the last dim, with or without affine `weight`/`bias` `[dim]`.
pub struct LayerNorm<B: Backend> {
    pub w: Option<B::Tensor>,
    pub b: Option<B::Tensor>,
    pub eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    /// Affine: `weight` and `bias` under `vb`.
    pub fn new(vb: &VarBuilder<B>, dim: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            w: Some(vb.get(&[dim], "weight")?),
            b: Some(vb.get(&[dim], "bias")?),
            eps,
        })
    }

    /// No parameters.
    pub fn plain(eps: f32) -> Self {
        LayerNorm {
            w: None,
            b: None,
            eps,
        }
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.layer_norm(x, self.w.as_ref(), self.b.as_ref(), self.eps)?)
    }
}

/// RMSNorm over the last dim with `weight` `[dim]`.
pub struct RmsNorm<B: Backend> {
    pub w: B::Tensor,
    pub eps: f32,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(vb: &VarBuilder<B>, dim: usize, eps: f32) -> Result<Self> {
        Ok(RmsNorm {
            w: vb.get(&[dim], "weight")?,
            eps,
        })
    }

    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.rms_norm(x, &self.w, self.eps)?)
    }
}

/// Token embedding table `weight` `[vocab, dim]`.
pub struct Embedding<B: Backend> {
    pub table: B::Tensor,
    /// Loaded for some ids only ([`Embedding::rows`]): the sorted ids whose rows `table` holds.
    pub loaded: Option<Vec<u32>>,
}

impl<B: Backend> Embedding<B> {
    pub fn new(vb: &VarBuilder<B>, vocab: usize, dim: usize) -> Result<Self> {
        Ok(Embedding {
            table: vb.get(&[vocab, dim], "weight")?,
            loaded: None,
        })
    }

    /// Only the rows of `ids` (any order, repeats allowed) of a `[vocab, dim]` table: a run
    /// that knows its prompts needs a few hundred of umT5's 256384 rows (1.05e9 parameters).
    pub fn rows(vb: &VarBuilder<B>, vocab: usize, dim: usize, ids: &[u32]) -> Result<Self> {
        let mut loaded = ids.to_vec();
        loaded.sort_unstable();
        loaded.dedup();
        Ok(Embedding {
            table: vb.get_rows(vocab, dim, "weight", &loaded)?,
            loaded: Some(loaded),
        })
    }

    /// Rows for `ids` → `[ids.len(), dim]`.
    pub fn fwd(&self, be: &B, ids: &[u32]) -> Result<B::Tensor> {
        match &self.loaded {
            None => Ok(be.embedding(&self.table, ids)?),
            Some(loaded) => {
                let local = ids
                    .iter()
                    .map(|id| {
                        loaded.binary_search(id).map(|i| i as u32).map_err(|_| {
                            crate::ModelError::Invalid(format!(
                                "token id {id}: its embedding row was not loaded"
                            ))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?;
                Ok(be.embedding(&self.table, &local)?)
            }
        }
    }
}

/// 3D convolution, `weight` `[out, inp, kt, kh, kw]`, optional `bias` `[out]`.
pub struct Conv3d<B: Backend> {
    pub w: B::Tensor,
    pub b: Option<B::Tensor>,
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    /// Time padding all in front (Wan VAE's `CausalConv3d`).
    pub causal: bool,
}

/// Geometry of a [`Conv3d`].
#[derive(Clone, Copy, Debug)]
pub struct Conv3dSpec {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub causal: bool,
    pub bias: bool,
}

impl<B: Backend> Conv3d<B> {
    pub fn new(vb: &VarBuilder<B>, inp: usize, out: usize, spec: Conv3dSpec) -> Result<Self> {
        let [kt, kh, kw] = spec.kernel;
        Ok(Conv3d {
            w: vb.get(&[out, inp, kt, kh, kw], "weight")?,
            b: if spec.bias {
                Some(vb.get(&[out], "bias")?)
            } else {
                None
            },
            stride: spec.stride,
            padding: spec.padding,
            causal: spec.causal,
        })
    }

    /// x `[B, inp, F, H, W]` → `[B, out, Fo, Ho, Wo]`.
    pub fn fwd(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.conv3d(
            x,
            &self.w,
            self.b.as_ref(),
            self.stride,
            self.padding,
            self.causal,
        )?)
    }
}

/// `x·Φ(x)` (exact GELU, torch's `nn.GELU()`), with an erf of |error| < 1.2e-7
/// (Numerical Recipes' `erfc` Chebyshev fit).
pub fn gelu_exact(x: f32) -> f32 {
    let z = (x as f64 / std::f64::consts::SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    let erf = if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 };
    (0.5 * x as f64 * (1.0 + erf)) as f32
}

/// Exact GELU of a device tensor through the host: for small once-per-run activations (the
/// op vocabulary has the tanh GELU only).
pub fn gelu_exact_host<B: Backend>(be: &B, x: &B::Tensor) -> Result<B::Tensor> {
    let shape = x.shape().to_vec();
    let g: Vec<f32> = be.download(x)?.into_iter().map(gelu_exact).collect();
    Ok(be.upload(&g, &shape)?)
}

#[cfg(test)]
mod gelu_tests {
    #[test]
    fn exact_gelu_matches_erf_values() {
        // torch.nn.functional.gelu(torch.tensor([-3., -1., -0.5, 0., 0.5, 1., 3.]), approximate='none')
        let want = [
            -0.0040502,
            -0.15865526,
            -0.15426877,
            0.0,
            0.34573123,
            0.8413447,
            2.9959497,
        ];
        for (x, w) in [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0].iter().zip(want) {
            let g = super::gelu_exact(*x);
            assert!((g - w).abs() < 1e-6, "gelu({x}) = {g}, want {w}");
        }
    }
}
