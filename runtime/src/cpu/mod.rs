//! The CPU backend: the reference implementation of every [`Op`], the numerical ground truth.
//!
//! It computes in f32 over the four arenas of a [`Program`]; rows are spread over threads with
//! rayon and matrix products go through the `gemm` crate. An f32 argument is used in place; an
//! argument stored in another dtype (bf16, i32) is decoded into an f32 buffer for the launch and,
//! if the op writes it, encoded back (rounded to nearest-even) afterwards — exactly the bytes a
//! GPU kernel that converts on load and store leaves. Nothing else allocates per launch except
//! the few ops that need a per-row scratch row (attention, router).

// Kernels index several arrays with one loop variable; iterator chains would hide the math.
#![allow(clippy::needless_range_loop)]

mod attention;

pub mod collective;
mod decode;
mod dense;
mod loss;
mod math;
mod moe;
mod norm;
mod optim;
mod rope;

pub use moe::expert_index;

use crate::comm::Comms;
use crate::dtype::{self, DType};
use crate::numerics;
use crate::op::{Op, Quant};
use crate::program::{check_kernel, check_slice, Backend, BackendError, Kernel, Launch, Program, Slice, Space};
use crate::signature::Role;

/// The arenas of one Program on the CPU, as f32 words (byte arenas, 4-byte aligned).
pub struct Cpu {
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    /// The optimizer's moments.
    pub optim: Vec<f32>,
    /// The weights' compute copy: `weight_bytes` rounded up to whole words.
    pub weights: Vec<f32>,
    /// The activation arena: `act_bytes` rounded up to whole words.
    pub act: Vec<f32>,
    /// The rank's communicators, which run the Program's collectives (none: a single-rank
    /// backend, which refuses a collective over more than one rank).
    pub comms: Option<Comms>,
}

/// The slices of one launch: inputs read, outputs written. Built from raw pointers into the
/// arenas (or into decoded copies) by [`Backend::launch`] after `check_launch` proved every
/// slice in bounds and no written argument overlapping another (or by [`run_op`], whose
/// arguments are separate vectors).
pub(crate) struct Args {
    ptrs: Vec<(*mut f32, usize)>,
}

impl Args {
    /// Input `i`.
    pub fn r(&self, i: usize) -> &[f32] {
        let (p, n) = self.ptrs[i];
        // SAFETY: the pointer and length come from a live arena slice checked in bounds and
        // aligned, or from a whole vector; no output of this launch overlaps it (check_launch).
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
        Cpu::for_programs(&[p])
    }

    /// Zeroed arenas large enough for each of `programs` (decode programs of one model share the
    /// parameters, the weights' copy and the cache; each arena is the largest of theirs).
    pub fn for_programs(programs: &[&Program]) -> Cpu {
        let max = |f: &dyn Fn(&Program) -> usize| programs.iter().map(|p| f(p)).max().unwrap_or(0);
        Cpu {
            params: vec![0.0; max(&|p| p.arena_bytes(Space::Param) / 4)],
            grads: vec![0.0; max(&|p| p.param_len)],
            optim: vec![0.0; max(&|p| p.arena_bytes(Space::Optim)).div_ceil(4)],
            weights: vec![0.0; max(&|p| p.weight_bytes).div_ceil(4)],
            act: vec![0.0; max(&|p| p.act_bytes).div_ceil(4)],
            comms: None,
        }
    }

    /// Zeroed arenas for `p`, whose collectives run over `comms` (one rank of a parallel job).
    pub fn with_comms(p: &Program, comms: Comms) -> Cpu {
        Cpu { comms: Some(comms), ..Cpu::new(p) }
    }

    /// The words of the arena of `space`.
    fn words(&self, space: Space) -> &Vec<f32> {
        match space {
            Space::Param => &self.params,
            Space::Grad => &self.grads,
            Space::Optim => &self.optim,
            Space::Weights => &self.weights,
            Space::Act => &self.act,
        }
    }

    fn words_mut(&mut self, space: Space) -> &mut Vec<f32> {
        match space {
            Space::Param => &mut self.params,
            Space::Grad => &mut self.grads,
            Space::Optim => &mut self.optim,
            Space::Weights => &mut self.weights,
            Space::Act => &mut self.act,
        }
    }

    /// Bytes of the arena of `space`.
    pub fn arena_bytes(&self, space: Space) -> usize {
        self.words(space).len() * 4
    }

    /// The bytes of a checked slice.
    fn bytes(&self, s: Slice) -> &[u8] {
        &bytemuck::cast_slice(self.words(s.space))[s.offset..s.end()]
    }

    fn bytes_mut(&mut self, s: Slice) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(self.words_mut(s.space))[s.offset..s.end()]
    }

    /// An f32 slice in place (checked: in bounds, aligned, f32).
    fn f32_range(&self, s: Slice) -> std::ops::Range<usize> {
        debug_assert_eq!(s.dtype, DType::F32);
        s.offset / 4..s.offset / 4 + s.len
    }

    /// Runs launches in order.
    pub fn run(&mut self, p: &Program, launches: &[Launch]) -> Result<(), BackendError> {
        p.run(launches, self)
    }

    /// One batch's losses and gradients from zero: `tokens` written, then the program's start
    /// (zeroing the gradients), forward and backward lists.
    pub fn gradients(&mut self, p: &Program, tokens: &[f32]) -> Result<(), BackendError> {
        self.write(p.io.tokens, tokens)?;
        for list in [&p.start, &p.forward, &p.backward] {
            p.run(list, self)?;
        }
        Ok(())
    }

    /// The values of a slice, decoded (panics outside the arena; [`Backend::read`] is the
    /// checked form).
    pub fn read(&self, s: Slice) -> Vec<f32> {
        let mut out = vec![0.0; s.len];
        dtype::decode(s.dtype, self.bytes(s), &mut out);
        out
    }
}

impl Backend for Cpu {
    fn launch(&mut self, kernel: &Kernel, args: &[Slice]) -> Result<(), BackendError> {
        check_kernel(kernel, args, |s| self.arena_bytes(s))?;
        let op = &kernel.op;
        let sig = op.signature();
        // Arguments stored in another dtype than f32, decoded for the launch (an overwritten
        // output too: a strided one leaves the elements between its rows as they were).
        let mut decoded: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, s) in args.iter().enumerate() {
            if s.dtype != DType::F32 {
                decoded.push((i, Cpu::read(self, *s)));
            }
        }
        let mut ptrs = Vec::with_capacity(args.len());
        for (i, s) in args.iter().enumerate() {
            ptrs.push(match decoded.iter_mut().find(|d| d.0 == i) {
                Some((_, v)) => (v.as_mut_ptr(), v.len()),
                None => {
                    let r = self.f32_range(*s);
                    // SAFETY: `check_launch` proved the slice inside its arena and aligned, so the
                    // offset pointer stays within the allocation.
                    (unsafe { self.words_mut(s.space).as_mut_ptr().add(r.start) }, s.len)
                }
            });
        }
        let a = Args { ptrs };
        if op.is_collective() {
            collective::run(op, &a, self.comms.as_ref()).map_err(BackendError::Device)?;
        } else {
            execute(op, &a);
        }
        for (i, v) in &decoded {
            if matches!(sig[*i].role, Role::Out(_)) {
                let s = args[*i];
                dtype::encode(s.dtype, v, self.bytes_mut(s));
            }
        }
        Ok(())
    }

    fn read(&mut self, s: Slice) -> Result<Vec<f32>, BackendError> {
        check_slice(s, self.arena_bytes(s.space))?;
        Ok(Cpu::read(self, s))
    }

    fn write(&mut self, s: Slice, data: &[f32]) -> Result<(), BackendError> {
        check_slice(s, self.arena_bytes(s.space))?;
        if data.len() != s.len {
            return Err(BackendError::Length { slice: s, data: data.len() });
        }
        if s.dtype == DType::F32 {
            let r = self.f32_range(s);
            self.words_mut(s.space)[r].copy_from_slice(data);
        } else {
            dtype::encode(s.dtype, data, self.bytes_mut(s));
        }
        Ok(())
    }

    fn zero(&mut self, s: Slice) -> Result<(), BackendError> {
        check_slice(s, self.arena_bytes(s.space))?;
        self.bytes_mut(s).fill(0);
        Ok(())
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
        Cast { .. } => a.w(1).copy_from_slice(a.r(0)),
        AddScaled { alpha, .. } => dense::add_scaled(a.r(0), a.w(1), alpha),
        Add { .. } => dense::add(a.r(0), a.r(1), a.w(2)),
        Quantize { mats, rows, cols, tile, scaling } => {
            let (n, per) = (rows * cols, scaling.count(rows, cols, tile));
            let (x, q, s) = (a.r(0), a.w(1), a.w(2));
            for i in 0..mats {
                let (q, s) = (&mut q[i * n..(i + 1) * n], &mut s[i * per..(i + 1) * per]);
                numerics::quantize(&x[i * n..(i + 1) * n], rows, cols, tile, scaling, q, s);
            }
        }
        Dequantize { rows, cols, tile, scaling } => {
            a.w(2).copy_from_slice(&numerics::dequantize(a.r(0), a.r(1), rows, cols, cols, tile, scaling))
        }
        Gemm { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant } => {
            let shape = dense::GemmShape { m, n, k, lda, ldb, ldc, ta, tb, accumulate, quant };
            match quant {
                Quant::Fp8Stored { .. } => dense::gemm_fp8_stored(shape, (a.r(0), a.r(1)), (a.r(2), a.r(3)), a.w(4)),
                _ => dense::gemm(shape, a.r(0), a.r(1), a.w(2)),
            }
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
        GroupedGemm { experts, n, k, mode, quant, .. } => match quant.grouped(mode) {
            Quant::Fp8Stored { .. } => moe::grouped_gemm_fp8_stored(
                experts,
                n,
                k,
                mode,
                quant,
                [a.r(0), a.r(1), a.r(2), a.r(3), a.r(4)],
                a.w(5),
            ),
            _ => moe::grouped_gemm(experts, n, k, mode, quant, [a.r(0), a.r(1), a.r(2)], a.w(3)),
        },
        Combine { tokens, top_k, d } => moe::combine(tokens, top_k, d, a.r(0), a.r(1), a.r(2), a.w(3)),
        CombineBwd { tokens, top_k, d } => {
            moe::combine_bwd(tokens, top_k, d, [a.r(0), a.r(1), a.r(2), a.r(3), a.r(4)], a.w(5), a.w(6))
        }
        CrossEntropy { batch, seq, vocab, shift, grad_scale } => {
            loss::cross_entropy(a.w(0), a.r(1), a.w(2), batch, seq, vocab, shift, grad_scale)
        }
        BalanceLoss(ref b) => loss::balance(b, a.r(0), a.r(1), a.w(2)),
        BalanceLossBwd { ref balance, grad_scale } => loss::balance_bwd(balance, grad_scale, a.r(0), a.r(1), a.w(2)),
        ExpertStats { experts, .. } => moe::expert_stats(experts, a.r(0), a.r(1), a.w(2)),
        BiasUpdate { experts, gamma } => {
            if crate::op::scalars::update_applies(a.r(0), a.r(1)[0]) {
                moe::bias_update(experts, gamma, a.r(2), a.w(3))
            }
        }
        GradNorm { .. } => optim::grad_norm(a.r(0), a.w(1), a.w(2)),
        RopeAt { .. } => decode::rope_at(op, a.r(0), a.w(1)),
        CacheWrite { ref cache, per_seq, kva_stride } => {
            let (latent, scales, rope) = match cache.fp8_tile {
                Some(_) => (a.w(3), a.w(4), a.w(5)),
                None => (a.w(3), &mut [][..], a.w(4)),
            };
            decode::cache_write(cache, per_seq, kva_stride, a.r(0), a.r(1), a.r(2), latent, scales, rope)
        }
        LatentAttention(ref at) => {
            let (cache, o) = match at.cache.fp8_tile {
                Some(_) => (decode::CacheView { latent: a.r(3), scales: a.r(4), rope: a.r(5) }, a.w(6)),
                None => (decode::CacheView { latent: a.r(3), scales: &[], rope: a.r(4) }, a.w(5)),
            };
            decode::latent_attention(at, a.r(0), a.r(1), a.r(2), cache, o)
        }
        AbsorbQuery(ref h) => decode::absorb_query(h, a.r(0), a.r(1), a.w(2)),
        AbsorbOutput(ref h) => decode::absorb_output(h, a.r(0), a.r(1), a.w(2)),
        Optimizer(ref u) => {
            let v = match u.kind {
                crate::op::OptimizerKind::AdamW => Some(a.w(5)),
                crate::op::OptimizerKind::Lion => None,
            };
            optim::step(u, [a.r(0), a.r(1), a.r(2)], a.w(3), a.w(4), v)
        }
        SumSquares { .. } => {
            optim::sum_squares(a.r(0), a.w(1));
        }
        SumParts { root, .. } => optim::sum_parts(a.r(0), a.w(1), root),
        // A job of one rank (the backends run collectives through their communicator before
        // they get here): the data stays as it is.
        AllReduce { ranks, .. } | AllGather { ranks, .. } => {
            assert_eq!(ranks, 1, "{}: a collective over {ranks} ranks needs a communicator", op.family())
        }
        ExpertCounts(_) | ExpertExchange { .. } | Send { .. } | Recv { .. } => {
            panic!("{}: a collective needs the rank's communicators", op.family())
        }
    }
}
