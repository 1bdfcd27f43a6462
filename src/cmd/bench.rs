//! `dsv3c bench train [--config configs/tiny.yaml] [--steps N] [--device cpu|cuda|sim|auto]
//! [--hf-comparable] [--json]`: tokens/s of full training steps (forward, backward, optimizer) on a
//! device, median of N steps after two warm-up steps, and on a GPU the model FLOPs utilization (MFU:
//! the spec's training FLOPs per token, MTP included, times tokens/s, over the dense bf16 peak).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use dsv3c_runtime::train::checkpoint::RunState;
use dsv3c_runtime::train::trainer::Trainer;
use miette::{miette, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Tokens/s of the training step of a recipe's model.
    Train(TrainArgs),
    /// Every kernel of a spec's training step on a device: times on cuda, estimates on sim.
    Kernels(super::bench_kernels::KernelArgs),
    /// `bench kernels --device sim`: every kernel in the PTX emulator, its speed and H100 estimates.
    Sim(super::bench_kernels::KernelArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[arg(long, default_value = "configs/tiny.yaml")]
    pub config: PathBuf,
    /// Timed steps (after two warm-up steps).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Drop MTP and the balance loss: the model transformers' DeepseekV3 runs.
    #[arg(long)]
    pub hf_comparable: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: super::device::Device,
    #[arg(long)]
    pub json: bool,
}

pub fn run(b: Bench) -> Result<ExitCode> {
    let a = match b {
        Bench::Train(a) => a,
        Bench::Kernels(a) => return super::bench_kernels::run(a),
        Bench::Sim(a) => {
            if a.device == Some(super::bench_kernels::BenchDevice::Cuda) {
                return Err(miette!("bench sim runs on the emulator; use bench kernels --device cuda"));
            }
            return super::bench_kernels::run(super::bench_kernels::KernelArgs {
                device: Some(super::bench_kernels::BenchDevice::Sim),
                ..a
            });
        }
    };
    let path = super::train::resolve(&a.config);
    let mut recipe = dsv3c_spec::config::load_recipe(&path).map_err(miette::Report::new)?;
    if a.hf_comparable {
        recipe.spec.mtp = None;
        if let Some(m) = recipe.spec.moe.as_mut() {
            m.seq_aux_alpha = 0.0;
        }
    }
    let cfg = recipe.config.clone();
    let device = super::device::open(a.device)?;
    let on_gpu = matches!(device, super::device::Opened::Cuda(_));
    let program = super::train::compile(&recipe)?;
    let tokens = Arc::new(super::train::corpus_tokens(&recipe)?);
    let run = RunState::fresh(cfg.seed, String::new(), recipe.spec.name.clone());
    let backend = device.backend(&program)?;
    let mut t = Trainer::new(&program, &program, backend, &cfg, tokens, run, None).map_err(|e| miette!("{e}"))?;
    for _ in 0..2 {
        t.step().map_err(|e| miette!("{e}"))?;
    }
    let mut times: Vec<f64> = Vec::new();
    for _ in 0..a.steps {
        let s = std::time::Instant::now();
        t.step().map_err(|e| miette!("{e}"))?;
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tok = cfg.tokens_per_step() as f64;
    let threads = rayon::current_num_threads();
    let per_token = dsv3c_spec::flops::flops(&recipe.spec, cfg.batch.seq_len).training_with_mtp as f64;
    // MFU against an H100/H200 SXM's dense bf16 tensor peak (the same on both).
    let mfu = on_gpu.then(|| per_token * tok / median / dsv3c_ptx::estimate::H100.tensor_16);
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "spec": recipe.spec.name, "hf_comparable": a.hf_comparable, "tokens_per_step": tok, "median_step_s": median,
                "tokens_per_sec": tok / median, "threads": threads, "steps": times.len(), "device": format!("{:?}", a.device).to_lowercase(),
                "training_flops_per_token": per_token, "mfu": mfu })
        );
    } else {
        let mfu = mfu.map_or(String::new(), |m| format!(", MFU {:.1}% of 989 TFLOP/s bf16", m * 100.0));
        println!(
            "{}{}: {} tokens/step, median step {:.1} ms over {} steps, {:.0} tok/s{mfu}, {threads} host threads",
            recipe.spec.name,
            if a.hf_comparable { " (no MTP, no balance loss)" } else { "" },
            tok,
            median * 1e3,
            times.len(),
            tok / median
        );
    }
    Ok(ExitCode::SUCCESS)
}
