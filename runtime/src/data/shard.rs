//! Token shards: a 32-byte header, the tokens little-endian (u16 or u32), and a table of CRC-32s,
//! one per block of [`BLOCK_TOKENS`] tokens, so that a corrupt shard is reported with the byte
//! range that is wrong. The one module that knows the format; `dsv3c data prepare` writes it
//! and the loader reads it.
//!
//! Header (version 2): magic `DSV3CTOK`, version u32, bytes per token u32, token count u64,
//! tokens per block u32, CRC-32 of the block table u32. Version 1 (one CRC-32 of the whole
//! payload in the last 8 bytes, no table) is still read.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"DSV3CTOK";
pub const VERSION: u32 = 2;
/// Tokens per checksummed block of a version-2 shard.
pub const BLOCK_TOKENS: usize = 1 << 16;
const HEADER: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a dsv3c token shard: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(
        "{path} is truncated at byte {len}: its header promises {expected} bytes ({tokens} tokens of {width} bytes)"
    )]
    Truncated { path: PathBuf, len: u64, expected: u64, tokens: u64, width: usize },
    #[error(
        "{path} is corrupt in bytes {start}..{end} (tokens {first}..{last}): checksum {found:08x}, the shard says {expected:08x}"
    )]
    Checksum { path: PathBuf, start: u64, end: u64, first: u64, last: u64, expected: u32, found: u32 },
    #[error("{path}: token {index} (byte {offset}) is id {id}, outside the spec's vocab_size {vocab}")]
    OutOfVocab { path: PathBuf, index: usize, offset: usize, id: u32, vocab: u64 },
}

/// Writes `tokens` as a shard; u16 when every id fits, else u32. Atomic (temp file + rename).
pub fn write(path: &Path, tokens: &[u32]) -> Result<(), ShardError> {
    let io = |source| ShardError::Io { path: path.into(), source };
    let wide = tokens.iter().any(|&t| t > u16::MAX as u32);
    let width = if wide { 4 } else { 2 };
    let mut payload = Vec::with_capacity(tokens.len() * width);
    for &t in tokens {
        if wide {
            payload.extend_from_slice(&t.to_le_bytes());
        } else {
            payload.extend_from_slice(&(t as u16).to_le_bytes());
        }
    }
    let table: Vec<u8> = payload.chunks(BLOCK_TOKENS * width).flat_map(|b| crc32fast::hash(b).to_le_bytes()).collect();
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(width as u32).to_le_bytes());
    header.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    header.extend_from_slice(&(BLOCK_TOKENS as u32).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
    // Unique per process and call: concurrent writers of the same shard must not share a temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));

    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(&payload)?;
        f.write_all(&table)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Reads and verifies a shard: its size against its header, and every block's checksum.
pub fn read(path: &Path) -> Result<Vec<u32>, ShardError> {
    let bytes = std::fs::read(path).map_err(|source| ShardError::Io { path: path.into(), source })?;
    decode(path, &bytes)
}

/// [`read`] on bytes already in memory; `path` names them in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<u32>, ShardError> {
    let bad = |reason: String| ShardError::Format { path: path.into(), reason };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad(format!("no DSV3CTOK header in its first {HEADER} bytes")));
    }
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let u64_at = |i: usize| u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7].map(|k| bytes[i + k]));
    let version = u32_at(8);
    if version != 1 && version != 2 {
        return Err(bad(format!("version {version} (this dsv3c reads 1 and 2)")));
    }
    let width = u32_at(12) as usize;
    if width != 2 && width != 4 {
        return Err(bad(format!("{width} bytes per token (2 or 4)")));
    }
    let count = u64_at(16);
    let len = bytes.len() as u64;
    // The block size (version 2; version 1 has one block) and the table it implies.
    let block = if version == 2 { u32_at(24) as u64 } else { count.max(1) };
    if block == 0 {
        return Err(bad("a block size of 0 tokens".into()));
    }
    let blocks = count.div_ceil(block);
    let payload_bytes = count.checked_mul(width as u64);
    let expected = payload_bytes
        .and_then(|p| p.checked_add(HEADER as u64))
        .and_then(|p| p.checked_add(if version == 2 { blocks.checked_mul(4)? } else { 0 }));
    let Some(expected) = expected else {
        return Err(bad(format!("a token count of {count}, more than any file can hold")));
    };
    if len < expected {
        return Err(ShardError::Truncated { path: path.into(), len, expected, tokens: count, width });
    }
    if len > expected {
        return Err(bad(format!("{len} bytes, {} past the {expected} its header accounts for", len - expected)));
    }
    let payload = &bytes[HEADER..HEADER + (count as usize) * width];
    let block_bytes = block as usize * width;
    let table = &bytes[HEADER + payload.len()..];
    if version == 2 && crc32fast::hash(table) != u32_at(28) {
        return Err(bad(format!(
            "its checksum table (bytes {}..{len}) does not match the header's checksum of it",
            HEADER + payload.len()
        )));
    }
    for (i, chunk) in payload.chunks(block_bytes).enumerate() {
        let found = crc32fast::hash(chunk);
        let stated = if version == 2 { u32_at(HEADER + payload.len() + 4 * i) } else { u64_at(24) as u32 };
        if found != stated {
            let start = (HEADER + i * block_bytes) as u64;
            let first = i as u64 * block;
            return Err(ShardError::Checksum {
                path: path.into(),
                start,
                end: start + chunk.len() as u64,
                first,
                last: first + (chunk.len() / width) as u64,
                expected: stated,
                found,
            });
        }
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

/// [`read`], with every id below `vocab`: the first that is not is named by its byte offset.
pub fn read_within(path: &Path, vocab: u64) -> Result<Vec<u32>, ShardError> {
    let bytes = std::fs::read(path).map_err(|source| ShardError::Io { path: path.into(), source })?;
    let tokens = decode(path, &bytes)?;
    match tokens.iter().position(|&t| u64::from(t) >= vocab) {
        None => Ok(tokens),
        Some(i) => Err(ShardError::OutOfVocab {
            path: path.into(),
            index: i,
            offset: HEADER + i * u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize,
            id: tokens[i],
            vocab,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dsv3c-shard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_and_corruption_named_by_offset() {
        let p = temp("a.bin");
        for tokens in [vec![1u32, 2, 65535], vec![70000, 3], vec![], (0..200_000u32).map(|i| i % 50000).collect()] {
            write(&p, &tokens).unwrap();
            assert_eq!(read(&p).unwrap(), tokens);
        }
        // 200k u16 tokens: blocks of 65536 tokens = 131072 bytes; flip a byte in the third block.
        let mut bytes = std::fs::read(&p).unwrap();
        let at = HEADER + 2 * 131072 + 17;
        bytes[at] ^= 1;
        let e = decode(&p, &bytes).unwrap_err();
        match &e {
            ShardError::Checksum { start, end, first, .. } => {
                assert_eq!((*start, *end, *first), (32 + 262144, 32 + 393216, 131072));
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("a.bin is corrupt in bytes 262176..393248"), "{e}");
        bytes[at] ^= 1;
        let e = decode(&p, &bytes[..bytes.len() - 1000]).unwrap_err();
        assert!(matches!(e, ShardError::Truncated { len, .. } if len as usize == bytes.len() - 1000), "{e}");
        assert!(e.to_string().contains("truncated at byte"), "{e}");
        assert!(matches!(decode(&p, b"garbage"), Err(ShardError::Format { .. })));
    }

    /// A version-1 shard (one CRC of the payload, no table) still reads.
    #[test]
    fn version_1_shards_read() {
        let payload: Vec<u8> = [5u16, 6, 7].iter().flat_map(|t| t.to_le_bytes()).collect();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&(crc32fast::hash(&payload) as u64).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(decode(Path::new("v1.bin"), &bytes).unwrap(), vec![5, 6, 7]);
        let n = bytes.len();
        bytes[n - 1] ^= 4;
        assert!(matches!(decode(Path::new("v1.bin"), &bytes), Err(ShardError::Checksum { start: 32, end: 38, .. })));
    }

    #[test]
    fn a_token_outside_the_vocabulary_is_named_by_offset() {
        let p = temp("v.bin");
        write(&p, &[1, 2, 900, 3]).unwrap();
        assert_eq!(read_within(&p, 901).unwrap(), vec![1, 2, 900, 3]);
        let e = read_within(&p, 512).unwrap_err().to_string();
        assert!(e.contains("v.bin") && e.contains("token 2 (byte 36) is id 900"), "{e}");
    }
}
