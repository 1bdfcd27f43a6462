//! Token batches as JSON — `dsv3c generate --prompt-tokens` and `dsv3c eval --tokens` — a JSON
//! array of arrays of token ids. The one reader of that format; its errors name the file and the
//! first entry that is not a token id.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenJsonError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: expected a JSON array of arrays of token ids: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}: token [{row}][{col}] = {value} is not a token id (an integer in 0..2^32)")]
    NotAnId { path: PathBuf, row: usize, col: usize, value: String },
}

/// The rows of token ids in `path` (rows may differ in length; callers that need a rectangle
/// check it).
pub fn read(path: &Path) -> Result<Vec<Vec<u32>>, TokenJsonError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenJsonError::Io { path: path.into(), source })?;
    parse(path, &text)
}

/// [`read`] on text already in memory; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Vec<u32>>, TokenJsonError> {
    let rows: Vec<Vec<serde_json::Value>> =
        serde_json::from_str(text).map_err(|e| TokenJsonError::Json { path: path.into(), reason: e.to_string() })?;
    rows.iter()
        .enumerate()
        .map(|(row, r)| {
            r.iter()
                .enumerate()
                .map(|(col, v)| {
                    v.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| {
                        let mut value = v.to_string();
                        if value.len() > 40 {
                            value = format!("{}…", value.chars().take(40).collect::<String>());
                        }
                        TokenJsonError::NotAnId { path: path.into(), row, col, value }
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_ids_and_what_is_not_one() {
        let p = Path::new("prompts.json");
        assert_eq!(parse(p, "[[1, 2, 3], [4]]").unwrap(), vec![vec![1, 2, 3], vec![4]]);
        let e = parse(p, "[[1, -2]]").unwrap_err().to_string();
        assert!(e.contains("prompts.json") && e.contains("[0][1] = -2"), "{e}");
        let e = parse(p, "[[1, 4294967296]]").unwrap_err().to_string();
        assert!(e.contains("[0][1]"), "{e}");
        let e = parse(p, "{\"a\": 1}").unwrap_err().to_string();
        assert!(e.contains("prompts.json: expected a JSON array"), "{e}");
    }
}
