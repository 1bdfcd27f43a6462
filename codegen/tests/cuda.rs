//! The CUDA emitters: snapshots of every family at small fixed shapes, determinism and naming over every
//! canonical spec, and the static checks (launch limits, footprints, unsupported shapes) failing when
//! they should.

use dsv3c_codegen::cuda::{self, check, EmitError};
use dsv3c_runtime::op::{Attn, Balance, GroupedMode, Op, Quant, RopeFreqs, Route, Scaling, Score};

const FP8_W: Quant = Quant::Fp8 { tile: 128, b_blocks: true };
const FP8_A: Quant = Quant::Fp8 { tile: 128, b_blocks: false };
const FP8S_W: Quant = Quant::Fp8Stored { tile: 128, b_blocks: true };
const FP8S_A: Quant = Quant::Fp8Stored { tile: 128, b_blocks: false };

fn attn(window: Option<(usize, usize)>) -> Attn {
    Attn { batch: 2, seq: 64, heads: 4, nope: 16, rope: 8, v: 16, kpe_stride: 40, kpe_offset: 32, scale: 0.2, window }
}

fn route(groups: usize, score: Score) -> Route {
    Route { tokens: 64, experts: 16, groups, top_groups: 2.min(groups), top_k: 4, score, normalize: true, scale: 2.5 }
}

const BALANCE: Balance = Balance { batch: 2, seq: 32, experts: 16, top_k: 4, alpha: 1e-3, score: Score::Sigmoid };

fn gemm(ta: bool, tb: bool, accumulate: bool, quant: Quant) -> Op {
    Op::Gemm { m: 96, n: 160, k: 256, lda: 256, ldb: 256, ldc: 160, ta, tb, accumulate, quant }
}

/// One op of every family (and every variant a family's emitter branches on), named for its snapshot.
fn small_ops() -> Vec<(&'static str, Op)> {
    let yarn = RopeFreqs { theta: 10000.0, yarn: Some((40.0, 4096, 32.0, 1.0)), attention_factor: 1.0 };
    let rope = |inverse| Op::Rope {
        tokens: 64,
        seq: 32,
        heads: 4,
        row_stride: 96,
        head_stride: 24,
        offset: 16,
        dim: 8,
        freqs: yarn,
        inverse,
    };
    let grouped = |mode| Op::GroupedGemm { experts: 8, rows: 256, n: 128, k: 256, mode, quant: FP8_W };
    let stored = |mode| Op::GroupedGemm { experts: 8, rows: 256, n: 128, k: 256, mode, quant: FP8S_W };
    let quantize = |scaling| Op::Quantize { mats: 2, rows: 200, cols: 300, tile: 128, scaling };
    vec![
        ("zero", Op::Zero { n: 1000 }),
        ("quantize_row_tiles", quantize(Scaling::RowTiles)),
        ("quantize_col_tiles", quantize(Scaling::ColTiles)),
        ("quantize_blocks", quantize(Scaling::Blocks)),
        ("cast", Op::Cast { n: 1000 }),
        ("add_scaled", Op::AddScaled { n: 1000, alpha: 0.5 }),
        ("add", Op::Add { n: 1000 }),
        ("gemm_f32_nt", gemm(false, true, false, Quant::None)),
        ("gemm_f32_tn_acc", gemm(true, false, true, Quant::None)),
        ("gemm_bf16_nt", gemm(false, true, false, Quant::Bf16)),
        ("fp8_gemm_nt_blocks", gemm(false, true, false, FP8_W)),
        ("fp8_gemm_tn_tiles_acc", gemm(true, false, true, FP8_A)),
        ("fp8_stored_gemm_nt_blocks", gemm(false, true, false, FP8S_W)),
        ("fp8_stored_gemm_nn_blocks_acc", gemm(false, false, true, FP8S_W)),
        ("fp8_stored_gemm_tn_tiles_acc", gemm(true, false, true, FP8S_A)),
        ("embedding", Op::Embedding { n: 64, vocab: 512, d: 32 }),
        ("embedding_bwd", Op::EmbeddingBwd { n: 64, vocab: 512, d: 32 }),
        ("shift_tokens", Op::ShiftTokens { batch: 2, seq: 32, shift: 1 }),
        ("rmsnorm", Op::RmsNorm { rows: 64, d: 48, in_stride: 64, eps: 1e-6 }),
        ("rmsnorm_bwd", Op::RmsNormBwd { rows: 64, d: 48, in_stride: 64 }),
        ("dyt", Op::Dyt { rows: 64, d: 48, in_stride: 48 }),
        ("dyt_bwd", Op::DytBwd { rows: 64, d: 48, in_stride: 48 }),
        ("rope_yarn", rope(false)),
        ("rope_yarn_inverse", rope(true)),
        ("attention", Op::Attention(attn(None))),
        ("attention_bwd", Op::AttentionBwd(attn(None))),
        ("attention_swa", Op::Attention(attn(Some((16, 4))))),
        ("attention_swa_bwd", Op::AttentionBwd(attn(Some((16, 4))))),
        ("swiglu", Op::SwiGlu { n: 1000 }),
        ("swiglu_bwd", Op::SwiGluBwd { n: 1000 }),
        ("router_sigmoid_groups", Op::Router(route(4, Score::Sigmoid))),
        ("router_softmax", Op::Router(route(1, Score::Softmax))),
        ("router_bwd", Op::RouterBwd(route(4, Score::Sigmoid))),
        ("dispatch", Op::Dispatch { tokens: 64, experts: 16, top_k: 4, d: 32 }),
        ("dispatch_bwd", Op::DispatchBwd { tokens: 64, top_k: 4, d: 32 }),
        ("grouped_gemm_fwd", grouped(GroupedMode::Forward)),
        ("grouped_gemm_dgrad", grouped(GroupedMode::DataGrad)),
        ("grouped_gemm_wgrad", grouped(GroupedMode::WeightGrad)),
        ("grouped_gemm_stored_fwd", stored(GroupedMode::Forward)),
        ("grouped_gemm_stored_dgrad", stored(GroupedMode::DataGrad)),
        ("combine", Op::Combine { tokens: 64, top_k: 4, d: 32 }),
        ("combine_bwd", Op::CombineBwd { tokens: 64, top_k: 4, d: 32 }),
        ("cross_entropy", Op::CrossEntropy { batch: 2, seq: 32, vocab: 512, shift: 1, grad_scale: 1.0 }),
        ("balance_loss", Op::BalanceLoss(BALANCE)),
        ("balance_loss_bwd", Op::BalanceLossBwd { balance: BALANCE, grad_scale: 0.5 }),
    ]
}

/// The kernel bodies after the shared prelude (the prelude is snapshotted once).
fn specialized(source: &str) -> &str {
    let cut = source.find("// ---- specialization ----").expect("every file has a specialization section");
    let head_end = source.find("// ---- prelude").expect("every file has the prelude");
    assert!(head_end < cut);
    &source[cut..]
}

#[test]
fn every_emitter_matches_its_snapshot() {
    let ops = small_ops();
    let families: std::collections::BTreeSet<&str> = ops.iter().map(|(_, op)| op.family()).collect();
    assert_eq!(families.len(), 28, "one small op per Op family");
    for (name, op) in ops {
        let k = cuda::emit(&op).unwrap_or_else(|e| panic!("{name}: {e}"));
        let header: String = k.source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        insta::assert_snapshot!(name, format!("{header}\n...\n{}", specialized(&k.source)));
    }
    let k = cuda::emit(&Op::Zero { n: 1 }).unwrap();
    let prelude =
        &k.source[k.source.find("// ---- prelude").unwrap()..k.source.find("// ---- specialization").unwrap()];
    insta::assert_snapshot!("prelude", prelude);
}

/// A kernel over bf16 storage: the same body, its parameters typedef'd to the prelude's `bf16`, another
/// file name than the f32 kernel of the same op; a dtype its argument does not admit is a typed error.
#[test]
fn storage_dtypes_specialize_the_parameters() {
    use dsv3c_runtime::program::Kernel;
    use dsv3c_runtime::DType::{Bf16, F32, I32};
    let op = Op::SwiGluBwd { n: 1000 };
    let k = cuda::emit_kernel(&Kernel::new(op.clone(), vec![Bf16, Bf16, Bf16, F32, F32])).unwrap();
    let header: String = k.source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
    insta::assert_snapshot!("swiglu_bwd_bf16", format!("{header}\n...\n{}", specialized(&k.source)));
    assert_ne!(k.stem, cuda::emit(&op).unwrap().stem, "a bf16 kernel has its own file");
    let rstd_bf16 = Kernel::new(Op::RmsNorm { rows: 2, d: 8, in_stride: 8, eps: 1e-6 }, vec![F32, F32, F32, Bf16]);
    assert!(matches!(cuda::emit_kernel(&rstd_bf16), Err(EmitError::Unsupported { .. })));
    let float_ids = Kernel::new(Op::ShiftTokens { batch: 1, seq: 4, shift: 1 }, vec![F32, I32]);
    assert!(matches!(cuda::emit_kernel(&float_ids), Err(EmitError::Unsupported { .. })));
}

#[test]
fn canonical_specs_emit_unique_deterministic_checked_kernels() {
    for spec in dsv3c_spec::canonical::all() {
        let name = spec.name.clone();
        let seq = spec.max_seq_len.min(512) as usize;
        let p = dsv3c_codegen::compile(&spec, 1, seq).unwrap();
        let a = cuda::emit_program(&p).unwrap();
        let b = cuda::emit_program(&p).unwrap();
        assert_eq!(a, b, "{name}: emission is not deterministic");
        assert_eq!(a.len(), p.kernels.len(), "{name}: one kernel per op");
        // The whole step is the Program's: the optimizer (and the bias update of MoE specs) among them.
        let has = |f: &str| p.kernels.iter().any(|k| k.op.family() == f);
        assert!(has("adamw") && has("grad_norm"), "{name}: no optimizer step");
        assert_eq!(has("bias_update") && has("expert_stats"), spec.moe.is_some(), "{name}: balancing");
        let mut stems: Vec<&str> = a.iter().map(|k| k.stem.as_str()).collect();
        stems.sort();
        stems.dedup();
        assert_eq!(stems.len(), a.len(), "{name}: two kernels share a file name");
        for k in &a {
            assert!(k.source.starts_with(&format!("// dsv3c generated kernel {}.cu", k.stem)));
            assert!(k.source.contains("// specialized for:") && k.source.contains("// launches, in order:"));
            for e in &k.entries {
                // Declared, bounded by the block its launch gives it (a constant of the file), and
                // carried as this kernel's device code in the Program.
                let threads = format!("{}_THREADS", e.name.to_uppercase());
                let declared = k.source.contains(&format!("__launch_bounds__({threads}) {}(", e.name));
                assert!(declared, "{}: no entry {} bounded by {threads}", k.stem, e.name);
                assert!(k.source.contains(&format!("constexpr int {threads} = {};", e.block)), "{}: {threads}", k.stem);
            }
        }
        for (k, emitted) in p.kernels.iter().zip(&a) {
            let device = k.device.as_ref().unwrap_or_else(|why| panic!("{name}: {why}"));
            assert_eq!(
                (&device.source, &device.entries),
                (&emitted.source, &emitted.entries),
                "{name}: {}",
                emitted.stem
            );
        }
        // Attention's tiles take more than 48 KB at 671b's head dims (192 + 128): that launch says it
        // must opt in; nothing of tiny's does.
        let opt_in = p.kernels.iter().flat_map(|k| &k.device.as_ref().unwrap().entries).any(|e| e.needs_opt_in());
        if name == "671b" || name == "tiny" {
            assert_eq!(opt_in, name == "671b", "{name}: shared-memory opt-in");
        }
    }
}

/// A kernel the CUDA back end cannot write (FP8 tiles other than 128) still compiles for the CPU; its
/// Program says why it has no device code.
#[test]
fn a_program_says_which_kernels_have_no_device_code() {
    use dsv3c_spec::types::{Dtype, Fp8};
    let mut spec = dsv3c_spec::canonical::get("tiny").unwrap();
    (spec.precision.param, spec.precision.compute) = (Dtype::Bf16, Dtype::Bf16);
    spec.precision.fp8 = Some(Fp8 { format: Default::default(), activation_tile: 32, weight_block: 32 });
    let p = dsv3c_codegen::compile(&spec, 1, 16).unwrap();
    let why: Vec<&String> = p.kernels.iter().filter_map(|k| k.device.as_ref().err()).collect();
    assert!(!why.is_empty() && why.iter().all(|w| w.contains("FP8 tile 32")), "{why:?}");
    assert!(p.kernels.iter().any(|k| k.device.is_ok()));
}

#[test]
fn launch_limits_reject_what_sm90_cannot_run() {
    let mut k = cuda::emit(&Op::Attention(attn(None))).unwrap();
    check::limits(&k).unwrap();
    k.entries[0].grid[1] = 70_000;
    assert!(matches!(check::limits(&k), Err(EmitError::Limits { .. })));
    let mut k = cuda::emit(&Op::Attention(attn(None))).unwrap();
    k.entries[0].dynamic_smem = check::MAX_SMEM_PER_BLOCK + 1;
    assert!(check::limits(&k).is_err());
    let mut k = cuda::emit(&Op::Zero { n: 10 }).unwrap();
    k.entries[0].block = 2048;
    assert!(check::limits(&k).is_err());
    // A rotary table too big for static shared memory is refused at emission.
    let big = Op::Rope {
        tokens: 8,
        seq: 8,
        heads: 256,
        row_stride: 256 * 64,
        head_stride: 64,
        offset: 0,
        dim: 64,
        freqs: RopeFreqs { theta: 1e4, yarn: None, attention_factor: 1.0 },
        inverse: false,
    };
    assert!(matches!(cuda::emit(&big), Err(EmitError::Limits { .. })));
}

#[test]
fn unsupported_shapes_are_typed_errors() {
    let mut r = route(4, Score::Sigmoid);
    r.experts = 128;
    r.groups = 64;
    assert!(matches!(cuda::emit(&Op::Router(r)), Err(EmitError::Unsupported { .. })));
    let op = Op::Gemm {
        m: 8,
        n: 8,
        k: 64,
        lda: 64,
        ldb: 64,
        ldc: 8,
        ta: false,
        tb: true,
        accumulate: false,
        quant: Quant::Fp8 { tile: 64, b_blocks: true },
    };
    assert!(matches!(cuda::emit(&op), Err(EmitError::Unsupported { .. })));
}

#[test]
fn footprints_cover_every_launch_and_catch_a_short_slice() {
    let spec = dsv3c_spec::canonical::get("tiny").unwrap();
    let mut p = dsv3c_codegen::compile(&spec, 2, 32).unwrap();
    check::footprints(&p).unwrap();
    // Shrink one attention output: the kernel writes past it.
    let l = p.forward.iter().position(|l| matches!(p.kernels[l.kernel].op, Op::Attention(_))).unwrap();
    p.forward[l].args[3].len -= 1;
    match check::footprints(&p) {
        Err(EmitError::Limits { why, .. }) => {
            assert!(why.contains("argument 3 (o) holds 4095 elements, the op touches 4096"), "{why}")
        }
        other => panic!("expected a footprint error, got {other:?}"),
    }
}
