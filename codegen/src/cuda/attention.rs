//! Emitters for Multi-head Latent Attention, forward and backward, flash-style (tiles in shared memory,
//! online softmax, causal mask, q/k head dim = nope + rope with the rope key shared by all heads, a separate
//! v head dim), with the sliding-window + sink-tokens variant.

use dsv3c_runtime::op::Attn;

use super::source::Builder;

const COMMON: &str = include_str!("kernels/attention_common.cuh");
/// Queries (and keys) per tile.
const BQ: usize = 32;
/// Threads per block: one per row of a tile and column residue mod 4.
const THREADS: u32 = 128;

fn base(a: &Attn, stem: String, op: &str) -> Builder {
    let (window, sinks) = a.window.unwrap_or((0, 0));
    Builder::new(stem, op)
        .int("BATCH", a.batch)
        .int("SEQ", a.seq)
        .int("HEADS", a.heads)
        .int("NOPE", a.nope)
        .int("ROPE", a.rope)
        .int("DQK", a.nope + a.rope)
        .int("DV", a.v)
        .int("KPE_STRIDE", a.kpe_stride)
        .int("KPE_OFFSET", a.kpe_offset)
        .float("SCALE", a.scale)
        .int("WINDOW", window)
        .int("SINKS", sinks)
        .int("BQ", BQ)
        .int("BKV", BQ)
        .int("THREADS", THREADS as usize)
        .body(COMMON)
}

fn name(a: &Attn, dir: &str) -> String {
    let swa = match a.window {
        Some((w, s)) => format!("_swa{w}s{s}"),
        None => String::new(),
    };
    format!("mla_attention_{dir}_h{}_d{}_v{}_t{}{swa}", a.heads, a.nope + a.rope, a.v, a.seq)
}

fn mask(a: &Attn) -> String {
    match a.window {
        Some((w, s)) => format!("mask: causal, window {w} plus the first {s} sink tokens"),
        None => "mask: causal".into(),
    }
}

/// Shared-memory bytes of each launch (dynamic: the tiles depend on the head dims).
pub(crate) fn smem(a: &Attn) -> [u32; 3] {
    let (qs, vs, ps) = (a.nope + a.rope + 1, a.v + 1, BQ + 1);
    let fwd = BQ * qs + BQ * qs + BQ * a.v + BQ * ps;
    let dq = BQ * qs + BQ * vs + BQ * qs + BQ * vs + BQ * ps;
    let dkv = BQ * qs + BQ * vs + BQ * qs + BQ * vs + 2 * BQ * ps + 2 * BQ;
    [fwd as u32 * 4, dq as u32 * 4, dkv as u32 * 4]
}

pub(crate) fn forward(a: &Attn) -> Builder {
    let tiles = a.seq.div_ceil(BQ) as u64;
    base(a, name(a, "fwd"), "Attention")
        .math("o_i = sum_j softmax_j(scale * q_i . k_j) v_j, k_j = [k_nope_j ; k_pe_j]; lse_i saved for the backward")
        .math(mask(a))
        .math(format!("a block per ({BQ}-query tile, head, sequence), {THREADS} threads; {BQ}-key tiles stream through shared memory"))
        .body(include_str!("kernels/attention_fwd.cuh"))
        .entry("attention_fwd", [tiles, a.heads as u64, a.batch as u64], THREADS, smem(a)[0], 0)
}

pub(crate) fn backward(a: &Attn) -> Builder {
    let tiles = a.seq.div_ceil(BQ) as u64;
    base(a, name(a, "bwd"), "AttentionBwd")
        .math("dS_ij = p_ij (do_i . v_j - do_i . o_i); dq += scale dS k; dk += scale dS^T q; dv += p^T do")
        .math(mask(a))
        .math("dq: a block per (query tile, head, sequence); dkv: a block per (key tile, sequence) over all heads")
        .body(include_str!("kernels/attention_bwd.cuh"))
        .entry("attention_bwd_dq", [tiles, a.heads as u64, a.batch as u64], THREADS, smem(a)[1], 0)
        .entry("attention_bwd_dkv", [tiles, a.batch as u64, 1], THREADS, smem(a)[2], 0)
}
