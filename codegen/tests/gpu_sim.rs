//! The backend suite (`runtime::backend_suite`) on the GPU backend over the PTX emulator: every op's
//! CUDA kernel compiled by NVRTC, run in the emulator under the sanitizer, against the CPU reference;
//! and the same suite over the CUDA driver when a GPU answers (reported skipped otherwise). NVRTC's
//! absence skips the emulator suite loudly, and fails it where `DSV3C_REQUIRE_NVRTC` is set (CI).

use dsv3c_runtime::device::{
    cuda::Cuda, sim::Sim, Device, DeviceError, Dims, EventId, FunctionId, GraphId, Image, ModuleId,
};
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

/// The backend over the CUDA driver, where a GPU answers (`DSV3C_REQUIRE_CUDA`, which
/// `scripts/gpu-check.sh` sets, makes its absence a failure).
pub fn on_cuda(p: &Program) -> Option<Gpu<Cuda>> {
    let device = match Cuda::new(0) {
        Ok(d) => d,
        Err(e) if std::env::var_os("DSV3C_REQUIRE_CUDA").is_some() => panic!("DSV3C_REQUIRE_CUDA is set: {e}"),
        Err(_) => return None,
    };
    nvrtc().then(|| gpu(device, p))
}

dsv3c_runtime::backend_suite!(sim, super::on_sim);
dsv3c_runtime::backend_suite!(cuda, super::on_cuda);

fn tiny(batch: usize, seq: usize) -> Program {
    let spec =
        dsv3c_spec::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/tiny.yaml"))).unwrap();
    dsv3c_codegen::compile_training(&spec, batch, seq, dsv3c_codegen::Training::default()).unwrap()
}

/// tiny with a 1024-token vocabulary, for the emulator (whose time goes to GPT-2's 50304-token LM
/// head otherwise; `steps` writes ids below 1000).
fn tiny_1024(batch: usize, seq: usize) -> Program {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/tiny.yaml")).unwrap();
    let spec = dsv3c_spec::parse("tiny-1024", &text.replace("vocab_size: 50304", "vocab_size: 1024")).unwrap();
    dsv3c_codegen::compile_training(&spec, batch, seq, dsv3c_codegen::Training::default()).unwrap()
}

/// `n` f32 training steps of `p` (start, forward, backward, update) on `b` from seed-7 parameters:
/// each step's loss.
fn steps(p: &Program, b: &mut dyn dsv3c_runtime::program::Backend, n: usize) -> Vec<f32> {
    use dsv3c_runtime::op::scalars::*;
    use dsv3c_runtime::program::Graph;
    let mut params = vec![0.0; p.param_len];
    dsv3c_runtime::init::init_params(p, 7, &mut params);
    b.write(p.whole(dsv3c_runtime::Space::Param), &params).unwrap();
    let mut s = vec![0.0f32; LEN];
    s[MAX_GRAD_NORM] = f32::INFINITY; // the step guard open
    (s[LR], s[GRAD_SCALE], s[BETA1], s[BETA2], s[EPS], s[CLIP]) = (1e-3, 1.0, 0.9, 0.95, 1e-8, 1.0);
    let tokens: Vec<f32> = (0..p.io.tokens.len).map(|i| (i * 37 % 1000) as f32).collect();
    (1..=n)
        .map(|step| {
            s[STEP] = step as f32;
            b.write(p.io.scalars, &s).unwrap();
            p.start(b).unwrap();
            b.write(p.io.tokens, &tokens).unwrap();
            p.forward(b).unwrap();
            let loss = b.read(p.io.loss).unwrap()[0];
            p.backward(b).unwrap();
            p.update(b).unwrap();
            loss
        })
        .collect()
}

fn follows_the_cpu(p: &Program, got: &[f32]) {
    let want = steps(p, &mut dsv3c_runtime::cpu::Cpu::new(p), got.len());
    for (g, c) in got.iter().zip(&want) {
        assert!((g - c).abs() <= 1e-4 * c.abs(), "gpu {got:?} vs cpu {want:?}");
    }
    assert!(want[want.len() - 1] < want[0], "the loss falls: {want:?}");
}

/// Five steps of `tiny` on the emulator follow the CPU's losses; each launch list ran eagerly once,
/// was recorded as a graph the second time and replayed after.
#[test]
fn five_training_steps_on_sim_follow_the_cpu_and_replay_their_graphs() {
    let p = tiny_1024(1, 16);
    let Some(mut gpu) = on_sim(&p) else {
        eprintln!("SKIPPED: needs NVRTC");
        return;
    };
    let got = steps(&p, &mut gpu, 5);
    follows_the_cpu(&p, &got);
    let sim = gpu.device();
    assert_eq!(sim.graphs(), 4, "start, forward, backward and update recorded once each");
    let entries: usize = p.launches().map(|l| p.kernels[l.kernel].device.as_ref().unwrap().entries.len()).sum();
    assert_eq!(sim.launches() as usize, 5 * entries);
}

/// The same on the GPU, where one answers.
#[test]
fn five_training_steps_on_cuda_follow_the_cpu() {
    let p = tiny(2, 64);
    let Some(mut gpu) = on_cuda(&p) else {
        eprintln!("SKIPPED: no CUDA device");
        return;
    };
    let got = steps(&p, &mut gpu, 5);
    follows_the_cpu(&p, &got);
}

/// A GPU gets cubins, not PTX (no driver JIT, so an NVRTC newer than the driver still works): NVRTC
/// writes an ELF for sm_90a without a GPU, the cache stores it and serves it back, and a compile
/// error comes back with NVRTC's log.
#[test]
fn kernels_compile_to_cubins_for_a_gpu_through_the_cache() {
    use dsv3c_runtime::gpu::cache::{Compiled, Source};
    if !nvrtc() {
        eprintln!("SKIPPED: needs NVRTC");
        return;
    }
    let k = dsv3c_codegen::cuda::emit(&dsv3c_runtime::Op::Add { n: 300 }).unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cubin-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let cache = PtxCache::at(Some(dir));
    let (first, how) = cache.compiled(&k.stem, &k.source, "sm_90a", "test driver", true).unwrap();
    let Compiled::Cubin(bytes) = &first else { panic!("a PTX for a cubin request") };
    assert!(bytes.starts_with(b"\x7fELF") && how == Source::Compiled);
    let (again, how) = cache.compiled(&k.stem, &k.source, "sm_90a", "test driver", true).unwrap();
    assert_eq!((again, how), (first, Source::Cached));
    let e =
        dsv3c_runtime::nvrtc::compile_cubin("bad", "extern \"C\" __global__ void f() { undefined_thing(); }", "sm_90a")
            .unwrap_err();
    assert!(e.to_string().contains("undefined_thing"), "{e}");
}

/// The emulator, refusing to record graphs (as a driver may): the backend runs every list eagerly.
struct NoGraphs(Sim);

impl Device for NoGraphs {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn arch(&self) -> String {
        self.0.arch()
    }
    fn driver(&self) -> String {
        self.0.driver()
    }
    fn alloc(&mut self, name: &str, bytes: usize) -> Result<u64, DeviceError> {
        self.0.alloc(name, bytes)
    }
    fn free(&mut self, base: u64) -> Result<(), DeviceError> {
        self.0.free(base)
    }
    fn write(&mut self, dst: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.0.write(dst, data)
    }
    fn read(&mut self, src: u64, out: &mut [u8]) -> Result<(), DeviceError> {
        self.0.read(src, out)
    }
    fn zero(&mut self, dst: u64, bytes: usize) -> Result<(), DeviceError> {
        self.0.zero(dst, bytes)
    }
    fn wants_cubin(&self) -> bool {
        false
    }
    fn load_module(&mut self, name: &str, image: Image<'_>) -> Result<ModuleId, DeviceError> {
        self.0.load_module(name, image)
    }
    fn function(&mut self, module: ModuleId, entry: &str) -> Result<FunctionId, DeviceError> {
        self.0.function(module, entry)
    }
    fn static_smem(&self, f: FunctionId) -> Result<u32, DeviceError> {
        self.0.static_smem(f)
    }
    fn set_max_dynamic_smem(&mut self, f: FunctionId, bytes: u32) -> Result<(), DeviceError> {
        self.0.set_max_dynamic_smem(f, bytes)
    }
    fn launch(&mut self, f: FunctionId, dims: Dims, args: &[u64]) -> Result<(), DeviceError> {
        self.0.launch(f, dims, args)
    }
    fn event(&mut self) -> Result<EventId, DeviceError> {
        self.0.event()
    }
    fn record(&mut self, e: EventId) -> Result<(), DeviceError> {
        self.0.record(e)
    }
    fn elapsed(&mut self, start: EventId, end: EventId) -> Result<f64, DeviceError> {
        self.0.elapsed(start, end)
    }
    fn begin_capture(&mut self) -> Result<(), DeviceError> {
        Err(DeviceError::Invalid("graphs are not supported here".into()))
    }
    fn end_capture(&mut self) -> Result<GraphId, DeviceError> {
        Err(DeviceError::Invalid("no capture".into()))
    }
    fn replay(&mut self, g: GraphId) -> Result<(), DeviceError> {
        self.0.replay(g)
    }
    fn synchronize(&mut self) -> Result<(), DeviceError> {
        self.0.synchronize()
    }
}

/// A device that cannot record graphs still trains: each list falls back to eager runs, and the step
/// is the one the graphs would have replayed.
#[test]
fn without_graphs_the_lists_run_eagerly() {
    let p = tiny_1024(1, 8);
    if !nvrtc() {
        eprintln!("SKIPPED: needs NVRTC");
        return;
    }
    let mut gpu = gpu(NoGraphs(Sim::new()), &p);
    let got = steps(&p, &mut gpu, 3);
    follows_the_cpu(&p, &got);
    assert_eq!(gpu.device().0.graphs(), 0);
}

/// A parallel job on the emulator — tiny with bf16 weights over two pipeline stages of two
/// data-parallel ranks, its experts over both, ZeRO-1 sharding the moments and the f32 masters
/// (each start gathering them) — with each rank's collectives staged through the host: two steps
/// follow the same job on the CPU.
#[test]
fn a_parallel_job_on_the_emulator_follows_the_cpu() {
    use dsv3c_runtime::comm::{run_mesh, Mesh};
    use dsv3c_runtime::cpu::Cpu;
    if !nvrtc() {
        eprintln!("SKIPPED: needs NVRTC");
        return;
    }
    // tiny with a 512-token vocabulary (the emulator's time goes to the LM head otherwise).
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/tiny.yaml")).unwrap();
    let text = text.replace("vocab_size: 50304", "vocab_size: 512").replace("param: f32", "param: bf16");
    let spec = dsv3c_spec::parse("tiny-512-bf16", &text).unwrap();
    let recipe = dsv3c_spec::config::parse_config(
        "job.yaml",
        "spec: tiny.yaml\nsteps: 2\ndata: {source: builtin, validation_fraction: 0.0}\n\
         batch: {micro_batch: 1, accumulation: 2, seq_len: 16}\noptimizer: {kind: adamw, lr: 1.0e-3}\n\
         parallel: {dp: 2, ep: 2, pp: 2, collective_timeout_s: 300}\n",
    )
    .unwrap();
    let mesh = Mesh { dp: 2, ep: 2, pp: 2 };
    let tokens: std::sync::Arc<Vec<u32>> = std::sync::Arc::new((0..4096u32).map(|i| i * 37 % 512).collect());
    let job = |sim: bool| {
        run_mesh(mesh, std::time::Duration::from_secs(300), |comms| {
            let par = dsv3c_codegen::Parallel::of(mesh, comms.place.rank, true, 2);
            let training = dsv3c_codegen::Training::from(&recipe);
            let p = dsv3c_codegen::compile_rank(&spec, 1, 16, training, par).map_err(|e| e.to_string())?;
            assert!(p.masters().is_some(), "sharded masters");
            if sim {
                two_steps(&p, gpu(Sim::new(), &p).with_comms(comms.clone()), &recipe, &tokens, comms)
            } else {
                two_steps(&p, Cpu::with_comms(&p, comms.clone()), &recipe, &tokens, comms)
            }
        })
        .unwrap()
        .swap_remove(0)
    };
    let (on_sim, on_cpu) = (job(true), job(false));
    for (s, c) in on_sim.iter().zip(&on_cpu) {
        assert!((s - c).abs() <= 1e-5 * c.abs(), "emulator {on_sim:?} vs cpu {on_cpu:?}");
    }
}

/// Two training steps of one rank of a job: rank 0's losses (the job's).
fn two_steps<B: dsv3c_runtime::program::Backend>(
    p: &Program,
    b: B,
    recipe: &dsv3c_spec::config::RunConfig,
    tokens: &std::sync::Arc<Vec<u32>>,
    comms: dsv3c_runtime::comm::Comms,
) -> Result<Vec<f64>, String> {
    use dsv3c_runtime::train::{checkpoint::RunState, trainer::Trainer};
    let run = RunState::fresh(1, String::new(), String::new());
    let mut t = Trainer::on_rank(p, p, b, recipe, tokens.clone(), run, None, comms).map_err(|e| e.to_string())?;
    (0..2).map(|_| t.step().map(|r| r.loss).map_err(|e| e.to_string())).collect()
}
