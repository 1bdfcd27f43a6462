//! The kernel property suite: every op family's CUDA kernel, as `cuda::emit` writes it for random sizes
//! (tile multiples and not), compiled by NVRTC for sm_90a (the NVRTC gate's PyPI wheel) and run in the PTX
//! emulator with every overwritten output poisoned (0xFF bytes, a NaN), against the CPU reference
//! (`cpu::run_op`) on identical inputs, through the tolerance table, with a clean sanitizer. Arguments go
//! in as their storage dtype holds them (i32 integers; bf16 where a program or the bf16 family test
//! stores them so), and outputs are compared as stored. Accumulated
//! and in-place outputs start from the same random values on both sides, so an op that overwrites
//! instead of accumulating fails. Routing inputs have well-separated scores, so that a one-ulp difference
//! cannot pick another expert.
//!
//! Needs libnvrtc (`DSV3C_NVRTC`, as `scripts/test.sh` sets it after the NVRTC gate installed the
//! wheels): without it the suite says SKIPPED, unless `DSV3C_REQUIRE_NVRTC` is set (test.sh sets it
//! whenever the wheels are there, so CI, which always runs the gate, cannot skip it).

use std::collections::HashMap;
use std::sync::Mutex;

use dsv3c_codegen::cuda::{self, check};
use dsv3c_ptx::{Arg, Global, LaunchConfig, Module, Options};
use dsv3c_runtime::backend_suite::{storage, stored};
use dsv3c_runtime::cpu::run_op;
use dsv3c_runtime::dtype;
use dsv3c_runtime::op::{Attn, Balance, GroupedMode, Op, Quant, RopeFreqs, Route, Scaling, Score};
use dsv3c_runtime::program::Kernel;
use dsv3c_runtime::sample::{dispatched, expert_ids, routed, router_inputs, Rng};
use dsv3c_runtime::tolerance::{self, rel_l2};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Is NVRTC here? Outside CI its absence skips the suite (loudly); in CI it is a failure.
fn nvrtc() -> bool {
    match dsv3c_runtime::nvrtc::ensure_loaded() {
        Ok(()) => true,
        Err(e) if std::env::var_os("DSV3C_REQUIRE_NVRTC").is_some() => {
            panic!("the kernel suite needs NVRTC (DSV3C_REQUIRE_NVRTC is set): {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: kernel property suite ({e})");
            false
        }
    }
}

/// PTX of a kernel, compiled once per distinct source.
fn ptx(k: &cuda::CudaKernel) -> String {
    static CACHE: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = g.get_or_insert_with(HashMap::new);
    if let Some(p) = cache.get(&k.source) {
        return p.clone();
    }
    let p = dsv3c_runtime::nvrtc::compile(&k.stem, &k.source, "sm_90a").unwrap_or_else(|e| panic!("{e}"));
    cache.insert(k.source.clone(), p.clone());
    p
}

/// The arguments an op overwrites (the rest of its outputs accumulate or update in place).
fn overwritten(op: &Op) -> Vec<usize> {
    op.writes().into_iter().filter(|w| w.1 == dsv3c_runtime::op::Access::Write).map(|w| w.0).collect()
}

/// Runs `op` on the CPU and in the emulator from the same arguments (in the reference storage: f32,
/// i32 for integers) and compares every output.
fn check_op(op: &Op, args: Vec<Vec<f32>>, tol: f64) {
    check_kernel(&Kernel::reference(op.clone()), args, tol)
}

/// Runs a kernel (an op over its arguments' storage dtypes) on the CPU and in the emulator from the
/// same stored bytes and compares every output as stored.
fn check_kernel(kernel: &Kernel, args: Vec<Vec<f32>>, tol: f64) {
    let op = &kernel.op;
    let dt = &kernel.dtypes;
    // What each side reads: the arguments as their storage holds them.
    let args: Vec<Vec<f32>> = args.iter().zip(dt).map(|(a, &d)| stored(d, a)).collect();
    let fp = check::footprint(op);
    assert_eq!(args.len(), fp.len(), "{}: argument count", op.family());
    for (i, (a, n)) in args.iter().zip(&fp).enumerate() {
        assert!(a.len() >= *n, "{}: argument {i} has {} elements, the kernel touches {n}", op.family(), a.len());
    }
    let over = overwritten(op);
    let mut cpu = args.clone();
    for &i in &over {
        cpu[i].fill(f32::NAN);
    }
    run_op(op, &mut cpu);

    let k = cuda::emit_kernel(kernel).unwrap_or_else(|e| panic!("{e}"));
    let text = ptx(&k);
    let mut global = Global::new();
    let module = Module::load(&text, &mut global).unwrap_or_else(|e| panic!("{}: {e}", k.stem));
    let addrs: Vec<u64> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut bytes = vec![0xff; a.len() * dt[i].size()];
            if !over.contains(&i) {
                dtype::encode(dt[i], a, &mut bytes);
            }
            global.alloc_with(&k.args[i], &bytes)
        })
        .collect();
    let kargs: Vec<Arg> = addrs.iter().map(|&a| Arg::Ptr(a)).collect();
    for e in &k.entries {
        let cfg = LaunchConfig {
            grid: [e.grid[0] as u32, e.grid[1] as u32, e.grid[2] as u32],
            block: [e.block, 1, 1],
            dynamic_smem: e.dynamic_smem,
        };
        let rep = module
            .launch(&e.name, &cfg, &kargs, &global, &Options::default())
            .unwrap_or_else(|err| panic!("{}::{}: {err}", k.stem, e.name));
        let findings: Vec<String> = rep.findings.iter().map(|f| f.to_string()).collect();
        assert!(findings.is_empty(), "{}::{} sanitizer:\n{}", k.stem, e.name, findings.join("\n"));
    }
    for &o in &op.outputs() {
        let bytes = global.read(addrs[o], (args[o].len() * dt[o].size()) as u64).unwrap();
        let mut gpu = vec![0.0f32; args[o].len()];
        dtype::decode(dt[o], &bytes, &mut gpu);
        let want = &stored(dt[o], &cpu[o]);
        let mismatch = gpu.iter().zip(want).position(|(g, c)| g.is_nan() != c.is_nan());
        if let Some(i) = mismatch {
            panic!("{} output {o} ({}): element {i}: emulator {} vs CPU {}", k.stem, k.args[o], gpu[i], want[i]);
        }
        let (g, c): (Vec<f32>, Vec<f32>) =
            gpu.iter().zip(want).filter(|(g, _)| !g.is_nan()).map(|(g, c)| (*g, *c)).unzip();
        let err = rel_l2(&g, &c);
        // A bf16-stored output rounds values that differ in their last f32 bits: one bf16 ulp apart.
        let tol = if dt[o] == dsv3c_runtime::DType::Bf16 { tol.max(tolerance::KERNEL_REL_L2_BF16) } else { tol };
        if err > tol {
            let worst = g
                .iter()
                .zip(&c)
                .enumerate()
                .max_by(|a, b| (a.1 .0 - a.1 .1).abs().total_cmp(&(b.1 .0 - b.1 .1).abs()))
                .map(|(i, (x, y))| format!("element {i}: emulator {x} vs CPU {y}"))
                .unwrap_or_default();
            panic!("{} output {o} ({}): relative L2 error {err:.3e} > {tol:.1e}; worst {worst}", k.stem, k.args[o]);
        }
    }
}

fn tol(q: Quant) -> f64 {
    match q {
        Quant::None => tolerance::KERNEL_REL_L2_F32,
        Quant::Bf16 => tolerance::KERNEL_REL_L2_BF16,
        Quant::Fp8 { .. } | Quant::Fp8Stored { .. } => tolerance::KERNEL_REL_L2_FP8,
    }
}

fn config(cases: u32) -> Config {
    Config { cases, rng_seed: RngSeed::Fixed(0x5eed), failure_persistence: None, ..Config::default() }
}

fn quant() -> impl Strategy<Value = Quant> {
    prop_oneof![
        Just(Quant::None),
        Just(Quant::Bf16),
        Just(Quant::Fp8 { tile: 128, b_blocks: true }),
        Just(Quant::Fp8 { tile: 128, b_blocks: false }),
        Just(Quant::Fp8Stored { tile: 128, b_blocks: true }),
        Just(Quant::Fp8Stored { tile: 128, b_blocks: false })
    ]
}

/// Every FP8 form of every grouped GEMM mode at one ragged shape (the property test draws a few).
#[test]
fn grouped_gemm_every_fp8_form() {
    if !nvrtc() {
        return;
    }
    let mut r = Rng::new(11);
    let (tokens, experts, top_k, n, k) = (40, 5, 2, 150, 200);
    let idx = expert_ids(tokens, experts, top_k, &mut r);
    let (_, _, offsets) = dispatched(tokens, experts, top_k, &idx);
    for quant in [
        Quant::Fp8 { tile: 128, b_blocks: true },
        Quant::Fp8 { tile: 128, b_blocks: false },
        Quant::Fp8Stored { tile: 128, b_blocks: true },
        Quant::Fp8Stored { tile: 128, b_blocks: false },
    ] {
        for mode in [GroupedMode::Forward, GroupedMode::DataGrad, GroupedMode::WeightGrad] {
            let op = Op::GroupedGemm { experts, rows: tokens * top_k, n, k, mode, quant };
            let mut args = gemm_args(&op, &mut r);
            args[0] = offsets.clone();
            check_op(&op, args, tol(quant));
        }
    }
}

/// Random arguments of `op` at its footprint; an FP8 operand's scales positive (as `Quantize`
/// writes them), spread over a few octaves.
fn gemm_args(op: &Op, r: &mut Rng) -> Vec<Vec<f32>> {
    op.signature()
        .iter()
        .map(|a| {
            let v = r.vec(a.len, 1.0);
            if a.name.ends_with("_scales") {
                v.iter().map(|x| 2f32.powf(3.0 * x) / 448.0).collect()
            } else if a.kind == dsv3c_runtime::signature::Kind::E4m3 {
                v.iter().map(|x| x * 448.0).collect()
            } else {
                v
            }
        })
        .collect()
}

fn attn_strategy() -> impl Strategy<Value = Attn> {
    (1..3usize, 1..80usize, 1..5usize, 1..4usize, 1..3usize, 1..4usize, any::<bool>(), 1..24usize, 0..3usize).prop_map(
        |(batch, seq, heads, nope8, rope4, v8, windowed, window, sinks)| {
            let (nope, rope, v) = (nope8 * 8, rope4 * 4, v8 * 8);
            Attn {
                batch,
                seq,
                heads,
                nope,
                rope,
                v,
                kpe_stride: 16 + rope,
                kpe_offset: 16,
                scale: 1.0 / ((nope + rope) as f32).sqrt(),
                window: windowed.then_some((window, sinks)),
            }
        },
    )
}

fn route_strategy() -> impl Strategy<Value = Route> {
    (
        1..70usize,
        prop_oneof![Just((8, 1)), Just((8, 4)), Just((16, 8)), Just((64, 8)), Just((48, 1))],
        1..4usize,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(tokens, (experts, groups), k, sigmoid, normalize)| {
            let top_groups = if groups > 1 { (groups / 2).max(1) } else { 1 };
            let per_group = experts / groups;
            let top_k = k.min(per_group * top_groups);
            Route {
                tokens,
                experts,
                groups,
                top_groups,
                top_k,
                score: if sigmoid { Score::Sigmoid } else { Score::Softmax },
                normalize,
                scale: 2.5,
            }
        })
}

proptest! {
    #![proptest_config(config(6))]

    #[test]
    fn elementwise(n in 1..5000usize, alpha in -2.0f32..2.0, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        check_op(&Op::Zero { n }, vec![r.vec(n, 1.0)], 0.0);
        // The weights' compute copy: exact into f32, rounded to nearest-even into bf16.
        check_op(&Op::Cast { n }, vec![r.vec(n, 1.0), r.vec(n, 1.0)], 0.0);
        check_kernel(&Kernel::new(Op::Cast { n }, vec![dsv3c_runtime::DType::F32, dsv3c_runtime::DType::Bf16]),
            vec![r.vec(n, 1.0), r.vec(n, 1.0)], 0.0);
        check_op(&Op::AddScaled { n, alpha }, vec![r.vec(n, 1.0), r.vec(n, 1.0)], tolerance::KERNEL_REL_L2_F32);
        check_op(&Op::Add { n }, vec![r.vec(n, 1.0), r.vec(n, 1.0), r.vec(n, 1.0)], tolerance::KERNEL_REL_L2_F32);
        check_op(&Op::SwiGlu { n }, vec![r.vec(n, 3.0), r.vec(n, 1.0), r.vec(n, 1.0)], tolerance::KERNEL_REL_L2_F32);
        check_op(&Op::SwiGluBwd { n }, (0..5).map(|_| r.vec(n, 2.0)).collect(), tolerance::KERNEL_REL_L2_F32);
    }

    #[test]
    fn gemm(m in 1..150usize, n in 1..150usize, k in 1..300usize, ta in any::<bool>(), tb in any::<bool>(),
            accumulate in any::<bool>(), q in quant(), pad in 0..5usize, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let lda = if ta { m } else { k } + pad;
        let ldb = if tb { k } else { n } + pad;
        let ldc = n + pad;
        let op = Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant: q };
        check_op(&op, gemm_args(&op, &mut r), tol(q));
    }

    #[test]
    fn quantize(mats in 1..4usize, rows in 1..300usize, cols in 1..300usize, scaling in 0..3usize,
                octaves in 0..40i32, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let scaling = [Scaling::RowTiles, Scaling::ColTiles, Scaling::Blocks][scaling];
        let op = Op::Quantize { mats, rows, cols, tile: 128, scaling };
        let fp = check::footprint(&op);
        // Values over many binades (some tiles below the 1e-4 amax floor), a few exact zeros.
        let x: Vec<f32> = r.vec(fp[0], 1.0).iter().map(|v| if v.abs() < 0.01 { 0.0 } else { v * 2f32.powi(octaves - 20) }).collect();
        // E4M3 codes and scales exactly as the CPU writes them: the same division and rounding.
        check_op(&op, vec![x, vec![0.0; fp[1]], vec![0.0; fp[2]]], 0.0);
    }

    #[test]
    fn grouped_gemm(experts in 1..9usize, tokens in 1..60usize, top_k in 1..3usize, n in 1..140usize,
                    k in 1..200usize, q in quant(), seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let top_k = top_k.min(experts);
        let rows = tokens * top_k;
        let idx = expert_ids(tokens, experts, top_k, &mut r);
        let (_, _, offsets) = dispatched(tokens, experts, top_k, &idx);
        for mode in [GroupedMode::Forward, GroupedMode::DataGrad, GroupedMode::WeightGrad] {
            let op = Op::GroupedGemm { experts, rows, n, k, mode, quant: q };
            let mut args = gemm_args(&op, &mut r);
            args[0] = offsets.clone();
            check_op(&op, args, tol(q));
        }
    }

    #[test]
    fn norms(rows in 1..70usize, d in 1..300usize, pad in 0..4usize, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let in_stride = d + pad;
        let t = tolerance::KERNEL_REL_L2_F32;
        let x = r.vec((rows - 1) * in_stride + d, 2.0);
        let w = r.vec(d, 1.0);
        let fwd = Op::RmsNorm { rows, d, in_stride, eps: 1e-6 };
        check_op(&fwd, vec![x.clone(), w.clone(), r.vec(rows * d, 1.0), r.vec(rows, 1.0)], t);
        let mut a = vec![x.clone(), w.clone(), vec![0.0; rows * d], vec![0.0; rows]];
        run_op(&fwd, &mut a);
        let bwd = Op::RmsNormBwd { rows, d, in_stride };
        check_op(&bwd, vec![x.clone(), w.clone(), a[3].clone(), r.vec(rows * d, 1.0), r.vec(x.len(), 1.0), r.vec(d, 1.0)], t);
        let (b, alpha) = (r.vec(d, 0.5), vec![0.7]);
        check_op(&Op::Dyt { rows, d, in_stride }, vec![x.clone(), w.clone(), b, alpha.clone(), r.vec(rows * d, 1.0)], t);
        let dyt_bwd = Op::DytBwd { rows, d, in_stride };
        check_op(&dyt_bwd, vec![x.clone(), w, alpha, r.vec(rows * d, 1.0), r.vec(x.len(), 1.0), r.vec(d, 1.0), r.vec(d, 1.0), vec![0.3]], t);
    }

    #[test]
    fn rope(tokens in 1..80usize, seq in 1..40usize, heads in 1..4usize, half in 1..9usize, yarn in any::<bool>(),
            inverse in any::<bool>(), seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let dim = 2 * half;
        let head_stride = dim + 8;
        let freqs = RopeFreqs { theta: 10000.0, yarn: yarn.then_some((40.0, 4096, 32.0, 1.0)), attention_factor: if yarn { 1.2 } else { 1.0 } };
        let op = Op::Rope { tokens, seq, heads, row_stride: heads * head_stride + 4, head_stride, offset: 8, dim, freqs, inverse };
        let fp = check::footprint(&op);
        check_op(&op, vec![r.vec(fp[0], 1.0)], tolerance::KERNEL_REL_L2_F32);
    }

    #[test]
    fn attention(a in attn_strategy(), seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let fwd = Op::Attention(a);
        let fp = check::footprint(&fwd);
        let (q, kvb, kva) = (r.vec(fp[0], 1.0), r.vec(fp[1], 1.0), r.vec(fp[2], 1.0));
        let t = tolerance::KERNEL_REL_L2_F32;
        check_op(&fwd, vec![q.clone(), kvb.clone(), kva.clone(), r.vec(fp[3], 1.0), r.vec(fp[4], 1.0)], t);
        let mut out = vec![q.clone(), kvb.clone(), kva.clone(), vec![0.0; fp[3]], vec![0.0; fp[4]]];
        run_op(&fwd, &mut out);
        let bwd = Op::AttentionBwd(a);
        let args = vec![q, kvb, kva, out[3].clone(), out[4].clone(), r.vec(fp[3], 1.0), r.vec(fp[0], 1.0), r.vec(fp[1], 1.0), r.vec(fp[2], 1.0)];
        check_op(&bwd, args, t);
    }

    #[test]
    fn router(rt in route_strategy(), seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let (logits, bias) = router_inputs(&rt, &mut r);
        let (scores, idx, _) = routed(&rt, &logits, &bias);
        let (te, tk) = (rt.tokens * rt.experts, rt.tokens * rt.top_k);
        check_op(&Op::Router(rt), vec![logits, bias, r.vec(te, 1.0), r.vec(tk, 1.0), r.vec(tk, 1.0)], tolerance::KERNEL_REL_L2_F32);
        let args = vec![scores, idx, r.vec(tk, 1.0), r.vec(te, 1.0), r.vec(te, 1.0)];
        check_op(&Op::RouterBwd(rt), args, tolerance::KERNEL_REL_L2_F32);
    }

    #[test]
    fn dispatch_combine(tokens in 1..90usize, experts in 1..20usize, top_k in 1..4usize, d in 1..130usize, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let top_k = top_k.min(experts);
        let n = tokens * top_k;
        let idx = expert_ids(tokens, experts, top_k, &mut r);
        let t = tolerance::KERNEL_REL_L2_F32;
        let disp = Op::Dispatch { tokens, experts, top_k, d };
        check_op(&disp, vec![idx.clone(), r.vec(tokens * d, 1.0), r.vec(n, 1.0), r.vec(n, 1.0), r.vec(experts + 1, 1.0), r.vec(n * d, 1.0)], t);
        let (perm, inv, _) = dispatched(tokens, experts, top_k, &idx);
        check_op(&Op::DispatchBwd { tokens, top_k, d }, vec![inv.clone(), r.vec(n * d, 1.0), r.vec(tokens * d, 1.0)], t);
        let weights = r.vec(n, 1.0);
        check_op(&Op::Combine { tokens, top_k, d }, vec![inv.clone(), weights.clone(), r.vec(n * d, 1.0), r.vec(tokens * d, 1.0)], t);
        let args = vec![perm, inv, weights, r.vec(n * d, 1.0), r.vec(tokens * d, 1.0), r.vec(n * d, 1.0), r.vec(n, 1.0)];
        check_op(&Op::CombineBwd { tokens, top_k, d }, args, t);
    }

    #[test]
    fn embedding_and_tokens(n in 1..200usize, vocab in 1..300usize, d in 1..100usize, batch in 1..4usize, seq in 1..50usize,
                            shift in 1..3usize, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let tokens: Vec<f32> = (0..n).map(|_| r.below(vocab) as f32).collect();
        let t = tolerance::KERNEL_REL_L2_F32;
        check_op(&Op::Embedding { n, vocab, d }, vec![tokens.clone(), r.vec(vocab * d, 1.0), r.vec(n * d, 1.0)], t);
        check_op(&Op::EmbeddingBwd { n, vocab, d }, vec![tokens, r.vec(n * d, 1.0), r.vec(vocab * d, 1.0)], t);
        let ids: Vec<f32> = (0..batch * seq).map(|_| r.below(vocab) as f32).collect();
        check_op(&Op::ShiftTokens { batch, seq, shift }, vec![ids, r.vec(batch * seq, 1.0)], 0.0);
    }

    #[test]
    fn losses(batch in 1..3usize, seq in 2..40usize, vocab in 2..700usize, shift in 1..3usize, experts in 2..20usize,
              top_k in 1..4usize, sigmoid in any::<bool>(), seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let rows = batch * seq;
        let tokens: Vec<f32> = (0..rows).map(|_| r.below(vocab) as f32).collect();
        let ce = Op::CrossEntropy { batch, seq, vocab, shift, grad_scale: 0.5 };
        check_op(&ce, vec![r.vec(rows * vocab, 4.0), tokens, r.vec(1, 1.0)], tolerance::KERNEL_REL_L2_F32);
        let top_k = top_k.min(experts);
        let b = Balance { batch, seq, experts, top_k, alpha: 1e-2, score: if sigmoid { Score::Sigmoid } else { Score::Softmax } };
        let scores: Vec<f32> = (0..rows * experts).map(|_| r.f().abs()).collect();
        let idx = expert_ids(rows, experts, top_k, &mut r);
        check_op(&Op::BalanceLoss(b), vec![scores.clone(), idx.clone(), r.vec(1, 1.0)], tolerance::KERNEL_REL_L2_F32);
        let bwd = Op::BalanceLossBwd { balance: b, grad_scale: 0.5 };
        check_op(&bwd, vec![scores, idx, r.vec(rows * experts, 1.0)], tolerance::KERNEL_REL_L2_F32);
    }
}

/// What a diverging run can feed the router: NaN, ±inf, and finite values that saturate the score.
const NON_FINITE: [f32; 5] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30];

/// Expert ids the router never writes: negative, fractional, NaN, ±inf, at and past the last expert.
fn invalid_ids(experts: usize) -> [f32; 9] {
    [-1.0, -7.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, experts as f32, experts as f32 + 3.0, 1e9, 0.9]
}

/// Each token's slots name distinct experts, in range, from at most `top_groups` groups.
fn assert_routing_valid(rt: &Route, idx: &[f32]) {
    let per = rt.experts / rt.groups;
    for (t, slots) in idx.chunks(rt.top_k).enumerate() {
        let ids: Vec<usize> = slots.iter().map(|&i| i as usize).collect();
        assert!(
            slots.iter().all(|&i| i >= 0.0 && i.fract() == 0.0 && (i as usize) < rt.experts),
            "token {t}: {slots:?}"
        );
        let mut seen = ids.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), rt.top_k, "token {t}: repeated expert in {ids:?}");
        let mut groups: Vec<usize> = ids.iter().map(|i| i / per).collect();
        groups.sort_unstable();
        groups.dedup();
        assert!(groups.len() <= rt.top_groups, "token {t}: {ids:?} spans {} groups", groups.len());
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Regression (issue 12's known cases): non-finite logits and biases. Both backends rank NaN
    /// lowest (as -inf), keep -inf a candidate, and fill every slot with a distinct expert of the kept
    /// groups — before, unfilled slots became expert 0 with a non-zero weight and NaN made the
    /// cross-lane ranking order-dependent. NaN scores give NaN weights on both.
    #[test]
    fn router_non_finite(rt in route_strategy(), density in 1..4usize, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let (mut logits, mut bias) = router_inputs(&rt, &mut r);
        for l in logits.iter_mut() {
            if r.below(4) < density { *l = NON_FINITE[r.below(5)]; }
        }
        for b in bias.iter_mut() {
            if r.below(6) == 0 { *b = NON_FINITE[r.below(5)]; }
        }
        let (scores, idx, _) = routed(&rt, &logits, &bias);
        assert_routing_valid(&rt, &idx);
        let (te, tk) = (rt.tokens * rt.experts, rt.tokens * rt.top_k);
        check_op(&Op::Router(rt), vec![logits, bias, r.vec(te, 1.0), r.vec(tk, 1.0), r.vec(tk, 1.0)], tolerance::KERNEL_REL_L2_F32);
        let args = vec![scores, idx, r.vec(tk, 1.0), r.vec(te, 1.0), r.vec(te, 1.0)];
        check_op(&Op::RouterBwd(rt), args, tolerance::KERNEL_REL_L2_F32);
    }

    /// Regression: `router_bwd` with an expert named in several slots of a token (never written by
    /// the router, but a defined input): every slot's gradient adds, without the race the
    /// one-lane-per-slot update had.
    #[test]
    fn router_bwd_repeated_experts(rt in route_strategy(), seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let (logits, bias) = router_inputs(&rt, &mut r);
        let (scores, _, _) = routed(&rt, &logits, &bias);
        let (te, tk) = (rt.tokens * rt.experts, rt.tokens * rt.top_k);
        // Each token draws its slots from two experts, so any top_k > 1 repeats one.
        let idx: Vec<f32> = (0..tk).map(|_| [1usize, rt.experts - 1][r.below(2)] as f32).collect();
        check_op(&Op::RouterBwd(rt), vec![scores, idx, r.vec(tk, 1.0), r.vec(te, 1.0), r.vec(te, 1.0)], tolerance::KERNEL_REL_L2_F32);
    }

    /// Regression: expert ids the router never writes read as `expert_index` says on both backends —
    /// truncated, clamped to [0, experts), NaN to 0. Dispatch clamped a negative id to -1 on the GPU
    /// (its pair was never placed) and to 0 on the CPU; the counts behind the balance loss and the bias
    /// update dropped such ids on one backend and clamped them on the other.
    #[test]
    fn invalid_expert_ids(tokens in 1..60usize, experts in 1..20usize, top_k in 1..4usize, d in 1..40usize, seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        let mut r = Rng::new(seed);
        let top_k = top_k.min(experts);
        let n = tokens * top_k;
        let bad = invalid_ids(experts);
        let mut idx = expert_ids(tokens, experts, top_k, &mut r);
        for i in idx.iter_mut() {
            if r.below(3) == 0 { *i = bad[r.below(bad.len())]; }
        }
        let t = tolerance::KERNEL_REL_L2_F32;
        let disp = Op::Dispatch { tokens, experts, top_k, d };
        check_op(&disp, vec![idx.clone(), r.vec(tokens * d, 1.0), r.vec(n, 1.0), r.vec(n, 1.0), r.vec(experts + 1, 1.0), r.vec(n * d, 1.0)], t);
        let b = Balance { batch: 1, seq: tokens, experts, top_k, alpha: 1e-2, score: Score::Sigmoid };
        let scores: Vec<f32> = (0..tokens * experts).map(|_| r.f().abs()).collect();
        check_op(&Op::BalanceLoss(b), vec![scores.clone(), idx.clone(), r.vec(1, 1.0)], t);
        let bwd = Op::BalanceLossBwd { balance: b, grad_scale: 0.5 };
        check_op(&bwd, vec![scores, idx.clone(), r.vec(tokens * experts, 1.0)], t);
        let scores: Vec<f32> = (0..tokens * experts).map(|_| r.f().abs()).collect();
        let rt = Route { tokens, experts, groups: 1, top_groups: 1, top_k, score: Score::Sigmoid, normalize: true, scale: 1.0 };
        check_op(&Op::RouterBwd(rt), vec![scores.clone(), idx.clone(), r.vec(n, 1.0), r.vec(tokens * experts, 1.0), r.vec(tokens * experts, 1.0)], t);
        // The routing statistics behind the bias update count them the same way.
        check_op(&Op::ExpertStats { tokens, experts, top_k }, vec![idx, scores, vec![0.0; experts + 2]], t);
    }
}

/// The training step's own kernels — routing statistics, the balancing-bias update, the global gradient
/// norm, AdamW and Lion with f32 or bf16 moments over decayed, embedding and no-decay regions, clipping
/// and accumulation scaling active — against the CPU reference, at sizes from one expert to DeepSeek-V3's
/// 256 and from one gradient chunk to several with a ragged tail.
#[test]
fn training_step_kernels() {
    use dsv3c_runtime::op::{OptimizerKind, Update, GRAD_NORM_CHUNK};
    if !nvrtc() {
        return;
    }
    let mut ops = Vec::new();
    for (tokens, experts, top_k) in [(37, 8, 2), (300, 64, 6), (5, 256, 8), (1, 3, 1), (64, 1, 1)] {
        ops.push(Op::ExpertStats { tokens, experts, top_k });
        ops.push(Op::BiasUpdate { experts, gamma: 1e-3 });
    }
    for n in [1, 1000, 3 * GRAD_NORM_CHUNK + 77] {
        ops.push(Op::GradNorm { n });
        // A parallel job's norm in two halves: sums of squares by chunk, and their (root of the) sum.
        ops.push(Op::SumSquares { n });
        ops.push(Op::SumParts { parts: n.div_ceil(GRAD_NORM_CHUNK), root: n % 2 == 1 });
    }
    for kind in [OptimizerKind::AdamW, OptimizerKind::Lion] {
        for bf16_moments in [false, true] {
            ops.push(Op::Optimizer(Update { kind, n: 5000, decay_end: 2000, embedding_end: 3100, bf16_moments }));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        let args = dsv3c_runtime::sample::args(op, &check::footprint(op), &mut Rng::new(90 + i as u64));
        check_op(op, args.clone(), 1e-6);
        // The step guard closed — a NaN or infinite norm, a norm over the limit, the host's
        // "never" — changes nothing, as on the CPU (which `a_guarded_step_changes_nothing` checks).
        if matches!(op, Op::Optimizer(_) | Op::BiasUpdate { .. }) {
            use dsv3c_runtime::op::scalars::{GRAD_SCALE, MAX_GRAD_NORM};
            let averaged = args[1][0] * args[0][GRAD_SCALE];
            for (norm, limit) in [
                (f32::NAN, f32::INFINITY),
                (f32::INFINITY, f32::INFINITY),
                (args[1][0], 0.5 * averaged),
                (args[1][0], -1.0),
            ] {
                let mut a = args.clone();
                a[1] = vec![norm];
                a[0][MAX_GRAD_NORM] = limit;
                check_op(op, a, 0.0);
            }
        }
    }
}

/// The FP8 and bf16 GEMMs of 1b's training step at their real shapes: two blocks of each (the first and
/// the last, which holds the ragged edges) in the emulator, against the CPU reference on the tiles those
/// blocks compute: a sub-GEMM over the same rows and columns of the operands as the kernel reads them
/// (for FP8, the E4M3 values times their scales — 1 x 128 tiles and 128 x 128 blocks start at multiples
/// of 128, so the block's slice of them is exactly what it multiplies).
#[test]
fn gemms_at_1b_shapes_on_sampled_blocks() {
    use dsv3c_runtime::numerics::dequantize;
    if !nvrtc() {
        return;
    }
    let spec = dsv3c_spec::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/1b.yaml"))).unwrap();
    let program = dsv3c_codegen::compile(&spec, 1, 4096).unwrap();
    let mut kernels: Vec<Kernel> = Vec::new();
    let shape = |o: &Op| match *o {
        Op::Gemm { m, n, k, ta, tb, .. } => (m, n, k, ta, tb),
        _ => (0, 0, 0, false, false),
    };
    for k in &program.kernels {
        if let Op::Gemm { m, n, k: kk, quant: Quant::Fp8Stored { .. }, .. } = k.op {
            let fits = m * kk <= 1 << 24 && n * kk <= 1 << 24 && m * n <= 1 << 24;
            if fits && !kernels.iter().any(|o| shape(&o.op) == shape(&k.op)) {
                kernels.push(k.clone());
            }
        }
    }
    assert!(kernels.len() >= 3, "1b has FP8 GEMMs: {}", kernels.len());
    kernels.truncate(4);
    let bf16: Vec<Kernel> = kernels
        .iter()
        .take(2)
        .map(|o| match o.op.clone() {
            Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, .. } => {
                Kernel::reference(Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant: Quant::Bf16 })
            }
            _ => unreachable!(),
        })
        .collect();
    kernels.extend(bf16);
    let mut r = Rng::new(1);
    for kernel in &kernels {
        let op = &kernel.op;
        let Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant } = *op else { unreachable!() };
        let kern = cuda::emit_kernel(kernel).unwrap();
        let e = &kern.entries[0];
        // The tensor-core GEMM's tile (gemm_mma.cuh): block (x, y) computes C[64x, 64x+64) x [128y, 128y+128).
        let (bm, bn) = (64, 128);
        assert_eq!((e.grid[0] as usize, e.grid[1] as usize), (m.div_ceil(bm), n.div_ceil(bn)), "{}: grid", kern.stem);
        let fp = check::footprint(op);
        let args: Vec<Vec<f32>> =
            gemm_args(op, &mut r).iter().zip(&kernel.dtypes).map(|(a, &d)| stored(d, a)).collect();
        let c = args.len() - 1;
        let mut global = Global::new();
        let module = Module::load(&ptx(&kern), &mut global).unwrap();
        let ptrs: Vec<Arg> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let d = kernel.dtypes[i];
                let mut bytes = vec![0xff; a.len() * d.size()];
                if i != c || accumulate {
                    dtype::encode(d, a, &mut bytes);
                }
                Arg::Ptr(global.alloc_with(&kern.args[i], &bytes))
            })
            .collect();
        let (gx, gy) = (e.grid[0], e.grid[1]);
        let last = gx * gy - 1;
        let cfg =
            LaunchConfig { grid: [gx as u32, gy as u32, 1], block: [e.block, 1, 1], dynamic_smem: e.dynamic_smem };
        let opts = Options { only_blocks: Some(vec![0, last]), ..Options::default() };
        let rep = module.launch(&e.name, &cfg, &ptrs, &global, &opts).unwrap();
        assert!(rep.clean(), "{}: {:?}", kern.stem, rep.findings.first().map(|f| f.to_string()));
        let Arg::Ptr(pc) = ptrs[c] else { unreachable!() };
        let mut c_gpu = vec![0.0f32; fp[c]];
        dtype::decode(
            kernel.dtypes[c],
            &global.read(pc, (fp[c] * kernel.dtypes[c].size()) as u64).unwrap(),
            &mut c_gpu,
        );
        // The operands as the reference multiplies them: FP8 ones dequantized, dense at their widths.
        let (ra, ca) = if ta { (k, m) } else { (m, k) };
        let (rb, cb) = if tb { (n, k) } else { (k, n) };
        let (a, b, lda, ldb, sub_quant) = match quant {
            Quant::Fp8Stored { tile, b_blocks } => (
                dequantize(&args[0], &args[1], ra, ca, lda, tile, Scaling::operand(!ta, false)),
                dequantize(&args[2], &args[3], rb, cb, ldb, tile, Scaling::operand(tb, b_blocks)),
                ca,
                cb,
                Quant::None,
            ),
            q => (args[0].clone(), args[1].clone(), lda, ldb, q),
        };
        for blk in [0, last] {
            let (m0, n0) = ((blk % gx) as usize * bm, (blk / gx) as usize * bn);
            let (tm, tn) = (bm.min(m - m0), bn.min(n - n0));
            let sub = Op::Gemm { m: tm, n: tn, k, lda, ldb, ldc: tn, ta, tb, accumulate, quant: sub_quant };
            let sfp = check::footprint(&sub);
            let a_off = if ta { m0 } else { m0 * lda };
            let b_off = if tb { n0 * ldb } else { n0 };
            let mut c_sub = vec![0.0f32; tm * tn];
            for i in 0..tm {
                for j in 0..tn {
                    c_sub[i * tn + j] = args[c][(m0 + i) * ldc + n0 + j];
                }
            }
            let mut sargs = vec![a[a_off..a_off + sfp[0]].to_vec(), b[b_off..b_off + sfp[1]].to_vec(), c_sub];
            run_op(&sub, &mut sargs);
            // The FP8 GEMM multiplies the dequantized operands as they are, and rounds an overwritten
            // output to bf16 (the bf16 sub-GEMM rounds its own).
            if matches!(quant, Quant::Fp8Stored { .. }) && !accumulate {
                sargs[2] = stored(dsv3c_runtime::DType::Bf16, &sargs[2]);
            }
            let tile: Vec<f32> = (0..tm * tn).map(|x| c_gpu[(m0 + x / tn) * ldc + n0 + x % tn]).collect();
            assert!(tile.iter().all(|v| v.is_finite()), "{} block {blk}: unwritten or non-finite output", kern.stem);
            let err = rel_l2(&tile, &sargs[2]);
            assert!(
                err <= tol(quant),
                "{} block {blk} ({tm}x{tn} at {m0},{n0}): relative L2 {err:.3e} > {:.1e}",
                kern.stem,
                tol(quant)
            );
        }
    }
}

/// Every kernel of `program` on valid random arguments (kernel `i` seeded `seed + i`), against the CPU
/// reference through the tolerance of its format, with a clean sanitizer.
fn check_every_kernel(program: &dsv3c_runtime::program::Program, seed: u64) {
    for (i, k) in program.kernels.iter().enumerate() {
        // The step's elementwise passes over the whole parameter arena (millions of elements) are the
        // kernels `training_step_kernels` runs at 5000 elements, but for the constant N: skipped here.
        if matches!(k.op, Op::GradNorm { n } | Op::Optimizer(dsv3c_runtime::op::Update { n, .. }) if n > 100_000) {
            continue;
        }
        let lens = check::footprint(&k.op);
        let args = dsv3c_runtime::sample::args(&k.op, &lens, &mut Rng::new(i as u64 + seed));
        let q = match k.op {
            Op::Gemm { quant, .. } | Op::GroupedGemm { quant, .. } => quant,
            _ => Quant::None,
        };
        check_kernel(k, args, tol(q));
    }
}

/// Every kernel of `tiny`'s and `swa-mla-small`'s programs (their exact ops at a short sequence, with the
/// vocabulary cut to 1000 so that the LM head stays small for the emulator), on valid random arguments,
/// against the CPU reference with a clean sanitizer.
#[test]
fn every_kernel_of_tiny_and_swa_mla_small() {
    if !nvrtc() {
        return;
    }
    for (name, batch, seq) in [("tiny", 2, 32), ("swa-mla-small", 1, 48)] {
        let path = format!("{}/../spec/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let mut spec = dsv3c_spec::load(std::path::Path::new(&path)).unwrap();
        spec.vocab_size = spec.vocab_size.min(1000);
        check_every_kernel(&dsv3c_codegen::compile(&spec, batch, seq).unwrap(), 7);
    }
}

/// A random small spec around `tiny`: sizes, MLA ranks (q LoRA or none) and head dims, the dense/MoE
/// split, expert groups with sigmoid or softmax routers and shared experts, RMSNorm or DynamicTanh, a
/// sliding window with sinks, MTP, and f32, bf16 or FP8 (128-wide tiles, dims to match) compute. `None` when the draw
/// breaks a spec rule (the caller draws again).
fn random_small_spec(base: &dsv3c_spec::Spec, r: &mut Rng, i: usize) -> Option<dsv3c_spec::Spec> {
    use dsv3c_spec::types::*;
    let pick = |r: &mut Rng, xs: &[u64]| xs[r.below(xs.len())];
    let mut s = base.clone();
    s.name = format!("random-{i}");
    s.vocab_size = 64 + r.below(400) as u64;
    s.d_model = pick(r, &[32, 48, 64]);
    s.n_layers = 2 + r.below(2) as u64;
    let m = &mut s.attention.mla;
    m.n_heads = 1 + r.below(4) as u64;
    m.q_lora_rank = pick(r, &[0, 16, 32]);
    m.kv_lora_rank = pick(r, &[16, 32]);
    m.qk_nope_head_dim = pick(r, &[8, 16]);
    m.qk_rope_head_dim = pick(r, &[4, 8]);
    m.v_head_dim = pick(r, &[16, 32]);
    if r.below(2) == 0 {
        s.attention.swa = Some(Swa { window: 3 + r.below(12) as u64, sink_tokens: r.below(3) as u64 });
        s.attention.pattern = vec![LayerAttention::Swa, LayerAttention::Mla];
    }
    if r.below(3) == 0 {
        s.norm = Norm::Dyt { alpha_init: 0.5 };
    }
    let dense_layers = r.below(s.n_layers as usize) as u64;
    s.dense = Some(Dense { n_layers: dense_layers.max(1), intermediate_size: pick(r, &[32, 64, 96]) });
    if let Some(moe) = s.moe.as_mut() {
        let (groups, per_group) = (pick(r, &[1, 2, 4]), pick(r, &[2, 3, 4]));
        moe.n_routed_experts = groups * per_group;
        moe.n_group = groups;
        moe.top_groups = 1 + r.below(groups as usize) as u64;
        moe.top_k = 1 + r.below((moe.top_groups * per_group) as usize) as u64;
        moe.n_shared_experts = r.below(3) as u64;
        moe.moe_intermediate_size = pick(r, &[16, 32, 48]);
        moe.score_func = if r.below(2) == 0 { ScoreFunc::Sigmoid } else { ScoreFunc::Softmax };
        moe.norm_topk_prob = r.below(2) == 0;
    }
    s.mtp = (r.below(2) == 0).then_some(Mtp { depth: 1, loss_weight: 0.3 });
    match r.below(3) {
        0 => {}
        1 => s.precision.compute = Dtype::Bf16,
        _ => {
            // FP8 as the CUDA kernels implement it: 128-wide tiles, so every GEMM's K a multiple of 128.
            s.precision.compute = Dtype::Bf16;
            s.precision.fp8 = Some(Fp8 { format: Fp8Format::E4m3, activation_tile: 128, weight_block: 128 });
            s.d_model = 128;
            let m = &mut s.attention.mla;
            (m.n_heads, m.v_head_dim, m.kv_lora_rank) = (4, 32, 128);
            m.q_lora_rank = if m.q_lora_rank == 0 { 0 } else { 128 };
            if let Some(d) = s.dense.as_mut() {
                d.intermediate_size = 128;
            }
            if let Some(moe) = s.moe.as_mut() {
                moe.moe_intermediate_size = 128;
            }
        }
    }
    dsv3c_spec::validate::validate(&s).is_empty().then_some(s)
}

/// Every kernel of random small specs (`random_small_spec`), at a short random shape, on valid random
/// arguments, against the CPU reference with a clean sanitizer.
#[test]
fn every_kernel_of_random_small_specs() {
    if !nvrtc() {
        return;
    }
    let path = format!("{}/../spec/tiny.yaml", env!("CARGO_MANIFEST_DIR"));
    let base = dsv3c_spec::load(std::path::Path::new(&path)).unwrap();
    let mut r = Rng::new(0x5eed_5bec);
    let (mut specs, mut draws) = (0, 0);
    while specs < 2 {
        draws += 1;
        assert!(draws < 1000, "no valid random spec in 1000 draws");
        let Some(spec) = random_small_spec(&base, &mut r, specs) else { continue };
        let (batch, seq) = (1 + r.below(2), 8 + r.below(17));
        eprintln!("random spec {specs} ({batch} x {seq}):\n{}", spec.to_yaml());
        let program = dsv3c_codegen::compile(&spec, batch, seq).unwrap_or_else(|e| panic!("{}: {e}", spec.to_yaml()));
        check_every_kernel(&program, 11);
        specs += 1;
    }
}

/// Every op family's kernel with its real-valued arguments stored as bf16 (accumulated ones and those
/// kept in f32 stay f32; integers i32: `backend_suite::storage`), from the same stored bytes as the CPU
/// reference: the kernels convert on load and round on store as the CPU backend does.
#[test]
fn every_family_in_bf16_storage() {
    if !nvrtc() {
        return;
    }
    for (i, (op, tol)) in dsv3c_runtime::backend_suite::ops().into_iter().enumerate() {
        let lens = check::footprint(&op);
        let args = dsv3c_runtime::sample::args(&op, &lens, &mut Rng::new(90 + i as u64));
        let dtypes = storage(&op, true);
        check_kernel(&Kernel::new(op, dtypes), args, tol);
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// The decode ops at random shapes: rotary embedding at positions, the cache append (f32 or FP8
    /// latent), absorbed attention over the cache (causal, or a window with sinks; the last
    /// sequence's new tokens may run past the cache's end), and the head-wise absorption products.
    #[test]
    fn decode_ops(batch in 1..4usize, len in 1..40usize, per_seq in 1..4usize, kvr in 1..200usize, half in 1..9usize,
                  heads in 1..7usize, nope in 1..12usize, v in 1..12usize, fp8 in any::<bool>(), window in 0..3usize,
                  seed in any::<u64>()) {
        if !nvrtc() { return Ok(()); }
        use dsv3c_runtime::op::{Cache, Heads, LatentAttn};
        let per_seq = per_seq.min(len);
        let rope = 2 * half;
        let cache = Cache { batch, len, kvr, rope, fp8_tile: fp8.then_some(128) };
        let n = batch * per_seq;
        let freqs = RopeFreqs { theta: 10000.0, yarn: None, attention_factor: 1.0 };
        let window = (window > 0).then(|| (window + 1, window - 1));
        let h = Heads { tokens: n, heads, nope, rope, v, kvr };
        let ops = [
            Op::RopeAt { tokens: n, per_seq, heads, row_stride: heads * (nope + rope), head_stride: nope + rope, offset: nope, dim: rope, freqs },
            Op::CacheWrite { cache, per_seq, kva_stride: kvr + rope + 1 },
            Op::LatentAttention(LatentAttn { cache, per_seq, heads, nope, scale: 0.3, window }),
            Op::AbsorbQuery(h),
            Op::AbsorbOutput(h),
        ];
        for (i, op) in ops.iter().enumerate() {
            let lens = check::footprint(op);
            let args = dsv3c_runtime::sample::args(op, &lens, &mut Rng::new(seed.wrapping_add(i as u64)));
            check_op(op, args, tolerance::KERNEL_REL_L2_F32);
        }
    }
}

/// Absorbed attention at DeepSeek-V3's latent sizes (kv_lora_rank 512, rope 64, FP8 and bf16
/// caches), fewer heads: the tiles fit shared memory and agree with the CPU.
#[test]
fn latent_attention_at_deepseek_v3_sizes() {
    if !nvrtc() {
        return;
    }
    use dsv3c_runtime::op::{Cache, LatentAttn};
    for fp8 in [false, true] {
        let cache = Cache { batch: 2, len: 21, kvr: 512, rope: 64, fp8_tile: fp8.then_some(128) };
        let op = Op::LatentAttention(LatentAttn { cache, per_seq: 2, heads: 16, nope: 128, scale: 0.07, window: None });
        let lens = check::footprint(&op);
        let args = dsv3c_runtime::sample::args(&op, &lens, &mut Rng::new(5));
        check_op(&op, args, tolerance::KERNEL_REL_L2_F32);
    }
}

/// Every kernel of `tiny`'s and `swa-mla-small`'s decode programs — the prefill (bf16 cache), the
/// one-token step (FP8 cache) and, for tiny, the MTP verify step and its draft — on valid random
/// arguments, against the CPU reference with a clean sanitizer.
#[test]
fn every_kernel_of_decode_programs() {
    if !nvrtc() {
        return;
    }
    use dsv3c_codegen::{compile_decode, DecodeShape};
    use dsv3c_spec::types::KvCacheDtype;
    for name in ["tiny", "swa-mla-small"] {
        let path = format!("{}/../spec/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let mut spec = dsv3c_spec::load(std::path::Path::new(&path)).unwrap();
        spec.vocab_size = spec.vocab_size.min(1000);
        let mtp = spec.mtp.is_some();
        let base = DecodeShape {
            batch: 2,
            per_seq: 5,
            cache_len: 24,
            cache: KvCacheDtype::Bf16,
            absorbed: false,
            draft: false,
            last_only: true,
        };
        let shapes = [
            base,
            DecodeShape { per_seq: 1, cache: KvCacheDtype::Fp8, absorbed: true, last_only: false, ..base },
            DecodeShape { per_seq: 2, absorbed: true, draft: mtp, last_only: false, ..base },
        ];
        for (i, shape) in shapes.into_iter().enumerate() {
            check_every_kernel(&compile_decode(&spec, shape).unwrap(), 20 + i as u64);
        }
    }
}
