//! Running a kernel: a grid of blocks (in parallel on the host's cores), each block's warps scheduled in
//! turn, each warp executing one instruction for all its active lanes at a time. Divergence: a warp is a
//! set of lane groups, each at its own instruction; the group at the lowest instruction runs first
//! and groups that reach the same instruction merge (min-PC reconvergence, a valid schedule under the
//! independent thread scheduling of sm_70 and later, whose `.sync` collectives this module checks).

use rayon::prelude::*;

use crate::alu;
use crate::counters::{self, Counters};
use crate::decode::{Kernel, SPECIALS};
use crate::error::PtxError;
use crate::float::{self, mask};
use crate::inst::*;
use crate::memory::*;
use crate::parse::Space;
use crate::sanitizer::{merge, Check, Finding, SharedShadow, Verdict};

/// A launch's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_smem: u32,
}

/// How a launch runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shared-memory race and initialization tracking (bounds, alignment, registers and barriers are
    /// always checked).
    pub sanitize: bool,
    /// Run only this many blocks, spread over the grid, and scale the counters to the whole grid
    /// (for estimates: outputs are then partial).
    pub sample_blocks: Option<u64>,
    /// Run exactly these blocks (linear indices), e.g. to compare a few tiles of a large GEMM.
    pub only_blocks: Option<Vec<u64>>,
    /// A warp that issues more instructions than this is stopped with an error (a kernel that never ends).
    pub max_warp_instructions: u64,
    /// Blocks run on rayon's thread pool when true.
    pub parallel: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sanitize: true,
            sample_blocks: None,
            only_blocks: None,
            max_warp_instructions: 1 << 32,
            parallel: true,
        }
    }
}

/// What a launch did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub kernel: String,
    pub counters: Counters,
    pub findings: Vec<Finding>,
    pub blocks_run: u64,
    pub blocks_total: u64,
    /// Distinct 32-byte global sectors touched by the blocks that ran (a lower bound on DRAM traffic).
    pub dram_sectors: u64,
    /// Bytes of the global buffers the blocks that ran touched at all.
    pub touched_bytes: u64,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Memory a launch reads that is not global: the module's constant bank and the parameter buffer.
pub struct Spaces<'a> {
    pub consts: &'a [u8],
    pub params: &'a [u8],
}

const MAX_FINDINGS_PER_BLOCK: usize = 64;
/// Instructions a warp runs before the next warp of its block gets a turn.
const SLICE: u64 = 4096;
/// Instructions a block may run while some of its threads wait at a barrier before it is reported as
/// deadlocked (a warp spinning on a flag that a waiting warp would set).
const SPIN_LIMIT: u64 = 1 << 23;

/// `n` of a grid's `total` blocks (linear indices, sorted, distinct), spread over every grid dimension
/// by a Weyl sequence (multiples of the golden ratio, mod 1). Evenly spaced linear indices would alias
/// with grid.x — `i·total/n` is a multiple of grid.x whenever n divides grid.y·grid.z — and sample one
/// column: for causal attention, its cheapest query tiles.
pub fn sample(total: u64, n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n.clamp(1, total.max(1)))
        .map(|i| (((i as f64 * 0.618_033_988_749_894_9).fract() * total as f64) as u64).min(total.saturating_sub(1)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub fn launch(
    k: &Kernel,
    global: &Global,
    sp: &Spaces,
    cfg: &LaunchConfig,
    opts: &Options,
) -> Result<Report, PtxError> {
    let threads = cfg.block[0] as u64 * cfg.block[1] as u64 * cfg.block[2] as u64;
    let bad = |why: String| Err(PtxError::Launch { kernel: k.name.clone(), why });
    if threads == 0 || threads > 1024 {
        return bad(format!("{threads} threads per block (1 to 1024)"));
    }
    if cfg.block[2] > 64 {
        return bad(format!("block z = {} (at most 64)", cfg.block[2]));
    }
    if let Some(m) = k.max_threads {
        if threads > m[0] as u64 * m[1] as u64 * m[2] as u64 {
            return bad(format!("{threads} threads per block, above the kernel's .maxntid {m:?}"));
        }
    }
    if cfg.grid.contains(&0) || cfg.grid[1] > 65535 || cfg.grid[2] > 65535 {
        return bad(format!("grid {:?}", cfg.grid));
    }
    let smem = k.dynamic_smem_base as u64 + cfg.dynamic_smem as u64;
    if (k.static_smem as u64 + cfg.dynamic_smem as u64) > 227 * 1024 {
        return bad(format!("{} bytes of shared memory (at most 227 KiB per block)", smem));
    }
    if sp.params.len() < k.param_bytes as usize {
        return bad(format!("{} parameter bytes given, the kernel takes {}", sp.params.len(), k.param_bytes));
    }
    let total = cfg.grid[0] as u64 * cfg.grid[1] as u64 * cfg.grid[2] as u64;
    let blocks: Vec<u64> = if let Some(only) = &opts.only_blocks {
        if let Some(b) = only.iter().find(|&&b| b >= total) {
            return bad(format!("block {b} requested of a grid of {total}"));
        }
        only.clone()
    } else {
        match opts.sample_blocks {
            Some(n) if n < total => sample(total, n),
            _ => (0..total).collect(),
        }
    };
    global.clear_sectors();
    let run = |&b: &u64| -> Result<(Counters, Vec<Finding>), PtxError> {
        let ctaid = [
            (b % cfg.grid[0] as u64) as u32,
            ((b / cfg.grid[0] as u64) % cfg.grid[1] as u64) as u32,
            (b / (cfg.grid[0] as u64 * cfg.grid[1] as u64)) as u32,
        ];
        let mut blk = Block::new(k, global, sp, cfg, opts, ctaid, smem as usize);
        blk.run()?;
        Ok((blk.counters, blk.findings))
    };
    let results: Vec<Result<(Counters, Vec<Finding>), PtxError>> =
        if opts.parallel { blocks.par_iter().map(run).collect() } else { blocks.iter().map(run).collect() };
    let mut rep =
        Report { kernel: k.name.clone(), blocks_total: total, blocks_run: blocks.len() as u64, ..Default::default() };
    for r in results {
        let (c, f) = r?;
        rep.counters.add(&c);
        merge(&mut rep.findings, f);
    }
    rep.dram_sectors = global.sectors_touched();
    rep.touched_bytes = global.touched_buffer_bytes();
    Ok(rep)
}

struct Wait {
    pc: u32,
    mask: u32,
    id: u32,
    count: Option<u32>,
    aligned: bool,
}

struct Warp {
    id: u32,
    regs: Vec<u64>,
    /// Per register, the lanes that have written it.
    init: Vec<u32>,
    /// `(pc, lanes)`, sorted by pc, pcs distinct.
    groups: Vec<(u32, u32)>,
    waits: Vec<Wait>,
    /// Lanes waiting at `bar.warp.sync`: `(pc, lanes, member mask)`.
    warp_waits: Vec<(u32, u32, u32)>,
    exited: u32,
    /// Lanes that exist (the last warp of a block may be partial).
    present: u32,
    issued: u64,
}

impl Warp {
    fn insert(&mut self, pc: u32, lanes: u32) {
        if lanes == 0 {
            return;
        }
        match self.groups.binary_search_by_key(&pc, |g| g.0) {
            Ok(i) => self.groups[i].1 |= lanes,
            Err(i) => self.groups.insert(i, (pc, lanes)),
        }
    }
    #[inline]
    fn val(&self, s: Src, l: usize) -> u64 {
        match s {
            Src::Reg(r) => self.regs[r as usize * 32 + l],
            Src::Imm(v) => v,
            Src::NotReg(r) => (self.regs[r as usize * 32 + l] == 0) as u64,
        }
    }
    /// A source's 32 lane values: the register's own row, or `tmp` filled with an immediate or a negated
    /// predicate.
    #[inline(always)]
    fn row<'s>(&'s self, s: Src, tmp: &'s mut [u64; 32]) -> &'s [u64; 32] {
        match s {
            Src::Reg(r) => {
                let r = r as usize * 32;
                self.regs[r..r + 32].try_into().expect("a register row holds 32 lanes")
            }
            Src::Imm(v) => {
                *tmp = [v; 32];
                tmp
            }
            Src::NotReg(r) => {
                for (o, v) in tmp.iter_mut().zip(&self.regs[r as usize * 32..r as usize * 32 + 32]) {
                    *o = (*v == 0) as u64;
                }
                tmp
            }
        }
    }
    /// `d = f(a, b, c)` on the lanes of `m` (the fast path of the common arithmetic): sources read in
    /// place, the result built in a row of its own (`d` may be a source) and stored once.
    #[inline(always)]
    fn map3(&mut self, m: u32, d: u32, a: Src, b: Src, c: Src, f: impl Fn(u64, u64, u64) -> u64) {
        if d == SINK {
            return;
        }
        let (mut ta, mut tb, mut tc) = ([0u64; 32], [0u64; 32], [0u64; 32]);
        let mut out = [0u64; 32];
        {
            let (x, y, z) = (self.row(a, &mut ta), self.row(b, &mut tb), self.row(c, &mut tc));
            for l in 0..32 {
                out[l] = f(x[l], y[l], z[l]);
            }
        }
        let row = &mut self.regs[d as usize * 32..d as usize * 32 + 32];
        if m == u32::MAX {
            row.copy_from_slice(&out);
        } else {
            for l in Lanes(m) {
                row[l] = out[l];
            }
        }
        self.init[d as usize] |= m;
    }
    #[inline]
    fn set(&mut self, d: u32, l: usize, v: u64) {
        if d != SINK {
            self.regs[d as usize * 32 + l] = v;
        }
    }
    fn mark(&mut self, d: u32, lanes: u32) {
        if d != SINK {
            self.init[d as usize] |= lanes;
        }
    }
    fn pred_mask(&self, p: u32, lanes: u32) -> u32 {
        let mut m = 0;
        for l in Lanes(lanes) {
            if self.regs[p as usize * 32 + l] != 0 {
                m |= 1 << l;
            }
        }
        m
    }
}

/// Iterates the set bits of a lane mask.
struct Lanes(u32);

impl Iterator for Lanes {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let l = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(l as usize)
    }
}

fn first_lane(m: u32) -> usize {
    m.trailing_zeros() as usize
}

struct Block<'a> {
    k: &'a Kernel,
    global: &'a Global,
    sp: &'a Spaces<'a>,
    cfg: &'a LaunchConfig,
    opts: &'a Options,
    ctaid: [u32; 3],
    nthreads: u32,
    smem: Vec<u8>,
    shadow: Option<SharedShadow>,
    local: Vec<u8>,
    epoch: u32,
    counters: Counters,
    findings: Vec<Finding>,
    scratch: Vec<(u64, u32)>,
    bank_scratch: Vec<(u32, u64, u32)>,
    /// The global buffer the last access hit.
    hint: usize,
}

impl<'a> Block<'a> {
    fn new(
        k: &'a Kernel,
        global: &'a Global,
        sp: &'a Spaces<'a>,
        cfg: &'a LaunchConfig,
        opts: &'a Options,
        ctaid: [u32; 3],
        smem: usize,
    ) -> Block<'a> {
        let nthreads = cfg.block[0] * cfg.block[1] * cfg.block[2];
        Block {
            k,
            global,
            sp,
            cfg,
            opts,
            ctaid,
            nthreads,
            smem: vec![0; smem],
            shadow: opts.sanitize.then(|| SharedShadow::new(smem)),
            local: vec![0; k.local_bytes as usize * nthreads as usize],
            epoch: 1,
            counters: Counters::default(),
            findings: Vec::new(),
            scratch: Vec::with_capacity(64),
            bank_scratch: Vec::with_capacity(64),
            hint: 0,
        }
    }

    fn thread_of(&self, warp: u32, lane: usize) -> [u32; 3] {
        let lin = warp * 32 + lane as u32;
        let [bx, by, _] = self.cfg.block;
        [lin % bx, (lin / bx) % by, lin / (bx * by)]
    }

    fn finding(&mut self, check: Check, warp: u32, lane: usize, line: u32, message: String) {
        if self.findings.len() >= MAX_FINDINGS_PER_BLOCK {
            return;
        }
        let thread = self.thread_of(warp, lane);
        let f = Finding { check, kernel: self.k.name.clone(), block: self.ctaid, thread, line, message, count: 1 };
        merge(&mut self.findings, vec![f]);
    }

    fn exec_error(&self, warp: u32, lane: usize, line: u32, why: String) -> PtxError {
        let t = self.thread_of(warp, lane);
        PtxError::Exec {
            kernel: self.k.name.clone(),
            bx: self.ctaid[0],
            by: self.ctaid[1],
            bz: self.ctaid[2],
            tx: t[0],
            ty: t[1],
            tz: t[2],
            line,
            why,
        }
    }

    fn new_warp(&self, id: u32) -> Warp {
        let n = self.k.nregs();
        let mut w = Warp {
            id,
            regs: vec![0; n * 32],
            init: vec![0; n],
            groups: Vec::new(),
            waits: Vec::new(),
            warp_waits: Vec::new(),
            exited: 0,
            present: 0,
            issued: 0,
        };
        let nwarps = self.nthreads.div_ceil(32);
        for l in 0..32usize {
            let lin = id * 32 + l as u32;
            if lin >= self.nthreads {
                continue;
            }
            w.present |= 1 << l;
            let t = self.thread_of(id, l);
            let specials: [u64; SPECIALS.len()] = [
                t[0] as u64,
                t[1] as u64,
                t[2] as u64,
                self.cfg.block[0] as u64,
                self.cfg.block[1] as u64,
                self.cfg.block[2] as u64,
                self.ctaid[0] as u64,
                self.ctaid[1] as u64,
                self.ctaid[2] as u64,
                self.cfg.grid[0] as u64,
                self.cfg.grid[1] as u64,
                self.cfg.grid[2] as u64,
                l as u64,
                id as u64,
                nwarps as u64,
                0,
                132,
                1 << l,
                mask(l as u8 + 1),
                mask(l as u8),
                !mask(l as u8) & 0xffff_ffff,
                !mask(l as u8 + 1) & 0xffff_ffff,
                self.cfg.dynamic_smem as u64,
                (self.k.static_smem + self.cfg.dynamic_smem) as u64,
                1,
            ];
            for (i, v) in specials.iter().enumerate() {
                w.regs[i * 32 + l] = *v;
            }
        }
        for i in 0..SPECIALS.len() {
            w.init[i] = w.present;
        }
        if w.present != 0 {
            w.groups.push((0, w.present));
        }
        w
    }

    fn run(&mut self) -> Result<(), PtxError> {
        let nwarps = self.nthreads.div_ceil(32);
        let mut warps: Vec<Warp> = (0..nwarps).map(|i| self.new_warp(i)).collect();
        let mut arrivals = [0u32; 16];
        // Instructions run while some warp waits at a barrier: a warp that spins that long while the
        // others wait is reported as a deadlock rather than left to hang.
        let mut spin = 0u64;
        loop {
            let mut ran = 0;
            for w in warps.iter_mut() {
                ran += self.run_warp(w, &mut arrivals, SLICE)?;
            }
            if warps.iter().any(|w| !w.groups.is_empty()) {
                if warps.iter().any(|w| !w.waits.is_empty()) {
                    spin += ran;
                    if spin > SPIN_LIMIT {
                        let (wid, spin_line) = warps
                            .iter()
                            .find_map(|w| {
                                w.groups.first().map(|g| (w.id, self.k.insts.get(g.0 as usize).map_or(0, |i| i.line)))
                            })
                            .unwrap_or((0, 0));
                        // The finding names the barrier that cannot complete; the message, where the spinning warp is.
                        let (bwarp, lane, line) = warps
                            .iter()
                            .find_map(|w| {
                                w.waits.first().map(|x| (w.id, first_lane(x.mask), self.k.insts[x.pc as usize].line))
                            })
                            .unwrap_or((0, 0, 0));
                        let waiting: Vec<String> = warps
                            .iter()
                            .flat_map(|w| w.waits.iter().map(move |x| (w.id, x)))
                            .map(|(id, x)| format!("warp {id} at PTX line {}", self.k.insts[x.pc as usize].line))
                            .collect();
                        self.finding(
                            Check::Deadlock,
                            bwarp,
                            lane,
                            line,
                            format!(
                                "barrier can never complete: warp {wid} ran {SPIN_LIMIT} instructions at PTX line {spin_line} (a spin loop?) while threads wait ({})",
                                waiting.join("; ")
                            ),
                        );
                        return Ok(());
                    }
                }
                continue;
            }
            spin = 0;
            if warps.iter().all(|w| w.waits.is_empty()) {
                return Ok(());
            }
            // Every warp is at a barrier or done: release what can be released.
            let exited: u32 = warps.iter().map(|w| (w.exited & w.present).count_ones()).sum();
            let live = self.nthreads - exited;
            let mut released = false;
            for id in 0..16u32 {
                let waiting: u32 =
                    warps.iter().flat_map(|w| w.waits.iter()).filter(|x| x.id == id).map(|x| x.mask.count_ones()).sum();
                if waiting == 0 {
                    continue;
                }
                let count = warps.iter().flat_map(|w| w.waits.iter()).find(|x| x.id == id).and_then(|x| x.count);
                let need = count.unwrap_or(live);
                if waiting + arrivals[id as usize] < need {
                    continue;
                }
                arrivals[id as usize] = 0;
                released = true;
                self.epoch += 1;
                for w in warps.iter_mut() {
                    let mine: Vec<Wait> = {
                        let (a, b): (Vec<Wait>, Vec<Wait>) = w.waits.drain(..).partition(|x| x.id == id);
                        w.waits = b;
                        a
                    };
                    if mine.len() > 1 && mine.iter().any(|x| x.aligned) {
                        let lines: Vec<String> =
                            mine.iter().map(|x| self.k.insts[x.pc as usize].line.to_string()).collect();
                        let line = self.k.insts[mine[0].pc as usize].line;
                        self.finding(
                            Check::Divergence,
                            w.id,
                            first_lane(mine[0].mask),
                            line,
                            format!(
                                "lanes of warp {} reached aligned barrier {id} apart (at PTX lines {})",
                                w.id,
                                lines.join(", ")
                            ),
                        );
                    }
                    for x in mine {
                        w.insert(x.pc + 1, x.mask);
                    }
                }
            }
            if !released {
                let mut waits = Vec::new();
                for w in &warps {
                    for x in &w.waits {
                        waits.push(format!(
                            "warp {} ({} threads) at barrier {} on PTX line {}",
                            w.id,
                            x.mask.count_ones(),
                            x.id,
                            self.k.insts[x.pc as usize].line
                        ));
                    }
                }
                let (wid, lane, line) = warps
                    .iter()
                    .find_map(|w| w.waits.first().map(|x| (w.id, first_lane(x.mask), self.k.insts[x.pc as usize].line)))
                    .unwrap_or((0, 0, 0));
                self.finding(
                    Check::Deadlock,
                    wid,
                    lane,
                    line,
                    format!("barrier can never complete ({exited} threads exited; waiting: {})", waits.join("; ")),
                );
                return Ok(());
            }
        }
    }

    /// Runs a warp until it blocks, exits or has issued `budget` instructions; returns how many it issued.
    fn run_warp(&mut self, w: &mut Warp, arrivals: &mut [u32; 16], budget: u64) -> Result<u64, PtxError> {
        let k: &'a Kernel = self.k;
        let insts = &k.insts;
        let start = w.issued;
        loop {
            if w.groups.is_empty() {
                if w.warp_waits.is_empty() || !w.waits.is_empty() {
                    break;
                }
                // Lanes wait at bar.warp.sync for member lanes that can no longer arrive.
                let arrived = w.warp_waits.iter().fold(0, |a, x| a | x.1);
                let (pc, lanes, member) = w.warp_waits[0];
                let missing = member & !arrived;
                let line = insts[pc as usize].line;
                self.finding(
                    Check::MemberMask,
                    w.id,
                    first_lane(lanes),
                    line,
                    format!(
                        "bar.warp.sync member mask {member:#010x} names lanes {missing:#010x} that {} without reaching a bar.warp.sync",
                        if missing & !w.exited == 0 { "exited" } else { "stopped" }
                    ),
                );
                for (pc, lanes, _) in std::mem::take(&mut w.warp_waits) {
                    w.insert(pc + 1, lanes);
                }
                continue;
            }
            if w.issued - start >= budget {
                break;
            }
            let (pc, gmask) = w.groups[0];
            let Some(inst) = insts.get(pc as usize) else {
                // Falling off the end of a kernel ends its threads.
                w.exited |= gmask;
                w.groups.remove(0);
                continue;
            };
            w.issued += 1;
            if w.issued > self.opts.max_warp_instructions {
                return Err(self.exec_error(
                    w.id,
                    first_lane(gmask),
                    inst.line,
                    format!(
                        "warp {} issued more than {} instructions (a loop that never ends?)",
                        w.id, self.opts.max_warp_instructions
                    ),
                ));
            }
            let mut m = gmask;
            if let Some((p, neg)) = inst.guard {
                if gmask & !w.init[p as usize] != 0 {
                    let l = first_lane(gmask & !w.init[p as usize]);
                    let name = self.k.reg_names[p as usize].clone();
                    self.finding(
                        Check::Uninitialized,
                        w.id,
                        l,
                        inst.line,
                        format!("predicate {name} read before it was written"),
                    );
                }
                let pm = w.pred_mask(p, gmask);
                m = if neg { gmask & !pm } else { gmask & pm };
            }
            self.counters.count(inst.class, m.count_ones());
            match inst.kind {
                Kind::Bra { target, .. } => {
                    w.groups.remove(0);
                    w.insert(target, m);
                    w.insert(pc + 1, gmask & !m);
                    continue;
                }
                Kind::Ret | Kind::Exit => {
                    w.exited |= m;
                    w.groups.remove(0);
                    w.insert(pc + 1, gmask & !m);
                    continue;
                }
                Kind::BarWarp if m != 0 => {
                    self.check_sources(w, inst, m);
                    let l = first_lane(m);
                    let member = w.val(inst.src[0], l) as u32;
                    if member & !w.present != 0 {
                        self.finding(
                            Check::MemberMask,
                            w.id,
                            l,
                            inst.line,
                            format!(
                                "member mask {member:#010x} names lanes {:#010x} that do not exist",
                                member & !w.present
                            ),
                        );
                    }
                    if m & !member != 0 {
                        self.finding(
                            Check::MemberMask,
                            w.id,
                            first_lane(m & !member),
                            inst.line,
                            format!(
                                "lanes {:#010x} execute it but are not in the member mask {member:#010x}",
                                m & !member
                            ),
                        );
                    }
                    // Since sm_70 the lanes of a warp may reach bar.warp.sync at different instructions:
                    // each waits until every lane of the mask has arrived at one.
                    w.groups.remove(0);
                    w.warp_waits.push((pc, m, (member | m) & w.present));
                    w.insert(pc + 1, gmask & !m);
                    let arrived = w.warp_waits.iter().fold(0, |a, x| a | x.1);
                    if w.warp_waits.iter().all(|x| x.2 & !arrived == 0) {
                        for (pc, lanes, _) in std::mem::take(&mut w.warp_waits) {
                            w.insert(pc + 1, lanes);
                        }
                    }
                    continue;
                }
                Kind::Bar { aligned, arrive } if m != 0 => {
                    self.check_sources(w, inst, m);
                    let l = first_lane(m);
                    let id = w.val(inst.src[0], l) as u32;
                    if id >= 16 {
                        return Err(self.exec_error(w.id, l, inst.line, format!("barrier {id} (0 to 15)")));
                    }
                    let count = inst.src.get(1).map(|&s| w.val(s, l) as u32);
                    self.counters.barriers += 1;
                    if arrive {
                        arrivals[id as usize] += m.count_ones();
                    } else {
                        w.groups.remove(0);
                        w.waits.push(Wait { pc, mask: m, id, count, aligned });
                        w.insert(pc + 1, gmask & !m);
                        continue;
                    }
                }
                _ => {
                    if m != 0 {
                        self.exec(w, inst, m)?;
                    }
                }
            }
            let g = &mut w.groups[0];
            g.0 += 1;
            if w.groups.len() > 1 && w.groups[1].0 == w.groups[0].0 {
                let lanes = w.groups[0].1;
                w.groups.remove(0);
                w.groups[0].1 |= lanes;
            }
        }
        Ok(w.issued - start)
    }

    fn check_sources(&mut self, w: &Warp, inst: &Inst, m: u32) {
        for s in &inst.src {
            if let Src::Reg(r) | Src::NotReg(r) = *s {
                let missing = m & !w.init[r as usize];
                if missing != 0 {
                    let name = self.k.reg_names[r as usize].clone();
                    self.finding(
                        Check::Uninitialized,
                        w.id,
                        first_lane(missing),
                        inst.line,
                        format!("register {name} read before it was written (lanes {missing:#010x})"),
                    );
                }
            }
        }
    }

    /// Checks a warp collective's member mask; returns the lanes that take part.
    fn collective(&mut self, w: &Warp, inst: &Inst, m: u32, member: Src) -> u32 {
        let l = first_lane(m);
        let mm = w.val(member, l) as u32;
        if Lanes(m).any(|x| w.val(member, x) as u32 != mm) {
            self.finding(Check::MemberMask, w.id, l, inst.line, "lanes give different member masks".into());
        }
        if mm & !w.present != 0 {
            self.finding(
                Check::MemberMask,
                w.id,
                l,
                inst.line,
                format!("member mask {mm:#010x} names lanes {:#010x} that do not exist", mm & !w.present),
            );
        }
        if m & !mm != 0 {
            self.finding(
                Check::MemberMask,
                w.id,
                first_lane(m & !mm),
                inst.line,
                format!("lanes {:#010x} execute it but are not in the member mask {mm:#010x}", m & !mm),
            );
        }
        // shfl.sync and vote.sync wait only for the non-exited lanes of the mask (PTX ISA).
        let missing = mm & w.present & !w.exited & !m;
        if missing != 0 {
            let elsewhere: Vec<String> = w
                .groups
                .iter()
                .filter(|g| g.1 & missing != 0 && g.0 as usize != w.groups[0].0 as usize)
                .map(|g| self.k.insts.get(g.0 as usize).map(|i| i.line.to_string()).unwrap_or_default())
                .collect();
            self.finding(
                Check::Divergence,
                w.id,
                l,
                inst.line,
                format!(
                    "lanes {missing:#010x} of the member mask are not converged here{}",
                    if elsewhere.is_empty() {
                        " (predicated off or waiting at a barrier)".to_string()
                    } else {
                        format!(" (they are at PTX lines {})", elsewhere.join(", "))
                    }
                ),
            );
        }
        m & mm
    }

    fn exec(&mut self, w: &mut Warp, inst: &Inst, m: u32) -> Result<(), PtxError> {
        self.check_sources(w, inst, m);
        let src = &inst.src;
        let at = |i: usize| src.get(i).copied().unwrap_or(Src::Imm(0));
        match inst.kind {
            Kind::Mov { bits } => {
                let mk = mask(bits);
                w.map3(m, inst.dst[0], src[0], Src::Imm(0), Src::Imm(0), |a, _, _| a & mk);
            }
            Kind::Pack { bits } => {
                let mk = mask(bits);
                for l in Lanes(m) {
                    let mut v = 0u64;
                    for (i, s) in src.iter().enumerate() {
                        v |= (w.val(*s, l) & mk) << (i as u32 * bits as u32);
                    }
                    w.set(inst.dst[0], l, v);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Unpack { bits } => {
                let mk = mask(bits);
                for l in Lanes(m) {
                    let v = w.val(src[0], l);
                    for (i, &d) in inst.dst.iter().enumerate() {
                        w.set(d, l, (v >> (i as u32 * bits as u32)) & mk);
                    }
                }
                for &d in &inst.dst {
                    w.mark(d, m);
                }
            }
            Kind::Int { op, ty } if fast_int(op, ty) => {
                let (a, b, c, dst) = (at(0), at(1), at(2), inst.dst[0]);
                let mk = mask(ty.bits);
                let n = ty.bits as u64;
                match (op, ty.signed) {
                    (IntOp::Add { sat: false }, _) => w.map3(m, dst, a, b, c, |x, y, _| x.wrapping_add(y) & mk),
                    (IntOp::Sub { sat: false }, _) => w.map3(m, dst, a, b, c, |x, y, _| x.wrapping_sub(y) & mk),
                    (IntOp::MulLo, _) => w.map3(m, dst, a, b, c, |x, y, _| x.wrapping_mul(y) & mk),
                    (IntOp::MadLo, _) => w.map3(m, dst, a, b, c, |x, y, z| x.wrapping_mul(y).wrapping_add(z) & mk),
                    (IntOp::And, _) => w.map3(m, dst, a, b, c, |x, y, _| x & y & mk),
                    (IntOp::Or, _) => w.map3(m, dst, a, b, c, |x, y, _| (x | y) & mk),
                    (IntOp::Xor, _) => w.map3(m, dst, a, b, c, |x, y, _| (x ^ y) & mk),
                    (IntOp::Shl, _) => w.map3(m, dst, a, b, c, |x, y, _| {
                        let k = y & 0xffff_ffff;
                        if k >= n {
                            0
                        } else {
                            (x << k) & mk
                        }
                    }),
                    (IntOp::Shr, false) => w.map3(m, dst, a, b, c, |x, y, _| {
                        let k = y & 0xffff_ffff;
                        if k >= n {
                            0
                        } else {
                            (x & mk) >> k
                        }
                    }),
                    (IntOp::MulWide, true) => {
                        w.map3(m, dst, a, b, c, |x, y, _| (alu::sx(x, 32).wrapping_mul(alu::sx(y, 32))) as u64)
                    }
                    (IntOp::MulWide, false) => w.map3(m, dst, a, b, c, |x, y, _| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
                    _ => unreachable!("fast_int covers these"),
                }
            }
            Kind::Int { op, ty } if src.len() <= 3 => {
                let (a, b, c) = (at(0), at(1), at(2));
                w.map3(m, inst.dst[0], a, b, c, |x, y, z| alu::int_op(op, ty, x, y, z, 0));
            }
            Kind::Int { op, ty } => {
                let (a, b, c, d) = (at(0), at(1), at(2), at(3));
                for l in Lanes(m) {
                    let r = alu::int_op(op, ty, w.val(a, l), w.val(b, l), w.val(c, l), w.val(d, l));
                    w.set(inst.dst[0], l, r);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Float { op, ty: FTy::F32, rnd: Rnd::Rn, ftz: false, sat: false }
                if matches!(op, FOp::Add | FOp::Sub | FOp::Mul | FOp::Fma) =>
            {
                let (a, b, c, dst) = (at(0), at(1), at(2), inst.dst[0]);
                let f = |v: u64| f32::from_bits(v as u32);
                match op {
                    FOp::Add => w.map3(m, dst, a, b, c, |x, y, _| f32_bits(f(x) + f(y))),
                    FOp::Sub => w.map3(m, dst, a, b, c, |x, y, _| f32_bits(f(x) - f(y))),
                    FOp::Mul => w.map3(m, dst, a, b, c, |x, y, _| f32_bits(f(x) * f(y))),
                    _ => fma_f32(w, m, dst, a, b, c),
                }
                let flops = if op == FOp::Fma { 2 } else { 1 } * m.count_ones() as u64;
                self.counters.fp32_flops += flops;
            }
            Kind::Float { op, ty, rnd, ftz, sat } => {
                let (a, b, c) = (at(0), at(1), at(2));
                w.map3(m, inst.dst[0], a, b, c, |x, y, z| alu::float_op(op, ty, rnd, ftz, sat, x, y, z));
                let flops = if op == FOp::Fma { 2 } else { 1 } * m.count_ones() as u64;
                match ty {
                    FTy::F32 => self.counters.fp32_flops += flops,
                    FTy::F64 => self.counters.fp64_flops += flops,
                }
            }
            Kind::Setp { cmp, ty, bool_op } => {
                let ftz = inst.offset != 0;
                let (p, q) = (inst.dst[0], inst.dst[1]);
                for l in Lanes(m) {
                    let t = alu::compare(cmp, ty, ftz, w.val(src[0], l), w.val(src[1], l));
                    let (mut x, mut y) = (t, !t);
                    if let Some(op) = bool_op {
                        let c = w.val(src[2], l) != 0;
                        let f = |v: bool| match op {
                            BoolOp::And => v && c,
                            BoolOp::Or => v || c,
                            BoolOp::Xor => v ^ c,
                        };
                        x = f(x);
                        y = f(y);
                    }
                    w.set(p, l, x as u64);
                    w.set(q, l, y as u64);
                }
                w.mark(p, m);
                w.mark(q, m);
            }
            Kind::Selp { bits } => {
                let mk = mask(bits);
                w.map3(m, inst.dst[0], src[0], src[1], src[2], |x, y, c| if c != 0 { x & mk } else { y & mk });
            }
            Kind::PredLogic { op } => {
                for l in Lanes(m) {
                    let a = w.val(src[0], l) != 0;
                    let v = match op {
                        None => !a,
                        Some(BoolOp::And) => a && w.val(src[1], l) != 0,
                        Some(BoolOp::Or) => a || w.val(src[1], l) != 0,
                        Some(BoolOp::Xor) => a ^ (w.val(src[1], l) != 0),
                    };
                    w.set(inst.dst[0], l, v as u64);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Cvt { dst, src: from, rnd, int_rnd, sat, ftz, relu } => {
                w.map3(m, inst.dst[0], src[0], Src::Imm(0), Src::Imm(0), |x, _, _| {
                    alu::convert(dst, from, rnd, int_rnd, sat, ftz, relu, x)
                });
            }
            Kind::CvtPack { to, satfinite, relu } => {
                for l in Lanes(m) {
                    let v = alu::convert_pack(to, satfinite, relu, w.val(src[0], l), w.val(src[1], l));
                    w.set(inst.dst[0], l, v);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::CvtUnpack { from, .. } => {
                for l in Lanes(m) {
                    let v = alu::convert_unpack(from, w.val(src[0], l));
                    w.set(inst.dst[0], l, v);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Cvta { to_generic, space } => {
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    Space::Const => CONST_WINDOW,
                    Space::Param => PARAM_WINDOW,
                    _ => 0,
                };
                for l in Lanes(m) {
                    let a = w.val(src[0], l);
                    let v = if to_generic { a.wrapping_add(window) } else { a.wrapping_sub(window) };
                    w.set(inst.dst[0], l, v);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Ld { space, bytes, vec, sext } => self.load(w, inst, m, space, bytes as u32, vec as u32, sext),
            Kind::St { space, bytes, vec } => self.store(w, inst, m, space, bytes as u32, vec as u32),
            Kind::Atom { space, op, ty, returns } => self.atomic(w, inst, m, space, op, ty, returns),
            Kind::Fence => {}
            Kind::BarWarp => {}
            Kind::Activemask => {
                for l in Lanes(m) {
                    w.set(inst.dst[0], l, m as u64);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Vote { mode } => {
                let part = self.collective(w, inst, m, src[1]);
                let mut ballot = 0u32;
                for l in Lanes(part) {
                    if w.val(src[0], l) != 0 {
                        ballot |= 1 << l;
                    }
                }
                let v = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::All => (ballot == part) as u64,
                    VoteMode::Uni => (ballot == 0 || ballot == part) as u64,
                };
                for l in Lanes(m) {
                    w.set(inst.dst[0], l, v);
                }
                w.mark(inst.dst[0], m);
            }
            Kind::Shfl { mode } => self.shuffle(w, inst, m, mode),
            Kind::Mma { shape } => self.mma(w, inst, m, shape),
            Kind::Bra { .. } | Kind::Ret | Kind::Exit | Kind::Bar { .. } => {}
        }
        Ok(())
    }

    fn shuffle(&mut self, w: &mut Warp, inst: &Inst, m: u32, mode: ShflMode) {
        let src = &inst.src;
        let part = self.collective(w, inst, m, src[3]);
        let vals: Vec<u64> = (0..32).map(|l| w.val(src[0], l) & 0xffff_ffff).collect();
        let (d, p) = (inst.dst[0], inst.dst[1]);
        let mut undefined = 0u32;
        for l in Lanes(m) {
            let b = (w.val(src[1], l) & 31) as i64;
            let c = w.val(src[2], l);
            let clamp = (c & 31) as i64;
            let seg = ((c >> 8) & 31) as i64;
            let lane = l as i64;
            let max_lane = (lane & seg) | (clamp & !seg);
            let min_lane = lane & seg;
            let (j, ok) = match mode {
                ShflMode::Up => (lane - b, lane - b >= max_lane),
                ShflMode::Down => (lane + b, lane + b <= max_lane),
                ShflMode::Bfly => (lane ^ b, (lane ^ b) <= max_lane),
                ShflMode::Idx => (min_lane | (b & !seg), (min_lane | (b & !seg)) <= max_lane),
            };
            let j = if ok { j as usize } else { l };
            if part >> j & 1 == 0 {
                // The source lane does not take part: the value is undefined.
                undefined |= 1 << l;
            }
            w.set(d, l, vals[j]);
            w.set(p, l, ok as u64);
        }
        w.mark(d, m & !undefined);
        w.mark(p, m);
    }

    #[allow(clippy::needless_range_loop)]
    fn mma(&mut self, w: &mut Warp, inst: &Inst, m: u32, shape: MmaShape) {
        if m != 0xffff_ffff {
            self.finding(
                Check::Divergence,
                w.id,
                first_lane(m),
                inst.line,
                format!("mma.sync.aligned needs all 32 lanes converged; active lanes {m:#010x}"),
            );
            return;
        }
        self.counters.tensor_ops += 1;
        let flops = shape.flops();
        match shape {
            MmaShape::M16n8k16Bf16 | MmaShape::M16n8k16F16 => self.counters.tensor_flops_16 += flops,
            _ => self.counters.tensor_flops_fp8 += flops,
        }
        let src = &inst.src;
        let (kdim, per_reg): (usize, usize) = match shape {
            MmaShape::M16n8k16Bf16 | MmaShape::M16n8k16F16 => (16, 2),
            _ => (32, 4),
        };
        let elem = |bits: u64| -> f64 {
            match shape {
                MmaShape::M16n8k16Bf16 => float::bf16_to_f32(bits as u16) as f64,
                MmaShape::M16n8k16F16 => float::f16_to_f64(bits as u16),
                MmaShape::M16n8k32E4m3 => float::e4m3_to_f32(bits as u8) as f64,
                MmaShape::M16n8k32E5m2 => float::e5m2_to_f32(bits as u8) as f64,
            }
        };
        let ebits: u32 = if per_reg == 2 { 16 } else { 8 };
        let mut a = vec![[0f64; 32]; 16];
        let mut b = vec![[0f64; 8]; 32];
        let mut c = [[0f64; 8]; 16];
        for l in 0..32usize {
            let (g, t) = (l / 4, l % 4);
            for r in 0..4 {
                let word = w.val(src[r], l);
                for e in 0..per_reg {
                    let v = elem((word >> (e as u32 * ebits)) & mask(ebits as u8));
                    // A: registers 0,2 hold row g, registers 1,3 row g+8; registers 2,3 the upper half of K.
                    let row = g + 8 * (r & 1);
                    let col = t * per_reg + e + (kdim / 2) * (r >> 1);
                    a[row][col] = v;
                }
            }
            for r in 0..2 {
                let word = w.val(src[4 + r], l);
                for e in 0..per_reg {
                    let v = elem((word >> (e as u32 * ebits)) & mask(ebits as u8));
                    let row = t * per_reg + e + (kdim / 2) * r;
                    b[row][g] = v;
                }
            }
            for r in 0..4 {
                let v = f32::from_bits(w.val(src[6 + r], l) as u32) as f64;
                c[g + 8 * (r >> 1)][t * 2 + (r & 1)] = v;
            }
        }
        for l in 0..32usize {
            let (g, t) = (l / 4, l % 4);
            for r in 0..4 {
                let (row, col) = (g + 8 * (r >> 1), t * 2 + (r & 1));
                let mut acc = c[row][col];
                for (kk, brow) in b.iter().enumerate().take(kdim) {
                    acc += a[row][kk] * brow[col];
                }
                w.set(inst.dst[r], l, (acc as f32).to_bits() as u64);
            }
        }
        for &d in &inst.dst {
            w.mark(d, m);
        }
    }

    /// Resolves an address in `space` for a lane: the space it is really in and the offset there (the
    /// absolute address for global).
    fn resolve(&self, space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic => {
                let win = |base: u64| addr >= base && addr < base + WINDOW_BYTES;
                if win(SHARED_WINDOW) {
                    (Space::Shared, addr - SHARED_WINDOW)
                } else if win(LOCAL_WINDOW) {
                    (Space::Local, addr - LOCAL_WINDOW)
                } else if win(CONST_WINDOW) {
                    (Space::Const, addr - CONST_WINDOW)
                } else if win(PARAM_WINDOW) {
                    (Space::Param, addr - PARAM_WINDOW)
                } else {
                    (Space::Global, addr)
                }
            }
            s => (s, addr),
        }
    }

    /// Checks bounds and alignment of one lane's access; on success returns where it goes.
    #[allow(clippy::too_many_arguments)]
    fn check_access(
        &mut self,
        w: &Warp,
        lane: usize,
        line: u32,
        space: Space,
        addr: u64,
        total: u32,
        store: bool,
    ) -> Option<(Space, u64)> {
        let (sp, off) = self.resolve(space, addr);
        if !addr.is_multiple_of(total as u64) {
            self.finding(
                Check::Misaligned,
                w.id,
                lane,
                line,
                format!(
                    "{}-byte {} at address {addr:#x} is not {total}-byte aligned",
                    total,
                    if store { "store" } else { "load" }
                ),
            );
            return None;
        }
        let limit = match sp {
            Space::Shared => self.smem.len() as u64,
            Space::Local => self.k.local_bytes as u64,
            Space::Const => self.sp.consts.len() as u64,
            Space::Param => self.sp.params.len() as u64,
            _ => u64::MAX,
        };
        let what = if store { "store" } else { "load" };
        if sp == Space::Global {
            if self.global.find_hinted(&mut self.hint, off, total as u64).is_none() {
                let near = self.global.nearest(off);
                self.finding(
                    Check::OutOfBounds,
                    w.id,
                    lane,
                    line,
                    format!("{total}-byte global {what} at {off:#x}: {near}"),
                );
                return None;
            }
        } else if off.checked_add(total as u64).is_none_or(|e| e > limit) {
            let name = match sp {
                Space::Shared => "shared",
                Space::Local => "local",
                Space::Const => "const",
                _ => "param",
            };
            self.finding(
                Check::OutOfBounds,
                w.id,
                lane,
                line,
                format!("{total}-byte {name} {what} at offset {off:#x}, beyond the {limit} bytes of {name} memory"),
            );
            return None;
        }
        if store && matches!(sp, Space::Const | Space::Param) {
            self.finding(Check::OutOfBounds, w.id, lane, line, format!("store to read-only {sp:?} memory"));
            return None;
        }
        Some((sp, off))
    }

    fn shared_hazard(&mut self, w: &Warp, lane: usize, line: u32, off: u64, bytes: u32, store: bool) {
        let Some(sh) = self.shadow.as_mut() else {
            return;
        };
        let Verdict { uninit, race } = sh.access(off as usize, bytes as usize, w.id, self.epoch, store);
        if uninit {
            self.finding(
                Check::Uninitialized,
                w.id,
                lane,
                line,
                format!("{bytes}-byte shared load at offset {off:#x} reads bytes nothing wrote"),
            );
        }
        if let Some((other, with_write)) = race {
            let who = other.map(|o| format!("warp {o}")).unwrap_or_else(|| "several warps".into());
            let kind = match (store, with_write) {
                (true, true) => "write after write",
                (true, false) => "write after read",
                _ => "read after write",
            };
            self.finding(
                Check::Race,
                w.id,
                lane,
                line,
                format!(
                    "shared {kind} at offset {off:#x} ({bytes} bytes): warp {} and {who} with no barrier between",
                    w.id
                ),
            );
        }
    }

    fn read_raw(&self, sp: Space, lane_thread: usize, off: u64, bytes: u32) -> u64 {
        let rd = |buf: &[u8], o: usize| -> u64 {
            // One bounds check per access (a fixed-size slice), not one per byte.
            match bytes {
                4 => u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or([0; 4])) as u64,
                8 => u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8])),
                2 => u16::from_le_bytes(buf[o..o + 2].try_into().unwrap_or([0; 2])) as u64,
                _ => {
                    let mut v = [0u8; 8];
                    v[..bytes as usize].copy_from_slice(&buf[o..o + bytes as usize]);
                    u64::from_le_bytes(v)
                }
            }
        };
        match sp {
            Space::Shared => rd(&self.smem, off as usize),
            Space::Local => rd(&self.local, lane_thread * self.k.local_bytes as usize + off as usize),
            Space::Const => rd(self.sp.consts, off as usize),
            Space::Param => rd(self.sp.params, off as usize),
            // check_access left `hint` at the buffer holding the whole access.
            _ => {
                let b = &self.global.buffers()[self.hint];
                b.load(off - b.base, bytes)
            }
        }
    }

    fn write_raw(&mut self, sp: Space, lane_thread: usize, off: u64, bytes: u32, v: u64) {
        let local_bytes = self.k.local_bytes as usize;
        let wr = |buf: &mut [u8], o: usize| {
            let n = bytes as usize;
            buf[o..o + n].copy_from_slice(&v.to_le_bytes()[..n]);
        };
        match sp {
            Space::Shared => wr(&mut self.smem, off as usize),
            Space::Local => wr(&mut self.local, lane_thread * local_bytes + off as usize),
            Space::Global => {
                // check_access left `hint` at the buffer holding the whole access.
                let b = &self.global.buffers()[self.hint];
                b.store(off - b.base, bytes, v);
            }
            _ => {}
        }
    }

    /// The fast path's test for a warp's memory instruction: every active lane's address is aligned and
    /// the lanes' whole span lies in one region (one global buffer, or within shared, local, const or
    /// param memory; stores not to const or param). Then no lane needs its own checks: `offs` holds each
    /// lane's offset (global: its address, with `hint` at the buffer) and the space is returned. `None`
    /// sends the instruction down the per-lane path, which reports whatever is wrong.
    #[allow(clippy::too_many_arguments)]
    fn uniform_target(
        &mut self,
        w: &Warp,
        inst: &Inst,
        m: u32,
        space: Space,
        total: u32,
        store: bool,
        offs: &mut [u64; 32],
    ) -> Option<Space> {
        if !total.is_power_of_two() {
            return None;
        }
        let (mut any, mut lo, mut hi) = (0u64, u64::MAX, 0u64);
        for l in Lanes(m) {
            let a = w.val(inst.src[0], l).wrapping_add(inst.offset as u64);
            offs[l] = a;
            any |= a;
            lo = lo.min(a);
            hi = hi.max(a);
        }
        // Every address is a multiple of the power-of-two size iff their bitwise or is.
        if !any.is_multiple_of(total as u64) {
            return None;
        }
        let (sp, lo_off) = self.resolve(space, lo);
        if self.resolve(space, hi).0 != sp {
            return None;
        }
        let span = (hi - lo).checked_add(total as u64)?;
        let limit = match sp {
            // Buffers lie above every window: a span inside one holds only global addresses.
            Space::Global => return self.global.find_hinted(&mut self.hint, lo, span).map(|_| Space::Global),
            Space::Shared => self.smem.len() as u64,
            Space::Local => self.k.local_bytes as u64,
            Space::Const if !store => self.sp.consts.len() as u64,
            Space::Param if !store => self.sp.params.len() as u64,
            _ => return None,
        };
        if lo_off.checked_add(span)? > limit {
            return None;
        }
        let window = lo - lo_off;
        for l in Lanes(m) {
            offs[l] -= window;
        }
        Some(sp)
    }

    #[allow(clippy::too_many_arguments)]
    fn load(&mut self, w: &mut Warp, inst: &Inst, m: u32, space: Space, bytes: u32, vec: u32, sext: u8) {
        let total = bytes * vec;
        self.scratch.clear();
        self.bank_scratch.clear();
        let mut offs = [0u64; 32];
        if let Some(sp) = self.uniform_target(w, inst, m, space, total, false, &mut offs) {
            match sp {
                Space::Global => {
                    let b = &self.global.buffers()[self.hint];
                    for l in Lanes(m) {
                        let off = offs[l] - b.base;
                        self.scratch.push((offs[l], total));
                        b.touch(off, total as u64);
                        for (i, &d) in inst.dst.iter().enumerate() {
                            w.set(d, l, b.load(off + (i as u32 * bytes) as u64, bytes));
                        }
                    }
                }
                _ => {
                    for l in Lanes(m) {
                        if sp == Space::Shared {
                            self.bank_scratch.push((l as u32, offs[l], total));
                            self.shared_hazard(w, l, inst.line, offs[l], total, false);
                        }
                        let thread = (w.id * 32) as usize + l;
                        for (i, &d) in inst.dst.iter().enumerate() {
                            w.set(d, l, self.read_raw(sp, thread, offs[l] + (i as u32 * bytes) as u64, bytes));
                        }
                    }
                }
            }
            if sext > 0 {
                for &d in &inst.dst {
                    if d != SINK {
                        for l in Lanes(m) {
                            let r = &mut w.regs[d as usize * 32 + l];
                            *r = (alu::sx(*r, bytes as u8 * 8) as u64) & mask(sext);
                        }
                    }
                }
            }
            for &d in &inst.dst {
                w.mark(d, m);
            }
            self.count_memory(sp, false);
            return;
        }
        let mut bad = 0u32;
        let mut real = Space::Global;
        for l in Lanes(m) {
            let addr = w.val(inst.src[0], l).wrapping_add(inst.offset as u64);
            let Some((sp, off)) = self.check_access(w, l, inst.line, space, addr, total, false) else {
                bad |= 1 << l;
                for &d in &inst.dst {
                    w.set(d, l, 0);
                }
                continue;
            };
            real = sp;
            let thread = (w.id * 32) as usize + l;
            match sp {
                Space::Global => {
                    self.scratch.push((off, total));
                    let b = &self.global.buffers()[self.hint];
                    b.touch(off - b.base, total as u64);
                }
                Space::Shared => {
                    self.bank_scratch.push((l as u32, off, total));
                    self.shared_hazard(w, l, inst.line, off, total, false);
                }
                _ => {}
            }
            for (i, &d) in inst.dst.iter().enumerate() {
                let mut v = self.read_raw(sp, thread, off + (i as u32 * bytes) as u64, bytes);
                if sext > 0 {
                    v = (alu::sx(v, bytes as u8 * 8) as u64) & mask(sext);
                }
                w.set(d, l, v);
            }
        }
        for &d in &inst.dst {
            w.mark(d, m & !bad);
        }
        self.count_memory(real, false);
    }

    fn store(&mut self, w: &mut Warp, inst: &Inst, m: u32, space: Space, bytes: u32, vec: u32) {
        let total = bytes * vec;
        self.scratch.clear();
        self.bank_scratch.clear();
        let mut offs = [0u64; 32];
        let vmask = mask(bytes as u8 * 8);
        if let Some(sp) = self.uniform_target(w, inst, m, space, total, true, &mut offs) {
            if sp == Space::Global {
                let b = &self.global.buffers()[self.hint];
                for l in Lanes(m) {
                    let off = offs[l] - b.base;
                    self.scratch.push((offs[l], total));
                    b.touch(off, total as u64);
                    for i in 0..vec as usize {
                        b.store(off + (i as u32 * bytes) as u64, bytes, w.val(inst.src[1 + i], l) & vmask);
                    }
                }
            } else {
                for l in Lanes(m) {
                    if sp == Space::Shared {
                        self.bank_scratch.push((l as u32, offs[l], total));
                        self.shared_hazard(w, l, inst.line, offs[l], total, true);
                    }
                    let thread = (w.id * 32) as usize + l;
                    for i in 0..vec as usize {
                        let v = w.val(inst.src[1 + i], l) & vmask;
                        self.write_raw(sp, thread, offs[l] + (i as u32 * bytes) as u64, bytes, v);
                    }
                }
            }
            self.count_memory(sp, true);
            return;
        }
        let mut real = Space::Global;
        for l in Lanes(m) {
            let addr = w.val(inst.src[0], l).wrapping_add(inst.offset as u64);
            let Some((sp, off)) = self.check_access(w, l, inst.line, space, addr, total, true) else {
                continue;
            };
            real = sp;
            let thread = (w.id * 32) as usize + l;
            match sp {
                Space::Global => {
                    self.scratch.push((off, total));
                    let b = &self.global.buffers()[self.hint];
                    b.touch(off - b.base, total as u64);
                }
                Space::Shared => {
                    self.bank_scratch.push((l as u32, off, total));
                    self.shared_hazard(w, l, inst.line, off, total, true);
                }
                _ => {}
            }
            for i in 0..vec as usize {
                let v = w.val(inst.src[1 + i], l) & vmask;
                self.write_raw(sp, thread, off + (i as u32 * bytes) as u64, bytes, v);
            }
        }
        self.count_memory(real, true);
    }

    fn count_memory(&mut self, sp: Space, store: bool) {
        match sp {
            Space::Global if !self.scratch.is_empty() => {
                let s = counters::sectors(&self.scratch);
                if store {
                    self.counters.global_store_requests += 1;
                    self.counters.global_store_sectors += s;
                } else {
                    self.counters.global_load_requests += 1;
                    self.counters.global_load_sectors += s;
                }
            }
            Space::Shared if !self.bank_scratch.is_empty() => {
                if store {
                    self.counters.shared_store_requests += 1;
                } else {
                    self.counters.shared_load_requests += 1;
                }
                self.counters.shared_wavefronts += counters::wavefronts(&self.bank_scratch);
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(&mut self, w: &mut Warp, inst: &Inst, m: u32, space: Space, op: AtomOp, ty: AtomTy, returns: bool) {
        let bytes = match ty {
            AtomTy::Int(t) => t.bits as u32 / 8,
            AtomTy::F32 => 4,
            AtomTy::F64 => 8,
        };
        let mut bad = 0u32;
        for l in Lanes(m) {
            let addr = w.val(inst.src[0], l).wrapping_add(inst.offset as u64);
            let b = w.val(inst.src[1], l);
            let c = inst.src.get(2).map(|&s| w.val(s, l)).unwrap_or(0);
            let Some((sp, off)) = self.check_access(w, l, inst.line, space, addr, bytes, true) else {
                bad |= 1 << l;
                continue;
            };
            self.counters.atomics += 1;
            let global = sp == Space::Global;
            let mut f = |old: u64| atom_apply(op, ty, old, b, c, global);
            let old = match sp {
                Space::Global => match self.global.find(off, bytes as u64) {
                    Some((buf, o)) => {
                        buf.touch(o, bytes as u64);
                        buf.rmw(o, bytes, &mut f)
                    }
                    None => 0,
                },
                Space::Shared => {
                    if let Some(sh) = self.shadow.as_mut() {
                        for i in off..off + bytes as u64 {
                            sh.atomic(i as usize, w.id, self.epoch);
                        }
                    }
                    let old = self.read_raw(Space::Shared, 0, off, bytes);
                    self.write_raw(Space::Shared, 0, off, bytes, f(old));
                    old
                }
                _ => {
                    self.finding(Check::OutOfBounds, w.id, l, inst.line, format!("atomic on {sp:?} memory"));
                    bad |= 1 << l;
                    continue;
                }
            };
            if returns {
                w.set(inst.dst[0], l, old);
            }
        }
        if returns {
            w.mark(inst.dst[0], m & !bad);
        }
    }
}

/// Integer operations [`Block::exec`] runs on its fast path.
/// The bits of an f32 result: IEEE, with a NaN result as PTX's canonical NaN.
#[inline(always)]
fn f32_bits(r: f32) -> u64 {
    if r.is_nan() {
        0x7fff_ffff
    } else {
        r.to_bits() as u64
    }
}

/// `fma.rn.f32` on the lanes of `m`: one rounding, through the CPU's FMA unit when it has one (else
/// `mul_add` calls libm's exact software fma, a function call per lane).
fn fma_f32(w: &mut Warp, m: u32, d: u32, a: Src, b: Src, c: Src) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "fma")]
        fn with_fma(w: &mut Warp, m: u32, d: u32, a: Src, b: Src, c: Src) {
            fma_lanes(w, m, d, a, b, c);
        }
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: `with_fma` only needs the FMA instructions, which the CPU was just found to have.
            unsafe { with_fma(w, m, d, a, b, c) };
            return;
        }
    }
    fma_lanes(w, m, d, a, b, c);
}

/// The lane loop of [`fma_f32`], inlined into whichever target-feature context calls it.
#[inline(always)]
fn fma_lanes(w: &mut Warp, m: u32, d: u32, a: Src, b: Src, c: Src) {
    let f = |v: u64| f32::from_bits(v as u32);
    w.map3(m, d, a, b, c, |x, y, z| f32_bits(f(x).mul_add(f(y), f(z))));
}

fn fast_int(op: IntOp, ty: IntTy) -> bool {
    matches!(
        op,
        IntOp::Add { sat: false }
            | IntOp::Sub { sat: false }
            | IntOp::MulLo
            | IntOp::MadLo
            | IntOp::And
            | IntOp::Or
            | IntOp::Xor
            | IntOp::Shl
    ) || (op == IntOp::Shr && !ty.signed)
        || (op == IntOp::MulWide && ty.bits == 32)
}

/// The new value of an atomic's word.
fn atom_apply(op: AtomOp, ty: AtomTy, old: u64, b: u64, c: u64, global: bool) -> u64 {
    match ty {
        AtomTy::F32 => {
            let (o, v) = (f32::from_bits(old as u32), f32::from_bits(b as u32));
            let r = match op {
                // atom.add.f32 rounds to nearest even; on global memory it flushes subnormal inputs and
                // results to zero, on shared memory it keeps them.
                AtomOp::Add if global => float::ftz32(float::ftz32(o) + float::ftz32(v)),
                AtomOp::Add => o + v,
                AtomOp::Min => o.min(v),
                AtomOp::Max => o.max(v),
                AtomOp::Exch => v,
                _ => o,
            };
            match op {
                AtomOp::Exch => b & 0xffff_ffff,
                _ => r.to_bits() as u64,
            }
        }
        AtomTy::F64 => {
            let (o, v) = (f64::from_bits(old), f64::from_bits(b));
            match op {
                AtomOp::Add => (o + v).to_bits(),
                AtomOp::Exch => b,
                _ => old,
            }
        }
        AtomTy::Int(t) => {
            let mk = mask(t.bits);
            let (o, v) = (old & mk, b & mk);
            let r = match op {
                AtomOp::Add => o.wrapping_add(v),
                AtomOp::Min if t.signed => alu::sx(o, t.bits).min(alu::sx(v, t.bits)) as u64,
                AtomOp::Max if t.signed => alu::sx(o, t.bits).max(alu::sx(v, t.bits)) as u64,
                AtomOp::Min => o.min(v),
                AtomOp::Max => o.max(v),
                AtomOp::Inc => {
                    if o >= v {
                        0
                    } else {
                        o + 1
                    }
                }
                AtomOp::Dec => {
                    if o == 0 || o > v {
                        v
                    } else {
                        o - 1
                    }
                }
                AtomOp::Exch => v,
                AtomOp::Cas => {
                    if o == v {
                        c & mk
                    } else {
                        o
                    }
                }
                AtomOp::And => o & v,
                AtomOp::Or => o | v,
                AtomOp::Xor => o ^ v,
            };
            r & mk
        }
    }
}

#[cfg(test)]
mod sample_tests {
    #[test]
    fn a_sample_spans_grid_x_of_a_two_dimensional_grid() {
        // Attention's grid: 128 query tiles x 16 heads; four samples must not all be query tile 0.
        let xs: Vec<u64> = super::sample(128 * 16, 4).iter().map(|b| b % 128).collect();
        assert_eq!(xs.len(), 4);
        assert!(xs.iter().collect::<std::collections::HashSet<_>>().len() == 4, "{xs:?}");
        assert!(super::sample(5, 3).iter().all(|&b| b < 5));
        assert_eq!(super::sample(1, 1), [0]);
    }
}
