//! The backend suite (`runtime::backend_suite`) on the GPU backend over the PTX emulator: every op's
//! CUDA kernel compiled by NVRTC, run in the emulator under the sanitizer, against the CPU reference;
//! and the same suite over the CUDA driver when a GPU answers (reported skipped otherwise). NVRTC's
//! absence skips the emulator suite loudly, and fails it where `DSV3C_REQUIRE_NVRTC` is set (CI).

use dsv3c_runtime::device::{cuda::Cuda, sim::Sim, Device};
use dsv3c_runtime::gpu::{Gpu, GpuOptions, PtxCache};
use dsv3c_runtime::Program;

fn nvrtc() -> bool {
    match dsv3c_runtime::nvrtc::ensure_loaded() {
        Ok(()) => true,
        Err(e) if std::env::var_os("DSV3C_REQUIRE_NVRTC").is_some() => {
            panic!("the GPU backend suite needs NVRTC (DSV3C_REQUIRE_NVRTC is set): {e}")
        }
        Err(_) => false,
    }
}

fn gpu<D: Device>(device: D, p: &Program) -> Gpu<D> {
    let options = GpuOptions {
        emit: Some(Box::new(dsv3c_codegen::cuda::device_code)),
        cache: PtxCache::new(),
        ..GpuOptions::default()
    };
    Gpu::new(device, p, options).expect("the arenas fit")
}

/// The backend over the emulator, where NVRTC is here.
pub fn on_sim(p: &Program) -> Option<Gpu<Sim>> {
    nvrtc().then(|| gpu(Sim::new(), p))
}

/// The backend over the CUDA driver, where a GPU answers.
pub fn on_cuda(p: &Program) -> Option<Gpu<Cuda>> {
    let device = Cuda::new(0).ok().filter(|_| nvrtc())?;
    Some(gpu(device, p))
}

dsv3c_runtime::backend_suite!(sim, super::on_sim);
dsv3c_runtime::backend_suite!(cuda, super::on_cuda);
