//! Token shards: a 32-byte header (magic `DSV3CTOK`, version, bytes per token, token count,
//! CRC-32 of the payload) and the tokens little-endian, u16 or u32. The one module that knows
//! the format; `dsv3c data prepare` writes it and the loader reads it.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"DSV3CTOK";
pub const VERSION: u32 = 1;
const HEADER: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a dsv3c token shard: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path} is corrupt: checksum {found:08x}, header says {expected:08x}")]
    Checksum { path: PathBuf, expected: u32, found: u32 },
}

/// Writes `tokens` as a shard; u16 when every id fits, else u32. Atomic (temp file + rename).
pub fn write(path: &Path, tokens: &[u32]) -> Result<(), ShardError> {
    let io = |source| ShardError::Io { path: path.into(), source };
    let wide = tokens.iter().any(|&t| t > u16::MAX as u32);
    let mut payload = Vec::with_capacity(tokens.len() * if wide { 4 } else { 2 });
    for &t in tokens {
        if wide {
            payload.extend_from_slice(&t.to_le_bytes());
        } else {
            payload.extend_from_slice(&(t as u16).to_le_bytes());
        }
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(if wide { 4u32 } else { 2u32 }).to_le_bytes());
    header.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    header.extend_from_slice(&(crc32fast::hash(&payload) as u64).to_le_bytes());
    // Unique per process and call: concurrent writers of the same shard must not share a temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));

    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&header).map_err(io)?;
    f.write_all(&payload).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads and verifies a shard.
pub fn read(path: &Path) -> Result<Vec<u32>, ShardError> {
    let bytes = std::fs::read(path).map_err(|source| ShardError::Io { path: path.into(), source })?;
    let bad = |reason: &str| ShardError::Format { path: path.into(), reason: reason.into() };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("no DSV3CTOK header"));
    }
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    if u32_at(8) != VERSION {
        return Err(bad(&format!("version {} (this dsv3c reads {VERSION})", u32_at(8))));
    }
    let width = u32_at(12) as usize;
    if width != 2 && width != 4 {
        return Err(bad(&format!("{width} bytes per token (2 or 4)")));
    }
    let count = u64_at(16) as usize;
    let payload = &bytes[HEADER..];
    if payload.len() != count.saturating_mul(width) {
        return Err(bad(&format!("{} payload bytes for {count} tokens of {width} bytes", payload.len())));
    }
    let found = crc32fast::hash(payload);
    if found as u64 != u64_at(24) {
        return Err(ShardError::Checksum { path: path.into(), expected: u64_at(24) as u32, found });
    }
    Ok(payload
        .chunks_exact(width)
        .map(|c| {
            if width == 2 {
                u16::from_le_bytes([c[0], c[1]]) as u32
            } else {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("dsv3c-shard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for tokens in [vec![1u32, 2, 65535], vec![70000, 3]] {
            let p = dir.join("a.bin");
            write(&p, &tokens).unwrap();
            assert_eq!(read(&p).unwrap(), tokens);
            let mut bytes = std::fs::read(&p).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(&p, &bytes).unwrap();
            assert!(matches!(read(&p), Err(ShardError::Checksum { .. })));
            std::fs::write(&p, b"garbage").unwrap();
            assert!(matches!(read(&p), Err(ShardError::Format { .. })));
        }
    }
}
