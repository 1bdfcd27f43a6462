//! The `model!` macro: a model embedded at build time is the compiled Program, and trains with
//! exactly the losses of the interpreted path.

use std::path::Path;
use std::sync::Arc;

use dsv3c_runtime::data::{corpus, tokenizer::Tokenizer};
use dsv3c_runtime::train::checkpoint::RunState;
use dsv3c_runtime::train::trainer::Trainer;

mod tiny {
    dsv3c::model!("spec/tiny.yaml", batch = 2, seq = 32);
}

fn spec() -> dsv3c_spec::Spec {
    dsv3c_spec::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap()
}

#[test]
fn macro_model_is_the_compiled_program() {
    let compiled = dsv3c_codegen::compile(&spec(), 2, 32).unwrap();
    let embedded = tiny::program();
    assert_eq!((tiny::BATCH, tiny::SEQ), (2, 32));
    assert_eq!(embedded.params, compiled.params);
    // The same kernels; the embedded graph carries their ops, not their CUDA sources (those are the
    // `kernels/*.cu` that `dsv3c compile` writes beside a graph).
    let ops =
        |p: &dsv3c_runtime::Program| p.kernels.iter().map(|k| (k.op.clone(), k.dtypes.clone())).collect::<Vec<_>>();
    assert_eq!(ops(&embedded), ops(&compiled));
    assert!(embedded.kernels.iter().all(|k| k.device.is_err()) && compiled.kernels.iter().all(|k| k.device.is_ok()));
    assert_eq!(embedded.buffers, compiled.buffers);
    assert_eq!(embedded.io, compiled.io);
    assert_eq!(
        (embedded.param_len, embedded.act_bytes, embedded.optim_len),
        (compiled.param_len, compiled.act_bytes, compiled.optim_len)
    );
    assert_eq!(
        tiny::SPEC,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap()
    );
}

#[test]
fn macro_model_trains_with_the_interpreted_losses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recipe = dsv3c_spec::config::load_recipe(&root.join("tests/fixtures/configs/tiny-quick.yaml")).unwrap();
    let tok = Tokenizer::by_name("gpt2", root).unwrap();
    let (tokens, _) = corpus::load(root, &tok, "gpt2", &root.join("runs/cache")).unwrap();
    let tokens = Arc::new(tokens);
    let run = || RunState::fresh(5, String::new(), "tiny".into());
    let interpreted = dsv3c_codegen::compile(&recipe.spec, 2, 32).unwrap();
    let embedded = tiny::program();
    let model = tiny::Model::new();
    let mut a = Trainer::on_cpu(&interpreted, &interpreted, &recipe.config, tokens.clone(), run(), None).unwrap();
    let mut b = Trainer::on_cpu(&embedded, &model, &recipe.config, tokens, run(), None).unwrap();
    for _ in 0..3 {
        let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
        assert_eq!(ra.loss, rb.loss);
        assert_eq!(ra.total_loss, rb.total_loss);
        assert_eq!(ra.grad_norm, rb.grad_norm);
    }
    assert_eq!(a.backend.params, b.backend.params);
    assert_eq!(a.backend.optim, b.backend.optim);
}

#[test]
fn macro_graph_rs_snapshot_of_tiny() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    let program = dsv3c_codegen::compile(&spec(), 2, 32).unwrap();
    insta::assert_snapshot!("graph_rs_tiny_2x32", dsv3c_codegen::rust::source(&program, &text).unwrap());
}
