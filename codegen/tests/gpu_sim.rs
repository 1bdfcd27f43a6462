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

/// A Program's step on the emulator: each launch list runs eagerly once, is recorded as a graph the
/// second time and replayed after, and every run gives the CPU's losses.
#[test]
fn a_step_replays_its_recorded_lists_and_matches_the_cpu() {
    use dsv3c_runtime::program::{Backend, Graph};
    if !nvrtc() {
        eprintln!("SKIPPED: needs NVRTC");
        return;
    }
    let spec =
        dsv3c_spec::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/tiny.yaml"))).unwrap();
    let p = dsv3c_codegen::compile_training(&spec, 1, 16, dsv3c_codegen::Training::default()).unwrap();
    let mut gpu = on_sim(&p).unwrap();
    let mut cpu = dsv3c_runtime::cpu::Cpu::new(&p);
    let mut params = vec![0.0; p.param_len];
    dsv3c_runtime::init::init_params(&p, 7, &mut params);
    let mut scalars = vec![0.0f32; dsv3c_runtime::op::scalars::LEN];
    scalars[dsv3c_runtime::op::scalars::LR] = 1e-3;
    scalars[dsv3c_runtime::op::scalars::STEP] = 1.0;
    scalars[dsv3c_runtime::op::scalars::GRAD_SCALE] = 1.0;
    scalars[dsv3c_runtime::op::scalars::BETA1] = 0.9;
    scalars[dsv3c_runtime::op::scalars::BETA2] = 0.95;
    scalars[dsv3c_runtime::op::scalars::EPS] = 1e-8;
    scalars[dsv3c_runtime::op::scalars::CLIP] = 1.0;
    let tokens: Vec<f32> = (0..16).map(|i| (i * 37 % 1000) as f32).collect();
    let backends: [&mut dyn Backend; 2] = [&mut gpu, &mut cpu];
    let mut losses = [Vec::new(), Vec::new()];
    for (b, l) in backends.into_iter().zip(&mut losses) {
        b.write(p.whole(dsv3c_runtime::Space::Param), &params).unwrap();
        for _ in 0..3 {
            b.write(p.io.scalars, &scalars).unwrap();
            p.start(b).unwrap();
            b.write(p.io.tokens, &tokens).unwrap();
            p.forward(b).unwrap();
            l.push(b.read(p.io.loss).unwrap()[0]);
            p.backward(b).unwrap();
            p.update(b).unwrap();
        }
    }
    for (g, c) in losses[0].iter().zip(&losses[1]) {
        assert!((g - c).abs() <= 1e-5 * c.abs(), "sim {:?} vs cpu {:?}", losses[0], losses[1]);
    }
    assert!(losses[1][2] < losses[1][0], "the loss falls: {:?}", losses[1]);
    let sim = gpu.device();
    assert_eq!(sim.graphs(), 4, "start, forward, backward and update recorded once each");
    assert_eq!(
        sim.launches() as usize,
        3 * p.launches().map(|l| p.kernels[l.kernel].device.as_ref().unwrap().entries.len()).sum::<usize>()
    );
}
