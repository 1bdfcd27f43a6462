//! `dsv3c inspect`: everything derived from a spec — parameters, FLOPs, KV cache, memory per
//! GPU — as one serializable report and as a text table.

use std::fmt::Write;

use serde::Serialize;

use crate::flops::{flops, Flops};
use crate::kv_cache::{kv_cache, KvCache};
use crate::memory::{memory, Layout, Memory, RunShape};
use crate::params::{count, ParamCounts};
use crate::types::Spec;

/// The memory request of an inspection: a layout on some GPUs of some size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryRequest {
    pub layout: Layout,
    pub run: RunShape,
    /// GPU memory in GB (1e9 bytes).
    pub gpu_memory_gb: f64,
}

/// Memory per GPU and whether it fits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    #[serde(flatten)]
    pub memory: Memory,
    pub gpu_memory_gb: f64,
    pub fits: bool,
}

/// Everything `inspect` reports about a spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    pub name: String,
    pub params: ParamCounts,
    pub flops_per_token: Flops,
    pub kv_cache: KvCache,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
}

/// Inspects `s` at training sequence length `seq_len` (also the KV-cache context).
pub fn inspect(s: &Spec, seq_len: u64, mem: Option<MemoryRequest>) -> Inspection {
    Inspection {
        name: s.name.clone(),
        params: count(s),
        flops_per_token: flops(s, seq_len),
        kv_cache: kv_cache(s, seq_len),
        memory: mem.map(|m| {
            let memory = memory(s, m.layout, m.run);
            let fits = memory.total <= m.gpu_memory_gb * 1e9;
            MemoryReport { memory, gpu_memory_gb: m.gpu_memory_gb, fits }
        }),
    }
}

/// `1234567` -> `1.23M`.
pub fn human_count(n: f64) -> String {
    let a = n.abs();
    let (v, u) = if a >= 1e12 {
        (n / 1e12, "T")
    } else if a >= 1e9 {
        (n / 1e9, "B")
    } else if a >= 1e6 {
        (n / 1e6, "M")
    } else if a >= 1e3 {
        (n / 1e3, "K")
    } else {
        return format!("{n:.0}");
    };
    format!("{v:.2}{u}")
}

/// Bytes in binary units: `1.50 GiB`.
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

/// `1234` -> `1,234`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Inspection {
    /// The report as an aligned text table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let p = &self.params;
        let _ = writeln!(o, "spec {}", self.name);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<22} {:>6} {:>16} {:>18} {:>18}",
            "component", "count", "per instance", "total", "active/token"
        );
        for c in &p.components {
            let _ = writeln!(
                o,
                "{:<22} {:>6} {:>16} {:>18} {:>18}",
                c.name,
                c.count,
                grouped(c.per_instance),
                grouped(c.total),
                grouped(c.active)
            );
        }
        let _ = writeln!(o, "{}", "-".repeat(84));
        let line = |o: &mut String, k: &str, v: u64| {
            let _ = writeln!(o, "{:<22} {:>18} ({})", k, grouped(v), human_count(v as f64));
        };
        line(&mut o, "total", p.total);
        line(&mut o, "active", p.active);
        line(&mut o, "active non-embedding", p.active_non_embedding);
        line(&mut o, "mtp", p.mtp);
        line(&mut o, "routed experts", p.routed_experts);
        line(&mut o, "buffers (router bias)", p.buffers);

        let f = &self.flops_per_token;
        let _ = writeln!(o);
        let _ = writeln!(o, "FLOPs per token at seq_len {}", f.seq_len);
        let g = |x: u64| format!("{:.3} GFLOP", x as f64 / 1e9);
        let _ = writeln!(o, "  {:<28} {:>18}", "forward matmul", g(f.forward_matmul));
        let _ = writeln!(o, "  {:<28} {:>18}", "forward attention", g(f.forward_attention));
        let _ = writeln!(o, "  {:<28} {:>18}", "forward", g(f.forward));
        let _ = writeln!(o, "  {:<28} {:>18}", "training (fwd+bwd)", g(f.training));
        let _ = writeln!(o, "  {:<28} {:>18}", "mtp forward", g(f.mtp_forward));
        let _ = writeln!(o, "  {:<28} {:>18}", "training with mtp", g(f.training_with_mtp));

        let k = &self.kv_cache;
        let _ = writeln!(o);
        let _ = writeln!(o, "KV cache (inference)              {:>14} {:>18}", "MLA", "MHA, same shape");
        let _ = writeln!(
            o,
            "  {:<30} {:>14} {:>18}",
            "bytes / token / layer",
            grouped(k.mla_bytes_per_token_layer),
            grouped(k.mha_bytes_per_token_layer)
        );
        let _ = writeln!(
            o,
            "  {:<30} {:>14} {:>18}",
            "bytes / token (full layers)",
            human_bytes(k.bytes_per_token as f64),
            human_bytes(k.mha_bytes_per_token as f64)
        );
        let _ = writeln!(
            o,
            "  {:<30} {:>14} {:>18}",
            format!("per sequence of {}", k.context),
            human_bytes(k.bytes_per_sequence as f64),
            human_bytes(k.mha_bytes_per_sequence as f64)
        );
        let ratio = k.mha_bytes_per_sequence as f64 / (k.bytes_per_sequence.max(1)) as f64;
        let _ = writeln!(o, "  {:<30} {:>14}", "MHA / MLA", format!("{ratio:.1}x"));

        if let Some(m) = &self.memory {
            let mm = &m.memory;
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "Memory per GPU ({} on {} GPUs; micro-batch {} x {} tokens; {} moments; ZeRO-{})",
                mm.layout,
                mm.layout.gpus(),
                mm.run.micro_batch,
                mm.run.seq_len,
                mm.run.moments.name(),
                mm.run.zero
            );
            let _ = writeln!(o, "  {:<28} {:>14}", "parameters held", human_count(mm.params));
            for (k, v) in [
                ("weights", mm.weights),
                ("master weights", mm.master),
                ("gradients", mm.gradients),
                ("optimizer states", mm.optimizer),
                ("activations", mm.activations),
            ] {
                let _ = writeln!(o, "  {:<28} {:>14}", k, human_bytes(v));
            }
            let _ = writeln!(o, "  {:<28} {:>14}", "total", human_bytes(mm.total));
            let verdict = if m.fits { "fits" } else { "does NOT fit" };
            let _ = writeln!(o, "  {:<28} {:>14}  ({verdict})", "GPU memory", human_bytes(m.gpu_memory_gb * 1e9));
        }
        o
    }
}
