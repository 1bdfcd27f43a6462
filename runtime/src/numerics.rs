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

/// Decodes an E4M3 byte (the `fn` variant: no infinities; 0x7f and 0xff are NaN).
pub fn e4m3_to_f32(b: u8) -> f32 {
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
    if a == 0.0 {
        return x;
    }
    // Spacing: 2^(e−3) for normals (e ≥ −6); subnormals share the spacing 2^−9.
    let e = a.log2().floor().max(-6.0) as i32;
    let quantum = 2f32.powi(e - 3);
    // a / quantum is exact (a power-of-two divisor), so a tie is exactly .5.
    let q = a / quantum;
    let f = q.floor();
    let frac = q - f;
    let r = if frac > 0.5 || (frac == 0.5 && f % 2.0 != 0.0) { f + 1.0 } else { f };
    (r * quantum).min(E4M3_MAX).copysign(x)
}

/// Scale of one tile or block from its amax.
pub fn fp8_scale(amax: f32) -> f32 {
    amax.max(AMAX_FLOOR) / E4M3_MAX
}

/// Quantizes and dequantizes, in place, a `rows × cols` matrix (row stride `ld`) in 1×`tile`
/// tiles along each row; returns the scales `[rows, ceil(cols/tile)]`.
pub fn fp8_tiles(x: &mut [f32], rows: usize, cols: usize, ld: usize, tile: usize) -> Vec<f32> {
    let tiles = cols.div_ceil(tile);
    let mut scales = Vec::with_capacity(rows * tiles);
    for r in 0..rows {
        for t in 0..tiles {
            let span = r * ld + t * tile..r * ld + ((t + 1) * tile).min(cols);
            let amax = x[span.clone()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = fp8_scale(amax);
            for v in &mut x[span] {
                *v = e4m3_round(*v / s) * s;
            }
            scales.push(s);
        }
    }
    scales
}

/// Quantizes and dequantizes, in place, a `rows × cols` matrix (row stride `ld`) in
/// `block × block` blocks; returns the scales `[ceil(rows/block), ceil(cols/block)]`.
pub fn fp8_blocks(x: &mut [f32], rows: usize, cols: usize, ld: usize, block: usize) -> Vec<f32> {
    let (br, bc) = (rows.div_ceil(block), cols.div_ceil(block));
    let mut scales = Vec::with_capacity(br * bc);
    for i in 0..br {
        for j in 0..bc {
            let (r0, r1, c0, c1) = (i * block, ((i + 1) * block).min(rows), j * block, ((j + 1) * block).min(cols));
            let amax = (r0..r1).flat_map(|r| x[r * ld + c0..r * ld + c1].iter()).fold(0.0f32, |m, v| m.max(v.abs()));
            let s = fp8_scale(amax);
            for r in r0..r1 {
                for v in &mut x[r * ld + c0..r * ld + c1] {
                    *v = e4m3_round(*v / s) * s;
                }
            }
            scales.push(s);
        }
    }
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

    #[test]
    fn bf16_keeps_eight_bits_of_mantissa() {
        assert_eq!(bf16_round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf16_round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
    }
}
