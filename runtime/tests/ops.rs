//! Property tests of the CPU reference ops on random shapes: every backward against central
//! finite differences of `L = Σ R ⊙ forward(x)` (R random), and the MoE invariants.

use dsv3c_runtime::cpu::run_op;
use dsv3c_runtime::init::SplitMix64;
use dsv3c_runtime::op::*;
use dsv3c_runtime::tolerance::{rel_l2, FINITE_DIFF_REL_L2, FINITE_DIFF_STEP};
use proptest::prelude::*;

fn randn(rng: &mut SplitMix64, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Compares `analytic` (the gradient of `loss` w.r.t. `inputs[which]`) with central differences
/// at up to 48 sampled elements. `loss` returns None where the op's discrete choices changed.
fn check(name: &str, inputs: &[Vec<f32>], which: usize, analytic: &[f32], loss: impl Fn(&[Vec<f32>]) -> Option<f64>) {
    let n = inputs[which].len();
    let step = (n / 48).max(1);
    let (mut fd, mut an) = (Vec::new(), Vec::new());
    // Central differences at h and h/2, Richardson-extrapolated: truncation error O(h⁴).
    let central = |j: usize, h: f32| -> Option<f64> {
        let mut plus = inputs.to_vec();
        plus[which][j] += h;
        let mut minus = inputs.to_vec();
        minus[which][j] -= h;
        Some((loss(&plus)? - loss(&minus)?) / (2.0 * h as f64))
    };
    for j in (0..n).step_by(step) {
        if let (Some(d1), Some(d2)) = (central(j, FINITE_DIFF_STEP), central(j, FINITE_DIFF_STEP / 2.0)) {
            fd.push(((4.0 * d2 - d1) / 3.0) as f32);
            an.push(analytic[j]);
        }
    }
    // f32 rounding of the loss, amplified by the step, is the noise floor of a difference.
    let base = loss(inputs).unwrap_or(0.0).abs() + 1.0;
    let noise = 64.0 * f32::EPSILON as f64 * base / FINITE_DIFF_STEP as f64;
    let diff: f64 = an.iter().zip(&fd).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt();
    let scale: f64 = fd.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(noise * (fd.len() as f64).sqrt());
    let err = diff / scale;
    assert!(
        err < FINITE_DIFF_REL_L2,
        "{name}: input {which} relative L2 error {err:.3e}\nanalytic {an:?}\nnumeric {fd:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn gemm_backward(seed: u64, m in 1usize..6, n in 1usize..6, k in 1usize..6, ta: bool, tb: bool) {
        let mut r = SplitMix64::new(seed);
        let (a, b, rr) = (randn(&mut r, m * k, 1.0), randn(&mut r, k * n, 1.0), randn(&mut r, m * n, 1.0));
        let op = Op::Gemm { m, n, k, lda: if ta { m } else { k }, ldb: if tb { k } else { n }, ldc: n, ta, tb, accumulate: false, quant: Quant::None };
        let fwd = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone(), x[1].clone(), vec![0.0; m * n]]; run_op(&op, &mut v); Some(dot(&v[2], &rr)) };
        // Analytic: dA = R·op(B)ᵀ, dB = op(A)ᵀ·R, via the same op with transposes.
        let el = |x: &[f32], i: usize, j: usize, rows: usize, cols: usize, t: bool| if t { x[j * rows + i] } else { x[i * cols + j] };
        let mut ga = vec![0.0f32; m * k];
        let mut gb = vec![0.0f32; k * n];
        for i in 0..m { for j in 0..n { for p in 0..k {
            let (av, bv) = (el(&a, i, p, m, k, ta), el(&b, p, j, k, n, tb));
            let ai = if ta { p * m + i } else { i * k + p };
            let bi = if tb { j * k + p } else { p * n + j };
            ga[ai] += rr[i * n + j] * bv;
            gb[bi] += rr[i * n + j] * av;
        }}}
        let inputs = vec![a, b];
        check("gemm", &inputs, 0, &ga, fwd);
        check("gemm", &inputs, 1, &gb, fwd);
    }

    #[test]
    fn rmsnorm_and_dyt_backward(seed: u64, rows in 1usize..5, d in 1usize..9, pad in 0usize..3) {
        let mut r = SplitMix64::new(seed);
        let stride = d + pad;
        let (mut x, w, b, alpha, rr) = (randn(&mut r, rows * stride, 1.0), randn(&mut r, d, 1.0), randn(&mut r, d, 0.5), vec![0.7f32], randn(&mut r, rows * d, 1.0));
        // Keep each row's RMS at least 0.5: near zero the norm is nearly a step, which no finite
        // difference of step 1e-2 resolves.
        for row in x.chunks_mut(stride) {
            let rms = (row[..d].iter().map(|v| v * v).sum::<f32>() / d as f32).sqrt();
            if rms < 0.5 {
                row[..d].iter_mut().for_each(|v| *v = if *v >= 0.0 { *v + 0.5 } else { *v - 0.5 });
            }
        }
        let rms = Op::RmsNorm { rows, d, in_stride: stride, eps: 1e-5 };
        let f = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone(), x[1].clone(), vec![0.0; rows * d], vec![0.0; rows]]; run_op(&rms, &mut v); Some(dot(&v[2], &rr)) };
        let mut v = vec![x.clone(), w.clone(), vec![0.0; rows * d], vec![0.0; rows]];
        run_op(&rms, &mut v);
        let mut g = vec![x.clone(), w.clone(), v[3].clone(), rr.clone(), vec![0.0; rows * stride], vec![0.0; d]];
        run_op(&Op::RmsNormBwd { rows, d, in_stride: stride }, &mut g);
        let inputs = vec![x.clone(), w.clone()];
        check("rmsnorm", &inputs, 0, &g[4], f);
        check("rmsnorm", &inputs, 1, &g[5], f);

        let dyt = Op::Dyt { rows, d, in_stride: stride };
        let f = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone(), x[1].clone(), x[2].clone(), x[3].clone(), vec![0.0; rows * d]]; run_op(&dyt, &mut v); Some(dot(&v[4], &rr)) };
        let mut g = vec![x.clone(), w.clone(), alpha.clone(), rr.clone(), vec![0.0; rows * stride], vec![0.0; d], vec![0.0; d], vec![0.0; 1]];
        run_op(&Op::DytBwd { rows, d, in_stride: stride }, &mut g);
        let inputs = vec![x, w, b, alpha];
        for (i, gi) in [(0, 4), (1, 5), (2, 6), (3, 7)] {
            check("dyt", &inputs, i, &g[gi], f);
        }
    }

    #[test]
    fn rope_backward_is_the_transpose(seed: u64, tokens in 1usize..6, heads in 1usize..3, half in 1usize..5, yarn: bool) {
        let mut r = SplitMix64::new(seed);
        let dim = 2 * half;
        let (offset, head_stride) = (3, 3 + dim + 1);
        let row_stride = heads * head_stride;
        let freqs = RopeFreqs { theta: 100.0, yarn: yarn.then_some((4.0, 4, 32.0, 1.0)), attention_factor: if yarn { 1.1 } else { 1.0 } };
        let op = |inverse| Op::Rope { tokens, seq: 3, heads, row_stride, head_stride, offset, dim, freqs, inverse };
        let (x, rr) = (randn(&mut r, tokens * row_stride, 1.0), randn(&mut r, tokens * row_stride, 1.0));
        let f = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone()]; run_op(&op(false), &mut v); Some(dot(&v[0], &rr)) };
        let mut g = vec![rr.clone()];
        run_op(&op(true), &mut g);
        check("rope", &[x], 0, &g[0], f);
    }

    #[test]
    fn attention_backward(seed: u64, batch in 1usize..3, seq in 1usize..6, heads in 1usize..3, windowed: bool) {
        let mut r = SplitMix64::new(seed);
        let (nope, rope, v, kvr) = (3, 2, 3, 2);
        let a = Attn { batch, seq, heads, nope, rope, v, kpe_stride: kvr + rope, kpe_offset: kvr, scale: 0.5, window: windowed.then_some((2, 1)) };
        let n = batch * seq;
        let (q, kvb, kva) = (randn(&mut r, n * heads * (nope + rope), 1.0), randn(&mut r, n * heads * (nope + v), 1.0), randn(&mut r, n * (kvr + rope), 1.0));
        let rr = randn(&mut r, n * heads * v, 1.0);
        let fwd = |x: &[Vec<f32>]| { let mut t = vec![x[0].clone(), x[1].clone(), x[2].clone(), vec![0.0; n * heads * v], vec![0.0; n * heads]]; run_op(&Op::Attention(a), &mut t); t };
        let f = |x: &[Vec<f32>]| Some(dot(&fwd(x)[3], &rr));
        let inputs = vec![q.clone(), kvb.clone(), kva.clone()];
        let out = fwd(&inputs);
        let mut g = vec![q.clone(), kvb.clone(), kva.clone(), out[3].clone(), out[4].clone(), rr.clone(), vec![0.0; q.len()], vec![0.0; kvb.len()], vec![0.0; kva.len()]];
        run_op(&Op::AttentionBwd(a), &mut g);
        check("attention", &inputs, 0, &g[6], f);
        check("attention", &inputs, 1, &g[7], f);
        check("attention", &inputs, 2, &g[8], f);
    }

    #[test]
    fn swiglu_embedding_and_cross_entropy_backward(seed: u64, n in 1usize..12, vocab in 2usize..9, seq in 2usize..5) {
        let mut r = SplitMix64::new(seed);
        let (g0, u0, rr) = (randn(&mut r, n, 2.0), randn(&mut r, n, 1.0), randn(&mut r, n, 1.0));
        let f = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone(), x[1].clone(), vec![0.0; n]]; run_op(&Op::SwiGlu { n }, &mut v); Some(dot(&v[2], &rr)) };
        let mut g = vec![g0.clone(), u0.clone(), rr.clone(), vec![0.0; n], vec![0.0; n]];
        run_op(&Op::SwiGluBwd { n }, &mut g);
        check("swiglu", &[g0.clone(), u0.clone()], 0, &g[3], f);
        check("swiglu", &[g0, u0], 1, &g[4], f);

        let (batch, shift) = (2, 1);
        let tokens: Vec<f32> = (0..batch * seq).map(|_| (r.next_u64() % vocab as u64) as f32).collect();
        let logits = randn(&mut r, batch * seq * vocab, 1.5);
        let ce = |grad_scale| Op::CrossEntropy { batch, seq, vocab, shift, grad_scale };
        let f = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone(), tokens.clone(), vec![0.0]]; run_op(&ce(1.0), &mut v); Some(v[2][0] as f64) };
        let mut v = vec![logits.clone(), tokens.clone(), vec![0.0]];
        run_op(&ce(1.0), &mut v);
        check("cross_entropy", &[logits], 0, &v[0], f);

        let d = 3;
        let table = randn(&mut r, vocab * d, 1.0);
        let rr = randn(&mut r, batch * seq * d, 1.0);
        let op = Op::Embedding { n: batch * seq, vocab, d };
        let f = |x: &[Vec<f32>]| { let mut v = vec![tokens.clone(), x[0].clone(), vec![0.0; batch * seq * d]]; run_op(&op, &mut v); Some(dot(&v[2], &rr)) };
        let mut g = vec![tokens.clone(), rr.clone(), vec![0.0; vocab * d]];
        run_op(&Op::EmbeddingBwd { n: batch * seq, vocab, d }, &mut g);
        check("embedding", &[table], 0, &g[2], f);
    }

    #[test]
    fn router_invariants_and_backward(seed: u64, tokens in 1usize..6, groups in 1usize..4, per in 2usize..5, sigmoid: bool, normalize: bool) {
        let mut r = SplitMix64::new(seed);
        let experts = groups * per;
        let top_groups = 1 + (r.next_u64() as usize % groups);
        let top_k = 1 + (r.next_u64() as usize % (top_groups * per));
        let route = Route { tokens, experts, groups, top_groups, top_k, score: if sigmoid { Score::Sigmoid } else { Score::Softmax }, normalize, scale: 2.5 };
        let (logits, bias) = (randn(&mut r, tokens * experts, 2.0), randn(&mut r, experts, 0.1));
        let fwd = |l: &[f32]| { let mut v = vec![l.to_vec(), bias.clone(), vec![0.0; tokens * experts], vec![0.0; tokens * top_k], vec![0.0; tokens * top_k]]; run_op(&Op::Router(route), &mut v); v };
        let out = fwd(&logits);
        for t in 0..tokens {
            let idx: Vec<usize> = out[3][t * top_k..(t + 1) * top_k].iter().map(|&i| i as usize).collect();
            let mut distinct = idx.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), top_k, "experts are distinct");
            let used_groups: std::collections::BTreeSet<usize> = idx.iter().map(|e| e / per).collect();
            prop_assert!(used_groups.len() <= top_groups);
            let sum: f32 = out[4][t * top_k..(t + 1) * top_k].iter().sum();
            if normalize {
                prop_assert!((sum - 2.5).abs() < 1e-4, "weights sum to route_scale: {}", sum);
            }
        }
        // Backward of L = Σ R·weights + Σ S·scores, where selection is unchanged by the step.
        let (rr, ss) = (randn(&mut r, tokens * top_k, 1.0), randn(&mut r, tokens * experts, 1.0));
        let f = |x: &[Vec<f32>]| { let o = fwd(&x[0]); (o[3] == out[3]).then(|| dot(&o[4], &rr) + dot(&o[2], &ss)) };
        let mut g = vec![out[2].clone(), out[3].clone(), rr.clone(), ss.clone(), vec![0.0; tokens * experts]];
        run_op(&Op::RouterBwd(route), &mut g);
        check("router", &[logits], 0, &g[4], f);
    }

    #[test]
    fn dispatch_combine_and_grouped_gemm(seed: u64, tokens in 1usize..7, experts in 1usize..5, top_k in 1usize..3, d in 1usize..4) {
        prop_assume!(top_k <= experts);
        let mut r = SplitMix64::new(seed);
        // Distinct experts per token.
        let mut idx = Vec::new();
        for _ in 0..tokens {
            let mut chosen: Vec<usize> = Vec::new();
            while chosen.len() < top_k { let e = r.next_u64() as usize % experts; if !chosen.contains(&e) { chosen.push(e); } }
            idx.extend(chosen.iter().map(|&e| e as f32));
        }
        let rows = tokens * top_k;
        let x = randn(&mut r, tokens * d, 1.0);
        let dispatch = |x: &[f32]| { let mut v = vec![idx.clone(), x.to_vec(), vec![0.0; rows], vec![0.0; rows], vec![0.0; experts + 1], vec![0.0; rows * d]]; run_op(&Op::Dispatch { tokens, experts, top_k, d }, &mut v); v };
        let disp = dispatch(&x);
        // Rows are sorted by expert, and offsets bound each expert's rows.
        for e in 0..experts {
            let (a, b) = (disp[4][e] as usize, disp[4][e + 1] as usize);
            for row in a..b {
                let src = disp[2][row] as usize;
                prop_assert_eq!(idx[src] as usize, e);
                prop_assert_eq!(disp[3][src] as usize, row);
            }
        }
        // Identity experts with weights summing to one: combine(dispatch(x)) = x.
        let w: Vec<f32> = vec![1.0 / top_k as f32; rows];
        let mut c = vec![disp[3].clone(), w.clone(), disp[5].clone(), vec![0.0; tokens * d]];
        run_op(&Op::Combine { tokens, top_k, d }, &mut c);
        prop_assert!(rel_l2(&c[3], &x) < 1e-6);

        // Gradients of combine (w.r.t. yp and weights) and dispatch (w.r.t. x).
        let (yp, w) = (randn(&mut r, rows * d, 1.0), randn(&mut r, rows, 1.0));
        let rr = randn(&mut r, tokens * d, 1.0);
        let f = |x: &[Vec<f32>]| { let mut v = vec![disp[3].clone(), x[1].clone(), x[0].clone(), vec![0.0; tokens * d]]; run_op(&Op::Combine { tokens, top_k, d }, &mut v); Some(dot(&v[3], &rr)) };
        let mut g = vec![disp[2].clone(), disp[3].clone(), w.clone(), yp.clone(), rr.clone(), vec![0.0; rows * d], vec![0.0; rows]];
        run_op(&Op::CombineBwd { tokens, top_k, d }, &mut g);
        let inputs = vec![yp.clone(), w.clone()];
        check("combine", &inputs, 0, &g[5], f);
        check("combine", &inputs, 1, &g[6], f);
        let rp = randn(&mut r, rows * d, 1.0);
        let f = |x: &[Vec<f32>]| Some(dot(&dispatch(&x[0])[5], &rp));
        let mut g = vec![disp[3].clone(), rp.clone(), vec![0.0; tokens * d]];
        run_op(&Op::DispatchBwd { tokens, top_k, d }, &mut g);
        check("dispatch", std::slice::from_ref(&x), 0, &g[2], f);

        // Grouped GEMM over the expert-sorted rows: y_r = W_e x_r.
        let (n, k) = (2, d);
        let wts = randn(&mut r, experts * n * k, 1.0);
        let ry = randn(&mut r, rows * n, 1.0);
        let gg = |mode| Op::GroupedGemm { experts, rows, n, k, mode, quant: Quant::None };
        let f = |x: &[Vec<f32>]| { let mut v = vec![disp[4].clone(), x[0].clone(), x[1].clone(), vec![0.0; rows * n]]; run_op(&gg(GroupedMode::Forward), &mut v); Some(dot(&v[3], &ry)) };
        let mut dx = vec![disp[4].clone(), ry.clone(), wts.clone(), vec![0.0; rows * k]];
        run_op(&gg(GroupedMode::DataGrad), &mut dx);
        let mut dw = vec![disp[4].clone(), disp[5].clone(), ry.clone(), vec![0.0; experts * n * k]];
        run_op(&gg(GroupedMode::WeightGrad), &mut dw);
        let inputs = vec![disp[5].clone(), wts];
        check("grouped_gemm", &inputs, 0, &dx[3], f);
        check("grouped_gemm", &inputs, 1, &dw[3], f);
    }

    #[test]
    fn balance_loss_backward(seed: u64, batch in 1usize..3, seq in 1usize..5, experts in 2usize..6, sigmoid: bool) {
        let mut r = SplitMix64::new(seed);
        let top_k = 1 + r.next_u64() as usize % experts;
        let bal = Balance { batch, seq, experts, top_k, alpha: 0.3, score: if sigmoid { Score::Sigmoid } else { Score::Softmax } };
        let scores: Vec<f32> = (0..batch * seq * experts).map(|_| 0.05 + r.unit() as f32).collect();
        let idx: Vec<f32> = (0..batch * seq).flat_map(|_| (0..top_k).map(|s| s as f32).collect::<Vec<_>>()).collect();
        let f = |x: &[Vec<f32>]| { let mut v = vec![x[0].clone(), idx.clone(), vec![0.0]]; run_op(&Op::BalanceLoss(bal), &mut v); Some(v[2][0] as f64) };
        let mut g = vec![scores.clone(), idx.clone(), vec![0.0; scores.len()]];
        run_op(&Op::BalanceLossBwd { balance: bal, grad_scale: 1.0 }, &mut g);
        check("balance_loss", &[scores], 0, &g[2], f);
    }
}

/// `op(A)[i, p]` and `op(B)[p, j]` read the way `Op::Gemm` documents, for a naive product.
fn naive_gemm(op: &Op, a: &[f32], b: &[f32], c: &mut [f32]) {
    let Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, .. } = *op else { unreachable!() };
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if ta { a[p * lda + i] } else { a[i * lda + p] };
                let bv = if tb { b[j * ldb + p] } else { b[p * ldb + j] };
                s += av as f64 * bv as f64;
            }
            let prior = if accumulate { c[i * ldc + j] as f64 } else { 0.0 };
            c[i * ldc + j] = (prior + s) as f32;
        }
    }
}

#[test]
fn gemms_of_every_layout_match_a_naive_product_on_the_parallel_path() {
    let mut r = SplitMix64::new(9);
    // 2^15 multiply-adds and more take the multithreaded path; padded leading dimensions.
    for (m, n, k) in [(3, 4, 5), (64, 80, 72), (130, 33, 257)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for accumulate in [false, true] {
                let (lda, ldb, ldc) = (if ta { m } else { k } + 2, if tb { k } else { n } + 1, n + 5);
                let op = Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant: Quant::None };
                let a = randn(&mut r, if ta { k * lda } else { m * lda }, 1.0);
                let b = randn(&mut r, if tb { n * ldb } else { k * ldb }, 1.0);
                let c0 = randn(&mut r, m * ldc, 1.0);
                let mut want = c0.clone();
                naive_gemm(&op, &a, &b, &mut want);
                let mut v = vec![a, b, c0.clone()];
                run_op(&op, &mut v);
                for i in 0..m {
                    // The gap between rows of C is never written.
                    assert_eq!(v[2][i * ldc + n..(i + 1) * ldc], c0[i * ldc + n..(i + 1) * ldc], "{op:?}");
                }
                let err = rel_l2(&v[2], &want);
                assert!(err < 1e-6, "{op:?}: relative L2 error {err:.2e}");
            }
        }
    }
}

#[test]
fn zero_add_add_scaled_and_shift_tokens() {
    let mut r = SplitMix64::new(4);
    let n = 10_000; // past the 4096-element chunks of the parallel loops
    let (x, y) = (randn(&mut r, n, 1.0), randn(&mut r, n, 1.0));
    let mut v = vec![x.clone()];
    run_op(&Op::Zero { n }, &mut v);
    assert!(v[0].iter().all(|&z| z == 0.0));
    let mut v = vec![x.clone(), y.clone(), randn(&mut r, n, 1.0)];
    run_op(&Op::Add { n }, &mut v);
    assert!(v[2].iter().zip(x.iter().zip(&y)).all(|(o, (a, b))| *o == a + b));
    let mut v = vec![x.clone(), y.clone()];
    run_op(&Op::AddScaled { n, alpha: -0.25 }, &mut v);
    assert!(v[1].iter().zip(x.iter().zip(&y)).all(|(o, (a, b))| *o == b + -0.25 * a));
    // Each sequence moves `shift` left; its tail repeats its own last token.
    let (batch, seq, shift) = (3, 5, 2);
    let tokens: Vec<f32> = (0..batch * seq).map(|i| (100 + i) as f32).collect();
    let mut v = vec![tokens, vec![-1.0; batch * seq]];
    run_op(&Op::ShiftTokens { batch, seq, shift }, &mut v);
    let want: Vec<f32> =
        [102, 103, 104, 104, 104, 107, 108, 109, 109, 109, 112, 113, 114, 114, 114].iter().map(|&t| t as f32).collect();
    assert_eq!(v[1], want);
}

#[test]
fn quantized_grouped_gemms_equal_per_expert_gemms_in_the_same_format() {
    let mut r = SplitMix64::new(12);
    let (experts, n, k) = (4, 24, 70);
    // Expert e owns rows offsets[e]..offsets[e+1]; expert 2 has none.
    let offsets = [0.0f32, 5.0, 17.0, 17.0, 30.0];
    let rows = 30;
    for quant in [Quant::None, Quant::Bf16, Quant::Fp8 { tile: 32, b_blocks: true }] {
        let (x, w, dy) =
            (randn(&mut r, rows * k, 1.0), randn(&mut r, experts * n * k, 1.0), randn(&mut r, rows * n, 1.0));
        // As the compiler builds them: B in weight blocks for the forward and data-gradient
        // GEMMs; the weight gradient's B is an activation (1×tile tiles).
        let wgrad_quant = match quant {
            Quant::Fp8 { tile, .. } => Quant::Fp8 { tile, b_blocks: false },
            q => q,
        };
        let gg = |mode| Op::GroupedGemm {
            experts,
            rows,
            n,
            k,
            mode,
            quant: if mode == GroupedMode::WeightGrad { wgrad_quant } else { quant },
        };
        let mut fwd = vec![offsets.to_vec(), x.clone(), w.clone(), vec![0.0; rows * n]];
        run_op(&gg(GroupedMode::Forward), &mut fwd);
        let mut dx = vec![offsets.to_vec(), dy.clone(), w.clone(), vec![0.0; rows * k]];
        run_op(&gg(GroupedMode::DataGrad), &mut dx);
        let mut dw = vec![offsets.to_vec(), x.clone(), dy.clone(), vec![0.0; experts * n * k]];
        run_op(&gg(GroupedMode::WeightGrad), &mut dw);
        for e in 0..experts {
            let (a, b) = (offsets[e] as usize, offsets[e + 1] as usize);
            let we = &w[e * n * k..(e + 1) * n * k];
            // The same products as dense GEMMs: y = x Wᵀ, dx = dy W, dW = dyᵀ x.
            let dense = |m, nn, kk, ta, tb, acc, quant, a: &[f32], b: &[f32]| {
                let (lda, ldb) = (if ta { m } else { kk }, if tb { kk } else { nn });
                let mut v = vec![a.to_vec(), b.to_vec(), vec![0.0; m * nn]];
                run_op(&Op::Gemm { m, n: nn, k: kk, lda, ldb, ldc: nn, ta, tb, accumulate: acc, quant }, &mut v);
                v.pop().unwrap()
            };
            let m = b - a;
            if m > 0 {
                let y = dense(m, n, k, false, true, false, quant, &x[a * k..b * k], we);
                assert!(rel_l2(&fwd[3][a * n..b * n], &y) < 1e-6, "{quant:?} forward, expert {e}");
                let g = dense(m, k, n, false, false, true, quant, &dy[a * n..b * n], we);
                assert!(rel_l2(&dx[3][a * k..b * k], &g) < 1e-6, "{quant:?} data grad, expert {e}");
                let gw = dense(n, k, m, true, false, true, wgrad_quant, &dy[a * n..b * n], &x[a * k..b * k]);
                assert!(rel_l2(&dw[3][e * n * k..(e + 1) * n * k], &gw) < 1e-6, "{quant:?} weight grad, expert {e}");
            } else {
                assert!(dw[3][e * n * k..(e + 1) * n * k].iter().all(|&v| v == 0.0), "an empty expert's weight grad");
            }
        }
    }
}

/// Router semantics on non-finite scores (a diverging run): NaN selection scores rank lowest, as
/// -inf; -inf is still a candidate; every slot gets a distinct expert of the kept groups; NaN
/// scores give NaN weights rather than a silently renormalized mix. The CUDA kernel is held to the
/// same results by the kernel suite (`codegen/tests/kernels.rs`, `router_non_finite`).
#[test]
fn router_non_finite_scores() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let route = |groups, top_groups, top_k, score| Route {
        tokens: 1,
        experts: 8,
        groups,
        top_groups,
        top_k,
        score,
        normalize: true,
        scale: 1.0,
    };
    let run = |r: Route, logits: &[f32], bias: &[f32]| {
        let mut v = vec![logits.to_vec(), bias.to_vec(), vec![0.0; 8], vec![0.0; r.top_k], vec![0.0; r.top_k]];
        run_op(&Op::Router(r), &mut v);
        (v[3].iter().map(|&i| i as usize).collect::<Vec<_>>(), v.swap_remove(4))
    };
    let zero = [0.0f32; 8];
    // Sigmoid: -inf logits score 0 (tied, lowest index first); a NaN logit ranks below them.
    let (idx, w) = run(route(1, 1, 4, Score::Sigmoid), &[nan, -inf, 3.0, -inf, -inf, 2.0, -inf, -inf], &zero);
    assert_eq!(idx, [2, 5, 1, 3]);
    assert!(w[2] == 0.0 && w[3] == 0.0 && w[0] > w[1], "{w:?}");
    // A -inf bias ranks those experts last but they still fill slots; NaN selection (inf + -inf) too.
    let bias = [-inf, -inf, -inf, -inf, -inf, -inf, 0.0, -inf];
    let (idx, _) = run(route(1, 1, 3, Score::Sigmoid), &[inf, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &bias);
    assert_eq!(idx, [6, 0, 1]);
    // Groups whose top-2 sums are -inf still rank (lowest index first), so top_k slots always fill.
    let bias = [-inf, -inf, -inf, -inf, 0.0, 0.1, -inf, -inf];
    let (idx, _) = run(route(4, 2, 4, Score::Sigmoid), &[0.0; 8], &bias);
    assert_eq!(idx, [5, 4, 0, 1]);
    // Softmax over a +inf logit is NaN everywhere: experts still distinct, every weight NaN.
    let (idx, w) = run(route(1, 1, 3, Score::Softmax), &[0.0, inf, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &zero);
    assert_eq!(idx, [0, 1, 2]);
    assert!(w.iter().all(|x| x.is_nan()), "{w:?}");
}

/// Expert ids the router never writes read the same way everywhere (`cpu::expert_index`):
/// truncated toward zero and clamped into range, NaN to 0 — dispatch places every pair.
#[test]
fn out_of_range_expert_ids_are_clamped() {
    use dsv3c_runtime::cpu::expert_index;
    let ids = [-1.0f32, -7.5, f32::NAN, f32::NEG_INFINITY, 0.9, 2.7, 4.0, 9.0, f32::INFINITY, 1e9];
    let read: Vec<usize> = ids.iter().map(|&v| expert_index(v, 4)).collect();
    assert_eq!(read, [0, 0, 0, 0, 0, 2, 3, 3, 3, 3]);
    // The routing statistics count them the same way (5 tokens of top-2; scores uniform).
    let mut stats = vec![ids.to_vec(), vec![0.25; 20], vec![0.0; 6]];
    run_op(&Op::ExpertStats { tokens: 5, experts: 4, top_k: 2 }, &mut stats);
    assert_eq!(stats[2][..4], [5.0, 0.0, 1.0, 4.0], "counts");
    assert!((stats[2][4] - 5.0).abs() < 1e-6 && stats[2][5] == 5.0, "uniform scores: entropy 1 per token");
    let (tokens, experts, top_k, d) = (5, 4, 2, 1);
    let x: Vec<f32> = (0..tokens).map(|t| t as f32).collect();
    let mut v = vec![ids.to_vec(), x, vec![-1.0; 10], vec![-1.0; 10], vec![-1.0; 5], vec![-1.0; 10]];
    run_op(&Op::Dispatch { tokens, experts, top_k, d }, &mut v);
    assert_eq!(v[4], [0.0, 5.0, 5.0, 6.0, 10.0], "offsets");
    let mut perm = v[2].clone();
    perm.sort_by(f32::total_cmp);
    assert_eq!(perm, (0..10).map(|i| i as f32).collect::<Vec<_>>(), "every pair placed once");
}

/// Attention by its definition, in f64, one (sequence, query, head) at a time: the output, the
/// log-sum-exp, and the gradients of `Σ dO ⊙ O` with respect to q, kvb and kva.
struct AttentionByDefinition {
    o: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dkvb: Vec<f32>,
    dkva: Vec<f32>,
}

// Indices into several arrays at once, as the definition reads.
#[allow(clippy::needless_range_loop)]
fn attention_by_definition(a: &Attn, q: &[f32], kvb: &[f32], kva: &[f32], d_o: &[f32]) -> AttentionByDefinition {
    let (h_n, t_n, dqk, dkv) = (a.heads, a.seq, a.nope + a.rope, a.nope + a.v);
    let sees = |i: usize, j: usize| j <= i && a.window.is_none_or(|(w, sinks)| i - j < w || j < sinks);
    let mut out = AttentionByDefinition {
        o: vec![0.0; q.len() / dqk * a.v],
        lse: vec![0.0; q.len() / dqk],
        dq: vec![0.0; q.len()],
        dkvb: vec![0.0; kvb.len()],
        dkva: vec![0.0; kva.len()],
    };
    for b in 0..a.batch {
        for i in 0..t_n {
            for h in 0..h_n {
                let row = (b * t_n + i) * h_n + h;
                let qi = &q[row * dqk..(row + 1) * dqk];
                let key = |j: usize| {
                    let kv = &kvb[((b * t_n + j) * h_n + h) * dkv..][..dkv];
                    let kpe = &kva[(b * t_n + j) * a.kpe_stride + a.kpe_offset..][..a.rope];
                    (kv, kpe)
                };
                let keys: Vec<usize> = (0..t_n).filter(|&j| sees(i, j)).collect();
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let (kv, kpe) = key(j);
                        let d: f64 = (0..a.nope).map(|c| qi[c] as f64 * kv[c] as f64).sum::<f64>()
                            + (0..a.rope).map(|c| qi[a.nope + c] as f64 * kpe[c] as f64).sum::<f64>();
                        a.scale as f64 * d
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - max).exp() / sum).collect();
                out.lse[row] = (max + sum.ln()) as f32;
                let doi = &d_o[row * a.v..(row + 1) * a.v];
                let mut oi = vec![0.0f64; a.v];
                for (&j, &pj) in keys.iter().zip(&p) {
                    for c in 0..a.v {
                        oi[c] += pj * key(j).0[a.nope + c] as f64;
                    }
                }
                for c in 0..a.v {
                    out.o[row * a.v + c] = oi[c] as f32;
                }
                let dd: f64 = (0..a.v).map(|c| doi[c] as f64 * oi[c]).sum();
                for (&j, &pj) in keys.iter().zip(&p) {
                    let (kv, kpe) = key(j);
                    let dp: f64 = (0..a.v).map(|c| doi[c] as f64 * kv[a.nope + c] as f64).sum();
                    let ds = a.scale as f64 * pj * (dp - dd);
                    let kv_at = ((b * t_n + j) * h_n + h) * dkv;
                    let kpe_at = (b * t_n + j) * a.kpe_stride + a.kpe_offset;
                    for c in 0..a.nope {
                        out.dq[row * dqk + c] += (ds * kv[c] as f64) as f32;
                        out.dkvb[kv_at + c] += (ds * qi[c] as f64) as f32;
                    }
                    for c in 0..a.rope {
                        out.dq[row * dqk + a.nope + c] += (ds * kpe[c] as f64) as f32;
                        out.dkva[kpe_at + c] += (ds * qi[a.nope + c] as f64) as f32;
                    }
                    for c in 0..a.v {
                        out.dkvb[kv_at + a.nope + c] += (pj * doi[c] as f64) as f32;
                    }
                }
            }
        }
    }
    out
}

/// The tiled attention against its definition on sequences of several query tiles, causal and
/// sliding-window (with and without sinks, windows narrower and wider than a tile); the backward
/// adds to what its outputs held.
#[test]
fn attention_tiles_follow_the_definition() {
    let (nope, rope, v, kvr) = (5, 3, 4, 2);
    for (seed, (batch, seq, heads, window)) in [
        (2, 150, 2, None),
        (1, 64, 3, None),
        (1, 129, 1, Some((40, 3))),
        (2, 97, 2, Some((64, 0))),
        (1, 70, 2, Some((1, 2))),
        (1, 80, 1, Some((200, 0))),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = SplitMix64::new(seed as u64);
        let a = Attn { batch, seq, heads, nope, rope, v, kpe_stride: kvr + rope, kpe_offset: kvr, scale: 0.4, window };
        let n = batch * seq;
        let q = randn(&mut r, n * heads * (nope + rope), 1.0);
        let kvb = randn(&mut r, n * heads * (nope + v), 1.0);
        let kva = randn(&mut r, n * (kvr + rope), 1.0);
        let d_o = randn(&mut r, n * heads * v, 1.0);
        let want = attention_by_definition(&a, &q, &kvb, &kva, &d_o);
        let mut f = vec![q.clone(), kvb.clone(), kva.clone(), vec![7.0; n * heads * v], vec![7.0; n * heads]];
        run_op(&Op::Attention(a), &mut f);
        let tol = 1e-5;
        assert!(rel_l2(&f[3], &want.o) < tol, "{a:?}: o {:.2e}", rel_l2(&f[3], &want.o));
        assert!(rel_l2(&f[4], &want.lse) < tol, "{a:?}: lse {:.2e}", rel_l2(&f[4], &want.lse));
        let held = |len: usize| randn(&mut SplitMix64::new(99), len, 1.0);
        let (dq0, dkvb0, dkva0) = (held(q.len()), held(kvb.len()), held(kva.len()));
        let mut g = vec![q, kvb, kva, f[3].clone(), f[4].clone(), d_o, dq0.clone(), dkvb0.clone(), dkva0.clone()];
        run_op(&Op::AttentionBwd(a), &mut g);
        for (name, got, before, want) in
            [("dq", &g[6], dq0, &want.dq), ("dkvb", &g[7], dkvb0, &want.dkvb), ("dkva", &g[8], dkva0, &want.dkva)]
        {
            let added: Vec<f32> = got.iter().zip(&before).map(|(g, b)| g - b).collect();
            assert!(rel_l2(&added, want) < 1e-4, "{a:?}: {name} {:.2e}", rel_l2(&added, want));
        }
    }
}
