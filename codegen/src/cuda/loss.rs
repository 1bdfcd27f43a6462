//! Emitters for the losses: the fused next-token cross-entropy (its gradient overwrites the logits; no
//! second copy) and the sequence-wise MoE balance loss with its backward.

use dsv3c_runtime::op::{Balance, Score};

use super::source::Builder;

pub(crate) fn cross_entropy(batch: usize, seq: usize, vocab: usize, shift: usize, grad_scale: f32) -> Builder {
    let valid = batch * seq.saturating_sub(shift);
    Builder::new(format!("cross_entropy_fused_v{vocab}_t{seq}_s{shift}"), "CrossEntropy")
        .math("loss = mean over labelled positions of lse(row) - row[label]; row := grad_scale (softmax - onehot) / n")
        .math("one block per row: max, sum of exp in f64, then the gradient in place")
        .int("BATCH", batch)
        .int("SEQ", seq)
        .int("VOCAB", vocab)
        .int("SHIFT", shift)
        .int("VALID", valid)
        .float("GRAD_SCALE", grad_scale)
        .int("THREADS", 512)
        .body(include_str!("kernels/cross_entropy.cuh"))
        .entry("ce_clear", [1, 1, 1], 32, 0, 0)
        // float scratch[33], then double scratch64[33] at the next 8-byte boundary.
        .entry("ce_rows", [(batch * seq) as u64, 1, 1], 512, 0, (33 * 4u32).next_multiple_of(8) + 33 * 8)
}

fn balance_consts(b: Builder, x: &Balance) -> Builder {
    b.int("BATCH", x.batch)
        .int("SEQ", x.seq)
        .int("EXPERTS", x.experts)
        .int("TOP_K", x.top_k)
        .float("ALPHA", x.alpha)
        .flag("SIGMOID", x.score == Score::Sigmoid)
}

const ZCHUNK: usize = 1024;

pub(crate) fn balance(x: &Balance) -> Builder {
    let b = Builder::new(format!("moe_balance_loss_e{}_k{}_t{}", x.experts, x.top_k, x.seq), "BalanceLoss")
        .math("loss += mean over sequences of alpha * sum_e f_e P_e (DeepSeek-V3 sequence-wise balance loss)")
        .math("one block, fixed-order sums (deterministic)");
    balance_consts(b, x).int("ZCHUNK", ZCHUNK).body(include_str!("kernels/balance_loss.cuh")).entry(
        "balance_loss",
        [1, 1, 1],
        256,
        0,
        (x.experts * 4 + ZCHUNK * 4 + 33 * 4) as u32,
    )
}

pub(crate) fn balance_bwd(x: &Balance, grad_scale: f32) -> Builder {
    let b = Builder::new(format!("moe_balance_loss_bwd_e{}_k{}_t{}", x.experts, x.top_k, x.seq), "BalanceLossBwd")
        .math("dscores += grad_scale * d(balance loss) / d(scores); a block per sequence, a warp per token");
    balance_consts(b, x).float("GRAD_SCALE", grad_scale).body(include_str!("kernels/balance_loss_bwd.cuh")).entry(
        "balance_loss_bwd",
        [x.batch as u64, 1, 1],
        256,
        0,
        (x.experts * 4) as u32,
    )
}
