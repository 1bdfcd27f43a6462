//! `--device auto|cpu|cuda|sim`: which backend runs a Program. `cpu` is the reference; `cuda` is the
//! GPU backend over NVIDIA's driver; `sim` is the same backend over the PTX emulator (slow: for tests and
//! debugging, every launch under the sanitizer); `auto` takes the GPU when a driver and a device
//! answer and NVRTC loads, else the CPU, and says which and why.

use dsv3c_runtime::cpu::Cpu;
use dsv3c_runtime::device::{cuda::Cuda, sim::Sim, Device as _};
use dsv3c_runtime::gpu::{Gpu, GpuOptions};
use dsv3c_runtime::program::{Backend, BackendError, Kernel, Launch, Program, Slice};
use miette::{miette, Result};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda,
    /// The PTX emulator.
    Sim,
}

/// One of the backends, chosen at run time.
pub enum AnyBackend {
    Cpu(Cpu),
    Sim(Box<Gpu<Sim>>),
    Cuda(Box<Gpu<Cuda>>),
}

macro_rules! each {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            AnyBackend::Cpu($b) => $e,
            AnyBackend::Sim($b) => $e,
            AnyBackend::Cuda($b) => $e,
        }
    };
}

impl Backend for AnyBackend {
    fn launch(&mut self, kernel: &Kernel, args: &[Slice]) -> Result<(), BackendError> {
        each!(self, b => b.launch(kernel, args))
    }
    fn run_list(&mut self, kernels: &[Kernel], launches: &[Launch]) -> Result<(), BackendError> {
        each!(self, b => b.run_list(kernels, launches))
    }
    fn read(&mut self, s: Slice) -> Result<Vec<f32>, BackendError> {
        each!(self, b => b.read(s))
    }
    fn write(&mut self, s: Slice, data: &[f32]) -> Result<(), BackendError> {
        each!(self, b => b.write(s, data))
    }
    fn zero(&mut self, s: Slice) -> Result<(), BackendError> {
        each!(self, b => b.zero(s))
    }
}

/// The GPU backend's options here: kernels the Program carries no code for are written by codegen.
pub fn gpu_options() -> GpuOptions {
    GpuOptions { emit: Some(Box::new(dsv3c_codegen::cuda::device_code)), ..GpuOptions::default() }
}

/// The GPU backend over `device` for `program`, every kernel compiled (NVRTC, through the cache) and
/// loaded first, with progress on stderr.
pub fn gpu<D: dsv3c_runtime::device::Device>(device: D, programs: &[&Program]) -> Result<Gpu<D>> {
    dsv3c_runtime::nvrtc::ensure_loaded().map_err(|e| miette!("{e}"))?;
    let arch = device.arch();
    let mut g = Gpu::for_programs(device, programs, gpu_options()).map_err(|e| miette!("{e}"))?;
    let kernels: Vec<Kernel> = programs.iter().flat_map(|p| p.kernels.iter().cloned()).collect();
    let bar = super::progress_bar(kernels.len() as u64, "kernels compiled");
    let p = g
        .prepare(&kernels, &|done, _| {
            if let Some(b) = &bar {
                b.set_position(done as u64)
            }
        })
        .map_err(|e| miette!("{e}"))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "kernels: {} for {arch} ({} from the cache, {} compiled by NVRTC) in {:.1} s",
        p.cached + p.compiled,
        p.cached,
        p.compiled,
        p.seconds
    );
    Ok(g)
}

/// A device opened (and said on stderr), before the Program is compiled: a missing driver fails
/// fast.
pub enum Opened {
    Cpu,
    Sim(Box<Sim>),
    Cuda(Box<Cuda>),
}

/// Resolves `--device`, saying on stderr which device it is (and for `auto`, why).
pub fn open(choice: Device) -> Result<Opened> {
    let need_nvrtc = |what: &str| {
        dsv3c_runtime::nvrtc::ensure_loaded()
            .map_err(|e| miette!(help = "use --device cpu", "--device {what} compiles its kernels with NVRTC: {e}"))
    };
    match choice {
        Device::Cpu => {
            eprintln!("device: cpu");
            Ok(Opened::Cpu)
        }
        Device::Sim => {
            need_nvrtc("sim")?;
            let sim = Sim::new();
            eprintln!("device: sim, {}", sim.describe());
            Ok(Opened::Sim(Box::new(sim)))
        }
        Device::Cuda => {
            let cuda = Cuda::new(0).map_err(|e| {
                miette!(help = "use --device cpu, or --device sim for the PTX emulator", "--device cuda: {e}")
            })?;
            need_nvrtc("cuda")?;
            eprintln!("device: cuda, {}", cuda.describe());
            Ok(Opened::Cuda(Box::new(cuda)))
        }
        Device::Auto => {
            let why = match Cuda::new(0) {
                Ok(cuda) => match dsv3c_runtime::nvrtc::ensure_loaded() {
                    Ok(()) => {
                        eprintln!("device: cuda (auto), {}", cuda.describe());
                        return Ok(Opened::Cuda(Box::new(cuda)));
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            eprintln!("device: cpu (auto; {why})");
            Ok(Opened::Cpu)
        }
    }
}

impl Opened {
    /// The backend for `program` on this device (on a GPU, every kernel compiled and loaded first).
    pub fn backend(self, program: &Program) -> Result<AnyBackend> {
        self.backend_for(&[program])
    }

    /// The kind of device a parallel job's ranks run on: the CPU, or the emulator (each rank its
    /// own). A job on CUDA devices is refused: its collectives want NCCL.
    pub fn for_ranks(&self) -> Result<RankDevice> {
        match self {
            Opened::Cpu => Ok(RankDevice::Cpu),
            Opened::Sim(_) => Ok(RankDevice::Sim),
            Opened::Cuda(_) => Err(miette!(
                help = "pass --device cpu, or --device sim for the PTX emulator",
                "a parallel job's collectives on GPUs need the NCCL backend, which is not built yet"
            )),
        }
    }

    /// The backend for several programs that share its arenas (a generation's prefill and step), each
    /// arena the largest of theirs, every kernel of each compiled and loaded first.
    pub fn backend_for(self, programs: &[&Program]) -> Result<AnyBackend> {
        Ok(match self {
            Opened::Cpu => AnyBackend::Cpu(Cpu::for_programs(programs)),
            Opened::Sim(sim) => AnyBackend::Sim(Box::new(gpu(*sim, programs)?)),
            Opened::Cuda(cuda) => AnyBackend::Cuda(Box::new(gpu(*cuda, programs)?)),
        })
    }
}

/// Where a parallel job's ranks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankDevice {
    Cpu,
    Sim,
}

impl RankDevice {
    /// One rank's backend for `program`, its collectives over `comms` — on the CPU directly, on a
    /// fresh emulator staged through the host.
    pub fn backend(self, program: &Program, comms: dsv3c_runtime::comm::Comms) -> Result<AnyBackend> {
        Ok(match self {
            RankDevice::Cpu => AnyBackend::Cpu(Cpu::with_comms(program, comms)),
            RankDevice::Sim => AnyBackend::Sim(Box::new(gpu(Sim::new(), &[program])?.with_comms(comms))),
        })
    }
}
