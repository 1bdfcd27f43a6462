//! dsv3c-macros: the `model!` proc macro, which expands a spec into its training graph at build
//! time (see `shared/DESIGN.md`). Built by the generated-Rust-graph issue; nothing here yet.
