//! Emitters for the decode programs' ops: rotary embedding at given positions, the cache append
//! (f32, bf16 or FP8 latent), absorbed MLA attention over the latent cache, and the head-wise
//! products that fold `W_UK` into the query and apply `W_UV` after attention.

use dsv3c_runtime::op::{Cache, Heads, LatentAttn, RopeFreqs};

use super::source::Builder;
use super::{unsupported_family, EmitError};

/// The cache's helpers, after the E4M3 decoder they use.
const CACHE: &str = concat!(include_str!("kernels/e4m3.cuh"), include_str!("kernels/latent_cache.cuh"));
/// Threads per block of every decode kernel.
const THREADS: u32 = 128;
/// Tokens per block of the head-wise products.
const TT: usize = 8;
/// Static shared memory a kernel may declare without opting in.
const SMEM: usize = 48 * 1024;

#[allow(clippy::too_many_arguments)]
pub(crate) fn rope_at(
    tokens: usize,
    per_seq: usize,
    heads: usize,
    row_stride: usize,
    head_stride: usize,
    offset: usize,
    dim: usize,
    freqs: &RopeFreqs,
) -> Builder {
    let kind = if freqs.yarn.is_some() { "rope_yarn_at" } else { "rope_at" };
    Builder::new(format!("{kind}_h{heads}_d{dim}_t{tokens}_s{per_seq}"), "RopeAt")
        .math("in place: (x[2i], x[2i+1]) -> ([i], [dim/2 + i]) rotated by pos * inv_freq[i] (HF layout)")
        .math("pos = positions[t / PER_SEQ] + t % PER_SEQ")
        .math(format!("theta = {}, attention factor {}", freqs.theta, freqs.attention_factor))
        .int("TOKENS", tokens)
        .int("PER_SEQ", per_seq)
        .int("HEADS", heads)
        .int("ROW_STRIDE", row_stride)
        .int("HEAD_STRIDE", head_stride)
        .int("OFFSET", offset)
        .int("DIM", dim)
        .int("HALF", dim / 2)
        .float("ATTENTION_FACTOR", freqs.attention_factor)
        .floats("INV_FREQ", freqs.inv_freq(dim))
        .body(include_str!("kernels/rope_common.cuh"))
        .body(include_str!("kernels/rope_at.cuh"))
        .entry("rope_at", [tokens as u64, 1, 1], THREADS, 0, (heads * dim * 4) as u32)
}

fn cache_consts(b: Builder, c: &Cache, per_seq: usize) -> Builder {
    b.int("BATCH", c.batch)
        .int("LEN", c.len)
        .int("KVR", c.kvr)
        .int("ROPE", c.rope)
        .int("PER_SEQ", per_seq)
        .int("TILE", c.fp8_tile.unwrap_or(1))
        .int("GROUPS", c.scales_per_row())
        .body(CACHE)
}

fn format_name(c: &Cache) -> &'static str {
    if c.fp8_tile.is_some() {
        "fp8"
    } else {
        "real"
    }
}

pub(crate) fn cache_write(c: &Cache, per_seq: usize, kva_stride: usize) -> Builder {
    let b = Builder::new(
        format!("cache_write_{}_r{}_d{}_b{}_l{}_s{per_seq}", format_name(c), c.kvr, c.rope, c.batch, c.len),
        "CacheWrite",
    )
    .math("cache[b * LEN + positions[b] + t % PER_SEQ] = (ckv[t], kva[t][KVR..KVR + ROPE])");
    let b = cache_consts(b, c, per_seq).int("KVA_STRIDE", kva_stride);
    let b = match c.fp8_tile {
        Some(tile) => b
            .math(format!("FP8: e4m3 latent, one f32 scale per {tile} values (max(amax, 1e-4) / 448)"))
            .body(include_str!("kernels/cache_write_fp8.cuh")),
        None => b.body(include_str!("kernels/cache_write.cuh")),
    };
    b.entry("cache_write", [(c.batch * per_seq) as u64, 1, 1], THREADS, 0, 0)
}

/// Output accumulators per thread the latent attention allows itself (registers, not spills).
const MAX_PER_THREAD: usize = 32;

/// Heads per block of the latent attention: the largest of 8, 4, 2, 1 that divides the heads and
/// keeps each thread's share of the group's `heads × kvr` outputs within [`MAX_PER_THREAD`].
fn head_group(heads: usize, kvr: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|g| heads.is_multiple_of(*g) && (g * kvr).div_ceil(THREADS as usize) <= MAX_PER_THREAD)
        .unwrap_or(1)
}

pub(crate) fn latent_attention(a: &LatentAttn) -> Result<Builder, EmitError> {
    let c = a.cache;
    let hg = head_group(a.heads, c.kvr);
    let ks = c.kvr + c.rope + 1;
    // Key rows per tile: as many as fit beside the queries, at most 16.
    let fixed = (hg * ks + 3 * hg) * 4;
    let bk = (1..=16).rev().find(|bk| fixed + (bk * ks + hg * bk) * 4 <= SMEM).ok_or_else(|| {
        unsupported_family(
            "latent_attention",
            format!("a latent of {} values does not fit shared memory", c.kvr + c.rope),
        )
    })?;
    let smem = fixed + (bk * ks + hg * bk) * 4;
    let (window, sinks) = a.window.unwrap_or((0, 0));
    let per = (hg * c.kvr).div_ceil(THREADS as usize);
    let swa = match a.window {
        Some((w, s)) => format!("_swa{w}s{s}"),
        None => String::new(),
    };
    let b = Builder::new(
        format!(
            "latent_attention_{}_h{}_r{}_d{}_b{}_l{}_s{}{swa}",
            format_name(&c),
            a.heads,
            c.kvr,
            c.rope,
            c.batch,
            c.len,
            a.per_seq
        ),
        "LatentAttention",
    )
    .math("o_lat[t, h] = sum_{j <= p} softmax_j(scale * (q_lat[t, h] . c_j + q_pe[t, h] . k_pe_j)) c_j, p = positions[b] + t % PER_SEQ")
    .math(format!("a block per ({hg} heads, new token), {THREADS} threads; {bk} cache rows per tile, loaded once for the {hg} heads"));
    let b = cache_consts(b, &c, a.per_seq)
        .int("HEADS", a.heads)
        .int("HG", hg)
        .int("NOPE", a.nope)
        .int("DQK", a.nope + c.rope)
        .int("KS", ks)
        .int("BK", bk)
        .int("PER", per)
        .int("WINDOW", window)
        .int("SINKS", sinks)
        .float("SCALE", a.scale)
        .body(include_str!("kernels/latent_attention.cuh"))
        .body(if c.fp8_tile.is_some() {
            include_str!("kernels/latent_attention_fp8_entry.cuh")
        } else {
            include_str!("kernels/latent_attention_entry.cuh")
        });
    let grid = [(a.heads / hg) as u64, a.tokens() as u64, 1];
    Ok(b.entry("latent_attention", grid, THREADS, 0, smem as u32))
}

fn heads_consts(b: Builder, h: &Heads) -> Builder {
    b.int("TOKENS", h.tokens)
        .int("HEADS", h.heads)
        .int("NOPE", h.nope)
        .int("DQK", h.nope + h.rope)
        .int("DV", h.v)
        .int("HS", h.nope + h.v)
        .int("KVR", h.kvr)
        .int("TT", TT)
}

pub(crate) fn absorb_query(h: &Heads) -> Builder {
    let b = Builder::new(format!("absorb_query_h{}_n{}_r{}_t{}", h.heads, h.nope, h.kvr, h.tokens), "AbsorbQuery")
        .math("q_lat[t, h, c] = sum_d q[t, h, d] kv_b[h * (nope + v) + d, c], d < nope")
        .math(format!("a block per (head, {TT} tokens)"));
    heads_consts(b, h).body(include_str!("kernels/absorb_query.cuh")).entry(
        "absorb_query",
        [h.heads as u64, h.tokens.div_ceil(TT) as u64, 1],
        THREADS,
        0,
        (TT * h.nope * 4) as u32,
    )
}

pub(crate) fn absorb_output(h: &Heads) -> Builder {
    let b = Builder::new(format!("absorb_output_h{}_v{}_r{}_t{}", h.heads, h.v, h.kvr, h.tokens), "AbsorbOutput")
        .math("o[t, h, e] = sum_c o_lat[t, h, c] kv_b[h * (nope + v) + nope + e, c]")
        .math(format!("a block per (head, {TT} tokens), a warp per output channel"));
    heads_consts(b, h).body(include_str!("kernels/absorb_output.cuh")).entry(
        "absorb_output",
        [h.heads as u64, h.tokens.div_ceil(TT) as u64, 1],
        THREADS,
        0,
        (TT * h.kvr * 4) as u32,
    )
}
