//! Property tests of the FP8 recipe's emulation: E4M3 with 1×tile activation tiles and
//! tile×tile weight blocks, scale = amax/448, saturation at 448; and FP8 GEMMs.

use dsv3c_runtime::cpu::run_op;
use dsv3c_runtime::init::SplitMix64;
use dsv3c_runtime::numerics::*;
use dsv3c_runtime::op::{Op, Quant};
use dsv3c_runtime::tolerance::rel_l2;
use proptest::prelude::*;

fn data(seed: u64, n: usize, spread: f64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    // Log-uniform magnitudes over `spread` decades, random signs.
    (0..n).map(|_| (10f64.powf((r.unit() - 0.5) * spread) * if r.unit() < 0.5 { -1.0 } else { 1.0 }) as f32).collect()
}

/// Checks one tile or block `orig -> q` with scale `s`.
fn check_group(orig: &[f32], q: &[f32], s: f32) -> Result<(), TestCaseError> {
    let amax = orig.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    prop_assert!((s - amax.max(AMAX_FLOOR) / 448.0).abs() <= f32::EPSILON * s);
    for (&x, &y) in orig.iter().zip(q) {
        let code = y / s;
        prop_assert!(code.abs() <= 448.0 * (1.0 + f32::EPSILON), "{code} beyond E4M3");
        prop_assert!((e4m3_round(code) - code).abs() <= 4.0 * f32::EPSILON * code.abs(), "{code} is not an E4M3 value");
        // Half a step of E4M3: 2^-4 relative for normals, 2^-10 absolute (times s) below.
        let bound = (x.abs() * 2f32.powi(-4)).max(2f32.powi(-10) * s) * (1.0 + 1e-5);
        prop_assert!((y - x).abs() <= bound, "{x} -> {y} (scale {s})");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn activation_tiles(seed: u64, rows in 1usize..4, cols in 1usize..300, tile in prop::sample::select(vec![16usize, 32, 128]), spread in 0.0f64..8.0) {
        let x = data(seed, rows * cols, spread);
        let mut q = x.clone();
        let scales = fp8_round_trip(&mut q, rows, cols, tile, Scaling::RowTiles);
        let tiles = cols.div_ceil(tile);
        prop_assert_eq!(scales.len(), rows * tiles);
        for r in 0..rows {
            for t in 0..tiles {
                let span = r * cols + t * tile..r * cols + ((t + 1) * tile).min(cols);
                check_group(&x[span.clone()], &q[span], scales[r * tiles + t])?;
            }
        }
        // Quantizing again changes nothing.
        let mut again = q.clone();
        fp8_round_trip(&mut again, rows, cols, tile, Scaling::RowTiles);
        prop_assert!(rel_l2(&again, &q) < 1e-6);
    }

    #[test]
    fn weight_blocks(seed: u64, rows in 1usize..200, cols in 1usize..200, block in prop::sample::select(vec![16usize, 64, 128]), spread in 0.0f64..6.0) {
        let x = data(seed, rows * cols, spread);
        let mut q = x.clone();
        let scales = fp8_round_trip(&mut q, rows, cols, block, Scaling::Blocks);
        let (br, bc) = (rows.div_ceil(block), cols.div_ceil(block));
        prop_assert_eq!(scales.len(), br * bc);
        for i in 0..br {
            for j in 0..bc {
                let (mut o, mut g) = (Vec::new(), Vec::new());
                for r in i * block..((i + 1) * block).min(rows) {
                    for c in j * block..((j + 1) * block).min(cols) {
                        o.push(x[r * cols + c]);
                        g.push(q[r * cols + c]);
                    }
                }
                check_group(&o, &g, scales[i * bc + j])?;
            }
        }
    }

    #[test]
    fn fp8_gemm_tracks_the_f32_product(seed: u64, m in 2usize..8, n in 2usize..8, k in 1usize..100, layout in 0usize..3) {
        // K need not be a multiple of the tile (the last tile is partial); NN, NT and TN.
        let tile = 32;
        let (ta, tb) = [(false, false), (false, true), (true, false)][layout];
        let a = data(seed, m * k, 2.0);
        let b = data(seed ^ 1, n * k, 2.0);
        let gemm = |quant| {
            let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
            let mut v = vec![a.clone(), b.clone(), vec![0.0; m * n]];
            run_op(&Op::Gemm { m, n, k, lda, ldb, ldc: n, ta, tb, accumulate: false, quant }, &mut v);
            v.pop().unwrap()
        };
        let at = |x: &[f32], i: usize, p: usize, t: bool, rows: usize, cols: usize| if t { x[p * rows + i] } else { x[i * cols + p] };
        let (opa, opb) = (|i: usize, p: usize| at(&a, i, p, ta, m, k), |p: usize, j: usize| at(&b, j, p, !tb, n, k));
        let exact = gemm(Quant::None);
        // Each operand element is off by at most 2^-4 relative (2^-10·scale absolute), and the
        // bf16 output by 2^-8: |c' − c| ≤ ((1 + 2^-4)² − 1 + 2^-8)·Σ_p |a_ip||b_pj| (+ tiny).
        let abs_dot = |i: usize, j: usize| (0..k).map(|p| (opa(i, p) * opb(p, j)).abs()).sum::<f32>();
        let mut errors = Vec::new();
        for (quant, rel) in [(Quant::Fp8 { tile, b_blocks: true }, 0.1329), (Quant::Fp8 { tile, b_blocks: false }, 0.1329), (Quant::Bf16, 0.012)] {
            let got = gemm(quant);
            for i in 0..m {
                for j in 0..n {
                    let (g, e) = (got[i * n + j], exact[i * n + j]);
                    prop_assert!((g - e).abs() <= rel * abs_dot(i, j) + 1e-3 * e.abs() + 1e-6, "{quant:?}: {g} vs {e}");
                }
            }
            errors.push(rel_l2(&got, &exact));
        }
        // FP8 really quantized (an FP8 GEMM that silently ran in f32 or bf16 fails): with eight
        // or more products per output, E4M3's 3-bit mantissa costs more than bf16's 8 bits.
        if k >= 8 {
            prop_assert!(errors[0] > errors[2] && errors[1] > errors[2], "FP8 errors {errors:?} not above bf16's");
        }
        prop_assert!(errors[2] > 0.0, "bf16 rounding changed nothing");
    }
}

#[test]
fn saturation_and_the_amax_floor() {
    let mut x = vec![0.0f32; 128];
    let s = fp8_round_trip(&mut x, 1, 128, 128, Scaling::RowTiles);
    assert_eq!(s[0], AMAX_FLOOR / 448.0);
    assert!(x.iter().all(|v| *v == 0.0));
    let mut y: Vec<f32> = (0..128).map(|i| i as f32 - 64.0).collect();
    let s = fp8_round_trip(&mut y, 1, 128, 128, Scaling::RowTiles);
    assert_eq!(s[0], 64.0 / 448.0);
    assert!((y[0] + 64.0).abs() <= 64.0 * f32::EPSILON, "the amax element maps to -448·s");
}
