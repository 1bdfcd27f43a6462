//! The built-in corpus: the project's own documentation and sources (Markdown, Rust, Python,
//! YAML), found under the project root — real text that exists on any machine with the
//! project, so `dsv3c train` downloads nothing. Tokenized on first use and cached as a shard,
//! keyed by the CRC of every file's path and contents and the tokenizer.

use std::path::{Path, PathBuf};

use super::shard::{self, ShardError};
use super::tokenizer::Tokenizer;

const EXTENSIONS: [&str; 4] = ["md", "rs", "py", "yaml"];
const SKIP_DIRS: [&str; 7] = ["target", "runs", ".git", "generated", "fixtures", "own", "snapshots"];

/// The corpus files under `root`, sorted (deterministic order).
pub fn files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !SKIP_DIRS.contains(&name.as_str()) && !name.starts_with('.') {
                    walk(&p, out);
                }
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| EXTENSIONS.contains(&x)) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// The name a tokenizer goes by in the cache key: a tokenizer.json by a CRC of its contents (an
/// edited file is another tokenizer), a built-in one by its name.
pub fn tokenizer_key(name: &str, base: &Path) -> String {
    match std::fs::read(base.join(name)) {
        Ok(bytes) if name.ends_with(".json") => format!("hf-{:08x}", crc32fast::hash(&bytes)),
        _ => name.to_string(),
    }
}

/// The tokens of the built-in corpus (documents separated by end-of-text), from the cache in
/// `cache_dir` when it is current; `tokenizer_key` names the tokenizer in the cache key.
/// Returns the tokens and the number of files.
pub fn load(
    root: &Path,
    tokenizer: &Tokenizer,
    tokenizer_key: &str,
    cache_dir: &Path,
) -> Result<(Vec<u32>, usize), ShardError> {
    let files = files(root);
    let texts: Vec<(String, String)> = files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let rel = p.strip_prefix(root).unwrap_or(p).to_string_lossy().into_owned();
            Some((rel, text))
        })
        .collect();
    let mut h = crc32fast::Hasher::new();
    h.update(tokenizer_key.as_bytes());
    for (rel, text) in &texts {
        h.update(rel.as_bytes());
        h.update(text.as_bytes());
    }
    let cache = cache_dir.join(format!("builtin-{:08x}.bin", h.finalize()));
    if let Ok(tokens) = shard::read(&cache) {
        return Ok((tokens, texts.len()));
    }
    let mut tokens = Vec::new();
    for (rel, text) in &texts {
        tokens.extend(tokenizer.encode(&format!("// {rel}\n{text}")));
        tokens.extend(tokenizer.eot());
    }
    std::fs::create_dir_all(cache_dir).map_err(|source| ShardError::Io { path: cache_dir.into(), source })?;
    shard::write(&cache, &tokens)?;
    Ok((tokens, texts.len()))
}
