//! `dsv3c select --gpus N --gpu-memory GB [--seq-len S] [--json]`

use std::process::ExitCode;

use dsv3c_spec::inspect::{human_bytes, human_count};
use dsv3c_spec::select::select;
use miette::{miette, Result};

use super::RunFlags;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of GPUs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub gpus: u64,
    /// Memory of one GPU in GB (1e9 bytes), e.g. 80 for an H100.
    #[arg(long)]
    pub gpu_memory: f64,
    /// Training sequence length.
    #[arg(long, default_value_t = 4096)]
    pub seq_len: u64,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunFlags,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if !(a.gpu_memory.is_finite() && a.gpu_memory > 0.0) {
        return Err(miette!("--gpu-memory must be a positive number of GB, got {}", a.gpu_memory));
    }
    if a.seq_len == 0 {
        return Err(miette!("--seq-len must be at least 1"));
    }
    let sel = select(a.gpus, a.gpu_memory, a.run.shape(a.seq_len));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&sel).map_err(|e| miette!("{e}"))?);
        return Ok(if sel.choice.is_some() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    println!(
        "{} GPUs x {} GB, micro-batch {} x {} tokens, ZeRO-{}",
        a.gpus, a.gpu_memory, a.run.micro_batch, a.seq_len, a.run.zero
    );
    println!();
    println!("{:<14} {:>9} {:>9} {:>26} {:>12} {:>12}", "spec", "total", "active", "best layout", "per GPU", "verdict");
    for c in &sel.candidates {
        let (layout, mem, verdict) = match &c.best {
            Some(m) => (m.layout.to_string(), human_bytes(m.total), "fits"),
            None if c.layouts_tried == 0 => ("(no valid layout)".into(), "-".into(), "no layout"),
            None => ("(smallest)".into(), c.min_total.map_or("-".into(), human_bytes), "too big"),
        };
        println!(
            "{:<14} {:>9} {:>9} {:>26} {:>12} {:>12}",
            c.spec,
            human_count(c.total_params as f64),
            human_count(c.active_params as f64),
            layout,
            mem,
            verdict
        );
    }
    println!();
    match sel.choice.as_ref().and_then(|n| sel.candidates.iter().find(|c| &c.spec == n)) {
        Some(c) => {
            let m = c.best.as_ref().expect("the chosen candidate has a layout");
            println!("recommended: spec/{}.yaml with --parallel {}", c.spec, m.layout);
            println!(
                "  weights {} + master {} + gradients {} + optimizer {} + activations {} = {} of {} GB",
                human_bytes(m.weights),
                human_bytes(m.master),
                human_bytes(m.gradients),
                human_bytes(m.optimizer),
                human_bytes(m.activations),
                human_bytes(m.total),
                a.gpu_memory
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("no canonical spec fits {} GPUs of {} GB", a.gpus, a.gpu_memory);
            Ok(ExitCode::FAILURE)
        }
    }
}
