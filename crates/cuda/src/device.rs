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

/// Make the CUDA toolkit's NVRTC and cuBLASLt loadable when they sit outside the loader's
/// search path (a toolkit under `/usr/local/cuda-13.0/targets/.../lib` with no ldconfig entry
/// and no `LD_LIBRARY_PATH`): open them once by absolute path, so the later `dlopen` by soname
/// (cudarc's, and NVRTC's own for its builtins) finds the already-loaded copy.
pub(crate) fn preload_toolkit_libs() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dirs = toolkit_lib_dirs();
        for prefix in [
            "libnvrtc-builtins.so.13",
            "libnvrtc.so.13",
            "libcublasLt.so.13",
        ] {
            if loadable(prefix) {
                continue;
            }
            let found = dirs.iter().find_map(|d| {
                std::fs::read_dir(d)
                    .ok()?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(prefix))
                    })
            });
            if let Some(path) = found {
                use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
                // Kept loaded for the life of the process on purpose.
                if let Ok(lib) = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) } {
                    std::mem::forget(lib);
                }
            }
        }
    });
}

fn loadable(soname: &str) -> bool {
    use libloading::os::unix::{Library, RTLD_LAZY, RTLD_LOCAL};
    // Exact sonames only; prefixes with a minor version are never "loadable" by name.
    soname.matches('.').count() >= 2
        && unsafe { Library::open(Some(soname), RTLD_LAZY | RTLD_LOCAL) }.is_ok()
}

fn toolkit_lib_dirs() -> Vec<std::path::PathBuf> {
    use std::path::PathBuf;
    let mut roots: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    roots.push(PathBuf::from("/usr/local/cuda"));
    if let Ok(rd) = std::fs::read_dir("/usr/local") {
        let mut versioned: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cuda-"))
            })
            .collect();
        versioned.sort();
        roots.extend(versioned.into_iter().rev());
    }
    let mut dirs = Vec::new();
    for r in roots {
        for sub in [
            "lib64",
            "targets/x86_64-linux/lib",
            "targets/sbsa-linux/lib",
            "lib",
        ] {
            let d = r.join(sub);
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    dirs
}
