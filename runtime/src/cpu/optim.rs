//! The optimizer step as ops: the deterministic global gradient norm, and AdamW (bias-corrected,
//! decoupled weight decay) or Lion over the trained parameters, with the gradient averaged and
//! clipped on the fly and the moments kept in f32 or rounded to bf16. Math in f64 per element, the
//! step's settings from the scalar buffer (`op::scalars`).

use rayon::prelude::*;

use crate::numerics::bf16_round;
use crate::op::{scalars, OptimizerKind, Update, GRAD_NORM_CHUNK};

/// `partials[c] = Σ g²` over chunk `c` (f64 sums), `norm[0] = sqrt(Σ partials)` in chunk order.
pub fn grad_norm(grad: &[f32], partials: &mut [f32], norm: &mut [f32]) {
    let chunks = sum_squares(grad, partials);
    sum_parts(&partials[..chunks], norm, true);
}

/// `partials[c] = Σ x²` over chunk `c` of [`GRAD_NORM_CHUNK`] elements (f64, stored f32); returns
/// the chunks (at least one).
pub fn sum_squares(x: &[f32], partials: &mut [f32]) -> usize {
    let sums: Vec<f64> = x.par_chunks(GRAD_NORM_CHUNK).map(|g| g.iter().map(|&x| x as f64 * x as f64).sum()).collect();
    partials[0] = 0.0;
    for (p, s) in partials.iter_mut().zip(&sums) {
        *p = *s as f32;
    }
    sums.len().max(1)
}

/// `out = Σ partials` in order (f64), or its square root.
pub fn sum_parts(partials: &[f32], out: &mut [f32], root: bool) {
    let s = partials.iter().map(|&p| p as f64).sum::<f64>();
    out[0] = if root { s.sqrt() } else { s } as f32;
}

/// The factor applied to each accumulated gradient: the mean over micro-batches (`grad_scale`),
/// clipped to global norm `clip` when the mean's norm exceeds it.
pub fn gradient_factor(s: &[f32], norm: f32) -> f64 {
    let scale = s[scalars::GRAD_SCALE] as f64;
    let clip = s[scalars::CLIP] as f64;
    let n = norm as f64 * scale;
    scale * if clip > 0.0 && n > clip { clip / n } else { 1.0 }
}

/// `b^t` for `t ≥ 0` by binary exponentiation, the multiplications in a fixed order (what
/// `f64::powi` compiles to, compiler-rt's `__powidf2`, and what the CUDA kernel does).
pub fn powi(mut b: f64, mut t: i32) -> f64 {
    let mut r = 1.0;
    loop {
        if t & 1 != 0 {
            r *= b;
        }
        t /= 2;
        if t == 0 {
            break;
        }
        b *= b;
    }
    r
}

/// One step of `u.kind` over `[0, u.n)`: `[scalars, norm, grad]`, then the parameters and moments
/// (untouched when the step guard holds the step back).
pub fn step(u: &Update, [s, norm, grad]: [&[f32]; 3], param: &mut [f32], m: &mut [f32], v: Option<&mut [f32]>) {
    if !scalars::update_applies(s, norm[0]) {
        return;
    }
    let f = gradient_factor(s, norm[0]);
    let lr = s[scalars::LR] as f64;
    let (b1, b2, eps) = (s[scalars::BETA1] as f64, s[scalars::BETA2] as f64, s[scalars::EPS] as f64);
    let (wd, ewd) = (s[scalars::WEIGHT_DECAY] as f64, s[scalars::EMBEDDING_DECAY] as f64);
    let t = s[scalars::STEP] as i32;
    let round = |x: f32| if u.bf16_moments { bf16_round(x) } else { x };
    let decay = |i: usize| {
        if i < u.decay_end {
            wd
        } else if i < u.embedding_end {
            ewd
        } else {
            0.0
        }
    };
    const CHUNK: usize = 1 << 14;
    let n = u.n;
    let (param, grad, m) = (&mut param[..n], &grad[..n], &mut m[..n]);
    // The weight decay is constant between `decay_end` and `embedding_end`: each chunk runs as
    // at most three spans of one decay, so that the loops have no branch and vectorize.
    let spans = |c: usize, len: usize| {
        let (lo, hi) = (c * CHUNK, c * CHUNK + len);
        [(0, u.decay_end), (u.decay_end, u.embedding_end), (u.embedding_end, usize::MAX)]
            .into_iter()
            .map(move |(a, b)| (a.clamp(lo, hi) - lo, b.clamp(lo, hi) - lo))
            .filter(|(a, b)| a < b)
    };
    match (u.kind, v) {
        (OptimizerKind::AdamW, Some(v)) => {
            let k = Adam { f, lr, b1, b2, eps, c1: 1.0 - powi(b1, t), c2: 1.0 - powi(b2, t) };
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v[..n].par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (((p, g), m), v))| {
                    for (a, b) in spans(c, p.len()) {
                        let (p, g, m, v) = (&mut p[a..b], &g[a..b], &mut m[a..b], &mut v[a..b]);
                        let wd = decay(c * CHUNK + a);
                        match u.bf16_moments {
                            true => adamw::<true>(&k, wd, p, g, m, v),
                            false => adamw::<false>(&k, wd, p, g, m, v),
                        }
                    }
                });
        }
        _ => {
            param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK)).enumerate().for_each(
                |(c, ((p, g), m))| {
                    for i in 0..p.len() {
                        let (gi, mi) = ((g[i] as f64 * f) as f32 as f64, m[i] as f64);
                        let c_ = b1 * mi + (1.0 - b1) * gi;
                        let sign = if c_ > 0.0 {
                            1.0
                        } else if c_ < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        p[i] = (p[i] as f64 - lr * (sign + decay(c * CHUNK + i) * p[i] as f64)) as f32;
                        m[i] = round((b2 * mi + (1.0 - b2) * gi) as f32);
                    }
                },
            );
        }
    }
}

/// AdamW's constants for one step: the gradient's factor, the learning rate, betas, epsilon and
/// the bias corrections `1 − βᵗ`.
struct Adam {
    f: f64,
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    c1: f64,
    c2: f64,
}

/// AdamW over one span of one weight decay `wd`, moments rounded to bf16 when `BF16`.
fn adamw<const BF16: bool>(k: &Adam, wd: f64, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let round = |x: f32| if BF16 { bf16_round(x) } else { x };
    for i in 0..p.len() {
        let gi = (g[i] as f64 * k.f) as f32 as f64;
        let mi = k.b1 * m[i] as f64 + (1.0 - k.b1) * gi;
        let vi = k.b2 * v[i] as f64 + (1.0 - k.b2) * gi * gi;
        m[i] = round(mi as f32);
        v[i] = round(vi as f32);
        let update = (mi / k.c1) / ((vi / k.c2).sqrt() + k.eps) + wd * p[i] as f64;
        p[i] = (p[i] as f64 - k.lr * update) as f32;
    }
}
