//! Dense ops: elementwise arithmetic, GEMM (through the `gemm` crate), embedding lookup and its
//! gradient, token shifting for MTP, and SwiGLU.

use rayon::prelude::*;

use super::math::exp;
use crate::numerics::{bf16_round, dequantize, fp8_round_trip};
use crate::op::{Quant, Scaling};

/// Rows per rayon task for row-parallel loops.
pub(crate) const ROWS_PER_TASK: usize = 8;

pub fn add_scaled(x: &[f32], y: &mut [f32], alpha: f32) {
    y.par_iter_mut().zip(x.par_iter()).with_min_len(4096).for_each(|(y, x)| *y += alpha * x);
}

pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    out.par_iter_mut().zip(a.par_iter().zip(b.par_iter())).with_min_len(4096).for_each(|(o, (a, b))| *o = a + b);
}

/// Shape and layout of one GEMM (see `Op::Gemm`).
#[derive(Debug, Clone, Copy)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub ta: bool,
    pub tb: bool,
    pub accumulate: bool,
    pub quant: Quant,
}

/// `C (+)= op(A) · op(B)`, through the storage format `s.quant` names.
pub fn gemm(s: GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) {
    if s.quant == Quant::None || s.m == 0 || s.n == 0 || s.k == 0 {
        return gemm_f32(s, a, b, c);
    }
    // Copy op(A) as [m, k] and op(B)ᵀ as [n, k] (both K-major), round them, multiply in f32.
    let (m, n, k) = (s.m, s.n, s.k);
    let mut qa = vec![0.0f32; m * k];
    let mut qb = vec![0.0f32; n * k];
    for i in 0..m {
        for p in 0..k {
            qa[i * k + p] = if s.ta { a[p * s.lda + i] } else { a[i * s.lda + p] };
        }
    }
    for j in 0..n {
        for p in 0..k {
            qb[j * k + p] = if s.tb { b[j * s.ldb + p] } else { b[p * s.ldb + j] };
        }
    }
    match s.quant {
        Quant::None => {}
        Quant::Bf16 => {
            qa.iter_mut().chain(qb.iter_mut()).for_each(|v| *v = bf16_round(*v));
        }
        Quant::Fp8 { tile, b_blocks } => {
            fp8_round_trip(&mut qa, m, k, tile, Scaling::RowTiles);
            fp8_round_trip(&mut qb, n, k, tile, Scaling::operand(true, b_blocks));
        }
        Quant::Fp8Stored { .. } => unreachable!("stored FP8 operands come with their scales (gemm_fp8_stored)"),
    }
    let plain = GemmShape { lda: k, ldb: k, ta: false, tb: true, quant: Quant::None, ..s };
    gemm_f32(plain, &qa, &qb, c);
    round_output(s, c);
}

/// An overwritten output of a reduced-precision GEMM is stored rounded to bf16.
fn round_output(s: GemmShape, c: &mut [f32]) {
    if !s.accumulate {
        for i in 0..s.m {
            c[i * s.ldc..i * s.ldc + s.n].iter_mut().for_each(|v| *v = bf16_round(*v));
        }
    }
}

/// `C (+)= op(A) · op(B)` over operands already quantized (`Quant::Fp8Stored`): the E4M3 values
/// of A and B (stored as their shapes say, at `lda`/`ldb`) times their scales, multiplied in f32
/// (the e4m3 × e4m3 products and their f32 sums are exact up to f32 rounding, as on the tensor
/// cores); an overwritten output rounded to bf16.
pub fn gemm_fp8_stored(s: GemmShape, a: (&[f32], &[f32]), b: (&[f32], &[f32]), c: &mut [f32]) {
    let Quant::Fp8Stored { tile, b_blocks } = s.quant else {
        unreachable!("gemm_fp8_stored runs Quant::Fp8Stored GEMMs")
    };
    let (m, n, k) = (s.m, s.n, s.k);
    let plain = GemmShape { quant: Quant::None, ..s };
    if m == 0 || n == 0 || k == 0 {
        return gemm_f32(plain, &[], &[], c);
    }
    let (ra, ca) = if s.ta { (k, m) } else { (m, k) };
    let (rb, cb) = if s.tb { (n, k) } else { (k, n) };
    let da = dequantize(a.0, a.1, ra, ca, s.lda, tile, Scaling::operand(!s.ta, false));
    let db = dequantize(b.0, b.1, rb, cb, s.ldb, tile, Scaling::operand(s.tb, b_blocks));
    gemm_f32(GemmShape { lda: ca, ldb: cb, ..plain }, &da, &db, c);
    round_output(s, c);
}

fn gemm_f32(s: GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && s.m * s.n * s.k >= 1 << 15 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_f32_on(s, a, b, c, par)
}

/// An f32 GEMM on the calling thread, for ops that already spread their tiles over threads
/// (attention). `s.quant` must be `Quant::None`.
pub(crate) fn gemm_serial(s: GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) {
    debug_assert_eq!(s.quant, Quant::None);
    gemm_f32_on(s, a, b, c, gemm::Parallelism::None)
}

fn gemm_f32_on(s: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism) {
    if s.m == 0 || s.n == 0 {
        return;
    }
    if s.k == 0 {
        if !s.accumulate {
            for i in 0..s.m {
                c[i * s.ldc..i * s.ldc + s.n].fill(0.0);
            }
        }
        return;
    }
    let (a_rs, a_cs) = if s.ta { (1, s.lda as isize) } else { (s.lda as isize, 1) };
    let (b_rs, b_cs) = if s.tb { (1, s.ldb as isize) } else { (s.ldb as isize, 1) };
    // Bounds: the furthest element each operand reaches.
    let a_last = if s.ta { (s.k - 1) * s.lda + s.m - 1 } else { (s.m - 1) * s.lda + s.k - 1 };
    let b_last = if s.tb { (s.n - 1) * s.ldb + s.k - 1 } else { (s.k - 1) * s.ldb + s.n - 1 };
    let c_last = (s.m - 1) * s.ldc + s.n - 1;
    assert!(a_last < a.len() && b_last < b.len() && c_last < c.len(), "gemm operands out of bounds: {s:?}");
    // SAFETY: every element read or written lies inside its slice (asserted above); C does not
    // overlap A or B (Program::check).
    unsafe {
        gemm::gemm(
            s.m,
            s.n,
            s.k,
            c.as_mut_ptr(),
            1,
            s.ldc as isize,
            s.accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Token id stored as f32, if it is a valid index below `vocab`.
pub(crate) fn token(t: f32, vocab: usize) -> Option<usize> {
    (t >= 0.0 && t.fract() == 0.0 && (t as usize) < vocab).then_some(t as usize)
}

pub fn embedding(tokens: &[f32], table: &[f32], out: &mut [f32], d: usize, vocab: usize) {
    out.par_chunks_mut(d).zip(tokens.par_iter()).for_each(|(row, &t)| match token(t, vocab) {
        Some(t) => row.copy_from_slice(&table[t * d..(t + 1) * d]),
        // Ids are validated where they enter; an invalid one poisons its row, never panics.
        None => row.fill(f32::NAN),
    });
}

/// `dtable[tokens[i]] += dout[i]`, serially in position order (deterministic).
pub fn embedding_bwd(tokens: &[f32], dout: &[f32], dtable: &mut [f32], d: usize, vocab: usize) {
    for (i, &t) in tokens.iter().enumerate() {
        if let Some(t) = token(t, vocab) {
            for (r, g) in dtable[t * d..(t + 1) * d].iter_mut().zip(&dout[i * d..(i + 1) * d]) {
                *r += g;
            }
        }
    }
}

pub fn shift_tokens(tokens: &[f32], out: &mut [f32], batch: usize, seq: usize, shift: usize) {
    for b in 0..batch {
        let row = &tokens[b * seq..(b + 1) * seq];
        for i in 0..seq {
            out[b * seq + i] = row[(i + shift).min(seq - 1)];
        }
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

pub fn swiglu(g: &[f32], u: &[f32], h: &mut [f32]) {
    h.par_iter_mut().zip(g.par_iter().zip(u.par_iter())).with_min_len(4096).for_each(|(h, (&g, &u))| *h = silu(g) * u);
}

/// `dg += dh·u·silu'(g)`, `du += dh·silu(g)`, with `silu'(g) = σ(g)(1 + g(1 − σ(g)))`.
pub fn swiglu_bwd(g: &[f32], u: &[f32], dh: &[f32], dg: &mut [f32], du: &mut [f32]) {
    dg.par_iter_mut().zip(du.par_iter_mut()).enumerate().with_min_len(4096).for_each(|(i, (dg, du))| {
        let s = 1.0 / (1.0 + exp(-g[i]));
        *dg += dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        *du += dh[i] * g[i] * s;
    });
}
