//! `dsv3c select`: the largest canonical spec, and a parallel layout for it, that fit some GPUs.
//!
//! Layouts are searched over tensor parallelism within a node (1, 2, 4, 8, dividing the heads),
//! pipeline stages dividing the rest, and expert parallelism dividing both the experts and
//! `dp·tp`. Among the layouts that fit, the one with the least model parallelism (`tp·pp`) wins,
//! then the widest expert parallelism, then the most free memory.

use serde::Serialize;

use crate::canonical;
use crate::memory::{memory, Layout, Memory, RunShape};
use crate::params::count;

/// One spec's best layout, or why none fits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub spec: String,
    pub total_params: u64,
    pub active_params: u64,
    /// The chosen layout's memory, if any layout fits.
    pub best: Option<Memory>,
    /// The smallest per-GPU total over every valid layout (what "does not fit" means).
    pub min_total: Option<f64>,
    pub layouts_tried: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub gpus: u64,
    pub gpu_memory_gb: f64,
    /// The recommended spec's name, if any spec fits.
    pub choice: Option<String>,
    /// Every canonical spec, largest first.
    pub candidates: Vec<Candidate>,
}

fn divisors(n: u64) -> Vec<u64> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}

/// All layouts of `gpus` GPUs that `s` accepts.
pub fn layouts(s: &crate::types::Spec, gpus: u64) -> Vec<Layout> {
    let mut out = Vec::new();
    for tp in [1u64, 2, 4, 8] {
        if !gpus.is_multiple_of(tp) {
            continue;
        }
        for pp in divisors(gpus / tp) {
            let dp = gpus / (tp * pp);
            let experts = s.moe.as_ref().map_or(1, |m| m.n_routed_experts);
            for ep in divisors(dp * tp).into_iter().filter(|e| experts.is_multiple_of(*e)) {
                let l = Layout { tp, pp, ep, dp };
                if l.check(s, gpus).is_ok() {
                    out.push(l);
                }
            }
        }
    }
    out
}

/// Picks the largest canonical spec that fits `gpus` GPUs of `gpu_memory_gb` each.
pub fn select(gpus: u64, gpu_memory_gb: f64, run: RunShape) -> Selection {
    let mut specs = canonical::all();
    specs.sort_by_key(|s| std::cmp::Reverse(count(s).total));
    let budget = gpu_memory_gb * 1e9;
    let mut candidates = Vec::new();
    let mut choice = None;
    for s in &specs {
        let run = RunShape { seq_len: run.seq_len.min(s.max_seq_len), ..run };
        let ls = layouts(s, gpus);
        let mems: Vec<Memory> = ls.iter().map(|l| memory(s, *l, run)).collect();
        let min_total = mems.iter().map(|m| m.total).fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.min(t))));
        let best = mems
            .iter()
            .filter(|m| m.total <= budget)
            .min_by(|a, b| {
                let key = |m: &Memory| (m.layout.tp * m.layout.pp, m.layout.pp, std::cmp::Reverse(m.layout.ep));
                key(a).cmp(&key(b)).then(a.total.total_cmp(&b.total))
            })
            .cloned();
        if best.is_some() && choice.is_none() {
            choice = Some(s.name.clone());
        }
        let p = count(s);
        candidates.push(Candidate {
            spec: s.name.clone(),
            total_params: p.total,
            active_params: p.active,
            best,
            min_total,
            layouts_tried: ls.len(),
        });
    }
    Selection { gpus, gpu_memory_gb, choice, candidates }
}
