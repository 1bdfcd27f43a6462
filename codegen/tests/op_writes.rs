//! Every op writes its outputs the way `Op::writes` says: a `(w)` output is the same whatever it
//! held before, a `(+)` output gains exactly the op's result. Run on the CPU reference with the
//! outputs pre-filled with random values (backward tests that start every gradient at zero
//! cannot tell an op that overwrites from one that accumulates). Sizes include ones large enough
//! for the parallel paths (rayon chunks of 4096, GEMMs of 2^15 multiply-adds and more).

use dsv3c_codegen::cuda::check::footprint;
use dsv3c_runtime::cpu::run_op;
use dsv3c_runtime::op::*;
use dsv3c_runtime::sample::{args, Rng};
use dsv3c_runtime::tolerance::rel_l2;

fn ops() -> Vec<Op> {
    let mut v = vec![
        Op::Zero { n: 9000 },
        Op::Cast { n: 9000 },
        Op::AddScaled { n: 9000, alpha: -0.75 },
        Op::Add { n: 9000 },
        Op::Embedding { n: 40, vocab: 30, d: 16 },
        Op::EmbeddingBwd { n: 40, vocab: 30, d: 16 },
        Op::ShiftTokens { batch: 3, seq: 7, shift: 2 },
        Op::RmsNorm { rows: 300, d: 48, in_stride: 50, eps: 1e-6 },
        Op::RmsNormBwd { rows: 300, d: 48, in_stride: 50 },
        Op::Dyt { rows: 300, d: 48, in_stride: 48 },
        Op::DytBwd { rows: 300, d: 48, in_stride: 48 },
        Op::SwiGlu { n: 9000 },
        Op::SwiGluBwd { n: 9000 },
        Op::Dispatch { tokens: 50, experts: 8, top_k: 2, d: 16 },
        Op::DispatchBwd { tokens: 50, top_k: 2, d: 16 },
        Op::Combine { tokens: 50, top_k: 2, d: 16 },
        Op::CombineBwd { tokens: 50, top_k: 2, d: 16 },
        Op::CrossEntropy { batch: 2, seq: 6, vocab: 20, shift: 1, grad_scale: 0.5 },
    ];
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
    for a in [attn, Attn { window: Some((3, 1)), ..attn }] {
        v.extend([Op::Attention(a), Op::AttentionBwd(a)]);
    }
    for score in [Score::Sigmoid, Score::Softmax] {
        let r =
            Route { tokens: 30, experts: 8, groups: 4, top_groups: 2, top_k: 2, score, normalize: true, scale: 2.5 };
        v.extend([Op::Router(r), Op::RouterBwd(r)]);
        let b = Balance { batch: 2, seq: 15, experts: 8, top_k: 2, alpha: 0.01, score };
        v.extend([Op::BalanceLoss(b), Op::BalanceLossBwd { balance: b, grad_scale: 0.5 }]);
    }
    for scaling in [Scaling::RowTiles, Scaling::ColTiles, Scaling::Blocks] {
        v.push(Op::Quantize { mats: 2, rows: 70, cols: 45, tile: 32, scaling });
    }
    let quants = [
        Quant::None,
        Quant::Bf16,
        Quant::Fp8 { tile: 32, b_blocks: true },
        Quant::Fp8 { tile: 32, b_blocks: false },
        Quant::Fp8Stored { tile: 32, b_blocks: true },
        Quant::Fp8Stored { tile: 32, b_blocks: false },
    ];
    // Small and parallel-path GEMMs, every layout, overwriting and accumulating, K not a multiple
    // of the FP8 tile.
    for (m, n, k) in [(5, 7, 3), (70, 48, 45), (64, 96, 100)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for accumulate in [false, true] {
                for quant in quants {
                    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
                    v.push(Op::Gemm { m, n, k, lda, ldb, ldc: n + 3, ta, tb, accumulate, quant });
                }
            }
        }
    }
    for mode in [GroupedMode::Forward, GroupedMode::DataGrad, GroupedMode::WeightGrad] {
        for quant in quants {
            v.push(Op::GroupedGemm { experts: 8, rows: 96, n: 40, k: 70, mode, quant });
        }
    }
    v
}

#[test]
fn outputs_are_overwritten_or_accumulated_as_documented() {
    let mut rng = Rng::new(5);
    let mut checked = (0, 0);
    for op in ops() {
        let lens = footprint(&op);
        let base = args(&op, &lens, &mut rng);
        let writes = op.writes();
        let run = |prefill: &dyn Fn(usize, usize) -> Vec<f32>| {
            let mut a = base.clone();
            for &(o, access) in &writes {
                if access != Access::InPlace {
                    a[o] = prefill(o, a[o].len());
                }
            }
            run_op(&op, &mut a);
            a
        };
        let zeros = run(&|_, n| vec![0.0; n]);
        let fill: Vec<Vec<f32>> = base.iter().map(|x| rng.vec(x.len(), 3.0)).collect();
        let prefilled = run(&|o, _| fill[o].clone());
        for &(o, access) in &writes {
            let what = format!("{} {op:?} output {o}", op.family());
            match access {
                Access::Write => {
                    // Each element is the op's value bit for bit, whatever it held, or (a gap
                    // between strided rows) untouched.
                    let mut wrote = 0;
                    for (i, (z, p)) in zeros[o].iter().zip(&prefilled[o]).enumerate() {
                        let untouched = p.to_bits() == fill[o][i].to_bits() && *z == 0.0;
                        assert!(
                            untouched || z.to_bits() == p.to_bits(),
                            "{what}: element {i} is {p} after a pre-fill of {}, {z} after zeros",
                            fill[o][i]
                        );
                        wrote += !untouched as usize;
                    }
                    assert!(wrote > 0, "{what}: the op wrote nothing");
                    checked.0 += 1;
                }
                Access::Accumulate => {
                    let want: Vec<f32> = zeros[o].iter().zip(&fill[o]).map(|(r, p)| r + p).collect();
                    let err = rel_l2(&prefilled[o], &want);
                    assert!(err < 1e-6, "{what}: not prior + result (relative L2 error {err:.2e})");
                    let moved = rel_l2(&zeros[o], &vec![0.0; zeros[o].len()]);
                    assert!(moved > 0.0, "{what}: the op added nothing");
                    checked.1 += 1;
                }
                Access::InPlace => {}
            }
        }
    }
    eprintln!("{} overwritten and {} accumulated outputs checked", checked.0, checked.1);
}
