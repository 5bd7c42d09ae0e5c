//! Attention dispatch seam: `attention_fast` is tried first on `AttnPath::Auto`; `Ok(None)`
//! hands the call to the portable mma kernels and then the reference kernel.
//!
//! Today it is the Hopper kernel (`crate::attention`, sm_90a wgmma): head dim 128, 16-byte
//! aligned tensors, dense or a plan block that is a multiple of 128. Everything else (Dh 64,
//! other GPUs, a build failure at start-up) falls through.

use crate::backend::{CudaBackend, CudaTensor, DevicePlanBufs};
use jenga_tensor::{BlockPlan, KeyBias, Result};

impl CudaBackend {
    pub(crate) fn attention_fast(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        plan: Option<(&BlockPlan, &DevicePlanBufs)>,
        bias: Option<KeyBias>,
    ) -> Result<Option<CudaTensor>> {
        self.attention_hopper(q, k, v, plan, bias)
    }
}
