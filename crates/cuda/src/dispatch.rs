//! Attention dispatch seam for the Hopper kernels (`crate::attention`, written separately).
//!
//! `attention_fast` is tried first on `AttnPath::Auto`; returning `Ok(None)` hands the call to
//! the portable mma kernels and then the reference kernel. Wiring the Hopper module in means:
//! `mod attention;` in lib.rs, an `Option<AttentionKernels>` field built in `CudaBackend::new`
//! (a build failure there must degrade to `None`, not fail the backend), and here a call to its
//! `forward` for the shapes it supports (head dim 64/128, 16-byte aligned tensors, plan block it
//! accepts), with the plan as `DevicePlanBufs` (CSR row_ptr/col_idx already on the device) and
//! the output from `CudaBackend::empty`.

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
