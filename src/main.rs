//! The dsv3c command line: parses flags and calls the crates. One module per subcommand.

mod cmd;

use clap::{Parser, Subcommand};

/// dsv3c — a compiler for DeepSeek-V3-family language models: YAML spec in, training program out.
#[derive(Parser)]
#[command(name = "dsv3c", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trains a model from a run recipe (default configs/tiny.yaml, on the CPU).
    Train(cmd::train::Args),
    /// Data preparation.
    #[command(subcommand)]
    Data(cmd::data::Data),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Compiles a spec: the training graph as Rust (graph.rs) and the memory plan (plan.json).
    Compile(cmd::compile::Args),
    /// Parameters (total / active / MTP), FLOPs per token, KV cache and memory per GPU of a spec.
    Inspect(cmd::inspect::Args),
    /// Training tokens per active parameter against the Chinchilla band (20–26).
    Chinchilla(cmd::chinchilla::Args),
    /// Recommends the largest canonical spec and a parallel layout that fit some GPUs.
    Select(cmd::select::Args),
    /// Imports a Hugging Face DeepseekV3/V2 config.json as a spec.
    #[command(name = "import-hf")]
    ImportHf(cmd::hf::ImportArgs),
    /// Loss (and gradients) of a Hugging Face DeepseekV3 checkpoint on given tokens, on the CPU.
    Eval(cmd::eval::Args),
    /// Samples from a checkpoint (training or Hugging Face) through its compiled decode programs.
    Generate(cmd::generate::Args),
    /// Exports a spec as a Hugging Face DeepseekV3 config.json.
    #[command(name = "export-hf")]
    ExportHf(cmd::hf::ExportArgs),
    /// Draws a run's metrics (losses, learning rate, gradient norm, tokens/s, MoE balance) as a PNG.
    Plot(cmd::plot::Args),
    /// The PTX emulator: runs compiled kernels on the CPU with a sanitizer and counters.
    #[command(subcommand)]
    Sim(cmd::sim::Sim),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Compile(a) => cmd::compile::run(a),
        Command::Bench(b) => cmd::bench::run(b),
        Command::Data(d) => cmd::data::run(d),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Chinchilla(a) => cmd::chinchilla::run(a),
        Command::Select(a) => cmd::select::run(a),
        Command::ImportHf(a) => cmd::hf::import(a),
        Command::ExportHf(a) => cmd::hf::export(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Plot(a) => cmd::plot::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Sim(s) => cmd::sim::run(s),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
