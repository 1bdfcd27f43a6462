//! `dsv3c bench kernels SPEC [--device cuda|sim] [--batch B] [--seq S] [--decode [--kv-cache ..]] [--reps N] [--sample-blocks N]
//! [--ptxas PATH] [--only TEXT] [--json]`: every kernel of a spec's training step (start, one
//! micro-batch's forward and backward, update) — or with `--decode` of its one-token decode step over a
//! latent cache of `--seq` positions — each over valid random arguments in the dtypes its
//! launches pass, through the [`Device`] seam. On `cuda` each kernel is timed with CUDA events (warm-up,
//! then the median of `--reps` runs, each behind a memset that flushes the L2 and hides the launch); on `sim` the PTX emulator runs a sample of each launch's blocks and
//! its counters give an H100 lower bound (an estimate, labelled so) and the emulator's own speed. Each row
//! carries the op's useful FLOPs and the bytes its arguments span, and the fraction of the GPU's peak
//! (tensor or FMA FLOP/s for its operand dtype; DRAM bandwidth) that the time reaches. The step's total
//! weighs each kernel by its launches per step. `dsv3c bench sim` is this command on `sim`.

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_codegen::cuda::check;
use dsv3c_ptx::estimate::{self, Hardware, Resources};
use dsv3c_ptx::Options;
use dsv3c_runtime::device::{cuda::Cuda, sim::Sim, Device, Ptr};
use dsv3c_runtime::gpu::cache::Compiled;
use dsv3c_runtime::gpu::{self, PtxCache};
use dsv3c_runtime::program::{DeviceCode, Kernel};
use dsv3c_runtime::sample::{self, Rng};
use dsv3c_runtime::{DType, Op};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use rayon::prelude::*;

use super::load_spec;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchDevice {
    Cuda,
    /// The PTX emulator: counters and estimates, not times.
    Sim,
}

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// The model spec (YAML).
    pub spec: PathBuf,
    /// cuda: event times; sim: the emulator's counters and estimates [default: cuda].
    #[arg(long, value_enum)]
    pub device: Option<BenchDevice>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per sequence [default: min(4096, max_seq_len)].
    #[arg(long)]
    pub seq: Option<usize>,
    /// On cuda: timed runs of each kernel after three warm-up runs (the median is reported).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub reps: u64,
    /// On sim: blocks run per launch (spread over the grid); the counters are scaled to the whole grid.
    #[arg(long, default_value_t = 4)]
    pub sample_blocks: u64,
    /// ptxas, for each entry's registers (`ptxas -v`); without it occupancy ignores registers.
    #[arg(long)]
    pub ptxas: Option<PathBuf>,
    /// Run only kernels whose file name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// The one-token decode step's kernels instead of the training step's: `--batch` sequences over a
    /// latent cache of `--seq` positions (every position read).
    #[arg(long)]
    pub decode: bool,
    /// The decode step's cache (with --decode).
    #[arg(long, value_enum, default_value = "bf16", requires = "decode")]
    pub kv_cache: super::generate::CacheArg,
    #[arg(long)]
    pub json: bool,
}

/// The largest argument filled with random data on the emulator; larger ones are zero pages the host
/// backs only where the sampled blocks reach. On a GPU every argument is random (timing on zeros flatters
/// a kernel: less power, higher clocks).
const SIM_FILL_LIMIT_BYTES: usize = 256 << 20;
/// Zeroed before each timed run on a GPU: more than an H100's or H200's 50 MB L2.
const FLUSH_BYTES: usize = 256 << 20;
/// On a GPU an argument over this is filled by repeating a random prefix of this size.
const GPU_FILL_CHUNK_BYTES: usize = 64 << 20;

/// Registers per entry from `ptxas -v`.
fn registers(ptxas: &PathBuf, stem: &str, ptx: &str) -> Result<Vec<(String, u32)>> {
    let dir = std::env::temp_dir().join(format!("dsv3c-bench-kernels-{}", std::process::id()));
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
            current = line[i + 26..].split('\'').next().map(str::to_string);
        }
        if let (Some(name), Some(i)) = (&current, line.find("Used ")) {
            if let Some(n) = line[i + 5..].split_whitespace().next().and_then(|n| n.parse().ok()) {
                regs.push((name.clone(), n));
            }
        }
    }
    Ok(regs)
}

/// The op's useful floating-point operations: the matrix products (a multiply-add is two) and
/// attention's two products per query-key pair, causal or windowed; elementwise work counts nothing
/// (those kernels are judged by their bytes).
pub fn flops(op: &Op) -> f64 {
    match op {
        Op::Gemm { m, n, k, .. } => 2.0 * (*m * *n * *k) as f64,
        Op::GroupedGemm { rows, n, k, .. } => 2.0 * (*rows * *n * *k) as f64,
        Op::Attention(a) | Op::AttentionBwd(a) => {
            let s = a.seq as f64;
            // Keys each query sees, summed over queries: s(s+1)/2 causal, at most the window.
            let pairs = match a.window {
                Some((w, sinks)) => {
                    (0..a.seq).map(|q| ((q + 1).min(w) + sinks.min(q + 1 - (q + 1).min(w))) as f64).sum()
                }
                None => s * (s + 1.0) / 2.0,
            };
            let fwd = 2.0 * (a.batch * a.heads) as f64 * pairs * ((a.nope + a.rope) + a.v) as f64;
            // The backward recomputes the scores and forms dQ, dK, dV and dP: 2.5 forwards (FA2's count).
            if matches!(op, Op::AttentionBwd(_)) {
                2.5 * fwd
            } else {
                fwd
            }
        }
        // Absorbed decode attention over the whole cache (the benchmark's positions reach its end):
        // q_lat·c and q_pe·k_pe per key, then p·c.
        Op::LatentAttention(a) => {
            let c = a.cache;
            2.0 * (a.tokens() * a.heads * c.len * (2 * c.kvr + c.rope)) as f64
        }
        Op::AbsorbQuery(h) => 2.0 * (h.tokens * h.heads * h.nope * h.kvr) as f64,
        Op::AbsorbOutput(h) => 2.0 * (h.tokens * h.heads * h.v * h.kvr) as f64,
        _ => 0.0,
    }
}

/// Bytes the op's arguments span in the dtypes the kernel stores them in — what reading each input and
/// writing each output once costs — except an embedding table, of which a gather touches only the
/// rows of its tokens.
pub fn bytes(k: &Kernel) -> f64 {
    let mut lens = check::footprint(&k.op);
    if let Op::Embedding { n, vocab, d } | Op::EmbeddingBwd { n, vocab, d } = k.op {
        let table = if matches!(k.op, Op::Embedding { .. }) { 1 } else { 2 };
        lens[table] = n.min(vocab) * d;
    }
    lens.iter().zip(&k.dtypes).map(|(&n, d)| (n * d.size()) as f64).sum()
}

/// The peak FLOP/s for the kernel's operands: FP8 tensor cores if any is e4m3, bf16 tensor cores if any
/// is bf16, else FP32 FMA.
fn peak_flops(k: &Kernel, hw: &Hardware) -> f64 {
    if k.dtypes.contains(&DType::E4m3) {
        hw.tensor_fp8
    } else if k.dtypes.contains(&DType::Bf16) {
        hw.tensor_16
    } else {
        hw.fp32
    }
}

struct Row {
    stem: String,
    family: &'static str,
    launches: usize,
    entries: usize,
    /// Median seconds (cuda) or the estimate's lower bound (sim).
    seconds: f64,
    flops: f64,
    bytes: f64,
    peak_flops: f64,
    // The emulator's view (sim only).
    bound_by: &'static str,
    regs: Option<u32>,
    occupancy: Option<(f64, &'static str)>,
    lane_insts: u64,
    host_s: f64,
}

/// Allocates and fills one kernel's arguments; returns their addresses.
fn arguments<D: Device>(device: &mut D, k: &Kernel, names: &[String], sim: bool, seed: u64) -> Result<Vec<Ptr>> {
    let lens = check::footprint(&k.op);
    let limit = if sim { SIM_FILL_LIMIT_BYTES } else { GPU_FILL_CHUNK_BYTES };
    // Index arguments (token ids, expert ids and offsets) are small at every size, so the sample's
    // routing and gathers stay valid; an argument over the limit gets a random prefix (repeated on a
    // GPU, left zero on the emulator).
    let filled: Vec<usize> =
        lens.iter().zip(&k.dtypes).map(|(&n, d)| if n * d.size() > limit { limit / d.size() } else { n }).collect();
    let values = sample::args(&k.op, &filled, &mut Rng::new(seed));
    let mut ptrs = Vec::with_capacity(lens.len());
    for (i, ((v, &d), &n)) in values.iter().zip(&k.dtypes).zip(&lens).enumerate() {
        let name = names.get(i).map_or("arg", String::as_str);
        let total = n * d.size();
        let p = device.alloc(name, total).map_err(|e| miette!("allocating {name} ({total} B): {e}"))?;
        let mut bytes = vec![0u8; v.len() * d.size()];
        dsv3c_runtime::dtype::encode(d, v, &mut bytes);
        let repeat = if sim { 1 } else { total.div_ceil(bytes.len().max(1)) };
        for r in 0..repeat {
            let at = r * bytes.len();
            let len = bytes.len().min(total - at);
            device.write(p + at as u64, &bytes[..len]).map_err(|e| miette!("writing {name}: {e}"))?;
        }
        ptrs.push(p);
    }
    Ok(ptrs)
}

pub fn run(a: KernelArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let seq = a.seq.unwrap_or(spec.max_seq_len.min(4096) as usize);
    let mut program = if a.decode {
        let shape = dsv3c_codegen::DecodeShape {
            batch: a.batch,
            per_seq: 1,
            cache_len: seq,
            cache: a.kv_cache.into(),
            absorbed: true,
            draft: false,
            last_only: false,
        };
        dsv3c_codegen::compile_decode(&spec, shape).map_err(|e| miette!("{e}"))?
    } else {
        dsv3c_codegen::compile(&spec, a.batch, seq).map_err(|e| miette!("{e}"))?
    };
    for k in &mut program.kernels {
        if k.device.is_err() {
            k.device = dsv3c_codegen::cuda::device_code(k);
        }
    }
    dsv3c_runtime::nvrtc::ensure_loaded().map_err(|e| miette!("{e}"))?;
    match a.device.unwrap_or(BenchDevice::Cuda) {
        BenchDevice::Sim => {
            let options = Options { sample_blocks: Some(a.sample_blocks), parallel: false, ..Options::default() };
            bench(Sim::with_options(options), &a, &program, seq, &estimate::H100)
        }
        BenchDevice::Cuda => {
            let cuda = Cuda::new(0)
                .map_err(|e| miette!(help = "use --device sim for the emulator's estimates", "--device cuda: {e}"))?;
            let hw = if cuda.describe().contains("H200") { estimate::H200 } else { estimate::H100 };
            eprintln!("device: {} (peaks of the {})", cuda.describe(), hw.name);
            bench(cuda, &a, &program, seq, &hw)
        }
    }
}

fn bench<D: Device + 'static>(
    mut device: D,
    a: &KernelArgs,
    program: &dsv3c_runtime::Program,
    seq: usize,
    hw: &Hardware,
) -> Result<ExitCode> {
    let sim = a.device == Some(BenchDevice::Sim);
    // A training step runs every list; a decode step its forward (the weights' copy runs once, before
    // the first step).
    let mut uses = vec![0usize; program.kernels.len()];
    let per_step: Vec<&dsv3c_runtime::Launch> = match &program.decode {
        Some(_) => program.forward.iter().collect(),
        None => program.launches().collect(),
    };
    for l in per_step {
        uses[l.kernel] += 1;
    }
    let chosen: Vec<(usize, &DeviceCode)> = program
        .kernels
        .iter()
        .enumerate()
        .filter(|(i, _)| uses[*i] > 0)
        .filter_map(|(i, k)| k.device.as_ref().ok().map(|c| (i, c)))
        .filter(|(_, c)| a.only.as_ref().is_none_or(|o| c.stem.contains(o.as_str())))
        .collect();
    let skipped: Vec<String> = program
        .kernels
        .iter()
        .filter_map(|k| k.device.as_ref().err().map(|why| format!("{}: {why}", k.op.family())))
        .collect();
    for s in &skipped {
        eprintln!("no device code, not run: {s}");
    }
    let (arch, driver) = (device.arch(), device.driver());
    eprintln!("compiling {} kernels for {arch} (NVRTC, through the cache)", chosen.len());
    let cache = PtxCache::new();
    let cubin = device.wants_cubin();
    let compiled: Vec<Compiled> = chosen
        .par_iter()
        .map(|(_, c)| {
            cache.compiled(&c.stem, &c.source, &arch, &driver, cubin).map(|p| p.0).map_err(|e| miette!("{e}"))
        })
        .collect::<Result<_>>()?;
    let flush = if sim { 0 } else { device.alloc("l2 flush", FLUSH_BYTES).map_err(|e| miette!("{e}"))? };
    let mut rows = Vec::new();
    for ((ki, code), module) in chosen.iter().zip(&compiled) {
        let k = &program.kernels[*ki];
        let names: Vec<String> = k.op.signature().iter().map(|s| s.name.to_string()).collect();
        let loaded = gpu::load_kernel(&mut device, code, module.image()).map_err(|e| miette!("{e}"))?;
        let ptrs = arguments(&mut device, k, &names, sim, 0x5eed ^ *ki as u64)?;
        let launch_all = |device: &mut D| -> Result<()> {
            for (name, f, dims) in &loaded.entries {
                device.launch(*f, *dims, &ptrs).map_err(|e| miette!("{}::{name} ({dims}): {e}", code.stem))?;
            }
            Ok(())
        };
        let mut row = Row {
            stem: code.stem.clone(),
            family: k.op.family(),
            launches: uses[*ki],
            entries: loaded.entries.len(),
            seconds: 0.0,
            flops: flops(&k.op),
            bytes: bytes(k),
            peak_flops: peak_flops(k, hw),
            bound_by: "",
            regs: None,
            occupancy: None,
            lane_insts: 0,
            host_s: 0.0,
        };
        if sim {
            let regs = match (&a.ptxas, module) {
                (Some(p), Compiled::Ptx(text)) => registers(p, &code.stem, text)?,
                _ => Vec::new(),
            };
            for (name, f, dims) in &loaded.entries {
                let start = std::time::Instant::now();
                let launched = device.launch(*f, *dims, &ptrs);
                row.host_s += start.elapsed().as_secs_f64();
                let rep = sim_report(&device).ok_or_else(|| miette!("{}::{name}: no report", code.stem))?;
                if let Err(e) = launched {
                    // A sampled run's findings are reported, not fatal: its outputs are not checked.
                    eprintln!("{}::{name}: {e}", code.stem);
                }
                let reg = regs.iter().find(|(n, _)| n == name).map(|r| r.1);
                let res = Resources {
                    threads_per_block: dims.block[0],
                    regs_per_thread: reg,
                    smem_per_block: device.static_smem(*f).unwrap_or(0) + dims.dynamic_smem,
                };
                let est = estimate::estimate(&rep, &res, hw);
                if est.seconds >= row.seconds / row.entries as f64 || row.bound_by.is_empty() {
                    row.bound_by = est.bound_by;
                    row.occupancy = Some((est.occupancy.fraction, est.occupancy.limiter));
                }
                row.seconds += est.seconds;
                row.regs = row.regs.max(reg);
                row.lane_insts += rep.counters.lane_insts;
            }
            eprintln!("  {}: {:.2} s", code.stem, row.host_s);
        } else {
            for _ in 0..3 {
                launch_all(&mut device)?;
            }
            let (e0, e1) = (device.event().map_err(|e| miette!("{e}"))?, device.event().map_err(|e| miette!("{e}"))?);
            let mut times = Vec::with_capacity(a.reps as usize);
            for _ in 0..a.reps {
                // Each run starts behind a memset of a buffer larger than the L2: the GPU is busy while
                // the host queues the launch (no launch gap is timed) and the arguments start cold.
                device.zero(flush, FLUSH_BYTES).map_err(|e| miette!("{e}"))?;
                device.record(e0).map_err(|e| miette!("{e}"))?;
                launch_all(&mut device)?;
                device.record(e1).map_err(|e| miette!("{e}"))?;
                times.push(device.elapsed(e0, e1).map_err(|e| miette!("{}: {e}", code.stem))?);
            }
            times.sort_by(f64::total_cmp);
            row.seconds = times[times.len() / 2];
            eprintln!("  {}: median {} of {}", code.stem, fmt_time(row.seconds), times.len());
        }
        for p in ptrs {
            device.free(p).map_err(|e| miette!("{e}"))?;
        }
        rows.push(row);
    }
    print(a, program, seq, hw, &rows, &skipped)
}

/// The emulator's report of the last launch (`None` off the emulator).
fn sim_report<D: Device + 'static>(device: &D) -> Option<dsv3c_ptx::Report> {
    (device as &dyn std::any::Any).downcast_ref::<Sim>().and_then(|s| s.last_report().cloned())
}

fn print(
    a: &KernelArgs,
    program: &dsv3c_runtime::Program,
    seq: usize,
    hw: &Hardware,
    rows: &[Row],
    skipped: &[String],
) -> Result<ExitCode> {
    let sim = a.device == Some(BenchDevice::Sim);
    let step: f64 = rows.iter().map(|r| r.seconds * r.launches as f64).sum();
    let step_flops: f64 = rows.iter().map(|r| r.flops * r.launches as f64).sum();
    let lanes: u64 = rows.iter().map(|r| r.lane_insts).sum();
    let host: f64 = rows.iter().map(|r| r.host_s).sum();
    let frac = |r: &Row| {
        let t = r.seconds.max(1e-12);
        (r.flops / t / r.peak_flops, r.bytes / t / hw.dram_bytes_per_s)
    };
    if a.json {
        let doc = serde_json::json!({
            "spec": program.name, "batch": a.batch, "seq": seq, "device": if sim { "sim" } else { "cuda" },
            "hardware": hw.name, "step_seconds": step, "step_flops": step_flops, "skipped": skipped,
            "emulator_lane_instructions": lanes, "emulator_host_seconds": host,
            "kernels": rows.iter().map(|r| {
                let (f, b) = frac(r);
                serde_json::json!({
                    "file": r.stem, "op": r.family, "launches": r.launches, "entries": r.entries,
                    "seconds": r.seconds, "estimate": sim, "flops": r.flops, "bytes": r.bytes,
                    "fraction_of_peak_flops": f, "fraction_of_dram_bandwidth": b,
                    "bound_by": r.bound_by, "registers": r.regs,
                    "occupancy": r.occupancy.map(|o| o.0), "occupancy_limiter": r.occupancy.map(|o| o.1),
                    "lane_instructions": r.lane_insts, "host_seconds": r.host_s,
                })
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    let time_col = if sim { "H100 lower bound (estimate)" } else { "median time" };
    if sim {
        println!("| kernel | op | launches/step | {time_col} | bound by | regs | occupancy | GFLOP | MB | % of peak FLOP/s | % of DRAM B/W | emulator lane-inst/s |");
        println!("|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|");
    } else {
        println!("| kernel | op | launches/step | {time_col} | GFLOP | MB | TFLOP/s | % of peak FLOP/s | GB/s | % of DRAM B/W |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for r in rows {
        let (f, b) = frac(r);
        let t = r.seconds.max(1e-12);
        if sim {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.2} | {:.0}% | {:.0}% | {:.1} M |",
                r.stem,
                r.family,
                r.launches,
                fmt_time(r.seconds),
                r.bound_by,
                r.regs.map_or("?".into(), |v| v.to_string()),
                r.occupancy.map_or("?".into(), |(o, l)| format!("{:.0}% ({l})", o * 100.0)),
                r.flops / 1e9,
                r.bytes / 1e6,
                f * 100.0,
                b * 100.0,
                r.lane_insts as f64 / r.host_s.max(1e-9) / 1e6
            );
        } else {
            println!(
                "| {} | {} | {} | {} | {:.3} | {:.2} | {:.1} | {:.0}% | {:.0} | {:.0}% |",
                r.stem,
                r.family,
                r.launches,
                fmt_time(r.seconds),
                r.flops / 1e9,
                r.bytes / 1e6,
                r.flops / t / 1e12,
                f * 100.0,
                r.bytes / t / 1e9,
                b * 100.0
            );
        }
    }
    println!();
    if sim {
        println!(
            "emulator: {:.1} M lane instructions in {:.2} s on one host thread = {:.1} M lane-instructions/s",
            lanes as f64 / 1e6,
            host,
            lanes as f64 / host.max(1e-9) / 1e6
        );
        println!(
            "{} estimate of one step's launches (a lower bound from the counters, not a measurement): {}",
            hw.name,
            fmt_time(step)
        );
    } else {
        println!(
            "one step's launches, each kernel timed alone: {} ({:.1} TFLOP/s of matrix math, {:.0}% of the {} bf16 peak)",
            fmt_time(step),
            step_flops / step.max(1e-12) / 1e12,
            step_flops / step.max(1e-12) / hw.tensor_16 * 100.0,
            hw.name
        );
    }
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
