//! Every numerical tolerance the tests use, in one table.
//!
//! The CPU reference computes in f32; oracles are float64 (transformers with its float32 casts
//! removed, or our own PyTorch reference). Finite differences run in f32 on small inputs.

/// Relative error of a loss, f32 reference vs a float64 oracle.
pub const LOSS_REL_F32: f64 = 1e-5;
/// Relative L2 error of a gradient tensor, f32 reference vs a float64 oracle.
pub const GRAD_REL_L2_F32: f64 = 1e-4;
/// Relative L2 error of an op's analytic backward vs central finite differences in f32.
pub const FINITE_DIFF_REL_L2: f64 = 2e-2;
/// Step of those central differences.
pub const FINITE_DIFF_STEP: f32 = 1e-2;

/// `‖a − b‖ / max(‖b‖, tiny)`, in f64. Panics if the lengths differ (a truncated comparison
/// would hide a missing tail).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_l2 of slices of different lengths");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

/// Relative L2 error of a CUDA kernel's output (in the PTX emulator or on a GPU) vs the CPU reference on
/// identical inputs: f32 math summed in another order.
pub const KERNEL_REL_L2_F32: f64 = 1e-5;
/// The same for bf16 GEMMs: operands rounded identically, f32 accumulation in another order, an
/// overwritten output rounded to bf16 (a one-ulp flip at a rounding boundary costs up to 2^-8 there).
/// Measured in the emulator: about 1e-7 (the roundings agree bit for bit).
pub const KERNEL_REL_L2_BF16: f64 = 1e-3;
/// The same for FP8 GEMMs (identical E4M3 quantization; outputs rounded to bf16). Measured in the
/// emulator: about 1e-7; real tensor cores accumulate FP8 products in fewer bits.
pub const KERNEL_REL_L2_FP8: f64 = 1e-3;
