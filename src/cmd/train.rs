//! `dsv3c train [--config configs/tiny.yaml] [--steps N] [--out DIR] [--resume]
//! [--checkpoint-every N] [--device auto|cpu|cuda|sim] [--micro-batch B] [--seq-len S] [--seed S]
//! [--validation-batches N] [--detect-anomaly] [--nproc N]`
//!
//! A recipe whose layout has several ranks runs them as `--nproc` in-process CPU ranks, or — started
//! by torchrun or SLURM (their environment says which rank this process is) — as this process's one
//! rank of the job, joined to the others over TCP.
//!
//! SIGTERM, SIGINT or SIGUSR1 (SLURM's `--signal`) finish the step in progress, write a
//! checkpoint and exit with [`EXIT_STOPPED`]; a second signal exits at once (128 + its number),
//! the last complete checkpoint intact. At the end the run's charts go to `OUT/plot.png`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use dsv3c_runtime::comm::launch::Launched;
use dsv3c_runtime::comm::Collective;
use dsv3c_runtime::data::{corpus, shard, tokenizer::Tokenizer};
use dsv3c_runtime::train::checkpoint::{self, RunState};
use dsv3c_runtime::train::run;
use dsv3c_runtime::train::trainer::{StepReport, Trainer};
use dsv3c_spec::config::{load_recipe, DataSource, Recipe};
use dsv3c_spec::inspect::human_count;
use miette::{miette, IntoDiagnostic, Result, WrapErr};

use super::device::Device;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run recipe.
    #[arg(long, default_value = "configs/tiny.yaml")]
    pub config: PathBuf,
    /// The step to stop at (a resumed run continues up to it) [default: the recipe's steps].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Output folder: metrics.jsonl and checkpoints/ [default: runs/<recipe name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in the output folder.
    #[arg(long)]
    pub resume: bool,
    /// Write a checkpoint every N steps (0: only at the end) [default: the recipe's].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// What runs the step: the GPU (cuda), the PTX emulator (sim: slow, sanitized), the CPU
    /// reference (cpu), or the GPU when one answers and else the CPU (auto).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Sequences per micro-batch [default: the recipe's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub micro_batch: Option<u64>,
    /// Tokens per sequence [default: the recipe's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub seq_len: Option<u64>,
    /// Seed of the initialization and the data order [default: the recipe's].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validation micro-batches after the last step (0: none).
    #[arg(long, default_value_t = 16)]
    pub validation_batches: usize,
    /// Check every launch's outputs for NaN and infinity on every step, and stop at the first,
    /// naming its op and tensor (slow: for debugging).
    #[arg(long)]
    pub detect_anomaly: bool,
    /// Run the recipe's parallel layout as N in-process ranks on the CPU, one thread each (N must
    /// be the layout's world size, tp·pp·dp).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub nproc: Option<u64>,
}

/// The exit code of a run stopped by a signal after checkpointing (EX_TEMPFAIL: try again, with
/// `--resume`).
pub const EXIT_STOPPED: u8 = 75;

/// Signals that stop a run at the next step boundary: the first sets the flag, a second (of any
/// of them) exits at once with 128 + its number.
fn stop_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT, SIGUSR1] {
        // Registered first, so it sees the flag as it was before this signal set it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flag.clone())
            .into_diagnostic()
            .wrap_err("cannot install the signal handlers")?;
        signal_hook::flag::register(sig, flag.clone())
            .into_diagnostic()
            .wrap_err("cannot install the signal handlers")?;
    }
    Ok(flag)
}

/// The project root: where the built-in corpus and default recipes live.
pub fn project_root() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if built.join("spec").is_dir() {
        built
    } else {
        PathBuf::from(".")
    }
}

/// A path given on the command line, or else the same path under the project root.
pub fn resolve(p: &Path) -> PathBuf {
    if p.exists() || p.is_absolute() {
        p.to_path_buf()
    } else {
        let alt = project_root().join(p);
        if alt.exists() {
            alt
        } else {
            p.to_path_buf()
        }
    }
}

/// CRC-32 of what shapes a run's numbers: the spec and every recipe setting but the stop step,
/// checkpointing, logging, the parallel layout (the global batch counts, not how it is split) and the
/// spec's path (its content counts).
pub fn config_hash(r: &Recipe, seed: u64) -> String {
    let mut c = r.config.clone();
    c.checkpoint = Default::default();
    c.logging = Default::default();
    // When a run gives up changes no number it computes.
    c.guard.max_skipped = Default::default();
    // Nor does the layout, for the same global batch: a checkpoint resumes under another layout
    // (more ranks, fewer, more micro-batches per step) as long as each step trains on as many
    // sequences, in the same order.
    let b = &mut c.batch;
    b.micro_batch = b.micro_batch.saturating_mul(b.accumulation).saturating_mul(c.parallel.dp);
    b.accumulation = 1;
    c.parallel = Default::default();
    // The spec counts by its content (hashed below), not by the path the recipe names it by.
    c.spec = Default::default();
    c.seed = seed;
    let text = format!("{}\n{}", r.spec.to_yaml(), serde_json::to_string(&c).unwrap_or_default());
    format!("{:08x}", crc32fast::hash(text.as_bytes()))
}

/// The training token stream of a recipe.
pub fn corpus_tokens(r: &Recipe) -> Result<Vec<u32>> {
    let d = &r.config.data;
    let tokens = match d.source {
        DataSource::Builtin => {
            let base = r.path.parent().unwrap_or(Path::new("."));
            let tok = Tokenizer::by_name(&d.tokenizer, base)
                .map_err(|e| miette!("{}: data.tokenizer: {e}", r.path.display()))?;
            let key = corpus::tokenizer_key(&d.tokenizer, base);
            if (tok.vocab_size() as u64) > r.spec.vocab_size {
                return Err(miette!(
                    "the {} tokenizer has {} ids but the spec's vocab_size is {}",
                    d.tokenizer,
                    tok.vocab_size(),
                    r.spec.vocab_size
                ));
            }
            let root = project_root();
            let (tokens, files) =
                corpus::load(&root, &tok, &key, &root.join("runs/cache")).map_err(|e| miette!("{e}"))?;
            eprintln!(
                "corpus: the project's own docs and sources, {files} files, {} tokens ({})",
                tokens.len(),
                d.tokenizer
            );
            tokens
        }
        DataSource::Shards => {
            let base = r.path.parent().unwrap_or(Path::new("."));
            let mut all = Vec::new();
            for s in &d.shards {
                all.extend(shard::read_within(&base.join(s), r.spec.vocab_size).map_err(|e| miette!("{e}"))?);
            }
            all
        }
    };
    if let Some(bad) = tokens.iter().find(|&&t| t as u64 >= r.spec.vocab_size) {
        return Err(miette!("the data holds token id {bad}, outside the spec's vocab_size {}", r.spec.vocab_size));
    }
    Ok(tokens)
}

/// `12345.6` -> `12.3k`.
fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// `step 100/42036 | loss 3.2451 | lr 1.80e-04 | tokens 0.42B | 12.3k tok/s | grad-norm 0.91`
fn log_line(r: &StepReport, target: u64, tok_s: f64) -> String {
    format!(
        "step {}/{} | loss {:.4} | lr {:.2e} | tokens {} | {} tok/s | grad-norm {:.2}",
        r.step,
        target,
        r.loss,
        r.lr,
        human_count(r.tokens as f64),
        rate(tok_s),
        r.grad_norm
    )
}

/// The recipe's model compiled for its micro-batch and sequence length, with its optimizer.
pub fn compile(recipe: &dsv3c_spec::config::Recipe) -> Result<dsv3c_runtime::Program> {
    compile_rank(recipe, 0)
}

/// Rank `rank`'s program of the recipe's layout (the single-device program for a layout of one
/// rank).
pub fn compile_rank(recipe: &dsv3c_spec::config::Recipe, rank: usize) -> Result<dsv3c_runtime::Program> {
    let cfg = &recipe.config;
    let training = dsv3c_codegen::Training::from(cfg);
    let (micro, seq) = (cfg.batch.micro_batch as usize, cfg.batch.seq_len as usize);
    dsv3c_codegen::compile_rank(&recipe.spec, micro, seq, training, parallel(cfg, rank)).map_err(|e| miette!("{e}"))
}

/// The job's mesh from the recipe's `parallel` section.
pub fn mesh(cfg: &dsv3c_spec::config::RunConfig) -> dsv3c_runtime::comm::Mesh {
    let p = &cfg.parallel;
    dsv3c_runtime::comm::Mesh { dp: p.dp as usize, ep: p.ep as usize, pp: p.pp as usize }
}

/// Rank `rank`'s parallel settings from the recipe.
pub fn parallel(cfg: &dsv3c_spec::config::RunConfig, rank: usize) -> dsv3c_codegen::Parallel {
    let mut par =
        dsv3c_codegen::Parallel::of(mesh(cfg), rank, cfg.parallel.zero >= 1, cfg.batch.accumulation.max(1) as usize);
    par.expert_capacity = cfg.parallel.expert_capacity;
    par
}

/// How a run's ranks start.
enum Ranks {
    /// One device, no collectives.
    One,
    /// `--nproc N`: N in-process ranks on the CPU.
    InProcess,
    /// This process is one rank of a job a launcher (torchrun, SLURM) started.
    Launched(Launched),
}

impl Ranks {
    /// Does this process write the run's files (rank 0)?
    fn leads(&self) -> bool {
        !matches!(self, Ranks::Launched(l) if l.rank != 0)
    }
}

/// How the recipe's ranks run here: refuses what this build cannot run, naming the constraint.
fn ranks_to_run(a: &Args, r: &Recipe) -> Result<Ranks> {
    let p = &r.config.parallel;
    let world = p.world();
    let layout = dsv3c_spec::memory::Layout { tp: p.tp, pp: p.pp, ep: p.ep, dp: p.dp };
    if let Some(why) = layout.unbuilt() {
        return Err(miette!("{}: parallel.{why}", r.path.display()));
    }
    let launched = dsv3c_runtime::comm::launch::from_env(|k| std::env::var(k).ok()).map_err(|e| miette!("{e}"))?;
    match (launched, a.nproc) {
        (Some(l), Some(_)) => {
            Err(miette!("--nproc starts ranks in this process, but {} started this one as rank {} of {}: pass one or the other", l.by, l.rank, l.world))
        }
        (Some(l), None) if l.world as u64 != world => Err(miette!(
            "{} started {} processes, but the recipe's layout has tp·pp·dp = {}·{}·{} = {world} ranks",
            l.by,
            l.world,
            p.tp,
            p.pp,
            p.dp
        )),
        (Some(l), None) if p.ep > 1 || p.pp > 1 => Err(miette!(
            help = format!("run the job's {world} ranks in one process on the CPU with --nproc {world}"),
            "{} started this process as rank {} of {}, but processes joined over TCP run data parallelism alone; the recipe asks for ep = {}, pp = {} (expert and pipeline parallelism across processes need NCCL on GPUs, which is not built yet)",
            l.by,
            l.rank,
            l.world,
            p.ep,
            p.pp
        )),
        (Some(l), None) => Ok(Ranks::Launched(l)),
        (None, Some(n)) if n != world => Err(miette!(
            "--nproc {n}, but the recipe's layout has tp·pp·dp = {}·{}·{} = {world} ranks",
            p.tp,
            p.pp,
            p.dp
        )),
        (None, None) if world > 1 => Err(miette!(
            help = format!("run its {world} ranks in this process on the CPU with --nproc {world}, or launch {world} processes with torchrun or srun"),
            "{}: the recipe's layout has {world} ranks (parallel.dp = {}, pp = {})",
            r.path.display(),
            p.dp,
            p.pp
        )),
        (None, _) if world == 1 => Ok(Ranks::One),
        (None, _) => Ok(Ranks::InProcess),
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let config_path = resolve(&a.config);
    let mut recipe = load_recipe(&config_path).map_err(miette::Report::new)?;
    if let Some(b) = a.micro_batch {
        recipe.config.batch.micro_batch = b;
    }
    if let Some(s) = a.seq_len {
        if s > recipe.spec.max_seq_len {
            return Err(miette!("--seq-len {s} exceeds the spec's max_seq_len {}", recipe.spec.max_seq_len));
        }
        recipe.config.batch.seq_len = s;
    }
    let recipe = recipe;
    let cfg = &recipe.config;
    let ranks = ranks_to_run(&a, &recipe)?;
    // Ranks run on the CPU (collectives on GPUs need NCCL): `auto` means it for them.
    let device = super::device::open(match (&ranks, a.device) {
        (Ranks::One, d) => d,
        (_, Device::Auto) => Device::Cpu,
        (_, d) => d,
    })?;
    let seed = a.seed.unwrap_or(cfg.seed);
    let target = a.steps.unwrap_or(cfg.steps);
    let every = a.checkpoint_every.unwrap_or(cfg.checkpoint.every);
    let stem = config_path.file_stem().map_or("run".into(), |s| s.to_string_lossy().into_owned());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&stem));
    let metrics_path = out.join("metrics.jsonl");
    // (Only rank 0 asks: the others of a launched job may start after it began writing.)
    if ranks.leads() && !a.resume && (metrics_path.exists() || !checkpoint::list(&out).is_empty()) {
        return Err(miette!(
            help = "pass --resume to continue it, or --out for a new run",
            "{} already holds a run",
            out.display()
        ));
    }
    std::fs::create_dir_all(&out).into_diagnostic().wrap_err_with(|| format!("cannot create {}", out.display()))?;

    let hash = config_hash(&recipe, seed);
    let resume = if a.resume {
        let Some((_, newest)) = checkpoint::list(&out).pop() else {
            return Err(miette!("--resume: no complete checkpoint in {}/checkpoints", out.display()));
        };
        let loaded = checkpoint::load(&newest).map_err(|e| miette!("{e}"))?;
        eprintln!("resuming from {} (step {})", newest.display(), loaded.run.step);
        Some(loaded)
    } else {
        None
    };
    let start_step = resume.as_ref().map_or(0, |l| l.run.step);
    if start_step >= target {
        eprintln!("already at step {start_step} (target {target}); nothing to do");
        return Ok(ExitCode::SUCCESS);
    }
    let tokens = Arc::new(corpus_tokens(&recipe)?);
    let run = RunState::fresh(seed, hash, recipe.spec.name.clone());
    eprintln!(
        "training {} ({} params) on {} x {} tokens x {} accumulation{}, steps {}..{target} of {}, out {}",
        recipe.spec.name,
        human_count(dsv3c_spec::params::count(&recipe.spec).total as f64),
        cfg.batch.micro_batch,
        cfg.batch.seq_len,
        cfg.batch.accumulation,
        match &ranks {
            Ranks::One => String::new(),
            r => format!(
                " x {} data-parallel ranks{}{} ({}, {})",
                cfg.parallel.dp,
                match cfg.parallel.ep {
                    1 => String::new(),
                    ep => format!(", experts over {ep}"),
                },
                match cfg.parallel.pp {
                    1 => String::new(),
                    pp => format!(" x {pp} pipeline stages (1F1B)"),
                },
                if cfg.parallel.zero >= 1 { "ZeRO-1" } else { "replicated optimizer state" },
                match r {
                    Ranks::Launched(l) => format!("this process rank {} of {}, started by {}", l.rank, l.world, l.by),
                    _ if matches!(device, super::device::Opened::Sim(_)) => "in-process on the emulator".into(),
                    _ => "in-process on the CPU".into(),
                }
            ),
        },
        start_step + 1,
        cfg.steps,
        out.display()
    );

    let bar = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new(target);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps | {elapsed} < {eta} | {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(start_step);
        pb
    });
    let stop = stop_on_signals()?;
    let options = run::RunOptions {
        target,
        checkpoint_every: every,
        keep: cfg.checkpoint.keep,
        log_every: cfg.logging.every,
        out: &out,
        texts: checkpoint::Texts { spec: &recipe.spec_text, config: &recipe.text },
        validation_batches: a.validation_batches,
        stop: Some(&stop),
    };
    let job = Job { options: &options, bar: bar.as_ref(), target, detect_anomaly: a.detect_anomaly };
    let rank_device = match ranks {
        Ranks::One => None,
        _ => Some(device.for_ranks()?),
    };
    let timeout = std::time::Duration::from_secs_f64(cfg.parallel.collective_timeout_s);
    let outcome = match &ranks {
        Ranks::One => {
            let program = compile(&recipe)?;
            let backend = device.backend(&program)?;
            let trainer =
                Trainer::new(&program, &program, backend, cfg, tokens, run, resume).map_err(|e| miette!("{e}"))?;
            job.drive(trainer, true).map_err(|e| miette!("{e}"))
        }
        Ranks::Launched(l) => {
            let fail = |e: String| miette!("rank {} of {}: {e}", l.rank, l.world);
            let program = compile_rank(&recipe, l.rank)?;
            eprintln!("rank {} of {}: joining the job at {}:{}", l.rank, l.world, l.master_addr, l.master_port);
            let tcp = dsv3c_runtime::comm::Tcp::connect(l.rank, l.world, &l.master_addr, l.master_port, timeout)
                .map_err(|e| fail(e.to_string()))?;
            let comm: Arc<dyn Collective> = Arc::new(tcp);
            let comms = dsv3c_runtime::comm::Comms::data_parallel(comm.clone(), 1).map_err(|e| fail(e.to_string()))?;
            let kind = rank_device.unwrap_or(super::device::RankDevice::Cpu);
            let backend = kind.backend(&program, comms.clone()).map_err(|e| fail(e.to_string()))?;
            let trainer =
                Trainer::on_rank(&program, &program, backend, cfg, tokens, run, resume, comms).map_err(|e| {
                    comm.abort(&e.to_string());
                    fail(e.to_string())
                })?;
            job.drive(trainer, l.rank == 0).map_err(|e| fail(e.to_string()))
        }
        Ranks::InProcess => dsv3c_runtime::comm::run_mesh(mesh(cfg), timeout, |comms| {
            let rank = comms.place.rank;
            let program = compile_rank(&recipe, rank).map_err(|e| format!("{e}"))?;
            let kind = rank_device.unwrap_or(super::device::RankDevice::Cpu);
            let backend = kind.backend(&program, comms.clone()).map_err(|e| format!("{e}"))?;
            let trainer =
                Trainer::on_rank(&program, &program, backend, cfg, tokens.clone(), run.clone(), resume.clone(), comms)
                    .map_err(|e| e.to_string())?;
            job.drive(trainer, rank == 0).map_err(|e| e.to_string())
        })
        .map(|mut outcomes| outcomes.swap_remove(0))
        .map_err(|e| miette!("{e}")),
    };
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    // The charts of what ran, whatever stopped it.
    let png = out.join("plot.png");
    if ranks.leads() {
        match super::plot::draw(&out.join("metrics.jsonl"), &png) {
            Ok(()) => eprintln!("plot {}", png.display()),
            Err(e) => eprintln!("warning: no plot: {e:?}"),
        }
    }
    match outcome? {
        run::Outcome::Finished => Ok(ExitCode::SUCCESS),
        run::Outcome::Stopped { step, checkpoint } => {
            eprintln!(
                "stopped on a signal after step {step}/{target}; checkpoint {}; continue with: dsv3c train --config {} --out {} --resume",
                checkpoint.map_or("(none)".into(), |c| c.display().to_string()),
                a.config.display(),
                out.display()
            );
            Ok(ExitCode::from(EXIT_STOPPED))
        }
    }
}

/// What every rank of a run shares: the loop's options and, for rank 0, the terminal.
struct Job<'a> {
    options: &'a run::RunOptions<'a>,
    bar: Option<&'a indicatif::ProgressBar>,
    target: u64,
    detect_anomaly: bool,
}

impl Job<'_> {
    /// Runs one rank's trainer to the target; the leader (rank 0) shows the steps.
    fn drive<B: dsv3c_runtime::program::Backend>(
        &self,
        mut trainer: Trainer<'_, B>,
        leader: bool,
    ) -> std::result::Result<run::Outcome, run::RunError> {
        trainer.set_detect_anomaly(self.detect_anomaly);
        let (bar, target) = (self.bar, self.target);
        let say = |line: String, stdout: bool| match bar {
            Some(pb) => pb.println(line),
            // A closed stdout (`| head`) does not stop the run.
            None if stdout => {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            None => eprintln!("{line}"),
        };
        let mut quiet = |_: run::Event<'_>| {};
        let mut show = |e: run::Event<'_>| match e {
            run::Event::Step { report, tokens_per_sec, logged, .. } => {
                if let Some(skip) = &report.skipped {
                    say(format!("step {}/{target} skipped: {skip} (loss {:.4}, grad-norm {:.3e}); parameters, optimizer state and balancing bias unchanged", report.step, report.loss, report.grad_norm), false);
                } else if logged {
                    say(log_line(report, target, tokens_per_sec), true);
                }
                if let Some(pb) = bar {
                    pb.set_position(report.step);
                    pb.set_message(format!("loss {:.4}", report.loss));
                }
            }
            run::Event::Checkpoint(path) => say(format!("checkpoint {}", path.display()), false),
            run::Event::Validation { loss, seconds } => {
                if let Some(pb) = bar {
                    pb.finish_and_clear();
                }
                eprintln!("validation loss {loss:.4} | perplexity {:.2} | {seconds:.1}s", loss.exp());
            }
        };
        let on: &mut dyn FnMut(run::Event<'_>) = if leader { &mut show } else { &mut quiet };
        let out = run::run(&mut trainer, self.options, on);
        if let Err(e) = &out {
            // The other ranks stop at their next collective, naming this one.
            trainer.abort(&e.to_string());
        }
        out
    }
}
