//! Quality heuristics in the Gopher / C4 tradition. Each rule has a name, reported in the stats.

use std::collections::{HashMap, HashSet};

use crate::config::Quality;

pub const RULES: [&str; 11] = [
    "too_few_words",
    "too_many_words",
    "mean_word_length",
    "symbol_word_ratio",
    "alpha_word_fraction",
    "punctuated_lines",
    "duplicate_lines",
    "duplicate_paragraphs",
    "top_2gram",
    "duplicate_5grams",
    "stop_words",
];

const STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];

/// The first rule `text` fails, if any.
pub fn check(text: &str, q: &Quality) -> Option<&'static str> {
    if !q.enabled {
        return None;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    if n < q.min_words {
        return Some("too_few_words");
    }
    if n > q.max_words {
        return Some("too_many_words");
    }
    let mean_len = words.iter().map(|w| w.chars().count()).sum::<usize>() as f64 / n as f64;
    if mean_len < q.min_mean_word_length || mean_len > q.max_mean_word_length {
        return Some("mean_word_length");
    }
    let symbols = words.iter().filter(|w| w.contains('#') || w.contains('…') || w.contains("...")).count();
    if symbols as f64 / n as f64 > q.max_symbol_word_ratio {
        return Some("symbol_word_ratio");
    }
    let alpha = words.iter().filter(|w| w.chars().any(char::is_alphabetic)).count();
    if (alpha as f64 / n as f64) < q.min_alpha_word_fraction {
        return Some("alpha_word_fraction");
    }
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let punct = lines.iter().filter(|l| l.ends_with(['.', '!', '?', '"', '\'', ')'])).count();
    if !lines.is_empty() && (punct as f64 / lines.len() as f64) < q.min_punctuated_line_fraction {
        return Some("punctuated_lines");
    }
    let dup_fraction = |items: &[&str]| {
        let mut seen = HashSet::new();
        let dups = items.iter().filter(|x| !seen.insert(**x)).count();
        if items.is_empty() {
            0.0
        } else {
            dups as f64 / items.len() as f64
        }
    };
    if dup_fraction(&lines) > q.max_duplicate_line_fraction {
        return Some("duplicate_lines");
    }
    let paragraphs: Vec<&str> = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect();
    if dup_fraction(&paragraphs) > q.max_duplicate_paragraph_fraction {
        return Some("duplicate_paragraphs");
    }
    let chars: usize = words.iter().map(|w| w.len()).sum::<usize>().max(1);
    if n >= 2 {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for w in words.windows(2) {
            *counts.entry((w[0], w[1])).or_default() += 1;
        }
        if let Some(((a, b), c)) = counts.into_iter().max_by_key(|(k, c)| (*c, *k)) {
            if c > 1 && ((a.len() + b.len()) * c) as f64 / chars as f64 > q.max_top_2gram_char_fraction {
                return Some("top_2gram");
            }
        }
    }
    if n >= 5 {
        let mut seen = HashSet::new();
        let mut dup = vec![false; n];
        for i in 0..=n - 5 {
            if !seen.insert(&words[i..i + 5]) {
                dup[i..i + 5].iter_mut().for_each(|d| *d = true);
            }
        }
        let dup_chars: usize = words.iter().zip(&dup).filter(|(_, d)| **d).map(|(w, _)| w.len()).sum();
        if dup_chars as f64 / chars as f64 > q.max_duplicate_5gram_char_fraction {
            return Some("duplicate_5grams");
        }
    }
    let present: HashSet<String> = words
        .iter()
        .map(|w| w.trim_matches(|c: char| !c.is_alphabetic()).to_lowercase())
        .filter(|w| STOP_WORDS.contains(&w.as_str()))
        .collect();
    if present.len() < q.min_stop_words {
        return Some("stop_words");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random sentences over a small vocabulary with stop words.
    fn prose(n: usize) -> String {
        let words = [
            "the", "river", "runs", "to", "a", "quiet", "town", "and", "people", "walk", "with", "dogs", "along",
            "its", "banks", "under", "old", "trees",
        ];
        let mut r = dsv3c_runtime::init::SplitMix64::new(3);
        let mut s = String::new();
        for i in 0..n {
            s.push_str(words[(r.next_u64() % words.len() as u64) as usize]);
            s.push_str(if i % 12 == 11 { ".\n" } else { " " });
        }
        s.push('.');
        s
    }

    #[test]
    fn junk_fails_and_prose_passes() {
        let q = Quality::default();
        assert_eq!(check(&prose(120), &q), None);
        assert_eq!(check("too short.", &q), Some("too_few_words"));
        assert!(check(&"#$% @@! ^&* ".repeat(40), &q).is_some(), "symbol soup");
        assert!(check(&"#### ~~~ $$$$ ".repeat(40), &q).is_some(), "symbol soup");
        assert_eq!(check(&"Buy cheap pills online now today please.\n".repeat(30), &q), Some("duplicate_lines"));
    }
}
