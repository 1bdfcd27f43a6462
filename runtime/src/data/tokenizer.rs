//! Tokenizers: GPT-2's byte-level BPE, embedded in the binary (tiktoken's `r50k_base`).

/// A tokenizer by name.
pub enum Tokenizer {
    Gpt2(Box<tiktoken_rs::CoreBPE>),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("unknown tokenizer `{0}`: use gpt2")]
    Unknown(String),
    #[error("cannot load the GPT-2 tokenizer: {0}")]
    Load(String),
}

impl Tokenizer {
    pub fn by_name(name: &str) -> Result<Tokenizer, TokenizerError> {
        match name {
            "gpt2" => Ok(Tokenizer::Gpt2(Box::new(
                tiktoken_rs::r50k_base().map_err(|e| TokenizerError::Load(e.to_string()))?,
            ))),
            other => Err(TokenizerError::Unknown(other.into())),
        }
    }

    /// Number of ids the tokenizer can produce (the model's vocabulary must be at least this).
    pub fn vocab_size(&self) -> u32 {
        match self {
            Tokenizer::Gpt2(_) => 50257,
        }
    }

    /// The end-of-text id that separates documents.
    pub fn eot(&self) -> u32 {
        match self {
            Tokenizer::Gpt2(_) => 50256,
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Gpt2(b) => b.encode_ordinary(text),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Gpt2(b) => b.decode(ids.to_vec()).unwrap_or_default(),
        }
    }
}
