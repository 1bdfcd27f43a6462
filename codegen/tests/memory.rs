//! One memory model: the bytes a compiled program's arenas take on one device (`Program::memory`:
//! f32 master weights, the compute copies (bf16, and E4M3 for the FP8 GEMMs), gradients, optimizer moments, the activation plan's
//! peak) and `inspect`'s analytic report (`dsv3c_spec::memory`) for one GPU at the same shape agree
//! within 5%, category by category, for every canonical spec.

use dsv3c_spec::memory::{memory, Layout, RunShape};
use dsv3c_spec::types::Dtype;

fn close(name: &str, what: &str, plan: f64, model: f64) {
    let rel = if plan == 0.0 && model == 0.0 { 0.0 } else { (model / plan - 1.0).abs() };
    assert!(
        rel <= 0.05,
        "{name} {what}: plan {plan:.4e} B, inspect {model:.4e} B ({:+.1}%)",
        (model / plan - 1.0) * 100.0
    );
}

#[test]
fn plan_and_inspect_agree_for_every_canonical_spec() {
    for spec in dsv3c_spec::canonical::all() {
        let seq = spec.max_seq_len.min(4096);
        let p = dsv3c_codegen::compile(&spec, 1, seq as usize).unwrap();
        let plan = p.memory();
        let layout = Layout::parse("", Some(1)).unwrap();
        let run = RunShape {
            micro_batch: 1,
            seq_len: seq,
            moments: Dtype::F32,
            zero: 0,
            expert_capacity: None,
            recompute: false,
            fp8_cache: false,
        };
        let m = memory(&spec, layout, run);
        let name = &spec.name;
        // Parameters by dtype: the f32 copy (masters, or the weights themselves in an f32 spec) and
        // the compute copies.
        let (f32_model, bf16_model) =
            if spec.precision.param == Dtype::Bf16 { (m.master, m.weights) } else { (m.weights + m.master, 0.0) };
        close(name, "f32 parameters", plan.master as f64, f32_model);
        close(name, "weight copies", plan.weights as f64, bf16_model);
        close(name, "gradients", plan.gradients as f64, m.gradients);
        close(name, "optimizer", plan.optimizer as f64, m.optimizer);
        close(name, "activations", plan.activations as f64, m.activations);
        close(name, "total", plan.total() as f64, m.total);
    }
}
