//! dsv3c as a library: the `model!` macro, and the crates a generated graph runs on.
//!
//! ```ignore
//! mod tiny {
//!     dsv3c::model!("spec/tiny.yaml", batch = 8, seq = 64);
//! }
//! ```

pub use dsv3c_codegen as codegen;
pub use dsv3c_macros::model;
pub use dsv3c_runtime as runtime;
pub use dsv3c_spec as spec;
