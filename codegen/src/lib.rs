//! dsv3c-codegen: spec -> Program. The forward graph of fused ops, its backward, the static
//! memory plan, and the CUDA and Rust back ends (see `shared/DESIGN.md`). Built by the
//! reference-model and CUDA-codegen issues; nothing here yet.
