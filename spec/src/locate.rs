//! Finds where a field lives in YAML source text, so that validation errors can name the line
//! and column of the offending field.
//!
//! serde_yaml reports locations for syntax and type errors but keeps no spans in the parsed
//! value, so validation (which runs on the typed spec) looks fields up here by their path.
//! Block mappings, block sequences, and flow collections on one line (`[swa, mla]`,
//! `{factor: 40}`) are understood; a path that cannot be found resolves to its deepest ancestor.

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    /// Byte offset of this position in `src` (clamped to the text).
    pub fn offset(self, src: &str) -> usize {
        let mut off = 0;
        for (i, line) in src.split_inclusive('\n').enumerate() {
            if i + 1 == self.line {
                let col = (self.column - 1).min(line.trim_end_matches(['\n', '\r']).len());
                return off + line.char_indices().nth(col).map_or(col, |(b, _)| b);
            }
            off += line.len();
        }
        src.len()
    }
}

/// Parses a dotted path such as `attention.pattern[2]` or `moe.top_k`.
pub fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(i) = rest[1..close].parse() {
                segs.push(Seg::Index(i));
            }
            rest = &rest[close + 1..];
        }
    }
    segs
}

/// A source line with comments removed.
struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

fn strip_comment(s: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return &s[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    s
}

fn lines(src: &str) -> Vec<Line<'_>> {
    src.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = strip_comment(raw).trim_end();
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed == "---" || trimmed.starts_with('%') {
                return None;
            }
            Some(Line { no: i + 1, indent: text.len() - trimmed.len(), text })
        })
        .collect()
}

/// Does `s` (starting at a key) start with `key:`? Returns the byte offset just after the colon.
fn key_match(s: &str, key: &str) -> Option<usize> {
    for quote in ["", "\"", "'"] {
        let k = format!("{quote}{key}{quote}");
        if let Some(rest) = s.strip_prefix(&k) {
            if let Some(after) = rest.trim_start().strip_prefix(':') {
                if after.is_empty() || after.starts_with([' ', '\t']) {
                    return Some(s.len() - after.len());
                }
            }
        }
    }
    None
}

/// Finds `path` in `src`. Returns the position of the deepest segment found (the start of the
/// text when even the first segment is missing), and whether the whole path was found.
pub fn locate(src: &str, path: &[Seg]) -> (Pos, bool) {
    let ls = lines(src);
    let mut best = Pos::START;
    // Current block: a range of lines and the column at which its entries start.
    let (mut lo, mut hi) = (0usize, ls.len());
    let mut col: Option<usize> = None;
    // When the current value sits inline on a line (flow collection), it is searched textually.
    let mut inline: Option<(usize, usize, &str)> = None; // (line, byte column, text)
    for (depth, seg) in path.iter().enumerate() {
        if let Some((line, start, text)) = inline {
            return match find_in_flow(text, &path[depth..]) {
                Some((off, all)) => (Pos { line, column: start + off + 1 }, all),
                None => (best, false),
            };
        }
        let block_col = col.unwrap_or_else(|| ls.get(lo).map_or(0, |l| l.indent));
        let mut found = None;
        let mut idx = 0usize;
        let mut i = lo;
        while i < hi {
            let l = &ls[i];
            let at = entry_column(l, block_col);
            if let Some(at) = at {
                let entry = &l.text[at..];
                match seg {
                    Seg::Key(k) => {
                        if let Some(after) = key_match(entry, k) {
                            found = Some((i, at, after));
                            break;
                        }
                    }
                    Seg::Index(n) => {
                        if entry.starts_with("- ") || entry == "-" {
                            if idx == *n {
                                found = Some((i, at, 1));
                                break;
                            }
                            idx += 1;
                        }
                    }
                }
            } else if l.indent < block_col {
                break;
            }
            i += 1;
        }
        let Some((i, at, after)) = found else {
            // A key may hold a flow collection written on its own line ("key:\n  [a, b]").
            return (best, false);
        };
        let l = &ls[i];
        best = Pos { line: l.no, column: at + 1 };
        if depth + 1 == path.len() {
            return (best, true);
        }
        let value = &l.text[at + after..];
        let value_trim = value.trim_start();
        let value_at = at + after + (value.len() - value_trim.len());
        if matches!(seg, Seg::Index(_)) && !value_trim.is_empty() && !value_trim.starts_with(['[', '{']) {
            // "- key: v" : the item is a mapping whose first entry is on this line.
            lo = i;
            col = Some(value_at);
            hi = block_end(&ls, i, at);
            continue;
        }
        if value_trim.starts_with(['[', '{']) {
            inline = Some((l.no, value_at, value_trim));
            continue;
        }
        lo = i + 1;
        hi = block_end(&ls, i, at);
        col = None;
        if lo < hi && (ls[lo].text[ls[lo].indent..].starts_with(['[', '{'])) {
            let n = &ls[lo];
            inline = Some((n.no, n.indent, &n.text[n.indent..]));
        }
    }
    (best, path.is_empty())
}

/// The byte column where an entry of a block at `block_col` starts on this line, if the line
/// holds one: either the line's own indent, or the text after a "- " sequence marker.
fn entry_column(l: &Line<'_>, block_col: usize) -> Option<usize> {
    if l.indent == block_col {
        return Some(block_col);
    }
    // "- key: v" lines belong to the block nested at the column after the marker.
    let mut at = l.indent;
    while l.text[at..].starts_with("- ") {
        at += 2 + (l.text[at + 2..].len() - l.text[at + 2..].trim_start().len());
        if at == block_col {
            return Some(at);
        }
    }
    None
}

/// The end (exclusive) of the block owned by the entry on line `i` starting at column `at`.
fn block_end(ls: &[Line<'_>], i: usize, at: usize) -> usize {
    let mut j = i + 1;
    while j < ls.len()
        && (ls[j].indent > at
            || (ls[j].indent == at && ls[j].text[at..].starts_with("- ") && !ls[i].text[at..].starts_with("- ")))
    {
        j += 1;
    }
    j
}

/// Finds a path inside a one-line flow collection. Returns the byte offset of the deepest
/// segment found and whether the whole path was found.
fn find_in_flow(text: &str, path: &[Seg]) -> Option<(usize, bool)> {
    let bytes = text.as_bytes();
    let mut start = 0usize; // offset of the current collection's opening bracket
    let mut best = 0usize;
    for (n, seg) in path.iter().enumerate() {
        let open = bytes.get(start).copied()?;
        if open != b'[' && open != b'{' {
            return Some((best, false));
        }
        // Split the collection's top-level items.
        let mut items = Vec::new();
        let mut depth = 0i32;
        let mut item_start = start + 1;
        let mut i = start;
        let mut quote: Option<u8> = None;
        while i < bytes.len() {
            let c = bytes[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    b'"' | b'\'' => quote = Some(c),
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            items.push((item_start, i));
                            break;
                        }
                    }
                    b',' if depth == 1 => {
                        items.push((item_start, i));
                        item_start = i + 1;
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        let trimmed = |(a, b): (usize, usize)| {
            let s = &text[a..b];
            let lead = s.len() - s.trim_start().len();
            (a + lead, a + lead + s.trim().len())
        };
        let hit = match seg {
            Seg::Index(k) if open == b'[' => items.get(*k).map(|&r| trimmed(r)).map(|(a, _)| (a, a)),
            Seg::Key(k) if open == b'{' => items.iter().map(|&r| trimmed(r)).find_map(|(a, _)| {
                key_match(&text[a..], k).map(|after| {
                    let v = &text[a + after..];
                    (a, a + after + (v.len() - v.trim_start().len()))
                })
            }),
            _ => None,
        };
        let Some((at, value)) = hit else {
            return Some((best, false));
        };
        best = at;
        if n + 1 == path.len() {
            return Some((best, true));
        }
        start = value;
    }
    Some((best, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
# header
name: x   # trailing comment
attention:
  mla:
    n_heads: 4
    yarn: {factor: 40, original_max_position_embeddings: 64}
  pattern: [swa, mla]
moe:
  top_k: 2
list:
  - a: 1
    b: 2
  - a: 3
";

    fn at(path: &str) -> (usize, usize, bool) {
        let (p, ok) = locate(SRC, &parse_path(path));
        (p.line, p.column, ok)
    }

    #[test]
    fn finds_block_keys() {
        assert_eq!(at("name"), (2, 1, true));
        assert_eq!(at("attention.mla.n_heads"), (5, 5, true));
        assert_eq!(at("moe.top_k"), (9, 3, true));
    }

    #[test]
    fn finds_flow_entries() {
        assert_eq!(at("attention.mla.yarn.factor"), (6, 12, true));
        assert_eq!(at("attention.mla.yarn.original_max_position_embeddings"), (6, 24, true));
        assert_eq!(at("attention.pattern[1]"), (7, 18, true));
    }

    #[test]
    fn finds_sequence_items() {
        assert_eq!(at("list[1].a"), (13, 5, true));
        assert_eq!(at("list[0].b"), (12, 5, true));
    }

    #[test]
    fn missing_paths_fall_back_to_the_deepest_ancestor() {
        assert_eq!(at("moe.n_group"), (8, 1, false));
        assert_eq!(at("nothing.here"), (1, 1, false));
        // An index past the end of a flow list points at the list.
        assert_eq!(at("attention.pattern[7]"), (7, 12, false));
    }

    #[test]
    fn keys_are_not_matched_by_prefix() {
        let src = "top_k_extra: 1\ntop_k: 2\n";
        assert_eq!(locate(src, &parse_path("top_k")).0, Pos { line: 2, column: 1 });
    }

    #[test]
    fn offsets_follow_lines_and_columns() {
        let src = "ab\ncde\n";
        assert_eq!(Pos { line: 2, column: 2 }.offset(src), 4);
        assert_eq!(Pos { line: 9, column: 1 }.offset(src), src.len());
    }
}
