//! The optimizer's state as checkpoints hold it: the moments (the Program's optimizer arena, `m`
//! then AdamW's `v`, each laid out like the parameters) and the step count. The update itself is
//! an op of the Program (`Op::Optimizer`, run by any backend).

use serde::{Deserialize, Serialize};

use crate::program::Program;

/// Optimizer state: first (and for AdamW second) moments, and the step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl State {
    /// The state from the optimizer arena of `p`.
    pub fn from_arena(p: &Program, step: u64, arena: &[f32]) -> State {
        let (m, v) = arena.split_at(p.param_len.min(arena.len()));
        State { step, m: m.to_vec(), v: v.to_vec() }
    }
}
