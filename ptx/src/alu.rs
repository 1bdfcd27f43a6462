//! One lane's arithmetic: integer, floating-point, comparison and conversion semantics per the PTX ISA,
//! on raw register bits. Pure functions: the warp applies them to each active lane.

use crate::float::{self, mask};
use crate::inst::*;

/// `v`'s low `bits` bits, sign-extended.
pub fn sx(v: u64, bits: u8) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

/// An integer instruction on one lane. `a`, `b`, `c`, `d` are the sources in order.
pub fn int_op(op: IntOp, ty: IntTy, a: u64, b: u64, c: u64, d: u64) -> u64 {
    let n = ty.bits;
    let m = mask(n);
    let (a, b) = (a & m, b & m);
    let s = ty.signed;
    match op {
        IntOp::Add { sat: true } => (sx(a, 32) + sx(b, 32)).clamp(i32::MIN as i64, i32::MAX as i64) as u64 & m,
        IntOp::Sub { sat: true } => (sx(a, 32) - sx(b, 32)).clamp(i32::MIN as i64, i32::MAX as i64) as u64 & m,
        IntOp::Add { .. } => a.wrapping_add(b) & m,
        IntOp::Sub { .. } => a.wrapping_sub(b) & m,
        IntOp::MulLo => a.wrapping_mul(b) & m,
        IntOp::MulHi | IntOp::MadHi => {
            let hi = if s {
                ((sx(a, n) as i128 * sx(b, n) as i128) >> n) as u64
            } else {
                ((a as u128 * b as u128) >> n) as u64
            } & m;
            if op == IntOp::MadHi {
                hi.wrapping_add(c) & m
            } else {
                hi
            }
        }
        IntOp::MulWide | IntOp::MadWide => {
            let w = mask(n * 2);
            let p = if s { (sx(a, n) as i128 * sx(b, n) as i128) as u64 } else { (a as u128 * b as u128) as u64 } & w;
            if op == IntOp::MadWide {
                p.wrapping_add(c) & w
            } else {
                p
            }
        }
        IntOp::MadLo => a.wrapping_mul(b).wrapping_add(c) & m,
        IntOp::Div => {
            if b == 0 {
                // Division by zero: "unspecified, machine-specific". All ones, as on NVIDIA hardware.
                m
            } else if s {
                sx(a, n).wrapping_div(sx(b, n)) as u64 & m
            } else {
                a / b
            }
        }
        IntOp::Rem => {
            if b == 0 {
                a
            } else if s {
                sx(a, n).wrapping_rem(sx(b, n)) as u64 & m
            } else {
                a % b
            }
        }
        IntOp::Min => {
            if s {
                sx(a, n).min(sx(b, n)) as u64 & m
            } else {
                a.min(b)
            }
        }
        IntOp::Max => {
            if s {
                sx(a, n).max(sx(b, n)) as u64 & m
            } else {
                a.max(b)
            }
        }
        IntOp::Abs => sx(a, n).wrapping_abs() as u64 & m,
        IntOp::Neg => sx(a, n).wrapping_neg() as u64 & m,
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        IntOp::Not => !a & m,
        IntOp::Cnot => (a == 0) as u64,
        IntOp::Shl => {
            // The shift amount is an unsigned 32-bit value; amounts beyond the width clamp to it.
            let k = b & 0xffff_ffff;
            if k >= n as u64 {
                0
            } else {
                (a << k) & m
            }
        }
        IntOp::Shr => {
            let k = (b & 0xffff_ffff).min(n as u64);
            if s {
                (sx(a, n) >> k.min(63)) as u64 & m
            } else if k >= n as u64 {
                0
            } else {
                a >> k
            }
        }
        IntOp::Popc => a.count_ones() as u64,
        IntOp::Clz => (a.leading_zeros() - (64 - n as u32)) as u64,
        IntOp::Brev => a.reverse_bits() >> (64 - n),
        IntOp::Bfind { shift_amount } => {
            // The most significant non-sign bit; 0xffffffff when there is none.
            let v = if s && sx(a, n) < 0 { !a & m } else { a };
            if v == 0 {
                0xffff_ffff
            } else {
                let pos = 63 - v.leading_zeros() as u64;
                if shift_amount {
                    n as u64 - 1 - pos
                } else {
                    pos
                }
            }
        }
        IntOp::Bfe => {
            let msb = n as u64 - 1;
            let pos = b & 0xff;
            let len = c & 0xff;
            let sbit = if s && len > 0 {
                let top = (pos + len - 1).min(msb);
                (a >> top) & 1
            } else {
                0
            };
            let mut r = 0u64;
            for i in 0..n as u64 {
                let bit = if i < len && pos + i <= msb { (a >> (pos + i)) & 1 } else { sbit };
                r |= bit << i;
            }
            r & m
        }
        IntOp::Bfi => {
            // bfi f, a, b, c, d: a's low d bits inserted into b at position c.
            let msb = n as u64 - 1;
            let pos = c & 0xff;
            let len = d & 0xff;
            let mut r = b;
            for i in 0..len {
                if pos + i > msb {
                    break;
                }
                r = (r & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
            }
            r & m
        }
        IntOp::Prmt => {
            // Bytes {b3 b2 b1 b0 a3 a2 a1 a0} indexed 7..0; each selector nibble of c picks one, its bit 3
            // replicating the picked byte's sign instead.
            let bytes = (b << 32) | (a & 0xffff_ffff);
            let mut r = 0u64;
            for i in 0..4 {
                let sel = (c >> (4 * i)) & 0xf;
                let byte = (bytes >> ((sel & 7) * 8)) & 0xff;
                let v = if sel & 8 != 0 {
                    if byte & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    byte
                };
                r |= v << (8 * i);
            }
            r
        }
        IntOp::Lop3 => {
            let lut = d & 0xff;
            let c = c & m;
            let mut r = 0u64;
            for i in 0..n as u64 {
                let idx = (((a >> i) & 1) << 2) | (((b >> i) & 1) << 1) | ((c >> i) & 1);
                r |= ((lut >> idx) & 1) << i;
            }
            r
        }
        IntOp::Sad => {
            let diff = if s { (sx(a, n) - sx(b, n)).unsigned_abs() } else { a.abs_diff(b) };
            diff.wrapping_add(c) & m
        }
        IntOp::Shf { left, clamp } => {
            // Funnel shift of the 64-bit {b:a} by c.
            let k = if clamp { (c & 0xffff_ffff).min(32) } else { c & 31 };
            let wide = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
            if left {
                ((wide << k) >> 32) & 0xffff_ffff
            } else {
                (wide >> k) & 0xffff_ffff
            }
        }
    }
}

/// min/max of f32s: exact through f64 (the conversion keeps order, signs of zero and NaN-ness).
fn min_max_32(a: f32, b: f32, is_max: bool, nan: bool) -> f32 {
    let r = min_max_64(a as f64, b as f64, is_max, nan);
    if r.is_nan() {
        f32::from_bits(0x7fff_ffff)
    } else {
        r as f32
    }
}

/// min/max per the PTX ISA: a NaN operand yields the other (both NaN, or `.NaN`: the canonical NaN);
/// -0 orders below +0.
fn min_max_64(a: f64, b: f64, is_max: bool, nan: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f64::from_bits(0x7fff_ffff_ffff_ffff);
        }
        return if a.is_nan() { b } else { a };
    }
    if a == 0.0 && b == 0.0 {
        let neg = if is_max {
            a.is_sign_negative() && b.is_sign_negative()
        } else {
            a.is_sign_negative() || b.is_sign_negative()
        };
        return if neg { -0.0 } else { 0.0 };
    }
    if is_max {
        a.max(b)
    } else {
        a.min(b)
    }
}

/// The canonical NaN PTX arithmetic returns.
const NAN32: u32 = 0x7fff_ffff;

/// A floating-point instruction on one lane.
#[allow(clippy::too_many_arguments)]
pub fn float_op(op: FOp, ty: FTy, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    match ty {
        FTy::F32 => {
            let fz = |x: f32| if ftz { float::ftz32(x) } else { x };
            let (x, y, z) = (fz(f32_of(a)), fz(f32_of(b)), fz(f32_of(c)));
            let r = match op {
                FOp::Add => float::add32(x, y, rnd),
                FOp::Sub => float::add32(x, -y, rnd),
                FOp::Mul => float::mul32(x, y, rnd),
                FOp::Fma => float::fma32(x, y, z, rnd),
                FOp::Div { approx: true, .. } => {
                    // d = a * (1/b); for 2^126 < |b| < 2^128 the result is 0 (a finite) or NaN (a infinite).
                    let ab = y.abs();
                    if ab > 2f32.powi(126) && ab.is_finite() {
                        if x.is_finite() {
                            0.0f32.copysign(x) * y.signum()
                        } else {
                            f32::NAN
                        }
                    } else {
                        (x as f64 / y as f64) as f32
                    }
                }
                FOp::Div { full: true, .. } => x / y,
                FOp::Div { .. } => float::div32(x, y, rnd),
                FOp::Min { nan } => min_max_32(x, y, false, nan),
                FOp::Max { nan } => min_max_32(x, y, true, nan),
                FOp::Neg => -x,
                FOp::Abs => x.abs(),
                FOp::Rcp { approx: true } => (1.0 / x as f64) as f32,
                FOp::Rcp { approx: false } => float::div32(1.0, x, rnd),
                FOp::Sqrt { approx: true } => (x as f64).sqrt() as f32,
                FOp::Sqrt { approx: false } => float::sqrt32(x, rnd),
                FOp::Rsqrt => {
                    if x == 0.0 {
                        f32::INFINITY.copysign(x)
                    } else {
                        (1.0 / (x as f64).sqrt()) as f32
                    }
                }
                FOp::Ex2 => (x as f64).exp2() as f32,
                FOp::Lg2 => {
                    if x == 0.0 {
                        f32::NEG_INFINITY
                    } else {
                        (x as f64).log2() as f32
                    }
                }
                FOp::Sin => (x as f64).sin() as f32,
                FOp::Cos => (x as f64).cos() as f32,
                FOp::Tanh => (x as f64).tanh() as f32,
                FOp::Copysign => y.copysign(x),
            };
            let r = if ftz { float::ftz32(r) } else { r };
            let r = if sat { float::sat01_32(r) } else { r };
            let bits =
                if r.is_nan() && !matches!(op, FOp::Neg | FOp::Abs | FOp::Copysign) { NAN32 } else { r.to_bits() };
            bits as u64
        }
        FTy::F64 => {
            let (x, y, z) = (f64_of(a), f64_of(b), f64_of(c));
            let (x, y, z) = if ftz { (float::ftz64(x), float::ftz64(y), float::ftz64(z)) } else { (x, y, z) };
            let r = match op {
                FOp::Add => float::add64(x, y, rnd),
                FOp::Sub => float::add64(x, -y, rnd),
                FOp::Mul => float::mul64(x, y, rnd),
                FOp::Fma => x.mul_add(y, z),
                FOp::Div { .. } => float::div64(x, y, rnd),
                FOp::Min { nan } => min_max_64(x, y, false, nan),
                FOp::Max { nan } => min_max_64(x, y, true, nan),
                FOp::Neg => -x,
                FOp::Abs => x.abs(),
                FOp::Rcp { approx: true } => f64::from_bits(float::rcp_approx_ftz_f64(a)),
                FOp::Rcp { approx: false } => float::div64(1.0, x, rnd),
                FOp::Sqrt { .. } => x.sqrt(),
                FOp::Rsqrt => {
                    if x == 0.0 {
                        f64::INFINITY.copysign(x)
                    } else {
                        1.0 / x.sqrt()
                    }
                }
                FOp::Ex2 => x.exp2(),
                FOp::Lg2 => x.log2(),
                FOp::Sin => x.sin(),
                FOp::Cos => x.cos(),
                FOp::Tanh => x.tanh(),
                FOp::Copysign => y.copysign(x),
            };
            let r = if ftz { float::ftz64(r) } else { r };
            let r = if sat { float::sat01_64(r) } else { r };
            if r.is_nan() && !matches!(op, FOp::Neg | FOp::Abs | FOp::Copysign) {
                0x7fff_ffff_ffff_ffff
            } else {
                r.to_bits()
            }
        }
    }
}

/// A comparison on one lane.
pub fn compare(cmp: Cmp, ty: CmpTy, ftz: bool, a: u64, b: u64) -> bool {
    let ord = |lt: bool, eq: bool, unordered: bool| -> bool {
        match cmp {
            Cmp::Eq => !unordered && eq,
            Cmp::Ne => !unordered && !eq,
            Cmp::Lt => !unordered && lt,
            Cmp::Le => !unordered && (lt || eq),
            Cmp::Gt => !unordered && !lt && !eq,
            Cmp::Ge => !unordered && !lt,
            Cmp::Equ => unordered || eq,
            Cmp::Neu => unordered || !eq,
            Cmp::Ltu => unordered || lt,
            Cmp::Leu => unordered || lt || eq,
            Cmp::Gtu => unordered || (!lt && !eq),
            Cmp::Geu => unordered || !lt,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
        }
    };
    match ty {
        CmpTy::Int(t) => {
            let (lt, eq) = if t.signed {
                let (x, y) = (sx(a, t.bits), sx(b, t.bits));
                (x < y, x == y)
            } else {
                let m = mask(t.bits);
                ((a & m) < (b & m), (a & m) == (b & m))
            };
            ord(lt, eq, false)
        }
        CmpTy::F32 => {
            let (mut x, mut y) = (f32_of(a), f32_of(b));
            if ftz {
                x = float::ftz32(x);
                y = float::ftz32(y);
            }
            ord(x < y, x == y, x.is_nan() || y.is_nan())
        }
        CmpTy::F64 => {
            let (x, y) = (f64_of(a), f64_of(b));
            ord(x < y, x == y, x.is_nan() || y.is_nan())
        }
    }
}

/// A scalar conversion on one lane.
#[allow(clippy::too_many_arguments)]
pub fn convert(
    dst: Num,
    src: Num,
    rnd: Option<Rnd>,
    int_rnd: Option<Rnd>,
    sat: bool,
    ftz: bool,
    relu: bool,
    v: u64,
) -> u64 {
    let rn = rnd.unwrap_or(Rnd::Rn);
    // The source as an exact f64 (floats) or an exact i128 (integers).
    enum V {
        F(f64),
        I(i128),
    }
    let x = match src {
        Num::Int(t) => V::I(if t.signed { sx(v, t.bits) as i128 } else { (v & mask(t.bits)) as i128 }),
        Num::F16 => V::F(float::f16_to_f64(v as u16)),
        Num::Bf16 => V::F(float::bf16_to_f32(v as u16) as f64),
        Num::F32 => {
            let f = f32_of(v);
            V::F(if ftz { float::ftz32(f) } else { f } as f64)
        }
        Num::F64 => V::F(f64_of(v)),
    };
    match (dst, x) {
        (Num::Int(t), V::I(i)) => {
            let (lo, hi) = if t.signed {
                (-(1i128 << (t.bits - 1)), (1i128 << (t.bits - 1)) - 1)
            } else {
                (0, (1i128 << t.bits) - 1)
            };
            let i = if sat { i.clamp(lo, hi) } else { i };
            (i as u64) & mask(t.bits)
        }
        (Num::Int(t), V::F(f)) => float::float_to_int(f, int_rnd.unwrap_or(Rnd::Rz), t.bits, t.signed, src == Num::F64),
        (d, x) => {
            // To a float format: the exact source as s + e.
            let (s, e) = match x {
                V::F(f) => (f, 0.0),
                V::I(i) => float::int_to_f64_exact(i),
            };
            let (s, e) = if let Some(ir) = int_rnd {
                // cvt.rni.f32.f32 and friends: round to an integral value in the same format.
                let r = match ir {
                    Rnd::Rn => s.round_ties_even(),
                    Rnd::Rz => s.trunc(),
                    Rnd::Rm => s.floor(),
                    Rnd::Rp => s.ceil(),
                    Rnd::Rna => s.round(),
                };
                (r, 0.0)
            } else {
                (s, e)
            };
            let s = if relu && s < 0.0 { 0.0 } else { s };
            match d {
                Num::F64 => {
                    let r = if sat { float::sat01_64(s) } else { s };
                    if r.is_nan() {
                        0x7fff_ffff_ffff_ffff
                    } else {
                        r.to_bits()
                    }
                }
                Num::F32 => {
                    let mut r = float::to_f32(s, e, rn);
                    if ftz {
                        r = float::ftz32(r);
                    }
                    if sat {
                        r = float::sat01_32(r);
                    }
                    if r.is_nan() {
                        NAN32 as u64
                    } else {
                        r.to_bits() as u64
                    }
                }
                Num::Bf16 => {
                    let s = if sat { float::sat01_64(s) } else { s };
                    float::f64_to_bf16(s, rn) as u64
                }
                Num::F16 => {
                    let s = if sat { float::sat01_64(s) } else { s };
                    float::f64_to_f16(s, rn, false) as u64
                }
                Num::Int(_) => unreachable!("handled above"),
            }
        }
    }
}

/// `cvt.rn.{bf16x2,f16x2,e4m3x2,e5m2x2}.f32 d, a, b`: `a` converted into the upper half, `b` the lower.
pub fn convert_pack(to: Packed, satfinite: bool, relu: bool, a: u64, b: u64) -> u64 {
    let (x, y) = (f32_of(a), f32_of(b));
    let r = |v: f32| if relu && v < 0.0 { 0.0 } else { v };
    match to {
        Packed::Bf16x2 => {
            let f = |v: f32| float::f32_to_bf16(r(v), Rnd::Rn, satfinite) as u64;
            (f(x) << 16) | f(y)
        }
        Packed::F16x2 => {
            let f = |v: f32| {
                if v.is_nan() {
                    0x7fff
                } else {
                    float::f64_to_f16(r(v) as f64, Rnd::Rn, satfinite) as u64
                }
            };
            (f(x) << 16) | f(y)
        }
        Packed::E4m3x2 => ((float::f32_to_e4m3(x, relu) as u64) << 8) | float::f32_to_e4m3(y, relu) as u64,
        Packed::E5m2x2 => ((float::f32_to_e5m2(x, relu) as u64) << 8) | float::f32_to_e5m2(y, relu) as u64,
    }
}

/// `cvt.rn.f16x2.{e4m3x2,e5m2x2} d, a`: each byte of `a` widened (exactly) to f16, the upper byte to the
/// upper half.
pub fn convert_unpack(from: Packed, a: u64) -> u64 {
    let f = |b: u8| -> u64 {
        let v = match from {
            Packed::E5m2x2 => float::e5m2_to_f32(b),
            _ => float::e4m3_to_f32(b),
        };
        if v.is_nan() {
            0x7fff
        } else {
            float::f64_to_f16(v as f64, Rnd::Rn, false) as u64
        }
    };
    (f((a >> 8) as u8) << 16) | f(a as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U32: IntTy = IntTy { bits: 32, signed: false };
    const S32: IntTy = IntTy { bits: 32, signed: true };

    #[test]
    fn integer_edge_cases() {
        assert_eq!(int_op(IntOp::Shl, U32, 1, 32, 0, 0), 0);
        assert_eq!(int_op(IntOp::Shr, S32, 0x8000_0000, 40, 0, 0), 0xffff_ffff);
        assert_eq!(int_op(IntOp::Shr, U32, 0x8000_0000, 40, 0, 0), 0);
        assert_eq!(int_op(IntOp::MulHi, S32, (-2i32) as u32 as u64, 3, 0, 0), 0xffff_ffff);
        assert_eq!(int_op(IntOp::MulWide, S32, (-2i32) as u32 as u64, 3, 0, 0), (-6i64) as u64);
        assert_eq!(int_op(IntOp::Div, S32, (-7i32) as u32 as u64, 2, 0, 0), (-3i32) as u32 as u64);
        assert_eq!(int_op(IntOp::Rem, S32, (-7i32) as u32 as u64, 2, 0, 0), (-1i32) as u32 as u64);
        assert_eq!(int_op(IntOp::Add { sat: true }, S32, i32::MAX as u64, 1, 0, 0), i32::MAX as u64);
        assert_eq!(int_op(IntOp::Clz, U32, 1, 0, 0, 0), 31);
        assert_eq!(int_op(IntOp::Brev, U32, 1, 0, 0, 0), 0x8000_0000);
        assert_eq!(int_op(IntOp::Bfe, S32, 0xf0, 4, 4, 0), 0xffff_ffff);
        assert_eq!(int_op(IntOp::Bfe, U32, 0xf0, 4, 4, 0), 0xf);
        assert_eq!(int_op(IntOp::Bfi, U32, 0x3, 0xff00, 4, 2), 0xff30);
        assert_eq!(int_op(IntOp::Prmt, U32, 0x4433_2211, 0x8877_6655, 0x7531, 0), 0x8866_4422);
        assert_eq!(int_op(IntOp::Prmt, U32, 0x0000_0080, 0, 0x8, 0), 0x8080_80ff);
        // lop3 with LUT 0x96 is a ^ b ^ c.
        assert_eq!(int_op(IntOp::Lop3, U32, 0b1100, 0b1010, 0b0110, 0x96), 0b0000);
        assert_eq!(int_op(IntOp::Lop3, U32, 0xf0, 0xcc, 0xaa, 0x80), 0x80);
        assert_eq!(int_op(IntOp::Shf { left: true, clamp: true }, U32, 0x8000_0000, 1, 1, 0), 3);
        assert_eq!(int_op(IntOp::Bfind { shift_amount: false }, U32, 0x10, 0, 0, 0), 4);
        assert_eq!(int_op(IntOp::Bfind { shift_amount: false }, U32, 0, 0, 0, 0), 0xffff_ffff);
    }

    #[test]
    fn float_special_cases() {
        let f = |x: f32| x.to_bits() as u64;
        let min = |a, b| {
            f32::from_bits(float_op(FOp::Min { nan: false }, FTy::F32, Rnd::Rn, false, false, f(a), f(b), 0) as u32)
        };
        assert_eq!(min(f32::NAN, 1.0), 1.0);
        assert!(min(-0.0, 0.0).is_sign_negative());
        let ex2 = |a| f32::from_bits(float_op(FOp::Ex2, FTy::F32, Rnd::Rn, true, false, f(a), 0, 0) as u32);
        assert_eq!(ex2(f32::NEG_INFINITY), 0.0);
        assert_eq!(ex2(-130.0), 0.0); // subnormal result flushed
        let rsqrt = |a| f32::from_bits(float_op(FOp::Rsqrt, FTy::F32, Rnd::Rn, false, false, f(a), 0, 0) as u32);
        assert_eq!(rsqrt(-0.0), f32::NEG_INFINITY);
        assert!(compare(Cmp::Neu, CmpTy::F32, false, f(f32::NAN), f(1.0)));
        assert!(!compare(Cmp::Ne, CmpTy::F32, false, f(f32::NAN), f(1.0)));
        let sat = convert(Num::F32, Num::F32, None, None, true, false, false, f(f32::NAN));
        assert_eq!(sat, 0);
        assert_eq!(convert(Num::Int(S32), Num::F32, None, Some(Rnd::Rz), false, false, false, f(-1e20)), 0x8000_0000);
        assert_eq!(
            convert(
                Num::Int(S32),
                Num::Int(IntTy { bits: 64, signed: true }),
                None,
                None,
                false,
                false,
                false,
                (-5i64) as u64
            ),
            (-5i32) as u32 as u64
        );
        assert_eq!(
            convert(
                Num::Int(IntTy { bits: 64, signed: true }),
                Num::Int(S32),
                None,
                None,
                false,
                false,
                false,
                0xffff_fffb
            ),
            (-5i64) as u64
        );
        assert_eq!(convert_pack(Packed::Bf16x2, false, false, f(1.0), f(2.0)), 0x3f80_4000);
        assert_eq!(convert_pack(Packed::E4m3x2, true, false, f(1.0), f(-1000.0)), 0x38fe);
    }
}
