//! Per-step MoE balance statistics from the routers' choices and scores: router entropy (mean
//! per-token entropy of the normalized scores, divided by ln E), expert utilization (share of
//! experts that received a token), and max/mean load.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeBalance {
    pub layer: usize,
    pub router_entropy: f64,
    pub utilization: f64,
    pub max_mean_load: f64,
}

/// Accumulates expert loads over a step's micro-batches.
#[derive(Debug, Clone, Default)]
pub struct Loads {
    /// Per MoE layer: tokens routed to each expert.
    pub counts: Vec<Vec<u64>>,
    /// Per MoE layer: (sum of per-token normalized entropies, tokens).
    entropy: Vec<(f64, u64)>,
}

impl Loads {
    pub fn new(layers: usize, experts: usize) -> Loads {
        Loads { counts: vec![vec![0; experts]; layers], entropy: vec![(0.0, 0); layers] }
    }

    /// Adds one micro-batch of one layer: chosen experts `[tokens, k]` and scores `[tokens, E]`.
    pub fn add(&mut self, layer: usize, idx: &[f32], scores: &[f32]) {
        let e = self.counts[layer].len();
        crate::cpu::expert_counts(idx, &mut self.counts[layer]);
        for row in scores.chunks_exact(e) {
            let z: f64 = row.iter().map(|&s| s as f64).sum();
            let h: f64 = row.iter().map(|&s| s as f64 / z).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
            self.entropy[layer].0 += h / (e as f64).ln().max(f64::MIN_POSITIVE);
            self.entropy[layer].1 += 1;
        }
    }

    pub fn summary(&self) -> Vec<MoeBalance> {
        self.counts
            .iter()
            .zip(&self.entropy)
            .enumerate()
            .map(|(layer, (c, (h, n)))| {
                let total: u64 = c.iter().sum();
                let mean = total as f64 / c.len().max(1) as f64;
                MoeBalance {
                    layer,
                    router_entropy: h / (*n).max(1) as f64,
                    utilization: c.iter().filter(|&&x| x > 0).count() as f64 / c.len().max(1) as f64,
                    max_mean_load: if mean > 0.0 { *c.iter().max().unwrap_or(&0) as f64 / mean } else { 0.0 },
                }
            })
            .collect()
    }
}
