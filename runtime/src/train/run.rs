//! The run loop: steps up to a target, one JSON record per logged step in `metrics.jsonl` (and
//! one per skipped step), checkpoints at a cadence and at the end, and a validation pass — over
//! any backend. It stops early, with a checkpoint, when asked to (a signal: [`RunOptions::stop`]),
//! and without one when the step guard skipped `guard.max_skipped` steps in a row, naming the
//! first op whose output was not finite. What a front end shows (progress bars, log lines) it
//! learns from [`Event`]s; the loop prints nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::program::Backend;
use crate::train::checkpoint::Texts;
use crate::train::trainer::{CheckpointError, StepReport, TrainError, Trainer};

/// What a run does besides stepping.
pub struct RunOptions<'a> {
    /// The step to stop at.
    pub target: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints to keep.
    pub keep: u64,
    /// Log (and record in `metrics.jsonl`) every this many steps, and the last.
    pub log_every: u64,
    /// The run's folder: `metrics.jsonl` and `checkpoints/`.
    pub out: &'a Path,
    /// The spec and recipe texts stored in each checkpoint.
    pub texts: Texts<'a>,
    /// Validation micro-batches after the last step (0: none).
    pub validation_batches: usize,
    /// Stop after the step in progress, with a checkpoint, once this is set (a signal handler's
    /// flag).
    pub stop: Option<&'a AtomicBool>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It reached its target step.
    Finished,
    /// It was asked to stop: after `step`, checkpointed in `checkpoint` (rank 0 writes it: the
    /// other ranks of a job see `None`).
    Stopped { step: u64, checkpoint: Option<PathBuf> },
}

/// What happened, for a front end to show.
pub enum Event<'a> {
    /// A step finished; `logged` when it is a logged step (its record is in `metrics.jsonl`).
    Step { report: &'a StepReport, seconds: f64, tokens_per_sec: f64, logged: bool },
    /// A checkpoint was written.
    Checkpoint(&'a Path),
    /// The validation loss after the last step, and the run's wall time.
    Validation { loss: f64, seconds: f64 },
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("step {step}: {source}")]
    Step { step: u64, source: TrainError },
    #[error("checkpoint at step {step}: {source}")]
    Checkpoint { step: u64, source: CheckpointError },
    #[error("validation: {0}")]
    Validation(TrainError),
    #[error("step {step}: {skipped} steps in a row were skipped (guard.max_skipped), the last because {reason}; {}", match anomaly {
        Some(a) => format!("the first non-finite value: {a}"),
        None => "running it again with every launch checked found no non-finite value".to_string(),
    })]
    Diverged {
        step: u64,
        skipped: u64,
        reason: crate::train::trainer::Skip,
        anomaly: Option<Box<crate::train::anomaly::Anomaly>>,
    },
}

/// Drops metric lines of steps after `step`: a run killed after its last checkpoint logged steps
/// that the resumed run computes again.
pub fn truncate_metrics(path: &Path, step: u64) -> Result<(), RunError> {
    let io = |source| RunError::Io { path: path.to_path_buf(), source };
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    if keep.len() != text.lines().count() {
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, keep.iter().map(|l| format!("{l}\n")).collect::<String>()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
    }
    Ok(())
}

/// The `metrics.jsonl` record of one step.
pub fn record(r: &StepReport, tokens_per_sec: f64, seconds: f64) -> serde_json::Value {
    let mtp_loss =
        if r.mtp_losses.is_empty() { None } else { Some(r.mtp_losses.iter().sum::<f64>() / r.mtp_losses.len() as f64) };
    let mut v = serde_json::json!({
        "step": r.step, "loss": r.loss, "total_loss": r.total_loss, "mtp_loss": mtp_loss, "mtp_losses": r.mtp_losses,
        "lr": r.lr, "tokens": r.tokens, "tokens_per_sec": tokens_per_sec, "grad_norm": r.grad_norm,
        "step_time_s": seconds, "moe": r.moe,
    });
    if let Some(skip) = &r.skipped {
        v["skipped"] = serde_json::to_value(skip).unwrap_or_default();
    }
    v
}

/// Trains from the trainer's step up to `o.target`, appending to `o.out/metrics.jsonl` (after
/// dropping lines past the trainer's step, as a resumed run recomputes them). Every rank of a
/// parallel job runs it with its own trainer, in step: every rank writes its part of each
/// checkpoint and runs the validation, rank 0 writes the metrics and the validation loss, and a
/// stop asked of any rank stops them all after the same step.
pub fn run<B: Backend>(
    t: &mut Trainer<'_, B>,
    o: &RunOptions<'_>,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Outcome, RunError> {
    let path = o.out.join("metrics.jsonl");
    let io = |source| RunError::Io { path: path.clone(), source };
    let leader = t.rank().0 == 0;
    let mut metrics = match leader {
        true => {
            truncate_metrics(&path, t.run.step)?;
            Some(std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?)
        }
        false => None,
    };
    let started = std::time::Instant::now();
    while t.run.step < o.target {
        let t0 = std::time::Instant::now();
        let r = t.step().map_err(|source| RunError::Step { step: t.run.step + 1, source })?;
        let seconds = t0.elapsed().as_secs_f64();
        let tokens_per_sec = t.tokens_per_step() as f64 / seconds.max(1e-9);
        let logged = r.step % o.log_every.max(1) == 0 || r.step == o.target || r.skipped.is_some();
        if let (true, Some(m)) = (logged, metrics.as_mut()) {
            writeln!(m, "{}", record(&r, tokens_per_sec, seconds)).map_err(io)?;
        }
        on(Event::Step { report: &r, seconds, tokens_per_sec, logged });
        if let Some(reason) = r.skipped {
            let skipped = t.run.guard.skipped_in_row;
            if skipped >= t.max_skipped() {
                metrics.as_mut().map_or(Ok(()), |m| m.flush()).map_err(io)?;
                let anomaly = t.find_non_finite().map_err(|source| RunError::Step { step: r.step, source })?;
                return Err(RunError::Diverged { step: r.step, skipped, reason, anomaly: anomaly.map(Box::new) });
            }
        }
        let asked = o.stop.is_some_and(|s| s.load(Ordering::SeqCst));
        let stop = t.any_rank(asked).map_err(|source| RunError::Step { step: r.step, source })?;
        // A cadence checkpoint waits for an applied step: those of a run going bad would push its
        // good ones out.
        let due = (o.checkpoint_every > 0 && r.step % o.checkpoint_every == 0) || r.step == o.target;
        if stop || (due && (r.skipped.is_none() || r.step == o.target)) {
            let p = t
                .checkpoint(o.out, &o.texts, o.keep)
                .map_err(|source| RunError::Checkpoint { step: r.step, source })?;
            if let Some(p) = &p {
                on(Event::Checkpoint(p));
            }
            if stop && r.step < o.target {
                metrics.as_mut().map_or(Ok(()), |m| m.flush()).map_err(io)?;
                return Ok(Outcome::Stopped { step: r.step, checkpoint: p });
            }
        }
    }
    metrics.as_mut().map_or(Ok(()), |m| m.flush()).map_err(io)?;
    // Every rank validates (a parallel job's forward has collectives); rank 0 records it.
    if o.validation_batches > 0 {
        let loss = t.validate(o.validation_batches).map_err(RunError::Validation)?;
        if let (Some(loss), Some(metrics)) = (loss, metrics.as_mut()) {
            let rec = serde_json::json!({ "step": t.run.step, "validation_loss": loss });
            writeln!(metrics, "{rec}").map_err(io)?;
            metrics.flush().map_err(io)?;
            on(Event::Validation { loss, seconds: started.elapsed().as_secs_f64() });
        }
    }
    Ok(Outcome::Finished)
}
