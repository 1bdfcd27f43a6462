//! Storage formats the GPU uses, emulated on f32: the one place that knows bf16 rounding, FP8
//! E4M3 encoding, and DeepSeek-V3's fine-grained scaling (1×tile activation tiles and tile×tile
//! weight blocks, one f32 scale each, `scale = amax / 448`).

/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;
/// The official kernels clamp a tile's amax from below before dividing (DeepSeek-V3 `act_quant`).
pub const AMAX_FLOOR: f32 = 1e-4;

/// Rounds to the nearest bf16 (ties to even).
pub fn bf16_round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// Decodes an E4M3 byte (the `fn` variant: no infinities; 0x7f and 0xff are NaN), from a table of
/// the 256 values.
pub fn e4m3_to_f32(b: u8) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| e4m3_value(i as u8)))[b as usize]
}

/// The value of an E4M3 byte, from its fields.
fn e4m3_value(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    sign * if exp == 0 { man / 8.0 * 2f32.powi(-6) } else { (1.0 + man / 8.0) * 2f32.powi(exp - 7) }
}

/// Rounds to the nearest E4M3 value (ties to even), saturating at ±448 as the cast used after
/// scaling does. NaN stays NaN.
pub fn e4m3_round(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= E4M3_MAX {
        return E4M3_MAX.copysign(x);
    }
    let r = if a < 1.0 / 64.0 {
        // Below the smallest normal (2^-6) E4M3 is spaced 2^-9: scaling by 512 is exact.
        (a * 512.0).round_ties_even() / 512.0
    } else {
        // A normal E4M3 value keeps 3 of the f32 mantissa's 23 bits: round the other 20 to
        // nearest-even on the bits (a carry moves into the exponent, as it should).
        let b = a.to_bits();
        f32::from_bits((b + 0x7ffff + ((b >> 20) & 1)) & !0xfffff)
    };
    r.min(E4M3_MAX).copysign(x)
}

/// Scale of one tile or block from its amax.
pub fn fp8_scale(amax: f32) -> f32 {
    amax.max(AMAX_FLOOR) / E4M3_MAX
}

/// The E4M3 byte of `x` rounded to the nearest E4M3 value (`e4m3_round`: ties to even,
/// saturating at ±448); NaN is 0x7f (the byte `cvt.rn.satfinite.e4m3x2.f32` writes).
pub fn e4m3_bits(x: f32) -> u8 {
    let r = e4m3_round(x);
    if r.is_nan() {
        return 0x7f;
    }
    let sign = if r.is_sign_negative() { 0x80 } else { 0 };
    let a = r.abs();
    if a < 2f32.powi(-6) {
        // Subnormal (or zero): a multiple of 2^-9, exactly.
        return sign | (a * 512.0) as u8;
    }
    // A normal E4M3 value is a normal f32 with at most 3 mantissa bits.
    let bits = a.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    sign | (((e + 7) as u8) << 3) | ((bits >> 20) & 7) as u8
}

/// How one `rows × cols` matrix's E4M3 scales are laid out (one f32 scale per group):
/// `RowTiles` — 1×tile runs along each row, scales `[rows, ⌈cols/tile⌉]`; `ColTiles` — tile×1 runs
/// down each column, scales `[⌈rows/tile⌉, cols]`; `Blocks` — tile×tile blocks, scales
/// `[⌈rows/tile⌉, ⌈cols/tile⌉]`. All row-major.
pub use crate::op::Scaling;

impl Scaling {
    /// Scales of one `rows × cols` matrix.
    pub fn count(self, rows: usize, cols: usize, tile: usize) -> usize {
        match self {
            Scaling::RowTiles => rows * cols.div_ceil(tile),
            Scaling::ColTiles => rows.div_ceil(tile) * cols,
            Scaling::Blocks => rows.div_ceil(tile) * cols.div_ceil(tile),
        }
    }

    /// The scale of element `(r, c)` of a matrix `cols` wide.
    pub fn index(self, r: usize, c: usize, cols: usize, tile: usize) -> usize {
        match self {
            Scaling::RowTiles => r * cols.div_ceil(tile) + c / tile,
            Scaling::ColTiles => (r / tile) * cols + c,
            Scaling::Blocks => (r / tile) * cols.div_ceil(tile) + c / tile,
        }
    }
}

/// Quantizes a dense row-major `rows × cols` matrix to E4M3 under `scaling`: each group's
/// scale is `max(amax, 1e-4) / 448` and its values `e4m3_round(x / scale)` (returned as the f32
/// values of the E4M3 codes in `q`). `x ≈ q · scale`.
pub fn quantize(x: &[f32], rows: usize, cols: usize, tile: usize, scaling: Scaling, q: &mut [f32], scales: &mut [f32]) {
    let count = scaling.count(rows, cols, tile);
    let scales = &mut scales[..count];
    scales.fill(0.0);
    for r in 0..rows {
        for (c, v) in x[r * cols..(r + 1) * cols].iter().enumerate() {
            let s = &mut scales[scaling.index(r, c, cols, tile)];
            *s = s.max(v.abs());
        }
    }
    scales.iter_mut().for_each(|s| *s = fp8_scale(*s));
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            q[i] = e4m3_round(x[i] / scales[scaling.index(r, c, cols, tile)]);
        }
    }
}

/// The values a quantized matrix stands for: `q · scale` per element (row stride `ld`).
pub fn dequantize(
    q: &[f32],
    scales: &[f32],
    rows: usize,
    cols: usize,
    ld: usize,
    tile: usize,
    scaling: Scaling,
) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[r * cols + c] = q[r * ld + c] * scales[scaling.index(r, c, cols, tile)];
        }
    }
    out
}

/// Quantizes and dequantizes, in place, a dense row-major `rows × cols` matrix under `scaling`
/// (what a GEMM that quantizes its operands on load multiplies); returns the scales.
pub fn fp8_round_trip(x: &mut [f32], rows: usize, cols: usize, tile: usize, scaling: Scaling) -> Vec<f32> {
    let mut scales = vec![0.0; scaling.count(rows, cols, tile)];
    let mut q = vec![0.0; rows * cols];
    quantize(x, rows, cols, tile, scaling, &mut q, &mut scales);
    x.copy_from_slice(&dequantize(&q, &scales, rows, cols, cols, tile, scaling));
    scales
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_round_agrees_with_the_decoded_table() {
        // Every finite E4M3 value rounds to itself; midpoints go to the even neighbour.
        let mut values: Vec<f32> = (0u8..=0x7e).map(e4m3_to_f32).collect();
        values.sort_by(f32::total_cmp);
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(e4m3_round(v), v);
            assert_eq!(e4m3_round(-v), -v);
            if let Some(&next) = values.get(i + 1) {
                let mid = (v + next) / 2.0;
                let even = if (i % 2) == 0 { v } else { next };
                assert_eq!(e4m3_round(mid), even, "midpoint of {v} and {next}");
            }
        }
        assert_eq!(e4m3_round(1e6), 448.0);
        assert_eq!(e4m3_round(-500.0), -448.0);
    }

    #[test]
    fn e4m3_decodes_the_format_extremes() {
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0xfe), -448.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(e4m3_to_f32(0x7f).is_nan());
        assert_eq!(e4m3_to_f32(0x00), 0.0);
    }

    /// The rounding as its definition states it: the spacing at `x`'s binade, ties to even.
    fn e4m3_round_by_spacing(x: f32) -> f32 {
        let a = x.abs();
        if a >= E4M3_MAX {
            return E4M3_MAX.copysign(x);
        }
        if a == 0.0 {
            return x;
        }
        let e = a.log2().floor().max(-6.0) as i32;
        let quantum = 2f64.powi(e - 3);
        let q = a as f64 / quantum;
        let f = q.floor();
        let r = if q - f > 0.5 || (q - f == 0.5 && f % 2.0 != 0.0) { f + 1.0 } else { f };
        ((r * quantum) as f32).min(E4M3_MAX).copysign(x)
    }

    #[test]
    fn e4m3_round_is_rounding_to_the_formats_spacing() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Every binade from 2^-12 to 2^10, both signs.
            let x = f32::from_bits(((s >> 32) as u32 & 0x807f_ffff) | (((115 + i % 23) as u32) << 23));
            assert_eq!(e4m3_round(x), e4m3_round_by_spacing(x), "{x:e}");
        }
    }

    #[test]
    fn e4m3_bits_invert_the_decoder() {
        for b in 0u8..=0xff {
            let v = e4m3_to_f32(b);
            if v.is_nan() {
                assert_eq!(e4m3_bits(v), 0x7f);
            } else if b != 0x80 {
                assert_eq!(e4m3_bits(v), b, "{b:#04x} = {v}");
            }
        }
        assert_eq!(e4m3_bits(-0.0), 0x80);
        assert_eq!(e4m3_bits(1e9), 0x7e);
    }

    #[test]
    fn each_scaling_groups_its_elements() {
        // 3 × 5 with tile 2: element (2, 4) is in row tile (2, 2), column tile (1, 4), block (1, 2).
        assert_eq!(Scaling::RowTiles.index(2, 4, 5, 2), 2 * 3 + 2);
        assert_eq!(Scaling::ColTiles.index(2, 4, 5, 2), 5 + 4);
        assert_eq!(Scaling::Blocks.index(2, 4, 5, 2), 3 + 2);
        assert_eq!(Scaling::RowTiles.count(3, 5, 2), 9);
        assert_eq!(Scaling::ColTiles.count(3, 5, 2), 10);
        assert_eq!(Scaling::Blocks.count(3, 5, 2), 6);
        // One large value sets only its own group's scale.
        let mut x = vec![0.5f32; 15];
        x[2 * 5 + 4] = 448.0;
        for scaling in [Scaling::RowTiles, Scaling::ColTiles, Scaling::Blocks] {
            let s = fp8_round_trip(&mut x.clone(), 3, 5, 2, scaling);
            let big = scaling.index(2, 4, 5, 2);
            for (i, v) in s.iter().enumerate() {
                assert_eq!(*v, if i == big { 1.0 } else { 0.5 / 448.0 }, "{scaling:?} scale {i}");
            }
        }
        // Each group's amax lands on ±448, so the round trip returns it to within f32 rounding.
        let mut y = x.clone();
        fp8_round_trip(&mut y, 3, 5, 2, Scaling::Blocks);
        assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() <= 1e-6 * b), "{y:?}");
    }

    #[test]
    fn bf16_keeps_eight_bits_of_mantissa() {
        assert_eq!(bf16_round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf16_round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
    }
}
