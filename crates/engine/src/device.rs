//! The device, chosen once: `auto | cpu | cuda | cuda:N` → a backend, and the one place where
//! work generic over the backend is dispatched to the concrete CPU or CUDA type.

use crate::parallel::RankSetup;
use anyhow::{bail, Context, Result};
use jenga_carve::PolicyKernels;
use jenga_cuda::CudaBackend;
use jenga_tensor::{Communicator, CpuBackend, FusedOps, SolverOps};

/// What the engine needs of a backend: the op vocabulary, the policy kernels, and the
/// collectives of a multi-process run.
pub trait EngineBackend: PolicyKernels + FusedOps + SolverOps + 'static {
    /// This process's communicator in a multi-process run (NCCL between GPUs).
    fn process_comm(&self, rank: &RankSetup) -> Result<Box<dyn Communicator<Self>>>;
}

impl EngineBackend for CpuBackend {
    fn process_comm(&self, _rank: &RankSetup) -> Result<Box<dyn Communicator<Self>>> {
        bail!("one process per rank needs --device cuda (NCCL); on the CPU, --ranks N runs the ranks as threads")
    }
}

impl EngineBackend for CudaBackend {
    fn process_comm(&self, r: &RankSetup) -> Result<Box<dyn Communicator<Self>>> {
        let id = jenga_cuda::NcclId::from_hex(&r.nccl_id).context("JENGA_NCCL_ID")?;
        let comm = jenga_cuda::NcclComm::new(self, r.rank, r.world, &id)
            .with_context(|| format!("NCCL init, rank {} of {}", r.rank, r.world))?;
        Ok(Box::new(comm))
    }
}

/// Work generic over the backend, run by `Device::run` on whichever backend was chosen.
pub trait OnDevice {
    type Output;
    fn run<B: EngineBackend>(self, be: &B) -> Result<Self::Output>;
}

pub enum Device {
    Cpu(CpuBackend),
    Cuda(Box<CudaBackend>),
}

impl Device {
    /// Runs `task` on this device's backend (the only CPU/CUDA `match` of generic work).
    pub fn run<T: OnDevice>(&self, task: T) -> Result<T::Output> {
        match self {
            Device::Cpu(be) => task.run(be),
            Device::Cuda(be) => task.run(be.as_ref()),
        }
    }

    pub fn name(&self) -> String {
        use jenga_tensor::Backend;
        match self {
            Device::Cpu(be) => be.name(),
            Device::Cuda(be) => be.name(),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Memory a run may take on this device: the GPU's free memory, or the host's available
    /// RAM on the CPU (None where it cannot be read).
    pub fn memory_free(&self) -> Option<(usize, &'static str)> {
        match self {
            Device::Cpu(_) => crate::memory::host_available().map(|b| (b, "available RAM")),
            Device::Cuda(be) => be
                .context()
                .mem_get_info()
                .ok()
                .map(|(free, _)| (free, "free GPU memory")),
        }
    }
}

/// `auto | cpu | cuda | cuda:N`. `auto` takes CUDA device 0 when a driver and a GPU are
/// present, and otherwise falls back to the CPU; `note` gets the line saying so.
pub fn select(spec: &str, threads: Option<usize>, note: &mut dyn FnMut(String)) -> Result<Device> {
    let cpu = || -> Result<Device> {
        Ok(Device::Cpu(match threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => CpuBackend::with_threads(n)?,
            None => CpuBackend::new(),
        }))
    };
    let cuda = |n: usize| -> Result<Device> {
        let be = CudaBackend::new(n).with_context(|| format!("--device cuda:{n}"))?;
        Ok(Device::Cuda(Box::new(be)))
    };
    match spec {
        "cpu" => cpu(),
        "auto" => match jenga_cuda::device_count() {
            Ok(n) if n > 0 => cuda(0),
            Ok(_) => {
                note("no CUDA device visible; running on the CPU".into());
                cpu()
            }
            Err(e) => {
                let e = e.to_string();
                note(format!(
                    "{}; running on the CPU",
                    e.trim_start_matches("device error: ")
                ));
                cpu()
            }
        },
        "cuda" => cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => bail!("--device {s}: expected auto, cpu, cuda or cuda:N"),
        },
    }
}
