//! The optimizer step against independent references: torch.optim.AdamW and the Lion paper's
//! update (tests/fixtures/optim/make_optim_fixtures.py, committed as optim.json), the decay masks
//! of a real model, gradient accumulation, and the aux-loss-free bias update.

use std::path::Path;
use std::sync::Arc;

use dsv3c_runtime::program::ParamGroup;
use dsv3c_runtime::train::optim;
use dsv3c_spec::config::{Optimizer, OptimizerKind, RunConfig};
use dsv3c_spec::types::Dtype;
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
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim/optim.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let order = ["w", "norm", "embed", "frozen"];
    let mut cases = 0;
    for (name, case) in all.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        cases += 1;
        let s = &case["settings"];
        let settings = Optimizer {
            kind: if s["kind"] == "lion" { OptimizerKind::Lion } else { OptimizerKind::Adamw },
            lr: 0.0,
            beta1: s["beta1"].as_f64().unwrap(),
            beta2: s["beta2"].as_f64().unwrap(),
            eps: s["eps"].as_f64().unwrap(),
            weight_decay: s["weight_decay"].as_f64().unwrap(),
            decay_embeddings: s["decay_embeddings"].as_bool().unwrap(),
            moments: if s["moments"] == "bf16" { Dtype::Bf16 } else { Dtype::F32 },
            grad_clip: s["grad_clip"].as_f64().unwrap(),
        };
        // The arena: the tensors end to end; masks as dsv3c gives each group (checked against a
        // real model below).
        let mut params = Vec::new();
        let mut mask = Vec::new();
        let mut spans = Vec::new();
        for k in order {
            let v = floats(&case["initial"][k]);
            let group = match k {
                "w" => 3,
                "norm" => 1,
                "embed" => 1 | if settings.decay_embeddings { 2 } else { 0 },
                _ => 0,
            };
            spans.push((k, params.len(), v.len()));
            mask.extend(std::iter::repeat_n(group, v.len()));
            params.extend(v);
        }
        let frozen_before = params[spans[3].1..].to_vec();
        let mut state = optim::State::new(params.len(), settings.kind);
        for (step, (g, want)) in
            case["grads"].as_array().unwrap().iter().zip(case["steps"].as_array().unwrap()).enumerate()
        {
            let mut grads = vec![0.0f32; params.len()];
            for &(k, off, n) in &spans[..3] {
                grads[off..off + n].copy_from_slice(&floats(&g[k]));
            }
            // The frozen tensor's gradient is garbage that must be ignored by norm and update.
            grads[spans[3].1..].fill(1e3);
            let norm = optim::clip(&mut grads, &mask, settings.grad_clip);
            let want_norm = want["grad_norm"].as_f64().unwrap();
            assert!((norm - want_norm).abs() < 1e-5 * want_norm, "{name} step {step}: norm {norm} vs {want_norm}");
            let lr = case["lrs"][step].as_f64().unwrap();
            optim::step(&settings, &mut state, &mut params, &grads, &mask, lr);
            for &(k, off, n) in &spans[..3] {
                let at = format!("{name} step {} {k}", step + 1);
                close(&format!("{at} params"), &params[off..off + n], &floats(&want["params"][k]), 1e-6);
                close(&format!("{at} m"), &state.m[off..off + n], &floats(&want["m"][k]), 1e-5);
                if settings.kind == OptimizerKind::Adamw {
                    close(&format!("{at} v"), &state.v[off..off + n], &floats(&want["v"][k]), 1e-5);
                }
            }
        }
        assert_eq!(params[spans[3].1..], frozen_before[..], "{name}: a frozen tensor moved");
    }
    assert_eq!(cases, 4);
}

#[test]
fn decay_masks_of_a_real_model_follow_the_parameter_kinds() {
    let spec = dsv3c_spec::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    let program = dsv3c_codegen::compile(&spec, 1, 8).unwrap();
    for decay_embeddings in [false, true] {
        let mask = optim::masks(&program, decay_embeddings);
        for p in &program.params {
            let want = if p.name.ends_with("e_score_correction_bias") {
                0
            } else if p.name.ends_with("embed_tokens.weight") || p.name == "lm_head.weight" {
                1 | if decay_embeddings { 2 } else { 0 }
            } else if p.name.contains("norm") {
                1
            } else if p.name.ends_with("_proj.weight")
                || p.name.ends_with("_proj_with_mqa.weight")
                || p.name.ends_with("gate.weight")
                || p.name.ends_with("eh_proj.weight")
            {
                3
            } else {
                panic!("{}: no expectation for this parameter ({:?})", p.name, p.group)
            };
            assert!(mask[p.offset..p.offset + p.len()].iter().all(|&m| m == want), "{} ({:?}) mask", p.name, p.group);
            assert_eq!(p.group == ParamGroup::Frozen, want == 0, "{}", p.name);
        }
    }
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
    dsv3c_runtime::train::checkpoint::RunState {
        step: 0,
        tokens: 0,
        position: Default::default(),
        seed: 3,
        config_hash: String::new(),
        spec: String::new(),
    }
}

#[test]
fn two_micro_batches_of_two_equal_one_of_four() {
    use dsv3c_runtime::train::trainer::Trainer;
    let spec = small_tiny();
    let (p2, p4) = (dsv3c_codegen::compile(&spec, 2, 16).unwrap(), dsv3c_codegen::compile(&spec, 4, 16).unwrap());
    let gamma = 0.0;
    let mut a = Trainer::new(&p2, &p2, &recipe(2, 2), tokens(), run_state(), None, gamma).unwrap();
    let mut b = Trainer::new(&p4, &p4, &recipe(4, 1), tokens(), run_state(), None, gamma).unwrap();
    assert_eq!(a.cpu.params, b.cpu.params, "the same initialization");
    let (ra, rb) = (a.step(), b.step());
    assert!((ra.loss - rb.loss).abs() < 1e-6 * rb.loss, "loss {} vs {}", ra.loss, rb.loss);
    assert!(
        (ra.grad_norm - rb.grad_norm).abs() < 1e-5 * rb.grad_norm,
        "grad norm {} vs {}",
        ra.grad_norm,
        rb.grad_norm
    );
    // The gradients are the real check (AdamW's first step is nearly g/|g|, blind to a missing
    // 1/accumulation); parameters agree to the rounding that sign-like step amplifies.
    close("averaged gradients", &a.cpu.grads, &b.cpu.grads, 1e-5);
    close("parameters after the step", &a.cpu.params, &b.cpu.params, 1e-5);
    assert_eq!(ra.tokens, rb.tokens);
}

#[test]
fn the_aux_loss_free_bias_moves_gamma_toward_balance() {
    use dsv3c_runtime::train::trainer::Trainer;
    let spec = small_tiny();
    let program = dsv3c_codegen::compile(&spec, 4, 16).unwrap();
    let gamma = spec.moe.as_ref().unwrap().bias_update_speed as f32;
    assert!(gamma > 0.0);
    let mut t = Trainer::new(&program, &program, &recipe(4, 1), tokens(), run_state(), None, gamma).unwrap();
    let before = t.cpu.params.clone();
    t.step();
    let biases: Vec<_> = program.params.iter().filter(|p| p.name.ends_with("e_score_correction_bias")).collect();
    assert_eq!(biases.len(), program.io.expert_choices.len());
    let (mut up, mut down) = (0, 0);
    for (bias, choices) in biases.iter().zip(&program.io.expert_choices) {
        // The step's only micro-batch: its routing is still in the buffers.
        let mut load = vec![0u32; bias.len()];
        for &e in t.cpu.read(*choices) {
            load[e as usize] += 1;
        }
        let mean = load.iter().sum::<u32>() as f64 / load.len() as f64;
        for (i, &l) in load.iter().enumerate() {
            let moved = t.cpu.params[bias.offset + i] - before[bias.offset + i];
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
