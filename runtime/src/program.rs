//! The Program: the one contract between codegen (which writes it) and the backends (which run
//! it). A Program is specialized to one spec at one batch shape: every size is a constant.
//!
//! Memory is three flat f32 arenas: parameters, their gradients (same layout), and activations
//! (the static memory plan: every tensor at a fixed offset, sharing space by liveness). Integer
//! data (token ids, expert indices, permutations) lives in the activation arena as f32 values,
//! exact below 2^24 — the spec bounds vocabularies and token counts below that.

use serde::{Deserialize, Serialize};

use crate::op::Op;

/// Something that runs one op over arena slices: a backend, as generated graphs see it.
pub trait Launcher {
    fn launch(&mut self, op: &Op, args: &[Slice]);
}

impl Launcher for crate::cpu::Cpu {
    fn launch(&mut self, op: &Op, args: &[Slice]) {
        crate::cpu::Cpu::launch(self, op, args)
    }
}

/// A training graph: the forward and backward launches of a model. A `Program` runs its launch
/// lists; a generated module (`dsv3c compile`, `model!`) runs straight-line code.
pub trait Graph {
    fn forward(&self, l: &mut dyn Launcher);
    fn backward(&self, l: &mut dyn Launcher);
}

impl Graph for Program {
    fn forward(&self, l: &mut dyn Launcher) {
        self.run(&self.forward, l)
    }
    fn backward(&self, l: &mut dyn Launcher) {
        self.run(&self.backward, l)
    }
}

/// Which arena a slice lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Space {
    /// Parameters (and non-trainable buffers such as the router bias).
    Param,
    /// Gradients of the parameters, laid out like the parameters.
    Grad,
    /// Activations and their gradients.
    Act,
}

/// A contiguous range of one arena, in f32 elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub space: Space,
    pub offset: usize,
    pub len: usize,
}

impl Slice {
    /// A slice of the parameter arena.
    pub const fn param(offset: usize, len: usize) -> Slice {
        Slice { space: Space::Param, offset, len }
    }
    /// A slice of the gradient arena.
    pub const fn grad(offset: usize, len: usize) -> Slice {
        Slice { space: Space::Grad, offset, len }
    }
    /// A slice of the activation arena.
    pub const fn act(offset: usize, len: usize) -> Slice {
        Slice { space: Space::Act, offset, len }
    }

    pub fn end(&self) -> usize {
        self.offset + self.len
    }

    /// Do two slices share any element?
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

/// One parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Hugging Face checkpoint name (`model.layers.3.mlp.experts.7.gate_proj.weight`).
    pub name: String,
    pub shape: Vec<usize>,
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
    pub fn slice(&self, space: Space) -> Slice {
        Slice { space, offset: self.offset, len: self.len() }
    }
}

/// One activation tensor of the static plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub name: String,
    pub offset: usize,
    pub len: usize,
    /// Index of the first and last launch (over forward then backward) that touch it.
    pub live: (usize, usize),
}

/// A unique specialized kernel: its op with every constant baked in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub op: Op,
}

/// One kernel launch: which kernel, over which slices (in the order the op documents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// A compiled training program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub batch: usize,
    pub seq: usize,
    pub params: Vec<Param>,
    pub param_len: usize,
    pub buffers: Vec<Buffer>,
    pub act_len: usize,
    pub kernels: Vec<Kernel>,
    pub forward: Vec<Launch>,
    pub backward: Vec<Launch>,
    pub io: Io,
}

impl Program {
    /// Runs `launches` (this program's forward or backward list) on a backend.
    pub fn run(&self, launches: &[Launch], l: &mut dyn Launcher) {
        for x in launches {
            l.launch(&self.kernels[x.kernel].op, &x.args);
        }
    }

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Checks the invariants the backends rely on: every slice inside its arena, and no launch
    /// writing a slice that overlaps another of its arguments unless the op says it is in place.
    pub fn check(&self) -> Result<(), String> {
        let limit = |s: &Slice| match s.space {
            Space::Param | Space::Grad => self.param_len,
            Space::Act => self.act_len,
        };
        for (phase, launches) in [("forward", &self.forward), ("backward", &self.backward)] {
            for (i, l) in launches.iter().enumerate() {
                let k = self.kernels.get(l.kernel).ok_or_else(|| format!("{phase}[{i}]: no kernel {}", l.kernel))?;
                let arity = k.op.arity();
                if l.args.len() != arity {
                    return Err(format!("{phase}[{i}] {}: {} args, op takes {arity}", l.note, l.args.len()));
                }
                for s in &l.args {
                    if s.end() > limit(s) {
                        return Err(format!("{phase}[{i}] {}: {s:?} outside its arena", l.note));
                    }
                }
                let outs = k.op.outputs();
                for &o in &outs {
                    for (j, s) in l.args.iter().enumerate() {
                        if j != o && s.overlaps(&l.args[o]) && !outs.contains(&j) {
                            return Err(format!("{phase}[{i}] {}: output {o} overlaps input {j}", l.note));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
