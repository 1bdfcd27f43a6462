//! `dsv3c bench sim SPEC [--batch B] [--seq S] [--sample-blocks N] [--ptxas PATH] [--json]`: every
//! kernel of a spec's training step (start, one micro-batch's forward and backward, update: the optimizer
//! and the balancing bias included) compiled by NVRTC and run in the PTX emulator on valid random arguments, a
//! sample of each launch's blocks on one host thread. Prints, per kernel: the emulator's speed (lane
//! instructions per host second) and an H100 estimate (occupancy from ptxas's registers, and a lower
//! bound on the time from the counters, extrapolated to the whole grid), then the step's sum.

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_codegen::cuda::{self, check};
use dsv3c_ptx::estimate::{self, Resources};
use dsv3c_ptx::{Arg, Global, LaunchConfig, Module, Options};
use dsv3c_runtime::sample::{self, Rng};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use rayon::prelude::*;

use super::load_spec;

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The model spec (YAML).
    pub spec: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per sequence [default: min(4096, max_seq_len)].
    #[arg(long)]
    pub seq: Option<usize>,
    /// Blocks run per launch (spread over the grid); the counters are scaled to the whole grid.
    #[arg(long, default_value_t = 4)]
    pub sample_blocks: u64,
    /// ptxas, for each entry's registers (`ptxas -v`); without it occupancy ignores registers.
    #[arg(long)]
    pub ptxas: Option<PathBuf>,
    /// Run only kernels whose file name contains this.
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The largest argument filled with random data; larger ones are zero pages the OS backs on first touch.
const FILL_LIMIT_BYTES: usize = 256 << 20;

/// Registers per entry from `ptxas -v`.
fn registers(ptxas: &PathBuf, stem: &str, ptx: &str) -> Result<Vec<(String, u32)>> {
    let dir = std::env::temp_dir().join(format!("dsv3c-bench-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).into_diagnostic()?;
    let file = dir.join(format!("{stem}.ptx"));
    std::fs::write(&file, ptx).into_diagnostic()?;
    let out = std::process::Command::new(ptxas)
        .args(["-v", "--gpu-name", "sm_90a", "-o", "/dev/null"])
        .arg(&file)
        .output()
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot run {}", ptxas.display()))?;
    let _ = std::fs::remove_file(&file);
    let log = String::from_utf8_lossy(&out.stderr);
    let mut regs = Vec::new();
    let mut current = None;
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + 26..];
            current = rest.split('\'').next().map(str::to_string);
        }
        if let (Some(name), Some(i)) = (&current, line.find("Used ")) {
            if let Some(n) = line[i + 5..].split_whitespace().next().and_then(|n| n.parse().ok()) {
                regs.push((name.clone(), n));
            }
        }
    }
    Ok(regs)
}

struct Row {
    file: String,
    entry: String,
    launches: usize,
    grid: [u64; 3],
    block: u32,
    blocks_run: u64,
    lane_insts: u64,
    host_s: f64,
    regs: Option<u32>,
    est: estimate::Estimate,
}

pub fn run(a: SimArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let seq = a.seq.unwrap_or(spec.max_seq_len.min(4096) as usize);
    let program = dsv3c_codegen::compile(&spec, a.batch, seq).map_err(|e| miette!("{e}"))?;
    dsv3c_runtime::nvrtc::ensure_loaded().map_err(|e| miette!("{e}"))?;
    let mut uses = vec![0usize; program.kernels.len()];
    for l in program.launches() {
        uses[l.kernel] += 1;
    }
    let kernels: Vec<(usize, cuda::CudaKernel)> = program
        .kernels
        .iter()
        .enumerate()
        .map(|(i, k)| cuda::emit_kernel(k).map(|c| (i, c)).map_err(|e| miette!("{e}")))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, k)| a.only.as_ref().is_none_or(|o| k.stem.contains(o.as_str())))
        .collect();
    eprintln!("compiling {} kernels with NVRTC", kernels.len());
    let ptx: Vec<String> = kernels
        .par_iter()
        .map(|(_, k)| dsv3c_runtime::nvrtc::compile(&k.stem, &k.source, "sm_90a").map_err(|e| miette!("{e}")))
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for ((pi, k), text) in kernels.iter().zip(&ptx) {
        let op = &program.kernels[*pi].op;
        let regs = match &a.ptxas {
            Some(p) => registers(p, &k.stem, text)?,
            None => Vec::new(),
        };
        let lens = check::footprint(op);
        let dtypes = &program.kernels[*pi].dtypes;
        // Arguments too large to fill (the optimizer's state over every parameter, the logits) stay zero:
        // their pages cost the host memory only where the sampled blocks reach. Index arguments (token
        // ids, expert ids and offsets) are small at every size, so routing and gathers see valid data.
        let zero: Vec<bool> = lens.iter().zip(dtypes).map(|(&n, d)| n * d.size() > FILL_LIMIT_BYTES).collect();
        let filled: Vec<usize> = lens.iter().zip(&zero).map(|(&n, &z)| if z { 0 } else { n }).collect();
        let mut rng = Rng::new(0x5eed ^ *pi as u64);
        let args = sample::args(op, &filled, &mut rng);
        let mut global = Global::new();
        let module = Module::load(text, &mut global).map_err(|e| miette!("{}: {e}", k.stem))?;
        // Each argument stored in the dtype the kernel was built for (i32 offsets, bf16, e4m3…).
        let kargs: Vec<Arg> = args
            .iter()
            .zip(dtypes)
            .enumerate()
            .map(|(i, (v, &d))| {
                if zero[i] {
                    return Arg::Ptr(global.alloc(&k.args[i], (lens[i] * d.size()) as u64));
                }
                let mut bytes = vec![0u8; v.len() * d.size()];
                dsv3c_runtime::dtype::encode(d, v, &mut bytes);
                Arg::Ptr(global.alloc_with(&k.args[i], &bytes))
            })
            .collect();
        let zeroed: Vec<String> = (0..lens.len()).filter(|&i| zero[i]).map(|i| k.args[i].clone()).collect();
        if !zeroed.is_empty() {
            eprintln!("  {}: left zero (over {} MiB): {}", k.stem, FILL_LIMIT_BYTES >> 20, zeroed.join(", "));
        }
        for e in &k.entries {
            let cfg = LaunchConfig {
                grid: [e.grid[0] as u32, e.grid[1] as u32, e.grid[2] as u32],
                block: [e.block, 1, 1],
                dynamic_smem: e.dynamic_smem,
            };
            // Every entry is sampled, those that cooperate through global scratch too (a count, then a
            // placement): their later entries see the scratch a sample left. Fine for counting work; the
            // outputs of a sampled run are not checked.
            let opts = Options { sample_blocks: Some(a.sample_blocks), parallel: false, ..Options::default() };
            let start = std::time::Instant::now();
            let rep =
                module.launch(&e.name, &cfg, &kargs, &global, &opts).map_err(|err| miette!("{}: {err}", k.stem))?;
            let host_s = start.elapsed().as_secs_f64();
            let reg = regs.iter().find(|(n, _)| *n == e.name).map(|r| r.1);
            let res = Resources {
                threads_per_block: e.block,
                regs_per_thread: reg,
                smem_per_block: module.kernel(&e.name).map(|x| x.static_smem).unwrap_or(0) + e.dynamic_smem,
            };
            let est = estimate::estimate(&rep, &res, &estimate::H100);
            if !rep.findings.is_empty() {
                eprintln!(
                    "{}::{}: {} sanitizer finding(s), first: {}",
                    k.stem,
                    e.name,
                    rep.findings.len(),
                    rep.findings[0]
                );
            }
            eprintln!("  {} {}: {:.2} s", k.stem, e.name, host_s);
            rows.push(Row {
                file: k.stem.clone(),
                entry: e.name.to_string(),
                launches: uses[*pi],
                grid: e.grid,
                block: e.block,
                blocks_run: rep.blocks_run,
                lane_insts: rep.counters.lane_insts,
                host_s,
                regs: reg,
                est,
            });
        }
    }
    let lanes: u64 = rows.iter().map(|r| r.lane_insts).sum();
    let secs: f64 = rows.iter().map(|r| r.host_s).sum();
    let step: f64 = rows.iter().map(|r| r.est.seconds * r.launches as f64).sum();
    if a.json {
        let doc = serde_json::json!({
            "spec": spec.name, "batch": a.batch, "seq": seq,
            "lane_instructions": lanes, "host_seconds": secs, "lane_instructions_per_second": lanes as f64 / secs.max(1e-9),
            "estimated_step_seconds": step,
            "kernels": rows.iter().map(|r| serde_json::json!({
                "file": r.file, "entry": r.entry, "launches": r.launches, "grid": r.grid, "block": r.block,
                "blocks_run": r.blocks_run, "lane_instructions": r.lane_insts, "host_seconds": r.host_s,
                "registers": r.regs, "occupancy": r.est.occupancy.fraction, "occupancy_limiter": r.est.occupancy.limiter,
                "estimate_seconds": r.est.seconds, "bound_by": r.est.bound_by,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "| kernel | entry | launches/step | grid x block | blocks run | regs | occupancy | H100 lower bound | bound by | emulator lane-inst/s |"
    );
    println!("|---|---|---:|---|---:|---:|---|---:|---|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {}x{}x{} x {} | {} | {} | {:.0}% ({}) | {} | {} | {:.1} M |",
            r.file,
            r.entry,
            r.launches,
            r.grid[0],
            r.grid[1],
            r.grid[2],
            r.block,
            r.blocks_run,
            r.regs.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            r.est.occupancy.fraction * 100.0,
            r.est.occupancy.limiter,
            fmt_time(r.est.seconds),
            r.est.bound_by,
            r.lane_insts as f64 / r.host_s.max(1e-9) / 1e6
        );
    }
    println!();
    println!(
        "emulator: {:.1} M lane instructions in {:.2} s on one host thread = {:.1} M lane-instructions/s",
        lanes as f64 / 1e6,
        secs,
        lanes as f64 / secs.max(1e-9) / 1e6
    );
    println!(
        "H100 estimate of the forward + backward launches (a lower bound from the counters, not a measurement): {}",
        fmt_time(step)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn fmt_time(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.2} us", s * 1e6)
    } else {
        format!("{:.0} ns", s * 1e9)
    }
}
