//! A parsed function -> a [`Kernel`]: registers numbered, labels resolved to instruction indices, variable
//! and parameter names resolved to addresses, and every instruction's modifiers resolved into its
//! [`Kind`]. An instruction or modifier the emulator does not implement is an error naming it and its
//! line — never skipped.

use std::collections::HashMap;

use crate::error::PtxError;
use crate::inst::*;
use crate::parse::{type_bytes, Function, Module, Operand, RawInst, Space, Stmt, Var};

/// Special registers, held in the first registers of every warp's register file.
pub const SPECIALS: [&str; 25] = [
    "%tid.x",
    "%tid.y",
    "%tid.z",
    "%ntid.x",
    "%ntid.y",
    "%ntid.z",
    "%ctaid.x",
    "%ctaid.y",
    "%ctaid.z",
    "%nctaid.x",
    "%nctaid.y",
    "%nctaid.z",
    "%laneid",
    "%warpid",
    "%nwarpid",
    "%smid",
    "%nsmid",
    "%lanemask_eq",
    "%lanemask_le",
    "%lanemask_lt",
    "%lanemask_ge",
    "%lanemask_gt",
    "%dynamic_smem_size",
    "%total_smem_size",
    "%gridid",
];

/// A kernel parameter's place in the parameter buffer.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub offset: u32,
    pub bytes: u32,
    /// Its PTX type (`u64`, `f32`, `b8` for byte arrays).
    pub ty: String,
}

/// A kernel ready to run.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub name: String,
    pub insts: Vec<Inst>,
    pub reg_names: Vec<String>,
    pub params: Vec<Param>,
    pub param_bytes: u32,
    /// Static shared memory (module and function variables), bytes.
    pub static_smem: u32,
    /// Where dynamic shared memory starts.
    pub dynamic_smem_base: u32,
    /// Local memory per thread, bytes.
    pub local_bytes: u32,
    pub max_threads: Option<[u32; 3]>,
}

impl Kernel {
    pub fn nregs(&self) -> usize {
        self.reg_names.len()
    }
}

/// Addresses of module-level variables, in their own state spaces.
pub struct Symbols<'a> {
    pub global: &'a HashMap<String, u64>,
    pub constant: &'a HashMap<String, u64>,
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a.max(1)) * a.max(1)
}

struct RegScope {
    singles: HashMap<String, u32>,
    ranges: Vec<(String, u32, u32)>, // prefix, count, first index
}

struct Ctx<'a> {
    scopes: Vec<RegScope>,
    names: Vec<String>,
    bits: Vec<u8>,
    labels: HashMap<String, u32>,
    /// Variable name -> address in its space (shared offset, local offset, param offset, const / global).
    vars: HashMap<String, u64>,
    params: HashMap<String, u64>,
    syms: &'a Symbols<'a>,
}

impl Ctx<'_> {
    fn declare(&mut self, name: &str, count: Option<u32>, bits: u8) {
        let first = self.names.len() as u32;
        let scope = self.scopes.last_mut().expect("a scope is open");
        match count {
            Some(n) => {
                scope.ranges.push((name.to_string(), n, first));
                for i in 0..n {
                    self.names.push(format!("{name}{i}"));
                    self.bits.push(bits);
                }
            }
            None => {
                scope.singles.insert(name.to_string(), first);
                self.names.push(name.to_string());
                self.bits.push(bits);
            }
        }
    }

    fn reg(&self, name: &str) -> Option<u32> {
        if let Some(i) = SPECIALS.iter().position(|s| *s == name) {
            return Some(i as u32);
        }
        let split = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let num: Option<u32> = name[split.len()..].parse().ok();
        for s in self.scopes.iter().rev() {
            if let Some(&i) = s.singles.get(name) {
                return Some(i);
            }
            if let Some(n) = num {
                for (p, count, first) in s.ranges.iter().rev() {
                    if p == split && n < *count {
                        return Some(first + n);
                    }
                }
            }
        }
        None
    }
}

/// Decodes every kernel (`.entry`) of a module.
pub fn decode_module(m: &Module, syms: &Symbols) -> Result<Vec<Kernel>, PtxError> {
    if let Some(f) = m.functions.iter().find(|f| !f.entry) {
        // Device functions are inlined by NVRTC for every kernel this project writes; calls are not
        // implemented.
        if m.functions.iter().any(|g| g.body.iter().any(|s| matches!(s, Stmt::Inst(i) if i.opcode[0] == "call"))) {
            return Err(PtxError::Unsupported {
                line: f.line,
                inst: "call".into(),
                why: format!("calls to device functions (`.func {}`) are not implemented", f.name),
            });
        }
    }
    let module_shared: Vec<&Var> = m.vars.iter().filter(|v| v.space == Space::Shared).collect();
    m.functions.iter().filter(|f| f.entry).map(|f| decode_function(f, &module_shared, syms)).collect()
}

fn decode_function(f: &Function, module_shared: &[&Var], syms: &Symbols) -> Result<Kernel, PtxError> {
    let mut ctx = Ctx {
        scopes: vec![RegScope { singles: HashMap::new(), ranges: Vec::new() }],
        names: SPECIALS.iter().map(|s| s.to_string()).collect(),
        bits: vec![32; SPECIALS.len()],
        labels: HashMap::new(),
        vars: HashMap::new(),
        params: HashMap::new(),
        syms,
    };
    // Parameters.
    let mut params = Vec::new();
    let mut off = 0u64;
    for p in &f.params {
        off = align_up(off, p.align as u64);
        ctx.params.insert(p.name.clone(), off);
        params.push(Param { name: p.name.clone(), offset: off as u32, bytes: p.bytes() as u32, ty: p.ty.clone() });
        off += p.bytes();
    }
    let param_bytes = off as u32;
    // Shared and local variables.
    let mut smem = 0u64;
    let mut dynamic = Vec::new();
    let mut local = 0u64;
    let body_vars: Vec<&Var> =
        f.body.iter().filter_map(|s| if let Stmt::Var(v) = s { Some(v) } else { None }).collect();
    for v in module_shared.iter().copied().chain(body_vars.iter().copied()) {
        match v.space {
            Space::Shared if v.count == 0 => dynamic.push(v),
            Space::Shared => {
                smem = align_up(smem, v.align as u64);
                ctx.vars.insert(v.name.clone(), smem);
                smem += v.bytes();
            }
            _ => {
                local = align_up(local, v.align as u64);
                ctx.vars.insert(v.name.clone(), local);
                local += v.bytes();
            }
        }
    }
    let dyn_align = dynamic.iter().map(|v| v.align as u64).max().unwrap_or(16).max(16);
    let dynamic_base = align_up(smem, dyn_align);
    for v in dynamic {
        ctx.vars.insert(v.name.clone(), dynamic_base);
    }
    // Labels: the index of the next instruction.
    let mut pc = 0u32;
    for s in &f.body {
        match s {
            Stmt::Label { name, .. } => {
                ctx.labels.insert(name.clone(), pc);
            }
            Stmt::Inst(_) => pc += 1,
            _ => {}
        }
    }
    let mut insts = Vec::with_capacity(pc as usize);
    for s in &f.body {
        match s {
            Stmt::Reg { ty, names, line } => {
                let bits = match ty.as_str() {
                    "pred" => 1,
                    t => {
                        (type_bytes(t).ok_or(PtxError::Parse { line: *line, why: format!("register type .{t}") })? * 8)
                            as u8
                    }
                };
                for (n, c) in names {
                    ctx.declare(n, *c, bits);
                }
            }
            Stmt::Open => ctx.scopes.push(RegScope { singles: HashMap::new(), ranges: Vec::new() }),
            Stmt::Close => {
                ctx.scopes.pop();
            }
            Stmt::Inst(i) => insts.push(decode_inst(i, &ctx)?),
            Stmt::Var(_) | Stmt::Label { .. } => {}
        }
    }
    Ok(Kernel {
        name: f.name.clone(),
        insts,
        reg_names: ctx.names,
        params,
        param_bytes,
        static_smem: smem as u32,
        dynamic_smem_base: dynamic_base as u32,
        local_bytes: local as u32,
        max_threads: f.max_threads,
    })
}

fn int_ty(t: &str) -> Option<IntTy> {
    let (signed, bits) = match t {
        "s8" => (true, 8),
        "s16" => (true, 16),
        "s32" => (true, 32),
        "s64" => (true, 64),
        "u8" | "b8" => (false, 8),
        "u16" | "b16" => (false, 16),
        "u32" | "b32" => (false, 32),
        "u64" | "b64" => (false, 64),
        _ => return None,
    };
    Some(IntTy { bits, signed })
}

fn is_type(t: &str) -> bool {
    type_bytes(t).is_some()
}

struct D<'a> {
    raw: &'a RawInst,
    ctx: &'a Ctx<'a>,
    mods: Vec<&'a str>,
}

impl<'a> D<'a> {
    fn err<T>(&self, why: impl Into<String>) -> Result<T, PtxError> {
        Err(PtxError::Decode { line: self.raw.line, inst: self.raw.text(), why: why.into() })
    }
    fn unsupported<T>(&self, why: impl Into<String>) -> Result<T, PtxError> {
        Err(PtxError::Unsupported { line: self.raw.line, inst: self.raw.text(), why: why.into() })
    }
    fn has(&self, m: &str) -> bool {
        self.mods.contains(&m)
    }
    fn types(&self) -> Vec<&'a str> {
        self.mods.iter().copied().filter(|m| is_type(m)).collect()
    }
    fn last_type(&self) -> Result<&'a str, PtxError> {
        match self.types().last() {
            Some(t) => Ok(t),
            None => self.err("no operand type"),
        }
    }
    fn rnd(&self) -> Option<Rnd> {
        for m in &self.mods {
            let r = match *m {
                "rn" | "rni" => Rnd::Rn,
                "rz" | "rzi" => Rnd::Rz,
                "rm" | "rmi" => Rnd::Rm,
                "rp" | "rpi" => Rnd::Rp,
                "rna" => Rnd::Rna,
                _ => continue,
            };
            return Some(r);
        }
        None
    }
    fn ops(&self) -> &'a [Operand] {
        &self.raw.operands
    }
    fn nops(&self, n: usize) -> Result<(), PtxError> {
        if self.ops().len() != n {
            return self.err(format!("expected {n} operands, found {}", self.ops().len()));
        }
        Ok(())
    }
    fn reg(&self, name: &str) -> Result<u32, PtxError> {
        match self.ctx.reg(name) {
            Some(r) => Ok(r),
            None if name.starts_with('%') => {
                if name.starts_with("%clock") || name.starts_with("%globaltimer") || name.starts_with("%pm") {
                    self.unsupported(format!("special register {name} (time is not emulated)"))
                } else {
                    self.err(format!("undeclared register {name}"))
                }
            }
            None => self.err(format!("{name} is not a register")),
        }
    }
    fn dst(&self, o: &Operand) -> Result<u32, PtxError> {
        match o {
            Operand::Name(n) => self.reg(n),
            Operand::Sink => Ok(SINK),
            _ => self.err(format!("bad destination {o:?}")),
        }
    }
    /// A source: register, literal, or the address of a variable / parameter.
    fn src(&self, o: &Operand) -> Result<Src, PtxError> {
        Ok(match o {
            Operand::Int(v) => Src::Imm(*v as u64),
            Operand::F32(b) => Src::Imm(*b as u64),
            Operand::F64(b) => Src::Imm(*b),
            Operand::Not(n) => Src::NotReg(self.reg(n)?),
            Operand::Name(n) => {
                if let Some(r) = self.ctx.reg(n) {
                    Src::Reg(r)
                } else if let Some(a) = self.symbol(n) {
                    Src::Imm(a)
                } else {
                    return self.reg(n).map(Src::Reg);
                }
            }
            _ => return self.err(format!("bad source operand {o:?}")),
        })
    }
    fn symbol(&self, n: &str) -> Option<u64> {
        self.ctx
            .vars
            .get(n)
            .or_else(|| self.ctx.params.get(n))
            .or_else(|| self.ctx.syms.constant.get(n))
            .or_else(|| self.ctx.syms.global.get(n))
            .copied()
    }
    /// A memory operand: `(base, offset)`.
    fn addr(&self, o: &Operand) -> Result<(Src, i64), PtxError> {
        match o {
            Operand::Addr { base: None, offset } => Ok((Src::Imm(0), *offset)),
            Operand::Addr { base: Some(b), offset } => {
                if let Some(r) = self.ctx.reg(b) {
                    Ok((Src::Reg(r), *offset))
                } else if let Some(a) = self.symbol(b) {
                    Ok((Src::Imm(a), *offset))
                } else {
                    self.err(format!("unknown name {b} in an address"))
                }
            }
            _ => self.err(format!("expected a memory operand, found {o:?}")),
        }
    }
    fn inst(&self, kind: Kind, class: Class, dst: Vec<u32>, src: Vec<Src>) -> Result<Inst, PtxError> {
        let guard = match &self.raw.guard {
            Some((p, neg)) => Some((self.reg(p)?, *neg)),
            None => None,
        };
        Ok(Inst { kind, guard, dst, src, offset: 0, class, line: self.raw.line })
    }
    fn space(&self) -> Space {
        self.mods.iter().find_map(|m| Space::parse(m)).unwrap_or(Space::Generic)
    }
}

fn float_ty(t: &str) -> Option<FTy> {
    match t {
        "f32" => Some(FTy::F32),
        "f64" => Some(FTy::F64),
        _ => None,
    }
}

fn decode_inst(raw: &RawInst, ctx: &Ctx) -> Result<Inst, PtxError> {
    let base = raw.opcode[0].as_str();
    let d = D { raw, ctx, mods: raw.opcode[1..].iter().map(String::as_str).collect() };
    let ops = d.ops();
    match base {
        "mov" => {
            d.nops(2)?;
            let t = d.last_type()?;
            let bits = if t == "pred" { 1 } else { (type_bytes(t).unwrap_or(4) * 8) as u8 };
            match (&ops[0], &ops[1]) {
                (Operand::Vector(parts), _) => {
                    let dst = parts.iter().map(|p| d.dst(p)).collect::<Result<_, _>>()?;
                    let src = vec![d.src(&ops[1])?];
                    d.inst(Kind::Unpack { bits: bits / parts.len() as u8 }, Class::Move, dst, src)
                }
                (_, Operand::Vector(parts)) => {
                    let src = parts.iter().map(|p| d.src(p)).collect::<Result<_, _>>()?;
                    d.inst(Kind::Pack { bits: bits / parts.len() as u8 }, Class::Move, vec![d.dst(&ops[0])?], src)
                }
                _ => d.inst(Kind::Mov { bits }, Class::Move, vec![d.dst(&ops[0])?], vec![d.src(&ops[1])?]),
            }
        }
        "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "abs" | "neg" | "and" | "or"
        | "xor" | "not" | "cnot" | "shl" | "shr" | "popc" | "clz" | "brev" | "bfind" | "bfe" | "bfi" | "prmt"
        | "lop3" | "shf" | "sad" | "copysign" | "rcp" | "sqrt" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => {
            arith(&d, base)
        }
        "setp" => {
            let t = d.last_type()?;
            let cmp = match d.mods.first().copied() {
                Some("eq") => Cmp::Eq,
                Some("ne") => Cmp::Ne,
                Some("lt") | Some("lo") => Cmp::Lt,
                Some("le") | Some("ls") => Cmp::Le,
                Some("gt") | Some("hi") => Cmp::Gt,
                Some("ge") | Some("hs") => Cmp::Ge,
                Some("equ") => Cmp::Equ,
                Some("neu") => Cmp::Neu,
                Some("ltu") => Cmp::Ltu,
                Some("leu") => Cmp::Leu,
                Some("gtu") => Cmp::Gtu,
                Some("geu") => Cmp::Geu,
                Some("num") => Cmp::Num,
                Some("nan") => Cmp::Nan,
                m => return d.err(format!("unknown comparison {m:?}")),
            };
            let ty = match t {
                "f32" => CmpTy::F32,
                "f64" => CmpTy::F64,
                t => match int_ty(t) {
                    Some(i) => CmpTy::Int(i),
                    None => return d.unsupported(format!("comparison of .{t}")),
                },
            };
            let bool_op = if d.has("and") {
                Some(BoolOp::And)
            } else if d.has("or") {
                Some(BoolOp::Or)
            } else if d.has("xor") {
                Some(BoolOp::Xor)
            } else {
                None
            };
            if d.has("ftz") && ty != CmpTy::F32 {
                return d.err(".ftz on a non-f32 comparison");
            }
            let dst = match &ops[0] {
                Operand::Pair(p, q) => vec![d.dst(p)?, d.dst(q)?],
                o => vec![d.dst(o)?, SINK],
            };
            let n = if bool_op.is_some() { 4 } else { 3 };
            d.nops(n)?;
            let src = ops[1..].iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
            let kind = Kind::Setp { cmp, ty, bool_op };
            let mut i = d.inst(kind, Class::Predicate, dst, src)?;
            // `.ftz` flushes f32 subnormal inputs; record it in the class-independent way: the comparison
            // of flushed values. Handled by storing the flag in the offset slot (1 = ftz).
            i.offset = d.has("ftz") as i64;
            Ok(i)
        }
        "selp" => {
            d.nops(4)?;
            let bits = (type_bytes(d.last_type()?).unwrap_or(4) * 8) as u8;
            let src = ops[1..].iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
            d.inst(Kind::Selp { bits }, Class::Move, vec![d.dst(&ops[0])?], src)
        }
        "cvt" => cvt(&d),
        "cvta" => {
            d.nops(2)?;
            let to_generic = !d.has("to");
            let space = d.space();
            if matches!(space, Space::Generic) {
                return d.err("cvta needs a state space");
            }
            d.inst(Kind::Cvta { to_generic, space }, Class::Move, vec![d.dst(&ops[0])?], vec![d.src(&ops[1])?])
        }
        "ld" | "ldu" | "st" => {
            d.nops(2)?;
            if d.mods.iter().any(|m| m.starts_with("shared::cluster")) {
                return d.unsupported("cluster shared memory");
            }
            let space = d.space();
            let t = d.last_type()?;
            let bytes = type_bytes(t).unwrap_or(4) as u8;
            let vec = if d.has("v4") {
                4
            } else if d.has("v2") {
                2
            } else if d.has("v8") {
                8
            } else {
                1
            };
            let class = match (base, space) {
                (_, Space::Param) => Class::Param,
                (_, Space::Local) => Class::Local,
                ("st", Space::Shared) => Class::StoreShared,
                (_, Space::Shared) => Class::LoadShared,
                ("st", _) => Class::StoreGlobal,
                _ => Class::LoadGlobal,
            };
            let regs = |o: &Operand| -> Result<Vec<Operand>, PtxError> {
                Ok(match o {
                    Operand::Vector(v) => v.clone(),
                    o => vec![o.clone()],
                })
            };
            if base == "st" {
                let (a, off) = d.addr(&ops[0])?;
                let vals = regs(&ops[1])?;
                if vals.len() != vec as usize {
                    return d.err("vector width and operand count differ");
                }
                let mut src = vec![a];
                for v in &vals {
                    src.push(d.src(v)?);
                }
                let mut i = d.inst(Kind::St { space, bytes, vec }, class, vec![], src)?;
                i.offset = off;
                Ok(i)
            } else {
                let (a, off) = d.addr(&ops[1])?;
                let outs = regs(&ops[0])?;
                if outs.len() != vec as usize {
                    return d.err("vector width and operand count differ");
                }
                let dst: Vec<u32> = outs.iter().map(|o| d.dst(o)).collect::<Result<_, _>>()?;
                let signed = t.starts_with('s');
                let sext = if signed {
                    dst.first().map(|&r| if r == SINK { 0 } else { ctx.bits[r as usize] }).unwrap_or(0)
                } else {
                    0
                };
                let mut i = d.inst(Kind::Ld { space, bytes, vec, sext }, class, dst, vec![a])?;
                i.offset = off;
                Ok(i)
            }
        }
        "atom" | "red" => {
            let space = d.space();
            let t = d.last_type()?;
            let op = match d.mods.iter().find_map(|m| {
                Some(match *m {
                    "add" => AtomOp::Add,
                    "min" => AtomOp::Min,
                    "max" => AtomOp::Max,
                    "inc" => AtomOp::Inc,
                    "dec" => AtomOp::Dec,
                    "exch" => AtomOp::Exch,
                    "cas" => AtomOp::Cas,
                    "and" => AtomOp::And,
                    "or" => AtomOp::Or,
                    "xor" => AtomOp::Xor,
                    _ => return None,
                })
            }) {
                Some(o) => o,
                None => return d.err("no atomic operation"),
            };
            let ty = match t {
                "f32" => AtomTy::F32,
                "f64" => AtomTy::F64,
                t => match int_ty(t) {
                    Some(i) if i.bits >= 32 => AtomTy::Int(i),
                    _ => return d.unsupported(format!("atomics on .{t}")),
                },
            };
            if d.mods.iter().any(|m| m.starts_with('v') && m.len() == 2) {
                return d.unsupported("vector atomics");
            }
            let returns = base == "atom";
            let (dst, rest) = if returns { (vec![d.dst(&ops[0])?], &ops[1..]) } else { (vec![], ops) };
            let (a, off) = d.addr(&rest[0])?;
            let mut src = vec![a];
            for o in &rest[1..] {
                src.push(d.src(o)?);
            }
            let need = if op == AtomOp::Cas { 3 } else { 2 };
            if src.len() != need {
                return d.err(format!("expected {need} operands after the destination"));
            }
            let mut i = d.inst(Kind::Atom { space, op, ty, returns }, Class::Atomic, dst, src)?;
            i.offset = off;
            Ok(i)
        }
        "bra" => {
            d.nops(1)?;
            let target = match &ops[0] {
                Operand::Name(l) => match ctx.labels.get(l) {
                    Some(&t) => t,
                    None => return d.err(format!("unknown label {l}")),
                },
                o => return d.unsupported(format!("indirect branch to {o:?}")),
            };
            d.inst(Kind::Bra { target, uni: d.has("uni") }, Class::Control, vec![], vec![])
        }
        "ret" => d.inst(Kind::Ret, Class::Control, vec![], vec![]),
        "exit" => d.inst(Kind::Exit, Class::Control, vec![], vec![]),
        "bar" | "barrier" => {
            if d.has("warp") {
                d.nops(1)?;
                return d.inst(Kind::BarWarp, Class::Barrier, vec![], vec![d.src(&ops[0])?]);
            }
            if d.has("red") {
                return d.unsupported("bar.red");
            }
            let arrive = d.has("arrive");
            if !(d.has("sync") || arrive) && base == "bar" && !d.mods.is_empty() {
                return d.unsupported("this barrier form");
            }
            let aligned = base == "bar" || d.has("aligned");
            if ops.is_empty() || ops.len() > 2 {
                return d.err("expected a barrier id and an optional thread count");
            }
            let src = ops.iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
            d.inst(Kind::Bar { aligned, arrive }, Class::Barrier, vec![], src)
        }
        "membar" | "fence" => {
            if d.mods.iter().any(|m| m.starts_with("proxy") || *m == "mbarrier_init") {
                return d.unsupported("proxy fences (TMA and wgmma are not emulated)");
            }
            d.inst(Kind::Fence, Class::Barrier, vec![], vec![])
        }
        "nanosleep" => d.inst(Kind::Fence, Class::Control, vec![], vec![]),
        "shfl" => {
            if !d.has("sync") {
                return d.unsupported("shfl without .sync (removed for sm_70 and later)");
            }
            let mode = if d.has("up") {
                ShflMode::Up
            } else if d.has("down") {
                ShflMode::Down
            } else if d.has("bfly") {
                ShflMode::Bfly
            } else if d.has("idx") {
                ShflMode::Idx
            } else {
                return d.err("no shuffle mode");
            };
            d.nops(5)?;
            let dst = match &ops[0] {
                Operand::Pair(a, p) => vec![d.dst(a)?, d.dst(p)?],
                o => vec![d.dst(o)?, SINK],
            };
            let src = ops[1..].iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
            d.inst(Kind::Shfl { mode }, Class::Warp, dst, src)
        }
        "vote" => {
            if !d.has("sync") {
                return d.unsupported("vote without .sync (removed for sm_70 and later)");
            }
            let mode = if d.has("ballot") {
                VoteMode::Ballot
            } else if d.has("any") {
                VoteMode::Any
            } else if d.has("all") {
                VoteMode::All
            } else if d.has("uni") {
                VoteMode::Uni
            } else {
                return d.err("no vote mode");
            };
            d.nops(3)?;
            let src = ops[1..].iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
            d.inst(Kind::Vote { mode }, Class::Warp, vec![d.dst(&ops[0])?], src)
        }
        "activemask" => {
            d.nops(1)?;
            d.inst(Kind::Activemask, Class::Warp, vec![d.dst(&ops[0])?], vec![])
        }
        "mma" => {
            // The last four modifiers are the D, A, B and C types (`.f32.e4m3.e4m3.f32`).
            let tys: Vec<&str> = d.mods.iter().rev().take(4).rev().copied().collect();
            let shape = match (d.mods.iter().find(|m| m.starts_with('m')).copied(), tys.as_slice()) {
                (Some("m16n8k16"), ["f32", "bf16", "bf16", "f32"]) => MmaShape::M16n8k16Bf16,
                (Some("m16n8k16"), ["f32", "f16", "f16", "f32"]) => MmaShape::M16n8k16F16,
                (Some("m16n8k32"), ["f32", "e4m3", "e4m3", "f32"]) => MmaShape::M16n8k32E4m3,
                (Some("m16n8k32"), ["f32", "e5m2", "e5m2", "f32"]) => MmaShape::M16n8k32E5m2,
                _ => {
                    return d.unsupported(
                        "this mma shape and type (implemented: m16n8k16 bf16/f16 and m16n8k32 e4m3/e5m2 into f32)",
                    )
                }
            };
            if !(d.has("row") && d.has("col") && d.has("sync") && d.has("aligned")) {
                return d.unsupported("mma layouts other than .sync.aligned.row.col");
            }
            d.nops(4)?;
            let vec_of = |o: &Operand, n: usize| -> Result<Vec<Operand>, PtxError> {
                match o {
                    Operand::Vector(v) if v.len() == n => Ok(v.clone()),
                    _ => d.err(format!("expected a vector of {n} registers")),
                }
            };
            let dst = vec_of(&ops[0], 4)?.iter().map(|o| d.dst(o)).collect::<Result<_, _>>()?;
            let mut src = Vec::new();
            for (o, n) in [(&ops[1], 4), (&ops[2], 2), (&ops[3], 4)] {
                for r in vec_of(o, n)? {
                    src.push(d.src(&r)?);
                }
            }
            d.inst(Kind::Mma { shape }, Class::Tensor, dst, src)
        }
        "trap" | "brkpt" => d.unsupported("trap (the kernel asked to abort)"),
        _ => d.unsupported("not implemented by the emulator"),
    }
}

fn arith(d: &D, base: &str) -> Result<Inst, PtxError> {
    let ops = d.ops();
    let t = d.last_type()?;
    if t == "pred" {
        let op = match base {
            "and" => Some(BoolOp::And),
            "or" => Some(BoolOp::Or),
            "xor" => Some(BoolOp::Xor),
            "not" => None,
            _ => return d.unsupported("this operation on predicates"),
        };
        d.nops(if op.is_some() { 3 } else { 2 })?;
        let src = ops[1..].iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
        return d.inst(Kind::PredLogic { op }, Class::Predicate, vec![d.dst(&ops[0])?], src);
    }
    let dst = vec![d.dst(&ops[0])?];
    let src: Vec<Src> = ops[1..].iter().map(|o| d.src(o)).collect::<Result<_, _>>()?;
    let want = |n: usize| d.nops(n + 1);
    if let Some(fty) = float_ty(t) {
        let op = match base {
            "add" => FOp::Add,
            "sub" => FOp::Sub,
            "mul" => FOp::Mul,
            "fma" | "mad" => FOp::Fma,
            "div" => FOp::Div { approx: d.has("approx"), full: d.has("full") },
            "min" => FOp::Min { nan: d.has("NaN") },
            "max" => FOp::Max { nan: d.has("NaN") },
            "neg" => FOp::Neg,
            "abs" => FOp::Abs,
            "rcp" => FOp::Rcp { approx: d.has("approx") },
            "sqrt" => FOp::Sqrt { approx: d.has("approx") },
            "rsqrt" => FOp::Rsqrt,
            "ex2" => FOp::Ex2,
            "lg2" => FOp::Lg2,
            "sin" => FOp::Sin,
            "cos" => FOp::Cos,
            "tanh" => FOp::Tanh,
            "copysign" => FOp::Copysign,
            _ => return d.unsupported(format!("{base} on .{t}")),
        };
        if d.has("xorsign") || d.has("relu") || d.has("oob") {
            return d.unsupported("this modifier");
        }
        let arity = match op {
            FOp::Fma => 3,
            FOp::Add | FOp::Sub | FOp::Mul | FOp::Div { .. } | FOp::Min { .. } | FOp::Max { .. } | FOp::Copysign => 2,
            _ => 1,
        };
        want(arity)?;
        let rnd = d.rnd().unwrap_or(Rnd::Rn);
        if fty == FTy::F64 && rnd != Rnd::Rn && matches!(op, FOp::Fma | FOp::Sqrt { .. } | FOp::Rcp { .. }) {
            return d.unsupported("directed rounding of f64 fma, sqrt and rcp");
        }
        let class = match (op, fty) {
            (
                FOp::Rcp { .. } | FOp::Sqrt { .. } | FOp::Rsqrt | FOp::Ex2 | FOp::Lg2 | FOp::Sin | FOp::Cos | FOp::Tanh,
                FTy::F32,
            ) => Class::Sfu,
            (FOp::Div { approx: true, .. }, _) => Class::Sfu,
            (_, FTy::F32) => Class::Fp32,
            (_, FTy::F64) => Class::Fp64,
        };
        let kind = Kind::Float { op, ty: fty, rnd, ftz: d.has("ftz"), sat: d.has("sat") };
        return d.inst(kind, class, dst, src);
    }
    let Some(ty) = int_ty(t) else {
        return d.unsupported(format!("{base} on .{t}"));
    };
    if d.has("cc") || base == "addc" || base == "subc" {
        return d.unsupported("carry-chain arithmetic");
    }
    let (op, arity) = match base {
        "add" => (IntOp::Add { sat: d.has("sat") }, 2),
        "sub" => (IntOp::Sub { sat: d.has("sat") }, 2),
        "mul" if d.has("hi") => (IntOp::MulHi, 2),
        "mul" if d.has("wide") => (IntOp::MulWide, 2),
        "mul" => (IntOp::MulLo, 2),
        "mad" if d.has("hi") => (IntOp::MadHi, 3),
        "mad" if d.has("wide") => (IntOp::MadWide, 3),
        "mad" => (IntOp::MadLo, 3),
        "div" => (IntOp::Div, 2),
        "rem" => (IntOp::Rem, 2),
        "min" => (IntOp::Min, 2),
        "max" => (IntOp::Max, 2),
        "abs" => (IntOp::Abs, 1),
        "neg" => (IntOp::Neg, 1),
        "and" => (IntOp::And, 2),
        "or" => (IntOp::Or, 2),
        "xor" => (IntOp::Xor, 2),
        "not" => (IntOp::Not, 1),
        "cnot" => (IntOp::Cnot, 1),
        "shl" => (IntOp::Shl, 2),
        "shr" => (IntOp::Shr, 2),
        "popc" => (IntOp::Popc, 1),
        "clz" => (IntOp::Clz, 1),
        "brev" => (IntOp::Brev, 1),
        "bfind" => (IntOp::Bfind { shift_amount: d.has("shiftamt") }, 1),
        "bfe" => (IntOp::Bfe, 3),
        "bfi" => (IntOp::Bfi, 4),
        "prmt" => {
            if d.mods.iter().any(|m| matches!(*m, "f4e" | "b4e" | "rc8" | "ecl" | "ecr" | "rc16")) {
                return d.unsupported("prmt modes other than the default");
            }
            (IntOp::Prmt, 3)
        }
        "lop3" => (IntOp::Lop3, 4),
        "shf" => (IntOp::Shf { left: d.has("l"), clamp: d.has("clamp") }, 3),
        "sad" => (IntOp::Sad, 3),
        _ => return d.unsupported(format!("{base} on .{t}")),
    };
    want(arity)?;
    if matches!(op, IntOp::Add { sat: true } | IntOp::Sub { sat: true }) && !(ty.signed && ty.bits == 32) {
        return d.err(".sat is defined for .s32 only");
    }
    d.inst(Kind::Int { op, ty }, Class::Int, dst, src)
}

fn num(t: &str) -> Option<Num> {
    Some(match t {
        "f16" => Num::F16,
        "bf16" => Num::Bf16,
        "f32" => Num::F32,
        "f64" => Num::F64,
        t => Num::Int(int_ty(t)?),
    })
}

fn cvt(d: &D) -> Result<Inst, PtxError> {
    let ops = d.ops();
    let types = d.types();
    let [to, from] = types.as_slice() else {
        return d.err("cvt needs a destination and a source type");
    };
    let packed = match *to {
        "bf16x2" => Some(Packed::Bf16x2),
        "f16x2" => Some(Packed::F16x2),
        "e4m3x2" => Some(Packed::E4m3x2),
        "e5m2x2" => Some(Packed::E5m2x2),
        _ => None,
    };
    let fp8 = match *from {
        "e4m3x2" => Some(Packed::E4m3x2),
        "e5m2x2" => Some(Packed::E5m2x2),
        _ => None,
    };
    if let (Some(to @ (Packed::F16x2 | Packed::Bf16x2)), Some(from)) = (packed, fp8) {
        d.nops(2)?;
        if to == Packed::Bf16x2 {
            return d.unsupported("cvt from FP8 pairs to .bf16x2");
        }
        return d.inst(Kind::CvtUnpack { from, to }, Class::Convert, vec![d.dst(&ops[0])?], vec![d.src(&ops[1])?]);
    }
    if let Some(to) = packed {
        if *from != "f32" {
            return d.unsupported(format!("cvt to .{to:?} from .{from}"));
        }
        if d.rnd() != Some(Rnd::Rn) {
            return d.unsupported("packed conversions other than .rn");
        }
        if matches!(to, Packed::E4m3x2 | Packed::E5m2x2) && !d.has("satfinite") {
            return d.err("conversions to FP8 require .satfinite");
        }
        d.nops(3)?;
        let src = vec![d.src(&ops[1])?, d.src(&ops[2])?];
        return d.inst(
            Kind::CvtPack { to, satfinite: d.has("satfinite"), relu: d.has("relu") },
            Class::Convert,
            vec![d.dst(&ops[0])?],
            src,
        );
    }
    let (Some(dst), Some(src)) = (num(to), num(from)) else {
        return d.unsupported(format!("cvt from .{from} to .{to}"));
    };
    d.nops(2)?;
    let int_rnd = d.mods.iter().find_map(|m| match *m {
        "rni" => Some(Rnd::Rn),
        "rzi" => Some(Rnd::Rz),
        "rmi" => Some(Rnd::Rm),
        "rpi" => Some(Rnd::Rp),
        _ => None,
    });
    let rnd = d.mods.iter().find_map(|m| match *m {
        "rn" => Some(Rnd::Rn),
        "rz" => Some(Rnd::Rz),
        "rm" => Some(Rnd::Rm),
        "rp" => Some(Rnd::Rp),
        "rna" => Some(Rnd::Rna),
        _ => None,
    });
    let float = |n: Num| !matches!(n, Num::Int(_));
    if float(src) && !float(dst) && int_rnd.is_none() {
        return d.err("a float-to-integer cvt needs an integer rounding (.rni, .rzi, .rmi, .rpi)");
    }
    if rnd == Some(Rnd::Rna) && !(dst == Num::F32 || matches!(dst, Num::Bf16 | Num::F16)) {
        return d.unsupported(".rna here");
    }
    let kind = Kind::Cvt { dst, src, rnd, int_rnd, sat: d.has("sat"), ftz: d.has("ftz"), relu: d.has("relu") };
    d.inst(kind, Class::Convert, vec![d.dst(&ops[0])?], vec![d.src(&ops[1])?])
}
