//! Emitters for the training step's ops: the deterministic global gradient norm, and the AdamW and
//! Lion steps over the trained parameters (averaging and clipping applied on the fly, settings read
//! from the step's scalar buffer, whose layout `op::scalars` fixes for both backends).

use dsv3c_runtime::op::{scalars, OptimizerKind, Update, GRAD_NORM_CHUNK};

use super::elementwise_grid;
use super::source::Builder;

pub(crate) fn grad_norm(n: usize) -> Builder {
    let chunks = n.div_ceil(GRAD_NORM_CHUNK).max(1);
    Builder::new(format!("grad_norm_n{n}"), "global gradient norm")
        .math("partials[c] = sum over chunk c of g^2 (f64, stored f32); norm = sqrt(sum_c partials[c])")
        .int("N", n)
        .int("CHUNK", GRAD_NORM_CHUNK)
        .int("CHUNKS", chunks)
        .body(include_str!("kernels/norm_parts.cuh"))
        .body(include_str!("kernels/grad_norm.cuh"))
        .entry("grad_norm_partials", [chunks as u64, 1, 1], 256, 0, 33 * 8)
        .entry("grad_norm_finish", [1, 1, 1], 1024, 0, 33 * 8)
}

pub(crate) fn sum_squares(n: usize) -> Builder {
    let chunks = n.div_ceil(GRAD_NORM_CHUNK).max(1);
    Builder::new(format!("sum_squares_n{n}"), "sums of squares by chunk")
        .math("partials[c] = sum over chunk c of x^2 (f64, stored f32)")
        .int("N", n)
        .int("CHUNK", GRAD_NORM_CHUNK)
        .body(include_str!("kernels/norm_parts.cuh"))
        .body(include_str!("kernels/sum_squares.cuh"))
        .entry("sum_squares", [chunks as u64, 1, 1], 256, 0, 33 * 8)
}

pub(crate) fn sum_parts(parts: usize, root: bool) -> Builder {
    Builder::new(format!("sum_parts_n{parts}{}", if root { "_root" } else { "" }), "a sum of partial sums")
        .math(if root { "out = sqrt(sum_c partials[c]) (f64)" } else { "out = sum_c partials[c] (f64)" })
        .int("CHUNK", GRAD_NORM_CHUNK)
        .int("PARTS", parts)
        .flag("ROOT", root)
        .body(include_str!("kernels/norm_parts.cuh"))
        .body(include_str!("kernels/sum_parts.cuh"))
        .entry("sum_parts", [1, 1, 1], 1024, 0, 33 * 8)
}

/// The scalar-buffer indices, as the CPU reads them, and the step guard over them.
pub(crate) fn scalar_indices(b: Builder) -> Builder {
    b.int("S_LR", scalars::LR)
        .int("S_STEP", scalars::STEP)
        .int("S_GRAD_SCALE", scalars::GRAD_SCALE)
        .int("S_BETA1", scalars::BETA1)
        .int("S_BETA2", scalars::BETA2)
        .int("S_EPS", scalars::EPS)
        .int("S_WEIGHT_DECAY", scalars::WEIGHT_DECAY)
        .int("S_EMBEDDING_DECAY", scalars::EMBEDDING_DECAY)
        .int("S_CLIP", scalars::CLIP)
        .int("S_MAX_GRAD_NORM", scalars::MAX_GRAD_NORM)
        .body(include_str!("kernels/step_guard.cuh"))
}

pub(crate) fn optimizer(u: &Update) -> Builder {
    let (name, entry, math, body): (&str, &'static str, &str, &'static str) = match u.kind {
        OptimizerKind::AdamW => (
            "adamw",
            "adamw_step",
            "g = grad * f; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr ((m/c1) / (sqrt(v/c2) + eps) + wd p)",
            include_str!("kernels/adamw.cuh"),
        ),
        OptimizerKind::Lion => (
            "lion",
            "lion_step",
            "g = grad * f; p -= lr (sign(b1 m + (1-b1) g) + wd p); m = b2 m + (1-b2) g",
            include_str!("kernels/lion.cuh"),
        ),
    };
    let b = Builder::new(format!("{name}_n{}", u.n), format!("optimizer step ({name})"))
        .math("nothing unless norm * grad_scale is finite and <= max_grad_norm (the step guard)")
        .math("f = grad_scale * min(1, clip / (norm * grad_scale)) when clip > 0, else grad_scale")
        .math(math)
        .int("N", u.n)
        .int("DECAY_END", u.decay_end)
        .int("EMBEDDING_END", u.embedding_end)
        .flag("BF16_MOMENTS", u.bf16_moments);
    scalar_indices(b).body(include_str!("kernels/optimizer.cuh")).body(body).entry(
        entry,
        elementwise_grid(u.n),
        256,
        0,
        0,
    )
}
