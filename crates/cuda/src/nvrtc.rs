//! Run-time kernel compilation: CUDA C source → CUBIN for this GPU's exact architecture,
//! cached on disk so a second start skips NVRTC (which costs ~0.2–2 s per module).
//!
//! Options every module gets: `-std=c++17`, `-arch=sm_XY` for the device (or `sm_XYa`, the
//! architecture-specific target that `wgmma`/`setmaxnreg` need, when `extra_opts` holds
//! [`ARCH_SPECIFIC`]), and `--include-path` to the CUDA toolkit headers when one is installed
//! (`$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`). An explicit `-arch=`/`--gpu-architecture=`
//! in `extra_opts` replaces the automatic one.
//!
//! Cache: `$JENGA_CACHE_DIR`, else `$XDG_CACHE_HOME/jenga`, else `~/.cache/jenga`; the key
//! hashes source, final options, architecture and NVRTC version. A failed cache read or write
//! only costs a recompile.

use crate::error::{dev, drv};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys, Ptx};
use jenga_tensor::{Error, Result};
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Pseudo-option for `extra_opts`: compile for the architecture-specific target (`sm_90a` on
/// Hopper) instead of the portable one. Ignored (portable target) below compute capability 9.0.
pub const ARCH_SPECIFIC: &str = "--jenga-arch-specific";

/// Whether the NVRTC shared library can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        crate::device::preload_toolkit_libs();
        std::panic::catch_unwind(|| unsafe { nvrtc_sys::is_culib_present() }).unwrap_or(false)
    })
}

/// NVRTC version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(dev(
            "libnvrtc not found (install the CUDA runtime / set LD_LIBRARY_PATH)",
        ));
    }
    let (mut major, mut minor) = (0i32, 0i32);
    let rc = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(dev(format!("nvrtcVersion failed: {rc:?}")));
    }
    Ok((major, minor))
}

/// The `-arch=` value this module will be built for.
pub fn target_arch(ctx: &Arc<CudaContext>, arch_specific: bool) -> Result<String> {
    let (major, minor) = ctx
        .compute_capability()
        .map_err(drv("querying compute capability"))?;
    let suffix = if arch_specific && major >= 9 { "a" } else { "" };
    Ok(format!("sm_{major}{minor}{suffix}"))
}

/// Compile (or fetch from the disk cache) `src` and load it into `ctx`.
///
/// `name` labels the program in logs and cache file names. Compile errors come back as
/// `Error::Device` holding the NVRTC log.
pub fn load_module(
    ctx: &Arc<CudaContext>,
    name: &str,
    src: &str,
    extra_opts: &[&str],
) -> Result<Arc<CudaModule>> {
    let cubin = compile_cached(ctx, name, src, extra_opts)?;
    ctx.load_module(Ptx::from_binary(cubin))
        .map_err(drv(&format!("loading module {name}")))
}

/// One kernel of a loaded module (the error names it).
pub fn function(m: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
    m.load_function(name)
        .map_err(drv(&format!("loading kernel {name}")))
}

/// Shared memory one block may opt in to (`cuFuncSetAttribute` beyond the 48 KiB default).
pub fn smem_optin(ctx: &Arc<CudaContext>) -> Result<usize> {
    Ok(ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(drv("querying the shared-memory limit"))? as usize)
}

/// Let kernel `name` (`f`) launch with up to `bytes` of dynamic shared memory.
pub fn allow_dynamic_smem(f: &CudaFunction, name: &str, bytes: usize) -> Result<()> {
    unsafe {
        cudarc::driver::result::function::set_function_attribute(
            f.cu_function(),
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    }
    .map_err(drv(&format!("raising the shared-memory limit of {name}")))
}

/// Compile to a CUBIN (through the cache); exposed for tools that want the binary itself.
pub fn compile_cached(
    ctx: &Arc<CudaContext>,
    name: &str,
    src: &str,
    extra_opts: &[&str],
) -> Result<Vec<u8>> {
    let arch_specific = extra_opts.contains(&ARCH_SPECIFIC);
    let mut opts: Vec<String> = vec!["-std=c++17".into()];
    let explicit_arch = extra_opts
        .iter()
        .any(|o| o.starts_with("-arch") || o.starts_with("--gpu-architecture"));
    if !explicit_arch {
        opts.push(format!("-arch={}", target_arch(ctx, arch_specific)?));
    }
    for inc in toolkit_include_dirs() {
        opts.push(format!("--include-path={inc}"));
    }
    opts.extend(
        extra_opts
            .iter()
            .filter(|o| **o != ARCH_SPECIFIC)
            .map(|o| o.to_string()),
    );
    let version = nvrtc_version()?;

    let key = {
        let mut bytes = Vec::with_capacity(src.len() + 256);
        bytes.extend_from_slice(src.as_bytes());
        for o in &opts {
            bytes.push(0);
            bytes.extend_from_slice(o.as_bytes());
        }
        bytes.extend_from_slice(format!("\0nvrtc{}.{}", version.0, version.1).as_bytes());
        format!(
            "{:016x}{:016x}",
            fnv1a(&bytes, 0xcbf2_9ce4_8422_2325),
            fnv1a(&bytes, 0x6c62_272e_07bb_0142)
        )
    };
    let safe_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let cache_file = cache_dir().map(|d| d.join(format!("{safe_name}-{key}.cubin")));
    if let Some(path) = &cache_file {
        if let Ok(bytes) = std::fs::read(path) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    let cubin = compile(name, src, &opts)?;
    if let Some(path) = &cache_file {
        // Write-then-rename so a concurrent reader never sees a partial file.
        let _ = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("cache file has a parent"))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &cubin)?;
            std::fs::rename(&tmp, path)
        })();
    }
    Ok(cubin)
}

fn compile(name: &str, src: &str, opts: &[String]) -> Result<Vec<u8>> {
    if !nvrtc_available() {
        return Err(dev(
            "libnvrtc not found (install the CUDA runtime / set LD_LIBRARY_PATH)",
        ));
    }
    let c_src = CString::new(src).map_err(|_| dev(format!("kernel {name}: source holds NUL")))?;
    let c_name = CString::new(name).map_err(|_| dev(format!("kernel {name}: name holds NUL")))?;
    let prog = nvrtc_result::create_program(&c_src, Some(&c_name))
        .map_err(|e| dev(format!("nvrtc create {name}: {e:?}")))?;
    let out = (|| {
        let compiled = unsafe { nvrtc_result::compile_program(prog, opts) };
        if let Err(e) = compiled {
            let log = unsafe { nvrtc_result::get_program_log(prog) }
                .map(|raw| {
                    unsafe { CStr::from_ptr(raw.as_ptr()) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            return Err(Error::Device(format!(
                "NVRTC failed to compile {name} ({e:?}) with {opts:?}:\n{log}"
            )));
        }
        let mut size = 0usize;
        let rc = unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size) };
        if rc != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return Err(dev(format!(
                "{name}: no CUBIN ({rc:?}); compile for a real sm_XY target"
            )));
        }
        let mut buf = vec![0u8; size];
        let rc = unsafe { nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut _) };
        if rc != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(dev(format!("{name}: nvrtcGetCUBIN failed: {rc:?}")));
        }
        Ok(buf)
    })();
    let _ = unsafe { nvrtc_result::destroy_program(prog) };
    out
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The kernel cache directory (not created here).
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("JENGA_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("jenga"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".cache").join("jenga"))
}

/// CUDA toolkit header directories, so kernels may `#include <cuda_bf16.h>` etc.
fn toolkit_include_dirs() -> Vec<String> {
    static DIRS: OnceLock<Vec<String>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let mut roots: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .collect();
        roots.push(PathBuf::from("/usr/local/cuda"));
        roots
            .into_iter()
            .map(|r| r.join("include"))
            .filter(|p| p.join("cuda_runtime.h").exists())
            .take(1)
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_hash_is_standard_fnv1a() {
        // Published FNV-1a 64 test vectors: the on-disk cache key must not drift between builds.
        assert_eq!(fnv1a(b"", 0xcbf2_9ce4_8422_2325), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a", 0xcbf2_9ce4_8422_2325), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a(b"foobar", 0xcbf2_9ce4_8422_2325),
            0x8594_4171_f739_67e8
        );
    }
}
