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
pub use step::{DataParallel, Training};

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
    #[error("rank {rank} of a job of {ranks} data-parallel ranks")]
    Rank { rank: usize, ranks: usize },
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
    compile_rank(spec, batch, seq, training, DataParallel::SINGLE)
}

/// Compiles `spec` into the training Program of one data-parallel rank: `batch` sequences of
/// `seq` tokens per micro-batch on this rank, the gradients and routing statistics summed over
/// the ranks in the update, and with ZeRO-1 the optimizer over this rank's shard
/// ([`step::build`]). A job of one rank is the single-device program.
pub fn compile_rank(
    spec: &Spec,
    batch: usize,
    seq: usize,
    training: Training,
    dp: DataParallel,
) -> Result<Program, CompileError> {
    if dp.ranks == 0 || dp.rank >= dp.ranks {
        return Err(CompileError::Rank { rank: dp.rank, ranks: dp.ranks });
    }
    if batch == 0 || seq == 0 {
        return Err(CompileError::Shape { batch, seq });
    }
    if seq as u64 > spec.max_seq_len {
        return Err(CompileError::SeqTooLong { seq, max: spec.max_seq_len });
    }
    let top_k = spec.moe.as_ref().map_or(1, |m| m.top_k as usize);
    if batch * seq * top_k >= 1 << 24 {
        return Err(CompileError::TooManyTokens(batch * seq));
    }
    let mut b = builder::Builder::default();
    let out = model::build(&mut b, spec, batch, seq);
    b.backward();
    let gamma = spec.moe.as_ref().map_or(0.0, |m| m.bias_update_speed as f32);
    let io = step::build(&mut b, &out, training, gamma, dp);
    let mut program = plan::plan(b, &out, &io, &spec.name, batch, seq).map_err(CompileError::Plan)?;
    // The device payload: every kernel's CUDA source and launch geometry, or why the CUDA back end
    // has none for it.
    for k in &mut program.kernels {
        k.device = cuda::device_code(k);
    }
    Ok(program)
}
