//! The training step's own launches, around the model's forward and backward: `start` casts the
//! weight matrices' compute copy (bf16 weights) and zeroes the gradient arena and each MoE layer's
//! routing statistics; `update` takes the global gradient norm,
//! runs the optimizer over the trained parameters (laid out by group, so that one launch covers
//! them) and moves each MoE layer's correction bias toward balance. Everything a step computes is
//! a launch: the host writes the step's scalars and reads losses and metrics.

use dsv3c_runtime::op::{scalars, Op, OptimizerKind, Update, GRAD_NORM_CHUNK};
use dsv3c_runtime::program::{Slice, Space};
use dsv3c_runtime::DType;

use crate::builder::{Arg, Builder, Phase, Tid};
use crate::model::Outputs;

/// The optimizer a Program is compiled for; its hyperparameters are step scalars, not constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Training {
    pub optimizer: OptimizerKind,
    /// Moments rounded to bf16 (DeepSeek-V3's recipe) rather than kept in f32.
    pub bf16_moments: bool,
}

impl Default for Training {
    /// AdamW with f32 moments.
    fn default() -> Training {
        Training { optimizer: OptimizerKind::AdamW, bf16_moments: false }
    }
}

impl From<&dsv3c_spec::config::Optimizer> for Training {
    fn from(o: &dsv3c_spec::config::Optimizer) -> Training {
        Training { optimizer: o.kind.into(), bf16_moments: o.moments == dsv3c_spec::types::Dtype::Bf16 }
    }
}

/// The step's tensors the host reads or writes.
pub struct StepIo {
    pub scalars: Tid,
    pub grad_norm: Tid,
    /// Elements of the optimizer arena.
    pub optim_len: usize,
    /// Bytes of the weights' compute copy.
    pub weight_bytes: usize,
}

/// Lays the parameters out and emits the start and update launches; `gamma` is the balancing
/// bias's speed (no bias update when 0).
pub fn build(b: &mut Builder, out: &Outputs, t: Training, gamma: f32) -> StepIo {
    let [decay_end, embedding_end, trained, param_len] = b.lay_out_params();
    let scalars = b.tensor("step.scalars", scalars::LEN);

    b.phase = Phase::Start;
    // The weight matrices (decayed and embedding groups) the forward and backward read, in bf16:
    // cast at the start of a step (after the host wrote parameters) and after each update.
    let cast = (b.precision.bf16_weights && embedding_end > 0).then(|| {
        let copy = Slice { space: Space::Weights, offset: 0, len: embedding_end, dtype: DType::Bf16 };
        (copy, Op::Cast { n: embedding_end }, vec![Arg::Raw(Slice::param(0, embedding_end)), Arg::Raw(copy)])
    });
    if let Some((copy, op, args)) = cast.clone() {
        b.launch(op, args, "weights' compute copy");
        b.weights_copy = Some(copy);
    }
    let weight_bytes = b.weights_copy.map_or(0, |c| c.bytes());
    b.launch(Op::Zero { n: param_len }, vec![Arg::Raw(Slice::grad(0, param_len))], "zero gradients");
    for &(stats, _) in &out.expert_stats {
        let n = b.len(stats);
        b.launch(Op::Zero { n }, vec![Arg::T(stats)], "zero routing statistics");
    }

    b.phase = Phase::Update;
    let partials = b.tensor("step.grad_norm_partials", trained.div_ceil(GRAD_NORM_CHUNK).max(1));
    let grad_norm = b.tensor("step.grad_norm", 1);
    let grad = Arg::Raw(Slice::grad(0, trained));
    b.launch(Op::GradNorm { n: trained }, vec![grad, Arg::T(partials), Arg::T(grad_norm)], "global gradient norm");
    let u = Update { kind: t.optimizer, n: trained, decay_end, embedding_end, bf16_moments: t.bf16_moments };
    let mut args = vec![
        Arg::T(scalars),
        Arg::T(grad_norm),
        grad,
        Arg::Raw(Slice::param(0, trained)),
        Arg::Raw(Slice::optim(0, trained)),
    ];
    let optim_len = match t.optimizer {
        OptimizerKind::AdamW => {
            args.push(Arg::Raw(Slice::optim(param_len, trained)));
            2 * param_len
        }
        OptimizerKind::Lion => param_len,
    };
    b.launch(Op::Optimizer(u), args, "optimizer step");
    if let Some((_, op, args)) = cast {
        b.launch(op, args, "weights' compute copy");
    }
    if gamma != 0.0 {
        for (layer, &(stats, bias)) in out.expert_stats.iter().enumerate() {
            let experts = b.param_len(bias);
            b.context = format!("moe {layer}");
            b.launch(Op::BiasUpdate { experts, gamma }, vec![Arg::T(stats), b.p(bias)], "balancing bias");
        }
        b.context.clear();
    }
    StepIo { scalars, grad_norm, optim_len, weight_bytes }
}
