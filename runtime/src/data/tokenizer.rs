//! Tokenizers: GPT-2's byte-level BPE, embedded in the binary (tiktoken's `r50k_base`), and any
//! Hugging Face `tokenizer.json` (through the `tokenizers` crate).

use std::path::Path;

pub enum Tokenizer {
    Gpt2(Box<tiktoken_rs::CoreBPE>),
    /// A Hugging Face tokenizer and its end-of-text id, if it has one.
    HfJson(Box<tokenizers::Tokenizer>, Option<u32>),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("unknown tokenizer `{0}`: use gpt2 or the path of a Hugging Face tokenizer.json")]
    Unknown(String),
    #[error("cannot load tokenizer {name}: {reason}")]
    Load { name: String, reason: String },
}

/// Names of end-of-document tokens in common vocabularies (GPT-2, Llama, DeepSeek).
const EOT_NAMES: [&str; 4] = ["<|endoftext|>", "</s>", "<｜end▁of▁sentence｜>", "<eos>"];

impl Tokenizer {
    /// `gpt2`, or a path ending in `.json` (relative to `base`).
    pub fn by_name(name: &str, base: &Path) -> Result<Tokenizer, TokenizerError> {
        let load = |reason: String| TokenizerError::Load { name: name.into(), reason };
        if name == "gpt2" {
            return Ok(Tokenizer::Gpt2(Box::new(tiktoken_rs::r50k_base().map_err(|e| load(e.to_string()))?)));
        }
        if name.ends_with(".json") {
            let path = base.join(name);
            let load = |reason: String| TokenizerError::Load { name: path.display().to_string(), reason };
            let text = std::fs::read_to_string(&path).map_err(|e| load(e.to_string()))?;
            // The JSON is checked first: the tokenizers crate panics (rather than failing) on some
            // malformed files, e.g. one that ends inside its `decoder`.
            serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| load(format!("not JSON: {e}")))?;
            let parsed = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>())
                .map_err(|_| load("the tokenizers crate could not read it (it panicked)".into()))?;
            let t = parsed.map_err(|e| load(e.to_string()))?;
            let eot = EOT_NAMES.iter().find_map(|n| t.token_to_id(n));
            return Ok(Tokenizer::HfJson(Box::new(t), eot));
        }
        Err(TokenizerError::Unknown(name.into()))
    }

    /// Number of ids the tokenizer can produce (the model's vocabulary must be at least this).
    pub fn vocab_size(&self) -> u32 {
        match self {
            Tokenizer::Gpt2(_) => 50257,
            Tokenizer::HfJson(t, _) => t.get_vocab_size(true) as u32,
        }
    }

    /// The end-of-text id that separates documents, if the vocabulary has one.
    pub fn eot(&self) -> Option<u32> {
        match self {
            Tokenizer::Gpt2(_) => Some(50256),
            Tokenizer::HfJson(_, eot) => *eot,
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Gpt2(b) => b.encode_ordinary(text),
            Tokenizer::HfJson(t, _) => t.encode(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default(),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Gpt2(b) => b.decode(ids.to_vec()).unwrap_or_default(),
            Tokenizer::HfJson(t, _) => t.decode(ids, true).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tokenizers_round_trip_text() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer");
        for name in ["gpt2", "tokenizer.json"] {
            let t = Tokenizer::by_name(name, &fixtures).unwrap();
            let text = "MLA caches a 512-wide latent per token.";
            let ids = t.encode(text);
            assert!(!ids.is_empty() && ids.iter().all(|&i| i < t.vocab_size()));
            assert_eq!(t.decode(&ids), text, "{name}");
            assert!(t.eot().is_some());
        }
        assert!(Tokenizer::by_name("nope", &fixtures).is_err());
        assert!(Tokenizer::by_name("missing.json", &fixtures).is_err());
    }

    /// The ids match Hugging Face's Python `tokenizers` on the same tokenizer.json
    /// (tests/fixtures/tokenizer/make_expected.py).
    #[test]
    fn tokenizer_json_ids_match_the_python_reference() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer");
        let t = Tokenizer::by_name("tokenizer.json", &fixtures).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap()).unwrap();
        assert_eq!(t.vocab_size() as u64, expected["vocab_size"].as_u64().unwrap());
        for case in expected["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(t.encode(text), want, "{text:?}");
        }
    }
}
