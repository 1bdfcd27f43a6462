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

impl SharedShadow {
    pub fn new(bytes: usize) -> SharedShadow {
        SharedShadow { cells: vec![0; bytes] }
    }

    fn tag(epoch: u32, warp: u32) -> u32 {
        (epoch << WARP_BITS) | (warp + 1)
    }

    /// Records a read of byte `i` by `warp` in `epoch` (epochs start at 1).
    pub fn read(&mut self, i: usize, warp: u32, epoch: u32) -> Hazard {
        let (w, r) = split(self.cells[i]);
        let r_new = if r >> WARP_BITS == epoch && (r & MANY) != warp + 1 {
            (epoch << WARP_BITS) | MANY
        } else {
            Self::tag(epoch, warp)
        };
        self.cells[i] = cell(w, r_new);
        if w == 0 {
            return Hazard::Uninit;
        }
        if w >> WARP_BITS == epoch && (w & MANY) != warp + 1 {
            return Hazard::Race { other_warp: Some((w & MANY) - 1), with_write: true };
        }
        Hazard::None
    }

    pub fn write(&mut self, i: usize, warp: u32, epoch: u32) -> Hazard {
        let (w, r) = split(self.cells[i]);
        self.cells[i] = cell(Self::tag(epoch, warp), r);
        if w >> WARP_BITS == epoch && w != 0 && (w & MANY) != warp + 1 {
            return Hazard::Race { other_warp: Some((w & MANY) - 1), with_write: true };
        }
        if r >> WARP_BITS == epoch && r != 0 && (r & MANY) != warp + 1 {
            let other = if r & MANY == MANY { None } else { Some((r & MANY) - 1) };
            return Hazard::Race { other_warp: other, with_write: false };
        }
        Hazard::None
    }

    /// A read of `n` bytes at `i` that [`read`](Self::read) would neither flag nor change: every cell
    /// equal to the first, whose read tag is this warp's (or several warps') in this epoch and whose
    /// write is from an earlier epoch or this warp. The common case, checked in one pass.
    #[inline]
    pub fn read_is_quiet(&self, i: usize, n: usize, warp: u32, epoch: u32) -> bool {
        let run = &self.cells[i..i + n];
        let (w, r) = split(run[0]);
        (r == Self::tag(epoch, warp) || r == (epoch << WARP_BITS) | MANY)
            && w != 0
            && (w >> WARP_BITS != epoch || w == Self::tag(epoch, warp))
            && run.iter().all(|&c| c == run[0])
    }

    /// A write of `n` bytes at `i` by the warp that already wrote them all in this epoch, with no
    /// reads by others since: nothing to flag or change.
    #[inline]
    pub fn write_is_quiet(&self, i: usize, n: usize, warp: u32, epoch: u32) -> bool {
        let tag = Self::tag(epoch, warp);
        let run = &self.cells[i..i + n];
        let (w, r) = split(run[0]);
        w == tag && (r == 0 || r == tag || r >> WARP_BITS != epoch) && run.iter().all(|&c| c == run[0])
    }

    /// Whether the `n` cells at `i` are all equal (then one byte's verdict is all of theirs).
    #[inline]
    pub fn uniform(&self, i: usize, n: usize) -> bool {
        let run = &self.cells[i..i + n];
        run.iter().all(|&c| c == run[0])
    }

    /// Copies cell `i` over the `n - 1` cells after it.
    #[inline]
    pub fn copy_first(&mut self, i: usize, n: usize) {
        let c = self.cells[i];
        self.cells[i + 1..i + n].fill(c);
    }

    /// An atomic access: initializes the byte, never races.
    pub fn atomic(&mut self, i: usize, warp: u32, epoch: u32) {
        self.cells[i] = cell(Self::tag(epoch, warp), 0);
    }
}
