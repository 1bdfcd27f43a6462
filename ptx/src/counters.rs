//! Counters of one launch, like Nsight Compute's basic metrics: warp instructions by class, lane
//! instructions, global requests and the 32-byte sectors they touch, shared-memory wavefronts (bank
//! conflicts), tensor-core operations, barriers, and floating-point operations.

use crate::inst::{Class, CLASSES};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Warp instructions issued, by [`Class`] (indexed by `Class::index`).
    pub warp_insts: [u64; CLASSES.len()],
    /// Instructions summed over active lanes.
    pub lane_insts: u64,
    pub global_load_requests: u64,
    pub global_load_sectors: u64,
    pub global_store_requests: u64,
    pub global_store_sectors: u64,
    pub shared_load_requests: u64,
    pub shared_store_requests: u64,
    /// Shared-memory wavefronts: 1 per request without bank conflicts, more with them.
    pub shared_wavefronts: u64,
    pub tensor_ops: u64,
    /// Tensor-core FLOPs by input format: bf16/f16 and FP8.
    pub tensor_flops_16: u64,
    pub tensor_flops_fp8: u64,
    /// Non-tensor floating-point operations (an FMA counts 2).
    pub fp32_flops: u64,
    pub fp64_flops: u64,
    pub barriers: u64,
    pub atomics: u64,
}

impl Counters {
    pub fn warp_instructions(&self) -> u64 {
        self.warp_insts.iter().sum()
    }

    pub fn add(&mut self, o: &Counters) {
        for (a, b) in self.warp_insts.iter_mut().zip(o.warp_insts.iter()) {
            *a += b;
        }
        self.lane_insts += o.lane_insts;
        self.global_load_requests += o.global_load_requests;
        self.global_load_sectors += o.global_load_sectors;
        self.global_store_requests += o.global_store_requests;
        self.global_store_sectors += o.global_store_sectors;
        self.shared_load_requests += o.shared_load_requests;
        self.shared_store_requests += o.shared_store_requests;
        self.shared_wavefronts += o.shared_wavefronts;
        self.tensor_ops += o.tensor_ops;
        self.tensor_flops_16 += o.tensor_flops_16;
        self.tensor_flops_fp8 += o.tensor_flops_fp8;
        self.fp32_flops += o.fp32_flops;
        self.fp64_flops += o.fp64_flops;
        self.barriers += o.barriers;
        self.atomics += o.atomics;
    }

    /// Every counter times `f` (extrapolating a sample of blocks to the grid).
    pub fn scaled(&self, f: f64) -> Counters {
        let s = |v: u64| (v as f64 * f).round() as u64;
        let mut c = self.clone();
        for v in c.warp_insts.iter_mut() {
            *v = s(*v);
        }
        for v in [
            &mut c.lane_insts,
            &mut c.global_load_requests,
            &mut c.global_load_sectors,
            &mut c.global_store_requests,
            &mut c.global_store_sectors,
            &mut c.shared_load_requests,
            &mut c.shared_store_requests,
            &mut c.shared_wavefronts,
            &mut c.tensor_ops,
            &mut c.tensor_flops_16,
            &mut c.tensor_flops_fp8,
            &mut c.fp32_flops,
            &mut c.fp64_flops,
            &mut c.barriers,
            &mut c.atomics,
        ] {
            *v = s(*v);
        }
        c
    }

    /// `(class name, warp instructions)` for the classes that occurred.
    pub fn by_class(&self) -> Vec<(&'static str, u64)> {
        CLASSES.iter().map(|c| (c.name(), self.warp_insts[c.index()])).filter(|(_, n)| *n > 0).collect()
    }

    pub fn count(&mut self, class: Class, lanes: u32) {
        self.warp_insts[class.index()] += 1;
        self.lane_insts += lanes as u64;
    }
}

/// Distinct 32-byte sectors among lane accesses `[addr, addr + bytes)`.
pub fn sectors(accesses: &[(u64, u32)]) -> u64 {
    let ids = accesses.iter().flat_map(|&(a, n)| a / 32..=(a + n.max(1) as u64 - 1) / 32);
    with_gathered(ids, |s| {
        // Lanes usually walk memory in order: count changes; otherwise sort first.
        if !s.windows(2).all(|p| p[0] <= p[1]) {
            s.sort_unstable();
        }
        distinct_in_sorted(s)
    })
}

/// Calls `f` on the values of `it` gathered in a fixed buffer — aligned warp accesses give at most a
/// sector per lane, or 32 words per shared phase — or on the heap when there are more.
fn with_gathered<R>(it: impl Iterator<Item = u64>, f: impl FnOnce(&mut [u64]) -> R) -> R {
    let mut buf = [0u64; 64];
    let mut heap = Vec::new();
    let mut len = 0;
    for x in it {
        if len < buf.len() {
            buf[len] = x;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&buf);
            }
            heap.push(x);
        }
        len += 1;
    }
    f(if heap.is_empty() { &mut buf[..len] } else { &mut heap[..] })
}

fn distinct_in_sorted(s: &[u64]) -> u64 {
    if s.is_empty() {
        return 0;
    }
    1 + s.windows(2).filter(|p| p[0] != p[1]).count() as u64
}

/// Shared-memory wavefronts of one warp request: lanes are served in phases of `128 / bytes-per-lane`
/// lanes (all 32 for 4-byte accesses); in each phase, a bank (4-byte word index mod 32) serving `n`
/// distinct words costs `n` wavefronts (the same word is broadcast).
pub fn wavefronts(accesses: &[(u32, u64, u32)]) -> u64 {
    // (lane, address, bytes), in lane order
    let Some(&(_, _, bytes)) = accesses.first() else {
        return 0;
    };
    // Lanes per phase: 128 / bytes for power-of-two sizes (every size a warp can access), as a shift.
    let per_phase = (128 / bytes.clamp(4, 128)).min(32);
    let shift = per_phase.ilog2();
    let words_of = |&(_, a, n): &(u32, u64, u32)| {
        let (w0, w1) = (a / 4, (a + n.max(1) as u64 - 1) / 4);
        w0..=w1.min(w0 + 31)
    };
    let mut total = 0;
    let mut rest = accesses;
    while let Some(first) = rest.first() {
        // One phase: the accesses of lanes [p · per_phase, (p + 1) · per_phase).
        let phase = first.0 >> shift;
        let end = rest.iter().position(|a| a.0 >> shift != phase).unwrap_or(rest.len());
        let (lanes, after) = rest.split_at(end);
        rest = after;
        // Conflict-free unless two distinct words share a bank: one pass with a word per bank.
        let (mut used, mut word, mut conflict) = (0u32, [0u64; 32], false);
        'scan: for a in lanes {
            for w in words_of(a) {
                let bank = (w % 32) as usize;
                if used & (1 << bank) == 0 {
                    used |= 1 << bank;
                    word[bank] = w;
                } else if word[bank] != w {
                    conflict = true;
                    break 'scan;
                }
            }
        }
        if !conflict {
            total += 1;
            continue;
        }
        // The worst bank's distinct words.
        let per_bank = with_gathered(lanes.iter().flat_map(words_of), |words| {
            words.sort_unstable();
            let mut per_bank = [0u32; 32];
            let mut last = None;
            for &w in words.iter() {
                if last != Some(w) {
                    per_bank[(w % 32) as usize] += 1;
                    last = Some(w);
                }
            }
            per_bank
        });
        total += *per_bank.iter().max().unwrap_or(&1) as u64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_and_bank_conflicts() {
        let unit: Vec<(u64, u32)> = (0..32).map(|l| (l * 4, 4)).collect();
        assert_eq!(sectors(&unit), 4);
        let strided: Vec<(u64, u32)> = (0..32).map(|l| (l * 128, 4)).collect();
        assert_eq!(sectors(&strided), 32);
        let conflict_free: Vec<(u32, u64, u32)> = (0..32).map(|l| (l, l as u64 * 4, 4)).collect();
        assert_eq!(wavefronts(&conflict_free), 1);
        let broadcast: Vec<(u32, u64, u32)> = (0..32).map(|l| (l, 0, 4)).collect();
        assert_eq!(wavefronts(&broadcast), 1);
        let two_way: Vec<(u32, u64, u32)> = (0..32).map(|l| (l, l as u64 * 8, 4)).collect();
        assert_eq!(wavefronts(&two_way), 2);
        let column: Vec<(u32, u64, u32)> = (0..32).map(|l| (l, l as u64 * 128, 4)).collect();
        assert_eq!(wavefronts(&column), 32);
        let v4: Vec<(u32, u64, u32)> = (0..32).map(|l| (l, l as u64 * 16, 16)).collect();
        assert_eq!(wavefronts(&v4), 4);
    }
}
