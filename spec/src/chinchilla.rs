//! Chinchilla check: training tokens per active parameter against the 20–26 band.

use serde::Serialize;

use crate::params::count;
use crate::types::Spec;

/// The compute-optimal band of tokens per (active) parameter.
pub const BAND: (f64, f64) = (20.0, 26.0);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chinchilla {
    pub spec: String,
    pub tokens: u64,
    pub active_params: u64,
    pub tokens_per_param: f64,
    pub band: (f64, f64),
    pub within: bool,
    /// Token budgets at the band's edges for this model.
    pub tokens_low: u64,
    pub tokens_high: u64,
}

pub fn chinchilla(s: &Spec, tokens: u64) -> Chinchilla {
    let active = count(s).active;
    let ratio = tokens as f64 / active.max(1) as f64;
    Chinchilla {
        spec: s.name.clone(),
        tokens,
        active_params: active,
        tokens_per_param: ratio,
        band: BAND,
        within: (BAND.0..=BAND.1).contains(&ratio),
        tokens_low: (BAND.0 * active as f64) as u64,
        tokens_high: (BAND.1 * active as f64) as u64,
    }
}
