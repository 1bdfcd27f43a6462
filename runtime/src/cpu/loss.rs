//! Losses: the fused next-token cross-entropy (its gradient overwrites the logits) and the
//! sequence-wise MoE balance loss.

use rayon::prelude::*;

use super::dense::token;
use super::math::{exp, max};
use super::moe::expert_index;
use crate::op::{Balance, Score};

/// Mean cross-entropy over positions `i` with `i + shift < seq`; writes the loss and replaces
/// each logits row with `grad_scale · (softmax − onehot) / n_valid` (zero on invalid rows).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy(
    logits: &mut [f32],
    tokens: &[f32],
    loss: &mut [f32],
    batch: usize,
    seq: usize,
    vocab: usize,
    shift: usize,
    grad_scale: f32,
) {
    let valid = batch * seq.saturating_sub(shift);
    let inv_n = 1.0 / valid.max(1) as f32;
    let per_row: Vec<f64> = logits
        .par_chunks_mut(vocab)
        .enumerate()
        .take(batch * seq)
        .map(|(r, row)| {
            let (b, i) = (r / seq, r % seq);
            let label = if i + shift < seq { token(tokens[b * seq + i + shift], vocab) } else { None };
            let Some(label) = label else {
                row.fill(0.0);
                return if i + shift < seq { f64::NAN } else { 0.0 };
            };
            let max = max(row);
            let target = row[label];
            // e^(v - max) in place (the gradient overwrites the row) and summed in f64, eight
            // lanes at a time, in one pass so that it vectorizes.
            let mut lanes = [0.0f64; 8];
            let mut chunks = row.chunks_exact_mut(8);
            for c in &mut chunks {
                for (l, v) in lanes.iter_mut().zip(c) {
                    *v = exp(*v - max);
                    *l += *v as f64;
                }
            }
            let mut rest = 0.0f64;
            for v in chunks.into_remainder() {
                *v = exp(*v - max);
                rest += *v as f64;
            }
            let sum = lanes.iter().sum::<f64>() + rest;
            let l = max as f64 + sum.ln() - target as f64;
            let g = (grad_scale as f64 * inv_n as f64 / sum) as f32;
            row.iter_mut().for_each(|v| *v *= g);
            row[label] -= grad_scale * inv_n;
            l
        })
        .collect();
    loss[0] = (per_row.iter().sum::<f64>() / valid.max(1) as f64) as f32;
}

/// Each token's scores normalized over experts (`s' = s / Σ s` for sigmoid; softmax already is).
fn score_sum(score: Score, s: &[f32]) -> f32 {
    match score {
        Score::Sigmoid => s.iter().sum::<f32>(),
        Score::Softmax => 1.0,
    }
}

/// Per sequence, the fraction-of-load factors `f_i = E/(K·T) · #tokens choosing i`.
fn load_factors(b: &Balance, idx: &[f32], seq_b: usize) -> Vec<f32> {
    let mut f = vec![0.0f32; b.experts];
    for t in 0..b.seq {
        for s in 0..b.top_k {
            f[expert_index(idx[(seq_b * b.seq + t) * b.top_k + s], b.experts)] += 1.0;
        }
    }
    let c = b.experts as f32 / (b.top_k * b.seq) as f32;
    f.iter_mut().for_each(|v| *v *= c);
    f
}

/// `loss += mean over sequences of α Σ_i f_i P_i`, `P_i = mean_t s'_{i,t}`.
pub fn balance(b: &Balance, scores: &[f32], idx: &[f32], loss: &mut [f32]) {
    let e = b.experts;
    let mut total = 0.0f64;
    for sq in 0..b.batch {
        let f = load_factors(b, idx, sq);
        let mut p = vec![0.0f32; e];
        for t in 0..b.seq {
            let s = &scores[(sq * b.seq + t) * e..(sq * b.seq + t + 1) * e];
            let z = score_sum(b.score, s);
            for i in 0..e {
                p[i] += s[i] / z / b.seq as f32;
            }
        }
        total += (b.alpha * f.iter().zip(&p).map(|(f, p)| f * p).sum::<f32>()) as f64;
    }
    loss[0] += (total / b.batch as f64) as f32;
}

/// `dscores += grad_scale · ∂loss/∂scores`.
pub fn balance_bwd(b: &Balance, grad_scale: f32, scores: &[f32], idx: &[f32], dscores: &mut [f32]) {
    let e = b.experts;
    let c = grad_scale * b.alpha / (b.batch * b.seq) as f32;
    for sq in 0..b.batch {
        let f = load_factors(b, idx, sq);
        for t in 0..b.seq {
            let r = (sq * b.seq + t) * e;
            let s = &scores[r..r + e];
            match b.score {
                Score::Sigmoid => {
                    let z = s.iter().sum::<f32>();
                    let fs: f32 = f.iter().zip(s).map(|(f, s)| f * s).sum();
                    for j in 0..e {
                        dscores[r + j] += c * (f[j] / z - fs / (z * z));
                    }
                }
                Score::Softmax => {
                    for j in 0..e {
                        dscores[r + j] += c * f[j];
                    }
                }
            }
        }
    }
}
