//! The emulator's errors: malformed or unsupported PTX (with its line), bad launches, and execution
//! errors. Sanitizer findings are not errors: they are collected in a launch's report.

/// Why PTX could not be loaded or a kernel could not run.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PtxError {
    #[error("PTX line {line}: {why}")]
    Parse { line: u32, why: String },
    #[error("PTX line {line}: unsupported instruction `{inst}`: {why}")]
    Unsupported { line: u32, inst: String, why: String },
    #[error("PTX line {line}: `{inst}`: {why}")]
    Decode { line: u32, inst: String, why: String },
    #[error("no kernel named `{0}` in the module (kernels: {1})")]
    NoKernel(String, String),
    #[error("launch of {kernel}: {why}")]
    Launch { kernel: String, why: String },
    #[error("{kernel}, block ({bx},{by},{bz}), thread ({tx},{ty},{tz}), PTX line {line}: {why}")]
    Exec { kernel: String, bx: u32, by: u32, bz: u32, tx: u32, ty: u32, tz: u32, line: u32, why: String },
}
