//! Storage dtypes: how the elements of an arena slice are laid out in bytes. Math is f32 on every
//! backend; a slice's dtype says how values are stored between launches. Converting into a
//! storage dtype rounds to nearest-even (bf16, e4m3 — saturating at ±448) or is exact (i32 holds
//! the integers the f32 arenas held before: token ids, expert indices, permutations, offsets —
//! all below 2^24). An e4m3 slice holds scaled values: the f32 scales that give them meaning
//! are a separate slice, written by the same `Op::Quantize` and read beside it by the FP8 GEMMs.

use serde::{Deserialize, Serialize};

use crate::numerics::{bf16_round, e4m3_bits, e4m3_round, e4m3_to_f32};

/// The storage format of one slice's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary32.
    #[default]
    F32,
    /// bfloat16: the top 16 bits of an f32, rounded to nearest-even.
    Bf16,
    /// Two's-complement 32-bit integers (ids, indices, offsets).
    I32,
    /// FP8 E4M3 (the `fn` variant: no infinities, saturating at ±448): scaled GEMM operands.
    E4m3,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 => 2,
            DType::E4m3 => 1,
        }
    }

    /// The lower-case name used in plans, headers and generated code (`f32`, `bf16`, `i32`,
    /// `e4m3`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::I32 => "i32",
            DType::E4m3 => "e4m3",
        }
    }

    /// The CUDA storage type of an element (`bf16` and `e4m3` are the prelude's structs).
    pub const fn cuda(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::Bf16 => "bf16",
            DType::I32 => "i32",
            DType::E4m3 => "e4m3",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `x` rounded to the nearest bf16 (ties to even, `numerics::bf16_round`), as bits; NaN stays a
/// quiet NaN.
pub fn bf16_bits(x: f32) -> u16 {
    (bf16_round(x).to_bits() >> 16) as u16
}

/// The f32 value of bf16 bits (exact).
pub fn bf16_value(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// An f32 value stored as i32: truncated toward zero and saturated, NaN to 0 (the rule of CUDA's
/// `cvt.rzi.s32.f32` and of Rust's `as`), so both backends store the same integer.
pub fn i32_value(x: f32) -> i32 {
    x as i32
}

/// Decodes `bytes` (little-endian elements of `dtype`) into `out` (one f32 per element).
pub fn decode(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * dtype.size());
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::Bf16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_value(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        DType::I32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        DType::E4m3 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = e4m3_to_f32(b);
            }
        }
    }
}

/// Encodes `values` into `bytes` as `dtype` (rounding to nearest-even for bf16 and e4m3 — e4m3
/// saturating at ±448 — truncating for i32).
pub fn encode(dtype: DType, values: &[f32], bytes: &mut [u8]) {
    debug_assert_eq!(bytes.len(), values.len() * dtype.size());
    match dtype {
        DType::F32 => {
            for (v, c) in values.iter().zip(bytes.chunks_exact_mut(4)) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::Bf16 => {
            for (v, c) in values.iter().zip(bytes.chunks_exact_mut(2)) {
                c.copy_from_slice(&bf16_bits(*v).to_le_bytes());
            }
        }
        DType::I32 => {
            for (v, c) in values.iter().zip(bytes.chunks_exact_mut(4)) {
                c.copy_from_slice(&i32_value(*v).to_le_bytes());
            }
        }
        DType::E4m3 => {
            for (v, b) in values.iter().zip(bytes.iter_mut()) {
                *b = e4m3_bits(*v);
            }
        }
    }
}

/// The values a round trip through `dtype` leaves (what a reader of a stored slice sees).
pub fn stored(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::Bf16 => bf16_round(x),
        DType::I32 => i32_value(x) as f32,
        DType::E4m3 => e4m3_round(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
        assert_eq!(bf16_value(bf16_bits(-0.0)).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn storage_round_trips() {
        let v = [0.0, 1.5, -3.25, 1e-3, 65504.0, 7.0];
        for d in [DType::F32, DType::Bf16, DType::I32, DType::E4m3] {
            let mut bytes = vec![0u8; v.len() * d.size()];
            encode(d, &v, &mut bytes);
            let mut back = vec![0.0; v.len()];
            decode(d, &bytes, &mut back);
            for (x, y) in v.iter().zip(&back) {
                assert_eq!(stored(d, *x), *y, "{d}: {x}");
            }
        }
        assert_eq!(stored(DType::I32, -2.7), -2.0);
        assert_eq!(stored(DType::I32, f32::NAN), 0.0);
        assert_eq!(stored(DType::E4m3, 1000.0), 448.0);
    }

    #[test]
    fn e4m3_bytes_are_the_formats_encoding() {
        let mut b = [0u8; 6];
        encode(DType::E4m3, &[1.0, -448.0, 2f32.powi(-9), 0.0, f32::NAN, 1.0625], &mut b);
        // 1.0625 is halfway between 1 and 1.125: ties to the even mantissa (1.0).
        assert_eq!(b, [0x38, 0xfe, 0x01, 0x00, 0x7f, 0x38]);
    }
}
