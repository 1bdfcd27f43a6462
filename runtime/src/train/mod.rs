//! Training: the step loop, optimizers, LR schedules, checkpoints, balance metrics.

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;
