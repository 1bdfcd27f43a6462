//! NVIDIA's driver as a [`Device`], through cudarc with the driver library loaded at run time: a build
//! runs on machines without CUDA, and [`probe`] turns a missing `libcuda` or an absent GPU into a typed
//! error before any call that would otherwise abort. One primary context on device 0 and one stream:
//! every copy and launch is ordered on it; reads synchronize it. Graphs are stream captures
//! (`cuStreamBeginCapture` … `cuStreamEndCapture`, instantiated once, replayed with `cuGraphLaunch`).

use std::sync::Arc;

use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream};
use cudarc::driver::{DevicePtr, DriverError, LaunchConfig, PushKernelArg};

use super::{Device, DeviceError, Dims, EventId, FunctionId, GraphId, Image, ModuleId, Ptr};

/// What [`probe`] found: the driver's version and the device count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Driver {
    /// `cuDriverGetVersion`: 12080 for 12.8.
    pub version: i32,
    pub devices: i32,
}

fn driver_err(call: &'static str) -> impl Fn(DriverError) -> DeviceError {
    move |e| DeviceError::Driver { call, why: e.to_string() }
}

/// Loads the driver library if it is there, initializes it and counts devices. Never panics: cudarc
/// would abort the process on its first call without `libcuda`, so its presence is checked first.
pub fn probe() -> Result<Driver, DeviceError> {
    // SAFETY: `is_culib_present` only tries to dlopen the library names cudarc would load; the
    // library's initializers are NVIDIA's and run as they would for any CUDA program.
    if !unsafe { sys::is_culib_present() } {
        return Err(DeviceError::NoDriver("libcuda.so is not on the loader path".into()));
    }
    cudarc::driver::result::init().map_err(|e| DeviceError::NoDevice(format!("cuInit failed: {e}")))?;
    let mut version = 0;
    // SAFETY: the library is loaded and initialized; the pointer is valid for the call.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| DeviceError::NoDevice(format!("cuDriverGetVersion failed: {e}")))?;
    let devices = CudaContext::device_count().map_err(|e| DeviceError::NoDevice(format!("cuDeviceGetCount: {e}")))?;
    if devices < 1 {
        return Err(DeviceError::NoDevice("the driver loaded but reports no device".into()));
    }
    Ok(Driver { version, devices })
}

struct Allocation {
    base: Ptr,
    memory: CudaSlice<u8>,
}

/// A GPU through the CUDA driver.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    driver: Driver,
    name: String,
    capability: (i32, i32),
    allocations: Vec<Allocation>,
    modules: Vec<Arc<CudaModule>>,
    functions: Vec<(CudaFunction, u32)>,
    events: Vec<CudaEvent>,
    graphs: Vec<CudaGraph>,
}

impl Cuda {
    /// The primary context of device `ordinal`, with a stream of its own.
    pub fn new(ordinal: usize) -> Result<Cuda, DeviceError> {
        let driver = probe()?;
        if ordinal as i32 >= driver.devices {
            return Err(DeviceError::NoDevice(format!("device {ordinal} asked for, {} present", driver.devices)));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuDevicePrimaryCtxRetain"))?;
        // SAFETY: every copy, launch and free of this device is issued on its one stream, in order, so
        // no allocation is used on another stream, written by two at once, or freed before a use on
        // another stream finishes — the cross-stream hazards cudarc's per-allocation events guard.
        // Without them no event wait or record touches a stream while a graph is being captured.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err("cuStreamCreate"))?;
        let name = ctx.name().map_err(driver_err("cuDeviceGetName"))?;
        let capability = ctx.compute_capability().map_err(driver_err("cuDeviceGetAttribute"))?;
        Ok(Cuda {
            ctx,
            stream,
            driver,
            name,
            capability,
            allocations: Vec::new(),
            modules: Vec::new(),
            functions: Vec::new(),
            events: Vec::new(),
            graphs: Vec::new(),
        })
    }

    /// The allocation holding `[ptr, ptr + len)` and the offset of `ptr` in it.
    fn find(&mut self, ptr: Ptr, len: usize) -> Result<(&mut CudaSlice<u8>, usize), DeviceError> {
        let a = self
            .allocations
            .iter_mut()
            .find(|a| ptr >= a.base && ptr - a.base + len as u64 <= a.memory.len() as u64)
            .ok_or_else(|| DeviceError::Invalid(format!("[{ptr:#x}, +{len}) lies in no allocation")))?;
        Ok((&mut a.memory, (ptr - a.base) as usize))
    }

    fn function_of(&self, f: FunctionId) -> Result<&(CudaFunction, u32), DeviceError> {
        self.functions.get(f.0).ok_or_else(|| DeviceError::Invalid(format!("no function {}", f.0)))
    }

    fn event_of(&self, e: EventId) -> Result<&CudaEvent, DeviceError> {
        self.events.get(e.0).ok_or_else(|| DeviceError::Invalid(format!("no event {}", e.0)))
    }
}

impl Device for Cuda {
    fn describe(&self) -> String {
        let v = self.driver.version;
        format!("{}, sm_{}{}, driver {}.{}", self.name, self.capability.0, self.capability.1, v / 1000, v % 1000 / 10)
    }

    /// `sm_90a` on Hopper (its architecture-specific features), `sm_XY` elsewhere.
    fn arch(&self) -> String {
        match self.capability {
            (9, 0) => "sm_90a".into(),
            (major, minor) => format!("sm_{major}{minor}"),
        }
    }

    fn driver(&self) -> String {
        format!("cuda-driver {}", self.driver.version)
    }

    fn alloc(&mut self, _name: &str, bytes: usize) -> Result<Ptr, DeviceError> {
        let memory = self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(driver_err("cuMemAlloc"))?;
        let base = {
            let (p, _sync) = memory.device_ptr(&self.stream);
            p
        };
        self.allocations.push(Allocation { base, memory });
        Ok(base)
    }

    fn free(&mut self, base: Ptr) -> Result<(), DeviceError> {
        let i = self
            .allocations
            .iter()
            .position(|a| a.base == base)
            .ok_or_else(|| DeviceError::Invalid(format!("no allocation at {base:#x}")))?;
        // Kernels in flight may still use it: cudarc frees on the stream, after them.
        self.allocations.swap_remove(i);
        Ok(())
    }

    fn write(&mut self, dst: Ptr, data: &[u8]) -> Result<(), DeviceError> {
        let stream = self.stream.clone();
        let (mem, off) = self.find(dst, data.len())?;
        stream.memcpy_htod(data, &mut mem.slice_mut(off..off + data.len())).map_err(driver_err("cuMemcpyHtoDAsync"))
    }

    fn read(&mut self, src: Ptr, out: &mut [u8]) -> Result<(), DeviceError> {
        let stream = self.stream.clone();
        let len = out.len();
        let (mem, off) = self.find(src, len)?;
        stream.memcpy_dtoh(&mem.slice(off..off + len), out).map_err(driver_err("cuMemcpyDtoHAsync"))?;
        stream.synchronize().map_err(driver_err("cuStreamSynchronize"))
    }

    fn zero(&mut self, dst: Ptr, bytes: usize) -> Result<(), DeviceError> {
        let stream = self.stream.clone();
        let (mem, off) = self.find(dst, bytes)?;
        stream.memset_zeros(&mut mem.slice_mut(off..off + bytes)).map_err(driver_err("cuMemsetD8Async"))
    }

    fn wants_cubin(&self) -> bool {
        true
    }

    fn load_module(&mut self, name: &str, image: Image<'_>) -> Result<ModuleId, DeviceError> {
        let image = match image {
            Image::Ptx(ptx) if ptx.contains('\0') => {
                return Err(DeviceError::Invalid(format!("{name}: PTX text contains a NUL byte")));
            }
            Image::Ptx(ptx) => cudarc::nvrtc::Ptx::from_src(ptx),
            Image::Cubin(bytes) => cudarc::nvrtc::Ptx::from_binary(bytes.to_vec()),
        };
        let m = self
            .ctx
            .load_module(image)
            .map_err(|e| DeviceError::Driver { call: "cuModuleLoadData", why: format!("{name}: {e}") })?;
        self.modules.push(m);
        Ok(ModuleId(self.modules.len() - 1))
    }

    fn function(&mut self, module: ModuleId, entry: &str) -> Result<FunctionId, DeviceError> {
        let m = self.modules.get(module.0).ok_or_else(|| DeviceError::Invalid(format!("no module {}", module.0)))?;
        if entry.contains('\0') {
            return Err(DeviceError::Invalid(format!("entry name {entry:?} contains a NUL byte")));
        }
        let f = m
            .load_function(entry)
            .map_err(|e| DeviceError::Driver { call: "cuModuleGetFunction", why: format!("{entry}: {e}") })?;
        let smem = f
            .get_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            .map_err(driver_err("cuFuncGetAttribute"))?;
        self.functions.push((f, smem.max(0) as u32));
        Ok(FunctionId(self.functions.len() - 1))
    }

    fn static_smem(&self, f: FunctionId) -> Result<u32, DeviceError> {
        Ok(self.function_of(f)?.1)
    }

    fn set_max_dynamic_smem(&mut self, f: FunctionId, bytes: u32) -> Result<(), DeviceError> {
        let (func, _) = self.function_of(f)?;
        func.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(driver_err("cuFuncSetAttribute"))
    }

    fn launch(&mut self, f: FunctionId, dims: Dims, args: &[Ptr]) -> Result<(), DeviceError> {
        let (func, _) = self.function_of(f)?;
        let mut b = self.stream.launch_builder(func);
        for a in args {
            b.arg(a);
        }
        let cfg = LaunchConfig {
            grid_dim: (dims.grid[0], dims.grid[1], dims.grid[2]),
            block_dim: (dims.block[0], dims.block[1], dims.block[2]),
            shared_mem_bytes: dims.dynamic_smem,
        };
        // SAFETY: every dsv3c entry point takes exactly its op's arguments, each a pointer (8 bytes,
        // passed here as the `u64` device address); the caller (`gpu::Gpu::launch`) gives one address
        // per argument, each inside an allocation of this device and checked against the Program's
        // arena sizes (`check_launch`) for the whole extent the kernel touches; the arenas outlive the
        // launch (they are freed only when this device is dropped, after a synchronize).
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(driver_err("cuLaunchKernel"))
    }

    fn event(&mut self) -> Result<EventId, DeviceError> {
        let e = self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(driver_err("cuEventCreate"))?;
        self.events.push(e);
        Ok(EventId(self.events.len() - 1))
    }

    fn record(&mut self, e: EventId) -> Result<(), DeviceError> {
        self.event_of(e)?.record(&self.stream).map_err(driver_err("cuEventRecord"))
    }

    fn elapsed(&mut self, start: EventId, end: EventId) -> Result<f64, DeviceError> {
        let ms = self.event_of(start)?.elapsed_ms(self.event_of(end)?).map_err(driver_err("cuEventElapsedTime"))?;
        Ok(ms as f64 * 1e-3)
    }

    fn begin_capture(&mut self) -> Result<(), DeviceError> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver_err("cuStreamBeginCapture"))
    }

    fn end_capture(&mut self) -> Result<GraphId, DeviceError> {
        let g = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(driver_err("cuStreamEndCapture"))?
            .ok_or_else(|| DeviceError::Invalid("the capture recorded no work".into()))?;
        self.graphs.push(g);
        Ok(GraphId(self.graphs.len() - 1))
    }

    fn replay(&mut self, g: GraphId) -> Result<(), DeviceError> {
        self.graphs
            .get(g.0)
            .ok_or_else(|| DeviceError::Invalid(format!("no graph {}", g.0)))?
            .launch()
            .map_err(driver_err("cuGraphLaunch"))
    }

    fn synchronize(&mut self) -> Result<(), DeviceError> {
        self.stream.synchronize().map_err(driver_err("cuStreamSynchronize"))
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        // Kernels still in flight may use the arenas: wait before cudarc frees them.
        let _ = self.stream.synchronize();
    }
}
