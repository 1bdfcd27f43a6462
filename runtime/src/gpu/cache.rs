//! The on-disk cache of NVRTC's output: a kernel's PTX (for the emulator) or cubin (for a GPU), under a
//! key of everything that decides it — the CUDA source, the architecture, NVRTC's version and the
//! device's driver. A hit skips NVRTC (seconds
//! for a large GEMM); a miss compiles and writes the file atomically (a temporary file, then a rename),
//! so concurrent runs never see half a file. The folder is `DSV3C_CACHE`, else `$XDG_CACHE_HOME/dsv3c`,
//! else `~/.cache/dsv3c`; a cache that cannot be written is skipped, never an error.

use std::path::{Path, PathBuf};

use crate::nvrtc::{self, NvrtcError};

/// Where PTX files are kept (`None`: no cache, always compile).
#[derive(Debug, Clone)]
pub struct PtxCache {
    dir: Option<PathBuf>,
}

/// A compiled kernel: PTX text or a cubin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    Ptx(String),
    Cubin(Vec<u8>),
}

impl Compiled {
    /// The module image a device loads.
    pub fn image(&self) -> crate::device::Image<'_> {
        match self {
            Compiled::Ptx(t) => crate::device::Image::Ptx(t),
            Compiled::Cubin(b) => crate::device::Image::Cubin(b),
        }
    }
}

/// How a kernel's PTX was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cached,
    Compiled,
}

/// FNV-1a, 64 bits: a stable hash (the same on every machine and build) of the cache key.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The default cache folder.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DSV3C_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("dsv3c"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("dsv3c"))
}

impl PtxCache {
    /// The cache in [`default_dir`].
    pub fn new() -> PtxCache {
        PtxCache { dir: default_dir() }
    }

    /// A cache in `dir`, or none.
    pub fn at(dir: Option<PathBuf>) -> PtxCache {
        PtxCache { dir }
    }

    /// The file a kernel's PTX (or cubin) lives in.
    fn file(dir: &Path, stem: &str, source: &str, arch: &str, nvrtc: (i32, i32), driver: &str) -> PathBuf {
        let version = format!("{}.{}", nvrtc.0, nvrtc.1);
        let key = fnv1a(&[source, arch, &version, driver]);
        dir.join("ptx").join(format!("{stem}.{arch}.{key:016x}.ptx"))
    }

    /// The kernel for a device: a cubin where it `wants_cubin` (a GPU), else PTX; from the cache, or
    /// compiled by NVRTC and stored. A cached file that is not what NVRTC writes (an ELF; PTX with an
    /// entry) is compiled again.
    pub fn compiled(
        &self,
        stem: &str,
        source: &str,
        arch: &str,
        driver: &str,
        cubin: bool,
    ) -> Result<(Compiled, Source), NvrtcError> {
        let nvrtc_version = nvrtc::version()?;
        let ext = if cubin { "cubin" } else { "ptx" };
        let file =
            self.dir.as_ref().map(|d| Self::file(d, stem, source, arch, nvrtc_version, driver).with_extension(ext));
        let cached = file.as_ref().and_then(|f| std::fs::read(f).ok()).and_then(|bytes| match cubin {
            true => bytes.starts_with(b"\x7fELF").then_some(Compiled::Cubin(bytes)),
            false => String::from_utf8(bytes).ok().filter(|t| t.contains(".entry")).map(Compiled::Ptx),
        });
        if let Some(c) = cached {
            return Ok((c, Source::Cached));
        }
        let built = match cubin {
            true => Compiled::Cubin(nvrtc::compile_cubin(stem, source, arch)?),
            false => Compiled::Ptx(nvrtc::compile(stem, source, arch)?),
        };
        if let Some(f) = &file {
            store(
                f,
                match &built {
                    Compiled::Cubin(b) => b,
                    Compiled::Ptx(t) => t.as_bytes(),
                },
            );
        }
        Ok((built, Source::Compiled))
    }
}

impl Default for PtxCache {
    fn default() -> Self {
        PtxCache::new()
    }
}

/// Writes `bytes` to `file` through a temporary file and a rename; failures leave no cache entry.
fn store(file: &Path, bytes: &[u8]) {
    let Some(dir) = file.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_covers_source_arch_nvrtc_and_driver() {
        let d = Path::new("/c");
        let base = PtxCache::file(d, "k", "src", "sm_90a", (12, 9), "drv 1");
        assert_eq!(base, PtxCache::file(d, "k", "src", "sm_90a", (12, 9), "drv 1"));
        for other in [
            PtxCache::file(d, "k", "src2", "sm_90a", (12, 9), "drv 1"),
            PtxCache::file(d, "k", "src", "sm_89", (12, 9), "drv 1"),
            PtxCache::file(d, "k", "src", "sm_90a", (12, 8), "drv 1"),
            PtxCache::file(d, "k", "src", "sm_90a", (12, 9), "drv 2"),
        ] {
            assert_ne!(base, other);
        }
        // Parts are delimited: moving a byte from one part to the next changes the key.
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}
