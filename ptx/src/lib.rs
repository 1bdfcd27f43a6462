//! dsv3c-ptx: a PTX emulator. It loads PTX text as NVRTC writes it (sm_90a), decodes it once, and runs a
//! kernel on the CPU — a grid of blocks in parallel, warps of 32 lanes in lockstep with divergence and
//! reconvergence — with the semantics NVIDIA's PTX ISA gives each instruction. A sanitizer checks every
//! access and barrier (out of bounds, misalignment, shared-memory races, uninitialized reads, deadlock,
//! divergent collectives) and counters record what the kernel did, from which [`estimate`] bounds its
//! time on an H100. It knows nothing of models: only PTX and memory.

pub mod alu;
pub mod counters;
pub mod decode;
pub mod error;
pub mod estimate;
pub mod exec;
pub mod float;
pub mod inst;
pub mod memory;
pub mod parse;
pub mod sanitizer;

use std::collections::HashMap;

pub use counters::Counters;
pub use decode::Kernel;
pub use error::PtxError;
pub use exec::{LaunchConfig, Options, Report};
pub use memory::Global;
pub use sanitizer::{Check, Finding};

/// A kernel argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    U32(u32),
    S32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    /// A device address (a `.u64` parameter).
    Ptr(u64),
}

impl Arg {
    fn bytes(&self) -> Vec<u8> {
        match *self {
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::S32(v) => v.to_le_bytes().to_vec(),
            Arg::U64(v) | Arg::Ptr(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
            Arg::F64(v) => v.to_le_bytes().to_vec(),
        }
    }
}

/// A loaded module: its kernels, decoded, and its constant bank. Module-level `.global` variables live
/// in the [`Global`] memory it was loaded into.
pub struct Module {
    pub target: String,
    pub kernels: Vec<Kernel>,
    pub consts: Vec<u8>,
}

impl Module {
    /// Parses and decodes `ptx`, allocating its `.global` variables in `global`.
    pub fn load(ptx: &str, global: &mut Global) -> Result<Module, PtxError> {
        let m = parse::parse(ptx)?;
        let mut consts = Vec::new();
        let mut const_addr = HashMap::new();
        let mut global_addr = HashMap::new();
        for v in &m.vars {
            match v.space {
                parse::Space::Const => {
                    let a = (consts.len() as u64).div_ceil(v.align.max(1) as u64) * v.align.max(1) as u64;
                    consts.resize(a as usize, 0);
                    match &v.init {
                        Some(b) => consts.extend_from_slice(b),
                        None => consts.resize((a + v.bytes()) as usize, 0),
                    }
                    const_addr.insert(v.name.clone(), a);
                }
                parse::Space::Global => {
                    let a = match &v.init {
                        Some(b) => global.alloc_with(&v.name, b),
                        None => global.alloc(&v.name, v.bytes()),
                    };
                    global_addr.insert(v.name.clone(), a);
                }
                _ => {}
            }
        }
        let syms = decode::Symbols { global: &global_addr, constant: &const_addr };
        let kernels = decode::decode_module(&m, &syms)?;
        Ok(Module { target: m.target, kernels, consts })
    }

    pub fn kernel(&self, name: &str) -> Result<&Kernel, PtxError> {
        self.kernels.iter().find(|k| k.name == name).ok_or_else(|| {
            PtxError::NoKernel(
                name.to_string(),
                self.kernels.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", "),
            )
        })
    }

    /// Runs kernel `name` over `global` with `args` in its parameter order.
    pub fn launch(
        &self,
        name: &str,
        cfg: &LaunchConfig,
        args: &[Arg],
        global: &Global,
        opts: &Options,
    ) -> Result<Report, PtxError> {
        let k = self.kernel(name)?;
        let params = pack_params(k, args)?;
        exec::launch(k, global, &exec::Spaces { consts: &self.consts, params: &params }, cfg, opts)
    }
}

/// Lays out `args` in the kernel's parameter buffer, checking their number and sizes.
pub fn pack_params(k: &Kernel, args: &[Arg]) -> Result<Vec<u8>, PtxError> {
    let bad = |why: String| PtxError::Launch { kernel: k.name.clone(), why };
    if args.len() != k.params.len() {
        return Err(bad(format!("{} arguments given, the kernel takes {}", args.len(), k.params.len())));
    }
    let mut buf = vec![0u8; k.param_bytes as usize];
    for (i, (a, p)) in args.iter().zip(&k.params).enumerate() {
        let b = a.bytes();
        if b.len() != p.bytes as usize {
            return Err(bad(format!(
                "argument {i} ({}) is {} bytes but the parameter `{}` (.{}) takes {}",
                match a {
                    Arg::U32(_) => "u32",
                    Arg::S32(_) => "s32",
                    Arg::U64(_) => "u64",
                    Arg::F32(_) => "f32",
                    Arg::F64(_) => "f64",
                    Arg::Ptr(_) => "pointer",
                },
                b.len(),
                p.name,
                p.ty,
                p.bytes
            )));
        }
        buf[p.offset as usize..p.offset as usize + b.len()].copy_from_slice(&b);
    }
    Ok(buf)
}
