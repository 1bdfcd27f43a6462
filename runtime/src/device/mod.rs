//! The seam between the GPU backend and what runs its kernels: a [`Device`] allocates memory, copies
//! bytes in and out, loads PTX modules and looks up their functions, raises a function's dynamic
//! shared-memory limit, launches a function over a grid with pointer arguments, records events for
//! timing, records a list of launches as a graph and replays it, and synchronizes. Two implement it:
//! [`cuda::Cuda`], NVIDIA's driver through cudarc (loaded at run time, so a machine without it gets a
//! typed error), and [`sim::Sim`], the PTX emulator of `dsv3c-ptx` with its sanitizer. The backend
//! above it (`gpu::Gpu`) is the same code on both: CI runs every line of it but the driver calls.

pub mod cuda;
pub mod sim;

use std::fmt;

/// What a module is loaded from.
#[derive(Debug, Clone, Copy)]
pub enum Image<'a> {
    /// PTX text (the emulator's input; a driver JIT-compiles it).
    Ptx(&'a str),
    /// A cubin for the device's architecture (SASS; a driver loads it as it is).
    Cubin(&'a [u8]),
}

/// A device address: an allocation's base plus a byte offset.
pub type Ptr = u64;

/// A loaded module (an index into the device's modules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleId(pub usize);

/// A function of a loaded module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FunctionId(pub usize);

/// A timing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId(pub usize);

/// A recorded list of launches that replays as one submission (a CUDA graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphId(pub usize);

/// One launch's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory, in bytes.
    pub dynamic_smem: u32,
}

/// Why a device call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// No driver library on this machine.
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    /// The driver loaded but no device answered.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A driver call failed.
    #[error("CUDA driver: {call}: {why}")]
    Driver { call: &'static str, why: String },
    /// The emulator refused or stopped a launch (an unknown instruction, a limit, a hang).
    #[error("emulator: {0}")]
    Emulator(String),
    /// The emulator's sanitizer found a memory or synchronization error in a kernel.
    #[error("sanitizer: {kernel}: {findings} finding(s); first: {first}")]
    Sanitizer { kernel: String, findings: usize, first: String },
    /// An address or size outside every allocation, or a handle this device never gave out.
    #[error("{0}")]
    Invalid(String),
}

/// What runs kernels. Calls are ordered as issued (one stream); copies out of the device wait for the
/// work before them.
pub trait Device {
    /// The device in words (`NVIDIA H100 80GB HBM3, sm_90, driver 12.8`, `PTX emulator (…)`).
    fn describe(&self) -> String;
    /// The architecture the device's PTX is compiled for (`sm_90a`).
    fn arch(&self) -> String;
    /// What besides the source and NVRTC decides the PTX a device accepts (its driver version), for
    /// the compile cache's key.
    fn driver(&self) -> String;
    /// A new zero-filled allocation of `bytes` bytes (`name` for messages).
    fn alloc(&mut self, name: &str, bytes: usize) -> Result<Ptr, DeviceError>;
    /// Frees the allocation at `base` (an address [`Device::alloc`] returned), after the work issued.
    fn free(&mut self, base: Ptr) -> Result<(), DeviceError>;
    /// Copies `data` to `dst`.
    fn write(&mut self, dst: Ptr, data: &[u8]) -> Result<(), DeviceError>;
    /// Copies `out.len()` bytes from `src`, after the work issued before.
    fn read(&mut self, src: Ptr, out: &mut [u8]) -> Result<(), DeviceError>;
    /// Zeroes `bytes` bytes at `dst`.
    fn zero(&mut self, dst: Ptr, bytes: usize) -> Result<(), DeviceError>;
    /// Does it load cubins (a GPU: no PTX JIT, so an NVRTC newer than the driver works), or PTX?
    fn wants_cubin(&self) -> bool;
    /// Loads a module (`name` for messages).
    fn load_module(&mut self, name: &str, image: Image<'_>) -> Result<ModuleId, DeviceError>;
    /// The entry point `entry` of a loaded module.
    fn function(&mut self, module: ModuleId, entry: &str) -> Result<FunctionId, DeviceError>;
    /// Static shared memory the function declares, in bytes.
    fn static_smem(&self, f: FunctionId) -> Result<u32, DeviceError>;
    /// Lets launches of `f` pass up to `bytes` of dynamic shared memory (above 48 KB a launch must
    /// opt in: `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
    fn set_max_dynamic_smem(&mut self, f: FunctionId, bytes: u32) -> Result<(), DeviceError>;
    /// Launches `f` with pointer arguments `args` (the parameters of every dsv3c kernel are pointers).
    fn launch(&mut self, f: FunctionId, dims: Dims, args: &[Ptr]) -> Result<(), DeviceError>;
    /// A new timing event.
    fn event(&mut self) -> Result<EventId, DeviceError>;
    /// Records `e` after the work issued so far.
    fn record(&mut self, e: EventId) -> Result<(), DeviceError>;
    /// Seconds between two recorded events (waits for the later).
    fn elapsed(&mut self, start: EventId, end: EventId) -> Result<f64, DeviceError>;
    /// Starts recording launches into a graph instead of running them.
    fn begin_capture(&mut self) -> Result<(), DeviceError>;
    /// Ends the recording begun by [`Device::begin_capture`]; the launches have not run.
    fn end_capture(&mut self) -> Result<GraphId, DeviceError>;
    /// Runs a recorded graph's launches.
    fn replay(&mut self, g: GraphId) -> Result<(), DeviceError>;
    /// Waits for all issued work; reports an error a kernel raised.
    fn synchronize(&mut self) -> Result<(), DeviceError>;
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [gx, gy, gz] = self.grid;
        let [bx, by, bz] = self.block;
        write!(f, "grid ({gx}, {gy}, {gz}) x block ({bx}, {by}, {bz}), {} B dynamic shared memory", self.dynamic_smem)
    }
}

/// Does a CUDA driver load and a device answer? `Err` says why not.
pub fn cuda_available() -> Result<(), DeviceError> {
    cuda::probe().map(|_| ())
}
