//! The decode programs' ops: rotary embedding at given positions, appending latents to the
//! cache, and MLA in its absorbed form over the latent cache (DeepSeek-V2 §2.1.3: `W_UK` folded
//! into the query, `W_UV` applied to the attention's latent output).
//!
//! A query of sequence `b` at position `p` sees cache rows `j ≤ p` of that sequence; its score
//! against row `j` is `scale·(q_lat·c_j + q_pe·k_pe_j)` — the same number as the non-absorbed
//! `scale·(q_nope·k_nope_j + q_pe·k_pe_j)`, since `k_nope_j = W_UK c_j` — and its output the
//! softmax-weighted sum of the latents `c_j`, which `W_UV` then lifts to each head's values.

use rayon::prelude::*;

use super::math::{dot, exp};
use crate::numerics::{e4m3_round, fp8_scale};
use crate::op::{Cache, Heads, LatentAttn, Op};

/// The position of new token `t` (of `per_seq` per sequence) from the sequences' positions.
#[inline]
fn position(positions: &[f32], per_seq: usize, t: usize) -> usize {
    positions[t / per_seq] as usize + t % per_seq
}

/// [`Op::RopeAt`]: HF's interleaved rotary embedding (`rope::rotate`) at each token's position.
pub fn rope_at(op: &Op, positions: &[f32], x: &mut [f32]) {
    let Op::RopeAt { tokens, per_seq, heads, row_stride, head_stride, offset, dim, freqs } = *op else {
        unreachable!("rope_at called with {op:?}")
    };
    let inv_freq = freqs.inv_freq(dim);
    x.par_chunks_mut(row_stride).take(tokens).enumerate().for_each(|(t, row)| {
        let pos = position(positions, per_seq, t) as f32;
        for h in 0..heads {
            let v = &mut row[h * head_stride + offset..h * head_stride + offset + dim];
            super::rope::rotate(v, pos, &inv_freq, freqs.attention_factor, false);
        }
    });
}

/// The cache's arrays: latent `[rows, kvr]`, FP8 scales `[rows, kvr/tile]` (empty otherwise),
/// rope `[rows, rope]`.
pub struct CacheView<'a> {
    pub latent: &'a [f32],
    pub scales: &'a [f32],
    pub rope: &'a [f32],
}

/// [`Op::CacheWrite`].
#[allow(clippy::too_many_arguments)]
pub fn cache_write(
    c: &Cache,
    per_seq: usize,
    kva_stride: usize,
    positions: &[f32],
    ckv: &[f32],
    kva: &[f32],
    latent: &mut [f32],
    scales: &mut [f32],
    rope: &mut [f32],
) {
    for t in 0..c.batch * per_seq {
        let p = position(positions, per_seq, t);
        if p >= c.len {
            continue;
        }
        let row = (t / per_seq) * c.len + p;
        let src = &ckv[t * c.kvr..(t + 1) * c.kvr];
        let dst = &mut latent[row * c.kvr..(row + 1) * c.kvr];
        match c.fp8_tile {
            None => dst.copy_from_slice(src),
            Some(tile) => {
                let per = c.scales_per_row();
                for (g, (d, s)) in dst.chunks_mut(tile).zip(src.chunks(tile)).enumerate() {
                    let scale = fp8_scale(s.iter().fold(0.0f32, |m, v| m.max(v.abs())));
                    scales[row * per + g] = scale;
                    for (d, s) in d.iter_mut().zip(s) {
                        *d = e4m3_round(s / scale);
                    }
                }
            }
        }
        let k = &kva[t * kva_stride + c.kvr..t * kva_stride + c.kvr + c.rope];
        rope[row * c.rope..(row + 1) * c.rope].copy_from_slice(k);
    }
}

/// Is cache row `j` visible from a query at position `p` (causal, and the window when set)?
#[inline]
pub fn visible(window: Option<(usize, usize)>, p: usize, j: usize) -> bool {
    j <= p
        && match window {
            None => true,
            Some((w, sinks)) => p - j < w || j < sinks,
        }
}

/// [`Op::LatentAttention`]: `o_lat [n, h, kvr]`.
pub fn latent_attention(a: &LatentAttn, positions: &[f32], q_lat: &[f32], q: &[f32], cache: CacheView, o: &mut [f32]) {
    let c = a.cache;
    let (kvr, dr, dqk) = (c.kvr, c.rope, a.nope + c.rope);
    let per = c.scales_per_row();
    o.par_chunks_mut(kvr).enumerate().for_each_init(
        || (vec![0.0f32; c.len], vec![0.0f32; kvr]),
        |(scores, row), (r, out)| {
            let (t, h) = (r / a.heads, r % a.heads);
            let b = t / a.per_seq;
            let p = position(positions, a.per_seq, t).min(c.len - 1);
            let ql = &q_lat[r * kvr..(r + 1) * kvr];
            let qp = &q[t * a.heads * dqk + h * dqk + a.nope..][..dr];
            // Cache row j of this sequence, its latent dequantized into `row` when FP8.
            let latent = |j: usize, row: &mut [f32]| {
                let at = (b * c.len + j) * kvr;
                match c.fp8_tile {
                    None => row.copy_from_slice(&cache.latent[at..at + kvr]),
                    Some(tile) => {
                        let s = &cache.scales[(b * c.len + j) * per..][..per];
                        for (i, v) in row.iter_mut().enumerate() {
                            *v = cache.latent[at + i] * s[i / tile];
                        }
                    }
                }
            };
            let mut max = f32::NEG_INFINITY;
            for j in 0..=p {
                if visible(a.window, p, j) {
                    latent(j, row);
                    let kpe = &cache.rope[(b * c.len + j) * dr..][..dr];
                    let (nope, rope) = (dot(ql, row), dot(qp, kpe));
                    scores[j] = a.scale * (nope + rope);
                    max = max.max(scores[j]);
                }
            }
            let mut sum = 0.0f32;
            for j in 0..=p {
                if visible(a.window, p, j) {
                    scores[j] = exp(scores[j] - max);
                    sum += scores[j];
                }
            }
            out.fill(0.0);
            for j in 0..=p {
                if visible(a.window, p, j) {
                    latent(j, row);
                    let w = scores[j] / sum;
                    for (o, v) in out.iter_mut().zip(row.iter()) {
                        *o += w * v;
                    }
                }
            }
        },
    );
}

/// [`Op::AbsorbQuery`]: `q_lat[t, h, c] = Σ_d q[t, h, d] · kv_b[h·(nope+v) + d, c]`, `d < nope`.
pub fn absorb_query(x: &Heads, q: &[f32], kv_b: &[f32], q_lat: &mut [f32]) {
    let (kvr, dqk, hs) = (x.kvr, x.nope + x.rope, x.nope + x.v);
    q_lat.par_chunks_mut(kvr).enumerate().for_each(|(r, out)| {
        let (t, h) = (r / x.heads, r % x.heads);
        let qn = &q[t * x.heads * dqk + h * dqk..][..x.nope];
        out.fill(0.0);
        for (d, &qd) in qn.iter().enumerate() {
            let w = &kv_b[(h * hs + d) * kvr..][..kvr];
            for (o, &wv) in out.iter_mut().zip(w) {
                *o += qd * wv;
            }
        }
    });
}

/// [`Op::AbsorbOutput`]: `o[t, h, e] = Σ_c o_lat[t, h, c] · kv_b[h·(nope+v) + nope + e, c]`.
pub fn absorb_output(x: &Heads, o_lat: &[f32], kv_b: &[f32], o: &mut [f32]) {
    let (kvr, hs) = (x.kvr, x.nope + x.v);
    o.par_chunks_mut(x.v).enumerate().for_each(|(r, out)| {
        let h = r % x.heads;
        let ol = &o_lat[r * kvr..(r + 1) * kvr];
        for (e, v) in out.iter_mut().enumerate() {
            let w = &kv_b[(h * hs + x.nope + e) * kvr..][..kvr];
            *v = ol.iter().zip(w).map(|(a, b)| a * b).sum();
        }
    });
}
