//! Every `Op` as the Rust expression that builds it (the kernels table of a generated graph). Written
//! as exhaustive matches that destructure every field: an op or field added to the instruction set that
//! this writer does not handle is a compile error here, not a wrong constant in generated code.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use dsv3c_runtime::comm::CommGroup;
use dsv3c_runtime::op::{
    Attn, Balance, Cache, Direction, Exchange, GroupedMode, Heads, LatentAttn, Op, OptimizerKind, Peer, Quant,
    RopeFreqs, Route, Scaling, Score, Update,
};

fn u(v: usize) -> Literal {
    Literal::usize_unsuffixed(v)
}

/// An f32 with its shortest round-tripping representation.
fn f(v: f32) -> Literal {
    Literal::f32_unsuffixed(v)
}

fn f64_(v: f64) -> Literal {
    Literal::f64_unsuffixed(v)
}

fn quant(q: Quant) -> TokenStream {
    match q {
        Quant::None => quote!(Quant::None),
        Quant::Bf16 => quote!(Quant::Bf16),
        Quant::Fp8 { tile, b_blocks } => {
            let tile = u(tile);
            quote!(Quant::Fp8 { tile: #tile, b_blocks: #b_blocks })
        }
        Quant::Fp8Stored { tile, b_blocks } => {
            let tile = u(tile);
            quote!(Quant::Fp8Stored { tile: #tile, b_blocks: #b_blocks })
        }
    }
}

fn scaling(s: Scaling) -> TokenStream {
    match s {
        Scaling::RowTiles => quote!(Scaling::RowTiles),
        Scaling::ColTiles => quote!(Scaling::ColTiles),
        Scaling::Blocks => quote!(Scaling::Blocks),
    }
}

fn score(s: Score) -> TokenStream {
    match s {
        Score::Sigmoid => quote!(Score::Sigmoid),
        Score::Softmax => quote!(Score::Softmax),
    }
}

fn mode(m: GroupedMode) -> TokenStream {
    match m {
        GroupedMode::Forward => quote!(GroupedMode::Forward),
        GroupedMode::DataGrad => quote!(GroupedMode::DataGrad),
        GroupedMode::WeightGrad => quote!(GroupedMode::WeightGrad),
    }
}

fn freqs(r: &RopeFreqs) -> TokenStream {
    let RopeFreqs { theta, yarn, attention_factor } = *r;
    let theta = f64_(theta);
    let yarn = match yarn {
        Some((factor, orig, fast, slow)) => {
            let (factor, orig, fast, slow) = (f64_(factor), Literal::u64_unsuffixed(orig), f64_(fast), f64_(slow));
            quote!(Some((#factor, #orig, #fast, #slow)))
        }
        None => quote!(None),
    };
    let af = f(attention_factor);
    quote!(RopeFreqs { theta: #theta, yarn: #yarn, attention_factor: #af })
}

fn attn(a: &Attn) -> TokenStream {
    let Attn { batch, seq, heads, nope, rope, v, kpe_stride, kpe_offset, scale, window } = *a;
    let [batch, seq, heads, nope, rope, v, kpe_stride, kpe_offset] =
        [batch, seq, heads, nope, rope, v, kpe_stride, kpe_offset].map(u);
    let scale = f(scale);
    let window = match window {
        Some((w, s)) => {
            let (w, s) = (u(w), u(s));
            quote!(Some((#w, #s)))
        }
        None => quote!(None),
    };
    quote!(Attn { batch: #batch, seq: #seq, heads: #heads, nope: #nope, rope: #rope, v: #v,
        kpe_stride: #kpe_stride, kpe_offset: #kpe_offset, scale: #scale, window: #window })
}

fn window(w: Option<(usize, usize)>) -> TokenStream {
    match w {
        Some((w, s)) => {
            let (w, s) = (u(w), u(s));
            quote!(Some((#w, #s)))
        }
        None => quote!(None),
    }
}

fn cache(c: &Cache) -> TokenStream {
    let Cache { batch, len, kvr, rope, fp8_tile } = *c;
    let [batch, len, kvr, rope] = [batch, len, kvr, rope].map(u);
    let tile = match fp8_tile {
        Some(t) => {
            let t = u(t);
            quote!(Some(#t))
        }
        None => quote!(None),
    };
    quote!(Cache { batch: #batch, len: #len, kvr: #kvr, rope: #rope, fp8_tile: #tile })
}

fn heads(h: &Heads) -> TokenStream {
    let Heads { tokens, heads, nope, rope, v, kvr } = *h;
    let [tokens, heads, nope, rope, v, kvr] = [tokens, heads, nope, rope, v, kvr].map(u);
    quote!(Heads { tokens: #tokens, heads: #heads, nope: #nope, rope: #rope, v: #v, kvr: #kvr })
}

fn route(r: &Route) -> TokenStream {
    let Route { tokens, experts, groups, top_groups, top_k, score: s, normalize, scale } = *r;
    let [tokens, experts, groups, top_groups, top_k] = [tokens, experts, groups, top_groups, top_k].map(u);
    let (s, scale) = (score(s), f(scale));
    quote!(Route { tokens: #tokens, experts: #experts, groups: #groups, top_groups: #top_groups,
        top_k: #top_k, score: #s, normalize: #normalize, scale: #scale })
}

fn balance(b: &Balance) -> TokenStream {
    let Balance { batch, seq, experts, top_k, alpha, score: s } = *b;
    let [batch, seq, experts, top_k] = [batch, seq, experts, top_k].map(u);
    let (alpha, s) = (f(alpha), score(s));
    quote!(Balance { batch: #batch, seq: #seq, experts: #experts, top_k: #top_k, alpha: #alpha, score: #s })
}

fn update(x: &Update) -> TokenStream {
    let Update { kind, n, decay_end, embedding_end, bf16_moments } = *x;
    let kind = match kind {
        OptimizerKind::AdamW => quote!(OptimizerKind::AdamW),
        OptimizerKind::Lion => quote!(OptimizerKind::Lion),
    };
    let [n, decay_end, embedding_end] = [n, decay_end, embedding_end].map(u);
    quote!(Update { kind: #kind, n: #n, decay_end: #decay_end, embedding_end: #embedding_end,
        bf16_moments: #bf16_moments })
}

/// `op` as a Rust expression (the generated module imports `dsv3c_runtime::op::*`).
pub fn op_tokens(op: &Op) -> TokenStream {
    match op {
        Op::Zero { n } => {
            let n = u(*n);
            quote!(Op::Zero { n: #n })
        }
        Op::Quantize { mats, rows, cols, tile, scaling: sc } => {
            let (mats, rows, cols, tile, sc) = (u(*mats), u(*rows), u(*cols), u(*tile), scaling(*sc));
            quote!(Op::Quantize { mats: #mats, rows: #rows, cols: #cols, tile: #tile, scaling: #sc })
        }
        Op::Dequantize { rows, cols, tile, scaling: sc } => {
            let (rows, cols, tile, sc) = (u(*rows), u(*cols), u(*tile), scaling(*sc));
            quote!(Op::Dequantize { rows: #rows, cols: #cols, tile: #tile, scaling: #sc })
        }
        Op::Cast { n } => {
            let n = u(*n);
            quote!(Op::Cast { n: #n })
        }
        Op::AddScaled { n, alpha } => {
            let (n, alpha) = (u(*n), f(*alpha));
            quote!(Op::AddScaled { n: #n, alpha: #alpha })
        }
        Op::Add { n } => {
            let n = u(*n);
            quote!(Op::Add { n: #n })
        }
        Op::Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant: q } => {
            let [m, n, k, lda, ldb, ldc] = [*m, *n, *k, *lda, *ldb, *ldc].map(u);
            let q = quant(*q);
            quote!(Op::Gemm { m: #m, n: #n, k: #k, lda: #lda, ldb: #ldb, ldc: #ldc, ta: #ta, tb: #tb,
                accumulate: #accumulate, quant: #q })
        }
        Op::Embedding { n, vocab, d } => {
            let [n, vocab, d] = [*n, *vocab, *d].map(u);
            quote!(Op::Embedding { n: #n, vocab: #vocab, d: #d })
        }
        Op::EmbeddingBwd { n, vocab, d } => {
            let [n, vocab, d] = [*n, *vocab, *d].map(u);
            quote!(Op::EmbeddingBwd { n: #n, vocab: #vocab, d: #d })
        }
        Op::ShiftTokens { batch, seq, shift } => {
            let [batch, seq, shift] = [*batch, *seq, *shift].map(u);
            quote!(Op::ShiftTokens { batch: #batch, seq: #seq, shift: #shift })
        }
        Op::RmsNorm { rows, d, in_stride, eps } => {
            let [rows, d, in_stride] = [*rows, *d, *in_stride].map(u);
            let eps = f(*eps);
            quote!(Op::RmsNorm { rows: #rows, d: #d, in_stride: #in_stride, eps: #eps })
        }
        Op::RmsNormBwd { rows, d, in_stride } => {
            let [rows, d, in_stride] = [*rows, *d, *in_stride].map(u);
            quote!(Op::RmsNormBwd { rows: #rows, d: #d, in_stride: #in_stride })
        }
        Op::Dyt { rows, d, in_stride } => {
            let [rows, d, in_stride] = [*rows, *d, *in_stride].map(u);
            quote!(Op::Dyt { rows: #rows, d: #d, in_stride: #in_stride })
        }
        Op::DytBwd { rows, d, in_stride } => {
            let [rows, d, in_stride] = [*rows, *d, *in_stride].map(u);
            quote!(Op::DytBwd { rows: #rows, d: #d, in_stride: #in_stride })
        }
        Op::Rope { tokens, seq, heads, row_stride, head_stride, offset, dim, freqs: fr, inverse } => {
            let [tokens, seq, heads, row_stride, head_stride, offset, dim] =
                [*tokens, *seq, *heads, *row_stride, *head_stride, *offset, *dim].map(u);
            let fr = freqs(fr);
            quote!(Op::Rope { tokens: #tokens, seq: #seq, heads: #heads, row_stride: #row_stride,
                head_stride: #head_stride, offset: #offset, dim: #dim, freqs: #fr, inverse: #inverse })
        }
        Op::Attention(a) => {
            let a = attn(a);
            quote!(Op::Attention(#a))
        }
        Op::AttentionBwd(a) => {
            let a = attn(a);
            quote!(Op::AttentionBwd(#a))
        }
        Op::SwiGlu { n } => {
            let n = u(*n);
            quote!(Op::SwiGlu { n: #n })
        }
        Op::SwiGluBwd { n } => {
            let n = u(*n);
            quote!(Op::SwiGluBwd { n: #n })
        }
        Op::Router(r) => {
            let r = route(r);
            quote!(Op::Router(#r))
        }
        Op::RouterBwd(r) => {
            let r = route(r);
            quote!(Op::RouterBwd(#r))
        }
        Op::Dispatch { tokens, experts, top_k, d } => {
            let [tokens, experts, top_k, d] = [*tokens, *experts, *top_k, *d].map(u);
            quote!(Op::Dispatch { tokens: #tokens, experts: #experts, top_k: #top_k, d: #d })
        }
        Op::DispatchBwd { tokens, top_k, d } => {
            let [tokens, top_k, d] = [*tokens, *top_k, *d].map(u);
            quote!(Op::DispatchBwd { tokens: #tokens, top_k: #top_k, d: #d })
        }
        Op::GroupedGemm { experts, rows, n, k, mode: m, quant: q } => {
            let [experts, rows, n, k] = [*experts, *rows, *n, *k].map(u);
            let (m, q) = (mode(*m), quant(*q));
            quote!(Op::GroupedGemm { experts: #experts, rows: #rows, n: #n, k: #k, mode: #m, quant: #q })
        }
        Op::Combine { tokens, top_k, d } => {
            let [tokens, top_k, d] = [*tokens, *top_k, *d].map(u);
            quote!(Op::Combine { tokens: #tokens, top_k: #top_k, d: #d })
        }
        Op::CombineBwd { tokens, top_k, d } => {
            let [tokens, top_k, d] = [*tokens, *top_k, *d].map(u);
            quote!(Op::CombineBwd { tokens: #tokens, top_k: #top_k, d: #d })
        }
        Op::CrossEntropy { batch, seq, vocab, shift, grad_scale } => {
            let [batch, seq, vocab, shift] = [*batch, *seq, *vocab, *shift].map(u);
            let g = f(*grad_scale);
            quote!(Op::CrossEntropy { batch: #batch, seq: #seq, vocab: #vocab, shift: #shift, grad_scale: #g })
        }
        Op::BalanceLoss(b) => {
            let b = balance(b);
            quote!(Op::BalanceLoss(#b))
        }
        Op::BalanceLossBwd { balance: b, grad_scale } => {
            let (b, g) = (balance(b), f(*grad_scale));
            quote!(Op::BalanceLossBwd { balance: #b, grad_scale: #g })
        }
        Op::ExpertStats { tokens, experts, top_k } => {
            let [tokens, experts, top_k] = [*tokens, *experts, *top_k].map(u);
            quote!(Op::ExpertStats { tokens: #tokens, experts: #experts, top_k: #top_k })
        }
        Op::BiasUpdate { experts, gamma } => {
            let (experts, gamma) = (u(*experts), f(*gamma));
            quote!(Op::BiasUpdate { experts: #experts, gamma: #gamma })
        }
        Op::GradNorm { n } => {
            let n = u(*n);
            quote!(Op::GradNorm { n: #n })
        }
        Op::Optimizer(x) => {
            let x = update(x);
            quote!(Op::Optimizer(#x))
        }
        Op::AllReduce { n, ranks, group } => {
            let ([n, ranks], g) = ([*n, *ranks].map(u), comm_group(*group));
            quote!(Op::AllReduce { n: #n, ranks: #ranks, group: #g })
        }
        Op::AllGather { n, ranks, group } => {
            let ([n, ranks], g) = ([*n, *ranks].map(u), comm_group(*group));
            quote!(Op::AllGather { n: #n, ranks: #ranks, group: #g })
        }
        Op::ExpertCounts(x) => {
            let x = exchange(x);
            quote!(Op::ExpertCounts(#x))
        }
        Op::ExpertExchange { exchange: x, d, dir } => {
            let (x, d) = (exchange(x), u(*d));
            let dir = match dir {
                Direction::Dispatch => quote!(Direction::Dispatch),
                Direction::Return => quote!(Direction::Return),
            };
            quote!(Op::ExpertExchange { exchange: #x, d: #d, dir: #dir })
        }
        Op::Send { n, peer } => {
            let (n, peer) = (u(*n), peer_tokens(*peer));
            quote!(Op::Send { n: #n, peer: #peer })
        }
        Op::Recv { n, peer } => {
            let (n, peer) = (u(*n), peer_tokens(*peer));
            quote!(Op::Recv { n: #n, peer: #peer })
        }
        Op::SumSquares { n } => {
            let n = u(*n);
            quote!(Op::SumSquares { n: #n })
        }
        Op::SumParts { parts, root } => {
            let parts = u(*parts);
            quote!(Op::SumParts { parts: #parts, root: #root })
        }
        Op::RopeAt { tokens, per_seq, heads, row_stride, head_stride, offset, dim, freqs: fr } => {
            let [tokens, per_seq, heads, row_stride, head_stride, offset, dim] =
                [*tokens, *per_seq, *heads, *row_stride, *head_stride, *offset, *dim].map(u);
            let fr = freqs(fr);
            quote!(Op::RopeAt { tokens: #tokens, per_seq: #per_seq, heads: #heads, row_stride: #row_stride,
                head_stride: #head_stride, offset: #offset, dim: #dim, freqs: #fr })
        }
        Op::CacheWrite { cache: c, per_seq, kva_stride } => {
            let (c, per_seq, kva_stride) = (cache(c), u(*per_seq), u(*kva_stride));
            quote!(Op::CacheWrite { cache: #c, per_seq: #per_seq, kva_stride: #kva_stride })
        }
        Op::LatentAttention(a) => {
            let LatentAttn { cache: c, per_seq, heads, nope, scale, window: w } = *a;
            let (c, w, scale) = (cache(&c), window(w), f(scale));
            let [per_seq, heads, nope] = [per_seq, heads, nope].map(u);
            quote!(Op::LatentAttention(LatentAttn { cache: #c, per_seq: #per_seq, heads: #heads, nope: #nope,
                scale: #scale, window: #w }))
        }
        Op::AbsorbQuery(h) => {
            let h = heads(h);
            quote!(Op::AbsorbQuery(#h))
        }
        Op::AbsorbOutput(h) => {
            let h = heads(h);
            quote!(Op::AbsorbOutput(#h))
        }
    }
}

/// A collective's group, by its full path (the generated graph imports the op module only).
fn comm_group(g: CommGroup) -> TokenStream {
    match g {
        CommGroup::World => quote!(dsv3c_runtime::comm::CommGroup::World),
        CommGroup::Data => quote!(dsv3c_runtime::comm::CommGroup::Data),
        CommGroup::Expert => quote!(dsv3c_runtime::comm::CommGroup::Expert),
        CommGroup::ExpertData => quote!(dsv3c_runtime::comm::CommGroup::ExpertData),
        CommGroup::Pipeline => quote!(dsv3c_runtime::comm::CommGroup::Pipeline),
        CommGroup::Ends => quote!(dsv3c_runtime::comm::CommGroup::Ends),
    }
}

fn exchange(x: &Exchange) -> TokenStream {
    let [experts, ranks, rows, capacity] = [x.experts, x.ranks, x.rows, x.capacity].map(Literal::usize_unsuffixed);
    quote!(Exchange { experts: #experts, ranks: #ranks, rows: #rows, capacity: #capacity })
}

fn peer_tokens(p: Peer) -> TokenStream {
    match p {
        Peer::Prev => quote!(Peer::Prev),
        Peer::Next => quote!(Peer::Next),
    }
}
