//! The CPU backend: the reference implementation of every [`Op`], the numerical ground truth.
//!
//! It computes in f32 over the three arenas of a [`Program`]; rows are spread over threads with
//! rayon and matrix products go through the `gemm` crate. Nothing allocates per launch except
//! the few ops that need a per-row scratch row (attention, router), which take it from the stack
//! or a per-thread buffer.

// Kernels index several arrays with one loop variable; iterator chains would hide the math.
#![allow(clippy::needless_range_loop)]

mod attention;

mod dense;
mod loss;
mod moe;
mod norm;
mod rope;

pub use moe::{balance_bias, expert_counts, expert_index};

use crate::op::Op;
use crate::program::{Launch, Program, Slice, Space};

/// The arenas of one Program on the CPU.
pub struct Cpu {
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub act: Vec<f32>,
}

/// The slices of one launch: inputs read, outputs written. Built from raw pointers into the
/// arenas; [`Program::check`] guarantees no output overlaps another argument of its launch.
pub(crate) struct Args {
    ptrs: Vec<(*mut f32, usize)>,
}

impl Args {
    /// Input `i`.
    pub fn r(&self, i: usize) -> &[f32] {
        let (p, n) = self.ptrs[i];
        // SAFETY: the pointer and length come from a live arena slice checked in bounds; no
        // output of this launch overlaps it (Program::check).
        unsafe { std::slice::from_raw_parts(p, n) }
    }

    /// Output `i`. Each op asks for each of its outputs once.
    #[allow(clippy::mut_from_ref)]
    pub fn w(&self, i: usize) -> &mut [f32] {
        let (p, n) = self.ptrs[i];
        // SAFETY: as above, and outputs are disjoint from every other argument, so this is the
        // only live reference to these elements while the launch runs.
        unsafe { std::slice::from_raw_parts_mut(p, n) }
    }
}

impl Cpu {
    /// Zeroed arenas for `p`.
    pub fn new(p: &Program) -> Cpu {
        Cpu { params: vec![0.0; p.param_len], grads: vec![0.0; p.param_len], act: vec![0.0; p.act_len] }
    }

    fn args(&mut self, slices: &[Slice]) -> Args {
        let ptrs = slices
            .iter()
            .map(|s| {
                let arena = match s.space {
                    Space::Param => &mut self.params,
                    Space::Grad => &mut self.grads,
                    Space::Act => &mut self.act,
                };
                assert!(s.end() <= arena.len(), "slice {s:?} outside its arena");
                // SAFETY: in bounds by the assert above.
                (unsafe { arena.as_mut_ptr().add(s.offset) }, s.len)
            })
            .collect();
        Args { ptrs }
    }

    /// Runs one op over arena slices (what generated training graphs call).
    pub fn launch(&mut self, op: &Op, args: &[Slice]) {
        let a = self.args(args);
        execute(op, &a);
    }

    /// Runs launches in order.
    pub fn run(&mut self, p: &Program, launches: &[Launch]) {
        p.run(launches, self);
    }

    /// Reads a slice.
    pub fn read(&self, s: Slice) -> &[f32] {
        let arena = match s.space {
            Space::Param => &self.params,
            Space::Grad => &self.grads,
            Space::Act => &self.act,
        };
        &arena[s.offset..s.end()]
    }

    /// Writes a slice.
    pub fn write(&mut self, s: Slice, data: &[f32]) {
        let arena = match s.space {
            Space::Param => &mut self.params,
            Space::Grad => &mut self.grads,
            Space::Act => &mut self.act,
        };
        arena[s.offset..s.end()].copy_from_slice(data);
    }
}

/// Runs one op with each argument in its own buffer (tests, and the per-op GPU parity suite).
pub fn run_op(op: &Op, args: &mut [Vec<f32>]) {
    assert_eq!(args.len(), op.arity(), "{} takes {} arguments", op.family(), op.arity());
    let a = Args { ptrs: args.iter_mut().map(|v| (v.as_mut_ptr(), v.len())).collect() };
    execute(op, &a);
}

/// Runs one op over its arguments.
pub(crate) fn execute(op: &Op, a: &Args) {
    use Op::*;
    match *op {
        Zero { .. } => a.w(0).fill(0.0),
        AddScaled { alpha, .. } => dense::add_scaled(a.r(0), a.w(1), alpha),
        Add { .. } => dense::add(a.r(0), a.r(1), a.w(2)),
        Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant } => {
            dense::gemm(dense::GemmShape { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant }, a.r(0), a.r(1), a.w(2))
        }
        Embedding { d, vocab, .. } => dense::embedding(a.r(0), a.r(1), a.w(2), d, vocab),
        EmbeddingBwd { d, vocab, .. } => dense::embedding_bwd(a.r(0), a.r(1), a.w(2), d, vocab),
        ShiftTokens { batch, seq, shift } => dense::shift_tokens(a.r(0), a.w(1), batch, seq, shift),
        RmsNorm { rows, d, in_stride, eps } => norm::rmsnorm(a.r(0), a.r(1), a.w(2), a.w(3), rows, d, in_stride, eps),
        RmsNormBwd { rows, d, in_stride } => {
            norm::rmsnorm_bwd(a.r(0), a.r(1), a.r(2), a.r(3), a.w(4), a.w(5), rows, d, in_stride)
        }
        Dyt { rows, d, in_stride } => norm::dyt(a.r(0), a.r(1), a.r(2), a.r(3), a.w(4), rows, d, in_stride),
        DytBwd { rows, d, in_stride } => {
            norm::dyt_bwd([a.r(0), a.r(1), a.r(2), a.r(3)], [a.w(4), a.w(5), a.w(6), a.w(7)], rows, d, in_stride)
        }
        Rope { .. } => rope::rope(op, a.w(0)),
        Attention(ref at) => attention::forward(at, a.r(0), a.r(1), a.r(2), a.w(3), a.w(4)),
        AttentionBwd(ref at) => {
            attention::backward(at, [a.r(0), a.r(1), a.r(2), a.r(3), a.r(4), a.r(5)], [a.w(6), a.w(7), a.w(8)])
        }
        SwiGlu { .. } => dense::swiglu(a.r(0), a.r(1), a.w(2)),
        SwiGluBwd { .. } => dense::swiglu_bwd(a.r(0), a.r(1), a.r(2), a.w(3), a.w(4)),
        Router(ref r) => moe::router(r, a.r(0), a.r(1), a.w(2), a.w(3), a.w(4)),
        RouterBwd(ref r) => moe::router_bwd(r, a.r(0), a.r(1), a.r(2), a.w(3), a.w(4)),
        Dispatch { tokens, experts, top_k, d } => {
            moe::dispatch(tokens, experts, top_k, d, a.r(0), a.r(1), [a.w(2), a.w(3), a.w(4), a.w(5)])
        }
        DispatchBwd { tokens, top_k, d } => moe::dispatch_bwd(tokens, top_k, d, a.r(0), a.r(1), a.w(2)),
        GroupedGemm { experts, n, k, mode, quant, .. } => {
            moe::grouped_gemm(experts, n, k, mode, quant, [a.r(0), a.r(1), a.r(2)], a.w(3))
        }
        Combine { tokens, top_k, d } => moe::combine(tokens, top_k, d, a.r(0), a.r(1), a.r(2), a.w(3)),
        CombineBwd { tokens, top_k, d } => {
            moe::combine_bwd(tokens, top_k, d, [a.r(0), a.r(1), a.r(2), a.r(3), a.r(4)], a.w(5), a.w(6))
        }
        CrossEntropy { batch, seq, vocab, shift, grad_scale } => {
            loss::cross_entropy(a.w(0), a.r(1), a.w(2), batch, seq, vocab, shift, grad_scale)
        }
        BalanceLoss(ref b) => loss::balance(b, a.r(0), a.r(1), a.w(2)),
        BalanceLossBwd { ref balance, grad_scale } => loss::balance_bwd(balance, grad_scale, a.r(0), a.r(1), a.w(2)),
    }
}
