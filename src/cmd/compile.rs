//! `dsv3c compile SPEC [--out DIR] [--batch B] [--seq S]`: the training graph as Rust
//! (`DIR/graph.rs`) and the static memory plan (`DIR/plan.json`). CUDA kernels (`DIR/kernels/`)
//! come with the CUDA-codegen issue.

use std::path::PathBuf;
use std::process::ExitCode;

use miette::{miette, IntoDiagnostic, Result, WrapErr};

use super::load_spec;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model spec (YAML).
    pub spec: PathBuf,
    /// Output folder [default: generated/<spec name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sequences per batch the graph is specialized for.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per sequence [default: min(4096, max_seq_len)].
    #[arg(long)]
    pub seq: Option<usize>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.spec)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", a.spec.display()))?;
    let spec = load_spec(&a.spec)?;
    let seq = a.seq.unwrap_or(spec.max_seq_len.min(4096) as usize);
    let program = dsv3c_codegen::compile(&spec, a.batch, seq).map_err(|e| miette!("{e}"))?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("generated").join(&spec.name));
    std::fs::create_dir_all(&out).into_diagnostic().wrap_err_with(|| format!("cannot create {}", out.display()))?;
    let graph = dsv3c_codegen::rust::source(&program, &text).map_err(|e| miette!("{e}"))?;
    std::fs::write(out.join("graph.rs"), graph).into_diagnostic()?;
    let plan = dsv3c_codegen::plan::to_json(&program);
    std::fs::write(out.join("plan.json"), plan).into_diagnostic()?;
    println!(
        "{}: {} kernels, {} + {} launches, arena {:.1} MiB, parameters {:.1} MiB -> {}",
        spec.name,
        program.kernels.len(),
        program.forward.len(),
        program.backward.len(),
        program.act_len as f64 * 4.0 / 1048576.0,
        program.param_len as f64 * 4.0 / 1048576.0,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
