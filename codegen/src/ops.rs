//! Differentiable ops on the builder: each emits its forward launches and records the launches
//! of its backward (hand-derived; the math is in `dsv3c_runtime::op`'s docs and the CPU kernels).

use dsv3c_runtime::op::{Attn, Balance, Direction, Exchange, GroupedMode, Op, Quant, Route, Scaling};

use crate::builder::{Arg, Builder, GemmRole, Tid, WeightKind};

/// A weight matrix `[n_out, n_in]` inside a parameter whose rows are `ld` wide, starting at
/// column `col` (a whole parameter has `ld = n_in`, `col = 0`).
#[derive(Debug, Clone, Copy)]
pub struct W {
    pub param: usize,
    pub n_out: usize,
    pub n_in: usize,
    pub ld: usize,
    pub col: usize,
    pub kind: WeightKind,
}

impl W {
    pub fn whole(param: usize, n_out: usize, n_in: usize) -> W {
        W { param, n_out, n_in, ld: n_in, col: 0, kind: WeightKind::Projection }
    }
    pub fn kind(self, kind: WeightKind) -> W {
        W { kind, ..self }
    }
    fn arg(&self, grad: bool) -> Arg {
        let (off, len) = (self.col, (self.n_out - 1) * self.ld + self.n_in);
        if grad {
            Arg::G { param: self.param, off, len }
        } else {
            Arg::P { param: self.param, off, len }
        }
    }
}

/// The norm weights of one norm site: RMSNorm `[w]` or DynamicTanh `[w, b, alpha]`.
#[derive(Debug, Clone, Copy)]
pub enum NormW {
    Rms { w: usize, eps: f32 },
    Dyt { w: usize, b: usize, alpha: usize },
}

/// What a MoE layer leaves for the run: the chosen experts `[tokens, top_k]`, the router scores
/// `[tokens, experts]`, and the step's routing statistics (`Op::ExpertStats`).
#[derive(Debug, Clone, Copy)]
pub struct MoeOut {
    pub idx: Tid,
    pub scores: Tid,
    pub stats: Tid,
    /// Rows dropped past the experts' capacity (expert parallelism only).
    pub dropped: Option<Tid>,
}

impl Builder {
    /// `y[rows, n_out] (+)= x[rows, n_in] · Wᵀ`. Under the FP8 recipe the three GEMMs read
    /// E4M3 operands: the weight's copy (quantized by the step, in blocks), and the activation
    /// and gradient quantized right before — in row tiles along K for the forward and data
    /// gradient, column tiles (along the tokens) for the weight gradient.
    pub fn linear_into(&mut self, x: Tid, rows: usize, w: W, y: Tid, accumulate: bool, what: &str) {
        let quant = self.precision.quant(w.kind, GemmRole::Fprop);
        let fp8 = matches!(quant, Quant::Fp8Stored { .. });
        if fp8 {
            debug_assert!(w.col == 0 && w.ld == w.n_in, "an FP8 weight is a whole parameter");
            self.fp8_weight(w.param, 1, w.n_out, w.n_in);
        }
        let wq =
            [Arg::Fp8 { param: w.param, count: 1, scales: false }, Arg::Fp8 { param: w.param, count: 1, scales: true }];
        let op = Op::Gemm {
            m: rows,
            n: w.n_out,
            k: w.n_in,
            lda: w.n_in,
            ldb: w.ld,
            ldc: w.n_out,
            ta: false,
            tb: true,
            accumulate,
            quant,
        };
        let args = if fp8 {
            let (xq, xs) = self.quantized(x, rows, w.n_in, Scaling::RowTiles);
            vec![Arg::T(xq), Arg::T(xs), wq[0], wq[1], Arg::T(y)]
        } else {
            vec![Arg::T(x), w.arg(false), Arg::T(y)]
        };
        self.launch(op, args, what);
        let what = what.to_string();
        self.on_backward(move |b| {
            let dy = b.grad(y);
            let dx = b.grad(x);
            // dx[rows, n_in] += dy[rows, n_out] · W
            let op = Op::Gemm {
                m: rows,
                n: w.n_in,
                k: w.n_out,
                lda: w.n_out,
                ldb: w.ld,
                ldc: w.n_in,
                ta: false,
                tb: false,
                accumulate: true,
                quant: b.precision.quant(w.kind, GemmRole::Dgrad),
            };
            let args = if fp8 {
                let (q, s) = b.quantized(dy, rows, w.n_out, Scaling::RowTiles);
                vec![Arg::T(q), Arg::T(s), wq[0], wq[1], Arg::T(dx)]
            } else {
                vec![Arg::T(dy), w.arg(false), Arg::T(dx)]
            };
            b.launch(op, args, &format!("{what} (data grad)"));
            // dW[n_out, n_in] += dyᵀ · x
            let op = Op::Gemm {
                m: w.n_out,
                n: w.n_in,
                k: rows,
                lda: w.n_out,
                ldb: w.n_in,
                ldc: w.ld,
                ta: true,
                tb: false,
                accumulate: true,
                quant: b.precision.quant(w.kind, GemmRole::Wgrad),
            };
            let args = if fp8 {
                let (dq, ds) = b.quantized(dy, rows, w.n_out, Scaling::ColTiles);
                let (xq, xs) = b.quantized(x, rows, w.n_in, Scaling::ColTiles);
                vec![Arg::T(dq), Arg::T(ds), Arg::T(xq), Arg::T(xs), w.arg(true)]
            } else {
                vec![Arg::T(dy), Arg::T(x), w.arg(true)]
            };
            b.launch(op, args, &format!("{what} (weight grad)"));
        });
    }

    pub fn linear(&mut self, x: Tid, rows: usize, w: W, name: &str) -> Tid {
        let y = self.tensor(name, rows * w.n_out);
        self.linear_into(x, rows, w, y, false, name);
        y
    }

    /// Normalizes `rows` rows of `d` read at `in_stride` from `x`.
    pub fn norm(&mut self, x: Tid, rows: usize, d: usize, in_stride: usize, n: NormW, name: &str) -> Tid {
        let y = self.tensor(name, rows * d);
        match n {
            NormW::Rms { w, eps } => {
                let rstd = self.tensor(format!("{name}.rstd"), rows);
                self.launch(
                    Op::RmsNorm { rows, d, in_stride, eps },
                    vec![Arg::T(x), self.p(w), Arg::T(y), Arg::T(rstd)],
                    name,
                );
                self.on_backward(move |b| {
                    let (dy, dx) = (b.grad(y), b.grad(x));
                    let args = vec![Arg::T(x), b.p(w), Arg::T(rstd), Arg::T(dy), Arg::T(dx), b.g(w)];
                    b.launch(Op::RmsNormBwd { rows, d, in_stride }, args, "rmsnorm backward");
                });
            }
            NormW::Dyt { w, b: bias, alpha } => {
                let args = vec![Arg::T(x), self.p(w), self.p(bias), self.p(alpha), Arg::T(y)];
                self.launch(Op::Dyt { rows, d, in_stride }, args, name);
                self.on_backward(move |b| {
                    let (dy, dx) = (b.grad(y), b.grad(x));
                    let args =
                        vec![Arg::T(x), b.p(w), b.p(alpha), Arg::T(dy), Arg::T(dx), b.g(w), b.g(bias), b.g(alpha)];
                    b.launch(Op::DytBwd { rows, d, in_stride }, args, "dyt backward");
                });
            }
        }
        y
    }

    /// `a + b` (the residual stream).
    pub fn add(&mut self, a: Tid, b_: Tid, name: &str) -> Tid {
        let n = self.len(a);
        let out = self.tensor(name, n);
        self.launch(Op::Add { n }, vec![Arg::T(a), Arg::T(b_), Arg::T(out)], name);
        self.on_backward(move |b| {
            let d = b.grad(out);
            for x in [a, b_] {
                let dx = b.grad(x);
                b.launch(Op::AddScaled { n, alpha: 1.0 }, vec![Arg::T(d), Arg::T(dx)], "residual backward");
            }
        });
        out
    }

    /// Rotary embedding in place (see `Op::Rope`); the backward rotates the gradient back.
    pub fn rope(&mut self, x: Tid, op: Op) {
        let Op::Rope { tokens, seq, heads, row_stride, head_stride, offset, dim, freqs, .. } = op else { return };
        self.launch(op, vec![Arg::T(x)], "rope");
        self.on_backward(move |b| {
            let dx = b.grad(x);
            let inv = Op::Rope { tokens, seq, heads, row_stride, head_stride, offset, dim, freqs, inverse: true };
            b.launch(inv, vec![Arg::T(dx)], "rope backward");
        });
    }

    pub fn attention(&mut self, a: Attn, q: Tid, kvb: Tid, kva: Tid) -> Tid {
        let rows = a.batch * a.seq * a.heads;
        let o = self.tensor("attn.o", rows * a.v);
        let lse = self.tensor("attn.lse", rows);
        self.launch(Op::Attention(a), vec![Arg::T(q), Arg::T(kvb), Arg::T(kva), Arg::T(o), Arg::T(lse)], "attention");
        self.on_backward(move |b| {
            let (dout, dq, dkvb, dkva) = (b.grad(o), b.grad(q), b.grad(kvb), b.grad(kva));
            let args = [q, kvb, kva, o, lse, dout, dq, dkvb, dkva].map(Arg::T).to_vec();
            b.launch(Op::AttentionBwd(a), args, "attention backward");
        });
        o
    }

    pub fn swiglu(&mut self, g: Tid, u: Tid, name: &str) -> Tid {
        let n = self.len(g);
        let h = self.tensor(name, n);
        self.launch(Op::SwiGlu { n }, vec![Arg::T(g), Arg::T(u), Arg::T(h)], "swiglu");
        self.on_backward(move |b| {
            let (dh, dg, du) = (b.grad(h), b.grad(g), b.grad(u));
            b.launch(Op::SwiGluBwd { n }, [g, u, dh, dg, du].map(Arg::T).to_vec(), "swiglu backward");
        });
        h
    }

    /// Embedding lookup (no gradient to the token ids).
    pub fn embedding(&mut self, tokens: Tid, table: usize, n: usize, vocab: usize, d: usize) -> Tid {
        let x = self.tensor("embed", n * d);
        self.launch(Op::Embedding { n, vocab, d }, vec![Arg::T(tokens), self.p(table), Arg::T(x)], "embedding");
        self.on_backward(move |b| {
            let dx = b.grad(x);
            let args = vec![Arg::T(tokens), Arg::T(dx), b.g(table)];
            b.launch(Op::EmbeddingBwd { n, vocab, d }, args, "embedding backward");
        });
        x
    }

    /// The fused cross-entropy: `logits` hold their own gradient afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy(
        &mut self,
        logits: Tid,
        tokens: Tid,
        loss: Tid,
        batch: usize,
        seq: usize,
        vocab: usize,
        shift: usize,
        grad_scale: f32,
    ) {
        let op = Op::CrossEntropy { batch, seq, vocab, shift, grad_scale };
        self.launch(op, vec![Arg::T(logits), Arg::T(tokens), Arg::T(loss)], "cross-entropy");
        self.on_backward(move |b| b.set_grad(logits, logits));
    }

    /// Router, dispatch, routed experts (SwiGLU over grouped GEMMs), combine into `out` (+),
    /// and the balance loss (added to `loss`) when `balance` is given. Returns the chosen experts
    /// and the router scores.
    #[allow(clippy::too_many_arguments)]
    /// DeepSeekMoE on `x`, written into `out`; returns the router's choices and scores and the
    /// step's routing statistics.
    pub fn moe(
        &mut self,
        x: Tid,
        r: Route,
        d: usize,
        inter: usize,
        gate: usize,
        bias: usize,
        experts: [usize; 3],
        out: Tid,
        balance: Option<(Balance, Tid)>,
        shard: Option<Exchange>,
    ) -> MoeOut {
        let (n, e, k) = (r.tokens, r.experts, r.top_k);
        let logits = self.linear(x, n, W::whole(gate, e, d).kind(WeightKind::Router), "router.logits");
        let scores = self.tensor("router.scores", n * e);
        let idx = self.tensor("router.idx", n * k);
        let weights = self.tensor("router.weights", n * k);
        let args = vec![Arg::T(logits), self.p(bias), Arg::T(scores), Arg::T(idx), Arg::T(weights)];
        self.launch(Op::Router(r), args, "router");
        // The step's routing statistics, counted in the backward (training only; runs after the
        // router's backward below, while the routing is still live).
        let stats = self.shared_tensor("router.stats", e + 2);
        self.on_backward(move |b| {
            let op = Op::ExpertStats { tokens: n, experts: e, top_k: k };
            b.launch(op, [idx, scores, stats].map(Arg::T).to_vec(), "routing statistics");
        });
        self.on_backward(move |b| {
            let (dw, ds, dl) = (b.grad(weights), b.grad(scores), b.grad(logits));
            b.launch(Op::RouterBwd(r), [scores, idx, dw, ds, dl].map(Arg::T).to_vec(), "router backward");
        });
        if let Some((bal, loss)) = balance {
            self.launch(Op::BalanceLoss(bal), vec![Arg::T(scores), Arg::T(idx), Arg::T(loss)], "balance loss");
            self.on_backward(move |b| {
                let ds = b.grad(scores);
                let op = Op::BalanceLossBwd { balance: bal, grad_scale: 1.0 };
                b.launch(op, vec![Arg::T(scores), Arg::T(idx), Arg::T(ds)], "balance loss backward");
            });
        }
        let rows = n * k;
        let perm = self.tensor("dispatch.perm", rows);
        let inv = self.tensor("dispatch.inv", rows);
        let offsets = self.tensor("dispatch.offsets", e + 1);
        let xp = self.tensor("dispatch.x", rows * d);
        let op = Op::Dispatch { tokens: n, experts: e, top_k: k, d };
        self.launch(op, [idx, x, perm, inv, offsets, xp].map(Arg::T).to_vec(), "dispatch");
        self.on_backward(move |b| {
            let (dxp, dx) = (b.grad(xp), b.grad(x));
            b.launch(
                Op::DispatchBwd { tokens: n, top_k: k, d },
                [inv, dxp, dx].map(Arg::T).to_vec(),
                "dispatch backward",
            );
        });
        let (yp, dropped) = match shard {
            None => (self.experts(offsets, xp, experts, e, rows, d, inter), None),
            Some(x) => {
                // Expert parallelism: the rows go to the ranks holding their experts and come
                // back; this rank's experts run over the rows every rank of its group sent them.
                let el = x.local();
                let recv = self.tensor("ep.recv", x.ranks * el);
                let local = self.tensor("ep.offsets", el + 1);
                let dropped = self.shared_tensor("ep.dropped", 1);
                let args = [offsets, recv, local, dropped].map(Arg::T).to_vec();
                self.launch(Op::ExpertCounts(x), args, "rows per expert, exchanged");
                let held = el * x.capacity;
                let xl = self.exchange(x, d, offsets, recv, xp, held, Direction::Dispatch, "ep.x");
                let yl = self.experts(local, xl, experts, el, held, d, inter);
                let yp = self.exchange(x, d, offsets, recv, yl, rows, Direction::Return, "ep.y");
                (yp, Some(dropped))
            }
        };
        // The experts' outputs the combine's backward reads (for the routing weights' gradient):
        // with FP8 caching kept in FP8 too.
        self.fp8_cached(yp, rows, d);
        self.launch(Op::Combine { tokens: n, top_k: k, d }, [inv, weights, yp, out].map(Arg::T).to_vec(), "combine");
        self.on_backward(move |b| {
            let (dout, dyp, dw) = (b.grad(out), b.grad(yp), b.grad(weights));
            let args = [perm, inv, weights, yp, dout, dyp, dw].map(Arg::T).to_vec();
            b.launch(Op::CombineBwd { tokens: n, top_k: k, d }, args, "combine backward");
        });
        MoeOut { idx, scores, stats, dropped }
    }

    /// The routed experts' SwiGLU over their sorted rows (`offsets` per expert): gate, up, their
    /// product, down. `experts` are the first parameters of each projection's `e` experts.
    #[allow(clippy::too_many_arguments)]
    fn experts(
        &mut self,
        offsets: Tid,
        x: Tid,
        experts: [usize; 3],
        e: usize,
        rows: usize,
        d: usize,
        inter: usize,
    ) -> Tid {
        // With FP8 caching, DeepSeek-V3's: the experts' input and the SwiGLU's are kept in FP8.
        self.fp8_cached(x, rows, d);
        let g = self.grouped(offsets, x, experts[0], e, rows, inter, d, "experts.gate");
        let u = self.grouped(offsets, x, experts[1], e, rows, inter, d, "experts.up");
        self.fp8_cached(g, rows, inter);
        self.fp8_cached(u, rows, inter);
        let h = self.recomputed(|b| b.swiglu(g, u, "experts.act"));
        self.grouped(offsets, h, experts[2], e, rows, d, inter, "experts.down")
    }

    /// An expert-parallel exchange of `x`'s rows (`dir`), into a new tensor of `rows` rows; its
    /// backward is the exchange the other way.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        ex: Exchange,
        d: usize,
        offsets: Tid,
        recv: Tid,
        x: Tid,
        rows: usize,
        dir: Direction,
        name: &str,
    ) -> Tid {
        let y = self.tensor(name, rows * d);
        let what = match dir {
            Direction::Dispatch => "rows to their experts' ranks",
            Direction::Return => "expert outputs back to their rows",
        };
        let op = Op::ExpertExchange { exchange: ex, d, dir };
        self.launch(op, [offsets, recv, x, y].map(Arg::T).to_vec(), what);
        self.on_backward(move |b| {
            let (dy, dx) = (b.grad(y), b.grad(x));
            let back = match dir {
                Direction::Dispatch => Direction::Return,
                Direction::Return => Direction::Dispatch,
            };
            let op = Op::ExpertExchange { exchange: ex, d, dir: back };
            b.launch(op, [offsets, recv, dy, dx].map(Arg::T).to_vec(), "gradients the other way");
        });
        y
    }

    /// Grouped expert GEMM `y_r = W_e x_r` over expert-sorted rows; `w` is the first of the `e`
    /// consecutive expert parameters `[n, kdim]`.
    #[allow(clippy::too_many_arguments)]
    fn grouped(
        &mut self,
        offsets: Tid,
        x: Tid,
        w: usize,
        e: usize,
        rows: usize,
        n: usize,
        kdim: usize,
        name: &str,
    ) -> Tid {
        let y = self.tensor(name, rows * n);
        let policy = self.precision;
        let op = move |mode| {
            let role = match mode {
                GroupedMode::Forward => GemmRole::Fprop,
                GroupedMode::DataGrad => GemmRole::Dgrad,
                GroupedMode::WeightGrad => GemmRole::Wgrad,
            };
            // The weight gradient quantizes on load (`Quant::grouped`).
            let quant = policy.quant(WeightKind::Projection, role).grouped(mode);
            Op::GroupedGemm { experts: e, rows, n, k: kdim, mode, quant }
        };
        let fp8 = matches!(policy.quant(WeightKind::Projection, GemmRole::Fprop), Quant::Fp8Stored { .. });
        if fp8 {
            self.fp8_weight(w, e, n, kdim);
        }
        // The experts' weights are consecutive parameters: one `[e, n, kdim]` block.
        let (wp, wg) = (Arg::P { param: w, off: 0, len: e * n * kdim }, Arg::G { param: w, off: 0, len: e * n * kdim });
        let wq = [Arg::Fp8 { param: w, count: e, scales: false }, Arg::Fp8 { param: w, count: e, scales: true }];
        let args = if fp8 {
            let (q, s) = self.quantized(x, rows, kdim, Scaling::RowTiles);
            vec![Arg::T(offsets), Arg::T(q), Arg::T(s), wq[0], wq[1], Arg::T(y)]
        } else {
            vec![Arg::T(offsets), Arg::T(x), wp, Arg::T(y)]
        };
        self.launch(op(GroupedMode::Forward), args, name);
        let name = name.to_string();
        self.on_backward(move |b| {
            let (dy, dx) = (b.grad(y), b.grad(x));
            let args = if fp8 {
                let (q, s) = b.quantized(dy, rows, n, Scaling::RowTiles);
                vec![Arg::T(offsets), Arg::T(q), Arg::T(s), wq[0], wq[1], Arg::T(dx)]
            } else {
                vec![Arg::T(offsets), Arg::T(dy), wp, Arg::T(dx)]
            };
            b.launch(op(GroupedMode::DataGrad), args, &format!("{name} (data grad)"));
            b.launch(
                op(GroupedMode::WeightGrad),
                vec![Arg::T(offsets), Arg::T(x), Arg::T(dy), wg],
                &format!("{name} (weight grad)"),
            );
        });
        y
    }
}
