//! One generated `.cu` file: a header comment (the op, the sizes it was specialized for, its launches and
//! the math), the shared prelude, the specialization constants, then the kernel bodies. Rendering is
//! deterministic: the same op always gives the same bytes.

use std::fmt::Write;

use dsv3c_runtime::op::Access;
use dsv3c_runtime::signature::{ArgSig, Role};
use dsv3c_runtime::DType;

/// One `extern "C" __global__` entry point and how it is launched (the Program's payload type: an
/// op's entries run in order, each with the op's arguments).
pub use dsv3c_runtime::program::DeviceEntry as Entry;

/// A specialized CUDA source file with its entry points.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CudaKernel {
    /// File stem: the op and its key sizes (`mla_attention_fwd_h128_d192_v128_t4096_3f0c1a2b`).
    pub stem: String,
    /// The parameter names, in launch order (the op's signature).
    pub args: Vec<String>,
    /// Each parameter's storage dtype, in launch order.
    pub dtypes: Vec<DType>,
    pub entries: Vec<Entry>,
    #[serde(skip)]
    pub source: String,
}

impl From<CudaKernel> for dsv3c_runtime::program::DeviceCode {
    fn from(k: CudaKernel) -> Self {
        dsv3c_runtime::program::DeviceCode { stem: k.stem, source: k.source, entries: k.entries }
    }
}

/// A compile-time constant of a generated file.
#[derive(Debug, Clone)]
pub(crate) enum Const {
    Int(i64),
    Bool(bool),
    Float(f32),
    Floats(Vec<f32>),
}

fn float_literal(v: f32) -> String {
    if v.is_nan() {
        return "__int_as_float(0x7fc00000)".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "__int_as_float(0x7f800000)" } else { "__int_as_float(0xff800000)" }.into();
    }
    let s = format!("{v:?}");
    if s.contains(['.', 'e']) {
        format!("{s}f")
    } else {
        format!("{s}.0f")
    }
}

impl Const {
    fn declaration(&self, name: &str) -> String {
        match self {
            Const::Int(v) if i32::try_from(*v).is_ok() => format!("constexpr int {name} = {v};"),
            Const::Int(v) => format!("constexpr i64 {name} = {v}LL;"),
            Const::Bool(v) => format!("constexpr bool {name} = {v};"),
            Const::Float(v) => format!("constexpr float {name} = {};", float_literal(*v)),
            Const::Floats(v) => {
                let mut s = format!("__constant__ float {name}[{}] = {{", v.len().max(1));
                for (i, x) in v.iter().enumerate() {
                    s.push_str(if i % 6 == 0 { "\n    " } else { " " });
                    s.push_str(&float_literal(*x));
                    s.push(',');
                }
                s.push_str("\n};");
                s
            }
        }
    }
    fn summary(&self) -> Option<String> {
        match self {
            Const::Int(v) => Some(v.to_string()),
            Const::Bool(v) => Some(v.to_string()),
            Const::Float(v) => Some(format!("{v:?}")),
            Const::Floats(_) => None,
        }
    }
}

/// Collects a file's parts; [`Builder::finish`] renders it.
pub(crate) struct Builder {
    stem: String,
    op: String,
    math: Vec<String>,
    consts: Vec<(&'static str, Const)>,
    bodies: Vec<&'static str>,
    entries: Vec<Entry>,
}

pub(crate) const PRELUDE: &str = include_str!("kernels/prelude.cuh");

impl Builder {
    pub fn new(stem: impl Into<String>, op: impl Into<String>) -> Builder {
        Builder {
            stem: stem.into(),
            op: op.into(),
            math: Vec::new(),
            consts: Vec::new(),
            bodies: Vec::new(),
            entries: Vec::new(),
        }
    }
    pub fn math(mut self, line: impl Into<String>) -> Self {
        self.math.push(line.into());
        self
    }
    pub fn int(mut self, name: &'static str, v: usize) -> Self {
        self.consts.push((name, Const::Int(v as i64)));
        self
    }
    pub fn flag(mut self, name: &'static str, v: bool) -> Self {
        self.consts.push((name, Const::Bool(v)));
        self
    }
    pub fn float(mut self, name: &'static str, v: f32) -> Self {
        self.consts.push((name, Const::Float(v)));
        self
    }
    pub fn floats(mut self, name: &'static str, v: Vec<f32>) -> Self {
        self.consts.push((name, Const::Floats(v)));
        self
    }
    pub fn body(mut self, text: &'static str) -> Self {
        self.bodies.push(text);
        self
    }
    pub fn entry(
        mut self,
        name: &'static str,
        grid: [u64; 3],
        block: u32,
        dynamic_smem: u32,
        static_smem: u32,
    ) -> Self {
        self.entries.push(Entry { name: name.into(), grid, block, dynamic_smem, static_smem });
        self
    }

    /// Appends `_{hash of key}` to the file stem: ops of equal headline sizes (other strides, scales or
    /// flags) get distinct, stable file names.
    pub fn hashed(mut self, key: &str) -> Self {
        self.stem = format!("{}_{}", self.stem, short_hash(key));
        self
    }

    /// The file, for a kernel whose parameters are `args` (the op's signature) stored as `dtypes`,
    /// in launch order. Parameter `i` of every entry point has type `Ti*`, typedef'd here to its
    /// storage type.
    pub fn finish(self, args: &[ArgSig], dtypes: &[DType]) -> CudaKernel {
        let mut s = String::new();
        let _ = writeln!(s, "// dsv3c generated kernel {}.cu — do not edit: `dsv3c compile` writes it.", self.stem);
        let _ = writeln!(s, "// op: {}", self.op);
        for m in &self.math {
            let _ = writeln!(s, "//   {m}");
        }
        let sizes: Vec<String> =
            self.consts.iter().filter_map(|(n, c)| c.summary().map(|v| format!("{n}={v}"))).collect();
        let mut line = String::from("// specialized for:");
        for item in sizes {
            if line.len() + item.len() + 1 > 110 {
                let _ = writeln!(s, "{line}");
                line = String::from("//  ");
            }
            line.push(' ');
            line.push_str(&item);
        }
        let _ = writeln!(s, "{line}");
        let marked: Vec<String> = args
            .iter()
            .zip(dtypes)
            .map(|(a, d)| match a.role {
                Role::In => format!("{} {d}", a.name),
                Role::Out(Access::Write) => format!("{} {d} (w)", a.name),
                Role::Out(Access::Accumulate) => format!("{} {d} (+)", a.name),
                Role::Out(Access::InPlace) => format!("{} {d} (rw)", a.name),
            })
            .collect();
        let mut line = String::from("// arguments ((w) overwritten, (+) accumulated, (rw) in place):");
        for item in marked {
            if line.len() + item.len() + 2 > 110 {
                let _ = writeln!(s, "{line}");
                line = String::from("//  ");
            }
            line.push(' ');
            line.push_str(&item);
            line.push(',');
        }
        line.pop();
        let _ = writeln!(s, "{line}");
        let _ = writeln!(s, "// launches, in order:");
        for e in &self.entries {
            let _ = writeln!(
                s,
                "//   {}<<<({}, {}, {}), {}, {}>>>  static smem {} B",
                e.name, e.grid[0], e.grid[1], e.grid[2], e.block, e.dynamic_smem, e.static_smem
            );
        }
        s.push('\n');
        s.push_str(PRELUDE);
        s.push_str("\n// ---- specialization ----\n");
        for (i, (a, d)) in args.iter().zip(dtypes).enumerate() {
            let _ = writeln!(s, "typedef {} T{i};  // {}", d.cuda(), a.name);
        }
        for (n, c) in &self.consts {
            let _ = writeln!(s, "{}", c.declaration(n));
        }
        // Each entry's block size, the one the launch table gives it (`__launch_bounds__`).
        for e in &self.entries {
            let _ = writeln!(s, "constexpr int {}_THREADS = {};", e.name.to_uppercase(), e.block);
        }
        for b in &self.bodies {
            s.push('\n');
            s.push_str(b);
        }
        let args = args.iter().map(|a| a.name.to_string()).collect();
        CudaKernel { stem: self.stem, args, dtypes: dtypes.to_vec(), entries: self.entries, source: s }
    }
}

/// FNV-1a of a string: short, stable file-name suffixes that tell apart ops of equal headline sizes.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}
