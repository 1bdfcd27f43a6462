//! YAML from users, before the parser sees it: libyaml (under serde_yaml) tracks a possible key
//! at every open flow collection and rescans them all per token, so text nested thousands of
//! `[` or `{` deep takes quadratic time — minutes for half a megabyte — before serde_yaml's own
//! depth limit (128) refuses it. Nesting beyond that limit is refused here, in one linear pass.

/// serde_yaml's recursion limit: nothing nested deeper can deserialize anyway.
pub const MAX_DEPTH: usize = 128;

/// The line and column (1-based) where flow collections (`[`, `{`) first nest deeper than
/// [`MAX_DEPTH`], if they do. Quoted scalars and comments are skipped; a bracket inside a plain
/// scalar counts, so this may refuse text that is merely odd — never text nested less deeply.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    // The character before this one, and the last one outside whitespace (a newline at a line's
    // start): a quote opens a scalar only where a scalar can start, not inside `don't`.
    let (mut prev, mut last) = ('\n', '\n');
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            // Quoted scalars may span lines: a quote stays open across the newline.
            (line, col, comment) = (line + 1, 0, false);
            (prev, last) = ('\n', if quote.is_some() { last } else { '\n' });
            continue;
        }
        match quote {
            Some(q) => {
                if c == q && !(q == '"' && prev == '\\') {
                    quote = None;
                }
            }
            None if comment => {}
            None => match c {
                '#' if prev.is_whitespace() => comment = true,
                '\'' | '"' if ":[{,-?\n".contains(last) => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        if !c.is_whitespace() {
            last = c;
        }
        // An escaped backslash does not escape the quote after it.
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_and_quotes_and_comments_are_not_counted() {
        assert_eq!(too_deep("a: [[1], {b: [2]}]\n"), None);
        let deep = format!("a: {}", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(too_deep(&deep), Some((1, 4 + MAX_DEPTH)));
        let quoted = format!("a: \"{}\"\nb: '{}' # {}\n", "[".repeat(500), "{".repeat(500), "[".repeat(500));
        assert_eq!(too_deep(&quoted), None);
        let escaped = format!("a: \"\\\\\" {}", "[".repeat(MAX_DEPTH + 1));
        assert!(too_deep(&escaped).is_some());
        // An apostrophe inside a plain scalar opens no quote.
        let plain = format!("name: don't\nb: {}", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(too_deep(&plain), Some((2, 4 + MAX_DEPTH)));
        // Depth is nesting, not count: many shallow collections pass.
        assert_eq!(too_deep(&"[1], ".repeat(10_000)), None);
    }
}
