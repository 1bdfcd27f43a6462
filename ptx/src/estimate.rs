//! An estimate, not a measurement: the occupancy an H100 SXM would give a kernel (from ptxas's registers
//! and the shared memory it declares), and a lower bound on its time from the counters — the slowest of
//! its tensor FLOPs at the tensor-core peak, its other FLOPs at the FMA peak, its distinct global bytes at
//! DRAM bandwidth, its warp instructions at the issue rate, and its shared-memory wavefronts at one per
//! SM per clock. Real kernels are slower: latency, occupancy and the memory system are not modelled.

use crate::exec::Report;

/// The machine the estimate is for.
#[derive(Debug, Clone, Copy)]
pub struct Hardware {
    pub name: &'static str,
    pub sms: u32,
    pub clock_hz: f64,
    /// Dense tensor-core FLOP/s for bf16/f16 and FP8 inputs.
    pub tensor_16: f64,
    pub tensor_fp8: f64,
    pub fp32: f64,
    pub fp64: f64,
    pub dram_bytes_per_s: f64,
    /// Warp instructions issued per SM per clock (4 schedulers).
    pub issue_per_sm_clock: f64,
    pub regs_per_sm: u32,
    pub max_warps_per_sm: u32,
    pub max_blocks_per_sm: u32,
    pub smem_per_sm: u32,
    /// Shared memory the driver reserves per resident block.
    pub smem_reserved_per_block: u32,
}

/// NVIDIA H100 SXM5: 132 SMs at a 1.98 GHz boost clock, 989 TFLOP/s dense bf16, 1979 FP8, 67 FP32,
/// 34 FP64, 3.35 TB/s HBM3, 64 Ki registers, 64 warps, 32 blocks and 228 KiB shared memory per SM.
pub const H100: Hardware = Hardware {
    name: "H100 SXM",
    sms: 132,
    clock_hz: 1.98e9,
    tensor_16: 989.4e12,
    tensor_fp8: 1978.9e12,
    fp32: 66.9e12,
    fp64: 33.5e12,
    dram_bytes_per_s: 3.35e12,
    issue_per_sm_clock: 4.0,
    regs_per_sm: 65536,
    max_warps_per_sm: 64,
    max_blocks_per_sm: 32,
    smem_per_sm: 228 * 1024,
    smem_reserved_per_block: 1024,
};

/// NVIDIA H200 SXM: an H100's SMs, clocks and peaks with 4.8 TB/s HBM3e.
pub const H200: Hardware = Hardware { name: "H200 SXM", dram_bytes_per_s: 4.8e12, ..H100 };

/// What a kernel asks of an SM.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub threads_per_block: u32,
    /// Registers per thread (from `ptxas -v`), when known.
    pub regs_per_thread: Option<u32>,
    /// Static plus dynamic shared memory per block.
    pub smem_per_block: u32,
}

#[derive(Debug, Clone)]
pub struct Occupancy {
    pub blocks_per_sm: u32,
    pub warps_per_sm: u32,
    /// Resident warps over the SM's maximum.
    pub fraction: f64,
    /// What limits it: `registers`, `shared memory`, `warps` or `blocks`.
    pub limiter: &'static str,
}

pub fn occupancy(r: &Resources, hw: &Hardware) -> Occupancy {
    let warps = r.threads_per_block.div_ceil(32).max(1);
    let mut limits: Vec<(u32, &'static str)> =
        vec![(hw.max_warps_per_sm / warps, "warps"), (hw.max_blocks_per_sm, "blocks")];
    if let Some(regs) = r.regs_per_thread {
        let per_warp = (regs.max(1) * 32).div_ceil(256) * 256;
        limits.push((hw.regs_per_sm / (per_warp * warps), "registers"));
    }
    if r.smem_per_block > 0 {
        limits.push((hw.smem_per_sm / (r.smem_per_block + hw.smem_reserved_per_block), "shared memory"));
    }
    let (blocks, limiter) = limits.into_iter().min_by_key(|l| l.0).unwrap_or((1, "blocks"));
    Occupancy {
        blocks_per_sm: blocks,
        warps_per_sm: blocks * warps,
        fraction: (blocks * warps) as f64 / hw.max_warps_per_sm as f64,
        limiter,
    }
}

/// A lower bound on a launch's time, with each term.
#[derive(Debug, Clone)]
pub struct Estimate {
    pub occupancy: Occupancy,
    /// `(term, seconds)`: tensor, fma, dram, issue, shared.
    pub terms: Vec<(&'static str, f64)>,
    pub seconds: f64,
    pub bound_by: &'static str,
    /// Distinct global bytes, scaled to the whole grid.
    pub dram_bytes: f64,
    /// The counters were extrapolated from this fraction of the grid's blocks.
    pub sampled_fraction: f64,
}

pub fn estimate(rep: &Report, r: &Resources, hw: &Hardware) -> Estimate {
    let occ = occupancy(r, hw);
    let scale = rep.blocks_total as f64 / rep.blocks_run.max(1) as f64;
    let c = rep.counters.scaled(scale);
    // A grid smaller than the machine leaves SMs idle: per-SM throughputs apply to the SMs it can use.
    let usable = (rep.blocks_total as f64).min(hw.sms as f64).max(1.0);
    let sm_share = hw.sms as f64 / usable;
    // Distinct bytes scale with the grid only up to the buffers themselves: blocks of a sample re-read
    // what their neighbours share (a GEMM's operands), which the whole grid reads once.
    let dram_bytes = (rep.dram_sectors as f64 * 32.0 * scale).min(rep.touched_bytes.max(rep.dram_sectors * 32) as f64);
    let terms = vec![
        ("tensor", (c.tensor_flops_16 as f64 / hw.tensor_16 + c.tensor_flops_fp8 as f64 / hw.tensor_fp8) * sm_share),
        ("fma", (c.fp32_flops as f64 / hw.fp32 + c.fp64_flops as f64 / hw.fp64) * sm_share),
        ("dram", dram_bytes / hw.dram_bytes_per_s),
        ("issue", c.warp_instructions() as f64 / (hw.sms as f64 * hw.issue_per_sm_clock * hw.clock_hz) * sm_share),
        ("shared", c.shared_wavefronts as f64 / (hw.sms as f64 * hw.clock_hz) * sm_share),
    ];
    let (bound_by, seconds) = terms.iter().copied().fold(("none", 0.0), |a, t| if t.1 > a.1 { t } else { a });
    Estimate { occupancy: occ, terms, seconds, bound_by, dram_bytes, sampled_fraction: 1.0 / scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_limits() {
        // 256 threads at 128 registers: 32 Ki registers per block -> 2 blocks, 16 warps, register-bound.
        let o = occupancy(&Resources { threads_per_block: 256, regs_per_thread: Some(128), smem_per_block: 0 }, &H100);
        assert_eq!((o.blocks_per_sm, o.warps_per_sm, o.limiter), (2, 16, "registers"));
        // 100 KiB of shared memory per block: 2 blocks.
        let o = occupancy(
            &Resources { threads_per_block: 128, regs_per_thread: Some(32), smem_per_block: 100 << 10 },
            &H100,
        );
        assert_eq!((o.blocks_per_sm, o.limiter), (2, "shared memory"));
        let o = occupancy(&Resources { threads_per_block: 1024, regs_per_thread: Some(32), smem_per_block: 0 }, &H100);
        assert_eq!((o.blocks_per_sm, o.warps_per_sm, o.limiter), (2, 64, "warps"));
    }
}
