//! DeepSeekMoE: the router (scores, group-limited top-k, normalized and scaled weights),
//! dispatch (expert-sorted rows), grouped expert GEMMs, and combine — forward and backward.

use rayon::prelude::*;

use super::dense::{gemm, gemm_fp8_stored, GemmShape};
use super::math::exp;
use crate::op::{GroupedMode, Quant, Route, Score};

/// Scores of one token's logits, in place: sigmoid, or softmax over the experts.
pub(crate) fn scores_of(score: Score, logits: &[f32], out: &mut [f32]) {
    match score {
        Score::Sigmoid => {
            for (o, l) in out.iter_mut().zip(logits) {
                *o = 1.0 / (1.0 + exp(-l));
            }
        }
        Score::Softmax => {
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
            let mut sum = 0.0;
            for (o, l) in out.iter_mut().zip(logits) {
                *o = exp(l - max);
                sum += *o;
            }
            for o in out.iter_mut() {
                *o /= sum;
            }
        }
    }
}

/// The key an expert (or group) is ranked by: its value, with NaN ranked lowest, as -inf.
/// Keys are never NaN, so NaN is free to mark an expert as unavailable (masked group, chosen).
fn rank_key(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}

/// Indices of the `k` largest keys (descending; ties to the lower index), skipping NaN (unavailable).
/// -inf keys are candidates like any other, so `k` available entries always fill `k` slots.
fn top_k_into(keys: &[f32], k: usize, out: &mut Vec<usize>) {
    out.clear();
    for _ in 0..k {
        let mut best: Option<usize> = None;
        for (i, &v) in keys.iter().enumerate() {
            if v.is_nan() || out.contains(&i) {
                continue;
            }
            if best.is_none_or(|b| v > keys[b]) {
                best = Some(i);
            }
        }
        match best {
            Some(b) => out.push(b),
            None => break,
        }
    }
}

/// Chooses one token's experts: `sel = scores + bias` (NaN ranked as -inf), groups ranked by the
/// sum of their top-2 `sel`, the best `top_groups` kept, then the top-k `sel` among their experts.
/// Ties go to the lower index. A validated route (`top_groups · experts/groups ≥ top_k`) always
/// fills every slot with a distinct expert, whatever the scores — non-finite scores give
/// non-finite weights, never a missing or repeated expert.
pub fn choose(r: &Route, scores: &[f32], bias: &[f32], sel: &mut [f32], chosen: &mut Vec<usize>) {
    for ((s, x), b) in sel.iter_mut().zip(scores).zip(bias) {
        *s = rank_key(x + b);
    }
    if r.groups > 1 {
        let per = r.experts / r.groups;
        let group_scores: Vec<f32> = (0..r.groups)
            .map(|g| {
                let mut top = [f32::NEG_INFINITY; 2];
                for &v in &sel[g * per..(g + 1) * per] {
                    if v > top[0] {
                        top = [v, top[0]];
                    } else if v > top[1] {
                        top[1] = v;
                    }
                }
                rank_key(top[0] + top[1])
            })
            .collect();
        let mut keep = Vec::with_capacity(r.top_groups);
        top_k_into(&group_scores, r.top_groups, &mut keep);
        for g in (0..r.groups).filter(|g| !keep.contains(g)) {
            sel[g * per..(g + 1) * per].fill(f32::NAN);
        }
    }
    top_k_into(sel, r.top_k, chosen);
}

/// `[logits, bias] -> [scores, idx, weights]`.
pub fn router(r: &Route, logits: &[f32], bias: &[f32], scores: &mut [f32], idx: &mut [f32], weights: &mut [f32]) {
    let (e, k) = (r.experts, r.top_k);
    scores.par_chunks_mut(e).zip(idx.par_chunks_mut(k).zip(weights.par_chunks_mut(k))).enumerate().for_each_init(
        || (vec![0.0f32; e], Vec::with_capacity(k)),
        |(sel, chosen), (t, (s, (idx, w)))| {
            scores_of(r.score, &logits[t * e..(t + 1) * e], s);
            choose(r, s, bias, sel, chosen);
            let sum: f32 = chosen.iter().map(|&c| s[c]).sum();
            let norm = if r.normalize { 1.0 / (sum + 1e-20) } else { 1.0 };
            // Every slot is filled for a validated route; a slot left empty by an invalid one
            // (fewer experts in the kept groups than top_k) is expert 0 with weight 0.
            for slot in 0..k {
                match chosen.get(slot) {
                    Some(&c) => {
                        idx[slot] = c as f32;
                        w[slot] = s[c] * norm * r.scale;
                    }
                    None => {
                        idx[slot] = 0.0;
                        w[slot] = 0.0;
                    }
                }
            }
        },
    );
}

/// The expert a stored index names (an i32 slice, read as f32 by the CPU ops): clamped to
/// `[0, experts)` — the CUDA kernels' `expert_index`, so that an id the router could never write
/// (negative, too large) reads the same expert on both backends.
pub fn expert_index(v: f32, experts: usize) -> usize {
    // `as` saturates: negative and NaN give 0, too large gives usize::MAX.
    (v as usize).min(experts - 1)
}

/// One micro-batch's routing statistics added to `stats` `[counts (E) | Σ entropy / ln E | tokens]`:
/// each chosen expert (read through [`expert_index`]) counted, and each token's router entropy of
/// its scores normalized to sum to 1, over ln E (f64 within the launch).
pub fn expert_stats(experts: usize, idx: &[f32], scores: &[f32], stats: &mut [f32]) {
    for &i in idx {
        stats[expert_index(i, experts)] += 1.0;
    }
    let ln_e = (experts as f64).ln().max(f64::MIN_POSITIVE);
    let mut entropy = 0.0f64;
    let mut tokens = 0usize;
    for row in scores.chunks_exact(experts) {
        let z: f64 = row.iter().map(|&s| s as f64).sum();
        let h: f64 = row.iter().map(|&s| s as f64 / z).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
        entropy += h / ln_e;
        tokens += 1;
    }
    stats[experts] = (stats[experts] as f64 + entropy) as f32;
    stats[experts + 1] += tokens as f32;
}

/// Aux-loss-free balancing: each bias moves `gamma` toward balance,
/// `bias[e] += gamma · sign(mean(counts) − counts[e])` (0 when equal), the mean in f64, the
/// counts the first `experts` values of [`expert_stats`]' statistics.
pub fn bias_update(experts: usize, gamma: f32, stats: &[f32], bias: &mut [f32]) {
    let counts = &stats[..experts];
    let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / experts.max(1) as f64;
    for (b, &c) in bias.iter_mut().zip(counts) {
        let diff = mean - c as f64;
        *b += gamma
            * if diff > 0.0 {
                1.0
            } else if diff < 0.0 {
                -1.0
            } else {
                0.0
            };
    }
}

/// Weight gradients back to the scores (adding to the balance loss's `dscores`), then through
/// the score function to the logits. An expert named in several slots (never by `router`)
/// receives every slot's gradient, added in slot order.
pub fn router_bwd(r: &Route, scores: &[f32], idx: &[f32], dweights: &[f32], dscores: &mut [f32], dlogits: &mut [f32]) {
    let (e, k) = (r.experts, r.top_k);
    dscores.par_chunks_mut(e).zip(dlogits.par_chunks_mut(e)).enumerate().for_each(|(t, (ds, dl))| {
        let s = &scores[t * e..(t + 1) * e];
        let ids = idx[t * k..(t + 1) * k].iter().map(|&i| expert_index(i, e));
        let dw = &dweights[t * k..(t + 1) * k];
        if r.normalize {
            // w_j = scale · s_j / S, S = Σ_sel s + 1e-20, so ∂L/∂s_c = (scale/S)·(g_c − Σ_j g_j s_j/S).
            // In this form the bracket cancels exactly when every weight is 1 (top-1).
            let sum: f32 = ids.clone().map(|c| s[c]).sum::<f32>() + 1e-20;
            let mean: f32 = ids.clone().zip(dw).map(|(c, g)| g * (s[c] / sum)).sum();
            for (c, g) in ids.zip(dw) {
                ds[c] += r.scale / sum * (g - mean);
            }
        } else {
            for (c, g) in ids.zip(dw) {
                ds[c] += r.scale * g;
            }
        }
        match r.score {
            Score::Sigmoid => {
                for j in 0..e {
                    dl[j] += ds[j] * s[j] * (1.0 - s[j]);
                }
            }
            Score::Softmax => {
                let dot: f32 = (0..e).map(|j| ds[j] * s[j]).sum();
                for j in 0..e {
                    dl[j] += s[j] * (ds[j] - dot);
                }
            }
        }
    });
}

/// Sorts (token, slot) pairs by expert, stably, and gathers the inputs: `[perm, inv, offsets, xp]`.
/// Ids are read through [`expert_index`].
pub fn dispatch(tokens: usize, experts: usize, top_k: usize, d: usize, idx: &[f32], x: &[f32], out: [&mut [f32]; 4]) {
    let [perm, inv, offsets, xp] = out;
    let mut counts = vec![0usize; experts + 1];
    for &e in &idx[..tokens * top_k] {
        counts[expert_index(e, experts) + 1] += 1;
    }
    for e in 0..experts {
        counts[e + 1] += counts[e];
    }
    for (o, c) in offsets.iter_mut().zip(&counts) {
        *o = *c as f32;
    }
    let mut next = counts;
    for (src, &e) in idx[..tokens * top_k].iter().enumerate() {
        let e = expert_index(e, experts);
        let row = next[e];
        next[e] += 1;
        perm[row] = src as f32;
        inv[src] = row as f32;
    }
    xp.par_chunks_mut(d).enumerate().for_each(|(row, out)| {
        let t = perm[row] as usize / top_k;
        out.copy_from_slice(&x[t * d..(t + 1) * d]);
    });
}

/// `dx[t] += Σ_slot dxp[inv[t·k + slot]]`.
pub fn dispatch_bwd(_tokens: usize, top_k: usize, d: usize, inv: &[f32], dxp: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(d).enumerate().for_each(|(t, dx)| {
        for slot in 0..top_k {
            let row = inv[t * top_k + slot] as usize;
            for (a, b) in dx.iter_mut().zip(&dxp[row * d..(row + 1) * d]) {
                *a += b;
            }
        }
    });
}

/// Expert `e`'s GEMM over its `m` rows as the dense core sees it: forward `y[m,n] = x[m,k] · W_eᵀ`,
/// data gradient `dx[m,k] += dy[m,n] · W_e`, weight gradient `dW_e[n,k] += dy[m,n]ᵀ · x[m,k]`.
fn expert_shape(mode: GroupedMode, m: usize, n: usize, k: usize, quant: Quant) -> GemmShape {
    match mode {
        GroupedMode::Forward => {
            GemmShape { m, n, k, lda: k, ldb: k, ldc: n, ta: false, tb: true, accumulate: false, quant }
        }
        GroupedMode::DataGrad => {
            GemmShape { m, n: k, k: n, lda: n, ldb: k, ldc: k, ta: false, tb: false, accumulate: true, quant }
        }
        GroupedMode::WeightGrad => {
            GemmShape { m: n, n: k, k: m, lda: n, ldb: k, ldc: k, ta: true, tb: false, accumulate: true, quant }
        }
    }
}

/// One GEMM per expert over its rows (weights `[experts, n, k]`).
pub fn grouped_gemm(
    experts: usize,
    n: usize,
    k: usize,
    mode: GroupedMode,
    quant: Quant,
    inp: [&[f32]; 3],
    c: &mut [f32],
) {
    let [offsets, a, b] = inp;
    let quant = quant.grouped(mode);
    for e in 0..experts {
        let (r0, r1) = (offsets[e] as usize, offsets[e + 1] as usize);
        let m = r1 - r0;
        if m == 0 {
            continue;
        }
        let w = e * n * k..(e + 1) * n * k;
        let shape = expert_shape(mode, m, n, k, quant);
        match mode {
            GroupedMode::Forward => gemm(shape, &a[r0 * k..r1 * k], &b[w], &mut c[r0 * n..r1 * n]),
            GroupedMode::DataGrad => gemm(shape, &a[r0 * n..r1 * n], &b[w], &mut c[r0 * k..r1 * k]),
            // a = x, b = dy
            GroupedMode::WeightGrad => gemm(shape, &b[r0 * n..r1 * n], &a[r0 * k..r1 * k], &mut c[w]),
        }
    }
}

/// The forward and data-gradient expert GEMMs over operands already quantized
/// (`Quant::Fp8Stored`): `[offsets, x or dy, its row-tile scales, w, its blocks' scales]`.
pub fn grouped_gemm_fp8_stored(
    experts: usize,
    n: usize,
    k: usize,
    mode: GroupedMode,
    quant: Quant,
    inp: [&[f32]; 5],
    c: &mut [f32],
) {
    let [offsets, a, sa, w, sw] = inp;
    let Quant::Fp8Stored { tile, b_blocks } = quant else { unreachable!("grouped_gemm_fp8_stored runs stored FP8") };
    let per = mode.weight_scales(n, k, tile, b_blocks).1;
    let width = if mode == GroupedMode::Forward { k } else { n };
    let tiles = width.div_ceil(tile);
    for e in 0..experts {
        let (r0, r1) = (offsets[e] as usize, offsets[e + 1] as usize);
        let m = r1 - r0;
        if m == 0 {
            continue;
        }
        let x = (&a[r0 * width..r1 * width], &sa[r0 * tiles..r1 * tiles]);
        let we = (&w[e * n * k..(e + 1) * n * k], &sw[e * per..(e + 1) * per]);
        let out = if mode == GroupedMode::Forward { n } else { k };
        gemm_fp8_stored(expert_shape(mode, m, n, k, quant), x, we, &mut c[r0 * out..r1 * out]);
    }
}

/// `out[t] += Σ_slot w[t,slot] · yp[inv[t·k + slot]]`.
pub fn combine(_tokens: usize, top_k: usize, d: usize, inv: &[f32], w: &[f32], yp: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(d).enumerate().for_each(|(t, out)| {
        for slot in 0..top_k {
            let row = inv[t * top_k + slot] as usize;
            let g = w[t * top_k + slot];
            for (o, y) in out.iter_mut().zip(&yp[row * d..(row + 1) * d]) {
                *o += g * y;
            }
        }
    });
}

/// `dyp[row] = w[src]·dout[t]`; `dw[src] += dout[t] · yp[row]`, with `src = perm[row] = t·k + slot`.
pub fn combine_bwd(tokens: usize, top_k: usize, d: usize, inp: [&[f32]; 5], dyp: &mut [f32], dw: &mut [f32]) {
    let [perm, inv, w, yp, dout] = inp;
    dyp.par_chunks_mut(d).enumerate().take(tokens * top_k).for_each(|(row, dyp)| {
        let src = perm[row] as usize;
        let t = src / top_k;
        for (a, g) in dyp.iter_mut().zip(&dout[t * d..(t + 1) * d]) {
            *a = w[src] * g;
        }
    });
    dw.par_iter_mut().enumerate().take(tokens * top_k).for_each(|(src, dw)| {
        let row = inv[src] as usize;
        let t = src / top_k;
        *dw += dout[t * d..(t + 1) * d].iter().zip(&yp[row * d..(row + 1) * d]).map(|(a, b)| a * b).sum::<f32>();
    });
}
