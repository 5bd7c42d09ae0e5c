//! Single files as ComfyUI users keep them: a key prefix to strip (`model.diffusion_model.`),
//! and "scaled" fp8-e4m3fn weights (ComfyUI's `scaled_fp8` marker tensor, one
//! `X.scale_weight` per weight, or `X.weight_scale` in its newer quantised format), which are
//! dequantised to bf16 on load (`fp8 as f32 * scale`, as ComfyUI does before a matmul).

use super::{RawTensor, TensorData, TensorInfo, WeightSource};
use crate::{ModelError, Result};
use half::bf16;
use jenga_tensor::DType;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

/// An fp8 e4m3fn byte as f32 (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no
/// infinities, `S.1111.111` is NaN).
pub fn fp8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((b >> 3) & 0x0f) as i32;
    let m = (b & 0x07) as f32;
    if e == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    let v = if e == 0 {
        m / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f32.powi(e - 7)
    };
    sign * v
}

/// The tensors of `inner` whose names start with `prefix`, named without it.
pub struct Prefixed {
    pub inner: Box<dyn WeightSource>,
    pub prefix: String,
}

impl Prefixed {
    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl WeightSource for Prefixed {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.inner.load(&self.full(name), shape)
    }
    fn raw(&self, name: &str, expected: &[usize]) -> Result<RawTensor<'_>> {
        self.inner.raw(&self.full(name), expected)
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(&self.full(name))
    }
    fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.inner.file_of(&self.full(name))
    }
    fn describe(&self) -> String {
        format!("{} (prefix `{}`)", self.inner.describe(), self.prefix)
    }
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(&self.prefix).map(str::to_string))
            .collect()
    }
    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.inner.info(&self.full(name))
    }
    fn stored_any(&self, name: &str) -> Result<(TensorInfo, Cow<'_, [u8]>)> {
        self.inner.stored_any(&self.full(name))
    }
}

/// Tensors that only describe the quantisation, hidden from the model.
fn is_quant_meta(name: &str) -> bool {
    name == "scaled_fp8"
        || [
            ".scale_weight",
            ".weight_scale",
            ".scale_input",
            ".input_scale",
            ".comfy_quant",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// A source whose fp8-e4m3fn weights are dequantised to bf16 with their scales.
pub struct ScaledFp8 {
    inner: Box<dyn WeightSource>,
    /// fp8 tensor → its scale tensor.
    scales: HashMap<String, String>,
}

impl ScaledFp8 {
    /// Whether `src` stores any fp8 tensor (then it must be opened through [`ScaledFp8`]).
    pub fn has_fp8(src: &dyn WeightSource) -> bool {
        src.names().iter().any(|n| {
            src.info(n)
                .is_some_and(|i| i.dtype.starts_with("F8_") && n != "scaled_fp8")
        })
    }

    /// Checks that every fp8 weight of `inner` has its scale (else an error naming it).
    pub fn new(inner: Box<dyn WeightSource>) -> Result<Self> {
        let names = inner.names();
        let mut scales = HashMap::new();
        for n in &names {
            let Some(info) = inner.info(n) else { continue };
            if !info.dtype.starts_with("F8_") || is_quant_meta(n) {
                continue;
            }
            let path = inner.file_of(n).unwrap_or_default();
            if info.dtype != "F8_E4M3" {
                return Err(ModelError::DType {
                    name: n.clone(),
                    path,
                    dtype: info.dtype,
                });
            }
            let stem = n.strip_suffix(".weight").unwrap_or(n);
            let scale = [
                format!("{stem}.scale_weight"),
                format!("{stem}.weight_scale"),
            ]
            .into_iter()
            .find(|s| inner.contains(s))
            .ok_or_else(|| ModelError::Corrupt {
                path: path.clone(),
                detail: format!(
                    "fp8 (e4m3fn) tensor `{n}` has no scale (`{stem}.scale_weight` or `{stem}.weight_scale`): only ComfyUI \"scaled\" fp8 files can be read"
                ),
            })?;
            scales.insert(n.clone(), scale);
        }
        Ok(ScaledFp8 { inner, scales })
    }

    /// The dequantised values of fp8 tensor `name` (scale `scale`).
    fn dequant(&self, name: &str, scale: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let path = self.inner.file_of(name).unwrap_or_default();
        let (info, bytes) = self.inner.stored_any(name)?;
        let (sinfo, sbytes) = self.inner.stored_any(scale)?;
        let dt = super::parse_dtype(&sinfo.dtype).ok_or_else(|| ModelError::DType {
            name: scale.into(),
            path: path.clone(),
            dtype: sinfo.dtype.clone(),
        })?;
        let s = super::stored_to_f32(&sbytes, dt);
        let rows = info.shape.first().copied().unwrap_or(1).max(1);
        let per_row = match s.len() {
            1 => false,
            n if n == rows => true,
            n => {
                return Err(ModelError::Corrupt {
                    path,
                    detail: format!(
                        "scale `{scale}` holds {n} values for tensor `{name}` of shape {:?} (expected 1 or {rows})",
                        info.shape
                    ),
                })
            }
        };
        let cols = (bytes.len() / rows).max(1);
        let lut: Vec<f32> = (0..=255u8).map(fp8_e4m3_to_f32).collect();
        let v = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| lut[b as usize] * if per_row { s[i / cols] } else { s[0] })
            .collect();
        Ok((info.shape, v))
    }

    fn dequant_bf16(&self, name: &str, scale: &str) -> Result<(Vec<usize>, Vec<u8>)> {
        let (shape, v) = self.dequant(name, scale)?;
        let bytes = v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        Ok((shape, bytes))
    }
}

impl WeightSource for ScaledFp8 {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.scales.get(name) {
            Some(scale) => {
                let (got, v) = self.dequant(name, scale)?;
                if got != shape {
                    return Err(ModelError::Shape {
                        name: name.into(),
                        path: self.inner.file_of(name).unwrap_or_default(),
                        got,
                        expected: shape.to_vec(),
                    });
                }
                Ok(v)
            }
            None => self.inner.load(name, shape),
        }
    }
    fn raw(&self, name: &str, expected: &[usize]) -> Result<RawTensor<'_>> {
        match self.scales.get(name) {
            Some(scale) => {
                let (shape, bytes) = self.dequant_bf16(name, scale)?;
                Ok(RawTensor {
                    shape,
                    data: TensorData::Owned {
                        dtype: DType::BF16,
                        bytes,
                    },
                })
            }
            None => self.inner.raw(name, expected),
        }
    }
    fn contains(&self, name: &str) -> bool {
        !is_quant_meta(name) && self.inner.contains(name)
    }
    fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.inner.file_of(name)
    }
    fn describe(&self) -> String {
        format!(
            "{} (scaled fp8, dequantised to bf16)",
            self.inner.describe()
        )
    }
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .into_iter()
            .filter(|n| !is_quant_meta(n))
            .collect()
    }
    /// fp8 weights are described as what [`WeightSource::raw`] gives: bf16.
    fn info(&self, name: &str) -> Option<TensorInfo> {
        if is_quant_meta(name) {
            return None;
        }
        let mut i = self.inner.info(name)?;
        if self.scales.contains_key(name) {
            i.dtype = "BF16".into();
        }
        Some(i)
    }
    fn stored_any(&self, name: &str) -> Result<(TensorInfo, Cow<'_, [u8]>)> {
        match self.scales.get(name) {
            Some(scale) => {
                let (shape, bytes) = self.dequant_bf16(name, scale)?;
                Ok((
                    TensorInfo {
                        dtype: "BF16".into(),
                        shape,
                    },
                    Cow::Owned(bytes),
                ))
            }
            None => self.inner.stored_any(name),
        }
    }
}
