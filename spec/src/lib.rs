//! dsv3c-spec: the spec language of DeepSeek-V3-family models.
//!
//! A spec is a YAML file ([`types::Spec`]) that [`load`] parses with located errors and
//! validates ([`validate`]). From a valid spec this crate derives the numbers a practitioner
//! plans with: parameter counts ([`params`]), FLOPs ([`flops`]), KV cache ([`kv_cache`]), memory
//! per GPU for a parallel layout ([`memory`]), the Chinchilla check ([`chinchilla`]) and a config
//! selector ([`select`]). [`hf`] maps Hugging Face `config.json` to specs and back; the
//! canonical specs ([`canonical`]) live next to the crate.

pub mod canonical;
pub mod chinchilla;
pub mod config;
pub mod error;
pub mod flops;
pub mod hf;
pub mod inspect;
pub mod kv_cache;
pub mod locate;
pub mod memory;
pub mod params;
mod parse;
pub mod select;
pub mod types;
pub mod validate;
pub mod yaml;

pub use error::{Problem, ProblemKind, SpecError};
pub use parse::{load, parse, parse_unvalidated};
pub use types::Spec;
pub use validate::Rule;
