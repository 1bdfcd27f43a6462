//! The Program: the one contract between codegen (which writes it) and the backends (which run
//! it). A Program is specialized to one spec at one batch shape: every size is a constant.
//!
//! Memory is five flat byte arenas: parameters (the f32 master weights), their gradients (same
//! layout), the optimizer's moments — these three f32 — the compute copy of the weight matrices
//! (bf16 when the spec's `param` dtype is, element `i` the copy of parameter element `i`; empty
//! otherwise) and activations (the static memory plan: every tensor at a fixed byte offset,
//! sharing space by liveness). Every slice carries its storage dtype
//! ([`DType`]): f32, bf16, or i32 for integers (token ids, expert indices, permutations,
//! offsets). Kernels compute in f32 and convert on load and store, so every backend sees the
//! same bytes. Each op's [`signature`](crate::signature) says which dtypes each argument admits.
//!
//! A training step is four launch lists: `start` once (cast the weights' compute copy, zero the
//! gradients and the routing statistics), then `forward` and `backward` per micro-batch, then
//! `update` once (gradient norm, optimizer, balancing bias, and the weights' copy again). A
//! forward pass reads the copy: after the host writes parameters (an init, a load), run `start`
//! before `forward`. The host only writes tokens and the step's scalars and reads losses
//! and metrics: a backend runs the whole step.

use serde::{Deserialize, Serialize};

use crate::comm::{CommGroup, Place};

use crate::dtype::DType;
use crate::op::Op;

/// Why a backend could not do what it was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("{op}: {args} arguments, the op takes {arity}")]
    Arity { op: &'static str, args: usize, arity: usize },
    #[error("{op}: argument {arg} {slice:?} lies outside its arena ({arena} bytes)")]
    OutOfBounds { op: &'static str, arg: usize, slice: Slice, arena: usize },
    #[error("{op}: argument {arg} ({name}) is {dtype}, which a {kind:?} argument cannot be")]
    DType { op: &'static str, arg: usize, name: &'static str, dtype: DType, kind: crate::signature::Kind },
    #[error("{op}: argument {arg} ({name}) holds {len} elements, the op touches {need}")]
    Short { op: &'static str, arg: usize, name: &'static str, len: usize, need: usize },
    #[error("{op}: argument {out} (written) overlaps argument {other}")]
    Overlap { op: &'static str, out: usize, other: usize },
    #[error("{slice:?} lies outside its arena ({arena} bytes)")]
    Slice { slice: Slice, arena: usize },
    #[error("{slice:?} is not aligned to its {} bytes", slice.dtype.size())]
    Misaligned { slice: Slice },
    #[error("writing {slice:?} from {data} values")]
    Length { slice: Slice, data: usize },
    #[error("{op}: argument {arg} is {got}, the kernel was built for {want}")]
    KernelDType { op: &'static str, arg: usize, got: DType, want: DType },
    #[error("{0}")]
    Device(String),
}

/// What runs a Program: memory for its arenas and one kernel at a time over slices of them. The CPU
/// reference implements it (`cpu::Cpu`, which runs the kernel's op); the GPU backend (`gpu::Gpu`)
/// implements it over a device, running the kernel's device code. Every call is checked and
/// fallible: a bad slice or an overlap of a launch's outputs is an error, not a crash.
pub trait Backend {
    /// Runs `kernel` over `args` (in the order its op documents, stored in the kernel's dtypes).
    fn launch(&mut self, kernel: &Kernel, args: &[Slice]) -> Result<(), BackendError>;
    /// Runs one of a Program's launch lists over its kernels. A backend may record a list it has run
    /// before and replay the recording (the GPU's graphs); the default launches one by one.
    fn run_list(&mut self, kernels: &[Kernel], launches: &[Launch]) -> Result<(), BackendError> {
        launch_each(self, kernels, launches)
    }
    /// The values of a slice, decoded from its dtype.
    fn read(&mut self, s: Slice) -> Result<Vec<f32>, BackendError>;
    /// Overwrites a slice with `data` (as many values as the slice holds), stored in its dtype.
    fn write(&mut self, s: Slice, data: &[f32]) -> Result<(), BackendError>;
    /// Fills a slice with zeros.
    fn zero(&mut self, s: Slice) -> Result<(), BackendError>;
}

/// Checks one slice against the size of its arena (`arena` bytes): inside it, and aligned to its
/// element size.
pub fn check_slice(s: Slice, arena: usize) -> Result<(), BackendError> {
    if s.end() > arena {
        return Err(BackendError::Slice { slice: s, arena });
    }
    if !s.offset.is_multiple_of(s.dtype.size()) {
        return Err(BackendError::Misaligned { slice: s });
    }
    Ok(())
}

/// Checks one launch's arguments against an op and the arenas' sizes in bytes (`arena(space)`):
/// arity, bounds and alignment, each slice's dtype admitted by its argument's kind and at least as
/// long as what the op touches of it, and that no argument the op writes overlaps any other argument.
pub fn check_launch(op: &Op, args: &[Slice], arena: impl Fn(Space) -> usize) -> Result<(), BackendError> {
    let name = op.family();
    let sig = op.signature();
    if args.len() != sig.len() {
        return Err(BackendError::Arity { op: name, args: args.len(), arity: sig.len() });
    }
    for (i, (s, a)) in args.iter().zip(&sig).enumerate() {
        match check_slice(*s, arena(s.space)) {
            Err(BackendError::Slice { .. }) => {
                return Err(BackendError::OutOfBounds { op: name, arg: i, slice: *s, arena: arena(s.space) })
            }
            r => r?,
        }
        if !a.kind.admits(s.dtype) {
            return Err(BackendError::DType { op: name, arg: i, name: a.name, dtype: s.dtype, kind: a.kind });
        }
        if s.len < a.len {
            return Err(BackendError::Short { op: name, arg: i, name: a.name, len: s.len, need: a.len });
        }
    }
    for (o, _) in op.writes() {
        for (j, s) in args.iter().enumerate() {
            if j != o && s.overlaps(&args[o]) {
                return Err(BackendError::Overlap { op: name, out: o, other: j });
            }
        }
    }
    Ok(())
}

/// Launches `launches` on `b` one by one, a device's error prefixed with the launch's note.
pub fn launch_each<B: Backend + ?Sized>(
    b: &mut B,
    kernels: &[Kernel],
    launches: &[Launch],
) -> Result<(), BackendError> {
    for l in launches {
        let k =
            kernels.get(l.kernel).ok_or_else(|| BackendError::Device(format!("{}: no kernel {}", l.note, l.kernel)))?;
        b.launch(k, &l.args).map_err(|e| match e {
            BackendError::Device(m) => BackendError::Device(format!("{}: {m}", l.note)),
            e => e,
        })?;
    }
    Ok(())
}

/// [`check_launch`] for a kernel's op, and each slice of the dtype the kernel was built for.
pub fn check_kernel(k: &Kernel, args: &[Slice], arena: impl Fn(Space) -> usize) -> Result<(), BackendError> {
    check_launch(&k.op, args, arena)?;
    if let Some((arg, (s, &want))) = args.iter().zip(&k.dtypes).enumerate().find(|(_, (s, &d))| s.dtype != d) {
        return Err(BackendError::KernelDType { op: k.op.family(), arg, got: s.dtype, want });
    }
    if k.dtypes.len() != args.len() {
        return Err(BackendError::Arity { op: k.op.family(), args: k.dtypes.len(), arity: args.len() });
    }
    Ok(())
}

/// A training graph: the launch lists of a training step. A `Program` runs its lists; a generated
/// module (`dsv3c compile`, `model!`) runs straight-line code.
pub trait Graph {
    /// Once per optimizer step, before the first micro-batch — and before any forward after the
    /// parameters changed (an update, a load): make the weights' compute copies from the f32
    /// masters, zero the gradients and statistics.
    fn start(&self, b: &mut dyn Backend) -> Result<(), BackendError>;
    fn forward(&self, b: &mut dyn Backend) -> Result<(), BackendError>;
    fn backward(&self, b: &mut dyn Backend) -> Result<(), BackendError>;
    /// Once per optimizer step, after the last micro-batch: norm, optimizer, balancing.
    fn update(&self, b: &mut dyn Backend) -> Result<(), BackendError>;
}

impl Graph for Program {
    fn start(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
        self.run(&self.start, b)
    }
    fn forward(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
        self.run(&self.forward, b)
    }
    fn backward(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
        self.run(&self.backward, b)
    }
    fn update(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
        self.run(&self.update, b)
    }
}

/// Which arena a slice lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Space {
    /// Parameters (and non-trainable buffers such as the router bias).
    Param,
    /// Gradients of the parameters, laid out like the parameters.
    Grad,
    /// The optimizer's moments: `m` at `[0, param_len)`, AdamW's `v` at `[param_len, 2·param_len)`.
    Optim,
    /// The compute copy of the weight matrices (decayed and embedding groups), in the spec's
    /// `param` dtype, laid out element for element like the start of the parameter arena.
    Weights,
    /// Activations and their gradients, and the step's scalars and statistics.
    Act,
}

/// A contiguous range of one arena: `len` elements of `dtype` from byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub space: Space,
    /// Byte offset into the arena.
    pub offset: usize,
    /// Elements.
    pub len: usize,
    pub dtype: DType,
}

impl Slice {
    /// `len` f32 elements of an f32 arena from element `at` (parameters, gradients, moments).
    pub const fn f32(space: Space, at: usize, len: usize) -> Slice {
        Slice { space, offset: at * 4, len, dtype: DType::F32 }
    }
    /// `len` f32s of the parameter arena from element `at`.
    pub const fn param(at: usize, len: usize) -> Slice {
        Slice::f32(Space::Param, at, len)
    }
    /// `len` f32s of the gradient arena from element `at`.
    pub const fn grad(at: usize, len: usize) -> Slice {
        Slice::f32(Space::Grad, at, len)
    }
    /// `len` f32s of the optimizer-state arena from element `at`.
    pub const fn optim(at: usize, len: usize) -> Slice {
        Slice::f32(Space::Optim, at, len)
    }
    /// `len` moments of the optimizer-state arena, stored as `dtype`, from element `at`.
    pub const fn moments(at: usize, len: usize, dtype: DType) -> Slice {
        Slice { space: Space::Optim, offset: at * dtype.size(), len, dtype }
    }
    /// `len` elements of `dtype` of the activation arena from byte `offset`.
    pub const fn act(offset: usize, len: usize, dtype: DType) -> Slice {
        Slice { space: Space::Act, offset, len, dtype }
    }

    /// Bytes the slice covers.
    pub const fn bytes(&self) -> usize {
        self.len * self.dtype.size()
    }

    /// The byte offset one past the slice.
    pub const fn end(&self) -> usize {
        self.offset + self.bytes()
    }

    /// Do two slices share any byte?
    pub fn overlaps(&self, other: &Slice) -> bool {
        self.space == other.space && self.offset < other.end() && other.offset < self.end()
    }
}

/// How a parameter is initialized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Normal { std: f32 },
    Ones,
    Zeros,
    Const(f32),
}

/// Optimizer treatment of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamGroup {
    /// Matrices: weight decay applies.
    Decay,
    /// Norm weights, biases, scalars: no weight decay.
    NoDecay,
    /// Embedding and head matrices: no weight decay unless asked.
    Embedding,
    /// Not trained by the optimizer (the router's correction bias, updated by balancing).
    Frozen,
}

/// One parameter tensor (f32 master weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Hugging Face checkpoint name (`model.layers.3.mlp.experts.7.gate_proj.weight`).
    pub name: String,
    pub shape: Vec<usize>,
    /// Element offset into the f32 parameter arena.
    pub offset: usize,
    pub init: Init,
    pub group: ParamGroup,
}

impl Param {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The parameter's range of an f32 arena laid out like the parameters (its values or gradient).
    pub fn slice(&self, space: Space) -> Slice {
        Slice::f32(space, self.offset, self.len())
    }
}

/// One activation tensor of the static plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub name: String,
    /// Byte offset into the activation arena.
    pub offset: usize,
    /// Elements.
    pub len: usize,
    pub dtype: DType,
    /// Index of the first and last launch (over start, forward, backward, update) that touch it.
    pub live: (usize, usize),
}

/// A unique specialized kernel: its op with every constant baked in, the storage dtype of each
/// argument (in launch order) that its launches pass, and — when the compiler could write it — the
/// CUDA code a GPU backend runs for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub op: Op,
    pub dtypes: Vec<DType>,
    /// The device code, or why there is none (an op the CUDA back end does not support at these
    /// sizes, or a Program built without it).
    pub device: Result<DeviceCode, String>,
}

/// What a GPU needs to run one kernel, all computed by the compiler: the CUDA C++ source (NVRTC
/// compiles it) and its entry points, which run in order, each over the op's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCode {
    /// File stem (`fp8s_gemm_m4096_n2048_k2048_nt_…`).
    pub stem: String,
    pub source: String,
    pub entries: Vec<DeviceEntry>,
}

/// One `extern "C"` entry point and its launch geometry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub name: String,
    pub grid: [u64; 3],
    /// Threads per block (1-D blocks).
    pub block: u32,
    /// Dynamic shared memory the launch passes, in bytes.
    pub dynamic_smem: u32,
    /// Static shared memory the kernel declares, in bytes (the NVRTC gate checks it with ptxas).
    pub static_smem: u32,
}

/// Shared memory a block may use without opting in (`cudaFuncAttributeMaxDynamicSharedMemorySize`).
pub const SMEM_WITHOUT_OPT_IN: u32 = 48 * 1024;

impl DeviceEntry {
    /// Does the launch need the shared-memory opt-in (more than 48 KB per block)?
    pub fn needs_opt_in(&self) -> bool {
        self.static_smem + self.dynamic_smem > SMEM_WITHOUT_OPT_IN
    }
}

/// The `device` of a kernel no back end has written code for.
pub const NO_DEVICE_CODE: &str = "no device code was compiled into this Program";

impl Kernel {
    /// The kernel of `op` for launches whose arguments are stored as `dtypes`, without device code.
    pub fn new(op: Op, dtypes: Vec<DType>) -> Kernel {
        Kernel { op, dtypes, device: Err(NO_DEVICE_CODE.into()) }
    }

    /// The kernel of `op` over the reference storage: f32, and i32 for integer arguments.
    pub fn reference(op: Op) -> Kernel {
        let dtypes = op.signature().iter().map(|a| a.kind.reference()).collect();
        Kernel::new(op, dtypes)
    }

    /// Does it use the reference storage (so its file and name are those of the op alone)?
    pub fn is_reference(&self) -> bool {
        self.op.signature().iter().map(|a| a.kind.reference()).eq(self.dtypes.iter().copied())
    }
}

/// One kernel launch: which kernel, over which slices (in the order the op documents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Launch {
    pub kernel: usize,
    pub args: Vec<Slice>,
    /// The layer and op this launch runs, for generated code and traces.
    pub note: String,
}

/// Where a run's inputs go and its outputs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Io {
    /// Token ids `[batch, seq]`.
    pub tokens: Slice,
    /// The total loss (1 element): main cross-entropy + MTP + balance terms.
    pub loss: Slice,
    /// The main next-token cross-entropy alone (1 element).
    pub main_loss: Slice,
    /// Each MTP module's cross-entropy (1 element each).
    pub mtp_losses: Vec<Slice>,
    /// Each MoE layer's chosen experts `[tokens, top_k]` (for balancing and metrics).
    pub expert_choices: Vec<Slice>,
    /// Each MoE layer's router scores `[tokens, experts]` (for metrics).
    pub expert_scores: Vec<Slice>,
    /// The step's scalars, written by the host before `start` (layout: `op::scalars`).
    pub scalars: Slice,
    /// The global norm of the accumulated (not yet averaged) gradients, after `update` (1 element).
    pub grad_norm: Slice,
    /// Each MoE layer's routing statistics over the step (`Op::ExpertStats`), after the last backward.
    pub expert_stats: Vec<Slice>,
}

/// A compiled training program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub batch: usize,
    pub seq: usize,
    pub params: Vec<Param>,
    /// f32 elements of the parameters' layout: of the gradient arena, and of the parameter arena
    /// unless a ZeRO-1 rank holds sharded masters (`Rank::masters`).
    pub param_len: usize,
    pub buffers: Vec<Buffer>,
    /// Bytes of the activation arena.
    pub act_bytes: usize,
    /// Elements of the optimizer-state arena: the moments, in `moments_dtype` (f32, or bf16 where
    /// the optimizer keeps bf16 moments).
    pub optim_len: usize,
    /// Bytes of the weights' compute copy (0: the GEMMs read the f32 parameters).
    pub weight_bytes: usize,
    pub kernels: Vec<Kernel>,
    pub start: Vec<Launch>,
    pub forward: Vec<Launch>,
    pub backward: Vec<Launch>,
    pub update: Vec<Launch>,
    pub io: Io,
    /// A decode program's own lists and slices (none for a training program).
    #[serde(default)]
    pub decode: Option<Decode>,
    /// Where a per-rank program sits in its parallel job (none: a single-device program).
    #[serde(default)]
    pub rank: Option<Rank>,
}

/// A per-rank program's place in a parallel job ([`crate::comm::mesh`]): after the backward its
/// `update` sums the gradients over the ranks that hold the same parameters (`Op::AllReduce`
/// over the data-parallel group, or the expert-data-parallel group for routed experts) and the
/// routing statistics over the stage's data-parallel ranks; under ZeRO-1 each rank then updates
/// its shard of each region of the trained parameters, holding only that shard's moments, and
/// gathers the others' (`Op::AllGather`). Its MoE layers are `moe_layers` of the model's
/// `moe_total` (a pipeline stage holds some of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rank {
    pub place: Place,
    /// ZeRO-1's shards of the optimizer state (none when the moments are replicated).
    pub zero: Vec<ZeroShard>,
    /// The model-wide index of each of this program's MoE layers (`io.expert_stats` order).
    pub moe_layers: Vec<usize>,
    /// MoE layers of the whole model.
    pub moe_total: usize,
    /// Routed experts of the model (each MoE layer's statistics are `experts + 2` values).
    pub experts: usize,
    /// MTP modules of the model (each stage's host sums carry as many MTP losses).
    pub mtp_depth: usize,
    /// The routed experts this rank holds: `[lo, hi)` of the parameter arena (empty without
    /// expert parallelism, where they are parameters like the others).
    pub expert_params: (usize, usize),
    /// Parameters this rank holds a copy of that another rank's gradient norm counts (the last
    /// stage's copy of the token embedding): `[lo, hi)` of the parameter arena.
    #[serde(default)]
    pub copies: Vec<(usize, usize)>,
    /// Each MoE layer's rows dropped past its experts' capacity over the step (1 element each;
    /// expert parallelism).
    #[serde(default)]
    pub expert_dropped: Vec<Slice>,
    /// A pipeline stage's micro-batch slots: the forward and backward of each micro-batch in
    /// flight under the 1F1B schedule, each over its own activations (slot 0's lists are the
    /// program's `forward` and `backward`). Empty without pipeline parallelism.
    #[serde(default)]
    pub slots: Vec<Slot>,
    /// ZeRO-1's sharded master weights (none: the parameter arena holds every parameter).
    #[serde(default)]
    pub masters: Option<Masters>,
}

/// One in-flight micro-batch of a pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub forward: Vec<Launch>,
    pub backward: Vec<Launch>,
    /// Where the micro-batch's token ids go, when the stage reads them (the first stage embeds
    /// them, the last scores against them).
    pub tokens: Option<Slice>,
    /// The stage's share of the micro-batch's total loss (its MoE layers' balance terms; the last
    /// stage's also its cross-entropies).
    pub loss: Slice,
}

impl Rank {
    /// The rank as JSON (the generated graph carries it so).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A rank from [`Rank::to_json`]'s text.
    pub fn from_json(text: &str) -> Rank {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("a generated graph's rank does not parse: {e}"))
    }
}

/// The trained elements `[lo, hi)` of the parameter arena whose moments a ZeRO-1 rank holds: its
/// shard ([`crate::comm::shard`] by its index in `group`) of a region that `group`'s ranks hold
/// alike. Moment `k` (`m`, then AdamW's `v`) of element `lo + i` lies at `at + k·stride + i` of
/// the optimizer arena, `stride` the region's largest shard (every rank's arena is the same size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZeroShard {
    pub lo: usize,
    pub hi: usize,
    pub stride: usize,
    /// Moments per element: 2 (AdamW), 1 (Lion).
    pub moments: usize,
    /// Where the shard's moments start in the optimizer arena.
    #[serde(default)]
    pub at: usize,
    /// The region `[start, end)` of the parameter arena it is a shard of.
    pub region: (usize, usize),
    /// The ranks that share the region, each holding one shard.
    pub group: CommGroup,
}

impl ZeroShard {
    /// This shard of a single-device optimizer arena (`moments × param_len`, moment `k` of
    /// element `e` at `k·param_len + e`), written into the rank's arena `out`.
    pub fn take(&self, full: &[f32], param_len: usize, out: &mut [f32]) {
        for k in 0..self.moments {
            let src = &full[k * param_len + self.lo..k * param_len + self.hi];
            let at = self.at + k * self.stride;
            out[at..at + src.len()].copy_from_slice(src);
        }
    }

    /// The rank's shard placed into the region's moments (`moments × region length`, zeros
    /// elsewhere), for a sum over the group to assemble.
    pub fn place(&self, arena: &[f32]) -> Vec<f32> {
        let len = self.region.1 - self.region.0;
        let mut out = vec![0.0; self.moments * len];
        let n = self.hi - self.lo;
        for k in 0..self.moments {
            let to = k * len + self.lo - self.region.0;
            out[to..to + n].copy_from_slice(&arena[self.at + k * self.stride..self.at + k * self.stride + n]);
        }
        out
    }

    /// The region's assembled moments (what [`ZeroShard::place`] summed over the group gives)
    /// written into a single-device arena laid out like this program's parameters.
    pub fn unplace(&self, region: &[f32], param_len: usize, full: &mut [f32]) {
        let len = self.region.1 - self.region.0;
        for k in 0..self.moments {
            full[k * param_len + self.region.0..k * param_len + self.region.1]
                .copy_from_slice(&region[k * len..(k + 1) * len]);
        }
    }
}

/// The master weights a ZeRO-1 rank holds when the forward and backward read only the weights'
/// compute copies (bf16 and E4M3): of the matrices (`[0, copied)` of the parameters' layout) only
/// the rank's ZeRO-1 shards, which it alone updates; the rest — norms' gains, biases, the routing
/// bias, which the forward reads as they are — whole. `start` gathers the shards whole into the
/// gradient arena (laid out as the parameters, and free until `start` zeroes it), makes the
/// compute copies from it and writes the rest back; the host reads each region's masters from the
/// rank that updated them.
///
/// The parameter arena is `pieces` one after the other: `(lo, hi, at)` puts elements `[lo, hi)`
/// of the parameters' layout (what `Param::offset` and the gradient arena index) at element `at`
/// of the arena, in order of `lo`, pieces that touch in both merged — so that a shard reaching
/// past `copied` is one contiguous range (its optimizer launch one slice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masters {
    pub pieces: Vec<(usize, usize, usize)>,
    /// f32 elements of the parameter arena.
    pub len: usize,
}

impl Masters {
    /// The layout of a rank holding, of `[0, copied)`, its `shards` (`[lo, hi)` in order) and all
    /// of `[copied, param_len)`.
    pub fn new(shards: &[(usize, usize)], copied: usize, param_len: usize) -> Masters {
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        let mut at = 0;
        let mut push = |lo: usize, hi: usize| {
            if hi <= lo {
                return;
            }
            match pieces.last_mut() {
                Some(last) if last.1 == lo => last.1 = hi,
                _ => pieces.push((lo, hi, at)),
            }
            at += hi - lo;
        };
        for &(lo, hi) in shards {
            push(lo, hi.min(copied));
        }
        push(copied, param_len);
        Masters { pieces, len: at }
    }

    /// Where elements `[lo, lo + len)` of the parameters' layout lie in the arena, if it holds them.
    pub fn find(&self, lo: usize, len: usize) -> Option<usize> {
        let p = self.pieces.iter().find(|p| p.0 <= lo && lo + len <= p.1)?;
        Some(p.2 + lo - p.0)
    }

    /// The element of the parameters' layout at element `at` of the arena.
    pub fn element(&self, at: usize) -> Option<usize> {
        self.pieces.iter().find(|p| (p.2..p.2 + p.1 - p.0).contains(&at)).map(|p| p.0 + at - p.2)
    }

    /// The arena this rank holds of parameters laid out whole (`full`: `param_len` elements).
    pub fn take(&self, full: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.len];
        for &(lo, hi, at) in &self.pieces {
            out[at..at + hi - lo].copy_from_slice(&full[lo..hi]);
        }
        out
    }

    /// The arena's elements written at their places in parameters laid out whole.
    pub fn place(&self, arena: &[f32], full: &mut [f32]) {
        for &(lo, hi, at) in &self.pieces {
            full[lo..hi].copy_from_slice(&arena[at..at + hi - lo]);
        }
    }
}

/// What a decode program adds: it runs `start` once after the parameters are written (the
/// weights' compute copy), then `forward` per step — `per_seq` new tokens of each of `batch`
/// sequences, read from `io.tokens` at the positions the host writes in `positions`, their
/// latents appended to the cache, their logits left in `logits` — and, with an MTP draft, `draft`
/// after it: the MTP module over the same positions, given each position's next token in
/// `next_tokens`, leaving the draft's logits in `draft_logits`.
///
/// The cache lies at the start of the activation arena, laid out from the spec, the batch, the
/// cache length and format alone: decode programs of one model with other `per_seq` share it
/// (and the parameter and weights arenas) on one backend whose activation arena is the largest
/// of theirs — a prefill of the whole prompt, then one-token decode steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decode {
    pub per_seq: usize,
    /// Cache rows per sequence (positions `0..cache_len`).
    pub cache_len: usize,
    /// The attention of `forward`: absorbed over the cache, or (`false`) MLA's training form
    /// within the new tokens — exact only for a prefill from position 0.
    pub absorbed: bool,
    /// i32 `[batch]`: each sequence's position of its first new token (its cached tokens).
    pub positions: Slice,
    /// `[batch · per_seq, vocab]`, or `[batch, vocab]` with `logit_rows`.
    pub logits: Slice,
    /// i32 `[batch]`: which new token of each sequence (a row of the step's `batch · per_seq`) the
    /// logits are for, when the program computes one row per sequence (a prefill); the draft's too.
    #[serde(default)]
    pub logit_rows: Option<Slice>,
    /// Each layer's cache (the main layers, then the MTP module's when the draft is compiled).
    pub caches: Vec<LayerCache>,
    pub draft: Vec<Launch>,
    /// i32 `[batch · per_seq]` (with a draft).
    pub next_tokens: Option<Slice>,
    /// `[batch · per_seq, vocab]` (with a draft).
    pub draft_logits: Option<Slice>,
}

/// One layer's latent cache: `[batch, cache_len, kv_lora_rank]` (e4m3 with f32 `scales`
/// `[batch, cache_len, kv_lora_rank / 128]` in FP8) and the roped key `[batch, cache_len,
/// qk_rope_head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCache {
    pub latent: Slice,
    pub scales: Option<Slice>,
    pub rope: Slice,
}

impl LayerCache {
    /// The slices in the order the cache ops take them.
    pub fn slices(&self) -> Vec<Slice> {
        [Some(self.latent), self.scales, Some(self.rope)].into_iter().flatten().collect()
    }
    pub fn bytes(&self) -> usize {
        self.slices().iter().map(Slice::bytes).sum()
    }
}

/// The bytes a Program's arenas take on one device, by what they hold (`Program::memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBytes {
    /// The f32 parameters (master weights).
    pub master: usize,
    /// The weights' compute copy (bf16; 0 when the GEMMs read the masters).
    pub weights: usize,
    pub gradients: usize,
    pub optimizer: usize,
    /// The activation arena (the static plan's peak).
    pub activations: usize,
}

impl MemoryBytes {
    pub fn total(&self) -> usize {
        self.master + self.weights + self.gradients + self.optimizer + self.activations
    }
}

/// A Program that breaks an invariant the backends rely on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProgramError {
    #[error("{phase}[{index}] ({note}): no kernel {kernel}")]
    NoKernel { phase: &'static str, index: usize, note: String, kernel: usize },
    #[error("{phase}[{index}] ({note}): {source}")]
    Launch { phase: &'static str, index: usize, note: String, source: BackendError },
    #[error("{phase}[{index}] ({note}): {slice:?} of the parameters' layout, which this rank holds only shards of")]
    Unheld { phase: &'static str, index: usize, note: String, slice: Slice },
}

impl Program {
    /// Runs `launches` (one of this program's lists) on a backend.
    pub fn run(&self, launches: &[Launch], b: &mut dyn Backend) -> Result<(), BackendError> {
        b.run_list(&self.kernels, launches)
    }

    /// The lists of a step, named, in schedule order: start, forward, backward, update, and a
    /// decode program's draft.
    pub fn phases(&self) -> Vec<(&'static str, &[Launch])> {
        let mut v: Vec<(&'static str, &[Launch])> = vec![
            ("start", &self.start),
            ("forward", &self.forward),
            ("backward", &self.backward),
            ("update", &self.update),
        ];
        if let Some(d) = &self.decode {
            v.push(("draft", &d.draft));
        }
        for s in self.slots().iter().skip(1) {
            v.push(("forward (another micro-batch slot)", &s.forward));
            v.push(("backward (another micro-batch slot)", &s.backward));
        }
        v
    }

    /// A pipeline stage's micro-batch slots (empty without pipeline parallelism).
    pub fn slots(&self) -> &[Slot] {
        self.rank.as_ref().map_or(&[][..], |r| &r.slots[..])
    }

    /// Every launch in schedule order (start, forward, backward, update, draft, other slots).
    pub fn launches(&self) -> impl Iterator<Item = &Launch> {
        let draft = self.decode.as_ref().map_or(&[][..], |d| &d.draft[..]);
        let slots = self.slots().iter().skip(1).flat_map(|s| s.forward.iter().chain(&s.backward));
        self.start.iter().chain(&self.forward).chain(&self.backward).chain(&self.update).chain(draft).chain(slots)
    }

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Bytes of the arena of `space`.
    pub fn arena_bytes(&self, space: Space) -> usize {
        match space {
            Space::Param => self.masters().map_or(self.param_len, |m| m.len) * 4,
            Space::Grad => self.param_len * 4,
            Space::Optim => self.optim_len * self.moments_dtype().size(),
            Space::Weights => self.weight_bytes,
            Space::Act => self.act_bytes,
        }
    }

    /// The bytes of each arena: what one device holds to run this program.
    pub fn memory(&self) -> MemoryBytes {
        MemoryBytes {
            master: self.arena_bytes(Space::Param),
            weights: self.arena_bytes(Space::Weights),
            gradients: self.arena_bytes(Space::Grad),
            optimizer: self.arena_bytes(Space::Optim),
            activations: self.arena_bytes(Space::Act),
        }
    }

    /// ZeRO-1's sharded masters, when this rank holds them so.
    pub fn masters(&self) -> Option<&Masters> {
        self.rank.as_ref().and_then(|r| r.masters.as_ref())
    }

    /// The parameter arena this program's backend holds, of parameters laid out whole (`full`:
    /// `param_len` elements): all of it, or a ZeRO-1 rank's sharded masters.
    pub fn param_arena(&self, full: Vec<f32>) -> Vec<f32> {
        match self.masters() {
            Some(m) => m.take(&full),
            None => full,
        }
    }

    /// The parameter holding element `at` of the parameter arena (or of an arena laid out like
    /// it: gradients, a moment, the compute copy), if any.
    pub fn param_at(&self, at: usize) -> Option<&Param> {
        self.params.iter().find(|x| (x.offset..x.offset + x.len()).contains(&at))
    }

    /// The storage of the optimizer's moments: bf16 when its update keeps them so (DeepSeek-V3's
    /// recipe), else f32.
    pub fn moments_dtype(&self) -> DType {
        let bf16 = self.kernels.iter().any(|k| matches!(&k.op, Op::Optimizer(u) if u.bf16_moments));
        if bf16 {
            DType::Bf16
        } else {
            DType::F32
        }
    }

    /// The whole of an arena of the parameters' layout (parameters, gradients: f32) or of the
    /// moments (in their dtype), as one slice.
    pub fn whole(&self, space: Space) -> Slice {
        match space {
            Space::Optim => Slice { space, offset: 0, len: self.optim_len, dtype: self.moments_dtype() },
            _ => Slice::f32(space, 0, self.arena_bytes(space) / 4),
        }
    }

    /// Checks the invariants the backends rely on, for every launch: a kernel, the op's arity,
    /// every slice inside its arena, aligned, of a dtype its argument admits and the kernel was
    /// built for, and no written argument overlapping another argument.
    pub fn check(&self) -> Result<(), ProgramError> {
        for (phase, launches) in self.phases() {
            for (index, l) in launches.iter().enumerate() {
                let note = || l.note.clone();
                let k = self.kernels.get(l.kernel).ok_or_else(|| ProgramError::NoKernel {
                    phase,
                    index,
                    note: note(),
                    kernel: l.kernel,
                })?;
                check_kernel(k, &l.args, |s| self.arena_bytes(s)).map_err(|source| ProgramError::Launch {
                    phase,
                    index,
                    note: note(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}
