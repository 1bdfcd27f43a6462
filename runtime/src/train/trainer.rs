//! The training step: micro-batches through forward and backward (gradients accumulate in the
//! arena), averaging, global-norm clipping, the optimizer, and the aux-loss-free bias update
//! (`b_i += γ·sign(mean load − load_i)` over the step's tokens) — on the CPU reference backend.

use std::sync::Arc;

use dsv3c_spec::config::RunConfig;
use serde::Serialize;

use crate::cpu::Cpu;
use crate::data::loader::{Loader, LoaderError, Position};
use crate::program::{Graph, Program};
use crate::train::checkpoint::{Loaded, RunState};
use crate::train::metrics::{Loads, MoeBalance};
use crate::train::optim::{self, State};
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
}

pub struct Trainer<'a> {
    pub program: &'a Program,
    /// What runs forward and backward: the Program itself, or a generated graph.
    graph: &'a dyn Graph,
    pub cpu: Cpu,
    config: RunConfig,
    opt: State,
    mask: Vec<u8>,
    loader: Loader,
    val: Loader,
    pub run: RunState,
    /// Offsets of each MoE layer's correction bias in the parameter arena, in layer order.
    bias: Vec<usize>,
    gamma: f32,
    experts: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Load(#[from] crate::checkpoint::LoadError),
    #[error("checkpoint {path} was made by a different run (config hash {found}, this run {expected}); resume with the recipe that made it or start a new --out")]
    ConfigChanged { path: String, expected: String, found: String },
}

impl<'a> Trainer<'a> {
    /// A trainer over `tokens` (the packed corpus), fresh from `seed` or resumed from `resume`.
    pub fn new(
        program: &'a Program,
        graph: &'a dyn Graph,
        config: &RunConfig,
        tokens: Arc<Vec<u32>>,
        run: RunState,
        resume: Option<Loaded>,
        gamma: f32,
    ) -> Result<Trainer<'a>, TrainError> {
        let seq = config.batch.seq_len as usize;
        let micro = config.batch.micro_batch as usize;
        let (train_w, val_w) = crate::data::loader::split(tokens.len(), seq, config.data.validation_fraction);
        let mut cpu = Cpu::new(program);
        let mut run = run;
        let opt = match resume {
            Some(l) => {
                if l.run.config_hash != run.config_hash {
                    return Err(TrainError::ConfigChanged {
                        path: l.path.display().to_string(),
                        expected: run.config_hash,
                        found: l.run.config_hash,
                    });
                }
                crate::checkpoint::load_params(program, &l.model, &mut cpu.params)?;
                run = l.run;
                l.optimizer
            }
            None => {
                crate::init::init_params(program, run.seed, &mut cpu.params);
                State::new(program.param_len, config.optimizer.kind)
            }
        };
        let loader = Loader::new(tokens.clone(), train_w, seq, micro, 0, 1, run.seed, run.position)?;
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
        let bias: Vec<usize> = program
            .params
            .iter()
            .filter(|p| p.name.ends_with("mlp.gate.e_score_correction_bias"))
            .map(|p| p.offset)
            .collect();
        let experts =
            program.params.iter().find(|p| p.name.ends_with("mlp.gate.e_score_correction_bias")).map_or(0, |p| p.len());
        let mask = optim::masks(program, config.optimizer.decay_embeddings);
        Ok(Trainer { program, graph, cpu, config: config.clone(), opt, mask, loader, val, run, bias, gamma, experts })
    }

    /// One optimizer step over `accumulation` micro-batches.
    pub fn step(&mut self) -> StepReport {
        let p = self.program;
        let acc = self.config.batch.accumulation as usize;
        self.cpu.grads.fill(0.0);
        let mut loads = Loads::new(p.io.expert_choices.len(), self.experts);
        let (mut loss, mut total) = (0.0f64, 0.0f64);
        let mut mtp = vec![0.0f64; p.io.mtp_losses.len()];
        for _ in 0..acc {
            let batch: Vec<f32> = self.loader.next_batch().into_iter().map(|t| t as f32).collect();
            self.cpu.write(p.io.tokens, &batch);
            self.graph.forward(&mut self.cpu);
            loss += self.cpu.read(p.io.main_loss)[0] as f64;
            total += self.cpu.read(p.io.loss)[0] as f64;
            for (m, s) in mtp.iter_mut().zip(&p.io.mtp_losses) {
                *m += self.cpu.read(*s)[0] as f64;
            }
            for (layer, (idx, scores)) in p.io.expert_choices.iter().zip(&p.io.expert_scores).enumerate() {
                loads.add(layer, self.cpu.read(*idx), self.cpu.read(*scores));
            }
            self.graph.backward(&mut self.cpu);
        }
        let inv = 1.0 / acc as f64;
        optim::scale(&mut self.cpu.grads, inv as f32);
        let grad_norm = optim::clip(&mut self.cpu.grads, &self.mask, self.config.optimizer.grad_clip);
        self.run.step += 1;
        let lr = schedule::lr(&self.config.schedule, self.config.optimizer.lr, self.run.step, self.config.steps);
        optim::step(&self.config.optimizer, &mut self.opt, &mut self.cpu.params, &self.cpu.grads, &self.mask, lr);
        self.update_bias(&loads);
        self.run.tokens += self.config.tokens_per_step();
        self.run.position = self.loader.position;
        StepReport {
            step: self.run.step,
            loss: loss * inv,
            total_loss: total * inv,
            mtp_losses: mtp.iter().map(|m| m * inv).collect(),
            lr,
            grad_norm,
            tokens: self.run.tokens,
            moe: loads.summary(),
        }
    }

    /// Aux-loss-free balancing: each MoE layer's bias moves γ toward balance.
    fn update_bias(&mut self, loads: &Loads) {
        if self.gamma == 0.0 {
            return;
        }
        for (&off, counts) in self.bias.iter().zip(&loads.counts) {
            crate::cpu::balance_bias(counts, self.gamma, &mut self.cpu.params[off..off + counts.len()]);
        }
    }

    /// Mean next-token loss over up to `max_batches` validation micro-batches (no update).
    pub fn validate(&mut self, max_batches: usize) -> Option<f64> {
        let p = self.program;
        let batches = self.val.batches_in_order();
        if batches.is_empty() {
            return None;
        }
        let n = batches.len().min(max_batches.max(1));
        let mut sum = 0.0;
        for b in batches.iter().take(n) {
            let batch: Vec<f32> = b.iter().map(|&t| t as f32).collect();
            self.cpu.write(p.io.tokens, &batch);
            self.graph.forward(&mut self.cpu);
            sum += self.cpu.read(p.io.main_loss)[0] as f64;
        }
        Some(sum / n as f64)
    }

    /// Writes a checkpoint of the current step.
    pub fn checkpoint(
        &self,
        dir: &std::path::Path,
        texts: &crate::train::checkpoint::Texts<'_>,
        keep: u64,
    ) -> Result<std::path::PathBuf, crate::train::checkpoint::RunCheckpointError> {
        crate::train::checkpoint::save(dir, self.program, &self.cpu.params, &self.opt, &self.run, texts, keep)
    }
}
