//! Causal MLA attention (optionally sliding-window with sink tokens), forward and backward, on
//! GEMM-shaped tiles.
//!
//! Per head h: `Q = q[.., h, :]` (nope | rope), `K_j = [kvb[j, h, :nope] ; kpe_j]` with the
//! roped key shared by all heads, `V_j = kvb[j, h, nope:]`. Scores `s_ij = scale·Q_i·K_j` over
//! visible keys, softmax with a saved log-sum-exp, `O_i = Σ_j p_ij V_j`.
//!
//! A tile is [`QUERY_TILE`] queries of one sequence and head against every key one of them sees
//! (one range of keys, two with a window's sinks): its scores `S = Q_nope·K_nopeᵀ + Q_rope·kpeᵀ`,
//! `O = P·V`, and in the backward `dP = dO·Vᵀ`, `dS = P∘(dP − D)`, `dQ += scale·dS·K`,
//! `dK += scale·dSᵀ·Q`, `dV += Pᵀ·dO` are GEMMs on the operands where they lie (strided rows of
//! `q`, `kvb`, `kva`), each on its task's thread. The backward recomputes `P` from the
//! log-sum-exp. Tasks: (sequence, query tile) in the forward; a sequence in the backward, whose
//! heads run in order, so the shared key's gradient sums over heads in one order: no atomics and
//! the same bits on any number of threads.

use std::ops::Range;

use rayon::prelude::*;

use super::dense::{gemm_serial, GemmShape};
use super::math::{dot, exp};
use crate::op::{Attn, Quant};

/// Queries per tile: its score rows.
pub const QUERY_TILE: usize = 64;

/// Is key `j` visible from query `i`?
#[inline]
pub fn visible(a: &Attn, i: usize, j: usize) -> bool {
    j <= i
        && match a.window {
            None => true,
            Some((w, sinks)) => i - j < w || j < sinks,
        }
}

/// The keys that some query of `queries` sees: the sinks left of the window, then the window (the
/// whole causal prefix without one). Both ranges may hold keys a given query does not see.
fn key_ranges(a: &Attn, queries: &Range<usize>) -> [Range<usize>; 2] {
    match a.window {
        None => [0..0, 0..queries.end],
        Some((w, sinks)) => {
            let lo = (queries.start + 1).saturating_sub(w);
            [0..sinks.min(lo), lo..queries.end]
        }
    }
}

/// An operand of a tile's GEMM: a matrix at `at` in `data` with rows `ld` apart, transposed.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    at: usize,
    ld: usize,
    t: bool,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], at: usize, ld: usize) -> Mat<'a> {
        Mat { data, at, ld, t: false }
    }
    fn transposed(self) -> Mat<'a> {
        Mat { t: !self.t, ..self }
    }
}

/// `C (+)= A·B` with A `[m, k]`, B `[k, n]`, C `[m, n]` at `c[at..]` with rows `ldc` apart.
fn mm(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: (&mut [f32], usize, usize), accumulate: bool) {
    let (c, at, ldc) = c;
    let s = GemmShape { m, n, k, lda: a.ld, ldb: b.ld, ldc, ta: a.t, tb: b.t, accumulate, quant: Quant::None };
    gemm_serial(s, &a.data[a.at..], &b.data[b.at..], &mut c[at..]);
}

/// Where each head's rows lie in the op's operands.
struct View<'a> {
    a: &'a Attn,
    q: &'a [f32],
    kvb: &'a [f32],
    kva: &'a [f32],
}

impl<'a> View<'a> {
    fn dqk(&self) -> usize {
        self.a.nope + self.a.rope
    }
    fn dkv(&self) -> usize {
        self.a.nope + self.a.v
    }
    /// `Q` (nope | rope) of queries from `i` of sequence `b`, head `h`.
    fn q(&self, b: usize, i: usize, h: usize) -> Mat<'a> {
        let a = self.a;
        Mat::rows(self.q, ((b * a.seq + i) * a.heads + h) * self.dqk(), a.heads * self.dqk())
    }
    /// `K_nope` (and `V` `nope` further on) of keys from `j`.
    fn kv(&self, b: usize, j: usize, h: usize) -> Mat<'a> {
        let a = self.a;
        Mat::rows(self.kvb, ((b * a.seq + j) * a.heads + h) * self.dkv(), a.heads * self.dkv())
    }
    fn v(&self, b: usize, j: usize, h: usize) -> Mat<'a> {
        let m = self.kv(b, j, h);
        Mat { at: m.at + self.a.nope, ..m }
    }
    /// The shared roped key of keys from `j`.
    fn kpe(&self, b: usize, j: usize) -> Mat<'a> {
        let a = self.a;
        Mat::rows(self.kva, (b * a.seq + j) * a.kpe_stride + a.kpe_offset, a.kpe_stride)
    }

    /// The unscaled scores `Q·Kᵀ` of `queries` against the keys of `ranges` (columns in range
    /// order) into `s` (`rows × cols`).
    fn scores(&self, b: usize, h: usize, queries: &Range<usize>, ranges: &[Range<usize>; 2], s: &mut [f32]) {
        let (a, rows) = (self.a, queries.len());
        let cols: usize = ranges.iter().map(|r| r.len()).sum();
        let q = self.q(b, queries.start, h);
        let mut c0 = 0;
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            mm(rows, r.len(), a.nope, q, self.kv(b, r.start, h).transposed(), (s, c0, cols), false);
            let q_rope = Mat { at: q.at + a.nope, ..q };
            mm(rows, r.len(), a.rope, q_rope, self.kpe(b, r.start).transposed(), (s, c0, cols), true);
            c0 += r.len();
        }
    }
}

/// The key of column `c` of a tile over `ranges`.
#[inline]
fn key(ranges: &[Range<usize>; 2], c: usize) -> usize {
    let first = ranges[0].len();
    if c < first {
        ranges[0].start + c
    } else {
        ranges[1].start + c - first
    }
}

/// The tiles of sequences of `seq` tokens: (sequence, queries) in order.
fn tiles(batch: usize, seq: usize) -> Vec<(usize, Range<usize>)> {
    (0..batch)
        .flat_map(|b| (0..seq.div_ceil(QUERY_TILE)).map(move |t| (b, t * QUERY_TILE..((t + 1) * QUERY_TILE).min(seq))))
        .collect()
}

/// `[q, kvb, kva] -> [o, lse]`; o `[b,t,h,v]`, lse `[b,t,h]`.
pub fn forward(a: &Attn, q: &[f32], kvb: &[f32], kva: &[f32], o: &mut [f32], lse: &mut [f32]) {
    let view = View { a, q, kvb, kva };
    let (h_n, v) = (a.heads, a.v);
    // Each tile's rows of o and lse, split off in tile order.
    let (mut o_rest, mut lse_rest) = (o, lse);
    let mut work = Vec::new();
    for (b, queries) in tiles(a.batch, a.seq) {
        let (o_tile, o_next) = std::mem::take(&mut o_rest).split_at_mut(queries.len() * h_n * v);
        let (lse_tile, lse_next) = std::mem::take(&mut lse_rest).split_at_mut(queries.len() * h_n);
        (o_rest, lse_rest) = (o_next, lse_next);
        work.push((b, queries, o_tile, lse_tile));
    }
    work.into_par_iter().for_each_init(Vec::new, |p, (b, queries, o, lse)| {
        let ranges = key_ranges(a, &queries);
        let cols: usize = ranges.iter().map(|r| r.len()).sum();
        p.resize(queries.len() * cols, 0.0);
        o.fill(0.0);
        for h in 0..h_n {
            view.scores(b, h, &queries, &ranges, p);
            // Softmax of each row over its visible keys, in place: P.
            for (r, i) in queries.clone().enumerate() {
                let row = &mut p[r * cols..(r + 1) * cols];
                let mut max = f32::NEG_INFINITY;
                for (c, s) in row.iter_mut().enumerate() {
                    *s = if visible(a, i, key(&ranges, c)) { a.scale * *s } else { f32::NEG_INFINITY };
                    max = max.max(*s);
                }
                let mut sum = 0.0f32;
                for s in row.iter_mut() {
                    *s = exp(*s - max);
                    sum += *s;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|s| *s *= inv);
                lse[r * h_n + h] = max + sum.ln();
            }
            // O = P·V.
            let mut c0 = 0;
            for range in ranges.iter().filter(|r| !r.is_empty()) {
                let pr = Mat::rows(p, c0, cols);
                mm(queries.len(), v, range.len(), pr, view.v(b, range.start, h), (o, h * v, h_n * v), true);
                c0 += range.len();
            }
        }
    });
}

/// `[q, kvb, kva, o, lse, do]` in; `[dq, dkvb, dkva]` accumulated.
pub fn backward(a: &Attn, inp: [&[f32]; 6], out: [&mut [f32]; 3]) {
    let [q, kvb, kva, o, lse, dout] = inp;
    let [dq, dkvb, dkva] = out;
    let view = View { a, q, kvb, kva };
    let (h_n, t_n, dqk, dkv, v) = (a.heads, a.seq, a.nope + a.rope, a.nope + a.v, a.v);
    // D_i = dO_i · O_i, per (b, i, h).
    let dd: Vec<f32> = (0..a.batch * t_n * h_n)
        .into_par_iter()
        .map(|r| dot(&dout[r * v..(r + 1) * v], &o[r * v..(r + 1) * v]))
        .collect();
    // One task per sequence: its rows of dq, dkvb and dkva are its own.
    dq.par_chunks_mut(t_n * h_n * dqk)
        .zip(dkvb.par_chunks_mut(t_n * h_n * dkv))
        .zip(dkva.par_chunks_mut(t_n * a.kpe_stride))
        .take(a.batch)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, ds), (b, ((dq, dkv_b), dkpe))| {
                for h in 0..h_n {
                    for (_, queries) in tiles(1, t_n) {
                        let ranges = key_ranges(a, &queries);
                        let cols: usize = ranges.iter().map(|r| r.len()).sum();
                        let rows = queries.len();
                        p.resize(rows * cols, 0.0);
                        ds.resize(rows * cols, 0.0);
                        view.scores(b, h, &queries, &ranges, p);
                        // dP = dO·Vᵀ.
                        let d_o = Mat::rows(dout, ((b * t_n + queries.start) * h_n + h) * v, h_n * v);
                        let mut c0 = 0;
                        for range in ranges.iter().filter(|r| !r.is_empty()) {
                            mm(
                                rows,
                                range.len(),
                                v,
                                d_o,
                                view.v(b, range.start, h).transposed(),
                                (ds, c0, cols),
                                false,
                            );
                            c0 += range.len();
                        }
                        // P from the log-sum-exp; dS = scale · P∘(dP − D).
                        for (r, i) in queries.clone().enumerate() {
                            let at = (b * t_n + i) * h_n + h;
                            let (l, d) = (lse[at], dd[at]);
                            for c in 0..cols {
                                let x = r * cols + c;
                                let pv = if visible(a, i, key(&ranges, c)) { exp(a.scale * p[x] - l) } else { 0.0 };
                                p[x] = pv;
                                ds[x] = a.scale * pv * (ds[x] - d);
                            }
                        }
                        // Gradients of this sequence's rows: dq, dkvb at head h, dkva's shared key.
                        let q_t = Mat::rows(q, ((b * t_n + queries.start) * h_n + h) * dqk, h_n * dqk);
                        let q_rope = Mat { at: q_t.at + a.nope, ..q_t };
                        let mut c0 = 0;
                        for range in ranges.iter().filter(|r| !r.is_empty()) {
                            let (n_k, j) = (range.len(), range.start);
                            let ds_r = Mat::rows(ds, c0, cols);
                            let p_r = Mat::rows(p, c0, cols);
                            let dq_at = (queries.start * h_n + h) * dqk;
                            // dQ += dS·K (nope, then the shared roped key).
                            mm(rows, a.nope, n_k, ds_r, view.kv(b, j, h), (dq, dq_at, h_n * dqk), true);
                            mm(rows, a.rope, n_k, ds_r, view.kpe(b, j), (dq, dq_at + a.nope, h_n * dqk), true);
                            // dK += dSᵀ·Q, dkpe += dSᵀ·Q_rope, dV += Pᵀ·dO.
                            let dk_at = (j * h_n + h) * dkv;
                            mm(n_k, a.nope, rows, ds_r.transposed(), q_t, (dkv_b, dk_at, h_n * dkv), true);
                            let kpe_at = j * a.kpe_stride + a.kpe_offset;
                            mm(n_k, a.rope, rows, ds_r.transposed(), q_rope, (dkpe, kpe_at, a.kpe_stride), true);
                            mm(n_k, v, rows, p_r.transposed(), d_o, (dkv_b, dk_at + a.nope, h_n * dkv), true);
                            c0 += n_k;
                        }
                    }
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_pairs_counts_the_mask() {
        for window in [None, Some((1, 0)), Some((3, 0)), Some((3, 2)), Some((4, 9)), Some((20, 1))] {
            let a = Attn {
                batch: 2,
                seq: 11,
                heads: 1,
                nope: 1,
                rope: 1,
                v: 1,
                kpe_stride: 1,
                kpe_offset: 0,
                scale: 1.0,
                window,
            };
            let brute = (0..a.seq).flat_map(|i| (0..a.seq).map(move |j| (i, j))).filter(|&(i, j)| visible(&a, i, j));
            assert_eq!(a.visible_pairs(), a.batch * brute.count(), "{window:?}");
        }
    }
}
