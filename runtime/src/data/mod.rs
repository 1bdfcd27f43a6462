//! Training data: the token-shard format, token batches as JSON, tokenizers, the built-in corpus, and the packed,
//! resumable, shardable sequence loader.

pub mod corpus;
pub mod loader;
pub mod shard;
pub mod token_json;
pub mod tokenizer;
