//! Training: the step loop, the step guard and anomaly detection, optimizers, LR schedules,
//! checkpoints, balance metrics.

pub mod anomaly;
pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;
