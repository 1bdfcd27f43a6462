//! RMSNorm and DynamicTanh, forward and backward. Weight gradients are reduced over fixed row
//! chunks and summed in chunk order, so results do not depend on the thread count.

use rayon::prelude::*;

use super::dense::ROWS_PER_TASK;

/// Sums per-chunk partial gradients (each `width` long) over `rows`, deterministically.
fn reduce_rows(rows: usize, width: usize, chunk: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
    let chunks = rows.div_ceil(ROWS_PER_TASK * 4).max(1);
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0.0f32; width];
            let per = rows.div_ceil(chunks);
            chunk(c * per..((c + 1) * per).min(rows), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0.0f32; width];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// `y = w ⊙ x · rstd`, `rstd = 1/sqrt(mean(x²) + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    rstd: &mut [f32],
    rows: usize,
    d: usize,
    in_stride: usize,
    eps: f32,
) {
    y.par_chunks_mut(d).zip(rstd.par_iter_mut()).enumerate().take(rows).for_each(|(r, (y, rs))| {
        let x = &x[r * in_stride..r * in_stride + d];
        let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
        *rs = 1.0 / (ms + eps).sqrt();
        for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
            *y = w * (x * *rs);
        }
    });
}

/// `dx += rstd·(g − x̂·mean(g ⊙ x̂))` with `g = dy ⊙ w`, `x̂ = x·rstd`; `dw += Σ dy ⊙ x̂`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    rows: usize,
    d: usize,
    in_stride: usize,
) {
    dx.par_chunks_mut(in_stride).enumerate().take(rows).for_each(|(r, dx)| {
        let xr = &x[r * in_stride..r * in_stride + d];
        let dyr = &dy[r * d..(r + 1) * d];
        let rs = rstd[r];
        let dot: f32 = (0..d).map(|i| dyr[i] * w[i] * xr[i] * rs).sum::<f32>() / d as f32;
        for i in 0..d {
            dx[i] += rs * (dyr[i] * w[i] - xr[i] * rs * dot);
        }
    });
    let g = reduce_rows(rows, d, |range, acc| {
        for r in range {
            let xr = &x[r * in_stride..r * in_stride + d];
            for i in 0..d {
                acc[i] += dy[r * d + i] * xr[i] * rstd[r];
            }
        }
    });
    for (a, b) in dw.iter_mut().zip(g) {
        *a += b;
    }
}

/// `y = w ⊙ tanh(α·x) + b`.
#[allow(clippy::too_many_arguments)]
pub fn dyt(x: &[f32], w: &[f32], b: &[f32], alpha: &[f32], y: &mut [f32], rows: usize, d: usize, in_stride: usize) {
    let a = alpha[0];
    y.par_chunks_mut(d).enumerate().take(rows).for_each(|(r, y)| {
        let x = &x[r * in_stride..r * in_stride + d];
        for i in 0..d {
            y[i] = w[i] * (a * x[i]).tanh() + b[i];
        }
    });
}

/// Gradients of DynamicTanh: `[x, w, alpha, dy]` in, `[dx, dw, db, dalpha]` accumulated.
pub fn dyt_bwd(inp: [&[f32]; 4], out: [&mut [f32]; 4], rows: usize, d: usize, in_stride: usize) {
    let [x, w, alpha, dy] = inp;
    let [dx, dw, db, dalpha] = out;
    let a = alpha[0];
    dx.par_chunks_mut(in_stride).enumerate().take(rows).for_each(|(r, dx)| {
        for i in 0..d {
            let t = (a * x[r * in_stride + i]).tanh();
            dx[i] += dy[r * d + i] * w[i] * a * (1.0 - t * t);
        }
    });
    // [dw | db | dalpha] reduced together.
    let g = reduce_rows(rows, 2 * d + 1, |range, acc| {
        for r in range {
            for i in 0..d {
                let xv = x[r * in_stride + i];
                let t = (a * xv).tanh();
                let g = dy[r * d + i];
                acc[i] += g * t;
                acc[d + i] += g;
                acc[2 * d] += g * w[i] * xv * (1.0 - t * t);
            }
        }
    });
    for i in 0..d {
        dw[i] += g[i];
        db[i] += g[d + i];
    }
    dalpha[0] += g[2 * d];
}
