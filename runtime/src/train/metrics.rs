//! Per-step MoE balance statistics from each MoE layer's routing statistics (`Op::ExpertStats`,
//! accumulated on the backend over the step's micro-batches): router entropy (mean per-token
//! entropy of the normalized scores, divided by ln E), expert utilization (share of experts that
//! received a token), and max/mean load.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeBalance {
    pub layer: usize,
    pub router_entropy: f64,
    pub utilization: f64,
    pub max_mean_load: f64,
    /// The fraction of routed rows dropped past the experts' capacity (expert parallelism with
    /// a capacity factor; absent when none was).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub dropped: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl MoeBalance {
    /// The summary of one layer's statistics `[counts (E) | Σ entropy / ln E | tokens]`.
    pub fn from_stats(layer: usize, stats: &[f32]) -> MoeBalance {
        let e = stats.len().saturating_sub(2);
        let counts = &stats[..e];
        let (entropy, tokens) = (stats.get(e).copied().unwrap_or(0.0), stats.get(e + 1).copied().unwrap_or(0.0));
        let total: f64 = counts.iter().map(|&c| c as f64).sum();
        let mean = total / e.max(1) as f64;
        let max = counts.iter().fold(0.0f64, |m, &c| m.max(c as f64));
        MoeBalance {
            layer,
            router_entropy: entropy as f64 / (tokens as f64).max(1.0),
            utilization: counts.iter().filter(|&&c| c > 0.0).count() as f64 / e.max(1) as f64,
            max_mean_load: if mean > 0.0 { max / mean } else { 0.0 },
            dropped: 0.0,
        }
    }

    /// With `rows` of the layer's `routed` rows dropped past capacity.
    pub fn with_dropped(mut self, rows: f64, routed: f64) -> MoeBalance {
        self.dropped = if routed > 0.0 { rows / routed } else { 0.0 };
        self
    }
}
