//! dsv3c-codegen: spec -> Program.
//!
//! [`compile`] builds the forward graph of fused ops from a spec ([`model`]), derives the
//! backward op by op ([`ops`], recorded on the [`builder`]'s tape), and lays every tensor out in
//! one arena with fixed offsets ([`plan`]). Two back ends write the result out: [`cuda`] (a
//! specialized kernel per op) and [`rust`] (the training graph as Rust source).

pub mod builder;
pub mod cuda;
pub mod model;
pub mod ops;
pub mod plan;
pub mod rust;

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
    #[error("internal error: the plan broke an invariant: {0}")]
    Plan(String),
}

/// Compiles `spec` into a training Program for `batch` sequences of `seq` tokens.
pub fn compile(spec: &Spec, batch: usize, seq: usize) -> Result<Program, CompileError> {
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
    plan::plan(b, &out, &spec.name, batch, seq).map_err(CompileError::Plan)
}
