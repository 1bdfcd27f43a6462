//! dsv3c-codegen: spec -> Program.
//!
//! [`compile`] builds the forward graph of fused ops from a spec ([`model`]), derives the
//! backward op by op ([`ops`], recorded on the [`builder`]'s tape), adds the training step's own
//! launches ([`step`]: gradient zeroing, norm, optimizer, balancing bias), and lays every tensor
//! out in one arena with fixed offsets ([`plan`]). Two back ends write the result out: [`cuda`] (a
//! specialized kernel per op, carried in the Program as each kernel's device code) and [`rust`]
//! (the training graph as Rust source).

pub mod builder;
pub mod cuda;
pub mod decode;
pub mod model;
pub mod op_tokens;
pub mod ops;
pub mod plan;
pub mod rust;
pub mod step;

pub use decode::{compile_decode, DecodeShape};
pub use model::{ExpertShard, Stage};
pub use step::{Parallel, Training};

use dsv3c_runtime::Program;
use dsv3c_spec::Spec;

/// Why a spec could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("batch and sequence length must be at least 1 (got batch {batch}, seq {seq})")]
    Shape { batch: usize, seq: usize },
    #[error("sequence length {seq} exceeds the spec's max_seq_len {max}")]
    SeqTooLong { seq: usize, max: u64 },
    #[error("batch·seq = {0} tokens is more than 2^24, the largest count the plan indexes exactly")]
    TooManyTokens(usize),
    #[error("rank {rank} of a job of {ranks} ranks")]
    Rank { rank: usize, ranks: usize },
    #[error("FP8 caching keeps activations in the FP8 recipe's E4M3 tiles, but spec `{0}` has no precision.fp8")]
    Fp8Cache(String),
    #[error("parallel layout {mesh}: {why}")]
    Layout { mesh: dsv3c_runtime::comm::Mesh, why: String },
    #[error("internal error: the plan broke an invariant: {0}")]
    Plan(#[from] dsv3c_runtime::program::ProgramError),
}

/// Compiles `spec` into a training Program for `batch` sequences of `seq` tokens, with AdamW and
/// f32 moments (see [`compile_training`]).
pub fn compile(spec: &Spec, batch: usize, seq: usize) -> Result<Program, CompileError> {
    compile_training(spec, batch, seq, Training::default())
}

/// Compiles `spec` into a training Program for `batch` sequences of `seq` tokens whose update
/// step runs `training`'s optimizer.
pub fn compile_training(spec: &Spec, batch: usize, seq: usize, training: Training) -> Result<Program, CompileError> {
    compile_rank(spec, batch, seq, training, Parallel::SINGLE)
}

/// Compiles `spec` into the training Program of one rank of a parallel job (`par`): `batch`
/// sequences of `seq` tokens per micro-batch on this rank; its pipeline stage's layers (the
/// embedding on the first stage, the head and MTP modules on the last), its shard of the routed
/// experts, the exchanges and messages between ranks as collective ops, and a step that sums what
/// the ranks share ([`step::build`]). A pipeline stage builds its layers once per micro-batch it
/// keeps in flight under 1F1B. A job of one rank is the single-device program.
pub fn compile_rank(
    spec: &Spec,
    batch: usize,
    seq: usize,
    training: Training,
    par: Parallel,
) -> Result<Program, CompileError> {
    let (mesh, place) = (par.place.mesh, par.place);
    if mesh.world() == 0 || place.rank >= mesh.world() {
        return Err(CompileError::Rank { rank: place.rank, ranks: mesh.world() });
    }
    let layout = |why: String| CompileError::Layout { mesh, why };
    mesh.check().map_err(layout)?;
    let experts = spec.moe.as_ref().map_or(0, |m| m.n_routed_experts as usize);
    if mesh.ep > 1 && (experts == 0 || !experts.is_multiple_of(mesh.ep)) {
        return Err(layout(format!("ep = {} does not divide the {experts} routed experts", mesh.ep)));
    }
    if mesh.pp as u64 > spec.n_layers {
        return Err(layout(format!("pp = {} exceeds the {} layers", mesh.pp, spec.n_layers)));
    }
    if batch == 0 || seq == 0 {
        return Err(CompileError::Shape { batch, seq });
    }
    if training.fp8_cache && spec.precision.fp8.is_none() {
        return Err(CompileError::Fp8Cache(spec.name.clone()));
    }
    if seq as u64 > spec.max_seq_len {
        return Err(CompileError::SeqTooLong { seq, max: spec.max_seq_len });
    }
    let top_k = spec.moe.as_ref().map_or(1, |m| m.top_k as usize);
    // Every count and offset the program holds is below 2^24 (exact in f32): routed rows, and
    // the rows an expert-parallel rank receives.
    if batch * seq * top_k * mesh.ep >= 1 << 24 {
        return Err(CompileError::TooManyTokens(batch * seq));
    }
    let stage = Stage {
        layers: dsv3c_spec::memory::stage_layers(spec.n_layers, mesh.pp as u64, place.stage() as u64),
        first: place.first_stage(),
        last: place.last_stage(),
        experts: (mesh.ep > 1).then_some(ExpertShard {
            ranks: mesh.ep,
            rank: place.ep_rank(),
            capacity_factor: par.expert_capacity,
        }),
    };
    let mut b = builder::Builder::default();
    b.experts_first = mesh.ep > 1;
    b.recompute = training.recompute;
    b.fp8_cache = training.fp8_cache;
    // A stage keeps up to `pp - stage` micro-batches in flight under 1F1B (the last stage one).
    let slots = if mesh.pp > 1 { (mesh.pp - place.stage()).min(par.micro_batches.max(1)) } else { 1 };
    let mut outs = Vec::with_capacity(slots);
    for _ in 0..slots {
        b.phase = builder::Phase::Forward;
        outs.push(model::build(&mut b, spec, batch, seq, &stage));
        b.backward();
        if mesh.pp > 1 {
            let lists = (std::mem::take(&mut b.forward), std::mem::take(&mut b.backward));
            b.slots.push(lists);
        }
    }
    let io = step::build(&mut b, &outs[0], training, spec, &par);
    let mut program = plan::plan(b, &outs, &io, &spec.name, batch, seq).map_err(CompileError::Plan)?;
    // The device payload: every kernel's CUDA source and launch geometry, or why the CUDA back end
    // has none for it.
    for k in &mut program.kernels {
        k.device = cuda::device_code(k);
    }
    Ok(program)
}
