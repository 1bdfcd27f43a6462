//! Optimizers over the parameter arena: AdamW (bias-corrected, decoupled weight decay) and Lion,
//! with moments in f32 or emulated bf16; the global gradient norm and clipping. Parameters keep
//! an f32 master copy (the arena itself). Reductions use fixed chunks summed in order, so the
//! result does not depend on the thread count.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::numerics::bf16_round;
use crate::program::{ParamGroup, Program};
use dsv3c_spec::config::{Optimizer as Settings, OptimizerKind};
use dsv3c_spec::types::Dtype;

const CHUNK: usize = 1 << 14;

/// Optimizer state: first (and for AdamW second) moments, and the step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl State {
    pub fn new(params: usize, kind: OptimizerKind) -> State {
        State {
            step: 0,
            m: vec![0.0; params],
            v: if kind == OptimizerKind::Adamw { vec![0.0; params] } else { Vec::new() },
        }
    }
}

/// Per-element mask of the parameters that are trained (1), decayed (2), both (3) or frozen (0).
pub fn masks(p: &Program, decay_embeddings: bool) -> Vec<u8> {
    let mut m = vec![0u8; p.param_len];
    for prm in &p.params {
        let flag = match prm.group {
            ParamGroup::Frozen => 0,
            ParamGroup::NoDecay => 1,
            ParamGroup::Decay => 3,
            ParamGroup::Embedding => 1 | if decay_embeddings { 2 } else { 0 },
        };
        m[prm.offset..prm.offset + prm.len()].fill(flag);
    }
    m
}

/// `sqrt(Σ g²)` over trained parameters, deterministic.
pub fn grad_norm(grads: &[f32], mask: &[u8]) -> f64 {
    let parts: Vec<f64> = grads
        .par_chunks(CHUNK)
        .zip(mask.par_chunks(CHUNK))
        .map(|(g, m)| g.iter().zip(m).filter(|(_, &m)| m != 0).map(|(g, _)| (*g as f64) * (*g as f64)).sum())
        .collect();
    parts.iter().sum::<f64>().sqrt()
}

/// Multiplies the gradients by `factor` (accumulation averaging and clipping).
pub fn scale(grads: &mut [f32], factor: f32) {
    if factor != 1.0 {
        grads.par_iter_mut().for_each(|g| *g *= factor);
    }
}

/// Global-norm clipping: scales the gradients by `max_norm / norm` when their norm (over trained
/// parameters) exceeds `max_norm > 0`. Returns the norm before clipping.
pub fn clip(grads: &mut [f32], mask: &[u8], max_norm: f64) -> f64 {
    let norm = grad_norm(grads, mask);
    if max_norm > 0.0 && norm > max_norm {
        scale(grads, (max_norm / norm) as f32);
    }
    norm
}

/// One optimizer step at learning rate `lr`.
pub fn step(s: &Settings, state: &mut State, params: &mut [f32], grads: &[f32], mask: &[u8], lr: f64) {
    state.step += 1;
    let (b1, b2, eps, wd) = (s.beta1, s.beta2, s.eps, s.weight_decay);
    let bf16 = s.moments == Dtype::Bf16;
    let round = |x: f32| if bf16 { bf16_round(x) } else { x };
    let t = state.step as i32;
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    match s.kind {
        OptimizerKind::Adamw => {
            params
                .par_chunks_mut(CHUNK)
                .zip(grads.par_chunks(CHUNK))
                .zip(mask.par_chunks(CHUNK))
                .zip(state.m.par_chunks_mut(CHUNK).zip(state.v.par_chunks_mut(CHUNK)))
                .for_each(|(((p, g), mk), (m, v))| {
                    for i in 0..p.len() {
                        if mk[i] == 0 {
                            continue;
                        }
                        let gi = g[i] as f64;
                        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
                        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
                        m[i] = round(mi as f32);
                        v[i] = round(vi as f32);
                        let update =
                            (mi / c1) / ((vi / c2).sqrt() + eps) + if mk[i] & 2 != 0 { wd * p[i] as f64 } else { 0.0 };
                        p[i] = (p[i] as f64 - lr * update) as f32;
                    }
                });
        }
        OptimizerKind::Lion => {
            params
                .par_chunks_mut(CHUNK)
                .zip(grads.par_chunks(CHUNK))
                .zip(mask.par_chunks(CHUNK))
                .zip(state.m.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), mk), m)| {
                    for i in 0..p.len() {
                        if mk[i] == 0 {
                            continue;
                        }
                        let (gi, mi) = (g[i] as f64, m[i] as f64);
                        let c = b1 * mi + (1.0 - b1) * gi;
                        let update =
                            c.signum() * (c != 0.0) as u8 as f64 + if mk[i] & 2 != 0 { wd * p[i] as f64 } else { 0.0 };
                        p[i] = (p[i] as f64 - lr * update) as f32;
                        m[i] = round((b2 * mi + (1.0 - b2) * gi) as f32);
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: OptimizerKind) -> Settings {
        Settings {
            kind,
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_embeddings: false,
            moments: Dtype::F32,
            grad_clip: 0.0,
        }
    }

    #[test]
    fn both_optimizers_minimize_a_quadratic() {
        for kind in [OptimizerKind::Adamw, OptimizerKind::Lion] {
            let s = settings(kind);
            let mut p = vec![3.0f32, -2.0, 0.5];
            let mut st = State::new(3, kind);
            let mask = vec![1u8; 3];
            for _ in 0..400 {
                let g: Vec<f32> = p.iter().map(|x| 2.0 * x).collect();
                step(&s, &mut st, &mut p, &g, &mask, 0.02);
            }
            assert!(p.iter().all(|x| x.abs() < 0.1), "{kind:?}: {p:?}");
        }
    }

    #[test]
    fn frozen_parameters_do_not_move_and_adamw_first_step_is_lr() {
        let s = settings(OptimizerKind::Adamw);
        let mut p = vec![1.0f32, 1.0];
        let mut st = State::new(2, OptimizerKind::Adamw);
        step(&s, &mut st, &mut p, &[0.5, 0.5], &[1, 0], 0.1);
        assert!((p[0] - 0.9).abs() < 1e-6, "bias-corrected first step moves by lr: {}", p[0]);
        assert_eq!(p[1], 1.0);
    }
}
