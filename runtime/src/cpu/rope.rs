//! Rotary position embedding in Hugging Face's DeepSeek layout, in place.
//!
//! Input pairs `(x[2i], x[2i+1])` rotate by `θ_i = pos·inv_freq[i]`; the outputs land at `[i]`
//! and `[dim/2 + i]` (HF's `rope_interleave`): `y[i] = x[2i]·cos − x[2i+1]·sin`,
//! `y[dim/2+i] = x[2i+1]·cos + x[2i]·sin`, with cos and sin computed in f32 as transformers does
//! and scaled by YaRN's attention factor, computed once per launch for the sequence's positions.
//! The inverse (backward) applies the transpose.

use rayon::prelude::*;

use crate::op::Op;

pub fn rope(op: &Op, x: &mut [f32]) {
    let Op::Rope { tokens, seq, heads, row_stride, head_stride, offset, dim, freqs, inverse } = *op else {
        unreachable!("rope called with {op:?}")
    };
    let inv_freq = freqs.inv_freq(dim);
    // The rotations of the sequence's positions, once per launch (every row and head reuses them).
    let half = inv_freq.len();
    let mut table = vec![(0.0f32, 0.0f32); seq.min(tokens) * half];
    for (pos, cs) in table.chunks_mut(half.max(1)).enumerate() {
        rotation(pos as f32, &inv_freq, freqs.attention_factor, cs);
    }
    x.par_chunks_mut(row_stride).take(tokens).enumerate().for_each(|(t, row)| {
        let cs = &table[(t % seq) * half..(t % seq + 1) * half];
        for h in 0..heads {
            let v = &mut row[h * head_stride + offset..h * head_stride + offset + dim];
            apply(v, cs, inverse);
        }
    });
}

/// `out[i] = (cos θ_i, sin θ_i)·af` with `θ_i = pos·inv_freq[i]`, in f32 as transformers computes
/// them.
fn rotation(pos: f32, inv_freq: &[f32], af: f32, out: &mut [(f32, f32)]) {
    for (c, &f) in out.iter_mut().zip(inv_freq) {
        let theta = pos * f;
        *c = (theta.cos() * af, theta.sin() * af);
    }
}

/// Rotates one head's `dim = 2·inv_freq.len()` channels in place at position `pos` (or applies
/// the transpose), cos and sin scaled by `af`.
pub fn rotate(v: &mut [f32], pos: f32, inv_freq: &[f32], af: f32, inverse: bool) {
    // On the stack, as `apply`'s buffer (decode rotates a row per token and head).
    let cs = &mut [(0.0f32, 0.0f32); 512][..inv_freq.len()];
    rotation(pos, inv_freq, af, cs);
    apply(v, cs, inverse)
}

/// Rotates one head's channels by the pairs' `(cos, sin)`, or applies the transpose.
fn apply(v: &mut [f32], cs: &[(f32, f32)], inverse: bool) {
    let half = cs.len();
    let mut buf = [0.0f32; 1024];
    for (i, &(c, s)) in cs.iter().enumerate() {
        if inverse {
            let (a, b) = (v[i], v[half + i]);
            buf[2 * i] = a * c + b * s;
            buf[2 * i + 1] = b * c - a * s;
        } else {
            let (e, o) = (v[2 * i], v[2 * i + 1]);
            buf[i] = e * c - o * s;
            buf[half + i] = o * c + e * s;
        }
    }
    v.copy_from_slice(&buf[..2 * half]);
}
