//! Attention dispatch: the Hopper kernels (`crate::attention`, written separately) when they
//! exist for this head dim, else `None` and the caller falls back to the reference kernel.

use crate::backend::{CudaBackend, CudaTensor, DevicePlanBufs};
use jenga_tensor::{BlockPlan, KeyBias, Result};

impl CudaBackend {
    pub(crate) fn attention_fast(
        &self,
        _q: &CudaTensor,
        _k: &CudaTensor,
        _v: &CudaTensor,
        _plan: Option<(&BlockPlan, &DevicePlanBufs)>,
        _bias: Option<KeyBias>,
    ) -> Result<Option<CudaTensor>> {
        Ok(None)
    }
}
