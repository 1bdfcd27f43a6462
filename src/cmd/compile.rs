//! `dsv3c compile SPEC [--out DIR] [--arch sm_90a] [--ptx] [--batch B] [--seq S] [--parallel
//! dp=..,ep=..,pp=.. [--zero 0|1] [--accumulation N] [--moments f32|bf16] [--expert-capacity F]
//! [--json]]`: the specialized CUDA kernels (`DIR/kernels/*.cu`, their launch table
//! `DIR/kernels/kernels.json`, and with `--ptx` each kernel's PTX from NVRTC beside it), the training
//! graph as Rust (`DIR/graph.rs`) and the static memory plan (`DIR/plan.json`) — with `--parallel`,
//! one set per rank role (each pipeline stage) under `DIR/ranks/<role>/`, and each role's bytes
//! beside `inspect`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{miette, IntoDiagnostic, Result, WrapErr};
use rayon::prelude::*;

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
    /// GPU architecture NVRTC compiles for (with --ptx).
    #[arg(long, default_value = "sm_90a")]
    pub arch: String,
    /// Also compile every kernel to PTX with NVRTC (libnvrtc loaded at run time).
    #[arg(long)]
    pub ptx: bool,
    /// Compile the decode programs instead (a prefill of --seq tokens, the one-token step over bf16 and
    /// FP8 latent caches of --seq positions, and the MTP verify step with its draft): their kernels,
    /// launch table and the step's plan [default --out: generated/<spec name>/decode].
    #[arg(long)]
    pub decode: bool,
    /// Compile the per-rank programs of a parallel layout, e.g. dp=8: one per rank role under
    /// DIR/ranks/<role>/ (--batch is the micro-batch of one data-parallel rank).
    #[arg(long, conflicts_with = "decode")]
    pub parallel: Option<String>,
    /// ZeRO stage with --parallel: 1 shards the optimizer state over the data-parallel ranks, 0
    /// replicates it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1), requires = "parallel")]
    pub zero: u8,
    /// Micro-batches a step accumulates per data-parallel rank, with --parallel: a pipeline stage
    /// keeps up to that many in flight under 1F1B (at most its distance from the end) [default: pp,
    /// the most any stage keeps].
    #[arg(long, requires = "parallel")]
    pub accumulation: Option<usize>,
    /// AdamW's moments with --parallel (DeepSeek-V3 keeps them in bf16).
    #[arg(long, value_enum, default_value = "f32", requires = "parallel")]
    pub moments: super::MomentDtype,
    /// With --parallel and ep > 1: each expert keeps at most this many times a balanced share of
    /// the rows (the rest are dropped) [default: every row, with buffers for the worst routing].
    #[arg(long, requires = "parallel", value_parser = super::expert_capacity)]
    pub expert_capacity: Option<f64>,
    /// Selective recomputation: norms, MLA up-projections and SwiGLU products made again in the
    /// backward instead of kept (recipe `recompute: selective`).
    #[arg(long)]
    pub recompute: bool,
    /// DeepSeek-V3's FP8 caching (FP8 specs): the routed experts' inputs, SwiGLU inputs and
    /// outputs kept for the backward as their E4M3 copies (recipe `fp8_cache: true`).
    #[arg(long)]
    pub fp8_cache: bool,
    /// With --parallel, end with one JSON line of each role's bytes.
    #[arg(long, requires = "parallel")]
    pub json: bool,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).into_diagnostic().wrap_err_with(|| format!("cannot write {}", path.display()))
}

pub fn run(a: Args) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.spec)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", a.spec.display()))?;
    let spec = load_spec(&a.spec)?;
    let seq = a.seq.unwrap_or(spec.max_seq_len.min(4096) as usize);
    if !a.arch.starts_with("sm_") || !a.arch[3..].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(miette!("--arch {}: expected an architecture like sm_90a", a.arch));
    }
    if a.decode {
        return decode(&a, &spec, seq);
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("generated").join(&spec.name));
    if let Some(layout) = &a.parallel {
        return parallel(&a, &spec, &text, seq, layout, &out);
    }
    let training = dsv3c_codegen::Training { recompute: a.recompute, fp8_cache: a.fp8_cache, ..Default::default() };
    let program = dsv3c_codegen::compile_training(&spec, a.batch, seq, training).map_err(|e| miette!("{e}"))?;
    let kernels = write_program(&a, &program, &text, &out)?;
    let mib = |b: usize| b as f64 / 1048576.0;
    let m = program.memory();
    let weights = if m.weights > 0 { format!(" (+ {:.1} MiB weight copies)", mib(m.weights)) } else { String::new() };
    println!(
        "{}: {} kernels{}, {} + {} + {} + {} launches (start, forward, backward, update), arena {:.1} MiB, parameters {:.1} MiB{weights}, {:.1} MiB in all -> {}",
        spec.name,
        kernels.len(),
        if a.ptx { format!(" (PTX for {})", a.arch) } else { String::new() },
        program.start.len(),
        program.forward.len(),
        program.backward.len(),
        program.update.len(),
        mib(m.activations),
        mib(m.master),
        mib(m.total()),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes one Program: its kernels (`out/kernels/`), its graph as Rust (`out/graph.rs`) and its plan
/// (`out/plan.json`). Returns the kernels.
fn write_program(
    a: &Args,
    program: &dsv3c_runtime::Program,
    text: &str,
    out: &Path,
) -> Result<Vec<dsv3c_codegen::cuda::CudaKernel>> {
    let kernels = dsv3c_codegen::cuda::emit_program(program).map_err(|e| miette!("cannot emit CUDA: {e}"))?;
    write_kernels(out, program, &kernels, a.ptx.then_some(a.arch.as_str()))?;
    let graph = dsv3c_codegen::rust::source(program, text).map_err(|e| miette!("{e}"))?;
    write(&out.join("graph.rs"), &graph)?;
    write(&out.join("plan.json"), &dsv3c_codegen::plan::to_json(program))?;
    Ok(kernels)
}

/// `compile --parallel`: the programs of a layout's rank roles, each role's bytes, and how they
/// compare with `inspect`'s model of the same layout. A role is a pipeline stage (`stage-S`; the
/// whole model, `rank`, without pipeline parallelism): its ranks hold arenas of the same sizes —
/// they differ only in which routed experts and which ZeRO-1 shard of the optimizer state they
/// hold — and `DIR/ranks/<role>/` holds its first data-parallel rank's program.
fn parallel(a: &Args, spec: &dsv3c_spec::Spec, text: &str, seq: usize, layout: &str, out: &Path) -> Result<ExitCode> {
    use dsv3c_spec::memory::{memory, Layout, RunShape};
    let l = Layout::parse(layout, None).map_err(|e| miette!("--parallel: {e}"))?;
    l.check(spec, l.gpus()).map_err(|e| miette!("--parallel {l}: {e}"))?;
    if let Some(why) = l.unbuilt() {
        return Err(miette!("--parallel {l}: {why}"));
    }
    let mesh = dsv3c_runtime::comm::Mesh { dp: l.dp as usize, ep: l.ep as usize, pp: l.pp as usize };
    let accumulation = a.accumulation.unwrap_or(mesh.pp).max(1);
    let moments = match a.moments {
        super::MomentDtype::F32 => dsv3c_spec::types::Dtype::F32,
        super::MomentDtype::Bf16 => dsv3c_spec::types::Dtype::Bf16,
    };
    let training = dsv3c_codegen::Training {
        optimizer: dsv3c_runtime::op::OptimizerKind::AdamW,
        bf16_moments: moments == dsv3c_spec::types::Dtype::Bf16,
        recompute: a.recompute,
        fp8_cache: a.fp8_cache,
    };
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let mut roles = Vec::new();
    let mut largest = 0usize;
    for stage in 0..mesh.pp {
        let role = if mesh.pp == 1 { "rank".to_string() } else { format!("stage-{stage}") };
        let mut par = dsv3c_codegen::Parallel::of(mesh, stage * mesh.dp, a.zero == 1, accumulation);
        par.expert_capacity = a.expert_capacity;
        let program = dsv3c_codegen::compile_rank(spec, a.batch, seq, training, par).map_err(|e| miette!("{e}"))?;
        let dir = out.join("ranks").join(&role);
        let kernels = write_program(a, &program, text, &dir)?;
        let m = program.memory();
        // Collectives run in place over the arenas, and the expert exchanges' and pipeline
        // messages' buffers are activations of the plan: nothing besides (NCCL's own buffers are
        // the library's).
        let communication = 0usize;
        largest = largest.max(m.total() + communication);
        let collectives = program.launches().filter(|x| program.kernels[x.kernel].op.is_collective()).count();
        eprintln!(
            "{role}: {} rank(s), layers {:?}, {} kernels, {} collective launches, {} micro-batch slot(s): {:.2} GiB = parameters {:.2} + gradients {:.2} + optimizer {:.2} + activations {:.2} + communication {:.2} -> {}",
            mesh.dp,
            dsv3c_spec::memory::stage_layers(spec.n_layers, mesh.pp as u64, stage as u64),
            kernels.len(),
            collectives,
            program.slots().len().max(1),
            gib(m.total() as f64),
            gib((m.master + m.weights) as f64),
            gib(m.gradients as f64),
            gib(m.optimizer as f64),
            gib(m.activations as f64),
            gib(communication as f64),
            dir.display()
        );
        // The report's fields in the documented order (`serde_json`'s maps sort their keys).
        let bytes = [
            ("parameters", m.master + m.weights),
            ("gradients", m.gradients),
            ("optimizer", m.optimizer),
            ("activations", m.activations),
            ("communication", communication),
            ("total", m.total() + communication),
        ]
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .join(", ");
        roles.push(format!("{{\"role\": \"{role}\", \"count\": {}, \"bytes\": {{{bytes}}}}}", mesh.dp));
    }
    let shape = RunShape {
        micro_batch: a.batch as u64,
        seq_len: seq as u64,
        moments,
        zero: a.zero,
        expert_capacity: a.expert_capacity,
        recompute: a.recompute,
        fp8_cache: a.fp8_cache,
    };
    let model = memory(spec, l, shape);
    let diff = (largest as f64 - model.total) / model.total.max(1.0);
    println!(
        "{}: {l}, ZeRO-{}: {} rank(s) in {} role(s); the largest {:.2} GiB, inspect models {:.2} GiB ({:+.1}%)",
        spec.name,
        a.zero,
        mesh.world(),
        roles.len(),
        gib(largest as f64),
        gib(model.total),
        100.0 * diff,
    );
    if a.json {
        println!("{{\"ranks\": [{}]}}", roles.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `out/kernels/`: each kernel's `.cu` (and, with `arch`, its PTX from NVRTC) and the launch
/// table of `program`; removes the `.cu` and `.ptx` files an earlier compile left there.
fn write_kernels(
    out: &Path,
    program: &dsv3c_runtime::Program,
    kernels: &[dsv3c_codegen::cuda::CudaKernel],
    arch: Option<&str>,
) -> Result<()> {
    let kdir = out.join("kernels");
    std::fs::create_dir_all(&kdir).into_diagnostic().wrap_err_with(|| format!("cannot create {}", kdir.display()))?;
    for e in std::fs::read_dir(&kdir).into_diagnostic()?.flatten() {
        let p = e.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("cu" | "ptx")) {
            std::fs::remove_file(&p).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", p.display()))?;
        }
    }
    for k in kernels {
        write(&kdir.join(format!("{}.cu", k.stem)), &k.source)?;
    }
    write(&kdir.join("kernels.json"), &dsv3c_codegen::cuda::manifest(program, kernels))?;
    if let Some(arch) = arch {
        dsv3c_runtime::nvrtc::ensure_loaded().map_err(|e| miette!("{e}"))?;
        let pb = indicatif::ProgressBar::new(kernels.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("NVRTC {bar:40} {pos}/{len} kernels | {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        kernels.par_iter().try_for_each(|k| -> Result<()> {
            let ptx = dsv3c_runtime::nvrtc::compile(&format!("{}.cu", k.stem), &k.source, arch)
                .map_err(|e| miette!("{e}"))?;
            write(&kdir.join(format!("{}.ptx", k.stem)), &ptx)?;
            pb.inc(1);
            Ok(())
        })?;
        pb.finish_and_clear();
    }
    Ok(())
}

/// `dsv3c compile --decode`: the decode programs' kernels, each once, with the one-token step's launch
/// table and plan.
fn decode(a: &Args, spec: &dsv3c_spec::Spec, seq: usize) -> Result<ExitCode> {
    use dsv3c_codegen::{compile_decode, DecodeShape};
    use dsv3c_spec::types::KvCacheDtype;
    let base = DecodeShape {
        batch: a.batch,
        per_seq: seq,
        cache_len: seq,
        cache: KvCacheDtype::Bf16,
        absorbed: false,
        draft: false,
        last_only: true,
    };
    let mut shapes = vec![
        base,
        DecodeShape { per_seq: 1, absorbed: true, last_only: false, ..base },
        DecodeShape { per_seq: 1, absorbed: true, last_only: false, cache: KvCacheDtype::Fp8, ..base },
    ];
    if spec.mtp.is_some() {
        shapes.push(DecodeShape { per_seq: 2.min(seq), absorbed: true, draft: true, last_only: false, ..base });
    }
    let programs: Vec<dsv3c_runtime::Program> =
        shapes.iter().map(|s| compile_decode(spec, *s).map_err(|e| miette!("{e}"))).collect::<Result<_>>()?;
    let mut kernels: Vec<dsv3c_codegen::cuda::CudaKernel> = Vec::new();
    for p in &programs {
        for k in dsv3c_codegen::cuda::emit_program(p).map_err(|e| miette!("cannot emit CUDA: {e}"))? {
            if !kernels.iter().any(|x| x.stem == k.stem) {
                kernels.push(k);
            }
        }
    }
    let step = &programs[1];
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("generated").join(&spec.name).join("decode"));
    write_kernels(&out, step, &kernels, a.ptx.then_some(a.arch.as_str()))?;
    write(&out.join("plan.json"), &dsv3c_codegen::plan::to_json(step))?;
    let cache = |p: &dsv3c_runtime::Program| -> usize {
        p.decode.as_ref().map_or(0, |d| d.caches[..spec.n_layers as usize].iter().map(|c| c.bytes()).sum())
    };
    let mib = |b: usize| b as f64 / 1048576.0;
    println!(
        "{} decode: {} kernels{} over {} programs (prefill {} x {seq}, step {} x 1), cache of {seq} positions: \
         {:.2} MiB bf16, {:.2} MiB fp8 -> {}",
        spec.name,
        kernels.len(),
        if a.ptx { format!(" (PTX for {})", a.arch) } else { String::new() },
        programs.len(),
        a.batch,
        a.batch,
        mib(cache(&programs[1])),
        mib(cache(&programs[2])),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
