//! Emitters for normalization and position: RMSNorm and DynamicTanh (forward and backward) and rotary
//! embedding with YaRN (its frequency table computed here exactly as the CPU reference does, baked in).

use dsv3c_runtime::op::RopeFreqs;

use super::source::Builder;

/// Threads per row for the row-wise norm kernels: enough to cover `d` in a few passes.
fn row_threads(d: usize) -> u32 {
    match d {
        0..=256 => 64,
        257..=1024 => 128,
        1025..=4096 => 256,
        _ => 512,
    }
}

pub(crate) fn rmsnorm(rows: usize, d: usize, in_stride: usize, eps: f32) -> Builder {
    let t = row_threads(d);
    Builder::new(format!("rmsnorm_fwd_r{rows}_d{d}"), "RmsNorm")
        .math("y = w * x * rstd, rstd = 1 / sqrt(mean(x^2) + eps); one block per row")
        .int("ROWS", rows)
        .int("D", d)
        .int("IN_STRIDE", in_stride)
        .float("EPS", eps)
        .int("THREADS", t as usize)
        .body(include_str!("kernels/rmsnorm.cuh"))
        .entry("rmsnorm", [rows as u64, 1, 1], t, 0, 33 * 4)
}

pub(crate) fn rmsnorm_bwd(rows: usize, d: usize, in_stride: usize) -> Builder {
    let t = row_threads(d);
    Builder::new(format!("rmsnorm_bwd_r{rows}_d{d}"), "RmsNormBwd")
        .math("dx += rstd * (g - xhat * mean(g * xhat)), g = dy * w; dw += sum_rows dy * xhat (fixed order)")
        .int("ROWS", rows)
        .int("D", d)
        .int("IN_STRIDE", in_stride)
        .int("THREADS", t as usize)
        .body(include_str!("kernels/rmsnorm_bwd.cuh"))
        .entry("rmsnorm_bwd_dx", [rows as u64, 1, 1], t, 0, 33 * 4)
        .entry("rmsnorm_bwd_dw", [(d as u64).div_ceil(32), 1, 1], 256, 0, 8 * 33 * 4)
}

pub(crate) fn dyt(rows: usize, d: usize, in_stride: usize) -> Builder {
    let t = row_threads(d);
    Builder::new(format!("dyt_fwd_r{rows}_d{d}"), "Dyt")
        .math("DynamicTanh: y = w * tanh(alpha * x) + b; one block per row")
        .int("ROWS", rows)
        .int("D", d)
        .int("IN_STRIDE", in_stride)
        .int("THREADS", t as usize)
        .body(include_str!("kernels/dyt.cuh"))
        .entry("dyt", [rows as u64, 1, 1], t, 0, 0)
}

pub(crate) fn dyt_bwd(rows: usize, d: usize, in_stride: usize) -> Builder {
    let t = row_threads(d);
    Builder::new(
        format!("dyt_bwd_r{rows}_d{d}"),
        "DytBwd")
    .math("dx += dy * w * alpha * (1 - t^2), t = tanh(alpha x); dw += sum dy t; db += sum dy; dalpha += sum dy w x (1 - t^2)")
    .int("ROWS", rows)
    .int("D", d)
    .int("IN_STRIDE", in_stride)
    .int("THREADS", t as usize)
    .body(include_str!("kernels/dyt_bwd.cuh"))
    .entry("dyt_bwd_dx", [rows as u64, 1, 1], t, 0, 0)
    .entry("dyt_bwd_params", [1, 1, 1], 1024, 0, 33 * 4)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn rope(
    tokens: usize,
    seq: usize,
    heads: usize,
    row_stride: usize,
    head_stride: usize,
    offset: usize,
    dim: usize,
    freqs: &RopeFreqs,
    inverse: bool,
) -> Builder {
    let kind = if freqs.yarn.is_some() { "rope_yarn" } else { "rope" };
    let dir = if inverse { "bwd" } else { "fwd" };
    let scaling = match freqs.yarn {
        Some((factor, orig, fast, slow)) => {
            format!("YaRN factor {factor}, original context {orig}, beta_fast {fast}, beta_slow {slow}")
        }
        None => "no scaling".into(),
    };
    Builder::new(format!("{kind}_{dir}_h{heads}_d{dim}_t{tokens}"), if inverse { "Rope (inverse)" } else { "Rope" })
        .math("in place: (x[2i], x[2i+1]) -> ([i], [dim/2 + i]) rotated by pos * inv_freq[i] (HF layout)")
        .math(format!("theta = {}, {scaling}, attention factor {}", freqs.theta, freqs.attention_factor))
        .int("TOKENS", tokens)
        .int("SEQ", seq)
        .int("HEADS", heads)
        .int("ROW_STRIDE", row_stride)
        .int("HEAD_STRIDE", head_stride)
        .int("OFFSET", offset)
        .int("DIM", dim)
        .int("HALF", dim / 2)
        .flag("INVERSE", inverse)
        .float("ATTENTION_FACTOR", freqs.attention_factor)
        .floats("INV_FREQ", freqs.inv_freq(dim))
        .body(include_str!("kernels/rope_common.cuh"))
        .body(include_str!("kernels/rope.cuh"))
        .entry("rope", [tokens as u64, 1, 1], 128, 0, (heads * dim * 4) as u32)
}
