//! Emitters for the dense ops: elementwise arithmetic, GEMM (f32 SIMT, or bf16/FP8 on tensor cores with
//! quantize-on-load), embedding forward/backward, token shifting, SwiGLU.

use dsv3c_runtime::op::{Quant, Scaling};

use super::source::Builder;
use super::{elementwise_grid, tag};

const GEMM_F32: &str = include_str!("kernels/gemm_f32.cuh");
const GEMM_MMA: &str = include_str!("kernels/gemm_mma.cuh");
const GEMM_ENTRY: &str = include_str!("kernels/gemm_entry.cuh");
const GEMM_FP8_ENTRY: &str = include_str!("kernels/gemm_fp8_entry.cuh");

/// Threads per block of both GEMM cores.
pub(crate) const GEMM_THREADS: u32 = 256;
/// Output tile (rows, columns) of the f32 SIMT core and of the tensor-core core (8 warps as 2 × 4 of
/// 32 × 32).
const F32_TILE: (u32, u32) = (64, 64);
const MMA_TILE: (u32, u32) = (64, 128);
/// Bytes of one operand row of a K tile in the tensor-core core's shared memory (128, padded).
const ROW_BYTES: u32 = 144;

/// Static shared memory of the GEMM cores (the NVRTC gate checks them against ptxas).
pub(crate) const F32_SMEM: u32 = 2 * 16 * (F32_TILE.0 + 4) * 4;
/// The FP8 core's: operand tiles, per-row and per-column scales, and the amax scratch.
pub(crate) const MMA_SMEM: u32 = (MMA_TILE.0 + MMA_TILE.1) * ROW_BYTES + (MMA_TILE.0 + MMA_TILE.1 + GEMM_THREADS) * 4;
/// The bf16 core's: the operand tiles alone (the scales and the amax scratch are FP8's; ptxas drops
/// them when FP8 is false).
pub(crate) const MMA_BF16_SMEM: u32 = (MMA_TILE.0 + MMA_TILE.1) * ROW_BYTES;
/// The core's over stored E4M3 operands: the tiles and their scales (no amax scratch).
pub(crate) const MMA_FP8_STORED_SMEM: u32 = (MMA_TILE.0 + MMA_TILE.1) * ROW_BYTES + (MMA_TILE.0 + MMA_TILE.1) * 4;

/// One GEMM core for a storage format: its source, output tile, static shared memory and file prefix.
pub(crate) struct GemmCore {
    pub source: &'static str,
    pub bm: u64,
    pub bn: u64,
    pub smem: u32,
    pub prefix: &'static str,
}

impl GemmCore {
    /// The core's geometry as the constants its source reads (`BM`, `BN`, `THREADS`).
    pub fn consts(&self, b: Builder) -> Builder {
        b.int("BM", self.bm as usize).int("BN", self.bn as usize).int("THREADS", GEMM_THREADS as usize)
    }
}

/// The GEMM core for a storage format.
pub(crate) fn gemm_core(quant: Quant) -> GemmCore {
    let (source, (bm, bn), smem, prefix) = match quant {
        Quant::None => (GEMM_F32, F32_TILE, F32_SMEM, "gemm_f32"),
        Quant::Bf16 => (GEMM_MMA, MMA_TILE, MMA_BF16_SMEM, "gemm_bf16"),
        Quant::Fp8 { .. } => (GEMM_MMA, MMA_TILE, MMA_SMEM, "fp8_gemm"),
        Quant::Fp8Stored { .. } => (GEMM_MMA, MMA_TILE, MMA_FP8_STORED_SMEM, "fp8s_gemm"),
    };
    GemmCore { source, bm: bm as u64, bn: bn as u64, smem, prefix }
}

/// The format constants the tensor-core core reads (none for f32).
pub(crate) fn quant_consts(b: Builder, quant: Quant) -> Builder {
    match quant {
        Quant::None => b,
        Quant::Bf16 => b.flag("FP8", false).flag("B_BLOCKS", false),
        Quant::Fp8 { tile, b_blocks } | Quant::Fp8Stored { tile, b_blocks } => {
            debug_assert_eq!(tile, 128, "checked by emit()");
            b.flag("FP8", true).flag("B_BLOCKS", b_blocks)
        }
    }
}

pub(crate) fn quant_math(quant: Quant) -> &'static str {
    match quant {
        Quant::None => "f32 operands, f32 accumulation (SIMT)",
        Quant::Bf16 => "operands rounded to bf16 on load, mma.sync m16n8k16, f32 accumulation, output rounded to bf16",
        Quant::Fp8 { b_blocks: true, .. } => {
            "E4M3 on load: A in 1x128 tiles, B (a weight) in 128x128 blocks; mma.sync m16n8k32, promoted every 128 of K"
        }
        Quant::Fp8 { b_blocks: false, .. } => {
            "E4M3 on load: A and B in 1x128 tiles along K; mma.sync m16n8k32, promoted every 128 of K"
        }
        Quant::Fp8Stored { b_blocks: true, .. } => {
            "E4M3 operands with their scales: A in 1x128 tiles along K, B (a weight) in 128x128 blocks; mma.sync m16n8k32, promoted every 128 of K"
        }
        Quant::Fp8Stored { b_blocks: false, .. } => {
            "E4M3 operands with their scales: A and B in 1x128 tiles along K; mma.sync m16n8k32, promoted every 128 of K"
        }
    }
}

/// E4M3 quantization of `mats` dense `rows × cols` matrices: one block of 256 threads per 128×128
/// region.
pub(crate) fn quantize(mats: usize, rows: usize, cols: usize, scaling: Scaling) -> Builder {
    let (code, how) = match scaling {
        Scaling::RowTiles => (0, "rows"),
        Scaling::ColTiles => (1, "cols"),
        Scaling::Blocks => (2, "blocks"),
    };
    Builder::new(format!("quantize_{how}_m{mats}_r{rows}_c{cols}"), "Quantize")
        .math(format!("q = e4m3(x / scale), scale = max(amax, 1e-4) / 448 per {scaling:?} group of 128"))
        .math("grid: one block per 128 x 128 region of each matrix, 256 threads")
        .int("MATS", mats)
        .int("ROWS", rows)
        .int("COLS", cols)
        .int("SCALING", code)
        .body(include_str!("kernels/quantize.cuh"))
        .entry(
            "quantize",
            [(cols as u64).div_ceil(128).max(1), (rows as u64).div_ceil(128).max(1), (mats as u64).max(1)],
            256,
            0,
            // The amax scratch of the column-tile and block forms (a row tile reduces in its warp;
            // ptxas drops the array).
            if scaling == Scaling::RowTiles { 0 } else { 256 * 4 },
        )
}

pub(crate) fn dequantize(rows: usize, cols: usize, scaling: Scaling) -> Builder {
    let (code, how) = match scaling {
        Scaling::RowTiles => (0, "rows"),
        Scaling::ColTiles => (1, "cols"),
        Scaling::Blocks => (2, "blocks"),
    };
    let n = rows * cols;
    Builder::new(format!("dequantize_{how}_r{rows}_c{cols}"), "Dequantize")
        .math(format!("x = q * scale, one scale per {scaling:?} group of 128"))
        .int("ROWS", rows)
        .int("COLS", cols)
        .int("SCALING", code)
        .body(include_str!("kernels/e4m3.cuh"))
        .body(include_str!("kernels/dequantize.cuh"))
        .entry("dequantize", elementwise_grid(n), 256, 0, 0)
}

/// A grid-stride elementwise kernel over `n` elements: file stem `{stem}_n{n}`, one entry `entry`.
fn elementwise((stem, entry): (&str, &'static str), op: &str, math: &str, n: usize, body: &'static str) -> Builder {
    Builder::new(format!("{stem}_n{n}"), op).math(math).int("N", n).body(body).entry(
        entry,
        elementwise_grid(n),
        256,
        0,
        0,
    )
}

pub(crate) fn zero(n: usize) -> Builder {
    elementwise(("zero", "zero"), "Zero", "x = 0", n, include_str!("kernels/zero.cuh"))
}

pub(crate) fn cast(n: usize) -> Builder {
    elementwise(("cast", "cast"), "Cast", "y = x (rounded to y's storage dtype)", n, include_str!("kernels/cast.cuh"))
}

pub(crate) fn add_scaled(n: usize, alpha: f32) -> Builder {
    elementwise(("add_scaled", "add_scaled"), "AddScaled", "y += alpha * x", n, include_str!("kernels/add_scaled.cuh"))
        .float("ALPHA", alpha)
}

pub(crate) fn add(n: usize) -> Builder {
    elementwise(("add", "add"), "Add", "out = a + b", n, include_str!("kernels/add.cuh"))
}

pub(crate) fn swiglu(n: usize) -> Builder {
    elementwise(("swiglu_fwd", "swiglu"), "SwiGlu", "h = silu(g) * u", n, include_str!("kernels/swiglu.cuh"))
}

pub(crate) fn swiglu_bwd(n: usize) -> Builder {
    elementwise(
        ("swiglu_bwd", "swiglu_bwd"),
        "SwiGluBwd",
        "dg += dh * u * silu'(g), du += dh * silu(g)",
        n,
        include_str!("kernels/swiglu_bwd.cuh"),
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    (lda, ldb, ldc): (usize, usize, usize),
    ta: bool,
    tb: bool,
    accumulate: bool,
    quant: Quant,
) -> Builder {
    let core = gemm_core(quant);
    let (bm, bn, prefix) = (core.bm, core.bn, core.prefix);
    let layout = format!("{}{}", if ta { "t" } else { "n" }, if tb { "t" } else { "n" });
    let b = Builder::new(format!("{prefix}_m{m}_n{n}_k{k}_{layout}{}", tag(accumulate, "_acc")), "Gemm")
        .math(format!(
            "C[m,n] {} op(A)[m,k] . op(B)[k,n]; op(A) = {}, op(B) = {}",
            if accumulate { "+=" } else { "=" },
            if ta { "A^T (A stored [k, m])" } else { "A (stored [m, k])" },
            if tb { "B^T (B stored [n, k])" } else { "B (stored [k, n])" }
        ))
        .math(quant_math(quant))
        .math(format!("grid: one block per {bm} x {bn} tile of C, {GEMM_THREADS} threads"))
        .int("M", m)
        .int("N", n)
        .int("K", k)
        .int("LDA", lda)
        .int("LDB", ldb)
        .int("LDC", ldc)
        .flag("TA", ta)
        .flag("TB", tb)
        .flag("ACCUMULATE", accumulate);
    let entry = if matches!(quant, Quant::Fp8Stored { .. }) { GEMM_FP8_ENTRY } else { GEMM_ENTRY };
    core.consts(quant_consts(b, quant)).body(core.source).body(entry).entry(
        "gemm",
        [(m as u64).div_ceil(bm).max(1), (n as u64).div_ceil(bn).max(1), 1],
        GEMM_THREADS,
        0,
        core.smem,
    )
}

pub(crate) fn embedding(n: usize, vocab: usize, d: usize) -> Builder {
    Builder::new(format!("embedding_fwd_v{vocab}_d{d}"), "Embedding")
        .math("out[i, :] = table[tokens[i], :], one block per position")
        .int("N", n)
        .int("VOCAB", vocab)
        .int("D", d)
        .body(include_str!("kernels/embedding.cuh"))
        .entry("embedding", [n as u64, 1, 1], 128, 0, 0)
}

pub(crate) fn embedding_bwd(n: usize, vocab: usize, d: usize) -> Builder {
    Builder::new(format!("embedding_bwd_v{vocab}_d{d}"), "EmbeddingBwd")
        .math("dtable[tokens[i], :] += dout[i, :], a thread per column walking positions in order (deterministic)")
        .int("N", n)
        .int("VOCAB", vocab)
        .int("D", d)
        .body(include_str!("kernels/embedding_bwd.cuh"))
        .entry("embedding_bwd", [(d as u64).div_ceil(128), 1, 1], 128, 0, 0)
}

pub(crate) fn shift_tokens(batch: usize, seq: usize, shift: usize) -> Builder {
    Builder::new(format!("shift_tokens_b{batch}_t{seq}_s{shift}"), "ShiftTokens")
        .math("out[b, i] = tokens[b, min(i + shift, seq - 1)]")
        .int("BATCH", batch)
        .int("SEQ", seq)
        .int("SHIFT", shift)
        .body(include_str!("kernels/shift_tokens.cuh"))
        .entry("shift_tokens", [((batch * seq) as u64).div_ceil(256), 1, 1], 256, 0, 0)
}
