//! The optimizer step against independent references: torch.optim.AdamW and the Lion paper's
//! update (tests/fixtures/optim/make_optim_fixtures.py, committed as optim.json), the decay masks
//! of a real model, gradient accumulation, and the aux-loss-free bias update.

use std::path::Path;
use std::sync::Arc;

use dsv3c_runtime::program::ParamGroup;
use dsv3c_spec::config::RunConfig;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn close(what: &str, got: &[f32], want: &[f32], rel: f64) {
    let err = dsv3c_runtime::tolerance::rel_l2(got, want);
    assert!(err < rel, "{what}: relative L2 error {err:.2e}");
}

#[test]
fn adamw_and_lion_steps_match_torch_and_the_lion_paper() {
    use dsv3c_runtime::cpu::run_op;
    use dsv3c_runtime::op::{scalars, Op, OptimizerKind as Kind, Update, GRAD_NORM_CHUNK};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim/optim.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The arena as dsv3c lays parameters out: decayed matrices, embedding, no-decay, frozen.
    let order = ["w", "embed", "norm", "frozen"];
    let mut cases = 0;
    for (name, case) in all.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        cases += 1;
        let s = &case["settings"];
        let f = |k: &str| s[k].as_f64().unwrap();
        let kind = if s["kind"] == "lion" { Kind::Lion } else { Kind::AdamW };
        let mut params = Vec::new();
        let mut spans = Vec::new();
        for k in order {
            let v = floats(&case["initial"][k]);
            spans.push((k, params.len(), v.len()));
            params.extend(v);
        }
        let trained = spans[3].1;
        let frozen_before = params[trained..].to_vec();
        let u = Update {
            kind,
            n: trained,
            decay_end: spans[1].1,
            embedding_end: spans[2].1,
            bf16_moments: s["moments"] == "bf16",
        };
        let mut sc = vec![0.0f32; scalars::LEN];
        sc[scalars::MAX_GRAD_NORM] = f32::INFINITY; // the step guard open
        sc[scalars::GRAD_SCALE] = 1.0;
        sc[scalars::BETA1] = f("beta1") as f32;
        sc[scalars::BETA2] = f("beta2") as f32;
        sc[scalars::EPS] = f("eps") as f32;
        sc[scalars::WEIGHT_DECAY] = f("weight_decay") as f32;
        sc[scalars::EMBEDDING_DECAY] =
            if s["decay_embeddings"].as_bool().unwrap() { f("weight_decay") as f32 } else { 0.0 };
        sc[scalars::CLIP] = f("grad_clip") as f32;
        let (mut m, mut v) = (vec![0.0f32; params.len()], vec![0.0f32; params.len()]);
        for (step, (g, want)) in
            case["grads"].as_array().unwrap().iter().zip(case["steps"].as_array().unwrap()).enumerate()
        {
            let mut grads = vec![0.0f32; params.len()];
            for &(k, off, n) in &spans[..3] {
                grads[off..off + n].copy_from_slice(&floats(&g[k]));
            }
            // The frozen tensor's gradient is garbage that norm and update must ignore.
            grads[trained..].fill(1e3);
            let mut norm_args =
                vec![grads[..trained].to_vec(), vec![0.0; trained.div_ceil(GRAD_NORM_CHUNK)], vec![0.0]];
            run_op(&Op::GradNorm { n: trained }, &mut norm_args);
            let norm = norm_args[2][0] as f64;
            let want_norm = want["grad_norm"].as_f64().unwrap();
            assert!((norm - want_norm).abs() < 1e-5 * want_norm, "{name} step {step}: norm {norm} vs {want_norm}");
            sc[scalars::LR] = case["lrs"][step].as_f64().unwrap() as f32;
            sc[scalars::STEP] = (step + 1) as f32;
            let mut args = vec![sc.clone(), vec![norm as f32], grads.clone(), params.clone(), m.clone()];
            if kind == Kind::AdamW {
                args.push(v.clone());
            }
            run_op(&Op::Optimizer(u), &mut args);
            if kind == Kind::AdamW {
                v = args.pop().unwrap();
            }
            m = args.pop().unwrap();
            params = args.pop().unwrap();
            for &(k, off, n) in &spans[..3] {
                let at = format!("{name} step {} {k}", step + 1);
                close(&format!("{at} params"), &params[off..off + n], &floats(&want["params"][k]), 1e-6);
                close(&format!("{at} m"), &m[off..off + n], &floats(&want["m"][k]), 1e-5);
                if kind == Kind::AdamW {
                    close(&format!("{at} v"), &v[off..off + n], &floats(&want["v"][k]), 1e-5);
                }
            }
        }
        assert_eq!(params[trained..], frozen_before[..], "{name}: a frozen tensor moved");
    }
    assert_eq!(cases, 4);
}

/// The optimizer step's regions of a real model follow the parameter kinds: every parameter lies in
/// the region of its group, and the regions are decayed matrices, embedding and head, no-decay,
/// frozen — in that order, end to end.
#[test]
fn the_optimizer_regions_of_a_real_model_follow_the_parameter_kinds() {
    use dsv3c_runtime::op::Op;
    let spec = dsv3c_spec::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    let program = dsv3c_codegen::compile(&spec, 1, 8).unwrap();
    let u = program
        .update
        .iter()
        .find_map(|l| match program.kernels[l.kernel].op {
            Op::Optimizer(u) => Some(u),
            _ => None,
        })
        .expect("an optimizer launch");
    let regions = [(0, u.decay_end), (u.decay_end, u.embedding_end), (u.embedding_end, u.n), (u.n, program.param_len)];
    for p in &program.params {
        let want = if p.name.ends_with("e_score_correction_bias") {
            3
        } else if p.name.ends_with("embed_tokens.weight") || p.name == "lm_head.weight" {
            1
        } else if p.name.contains("norm") {
            2
        } else if p.name.ends_with("_proj.weight")
            || p.name.ends_with("_proj_with_mqa.weight")
            || p.name.ends_with("gate.weight")
            || p.name.ends_with("eh_proj.weight")
        {
            0
        } else {
            panic!("{}: no expectation for this parameter ({:?})", p.name, p.group)
        };
        let (lo, hi) = regions[want];
        assert!(
            p.offset >= lo && p.offset + p.len() <= hi,
            "{} ({:?}) at {} not in {lo}..{hi}",
            p.name,
            p.group,
            p.offset
        );
        assert_eq!(p.group == ParamGroup::Frozen, want == 3, "{}", p.name);
    }
    let total: usize = program.params.iter().map(|p| p.len()).sum();
    assert_eq!(total, program.param_len, "the parameters tile the arena");
}

/// tiny with a 512-token vocabulary (fast), and a recipe around it.
fn small_tiny() -> dsv3c_spec::Spec {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    dsv3c_spec::parse("tiny-512", &text.replace("vocab_size: 50304", "vocab_size: 512")).unwrap()
}

fn recipe(micro: u64, accumulation: u64) -> RunConfig {
    serde_yaml::from_str(&format!(
        "spec: tiny.yaml\nsteps: 10\nseed: 3\ndata: {{source: builtin, validation_fraction: 0.0}}\n\
         batch: {{micro_batch: {micro}, accumulation: {accumulation}, seq_len: 16}}\n\
         optimizer: {{kind: adamw, lr: 1.0e-2, weight_decay: 0.1, grad_clip: 0.0}}\n"
    ))
    .unwrap()
}

fn tokens() -> Arc<Vec<u32>> {
    let mut r = dsv3c_runtime::init::SplitMix64::new(11);
    Arc::new((0..4096).map(|_| (r.next_u64() % 512) as u32).collect())
}

fn run_state() -> dsv3c_runtime::train::checkpoint::RunState {
    dsv3c_runtime::train::checkpoint::RunState::fresh(3, String::new(), String::new())
}

#[test]
fn two_micro_batches_of_two_equal_one_of_four() {
    use dsv3c_runtime::train::trainer::Trainer;
    let spec = small_tiny();
    let (p2, p4) = (dsv3c_codegen::compile(&spec, 2, 16).unwrap(), dsv3c_codegen::compile(&spec, 4, 16).unwrap());
    let mut a = Trainer::on_cpu(&p2, &p2, &recipe(2, 2), tokens(), run_state(), None).unwrap();
    let mut b = Trainer::on_cpu(&p4, &p4, &recipe(4, 1), tokens(), run_state(), None).unwrap();
    assert_eq!(a.backend.params, b.backend.params, "the same initialization");
    let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
    assert!((ra.loss - rb.loss).abs() < 1e-6 * rb.loss, "loss {} vs {}", ra.loss, rb.loss);
    assert!(
        (ra.grad_norm - rb.grad_norm).abs() < 1e-5 * rb.grad_norm,
        "grad norm {} vs {}",
        ra.grad_norm,
        rb.grad_norm
    );
    // The gradients are the real check (AdamW's first step is nearly g/|g|, blind to a missing
    // 1/accumulation); parameters agree to the rounding that sign-like step amplifies.
    // (The gradient arena holds the accumulated sum: the update averages on the fly.)
    let half: Vec<f32> = a.backend.grads.iter().map(|g| g * 0.5).collect();
    close("averaged gradients", &half, &b.backend.grads, 1e-5);
    close("parameters after the step", &a.backend.params, &b.backend.params, 1e-5);
    assert_eq!(ra.tokens, rb.tokens);
}

#[test]
fn the_aux_loss_free_bias_moves_gamma_toward_balance() {
    use dsv3c_runtime::train::trainer::Trainer;
    let spec = small_tiny();
    let program = dsv3c_codegen::compile(&spec, 4, 16).unwrap();
    let gamma = spec.moe.as_ref().unwrap().bias_update_speed as f32;
    assert!(gamma > 0.0);
    let mut t = Trainer::on_cpu(&program, &program, &recipe(4, 1), tokens(), run_state(), None).unwrap();
    let before = t.backend.params.clone();
    t.step().unwrap();
    let biases: Vec<_> = program.params.iter().filter(|p| p.name.ends_with("e_score_correction_bias")).collect();
    assert_eq!(biases.len(), program.io.expert_choices.len());
    let (mut up, mut down) = (0, 0);
    for (bias, choices) in biases.iter().zip(&program.io.expert_choices) {
        // The step's only micro-batch: its routing is still in the buffers.
        let mut load = vec![0u32; bias.len()];
        for e in t.backend.read(*choices) {
            load[e as usize] += 1;
        }
        let mean = load.iter().sum::<u32>() as f64 / load.len() as f64;
        for (i, &l) in load.iter().enumerate() {
            let moved = t.backend.params[bias.offset + i] - before[bias.offset + i];
            // Overloaded experts' bias falls by γ, underloaded ones' rises by γ (DeepSeek-V3 §2.1.2).
            let want = if (l as f64) > mean {
                -gamma
            } else if (l as f64) < mean {
                gamma
            } else {
                0.0
            };
            assert!((moved - want).abs() < 1e-7, "{} expert {i}: load {l} (mean {mean}) moved {moved}", bias.name);
            up += (want > 0.0) as usize;
            down += (want < 0.0) as usize;
        }
    }
    assert!(up > 0 && down > 0, "the batch is unbalanced both ways");
}

/// A backend that records every call and passes it on to the CPU reference.
struct Recording {
    cpu: dsv3c_runtime::cpu::Cpu,
    /// (call, slice; the op's family for launches, whose slice is their first argument).
    calls: Vec<(&'static str, dsv3c_runtime::Slice, Option<&'static str>)>,
}

impl dsv3c_runtime::program::Backend for Recording {
    fn launch(
        &mut self,
        kernel: &dsv3c_runtime::program::Kernel,
        args: &[dsv3c_runtime::Slice],
    ) -> Result<(), dsv3c_runtime::program::BackendError> {
        self.calls.push(("launch", args[0], Some(kernel.op.family())));
        self.cpu.launch(kernel, args)
    }
    fn read(&mut self, s: dsv3c_runtime::Slice) -> Result<Vec<f32>, dsv3c_runtime::program::BackendError> {
        self.calls.push(("read", s, None));
        dsv3c_runtime::program::Backend::read(&mut self.cpu, s)
    }
    fn write(&mut self, s: dsv3c_runtime::Slice, data: &[f32]) -> Result<(), dsv3c_runtime::program::BackendError> {
        self.calls.push(("write", s, None));
        self.cpu.write(s, data)
    }
    fn zero(&mut self, s: dsv3c_runtime::Slice) -> Result<(), dsv3c_runtime::program::BackendError> {
        self.calls.push(("zero", s, None));
        self.cpu.zero(s)
    }
}

/// A whole training step of `tiny` (two micro-batches) is launches only: between one step's
/// first forward and the next step, the host writes nothing but the step's scalars and each
/// micro-batch's tokens, and reads nothing but losses, the gradient norm and the routing
/// statistics — the gradient zeroing, averaging, norm, clipping, optimizer and bias update are all
/// launches. And it is the step it was: parameters, moments and biases move.
#[test]
fn a_training_step_of_tiny_is_launches_only() {
    use dsv3c_runtime::program::Backend;
    use dsv3c_runtime::train::trainer::Trainer;
    let spec = small_tiny();
    let p = dsv3c_codegen::compile(&spec, 2, 16).unwrap();
    let backend = Recording { cpu: dsv3c_runtime::cpu::Cpu::new(&p), calls: Vec::new() };
    let mut t = Trainer::new(&p, &p, backend, &recipe(2, 2), tokens(), run_state(), None).unwrap();
    let before = t.backend.cpu.params.clone();
    t.backend.calls.clear();
    t.step().unwrap();
    let io = &p.io;
    let readable: Vec<_> = [io.loss, io.main_loss, io.grad_norm]
        .into_iter()
        .chain(io.mtp_losses.iter().copied())
        .chain(io.expert_stats.iter().copied())
        .collect();
    let (mut launches, mut families) = (0, std::collections::BTreeSet::new());
    for (what, s, family) in &t.backend.calls {
        match *what {
            "launch" => {
                launches += 1;
                families.insert(family.unwrap());
            }
            "write" => assert!(*s == io.scalars || *s == io.tokens, "the host wrote {s:?}"),
            "read" => assert!(readable.contains(s), "the host read {s:?}"),
            _ => panic!("the host called {what} on {s:?}"),
        }
    }
    for f in ["zero", "grad_norm", "adamw", "expert_stats", "bias_update"] {
        assert!(families.contains(f), "no {f} launch in the step");
    }
    assert!(launches > 0);
    let writes = t.backend.calls.iter().filter(|c| c.0 == "write").count();
    assert_eq!(writes, 1 + 2, "the scalars once, the tokens per micro-batch");
    let after = t.backend.cpu.params.clone();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(moved > after.len() / 2, "only {moved} of {} parameters moved", after.len());
    let bias = p.params.iter().find(|x| x.name.ends_with("e_score_correction_bias")).unwrap();
    assert_ne!(before[bias.offset..bias.offset + bias.len()], after[bias.offset..bias.offset + bias.len()]);
    assert!(t.backend.read(dsv3c_runtime::Slice::optim(0, p.optim_len)).unwrap().iter().any(|&m| m != 0.0));
}

/// The step guard: a step whose gradient norm spikes past the guard's limit, or whose loss is not
/// finite, leaves the parameters (balancing biases among them) and the moments bit for bit as they
/// were; the next applied step is optimizer step 2 (bias correction counts applied steps only).
#[test]
fn a_guarded_step_changes_nothing() {
    use dsv3c_runtime::train::trainer::{Skip, Trainer};
    let spec = small_tiny();
    let program = dsv3c_codegen::compile(&spec, 4, 16).unwrap();
    let mut t = Trainer::on_cpu(&program, &program, &recipe(4, 1), tokens(), run_state(), None).unwrap();
    assert_eq!(t.step().unwrap().skipped, None);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let (params, moments) = (bits(&t.backend.params), t.optimizer_state().unwrap());
    assert_eq!(moments.step, 1);

    // A spike guard whose median is far below any real norm.
    let mut cfg = recipe(4, 1);
    cfg.guard.spike_factor = Some(2.0);
    cfg.guard.spike_window = 4;
    let mut t = Trainer::on_cpu(&program, &program, &cfg, tokens(), run_state(), None).unwrap();
    t.step().unwrap();
    t.run.guard.norms = vec![1e-9; 4];
    let r = t.step().unwrap();
    assert!(matches!(r.skipped, Some(Skip::Spike { .. })), "{:?}", r.skipped);
    assert!(r.grad_norm.is_finite() && r.loss.is_finite());
    assert_eq!(bits(&t.backend.params), params, "a spiking step moved the parameters");
    assert_eq!(t.optimizer_state().unwrap(), moments, "a spiking step moved the moments");
    assert_eq!((t.run.guard.skipped_in_row, t.run.step), (1, 2));

    // A NaN in the final norm's weight: every logit, so the loss, is NaN.
    t.run.guard.norms.clear();
    let norm = program.params.iter().find(|p| p.name == "model.norm.weight").unwrap();
    t.backend.params[norm.offset] = f32::NAN;
    let poisoned = bits(&t.backend.params);
    let r = t.step().unwrap();
    assert_eq!(r.skipped, Some(Skip::NonFiniteLoss));
    assert_eq!(bits(&t.backend.params), poisoned, "a NaN step moved the parameters");
    assert_eq!(t.optimizer_state().unwrap(), moments, "a NaN step moved the moments");
    assert_eq!(t.run.guard.skipped_in_row, 2);
    // Running it again launch by launch names the first op that produced a NaN: the final norm.
    let a = t.find_non_finite().unwrap().expect("an anomaly");
    assert_eq!((a.list, a.micro_batch), ("forward", Some(0)));
    assert_eq!(a.op, "rmsnorm", "{a}");

    t.backend.params[norm.offset] = 1.0;
    assert_eq!(t.step().unwrap().skipped, None);
    assert_eq!(t.optimizer_state().unwrap().step, 2);
    assert_eq!(t.run.guard.skipped_in_row, 0);
}
