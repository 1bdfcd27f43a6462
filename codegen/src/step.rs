//! The training step's own launches, around the model's forward and backward: `start` makes the
//! weight matrices' compute copies — E4M3 in 128×128 blocks for those the FP8 GEMMs read, bf16
//! for the rest (bf16 weights), once per step however many micro-batches follow — and zeroes the
//! gradient arena and each MoE layer's routing statistics; `update` takes the global gradient norm,
//! runs the optimizer over the trained parameters (laid out by group, so that one launch covers
//! them) and moves each MoE layer's correction bias toward balance. Everything a step computes is
//! a launch: the host writes the step's scalars and reads losses and metrics.

use dsv3c_runtime::comm::{shard, CommGroup, Mesh, Place};
use dsv3c_runtime::op::{scalars, Op, OptimizerKind, Scaling, Update, GRAD_NORM_CHUNK};
use dsv3c_runtime::program::{Masters, Rank, Slice, Space, ZeroShard};
use dsv3c_runtime::DType;

use crate::builder::{Arg, Builder, Fp8Copy, Phase, Tid, WeightsCopy};
use crate::model::Outputs;

/// The optimizer a Program is compiled for; its hyperparameters are step scalars, not constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Training {
    pub optimizer: OptimizerKind,
    /// Moments rounded to bf16 (DeepSeek-V3's recipe) rather than kept in f32.
    pub bf16_moments: bool,
    /// Selective recomputation: the norms, MLA up-projections and SwiGLU products are made again
    /// in the backward instead of kept (`Builder::recomputed`).
    pub recompute: bool,
    /// DeepSeek-V3's FP8 caching (FP8 specs): the routed experts' inputs, SwiGLU inputs and outputs
    /// are kept for the backward as their E4M3 copies (`Builder::fp8_cached`).
    pub fp8_cache: bool,
}

impl Default for Training {
    /// AdamW with f32 moments, every activation kept as it is.
    fn default() -> Training {
        Training { optimizer: OptimizerKind::AdamW, bf16_moments: false, recompute: false, fp8_cache: false }
    }
}

impl From<&dsv3c_spec::config::Optimizer> for Training {
    fn from(o: &dsv3c_spec::config::Optimizer) -> Training {
        Training {
            optimizer: o.kind.into(),
            bf16_moments: o.moments == dsv3c_spec::types::Dtype::Bf16,
            recompute: false,
            fp8_cache: false,
        }
    }
}

impl From<&dsv3c_spec::config::RunConfig> for Training {
    /// The recipe's optimizer and recomputation.
    fn from(c: &dsv3c_spec::config::RunConfig) -> Training {
        Training {
            recompute: c.recompute == dsv3c_spec::config::Recompute::Selective,
            fp8_cache: c.fp8_cache,
            ..Training::from(&c.optimizer)
        }
    }
}

/// How a per-rank Program is parallel: its place in the job's mesh (data, expert and pipeline
/// parallelism), whether the optimizer state is sharded (ZeRO-1) or replicated, how many rows a
/// rank's experts keep (a capacity factor over a balanced routing; none: every row, whatever the
/// routing), and how many micro-batches a step accumulates (a pipeline stage keeps up to that
/// many in flight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parallel {
    pub place: Place,
    pub zero: bool,
    pub expert_capacity: Option<f64>,
    pub micro_batches: usize,
}

impl Parallel {
    /// The job of one rank.
    pub const SINGLE: Parallel =
        Parallel { place: Place::SINGLE, zero: false, expert_capacity: None, micro_batches: 1 };

    /// Rank `rank` of `ranks` data-parallel ranks, ZeRO-1 or not.
    pub fn data(ranks: usize, rank: usize, zero: bool) -> Parallel {
        let mesh = Mesh { dp: ranks, ep: 1, pp: 1 };
        Parallel { place: Place { mesh, rank }, zero, ..Parallel::SINGLE }
    }

    /// Rank `rank` of `mesh`.
    pub fn of(mesh: Mesh, rank: usize, zero: bool, micro_batches: usize) -> Parallel {
        Parallel { place: Place { mesh, rank }, zero, expert_capacity: None, micro_batches }
    }

    /// The ranks of `group` this rank is in.
    pub fn ranks(&self, group: CommGroup) -> usize {
        self.place.members(group).len()
    }
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
fn lay_out_weights(b: &mut Builder, embedding_end: usize, source: Space) -> Vec<(Op, Vec<Arg>, &'static str)> {
    let masters = |at: usize, len: usize| Arg::Raw(Slice::f32(source, at, len));
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
        let x = masters(b.param_offsets[w.param], mats * n);
        launches.push((op, vec![x, Arg::Raw(q), Arg::Raw(s)], "weights' FP8 copy"));
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
        launches.push((Op::Cast { n: len }, vec![masters(from, len), Arg::Raw(slice)], "weights' compute copy"));
    }
    launches
}

/// ZeRO-1's sharded masters gathered whole, at a step's start, into the gradient arena — laid
/// out as the parameters, and free until the start's last launch zeroes it: each shard of the
/// trained parameters (`[0, trained)`) copied to its place, each region gathered over its group,
/// and the gathered elements the rank holds whole (`[copied, trained)`: norms' gains, biases)
/// written back to its parameter arena. Returns the arena the compute copies are made from.
fn gather_masters(b: &mut Builder, par: &Parallel, zero: &[ZeroShard], copied: usize, trained: usize) -> Space {
    for z in zero.iter().filter(|z| z.hi > z.lo) {
        let (lo, n) = (z.lo, z.hi - z.lo);
        let to = Arg::Raw(Slice::grad(lo, n));
        b.launch(Op::Cast { n }, vec![Arg::Raw(Slice::param(lo, n)), to], "this rank's master shard");
    }
    gather_regions(b, par, zero, Space::Grad, "master shards gathered");
    if trained > copied {
        let n = trained - copied;
        let from = Arg::Raw(Slice::grad(copied, n));
        b.launch(Op::Cast { n }, vec![from, Arg::Raw(Slice::param(copied, n))], "gathered norms and biases");
    }
    Space::Grad
}

/// Each ZeRO-1 region of `space` (laid out as the parameters) gathered over its group from the
/// ranks holding its shards.
fn gather_regions(b: &mut Builder, par: &Parallel, zero: &[ZeroShard], space: Space, what: &str) {
    for z in zero {
        let (lo, hi) = z.region;
        let ranks = par.ranks(z.group);
        if ranks > 1 && hi > lo {
            let region = Arg::Raw(Slice::f32(space, lo, hi - lo));
            b.launch(Op::AllGather { n: hi - lo, ranks, group: z.group }, vec![region], what);
        }
    }
}

/// A decode program's step work: lays the parameters out by group, as training does, and emits
/// `start` — the weights' compute copies alone. Returns the bytes of the weights arena.
pub fn build_inference(b: &mut Builder) -> usize {
    let [_, embedding_end, _, _] = b.lay_out_params();
    b.phase = Phase::Start;
    for (op, args, what) in lay_out_weights(b, embedding_end, Space::Param) {
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

/// A range of the gradient arena whose sum of squares the norm takes, and the group whose ranks
/// hold the other parts of it (its partial sums are added over them).
struct NormPart {
    lo: usize,
    hi: usize,
    over: Option<CommGroup>,
}

/// Lays the parameters out and emits the start and update launches; the spec's
/// `bias_update_speed` is the balancing bias's speed (no bias update when 0). A per-rank program (`par`) first sums each region of the
/// trained parameters' gradients over the ranks that hold that region alike — the routed experts
/// over their expert-data-parallel group, the rest over the data-parallel group, the token
/// embedding's two copies over the first and last stage — and each MoE layer's routing
/// statistics over the data-parallel group, so that the norm, the step guard and the bias update
/// see the whole job's batch, the same on every rank; the norm adds the partial sums of parameters
/// that other ranks hold (other experts, other stages). Under ZeRO-1 each rank then runs the
/// optimizer over its shard of each region alone (its moments the whole optimizer arena) and
/// gathers the other ranks' shards.
pub fn build(b: &mut Builder, out: &Outputs, t: Training, spec: &dsv3c_spec::Spec, par: &Parallel) -> StepIo {
    let gamma = spec.moe.as_ref().map_or(0.0, |m| m.bias_update_speed as f32);
    let [decay_end, embedding_end, trained, param_len] = b.lay_out_params();
    let scalars = b.tensor("step.scalars", scalars::LEN);
    let place = par.place;
    let mesh = place.mesh;
    // The regions of the trained parameters, each with the group of ranks holding it alike.
    let experts_end = if mesh.ep > 1 { b.experts_end.min(trained) } else { 0 };
    let mut regions = Vec::new();
    if experts_end > 0 {
        regions.push((0, experts_end, CommGroup::ExpertData));
    }
    regions.push((experts_end, trained, CommGroup::Data));
    let moments = match t.optimizer {
        OptimizerKind::AdamW => 2,
        OptimizerKind::Lion => 1,
    };
    // ZeRO-1: each region's shard, its moments one after the other.
    let zero: Vec<ZeroShard> = if par.zero && mesh.world() > 1 {
        let mut at = 0;
        regions
            .iter()
            .map(|&(r_lo, r_hi, group)| {
                let (ranks, index) = (par.ranks(group), place.index_in(group).unwrap_or(0));
                let s = shard(r_hi - r_lo, ranks, index);
                let stride = (r_hi - r_lo).div_ceil(ranks);
                let z = ZeroShard {
                    lo: r_lo + s.start,
                    hi: r_lo + s.end,
                    stride,
                    moments,
                    at,
                    region: (r_lo, r_hi),
                    group,
                };
                at += moments * stride;
                z
            })
            .collect()
    } else {
        Vec::new()
    };
    // Under ZeRO-1, with compute copies of every matrix (bf16 weights), the forward and backward
    // never read the matrices' masters: the rank holds only its shards of them (`Masters`).
    let masters = (!zero.is_empty() && b.precision.bf16_weights)
        .then(|| Masters::new(&zero.iter().map(|z| (z.lo, z.hi)).collect::<Vec<_>>(), embedding_end, param_len));

    b.phase = Phase::Start;
    // The weight matrices the forward and backward read, in E4M3 and bf16: made once per step,
    // at its start, from the masters the last update (or the host) left — gathered first from
    // the ranks holding their shards, when sharded.
    let source = match masters {
        Some(_) => gather_masters(b, par, &zero, embedding_end, trained),
        None => Space::Param,
    };
    for (op, args, what) in lay_out_weights(b, embedding_end, source) {
        b.launch(op, args, what);
    }
    let weight_bytes = weight_bytes(b);
    b.launch(Op::Zero { n: param_len }, vec![Arg::Raw(Slice::grad(0, param_len))], "zero gradients");
    for &(stats, _) in &out.expert_stats {
        let n = b.len(stats);
        b.launch(Op::Zero { n }, vec![Arg::T(stats)], "zero routing statistics");
    }
    for &dropped in &out.expert_dropped {
        b.launch(Op::Zero { n: 1 }, vec![Arg::T(dropped)], "zero dropped rows");
    }

    b.phase = Phase::Update;
    for &(lo, hi, group) in &regions {
        let ranks = par.ranks(group);
        if ranks > 1 && hi > lo {
            let grad = Arg::Raw(Slice::grad(lo, hi - lo));
            b.launch(
                Op::AllReduce { n: hi - lo, ranks, group },
                vec![grad],
                "gradients summed over the ranks holding them",
            );
        }
    }
    // The token embedding's copies on the first and the last stage.
    let mut copies = Vec::new();
    if let (Some(e), true) = (out.embedding, out.ends_share_embedding) {
        let (at, n) = (b.param_offsets[e], b.param_len(e));
        let grad = Arg::Raw(Slice::grad(at, n));
        b.launch(
            Op::AllReduce { n, ranks: 2, group: CommGroup::Ends },
            vec![grad],
            "the embedding's gradient, both copies",
        );
        if place.last_stage() {
            copies.push((at, at + n));
        }
    }
    if par.ranks(CommGroup::Data) > 1 {
        let ranks = par.ranks(CommGroup::Data);
        for (layer, &(stats, _)) in out.expert_stats.iter().enumerate() {
            let n = b.len(stats);
            b.context = format!("moe {layer}");
            let op = Op::AllReduce { n, ranks, group: CommGroup::Data };
            b.launch(op, vec![Arg::T(stats)], "routing statistics summed over the ranks");
        }
        b.context.clear();
    }
    let grad_norm = grad_norm_launches(b, par, &regions, &copies, trained);
    // The moments' storage: bf16 in DeepSeek-V3's recipe (the update rounds them so anyway).
    let moment = if t.bf16_moments { DType::Bf16 } else { DType::F32 };
    let update = |lo: usize, hi: usize, at: usize, stride: usize| {
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
            Arg::Raw(Slice::moments(at, n, moment)),
        ];
        if moments == 2 {
            args.push(Arg::Raw(Slice::moments(at + stride, n, moment)));
        }
        (Op::Optimizer(u), args)
    };
    let optim_len = if zero.is_empty() {
        if trained > 0 {
            let (op, args) = update(0, trained, 0, param_len);
            b.launch(op, args, "optimizer step");
        }
        moments * param_len
    } else {
        for z in zero.iter().filter(|z| z.hi > z.lo) {
            let (op, args) = update(z.lo, z.hi, z.at, z.stride);
            b.launch(op, args, "optimizer step");
        }
        // Replicated masters are gathered here; sharded ones at the next start.
        if masters.is_none() {
            gather_regions(b, par, &zero, Space::Param, "updated parameter shards gathered from the ranks");
        }
        zero.last().map_or(0, |z| z.at + moments * z.stride)
    };
    if gamma != 0.0 {
        for (layer, &(stats, bias)) in out.expert_stats.iter().enumerate() {
            let experts = b.param_len(bias);
            b.context = format!("moe {layer}");
            let args = vec![Arg::T(scalars), Arg::T(grad_norm), Arg::T(stats), b.p(bias)];
            b.launch(Op::BiasUpdate { experts, gamma }, args, "balancing bias");
        }
        b.context.clear();
    }
    let experts = spec.moe.as_ref().map_or(0, |m| m.n_routed_experts as usize);
    let rank = (mesh.world() > 1).then(|| Rank {
        place,
        zero,
        moe_layers: out.moe_layers.clone(),
        moe_total: if experts > 0 { (spec.n_moe_layers() + spec.mtp_depth()) as usize } else { 0 },
        experts,
        mtp_depth: spec.mtp_depth() as usize,
        expert_params: (0, experts_end),
        copies,
        expert_dropped: Vec::new(),
        slots: Vec::new(),
        masters,
    });
    StepIo { scalars, grad_norm, optim_len, weight_bytes, rank }
}

/// The global gradient norm (a new tensor). One device, or data parallelism alone, where every
/// rank holds every gradient: one `GradNorm` over the trained parameters. Otherwise the sums
/// of squares of this rank's parts — the routed experts' added over the expert-parallel group,
/// which holds the other experts; copies another rank counts left out — then their total added
/// over the pipeline's stages, and its root.
fn grad_norm_launches(
    b: &mut Builder,
    par: &Parallel,
    regions: &[(usize, usize, CommGroup)],
    copies: &[(usize, usize)],
    trained: usize,
) -> Tid {
    let mesh = par.place.mesh;
    if mesh.ep == 1 && mesh.pp == 1 {
        let partials = b.tensor("step.grad_norm_partials", trained.div_ceil(GRAD_NORM_CHUNK).max(1));
        let norm = b.tensor("step.grad_norm", 1);
        let grad = Arg::Raw(Slice::grad(0, trained));
        b.launch(Op::GradNorm { n: trained }, vec![grad, Arg::T(partials), Arg::T(norm)], "global gradient norm");
        return norm;
    }
    let mut parts = Vec::new();
    for &(lo, hi, group) in regions {
        let over = (group == CommGroup::ExpertData && mesh.ep > 1).then_some(CommGroup::Expert);
        let mut at = lo;
        for &(c_lo, c_hi) in copies.iter().filter(|c| c.0 >= lo && c.1 <= hi) {
            parts.push(NormPart { lo: at, hi: c_lo, over });
            at = c_hi;
        }
        parts.push(NormPart { lo: at, hi, over });
    }
    parts.retain(|p| p.hi > p.lo);
    let chunks = |p: &NormPart| (p.hi - p.lo).div_ceil(GRAD_NORM_CHUNK);
    let total: usize = parts.iter().map(chunks).sum();
    let partials = b.tensor("step.grad_norm_partials", total.max(1));
    let norm = b.tensor("step.grad_norm", 1);
    if total == 0 {
        b.launch(Op::Zero { n: 1 }, vec![Arg::T(partials)], "no gradients here");
    }
    let mut at = 0;
    for p in &parts {
        let (n, c) = (p.hi - p.lo, chunks(p));
        let part = Arg::Part { t: partials, off: at, len: c };
        b.launch(Op::SumSquares { n }, vec![Arg::Raw(Slice::grad(p.lo, n)), part], "gradient sum of squares");
        if let Some(group) = p.over {
            let ranks = par.ranks(group);
            b.launch(
                Op::AllReduce { n: c, ranks, group },
                vec![part],
                "summed over the ranks holding the other experts",
            );
        }
        at += c;
    }
    let parts = total.max(1);
    if mesh.pp == 1 {
        b.launch(Op::SumParts { parts, root: true }, vec![Arg::T(partials), Arg::T(norm)], "global gradient norm");
    } else {
        let sum = b.tensor("step.grad_sum_squares", 1);
        b.launch(
            Op::SumParts { parts, root: false },
            vec![Arg::T(partials), Arg::T(sum)],
            "this stage's sum of squares",
        );
        let op = Op::AllReduce { n: 1, ranks: mesh.pp, group: CommGroup::Pipeline };
        b.launch(op, vec![Arg::T(sum)], "summed over the stages");
        b.launch(Op::SumParts { parts: 1, root: true }, vec![Arg::T(sum), Arg::T(norm)], "global gradient norm");
    }
    norm
}
