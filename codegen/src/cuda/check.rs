//! Static checks that need no GPU: every launch's grid, block and shared memory within sm_90 limits, and
//! every buffer a kernel touches inside the slice (and so the arena offsets) the plan gave it.

use dsv3c_runtime::op::{GroupedMode, Op};
use dsv3c_runtime::Program;

use super::{CudaKernel, EmitError};

/// sm_90 limits.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
pub const MAX_GRID: [u64; 3] = [(1 << 31) - 1, 65535, 65535];
/// Shared memory a block may use on sm_90 (static + dynamic, after opting in).
pub const MAX_SMEM_PER_BLOCK: u32 = 227 * 1024;
/// Static shared memory a kernel may declare.
pub const MAX_STATIC_SMEM: u32 = 48 * 1024;

/// Launch shapes within the hardware's limits.
pub fn limits(k: &CudaKernel) -> Result<(), EmitError> {
    let fail = |why: String| Err(EmitError::Limits { stem: k.stem.clone(), why });
    for e in &k.entries {
        if e.block == 0 || e.block > MAX_THREADS_PER_BLOCK || e.block % 32 != 0 {
            return fail(format!("{}: block of {} threads", e.name, e.block));
        }
        for (d, (&g, &max)) in e.grid.iter().zip(&MAX_GRID).enumerate() {
            if g == 0 || g > max {
                return fail(format!("{}: grid dimension {d} is {g} (limit {max})", e.name));
            }
        }
        if e.static_smem > MAX_STATIC_SMEM {
            return fail(format!("{}: {} B of static shared memory (limit {MAX_STATIC_SMEM})", e.name, e.static_smem));
        }
        if e.static_smem + e.dynamic_smem > MAX_SMEM_PER_BLOCK {
            return fail(format!(
                "{}: {} B of shared memory (limit {MAX_SMEM_PER_BLOCK})",
                e.name,
                e.static_smem + e.dynamic_smem
            ));
        }
    }
    Ok(())
}

/// Elements of each argument the op's kernel may touch (the furthest index plus one), in launch order.
pub fn footprint(op: &Op) -> Vec<usize> {
    use Op::*;
    let span2 = |rows: usize, stride: usize, width: usize| if rows == 0 { 0 } else { (rows - 1) * stride + width };
    match *op {
        Zero { n } => vec![n],
        AddScaled { n, .. } => vec![n, n],
        Add { n } => vec![n, n, n],
        Gemm { m, n, k, lda, ldb, ldc, ta, tb, .. } => {
            if m == 0 || n == 0 {
                return vec![0, 0, 0];
            }
            let a = if k == 0 {
                0
            } else if ta {
                span2(k, lda, m)
            } else {
                span2(m, lda, k)
            };
            let b = if k == 0 {
                0
            } else if tb {
                span2(n, ldb, k)
            } else {
                span2(k, ldb, n)
            };
            vec![a, b, span2(m, ldc, n)]
        }
        Embedding { n, vocab, d } => vec![n, vocab * d, n * d],
        EmbeddingBwd { n, vocab, d } => vec![n, n * d, vocab * d],
        ShiftTokens { batch, seq, .. } => vec![batch * seq, batch * seq],
        RmsNorm { rows, d, in_stride, .. } => vec![span2(rows, in_stride, d), d, rows * d, rows],
        RmsNormBwd { rows, d, in_stride } => {
            vec![span2(rows, in_stride, d), d, rows, rows * d, span2(rows, in_stride, d), d]
        }
        Dyt { rows, d, in_stride } => vec![span2(rows, in_stride, d), d, d, 1, rows * d],
        DytBwd { rows, d, in_stride } => {
            vec![span2(rows, in_stride, d), d, 1, rows * d, span2(rows, in_stride, d), d, d, 1]
        }
        Rope { tokens, heads, row_stride, head_stride, offset, dim, .. } => {
            vec![if tokens == 0 || heads == 0 {
                0
            } else {
                (tokens - 1) * row_stride + (heads - 1) * head_stride + offset + dim
            }]
        }
        Attention(a) | AttentionBwd(a) => {
            let rows = a.batch * a.seq;
            let q = rows * a.heads * (a.nope + a.rope);
            let kvb = rows * a.heads * (a.nope + a.v);
            let kva = span2(rows, a.kpe_stride, a.kpe_offset + a.rope);
            let (o, lse) = (rows * a.heads * a.v, rows * a.heads);
            if matches!(op, Attention(_)) {
                vec![q, kvb, kva, o, lse]
            } else {
                vec![q, kvb, kva, o, lse, o, q, kvb, kva]
            }
        }
        SwiGlu { n } => vec![n; 3],
        SwiGluBwd { n } => vec![n; 5],
        Router(r) => {
            vec![r.tokens * r.experts, r.experts, r.tokens * r.experts, r.tokens * r.top_k, r.tokens * r.top_k]
        }
        RouterBwd(r) => {
            let (te, tk) = (r.tokens * r.experts, r.tokens * r.top_k);
            vec![te, tk, tk, te, te]
        }
        Dispatch { tokens, experts, top_k, d } => {
            let n = tokens * top_k;
            vec![n, tokens * d, n, n, experts + 1, n * d]
        }
        DispatchBwd { tokens, top_k, d } => vec![tokens * top_k, tokens * top_k * d, tokens * d],
        GroupedGemm { experts, rows, n, k, mode, .. } => {
            let w = experts * n * k;
            match mode {
                GroupedMode::Forward => vec![experts + 1, rows * k, w, rows * n],
                GroupedMode::DataGrad => vec![experts + 1, rows * n, w, rows * k],
                GroupedMode::WeightGrad => vec![experts + 1, rows * k, rows * n, w],
            }
        }
        Combine { tokens, top_k, d } => vec![tokens * top_k, tokens * top_k, tokens * top_k * d, tokens * d],
        CombineBwd { tokens, top_k, d } => {
            let n = tokens * top_k;
            vec![n, n, n, n * d, tokens * d, n * d, n]
        }
        CrossEntropy { batch, seq, vocab, .. } => vec![batch * seq * vocab, batch * seq, 1],
        BalanceLoss(b) => vec![b.batch * b.seq * b.experts, b.batch * b.seq * b.top_k, 1],
        BalanceLossBwd { balance: b, .. } => {
            vec![b.batch * b.seq * b.experts, b.batch * b.seq * b.top_k, b.batch * b.seq * b.experts]
        }
        ExpertStats { tokens, experts, top_k } => vec![tokens * top_k, tokens * experts, experts + 2],
        BiasUpdate { experts, .. } => vec![experts, experts],
        GradNorm { n } => vec![n, n.div_ceil(dsv3c_runtime::op::GRAD_NORM_CHUNK).max(1), 1],
        Optimizer(u) => {
            let mut v = vec![dsv3c_runtime::op::scalars::LEN, 1, u.n, u.n, u.n];
            if u.kind == dsv3c_runtime::op::OptimizerKind::AdamW {
                v.push(u.n);
            }
            v
        }
    }
}

/// Every launch's arguments cover what its kernel touches (the slices themselves lie inside their arenas:
/// `Program::check`).
pub fn footprints(p: &Program) -> Result<(), EmitError> {
    p.check().map_err(|e| EmitError::Limits { stem: p.name.clone(), why: e.to_string() })?;
    for l in p.launches() {
        let op = &p.kernels[l.kernel].op;
        for (i, (need, s)) in footprint(op).into_iter().zip(&l.args).enumerate() {
            if need > s.len {
                return Err(EmitError::Footprint {
                    note: l.note.clone(),
                    arg: i,
                    name: op.family().to_string(),
                    need,
                    have: s.len,
                });
            }
        }
    }
    Ok(())
}
