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
    let table: Vec<Vec<(f32, f32)>> =
        (0..seq.min(tokens)).map(|pos| rotation(pos as f32, &inv_freq, freqs.attention_factor)).collect();
    x.par_chunks_mut(row_stride).take(tokens).enumerate().for_each(|(t, row)| {
        let cs = &table[t % seq];
        for h in 0..heads {
            let v = &mut row[h * head_stride + offset..h * head_stride + offset + dim];
            apply(v, cs, inverse);
        }
    });
}

/// `(cos θ_i, sin θ_i)·af` with `θ_i = pos·inv_freq[i]`, in f32 as transformers computes them.
fn rotation(pos: f32, inv_freq: &[f32], af: f32) -> Vec<(f32, f32)> {
    inv_freq
        .iter()
        .map(|&f| {
            let theta = pos * f;
            (theta.cos() * af, theta.sin() * af)
        })
        .collect()
}

/// Rotates one head's `dim = 2·inv_freq.len()` channels in place at position `pos` (or applies
/// the transpose), cos and sin scaled by `af`.
pub fn rotate(v: &mut [f32], pos: f32, inv_freq: &[f32], af: f32, inverse: bool) {
    apply(v, &rotation(pos, inv_freq, af), inverse)
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
