//! Where weights come from: safetensors files (mmap, single or sharded), PyTorch `.pth`
//! archives (mmap, a restricted pickle reader), ComfyUI-style single files (a stripped key
//! prefix, "scaled" fp8 dequantised on load), or a seeded generator (full-size configs for
//! benchmarks: no checkpoint can be downloaded here).

mod fp8;
mod pickle;
mod pth;
mod safetensors_file;

pub use fp8::{fp8_e4m3_to_f32, Prefixed, ScaledFp8};
pub use pth::PthWeights;
pub use safetensors_file::{SafetensorsWeights, TensorEntry};

use crate::{ModelError, Result};
use half::{bf16, f16};
use jenga_tensor::DType;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What a file says about one tensor: its stored dtype (safetensors' names: `BF16`,
/// `F8_E4M3`, `I64`, …) and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
}

pub trait WeightSource: Sync {
    /// The tensor `name` as f32, checked against `shape` (element order as stored).
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// The tensor `name` as stored: its shape, and its bytes borrowed from the file (mmap) in
    /// their stored dtype, so that a backend can take them as they are. Sources without stored
    /// bytes (generated weights) hand over f32 values of the `expected` shape. The shape is not
    /// checked here (the [`crate::VarBuilder`] does it, naming the full key and file).
    fn raw(&self, name: &str, expected: &[usize]) -> Result<RawTensor<'_>> {
        Ok(RawTensor {
            shape: expected.to_vec(),
            data: TensorData::F32(self.load(name, expected)?),
        })
    }
    /// Whether a tensor `name` can be produced (generated weights: every name).
    fn contains(&self, _name: &str) -> bool {
        true
    }
    /// The file holding `name`, for error messages.
    fn file_of(&self, _name: &str) -> Option<PathBuf> {
        None
    }
    /// Short description for logs ("3 safetensors files in DIR", "random (seed 0)").
    fn describe(&self) -> String;
    /// Total number of parameters stored (every tensor's element count summed), to compare
    /// with `WanConfig::num_params`; `None` for generated weights (they list no tensors and
    /// follow the config). The default sums [`WeightSource::info`] over
    /// [`WeightSource::names`], which wrappers (prefix, fp8) get right by construction.
    fn param_count(&self) -> Option<usize> {
        let names = self.names();
        if names.is_empty() {
            return None;
        }
        Some(
            names
                .iter()
                .filter_map(|n| self.info(n))
                .map(|i| i.shape.iter().product::<usize>())
                .sum(),
        )
    }
    /// Every stored tensor's name, sorted (generated weights: none listed).
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Stored dtype and shape of `name` (generated weights: `None`).
    fn info(&self, _name: &str) -> Option<TensorInfo> {
        None
    }
    /// The bytes of `name` in any stored dtype, also those the backend cannot take (fp8 for
    /// dequantisation); borrowed from the file where it stores them contiguous.
    fn stored_any(&self, name: &str) -> Result<(TensorInfo, std::borrow::Cow<'_, [u8]>)> {
        Err(ModelError::Missing {
            name: name.into(),
            files: self.describe(),
        })
    }
}

/// A tensor's values as a source holds them: bytes in the stored dtype, borrowed from the
/// file (no copy); bytes made on load (a strided `.pth` view made contiguous, dequantised
/// fp8), or f32 values made on demand (generated weights).
pub enum TensorData<'a> {
    Stored { dtype: DType, bytes: &'a [u8] },
    Owned { dtype: DType, bytes: Vec<u8> },
    F32(Vec<f32>),
}

/// One tensor of a [`WeightSource`], as stored.
pub struct RawTensor<'a> {
    pub shape: Vec<usize>,
    pub data: TensorData<'a>,
}

impl RawTensor<'_> {
    /// The values as f32 (a copy; for host-side consumers).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::Stored { dtype, bytes } => stored_to_f32(bytes, *dtype),
            TensorData::Owned { dtype, bytes } => stored_to_f32(bytes, *dtype),
        }
    }
}

/// Stored little-endian bytes → f32 (the conversion `load` has always done).
pub(crate) fn stored_to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// A safetensors dtype name (`BF16`) → the backend's [`DType`] (`None`: not supported yet).
pub fn parse_dtype(name: &str) -> Option<DType> {
    match name {
        "F32" => Some(DType::F32),
        "BF16" => Some(DType::BF16),
        "F16" => Some(DType::F16),
        _ => None,
    }
}

/// Bytes per element of a stored dtype name (`None`: unknown).
pub fn dtype_size(name: &str) -> Option<usize> {
    Some(match name {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "BF16" | "F16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// Opens a weight file by its content: a torch zip archive (`.pth`, `.pt`, `.bin`, `.ckpt`)
/// or a safetensors file / index / model directory.
pub fn open_weights(path: &Path) -> Result<Box<dyn WeightSource>> {
    if path.is_file() && PthWeights::sniff(path)? {
        return Ok(Box::new(PthWeights::open(path)?));
    }
    let name = path.to_string_lossy();
    if path.is_file()
        && [".pth", ".pt", ".bin", ".ckpt"]
            .iter()
            .any(|e| name.ends_with(e))
    {
        return Err(ModelError::Corrupt {
            path: path.into(),
            detail: "not a PyTorch zip archive (torch.save writes a zip file: PK header)".into(),
        });
    }
    Ok(Box::new(SafetensorsWeights::open(path)?))
}

/// Seeded random weights with the scale of PyTorch's default init, so activations stay in a
/// realistic range for benchmarks. Same (seed, name) → same values on every machine.
pub struct RandomWeights {
    pub seed: u64,
}

impl RandomWeights {
    fn name_seed(&self, name: &str) -> u64 {
        // FNV-1a: stable across Rust versions (std's hasher is not).
        name.bytes()
            .fold(0xcbf2_9ce4_8422_2325u64 ^ self.seed, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
    }
}

impl WeightSource for RandomWeights {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        if name.ends_with("norm_q.weight")
            || name.ends_with("norm_k.weight")
            || name.ends_with("norm3.weight")
        {
            return Ok(vec![1.0; n]);
        }
        if name.ends_with("norm3.bias") {
            return Ok(vec![0.0; n]);
        }
        let fan_in = if shape.len() >= 2 {
            shape[1..].iter().product::<usize>()
        } else {
            shape[0]
        };
        let (normal, scale) = if name.ends_with("modulation") {
            (true, 1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt())
        } else {
            (false, 1.0 / (fan_in.max(1) as f32).sqrt())
        };
        let base = self.name_seed(name);
        const CHUNK: usize = 1 << 16;
        let mut v = vec![0f32; n];
        v.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(base.wrapping_add(i as u64));
            for x in c {
                *x = if normal {
                    rng.sample::<f32, _>(StandardNormal) * scale
                } else {
                    rng.gen_range(-scale..scale)
                };
            }
        });
        Ok(v)
    }

    fn describe(&self) -> String {
        format!("random weights (seed {})", self.seed)
    }
}

/// A tensor produced on demand while a safetensors file is written (random weights are never
/// all in memory at once: 14B parameters would not fit).
struct LazyBf16<'a> {
    name: &'a str,
    shape: &'a [usize],
    src: &'a dyn WeightSource,
}

impl safetensors::View for LazyBf16<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::BF16
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        // The trait cannot fail; a source that cannot produce a tensor it listed is a bug.
        let v = self
            .src
            .load(self.name, self.shape)
            .expect("weight source lists this tensor");
        v.iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * 2
    }
}

/// Write every tensor of `shapes` from `src` as a bf16 safetensors file (atomic: temp + rename).
pub fn export_bf16(
    src: &dyn WeightSource,
    shapes: &[(String, Vec<usize>)],
    path: &Path,
) -> Result<()> {
    let views: Vec<(&str, LazyBf16)> = shapes
        .iter()
        .map(|(n, s)| {
            (
                n.as_str(),
                LazyBf16 {
                    name: n,
                    shape: s,
                    src,
                },
            )
        })
        .collect();
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, &None, &tmp).map_err(|e| ModelError::Corrupt {
        path: path.into(),
        detail: format!("writing: {e:?}"),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })
}

/// Write f32 tensors (inputs/outputs for reference comparisons).
pub fn export_f32(tensors: &[(&str, Vec<usize>, &[f32])], path: &Path) -> Result<()> {
    let owned: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let bytes: &[u8] =
                unsafe { std::slice::from_raw_parts(d.as_ptr() as *const u8, d.len() * 4) };
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytes)
                    .expect("sizes agree"),
            )
        })
        .collect();
    safetensors::serialize_to_file(owned, &None, path).map_err(|e| ModelError::Corrupt {
        path: path.into(),
        detail: format!("writing: {e:?}"),
    })
}
