//! Parallel training against the single-rank run of the same global batch, on in-process ranks
//! (one thread each): data parallelism with the gradients and routing statistics summed by
//! `AllReduce` ops, with ZeRO-1 (each rank updating its shard of the parameters from its shard of
//! the moments, then gathering) and without; expert parallelism (the routed experts sharded over
//! the data-parallel ranks, rows exchanged both ways); pipeline parallelism (1F1B over the
//! micro-batches); checkpoints that move between layouts; a failing rank that stops the job.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dsv3c_codegen::{Parallel, Training};
use dsv3c_runtime::comm::{run_mesh, Mesh};
use dsv3c_runtime::cpu::Cpu;
use dsv3c_runtime::train::checkpoint::{self, Loaded, RunState, Texts};
use dsv3c_runtime::train::trainer::{StepReport, Trainer};
use dsv3c_runtime::Program;
use dsv3c_spec::config::RunConfig;

mod common;

const STEPS: usize = 10;
const SEQ: usize = 16;

/// tiny (8 routed experts, top-2, a dense first layer and an MTP module) with a 512-token
/// vocabulary, and a bias update fast enough to move within a few steps.
fn spec() -> dsv3c_spec::Spec {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    let text = text.replace("vocab_size: 50304", "vocab_size: 512");
    dsv3c_spec::parse("tiny-512", &text).unwrap()
}

fn recipe(micro: u64, accumulation: u64, dp: u64, zero: u8) -> RunConfig {
    layout(micro, accumulation, &format!("dp: {dp}, zero: {zero}"))
}

/// The recipe with `parallel:` set to `{parallel}` (and a collective timeout of a minute).
fn layout(micro: u64, accumulation: u64, parallel: &str) -> RunConfig {
    serde_yaml::from_str(&format!(
        "spec: tiny.yaml\nsteps: {STEPS}\nseed: 3\ndata: {{source: builtin, validation_fraction: 0.0}}\n\
         batch: {{micro_batch: {micro}, accumulation: {accumulation}, seq_len: {SEQ}}}\n\
         optimizer: {{kind: adamw, lr: 1.0e-2, weight_decay: 0.1, grad_clip: 1.0}}\n\
         parallel: {{{parallel}, collective_timeout_s: 60}}\n"
    ))
    .unwrap()
}

/// A stream with something to learn: each token mostly follows from the one before.
fn tokens() -> Arc<Vec<u32>> {
    let mut r = dsv3c_runtime::init::SplitMix64::new(11);
    let mut t = 0u32;
    Arc::new(
        (0..16384)
            .map(|_| {
                t = if r.next_u64().is_multiple_of(8) { (r.next_u64() % 512) as u32 } else { (t * 5 + 1) % 512 };
                t
            })
            .collect(),
    )
}

fn fresh() -> RunState {
    RunState::fresh(3, String::new(), String::new())
}

/// What a job leaves: each step's report (rank 0's; every rank's must agree) and rank 0's final
/// parameters.
#[derive(Clone)]
struct Ran {
    reports: Vec<StepReport>,
    params: Vec<f32>,
}

/// Rank `rank`'s program of `recipe`'s layout.
fn program(spec: &dsv3c_spec::Spec, recipe: &RunConfig, rank: usize) -> Program {
    let pl = &recipe.parallel;
    let mesh = Mesh { dp: pl.dp as usize, ep: pl.ep as usize, pp: pl.pp as usize };
    let mut par = Parallel::of(mesh, rank, pl.zero == 1, recipe.batch.accumulation as usize);
    par.expert_capacity = pl.expert_capacity;
    let training = Training::from(recipe);
    dsv3c_codegen::compile_rank(spec, recipe.batch.micro_batch as usize, SEQ, training, par).unwrap()
}

/// `steps` steps of `recipe` on its layout's in-process ranks (or the single-device trainer for
/// a layout of one rank), from `resume` when given; with `save`, a checkpoint there at the end.
fn train(recipe: &RunConfig, steps: usize, resume: Option<Loaded>, save: Option<&Path>) -> Ran {
    train_spec(&spec(), recipe, steps, resume, save)
}

/// [`train`] of another spec.
fn train_spec(
    spec: &dsv3c_spec::Spec,
    recipe: &RunConfig,
    steps: usize,
    resume: Option<Loaded>,
    save: Option<&Path>,
) -> Ran {
    let pl = &recipe.parallel;
    let mesh = Mesh { dp: pl.dp as usize, ep: pl.ep as usize, pp: pl.pp as usize };
    let texts = Texts { spec: "", config: "" };
    let drive = |t: &mut Trainer<'_, Cpu>| {
        let reports: Vec<StepReport> = (0..steps).map(|_| t.step().unwrap()).collect();
        if let Some(dir) = save {
            t.checkpoint(dir, &texts, 3).unwrap();
        }
        Ran { reports, params: t.params().unwrap() }
    };
    if mesh.world() == 1 {
        let p = program(spec, recipe, 0);
        let mut t = Trainer::on_cpu(&p, &p, recipe, tokens(), fresh(), resume).unwrap();
        return drive(&mut t);
    }
    let mut runs: Vec<Ran> = run_mesh(mesh, Duration::from_secs(60), |comms| {
        let p = program(spec, recipe, comms.place.rank);
        let backend = Cpu::with_comms(&p, comms.clone());
        let mut t = Trainer::on_rank(&p, &p, backend, recipe, tokens(), fresh(), resume.clone(), comms)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(drive(&mut t))
    })
    .unwrap();
    for (r, other) in runs.iter().enumerate().skip(1) {
        let (a, b) = (&runs[0], other);
        assert_eq!(a.reports, b.reports, "rank {r} reports other numbers than rank 0");
        if mesh.ep == 1 && mesh.pp == 1 {
            assert!(a.params == b.params, "rank {r} holds other parameters than rank 0");
        }
    }
    runs.swap_remove(0)
}

/// Losses (total and main) and gradient norms agree to `tol` relative, step by step.
fn agree(what: &str, a: &[StepReport], b: &[StepReport], tol: f64) {
    agree_norms(what, a, b, tol, tol)
}

/// Losses agree to `tol` relative and gradient norms to `norm_tol`. Where the ranks sum a
/// gradient in another order than one device does (expert parallelism: an expert's weight
/// gradient over the rows of every rank of its group in one product; pipelines: the norm's sum
/// over stages), the norm — a sum over every squared gradient element, which AdamW's first steps
/// move by ±lr whatever their size, so that rounding in a near-zero gradient flips a step — wanders
/// by 1e-5 within ten steps while the losses agree to 1e-7.
fn agree_norms(what: &str, a: &[StepReport], b: &[StepReport], tol: f64, norm_tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for (name, u, v, tol) in [
            ("loss", x.loss, y.loss, tol),
            ("total loss", x.total_loss, y.total_loss, tol),
            ("grad norm", x.grad_norm, y.grad_norm, norm_tol),
        ] {
            let rel = (u - v).abs() / v.abs().max(1e-12);
            assert!(rel <= tol, "{what}: step {} {name} {u} vs {v} (relative {rel:.2e} > {tol:.0e})", x.step);
        }
        assert_eq!(x.tokens, y.tokens, "{what}: step {} tokens", x.step);
        assert_eq!(x.skipped, y.skipped);
        // The balancing bias sees the job's loads: the same expert counts as one device's step.
        let loads = |r: &StepReport| r.moe.iter().map(|m| (m.utilization, m.max_mean_load)).collect::<Vec<_>>();
        assert_eq!(loads(x), loads(y), "{what}: step {} expert loads", x.step);
    }
}

#[test]
fn data_parallel_matches_one_device_with_and_without_zero1() {
    let one = train(&recipe(2, 2, 1, 1), STEPS, None, None);
    let losses: Vec<f64> = one.reports.iter().map(|r| r.loss).collect();
    assert!(
        losses.iter().all(|l| l.is_finite()) && losses.windows(2).all(|w| w[0] != w[1]),
        "ten real steps: {losses:?}"
    );
    assert!(one.reports.iter().all(|r| r.skipped.is_none() && r.grad_norm > 0.0));
    for zero in [0, 1] {
        let two = train(&recipe(2, 1, 2, zero), STEPS, None, None);
        agree(&format!("dp=2 zero={zero}"), &two.reports, &one.reports, 1e-5);
    }
    // Four ranks of one sequence each, ZeRO-1 over four shards.
    let four = train(&recipe(1, 1, 4, 1), STEPS, None, None);
    let one_by_one = train(&recipe(1, 4, 1, 1), STEPS, None, None);
    agree("dp=4 zero=1", &four.reports, &one_by_one.reports, 1e-5);
}

/// tiny's 8 routed experts sharded over the data-parallel ranks (2 or 4 of them), each step's
/// rows exchanged with the ranks holding their experts and back: the same losses, gradient norms
/// and expert loads as one device running the whole global batch.
#[test]
fn expert_parallel_matches_one_device() {
    let (by_two, by_one) =
        (train(&recipe(2, 2, 1, 1), STEPS, None, None), train(&recipe(1, 4, 1, 1), STEPS, None, None));
    for (what, r, one) in [
        ("dp=2,ep=2", layout(2, 1, "dp: 2, ep: 2, zero: 1"), &by_two),
        ("dp=2,ep=2 replicated", layout(2, 1, "dp: 2, ep: 2, zero: 0"), &by_two),
        ("dp=4,ep=4", layout(1, 1, "dp: 4, ep: 4, zero: 1"), &by_one),
        ("dp=4,ep=2", layout(1, 1, "dp: 4, ep: 2, zero: 1"), &by_one),
    ] {
        let ran = train(&r, STEPS, None, None);
        agree_norms(what, &ran.reports, &one.reports, 1e-5, 1e-3);
    }
}

/// Every parameter's gradient after one step of `recipe`'s layout, by name, averaged over the
/// step's micro-batches (the update summed them over the ranks).
fn first_gradients(recipe: &RunConfig) -> std::collections::BTreeMap<String, Vec<f32>> {
    let spec = spec();
    let pl = &recipe.parallel;
    let mesh = Mesh { dp: pl.dp as usize, ep: pl.ep as usize, pp: pl.pp as usize };
    let scale = 1.0 / (recipe.batch.accumulation * pl.dp) as f32;
    let grads = |t: &mut Trainer<'_, Cpu>, p: &Program| {
        t.step().unwrap();
        let copies = p.rank.as_ref().map_or(Vec::new(), |r| r.copies.clone());
        p.params
            .iter()
            .filter(|x| !copies.iter().any(|c| c.0 == x.offset))
            .map(|x| {
                (x.name.clone(), t.backend.grads[x.offset..x.offset + x.len()].iter().map(|g| g * scale).collect())
            })
            .collect::<Vec<_>>()
    };
    if mesh.world() == 1 {
        let p = program(&spec, recipe, 0);
        let mut t = Trainer::on_cpu(&p, &p, recipe, tokens(), fresh(), None).unwrap();
        return grads(&mut t, &p).into_iter().collect();
    }
    run_mesh(mesh, Duration::from_secs(60), |comms| {
        let p = program(&spec, recipe, comms.place.rank);
        let backend = Cpu::with_comms(&p, comms.clone());
        let mut t =
            Trainer::on_rank(&p, &p, backend, recipe, tokens(), fresh(), None, comms).map_err(|e| e.to_string())?;
        Ok::<_, String>(grads(&mut t, &p))
    })
    .unwrap()
    .into_iter()
    .flatten()
    .collect()
}

/// The first step's gradients of every parameter under each of `layouts` are one device's, to
/// rounding: each tensor within 1e-5 of its norm.
fn first_gradients_are_one_devices(layouts: &[RunConfig]) {
    let one = first_gradients(&recipe(1, 4, 1, 1));
    for r in layouts {
        let got = first_gradients(r);
        assert_eq!(got.keys().collect::<Vec<_>>(), one.keys().collect::<Vec<_>>());
        for (name, g) in &one {
            let norm = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let diff = g.iter().zip(&got[name]).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
            assert!(diff <= 1e-5 * norm.max(1e-30), "{name}: gradients {diff:.3e} apart (norm {norm:.3e})");
        }
    }
}

/// Under expert parallelism the exchanges route every row to its expert and every gradient back to
/// its row.
#[test]
fn expert_parallel_gradients_are_one_devices() {
    first_gradients_are_one_devices(&[layout(1, 1, "dp: 4, ep: 4, zero: 1"), layout(2, 1, "dp: 2, ep: 2, zero: 0")]);
}

/// tiny's three layers over two and three pipeline stages (the embedding with the first, the
/// head and MTP module with the last, which holds a copy of the embedding for it), four
/// micro-batches a step in the 1F1B order; and all three kinds of parallelism together.
#[test]
fn pipeline_parallel_matches_one_device() {
    let one = train(&recipe(1, 4, 1, 1), STEPS, None, None);
    for (what, r, tol) in [
        ("pp=2", layout(1, 4, "pp: 2"), 1e-5),
        ("pp=3", layout(1, 4, "pp: 3"), 1e-5),
        ("pp=3, two micro-batches", layout(2, 2, "pp: 3"), 1e-5),
        ("dp=2,ep=2,pp=2", layout(1, 2, "dp: 2, ep: 2, pp: 2, zero: 1"), 1e-4),
    ] {
        let one = if what.contains("two micro") { train(&recipe(2, 2, 1, 1), STEPS, None, None) } else { one.clone() };
        let ran = train(&r, STEPS, None, None);
        agree_norms(what, &ran.reports, &one.reports, tol, 1e-3);
    }
}

/// The first step's gradients under a pipeline are one device's, the embedding's two copies
/// summed.
#[test]
fn pipeline_parallel_gradients_are_one_devices() {
    first_gradients_are_one_devices(&[layout(1, 4, "pp: 3"), layout(1, 2, "dp: 2, ep: 2, pp: 2, zero: 1")]);
}

/// Selective recomputation runs the same launches on the same values: the losses, norms and
/// parameters are those of the run that keeps everything, bit for bit — on one device and on a
/// pipeline with experts in parallel — and the plan keeps less.
#[test]
fn selective_recomputation_changes_memory_not_numbers() {
    let recomputing = |mut r: RunConfig| {
        r.recompute = dsv3c_spec::config::Recompute::Selective;
        r
    };
    for r in [recipe(2, 2, 1, 1), layout(1, 2, "dp: 2, ep: 2, pp: 2, zero: 1")] {
        let (kept, again) = (train(&r, 5, None, None), train(&recomputing(r.clone()), 5, None, None));
        assert_eq!(kept.reports, again.reports);
        assert!(kept.params == again.params, "the parameters after five steps");
        let spec = spec();
        let (a, b) = (program(&spec, &r, 0), program(&spec, &recomputing(r.clone()), 0));
        let notes = |p: &Program| p.backward.iter().filter(|l| l.note.ends_with("(recomputed)")).count();
        assert_eq!(notes(&a), 0);
        assert!(notes(&b) > 0, "the backward runs the regions again");
        assert!(
            b.act_bytes < a.act_bytes,
            "recomputation keeps less: {} vs {} bytes of activations",
            b.act_bytes,
            a.act_bytes
        );
    }
}

/// DeepSeek-V3's FP8 caching on the FP8 recipe's spec (with a 512-token vocabulary): the routed
/// experts' inputs, SwiGLU inputs and outputs kept in E4M3 for the backward, which reads them back
/// through `dequantize` launches — the losses stay within 0.5% of keeping them in bf16 (step by
/// step for the first three, on average over ten), on one device and with expert parallelism and a
/// pipeline, and at a training shape the plan keeps less. A spec without the FP8 recipe is refused.
#[test]
fn fp8_caching_keeps_less_and_trains_alike() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("spec/small-fp8.yaml")).unwrap();
    let fp8 = dsv3c_spec::parse("small-fp8-512", &text.replace("vocab_size: 50304", "vocab_size: 512")).unwrap();
    let run = |r: &RunConfig, cache: bool| -> (Vec<f64>, usize) {
        let pl = &r.parallel;
        let mesh = Mesh { dp: pl.dp as usize, ep: pl.ep as usize, pp: pl.pp as usize };
        let training = Training { fp8_cache: cache, ..Training::from(r) };
        let compile = |rank: usize| {
            let par = Parallel::of(mesh, rank, pl.zero == 1, r.batch.accumulation as usize);
            dsv3c_codegen::compile_rank(&fp8, r.batch.micro_batch as usize, SEQ, training, par).unwrap()
        };
        // The last rank holds MoE layers whatever the layout.
        let last = compile(mesh.world() - 1);
        let dequantizes = last.launches().filter(|l| last.kernels[l.kernel].op.family() == "dequantize").count();
        let p0 = compile(0);
        let drive = |t: &mut Trainer<'_, Cpu>| (0..STEPS).map(|_| t.step().unwrap().loss).collect::<Vec<f64>>();
        let losses = if mesh.world() == 1 {
            drive(&mut Trainer::on_cpu(&p0, &p0, r, tokens(), fresh(), None).unwrap())
        } else {
            run_mesh(mesh, Duration::from_secs(60), |comms| {
                let p = compile(comms.place.rank);
                let backend = Cpu::with_comms(&p, comms.clone());
                let mut t =
                    Trainer::on_rank(&p, &p, backend, r, tokens(), fresh(), None, comms).map_err(|e| e.to_string())?;
                Ok::<_, String>(drive(&mut t))
            })
            .unwrap()
            .swap_remove(0)
        };
        (losses, dequantizes)
    };
    for mut r in [recipe(2, 1, 1, 1), layout(1, 2, "dp: 2, ep: 2, pp: 2, zero: 1")] {
        r.optimizer.lr = 3e-3;
        let ((bf16, none), (cached, dequantizes)) = (run(&r, false), run(&r, true));
        assert_eq!(none, 0);
        assert!(dequantizes > 0, "the backward reads the FP8 copies");
        // The first steps follow each other closely; later ones part as any two FP8 runs do, by a
        // step's batch, and agree on average.
        for (step, (a, b)) in cached.iter().zip(&bf16).enumerate().take(3) {
            assert!((a - b).abs() <= 5e-3 * b, "step {}: loss {a} with FP8 caching, {b} without", step + 1);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (a, b) = (mean(&cached), mean(&bf16));
        assert!((a - b).abs() <= 5e-3 * b, "mean loss {a} with FP8 caching, {b} without: {cached:?} vs {bf16:?}");
        assert!(cached != bf16, "the FP8 copies change the numbers a little");
    }
    // At a training shape (8 sequences of 256 tokens) the plan keeps less.
    let bytes = |fp8_cache: bool| {
        let t = Training { fp8_cache, ..Training::default() };
        dsv3c_codegen::compile_training(&fp8, 8, 256, t).unwrap().act_bytes
    };
    let (kept, cached) = (bytes(false), bytes(true));
    assert!(cached < kept, "FP8 caching keeps less: {cached} vs {kept} bytes");
    let t = Training { fp8_cache: true, ..Training::default() };
    let err = dsv3c_codegen::compile_training(&spec(), 2, SEQ, t).unwrap_err();
    assert!(err.to_string().contains("has no precision.fp8"), "{err}");
}

/// With a capacity factor an expert keeps at most that multiple of a balanced share of the rows:
/// at 1.0 (no headroom) the routing overflows some experts, the rows past capacity are dropped —
/// counted in each layer's balance record — and training goes on; without one nothing is dropped.
#[test]
fn rows_past_an_experts_capacity_are_dropped_and_counted() {
    let dropless = train(&layout(2, 1, "dp: 2, ep: 2, zero: 1"), 3, None, None);
    let capped = train(&layout(2, 1, "dp: 2, ep: 2, zero: 1, expert_capacity: 1.0"), 3, None, None);
    let dropped = |r: &Ran| r.reports.iter().flat_map(|s| s.moe.iter().map(|m| m.dropped)).collect::<Vec<f64>>();
    assert!(dropped(&dropless).iter().all(|&d| d == 0.0));
    let d = dropped(&capped);
    assert!(d.iter().any(|&x| x > 0.0) && d.iter().all(|&x| (0.0..0.5).contains(&x)), "dropped fractions {d:?}");
    assert!(capped.reports.iter().all(|r| r.loss.is_finite() && r.skipped.is_none()));
    assert_ne!(capped.reports[0].loss, dropless.reports[0].loss, "dropped rows add nothing to the combine");
    // The capped plan holds a quarter of the dropless one's expert rows (tiny: 8 experts, top-2,
    // two ranks: each local expert keeps 2·32·2/8 = 16 rows of the 64 every token could send).
    let spec = spec();
    let rows = |r: &RunConfig| {
        program(&spec, r, 0)
            .kernels
            .iter()
            .find_map(|k| match k.op {
                dsv3c_runtime::Op::ExpertCounts(x) => Some(x.capacity),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(rows(&layout(2, 1, "dp: 2, ep: 2")), 64);
    assert_eq!(rows(&layout(2, 1, "dp: 2, ep: 2, expert_capacity: 1.0")), 16);
}

/// A rank of `dp=4,ep=2` holds its shard of the experts (by their model-wide names), sums their
/// gradients over the other rank holding them, and exchanges rows with its expert-parallel peer.
#[test]
fn an_expert_parallel_rank_holds_its_shard() {
    let spec = spec();
    let r = layout(1, 1, "dp: 4, ep: 2, zero: 1");
    let single = dsv3c_codegen::compile_training(&spec, 1, SEQ, Training::default()).unwrap();
    for rank in 0..4 {
        let p = program(&spec, &r, rank);
        let experts: Vec<&str> = p.params.iter().map(|x| x.name.as_str()).filter(|n| n.contains(".experts.")).collect();
        let shard = rank % 2;
        assert!(!experts.is_empty());
        for n in &experts {
            let e: usize = n.split(".experts.").nth(1).unwrap().split('.').next().unwrap().parse().unwrap();
            assert_eq!(e / 4, shard, "rank {rank} holds {n}");
        }
        let all = single.params.iter().filter(|x| x.name.contains(".experts.")).count();
        assert_eq!(experts.len() * 2, all, "rank {rank}: half the experts");
        let rank_info = p.rank.as_ref().unwrap();
        assert_eq!(rank_info.zero.len(), 2, "the experts' region and the rest, each sharded");
        let families: Vec<&str> = p.launches().map(|l| p.kernels[l.kernel].op.family()).collect();
        for f in ["expert_counts", "expert_dispatch", "expert_return", "sum_squares", "sum_parts", "all_gather"] {
            assert!(families.contains(&f), "rank {rank}: no {f}");
        }
    }
}

#[test]
fn zero1_shards_the_moments_and_updates_each_shard_once() {
    let spec = spec();
    let t = Training::default();
    let single = dsv3c_codegen::compile_training(&spec, 2, SEQ, t).unwrap();
    let mut lens = 0;
    for rank in 0..3 {
        let p = dsv3c_codegen::compile_rank(&spec, 2, SEQ, t, Parallel::data(3, rank, true)).unwrap();
        let z = p.rank.unwrap().zero[0];
        assert_eq!(p.optim_len, 2 * z.stride, "rank {rank}: its moments alone");
        assert!(p.optim_len * 3 < single.optim_len + 6, "rank {rank}: a third of the optimizer state");
        lens += z.hi - z.lo;
        let families: Vec<&str> = p.update.iter().map(|l| p.kernels[l.kernel].op.family()).collect();
        let at = |f: &str| families.iter().position(|x| *x == f).unwrap_or_else(|| panic!("no {f} in {families:?}"));
        assert!(at("all_reduce") < at("grad_norm") && at("adamw") < at("all_gather"), "{families:?}");
    }
    let trained = single.update.iter().find_map(|l| match &single.kernels[l.kernel].op {
        dsv3c_runtime::Op::Optimizer(u) => Some(u.n),
        _ => None,
    });
    assert_eq!(Some(lens), trained, "the shards cover the trained parameters once");
    // A rank's program is not a device's: refused without its job.
    let p = dsv3c_codegen::compile_rank(&spec, 2, SEQ, t, Parallel::data(2, 0, true)).unwrap();
    let err = Trainer::on_cpu(&p, &p, &recipe(2, 1, 2, 1), tokens(), fresh(), None).err().unwrap();
    assert!(err.to_string().contains("rank 0 of dp=2,ep=1,pp=1"), "{err}");
}

#[test]
fn checkpoints_move_between_layouts() {
    let dir = std::env::temp_dir().join(format!("dsv3c-parallel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let load = |sub: &str| -> Loaded {
        let (_, newest) = checkpoint::list(&dir.join(sub)).pop().expect("a checkpoint");
        checkpoint::load(&newest).unwrap()
    };
    // dp=2 with ZeRO-1 for 6 steps straight, and for 3 then a checkpoint.
    let straight = train(&recipe(2, 1, 2, 1), 6, None, None);
    train(&recipe(2, 1, 2, 1), 3, None, Some(&dir.join("dp2")));
    let ck = load("dp2");
    assert_eq!(ck.run.step, 3);
    // Resumed on one device (two micro-batches a step), on four ranks, and on two replicated.
    for (what, r) in
        [("dp=1", recipe(2, 2, 1, 1)), ("dp=4 zero=1", recipe(1, 1, 4, 1)), ("dp=2 zero=0", recipe(2, 1, 2, 0))]
    {
        let rest = train(&r, 3, Some(ck.clone()), None);
        agree(&format!("dp=2 checkpoint resumed under {what}"), &rest.reports, &straight.reports[3..], 1e-5);
    }
    // And the other way: a one-device checkpoint into ZeRO-1 shards.
    let one = train(&recipe(2, 2, 1, 1), 6, None, None);
    train(&recipe(2, 2, 1, 1), 3, None, Some(&dir.join("dp1")));
    let rest = train(&recipe(2, 1, 2, 1), 3, Some(load("dp1")), None);
    agree("a one-device checkpoint resumed under dp=2 zero=1", &rest.reports, &one.reports[3..], 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint of `dp=2,ep=2` — each rank writing the experts it owns, in parallel — resumes
/// on one device and under `dp=4,ep=4` (and a pipeline's under another layout) with the losses
/// the uninterrupted run has next.
#[test]
fn expert_and_pipeline_checkpoints_move_between_layouts() {
    let dir = std::env::temp_dir().join(format!("dsv3c-parallel-ep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let load = |sub: &str| -> Loaded {
        let (_, newest) = checkpoint::list(&dir.join(sub)).pop().expect("a checkpoint");
        checkpoint::load(&newest).unwrap()
    };
    let ep2 = layout(1, 2, "dp: 2, ep: 2, zero: 1");
    let straight = train(&ep2, 6, None, None);
    train(&ep2, 3, None, Some(&dir.join("ep2")));
    let ck = load("ep2");
    assert_eq!(ck.run.step, 3);
    // Each rank wrote the parameters it owns: rank 0 the shared ones and experts 0-3, rank 1
    // experts 4-7, and nothing twice (`load` refuses a name in two files).
    let files: Vec<String> = std::fs::read_dir(&ck.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    for f in ["model-00000-of-00002.safetensors", "model-00001-of-00002.safetensors"] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }
    let one = dsv3c_codegen::compile_training(&spec(), 1, SEQ, Training::default()).unwrap();
    assert_eq!(ck.model.len(), one.params.len(), "every parameter once");
    for (what, r) in [
        ("dp=1", recipe(1, 4, 1, 1)),
        ("dp=4,ep=4", layout(1, 1, "dp: 4, ep: 4, zero: 1")),
        ("dp=2,pp=2", layout(1, 2, "dp: 2, pp: 2, zero: 0")),
    ] {
        let rest = train(&r, 3, Some(ck.clone()), None);
        agree_norms(
            &format!("dp=2,ep=2 checkpoint resumed under {what}"),
            &rest.reports,
            &straight.reports[3..],
            1e-5,
            1e-3,
        );
    }
    // A pipeline's checkpoint (the embedding written once, by the first stage) on one device.
    let pp = layout(1, 4, "pp: 3");
    let straight = train(&pp, 6, None, None);
    train(&pp, 3, None, Some(&dir.join("pp3")));
    let rest = train(&recipe(1, 4, 1, 1), 3, Some(load("pp3")), None);
    agree_norms("pp=3 checkpoint resumed on one device", &rest.reports, &straight.reports[3..], 1e-5, 1e-3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With bf16 weights the forward and backward read the matrices' compute copies alone, and
/// ZeRO-1 shards their f32 masters as it does the moments: a rank's parameter arena holds its
/// shards of the matrices and the norms and biases whole, and each step's start gathers the
/// shards to make the copies. `dp=2` gives the bits of `dp=2` with replicated masters, and with
/// `dp=2,ep=2` follows one device (as bf16 weights allow); every rank reads back the same whole
/// parameters; the sharded masters' checkpoint resumes on one device.
#[test]
fn zero1_shards_the_masters_of_bf16_weights() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    let text = text.replace("vocab_size: 50304", "vocab_size: 512").replace("param: f32", "param: bf16");
    let b16 = dsv3c_spec::parse("tiny-512-bf16", &text).unwrap();
    let one = program(&b16, &recipe(2, 2, 1, 1), 0);
    for (r, sharded) in [(recipe(2, 1, 2, 1), true), (recipe(2, 1, 2, 0), false)] {
        let p = program(&b16, &r, 0);
        assert_eq!(p.masters().is_some(), sharded);
        let (m, whole) = (p.memory().master, one.memory().master);
        if sharded {
            assert!(m < whole * 6 / 10, "about half the masters: {m} of {whole} bytes");
            let gathers = p.start.iter().filter(|l| p.kernels[l.kernel].op.family() == "all_gather").count();
            assert!(gathers > 0, "start gathers the shards");
        } else {
            assert_eq!(m, whole);
        }
    }
    // Sharded, an f32-weights spec keeps its masters whole: the GEMMs read them.
    assert!(program(&spec(), &recipe(2, 1, 2, 1), 0).masters().is_none());
    let single = train_spec(&b16, &recipe(2, 2, 1, 1), 6, None, None);
    let dp2 = train_spec(&b16, &recipe(2, 1, 2, 1), 6, None, None);
    // The same job with replicated masters gives the same bits: sharding moves, never rounds.
    let replicated = train_spec(&b16, &recipe(2, 1, 2, 0), 6, None, None);
    assert_eq!(dp2.reports, replicated.reports, "sharded masters train as replicated ones");
    assert!(dp2.params == replicated.params);
    // Masters whose gradients were summed in another order differ from one device's in a last
    // bit, which flips a bf16 copy's rounding now and then (2^-8 of that weight) and, AdamW moving
    // every weight by about the learning rate whatever its gradient, the runs part a little more
    // each step: against one device the losses agree to 1e-3 and the norms to 1e-2.
    // (A flipped routing choice moves an expert's load: the loads are not compared.)
    let near = |what: &str, a: &[StepReport], b: &[StepReport]| {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            for (name, u, v, tol) in [("loss", x.loss, y.loss, 1e-3), ("grad norm", x.grad_norm, y.grad_norm, 1e-2)] {
                let rel = (u - v).abs() / v.abs();
                assert!(rel <= tol, "{what}: step {} {name} {u} vs {v} (relative {rel:.2e} > {tol:.0e})", x.step);
            }
        }
    };
    near("dp=2 ZeRO-1 with sharded masters", &dp2.reports, &single.reports);
    let ep2 = layout(1, 2, "dp: 2, ep: 2, zero: 1");
    let straight = train_spec(&b16, &ep2, 6, None, None);
    near("dp=2,ep=2 ZeRO-1 with sharded masters", &straight.reports, &single.reports);
    let dir = std::env::temp_dir().join(format!("dsv3c-parallel-masters-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train_spec(&b16, &ep2, 3, None, Some(&dir));
    let (_, newest) = checkpoint::list(&dir).pop().expect("a checkpoint");
    let rest = train_spec(&b16, &recipe(1, 4, 1, 1), 3, Some(checkpoint::load(&newest).unwrap()), None);
    near("sharded masters resumed on one device", &rest.reports, &straight.reports[3..]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// bf16 moments (DeepSeek-V3's) take two bytes each — half the optimizer arena — ZeRO-1 shards
/// them as f32 ones, and a checkpoint of two ranks resumes them on one device with the losses the
/// uninterrupted run has next.
#[test]
fn bf16_moments_take_two_bytes_and_shard_and_resume() {
    let bf16 = |mut r: RunConfig| {
        r.optimizer.moments = dsv3c_spec::types::Dtype::Bf16;
        r
    };
    let spec = spec();
    let (f, b) = (program(&spec, &recipe(2, 2, 1, 1), 0), program(&spec, &bf16(recipe(2, 2, 1, 1)), 0));
    assert_eq!(f.optim_len, b.optim_len);
    assert_eq!(2 * b.memory().optimizer, f.memory().optimizer);
    let one = train(&bf16(recipe(2, 2, 1, 1)), 6, None, None);
    let two = train(&bf16(recipe(2, 1, 2, 1)), 6, None, None);
    agree_norms("dp=2 ZeRO-1 with bf16 moments", &two.reports, &one.reports, 1e-5, 1e-3);
    let dir = std::env::temp_dir().join(format!("dsv3c-parallel-bf16-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train(&bf16(recipe(2, 1, 2, 1)), 3, None, Some(&dir));
    let (_, newest) = checkpoint::list(&dir).pop().expect("a checkpoint");
    let rest = train(&bf16(recipe(2, 2, 1, 1)), 3, Some(checkpoint::load(&newest).unwrap()), None);
    agree_norms("bf16 moments resumed on one device", &rest.reports, &one.reports[3..], 1e-5, 1e-3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rank_that_fails_stops_the_job_and_is_named() {
    let spec = spec();
    let t = Training::default();
    let r = recipe(2, 1, 2, 1);
    let programs: Vec<Program> = (0..2)
        .map(|rank| dsv3c_codegen::compile_rank(&spec, 2, SEQ, t, Parallel::data(2, rank, true)).unwrap())
        .collect();
    let err = run_mesh(Mesh { dp: 2, ep: 1, pp: 1 }, Duration::from_secs(60), |comms| {
        // Rank 1 is handed rank 0's program: it refuses, and rank 0 must not wait for it forever.
        let p = &programs[0];
        let backend = Cpu::with_comms(p, comms.clone());
        let mut t = Trainer::on_rank(p, p, backend, &r, tokens(), fresh(), None, comms).map_err(|e| e.to_string())?;
        for _ in 0..3 {
            t.step().map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    })
    .unwrap_err();
    assert_eq!(err.rank, 1, "{err}");
    assert!(err.to_string().contains("rank 1 of 2") && err.why.contains("the program is rank 0 of dp=2"), "{err}");
}

/// A recipe over spec/tiny.yaml and the built-in corpus, 4 steps of `micro × acc` sequences of 32
/// tokens per rank, with `layout` as its `parallel:`.
fn cli_recipe(dir: &Path, name: &str, layout: &str, micro: u64, acc: u64) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "spec: {root}/spec/tiny.yaml\nsteps: 4\nseed: 1\ndata: {{source: builtin, tokenizer: gpt2, validation_fraction: 0.05}}\n\
             batch: {{micro_batch: {micro}, accumulation: {acc}, seq_len: 32}}\n\
             optimizer: {{kind: adamw, lr: 3.0e-3}}\nparallel: {{{layout}}}\n"
        ),
    )
    .unwrap();
    path
}

/// The losses of a run's `metrics.jsonl`, step by step.
fn metric_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect()
}

#[test]
fn train_nproc_runs_the_layout_and_refuses_what_does_not_divide() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parallel-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = |name: &str, layout: &str, micro: u64, acc: u64| cli_recipe(&dir, name, layout, micro, acc);
    let losses = |out: &Path| metric_losses(out);
    let dp2 = recipe("dp2", "dp: 2", 2, 1);
    let one = recipe("one", "dp: 1", 2, 2);
    let train = |cfg: &Path, out: &str, extra: &[&str]| {
        let mut args = vec!["train", "--device", "cpu", "--validation-batches", "0", "--config"];
        let (cfg, out) = (cfg.to_str().unwrap().to_string(), dir.join(out).to_str().unwrap().to_string());
        args.push(&cfg);
        args.extend(["--out", &out]);
        args.extend(extra);
        common::spawn(&args).wait_with_output().unwrap()
    };
    let a = train(&dp2, "a", &["--nproc", "2"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(err.contains("x 2 data-parallel ranks (ZeRO-1"), "{err}");
    let b = train(&one, "b", &[]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let (la, lb) = (losses(&dir.join("a")), losses(&dir.join("b")));
    assert_eq!(la.len(), 4);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "dp=2 {la:?} vs one device {lb:?}");
    }
    // All three kinds at once: experts over two ranks, two stages, four ranks in all.
    let mesh = recipe("mesh", "dp: 2, ep: 2, pp: 2", 1, 2);
    let c = train(&mesh, "c", &["--nproc", "4"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(err.contains("x 2 data-parallel ranks, experts over 2 x 2 pipeline stages (1F1B)"), "{err}");
    let lc = losses(&dir.join("c"));
    assert_eq!(lc.len(), 4);
    for (x, y) in lc.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-4 * y.abs(), "dp=2,ep=2,pp=2 {lc:?} vs one device {lb:?}");
    }
    // Every rank validates (the forward exchanges rows and hidden states), rank 0 reports it.
    let v = dir.join("v");
    let o = common::dsv3c(&[
        "train",
        "--device",
        "cpu",
        "--validation-batches",
        "1",
        "--steps",
        "1",
        "--nproc",
        "4",
        "--config",
        mesh.to_str().unwrap(),
        "--out",
        v.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("validation loss"), "{err}");
    // The layout and the process count must agree, and what cannot run says why.
    for (cfg, extra, want) in [
        (dp2.clone(), vec![], "the recipe's layout has 2 ranks"),
        (dp2.clone(), vec!["--nproc", "3"], "--nproc 3, but the recipe's layout has tp·pp·dp = 1·1·2 = 2 ranks"),
        (recipe("ep3", "dp: 2, ep: 3", 2, 1), vec!["--nproc", "2"], "parallel.ep = 3 must be at least 1 and divide dp"),
        (recipe("pp4", "pp: 4", 2, 1), vec!["--nproc", "4"], "pp = 4 exceeds the 3 layers"),
        (recipe("tp", "tp: 2", 2, 1), vec!["--nproc", "2"], "tensor parallelism is not part of dsv3c"),
    ] {
        let out = train(&cfg, "refused", &extra);
        let err = common::flat_stderr(&out);
        assert!(!out.status.success() && err.contains(want), "{}: want `{want}` in:\n{err}", cfg.display());
    }
}

#[test]
fn compile_parallel_reports_each_role_and_agrees_with_inspect() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parallel-compile");
    let _ = std::fs::remove_dir_all(&out);
    let report = |zero: &str| -> serde_json::Value {
        let o = out.to_str().unwrap();
        let text = common::ok(&[
            "compile",
            "spec/tiny.yaml",
            "--batch",
            "4",
            "--seq",
            "64",
            "--parallel",
            "dp=2",
            "--zero",
            zero,
            "--json",
            "--out",
            o,
        ]);
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let (z1, z0) = (report("1"), report("0"));
    let (r1, r0) = (&z1["ranks"][0], &z0["ranks"][0]);
    assert_eq!((r1["role"].as_str(), r1["count"].as_u64()), (Some("rank"), Some(2)), "{z1}");
    let b = |r: &serde_json::Value, k: &str| r["bytes"][k].as_f64().unwrap();
    let parts: f64 =
        ["parameters", "gradients", "optimizer", "activations", "communication"].iter().map(|k| b(r1, k)).sum();
    assert_eq!(parts, b(r1, "total"));
    // ZeRO-1 halves the moments over two ranks, and nothing else (the replicated arena also spans
    // the frozen router biases, which have none: a few hundred bytes).
    assert!((b(r1, "optimizer") * 2.0 - b(r0, "optimizer")).abs() < 1024.0, "{z1} vs {z0}");
    assert_eq!(b(r1, "parameters"), b(r0, "parameters"));
    assert!(out.join("ranks/rank/plan.json").is_file() && out.join("ranks/rank/graph.rs").is_file());
    let i: serde_json::Value = serde_json::from_str(&common::ok(&[
        "inspect",
        "spec/tiny.yaml",
        "--json",
        "--gpus",
        "2",
        "--gpu-memory",
        "80",
        "--parallel",
        "dp=2",
        "--micro-batch",
        "4",
        "--seq-len",
        "64",
        "--zero",
        "1",
    ]))
    .unwrap();
    let model = i["memory"]["total"].as_f64().unwrap();
    let rel = (b(r1, "total") - model).abs() / model;
    assert!(rel < 0.05, "compile {} vs inspect {model}: {:.1}% apart", b(r1, "total"), 100.0 * rel);
    // A pipeline's stages are its roles, each with its program.
    let o = out.to_str().unwrap();
    let text = common::ok(&["compile", "spec/tiny.yaml", "--parallel", "dp=2,ep=2,pp=2", "--json", "--out", o]);
    let mesh: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let roles: Vec<&str> = mesh["ranks"].as_array().unwrap().iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["stage-0", "stage-1"], "{mesh}");
    assert!(out.join("ranks/stage-1/plan.json").is_file());
    // What is not built is refused by name.
    let o = common::dsv3c(&["compile", "spec/tiny.yaml", "--parallel", "tp=2", "--out", out.to_str().unwrap()]);
    let err = common::flat_stderr(&o);
    assert!(!o.status.success() && err.contains("tensor parallelism is not part of dsv3c"), "{err}");
}

/// `dsv3c train` as rank `rank` of a torchrun-style job of `world` processes meeting at `port`.
fn launched(rank: usize, world: usize, port: u16, cfg: &Path, out: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_dsv3c"))
        .args(["train", "--device", "cpu", "--validation-batches", "0", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

#[test]
fn a_torchrun_job_of_two_processes_trains_like_one_device_and_a_lost_rank_stops_it() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parallel-launch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dp2 = cli_recipe(&dir, "dp2", "dp: 2, collective_timeout_s: 20", 2, 1);
    let one = cli_recipe(&dir, "one", "dp: 1", 2, 2);
    let port = free_port();
    let (job, single) = (dir.join("job"), dir.join("one"));
    let ranks: Vec<_> = (0..2).map(|r| launched(r, 2, port, &dp2, &job)).collect();
    for (r, c) in ranks.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "rank {r}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = common::dsv3c(&[
        "train",
        "--device",
        "cpu",
        "--validation-batches",
        "0",
        "--config",
        one.to_str().unwrap(),
        "--out",
        single.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (metric_losses(&job), metric_losses(&single));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "two processes {a:?} vs one device {b:?}");
    }
    assert_eq!(checkpoint::list(&job).len(), 1, "rank 0 wrote the checkpoint");

    // Rank 1 killed mid-run: rank 0 stops, naming it, instead of waiting.
    let long = cli_recipe(&dir, "long", "dp: 2, collective_timeout_s: 20", 2, 1);
    let text = std::fs::read_to_string(&long).unwrap().replace("steps: 4", "steps: 500");
    std::fs::write(&long, text).unwrap();
    let port = free_port();
    let mut leader = launched(0, 2, port, &long, &dir.join("killed"));
    let mut other = launched(1, 2, port, &long, &dir.join("killed"));
    let stdout = leader.stdout.take().unwrap();
    use std::io::BufRead;
    for line in std::io::BufReader::new(stdout).lines() {
        if line.unwrap().starts_with("step 2/") {
            other.kill().unwrap();
            break;
        }
    }
    let _ = other.wait();
    let o = leader.wait_with_output().unwrap();
    let err = common::flat_stderr(&o);
    assert!(!o.status.success() && err.contains("rank 0 of 2") && err.contains("rank 1 failed"), "{err}");

    // A rank that never comes: the job gives up after the timeout, naming who joined.
    let lonely = cli_recipe(&dir, "lonely", "dp: 2, collective_timeout_s: 1", 2, 1);
    let o = launched(0, 2, free_port(), &lonely, &dir.join("lonely")).wait_with_output().unwrap();
    let err = common::flat_stderr(&o);
    assert!(!o.status.success() && err.contains("only ranks [0] of 2 joined within 1 s"), "{err}");
}
