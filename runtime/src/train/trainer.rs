//! The training step, generic over the backend: the host writes the step's scalars and each
//! micro-batch's tokens, runs the Program's launch lists (start; forward and backward per
//! micro-batch; update: gradient norm, clipping, the optimizer and the aux-loss-free bias update
//! `b_i += γ·sign(mean load − load_i)`), and reads back the losses and metrics. No host math
//! touches the arenas between one step's forward and the next.

use std::sync::Arc;

use dsv3c_spec::config::RunConfig;
use dsv3c_spec::types::Dtype;
use serde::Serialize;

use crate::comm::{CommError, Comms, Mesh, Place};
use crate::cpu::Cpu;
use crate::data::loader::{Loader, LoaderError, Position};
use crate::op::scalars;
use crate::program::{Backend, BackendError, Graph, Program, Space};
use crate::train::anomaly::{self, Anomaly};
use crate::train::checkpoint::{Loaded, RunState};
use crate::train::metrics::MoeBalance;
use crate::train::optim::State;
use crate::train::schedule;

/// What one optimizer step measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub step: u64,
    /// Mean next-token cross-entropy of the step's micro-batches.
    pub loss: f64,
    /// The objective: loss + weighted MTP losses + balance losses.
    pub total_loss: f64,
    pub mtp_losses: Vec<f64>,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens trained on so far (all ranks).
    pub tokens: u64,
    pub moe: Vec<MoeBalance>,
    /// Why the step changed nothing, when it did not apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skip>,
}

/// Why the step guard held a step back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Skip {
    /// The loss (or an MTP loss) was NaN or infinite.
    NonFiniteLoss,
    /// The gradient norm was NaN or infinite.
    NonFiniteGradNorm,
    /// The gradient norm exceeded the spike guard's limit (`spike_factor × median`).
    Spike { limit: f64 },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NonFiniteLoss => write!(f, "the loss is not finite"),
            Skip::NonFiniteGradNorm => write!(f, "the gradient norm is not finite"),
            Skip::Spike { limit } => write!(f, "the gradient norm exceeds the spike guard's limit {limit:.4}"),
        }
    }
}

/// The launch lists of a step.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Start,
    Forward,
    Backward,
    Update,
}

impl Phase {
    fn of(self, p: &Program) -> (&'static str, &[crate::program::Launch]) {
        match self {
            Phase::Start => ("start", &p.start),
            Phase::Forward => ("forward", &p.forward),
            Phase::Backward => ("backward", &p.backward),
            Phase::Update => ("update", &p.update),
        }
    }
}

pub struct Trainer<'a, B: Backend = Cpu> {
    pub program: &'a Program,
    /// What runs the launch lists: the Program itself, or a generated graph.
    graph: &'a dyn Graph,
    /// Where the arenas live and the ops run.
    pub backend: B,
    config: RunConfig,
    /// Optimizer steps taken (the optimizer's bias correction counts from it).
    opt_step: u64,
    loader: Loader,
    val: Loader,
    pub run: RunState,
    /// Check every launch's outputs for NaN and infinity.
    detect_anomaly: bool,
    /// The last step's data position at its start and its scalars, to run it again.
    last_step: Option<(Position, Vec<f32>)>,
    /// While running a step again to find its first non-finite value: what was found (every
    /// launch runs checked, and the first anomaly is kept).
    finding: Option<Option<Anomaly>>,
    /// The parallel job this trainer is one rank of (a job of one for one device).
    comms: Comms,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("checkpoint {path}: {source}")]
    Load { path: String, source: crate::checkpoint::LoadError },
    #[error("checkpoint {path} was made by a different run (config hash {found}, this run {expected}); resume with the recipe that made it or start a new --out")]
    ConfigChanged { path: String, expected: String, found: String },
    #[error("checkpoint {path}: {source}")]
    OptimizerState { path: String, source: crate::train::checkpoint::StateMismatch },
    #[error("the program was compiled for {compiled} moments in a {arena}-element optimizer arena, the recipe asks for {recipe:?} ({kind:?})")]
    Optimizer { compiled: &'static str, arena: usize, recipe: Dtype, kind: dsv3c_spec::config::OptimizerKind },
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    #[error("step {step}: {anomaly}")]
    NonFinite { step: u64, anomaly: Box<Anomaly> },
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Comm(#[from] CommError),
}

impl<'a> Trainer<'a, Cpu> {
    /// A trainer on the CPU reference backend.
    pub fn on_cpu(
        program: &'a Program,
        graph: &'a dyn Graph,
        config: &RunConfig,
        tokens: Arc<Vec<u32>>,
        run: RunState,
        resume: Option<Loaded>,
    ) -> Result<Trainer<'a, Cpu>, TrainError> {
        Trainer::new(program, graph, Cpu::new(program), config, tokens, run, resume)
    }
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// A trainer over `tokens` (the packed corpus) on `backend`, fresh from `seed` or resumed from
    /// `resume`.
    pub fn new(
        program: &'a Program,
        graph: &'a dyn Graph,
        backend: B,
        config: &RunConfig,
        tokens: Arc<Vec<u32>>,
        run: RunState,
        resume: Option<Loaded>,
    ) -> Result<Trainer<'a, B>, TrainError> {
        Trainer::on_rank(program, graph, backend, config, tokens, run, resume, Comms::single())
    }

    /// A trainer that is one rank of a parallel job: `program` is this rank's (compiled for its
    /// place: `Program::rank`), `backend` runs its collectives over `comms`, and the trainer
    /// reduces what the host sums (losses, routing statistics) over the job. Every rank reads the
    /// same checkpoint and takes its share (its parameters by name, its ZeRO-1 shard of their
    /// moments); its loader serves its data-parallel rank's micro-batches of each step's global
    /// batch (every stage of a pipeline the same ones).
    #[allow(clippy::too_many_arguments)]
    pub fn on_rank(
        program: &'a Program,
        graph: &'a dyn Graph,
        mut backend: B,
        config: &RunConfig,
        tokens: Arc<Vec<u32>>,
        run: RunState,
        resume: Option<Loaded>,
        comms: Comms,
    ) -> Result<Trainer<'a, B>, TrainError> {
        check_optimizer(program, config)?;
        check_layout(program, config, &comms)?;
        let (dp_rank, dp) = (comms.place.dp_rank(), comms.place.mesh.dp);
        let seq = config.batch.seq_len as usize;
        let micro = config.batch.micro_batch as usize;
        let (train_w, val_w) = crate::data::loader::split(tokens.len(), seq, config.data.validation_fraction);
        let mut run = run;
        let mut params = vec![0.0f32; program.param_len];
        let opt = match resume {
            Some(l) => {
                if l.run.config_hash != run.config_hash {
                    return Err(TrainError::ConfigChanged {
                        path: l.path.display().to_string(),
                        expected: run.config_hash,
                        found: l.run.config_hash,
                    });
                }
                let path = l.path.display().to_string();
                crate::checkpoint::load_params(program, &l.model, &mut params)
                    .map_err(|source| TrainError::Load { path: path.clone(), source })?;
                run = l.run;
                let arena = l.optimizer.arena(program).map_err(|source| TrainError::OptimizerState { path, source })?;
                (l.optimizer.step, arena)
            }
            None => {
                crate::init::init_params(program, run.seed, &mut params);
                (0, vec![0.0; program.optim_len])
            }
        };
        backend.write(program.whole(Space::Param), &program.param_arena(params))?;
        backend.write(program.whole(Space::Optim), &opt.1)?;
        let acc = config.batch.accumulation.max(1) as usize;
        let loader = Loader::new(tokens.clone(), train_w, seq, micro, dp_rank, dp, run.seed, run.position)?
            .with_accumulation(acc)?;
        let val_windows = if val_w.len() >= micro { val_w } else { Vec::new() };
        let val = Loader::new(
            tokens,
            if val_windows.is_empty() { (0..micro).collect() } else { val_windows },
            seq,
            micro,
            0,
            1,
            0,
            Position::default(),
        )?;
        Ok(Trainer {
            program,
            graph,
            backend,
            config: config.clone(),
            opt_step: opt.0,
            loader,
            val,
            run,
            detect_anomaly: false,
            last_step: None,
            finding: None,
            comms,
        })
    }

    /// The step's scalars (`op::scalars`) for optimizer step `step` at learning rate `lr`.
    fn scalars(&self, step: u64, lr: f64) -> Vec<f32> {
        let o = &self.config.optimizer;
        let mut s = vec![0.0f32; scalars::LEN];
        s[scalars::LR] = lr as f32;
        s[scalars::STEP] = step as f32;
        s[scalars::GRAD_SCALE] = 1.0 / self.micro_batches_per_step() as f32;
        s[scalars::BETA1] = o.beta1 as f32;
        s[scalars::BETA2] = o.beta2 as f32;
        s[scalars::EPS] = o.eps as f32;
        s[scalars::WEIGHT_DECAY] = o.weight_decay as f32;
        s[scalars::EMBEDDING_DECAY] = if o.decay_embeddings { o.weight_decay as f32 } else { 0.0 };
        s[scalars::CLIP] = o.grad_clip as f32;
        s[scalars::MAX_GRAD_NORM] = f32::INFINITY;
        s
    }

    /// Micro-batches of one optimizer step over all data-parallel ranks (whose gradients' sum
    /// the update averages).
    fn micro_batches_per_step(&self) -> usize {
        self.config.batch.accumulation.max(1) as usize * self.comms.place.mesh.dp
    }

    /// This rank, and the ranks of its job.
    pub fn rank(&self) -> (usize, usize) {
        (self.comms.place.rank, self.comms.place.mesh.world())
    }

    /// Whether any rank says yes (every rank calls it at the same point; one rank's signal stops
    /// them all at the same step).
    pub fn any_rank(&self, yes: bool) -> Result<bool, TrainError> {
        let mut x = [yes as u8 as f64];
        self.comms.world().all_reduce_f64(&mut x)?;
        Ok(x[0] > 0.0)
    }

    /// Marks this rank's job failed (the other ranks' next collective names this rank and `why`).
    pub fn abort(&self, why: &str) {
        self.comms.abort(why);
    }

    fn scalar(&mut self, s: crate::program::Slice) -> Result<f64, TrainError> {
        Ok(self.backend.read(s)?.first().copied().unwrap_or(f32::NAN) as f64)
    }

    /// The largest averaged gradient norm the step guard lets through: the spike guard's
    /// `spike_factor × median` of the last `spike_window` applied steps once it has that many,
    /// else any finite norm.
    fn max_grad_norm(&self) -> f32 {
        let g = &self.config.guard;
        let norms = &self.run.guard.norms;
        match g.spike_factor {
            Some(k) if norms.len() as u64 >= g.spike_window && !norms.is_empty() => {
                let mut sorted = norms.clone();
                sorted.sort_by(f64::total_cmp);
                let n = sorted.len();
                let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
                (k * median) as f32
            }
            _ => f32::INFINITY,
        }
    }

    /// One optimizer step over `accumulation` micro-batches. A step whose loss or gradient norm is
    /// not finite, or whose norm the spike guard rejects, changes nothing on the backend (its
    /// update ops see the guard in the scalars and return) and comes back with `skipped` set; the
    /// data and the step number move on. With `detect_anomaly`, every launch's outputs are checked
    /// and the first non-finite one stops the step with [`TrainError::NonFinite`].
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        let p = self.program;
        let acc = self.config.batch.accumulation.max(1) as usize;
        let step = self.run.step + 1;
        let lr = schedule::lr(&self.config.schedule, self.config.optimizer.lr, step, self.config.steps);
        let mut s = self.scalars(self.opt_step + 1, lr);
        s[scalars::MAX_GRAD_NORM] = self.max_grad_norm();
        let start_position = self.loader.position;
        self.backend.write(p.io.scalars, &s)?;
        self.list(Phase::Start, None)?;
        let mut sums = if p.slots().is_empty() { self.micro_batches(acc)? } else { self.pipeline(acc)? };
        // The whole job's sums, the same on every rank: every rank decides alike.
        self.comms.world().all_reduce_f64(&mut sums)?;
        let (loss, total) = (sums[0], sums[1]);
        let mtp = sums[2..].to_vec();
        let loss_finite = loss.is_finite() && total.is_finite() && mtp.iter().all(|m| m.is_finite());
        if !loss_finite {
            // The host's word to the update ops: this step changes nothing.
            s[scalars::MAX_GRAD_NORM] = -1.0;
            self.backend.write(p.io.scalars, &s)?;
        }
        self.list(Phase::Update, None)?;
        let raw_norm = self.backend.read(p.io.grad_norm)?.first().copied().unwrap_or(f32::NAN);
        let grad_norm = raw_norm as f64 * s[scalars::GRAD_SCALE] as f64;
        let skipped = if scalars::update_applies(&s, raw_norm) {
            None
        } else if !loss_finite {
            Some(Skip::NonFiniteLoss)
        } else if !grad_norm.is_finite() {
            Some(Skip::NonFiniteGradNorm)
        } else {
            Some(Skip::Spike { limit: s[scalars::MAX_GRAD_NORM] as f64 })
        };
        let g = &mut self.run.guard;
        match skipped {
            None => {
                self.opt_step += 1;
                g.skipped_in_row = 0;
                g.norms.push(grad_norm);
                let window = self.config.guard.spike_window.max(1) as usize;
                if g.norms.len() > window {
                    g.norms.drain(..g.norms.len() - window);
                }
            }
            Some(_) => {
                g.skipped_in_row += 1;
                g.skipped += 1;
            }
        }
        self.last_step = Some((start_position, s));
        self.run.step = step;
        let moe = self.moe_balance()?;
        self.run.tokens += self.config.tokens_per_step();
        self.run.position = self.loader.position;
        let inv = 1.0 / self.micro_batches_per_step() as f64;
        Ok(StepReport {
            step: self.run.step,
            loss: loss * inv,
            total_loss: total * inv,
            mtp_losses: mtp.iter().map(|m| m * inv).collect(),
            lr,
            grad_norm,
            tokens: self.run.tokens,
            moe,
            skipped,
        })
    }

    /// The forward and backward of `acc` micro-batches, one after the other; returns this rank's
    /// sums of the losses `[main, total, each MTP module's]`.
    fn micro_batches(&mut self, acc: usize) -> Result<Vec<f64>, TrainError> {
        let p = self.program;
        let mut sums = self.loss_sums();
        for mb in 0..acc {
            let batch: Vec<f32> = self.loader.next_batch().into_iter().map(|t| t as f32).collect();
            self.backend.write(p.io.tokens, &batch)?;
            self.list(Phase::Forward, Some(mb))?;
            self.add_losses(&mut sums)?;
            self.list(Phase::Backward, Some(mb))?;
        }
        Ok(sums)
    }

    /// Zeroed sums of the losses `[main, total, each MTP module's]` (every stage of a pipeline
    /// carries the model's MTP losses, though only the last computes them).
    fn loss_sums(&self) -> Vec<f64> {
        let p = self.program;
        vec![0.0; 2 + p.rank.as_ref().map_or(p.io.mtp_losses.len(), |r| r.mtp_depth)]
    }

    /// Adds the losses of the forward just run to `sums`.
    fn add_losses(&mut self, sums: &mut [f64]) -> Result<(), TrainError> {
        let p = self.program;
        sums[0] += self.scalar(p.io.main_loss)?;
        sums[1] += self.scalar(p.io.loss)?;
        for (k, s) in p.io.mtp_losses.iter().enumerate() {
            sums[2 + k] += self.scalar(*s)?;
        }
        Ok(())
    }

    /// A pipeline stage's share of the step: the forwards and backwards of `acc` micro-batches
    /// in the 1F1B order (`one_f_one_b`), micro-batch `i` in slot `i mod slots`; the stage's
    /// messages to its neighbours are launches of its lists. Returns this rank's loss sums (the
    /// cross-entropies on the last stage; every stage's balance terms in the total).
    fn pipeline(&mut self, acc: usize) -> Result<Vec<f64>, TrainError> {
        let p = self.program;
        let place = self.comms.place;
        let slots = p.slots();
        let mut sums = self.loss_sums();
        for (forward, mb) in one_f_one_b(place.stage(), place.mesh.pp, acc) {
            let slot = &slots[mb % slots.len()];
            if forward {
                let batch: Vec<f32> = self.loader.next_batch().into_iter().map(|t| t as f32).collect();
                if let Some(t) = slot.tokens {
                    self.backend.write(t, &batch)?;
                }
                self.run_list("forward", &slot.forward, Some(mb))?;
                if place.last_stage() {
                    self.add_losses(&mut sums)?;
                } else {
                    // Its MoE layers' balance terms.
                    sums[1] += self.scalar(slot.loss)?;
                }
            } else {
                self.run_list("backward", &slot.backward, Some(mb))?;
            }
        }
        Ok(sums)
    }

    /// Each of the model's MoE layers' balance over the step. The statistics of this rank's
    /// layers are the job's (the update summed them over the data-parallel ranks); a pipeline's
    /// stages each hold some layers, so the first data-parallel rank of each stage adds its own to
    /// the job's sum. Rows dropped past the experts' capacity are summed over every rank.
    fn moe_balance(&mut self) -> Result<Vec<MoeBalance>, TrainError> {
        let p = self.program;
        let Some(r) = &p.rank else {
            let mut moe = Vec::with_capacity(p.io.expert_stats.len());
            for (layer, st) in p.io.expert_stats.iter().enumerate() {
                moe.push(MoeBalance::from_stats(layer, &self.backend.read(*st)?));
            }
            return Ok(moe);
        };
        if r.moe_total == 0 {
            return Ok(Vec::new());
        }
        // Every layer's statistics (every MoE layer routes over the same experts) and its
        // dropped rows.
        let width = r.experts + 2;
        let mut all = vec![0.0f64; r.moe_total * (width + 1)];
        let firsts = self.comms.place.dp_rank() == 0;
        for (i, &layer) in r.moe_layers.iter().enumerate() {
            if firsts {
                for (j, v) in self.backend.read(p.io.expert_stats[i])?.into_iter().enumerate() {
                    all[layer * (width + 1) + j] = v as f64;
                }
            }
            if let Some(d) = r.expert_dropped.get(i) {
                all[layer * (width + 1) + width] += self.scalar(*d)?;
            }
        }
        self.comms.world().all_reduce_f64(&mut all)?;
        Ok((0..r.moe_total)
            .map(|layer| {
                let row = &all[layer * (width + 1)..(layer + 1) * (width + 1)];
                let stats: Vec<f32> = row[..width].iter().map(|&v| v as f32).collect();
                let routed: f64 = row[..r.experts].iter().sum();
                MoeBalance::from_stats(layer, &stats).with_dropped(row[width], routed)
            })
            .collect())
    }

    /// Runs `launches` (a list of the Program's, named `name`): checked launch by launch when
    /// detecting anomalies (the first stops the step) or finding one (the first is kept).
    fn run_list(
        &mut self,
        name: &'static str,
        launches: &[crate::program::Launch],
        mb: Option<usize>,
    ) -> Result<(), TrainError> {
        if !self.detect_anomaly && self.finding.is_none() {
            return Ok(self.program.run(launches, &mut self.backend)?);
        }
        let found = anomaly::run_checked(self.program, &mut self.backend, name, mb, launches)?;
        match (&mut self.finding, found) {
            (Some(first), Some(a)) => {
                first.get_or_insert(a);
            }
            (None, Some(a)) => return Err(TrainError::NonFinite { step: self.run.step + 1, anomaly: Box::new(a) }),
            _ => {}
        }
        Ok(())
    }

    /// Runs one of the step's lists: through the graph, or — checking for anomalies — the
    /// Program's list launch by launch.
    fn list(&mut self, phase: Phase, micro_batch: Option<usize>) -> Result<(), TrainError> {
        if self.detect_anomaly || self.finding.is_some() {
            let (name, launches) = phase.of(self.program);
            return self.run_list(name, launches, micro_batch);
        }
        let b = &mut self.backend;
        Ok(match phase {
            Phase::Start => self.graph.start(b),
            Phase::Forward => self.graph.forward(b),
            Phase::Backward => self.graph.backward(b),
            Phase::Update => self.graph.update(b),
        }?)
    }

    /// Runs the last step again — the same micro-batches from the same parameters, which a skipped
    /// step left as they were — with every launch's outputs checked, and names the first
    /// non-finite value. The update runs with the guard closed, so nothing changes; the data
    /// position is put back. `None` when the step ran clean (a spike, say). Every rank of a job
    /// runs all of it (their collectives keep them in step).
    pub fn find_non_finite(&mut self) -> Result<Option<Anomaly>, TrainError> {
        let Some((start, mut s)) = self.last_step.clone() else { return Ok(None) };
        let p = self.program;
        let resume_at = self.loader.position;
        self.loader.seek(start);
        s[scalars::MAX_GRAD_NORM] = -1.0;
        self.finding = Some(None);
        let acc = self.config.batch.accumulation.max(1) as usize;
        let ran = (|| {
            self.backend.write(p.io.scalars, &s)?;
            self.list(Phase::Start, None)?;
            if p.slots().is_empty() {
                self.micro_batches(acc)?;
            } else {
                self.pipeline(acc)?;
            }
            self.list(Phase::Update, None)
        })();
        let found = self.finding.take().flatten();
        self.loader.seek(resume_at);
        ran?;
        Ok(found)
    }

    /// Skipped steps in a row after which a run stops (`guard.max_skipped`).
    pub fn max_skipped(&self) -> u64 {
        self.config.guard.max_skipped.max(1)
    }

    /// Checks every launch's outputs on every step (slow: a read-back per launch).
    pub fn set_detect_anomaly(&mut self, on: bool) {
        self.detect_anomaly = on;
    }

    /// Mean next-token loss over up to `max_batches` validation micro-batches (no update). Every
    /// rank of a job runs it (its forward's collectives need them all); each data-parallel rank
    /// evaluates the same batches, and a pipeline's last stage the loss.
    pub fn validate(&mut self, max_batches: usize) -> Result<Option<f64>, TrainError> {
        let p = self.program;
        let batches = self.val.batches_in_order();
        if batches.is_empty() {
            return Ok(None);
        }
        let n = batches.len().min(max_batches.max(1));
        // The weights' compute copies of the masters the last update left (start makes them; the
        // gradients and statistics it zeroes are the next step's to fill).
        self.list(Phase::Start, None)?;
        let mut sum = 0.0;
        let slot = p.slots().first();
        for (i, b) in batches.iter().take(n).enumerate() {
            let batch: Vec<f32> = b.iter().map(|&t| t as f32).collect();
            match slot {
                Some(slot) => {
                    if let Some(t) = slot.tokens {
                        self.backend.write(t, &batch)?;
                    }
                    self.run_list("forward", &slot.forward, Some(i))?;
                    if self.comms.place.last_stage() {
                        sum += self.scalar(p.io.main_loss)?;
                    }
                }
                None => {
                    self.backend.write(p.io.tokens, &batch)?;
                    self.list(Phase::Forward, Some(i))?;
                    sum += self.scalar(p.io.main_loss)?;
                }
            }
        }
        if p.rank.is_some() {
            // Each data-parallel rank's last stage scored the same batches.
            let mut x = [sum];
            self.comms.world().all_reduce_f64(&mut x)?;
            sum = x[0] / self.comms.place.mesh.dp as f64;
        }
        Ok(Some(sum / n as f64))
    }

    /// Tokens one step trains on.
    pub fn tokens_per_step(&self) -> u64 {
        self.config.tokens_per_step()
    }

    /// The parameters laid out whole (`param_len` elements), read back from the backend — from a
    /// ZeRO-1 rank holding sharded masters, each shard from the rank that updated it (a
    /// collective: every rank calls it).
    pub fn params(&mut self) -> Result<Vec<f32>, TrainError> {
        let p = self.program;
        let arena = self.backend.read(p.whole(Space::Param))?;
        let (Some(masters), Some(rank)) = (p.masters(), p.rank.as_ref()) else {
            return Ok(arena);
        };
        let mut full = vec![0.0f32; p.param_len];
        masters.place(&arena, &mut full);
        for z in &rank.zero {
            // The shard's owner alone places it (the rest of a region's copies are stale until
            // the next start gathers them): the sum over the group is exact.
            let (lo, hi) = z.region;
            let mut region = vec![0.0f32; hi - lo];
            region[z.lo - lo..z.hi - lo].copy_from_slice(&full[z.lo..z.hi]);
            self.comms.group(z.group).all_reduce(&mut region)?;
            full[lo..hi].copy_from_slice(&region);
        }
        Ok(full)
    }

    /// The optimizer state of this rank's parameters, read back from the backend — under ZeRO-1
    /// each region's moments assembled from the shards of the ranks sharing it (a collective:
    /// every rank calls it).
    pub fn optimizer_state(&mut self) -> Result<State, TrainError> {
        let p = self.program;
        let arena = self.backend.read(p.whole(Space::Optim))?;
        let shards = p.rank.as_ref().map_or(&[][..], |r| &r.zero[..]);
        if shards.is_empty() {
            return Ok(State::from_arena(p, self.opt_step, &arena));
        }
        let moments = shards[0].moments;
        let mut full = vec![0.0f32; moments * p.param_len];
        for z in shards {
            // Each rank's shard in place, zeros elsewhere: the sum over the ranks is exact.
            let mut region = z.place(&arena);
            self.comms.group(z.group).all_reduce(&mut region)?;
            z.unplace(&region, p.param_len, &mut full);
        }
        Ok(State::from_arena(p, self.opt_step, &full))
    }

    /// Writes a checkpoint of the current step: the model and optimizer state by parameter name,
    /// so that any layout resumes it. One device writes it whole; the ranks of a job each write
    /// the parameters they own, in parallel, into one folder that rank 0 completes. Every rank
    /// calls it; rank 0 gets the folder, the others `None`.
    pub fn checkpoint(
        &mut self,
        dir: &std::path::Path,
        texts: &crate::train::checkpoint::Texts<'_>,
        keep: u64,
    ) -> Result<Option<std::path::PathBuf>, CheckpointError> {
        let (params, opt) = (self.params()?, self.optimizer_state()?);
        if self.program.rank.is_none() {
            return Ok(Some(crate::train::checkpoint::save(dir, self.program, &params, &opt, &self.run, texts, keep)?));
        }
        let part = crate::train::checkpoint::Part { program: self.program, params: &params, opt: &opt };
        Ok(crate::train::checkpoint::save_parallel(dir, &part, &self.run, texts, keep, &self.comms)?)
    }
}

/// The 1F1B schedule of pipeline stage `stage` of `stages` over `micro_batches`: `(forward,
/// micro-batch)` in order — `stages - stage - 1` warm-up forwards (at most all of them), then
/// one forward and one backward in turn, then the remaining backwards. At most `stages - stage`
/// micro-batches are in flight (forward run, backward not yet), consecutive ones.
pub fn one_f_one_b(stage: usize, stages: usize, micro_batches: usize) -> Vec<(bool, usize)> {
    let warm = (stages - stage - 1).min(micro_batches);
    let mut order: Vec<(bool, usize)> = (0..warm).map(|i| (true, i)).collect();
    for i in 0..micro_batches - warm {
        order.push((true, warm + i));
        order.push((false, i));
    }
    order.extend((micro_batches - warm..micro_batches).map(|i| (false, i)));
    order
}

/// The program is the rank's of the recipe's layout and of this trainer's place, and a pipeline
/// stage has a slot for each micro-batch 1F1B keeps in flight.
fn check_layout(p: &Program, config: &RunConfig, comms: &Comms) -> Result<(), TrainError> {
    let place = p.rank.as_ref().map_or(Place::SINGLE, |r| r.place);
    let pl = &config.parallel;
    let recipe = Mesh { dp: pl.dp as usize, ep: pl.ep as usize, pp: pl.pp as usize };
    if place != comms.place || place.mesh != recipe {
        return Err(TrainError::Layout(format!(
            "the program is rank {} of {}, the recipe's layout is {recipe}, and this trainer is rank {} of {}",
            place.rank, place.mesh, comms.place.rank, comms.place.mesh
        )));
    }
    if recipe.pp > 1 {
        let acc = config.batch.accumulation.max(1) as usize;
        let need = (recipe.pp - place.stage()).min(acc);
        if p.slots().len() < need {
            return Err(TrainError::Layout(format!(
                "pipeline stage {} keeps up to {need} micro-batches in flight under 1F1B (batch.accumulation {acc}), \
                 but its program was compiled for {}",
                place.stage(),
                p.slots().len()
            )));
        }
    }
    Ok(())
}

/// The Program's optimizer step runs the recipe's optimizer with its moment dtype.
fn check_optimizer(p: &Program, config: &RunConfig) -> Result<(), TrainError> {
    use crate::op::{Op, OptimizerKind};
    let o = &config.optimizer;
    for k in &p.kernels {
        if let Op::Optimizer(u) = &k.op {
            if u.kind != OptimizerKind::from(o.kind) || u.bf16_moments != (o.moments == Dtype::Bf16) {
                return Err(TrainError::Optimizer {
                    compiled: if u.bf16_moments { "bf16" } else { "f32" },
                    arena: p.optim_len,
                    recipe: o.moments,
                    kind: o.kind,
                });
            }
        }
    }
    Ok(())
}

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Read(#[from] TrainError),
    #[error(transparent)]
    Write(#[from] crate::train::checkpoint::RunCheckpointError),
}
