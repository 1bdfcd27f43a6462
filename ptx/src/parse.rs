//! PTX text -> a module of variables and functions whose bodies are statements (register declarations,
//! labels, instructions with their operands as written). Knows PTX's grammar, not its semantics:
//! [`crate::decode`] gives instructions their meaning. Every item keeps its source line.

use crate::error::PtxError;

/// A token with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifiers, opcodes with their dotted modifiers, directives (`.reg`), registers (`%r1`, `%tid.x`),
    /// labels (`$L__BB0_1`).
    Word(String),
    /// A numeric literal as written (`12`, `-1` is `Punct('-')` then `12`, `0f3F800000`, `0x1F`).
    Num(String),
    Str(String),
    Punct(char),
}

fn lex(src: &str) -> Result<Vec<(Tok, u32)>, PtxError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut line = 1u32;
    let mut out = Vec::new();
    let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%' | b'.');
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                out.push((Tok::Str(src[start..i.min(b.len())].to_string()), line));
                i += 1;
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push((Tok::Num(src[start..i].to_string()), line));
            }
            c if word(c) => {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                out.push((Tok::Word(src[start..i].to_string()), line));
            }
            b'{' | b'}' | b'[' | b']' | b'(' | b')' | b',' | b';' | b':' | b'@' | b'!' | b'|' | b'+' | b'-' | b'='
            | b'<' | b'>' => {
                out.push((Tok::Punct(c as char), line));
                i += 1;
            }
            _ => return Err(PtxError::Parse { line, why: format!("unexpected character {:?}", c as char) }),
        }
    }
    Ok(out)
}

/// A state space of a variable or memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Global,
    Shared,
    Local,
    Const,
    Param,
    /// No space named: a generic address.
    Generic,
}

impl Space {
    pub fn parse(s: &str) -> Option<Space> {
        Some(match s {
            "global" => Space::Global,
            "shared" => Space::Shared,
            "local" => Space::Local,
            "const" => Space::Const,
            "param" => Space::Param,
            _ => return None,
        })
    }
}

/// A variable: `.global .align 4 .b8 name[24] = {...};`, a kernel parameter, or a shared array.
#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub space: Space,
    pub align: u32,
    /// Element type as written (`b8`, `u32`, `f32`, ...).
    pub ty: String,
    /// Element count (1 for scalars; 0 for `.extern` arrays of unknown size).
    pub count: u64,
    /// Initializer as raw little-endian bytes (zeros where absent).
    pub init: Option<Vec<u8>>,
    pub line: u32,
}

impl Var {
    pub fn elem_bytes(&self) -> u32 {
        type_bytes(&self.ty).unwrap_or(1)
    }
    pub fn bytes(&self) -> u64 {
        self.count * self.elem_bytes() as u64
    }
}

/// Byte size of a PTX fundamental type name (`u32` -> 4).
pub fn type_bytes(ty: &str) -> Option<u32> {
    Some(match ty {
        "b8" | "u8" | "s8" | "e4m3x2" | "e5m2x2" => 1,
        "b16" | "u16" | "s16" | "f16" | "bf16" => 2,
        "b32" | "u32" | "s32" | "f32" | "f16x2" | "bf16x2" | "pred" => 4,
        "b64" | "u64" | "s64" | "f64" => 8,
        "b128" => 16,
        _ => return None,
    })
}

/// An operand as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A register, special register, variable or label name.
    Name(String),
    /// An integer literal.
    Int(i64),
    /// `0f...` literal (f32 bits).
    F32(u32),
    /// `0d...` literal (f64 bits).
    F64(u64),
    /// `!%p1` (negated predicate).
    Not(String),
    /// `[base+offset]`, base a register or variable name (or none: an absolute address).
    Addr { base: Option<String>, offset: i64 },
    /// `{a, b, c, d}`.
    Vector(Vec<Operand>),
    /// `%r1|%p2`: a result and its predicate.
    Pair(Box<Operand>, Box<Operand>),
    /// `_`: a sink.
    Sink,
}

/// One instruction as written.
#[derive(Debug, Clone)]
pub struct RawInst {
    /// `(predicate, negated)` of an `@%p` / `@!%p` guard.
    pub guard: Option<(String, bool)>,
    /// The opcode split at its dots: `ld.global.nc.f32` -> `["ld", "global", "nc", "f32"]`.
    pub opcode: Vec<String>,
    pub operands: Vec<Operand>,
    pub line: u32,
}

impl RawInst {
    pub fn text(&self) -> String {
        self.opcode.join(".")
    }
}

/// A statement of a function body.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// `.reg .b32 %r<135>;` (count = 135 names `%r0..%r134`) or `.reg .b32 %a, %b;`.
    Reg {
        ty: String,
        names: Vec<(String, Option<u32>)>,
        line: u32,
    },
    /// A `.local` / `.shared` variable declared in the body.
    Var(Var),
    Label {
        name: String,
        line: u32,
    },
    Inst(RawInst),
    /// `{`: a new register scope.
    Open,
    /// `}`.
    Close,
}

/// A kernel (`.entry`) or device function (`.func`).
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub entry: bool,
    pub params: Vec<Var>,
    /// `.func (.param .b32 retval) name(...)`: return parameters.
    pub returns: Vec<Var>,
    pub body: Vec<Stmt>,
    /// `.maxntid`/`.reqntid` if given.
    pub max_threads: Option<[u32; 3]>,
    pub line: u32,
}

/// A parsed PTX module.
#[derive(Debug, Clone, Default)]
pub struct Module {
    pub version: String,
    pub target: String,
    pub vars: Vec<Var>,
    pub functions: Vec<Function>,
}

struct Parser {
    toks: Vec<(Tok, u32)>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }
    fn line(&self) -> u32 {
        self.toks.get(self.i).or(self.toks.last()).map(|t| t.1).unwrap_or(0)
    }
    fn next(&mut self) -> Result<Tok, PtxError> {
        let t = self
            .toks
            .get(self.i)
            .cloned()
            .ok_or(PtxError::Parse { line: self.line(), why: "unexpected end".into() })?;
        self.i += 1;
        Ok(t.0)
    }
    fn err<T>(&self, why: impl Into<String>) -> Result<T, PtxError> {
        Err(PtxError::Parse { line: self.line(), why: why.into() })
    }
    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }
    fn expect(&mut self, c: char) -> Result<(), PtxError> {
        if self.is_punct(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(format!("expected {c:?}, found {:?}", self.peek()))
        }
    }
    fn word(&mut self) -> Result<String, PtxError> {
        match self.next()? {
            Tok::Word(w) => Ok(w),
            t => {
                self.i -= 1;
                self.err(format!("expected a name, found {t:?}"))
            }
        }
    }
    fn int(&mut self) -> Result<i64, PtxError> {
        let neg = if self.is_punct('-') {
            self.i += 1;
            true
        } else {
            false
        };
        match self.next()? {
            Tok::Num(n) => {
                let v = parse_int(&n).ok_or(PtxError::Parse { line: self.line(), why: format!("bad integer {n}") })?;
                Ok(if neg { v.wrapping_neg() } else { v })
            }
            t => self.err(format!("expected an integer, found {t:?}")),
        }
    }
    /// Skips to just past the next `;`.
    fn skip_statement(&mut self) -> Result<(), PtxError> {
        while !self.is_punct(';') {
            self.next()?;
        }
        self.i += 1;
        Ok(())
    }

    fn module(&mut self) -> Result<Module, PtxError> {
        let mut m = Module::default();
        while let Some(t) = self.peek().cloned() {
            let line = self.line();
            match t {
                Tok::Word(w) if w == ".version" => {
                    self.i += 1;
                    m.version = match self.next()? {
                        Tok::Num(n) => n,
                        t => return self.err(format!("bad .version {t:?}")),
                    };
                }
                Tok::Word(w) if w == ".target" => {
                    self.i += 1;
                    m.target = self.word()?;
                    while self.is_punct(',') {
                        self.i += 1;
                        self.word()?;
                    }
                }
                Tok::Word(w) if w == ".address_size" => {
                    self.i += 1;
                    let n = self.int()?;
                    if n != 64 {
                        return self.err(format!(".address_size {n} (only 64 is supported)"));
                    }
                }
                Tok::Word(w) if w == ".file" || w == ".section" => {
                    return self.err(format!("{w} (debug information is not supported)"));
                }
                Tok::Word(w) if w.starts_with('.') => {
                    // Linkage, then a variable or a function.
                    let mut linkage = Vec::new();
                    while let Some(Tok::Word(w)) = self.peek() {
                        if matches!(w.as_str(), ".visible" | ".extern" | ".weak" | ".common") {
                            linkage.push(w.clone());
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    let kind = self.word()?;
                    match kind.as_str() {
                        ".entry" | ".func" => {
                            let f = self.function(kind == ".entry", line)?;
                            if let Some(f) = f {
                                m.functions.push(f);
                            }
                        }
                        ".global" | ".const" | ".shared" => {
                            let space = Space::parse(&kind[1..]).unwrap_or(Space::Global);
                            let v = self.var(space, line)?;
                            m.vars.push(v);
                        }
                        _ => return self.err(format!("unexpected directive {kind}")),
                    }
                }
                t => return self.err(format!("unexpected {t:?} at module level")),
            }
        }
        Ok(m)
    }

    /// After the space: `[.align N] .type name[N]? [= init] ;`
    fn var(&mut self, space: Space, line: u32) -> Result<Var, PtxError> {
        let mut align = 0;
        let ty = loop {
            let w = self.word()?;
            if w == ".align" {
                align = self.int()? as u32;
            } else if let Some(t) = w.strip_prefix('.') {
                if type_bytes(t).is_some() {
                    break t.to_string();
                }
            } else {
                return self.err(format!("expected a type in a variable declaration, found {w}"));
            }
        };
        let name = self.word()?;
        let mut count = 1u64;
        let mut dims = Vec::new();
        while self.is_punct('[') {
            self.i += 1;
            if self.is_punct(']') {
                dims.push(0);
            } else {
                dims.push(self.int()? as u64);
            }
            self.expect(']')?;
        }
        if !dims.is_empty() {
            count = dims.iter().product();
        }
        let elem = type_bytes(&ty).unwrap_or(1);
        if align == 0 {
            align = elem;
        }
        let mut init = None;
        if self.is_punct('=') {
            self.i += 1;
            let mut vals = Vec::new();
            self.init_values(&mut vals)?;
            let mut bytes = Vec::with_capacity((count * elem as u64) as usize);
            for v in &vals {
                let raw: u64 = match v {
                    Operand::Int(i) => *i as u64,
                    Operand::F32(b) => *b as u64,
                    Operand::F64(b) => *b,
                    _ => return self.err("unsupported initializer (only numbers are)"),
                };
                bytes.extend_from_slice(&raw.to_le_bytes()[..elem as usize]);
            }
            if dims.first() == Some(&0) {
                count = vals.len() as u64;
            }
            bytes.resize((count * elem as u64) as usize, 0);
            init = Some(bytes);
        }
        self.expect(';')?;
        Ok(Var { name, space, align, ty, count, init, line })
    }

    fn init_values(&mut self, out: &mut Vec<Operand>) -> Result<(), PtxError> {
        if self.is_punct('{') {
            self.i += 1;
            loop {
                self.init_values(out)?;
                if self.is_punct(',') {
                    self.i += 1;
                    continue;
                }
                self.expect('}')?;
                return Ok(());
            }
        }
        let o = self.operand()?;
        out.push(o);
        Ok(())
    }

    /// After `.entry` / `.func`. Returns `None` for a declaration without a body.
    fn function(&mut self, entry: bool, line: u32) -> Result<Option<Function>, PtxError> {
        let mut returns = Vec::new();
        if self.is_punct('(') {
            returns = self.params()?;
        }
        let name = self.word()?;
        let params = if self.is_punct('(') { self.params()? } else { Vec::new() };
        let mut max_threads = None;
        loop {
            match self.peek() {
                Some(Tok::Punct(';')) => {
                    self.i += 1;
                    return Ok(None);
                }
                Some(Tok::Punct('{')) => break,
                Some(Tok::Word(w)) if w == ".maxntid" || w == ".reqntid" => {
                    self.i += 1;
                    let mut d = [1u32; 3];
                    d[0] = self.int()? as u32;
                    for slot in d.iter_mut().skip(1) {
                        if self.is_punct(',') {
                            self.i += 1;
                            *slot = self.int()? as u32;
                        }
                    }
                    max_threads = Some(d);
                }
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    // .minnctapersm N, .maxnreg N, .noreturn, .explicitcluster, ...
                    self.i += 1;
                    while matches!(self.peek(), Some(Tok::Num(_)) | Some(Tok::Punct(','))) {
                        self.i += 1;
                    }
                }
                t => return self.err(format!("unexpected {t:?} in a function header")),
            }
        }
        self.expect('{')?;
        let body = self.body()?;
        Ok(Some(Function { name, entry, params, returns, body, max_threads, line }))
    }

    fn params(&mut self) -> Result<Vec<Var>, PtxError> {
        self.expect('(')?;
        let mut out = Vec::new();
        while !self.is_punct(')') {
            let line = self.line();
            let w = self.word()?;
            if w != ".param" && w != ".reg" {
                return self.err(format!("expected .param, found {w}"));
            }
            // `.param .align 8 .b8 name[16]`, `.param .u64 .ptr .global .align 1 name`, `.param .u64 name`.
            let mut align = 0;
            let mut ty = String::new();
            let name = loop {
                let w = self.word()?;
                if w == ".align" {
                    align = self.int()? as u32;
                } else if let Some(t) = w.strip_prefix('.') {
                    if type_bytes(t).is_some() {
                        ty = t.to_string();
                    }
                } else {
                    break w;
                }
            };
            let mut count = 1;
            if self.is_punct('[') {
                self.i += 1;
                count = self.int()? as u64;
                self.expect(']')?;
            }
            let elem = type_bytes(&ty).unwrap_or(1);
            out.push(Var {
                name,
                space: Space::Param,
                align: if align == 0 { elem } else { align },
                ty,
                count,
                init: None,
                line,
            });
            if self.is_punct(',') {
                self.i += 1;
            }
        }
        self.expect(')')?;
        Ok(out)
    }

    fn body(&mut self) -> Result<Vec<Stmt>, PtxError> {
        let mut out = Vec::new();
        let mut depth = 1;
        while depth > 0 {
            let line = self.line();
            match self.peek().cloned() {
                None => return self.err("unterminated function body"),
                Some(Tok::Punct('{')) => {
                    self.i += 1;
                    depth += 1;
                    out.push(Stmt::Open);
                }
                Some(Tok::Punct('}')) => {
                    self.i += 1;
                    depth -= 1;
                    if depth > 0 {
                        out.push(Stmt::Close);
                    }
                }
                Some(Tok::Word(w)) if w == ".reg" => {
                    self.i += 1;
                    let mut ty = String::new();
                    while let Some(Tok::Word(w)) = self.peek() {
                        if let Some(t) = w.strip_prefix('.') {
                            if type_bytes(t).is_some() {
                                ty = t.to_string();
                            }
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    let mut names = Vec::new();
                    loop {
                        let n = self.word()?;
                        let mut count = None;
                        if self.is_punct('<') {
                            self.i += 1;
                            count = Some(self.int()? as u32);
                            self.expect('>')?;
                        }
                        names.push((n, count));
                        if self.is_punct(',') {
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    self.expect(';')?;
                    out.push(Stmt::Reg { ty, names, line });
                }
                Some(Tok::Word(w)) if w == ".local" || w == ".shared" => {
                    self.i += 1;
                    let v = self.var(Space::parse(&w[1..]).unwrap_or(Space::Local), line)?;
                    out.push(Stmt::Var(v));
                }
                Some(Tok::Word(w)) if w == ".pragma" || w == ".loc" || w == ".maxnreg" => {
                    self.skip_statement()?;
                }
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    return self.err(format!("unsupported directive {w} in a function body"));
                }
                Some(Tok::Word(w)) if self.toks.get(self.i + 1).map(|t| &t.0) == Some(&Tok::Punct(':')) => {
                    self.i += 2;
                    out.push(Stmt::Label { name: w, line });
                }
                Some(_) => out.push(Stmt::Inst(self.instruction()?)),
            }
        }
        Ok(out)
    }

    fn instruction(&mut self) -> Result<RawInst, PtxError> {
        let line = self.line();
        let mut guard = None;
        if self.is_punct('@') {
            self.i += 1;
            let neg = if self.is_punct('!') {
                self.i += 1;
                true
            } else {
                false
            };
            guard = Some((self.word()?, neg));
        }
        let op = self.word()?;
        let opcode: Vec<String> = op.split('.').map(str::to_string).collect();
        let mut operands = Vec::new();
        while !self.is_punct(';') {
            let mut o = self.operand()?;
            if self.is_punct('|') {
                self.i += 1;
                let p = self.operand()?;
                o = Operand::Pair(Box::new(o), Box::new(p));
            }
            operands.push(o);
            if self.is_punct(',') {
                self.i += 1;
            } else if !self.is_punct(';') {
                return self.err(format!("expected ',' or ';' after an operand of {op}, found {:?}", self.peek()));
            }
        }
        self.i += 1;
        Ok(RawInst { guard, opcode, operands, line })
    }

    fn operand(&mut self) -> Result<Operand, PtxError> {
        match self.peek().cloned() {
            Some(Tok::Punct('[')) => {
                self.i += 1;
                let mut base = None;
                let mut offset = 0i64;
                if let Some(Tok::Word(_)) = self.peek() {
                    base = Some(self.word()?);
                    if self.is_punct('+') {
                        self.i += 1;
                        offset = self.int()?;
                    } else if self.is_punct('-') {
                        offset = self.int()?;
                    }
                } else {
                    offset = self.int()?;
                }
                self.expect(']')?;
                Ok(Operand::Addr { base, offset })
            }
            Some(Tok::Punct('{')) => {
                self.i += 1;
                let mut v = Vec::new();
                while !self.is_punct('}') {
                    v.push(self.operand()?);
                    if self.is_punct(',') {
                        self.i += 1;
                    }
                }
                self.i += 1;
                Ok(Operand::Vector(v))
            }
            Some(Tok::Punct('!')) => {
                self.i += 1;
                Ok(Operand::Not(self.word()?))
            }
            Some(Tok::Punct('-')) | Some(Tok::Num(_)) => {
                let neg = self.is_punct('-');
                if neg {
                    self.i += 1;
                }
                let n = match self.next()? {
                    Tok::Num(n) => n,
                    t => return self.err(format!("expected a number, found {t:?}")),
                };
                let lit =
                    parse_literal(&n).ok_or(PtxError::Parse { line: self.line(), why: format!("bad literal {n}") })?;
                Ok(match (lit, neg) {
                    (Operand::Int(v), true) => Operand::Int(v.wrapping_neg()),
                    (Operand::F32(b), true) => Operand::F32(b ^ 0x8000_0000),
                    (Operand::F64(b), true) => Operand::F64(b ^ (1 << 63)),
                    (l, _) => l,
                })
            }
            Some(Tok::Word(w)) if w == "_" => {
                self.i += 1;
                Ok(Operand::Sink)
            }
            Some(Tok::Word(_)) => Ok(Operand::Name(self.word()?)),
            t => self.err(format!("unexpected {t:?} in an operand")),
        }
    }
}

fn parse_int(n: &str) -> Option<i64> {
    let n = n.strip_suffix('U').unwrap_or(n);
    if let Some(h) = n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|v| v as i64);
    }
    if let Some(b) = n.strip_prefix("0b").or_else(|| n.strip_prefix("0B")) {
        return u64::from_str_radix(b, 2).ok().map(|v| v as i64);
    }
    if n.len() > 1 && n.starts_with('0') && n.bytes().all(|c| c.is_ascii_digit()) {
        return u64::from_str_radix(&n[1..], 8).ok().map(|v| v as i64);
    }
    n.parse::<u64>().ok().map(|v| v as i64)
}

fn parse_literal(n: &str) -> Option<Operand> {
    if let Some(h) = n.strip_prefix("0f").or_else(|| n.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16).ok().map(Operand::F32);
    }
    if let Some(h) = n.strip_prefix("0d").or_else(|| n.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16).ok().map(Operand::F64);
    }
    if n.contains('.') || (n.contains(['e', 'E']) && !n.starts_with("0x")) {
        return n.parse::<f64>().ok().map(|v| Operand::F64(v.to_bits()));
    }
    parse_int(n).map(Operand::Int)
}

/// Parses PTX text.
pub fn parse(src: &str) -> Result<Module, PtxError> {
    let toks = lex(src)?;
    Parser { toks, i: 0 }.module()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel() {
        let m = parse(
            ".version 8.8\n.target sm_90a\n.address_size 64\n.const .align 4 .b8 T[8] = {0, 0, 128, 63};\n\
             .visible .entry k(\n .param .u64 k_param_0\n)\n.maxntid 128, 1, 1\n{\n .reg .b32 %r<4>;\n\
             $L__BB0_1:\n @!%p1 bra $L__BB0_1;\n ld.global.f32 %f1, [%rd1+-4];\n shfl.sync.bfly.b32 %r1|%p2, %r2, 1, 31, -1;\n ret;\n}\n",
        )
        .unwrap();
        assert_eq!(m.target, "sm_90a");
        assert_eq!(m.vars[0].init.as_ref().unwrap(), &vec![0, 0, 128, 63, 0, 0, 0, 0]);
        let f = &m.functions[0];
        assert_eq!(f.max_threads, Some([128, 1, 1]));
        let insts: Vec<&RawInst> =
            f.body.iter().filter_map(|s| if let Stmt::Inst(i) = s { Some(i) } else { None }).collect();
        assert_eq!(insts[0].guard, Some(("%p1".into(), true)));
        assert_eq!(insts[1].operands[1], Operand::Addr { base: Some("%rd1".into()), offset: -4 });
        assert!(matches!(insts[2].operands[0], Operand::Pair(..)));
        assert_eq!(insts[2].operands[4], Operand::Int(-1));
        assert_eq!(insts[3].line, 15);
    }
}
