//! Safetensors files (mmap, single or sharded, or embedded in the binary).

use super::{parse_dtype, stored_to_f32, RawTensor, TensorData, TensorInfo, WeightSource};
use crate::{ModelError, Result};
use jenga_tensor::DType;
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub file: usize,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range inside the file.
    pub start: usize,
    pub end: usize,
}

/// Bytes of one safetensors file: memory-mapped, or embedded in the binary.
enum Bytes {
    Mapped(Mmap),
    Static(&'static [u8]),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Static(s) => s,
        }
    }
}

/// One or more safetensors files, memory-mapped; tensors are converted to f32 on load.
pub struct SafetensorsWeights {
    files: Vec<(PathBuf, Bytes)>,
    tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsWeights {
    /// `path` is a `.safetensors` file, a `*.safetensors.index.json` (sharded), or a model
    /// directory; see [`model_weight_files`] for which files of a directory are the weights.
    pub fn open(path: &Path) -> Result<Self> {
        let files = resolve_files(path)?;
        let mut out = SafetensorsWeights {
            files: Vec::new(),
            tensors: HashMap::new(),
        };
        for (i, f) in files.into_iter().enumerate() {
            let file = File::open(&f).map_err(|source| ModelError::Io {
                path: f.clone(),
                source,
            })?;
            // SAFETY: the file is opened read-only; we only read from the map.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
                path: f.clone(),
                source,
            })?;
            for (name, e) in parse_header(&f, &mmap)? {
                out.tensors.insert(name, TensorEntry { file: i, ..e });
            }
            out.files.push((f, Bytes::Mapped(mmap)));
        }
        Ok(out)
    }

    /// A file embedded in the binary (`name` is used in error messages).
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<Self> {
        let path = PathBuf::from(name);
        let tensors = parse_header(&path, bytes)?.into_iter().collect();
        Ok(SafetensorsWeights {
            files: vec![(path, Bytes::Static(bytes))],
            tensors,
        })
    }

    pub fn entries(&self) -> &HashMap<String, TensorEntry> {
        &self.tensors
    }

    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }
}

/// The DiT weights of a model directory: an index or the files themselves.
enum WeightFiles {
    Index(PathBuf),
    Files(Vec<PathBuf>),
}

/// File names a Wan / diffusers model directory uses for the DiT, in order of preference.
const INDEX_NAMES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors.index.json",
    "model.safetensors.index.json",
];
const SINGLE_NAMES: [&str; 2] = ["diffusion_pytorch_model.safetensors", "model.safetensors"];
/// Safetensors files of a model directory that are never the DiT.
const NOT_DIT: [&str; 1] = ["text_encoder.safetensors"];

/// `STEM-0000i-of-0000n.safetensors` → (stem, i, n).
fn shard_of(name: &str) -> Option<(&str, usize, usize)> {
    let rest = name.strip_suffix(".safetensors")?;
    let (head, n) = rest.rsplit_once("-of-")?;
    let (stem, i) = head.rsplit_once('-')?;
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    Some((stem, num(i)?, num(n)?))
}

/// Which files of model directory `dir` hold the DiT, by the names Wan and diffusers use:
/// `diffusion_pytorch_model.safetensors.index.json` (sharded), `diffusion_pytorch_model.safetensors`,
/// a complete `diffusion_pytorch_model-0000i-of-0000n.safetensors` set without index, then the
/// same for `model.*`. Failing those, a single `.safetensors` file other than
/// `text_encoder.safetensors` (e.g. `jenga bench dit --export`'s `weights.safetensors`).
/// Anything else (several unknown files, an incomplete shard set) is an error listing what was
/// found: a file is never picked by its place in the alphabet.
fn model_weight_files(dir: &Path) -> Result<WeightFiles> {
    let io_err = |e| ModelError::Io {
        path: dir.into(),
        source: e,
    };
    let mut names: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err)? {
        let e = e.map_err(io_err)?;
        if e.path().is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let has = |n: &str| names.iter().any(|x| x == n);
    for (index, single) in INDEX_NAMES.iter().zip(SINGLE_NAMES) {
        if has(index) {
            return Ok(WeightFiles::Index(dir.join(index)));
        }
        if has(single) {
            return Ok(WeightFiles::Files(vec![dir.join(single)]));
        }
        let stem = single.trim_end_matches(".safetensors");
        let shards: Vec<(&String, usize, usize)> = names
            .iter()
            .filter_map(|n| {
                shard_of(n)
                    .filter(|s| s.0 == stem)
                    .map(|(_, i, t)| (n, i, t))
            })
            .collect();
        if let Some(&(_, _, total)) = shards.first() {
            let complete = shards.len() == total
                && shards.iter().all(|s| s.2 == total)
                && (1..=total).all(|i| shards.iter().any(|s| s.1 == i));
            if !complete {
                return Err(ModelError::Invalid(format!(
                    "{}: incomplete shard set for {stem} and no {index}: found {}",
                    dir.display(),
                    shards
                        .iter()
                        .map(|s| s.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            return Ok(WeightFiles::Files(
                shards.iter().map(|s| dir.join(s.0)).collect(),
            ));
        }
    }
    let found: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json"))
        .collect();
    let others: Vec<&&String> = found
        .iter()
        .filter(|n| !NOT_DIT.contains(&n.as_str()))
        .collect();
    if let [one] = others.as_slice() {
        if one.ends_with(".safetensors") {
            return Ok(WeightFiles::Files(vec![dir.join(one.as_str())]));
        }
    }
    Err(ModelError::Invalid(format!(
        "{}: no DiT weights found: expected {} or {} (or shards {}-0000i-of-0000n.safetensors); found {}",
        dir.display(),
        SINGLE_NAMES[0],
        INDEX_NAMES[0],
        SINGLE_NAMES[0].trim_end_matches(".safetensors"),
        if found.is_empty() {
            "no .safetensors file".to_string()
        } else {
            found
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )))
}

fn resolve_files(path: &Path) -> Result<Vec<PathBuf>> {
    let io_err = |p: &Path, e| ModelError::Io {
        path: p.into(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        return match model_weight_files(path)? {
            WeightFiles::Index(index) => resolve_files(&index),
            WeightFiles::Files(files) => Ok(files),
        };
    }
    if path.to_string_lossy().ends_with(".index.json") {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.into(),
            detail: e.to_string(),
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config {
                path: path.into(),
                detail: "missing `weight_map` object".into(),
            })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        shards.sort();
        shards.dedup();
        return Ok(shards);
    }
    Ok(vec![path.to_path_buf()])
}

fn parse_header(path: &Path, buf: &[u8]) -> Result<Vec<(String, TensorEntry)>> {
    let corrupt = |detail: String| ModelError::Corrupt {
        path: path.into(),
        detail,
    };
    let (n, meta) = safetensors::SafeTensors::read_metadata(buf)
        .map_err(|e| corrupt(format!("truncated or not a safetensors file ({e})")))?;
    let data_len = buf.len() - 8 - n;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let (s, e) = info.data_offsets;
        if e > data_len || s > e {
            return Err(corrupt(format!(
                "truncated or not a safetensors file: tensor `{name}` ends at byte {e} but the file holds {data_len} data bytes"
            )));
        }
        out.push((
            name,
            TensorEntry {
                file: 0,
                dtype: format!("{:?}", info.dtype),
                shape: info.shape.clone(),
                start: 8 + n + s,
                end: 8 + n + e,
            },
        ));
    }
    Ok(out)
}

impl SafetensorsWeights {
    /// Entry, dtype and bytes of `name`, checked for a supported dtype and a byte length that
    /// fits its shape.
    fn stored(&self, name: &str) -> Result<(&TensorEntry, DType, &[u8])> {
        let e = self.tensors.get(name).ok_or_else(|| ModelError::Missing {
            name: name.into(),
            files: self.describe(),
        })?;
        let path = &self.files[e.file].0;
        let dtype = parse_dtype(&e.dtype).ok_or_else(|| ModelError::DType {
            name: name.into(),
            path: path.clone(),
            dtype: e.dtype.clone(),
        })?;
        let bytes = &self.files[e.file].1[e.start..e.end];
        let n: usize = e.shape.iter().product();
        if Some(bytes.len()) != n.checked_mul(dtype.size()) {
            return Err(ModelError::Corrupt {
                path: path.clone(),
                detail: format!("tensor `{name}` has {} bytes for {n} values", bytes.len()),
            });
        }
        Ok((e, dtype, bytes))
    }
}

impl WeightSource for SafetensorsWeights {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let e = self.tensors.get(name).ok_or_else(|| ModelError::Missing {
            name: name.into(),
            files: self.describe(),
        })?;
        if e.shape != shape {
            return Err(ModelError::Shape {
                name: name.into(),
                path: self.files[e.file].0.clone(),
                got: e.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let (_, dtype, bytes) = self.stored(name)?;
        Ok(stored_to_f32(bytes, dtype))
    }

    fn raw(&self, name: &str, _expected: &[usize]) -> Result<RawTensor<'_>> {
        let (e, dtype, bytes) = self.stored(name)?;
        Ok(RawTensor {
            shape: e.shape.clone(),
            data: TensorData::Stored { dtype, bytes },
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.tensors.get(name).map(|e| self.files[e.file].0.clone())
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|e| TensorInfo {
            dtype: e.dtype.clone(),
            shape: e.shape.clone(),
        })
    }

    fn stored_any(&self, name: &str) -> Result<(TensorInfo, std::borrow::Cow<'_, [u8]>)> {
        let e = self.tensors.get(name).ok_or_else(|| ModelError::Missing {
            name: name.into(),
            files: self.describe(),
        })?;
        let path = &self.files[e.file].0;
        let bytes = &self.files[e.file].1[e.start..e.end];
        let n: usize = e.shape.iter().product();
        let size = super::dtype_size(&e.dtype).ok_or_else(|| ModelError::DType {
            name: name.into(),
            path: path.clone(),
            dtype: e.dtype.clone(),
        })?;
        if Some(bytes.len()) != n.checked_mul(size) {
            return Err(ModelError::Corrupt {
                path: path.clone(),
                detail: format!("tensor `{name}` has {} bytes for {n} values", bytes.len()),
            });
        }
        Ok((
            TensorInfo {
                dtype: e.dtype.clone(),
                shape: e.shape.clone(),
            },
            std::borrow::Cow::Borrowed(bytes),
        ))
    }

    fn param_count(&self) -> Option<usize> {
        Some(
            self.tensors
                .values()
                .map(|e| e.shape.iter().product::<usize>())
                .sum(),
        )
    }

    fn describe(&self) -> String {
        match self.files.as_slice() {
            [(p, _)] => p.display().to_string(),
            fs => format!(
                "{} shards in {}",
                fs.len(),
                fs[0].0.parent().unwrap_or(Path::new(".")).display()
            ),
        }
    }
}
