//! dsv3c-runtime: runs a [`Program`] — the contract with codegen — on the CPU through the
//! reference implementation of every [`Op`] (the numerical ground truth), or on a GPU through the
//! [`gpu`] backend over a [`device`]: NVIDIA's driver, or the PTX emulator. Generated CUDA compiles
//! through NVRTC ([`nvrtc`]).

pub mod backend_suite;
pub mod checkpoint;
pub mod comm;
pub mod cpu;
pub mod data;
pub mod device;
pub mod dtype;
pub mod generate;
pub mod gpu;
pub mod init;
pub mod numerics;
pub mod nvrtc;
pub mod op;
pub mod profile;
pub mod program;
pub mod sample;
pub mod signature;
pub mod tolerance;
pub mod train;

pub use dtype::DType;
pub use op::Op;
pub use program::{Launch, Program, Slice, Space};
