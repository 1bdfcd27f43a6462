//! The PTX emulator as a [`Device`]: allocations are `dsv3c_ptx::Global` buffers at GPU-like addresses,
//! modules are decoded by `dsv3c_ptx`, and every launch runs the whole grid on the CPU (blocks in
//! parallel) with the sanitizer on: a finding fails the launch with the kernel, PTX line, block and
//! thread. It keeps the driver's rules that a CPU run would otherwise hide — a launch above 48 KB of
//! shared memory must have opted in, copies wait for no one but may not happen while a graph is being
//! recorded — so that the backend over it is checked as it will run on a GPU.

use std::time::Instant;

use dsv3c_ptx::{Arg, Global, LaunchConfig, Module, Options, Report};

use super::{Device, DeviceError, Dims, EventId, FunctionId, GraphId, Image, ModuleId, Ptr};
use crate::program::SMEM_WITHOUT_OPT_IN;

/// Shared memory one block may use on the emulated GPU (an H100's opt-in limit).
pub const MAX_SMEM_PER_BLOCK: u32 = 227 * 1024;

struct Function {
    module: usize,
    name: String,
    static_smem: u32,
    /// The most dynamic shared memory a launch may pass (raised by `set_max_dynamic_smem`).
    max_dynamic: u32,
}

type Recorded = (FunctionId, Dims, Vec<Ptr>);

/// The emulator device.
pub struct Sim {
    global: Global,
    modules: Vec<Module>,
    functions: Vec<Function>,
    options: Options,
    events: Vec<Option<Instant>>,
    capture: Option<Vec<Recorded>>,
    graphs: Vec<Vec<Recorded>>,
    /// What the last launch did (counters, findings).
    last: Option<Report>,
    launches: u64,
    /// Print each launch (kernel, grid, lane instructions, host time) on stderr: `DSV3C_SIM_TRACE=1`.
    trace: bool,
}

impl Default for Sim {
    fn default() -> Sim {
        Sim::new()
    }
}

impl Sim {
    /// An emulator that runs whole grids with the sanitizer on, blocks on rayon's threads.
    pub fn new() -> Sim {
        Sim::with_options(Options::default())
    }

    /// An emulator with its launch options (sampled blocks for estimates, sanitizer off for speed).
    pub fn with_options(options: Options) -> Sim {
        Sim {
            global: Global::new(),
            modules: Vec::new(),
            functions: Vec::new(),
            options,
            events: Vec::new(),
            capture: None,
            graphs: Vec::new(),
            last: None,
            launches: 0,
            trace: std::env::var_os("DSV3C_SIM_TRACE").is_some_and(|v| v != "0"),
        }
    }

    /// The report of the last launch that ran: its counters and sanitizer findings.
    pub fn last_report(&self) -> Option<&Report> {
        self.last.as_ref()
    }

    /// Graphs recorded so far.
    pub fn graphs(&self) -> usize {
        self.graphs.len()
    }

    /// Launches run so far.
    pub fn launches(&self) -> u64 {
        self.launches
    }

    fn func(&self, f: FunctionId) -> Result<&Function, DeviceError> {
        self.functions.get(f.0).ok_or_else(|| DeviceError::Invalid(format!("no function {}", f.0)))
    }

    fn no_capture(&self, what: &str) -> Result<(), DeviceError> {
        match self.capture {
            Some(_) => Err(DeviceError::Invalid(format!("{what} while a graph is being recorded"))),
            None => Ok(()),
        }
    }

    fn run(&mut self, f: FunctionId, dims: Dims, args: &[Ptr]) -> Result<(), DeviceError> {
        let func = self.func(f)?;
        if dims.dynamic_smem > func.max_dynamic {
            return Err(DeviceError::Invalid(format!(
                "{}: {} B of dynamic shared memory, above the function's limit of {} B (raise it with \
                 set_max_dynamic_smem first)",
                func.name, dims.dynamic_smem, func.max_dynamic
            )));
        }
        let cfg = LaunchConfig { grid: dims.grid, block: dims.block, dynamic_smem: dims.dynamic_smem };
        let args: Vec<Arg> = args.iter().map(|&p| Arg::Ptr(p)).collect();
        let module = &self.modules[func.module];
        let start = Instant::now();
        let report = module
            .launch(&func.name, &cfg, &args, &self.global, &self.options)
            .map_err(|e| DeviceError::Emulator(e.to_string()))?;
        if self.trace {
            eprintln!(
                "sim: {} {:?}x{:?}: {:.1} M lane-instructions in {:.3} s",
                func.name,
                dims.grid,
                dims.block,
                report.counters.lane_insts as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
        }
        self.launches += 1;
        let findings = report.findings.len();
        let first = report.findings.first().map(ToString::to_string);
        let kernel = report.kernel.clone();
        self.last = Some(report);
        match first {
            Some(first) => Err(DeviceError::Sanitizer { kernel, findings, first }),
            None => Ok(()),
        }
    }
}

impl Device for Sim {
    fn describe(&self) -> String {
        format!(
            "PTX emulator (sm_90a; sanitizer {}, {} host threads)",
            if self.options.sanitize { "on" } else { "off" },
            if self.options.parallel { rayon::current_num_threads() } else { 1 }
        )
    }

    fn arch(&self) -> String {
        "sm_90a".into()
    }

    fn driver(&self) -> String {
        format!("dsv3c-ptx {}", env!("CARGO_PKG_VERSION"))
    }

    fn alloc(&mut self, name: &str, bytes: usize) -> Result<Ptr, DeviceError> {
        self.no_capture("an allocation")?;
        Ok(self.global.alloc(name, bytes as u64))
    }

    fn free(&mut self, base: Ptr) -> Result<(), DeviceError> {
        self.no_capture("a free")?;
        self.global.free(base).map_err(DeviceError::Invalid)
    }

    fn write(&mut self, dst: Ptr, data: &[u8]) -> Result<(), DeviceError> {
        self.no_capture("a copy to the device")?;
        self.global.write(dst, data).map_err(DeviceError::Invalid)
    }

    fn read(&mut self, src: Ptr, out: &mut [u8]) -> Result<(), DeviceError> {
        self.no_capture("a copy from the device")?;
        let bytes = self.global.read(src, out.len() as u64).map_err(DeviceError::Invalid)?;
        out.copy_from_slice(&bytes);
        Ok(())
    }

    fn zero(&mut self, dst: Ptr, bytes: usize) -> Result<(), DeviceError> {
        self.no_capture("a memset")?;
        // In chunks: zeroing a gigabyte arena needs no gigabyte of host staging.
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0u8; bytes.min(CHUNK)];
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(CHUNK);
            self.global.write(dst + at as u64, &zeros[..n]).map_err(DeviceError::Invalid)?;
            at += n;
        }
        Ok(())
    }

    fn wants_cubin(&self) -> bool {
        false
    }

    fn load_module(&mut self, name: &str, image: Image<'_>) -> Result<ModuleId, DeviceError> {
        let Image::Ptx(ptx) = image else {
            return Err(DeviceError::Invalid(format!("{name}: the emulator runs PTX, not cubins")));
        };
        let m = Module::load(ptx, &mut self.global).map_err(|e| DeviceError::Emulator(format!("{name}: {e}")))?;
        self.modules.push(m);
        Ok(ModuleId(self.modules.len() - 1))
    }

    fn function(&mut self, module: ModuleId, entry: &str) -> Result<FunctionId, DeviceError> {
        let m = self.modules.get(module.0).ok_or_else(|| DeviceError::Invalid(format!("no module {}", module.0)))?;
        let k = m.kernel(entry).map_err(|e| DeviceError::Emulator(e.to_string()))?;
        let static_smem = k.static_smem;
        let max_dynamic = SMEM_WITHOUT_OPT_IN.saturating_sub(static_smem);
        self.functions.push(Function { module: module.0, name: entry.to_string(), static_smem, max_dynamic });
        Ok(FunctionId(self.functions.len() - 1))
    }

    fn static_smem(&self, f: FunctionId) -> Result<u32, DeviceError> {
        Ok(self.func(f)?.static_smem)
    }

    fn set_max_dynamic_smem(&mut self, f: FunctionId, bytes: u32) -> Result<(), DeviceError> {
        let func = self.functions.get_mut(f.0).ok_or_else(|| DeviceError::Invalid(format!("no function {}", f.0)))?;
        if func.static_smem as u64 + bytes as u64 > MAX_SMEM_PER_BLOCK as u64 {
            return Err(DeviceError::Invalid(format!(
                "{}: {} B dynamic + {} B static shared memory exceeds the {} B a block may have",
                func.name, bytes, func.static_smem, MAX_SMEM_PER_BLOCK
            )));
        }
        func.max_dynamic = bytes;
        Ok(())
    }

    fn launch(&mut self, f: FunctionId, dims: Dims, args: &[Ptr]) -> Result<(), DeviceError> {
        self.func(f)?;
        match &mut self.capture {
            Some(list) => {
                list.push((f, dims, args.to_vec()));
                Ok(())
            }
            None => self.run(f, dims, args),
        }
    }

    fn event(&mut self) -> Result<EventId, DeviceError> {
        self.events.push(None);
        Ok(EventId(self.events.len() - 1))
    }

    fn record(&mut self, e: EventId) -> Result<(), DeviceError> {
        let slot = self.events.get_mut(e.0).ok_or_else(|| DeviceError::Invalid(format!("no event {}", e.0)))?;
        *slot = Some(Instant::now());
        Ok(())
    }

    fn elapsed(&mut self, start: EventId, end: EventId) -> Result<f64, DeviceError> {
        let at = |e: EventId| match self.events.get(e.0) {
            Some(Some(t)) => Ok(*t),
            Some(None) => Err(DeviceError::Invalid(format!("event {} was never recorded", e.0))),
            None => Err(DeviceError::Invalid(format!("no event {}", e.0))),
        };
        Ok(at(end)?.saturating_duration_since(at(start)?).as_secs_f64())
    }

    fn begin_capture(&mut self) -> Result<(), DeviceError> {
        self.no_capture("begin_capture")?;
        self.capture = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&mut self) -> Result<GraphId, DeviceError> {
        let list =
            self.capture.take().ok_or_else(|| DeviceError::Invalid("end_capture without begin_capture".into()))?;
        self.graphs.push(list);
        Ok(GraphId(self.graphs.len() - 1))
    }

    fn replay(&mut self, g: GraphId) -> Result<(), DeviceError> {
        self.no_capture("a graph replay")?;
        let list =
            std::mem::take(self.graphs.get_mut(g.0).ok_or_else(|| DeviceError::Invalid(format!("no graph {}", g.0)))?);
        let mut result = Ok(());
        for (f, dims, args) in &list {
            result = self.run(*f, *dims, args);
            if result.is_err() {
                break;
            }
        }
        self.graphs[g.0] = list;
        result
    }

    fn synchronize(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x[tid] += 1` over a block, and a kernel that writes `smem` bytes of dynamic shared memory.
    const PTX: &str = r#"
.version 8.0
.target sm_90a
.address_size 64
.extern .shared .align 4 .b8 dyn[];
.visible .entry add_one(.param .u64 p)
{
    .reg .b32 %r<3>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<3>;
    ld.param.u64 %rd1, [p];
    cvta.to.global.u64 %rd2, %rd1;
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd2, %rd2, %rd3;
    ld.global.f32 %f1, [%rd2];
    add.f32 %f2, %f1, 0f3F800000;
    st.global.f32 [%rd2], %f2;
    ret;
}
.visible .entry touch_shared(.param .u64 p)
{
    .reg .b32 %r<3>;
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    st.shared.u32 [%r2+61440], %r1;
    ret;
}
"#;

    fn dims(smem: u32) -> Dims {
        Dims { grid: [1, 1, 1], block: [32, 1, 1], dynamic_smem: smem }
    }

    #[test]
    fn launches_copies_and_a_recorded_graph() {
        let mut s = Sim::new();
        let m = s.load_module("t", Image::Ptx(PTX)).unwrap();
        let f = s.function(m, "add_one").unwrap();
        let x = s.alloc("x", 128).unwrap();
        let ones: Vec<u8> = (0..32).flat_map(|_| 1.0f32.to_le_bytes()).collect();
        s.write(x, &ones).unwrap();
        s.launch(f, dims(0), &[x]).unwrap();
        let read = |s: &mut Sim| {
            let mut b = vec![0u8; 128];
            s.read(x, &mut b).unwrap();
            f32::from_le_bytes([b[4], b[5], b[6], b[7]])
        };
        assert_eq!(read(&mut s), 2.0);
        // A recording runs nothing until it is replayed; copies are refused meanwhile.
        s.begin_capture().unwrap();
        s.launch(f, dims(0), &[x]).unwrap();
        s.launch(f, dims(0), &[x]).unwrap();
        assert!(s.write(x, &ones).is_err() && s.read(x, &mut [0u8; 4]).is_err());
        let g = s.end_capture().unwrap();
        assert_eq!(read(&mut s), 2.0);
        s.replay(g).unwrap();
        s.replay(g).unwrap();
        assert_eq!(read(&mut s), 6.0);
        assert_eq!(s.launches(), 5);
        // Out of bounds is the sanitizer's error, naming the kernel.
        let small = s.alloc("small", 16).unwrap();
        let e = s.launch(f, dims(0), &[small]).unwrap_err();
        assert!(matches!(&e, DeviceError::Sanitizer { kernel, .. } if kernel == "add_one"), "{e}");
        s.free(small).unwrap();
        assert!(s.free(small).is_err());
    }

    #[test]
    fn more_than_48_kb_of_shared_memory_needs_the_opt_in() {
        let mut s = Sim::new();
        let m = s.load_module("t", Image::Ptx(PTX)).unwrap();
        let f = s.function(m, "touch_shared").unwrap();
        let x = s.alloc("x", 4).unwrap();
        let e = s.launch(f, dims(64 << 10), &[x]).unwrap_err();
        assert!(e.to_string().contains("set_max_dynamic_smem"), "{e}");
        s.set_max_dynamic_smem(f, 64 << 10).unwrap();
        s.launch(f, dims(64 << 10), &[x]).unwrap();
        assert!(s.set_max_dynamic_smem(f, 228 << 10).is_err());
    }
}
