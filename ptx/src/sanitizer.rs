//! The sanitizer's findings and its shadow state for shared memory. A finding names the kernel, block,
//! thread and PTX line, like compute-sanitizer's memcheck, racecheck, initcheck and synccheck reports.
//! Execution goes on after a finding (an out-of-bounds store is dropped, an out-of-bounds load reads
//! zero), except a barrier deadlock, which ends the block.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// A global, shared or local access outside memory the launch owns.
    OutOfBounds,
    /// An address not aligned to the access size.
    Misaligned,
    /// Two warps touched the same shared bytes, at least one writing, with no barrier between.
    Race,
    /// A register or shared byte read before anything wrote it.
    Uninitialized,
    /// Threads wait at a barrier that can never complete.
    Deadlock,
    /// Threads of a warp reached an aligned barrier or a warp collective apart.
    Divergence,
    /// A warp collective's member mask names lanes that do not exist, or leaves out the executing lane.
    MemberMask,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::OutOfBounds => "out-of-bounds",
            Check::Misaligned => "misaligned",
            Check::Race => "race",
            Check::Uninitialized => "uninitialized",
            Check::Deadlock => "deadlock",
            Check::Divergence => "divergence",
            Check::MemberMask => "member-mask",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: Check,
    pub kernel: String,
    pub block: [u32; 3],
    pub thread: [u32; 3],
    pub line: u32,
    pub message: String,
    /// How many times the same check fired at the same line (in the blocks that ran).
    pub count: u64,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: {} at PTX line {}, block ({},{},{}) thread ({},{},{}): {}",
            self.check.name(),
            self.kernel,
            self.line,
            self.block[0],
            self.block[1],
            self.block[2],
            self.thread[0],
            self.thread[1],
            self.thread[2],
            self.message
        )?;
        if self.count > 1 {
            write!(f, " ({} times)", self.count)?;
        }
        Ok(())
    }
}

/// Keeps the first finding of each (check, line), counting repeats.
pub fn merge(into: &mut Vec<Finding>, more: Vec<Finding>) {
    for f in more {
        if let Some(g) = into.iter_mut().find(|g| g.check == f.check && g.line == f.line) {
            g.count += f.count;
        } else {
            into.push(f);
        }
    }
}

/// Per-byte shadow of a block's shared memory: who last wrote it and who read it since, by epoch (the
/// number of barriers the block has passed). A tag is `epoch << WARP_BITS | (warp + 1)`, or `MANY` in
/// place of the warp when several warps read it in that epoch; `0` means never. One cell per byte
/// holds both tags (write low, read high), so an access's shadow is one contiguous run.
pub struct SharedShadow {
    cells: Vec<u64>,
}

const WARP_BITS: u32 = 11;
const MANY: u32 = (1 << WARP_BITS) - 1;

/// What an access of one byte conflicts with.
pub enum Hazard {
    None,
    /// Read of a byte never written.
    Uninit,
    /// Conflict with another warp's access in the same epoch (`true`: with a write).
    Race {
        other_warp: Option<u32>,
        with_write: bool,
    },
}

fn cell(write: u32, read: u32) -> u64 {
    write as u64 | (read as u64) << 32
}

fn split(c: u64) -> (u32, u32) {
    (c as u32, (c >> 32) as u32)
}

/// The verdict on one access of several bytes.
#[derive(Default)]
pub struct Verdict {
    /// Some byte was never written.
    pub uninit: bool,
    /// Some byte conflicts with another warp's access in this epoch: `(that warp, or None for
    /// several; whether it wrote)`.
    pub race: Option<(Option<u32>, bool)>,
}

impl SharedShadow {
    pub fn new(bytes: usize) -> SharedShadow {
        SharedShadow { cells: vec![0; bytes] }
    }

    fn tag(epoch: u32, warp: u32) -> u32 {
        (epoch << WARP_BITS) | (warp + 1)
    }

    /// One byte's new cell and hazard when `warp` reads or writes it in `epoch` (epochs start at 1).
    #[inline]
    fn step(c: u64, warp: u32, epoch: u32, store: bool) -> (u64, Hazard) {
        let (w, r) = split(c);
        let mine = Self::tag(epoch, warp);
        if store {
            let h = if w >> WARP_BITS == epoch && w != 0 && w != mine {
                Hazard::Race { other_warp: Some((w & MANY) - 1), with_write: true }
            } else if r >> WARP_BITS == epoch && r != 0 && r != mine {
                let other = if r & MANY == MANY { None } else { Some((r & MANY) - 1) };
                Hazard::Race { other_warp: other, with_write: false }
            } else {
                Hazard::None
            };
            (cell(mine, r), h)
        } else {
            // A second warp reading in the same epoch makes the read tag "several warps".
            let r_new = if r >> WARP_BITS == epoch && r != mine { (epoch << WARP_BITS) | MANY } else { mine };
            let h = if w == 0 {
                Hazard::Uninit
            } else if w >> WARP_BITS == epoch && w != mine {
                Hazard::Race { other_warp: Some((w & MANY) - 1), with_write: true }
            } else {
                Hazard::None
            };
            (cell(w, r_new), h)
        }
    }

    /// Records an access of `n` bytes at `i` by `warp` in `epoch` and judges it.
    #[inline]
    pub fn access(&mut self, i: usize, n: usize, warp: u32, epoch: u32, store: bool) -> Verdict {
        let run = &mut self.cells[i..i + n];
        let mut v = Verdict::default();
        let mut judge = |h: Hazard| match h {
            Hazard::None => {}
            Hazard::Uninit => v.uninit = true,
            Hazard::Race { other_warp, with_write } => v.race = Some((other_warp, with_write)),
        };
        // Runs of equal cells (a word one warp wrote) get equal verdicts and equal new cells: each run
        // is decided once.
        let mut j = 0;
        while j < run.len() {
            let c = run[j];
            let end = run[j..].iter().position(|&x| x != c).map_or(run.len(), |k| j + k);
            let (new, h) = Self::step(c, warp, epoch, store);
            if new != c {
                run[j..end].fill(new);
            }
            judge(h);
            j = end;
        }
        v
    }

    /// An atomic access: initializes the byte, never races.
    pub fn atomic(&mut self, i: usize, warp: u32, epoch: u32) {
        self.cells[i] = cell(Self::tag(epoch, warp), 0);
    }
}
