//! Causal MLA attention (optionally sliding-window with sink tokens), forward and backward, on
//! GEMM-shaped tiles.
//!
//! Per head h: `Q = q[.., h, :]` (nope | rope), `K_j = [kvb[j, h, :nope] ; kpe_j]` with the
//! roped key shared by all heads, `V_j = kvb[j, h, nope:]`. Scores `s_ij = scale·Q_i·K_j` over
//! visible keys, softmax with a saved log-sum-exp, `O_i = Σ_j p_ij V_j`.
//!
//! A tile is [`QUERY_TILE`] queries of one sequence and head against every key one of them sees
//! (one range of keys, two with a window's sinks). Its keys `[K_nope | kpe]` and values are packed
//! in column order, so that each product is one GEMM on its task's thread: the scores
//! `S = Q·Kᵀ`, `O = P·V`, and in the backward `dP = dO·Vᵀ`, `dS = scale·P∘(dP − D)`,
//! `dQ += dS·K`, and the packed `dSᵀ·Q` and `Pᵀ·dO` added to the keys' and values' rows. Each
//! row's mask is at most four spans of columns, so the softmax's loops run unmasked. The backward
//! recomputes `P` from the log-sum-exp. Tasks: (sequence, query tile) in the forward; a sequence
//! in the backward, whose heads run in order, so the shared key's gradient sums over heads in one
//! order: no atomics and the same bits on any number of threads.

use std::ops::Range;

use rayon::prelude::*;

use super::dense::{gemm_serial, GemmShape};
use super::math::{dot, exp, exp_sum, max};
use crate::op::{Attn, Quant};

/// Queries per tile: its score rows.
pub const QUERY_TILE: usize = 64;

/// Is key `j` visible from query `i`? (The mask's definition, which the tiles' column ranges are
/// tested against.)
#[cfg(test)]
fn visible(a: &Attn, i: usize, j: usize) -> bool {
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
    /// The rows of `kvb` (`K_nope | V`) of keys from `j`.
    fn kv(&self, b: usize, j: usize, h: usize) -> Mat<'a> {
        let a = self.a;
        Mat::rows(self.kvb, ((b * a.seq + j) * a.heads + h) * self.dkv(), a.heads * self.dkv())
    }
    /// The shared roped key of keys from `j`.
    fn kpe(&self, b: usize, j: usize) -> Mat<'a> {
        let a = self.a;
        Mat::rows(self.kva, (b * a.seq + j) * a.kpe_stride + a.kpe_offset, a.kpe_stride)
    }

    /// The tile's keys `[K_nope | kpe]` (`cols × dqk`) and values (`cols × v`) of head `h`,
    /// packed in column order, so that each product of the tile is one GEMM.
    fn pack(&self, b: usize, h: usize, ranges: &[Range<usize>; 2], k: &mut Vec<f32>, v: &mut Vec<f32>) {
        let a = self.a;
        let (kvb, kpe) = (self.kv(b, 0, h), self.kpe(b, 0));
        k.clear();
        v.clear();
        for j in ranges.iter().flat_map(|r| r.clone()) {
            let row = &self.kvb[kvb.at + j * kvb.ld..][..self.dkv()];
            k.extend_from_slice(&row[..a.nope]);
            k.extend_from_slice(&self.kva[kpe.at + j * kpe.ld..][..a.rope]);
            v.extend_from_slice(&row[a.nope..]);
        }
    }
}

/// The columns of a tile over `ranges` whose keys query `i` sees, ascending (empty ranges where
/// there are fewer than four): the keys `[0, sinks)` and the window `(i − w, i]` (all of `[0, i]`
/// without a window), each met with each range of keys.
fn visible_columns(a: &Attn, ranges: &[Range<usize>; 2], i: usize) -> [Range<usize>; 4] {
    let seen: [Range<usize>; 2] = match a.window {
        None => [0..0, 0..i + 1],
        Some((w, sinks)) => {
            let (sink, window) = (0..sinks.min(i + 1), (i + 1).saturating_sub(w)..i + 1);
            if sink.end >= window.start {
                [0..0, 0..i + 1]
            } else {
                [sink, window]
            }
        }
    };
    let mut out: [Range<usize>; 4] = Default::default();
    let mut c0 = 0;
    for (r, keys) in ranges.iter().enumerate() {
        for (s, seen) in seen.iter().enumerate() {
            let (lo, hi) = (keys.start.max(seen.start), keys.end.min(seen.end));
            if lo < hi {
                out[2 * r + s] = c0 + lo - keys.start..c0 + hi - keys.start;
            }
        }
        c0 += keys.len();
    }
    out
}

/// Runs `f` over each visible span of `row` and zeroes the columns between them.
#[inline]
fn spans(row: &mut [f32], visible: &[Range<usize>; 4], mut f: impl FnMut(&mut [f32])) {
    let mut at = 0;
    for c in visible.iter().filter(|c| !c.is_empty()) {
        row[at..c.start].fill(0.0);
        f(&mut row[c.clone()]);
        at = c.end;
    }
    row[at..].fill(0.0);
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
    let dqk = a.nope + a.rope;
    work.into_par_iter().for_each_init(Scratch::default, |w, (b, queries, o, lse)| {
        let ranges = key_ranges(a, &queries);
        let (rows, cols) = (queries.len(), ranges.iter().map(|r| r.len()).sum::<usize>());
        w.p.resize(rows * cols, 0.0);
        for h in 0..h_n {
            view.pack(b, h, &ranges, &mut w.k, &mut w.v);
            // S = Q·Kᵀ.
            mm(
                rows,
                cols,
                dqk,
                view.q(b, queries.start, h),
                Mat::rows(&w.k, 0, dqk).transposed(),
                (&mut w.p, 0, cols),
                false,
            );
            // Softmax of each row over its visible keys, in place: P.
            for (r, i) in queries.clone().enumerate() {
                let row = &mut w.p[r * cols..(r + 1) * cols];
                let seen = visible_columns(a, &ranges, i);
                let mut m = f32::NEG_INFINITY;
                for c in &seen {
                    row[c.clone()].iter_mut().for_each(|s| *s *= a.scale);
                    m = m.max(max(&row[c.clone()]));
                }
                let mut sum = 0.0f32;
                spans(row, &seen, |s| sum += exp_sum(s, m));
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|s| *s *= inv);
                lse[r * h_n + h] = m + sum.ln();
            }
            // O = P·V.
            mm(rows, v, cols, Mat::rows(&w.p, 0, cols), Mat::rows(&w.v, 0, v), (o, h * v, h_n * v), false);
        }
    });
}

/// A task's buffers: a tile's packed keys and values, P, dS, and the packed keys' and values'
/// gradients.
#[derive(Default)]
struct Scratch {
    k: Vec<f32>,
    v: Vec<f32>,
    p: Vec<f32>,
    ds: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
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
        .for_each_init(Scratch::default, |w, (b, ((dq, dkv_b), dkpe))| {
            for h in 0..h_n {
                for (_, queries) in tiles(1, t_n) {
                    let ranges = key_ranges(a, &queries);
                    let (rows, cols) = (queries.len(), ranges.iter().map(|r| r.len()).sum::<usize>());
                    w.p.resize(rows * cols, 0.0);
                    w.ds.resize(rows * cols, 0.0);
                    w.dk.resize(cols * dqk, 0.0);
                    w.dv.resize(cols * v, 0.0);
                    view.pack(b, h, &ranges, &mut w.k, &mut w.v);
                    let (kp, vp) = (Mat::rows(&w.k, 0, dqk), Mat::rows(&w.v, 0, v));
                    let q_t = view.q(b, queries.start, h);
                    let d_o = Mat::rows(dout, ((b * t_n + queries.start) * h_n + h) * v, h_n * v);
                    // S = Q·Kᵀ, dP = dO·Vᵀ.
                    mm(rows, cols, dqk, q_t, kp.transposed(), (&mut w.p, 0, cols), false);
                    mm(rows, cols, v, d_o, vp.transposed(), (&mut w.ds, 0, cols), false);
                    // P from the log-sum-exp; dS = scale · P∘(dP − D).
                    for (r, i) in queries.clone().enumerate() {
                        let at = (b * t_n + i) * h_n + h;
                        let (l, d) = (lse[at], dd[at]);
                        let row = &mut w.p[r * cols..(r + 1) * cols];
                        spans(row, &visible_columns(a, &ranges, i), |s| {
                            s.iter_mut().for_each(|x| *x = exp(a.scale * *x - l))
                        });
                        for (x, pv) in w.ds[r * cols..(r + 1) * cols].iter_mut().zip(row.iter()) {
                            *x = a.scale * pv * (*x - d);
                        }
                    }
                    let (ds, p) = (Mat::rows(&w.ds, 0, cols), Mat::rows(&w.p, 0, cols));
                    // dQ += dS·K, into this sequence's rows at head h.
                    mm(rows, dqk, cols, ds, kp, (dq, (queries.start * h_n + h) * dqk, h_n * dqk), true);
                    // The packed keys' and values' gradients dSᵀ·Q and Pᵀ·dO, added where they lie.
                    mm(cols, dqk, rows, ds.transposed(), q_t, (&mut w.dk, 0, dqk), false);
                    mm(cols, v, rows, p.transposed(), d_o, (&mut w.dv, 0, v), false);
                    for (c, j) in ranges.iter().flat_map(|r| r.clone()).enumerate() {
                        let (dk, dv) = (&w.dk[c * dqk..(c + 1) * dqk], &w.dv[c * v..(c + 1) * v]);
                        let row = &mut dkv_b[(j * h_n + h) * dkv..][..dkv];
                        row[..a.nope].iter_mut().zip(&dk[..a.nope]).for_each(|(x, g)| *x += g);
                        row[a.nope..].iter_mut().zip(dv).for_each(|(x, g)| *x += g);
                        let kpe = &mut dkpe[j * a.kpe_stride + a.kpe_offset..][..a.rope];
                        kpe.iter_mut().zip(&dk[a.nope..]).for_each(|(x, g)| *x += g);
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one head of width 1: only its mask matters.
    fn mask(batch: usize, seq: usize, window: Option<(usize, usize)>) -> Attn {
        Attn { batch, seq, heads: 1, nope: 1, rope: 1, v: 1, kpe_stride: 1, kpe_offset: 0, scale: 1.0, window }
    }

    /// A tile's visible columns are exactly the columns of the keys the mask lets through.
    #[test]
    fn visible_columns_are_the_mask() {
        for window in [None, Some((1, 0)), Some((3, 0)), Some((3, 2)), Some((4, 9)), Some((20, 1)), Some((70, 5))] {
            let a = mask(1, 200, window);
            for queries in [0..64, 64..128, 128..192, 192..200, 5..9] {
                let ranges = key_ranges(&a, &queries);
                let keys: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                for i in queries.clone() {
                    let cols = visible_columns(&a, &ranges, i);
                    assert!(cols.windows(2).all(|w| w[0].end <= w[1].start || w[1].is_empty()), "{cols:?}");
                    let got: Vec<usize> = cols.iter().flat_map(|c| c.clone()).map(|c| keys[c]).collect();
                    let want: Vec<usize> = (0..a.seq).filter(|&j| visible(&a, i, j)).collect();
                    assert_eq!(got, want, "{window:?}, query {i}");
                }
            }
        }
    }

    #[test]
    fn visible_pairs_counts_the_mask() {
        for window in [None, Some((1, 0)), Some((3, 0)), Some((3, 2)), Some((4, 9)), Some((20, 1))] {
            let a = mask(2, 11, window);
            let brute = (0..a.seq).flat_map(|i| (0..a.seq).map(move |j| (i, j))).filter(|&(i, j)| visible(&a, i, j));
            assert_eq!(a.visible_pairs(), a.batch * brute.count(), "{window:?}");
        }
    }
}
