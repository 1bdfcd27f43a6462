//! The CUDA back end: one emitter per op family writes CUDA C++ for one [`Op`] with every size, stride and
//! tile shape baked in as a compile-time constant. Each file opens with a comment naming the op, the sizes
//! it was specialized for, its launches and the math; its entry points are `extern "C"` and run in order
//! with the op's arguments (arena slices). [`emit_program`] writes every kernel of a Program — the
//! model's and the training step's (gradient norm, optimizer, routing statistics, balancing bias) —
//! and [`check`] proves the launch shapes and the buffers they touch without a GPU. NVRTC compiles the result (`dsv3c_runtime::nvrtc`).

mod attention;
pub mod check;
mod decode;
mod dense;
mod loss;
mod moe;
mod norm;
mod optim;
mod source;

use dsv3c_runtime::op::Op;
use dsv3c_runtime::program::Kernel;
use dsv3c_runtime::Program;

pub use source::{CudaKernel, Entry};

/// Why an op has no CUDA kernel.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmitError {
    #[error("{op}: {why}")]
    Unsupported { op: &'static str, why: String },
    #[error("kernel {stem}: {why}")]
    Limits { stem: String, why: String },
}

/// Blocks for a grid-stride elementwise kernel over `n` elements (256 threads each).
pub(crate) fn elementwise_grid(n: usize) -> [u64; 3] {
    [(n as u64).div_ceil(256).clamp(1, 4096), 1, 1]
}

pub(crate) fn tag(on: bool, s: &str) -> &str {
    if on {
        s
    } else {
        ""
    }
}

fn unsupported(op: &Op, why: impl Into<String>) -> EmitError {
    unsupported_family(op.family(), why)
}

pub(crate) fn unsupported_family(op: &'static str, why: impl Into<String>) -> EmitError {
    EmitError::Unsupported { op, why: why.into() }
}

/// Writes the kernel for one op over the reference storage (f32, and i32 for integers).
pub fn emit(op: &Op) -> Result<CudaKernel, EmitError> {
    emit_kernel(&Kernel::reference(op.clone()))
}

/// A kernel's device code, as the Program carries it (and as the GPU backend's emitter writes it for a
/// kernel launched without any): the CUDA file and its entries, or why there is none.
pub fn device_code(kernel: &Kernel) -> Result<dsv3c_runtime::program::DeviceCode, String> {
    emit_kernel(kernel).map(Into::into).map_err(|e| e.to_string())
}

/// Writes one of a Program's kernels: its op, for its arguments' storage dtypes. A kernel over
/// other dtypes than the reference gets another file name (its dtypes join the hash).
pub fn emit_kernel(kernel: &Kernel) -> Result<CudaKernel, EmitError> {
    use Op::*;
    let op = &kernel.op;
    if kernel.dtypes.len() != op.arity() {
        return Err(unsupported(op, format!("{} argument dtypes for {} arguments", kernel.dtypes.len(), op.arity())));
    }
    if let Some((i, (a, d))) =
        op.signature().iter().zip(&kernel.dtypes).enumerate().find(|(_, (a, d))| !a.kind.admits(**d))
    {
        return Err(unsupported(op, format!("argument {i} ({}) as {d}", a.name)));
    }
    let fp8_tile = |tile: Option<usize>| match tile {
        Some(tile) if tile != 128 => Err(unsupported(op, format!("FP8 tile {tile} (the kernels use 128)"))),
        _ => Ok(()),
    };
    let b = match op {
        Zero { n } => dense::zero(*n),
        Quantize { mats, rows, cols, tile, scaling } => {
            fp8_tile(Some(*tile))?;
            dense::quantize(*mats, *rows, *cols, *scaling)
        }
        Dequantize { rows, cols, tile, scaling } => {
            fp8_tile(Some(*tile))?;
            dense::dequantize(*rows, *cols, *scaling)
        }
        Cast { n } => dense::cast(*n),
        AddScaled { n, alpha } => dense::add_scaled(*n, *alpha),
        Add { n } => dense::add(*n),
        Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant } => {
            fp8_tile(quant.fp8_tile())?;
            dense::gemm(*m, *n, *k, (*lda, *ldb, *ldc), *ta, *tb, *accumulate, *quant)
        }
        Embedding { n, vocab, d } => dense::embedding(*n, *vocab, *d),
        EmbeddingBwd { n, vocab, d } => dense::embedding_bwd(*n, *vocab, *d),
        ShiftTokens { batch, seq, shift } => dense::shift_tokens(*batch, *seq, *shift),
        RmsNorm { rows, d, in_stride, eps } => norm::rmsnorm(*rows, *d, *in_stride, *eps),
        RmsNormBwd { rows, d, in_stride } => norm::rmsnorm_bwd(*rows, *d, *in_stride),
        Dyt { rows, d, in_stride } => norm::dyt(*rows, *d, *in_stride),
        DytBwd { rows, d, in_stride } => norm::dyt_bwd(*rows, *d, *in_stride),
        Rope { tokens, seq, heads, row_stride, head_stride, offset, dim, freqs, inverse } => {
            if dim % 2 != 0 {
                return Err(unsupported(op, format!("odd rotary dim {dim}")));
            }
            norm::rope(*tokens, *seq, *heads, *row_stride, *head_stride, *offset, *dim, freqs, *inverse)
        }
        Attention(a) => attention::forward(a),
        AttentionBwd(a) => attention::backward(a),
        SwiGlu { n } => dense::swiglu(*n),
        SwiGluBwd { n } => dense::swiglu_bwd(*n),
        Router(r) | RouterBwd(r) => {
            if r.groups > 32 || r.groups == 0 || r.experts % r.groups != 0 {
                return Err(unsupported(
                    op,
                    format!("{} experts in {} groups (at most 32 equal groups)", r.experts, r.groups),
                ));
            }
            if matches!(op, Router(_)) {
                moe::router(r)
            } else {
                moe::router_bwd(r)
            }
        }
        Dispatch { tokens, experts, top_k, d } => moe::dispatch(*tokens, *experts, *top_k, *d),
        DispatchBwd { tokens, top_k, d } => moe::dispatch_bwd(*tokens, *top_k, *d),
        GroupedGemm { experts, rows, n, k, mode, quant } => {
            fp8_tile(quant.fp8_tile())?;
            moe::grouped_gemm(*experts, *rows, *n, *k, *mode, *quant)
        }
        Combine { tokens, top_k, d } => moe::combine(*tokens, *top_k, *d),
        CombineBwd { tokens, top_k, d } => moe::combine_bwd(*tokens, *top_k, *d),
        CrossEntropy { batch, seq, vocab, shift, grad_scale } => {
            loss::cross_entropy(*batch, *seq, *vocab, *shift, *grad_scale)
        }
        BalanceLoss(x) => loss::balance(x),
        BalanceLossBwd { balance, grad_scale } => loss::balance_bwd(balance, *grad_scale),
        ExpertStats { tokens, experts, top_k } => moe::expert_stats(*tokens, *experts, *top_k),
        BiasUpdate { experts, gamma } => moe::bias_update(*experts, *gamma),
        GradNorm { n } => optim::grad_norm(*n),
        Optimizer(u) => optim::optimizer(u),
        RopeAt { tokens, per_seq, heads, row_stride, head_stride, offset, dim, freqs } => {
            if dim % 2 != 0 {
                return Err(unsupported(op, format!("odd rotary dim {dim}")));
            }
            decode::rope_at(*tokens, *per_seq, *heads, *row_stride, *head_stride, *offset, *dim, freqs)
        }
        CacheWrite { cache, per_seq, kva_stride } => {
            fp8_tile(cache.fp8_tile)?;
            decode::cache_write(cache, *per_seq, *kva_stride)
        }
        LatentAttention(a) => {
            fp8_tile(a.cache.fp8_tile)?;
            decode::latent_attention(a)?
        }
        AbsorbQuery(h) => decode::absorb_query(h),
        AbsorbOutput(h) => decode::absorb_output(h),
        SumSquares { n } => optim::sum_squares(*n),
        SumParts { parts, root } => optim::sum_parts(*parts, *root),
        AllReduce { .. } | AllGather { .. } | ExpertCounts(_) | ExpertExchange { .. } | Send { .. } | Recv { .. } => {
            return Err(unsupported(op, "a collective: the rank's communicator runs it, not a kernel"))
        }
    };
    let key = if kernel.is_reference() { format!("{op:?}") } else { format!("{op:?}{:?}", kernel.dtypes) };
    let k = b.hashed(&key).finish(&op.signature(), &kernel.dtypes);
    check::limits(&k)?;
    Ok(k)
}

/// Every kernel a Program needs, in the Program's kernel order — all but its collectives, which
/// the rank's communicator runs ([`device_kernels`] pairs them with their indices). Checks every
/// launch's footprint against its slices.
pub fn emit_program(p: &Program) -> Result<Vec<CudaKernel>, EmitError> {
    check::footprints(p)?;
    device_kernels(p).map(|(_, k)| emit_kernel(k)).collect()
}

/// The Program's kernels that run on the device (all but collectives), with their indices.
pub fn device_kernels(p: &Program) -> impl Iterator<Item = (usize, &Kernel)> {
    p.kernels.iter().enumerate().filter(|(_, k)| !k.op.is_collective())
}

/// The launch table beside the kernels (`kernels/kernels.json`): for each of the Program's kernels, in
/// order, its file and entries. Deterministic, pretty-printed JSON.
pub fn manifest(p: &Program, kernels: &[CudaKernel]) -> String {
    // Each kernel's index in the Program (past the collectives, which have no kernel file); a
    // list longer than the Program's (the decode programs' kernels together) counts on.
    let index: Vec<usize> = device_kernels(p).map(|(i, _)| i).collect();
    let files: Vec<serde_json::Value> = kernels
        .iter()
        .enumerate()
        .map(|(n, k)| {
            let i = index.get(n).copied().unwrap_or(n);
            serde_json::json!({
                "program_kernel": i,
                "file": format!("{}.cu", k.stem),
                "args": k.args,
                "dtypes": k.dtypes,
                "entries": k.entries,
            })
        })
        .collect();
    let doc = serde_json::json!({ "name": p.name, "batch": p.batch, "seq": p.seq, "kernels": files });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
