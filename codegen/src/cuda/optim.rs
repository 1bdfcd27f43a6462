//! Emitter for the optimizer over the whole parameter arena: the deterministic global gradient norm fused
//! with AdamW and Lion steps (clipping and accumulation averaging applied on the fly). Not an `Op`: the
//! trainer launches it after the backward; it is specialized to the arena's size.

use super::source::Builder;

/// Gradient elements per norm partial (the CPU optimizer's chunk).
pub const CHUNK: usize = 1 << 14;

pub(crate) fn optimizer(params: usize) -> Builder {
    let chunks = params.div_ceil(CHUNK).max(1);
    let blocks = (params as u64).div_ceil(256).clamp(1, 8192);
    Builder::new(format!("adamw_lion_p{params}"), "optimizer (AdamW / Lion with the global grad norm)", &[
        "see each entry",
    ])
    .math("grad_norm_partials(grad, mask u8, partials f64[CHUNKS]); grad_norm_finish(partials, norm f64[1]);")
    .math("adamw_step(param, grad, m, v, mask, norm, lr, beta1, beta2, eps, wd, 1-beta1^t, 1-beta2^t, grad_scale, clip, bf16)")
    .math("lion_step(param, grad, m, mask, norm, lr, beta1, beta2, wd, grad_scale, clip, bf16)")
    .int("P", params)
    .int("CHUNK", CHUNK)
    .int("CHUNKS", chunks)
    .body(include_str!("kernels/optimizer.cuh"))
    .entry("grad_norm_partials", [chunks as u64, 1, 1], 256, 0, 33 * 8)
    .entry("grad_norm_finish", [1, 1, 1], 1024, 0, 33 * 8)
    .entry("adamw_step", [blocks, 1, 1], 256, 0, 0)
    .entry("lion_step", [blocks, 1, 1], 256, 0, 0)
}
