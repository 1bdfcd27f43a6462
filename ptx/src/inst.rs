//! The decoded instruction: what [`crate::decode`] turns a PTX line into and what the warp executes.
//! Every modifier that changes the result is resolved into the [`Kind`] once, at load time, so execution
//! never looks at text. Registers are indices into a warp's register file (one `u64` per lane each,
//! predicates included, as 0 or 1).

use crate::parse::Space;

/// A source value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Src {
    Reg(u32),
    /// A predicate register, negated (`!%p1`).
    NotReg(u32),
    /// A literal, or an address resolved at load time (variables, parameters).
    Imm(u64),
}

/// Destination register index meaning "discard" (`_`, or an unused half of an unpack).
pub const SINK: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    /// Nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward -inf.
    Rm,
    /// Toward +inf.
    Rp,
    /// Nearest, ties away from zero (`.rna`, cvt only).
    Rna,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntTy {
    pub bits: u8,
    pub signed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    Add {
        sat: bool,
    },
    Sub {
        sat: bool,
    },
    MulLo,
    MulHi,
    MulWide,
    MadLo,
    MadHi,
    MadWide,
    Div,
    Rem,
    Min,
    Max,
    Abs,
    Neg,
    And,
    Or,
    Xor,
    Not,
    Cnot,
    Shl,
    Shr,
    Popc,
    Clz,
    Brev,
    Bfind {
        shift_amount: bool,
    },
    Bfe,
    Bfi,
    Prmt,
    Lop3,
    Shf {
        left: bool,
        clamp: bool,
    },
    /// `c + |a - b|`.
    Sad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FTy {
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FOp {
    Add,
    Sub,
    Mul,
    Fma,
    /// Division: IEEE (`.rn`, `.rz`, ...), `.full` (2 ulp), or `.approx` (`a * (1/b)`).
    Div {
        approx: bool,
        full: bool,
    },
    Min {
        nan: bool,
    },
    Max {
        nan: bool,
    },
    Neg,
    Abs,
    Rcp {
        approx: bool,
    },
    Sqrt {
        approx: bool,
    },
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Copysign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Unordered float comparisons: true when either is NaN.
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// The type a comparison reads its operands as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpTy {
    Int(IntTy),
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

/// A conversion's source or destination format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Num {
    Int(IntTy),
    F16,
    Bf16,
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed {
    Bf16x2,
    F16x2,
    E4m3x2,
    E5m2x2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    Exch,
    Cas,
    And,
    Or,
    Xor,
}

/// What an atomic's operand is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomTy {
    Int(IntTy),
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    Ballot,
    Any,
    All,
    Uni,
}

/// A warp-wide matrix multiply-accumulate, `D = A·B + C` with f32 accumulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmaShape {
    /// m16n8k16, A and B bf16 (row.col).
    M16n8k16Bf16,
    /// m16n8k16, A and B f16 (row.col).
    M16n8k16F16,
    /// m16n8k32, A and B FP8 E4M3 (row.col).
    M16n8k32E4m3,
    /// m16n8k32, A and B FP8 E5M2 (row.col).
    M16n8k32E5m2,
}

impl MmaShape {
    pub fn flops(self) -> u64 {
        match self {
            MmaShape::M16n8k16Bf16 | MmaShape::M16n8k16F16 => 2 * 16 * 8 * 16,
            MmaShape::M16n8k32E4m3 | MmaShape::M16n8k32E5m2 => 2 * 16 * 8 * 32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `d = a` (masked to `bits`).
    Mov {
        bits: u8,
    },
    /// `d = a0 | a1 << bits | ...` (`mov.b64 %rd, {%r1, %r2}`).
    Pack {
        bits: u8,
    },
    /// `d_i = a >> (i·bits)` (`mov.b64 {%r1, %r2}, %rd`).
    Unpack {
        bits: u8,
    },
    Int {
        op: IntOp,
        ty: IntTy,
    },
    Float {
        op: FOp,
        ty: FTy,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
    },
    /// `p = a cmp b` (`bool_op` with a third predicate), `q = !(a cmp b)` likewise.
    Setp {
        cmp: Cmp,
        ty: CmpTy,
        bool_op: Option<BoolOp>,
    },
    /// `d = c ? a : b`.
    Selp {
        bits: u8,
    },
    /// Predicate logic: `and`, `or`, `xor` (two sources) and `not` (one).
    PredLogic {
        op: Option<BoolOp>,
    },
    Cvt {
        dst: Num,
        src: Num,
        rnd: Option<Rnd>,
        int_rnd: Option<Rnd>,
        sat: bool,
        ftz: bool,
        relu: bool,
    },
    /// `cvt.rn{.satfinite}{.relu}.{bf16x2,e4m3x2,...}.f32 d, a, b`: `a` to the upper half, `b` to the lower.
    CvtPack {
        to: Packed,
        satfinite: bool,
        relu: bool,
    },
    /// `cvt.rn.{f16x2,bf16x2}.{e4m3x2,e5m2x2} d, a`: the upper byte of `a` to the upper half of `d`.
    CvtUnpack {
        from: Packed,
        to: Packed,
    },
    /// `cvta.space` (to generic) or `cvta.to.space` (from generic).
    Cvta {
        to_generic: bool,
        space: Space,
    },
    Ld {
        space: Space,
        bytes: u8,
        vec: u8,
        sext: u8,
    },
    St {
        space: Space,
        bytes: u8,
        vec: u8,
    },
    Atom {
        space: Space,
        op: AtomOp,
        ty: AtomTy,
        returns: bool,
    },
    Bra {
        target: u32,
        uni: bool,
    },
    Ret,
    Exit,
    /// `bar.sync` / `barrier.sync{.aligned}` (`a0` the barrier, `a1` the thread count if given).
    Bar {
        aligned: bool,
        arrive: bool,
    },
    /// `bar.warp.sync membermask`.
    BarWarp,
    /// `membar` / `fence`: memory ordering (a no-op: the emulator's memory is sequentially consistent).
    Fence,
    Shfl {
        mode: ShflMode,
    },
    Vote {
        mode: VoteMode,
    },
    Activemask,
    Mma {
        shape: MmaShape,
    },
}

/// What a warp instruction counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Int,
    Fp32,
    Fp64,
    /// The special function unit: ex2, lg2, rcp, rsqrt, sqrt, sin, cos, tanh.
    Sfu,
    Convert,
    Move,
    Predicate,
    LoadGlobal,
    StoreGlobal,
    LoadShared,
    StoreShared,
    Local,
    Param,
    Atomic,
    Control,
    Barrier,
    Warp,
    Tensor,
}

pub const CLASSES: [Class; 18] = [
    Class::Int,
    Class::Fp32,
    Class::Fp64,
    Class::Sfu,
    Class::Convert,
    Class::Move,
    Class::Predicate,
    Class::LoadGlobal,
    Class::StoreGlobal,
    Class::LoadShared,
    Class::StoreShared,
    Class::Local,
    Class::Param,
    Class::Atomic,
    Class::Control,
    Class::Barrier,
    Class::Warp,
    Class::Tensor,
];

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Int => "int",
            Class::Fp32 => "fp32",
            Class::Fp64 => "fp64",
            Class::Sfu => "sfu",
            Class::Convert => "convert",
            Class::Move => "move",
            Class::Predicate => "predicate",
            Class::LoadGlobal => "ld.global",
            Class::StoreGlobal => "st.global",
            Class::LoadShared => "ld.shared",
            Class::StoreShared => "st.shared",
            Class::Local => "local",
            Class::Param => "param",
            Class::Atomic => "atomic",
            Class::Control => "control",
            Class::Barrier => "barrier",
            Class::Warp => "warp",
            Class::Tensor => "tensor",
        }
    }
    pub fn index(self) -> usize {
        CLASSES.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// One decoded instruction.
#[derive(Debug, Clone)]
pub struct Inst {
    pub kind: Kind,
    /// `(predicate register, negated)`.
    pub guard: Option<(u32, bool)>,
    pub dst: Vec<u32>,
    pub src: Vec<Src>,
    /// Constant byte offset of a memory operand (`[%rd1+16]`), the address being `src[0]` plus it.
    pub offset: i64,
    pub class: Class,
    pub line: u32,
}
