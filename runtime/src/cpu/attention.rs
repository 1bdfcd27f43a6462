//! Causal MLA attention (optionally sliding-window with sink tokens), forward and backward.
//!
//! Per head h: `Q = q[.., h, :]` (nope | rope), `K_j = [kvb[j, h, :nope] ; kpe_j]` with the
//! roped key shared by all heads, `V_j = kvb[j, h, nope:]`. Scores `s_ij = scale·Q_i·K_j` over
//! visible keys, softmax with a saved log-sum-exp, `O_i = Σ_j p_ij V_j`. The backward recomputes
//! `p_ij` from the log-sum-exp: one pass over queries for dQ, one over keys for dK and dV (each
//! key row sums over its queries and heads in order, so no atomics and no nondeterminism).

use rayon::prelude::*;

use super::math::{dot, exp};
use crate::op::Attn;

/// Is key `j` visible from query `i`?
#[inline]
pub fn visible(a: &Attn, i: usize, j: usize) -> bool {
    j <= i
        && match a.window {
            None => true,
            Some((w, sinks)) => i - j < w || j < sinks,
        }
}

struct View<'a> {
    a: &'a Attn,
    q: &'a [f32],
    kvb: &'a [f32],
    kva: &'a [f32],
}

impl View<'_> {
    fn dqk(&self) -> usize {
        self.a.nope + self.a.rope
    }
    fn q(&self, b: usize, i: usize, h: usize) -> &[f32] {
        let a = self.a;
        let at = ((b * a.seq + i) * a.heads + h) * self.dqk();
        &self.q[at..at + self.dqk()]
    }
    fn kv(&self, b: usize, j: usize, h: usize) -> &[f32] {
        let a = self.a;
        let at = ((b * a.seq + j) * a.heads + h) * (a.nope + a.v);
        &self.kvb[at..at + a.nope + a.v]
    }
    fn kpe(&self, b: usize, j: usize) -> &[f32] {
        let a = self.a;
        let at = (b * a.seq + j) * a.kpe_stride + a.kpe_offset;
        &self.kva[at..at + a.rope]
    }
    /// `scale · Q_i · K_j`.
    fn score(&self, b: usize, i: usize, j: usize, h: usize) -> f32 {
        let a = self.a;
        let (q, kv, kpe) = (self.q(b, i, h), self.kv(b, j, h), self.kpe(b, j));
        a.scale * (dot(&q[..a.nope], &kv[..a.nope]) + dot(&q[a.nope..], kpe))
    }
}

/// `[q, kvb, kva] -> [o, lse]`; o `[b,t,h,v]`, lse `[b,t,h]`.
pub fn forward(a: &Attn, q: &[f32], kvb: &[f32], kva: &[f32], o: &mut [f32], lse: &mut [f32]) {
    let view = View { a, q, kvb, kva };
    o.par_chunks_mut(a.v).zip(lse.par_iter_mut()).enumerate().for_each_init(
        || vec![0.0f32; a.seq],
        |scores, (row, (o, lse))| {
            let h = row % a.heads;
            let i = (row / a.heads) % a.seq;
            let b = row / (a.heads * a.seq);
            let mut max = f32::NEG_INFINITY;
            for j in 0..=i {
                if visible(a, i, j) {
                    scores[j] = view.score(b, i, j, h);
                    max = max.max(scores[j]);
                }
            }
            let mut sum = 0.0f32;
            for j in 0..=i {
                if visible(a, i, j) {
                    scores[j] = exp(scores[j] - max);
                    sum += scores[j];
                }
            }
            o.fill(0.0);
            for j in 0..=i {
                if visible(a, i, j) {
                    let p = scores[j] / sum;
                    for (o, v) in o.iter_mut().zip(&view.kv(b, j, h)[a.nope..]) {
                        *o += p * v;
                    }
                }
            }
            *lse = max + sum.ln();
        },
    );
}

/// `[q, kvb, kva, o, lse, do]` in; `[dq, dkvb, dkva]` accumulated.
pub fn backward(a: &Attn, inp: [&[f32]; 6], out: [&mut [f32]; 3]) {
    let [q, kvb, kva, o, lse, dout] = inp;
    let [dq, dkvb, dkva] = out;
    let view = View { a, q, kvb, kva };
    let (h_n, t_n, dqk, dkv) = (a.heads, a.seq, a.nope + a.rope, a.nope + a.v);
    let row = |b: usize, i: usize, h: usize| (b * t_n + i) * h_n + h;
    // D_i = dO_i · O_i, per (b, i, h).
    let dd: Vec<f32> = (0..a.batch * t_n * h_n)
        .into_par_iter()
        .map(|r| dot(&dout[r * a.v..(r + 1) * a.v], &o[r * a.v..(r + 1) * a.v]))
        .collect();
    // dS_ij = p_ij (dO_i · V_j − D_i), p_ij = exp(s_ij − lse_i).
    let ds = |b: usize, i: usize, j: usize, h: usize| {
        let r = row(b, i, h);
        let p = exp(view.score(b, i, j, h) - lse[r]);
        let dp = dot(&dout[r * a.v..(r + 1) * a.v], &view.kv(b, j, h)[a.nope..]);
        (p, p * (dp - dd[r]))
    };
    // Pass 1: dQ_i = scale Σ_j dS_ij K_j, one (b, i) row of all heads per task.
    dq.par_chunks_mut(h_n * dqk).enumerate().for_each(|(bi, dq)| {
        let (b, i) = (bi / t_n, bi % t_n);
        for h in 0..h_n {
            let dqh = &mut dq[h * dqk..(h + 1) * dqk];
            for j in (0..=i).filter(|&j| visible(a, i, j)) {
                let (_, g) = ds(b, i, j, h);
                let g = g * a.scale;
                for (d, k) in dqh[..a.nope].iter_mut().zip(&view.kv(b, j, h)[..a.nope]) {
                    *d += g * k;
                }
                for (d, k) in dqh[a.nope..].iter_mut().zip(view.kpe(b, j)) {
                    *d += g * k;
                }
            }
        }
    });
    // Pass 2: dK_j = scale Σ_i dS_ij Q_i, dV_j = Σ_i p_ij dO_i; the shared kpe sums over heads.
    dkvb.par_chunks_mut(h_n * dkv).zip(dkva.par_chunks_mut(a.kpe_stride)).enumerate().for_each(
        |(bj, (dkv_row, dkpe_row))| {
            let (b, j) = (bj / t_n, bj % t_n);
            let dkpe = &mut dkpe_row[a.kpe_offset..a.kpe_offset + a.rope];
            for h in 0..h_n {
                let dkvh = &mut dkv_row[h * dkv..(h + 1) * dkv];
                for i in (j..t_n).filter(|&i| visible(a, i, j)) {
                    let (p, g) = ds(b, i, j, h);
                    let g = g * a.scale;
                    let qi = view.q(b, i, h);
                    for (d, x) in dkvh[..a.nope].iter_mut().zip(&qi[..a.nope]) {
                        *d += g * x;
                    }
                    for (d, x) in dkpe.iter_mut().zip(&qi[a.nope..]) {
                        *d += g * x;
                    }
                    let r = row(b, i, h);
                    for (d, x) in dkvh[a.nope..].iter_mut().zip(&dout[r * a.v..(r + 1) * a.v]) {
                        *d += p * x;
                    }
                }
            }
        },
    );
}
