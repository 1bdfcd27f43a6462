//! The graph builder: virtual tensors, parameters, launches, and the tape of backward emitters.
//!
//! Forward code calls ops on virtual tensors; each differentiable op also pushes a closure onto
//! the tape that emits its backward ops (hand-derived, op by op). `backward()` runs the tape in
//! reverse. Gradient tensors are made on first use and zeroed right there, so every backward op
//! can accumulate. The training step's own launches (`step`) go into the start and update phases.
//! The planner (`plan`) then gives every virtual tensor its arena offset.

use std::collections::HashMap;

use dsv3c_runtime::op::{Op, Quant, Scaling};
use dsv3c_runtime::program::{Init, ParamGroup, Slice};
use dsv3c_runtime::signature::Role;
use dsv3c_runtime::DType;

/// A virtual activation tensor.
pub type Tid = usize;

/// A launch argument before planning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A whole activation tensor.
    T(Tid),
    /// Elements `[off, off + len)` of an activation tensor.
    Part { t: Tid, off: usize, len: usize },
    /// Elements `[off, off + len)` of a parameter.
    P { param: usize, off: usize, len: usize },
    /// The same range of the parameter's gradient.
    G { param: usize, off: usize, len: usize },
    /// The FP8 copy (e4m3) of `count` consecutive weight parameters from `param`, or (`scales`)
    /// their blocks' scales: quantized once per step by the step's launches (`step`).
    Fp8 { param: usize, count: usize, scales: bool },
    /// A slice of an arena whose layout is already fixed (the parameter, gradient and optimizer
    /// arenas, once `Builder::lay_out_params` has run).
    Raw(Slice),
}

impl Arg {
    /// The activation tensor the argument is (part of).
    pub fn tensor(&self) -> Option<Tid> {
        match *self {
            Arg::T(t) | Arg::Part { t, .. } => Some(t),
            _ => None,
        }
    }
}

/// A weight matrix some FP8 GEMM reads quantized: its parameter and shape `[rows, cols]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Weight {
    pub param: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Where one weight's FP8 copy lives in the weights arena: its e4m3 bytes and its f32 block
/// scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Copy {
    pub q: Slice,
    pub scales: Slice,
}

/// The bf16 compute copy of the parameter elements `[from, from + slice.len)`, element for
/// element, that real-valued reads of those weights go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightsCopy {
    pub from: usize,
    pub slice: Slice,
}

/// Which launch list of a training step a launch goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Once per step, before the first micro-batch (and before any forward after the parameters
    /// changed).
    Start,
    #[default]
    Forward,
    Backward,
    /// Once per step, after the last micro-batch.
    Update,
    /// A decode program's MTP draft, after its forward.
    Draft,
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub len: usize,
}

#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub group: ParamGroup,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Index into `Builder::ops` (the planner pairs it with its arguments' dtypes into a kernel).
    pub kernel: usize,
    pub args: Vec<Arg>,
    pub note: String,
}

/// A backward emitter recorded by a forward op.
pub type Emitter = Box<dyn FnOnce(&mut Builder)>;

#[derive(Default)]
pub struct Builder {
    pub tensors: Vec<TensorInfo>,
    pub params: Vec<ParamInfo>,
    /// The distinct ops launched, in order of first emission.
    pub ops: Vec<Op>,
    kernel_index: HashMap<String, usize>,
    pub start: Vec<Step>,
    pub forward: Vec<Step>,
    pub backward: Vec<Step>,
    pub update: Vec<Step>,
    pub draft: Vec<Step>,
    /// A pipeline stage's builds: each in-flight micro-batch's forward and backward lists.
    pub slots: Vec<(Vec<Step>, Vec<Step>)>,
    /// Tensors whose storage dtype is fixed by the program rather than by their uses (a decode
    /// program's cache).
    pub pinned: HashMap<Tid, DType>,
    tape: Vec<Emitter>,
    grads: HashMap<Tid, Tid>,
    /// The list launches go into.
    pub phase: Phase,
    /// Each parameter's offset in the parameter arena, once laid out.
    pub param_offsets: Vec<usize>,
    /// Layer/op context prefixed to launch notes.
    pub context: String,
    /// The compute copy of the weight matrices (decayed and embedding groups) not read in FP8,
    /// that real-valued reads go to (none: they read the f32 parameters).
    pub weights_copy: Option<WeightsCopy>,
    /// The weights FP8 GEMMs read quantized, in order of first use.
    pub fp8_weights: Vec<Fp8Weight>,
    /// Each of those weights' FP8 copy, by parameter, once laid out (`step`).
    pub fp8_copies: HashMap<usize, Fp8Copy>,
    /// Activations already quantized in this phase: `(tensor, scaling) → (e4m3, scales)`,
    /// forgotten when a launch writes the tensor.
    quantized: HashMap<(Tid, Scaling), (Tid, Tid)>,
    /// The storage formats GEMMs emulate (from the spec's precision).
    pub precision: PrecisionPolicy,
    /// Each parameter's index by name: a pipeline stage builds its layers once per in-flight
    /// micro-batch, over the same parameters.
    param_index: HashMap<String, usize>,
    /// Tensors every build of the graph shares, by name (a MoE layer's routing statistics, which
    /// every micro-batch adds to).
    shared: HashMap<String, Tid>,
    /// The routed experts' parameters.
    pub routed_experts: std::collections::HashSet<usize>,
    /// Lay the routed experts out first, as one range (an expert-parallel rank's, which other
    /// ranks than the rest of its parameters share).
    pub experts_first: bool,
    /// The end of the routed experts' range, once laid out with `experts_first`.
    pub experts_end: usize,
    /// Selective recomputation: the tensors `recomputed` regions write are not kept for the
    /// backward, which runs those regions again.
    pub recompute: bool,
    /// The current layer's recomputed regions: the forward launches of each and the tensors it
    /// made.
    regions: Option<Vec<(Vec<Step>, std::ops::Range<Tid>)>>,
    /// In the backward: each recomputed (or FP8-kept) tensor's replacement.
    remap: HashMap<Tid, Tid>,
    /// DeepSeek-V3's FP8 caching: tensors `fp8_cached` names are kept for the backward as their
    /// E4M3 copy (1×128 row tiles), which the layer's backward turns back into values.
    pub fp8_cache: bool,
    /// The current layer's FP8-kept tensors.
    cached: Option<Vec<Fp8Kept>>,
}

/// A `[rows, cols]` activation the backward reads from its E4M3 copy `q` (with `scales`, 1×128
/// row tiles).
#[derive(Debug, Clone, Copy)]
struct Fp8Kept {
    t: Tid,
    q: Tid,
    scales: Tid,
    rows: usize,
    cols: usize,
}

/// What kind of weight a GEMM multiplies by, which decides its precision under the recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// Attention and FFN projections: FP8 when the recipe is on.
    Projection,
    /// Kept in the compute dtype under FP8 (LM head, MTP's eh_proj).
    Head,
    /// Always f32 (the router's gate, as transformers computes it).
    Router,
}

/// Which GEMM of a linear layer: forward, data gradient, weight gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmRole {
    Fprop,
    Dgrad,
    Wgrad,
}

/// The spec's precision as the GEMMs and the memory plan see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrecisionPolicy {
    /// Compute dtype is bf16.
    pub bf16: bool,
    /// FP8 recipe tile, when on.
    pub fp8_tile: Option<usize>,
    /// The weights the forward pass reads are bf16 (the spec's `param` dtype): the weight
    /// matrices get a bf16 compute copy, cast from the f32 masters once per step.
    pub bf16_weights: bool,
}

impl PrecisionPolicy {
    /// The spec's precision: compute and weight dtypes, and the FP8 recipe's tile when it is on.
    pub fn of(s: &dsv3c_spec::Spec) -> PrecisionPolicy {
        use dsv3c_spec::types::Dtype;
        PrecisionPolicy {
            bf16: s.precision.compute == Dtype::Bf16,
            fp8_tile: s.precision.fp8.as_ref().map(|f| f.activation_tile as usize),
            bf16_weights: s.precision.param == Dtype::Bf16,
        }
    }

    /// The storage of activations and activation gradients that are neither accumulated into
    /// nor kept in f32 by their ops (statistics, router, losses): the compute dtype.
    pub fn activations(&self) -> DType {
        if self.bf16 {
            DType::Bf16
        } else {
            DType::F32
        }
    }
}

impl PrecisionPolicy {
    pub fn quant(&self, kind: WeightKind, role: GemmRole) -> Quant {
        match (kind, self.fp8_tile) {
            (WeightKind::Router, _) => Quant::None,
            (WeightKind::Projection, Some(tile)) => Quant::Fp8Stored { tile, b_blocks: role != GemmRole::Wgrad },
            _ if self.bf16 => Quant::Bf16,
            _ => Quant::None,
        }
    }
}

impl Builder {
    pub fn tensor(&mut self, name: impl Into<String>, len: usize) -> Tid {
        let name = format!("{}{}", self.prefix(), name.into());
        self.tensors.push(TensorInfo { name, len });
        self.tensors.len() - 1
    }

    fn prefix(&self) -> String {
        if self.context.is_empty() {
            String::new()
        } else {
            format!("{}.", self.context)
        }
    }

    /// A tensor stored in `dtype` whatever its uses ask for.
    pub fn pinned_tensor(&mut self, name: impl Into<String>, len: usize, dtype: DType) -> Tid {
        let t = self.tensor(name, len);
        self.pinned.insert(t, dtype);
        t
    }

    pub fn len(&self, t: Tid) -> usize {
        self.tensors[t].len
    }

    /// Registers a parameter (or finds the one of that name an earlier build of the graph
    /// registered); returns its index.
    pub fn param(&mut self, name: impl Into<String>, shape: &[usize], init: Init, group: ParamGroup) -> usize {
        let name = name.into();
        if let Some(&i) = self.param_index.get(&name) {
            debug_assert_eq!(self.params[i].shape, shape, "{name}: one parameter, two shapes");
            return i;
        }
        self.param_index.insert(name.clone(), self.params.len());
        self.params.push(ParamInfo { name, shape: shape.to_vec(), init, group });
        self.params.len() - 1
    }

    /// A tensor that every build of the graph shares (named in the current context).
    pub fn shared_tensor(&mut self, name: &str, len: usize) -> Tid {
        let key = format!("{}{name}", self.prefix());
        if let Some(&t) = self.shared.get(&key) {
            return t;
        }
        let t = self.tensor(name, len);
        self.shared.insert(key, t);
        t
    }

    pub fn param_len(&self, p: usize) -> usize {
        self.params[p].shape.iter().product()
    }

    /// The whole parameter, or its gradient.
    pub fn p(&self, p: usize) -> Arg {
        Arg::P { param: p, off: 0, len: self.param_len(p) }
    }
    pub fn g(&self, p: usize) -> Arg {
        Arg::G { param: p, off: 0, len: self.param_len(p) }
    }

    /// Emits one launch of `op` into the current phase.
    pub fn launch(&mut self, op: Op, args: Vec<Arg>, what: &str) {
        for (sig, arg) in op.signature().iter().zip(&args) {
            if let (Role::Out(_), Some(t)) = (sig.role, arg.tensor()) {
                self.quantized.retain(|k, _| k.0 != t);
            }
        }
        let key = format!("{op:?}");
        let kernel = match self.kernel_index.get(&key) {
            Some(&k) => k,
            None => {
                self.ops.push(op);
                self.kernel_index.insert(key, self.ops.len() - 1);
                self.ops.len() - 1
            }
        };
        let note = if self.context.is_empty() { what.to_string() } else { format!("{}: {what}", self.context) };
        let args = if self.phase == Phase::Backward { self.remapped(args) } else { args };
        let step = Step { kernel, args, note };
        match self.phase {
            Phase::Start => self.start.push(step),
            Phase::Forward => self.forward.push(step),
            Phase::Backward => self.backward.push(step),
            Phase::Update => self.update.push(step),
            Phase::Draft => self.draft.push(step),
        }
    }

    /// Lays the parameters out by optimizer group — decayed matrices, then embedding and head,
    /// then no-decay, then frozen — so that each group is one contiguous range the optimizer can
    /// treat alike; within a group the routed experts come first with `experts_first` (their end
    /// is `experts_end`), then the weights FP8 GEMMs read (so that the rest of the matrices, which
    /// a bf16 copy serves, are one range too), then registration order. Returns each group's end
    /// offset, in that order.
    pub fn lay_out_params(&mut self) -> [usize; 4] {
        let order = [ParamGroup::Decay, ParamGroup::Embedding, ParamGroup::NoDecay, ParamGroup::Frozen];
        let fp8: std::collections::HashSet<usize> = self.fp8_weights.iter().map(|w| w.param).collect();
        self.param_offsets = vec![0; self.params.len()];
        let mut ends = [0; 4];
        let mut at = 0;
        let experts = |i: usize| self.experts_first && self.routed_experts.contains(&i);
        for (g, group) in order.iter().enumerate() {
            for pass in 0..3 {
                for (i, p) in self.params.iter().enumerate() {
                    let here = match pass {
                        0 => experts(i),
                        1 => !experts(i) && fp8.contains(&i),
                        _ => !experts(i) && !fp8.contains(&i),
                    };
                    if p.group == *group && here {
                        self.param_offsets[i] = at;
                        at += p.shape.iter().product::<usize>();
                    }
                }
                if pass == 0 && g == 0 {
                    self.experts_end = at;
                }
            }
            ends[g] = at;
        }
        ends
    }

    /// Records that FP8 GEMMs read `count` consecutive weights from `param`, each `[rows, cols]`,
    /// quantized (in 128×128 blocks, by the step).
    pub fn fp8_weight(&mut self, param: usize, count: usize, rows: usize, cols: usize) {
        for p in param..param + count {
            if !self.fp8_weights.iter().any(|w| w.param == p) {
                self.fp8_weights.push(Fp8Weight { param: p, rows, cols });
            }
        }
    }

    /// `t` (a dense `[rows, cols]` activation or gradient) quantized to E4M3 under `scaling`, as
    /// (values, scales): quantized here, by a launch just before the GEMM that asks (after
    /// whatever wrote `t` last), or the copy an earlier GEMM of this phase already made.
    pub fn quantized(&mut self, t: Tid, rows: usize, cols: usize, scaling: Scaling) -> (Tid, Tid) {
        if let Some(&q) = self.quantized.get(&(t, scaling)) {
            return q;
        }
        let tile = self.precision.fp8_tile.unwrap_or(128);
        let name = self.tensors[t].name.clone();
        let how = match scaling {
            Scaling::RowTiles => "row tiles",
            Scaling::ColTiles => "column tiles",
            Scaling::Blocks => "blocks",
        };
        let q = self.tensors.len();
        self.tensors.push(TensorInfo { name: format!("{name}.e4m3[{how}]"), len: rows * cols });
        let s = self.tensors.len();
        self.tensors.push(TensorInfo { name: format!("{name}.scales[{how}]"), len: scaling.count(rows, cols, tile) });
        let op = Op::Quantize { mats: 1, rows, cols, tile, scaling };
        self.launch(op, vec![Arg::T(t), Arg::T(q), Arg::T(s)], &format!("quantize {name} ({how})"));
        self.quantized.insert((t, scaling), (q, s));
        (q, s)
    }

    /// `args` with every recomputed tensor replaced by its recomputation.
    fn remapped(&self, args: Vec<Arg>) -> Vec<Arg> {
        if self.remap.is_empty() {
            return args;
        }
        let map = |t: Tid| self.remap.get(&t).copied().unwrap_or(t);
        args.into_iter()
            .map(|a| match a {
                Arg::T(t) => Arg::T(map(t)),
                Arg::Part { t, off, len } => Arg::Part { t: map(t), off, len },
                a => a,
            })
            .collect()
    }

    /// Opens a layer whose `recomputed` regions the backward runs again (with selective
    /// recomputation on) and whose `fp8_cached` tensors it reads from their E4M3 copies (with FP8
    /// caching on).
    pub fn layer_begin(&mut self) {
        if self.recompute {
            self.regions = Some(Vec::new());
        }
        if self.fp8_cache {
            self.cached = Some(Vec::new());
        }
    }

    /// With FP8 caching on: `t`, a dense `[rows, cols]` activation of the forward, is kept for the
    /// backward only as its E4M3 copy in 1×128 row tiles (the one an FP8 GEMM reads, or one made
    /// here); the layer's backward starts by turning it back into values, which every backward
    /// launch reads instead of `t`.
    pub fn fp8_cached(&mut self, t: Tid, rows: usize, cols: usize) {
        if self.cached.is_some() {
            let (q, scales) = self.quantized(t, rows, cols, Scaling::RowTiles);
            if let Some(c) = self.cached.as_mut() {
                c.push(Fp8Kept { t, q, scales, rows, cols });
            }
        }
    }

    /// A region of the forward whose outputs — the tensors `f` makes — are not kept for the
    /// backward: with selective recomputation on, the layer's backward starts by running its
    /// launches again into fresh tensors, which every backward launch reads instead
    /// (DeepSeek-V3 recomputes its norms, MLA up-projections and SwiGLU products so).
    pub fn recomputed<R>(&mut self, f: impl FnOnce(&mut Builder) -> R) -> R {
        let (steps, tensors) = (self.forward.len(), self.tensors.len());
        let r = f(self);
        if let Some(regions) = self.regions.as_mut() {
            regions.push((self.forward[steps..].to_vec(), tensors..self.tensors.len()));
        }
        r
    }

    /// Closes the layer `layer_begin` opened: its backward, before any of its other backward
    /// launches, turns its FP8-kept tensors back into values, then runs each recomputed region
    /// again (over those values where it reads them).
    pub fn layer_end(&mut self) {
        let regions = self.regions.take().filter(|r| !r.is_empty());
        let cached = self.cached.take().filter(|c| !c.is_empty());
        // The tape runs backwards: what is recorded last runs first.
        if let Some(regions) = regions {
            self.replay(regions);
        }
        if let Some(cached) = cached {
            let tile = self.precision.fp8_tile.unwrap_or(128);
            self.on_backward(move |b| {
                for Fp8Kept { t, q, scales: s, rows, cols } in cached {
                    let info = TensorInfo { name: format!("{} (from FP8)", b.tensors[t].name), len: b.tensors[t].len };
                    b.tensors.push(info);
                    let x = b.tensors.len() - 1;
                    let op = Op::Dequantize { rows, cols, tile, scaling: Scaling::RowTiles };
                    b.launch(op, vec![Arg::T(q), Arg::T(s), Arg::T(x)], "kept in FP8: its values");
                    b.remap.insert(t, x);
                }
            });
        }
    }

    /// Records, for the backward, each region run again into fresh tensors.
    fn replay(&mut self, regions: Vec<(Vec<Step>, std::ops::Range<Tid>)>) {
        self.on_backward(move |b| {
            for (steps, made) in regions {
                for t in made {
                    let info =
                        TensorInfo { name: format!("{} (recomputed)", b.tensors[t].name), len: b.tensors[t].len };
                    b.tensors.push(info);
                    b.remap.insert(t, b.tensors.len() - 1);
                }
                for s in steps {
                    let args = b.remapped(s.args);
                    b.backward.push(Step { kernel: s.kernel, args, note: format!("{} (recomputed)", s.note) });
                }
            }
        });
    }

    /// Records how to differentiate the op just emitted.
    pub fn on_backward(&mut self, f: impl FnOnce(&mut Builder) + 'static) {
        let ctx = self.context.clone();
        self.tape.push(Box::new(move |b: &mut Builder| {
            let saved = std::mem::replace(&mut b.context, ctx);
            f(b);
            b.context = saved;
        }));
    }

    /// The gradient tensor of `t`, made (and zeroed) on first use.
    pub fn grad(&mut self, t: Tid) -> Tid {
        if let Some(&g) = self.grads.get(&t) {
            return g;
        }
        let name = format!("d({})", self.tensors[t].name);
        let len = self.tensors[t].len;
        self.tensors.push(TensorInfo { name, len });
        let g = self.tensors.len() - 1;
        self.grads.insert(t, g);
        self.launch(Op::Zero { n: len }, vec![Arg::T(g)], "zero gradient");
        g
    }

    /// Declares that `g` already holds the gradient of `t` (e.g. the fused cross-entropy).
    pub fn set_grad(&mut self, t: Tid, g: Tid) {
        self.grads.insert(t, g);
    }

    /// Whether `t` has received any gradient.
    pub fn has_grad(&self, t: Tid) -> bool {
        self.grads.contains_key(&t)
    }

    /// Emits the backward pass: the tape in reverse.
    pub fn backward(&mut self) {
        self.phase = Phase::Backward;
        self.quantized.clear();
        let tape = std::mem::take(&mut self.tape);
        for f in tape.into_iter().rev() {
            f(self);
        }
    }
}
