//! Valid random arguments for any [`Op`]: what kernel tests and kernel benchmarks feed both backends.
//! Floats are uniform in [-1, 1); token ids lie in the vocabulary; expert ids are distinct per token
//! (and leave some experts empty); router logits are well separated, so that a one-ulp difference cannot
//! pick another expert; dispatch outputs (permutation, inverse, offsets), router outputs and saved
//! forward values (attention's output and log-sum-exp, RMSNorm's 1/rms) come from the CPU reference.

use crate::cpu::run_op;
use crate::op::{LatentAttn, Op, Route};

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// Expert ids for `tokens × top_k` slots, distinct per token, about half the experts used.
pub fn expert_ids(tokens: usize, experts: usize, top_k: usize, rng: &mut Rng) -> Vec<f32> {
    let used = (experts / 2).max(top_k).min(experts);
    let pool: Vec<usize> = rng.perm(experts).into_iter().take(used).collect();
    let mut idx = Vec::with_capacity(tokens * top_k);
    for _ in 0..tokens {
        let p = rng.perm(used);
        idx.extend(p.iter().take(top_k).map(|&i| pool[i] as f32));
    }
    idx
}

/// The dispatch of `idx`: `(perm, inv, offsets)`.
pub fn dispatched(tokens: usize, experts: usize, top_k: usize, idx: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = tokens * top_k;
    let mut a = vec![idx.to_vec(), vec![0.0; tokens], vec![0.0; n], vec![0.0; n], vec![0.0; experts + 1], vec![0.0; n]];
    run_op(&Op::Dispatch { tokens, experts, top_k, d: 1 }, &mut a);
    let offsets = a.swap_remove(4);
    let inv = a.swap_remove(3);
    let perm = a.swap_remove(2);
    (perm, inv, offsets)
}

/// Well-separated router logits (distinct values 0.2 apart plus a small jitter, so that no two
/// selection scores nor group sums tie) and the router's bias.
pub fn router_inputs(r: &Route, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
    let mut logits = Vec::with_capacity(r.tokens * r.experts);
    for _ in 0..r.tokens {
        for p in rng.perm(r.experts) {
            logits.push((p as f32 - r.experts as f32 / 2.0) * 0.2 + 0.01 * rng.f());
        }
    }
    let bias = (0..r.experts).map(|e| 0.001 * e as f32).collect();
    (logits, bias)
}

/// The router's outputs on [`router_inputs`]: `(scores, idx, weights)`.
pub fn routed(r: &Route, logits: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut a = vec![
        logits.to_vec(),
        bias.to_vec(),
        vec![0.0; r.tokens * r.experts],
        vec![0.0; r.tokens * r.top_k],
        vec![0.0; r.tokens * r.top_k],
    ];
    run_op(&Op::Router(*r), &mut a);
    let weights = a.swap_remove(4);
    let idx = a.swap_remove(3);
    let scores = a.swap_remove(2);
    (scores, idx, weights)
}

/// Valid arguments for `op`, each as long as `lens` says (the kernel's footprint).
pub fn args(op: &Op, lens: &[usize], rng: &mut Rng) -> Vec<Vec<f32>> {
    use Op::*;
    let mut a: Vec<Vec<f32>> = lens.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let tokens_in =
        |n: usize, vocab: usize, rng: &mut Rng| (0..n).map(|_| rng.below(vocab) as f32).collect::<Vec<f32>>();
    match *op {
        Embedding { n, vocab, .. } | EmbeddingBwd { n, vocab, .. } => a[0] = tokens_in(n, vocab, rng),
        // Partial sums of squares are not negative.
        SumParts { .. } => a[0].iter_mut().for_each(|x| *x = x.abs()),
        ShiftTokens { batch, seq, .. } => a[0] = tokens_in(batch * seq, 1 << 16, rng),
        CrossEntropy { batch, seq, vocab, .. } => {
            a[0] = rng.vec(lens[0], 4.0);
            a[1] = tokens_in(batch * seq, vocab, rng);
        }
        RmsNormBwd { rows, d, in_stride } => {
            let mut f = vec![a[0].clone(), a[1].clone(), vec![0.0; rows * d], vec![0.0; rows]];
            run_op(&RmsNorm { rows, d, in_stride, eps: 1e-6 }, &mut f);
            a[2] = f.swap_remove(3);
        }
        DytBwd { .. } | Dyt { .. } => {
            let alpha = if matches!(op, Dyt { .. }) { 3 } else { 2 };
            a[alpha] = vec![0.7];
        }
        AttentionBwd(at) => {
            let mut f = vec![a[0].clone(), a[1].clone(), a[2].clone(), vec![0.0; lens[3]], vec![0.0; lens[4]]];
            run_op(&Attention(at), &mut f);
            a[4] = f.swap_remove(4);
            a[3] = f.swap_remove(3);
        }
        Router(r) => {
            let (logits, bias) = router_inputs(&r, rng);
            a[0] = logits;
            a[1] = bias;
        }
        RouterBwd(r) => {
            let (logits, bias) = router_inputs(&r, rng);
            let (scores, idx, _) = routed(&r, &logits, &bias);
            a[0] = scores;
            a[1] = idx;
        }
        Dispatch { tokens, experts, top_k, .. } => a[0] = expert_ids(tokens, experts, top_k, rng),
        DispatchBwd { tokens, top_k, .. } | Combine { tokens, top_k, .. } | CombineBwd { tokens, top_k, .. } => {
            let experts = (2 * top_k).max(4);
            let idx = expert_ids(tokens, experts, top_k, rng);
            let (perm, inv, _) = dispatched(tokens, experts, top_k, &idx);
            if matches!(op, CombineBwd { .. }) {
                a[0] = perm;
                a[1] = inv;
            } else {
                a[0] = inv;
            }
        }
        GroupedGemm { experts, rows, .. } => {
            // The rows as tokens × top_k, for the largest top_k (at most 8) that divides them.
            let top_k = (1..=8).rev().find(|k| rows % k == 0 && *k <= experts).unwrap_or(1);
            let idx = expert_ids(rows / top_k, experts, top_k, rng);
            a[0] = dispatched(rows / top_k, experts, top_k, &idx).2;
        }
        ExpertStats { tokens, experts, top_k } => {
            a[0] = expert_ids(tokens, experts, top_k, rng);
            a[1] = a[1].iter().map(|v| v.abs() + 0.01).collect();
        }
        BiasUpdate { experts, .. } => {
            // A step whose update applies: any finite norm.
            a[0] = vec![0.0; crate::op::scalars::LEN];
            a[0][crate::op::scalars::GRAD_SCALE] = 1.0;
            a[0][crate::op::scalars::MAX_GRAD_NORM] = f32::INFINITY;
            a[1] = vec![1.0];
            // Counts of a micro-batch (some experts tied with the mean, some empty), entropy, tokens.
            a[2] = (0..experts).map(|e| if e % 5 == 0 { 4.0 } else { rng.below(9) as f32 }).collect();
            a[2].extend([0.5, 16.0]);
        }
        Optimizer(u) => {
            use crate::op::scalars::*;
            let mut s = vec![0.0; LEN];
            s[LR] = 1e-2;
            s[STEP] = 3.0;
            s[GRAD_SCALE] = 0.5;
            s[BETA1] = 0.9;
            s[BETA2] = 0.95;
            s[EPS] = 1e-8;
            s[WEIGHT_DECAY] = 0.1;
            s[EMBEDDING_DECAY] = 0.05;
            // Clipping active: the mean gradient's norm is about 0.5·sqrt(n/3).
            s[CLIP] = 0.1 * (u.n as f32 / 3.0).sqrt();
            s[MAX_GRAD_NORM] = f32::INFINITY;
            a[0] = s;
            // (A caller that left the gradient unfilled — an empty vector, its buffer zero — gets norm 0.)
            a[1] = vec![(a[2].iter().take(u.n).map(|&g| g as f64 * g as f64).sum::<f64>()).sqrt() as f32];
            if u.kind == crate::op::OptimizerKind::AdamW {
                a[5] = a[5].iter().map(|v| v.abs() * 0.01).collect();
            }
        }
        RopeAt { tokens, per_seq, .. } => a[0] = tokens_in(tokens.div_ceil(per_seq.max(1)), 200, rng),
        // Positions that keep every new token inside the cache, but for the last sequence's, which
        // may run past its end (those rows are dropped, or clamped for attention).
        CacheWrite { cache: c, per_seq, .. } | LatentAttention(LatentAttn { cache: c, per_seq, .. }) => {
            let room = (c.len + 1).saturating_sub(per_seq).max(1);
            a[0] = (0..c.batch)
                .map(|b| if b + 1 == c.batch && b > 0 { (c.len - 1) as f32 } else { rng.below(room) as f32 })
                .collect();
            if c.fp8_tile.is_some() {
                // FP8 scales (argument 4 of both ops): positive, as `CacheWrite` leaves them.
                a[4] = a[4].iter().map(|v| v.abs() * 0.01 + 1e-3).collect();
            }
        }
        BalanceLoss(b) | BalanceLossBwd { balance: b, .. } => {
            a[0] = a[0].iter().map(|v| v.abs()).collect();
            a[1] = expert_ids(b.batch * b.seq, b.experts, b.top_k, rng);
        }
        _ => {}
    }
    a
}
