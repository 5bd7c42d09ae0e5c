//! PyTorch `.pth` checkpoints as `torch.save` writes them (zip archives since torch 1.6):
//! `NAME/data.pkl` (the object, read by the restricted [`super::pickle`] reader),
//! `NAME/data/K` (one stored entry per storage), `NAME/byteorder`, `NAME/version`. The file is
//! memory-mapped; a tensor stored contiguous is served as a slice of the map (no copy), a
//! strided view (a transpose, a step slice) is made contiguous on load.

use super::pickle::{unpickle, TensorRef, Value};
use super::{dtype_size, parse_dtype, RawTensor, TensorData, TensorInfo};
use crate::{ModelError, Result, WeightSource};
use memmap2::Mmap;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One tensor: where its elements are in the file.
#[derive(Clone, Debug)]
struct Entry {
    dtype: &'static str,
    shape: Vec<usize>,
    /// Element strides; `None` when stored contiguous.
    stride: Option<Vec<usize>>,
    /// Byte offset of element 0 in the file.
    start: usize,
    /// Bytes the view may read from `start` (contiguous: exactly the tensor's).
    len: usize,
}

pub struct PthWeights {
    path: PathBuf,
    map: Mmap,
    tensors: HashMap<String, Entry>,
}

/// Keys under which training scripts nest the state dict (`{"state_dict": …, "epoch": 3}`).
const NESTED: [&str; 4] = ["state_dict", "model", "module", "model_state_dict"];

impl PthWeights {
    /// Whether `path` starts like a zip archive (what `torch.save` writes).
    pub fn sniff(path: &Path) -> Result<bool> {
        let mut head = [0u8; 4];
        let mut f = File::open(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        let n = f.read(&mut head).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        Ok(n == 4 && head == *b"PK\x03\x04")
    }

    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        // SAFETY: the file is opened read-only; we only read from the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        let tensors = parse(&map).map_err(|detail| ModelError::Corrupt {
            path: path.into(),
            detail,
        })?;
        Ok(PthWeights {
            path: path.into(),
            map,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.tensors.get(name).ok_or_else(|| ModelError::Missing {
            name: name.into(),
            files: self.describe(),
        })
    }

    /// The bytes of `e` in row-major order: borrowed when contiguous, else gathered.
    fn bytes(&self, e: &Entry) -> Cow<'_, [u8]> {
        let src = &self.map[e.start..e.start + e.len];
        let Some(stride) = &e.stride else {
            return Cow::Borrowed(src);
        };
        let es = dtype_size(e.dtype).unwrap_or(1);
        let n: usize = e.shape.iter().product();
        let mut out = Vec::with_capacity(n * es);
        let mut idx = vec![0usize; e.shape.len()];
        for _ in 0..n {
            let off: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum();
            out.extend_from_slice(&src[off * es..(off + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < e.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Cow::Owned(out)
    }
}

/// Zip entries: name → (data offset, size), for stored (uncompressed) entries.
fn zip_entries(buf: &[u8]) -> std::result::Result<HashMap<String, (usize, usize)>, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(buf))
        .map_err(|e| format!("not a PyTorch archive: not a readable zip file ({e})"))?;
    let mut out = HashMap::new();
    for i in 0..z.len() {
        let f = z
            .by_index_raw(i)
            .map_err(|e| format!("zip entry {i} unreadable ({e})"))?;
        let name = f.name().map(|n| n.into_owned()).unwrap_or_default();
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "zip entry `{name}` is compressed ({:?}); torch.save stores entries uncompressed",
                f.compression()
            ));
        }
        let start = f
            .data_start()
            .ok_or_else(|| format!("zip entry `{name}`: data offset unknown"))?;
        let end = start
            .checked_add(f.size())
            .filter(|&e| e <= buf.len() as u64)
            .ok_or_else(|| format!("zip entry `{name}` runs past the end of the file"))?;
        out.insert(name, (start as usize, (end - start) as usize));
    }
    Ok(out)
}

fn parse(buf: &[u8]) -> std::result::Result<HashMap<String, Entry>, String> {
    let entries = zip_entries(buf)?;
    let pkl: Vec<&String> = entries
        .keys()
        .filter(|n| n.ends_with("/data.pkl") || n.as_str() == "data.pkl")
        .collect();
    let [pkl] = pkl.as_slice() else {
        return Err(format!(
            "not a PyTorch archive: expected one `data.pkl` in the zip, found {}",
            pkl.len()
        ));
    };
    let root = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
    let read = |n: &str| {
        entries
            .get(&format!("{root}{n}"))
            .map(|&(s, l)| &buf[s..s + l])
    };
    if let Some(b) = read("byteorder") {
        if b != b"little" {
            return Err(format!(
                "byteorder `{}`: only little-endian archives are read",
                String::from_utf8_lossy(b)
            ));
        }
    }
    let obj = unpickle(read("data.pkl").unwrap_or_default())?;
    let mut tensors = Vec::new();
    collect(&obj, "", &mut tensors, 0)?;
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let key = format!("{root}data/{}", t.storage.key);
        let &(start, len) = entries
            .get(&key)
            .ok_or_else(|| format!("tensor `{name}`: storage `{key}` is not in the archive"))?;
        let e = locate(&name, &t, start, len)?;
        out.insert(name, e);
    }
    Ok(out)
}

/// Tensors of `v`, named by their dict path (`a.b.weight`). A root holding no tensor itself but
/// one of [`NESTED`] is read from there (`{"state_dict": {...}, "epoch": 3}`).
fn collect(
    v: &Value,
    prefix: &str,
    out: &mut Vec<(String, std::rc::Rc<TensorRef>)>,
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 64 {
        return Err("dicts nested more than 64 deep".into());
    }
    let Value::Dict(items) = v else {
        return if depth == 0 {
            Err("the archive holds no dict of tensors".into())
        } else {
            Ok(())
        };
    };
    if depth == 0 && !items.iter().any(|(_, v)| matches!(v, Value::Tensor(_))) {
        if let Some((_, inner)) = items.iter().find(|(k, v)| {
            matches!(k, Value::Str(s) if NESTED.contains(&&**s)) && matches!(v, Value::Dict(_))
        }) {
            return collect(inner, "", out, 1);
        }
    }
    for (k, v) in items.iter() {
        let k = match k {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            _ => continue,
        };
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Tensor(t) => out.push((name, t.clone())),
            Value::Dict(_) => collect(v, &name, out, depth + 1)?,
            _ => {}
        }
    }
    Ok(())
}

/// Checks that view `t` lies inside its storage entry (`start`, `len` in the file).
fn locate(
    name: &str,
    t: &TensorRef,
    start: usize,
    len: usize,
) -> std::result::Result<Entry, String> {
    let bad = |d: String| format!("tensor `{name}`: {d}");
    let es = dtype_size(t.dtype).ok_or_else(|| bad(format!("dtype {} unknown", t.dtype)))? as u64;
    let ses = dtype_size(t.storage.dtype).unwrap_or(1) as u64;
    let storage_bytes = t
        .storage
        .numel
        .checked_mul(ses)
        .filter(|&b| b <= len as u64)
        .ok_or_else(|| {
            bad(format!(
                "storage of {} values does not fit its {len} stored bytes",
                t.storage.numel
            ))
        })?;
    let overflow = || bad("size overflows".into());
    let numel = t
        .size
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s))
        .ok_or_else(overflow)?;
    let to_usize = |v: &[u64]| -> std::result::Result<Vec<usize>, String> {
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| overflow()))
            .collect()
    };
    let shape = to_usize(&t.size)?;
    // row-major strides, ignoring axes of size 1 (their stride is arbitrary)
    let mut want = 1u64;
    let mut contiguous = true;
    for (&s, &st) in t.size.iter().zip(&t.stride).rev() {
        if s != 1 && st != want {
            contiguous = false;
        }
        want = want.saturating_mul(s);
    }
    // one past the last element the view reads
    let extent = if numel == 0 {
        0
    } else {
        t.size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&s, &st)| {
                (s - 1).checked_mul(st).and_then(|x| a.checked_add(x))
            })
            .and_then(|a| a.checked_add(1))
            .ok_or_else(overflow)?
    };
    let span_bytes = extent
        .checked_sub(if numel == 0 { extent } else { t.offset })
        .and_then(|n| n.checked_mul(es))
        .ok_or_else(overflow)?;
    let end_bytes = extent.checked_mul(es).ok_or_else(overflow)?;
    if end_bytes > storage_bytes {
        return Err(bad(format!(
            "view (offset {}, size {:?}, stride {:?}) reads past its storage of {storage_bytes} bytes",
            t.offset, t.size, t.stride
        )));
    }
    let out_bytes = numel.checked_mul(es).ok_or_else(overflow)?;
    if !contiguous && out_bytes > len as u64 {
        // a view larger than its storage (an expanded tensor): making it contiguous would
        // allocate more than the file holds
        return Err(bad(format!(
            "strided view of {numel} values over {} stored: not read",
            t.storage.numel
        )));
    }
    let off_bytes = if numel == 0 { 0 } else { t.offset * es };
    Ok(Entry {
        dtype: t.dtype,
        shape,
        stride: (!contiguous).then(|| to_usize(&t.stride)).transpose()?,
        start: start + off_bytes as usize,
        len: span_bytes as usize,
    })
}

impl WeightSource for PthWeights {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        if e.shape != shape {
            return Err(ModelError::Shape {
                name: name.into(),
                path: self.path.clone(),
                got: e.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let raw = self.raw(name, shape)?;
        Ok(raw.to_f32())
    }

    fn raw(&self, name: &str, _expected: &[usize]) -> Result<RawTensor<'_>> {
        let e = self.entry(name)?;
        let dtype = parse_dtype(e.dtype).ok_or_else(|| ModelError::DType {
            name: name.into(),
            path: self.path.clone(),
            dtype: e.dtype.into(),
        })?;
        let data = match self.bytes(e) {
            Cow::Borrowed(bytes) => TensorData::Stored { dtype, bytes },
            Cow::Owned(bytes) => TensorData::Owned { dtype, bytes },
        };
        Ok(RawTensor {
            shape: e.shape.clone(),
            data,
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.tensors.contains_key(name).then(|| self.path.clone())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn param_count(&self) -> Option<usize> {
        Some(
            self.tensors
                .values()
                .map(|e| e.shape.iter().product::<usize>())
                .sum(),
        )
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|e| TensorInfo {
            dtype: e.dtype.into(),
            shape: e.shape.clone(),
        })
    }

    fn stored_any(&self, name: &str) -> Result<(TensorInfo, Cow<'_, [u8]>)> {
        let e = self.entry(name)?;
        Ok((
            TensorInfo {
                dtype: e.dtype.into(),
                shape: e.shape.clone(),
            },
            self.bytes(e),
        ))
    }
}
