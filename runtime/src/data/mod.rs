//! Training data: the token-shard format, tokenizers, the built-in corpus, and the packed,
//! resumable, shardable sequence loader.

pub mod corpus;
pub mod loader;
pub mod shard;
pub mod tokenizer;
