//! Safe driver probing. cudarc loads libcuda lazily and panics when it is absent, so every
//! first contact goes through a presence check plus `catch_unwind`, and comes back as `Err`.

use crate::error::{dev, drv};
use cudarc::driver::{sys as drv_sys, CudaContext};
use jenga_tensor::Result;
use std::sync::{Arc, OnceLock};

/// Whether libcuda (the driver library) can be loaded at all.
pub fn driver_library_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        std::panic::catch_unwind(|| unsafe { drv_sys::is_culib_present() }).unwrap_or(false)
    })
}

/// Number of CUDA devices; `Err` with the reason when there is no usable driver.
pub fn device_count() -> Result<usize> {
    if !driver_library_present() {
        return Err(dev("no CUDA driver: libcuda could not be loaded"));
    }
    match std::panic::catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) => Ok(n.max(0) as usize),
        Ok(Err(e)) => Err(dev(format!("CUDA driver initialisation failed: {e:?}"))),
        Err(_) => Err(dev(
            "CUDA driver initialisation panicked (incompatible libcuda?)",
        )),
    }
}

/// True when a driver is present and at least one device is visible.
pub fn cuda_available() -> bool {
    matches!(device_count(), Ok(n) if n > 0)
}

/// Open (retain) the primary context of device `ordinal`.
pub fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    let n = device_count()?;
    if ordinal >= n {
        return Err(dev(format!(
            "cuda:{ordinal} does not exist ({n} CUDA device{} visible)",
            if n == 1 { "" } else { "s" }
        )));
    }
    match std::panic::catch_unwind(|| CudaContext::new(ordinal)) {
        Ok(r) => r.map_err(drv(&format!("creating a context on cuda:{ordinal}"))),
        Err(_) => Err(dev(format!(
            "creating a context on cuda:{ordinal} panicked"
        ))),
    }
}
