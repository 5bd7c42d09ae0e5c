//! CPU backend (in progress).
use crate::TensorMeta;
use std::sync::Arc;
#[derive(Clone, Debug)]
pub struct CpuTensor { pub data: Arc<Vec<f32>>, pub shape: Vec<usize> }
impl TensorMeta for CpuTensor { fn shape(&self) -> &[usize] { &self.shape } }
pub struct CpuBackend;
