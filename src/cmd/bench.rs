//! `dsv3c bench train [--config configs/tiny.yaml] [--steps N] [--device cpu|cuda|sim|auto]
//! [--hf-comparable] [--profile] [--json]`: tokens/s of full training steps (forward, backward,
//! optimizer) on a device, median of N steps after two warm-up steps, and on a GPU the model FLOPs
//! utilization (MFU: the spec's training FLOPs per token, MTP included, times tokens/s, over the
//! dense bf16 peak). `--profile` (CPU and emulator) also times every launch and prints the time per
//! op family per step, sorted, with the matrix products' GFLOP/s. `dsv3c bench gemm [--n 2048]`: the
//! CPU backend's f32 GEMM rate on square products.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use dsv3c_runtime::profile::{Profile, Profiled};
use dsv3c_runtime::program::{Backend, Program};
use dsv3c_runtime::train::checkpoint::RunState;
use dsv3c_runtime::train::trainer::Trainer;
use dsv3c_spec::config::RunConfig;
use miette::{miette, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Tokens/s of the training step of a recipe's model.
    Train(TrainArgs),
    /// Every kernel of a spec's training step on a device: times on cuda, estimates on sim.
    Kernels(super::bench_kernels::KernelArgs),
    /// `bench kernels --device sim`: every kernel in the PTX emulator, its speed and H100 estimates.
    Sim(super::bench_kernels::KernelArgs),
    /// The CPU backend's f32 GEMM rate on square products (the rate a CPU step is a fraction of).
    Gemm(GemmArgs),
}

#[derive(clap::Args, Debug)]
pub struct GemmArgs {
    /// m = n = k.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=16384))]
    pub n: u64,
    /// Timed products (after one warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeats: u64,
    #[arg(long)]
    pub json: bool,
}

/// `C = A·B` through the CPU backend's GEMM op on random operands, median time of `repeats`.
fn gemm_rate(a: GemmArgs) -> Result<ExitCode> {
    use dsv3c_runtime::op::{Op, Quant};
    let n = a.n as usize;
    let op =
        Op::Gemm { m: n, n, k: n, lda: n, ldb: n, ldc: n, ta: false, tb: false, accumulate: false, quant: Quant::None };
    let mut rng = dsv3c_runtime::init::SplitMix64::new(1);
    let mut operand = || (0..n * n).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
    let mut args = vec![operand(), operand(), vec![0.0; n * n]];
    dsv3c_runtime::cpu::run_op(&op, &mut args);
    let mut times: Vec<f64> = (0..a.repeats)
        .map(|_| {
            let t = std::time::Instant::now();
            dsv3c_runtime::cpu::run_op(&op, &mut args);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gflops = 2.0 * (n as f64).powi(3) / median / 1e9;
    let threads = rayon::current_num_threads();
    if a.json {
        println!("{}", serde_json::json!({ "n": n, "threads": threads, "median_s": median, "gflops": gflops }));
    } else {
        println!(
            "f32 GEMM {n}x{n}x{n}: median {:.1} ms over {} products, {gflops:.1} GFLOP/s, {threads} threads",
            median * 1e3,
            times.len()
        );
    }
    Ok(ExitCode::SUCCESS)
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
    /// Time every launch and print the time per op family per step (cpu and sim: their launches
    /// run synchronously; a GPU's kernels are timed by `bench kernels --device cuda`).
    #[arg(long)]
    pub profile: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(b: Bench) -> Result<ExitCode> {
    let a = match b {
        Bench::Train(a) => a,
        Bench::Kernels(a) => return super::bench_kernels::run(a),
        Bench::Gemm(a) => return gemm_rate(a),
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
    if a.profile && on_gpu {
        return Err(miette!(
            help = "profile on --device cpu or sim; time a GPU's kernels with `dsv3c bench kernels --device cuda`",
            "--profile times launches on the host, which a GPU runs asynchronously"
        ));
    }
    let backend = device.backend(&program)?;
    // Only a profiled run goes through the timing wrapper: it launches one by one, where a GPU
    // would replay its recorded lists.
    let (mut times, profile) = if a.profile {
        let backend = Profiled::new(backend);
        let profile = backend.profile();
        (timed_steps(&program, backend, &cfg, tokens, run, a.steps, || profile.reset())?, Some(profile))
    } else {
        (timed_steps(&program, backend, &cfg, tokens, run, a.steps, || ())?, None)
    };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tok = cfg.tokens_per_step() as f64;
    let threads = rayon::current_num_threads();
    let per_token = dsv3c_spec::flops::flops(&recipe.spec, cfg.batch.seq_len).training_with_mtp as f64;
    // MFU against an H100/H200 SXM's dense bf16 tensor peak (the same on both).
    let mfu = on_gpu.then(|| per_token * tok / median / dsv3c_ptx::estimate::H100.tensor_16);
    let total: f64 = times.iter().sum();
    let families = profile.map(|p| families(&p, total, times.len()));
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "spec": recipe.spec.name, "hf_comparable": a.hf_comparable, "tokens_per_step": tok, "median_step_s": median,
                "tokens_per_sec": tok / median, "threads": threads, "steps": times.len(), "device": format!("{:?}", a.device).to_lowercase(),
                "training_flops_per_token": per_token, "mfu": mfu, "profile": families.as_ref().map(|f| profile_json(f)) })
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
        if let Some(f) = &families {
            print!("{}", profile_table(f));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds of each of `steps` training steps on `backend`, after two warm-up steps (then `warmed`).
fn timed_steps<B: Backend>(
    program: &Program,
    backend: B,
    cfg: &RunConfig,
    tokens: Arc<Vec<u32>>,
    run: RunState,
    steps: u64,
    warmed: impl FnOnce(),
) -> Result<Vec<f64>> {
    let mut t = Trainer::new(program, program, backend, cfg, tokens, run, None).map_err(|e| miette!("{e}"))?;
    for _ in 0..2 {
        t.step().map_err(|e| miette!("{e}"))?;
    }
    warmed();
    (0..steps)
        .map(|_| {
            let s = std::time::Instant::now();
            t.step().map_err(|e| miette!("{e}"))?;
            Ok(s.elapsed().as_secs_f64())
        })
        .collect()
}

/// One op family's share of the timed steps.
#[derive(Debug)]
struct FamilyTime {
    family: &'static str,
    calls_per_step: f64,
    ms_per_step: f64,
    percent: f64,
    /// Matrix-product GFLOP/s, where the family has matrix products.
    gflops: Option<f64>,
}

/// The profile per step, most time first, and what no launch took (`host: other`: data, the
/// trainer's bookkeeping) last.
fn families(profile: &Profile, total_secs: f64, steps: usize) -> Vec<FamilyTime> {
    let per = |x: f64| x / steps as f64;
    let sorted = profile.sorted();
    let timed: f64 = sorted.iter().map(|(_, f)| f.secs).sum();
    let mut rows: Vec<FamilyTime> = sorted
        .into_iter()
        .map(|(family, f)| FamilyTime {
            family,
            calls_per_step: per(f.calls as f64),
            ms_per_step: per(f.secs) * 1e3,
            percent: 100.0 * f.secs / total_secs,
            gflops: (f.flops > 0 && f.secs > 0.0).then(|| f.flops as f64 / f.secs / 1e9),
        })
        .collect();
    let other = (total_secs - timed).max(0.0);
    rows.push(FamilyTime {
        family: "host: other",
        calls_per_step: 0.0,
        ms_per_step: per(other) * 1e3,
        percent: 100.0 * other / total_secs,
        gflops: None,
    });
    rows
}

fn profile_json(rows: &[FamilyTime]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            serde_json::json!({ "family": r.family, "calls_per_step": r.calls_per_step, "ms_per_step": r.ms_per_step,
                "percent": r.percent, "gflops": r.gflops })
        })
        .collect()
}

fn profile_table(rows: &[FamilyTime]) -> String {
    let mut s = format!("{:<20} {:>8} {:>11} {:>7} {:>9}\n", "op family", "calls", "ms/step", "%", "GFLOP/s");
    for r in rows {
        let gflops = r.gflops.map_or(String::new(), |g| format!("{g:.1}"));
        s += &format!(
            "{:<20} {:>8.0} {:>11.2} {:>7.1} {:>9}\n",
            r.family, r.calls_per_step, r.ms_per_step, r.percent, gflops
        );
    }
    s
}
