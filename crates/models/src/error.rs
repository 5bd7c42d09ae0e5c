use std::path::PathBuf;

/// Errors a user can cause by pointing at the wrong files; each names the file and tensor.
///
/// An I/O failure is the error's `source()`, not part of its message, so a caller printing the
/// chain (`path: No such file or directory (os error 2)`) shows the OS error once.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file that cannot be read as one (`detail` says why).
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("tensor `{name}` not found in {files}")]
    Missing { name: String, files: String },
    #[error("tensor `{name}` in {path}: shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        path: PathBuf,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` in {path}: unsupported dtype {dtype} (expected F32, BF16 or F16)")]
    DType {
        name: String,
        path: PathBuf,
        dtype: String,
    },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tensor(#[from] jenga_tensor::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
