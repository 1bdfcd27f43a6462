//! Each op's arguments, described once: name, role (read, or written — overwritten, accumulated
//! into, or updated in place), kind (which storage dtypes it may have) and the elements the op
//! touches. Everything else that depends on an op's arguments comes from here: its arity, which
//! arguments it writes and how, the dtypes a launch's slices may carry, the footprint they must
//! cover, and the CUDA kernels' parameter names.

use crate::dtype::DType;
use crate::op::{scalars, Access, GroupedMode, Op, OptimizerKind, Quant, Scaling, GRAD_NORM_CHUNK};

/// How an op uses one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read only.
    In,
    /// Written, as [`Access`] says.
    Out(Access),
}

/// What an argument holds, which decides the storage dtypes it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Real values in any float storage dtype (f32 or bf16): the kernel converts on load and
    /// rounds on store, computing in f32.
    Float,
    /// Real values kept in f32 whatever the precision: statistics, losses, the router's scores
    /// and weights, the step's scalars, optimizer state (where DeepSeek-V3 keeps f32).
    F32,
    /// Integers (token ids, expert indices, permutations, offsets): i32.
    Index,
    /// An FP8 GEMM operand, quantized: e4m3 (its scales are an `F32` argument beside it).
    E4m3,
}

impl Kind {
    /// May a slice of `dtype` be passed for an argument of this kind?
    pub fn admits(self, dtype: DType) -> bool {
        match self {
            Kind::Float => matches!(dtype, DType::F32 | DType::Bf16),
            Kind::F32 => dtype == DType::F32,
            Kind::Index => dtype == DType::I32,
            Kind::E4m3 => dtype == DType::E4m3,
        }
    }

    /// The dtype of this kind in an f32 program (the reference storage; e4m3 has no other).
    pub fn reference(self) -> DType {
        match self {
            Kind::Float | Kind::F32 => DType::F32,
            Kind::Index => DType::I32,
            Kind::E4m3 => DType::E4m3,
        }
    }
}

/// One argument of an op, in launch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSig {
    pub name: &'static str,
    pub role: Role,
    pub kind: Kind,
    /// Elements the op may touch: the furthest index plus one.
    pub len: usize,
}

impl ArgSig {
    /// The storage this argument asks for when real values are stored as `activations` (the
    /// compute dtype): its kind's own dtype for integers, e4m3 operands and f32-only values; f32
    /// for a real value accumulated into (f32 accumulation); `activations` otherwise.
    pub fn storage(&self, activations: DType) -> DType {
        match (self.kind, self.role) {
            (Kind::Float, Role::Out(Access::Accumulate)) => DType::F32,
            (Kind::Float, _) => activations,
            (k, _) => k.reference(),
        }
    }
}

/// A real-valued argument (any float storage).
const fn a(name: &'static str, role: Role, len: usize) -> ArgSig {
    ArgSig { name, role, kind: Kind::Float, len }
}

/// A real-valued argument kept in f32.
const fn f(name: &'static str, role: Role, len: usize) -> ArgSig {
    ArgSig { name, role, kind: Kind::F32, len }
}

/// A quantized FP8 operand.
const fn q8(name: &'static str, role: Role, len: usize) -> ArgSig {
    ArgSig { name, role, kind: Kind::E4m3, len }
}

/// An integer argument.
const fn ix(name: &'static str, role: Role, len: usize) -> ArgSig {
    ArgSig { name, role, kind: Kind::Index, len }
}

use Access::{Accumulate as Acc, InPlace as Rw, Write as W};
use Role::{In as R, Out};

/// `(rows − 1)·stride + width`: the span of `rows` rows of `width` at `stride` (0 for no rows).
fn span(rows: usize, stride: usize, width: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    }
}

/// The cache's arguments over `rows` rows: the latent (e4m3 with its f32 scales under FP8), then
/// the rope part.
fn cache_args(c: &crate::op::Cache, rows: usize, role: Role) -> Vec<ArgSig> {
    match c.fp8_tile {
        Some(_) => vec![
            q8("latent", role, rows * c.kvr),
            f("scales", role, rows * c.scales_per_row()),
            a("rope", role, rows * c.rope),
        ],
        None => vec![a("latent", role, rows * c.kvr), a("rope", role, rows * c.rope)],
    }
}

impl Op {
    /// The op's arguments, in launch order.
    pub fn signature(&self) -> Vec<ArgSig> {
        use Op::*;
        match *self {
            Zero { n } => vec![a("x", Out(W), n)],
            Quantize { mats, rows, cols, tile, scaling } => {
                let n = mats * rows * cols;
                vec![a("x", R, n), q8("q", Out(W), n), f("scales", Out(W), mats * scaling.count(rows, cols, tile))]
            }
            Dequantize { rows, cols, tile, scaling } => {
                let n = rows * cols;
                vec![q8("q", R, n), f("scales", R, scaling.count(rows, cols, tile)), a("x", Out(W), n)]
            }
            Cast { n } => vec![f("x", R, n), a("y", Out(W), n)],
            AddScaled { n, .. } => vec![a("x", R, n), a("y", Out(Acc), n)],
            Add { n } => vec![a("a", R, n), a("b", R, n), a("out", Out(W), n)],
            Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant } => {
                let live = m > 0 && n > 0;
                let (sa, sb) = if !live || k == 0 {
                    (0, 0)
                } else {
                    (
                        if ta { span(k, lda, m) } else { span(m, lda, k) },
                        if tb { span(n, ldb, k) } else { span(k, ldb, n) },
                    )
                };
                let c = a("c", Out(if accumulate { Acc } else { W }), if live { span(m, ldc, n) } else { 0 });
                match quant {
                    Quant::Fp8Stored { tile, b_blocks } => {
                        let (qa, qb) = (Scaling::operand(!ta, false), Scaling::operand(tb, b_blocks));
                        let (ra, ca) = if ta { (k, m) } else { (m, k) };
                        let (rb, cb) = if tb { (n, k) } else { (k, n) };
                        let scales = |s: Scaling, r, c| if live && k > 0 { s.count(r, c, tile) } else { 0 };
                        vec![
                            q8("a", R, sa),
                            f("a_scales", R, scales(qa, ra, ca)),
                            q8("b", R, sb),
                            f("b_scales", R, scales(qb, rb, cb)),
                            c,
                        ]
                    }
                    _ => vec![a("a", R, sa), a("b", R, sb), c],
                }
            }
            Embedding { n, vocab, d } => vec![ix("tokens", R, n), a("table", R, vocab * d), a("out", Out(W), n * d)],
            EmbeddingBwd { n, vocab, d } => {
                vec![ix("tokens", R, n), a("dout", R, n * d), a("dtable", Out(Acc), vocab * d)]
            }
            ShiftTokens { batch, seq, .. } => vec![ix("tokens", R, batch * seq), ix("out", Out(W), batch * seq)],
            RmsNorm { rows, d, in_stride, .. } => vec![
                a("x", R, span(rows, in_stride, d)),
                a("w", R, d),
                a("y", Out(W), rows * d),
                f("rstd", Out(W), rows),
            ],
            RmsNormBwd { rows, d, in_stride } => vec![
                a("x", R, span(rows, in_stride, d)),
                a("w", R, d),
                f("rstd", R, rows),
                a("dy", R, rows * d),
                a("dx", Out(Acc), span(rows, in_stride, d)),
                a("dw", Out(Acc), d),
            ],
            Dyt { rows, d, in_stride } => vec![
                a("x", R, span(rows, in_stride, d)),
                a("w", R, d),
                a("b", R, d),
                a("alpha", R, 1),
                a("y", Out(W), rows * d),
            ],
            DytBwd { rows, d, in_stride } => vec![
                a("x", R, span(rows, in_stride, d)),
                a("w", R, d),
                a("alpha", R, 1),
                a("dy", R, rows * d),
                a("dx", Out(Acc), span(rows, in_stride, d)),
                a("dw", Out(Acc), d),
                a("db", Out(Acc), d),
                a("dalpha", Out(Acc), 1),
            ],
            Rope { tokens, heads, row_stride, head_stride, offset, dim, .. } => {
                let len = if tokens == 0 || heads == 0 {
                    0
                } else {
                    (tokens - 1) * row_stride + (heads - 1) * head_stride + offset + dim
                };
                vec![a("x", Out(Rw), len)]
            }
            Attention(at) | AttentionBwd(at) => {
                let rows = at.batch * at.seq;
                let q = rows * at.heads * (at.nope + at.rope);
                let kvb = rows * at.heads * (at.nope + at.v);
                let kva = span(rows, at.kpe_stride, at.kpe_offset + at.rope);
                let (o, lse) = (rows * at.heads * at.v, rows * at.heads);
                if matches!(self, Attention(_)) {
                    vec![a("q", R, q), a("kvb", R, kvb), a("kva", R, kva), a("o", Out(W), o), f("lse", Out(W), lse)]
                } else {
                    vec![
                        a("q", R, q),
                        a("kvb", R, kvb),
                        a("kva", R, kva),
                        a("o", R, o),
                        f("lse", R, lse),
                        a("do", R, o),
                        a("dq", Out(Acc), q),
                        a("dkvb", Out(Acc), kvb),
                        a("dkva", Out(Acc), kva),
                    ]
                }
            }
            SwiGlu { n } => vec![a("g", R, n), a("u", R, n), a("h", Out(W), n)],
            SwiGluBwd { n } => {
                vec![a("g", R, n), a("u", R, n), a("dh", R, n), a("dg", Out(Acc), n), a("du", Out(Acc), n)]
            }
            Router(r) => {
                let (te, tk) = (r.tokens * r.experts, r.tokens * r.top_k);
                vec![
                    f("logits", R, te),
                    f("bias", R, r.experts),
                    f("scores", Out(W), te),
                    ix("idx", Out(W), tk),
                    f("weights", Out(W), tk),
                ]
            }
            RouterBwd(r) => {
                let (te, tk) = (r.tokens * r.experts, r.tokens * r.top_k);
                vec![
                    f("scores", R, te),
                    ix("idx", R, tk),
                    f("dweights", R, tk),
                    f("dscores", Out(Rw), te),
                    f("dlogits", Out(Acc), te),
                ]
            }
            Dispatch { tokens, experts, top_k, d } => {
                let n = tokens * top_k;
                vec![
                    ix("idx", R, n),
                    a("x", R, tokens * d),
                    ix("perm", Out(W), n),
                    ix("inv", Out(W), n),
                    ix("offsets", Out(W), experts + 1),
                    a("xp", Out(W), n * d),
                ]
            }
            DispatchBwd { tokens, top_k, d } => {
                vec![ix("inv", R, tokens * top_k), a("dxp", R, tokens * top_k * d), a("dx", Out(Acc), tokens * d)]
            }
            GroupedGemm { experts, rows, n, k, mode, quant } => {
                let w = experts * n * k;
                let offsets = ix("offsets", R, experts + 1);
                if let Quant::Fp8Stored { tile, b_blocks } = quant.grouped(mode) {
                    let (x, scales, width, y) = match mode {
                        GroupedMode::Forward => ("x", "x_scales", k, a("y", Out(W), rows * n)),
                        _ => ("dy", "dy_scales", n, a("dx", Out(Acc), rows * k)),
                    };
                    return vec![
                        offsets,
                        q8(x, R, rows * width),
                        f(scales, R, Scaling::RowTiles.count(rows, width, tile)),
                        q8("w", R, w),
                        f("w_scales", R, experts * mode.weight_scales(n, k, tile, b_blocks).1),
                        y,
                    ];
                }
                match mode {
                    GroupedMode::Forward => vec![offsets, a("x", R, rows * k), a("w", R, w), a("y", Out(W), rows * n)],
                    GroupedMode::DataGrad => {
                        vec![offsets, a("dy", R, rows * n), a("w", R, w), a("dx", Out(Acc), rows * k)]
                    }
                    GroupedMode::WeightGrad => {
                        vec![offsets, a("x", R, rows * k), a("dy", R, rows * n), a("dw", Out(Acc), w)]
                    }
                }
            }
            Combine { tokens, top_k, d } => {
                let n = tokens * top_k;
                vec![ix("inv", R, n), f("weights", R, n), a("yp", R, n * d), a("out", Out(Acc), tokens * d)]
            }
            CombineBwd { tokens, top_k, d } => {
                let n = tokens * top_k;
                vec![
                    ix("perm", R, n),
                    ix("inv", R, n),
                    f("weights", R, n),
                    a("yp", R, n * d),
                    a("dout", R, tokens * d),
                    a("dyp", Out(W), n * d),
                    f("dweights", Out(Acc), n),
                ]
            }
            CrossEntropy { batch, seq, vocab, .. } => {
                vec![a("logits", Out(Rw), batch * seq * vocab), ix("tokens", R, batch * seq), f("loss", Out(W), 1)]
            }
            BalanceLoss(b) => {
                let t = b.batch * b.seq;
                vec![f("scores", R, t * b.experts), ix("idx", R, t * b.top_k), f("loss", Out(Acc), 1)]
            }
            BalanceLossBwd { balance: b, .. } => {
                let t = b.batch * b.seq;
                vec![f("scores", R, t * b.experts), ix("idx", R, t * b.top_k), f("dscores", Out(Acc), t * b.experts)]
            }
            ExpertStats { tokens, experts, top_k } => {
                vec![ix("idx", R, tokens * top_k), f("scores", R, tokens * experts), f("stats", Out(Acc), experts + 2)]
            }
            BiasUpdate { experts, .. } => vec![
                f("scalars", R, scalars::LEN),
                f("norm", R, 1),
                f("stats", R, experts),
                f("bias", Out(Rw), experts),
            ],
            GradNorm { n } => {
                vec![f("grad", R, n), f("partials", Out(W), n.div_ceil(GRAD_NORM_CHUNK).max(1)), f("norm", Out(W), 1)]
            }
            RopeAt { tokens, per_seq, heads, row_stride, head_stride, offset, dim, .. } => {
                let len = if tokens == 0 || heads == 0 {
                    0
                } else {
                    (tokens - 1) * row_stride + (heads - 1) * head_stride + offset + dim
                };
                vec![ix("positions", R, tokens.div_ceil(per_seq.max(1))), a("x", Out(Rw), len)]
            }
            CacheWrite { cache: c, per_seq, kva_stride } => {
                let n = c.batch * per_seq;
                let rows = c.batch * c.len;
                let mut v = vec![
                    ix("positions", R, c.batch),
                    a("ckv", R, n * c.kvr),
                    a("kva", R, span(n, kva_stride, c.kvr + c.rope)),
                ];
                v.extend(cache_args(&c, rows, Out(Rw)));
                v
            }
            LatentAttention(at) => {
                let c = at.cache;
                let n = at.tokens();
                let mut v = vec![
                    ix("positions", R, c.batch),
                    a("q_lat", R, n * at.heads * c.kvr),
                    a("q", R, n * at.heads * (at.nope + c.rope)),
                ];
                v.extend(cache_args(&c, c.batch * c.len, R));
                v.push(a("o_lat", Out(W), n * at.heads * c.kvr));
                v
            }
            AbsorbQuery(h) => vec![
                a("q", R, h.tokens * h.heads * (h.nope + h.rope)),
                a("kv_b", R, h.heads * (h.nope + h.v) * h.kvr),
                a("q_lat", Out(W), h.tokens * h.heads * h.kvr),
            ],
            AbsorbOutput(h) => vec![
                a("o_lat", R, h.tokens * h.heads * h.kvr),
                a("kv_b", R, h.heads * (h.nope + h.v) * h.kvr),
                a("o", Out(W), h.tokens * h.heads * h.v),
            ],
            AllReduce { n, .. } | AllGather { n, .. } => vec![f("x", Out(Rw), n)],
            ExpertCounts(x) => vec![
                ix("offsets", R, x.experts + 1),
                ix("recv", Out(W), x.ranks * x.local()),
                ix("local", Out(W), x.local() + 1),
                f("dropped", Out(Acc), 1),
            ],
            ExpertExchange { exchange: x, d, dir } => {
                let (rows, kept) = (x.rows * d, x.local() * x.capacity * d);
                let mut v = vec![ix("offsets", R, x.experts + 1), ix("recv", R, x.ranks * x.local())];
                match dir {
                    crate::op::Direction::Dispatch => v.extend([a("x", R, rows), a("y", Out(W), kept)]),
                    crate::op::Direction::Return => v.extend([a("y", R, kept), a("x", Out(W), rows)]),
                }
                v
            }
            Send { n, .. } => vec![a("x", R, n)],
            Recv { n, .. } => vec![a("x", Out(W), n)],
            SumSquares { n } => vec![f("x", R, n), f("partials", Out(W), n.div_ceil(GRAD_NORM_CHUNK).max(1))],
            SumParts { parts, .. } => vec![f("partials", R, parts), f("out", Out(W), 1)],
            Optimizer(u) => {
                // Moments in f32, or stored in bf16 (DeepSeek-V3's recipe).
                let moment = if u.bf16_moments { a } else { f };
                let mut v = vec![
                    f("scalars", R, scalars::LEN),
                    f("norm", R, 1),
                    f("grad", R, u.n),
                    f("param", Out(Rw), u.n),
                    moment("m", Out(Rw), u.n),
                ];
                if u.kind == OptimizerKind::AdamW {
                    v.push(moment("v", Out(Rw), u.n));
                }
                v
            }
        }
    }
}
