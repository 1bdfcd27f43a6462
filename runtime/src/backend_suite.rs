//! The backend test suite, written once: `backend_suite!(name, make)` expands to the tests every
//! backend must pass, for a backend built by `make(&Program)` — slices of every dtype round-trip
//! and are checked, launches are checked (arity, bounds, alignment, dtypes, a written argument
//! overlapping another), and every op of a representative set, launched over the backend's arenas
//! in the reference storage and again with its real-valued arguments in bf16, matches the CPU
//! reference (`cpu::run_op` on the stored values) within the kernel tolerances. The CPU backend runs it (`runtime/tests/backend.rs`); the next
//! backend inherits it with one line.

use crate::dtype::{self, DType};
use crate::op::{
    Attn, Balance, Cache, Heads, LatentAttn, Op, OptimizerKind, Quant, RopeFreqs, Route, Scaling, Score, Update,
};
use crate::program::{Io, Program, Slice};

/// A Program with no launches and arenas of the given sizes (f32 elements of the parameter and
/// optimizer arenas, bytes of the activation arena): what a backend is built for when a test
/// launches ops by hand.
pub fn arenas(param_len: usize, optim_len: usize, act_bytes: usize) -> Program {
    let none = Slice::act(0, 0, DType::F32);
    Program {
        name: "suite".into(),
        batch: 1,
        seq: 1,
        params: Vec::new(),
        param_len,
        buffers: Vec::new(),
        act_bytes,
        optim_len,
        weight_bytes: 0,
        kernels: Vec::new(),
        start: Vec::new(),
        forward: Vec::new(),
        backward: Vec::new(),
        update: Vec::new(),
        io: Io {
            tokens: none,
            loss: none,
            main_loss: none,
            mtp_losses: Vec::new(),
            expert_choices: Vec::new(),
            expert_scores: Vec::new(),
            scalars: none,
            grad_norm: none,
            expert_stats: Vec::new(),
        },
        decode: None,
        rank: None,
    }
}

/// A representative op of every family, at small sizes, with the tolerance its outputs are held to.
pub fn ops() -> Vec<(Op, f64)> {
    use crate::tolerance::{KERNEL_REL_L2_BF16 as BF16, KERNEL_REL_L2_F32 as F32};
    let attn = Attn {
        batch: 2,
        seq: 9,
        heads: 2,
        nope: 4,
        rope: 2,
        v: 4,
        kpe_stride: 6,
        kpe_offset: 4,
        scale: 0.4,
        window: None,
    };
    let route = Route {
        tokens: 30,
        experts: 8,
        groups: 4,
        top_groups: 2,
        top_k: 2,
        score: Score::Sigmoid,
        normalize: true,
        scale: 2.5,
    };
    let balance = Balance { batch: 2, seq: 15, experts: 8, top_k: 2, alpha: 0.01, score: Score::Sigmoid };
    let gemm = |quant| Op::Gemm {
        m: 20,
        n: 24,
        k: 40,
        lda: 40,
        ldb: 40,
        ldc: 24,
        ta: false,
        tb: true,
        accumulate: false,
        quant,
    };
    let freqs = RopeFreqs { theta: 10000.0, yarn: None, attention_factor: 1.0 };
    let cache = Cache { batch: 2, len: 11, kvr: 16, rope: 4, fp8_tile: None };
    let fp8 = Cache { fp8_tile: Some(128), ..cache };
    let latent = LatentAttn { cache, per_seq: 3, heads: 4, nope: 6, scale: 0.3, window: None };
    let heads = Heads { tokens: 6, heads: 3, nope: 6, rope: 4, v: 5, kvr: 16 };
    let update = |kind| Update { kind, n: 3000, decay_end: 1000, embedding_end: 1500, bf16_moments: false };
    vec![
        (Op::Zero { n: 300 }, F32),
        (Op::Cast { n: 300 }, F32),
        (Op::AddScaled { n: 300, alpha: -0.5 }, F32),
        (Op::Add { n: 300 }, F32),
        (gemm(Quant::None), F32),
        (gemm(Quant::Bf16), BF16),
        (gemm(Quant::Fp8Stored { tile: 128, b_blocks: true }), BF16),
        (Op::Quantize { mats: 2, rows: 30, cols: 260, tile: 128, scaling: Scaling::RowTiles }, 0.0),
        (Op::Quantize { mats: 1, rows: 150, cols: 40, tile: 128, scaling: Scaling::ColTiles }, 0.0),
        (Op::Quantize { mats: 2, rows: 150, cols: 260, tile: 128, scaling: Scaling::Blocks }, 0.0),
        (Op::Dequantize { rows: 30, cols: 260, tile: 128, scaling: Scaling::RowTiles }, 0.0),
        (Op::Dequantize { rows: 150, cols: 40, tile: 128, scaling: Scaling::ColTiles }, 0.0),
        (Op::Dequantize { rows: 150, cols: 260, tile: 128, scaling: Scaling::Blocks }, 0.0),
        (Op::Embedding { n: 12, vocab: 30, d: 8 }, F32),
        (Op::EmbeddingBwd { n: 12, vocab: 30, d: 8 }, F32),
        (Op::ShiftTokens { batch: 2, seq: 7, shift: 1 }, F32),
        (Op::RmsNorm { rows: 10, d: 16, in_stride: 20, eps: 1e-6 }, F32),
        (Op::RmsNormBwd { rows: 10, d: 16, in_stride: 20 }, F32),
        (Op::Dyt { rows: 10, d: 16, in_stride: 16 }, F32),
        (Op::DytBwd { rows: 10, d: 16, in_stride: 16 }, F32),
        (Op::Attention(attn), F32),
        (Op::AttentionBwd(attn), F32),
        (Op::Attention(Attn { window: Some((3, 1)), ..attn }), F32),
        (Op::SwiGlu { n: 300 }, F32),
        (Op::SwiGluBwd { n: 300 }, F32),
        (Op::Router(route), F32),
        (Op::RouterBwd(route), F32),
        (Op::Dispatch { tokens: 30, experts: 8, top_k: 2, d: 8 }, F32),
        (Op::DispatchBwd { tokens: 30, top_k: 2, d: 8 }, F32),
        (Op::Combine { tokens: 30, top_k: 2, d: 8 }, F32),
        (Op::CombineBwd { tokens: 30, top_k: 2, d: 8 }, F32),
        (Op::CrossEntropy { batch: 2, seq: 6, vocab: 20, shift: 1, grad_scale: 0.5 }, F32),
        (Op::BalanceLoss(balance), F32),
        (Op::BalanceLossBwd { balance, grad_scale: 0.5 }, F32),
        (Op::ExpertStats { tokens: 30, experts: 8, top_k: 2 }, F32),
        (Op::BiasUpdate { experts: 8, gamma: 1e-3 }, F32),
        (Op::GradNorm { n: 3000 }, F32),
        (Op::SumSquares { n: 40000 }, F32),
        (Op::SumParts { parts: 1500, root: false }, F32),
        (Op::SumParts { parts: 3, root: true }, F32),
        (Op::Optimizer(update(OptimizerKind::AdamW)), F32),
        (Op::Optimizer(update(OptimizerKind::Lion)), F32),
        // bf16 moments: stored in bf16 where the run stores real values so.
        (Op::Optimizer(Update { bf16_moments: true, ..update(OptimizerKind::AdamW) }), F32),
        (
            Op::RopeAt { tokens: 10, per_seq: 2, heads: 2, row_stride: 20, head_stride: 8, offset: 4, dim: 4, freqs },
            F32,
        ),
        (Op::CacheWrite { cache, per_seq: 3, kva_stride: 22 }, F32),
        (Op::CacheWrite { cache: fp8, per_seq: 3, kva_stride: 22 }, F32),
        (Op::LatentAttention(latent), F32),
        (Op::LatentAttention(LatentAttn { window: Some((3, 1)), ..latent }), F32),
        (Op::LatentAttention(LatentAttn { cache: fp8, ..latent }), F32),
        (Op::AbsorbQuery(heads), F32),
        (Op::AbsorbOutput(heads), F32),
    ]
}

/// `len` f32s of the activation arena from element `at`.
pub fn act(at: usize, len: usize) -> Slice {
    Slice::f32(crate::Space::Act, at, len)
}

/// The storage of each argument of `op` when its real values go in bf16 (`bf16`) or in the
/// reference storage: what each argument asks for (`ArgSig::storage`, the plan's rule).
pub fn storage(op: &Op, bf16: bool) -> Vec<DType> {
    let act = if bf16 { DType::Bf16 } else { DType::F32 };
    op.signature().iter().map(|a| a.storage(act)).collect()
}

/// Lays `args` out end to end in the activation arena (64-byte aligned) in the given dtypes;
/// returns the slices and the arena's bytes.
pub fn lay_out(args: &[Vec<f32>], dtypes: &[DType]) -> (Vec<Slice>, usize) {
    let mut at = 0;
    let slices = args
        .iter()
        .zip(dtypes)
        .map(|(a, &d)| {
            let s = Slice::act(at, a.len(), d);
            at += s.bytes().div_ceil(64) * 64;
            s
        })
        .collect();
    (slices, at)
}

/// The values a reader sees after `v` is stored as `d`.
pub fn stored(d: DType, v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| dtype::stored(d, x)).collect()
}

/// The kernel of `op` built for exactly the dtypes of `args` (no device code: a GPU backend writes
/// it with its emitter).
pub fn kernel(op: &Op, args: &[Slice]) -> crate::program::Kernel {
    crate::program::Kernel::new(op.clone(), args.iter().map(|s| s.dtype).collect())
}

/// Launches `op` over `args` on `b`, as the kernel built for the args' dtypes.
pub fn launch(
    b: &mut impl crate::program::Backend,
    op: &Op,
    args: &[Slice],
) -> Result<(), crate::program::BackendError> {
    b.launch(&kernel(op, args), args)
}

/// The backend suite for the backend `make(&Program)` builds, as a test module `name`. `make`
/// returns `None` where the backend cannot run here (no GPU): each test then says it is skipped.
#[macro_export]
macro_rules! backend_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use $crate::backend_suite::{act, arenas, launch, lay_out, ops, storage, stored};
            use $crate::dtype::DType;
            use $crate::op::Op;
            use $crate::program::{Backend, BackendError, Slice};

            fn make(p: &$crate::Program) -> Option<impl Backend> {
                let b = ($make)(p);
                if b.is_none() {
                    eprintln!("SKIPPED: backend `{}` cannot run on this machine", stringify!($name));
                }
                b
            }

            #[test]
            fn slices_round_trip_and_are_checked() {
                let p = arenas(8, 4, 32 * 4);
                let Some(mut b) = make(&p) else { return };
                let data: Vec<f32> = (0..10).map(|i| i as f32 - 3.5).collect();
                b.write(act(5, 10), &data).unwrap();
                assert_eq!(b.read(act(5, 10)).unwrap(), data);
                b.write(Slice::param(0, 8), &[2.0; 8]).unwrap();
                b.write(Slice::optim(1, 3), &[1.0; 3]).unwrap();
                b.zero(act(7, 2)).unwrap();
                assert_eq!(b.read(act(6, 4)).unwrap(), [-2.5, 0.0, 0.0, 0.5]);
                assert_eq!(b.read(Slice::param(0, 8)).unwrap(), [2.0; 8]);
                assert_eq!(b.read(Slice::optim(0, 4)).unwrap(), [0.0, 1.0, 1.0, 1.0]);
                let outside = act(30, 3);
                assert!(matches!(b.read(outside), Err(BackendError::Slice { .. })));
                assert!(matches!(b.write(outside, &[0.0; 3]), Err(BackendError::Slice { .. })));
                assert!(matches!(b.zero(Slice::grad(7, 2)), Err(BackendError::Slice { .. })));
                assert!(matches!(b.write(act(0, 4), &[0.0; 3]), Err(BackendError::Length { .. })));

                // bf16 rounds to nearest-even on store; i32 holds integers; neither disturbs its
                // neighbours (a bf16 slice at an odd element shares a word with one).
                let halves = Slice::act(64 + 2, 3, DType::Bf16);
                b.write(act(16, 2), &[7.0, 7.0]).unwrap();
                b.write(halves, &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.0]).unwrap();
                assert_eq!(b.read(halves).unwrap(), [1.0, 1.0 + 4.0 / 256.0, -2.0]);
                assert_eq!(b.read(Slice::act(64, 1, DType::Bf16)).unwrap(), [0.0]);
                let ids = Slice::act(80, 3, DType::I32);
                b.write(ids, &[3.0, 0.0, 70000.0]).unwrap();
                assert_eq!(b.read(ids).unwrap(), [3.0, 0.0, 70000.0]);
                // e4m3 is a byte an element: an odd offset is aligned; it saturates at ±448.
                let codes = Slice::act(97, 3, DType::E4m3);
                b.write(codes, &[1.0625, -1000.0, 0.1]).unwrap();
                assert_eq!(b.read(codes).unwrap(), [1.0, -448.0, 0.1015625]);
                assert_eq!(b.read(act(21, 1)).unwrap(), [0.0]);
                let odd = Slice::act(2, 1, DType::F32);
                assert!(matches!(b.read(odd), Err(BackendError::Misaligned { .. })));
                assert!(matches!(b.write(Slice::act(1, 1, DType::Bf16), &[0.0]), Err(BackendError::Misaligned { .. })));
            }

            #[test]
            fn launches_are_checked() {
                let p = arenas(0, 0, 64 * 4);
                let Some(mut b) = make(&p) else { return };
                let add = Op::Add { n: 8 };
                let (x, y, z) = (act(0, 8), act(8, 8), act(16, 8));
                launch(&mut b, &add, &[x, y, z]).unwrap();
                // A kernel runs only over the dtypes it was built for.
                let for_bf16 = $crate::program::Kernel::new(add.clone(), vec![DType::Bf16; 3]);
                assert!(matches!(b.launch(&for_bf16, &[x, y, z]), Err(BackendError::KernelDType { arg: 0, .. })));
                assert!(matches!(launch(&mut b, &add, &[x, y]), Err(BackendError::Arity { .. })));
                assert!(matches!(launch(&mut b, &add, &[x, y, act(60, 8)]), Err(BackendError::OutOfBounds { .. })));
                assert!(matches!(launch(&mut b, &add, &[x, y, act(4, 8)]), Err(BackendError::Overlap { .. })));
                assert!(matches!(
                    launch(&mut b, &add, &[x, y, Slice::act(66, 8, DType::F32)]),
                    Err(BackendError::Misaligned { .. })
                ));
                // Real values are not integers, and integers not real values.
                let ids = Slice::act(96, 8, DType::I32);
                assert!(matches!(launch(&mut b, &add, &[x, ids, z]), Err(BackendError::DType { arg: 1, .. })));
                let shift = Op::ShiftTokens { batch: 1, seq: 8, shift: 1 };
                assert!(matches!(launch(&mut b, &shift, &[x, ids]), Err(BackendError::DType { arg: 0, .. })));
                launch(&mut b, &shift, &[Slice::act(128, 8, DType::I32), ids]).unwrap();
                // A slice shorter than what the op touches is refused (a GPU kernel would run past it).
                assert!(matches!(launch(&mut b, &add, &[x, y, act(16, 7)]), Err(BackendError::Short { arg: 2, .. })));
                // Two outputs may not overlap either (RMSNorm's y and 1/rms).
                let norm = Op::RmsNorm { rows: 2, d: 4, in_stride: 4, eps: 1e-6 };
                let args = [x, act(8, 4), act(16, 8), act(20, 2)];
                assert!(matches!(launch(&mut b, &norm, &args), Err(BackendError::Overlap { .. })));
                // Statistics stay f32: 1/rms in bf16 is refused.
                let args = [x, act(8, 4), act(16, 8), Slice::act(24 * 4, 2, DType::Bf16)];
                assert!(matches!(launch(&mut b, &norm, &args), Err(BackendError::DType { arg: 3, .. })));
            }

            /// Every op over the backend's arenas against `run_op` on the values the slices hold.
            fn every_op(bf16: bool) {
                for (i, (op, tol)) in ops().into_iter().enumerate() {
                    let lens = op.signature().iter().map(|a| a.len).collect::<Vec<_>>();
                    let args = $crate::sample::args(&op, &lens, &mut $crate::sample::Rng::new(40 + i as u64));
                    let dtypes = storage(&op, bf16);
                    let (slices, bytes) = lay_out(&args, &dtypes);
                    let p = arenas(0, 0, bytes);
                    let Some(mut b) = make(&p) else { return };
                    for (s, a) in slices.iter().zip(&args) {
                        b.write(*s, a).unwrap();
                    }
                    launch(&mut b, &op, &slices).unwrap_or_else(|e| panic!("{}: {e}", op.family()));
                    let mut want: Vec<Vec<f32>> = args.iter().zip(&dtypes).map(|(a, &d)| stored(d, a)).collect();
                    $crate::cpu::run_op(&op, &mut want);
                    for (o, _) in op.writes() {
                        let got = b.read(slices[o]).unwrap();
                        let err = $crate::tolerance::rel_l2(&got, &stored(dtypes[o], &want[o]));
                        // Values rounded to bf16 on store may land one bf16 ulp apart.
                        let tol =
                            if dtypes[o] == DType::Bf16 { tol.max($crate::tolerance::KERNEL_REL_L2_BF16) } else { tol };
                        assert!(err <= tol, "{} output {o}: relative L2 {err:.2e} > {tol:.0e}", op.family());
                    }
                }
            }

            #[test]
            fn every_op_matches_the_reference() {
                every_op(false);
            }

            #[test]
            fn every_op_matches_the_reference_in_bf16_storage() {
                every_op(true);
            }
        }
    };
}
