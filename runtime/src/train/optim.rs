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
    /// Fresh (zero) state for `p`.
    pub fn new(p: &Program) -> State {
        let n = p.param_len;
        State { step: 0, m: vec![0.0; n], v: vec![0.0; p.optim_len - n.min(p.optim_len)] }
    }

    /// The state as the optimizer arena of `p` holds it (`m`, then `v`), or why it does not fit.
    pub fn arena(&self, p: &Program) -> Result<Vec<f32>, StateMismatch> {
        if self.m.len() != p.param_len || self.m.len() + self.v.len() != p.optim_len {
            return Err(StateMismatch { m: self.m.len(), v: self.v.len(), arena: p.optim_len, params: p.param_len });
        }
        Ok(self.m.iter().chain(&self.v).copied().collect())
    }

    /// The state from the optimizer arena of `p`.
    pub fn from_arena(p: &Program, step: u64, arena: &[f32]) -> State {
        let (m, v) = arena.split_at(p.param_len.min(arena.len()));
        State { step, m: m.to_vec(), v: v.to_vec() }
    }
}

/// Optimizer state that does not fit a Program's optimizer arena.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("moments of {m} + {v} values, the program's optimizer holds {arena} ({params} parameters)")]
pub struct StateMismatch {
    pub m: usize,
    pub v: usize,
    pub arena: usize,
    pub params: usize,
}
