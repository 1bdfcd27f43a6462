//! The GPU backend, written once over any [`Device`]: one allocation per arena of the Program's plan,
//! each kernel's CUDA source compiled by NVRTC (through the on-disk [`cache::PtxCache`]: a cubin for a
//! GPU, PTX for the emulator) and loaded once, launches from the launch table with each argument the arena's base plus the slice's offset,
//! and the host's traffic limited to the step's scalars and tokens in and its losses and metrics out.
//! A launch list (a phase of the step) runs eagerly the first time; the second time it is recorded
//! as a graph and from then on replayed as one submission (a CUDA graph on the driver, a recorded list
//! on the emulator, so CI runs the same path). On the emulator every launch runs under the sanitizer.

pub mod cache;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rayon::prelude::*;

use crate::device::{Device, DeviceError, Dims, FunctionId, GraphId, Ptr};
use crate::dtype;
use crate::program::{check_kernel, check_slice, Backend, BackendError, DeviceCode, Kernel, Launch, Program};
use crate::program::{Slice, Space};

pub use cache::PtxCache;

/// Writes device code for a kernel the Program carries none for (a launch by hand, a generated
/// graph): `dsv3c_codegen::cuda::device_code`. The runtime cannot depend on the compiler, so whoever
/// builds the backend passes it in.
pub type Emitter = Box<dyn Fn(&Kernel) -> Result<DeviceCode, String> + Send + Sync>;

/// How the backend runs.
pub struct GpuOptions {
    /// Record each launch list as a graph on its second run and replay it after.
    pub graphs: bool,
    pub cache: PtxCache,
    pub emit: Option<Emitter>,
}

impl Default for GpuOptions {
    fn default() -> GpuOptions {
        GpuOptions { graphs: true, cache: PtxCache::new(), emit: None }
    }
}

/// A kernel loaded on a device: each entry's name, function and launch shape, in order.
pub struct Loaded {
    pub stem: String,
    pub entries: Vec<(String, FunctionId, Dims)>,
}

/// Loads one kernel's PTX on `device`: its module, each entry's function, and the shared-memory opt-in
/// where an entry needs more than 48 KB.
pub fn load_kernel<D: Device + ?Sized>(
    device: &mut D,
    code: &DeviceCode,
    image: crate::device::Image<'_>,
) -> Result<Loaded, BackendError> {
    let module = device.load_module(&code.stem, image).map_err(device_err(&code.stem))?;
    let mut entries = Vec::with_capacity(code.entries.len());
    for e in &code.entries {
        let at = format!("{}::{}", code.stem, e.name);
        let f = device.function(module, &e.name).map_err(device_err(&at))?;
        // Set whenever the entry uses dynamic shared memory: the driver's static size may differ from
        // the compiler's figure, and the attribute is harmless below 48 KB.
        if e.dynamic_smem > 0 {
            device.set_max_dynamic_smem(f, e.dynamic_smem).map_err(device_err(&at))?;
        }
        if e.grid.iter().any(|&g| g == 0 || g > u32::MAX as u64) {
            return Err(BackendError::Device(format!("{at}: grid {:?} cannot be launched", e.grid)));
        }
        let grid = e.grid.map(|g| g as u32);
        entries.push((e.name.clone(), f, Dims { grid, block: [e.block, 1, 1], dynamic_smem: e.dynamic_smem }));
    }
    Ok(Loaded { stem: code.stem.clone(), entries })
}

/// What [`Gpu::prepare`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prepared {
    /// Kernels whose PTX came from the cache.
    pub cached: usize,
    /// Kernels NVRTC compiled.
    pub compiled: usize,
    /// Host seconds spent.
    pub seconds: f64,
}

#[derive(Clone, Copy)]
enum List {
    /// Ran once, eagerly.
    Ran,
    Recorded(GraphId),
    /// Recording failed (the device or driver refused a capture): always run eagerly.
    Eager,
}

/// A Program's arenas on a device, and its kernels loaded there.
pub struct Gpu<D: Device> {
    device: D,
    /// Base address and size in bytes of each arena, by [`space_index`].
    arenas: [(Ptr, usize); 5],
    loaded: Vec<Loaded>,
    by_stem: HashMap<String, usize>,
    /// Kernels without device code, by op and dtypes, to their loaded index.
    emitted: HashMap<String, usize>,
    lists: HashMap<u64, List>,
    options: GpuOptions,
    /// The rank's communicators, which run the Program's collectives through the host (none: a
    /// job of one rank).
    comms: Option<crate::comm::Comms>,
}

fn space_index(s: Space) -> usize {
    match s {
        Space::Param => 0,
        Space::Grad => 1,
        Space::Optim => 2,
        Space::Weights => 3,
        Space::Act => 4,
    }
}

const SPACES: [Space; 5] = [Space::Param, Space::Grad, Space::Optim, Space::Weights, Space::Act];

fn device_err(what: impl std::fmt::Display) -> impl Fn(DeviceError) -> BackendError {
    move |e| BackendError::Device(format!("{what}: {e}"))
}

impl<D: Device> Gpu<D> {
    /// Allocates `program`'s arenas (zeroed) on `device`. Kernels load on first use, or all at once
    /// with [`Gpu::prepare`].
    pub fn new(device: D, program: &Program, options: GpuOptions) -> Result<Gpu<D>, BackendError> {
        Gpu::for_programs(device, &[program], options)
    }

    /// Allocates arenas (zeroed) on `device` large enough for each of `programs`, each the largest of
    /// theirs: decode programs of one model share the parameters, the weights' copy and the cache.
    pub fn for_programs(mut device: D, programs: &[&Program], options: GpuOptions) -> Result<Gpu<D>, BackendError> {
        let mut arenas = [(0, 0); 5];
        for s in SPACES {
            let bytes = programs.iter().map(|p| p.arena_bytes(s)).max().unwrap_or(0);
            let base = device
                .alloc(&format!("{s:?}"), bytes)
                .map_err(device_err(format!("allocating the {s:?} arena ({bytes} B)")))?;
            arenas[space_index(s)] = (base, bytes);
        }
        Ok(Gpu {
            device,
            arenas,
            loaded: Vec::new(),
            by_stem: HashMap::new(),
            emitted: HashMap::new(),
            lists: HashMap::new(),
            options,
            comms: None,
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device address of a slice's first byte.
    pub fn address(&self, s: Slice) -> Ptr {
        self.arenas[space_index(s.space)].0 + s.offset as u64
    }

    fn arena_bytes(&self, s: Space) -> usize {
        self.arenas[space_index(s)].1
    }

    /// Compiles (NVRTC, in parallel, through the cache) and loads every kernel of `kernels` that is
    /// not loaded yet (all but collectives); `progress(done, total)` is called as each compiles.
    pub fn prepare(
        &mut self,
        kernels: &[Kernel],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Prepared, BackendError> {
        let start = std::time::Instant::now();
        let mut todo: Vec<&DeviceCode> = Vec::new();
        // Collectives have no kernel: the communicators run them.
        for k in kernels.iter().filter(|k| !k.op.is_collective()) {
            let code = k.device.as_ref().map_err(|why| no_code(k, why))?;
            if !self.by_stem.contains_key(&code.stem) && !todo.iter().any(|c| c.stem == code.stem) {
                todo.push(code);
            }
        }
        crate::nvrtc::ensure_loaded().map_err(|e| BackendError::Device(e.to_string()))?;
        let (arch, driver, cubin) = (self.device.arch(), self.device.driver(), self.device.wants_cubin());
        let done = std::sync::atomic::AtomicUsize::new(0);
        let total = todo.len();
        let built: Vec<Result<(cache::Compiled, cache::Source), BackendError>> = todo
            .par_iter()
            .map(|c| {
                let r = self
                    .options
                    .cache
                    .compiled(&c.stem, &c.source, &arch, &driver, cubin)
                    .map_err(|e| BackendError::Device(e.to_string()));
                progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
                r
            })
            .collect();
        let mut out = Prepared::default();
        for (code, r) in todo.iter().zip(built) {
            let (compiled, how) = r?;
            match how {
                cache::Source::Cached => out.cached += 1,
                cache::Source::Compiled => out.compiled += 1,
            }
            let i = self.load(code, compiled.image())?;
            self.by_stem.insert(code.stem.clone(), i);
        }
        out.seconds = start.elapsed().as_secs_f64();
        Ok(out)
    }

    fn load(&mut self, code: &DeviceCode, image: crate::device::Image<'_>) -> Result<usize, BackendError> {
        let loaded = load_kernel(&mut self.device, code, image)?;
        self.loaded.push(loaded);
        Ok(self.loaded.len() - 1)
    }

    /// The loaded form of `k`, compiling and loading it first if need be.
    fn loaded_index(&mut self, k: &Kernel) -> Result<usize, BackendError> {
        // Kernels without device code are known by their op and dtypes.
        let key = || format!("{:?} {:?}", k.op, k.dtypes);
        let code = match &k.device {
            Ok(code) => {
                if let Some(&i) = self.by_stem.get(&code.stem) {
                    return Ok(i);
                }
                code.clone()
            }
            Err(why) => {
                let key = key();
                if let Some(&i) = self.emitted.get(&key) {
                    return Ok(i);
                }
                let emit = self.options.emit.as_ref().ok_or_else(|| no_code(k, why))?;
                let code = emit(k).map_err(|why| no_code(k, &why))?;
                if let Some(&i) = self.by_stem.get(&code.stem) {
                    self.emitted.insert(key, i);
                    return Ok(i);
                }
                code
            }
        };
        crate::nvrtc::ensure_loaded().map_err(|e| BackendError::Device(e.to_string()))?;
        let cubin = self.device.wants_cubin();
        let (compiled, _) = self
            .options
            .cache
            .compiled(&code.stem, &code.source, &self.device.arch(), &self.device.driver(), cubin)
            .map_err(|e| BackendError::Device(e.to_string()))?;
        let i = self.load(&code, compiled.image())?;
        self.by_stem.insert(code.stem.clone(), i);
        if k.device.is_err() {
            self.emitted.insert(key(), i);
        }
        Ok(i)
    }

    /// The stem of a loaded kernel (for messages and benchmarks).
    pub fn stem(&mut self, k: &Kernel) -> Result<String, BackendError> {
        let i = self.loaded_index(k)?;
        Ok(self.loaded[i].stem.clone())
    }

    /// The launch shapes of `k`'s entries, in order.
    pub fn entries(&mut self, k: &Kernel) -> Result<Vec<(String, Dims)>, BackendError> {
        let i = self.loaded_index(k)?;
        Ok(self.loaded[i].entries.iter().map(|(n, _, d)| (n.clone(), *d)).collect())
    }

    /// Launches only entry `entry` of `k` (benchmarks time entries one by one).
    pub fn launch_entry(&mut self, k: &Kernel, entry: usize, args: &[Slice]) -> Result<(), BackendError> {
        check_kernel(k, args, |s| self.arena_bytes(s))?;
        let i = self.loaded_index(k)?;
        let ptrs: Vec<Ptr> = args.iter().map(|s| self.address(*s)).collect();
        let (name, f, dims) = self.loaded[i]
            .entries
            .get(entry)
            .cloned()
            .ok_or_else(|| BackendError::Device(format!("{}: no entry {entry}", self.loaded[i].stem)))?;
        let at = format!("{}::{name} ({dims})", self.loaded[i].stem);
        self.device.launch(f, dims, &ptrs).map_err(device_err(at))
    }

    fn list_key(kernels: &[Kernel], launches: &[Launch]) -> u64 {
        let mut h = DefaultHasher::new();
        for l in launches {
            match kernels.get(l.kernel).map(|k| &k.device) {
                Some(Ok(code)) => code.stem.hash(&mut h),
                _ => l.kernel.hash(&mut h),
            }
            l.args.hash(&mut h);
        }
        launches.len().hash(&mut h);
        h.finish()
    }

    fn run_eagerly(&mut self, kernels: &[Kernel], launches: &[Launch]) -> Result<(), BackendError> {
        crate::program::launch_each(self, kernels, launches)
    }

    /// The backend of one rank of a parallel job, whose collectives run over `comms`.
    pub fn with_comms(mut self, comms: crate::comm::Comms) -> Gpu<D> {
        self.comms = Some(comms);
        self
    }

    /// A collective, staged through the host: its arguments read back, the rank's communicators
    /// run it (as on the CPU), what it wrote written back. (NCCL, which would run it on the device,
    /// is not built yet.)
    fn collective(&mut self, k: &Kernel, args: &[Slice]) -> Result<(), BackendError> {
        let mut host = args.iter().map(|s| Backend::read(self, *s)).collect::<Result<Vec<_>, _>>()?;
        crate::cpu::collective::run_on_host(&k.op, &mut host, self.comms.as_ref()).map_err(BackendError::Device)?;
        for i in k.op.outputs() {
            Backend::write(self, args[i], &host[i])?;
        }
        Ok(())
    }
}

fn no_code(k: &Kernel, why: &str) -> BackendError {
    BackendError::Device(format!("{}: no device code ({why})", k.op.family()))
}

impl<D: Device> Backend for Gpu<D> {
    fn launch(&mut self, k: &Kernel, args: &[Slice]) -> Result<(), BackendError> {
        check_kernel(k, args, |s| self.arena_bytes(s))?;
        if k.op.is_collective() {
            return self.collective(k, args);
        }
        let i = self.loaded_index(k)?;
        let ptrs: Vec<Ptr> = args.iter().map(|s| self.address(*s)).collect();
        let loaded = &self.loaded[i];
        for (name, f, dims) in &loaded.entries {
            self.device.launch(*f, *dims, &ptrs).map_err(device_err(format!("{}::{name} ({dims})", loaded.stem)))?;
        }
        Ok(())
    }

    /// A list's first run is eager (every kernel loads, every launch is checked); its second is
    /// recorded as a graph and replayed; later runs replay the graph.
    fn run_list(&mut self, kernels: &[Kernel], launches: &[Launch]) -> Result<(), BackendError> {
        // A collective staged through the host cannot be recorded into a graph.
        let collectives = launches.iter().any(|l| kernels.get(l.kernel).is_some_and(|k| k.op.is_collective()));
        if !self.options.graphs || launches.is_empty() || collectives {
            return self.run_eagerly(kernels, launches);
        }
        let key = Self::list_key(kernels, launches);
        match self.lists.get(&key).copied() {
            None => {
                self.run_eagerly(kernels, launches)?;
                self.lists.insert(key, List::Ran);
                Ok(())
            }
            Some(List::Ran) => {
                if self.device.begin_capture().is_err() {
                    self.lists.insert(key, List::Eager);
                    return self.run_eagerly(kernels, launches);
                }
                let recorded = self.run_eagerly(kernels, launches);
                let graph = self.device.end_capture();
                recorded?;
                match graph {
                    Ok(g) => {
                        self.lists.insert(key, List::Recorded(g));
                        self.device.replay(g).map_err(device_err("replaying a graph"))
                    }
                    // Nothing ran while recording: run the list now, and from now on eagerly.
                    Err(_) => {
                        self.lists.insert(key, List::Eager);
                        self.run_eagerly(kernels, launches)
                    }
                }
            }
            Some(List::Eager) => self.run_eagerly(kernels, launches),
            Some(List::Recorded(g)) => self.device.replay(g).map_err(device_err("replaying a graph")),
        }
    }

    fn read(&mut self, s: Slice) -> Result<Vec<f32>, BackendError> {
        check_slice(s, self.arena_bytes(s.space))?;
        let mut bytes = vec![0u8; s.bytes()];
        self.device.read(self.address(s), &mut bytes).map_err(device_err(format!("reading {s:?}")))?;
        let mut out = vec![0.0; s.len];
        dtype::decode(s.dtype, &bytes, &mut out);
        Ok(out)
    }

    fn write(&mut self, s: Slice, data: &[f32]) -> Result<(), BackendError> {
        check_slice(s, self.arena_bytes(s.space))?;
        if data.len() != s.len {
            return Err(BackendError::Length { slice: s, data: data.len() });
        }
        let mut bytes = vec![0u8; s.bytes()];
        dtype::encode(s.dtype, data, &mut bytes);
        self.device.write(self.address(s), &bytes).map_err(device_err(format!("writing {s:?}")))
    }

    fn zero(&mut self, s: Slice) -> Result<(), BackendError> {
        check_slice(s, self.arena_bytes(s.space))?;
        self.device.zero(self.address(s), s.bytes()).map_err(device_err(format!("zeroing {s:?}")))
    }
}
