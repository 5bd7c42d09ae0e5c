//! A scoped weight builder: `vb.pp("blocks").pp(i).get(&[d, d], "weight")` uploads the tensor
//! `blocks.{i}.weight` to the backend, tensor by tensor, in its stored dtype, straight from the
//! mmap (no whole-model f32 copy on the host). Paths are always written in a family's own
//! naming (Wan: the original repo's); a [`KeyMap`] turns them into a checkpoint's names
//! (e.g. diffusers').

use crate::weights::TensorData;
use crate::{ModelError, Result, WeightSource};
use jenga_tensor::Backend;
use std::fmt::Display;

/// Renames a model's canonical keys to a checkpoint's.
pub trait KeyMap: Sync {
    /// The key the checkpoint stores canonical `key` under.
    fn stored_key(&self, key: &str) -> String;
    /// Short name of the naming, for `jenga inspect` ("original", "diffusers").
    fn naming(&self) -> &'static str;
    /// Whether the stored tensor may differ from the expected shape by axes of size 1 (a
    /// layout that stores e.g. `[6, D]` for `[1, 6, D]`).
    fn loose_shape(&self, _stored_key: &str) -> bool {
        false
    }
}

/// Keys stored as the model names them.
pub struct SameKeys;

impl KeyMap for SameKeys {
    fn stored_key(&self, key: &str) -> String {
        key.to_string()
    }
    fn naming(&self) -> &'static str {
        "original"
    }
}

/// Builder of one model's weights at a path prefix; cheap to clone and scope.
pub struct VarBuilder<'a, B: Backend> {
    be: &'a B,
    src: &'a dyn WeightSource,
    keys: &'a dyn KeyMap,
    prefix: String,
}

impl<B: Backend> Clone for VarBuilder<'_, B> {
    fn clone(&self) -> Self {
        VarBuilder {
            be: self.be,
            src: self.src,
            keys: self.keys,
            prefix: self.prefix.clone(),
        }
    }
}

fn squeezed(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

impl<'a, B: Backend> VarBuilder<'a, B> {
    /// Keys as stored (no renaming).
    pub fn new(be: &'a B, src: &'a dyn WeightSource) -> Self {
        Self::with_keys(be, src, &SameKeys)
    }

    pub fn with_keys(be: &'a B, src: &'a dyn WeightSource, keys: &'a dyn KeyMap) -> Self {
        VarBuilder {
            be,
            src,
            keys,
            prefix: String::new(),
        }
    }

    /// The builder one level down: `pp("blocks").pp(3)` → keys `blocks.3.*`.
    pub fn pp(&self, name: impl Display) -> Self {
        let mut vb = self.clone();
        vb.prefix = self.path(name);
        vb
    }

    pub fn backend(&self) -> &'a B {
        self.be
    }

    pub fn source(&self) -> &'a dyn WeightSource {
        self.src
    }

    pub fn naming(&self) -> &'static str {
        self.keys.naming()
    }

    /// The full canonical key of `name` under this builder's prefix.
    pub fn path(&self, name: impl Display) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The key the checkpoint stores `name` (under this prefix) as.
    pub fn stored_key(&self, name: impl Display) -> String {
        self.keys.stored_key(&self.path(name))
    }

    /// Whether the source holds `name` (under this prefix).
    pub fn contains(&self, name: impl Display) -> bool {
        self.src.contains(&self.stored_key(name))
    }

    /// The tensor `name` of shape `shape`, on the backend.
    pub fn get(&self, shape: &[usize], name: impl Display) -> Result<B::Tensor> {
        self.get_as(shape, name, shape)
    }

    /// The tensor `name`, stored as `stored` (checked), uploaded as `shape` (same element
    /// count, e.g. a patch-embedding conv kernel taken as a linear weight).
    pub fn get_as(
        &self,
        stored: &[usize],
        name: impl Display,
        shape: &[usize],
    ) -> Result<B::Tensor> {
        debug_assert_eq!(
            stored.iter().product::<usize>(),
            shape.iter().product::<usize>()
        );
        let key = self.path(name);
        let skey = self.keys.stored_key(&key);
        let label = if skey == key {
            skey.clone()
        } else {
            format!("{skey}` (`{key}` in the original naming)")
        };
        let raw = self.src.raw(&skey, stored).map_err(|e| match e {
            ModelError::Missing { files, .. } => ModelError::Missing {
                name: label.clone(),
                files,
            },
            other => other,
        })?;
        let fits = raw.shape == stored
            || (self.keys.loose_shape(&skey) && squeezed(&raw.shape) == squeezed(stored));
        if !fits {
            return Err(ModelError::Shape {
                name: label,
                path: self.src.file_of(&skey).unwrap_or_default(),
                got: raw.shape,
                expected: stored.to_vec(),
            });
        }
        Ok(match raw.data {
            TensorData::Stored { dtype, bytes } => self.be.upload_raw(bytes, dtype, shape)?,
            TensorData::Owned { dtype, bytes } => self.be.upload_raw(&bytes, dtype, shape)?,
            TensorData::F32(v) => self.be.upload(&v, shape)?,
        })
    }

    /// Rows `rows` of the 2-D tensor `name` stored as `[n, dim]`, uploaded as `[rows.len(),
    /// dim]` in the stored dtype (a vocabulary table of which a run needs a few rows).
    pub fn get_rows(
        &self,
        n: usize,
        dim: usize,
        name: impl Display,
        rows: &[u32],
    ) -> Result<B::Tensor> {
        let skey = self.stored_key(name);
        let raw = self.src.raw(&skey, &[n, dim])?;
        if raw.shape != [n, dim] {
            return Err(ModelError::Shape {
                name: skey.clone(),
                path: self.src.file_of(&skey).unwrap_or_default(),
                got: raw.shape,
                expected: vec![n, dim],
            });
        }
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= n) {
            return Err(ModelError::Invalid(format!(
                "row {bad} of `{skey}` requested, it has {n}"
            )));
        }
        let gather = |bytes: &[u8], esize: usize| -> Vec<u8> {
            let row = dim * esize;
            rows.iter()
                .flat_map(|&r| &bytes[r as usize * row..(r as usize + 1) * row])
                .copied()
                .collect()
        };
        let shape = [rows.len(), dim];
        Ok(match raw.data {
            TensorData::Stored { dtype, bytes } => {
                self.be
                    .upload_raw(&gather(bytes, dtype.size()), dtype, &shape)?
            }
            TensorData::Owned { dtype, bytes } => {
                self.be
                    .upload_raw(&gather(&bytes, dtype.size()), dtype, &shape)?
            }
            TensorData::F32(v) => {
                let x: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| &v[r as usize * dim..(r as usize + 1) * dim])
                    .copied()
                    .collect();
                self.be.upload(&x, &shape)?
            }
        })
    }

    /// The tensor `name` as host f32 values (small host-side models, e.g. a tiny text encoder).
    pub fn get_host(&self, shape: &[usize], name: impl Display) -> Result<Vec<f32>> {
        let key = self.stored_key(name);
        self.src.load(&key, shape)
    }
}
