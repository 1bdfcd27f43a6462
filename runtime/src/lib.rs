//! dsv3c-runtime: runs a [`Program`] — the contract with codegen — on the CPU through the
//! reference implementation of every [`Op`] (the numerical ground truth), and compiles generated
//! CUDA through NVRTC ([`nvrtc`]). The GPU launcher comes with its own issue.

pub mod backend_suite;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod dtype;
pub mod init;
pub mod numerics;
pub mod nvrtc;
pub mod op;
pub mod program;
pub mod sample;
pub mod signature;
pub mod tolerance;
pub mod train;

pub use dtype::DType;
pub use op::Op;
pub use program::{Launch, Program, Slice, Space};
