//! Floating-point semantics as the PTX ISA defines them: IEEE 754 rounding in every mode (`.rn`, `.rz`,
//! `.rm`, `.rp`, `.rna`), flush-to-zero, saturation, and the storage formats (f16, bf16, FP8 E4M3 and
//! E5M2). Directed rounding of f32 arithmetic is exact: the operation is done in f64 with an error-free
//! transformation, so the exact result is `s + e`, and [`quantize`] rounds that to the target format.

use crate::inst::Rnd;

/// A binary floating-point storage format.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// Explicit mantissa bits.
    pub man: i32,
    /// Exponent of the smallest normal number.
    pub emin: i32,
    /// Largest finite value.
    pub max: f64,
}

pub const F32: Format = Format { man: 23, emin: -126, max: f32::MAX as f64 };
pub const BF16: Format = Format { man: 7, emin: -126, max: 3.3895313892515355e38 };
pub const F16: Format = Format { man: 10, emin: -14, max: 65504.0 };
pub const E4M3: Format = Format { man: 3, emin: -6, max: 448.0 };
pub const E5M2: Format = Format { man: 2, emin: -14, max: 57344.0 };

/// Rounds the exact value `s + e` (`s` an f64, `e` the exact residual, |e| at most half an ulp of `s`) to
/// `fmt` in mode `rnd`. Returns the rounded value as an f64 (±inf when it overflows the format and the
/// mode rounds away; `sat` clamps to ±max instead). NaN stays NaN.
pub fn quantize(s: f64, e: f64, fmt: Format, rnd: Rnd, sat: bool) -> f64 {
    if s.is_nan() {
        return f64::NAN;
    }
    if s.is_infinite() {
        return if sat { fmt.max.copysign(s) } else { s };
    }
    if s == 0.0 {
        // The exact value is e (tiny): only directed modes can move off zero, by the smallest subnormal.
        let tiny = f64::powi(2.0, fmt.emin - fmt.man);
        return match rnd {
            Rnd::Rp if e > 0.0 => tiny,
            Rnd::Rm if e < 0.0 => -tiny,
            _ => s,
        };
    }
    let exp = (((s.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(fmt.emin);
    let ulp = f64::powi(2.0, exp - fmt.man);
    let q = s / ulp; // exact: a power-of-two scaling
    let r = e; // only its sign matters, and only when q is an integer or a half-integer
    let fl = q.floor();
    let frac = q - fl;
    // One step toward smaller magnitude from the bottom of a binade is half a step: the spacing halves.
    let bottom = |q: f64| q.abs() == f64::powi(2.0, fmt.man) && exp > fmt.emin;
    let down = |q: f64| {
        if frac == 0.0 && r < 0.0 {
            q - if q > 0.0 && bottom(q) { 0.5 } else { 1.0 }
        } else {
            fl
        }
    };
    let up = |q: f64| {
        if frac == 0.0 {
            if r > 0.0 {
                q + if q < 0.0 && bottom(q) { 0.5 } else { 1.0 }
            } else {
                q
            }
        } else {
            fl + 1.0
        }
    };
    let n = match rnd {
        Rnd::Rm => down(q),
        Rnd::Rp => up(q),
        Rnd::Rz => {
            if q > 0.0 {
                down(q)
            } else {
                up(q)
            }
        }
        Rnd::Rn | Rnd::Rna => {
            if frac > 0.5 || (frac == 0.5 && r > 0.0) {
                fl + 1.0
            } else if frac < 0.5 || (frac == 0.5 && r < 0.0) {
                fl
            } else if rnd == Rnd::Rna {
                if q > 0.0 {
                    fl + 1.0
                } else {
                    fl
                }
            } else if fl % 2.0 == 0.0 {
                fl
            } else {
                fl + 1.0
            }
        }
    };
    let v = n * ulp;
    if v.abs() > fmt.max {
        if sat {
            return fmt.max.copysign(v);
        }
        let toward_zero = match rnd {
            Rnd::Rz => true,
            Rnd::Rm => v > 0.0,
            Rnd::Rp => v < 0.0,
            Rnd::Rn | Rnd::Rna => false,
        };
        return if toward_zero { fmt.max.copysign(v) } else { f64::INFINITY.copysign(v) };
    }
    if v == 0.0 {
        return 0.0f64.copysign(s);
    }
    v
}

/// `s + e` rounded to f32.
pub fn to_f32(s: f64, e: f64, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn && e == 0.0 {
        return s as f32;
    }
    quantize(s, e, F32, rnd, false) as f32
}

/// The exact sum `a + b = s + e` (Knuth's TwoSum).
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    if !s.is_finite() {
        return (s, 0.0);
    }
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// Flushes an f32 subnormal to a zero of the same sign.
pub fn ftz32(x: f32) -> f32 {
    if x != 0.0 && x.abs() < f32::MIN_POSITIVE {
        0.0f32.copysign(x)
    } else {
        x
    }
}

pub fn ftz64(x: f64) -> f64 {
    if x != 0.0 && x.abs() < f64::MIN_POSITIVE {
        0.0f64.copysign(x)
    } else {
        x
    }
}

/// `.sat` for floats: clamp to [0, 1], NaN to +0.
pub fn sat01_32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

pub fn sat01_64(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

pub fn add32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn {
        return a + b;
    }
    if !(a.is_finite() && b.is_finite()) {
        return a + b;
    }
    let (s, e) = two_sum(a as f64, b as f64);
    if s == 0.0 && e == 0.0 {
        return exact_zero_sum(
            a.is_sign_negative() && a == 0.0,
            b.is_sign_negative() && b == 0.0,
            a == 0.0 && b == 0.0,
            rnd,
        ) as f32;
    }
    to_f32(s, e, rnd)
}

/// IEEE 754's sign of an exact zero sum `x + y`: -0 when both are -0, +0 when both are +0, else +0
/// except under round-toward-negative.
fn exact_zero_sum(x_neg_zero: bool, y_neg_zero: bool, both_zero: bool, rnd: Rnd) -> f64 {
    if both_zero && x_neg_zero && y_neg_zero {
        -0.0
    } else if both_zero && !x_neg_zero && !y_neg_zero {
        0.0
    } else if rnd == Rnd::Rm {
        -0.0
    } else {
        0.0
    }
}

pub fn mul32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite()) {
        return a * b;
    }
    let p = a as f64 * b as f64; // exact: 48 bits of product
    if p == 0.0 {
        return a * b;
    }
    to_f32(p, 0.0, rnd)
}

pub fn fma32(a: f32, b: f32, c: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite() && c.is_finite()) {
        return a.mul_add(b, c);
    }
    let p = a as f64 * b as f64; // exact
    let (s, e) = two_sum(p, c as f64);
    if s == 0.0 && e == 0.0 {
        let p_neg = p == 0.0 && (a.is_sign_negative() != b.is_sign_negative());
        return exact_zero_sum(p_neg, c == 0.0 && c.is_sign_negative(), p == 0.0 && c == 0.0, rnd) as f32;
    }
    to_f32(s, e, rnd)
}

pub fn div32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite()) || b == 0.0 || a == 0.0 {
        return a / b;
    }
    let (a64, b64) = (a as f64, b as f64);
    let q = a64 / b64;
    let r = (-q).mul_add(b64, a64); // exact remainder
    let e = if r == 0.0 { 0.0 } else { r.signum() * b64.signum() * f64::MIN_POSITIVE };
    to_f32(q, e, rnd)
}

pub fn sqrt32(a: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a.is_finite()) || a <= 0.0 {
        return a.sqrt();
    }
    let x = a as f64;
    let s = x.sqrt();
    let r = (-s).mul_add(s, x);
    to_f32(s, if r == 0.0 { 0.0 } else { r.signum() * f64::MIN_POSITIVE }, rnd)
}

/// Moves an f64 result `s` with exact residual `e` one ulp in the direction the mode asks.
fn nudge64(s: f64, e: f64, rnd: Rnd) -> f64 {
    if e == 0.0 || !s.is_finite() || e.is_nan() {
        return s;
    }
    match rnd {
        Rnd::Rn | Rnd::Rna => s,
        Rnd::Rp if e > 0.0 => s.next_up(),
        Rnd::Rm if e < 0.0 => s.next_down(),
        Rnd::Rz if e.signum() != s.signum() => {
            if s > 0.0 {
                s.next_down()
            } else {
                s.next_up()
            }
        }
        _ => s,
    }
}

/// An f64 result that overflowed to ±inf under a mode that rounds toward zero becomes ±max.
fn overflow64(s: f64, rnd: Rnd) -> f64 {
    if s.is_infinite() {
        let to_max = match rnd {
            Rnd::Rz => true,
            Rnd::Rm => s > 0.0,
            Rnd::Rp => s < 0.0,
            _ => false,
        };
        if to_max {
            return f64::MAX.copysign(s);
        }
    }
    s
}

pub fn add64(a: f64, b: f64, rnd: Rnd) -> f64 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite()) {
        return a + b;
    }
    let (s, e) = two_sum(a, b);
    if s == 0.0 && e == 0.0 {
        return exact_zero_sum(
            a == 0.0 && a.is_sign_negative(),
            b == 0.0 && b.is_sign_negative(),
            a == 0.0 && b == 0.0,
            rnd,
        );
    }
    overflow64(nudge64(s, e, rnd), rnd)
}

pub fn mul64(a: f64, b: f64, rnd: Rnd) -> f64 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite()) {
        return a * b;
    }
    let p = a * b;
    let e = a.mul_add(b, -p);
    overflow64(nudge64(p, e, rnd), rnd)
}

pub fn div64(a: f64, b: f64, rnd: Rnd) -> f64 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite()) || b == 0.0 {
        return a / b;
    }
    let q = a / b;
    let r = (-q).mul_add(b, a);
    overflow64(nudge64(q, r * b.signum(), rnd), rnd)
}

/// f32 -> bf16 bits.
pub fn f32_to_bf16(x: f32, rnd: Rnd, sat: bool) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let v = quantize(x as f64, 0.0, BF16, rnd, sat) as f32;
    (v.to_bits() >> 16) as u16
}

pub fn f64_to_bf16(x: f64, rnd: Rnd) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let v = quantize(x, 0.0, BF16, rnd, false) as f32;
    (v.to_bits() >> 16) as u16
}

pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// An f64 value already representable in f16 (or ±inf / NaN) -> its bits.
fn encode_f16(v: f64) -> u16 {
    if v.is_nan() {
        return 0x7fff;
    }
    let sign = if v.is_sign_negative() { 0x8000 } else { 0 };
    let a = v.abs();
    if a.is_infinite() {
        return sign | 0x7c00;
    }
    if a == 0.0 {
        return sign;
    }
    let exp = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    if exp < -14 {
        return sign | (a / f64::powi(2.0, -24)) as u16;
    }
    let man = ((a / f64::powi(2.0, exp) - 1.0) * 1024.0) as u16;
    sign | (((exp + 15) as u16) << 10) | man
}

pub fn f64_to_f16(x: f64, rnd: Rnd, sat: bool) -> u16 {
    encode_f16(quantize(x, 0.0, F16, rnd, sat))
}

pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f64;
    sign * match e {
        0 => m * f64::powi(2.0, -24),
        31 if m == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + m / 1024.0) * f64::powi(2.0, e - 15),
    }
}

/// f32 -> FP8 E4M3 (`.satfinite`: ±inf and out-of-range values clamp to ±448; NaN is 0x7f).
pub fn f32_to_e4m3(x: f32, relu: bool) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let x = if relu && x < 0.0 { 0.0 } else { x };
    let v = quantize(x as f64, 0.0, E4M3, Rnd::Rn, true);
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let a = v.abs();
    if a == 0.0 {
        return sign;
    }
    let exp = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    if exp < -6 {
        return sign | (a / f64::powi(2.0, -9)) as u8;
    }
    let man = ((a / f64::powi(2.0, exp) - 1.0) * 8.0) as u8;
    sign | (((exp + 7) as u8) << 3) | man
}

pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = ((b >> 3) & 0xf) as i32;
    let m = (b & 7) as f32;
    if e == 15 && m == 7.0 {
        return f32::NAN;
    }
    sign * if e == 0 { m * f32::powi(2.0, -9) } else { (1.0 + m / 8.0) * f32::powi(2.0, e - 7) }
}

/// f32 -> FP8 E5M2 with `.satfinite` (NaN is 0x7f).
pub fn f32_to_e5m2(x: f32, relu: bool) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let x = if relu && x < 0.0 { 0.0 } else { x };
    let v = quantize(x as f64, 0.0, E5M2, Rnd::Rn, true);
    (encode_f16(v) >> 8) as u8
}

pub fn e5m2_to_f32(b: u8) -> f32 {
    f16_to_f64((b as u16) << 8) as f32
}

/// Float -> integer with integer rounding, clamped to the destination range. NaN gives 0 when the
/// source is not f64 and the destination not 64-bit, else `1 << (bits - 1)` (the ISA's rule).
pub fn float_to_int(x: f64, rnd: Rnd, bits: u8, signed: bool, from_f64: bool) -> u64 {
    if x.is_nan() {
        return if !from_f64 && bits < 64 { 0 } else { 1 << (bits - 1) };
    }
    let r = match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
        Rnd::Rna => x.round(),
    };
    if signed {
        let (lo, hi) = (-(2f64.powi(bits as i32 - 1)), 2f64.powi(bits as i32 - 1) - 1.0);
        let v = if r <= lo {
            i64::MIN >> (64 - bits)
        } else if r >= hi {
            i64::MAX >> (64 - bits)
        } else {
            r as i64
        };
        (v as u64) & mask(bits)
    } else {
        let hi = 2f64.powi(bits as i32) - 1.0;
        if r <= 0.0 {
            0
        } else if r >= hi {
            mask(bits)
        } else {
            r as u64
        }
    }
}

/// The low `bits` bits set.
pub fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// An integer (as i128, exact) -> f64 plus the exact residual, for rounding to narrower formats.
pub fn int_to_f64_exact(v: i128) -> (f64, f64) {
    let s = v as f64;
    let rest = v - s as i128;
    (s, rest as f64)
}

/// `rcp.approx.ftz.f64`: the reciprocal of the input's upper 32 bits (1.11.20 format), carrying 20
/// mantissa bits, in the result's upper 32 bits; the lower 32 are zero. NaN gives 0x7fffffff00000000,
/// subnormal inputs flush to a signed zero (so their reciprocal is a signed infinity).
pub fn rcp_approx_ftz_f64(bits: u64) -> u64 {
    let x = ftz64(f64::from_bits(bits & 0xffff_ffff_0000_0000));
    if x.is_nan() {
        return 0x7fff_ffff_0000_0000;
    }
    let r = quantize(1.0 / x, 0.0, Format { man: 20, emin: -1022, max: f64::MAX }, Rnd::Rn, false);
    ftz64(r).to_bits() & 0xffff_ffff_0000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_of_f32_sums() {
        let a = 1.0f32;
        let b = f32::EPSILON / 4.0; // below half an ulp of 1
        assert_eq!(add32(a, b, Rnd::Rn), 1.0);
        assert_eq!(add32(a, b, Rnd::Rz), 1.0);
        assert_eq!(add32(a, b, Rnd::Rm), 1.0);
        assert_eq!(add32(a, b, Rnd::Rp), 1.0f32.next_up());
        assert_eq!(add32(-a, -b, Rnd::Rm), (-1.0f32).next_down());
        assert_eq!(add32(-a, -b, Rnd::Rz), -1.0);
        // A tiny negative residual below a representable sum.
        assert_eq!(add32(a, -b, Rnd::Rz), 1.0f32.next_down());
        assert_eq!(add32(a, -b, Rnd::Rp), 1.0);
        assert_eq!(fma32(1.0, 1.0, 1e-30, Rnd::Rp), 1.0f32.next_up());
        assert_eq!(fma32(1.0, 1.0, -1e-30, Rnd::Rm), 1.0f32.next_down());
        assert_eq!(fma32(1.0, 1.0, -1e-30, Rnd::Rn), 1.0);
        // Ties to even at the f32 midpoint, broken by the residual.
        let mid = 1.0 + (f32::EPSILON as f64) / 2.0;
        assert_eq!(to_f32(mid, 0.0, Rnd::Rn), 1.0);
        assert_eq!(to_f32(mid, 1e-300, Rnd::Rn), 1.0f32.next_up());
        assert_eq!(to_f32(1e39, 0.0, Rnd::Rz), f32::MAX);
        assert_eq!(to_f32(1e39, 0.0, Rnd::Rn), f32::INFINITY);
    }

    #[test]
    fn storage_formats() {
        assert_eq!(f32_to_bf16(1.0, Rnd::Rn, false), 0x3f80);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0, Rnd::Rn, false), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0, Rnd::Rn, false), 0x3f82);
        assert_eq!(f32_to_e4m3(448.0, false), 0x7e);
        assert_eq!(f32_to_e4m3(1000.0, false), 0x7e);
        assert_eq!(f32_to_e4m3(f32::NEG_INFINITY, false), 0xfe);
        assert_eq!(f32_to_e4m3(f32::NAN, false), 0x7f);
        assert_eq!(f32_to_e4m3(1.0, false), 0x38);
        assert_eq!(f32_to_e4m3(-2.0f32.powi(-9), false), 0x81);
        assert_eq!(f32_to_e4m3(2.0f32.powi(-10), false), 0x00); // tie to even (0)
        assert_eq!(f32_to_e4m3(1.0625, false), 0x38); // tie between 1 and 1.125 -> 1
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if !v.is_nan() {
                assert_eq!(f32_to_e4m3(v, false), b, "{b:#x}");
            }
        }
        for h in [0x3c00u16, 0x0001, 0x7bff, 0x8400, 0x3555] {
            assert_eq!(f64_to_f16(f16_to_f64(h), Rnd::Rn, false), h);
        }
        assert_eq!(f64_to_f16(65520.0, Rnd::Rn, false), 0x7c00);
        assert_eq!(f64_to_f16(65520.0, Rnd::Rz, false), 0x7bff);
    }

    #[test]
    fn float_to_int_saturates() {
        assert_eq!(float_to_int(3e10, Rnd::Rz, 32, true, false), 0x7fff_ffff);
        assert_eq!(float_to_int(-3e10, Rnd::Rz, 32, true, false), 0x8000_0000);
        assert_eq!(float_to_int(-1.5, Rnd::Rz, 32, false, false), 0);
        assert_eq!(float_to_int(f64::NAN, Rnd::Rn, 32, true, false), 0);
        assert_eq!(float_to_int(f64::NAN, Rnd::Rn, 32, true, true), 0x8000_0000);
        assert_eq!(float_to_int(f64::NAN, Rnd::Rn, 64, false, false), 1 << 63);
        assert_eq!(float_to_int(2.5, Rnd::Rn, 32, true, false), 2);
        assert_eq!(float_to_int(-2.5, Rnd::Rm, 32, true, false) as u32 as i32, -3);
    }
}
