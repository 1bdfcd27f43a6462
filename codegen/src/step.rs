//! The training step's own launches, around the model's forward and backward: `start` makes the
//! weight matrices' compute copies — E4M3 in 128×128 blocks for those the FP8 GEMMs read, bf16
//! for the rest (bf16 weights), once per step however many micro-batches follow — and zeroes the
//! gradient arena and each MoE layer's routing statistics; `update` takes the global gradient norm,
//! runs the optimizer over the trained parameters (laid out by group, so that one launch covers
//! them) and moves each MoE layer's correction bias toward balance. Everything a step computes is
//! a launch: the host writes the step's scalars and reads losses and metrics.

use dsv3c_runtime::comm::shard;
use dsv3c_runtime::op::{scalars, Op, OptimizerKind, Scaling, Update, GRAD_NORM_CHUNK};
use dsv3c_runtime::program::{Rank, Slice, Space, ZeroShard};
use dsv3c_runtime::DType;

use crate::builder::{Arg, Builder, Fp8Copy, Phase, Tid, WeightsCopy};
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

/// A data-parallel rank a Program is compiled for: `ranks` ranks, this one `rank`, with the
/// optimizer state sharded over them (ZeRO-1) or replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataParallel {
    pub ranks: usize,
    pub rank: usize,
    pub zero: bool,
}

impl DataParallel {
    /// The job of one rank.
    pub const SINGLE: DataParallel = DataParallel { ranks: 1, rank: 0, zero: false };
}

/// The step's tensors the host reads or writes.
pub struct StepIo {
    pub scalars: Tid,
    pub grad_norm: Tid,
    /// Elements of the optimizer arena.
    pub optim_len: usize,
    /// Bytes of the weights' compute copies.
    pub weight_bytes: usize,
    /// The rank's place in its job (none: one device).
    pub rank: Option<Rank>,
}

/// Byte offsets in the weights arena are rounded up to this.
const WEIGHTS_ALIGN: usize = 64;

/// Lays out the weights arena — the FP8 copies' e4m3 bytes, then their scales, then the bf16
/// copy of the other weight matrices `[from, embedding_end)` — and returns the launches that fill
/// it from the f32 masters: one `Quantize` per run of consecutive same-shaped FP8 weights (a MoE
/// layer's experts are one), and one `Cast`.
fn lay_out_weights(b: &mut Builder, embedding_end: usize) -> Vec<(Op, Vec<Arg>, &'static str)> {
    let tile = b.precision.fp8_tile.unwrap_or(128);
    let mut fp8 = b.fp8_weights.clone();
    fp8.sort_by_key(|w| b.param_offsets[w.param]);
    let q_bytes: usize = fp8.iter().map(|w| w.rows * w.cols).sum();
    let (mut q_at, mut s_at) = (0, q_bytes.next_multiple_of(WEIGHTS_ALIGN));
    let mut launches = Vec::new();
    let mut i = 0;
    while i < fp8.len() {
        let w = fp8[i];
        let mut j = i + 1;
        while j < fp8.len()
            && (fp8[j].rows, fp8[j].cols) == (w.rows, w.cols)
            && b.param_offsets[fp8[j].param] == b.param_offsets[w.param] + (j - i) * w.rows * w.cols
        {
            j += 1;
        }
        let (mats, n, per) = (j - i, w.rows * w.cols, Scaling::Blocks.count(w.rows, w.cols, tile));
        let q = Slice { space: Space::Weights, offset: q_at, len: mats * n, dtype: DType::E4m3 };
        let s = Slice { space: Space::Weights, offset: s_at, len: mats * per, dtype: DType::F32 };
        for (m, x) in fp8[i..j].iter().enumerate() {
            let copy = Fp8Copy {
                q: Slice { offset: q_at + m * n, len: n, ..q },
                scales: Slice { offset: s_at + m * per * 4, len: per, ..s },
            };
            b.fp8_copies.insert(x.param, copy);
        }
        let op = Op::Quantize { mats, rows: w.rows, cols: w.cols, tile, scaling: Scaling::Blocks };
        let x = Slice::param(b.param_offsets[w.param], mats * n);
        launches.push((op, vec![Arg::Raw(x), Arg::Raw(q), Arg::Raw(s)], "weights' FP8 copy"));
        (q_at, s_at) = (q_at + q.bytes(), s_at + s.bytes());
        i = j;
    }
    // The FP8 weights lead their group (`lay_out_params`): the bf16 copy starts after them when
    // they are the arena's first elements, else it covers every matrix.
    let fp8_end: usize = fp8.iter().map(|w| w.rows * w.cols).sum();
    let from = if fp8.iter().all(|w| b.param_offsets[w.param] < fp8_end) { fp8_end } else { 0 };
    if b.precision.bf16_weights && embedding_end > from {
        let len = embedding_end - from;
        let slice =
            Slice { space: Space::Weights, offset: s_at.next_multiple_of(WEIGHTS_ALIGN), len, dtype: DType::Bf16 };
        b.weights_copy = Some(WeightsCopy { from, slice });
        let x = Slice::param(from, len);
        launches.push((Op::Cast { n: len }, vec![Arg::Raw(x), Arg::Raw(slice)], "weights' compute copy"));
    }
    launches
}

/// A decode program's step work: lays the parameters out by group, as training does, and emits
/// `start` — the weights' compute copies alone. Returns the bytes of the weights arena.
pub fn build_inference(b: &mut Builder) -> usize {
    let [_, embedding_end, _, _] = b.lay_out_params();
    b.phase = Phase::Start;
    for (op, args, what) in lay_out_weights(b, embedding_end) {
        b.launch(op, args, what);
    }
    weight_bytes(b)
}

/// The end of the weights arena's last copy.
fn weight_bytes(b: &Builder) -> usize {
    [b.weights_copy.map(|c| c.slice.end()), b.fp8_copies.values().map(|c| c.scales.end()).max()]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
}

/// Lays the parameters out and emits the start and update launches; `gamma` is the balancing
/// bias's speed (no bias update when 0). On a data-parallel rank (`dp.ranks > 1`) the update
/// first sums the gradients of the trained parameters and each MoE layer's routing statistics
/// over the ranks — so the norm, the step guard and the bias update see the whole job's batch,
/// the same on every rank — and under ZeRO-1 runs the optimizer over this rank's shard of the
/// trained parameters alone (its moments the whole optimizer arena), then gathers the other
/// ranks' shards.
pub fn build(b: &mut Builder, out: &Outputs, t: Training, gamma: f32, dp: DataParallel) -> StepIo {
    let [decay_end, embedding_end, trained, param_len] = b.lay_out_params();
    let scalars = b.tensor("step.scalars", scalars::LEN);

    b.phase = Phase::Start;
    // The weight matrices the forward and backward read, in E4M3 and bf16: made once per step,
    // at its start, from the masters the last update (or the host) left.
    for (op, args, what) in lay_out_weights(b, embedding_end) {
        b.launch(op, args, what);
    }
    let weight_bytes = weight_bytes(b);
    b.launch(Op::Zero { n: param_len }, vec![Arg::Raw(Slice::grad(0, param_len))], "zero gradients");
    for &(stats, _) in &out.expert_stats {
        let n = b.len(stats);
        b.launch(Op::Zero { n }, vec![Arg::T(stats)], "zero routing statistics");
    }

    b.phase = Phase::Update;
    let ranks = dp.ranks.max(1);
    if ranks > 1 {
        let grad = Arg::Raw(Slice::grad(0, trained));
        b.launch(Op::AllReduce { n: trained, ranks }, vec![grad], "gradients summed over the data-parallel ranks");
        for (layer, &(stats, _)) in out.expert_stats.iter().enumerate() {
            let n = b.len(stats);
            b.context = format!("moe {layer}");
            b.launch(Op::AllReduce { n, ranks }, vec![Arg::T(stats)], "routing statistics summed over the ranks");
        }
        b.context.clear();
    }
    let partials = b.tensor("step.grad_norm_partials", trained.div_ceil(GRAD_NORM_CHUNK).max(1));
    let grad_norm = b.tensor("step.grad_norm", 1);
    let grad = Arg::Raw(Slice::grad(0, trained));
    b.launch(Op::GradNorm { n: trained }, vec![grad, Arg::T(partials), Arg::T(grad_norm)], "global gradient norm");
    let moments = match t.optimizer {
        OptimizerKind::AdamW => 2,
        OptimizerKind::Lion => 1,
    };
    // The elements this rank updates, and where their moments start in the optimizer arena.
    let zero = (dp.zero && ranks > 1).then(|| {
        let s = shard(trained, ranks, dp.rank);
        ZeroShard { lo: s.start, hi: s.end, stride: trained.div_ceil(ranks), moments }
    });
    let (lo, hi, stride) = zero.map_or((0, trained, param_len), |z| (z.lo, z.hi, z.stride));
    let n = hi - lo;
    let clamp = |end: usize| end.clamp(lo, hi) - lo;
    let u = Update {
        kind: t.optimizer,
        n,
        decay_end: clamp(decay_end),
        embedding_end: clamp(embedding_end),
        bf16_moments: t.bf16_moments,
    };
    let mut args = vec![
        Arg::T(scalars),
        Arg::T(grad_norm),
        Arg::Raw(Slice::grad(lo, n)),
        Arg::Raw(Slice::param(lo, n)),
        Arg::Raw(Slice::optim(0, n)),
    ];
    if moments == 2 {
        args.push(Arg::Raw(Slice::optim(stride, n)));
    }
    let optim_len = moments * stride;
    if n > 0 {
        b.launch(Op::Optimizer(u), args, "optimizer step");
    }
    if zero.is_some() {
        let p = Arg::Raw(Slice::param(0, trained));
        b.launch(Op::AllGather { n: trained, ranks }, vec![p], "updated parameter shards gathered from the ranks");
    }
    if gamma != 0.0 {
        for (layer, &(stats, bias)) in out.expert_stats.iter().enumerate() {
            let experts = b.param_len(bias);
            b.context = format!("moe {layer}");
            let args = vec![Arg::T(scalars), Arg::T(grad_norm), Arg::T(stats), b.p(bias)];
            b.launch(Op::BiasUpdate { experts, gamma }, args, "balancing bias");
        }
        b.context.clear();
    }
    let rank = (ranks > 1).then_some(Rank { dp: ranks, dp_rank: dp.rank, zero });
    StepIo { scalars, grad_norm, optim_len, weight_bytes, rank }
}
