//! Cleaning: Unicode NFC, HTML tags and entities, control characters, whitespace (runs of
//! spaces collapsed, trailing spaces and excess blank lines removed).

use unicode_normalization::UnicodeNormalization;

use crate::config::Clean;

/// Removes `<...>` tags (and the contents of script/style elements).
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let lower = s.to_ascii_lowercase();
    let mut i = 0;
    let b = s.as_bytes();
    while i < b.len() {
        if b[i] == b'<' {
            let rest = &lower[i..];
            let skip_to = |close: &str| rest.find(close).map(|j| i + j + close.len());
            let end = if rest.starts_with("<script") {
                skip_to("</script>")
            } else if rest.starts_with("<style") {
                skip_to("</style>")
            } else if rest.starts_with("<!--") {
                skip_to("-->")
            } else if rest.len() > 1
                && (rest.as_bytes()[1].is_ascii_alphabetic()
                    || rest.as_bytes()[1] == b'/'
                    || rest.as_bytes()[1] == b'!')
            {
                rest.find('>').map(|j| i + j + 1)
            } else {
                None
            };
            if let Some(e) = end {
                // Block-level tags end a line.
                let tag = &lower[i..e];
                if ["<br", "<p", "</p", "<div", "</div", "<li", "<h", "</h", "<tr"].iter().any(|t| tag.starts_with(t)) {
                    out.push('\n');
                }
                i = e;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn looks_like_html(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    ["<p>", "<br", "<div", "</", "&amp;", "&lt;", "&nbsp;", "&#", "<html", "<span"].iter().any(|m| l.contains(m))
}

/// Cleans one document.
pub fn clean(text: &str, c: &Clean) -> String {
    if !c.enabled {
        return text.to_string();
    }
    let mut s: String = if c.nfc { text.nfc().collect() } else { text.to_string() };
    if c.html && looks_like_html(&s) {
        s = html_escape::decode_html_entities(&strip_tags(&s)).into_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.split('\n') {
        let mut l = String::with_capacity(line.len());
        let mut space = false;
        for ch in line.chars() {
            let ch = if ch == '\t' || ch == '\u{a0}' { ' ' } else { ch };
            if ch.is_control() || ch == '\u{feff}' {
                continue;
            }
            if ch.is_whitespace() {
                if !space && !l.is_empty() {
                    l.push(' ');
                }
                space = true;
            } else {
                l.push(ch);
                space = false;
            }
        }
        let l = l.trim_end();
        if l.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(l);
        out.push('\n');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_entities_control_characters_and_whitespace() {
        let c = Clean::default();
        // `</p>` ends a paragraph and `<br>` a line: a paragraph break.
        assert_eq!(
            clean("<p>Fish &amp; chips</p><script>x()</script><br>costs&nbsp;&#36;5", &c),
            "Fish & chips\n\ncosts $5"
        );
        assert_eq!(clean("<div>a</div>b", &c), "a\nb");
        assert_eq!(clean("a\u{0007}b  c\t\td \n\n\n\nnext  ", &c), "ab c d\n\nnext");
        // NFC: e + combining acute -> é.
        assert_eq!(clean("e\u{301}", &c), "\u{e9}");
        assert_eq!(clean("x < y and y > z", &c), "x < y and y > z", "comparison signs are not tags");
    }
}
