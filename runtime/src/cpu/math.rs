//! The CPU reference's f32 exponential, dot product, max and exp-sum, written so that they
//! vectorize. `exp` has no calls and no branches (range reduction by `ln 2`, a degree-6 polynomial, the power of two
//! built from its bits): libm's is a call per element, and the double-precision one the
//! cross-entropy used took 44% of a `tiny` training step. `dot` sums in eight lanes: a sum in one
//! order is a chain the compiler may not reorder, and attention's scalar dot products took a fifth
//! of a step at d_model 256.

/// `e^x` in f32 within 2 ulp over `[-87.33, 88.37]`; 0 below (where `e^x < 1.2e-38`, so that a
/// masked score's `e^-∞` is exactly 0), `+∞` above (a little early: f32 overflows at 88.72), NaN
/// for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LO: f32 = -87.336_55; // ln of the least normal f32, 2^-126
    const HI: f32 = 88.376_26; // 127.5 ln 2: 2^n stays normal
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in few bits, so that `x - n ln 2` loses nothing.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the float's own rounding: adding 1.5·2^23 leaves the integer in the
    // mantissa (|x log2 e| < 2^22 after the clamp).
    const SHIFTER: f32 = 12_582_912.0;
    let c = x.clamp(LO, HI);
    let n = (c * LOG2E + SHIFTER) - SHIFTER;
    let r = (c - n * LN2_HI) - n * LN2_LO;
    // e^r on |r| ≤ ln 2 / 2: Cephes's minimax coefficients.
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let e = y * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        e
    }
}

/// `Σ x_k y_k` over the shorter of the two, in eight interleaved partial sums (lane `l` takes the
/// elements `k ≡ l mod 8`), then the lanes and the tail in order.
#[inline(always)]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut lanes = [0.0f32; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xt, yt) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for k in 0..8 {
            lanes[k] += a[k] * b[k];
        }
    }
    let tail: f32 = xt.iter().zip(yt).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

/// The largest value (as `f32::max` folds: NaNs skipped; -∞ for none), in eight lanes so that it
/// vectorizes.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `x ← e^(x − shift)` in place, returning the sum of the new values (eight partial sums, then the
/// lanes and the tail in order).
#[inline(always)]
pub fn exp_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *v = exp(*v - shift);
            *l += *v;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - shift);
        tail += *v;
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::{dot, exp, exp_sum, max};

    /// The lane-wise max and exp-sum of every length from 0 to 40 equal the plain fold and the
    /// double sum, NaNs skipped by max as by `f32::max`.
    #[test]
    fn max_and_exp_sum_agree_with_the_plain_forms() {
        for n in 0..=40usize {
            let mut x: Vec<f32> = (0..n).map(|i| ((i * 7 + 3) % 11) as f32 * 0.5 - 2.0 + i as f32 * 0.01).collect();
            assert_eq!(max(&x), x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)), "n = {n}");
            if n > 2 {
                x[n / 2] = f32::NAN;
                assert_eq!(max(&x), x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)), "NaN, n = {n}");
                x[n / 2] = 0.0;
            }
            let want: f64 = x.iter().map(|&v| (v as f64 - 1.0).exp()).sum();
            let got = exp_sum(&mut x, 1.0);
            assert!((got as f64 - want).abs() <= 1e-6 * want.max(1.0), "n = {n}: {got} vs {want}");
            assert!((x.iter().map(|&v| v as f64).sum::<f64>() - want).abs() <= 1e-6 * want.max(1.0));
        }
    }

    /// The dot product of every length from 0 to 40 (full lanes and tails) agrees with the double
    /// one to f32 rounding, and takes the shorter length.
    #[test]
    fn dot_agrees_with_the_double_sum() {
        for n in 0..=40usize {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7 + 3) % 11) as f32 * 0.25 - 1.0).collect();
            let y: Vec<f32> = (0..n).map(|i| ((i * 5 + 1) % 13) as f32 * 0.5 - 2.5).collect();
            let want: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = x.iter().zip(&y).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
            assert!((dot(&x, &y) as f64 - want).abs() <= 1e-6 * scale.max(1.0), "n = {n}");
            if n > 0 {
                assert_eq!(dot(&x, &y[..n - 1]), dot(&x[..n - 1], &y[..n - 1]));
            }
        }
    }

    /// Within 2 ulp of the double-precision exponential over the whole normal range, 0 (within the
    /// least normal) below it, infinite above, NaN through.
    #[test]
    fn exp_is_within_two_ulp_of_the_double_one() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 87.8 {
            for dx in [0.0f32, 1e-3, 0.37, 0.5] {
                let v = x + dx;
                let want = (v as f64).exp();
                let ulp = (want as f32).abs() * f32::EPSILON;
                let err = ((exp(v) as f64 - want) / ulp as f64).abs();
                worst = worst.max(err);
                assert!(err <= 2.0, "exp({v}) = {} vs {want}: {err:.2} ulp", exp(v));
            }
            x += 0.0173;
        }
        assert!(worst > 0.0, "an exact exponential is not what this computes");
        for v in [-87.4f32, -100.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(exp(v), 0.0);
            assert!(((v as f64).exp()) < 1.2e-38);
        }
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }
}
