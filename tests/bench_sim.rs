//! `dsv3c bench sim` (`bench kernels --device sim`): the kernels of a training step run in the PTX emulator over arguments stored in
//! the dtypes their launches pass (i32 offsets, bf16 activations, e4m3 operands with f32 scales), with
//! no sanitizer finding — a kernel handed f32 bits for its i32 expert offsets reads far outside its rows.
//! Needs NVRTC (`DSV3C_NVRTC`, as `scripts/test.sh` sets it); skipped without, unless
//! `DSV3C_REQUIRE_NVRTC` is set.

mod common;

#[test]
fn a_steps_expert_kernels_run_clean_over_their_storage() {
    if !common::nvrtc_or_skip("bench sim") {
        return;
    }
    let args = ["bench", "sim", "spec/small-fp8.yaml", "--seq", "128", "--only", "grouped", "--sample-blocks", "2"];
    // About a second when right; reading f32 bits as expert offsets walks rows for many minutes.
    let out = common::dsv3c_within(&args, std::time::Duration::from_secs(120)).expect("bench sim ran past 120 s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("grouped_gemm_fwd") && err.contains("grouped_gemm_wgrad"), "{err}");
    assert!(!err.contains("sanitizer:"), "{err}");
}
