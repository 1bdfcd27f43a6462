//! Reading documents: JSONL (field `text`, optional `id`), plain-text files and folders (one
//! document per file), and Parquet (column `text`, optional `id`). Files are read in sorted
//! order; a malformed line or file is reported, not fatal (unless strict).

use std::io::BufRead;
use std::path::{Path, PathBuf};

/// One input document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: String,
    pub text: String,
}

/// A line or file that could not be read as documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub location: String,
    pub reason: String,
}

/// Every input file under `paths`, sorted, with its kind.
pub fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                entries.sort();
                for e in entries {
                    walk(&e, out);
                }
            }
        } else {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

fn ext(p: &Path) -> String {
    p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// Streams the documents of one file into `sink` (documents, or a malformed report).
pub fn read_file(path: &Path, sink: &mut dyn FnMut(Result<Doc, Malformed>) -> bool) {
    let shown = path.display().to_string();
    let bad = |reason: String| Malformed { location: shown.clone(), reason };
    match ext(path).as_str() {
        "jsonl" | "ndjson" => {
            let f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    sink(Err(bad(e.to_string())));
                    return;
                }
            };
            for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
                let at = format!("{shown}:{}", i + 1);
                let doc = match line {
                    Err(e) => Err(Malformed { location: at, reason: e.to_string() }),
                    Ok(l) if l.trim().is_empty() => continue,
                    Ok(l) => match serde_json::from_str::<serde_json::Value>(&l) {
                        Err(e) => Err(Malformed { location: at, reason: format!("not JSON: {e}") }),
                        Ok(v) => match v.get("text").and_then(|t| t.as_str()) {
                            None => Err(Malformed { location: at, reason: "no string field `text`".into() }),
                            Some(t) => {
                                let id = match v.get("id") {
                                    Some(serde_json::Value::String(s)) => s.clone(),
                                    Some(x) if !x.is_null() => x.to_string(),
                                    _ => format!(
                                        "{}:{}",
                                        path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                                        i + 1
                                    ),
                                };
                                Ok(Doc { id, text: t.to_string() })
                            }
                        },
                    },
                };
                if !sink(doc) {
                    return;
                }
            }
        }
        "parquet" => read_parquet(path, sink),
        _ => match std::fs::read(path) {
            Err(e) => {
                sink(Err(bad(e.to_string())));
            }
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    sink(Ok(Doc { id: shown.clone(), text }));
                }
                Err(_) => {
                    sink(Err(bad("not UTF-8 text".into())));
                }
            },
        },
    }
}

fn read_parquet(path: &Path, sink: &mut dyn FnMut(Result<Doc, Malformed>) -> bool) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let shown = path.display().to_string();
    let bad = |reason: String| Malformed { location: shown.clone(), reason };
    let reader = match std::fs::File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| SerializedFileReader::new(f).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            sink(Err(bad(format!("not a Parquet file: {e}"))));
            return;
        }
    };
    let rows = match reader.get_row_iter(None) {
        Ok(r) => r,
        Err(e) => {
            sink(Err(bad(e.to_string())));
            return;
        }
    };
    for (i, row) in rows.enumerate() {
        let at = format!("{shown}:row {i}");
        let doc = match row {
            Err(e) => Err(Malformed { location: at, reason: e.to_string() }),
            Ok(row) => {
                let (mut text, mut id) = (None, None);
                for (name, field) in row.get_column_iter() {
                    match (name.as_str(), field) {
                        ("text", Field::Str(s)) => text = Some(s.clone()),
                        ("id", Field::Str(s)) => id = Some(s.clone()),
                        ("id", f) if !matches!(f, Field::Null) => id = Some(f.to_string()),
                        _ => {}
                    }
                }
                match text {
                    Some(t) => Ok(Doc {
                        id: id.unwrap_or_else(|| {
                            format!(
                                "{}:{i}",
                                path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())
                            )
                        }),
                        text: t,
                    }),
                    None => Err(Malformed { location: at, reason: "no string column `text`".into() }),
                }
            }
        };
        if !sink(doc) {
            return;
        }
    }
}
