//! The graph builder: virtual tensors, parameters, launches, and the tape of backward emitters.
//!
//! Forward code calls ops on virtual tensors; each differentiable op also pushes a closure onto
//! the tape that emits its backward ops (hand-derived, op by op). `backward()` runs the tape in
//! reverse. Gradient tensors are made on first use and zeroed right there, so every backward op
//! can accumulate. The training step's own launches (`step`) go into the start and update phases.
//! The planner (`plan`) then gives every virtual tensor its arena offset.

use std::collections::HashMap;

use dsv3c_runtime::op::{Op, Quant};
use dsv3c_runtime::program::{Init, ParamGroup, Slice};
use dsv3c_runtime::DType;

/// A virtual activation tensor.
pub type Tid = usize;

/// A launch argument before planning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A whole activation tensor.
    T(Tid),
    /// Elements `[off, off + len)` of a parameter.
    P { param: usize, off: usize, len: usize },
    /// The same range of the parameter's gradient.
    G { param: usize, off: usize, len: usize },
    /// A slice of an arena whose layout is already fixed (the parameter, gradient and optimizer
    /// arenas, once `Builder::lay_out_params` has run).
    Raw(Slice),
}

/// Which launch list of a training step a launch goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Once per step, before the first micro-batch.
    Start,
    #[default]
    Forward,
    Backward,
    /// Once per step, after the last micro-batch.
    Update,
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
    tape: Vec<Emitter>,
    grads: HashMap<Tid, Tid>,
    /// The list launches go into.
    pub phase: Phase,
    /// Each parameter's offset in the parameter arena, once laid out.
    pub param_offsets: Vec<usize>,
    /// Layer/op context prefixed to launch notes.
    pub context: String,
    /// The compute copy of parameter elements `[0, copy.len)` (the decayed and embedding groups:
    /// the weight matrices), element for element, that real-valued reads go to (none: they read
    /// the f32 parameters).
    pub weights_copy: Option<Slice>,
    /// The storage formats GEMMs emulate (from the spec's precision).
    pub precision: PrecisionPolicy,
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
            (WeightKind::Projection, Some(tile)) => Quant::Fp8 { tile, b_blocks: role != GemmRole::Wgrad },
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

    pub fn len(&self, t: Tid) -> usize {
        self.tensors[t].len
    }

    /// Registers a parameter; returns its index.
    pub fn param(&mut self, name: impl Into<String>, shape: &[usize], init: Init, group: ParamGroup) -> usize {
        self.params.push(ParamInfo { name: name.into(), shape: shape.to_vec(), init, group });
        self.params.len() - 1
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
        let step = Step { kernel, args, note };
        match self.phase {
            Phase::Start => self.start.push(step),
            Phase::Forward => self.forward.push(step),
            Phase::Backward => self.backward.push(step),
            Phase::Update => self.update.push(step),
        }
    }

    /// Lays the parameters out by optimizer group — decayed matrices, then embedding and head,
    /// then no-decay, then frozen; registration order within a group — so that each group is one
    /// contiguous range the optimizer can treat alike. Returns each group's end offset, in that order.
    pub fn lay_out_params(&mut self) -> [usize; 4] {
        let order = [ParamGroup::Decay, ParamGroup::Embedding, ParamGroup::NoDecay, ParamGroup::Frozen];
        self.param_offsets = vec![0; self.params.len()];
        let mut ends = [0; 4];
        let mut at = 0;
        for (g, group) in order.iter().enumerate() {
            for (i, p) in self.params.iter().enumerate() {
                if p.group == *group {
                    self.param_offsets[i] = at;
                    at += p.shape.iter().product::<usize>();
                }
            }
            ends[g] = at;
        }
        ends
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
        let tape = std::mem::take(&mut self.tape);
        for f in tape.into_iter().rev() {
            f(self);
        }
    }
}
