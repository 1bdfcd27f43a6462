//! The data recipe (`--config data.yaml`): which stages run and their thresholds. Every field
//! has a default; unknown fields are rejected, and every value is checked against the range the
//! pipeline can run with (so that no recipe can make it divide by zero or allocate without bound).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A data recipe that cannot be used: the file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read data recipe {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data recipe {path}: {reason}")]
    Yaml { path: PathBuf, reason: String },
    #[error("data recipe {path}: `{field}` = {value}: {expected}")]
    Range { path: PathBuf, field: &'static str, value: String, expected: &'static str },
}

/// The most MinHash permutations a recipe may ask for (the band search is quadratic-ish in it).
pub const MAX_PERMUTATIONS: usize = 1024;
/// The most documents one parallel batch may hold (the batch is allocated up front).
pub const MAX_BATCH_DOCUMENTS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Seed of the MinHash permutations and the train/validation split.
    pub seed: u64,
    /// Tokenizer: `gpt2`, or the path of a Hugging Face tokenizer.json.
    pub tokenizer: String,
    /// Share of documents held out for validation (by a hash of the document).
    pub validation_fraction: f64,
    /// Tokens per shard file.
    pub shard_tokens: usize,
    /// Documents processed per parallel batch (bounds memory).
    pub batch_documents: usize,
    /// Fail on the first malformed line or file instead of counting it.
    pub strict: bool,
    pub clean: Clean,
    pub exact_dedup: bool,
    pub near_dedup: NearDedup,
    pub quality: Quality,
    pub language: Language,
}

impl PrepareConfig {
    /// Reads and checks the recipe at `path`.
    pub fn load(path: &Path) -> Result<PrepareConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        if let Some((line, col)) = dsv3c_spec::yaml::too_deep(&text) {
            let reason =
                format!("line {line} column {col}: brackets nested more than {} deep", dsv3c_spec::yaml::MAX_DEPTH);
            return Err(ConfigError::Yaml { path: path.into(), reason });
        }
        let cfg: PrepareConfig =
            serde_yaml::from_str(&text).map_err(|e| ConfigError::Yaml { path: path.into(), reason: e.to_string() })?;
        cfg.check().map_err(|(field, value, expected)| ConfigError::Range {
            path: path.into(),
            field,
            value,
            expected,
        })?;
        Ok(cfg)
    }

    /// The first field outside its range: (field, value, the valid range).
    pub fn check(&self) -> Result<(), (&'static str, String, &'static str)> {
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        let q = &self.quality;
        let checks: [(&'static str, String, bool, &'static str); 17] = [
            (
                "validation_fraction",
                self.validation_fraction.to_string(),
                (0.0..1.0).contains(&self.validation_fraction),
                "a share in [0, 1)",
            ),
            ("shard_tokens", self.shard_tokens.to_string(), self.shard_tokens >= 1, "at least 1"),
            (
                "batch_documents",
                self.batch_documents.to_string(),
                (1..=MAX_BATCH_DOCUMENTS).contains(&self.batch_documents),
                "between 1 and 1048576",
            ),
            (
                "near_dedup.permutations",
                self.near_dedup.permutations.to_string(),
                (1..=MAX_PERMUTATIONS).contains(&self.near_dedup.permutations),
                "between 1 and 1024",
            ),
            (
                "near_dedup.threshold",
                self.near_dedup.threshold.to_string(),
                self.near_dedup.threshold > 0.0 && self.near_dedup.threshold <= 1.0,
                "a similarity in (0, 1]",
            ),
            (
                "near_dedup.shingle_words",
                self.near_dedup.shingle_words.to_string(),
                (1..=64).contains(&self.near_dedup.shingle_words),
                "between 1 and 64",
            ),
            ("quality.max_words", q.max_words.to_string(), q.max_words >= q.min_words, "at least quality.min_words"),
            (
                "quality.min_mean_word_length",
                q.min_mean_word_length.to_string(),
                q.min_mean_word_length >= 0.0 && q.min_mean_word_length <= q.max_mean_word_length,
                "between 0 and quality.max_mean_word_length",
            ),
            (
                "quality.max_mean_word_length",
                q.max_mean_word_length.to_string(),
                !q.max_mean_word_length.is_nan(),
                "a number",
            ),
            (
                "quality.max_symbol_word_ratio",
                q.max_symbol_word_ratio.to_string(),
                q.max_symbol_word_ratio >= 0.0,
                "not negative",
            ),
            (
                "quality.min_alpha_word_fraction",
                q.min_alpha_word_fraction.to_string(),
                unit(q.min_alpha_word_fraction),
                "a share in [0, 1]",
            ),
            (
                "quality.min_punctuated_line_fraction",
                q.min_punctuated_line_fraction.to_string(),
                unit(q.min_punctuated_line_fraction),
                "a share in [0, 1]",
            ),
            (
                "quality.max_duplicate_line_fraction",
                q.max_duplicate_line_fraction.to_string(),
                unit(q.max_duplicate_line_fraction),
                "a share in [0, 1]",
            ),
            (
                "quality.max_duplicate_paragraph_fraction",
                q.max_duplicate_paragraph_fraction.to_string(),
                unit(q.max_duplicate_paragraph_fraction),
                "a share in [0, 1]",
            ),
            (
                "quality.max_top_2gram_char_fraction",
                q.max_top_2gram_char_fraction.to_string(),
                unit(q.max_top_2gram_char_fraction),
                "a share in [0, 1]",
            ),
            (
                "quality.max_duplicate_5gram_char_fraction",
                q.max_duplicate_5gram_char_fraction.to_string(),
                unit(q.max_duplicate_5gram_char_fraction),
                "a share in [0, 1]",
            ),
            (
                "language.min_confidence",
                self.language.min_confidence.to_string(),
                unit(self.language.min_confidence),
                "a confidence in [0, 1]",
            ),
        ];
        match checks.into_iter().find(|c| !c.2) {
            Some((field, value, _, expected)) => Err((field, value, expected)),
            None => Ok(()),
        }
    }
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            seed: 1,
            tokenizer: "gpt2".into(),
            validation_fraction: 0.01,
            shard_tokens: 100_000_000,
            batch_documents: 4096,
            strict: false,
            clean: Clean::default(),
            exact_dedup: true,
            near_dedup: NearDedup::default(),
            quality: Quality::default(),
            language: Language::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Clean {
    pub enabled: bool,
    /// Unicode NFC normalization.
    pub nfc: bool,
    /// Strip HTML tags and decode entities.
    pub html: bool,
}

impl Default for Clean {
    fn default() -> Self {
        Clean { enabled: true, nfc: true, html: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NearDedup {
    pub enabled: bool,
    /// MinHash permutations.
    pub permutations: usize,
    /// Jaccard similarity at or above which a document is a near duplicate of an earlier one.
    pub threshold: f64,
    /// Words per shingle: 3 catches a 1% word edit with ~98% recall at threshold 0.8 while
    /// distinct documents over a shared small vocabulary still share almost no shingles.
    pub shingle_words: usize,
}

impl Default for NearDedup {
    fn default() -> Self {
        NearDedup { enabled: true, permutations: 128, threshold: 0.8, shingle_words: 3 }
    }
}

/// Gopher/C4-style document heuristics. A document failing any enabled rule is filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quality {
    pub enabled: bool,
    pub min_words: usize,
    pub max_words: usize,
    pub min_mean_word_length: f64,
    pub max_mean_word_length: f64,
    /// `#` and `…` per word.
    pub max_symbol_word_ratio: f64,
    /// Share of words with at least one letter.
    pub min_alpha_word_fraction: f64,
    /// Share of (non-empty) lines ending in . ! ? " ' or )
    pub min_punctuated_line_fraction: f64,
    /// Share of lines that repeat an earlier line.
    pub max_duplicate_line_fraction: f64,
    /// Share of paragraphs that repeat an earlier paragraph.
    pub max_duplicate_paragraph_fraction: f64,
    /// Share of characters in the most frequent word 2-gram.
    pub max_top_2gram_char_fraction: f64,
    /// Share of characters in repeated word 5-grams.
    pub max_duplicate_5gram_char_fraction: f64,
    /// Distinct English stop words required.
    pub min_stop_words: usize,
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            enabled: true,
            min_words: 50,
            max_words: 100_000,
            min_mean_word_length: 3.0,
            max_mean_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            min_alpha_word_fraction: 0.8,
            min_punctuated_line_fraction: 0.1,
            max_duplicate_line_fraction: 0.3,
            max_duplicate_paragraph_fraction: 0.3,
            max_top_2gram_char_fraction: 0.2,
            max_duplicate_5gram_char_fraction: 0.15,
            min_stop_words: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Language {
    /// Keep only documents identified (whatlang) as one of `keep`.
    pub enabled: bool,
    /// ISO 639-3 codes, e.g. [eng].
    pub keep: Vec<String>,
    pub min_confidence: f64,
}

impl Default for Language {
    fn default() -> Self {
        Language { enabled: false, keep: vec!["eng".into()], min_confidence: 0.5 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_a_value_out_of_range_is_named() {
        assert_eq!(PrepareConfig::default().check(), Ok(()));
        let dir = std::env::temp_dir().join(format!("dsv3c-data-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("data.yaml");
        for (text, field) in [
            ("batch_documents: 0\n", "batch_documents"),
            ("near_dedup: {permutations: 1000000000}\n", "near_dedup.permutations"),
            ("quality: {min_words: 10, max_words: 5}\n", "quality.max_words"),
            ("language: {min_confidence: .nan}\n", "language.min_confidence"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = PrepareConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains("data.yaml") && e.contains(&format!("`{field}`")), "{text}: {e}");
        }
        std::fs::write(&p, format!("seed: {}", "[".repeat(200))).unwrap();
        assert!(PrepareConfig::load(&p).unwrap_err().to_string().contains("nested more than 128 deep"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
