//! The instruction set: every operation a Program launches, with every constant it was
//! specialized for. The CPU backend implements each one in plain Rust (the numerical ground
//! truth); the CUDA emitter writes one kernel per distinct `Op`.
//!
//! Each variant documents its arguments in launch order; `(w)` marks an output that is
//! overwritten, `(+)` one that is accumulated into, `(rw)` one updated in place. Matrices are
//! row-major. Each argument's storage dtype comes from its kind (`signature`): real values in
//! f32 or bf16, integers (token ids, expert indices, row permutations) in i32, FP8 operands in
//! e4m3 beside their f32 scales.
//! Besides the model's forward and backward ops, the training step's own work is ops too: routing
//! statistics, the balancing-bias update, the global gradient norm and the optimizer.

use serde::{Deserialize, Serialize};

use crate::comm::CommGroup;

/// How router scores come from the gate logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Score {
    Sigmoid,
    Softmax,
}

/// Rotary frequencies: plain RoPE, or YaRN-scaled (DeepSeek-V3's `rope_scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeFreqs {
    pub theta: f64,
    /// (factor, original_max_position_embeddings, beta_fast, beta_slow)
    pub yarn: Option<(f64, u64, f64, f64)>,
    /// Multiplier on cos and sin: YaRN's `mscale(factor, mscale) / mscale(factor, mscale_all_dim)`
    /// (1 for DeepSeek-V3, whose two coefficients are equal).
    pub attention_factor: f32,
}

/// The storage format a GEMM's operands pass through (emulated on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Quant {
    /// f32 throughout.
    #[default]
    None,
    /// Operands rounded to bf16, f32 accumulation, an overwritten output rounded to bf16.
    Bf16,
    /// DeepSeek-V3 FP8, quantized on load: the operands arrive in f32 or bf16 and the GEMM
    /// quantizes `op(A)` in 1×`tile` E4M3 tiles along K and `op(B)` in `tile`×`tile` blocks (a
    /// weight) or 1×`tile` tiles along K (an activation or gradient); f32 accumulation; an
    /// overwritten output rounded to bf16. The grouped weight gradient's form: its tiles run along
    /// each expert's rows, which start where the routing puts them.
    Fp8 { tile: usize, b_blocks: bool },
    /// DeepSeek-V3 FP8 with operands already quantized ([`Op::Quantize`], once, by the step for a
    /// weight and after its producer for an activation): each operand is e4m3 with its f32
    /// scales, grouped as `Fp8` groups them — along K for a tile (`Scaling::RowTiles` of a
    /// K-major operand, `ColTiles` of a transposed one), `Blocks` for a weight `op(B)` — so the
    /// GEMM moves bytes and multiplies, and reads one byte per element.
    Fp8Stored { tile: usize, b_blocks: bool },
}

impl Quant {
    /// The form a grouped GEMM of `mode` runs under: the weight gradient quantizes on load under
    /// either FP8 form (its tiles run along each expert's rows, which the routing places).
    pub fn grouped(self, mode: GroupedMode) -> Quant {
        match (self, mode) {
            (Quant::Fp8Stored { tile, b_blocks }, GroupedMode::WeightGrad) => Quant::Fp8 { tile, b_blocks },
            (q, _) => q,
        }
    }

    /// The FP8 recipe's tile, under either FP8 form.
    pub fn fp8_tile(self) -> Option<usize> {
        match self {
            Quant::Fp8 { tile, .. } | Quant::Fp8Stored { tile, .. } => Some(tile),
            Quant::None | Quant::Bf16 => None,
        }
    }
}

/// How the f32 scales of an E4M3 matrix group its elements (`numerics` has the layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scaling {
    /// 1×tile along each row (an activation or gradient read K-major).
    RowTiles,
    /// tile×1 down each column (an activation or gradient read transposed: the weight gradient).
    ColTiles,
    /// tile×tile blocks (a weight, read either way).
    Blocks,
}

impl GroupedMode {
    /// The scales of one expert's stored weight `[n, k]` in a grouped GEMM of this mode under
    /// `Quant::Fp8Stored` (blocks for a weight, or tiles along the product's K): their grouping and
    /// count. Experts' scales follow one another.
    pub fn weight_scales(self, n: usize, k: usize, tile: usize, b_blocks: bool) -> (Scaling, usize) {
        let s = Scaling::operand(self == GroupedMode::Forward, b_blocks);
        (s, s.count(n, k, tile))
    }
}

impl Scaling {
    /// The grouping of a stored GEMM operand: blocks for a weight, else tiles along K — row
    /// tiles when the operand is stored K-major (`kmajor`: element `(i, p)` of the product's view
    /// at `i·ld + p`), column tiles when it is stored transposed.
    pub fn operand(kmajor: bool, blocks: bool) -> Scaling {
        match (blocks, kmajor) {
            (true, _) => Scaling::Blocks,
            (false, true) => Scaling::RowTiles,
            (false, false) => Scaling::ColTiles,
        }
    }
}

/// Which grouped-GEMM product a launch computes (for the routed experts, weights `[e, n, k]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupedMode {
    /// `y_r = W_e x_r` for the rows `r` of expert `e`.
    Forward,
    /// `dx_r += W_eᵀ dy_r`.
    DataGrad,
    /// `dW_e += Σ_r dy_r x_rᵀ`.
    WeightGrad,
}

/// How an op writes one of its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `(w)`: overwritten; what was there does not matter.
    Write,
    /// `(+)`: the op's result is added to what was there.
    Accumulate,
    /// `(rw)`: read, then updated in place.
    InPlace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Fill with zeros. `[x (w)]`
    Zero { n: usize },
    /// E4M3 quantization of `mats` consecutive dense `rows × cols` matrices, each grouped by
    /// `scaling` with one f32 scale per group: `scale = max(amax, 1e-4) / 448`,
    /// `q = e4m3(x / scale)` (`numerics::quantize`). Scales of matrix `i` follow those of `i − 1`.
    /// `[x, q (w), scales (w)]`
    Quantize { mats: usize, rows: usize, cols: usize, tile: usize, scaling: Scaling },
    /// The values a quantized dense `rows × cols` matrix stands for, `x = q · scale` per group of
    /// `scaling` (`numerics::dequantize`): an activation the backward reads from the E4M3 copy the
    /// forward kept instead of the activation itself (DeepSeek-V3's FP8 caching).
    /// `[q, scales, x (w)]`
    Dequantize { rows: usize, cols: usize, tile: usize, scaling: Scaling },
    /// `y = x`, stored in `y`'s dtype (rounded to nearest-even into bf16): the step's compute copy
    /// of the f32 master weights. `[x, y (w)]`
    Cast { n: usize },
    /// `y += alpha · x`. `[x, y (+)]`
    AddScaled { n: usize, alpha: f32 },
    /// `out = a + b`. `[a, b, out (w)]`
    Add { n: usize },
    /// `C[m,n] (+)= op(A)[m,k] · op(B)[k,n]`, with leading dims; `ta`/`tb` read A as `[k,m]` and
    /// B as `[n,k]`. `[a, b, c (w or +)]`, or with `Quant::Fp8Stored`
    /// `[a, a_scales, b, b_scales, c (w or +)]`.
    /// `quant` says which storage format the operands (and output) are rounded through.
    Gemm {
        m: usize,
        n: usize,
        k: usize,
        lda: usize,
        ldb: usize,
        ldc: usize,
        ta: bool,
        tb: bool,
        accumulate: bool,
        quant: Quant,
    },
    /// `out[i] = table[tokens[i]]`. `[tokens, table, out (w)]`
    Embedding { n: usize, vocab: usize, d: usize },
    /// `dtable[tokens[i]] += dout[i]`. `[tokens, dout, dtable (+)]`
    EmbeddingBwd { n: usize, vocab: usize, d: usize },
    /// Token ids moved `shift` positions left within each sequence, the tail padded with the
    /// last token (causal attention never lets the padding reach a valid position).
    /// `[tokens, out (w)]`
    ShiftTokens { batch: usize, seq: usize, shift: usize },
    /// `y = w ⊙ x / sqrt(mean(x²) + eps)` over rows of `d` read at `in_stride`; saves `1/rms`.
    /// `[x, w, y (w), rstd (w)]`
    RmsNorm { rows: usize, d: usize, in_stride: usize, eps: f32 },
    /// `[x, w, rstd, dy, dx (+), dw (+)]` (dx at `in_stride`)
    RmsNormBwd { rows: usize, d: usize, in_stride: usize },
    /// DynamicTanh `y = w ⊙ tanh(α·x) + b`. `[x, w, b, alpha, y (w)]`
    Dyt { rows: usize, d: usize, in_stride: usize },
    /// `[x, w, alpha, dy, dx (+), dw (+), db (+), dalpha (+)]`
    DytBwd { rows: usize, d: usize, in_stride: usize },
    /// Rotary embedding of `dim` channels at `offset` of each head, HF's interleaved layout:
    /// pairs `(x[2i], x[2i+1])` rotate by `pos·inv_freq[i]` and land at `[i]` and `[dim/2 + i]`.
    /// `inverse` applies the transpose (the backward). `[x (rw)]`
    Rope {
        tokens: usize,
        seq: usize,
        heads: usize,
        row_stride: usize,
        head_stride: usize,
        offset: usize,
        dim: usize,
        freqs: RopeFreqs,
        inverse: bool,
    },
    /// Causal MLA attention. q `[b,t,h,dn+dr]`; kvb `[b,t,h,dn+dv]` (k_nope | v per head); the
    /// shared roped key at `kva[row·kpe_stride + kpe_offset ..][..dr]`. Optional window with
    /// sink tokens. Output o `[b,t,h,dv]`, log-sum-exp `[b,t,h]`.
    /// `[q, kvb, kva, o (w), lse (w)]`
    Attention(Attn),
    /// `[q, kvb, kva, o, lse, do, dq (+), dkvb (+), dkva (+)]`
    AttentionBwd(Attn),
    /// `h = silu(g) ⊙ u`. `[g, u, h (w)]`
    SwiGlu { n: usize },
    /// `[g, u, dh, dg (+), du (+)]`
    SwiGluBwd { n: usize },
    /// DeepSeek router: scores from logits, bias for selection only, group-limited top-k,
    /// normalized then scaled weights. `[logits, bias, scores (w), idx (w), weights (w)]`
    Router(Route),
    /// Gradient of the weights (and of the scores, from the balance loss, passed in `dscores`)
    /// back to the logits. `[scores, idx, dweights, dscores (rw), dlogits (+)]`
    RouterBwd(Route),
    /// Sort the `tokens·top_k` (token, slot) pairs by expert (stable in token order) and gather
    /// their inputs. `perm[row] = token·top_k + slot`, `inv` its inverse, `offsets` `[e+1]`.
    /// `[idx, x, perm (w), inv (w), offsets (w), xp (w)]`
    Dispatch { tokens: usize, experts: usize, top_k: usize, d: usize },
    /// `dx[token] += Σ_slot dxp[inv[token·top_k + slot]]`. `[inv, dxp, dx (+)]`
    DispatchBwd { tokens: usize, top_k: usize, d: usize },
    /// Expert GEMMs over the expert-sorted rows. Forward `[offsets, x, w, y (w)]`, DataGrad
    /// `[offsets, dy, w, dx (+)]`, WeightGrad `[offsets, x, dy, dw (+)]`. With
    /// `Quant::Fp8Stored` (Forward and DataGrad) each operand is followed by its scales:
    /// `[offsets, x, x_scales, w, w_scales, y (w)]` (row tiles of the sorted rows; each expert's
    /// `Blocks`, expert after expert). The weight gradient quantizes on load under either FP8
    /// form (its tiles run along each expert's rows, which start where the routing puts them).
    GroupedGemm { experts: usize, rows: usize, n: usize, k: usize, mode: GroupedMode, quant: Quant },
    /// `out[t] += Σ_slot weights[t,slot] · yp[inv[t·top_k + slot]]`. `[inv, weights, yp, out (+)]`
    Combine { tokens: usize, top_k: usize, d: usize },
    /// `[perm, inv, weights, yp, dout, dyp (w), dweights (+)]`
    CombineBwd { tokens: usize, top_k: usize, d: usize },
    /// Mean next-token cross-entropy over the positions `i` with `i + shift < seq`, label
    /// `tokens[i + shift]`. Writes the loss, and overwrites the logits with
    /// `grad_scale · dloss/dlogits` (no second copy). `[logits (rw), tokens, loss (w)]`
    CrossEntropy { batch: usize, seq: usize, vocab: usize, shift: usize, grad_scale: f32 },
    /// Sequence-wise balance loss `α Σ_i f_i P_i`, averaged over sequences, added to `loss`.
    /// `[scores, idx, loss (+)]`
    BalanceLoss(Balance),
    /// `[scores, idx, dscores (+)]`, scaled by `grad_scale`.
    BalanceLossBwd { balance: Balance, grad_scale: f32 },
    /// One MoE layer's routing statistics over a micro-batch, added to the step's: `stats` is
    /// `[count of each expert (E) | Σ per-token router entropy / ln E | tokens]`, the entropy of each
    /// token's scores normalized to sum to 1. `[idx, scores, stats (+)]`
    ExpertStats { tokens: usize, experts: usize, top_k: usize },
    /// Aux-loss-free balancing from the step's statistics: `bias[e] += γ·sign(mean(counts) −
    /// counts[e])` (0 when equal), when the step's update applies (the step guard of
    /// [`scalars::MAX_GRAD_NORM`]). `[scalars, norm, stats, bias (rw)]`
    BiasUpdate { experts: usize, gamma: f32 },
    /// Global gradient norm over `n` elements: `partials[c] = Σ g²` over chunk `c` of
    /// [`GRAD_NORM_CHUNK`] elements (f64 sums, stored f32), then `norm = sqrt(Σ_c partials[c])`
    /// summed in chunk order — deterministic whatever the thread count. `[grad, partials (w), norm (w)]`
    GradNorm { n: usize },
    /// Rotary embedding as [`Op::Rope`], at positions read from `positions`: token `t` (of
    /// `tokens`, `per_seq` consecutive tokens per sequence) sits at `positions[t / per_seq] +
    /// t % per_seq` — the decode programs' form, where each sequence resumes where its cache ends.
    /// `[positions, x (rw)]`
    RopeAt {
        tokens: usize,
        per_seq: usize,
        heads: usize,
        row_stride: usize,
        head_stride: usize,
        offset: usize,
        dim: usize,
        freqs: RopeFreqs,
    },
    /// Appends the new tokens' latents to the cache: token `t` of sequence `b` (position
    /// `p = positions[b] + t`) stores the normalized latent `ckv[b·per_seq + t]` (`kv_lora_rank`
    /// values) and the roped key `kva[(b·per_seq + t)·kva_stride + kvr ..][..rope]` at row
    /// `b·cache.len + p` (rows with `p ≥ cache.len` are not stored). An FP8 cache stores the latent
    /// as E4M3 with one f32 scale per `tile` values (`scale = max(amax, 1e-4) / 448`) and the rope
    /// part as it is (bf16 in FlashMLA's layout). `[positions, ckv, kva, latent (rw), rope (rw)]`,
    /// or with FP8 `[positions, ckv, kva, latent (rw), scales (rw), rope (rw)]`.
    CacheWrite { cache: Cache, per_seq: usize, kva_stride: usize },
    /// MLA in its absorbed form over the latent cache. Query `t` of sequence `b` sits at
    /// `p = positions[b] + t` and sees cache rows `j ≤ p` (and the window, when set):
    /// `s_j = scale·(q_lat·c_j + q_pe·k_pe_j)`, `o_lat = Σ_j softmax(s)_j c_j`, per head, where
    /// `q_lat` `[n, h, kvr]` is the query with `W_UK` folded in ([`Op::AbsorbQuery`]) and
    /// `q_pe` the roped part of `q` `[n, h, nope + rope]`. `[positions, q_lat, q, latent,
    /// rope, o_lat (w)]`, or with FP8 `[positions, q_lat, q, latent, scales, rope, o_lat (w)]`.
    LatentAttention(LatentAttn),
    /// `q_lat[t, h, :] = W_UK_hᵀ q_nope[t, h, :]` with `W_UK_h` rows `h·(nope + v) ..+ nope` of
    /// `kv_b_proj` `[h·(nope + v), kvr]`: the key up-projection folded into the query.
    /// `[q, kv_b, q_lat (w)]`
    AbsorbQuery(Heads),
    /// `o[t, h, :] = W_UV_h o_lat[t, h, :]` with `W_UV_h` rows `h·(nope + v) + nope ..+ v` of
    /// `kv_b_proj`: the value up-projection applied after attention. `[o_lat, kv_b, o (w)]`
    AbsorbOutput(Heads),
    /// One optimizer step over the trained parameters, reading the step's [`scalars`]: the
    /// gradient is scaled by `grad_scale` and clipped to the global norm `clip` on the fly (the
    /// gradient arena is not modified), decoupled weight decay on `[0, decay_end)` (rate
    /// `weight_decay`) and `[decay_end, embedding_end)` (rate `embedding_decay`).
    /// AdamW: `[scalars, norm, grad, param (rw), m (rw), v (rw)]`;
    /// Lion: `[scalars, norm, grad, param (rw), m (rw)]`.
    Optimizer(Update),
    /// Sum over the `ranks` ranks of `group`, in place: `x = Σ_r x_r`, summed in rank order
    /// (the same bits on every rank). A collective: the backend's communicator ([`crate::comm`])
    /// runs it, every rank of the group at the same point of its program. `[x (rw)]`
    AllReduce { n: usize, ranks: usize, group: CommGroup },
    /// Each of the `ranks` ranks' shard of `x` — rank `r`'s (its index in `group`) is
    /// [`crate::comm::shard`]`(n, ranks, r)` — sent to every rank, in place: afterwards every
    /// shard holds its owner's values (ZeRO-1's parameter gather after the sharded update). A
    /// collective, as [`Op::AllReduce`]. `[x (rw)]`
    AllGather { n: usize, ranks: usize, group: CommGroup },
    /// Expert parallelism's first exchange, over the expert-parallel group: each rank sends rank
    /// `q` how many of its routed rows go to each of `q`'s experts (from its dispatch's `offsets`,
    /// rows sorted by global expert), and learns how many rows each rank sends each of its own
    /// experts: `recv[s·E_l + e]` from rank `s` for local expert `e` (`E_l = experts / ranks`).
    /// A local expert keeps at most `capacity` rows, the first in (source rank, row) order;
    /// `local` is the kept rows' offsets per local expert (the grouped GEMMs' `offsets`), and
    /// `dropped` accumulates the rows past capacity. A collective.
    /// `[offsets, recv (w), local (w), dropped (+)]`
    ExpertCounts(Exchange),
    /// Expert parallelism's row exchange, over the expert-parallel group, by the counts of
    /// [`Op::ExpertCounts`]. `Dispatch`: each rank's expert-sorted rows `x` (`rows × d`) go to the
    /// ranks holding their experts, which place the kept ones expert by expert, source rank by
    /// source rank (`y`, `E_l·capacity × d`, zero past the kept rows). `Return`: the reverse —
    /// each kept row of `y` goes back to the row of `x` it came from (a dropped row comes back as
    /// zeros). Each is the other's adjoint, so the backward of one is the other. A collective.
    /// `[offsets, recv, x, y (w)]` (Dispatch) or `[offsets, recv, y, x (w)]` (Return).
    ExpertExchange { exchange: Exchange, d: usize, dir: Direction },
    /// Sends `x` to the neighbouring pipeline stage `peer`. A collective (point to point).
    /// `[x]`
    Send { n: usize, peer: Peer },
    /// Receives `x` from the neighbouring pipeline stage `peer`: the next message it sent.
    /// `[x (w)]`
    Recv { n: usize, peer: Peer },
    /// Sums of squares over chunks of [`GRAD_NORM_CHUNK`] elements (f64 sums, stored f32), as the
    /// first half of [`Op::GradNorm`]: a parallel job sums the partials of its parameter shards
    /// over the ranks that hold different ones before taking the root. `[x, partials (w)]`
    SumSquares { n: usize },
    /// `out = Σ partials` in order (f64), or its square root with `root`. `[partials, out (w)]`
    SumParts { parts: usize, root: bool },
}

/// The constants of an expert-parallel exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exchange {
    /// Routed experts of the model.
    pub experts: usize,
    /// Expert-parallel ranks; each holds `experts / ranks` consecutive experts.
    pub ranks: usize,
    /// Routed rows of this rank (tokens · top_k), sorted by expert.
    pub rows: usize,
    /// Rows a local expert keeps at most (from every rank of the group together).
    pub capacity: usize,
}

impl Exchange {
    /// Experts per rank.
    pub fn local(&self) -> usize {
        self.experts / self.ranks.max(1)
    }
}

/// Which way an [`Op::ExpertExchange`] moves rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// To the ranks holding the rows' experts.
    Dispatch,
    /// Back to the ranks the rows came from.
    Return,
}

/// A pipeline neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// The stage before.
    Prev,
    /// The stage after.
    Next,
}

/// Elements per partial sum of [`Op::GradNorm`].
pub const GRAD_NORM_CHUNK: usize = 1 << 14;

/// The per-step scalars the host writes before a step (f32 each), by index: what changes from step
/// to step and the run's hyperparameters, so that one Program serves any recipe.
pub mod scalars {
    /// Learning rate of this step.
    pub const LR: usize = 0;
    /// The optimizer step being taken, from 1.
    pub const STEP: usize = 1;
    /// The factor turning accumulated gradients into their mean (1 / accumulation).
    pub const GRAD_SCALE: usize = 2;
    pub const BETA1: usize = 3;
    pub const BETA2: usize = 4;
    pub const EPS: usize = 5;
    /// Decoupled weight decay of matrices.
    pub const WEIGHT_DECAY: usize = 6;
    /// Weight decay of the embedding and head matrices (0 unless the recipe decays them).
    pub const EMBEDDING_DECAY: usize = 7;
    /// Global gradient-norm clip (0: off).
    pub const CLIP: usize = 8;
    /// The step guard: the update applies only when the averaged gradient's norm (`norm ·
    /// grad_scale`) is finite and at most this (`+inf`: any finite norm; negative: never, the
    /// host's word for a step whose loss was not finite). A step that does not apply leaves the
    /// parameters, the moments and the balancing bias as they were ([`update_applies`]).
    pub const MAX_GRAD_NORM: usize = 9;
    /// Elements of the scalar buffer.
    pub const LEN: usize = 16;

    /// The step guard ([`MAX_GRAD_NORM`]): whether a step whose accumulated gradient has norm
    /// `norm` changes anything — the averaged gradient's norm, in f64, finite and at most the
    /// limit. The optimizer and the balancing bias (on every backend; the CUDA kernels'
    /// `step_guard.cuh` compares the same way) and the trainer (to report the step as skipped)
    /// all decide by this.
    pub fn update_applies(s: &[f32], norm: f32) -> bool {
        let n = norm as f64 * s[GRAD_SCALE] as f64;
        n.is_finite() && n <= s[MAX_GRAD_NORM] as f64
    }
}

/// Which optimizer an [`Op::Optimizer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// Bias-corrected Adam with decoupled weight decay.
    AdamW,
    /// Lion (sign of the interpolated momentum).
    Lion,
}

impl From<dsv3c_spec::config::OptimizerKind> for OptimizerKind {
    /// The recipe's optimizer (`optimizer.kind`) as the op runs it.
    fn from(k: dsv3c_spec::config::OptimizerKind) -> OptimizerKind {
        match k {
            dsv3c_spec::config::OptimizerKind::Adamw => OptimizerKind::AdamW,
            dsv3c_spec::config::OptimizerKind::Lion => OptimizerKind::Lion,
        }
    }
}

/// Optimizer-step constants: the parameter regions (the plan lays parameters out by group:
/// decayed matrices, embedding and head, no-decay, frozen) and the moments' storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Update {
    pub kind: OptimizerKind,
    /// Trained elements: `[0, n)` of the parameter arena.
    pub n: usize,
    /// End of the matrices that decay at `weight_decay`.
    pub decay_end: usize,
    /// End of the embedding and head matrices (decay at `embedding_decay`).
    pub embedding_end: usize,
    /// Moments rounded to bf16 after each update (DeepSeek-V3's recipe), else f32.
    pub bf16_moments: bool,
}

/// Attention constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Attn {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub nope: usize,
    pub rope: usize,
    pub v: usize,
    pub kpe_stride: usize,
    pub kpe_offset: usize,
    pub scale: f32,
    /// `(window, sink_tokens)` for sliding-window layers.
    pub window: Option<(usize, usize)>,
}

impl Attn {
    /// (query, key) pairs the mask lets through, over the whole batch (one head).
    pub fn visible_pairs(&self) -> usize {
        let per_query = |i: usize| match self.window {
            None => i + 1,
            // The window's keys, and the sinks left of it.
            Some((w, sinks)) => (i + 1).min(w) + sinks.min((i + 1).saturating_sub(w)),
        };
        self.batch * (0..self.seq).map(per_query).sum::<usize>()
    }
}

/// A decode program's latent KV cache of one layer: `batch` sequences of `len` rows, each the
/// normalized latent (`kvr` values) and the roped shared key (`rope` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cache {
    pub batch: usize,
    pub len: usize,
    pub kvr: usize,
    pub rope: usize,
    /// E4M3 latent with one f32 scale per `tile` values (FlashMLA's FP8 cache), else the
    /// latent's dtype is the slice's (f32 or bf16).
    pub fp8_tile: Option<usize>,
}

impl Cache {
    /// Scales per row of an FP8 cache (0 otherwise).
    pub fn scales_per_row(&self) -> usize {
        self.fp8_tile.map_or(0, |t| self.kvr.div_ceil(t))
    }
}

/// Absorbed attention over a latent cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatentAttn {
    pub cache: Cache,
    /// New tokens per sequence (1 for a decode step).
    pub per_seq: usize,
    pub heads: usize,
    /// `qk_nope_head_dim`: where the roped part of each head of `q` starts.
    pub nope: usize,
    pub scale: f32,
    /// `(window, sink_tokens)` for sliding-window layers.
    pub window: Option<(usize, usize)>,
}

impl LatentAttn {
    /// Query rows `[n = batch · per_seq]`.
    pub fn tokens(&self) -> usize {
        self.cache.batch * self.per_seq
    }
}

/// The head-wise products of absorbed MLA: `tokens` rows of `heads` heads, `kv_b_proj` of
/// `[heads·(nope + v), kvr]`; `q` rows are `heads·(nope + rope)` wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Heads {
    pub tokens: usize,
    pub heads: usize,
    pub nope: usize,
    pub rope: usize,
    pub v: usize,
    pub kvr: usize,
}

/// Router constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub tokens: usize,
    pub experts: usize,
    pub groups: usize,
    pub top_groups: usize,
    pub top_k: usize,
    pub score: Score,
    pub normalize: bool,
    pub scale: f32,
}

/// Balance-loss constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub batch: usize,
    pub seq: usize,
    pub experts: usize,
    pub top_k: usize,
    pub alpha: f32,
    pub score: Score,
}

impl Op {
    /// Number of arguments a launch passes ([`Op::signature`]).
    pub fn arity(&self) -> usize {
        self.signature().len()
    }

    /// How the op writes each argument it writes, by index: the `(w)`, `(+)` and `(rw)` marks
    /// of the variants' docs, from [`Op::signature`].
    pub fn writes(&self) -> Vec<(usize, Access)> {
        self.signature()
            .iter()
            .enumerate()
            .filter_map(|(i, x)| match x.role {
                crate::signature::Role::Out(w) => Some((i, w)),
                crate::signature::Role::In => None,
            })
            .collect()
    }

    /// Indices of the arguments the op writes (overwritten, accumulated or in place).
    pub fn outputs(&self) -> Vec<usize> {
        self.writes().into_iter().map(|(i, _)| i).collect()
    }

    /// Floating-point operations of the op's matrix products (2 per multiply-add), 0 for an op
    /// that has none: GEMMs, grouped GEMMs over all their rows, and attention over the visible
    /// (query, key) pairs — the forward's scores and `P·V`, the backward's recomputed scores, `dP`,
    /// `dQ`, `dK` and `dV`. What a profile divides time by to get a rate.
    pub fn matmul_flops(&self) -> u64 {
        use Op::*;
        let f = |x: usize| x as u64;
        match *self {
            Gemm { m, n, k, .. } => 2 * f(m) * f(n) * f(k),
            GroupedGemm { rows, n, k, .. } => 2 * f(rows) * f(n) * f(k),
            Attention(a) => 2 * f(a.visible_pairs()) * f(a.heads) * f(a.nope + a.rope + a.v),
            AttentionBwd(a) => 2 * f(a.visible_pairs()) * f(a.heads) * f(3 * (a.nope + a.rope) + 2 * a.v),
            _ => 0,
        }
    }

    /// Short name of the op family (`gemm`, `attention_bwd`, ...), for notes and file names.
    pub fn family(&self) -> &'static str {
        use Op::*;
        match self {
            Zero { .. } => "zero",
            Quantize { .. } => "quantize",
            Dequantize { .. } => "dequantize",
            Cast { .. } => "cast",
            AddScaled { .. } => "add_scaled",
            Add { .. } => "add",
            Gemm { .. } => "gemm",
            Embedding { .. } => "embedding",
            EmbeddingBwd { .. } => "embedding_bwd",
            ShiftTokens { .. } => "shift_tokens",
            RmsNorm { .. } => "rmsnorm",
            RmsNormBwd { .. } => "rmsnorm_bwd",
            Dyt { .. } => "dyt",
            DytBwd { .. } => "dyt_bwd",
            Rope { .. } => "rope",
            Attention(_) => "attention",
            AttentionBwd(_) => "attention_bwd",
            SwiGlu { .. } => "swiglu",
            SwiGluBwd { .. } => "swiglu_bwd",
            Router(_) => "router",
            RouterBwd(_) => "router_bwd",
            Dispatch { .. } => "dispatch",
            DispatchBwd { .. } => "dispatch_bwd",
            GroupedGemm { .. } => "grouped_gemm",
            Combine { .. } => "combine",
            CombineBwd { .. } => "combine_bwd",
            CrossEntropy { .. } => "cross_entropy",
            BalanceLoss(_) => "balance_loss",
            BalanceLossBwd { .. } => "balance_loss_bwd",
            ExpertStats { .. } => "expert_stats",
            BiasUpdate { .. } => "bias_update",
            GradNorm { .. } => "grad_norm",
            RopeAt { .. } => "rope_at",
            CacheWrite { .. } => "cache_write",
            LatentAttention(_) => "latent_attention",
            AbsorbQuery(_) => "absorb_query",
            AbsorbOutput(_) => "absorb_output",
            Optimizer(u) => match u.kind {
                OptimizerKind::AdamW => "adamw",
                OptimizerKind::Lion => "lion",
            },
            AllReduce { .. } => "all_reduce",
            AllGather { .. } => "all_gather",
            ExpertCounts(_) => "expert_counts",
            ExpertExchange { dir: Direction::Dispatch, .. } => "expert_dispatch",
            ExpertExchange { dir: Direction::Return, .. } => "expert_return",
            Send { .. } => "send",
            Recv { .. } => "recv",
            SumSquares { .. } => "sum_squares",
            SumParts { .. } => "sum_parts",
        }
    }

    /// Is it a collective (run by the backend's communicator over the ranks, not by a kernel)?
    pub fn is_collective(&self) -> bool {
        matches!(
            self,
            Op::AllReduce { .. }
                | Op::AllGather { .. }
                | Op::ExpertCounts(_)
                | Op::ExpertExchange { .. }
                | Op::Send { .. }
                | Op::Recv { .. }
        )
    }
}

impl RopeFreqs {
    /// `inv_freq[i]` for `i < dim/2`, computed in f32 exactly as transformers does (it keeps
    /// RoPE in f32 even in a float64 model). YaRN blends interpolated (`/factor`) and original
    /// frequencies with a linear ramp between the correction dims.
    pub fn inv_freq(&self, dim: usize) -> Vec<f32> {
        let half = dim / 2;
        let pos_freqs: Vec<f32> = (0..half).map(|i| (self.theta as f32).powf((2 * i) as f32 / dim as f32)).collect();
        let Some((factor, orig, beta_fast, beta_slow)) = self.yarn else {
            return pos_freqs.iter().map(|p| 1.0 / p).collect();
        };
        let correction_dim =
            |rot: f64| (dim as f64 * (orig as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * self.theta.ln());
        let low = correction_dim(beta_fast).floor().max(0.0);
        let high = correction_dim(beta_slow).ceil().min(dim as f64 - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        (0..half)
            .map(|i| {
                let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let extrapolation = 1.0 - ramp;
                let interp = 1.0 / (factor as f32 * pos_freqs[i]);
                let extrap = 1.0 / pos_freqs[i];
                interp * (1.0 - extrapolation) + extrap * extrapolation
            })
            .collect()
    }
}
