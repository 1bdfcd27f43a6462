//! Embeds `spec/tiny.yaml` with `dsv3c::model!` at build time and trains it for a few steps on
//! the built-in corpus, through the generated straight-line graph.
//!
//!     cargo run --release --example train_tiny_macro [-- STEPS]

use std::path::Path;
use std::sync::Arc;

use dsv3c::runtime::data::{corpus, tokenizer::Tokenizer};
use dsv3c::runtime::train::checkpoint::RunState;
use dsv3c::runtime::train::trainer::Trainer;

mod tiny {
    // The training graph of spec/tiny.yaml at its recipe's shape (configs/tiny.yaml: 8 x 64).
    dsv3c::model!("spec/tiny.yaml", batch = 8, seq = 64);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recipe = dsv3c::spec::config::load_recipe(&root.join("configs/tiny.yaml"))?;
    let tokenizer = Tokenizer::by_name("gpt2", root)?;
    let (tokens, files) = corpus::load(root, &tokenizer, "gpt2", &root.join("runs/cache"))?;
    println!(
        "model tiny: {} parameters, {} kernels; corpus {files} files, {} tokens",
        tiny::PARAM_LEN,
        tiny::kernels().len(),
        tokens.len()
    );

    let program = tiny::program();
    let model = tiny::Model::new();
    let run = RunState::fresh(recipe.config.seed, String::new(), "tiny".into());
    let mut trainer = Trainer::on_cpu(&program, &model, &recipe.config, Arc::new(tokens), run, None)?;
    for _ in 0..steps {
        let r = trainer.step()?;
        println!("step {} | loss {:.4} | lr {:.2e} | grad-norm {:.2}", r.step, r.loss, r.lr, r.grad_norm);
    }
    Ok(())
}
