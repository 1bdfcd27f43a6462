//! Emitters for DeepSeekMoE: the router (scores, group-limited top-k, normalized and scaled weights) and
//! its backward, dispatch (counts, offsets, a stable permutation, gather) and its backward, the grouped
//! expert GEMMs over the device-written offsets (forward, data gradient, weight gradient), combine and its
//! backward, and the aux-loss-free balancing-bias update.

use dsv3c_runtime::op::{GroupedMode, Quant, Route, Score};

use super::dense::{gemm_core, quant_consts, quant_math, GEMM_THREADS};
use super::source::Builder;

fn route_consts(b: Builder, r: &Route) -> Builder {
    b.int("TOKENS", r.tokens)
        .int("EXPERTS", r.experts)
        .int("GROUPS", r.groups)
        .int("PER_GROUP", r.experts / r.groups.max(1))
        .int("TOP_GROUPS", r.top_groups)
        .int("TOP_K", r.top_k)
        .flag("SIGMOID", r.score == Score::Sigmoid)
        .flag("NORMALIZE", r.normalize)
        .float("ROUTE_SCALE", r.scale)
}

fn score_name(s: Score) -> &'static str {
    match s {
        Score::Sigmoid => "sigmoid",
        Score::Softmax => "softmax",
    }
}

pub(crate) fn router(r: &Route) -> Builder {
    let b = Builder::new(format!("moe_router_topk_e{}_g{}_k{}_t{}", r.experts, r.groups, r.top_k, r.tokens), "Router")
        .math(format!(
            "scores = {}(logits); top-{} of scores + bias within the best {} of {} groups; weights {}x {}",
            score_name(r.score),
            r.top_k,
            r.top_groups,
            r.groups,
            if r.normalize { "normalized, " } else { "" },
            r.scale
        ))
        .math("one warp per token, 8 tokens per block");
    route_consts(b, r).body(include_str!("kernels/router.cuh")).entry(
        "router",
        [(r.tokens as u64).div_ceil(8), 1, 1],
        256,
        0,
        (8 * 2 * r.experts * 4 + 8 * r.top_k * 4) as u32,
    )
}

pub(crate) fn router_bwd(r: &Route) -> Builder {
    let b = Builder::new(format!("moe_router_bwd_e{}_k{}_t{}", r.experts, r.top_k, r.tokens), "RouterBwd")
        .math("dscores (rw) += d weights / d scores; dlogits += through the score function")
        .math("one warp per token, 8 tokens per block");
    route_consts(b, r).body(include_str!("kernels/router_bwd.cuh")).entry(
        "router_bwd",
        [(r.tokens as u64).div_ceil(8), 1, 1],
        256,
        0,
        0,
    )
}

pub(crate) fn dispatch(tokens: usize, experts: usize, top_k: usize, d: usize) -> Builder {
    let n = tokens * top_k;
    Builder::new(format!("moe_dispatch_e{experts}_k{top_k}_d{d}_t{tokens}"), "Dispatch")
        .math("rows sorted by expert, stable in (token, slot) order: perm[row] = pair, inv[pair] = row;")
        .math("offsets[e] = first row of expert e (written on the device); xp[row] = x[perm[row] / top_k]")
        .int("TOKENS", tokens)
        .int("EXPERTS", experts)
        .int("TOP_K", top_k)
        .int("D", d)
        .int("N", n)
        .body(include_str!("kernels/dispatch.cuh"))
        .entry("dispatch_count", [experts as u64, 1, 1], 256, 0, 33 * 4)
        .entry("dispatch_scan", [1, 1, 1], 32, 0, 0)
        .entry("dispatch_place", [experts as u64, 1, 1], 256, 0, 8 * 4)
        .entry("dispatch_gather", [n as u64, 1, 1], 128, 0, 0)
}

pub(crate) fn dispatch_bwd(tokens: usize, top_k: usize, d: usize) -> Builder {
    Builder::new(format!("moe_dispatch_bwd_k{top_k}_d{d}_t{tokens}"), "DispatchBwd")
        .math("dx[t] += sum_slot dxp[inv[t * top_k + slot]], one block per token, slots in order")
        .int("TOKENS", tokens)
        .int("TOP_K", top_k)
        .int("D", d)
        .body(include_str!("kernels/dispatch_bwd.cuh"))
        .entry("dispatch_bwd", [tokens as u64, 1, 1], 128, 0, 0)
}

pub(crate) fn combine(tokens: usize, top_k: usize, d: usize) -> Builder {
    Builder::new(format!("moe_combine_k{top_k}_d{d}_t{tokens}"), "Combine")
        .math("out[t] += sum_slot weights[t, slot] * yp[inv[t * top_k + slot]] (shared experts already in out)")
        .int("TOKENS", tokens)
        .int("TOP_K", top_k)
        .int("D", d)
        .body(include_str!("kernels/combine.cuh"))
        .entry("combine", [tokens as u64, 1, 1], 128, 0, 0)
}

pub(crate) fn combine_bwd(tokens: usize, top_k: usize, d: usize) -> Builder {
    let n = tokens * top_k;
    Builder::new(format!("moe_combine_bwd_k{top_k}_d{d}_t{tokens}"), "CombineBwd")
        .math("dyp[row] = weights[perm[row]] * dout[token]; dweights[pair] += dout[token] . yp[inv[pair]]")
        .int("TOKENS", tokens)
        .int("TOP_K", top_k)
        .int("D", d)
        .int("N", n)
        .body(include_str!("kernels/combine_bwd.cuh"))
        .entry("combine_bwd_rows", [n as u64, 1, 1], 128, 0, 0)
        .entry("combine_bwd_weights", [(n as u64).div_ceil(8), 1, 1], 256, 0, 0)
}

pub(crate) fn grouped_gemm(
    experts: usize,
    rows: usize,
    n: usize,
    k: usize,
    mode: GroupedMode,
    quant: Quant,
) -> Builder {
    let quant = quant.grouped(mode);
    let core = gemm_core(quant);
    let (bm, bn) = (core.bm, core.bn);
    let prefix = core.prefix.replace("gemm", "grouped_gemm");
    let stored = matches!(quant, Quant::Fp8Stored { .. });
    let (dir, body, math, entry) = match mode {
        GroupedMode::Forward => (
            "fwd",
            if stored {
                include_str!("kernels/grouped_forward_fp8.cuh")
            } else {
                include_str!("kernels/grouped_forward.cuh")
            },
            "y[rows_e, n] = x[rows_e, k] . W_e[n, k]^T for each expert e",
            "grouped_forward",
        ),
        GroupedMode::DataGrad => (
            "dgrad",
            if stored {
                include_str!("kernels/grouped_data_grad_fp8.cuh")
            } else {
                include_str!("kernels/grouped_data_grad.cuh")
            },
            "dx[rows_e, k] += dy[rows_e, n] . W_e[n, k] for each expert e",
            "grouped_data_grad",
        ),
        GroupedMode::WeightGrad => (
            "wgrad",
            include_str!("kernels/grouped_weight_grad.cuh"),
            "dW_e[n, k] += dy[rows_e, n]^T . x[rows_e, k] for each expert e",
            "grouped_weight_grad",
        ),
    };
    // The core's operand layout for each product (see the entry bodies).
    let (lda, ldb, ldc, ta, tb, accumulate) = match mode {
        GroupedMode::Forward => (k, k, n, false, true, false),
        GroupedMode::DataGrad => (n, k, k, false, false, true),
        GroupedMode::WeightGrad => (n, k, k, true, false, true),
    };
    let grid = match mode {
        GroupedMode::Forward => [(rows as u64).div_ceil(bm) + experts as u64, (n as u64).div_ceil(bn), 1],
        GroupedMode::DataGrad => [(rows as u64).div_ceil(bm) + experts as u64, (k as u64).div_ceil(bn), 1],
        GroupedMode::WeightGrad => [(n as u64).div_ceil(bm), (k as u64).div_ceil(bn), experts as u64],
    };
    let b = Builder::new(format!("{prefix}_{dir}_e{experts}_n{n}_k{k}_r{rows}"), "GroupedGemm")
        .math(math)
        .math(quant_math(quant))
        .math("rows of expert e: offsets[e] .. offsets[e + 1], written on the device by dispatch")
        .int("EXPERTS", experts)
        .int("ROWS", rows)
        .int("EN", n)
        .int("EK", k)
        .int("LDA", lda)
        .int("LDB", ldb)
        .int("LDC", ldc)
        .flag("TA", ta)
        .flag("TB", tb)
        .flag("ACCUMULATE", accumulate);
    // A stored weight's scales per expert (the entries step over them expert by expert).
    let b = match quant {
        Quant::Fp8Stored { tile, b_blocks } => b.int("WB", mode.weight_scales(n, k, tile, b_blocks).1),
        _ => b,
    };
    let b = core.consts(quant_consts(b, quant)).body(core.source);
    let b = if mode == GroupedMode::WeightGrad { b } else { b.body(include_str!("kernels/grouped_sched.cuh")) };
    b.body(body).entry(entry, grid, GEMM_THREADS, 0, core.smem)
}

/// One MoE layer's routing statistics (counts, router entropy, tokens) added to the step's.
pub(crate) fn expert_stats(tokens: usize, experts: usize, top_k: usize) -> Builder {
    Builder::new(format!("expert_stats_e{experts}_k{top_k}_t{tokens}"), "routing statistics")
        .math("stats[e] += #(choices of e); stats[E] += sum_t H(scores_t / sum scores_t) / ln E; stats[E+1] += tokens")
        .int("TOKENS", tokens)
        .int("EXPERTS", experts)
        .int("TOP_K", top_k)
        .body(include_str!("kernels/expert_stats.cuh"))
        .entry("expert_stats", [1, 1, 1], 256, 0, (experts * 4 + 33 * 8) as u32)
}

/// The aux-loss-free balancing-bias update from the step's counts.
pub(crate) fn bias_update(experts: usize, gamma: f32) -> Builder {
    let b = Builder::new(format!("bias_update_e{experts}"), "aux-loss-free bias update")
        .math("nothing unless norm * grad_scale is finite and <= max_grad_norm (the step guard)")
        .math("bias[e] += gamma * sign(mean(counts) - counts[e])")
        .int("EXPERTS", experts)
        .float("GAMMA", gamma);
    super::optim::scalar_indices(b).body(include_str!("kernels/bias_update.cuh")).entry(
        "bias_update",
        [1, 1, 1],
        1024,
        0,
        33 * 8,
    )
}
