//! Device global memory: named buffers at GPU-like 64-bit addresses, with guard gaps between them so that
//! an access just past one buffer does not land in the next. Words are atomics, so blocks running on
//! different host threads read and write them soundly (relaxed loads and stores cost what plain ones do
//! on x86); PTX atomics are compare-and-swap loops on the same words. Each buffer also keeps a bitmap of
//! the 32-byte sectors a launch touched, for the DRAM-traffic estimate.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Where the first global buffer goes; generic addresses below the other windows are global.
pub const GLOBAL_BASE: u64 = 0x7f00_0000_0000;
/// Generic-address windows of the other state spaces (each 4 GiB wide).
pub const SHARED_WINDOW: u64 = 0x7e00_0000_0000;
pub const LOCAL_WINDOW: u64 = 0x7d00_0000_0000;
pub const CONST_WINDOW: u64 = 0x7c00_0000_0000;
pub const PARAM_WINDOW: u64 = 0x7b00_0000_0000;
pub const WINDOW_BYTES: u64 = 1 << 32;
const GAP: u64 = 64 << 10;

/// One allocation.
pub struct Buffer {
    pub name: String,
    pub base: u64,
    pub len: u64,
    words: Box<[AtomicU32]>,
    sectors: Box<[AtomicU64]>,
}

impl Buffer {
    fn word(&self, off: u64) -> &AtomicU32 {
        &self.words[(off / 4) as usize]
    }
    /// Little-endian load of `bytes` (1, 2, 4 or 8) at `off`, which the caller has checked is in bounds
    /// and aligned to `bytes`.
    pub fn load(&self, off: u64, bytes: u32) -> u64 {
        match bytes {
            8 => self.word(off).load(Relaxed) as u64 | (self.word(off + 4).load(Relaxed) as u64) << 32,
            4 => self.word(off).load(Relaxed) as u64,
            _ => {
                let w = self.word(off & !3).load(Relaxed) as u64;
                (w >> ((off & 3) * 8)) & crate::float::mask(bytes as u8 * 8)
            }
        }
    }
    pub fn store(&self, off: u64, bytes: u32, v: u64) {
        match bytes {
            8 => {
                self.word(off).store(v as u32, Relaxed);
                self.word(off + 4).store((v >> 32) as u32, Relaxed);
            }
            4 => self.word(off).store(v as u32, Relaxed),
            _ => {
                // Two atomic read-modify-writes that each touch only this access's bytes: correct even
                // when another thread writes the word's other bytes at the same time.
                let shift = (off & 3) * 8;
                let m = (crate::float::mask(bytes as u8 * 8) << shift) as u32;
                let w = self.word(off & !3);
                w.fetch_and(!m, Relaxed);
                w.fetch_or(((v << shift) as u32) & m, Relaxed);
            }
        }
    }
    /// Atomic read-modify-write of a 4- or 8-byte word: `f(old) -> new`, returns old.
    pub fn rmw(&self, off: u64, bytes: u32, f: &mut dyn FnMut(u64) -> u64) -> u64 {
        if bytes == 4 {
            let w = self.word(off);
            let mut old = w.load(Relaxed);
            loop {
                let new = f(old as u64) as u32;
                match w.compare_exchange_weak(old, new, Relaxed, Relaxed) {
                    Ok(_) => return old as u64,
                    Err(o) => old = o,
                }
            }
        }
        // 8-byte atomics: two words under a global lock (rare in the kernels this emulator runs).
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load(off, 8);
        self.store(off, 8, f(old));
        old
    }
    pub fn touch(&self, off: u64, bytes: u64) {
        let (first, last) = (off / 32, (off + bytes.max(1) - 1) / 32);
        for s in first..=last {
            let (word, bit) = (&self.sectors[(s / 64) as usize], 1u64 << (s % 64));
            // Most touches find the bit set already: a plain load, no read-modify-write.
            if word.load(Relaxed) & bit == 0 {
                word.fetch_or(bit, Relaxed);
            }
        }
    }
    pub fn sectors_touched(&self) -> u64 {
        self.sectors.iter().map(|s| s.load(Relaxed).count_ones() as u64).sum()
    }
    fn clear_sectors(&self) {
        for s in self.sectors.iter() {
            s.store(0, Relaxed);
        }
    }
}

/// `n` zero words from the allocator's zeroed memory: the operating system backs a large buffer's pages
/// only when they are first touched, so a launch that samples a few blocks of a multi-gigabyte buffer
/// costs the host only the pages those blocks reach.
fn zeroed_words(n: usize) -> Box<[AtomicU32]> {
    if n == 0 {
        return Box::new([]);
    }
    let layout = std::alloc::Layout::array::<AtomicU32>(n).expect("a buffer's words fit the address space");
    // SAFETY: `layout` has a non-zero size (n > 0). `alloc_zeroed` returns memory for `n` AtomicU32s
    // with their alignment, every byte zero, and an `AtomicU32` has the size and bit validity of a
    // `u32` (std's documented guarantee), so each element is the valid value `AtomicU32::new(0)`. The
    // pointer came from the global allocator with exactly the layout `Box<[AtomicU32]>` frees with.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut AtomicU32;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n))
    }
}

/// All of a device's global memory.
#[derive(Default)]
pub struct Global {
    buffers: Vec<Buffer>,
    next: u64,
}

impl Global {
    pub fn new() -> Global {
        Global { buffers: Vec::new(), next: GLOBAL_BASE }
    }

    /// A new zero-filled buffer of `len` bytes; returns its address (256-byte aligned).
    pub fn alloc(&mut self, name: &str, len: u64) -> u64 {
        if self.next == 0 {
            self.next = GLOBAL_BASE;
        }
        let base = self.next.div_ceil(256) * 256;
        let words = zeroed_words(len.div_ceil(4) as usize);
        let sectors = (0..len.div_ceil(32).div_ceil(64).max(1)).map(|_| AtomicU64::new(0)).collect();
        self.buffers.push(Buffer { name: name.to_string(), base, len, words, sectors });
        self.next = base + len + GAP;
        base
    }

    /// Frees the buffer at `base` (its address range is not reused).
    pub fn free(&mut self, base: u64) -> Result<(), String> {
        let i = self.buffers.iter().position(|b| b.base == base).ok_or_else(|| format!("no buffer at {base:#x}"))?;
        self.buffers.remove(i);
        Ok(())
    }

    /// A new buffer holding `data`.
    pub fn alloc_with(&mut self, name: &str, data: &[u8]) -> u64 {
        let a = self.alloc(name, data.len() as u64);
        self.write(a, data).expect("a fresh buffer holds its data");
        a
    }

    /// Copies `data` in, four bytes at a time where it can.
    fn write_words(b: &Buffer, off: u64, data: &[u8]) {
        let mut i = 0usize;
        while i < data.len() {
            let o = off + i as u64;
            if o.is_multiple_of(4) && i + 4 <= data.len() {
                b.store(o, 4, u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as u64);
                i += 4;
            } else {
                b.store(o, 1, data[i] as u64);
                i += 1;
            }
        }
    }

    /// The buffer holding `[addr, addr + bytes)`, and the offset of `addr` in it.
    pub fn find(&self, addr: u64, bytes: u64) -> Option<(&Buffer, u64)> {
        let i = self.buffers.partition_point(|b| b.base <= addr);
        let b = self.buffers.get(i.checked_sub(1)?)?;
        let off = addr - b.base;
        (off.checked_add(bytes)? <= b.len).then_some((b, off))
    }

    /// Like [`Global::find`], trying buffer `*hint` first and remembering the hit (accesses of one
    /// instruction mostly fall in one buffer). Returns the buffer's index and the offset.
    #[inline]
    pub fn find_hinted(&self, hint: &mut usize, addr: u64, bytes: u64) -> Option<(usize, u64)> {
        if let Some(b) = self.buffers.get(*hint) {
            if addr >= b.base && addr - b.base + bytes <= b.len {
                return Some((*hint, addr - b.base));
            }
        }
        let i = self.buffers.partition_point(|b| b.base <= addr).checked_sub(1)?;
        let b = &self.buffers[i];
        let off = addr - b.base;
        if off.checked_add(bytes)? <= b.len {
            *hint = i;
            Some((i, off))
        } else {
            None
        }
    }

    /// Describes the buffer nearest to `addr`: `` `x` [0x..+N): 4 bytes past its end``.
    pub fn nearest(&self, addr: u64) -> String {
        let best = self.buffers.iter().min_by_key(|b| {
            if addr < b.base {
                b.base - addr
            } else {
                addr.saturating_sub(b.base + b.len)
            }
        });
        match best {
            None => "no buffers are allocated".into(),
            Some(b) => {
                let rel = if addr < b.base {
                    format!("{} bytes before its start", b.base - addr)
                } else if addr >= b.base + b.len {
                    format!("{} bytes past its end", addr - (b.base + b.len))
                } else {
                    format!("at offset {} (the access runs past its end)", addr - b.base)
                };
                format!("nearest buffer `{}` [{:#x}, {:#x}) ({} bytes): {rel}", b.name, b.base, b.base + b.len, b.len)
            }
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        let (b, off) = self.find(addr, data.len() as u64).ok_or_else(|| self.nearest(addr))?;
        Self::write_words(b, off, data);
        Ok(())
    }

    pub fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, String> {
        let (b, off) = self.find(addr, len).ok_or_else(|| self.nearest(addr))?;
        let mut out = Vec::with_capacity(len as usize);
        let mut i = 0u64;
        while i < len {
            if (off + i).is_multiple_of(4) && i + 4 <= len {
                out.extend_from_slice(&(b.load(off + i, 4) as u32).to_le_bytes());
                i += 4;
            } else {
                out.push(b.load(off + i, 1) as u8);
                i += 1;
            }
        }
        Ok(out)
    }

    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }

    /// Forgets which sectors were touched (at the start of a launch).
    pub fn clear_sectors(&self) {
        for b in &self.buffers {
            b.clear_sectors();
        }
    }

    /// Bytes of the buffers with any sector touched since the last [`Global::clear_sectors`]: what
    /// reading each of them once would cost, an upper bound on a launch's least DRAM traffic.
    pub fn touched_buffer_bytes(&self) -> u64 {
        self.buffers.iter().filter(|b| b.sectors_touched() > 0).map(|b| b.len).sum()
    }

    /// Distinct 32-byte sectors touched since the last [`Global::clear_sectors`].
    pub fn sectors_touched(&self) -> u64 {
        self.buffers.iter().map(Buffer::sectors_touched).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_round_trip_and_report_the_nearest() {
        let mut g = Global::new();
        let a = g.alloc_with("a", &[1, 2, 3, 4, 5, 6]);
        let b = g.alloc("b", 8);
        assert_eq!(g.read(a, 6).unwrap(), vec![1, 2, 3, 4, 5, 6]);
        let (buf, off) = g.find(a + 4, 2).unwrap();
        assert_eq!(buf.load(off, 2), 0x0605);
        buf.store(off + 1, 1, 0xaa);
        assert_eq!(g.read(a, 6).unwrap(), vec![1, 2, 3, 4, 5, 0xaa]);
        assert!(g.find(a + 4, 4).is_none());
        assert!(g.nearest(a + 8).contains("`a`") && g.nearest(a + 8).contains("2 bytes past its end"));
        assert!(g.nearest(b - 4).contains("`b`"));
        assert_eq!(g.read(b, 8).unwrap(), vec![0; 8]);
    }
}
