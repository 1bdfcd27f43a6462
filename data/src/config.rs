//! The data recipe (`--config data.yaml`): which stages run and their thresholds. Every field
//! has a default; unknown fields are rejected.

use serde::{Deserialize, Serialize};

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
