//! `dsv3c sim run FILE.ptx --entry NAME --grid X[,Y,Z] --block X[,Y,Z] [--smem BYTES] --arg A... [--json]`:
//! runs one PTX kernel in the emulator (`dsv3c-ptx`) on files. Arguments, in the kernel's parameter order:
//! `in:PATH` (a global buffer holding PATH's bytes), `out:BYTES:PATH` (BYTES bytes filled with 0xFF,
//! written to PATH after the run), `inout:PATH:OUT` (loaded from PATH, written to OUT), and scalars
//! `u32:7`, `s32:-1`, `u64:N`, `f32:0.5`, `f64:0.5`. Prints the counters, an H100 estimate and every
//! sanitizer finding; a finding or an execution error exits non-zero.

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_ptx::estimate::{self, Resources};
use dsv3c_ptx::{Arg, Global, LaunchConfig, Module, Options};
use miette::{miette, IntoDiagnostic, Result, WrapErr};

use super::bench_kernels::fmt_time;

#[derive(clap::Subcommand, Debug)]
pub enum Sim {
    /// Runs one kernel of a PTX file on files (the emulated GPU).
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The PTX file (as NVRTC writes it).
    pub file: PathBuf,
    /// The kernel (`.entry`) to run.
    #[arg(long)]
    pub entry: String,
    /// Blocks: X[,Y[,Z]].
    #[arg(long)]
    pub grid: String,
    /// Threads per block: X[,Y[,Z]].
    #[arg(long)]
    pub block: String,
    /// Dynamic shared memory, bytes.
    #[arg(long, default_value_t = 0)]
    pub smem: u32,
    /// Kernel arguments in parameter order: in:PATH, out:BYTES:PATH, inout:PATH:OUT, u32:V, s32:V,
    /// u64:V, f32:V, f64:V.
    #[arg(long = "arg", num_args = 1..)]
    pub args: Vec<String>,
    /// Registers per thread (from `ptxas -v`), for the occupancy estimate.
    #[arg(long)]
    pub regs: Option<u32>,
    /// Run only this many blocks (spread over the grid) and extrapolate the counters; outputs are partial.
    #[arg(long)]
    pub sample_blocks: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn dims(s: &str, what: &str) -> Result<[u32; 3]> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(miette!("--{what} {s}: expected X[,Y[,Z]]"));
    }
    let mut d = [1u32; 3];
    for (i, p) in parts.iter().enumerate() {
        d[i] = p.trim().parse().map_err(|_| miette!("--{what} {s}: {p:?} is not a positive integer"))?;
        if d[i] == 0 {
            return Err(miette!("--{what} {s}: dimensions must be at least 1"));
        }
    }
    Ok(d)
}

/// An output to write back after the run: the buffer's address, size and destination.
struct Output {
    addr: u64,
    bytes: u64,
    path: PathBuf,
}

fn parse_arg(spec: &str, i: usize, global: &mut Global, outputs: &mut Vec<Output>) -> Result<Arg> {
    let (kind, rest) = spec.split_once(':').ok_or_else(|| miette!("--arg {spec}: expected KIND:VALUE"))?;
    let num = |what: &str| miette!("--arg {spec}: {rest:?} is not a valid {what}");
    let read = |p: &str| -> Result<Vec<u8>> {
        std::fs::read(p).into_diagnostic().wrap_err_with(|| format!("--arg {spec}: cannot read {p}"))
    };
    Ok(match kind {
        "in" => Arg::Ptr(global.alloc_with(&format!("arg{i} ({rest})"), &read(rest)?)),
        "inout" => {
            let (src, out) = rest.split_once(':').ok_or_else(|| miette!("--arg {spec}: expected inout:PATH:OUT"))?;
            let data = read(src)?;
            let addr = global.alloc_with(&format!("arg{i} ({src})"), &data);
            outputs.push(Output { addr, bytes: data.len() as u64, path: PathBuf::from(out) });
            Arg::Ptr(addr)
        }
        "out" => {
            let (n, path) = rest.split_once(':').ok_or_else(|| miette!("--arg {spec}: expected out:BYTES:PATH"))?;
            let bytes: u64 = n.parse().map_err(|_| miette!("--arg {spec}: {n:?} is not a byte count"))?;
            if bytes > 16 << 30 {
                return Err(miette!("--arg {spec}: {bytes} bytes is more than the emulator allocates (16 GiB)"));
            }
            let addr = global.alloc_with(&format!("arg{i} ({path})"), &vec![0xff; bytes as usize]);
            outputs.push(Output { addr, bytes, path: PathBuf::from(path) });
            Arg::Ptr(addr)
        }
        "u32" => Arg::U32(rest.parse().map_err(|_| num("u32"))?),
        "s32" => Arg::S32(rest.parse().map_err(|_| num("s32"))?),
        "u64" => Arg::U64(rest.parse().map_err(|_| num("u64"))?),
        "f32" => Arg::F32(rest.parse().map_err(|_| num("f32"))?),
        "f64" => Arg::F64(rest.parse().map_err(|_| num("f64"))?),
        k => return Err(miette!("--arg {spec}: unknown kind {k:?} (in, out, inout, u32, s32, u64, f32, f64)")),
    })
}

pub fn run(s: Sim) -> Result<ExitCode> {
    match s {
        Sim::Run(a) => run_kernel(a),
    }
}

fn run_kernel(a: RunArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", a.file.display()))?;
    let cfg = LaunchConfig { grid: dims(&a.grid, "grid")?, block: dims(&a.block, "block")?, dynamic_smem: a.smem };
    let mut global = Global::new();
    let module = Module::load(&text, &mut global).map_err(|e| miette!("{}: {e}", a.file.display()))?;
    let mut outputs = Vec::new();
    let args: Vec<Arg> =
        a.args.iter().enumerate().map(|(i, s)| parse_arg(s, i, &mut global, &mut outputs)).collect::<Result<_>>()?;
    let opts = Options { sample_blocks: a.sample_blocks, ..Options::default() };
    let start = std::time::Instant::now();
    let rep = module.launch(&a.entry, &cfg, &args, &global, &opts).map_err(|e| miette!("{e}"))?;
    let secs = start.elapsed().as_secs_f64();
    for o in &outputs {
        let data = global.read(o.addr, o.bytes).map_err(|e| miette!("{e}"))?;
        std::fs::write(&o.path, data)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {}", o.path.display()))?;
    }
    let k = module.kernel(&a.entry).map_err(|e| miette!("{e}"))?;
    let res = Resources {
        threads_per_block: cfg.block.iter().product(),
        regs_per_thread: a.regs,
        smem_per_block: k.static_smem + cfg.dynamic_smem,
    };
    let est = estimate::estimate(&rep, &res, &estimate::H100);
    let c = &rep.counters;
    if a.json {
        let doc = serde_json::json!({
            "kernel": rep.kernel,
            "grid": cfg.grid, "block": cfg.block, "dynamic_smem": cfg.dynamic_smem,
            "blocks_run": rep.blocks_run, "blocks_total": rep.blocks_total,
            "host_seconds": secs,
            "counters": {
                "warp_instructions": c.warp_instructions(),
                "lane_instructions": c.lane_insts,
                "by_class": c.by_class().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "global_load_requests": c.global_load_requests, "global_load_sectors": c.global_load_sectors,
                "global_store_requests": c.global_store_requests, "global_store_sectors": c.global_store_sectors,
                "shared_load_requests": c.shared_load_requests, "shared_store_requests": c.shared_store_requests,
                "shared_wavefronts": c.shared_wavefronts,
                "tensor_ops": c.tensor_ops, "tensor_flops_16": c.tensor_flops_16, "tensor_flops_fp8": c.tensor_flops_fp8,
                "fp32_flops": c.fp32_flops, "fp64_flops": c.fp64_flops,
                "barriers": c.barriers, "atomics": c.atomics,
                "dram_sectors": rep.dram_sectors,
            },
            "estimate": {
                "hardware": estimate::H100.name,
                "note": "a lower bound from the counters, not a measurement",
                "blocks_per_sm": est.occupancy.blocks_per_sm, "warps_per_sm": est.occupancy.warps_per_sm,
                "occupancy": est.occupancy.fraction, "occupancy_limiter": est.occupancy.limiter,
                "registers_known": a.regs.is_some(),
                "seconds": est.seconds, "bound_by": est.bound_by,
                "terms": est.terms.iter().map(|(n, s)| (n.to_string(), *s)).collect::<std::collections::BTreeMap<_, _>>(),
            },
            "findings": rep.findings.iter().map(|f| serde_json::json!({
                "check": f.check.name(), "line": f.line, "block": f.block, "thread": f.thread,
                "message": f.message, "count": f.count,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
    } else {
        println!(
            "{}: grid ({},{},{}) x block ({},{},{}), {} B dynamic shared; {} of {} blocks run in {:.3} s",
            rep.kernel,
            cfg.grid[0],
            cfg.grid[1],
            cfg.grid[2],
            cfg.block[0],
            cfg.block[1],
            cfg.block[2],
            cfg.dynamic_smem,
            rep.blocks_run,
            rep.blocks_total,
            secs
        );
        let classes: Vec<String> = c.by_class().iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!("  instructions: {} warp, {} lane ({})", c.warp_instructions(), c.lane_insts, classes.join(", "));
        let per = |s: u64, r: u64| if r == 0 { 0.0 } else { s as f64 / r as f64 };
        println!(
            "  global: {} load requests / {} sectors ({:.1} per request), {} store requests / {} sectors ({:.1}); {} distinct sectors",
            c.global_load_requests,
            c.global_load_sectors,
            per(c.global_load_sectors, c.global_load_requests),
            c.global_store_requests,
            c.global_store_sectors,
            per(c.global_store_sectors, c.global_store_requests),
            rep.dram_sectors
        );
        println!(
            "  shared: {} loads, {} stores, {} wavefronts ({:.2} per request); tensor: {} mma; barriers {}; atomics {}",
            c.shared_load_requests,
            c.shared_store_requests,
            c.shared_wavefronts,
            per(c.shared_wavefronts, c.shared_load_requests + c.shared_store_requests),
            c.tensor_ops,
            c.barriers,
            c.atomics
        );
        let terms: Vec<String> = est.terms.iter().map(|(n, s)| format!("{n} {}", fmt_time(*s))).collect();
        println!(
            "  estimate ({}; a lower bound, not a measurement): occupancy {} blocks/SM, {} warps ({:.0}%, limited by {}{}); time >= {} (bound by {}: {})",
            estimate::H100.name,
            est.occupancy.blocks_per_sm,
            est.occupancy.warps_per_sm,
            est.occupancy.fraction * 100.0,
            est.occupancy.limiter,
            if a.regs.is_none() { "; registers unknown, pass --regs" } else { "" },
            fmt_time(est.seconds),
            est.bound_by,
            terms.join(", ")
        );
        if rep.findings.is_empty() {
            println!("  sanitizer: clean");
        }
    }
    if !rep.findings.is_empty() {
        eprintln!("sanitizer: {} finding(s)", rep.findings.len());
        for f in &rep.findings {
            eprintln!("  {f}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
