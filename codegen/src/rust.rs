//! The Rust back end: a Program as a Rust module (quote, formatted with prettyplease) — the spec,
//! the shape, the parameter table, the arena plan's IO slices, the specialized kernels, and the
//! step's four launch lists (`start`, `forward`, `backward`, `update`) as straight-line launches
//! into a runtime backend. Consecutive layers that
//! launch the same kernels become one loop over a table of their arguments, so a 61-layer model
//! is not 61 copies. Each call is commented with the layer and op it runs. Deterministic: the
//! same Program gives the same bytes. The kernels table holds each kernel's op and dtypes, not its
//! CUDA device code (that is the `kernels/*.cu` `dsv3c compile` writes beside the graph).

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use dsv3c_runtime::program::{Init, Launch, ParamGroup, Program, Slice, Space};
use dsv3c_runtime::DType;

pub use crate::op_tokens::op_tokens;

fn dtype_tokens(d: DType) -> TokenStream {
    match d {
        DType::F32 => quote!(DType::F32),
        DType::Bf16 => quote!(DType::Bf16),
        DType::I32 => quote!(DType::I32),
        DType::E4m3 => quote!(DType::E4m3),
    }
}

fn slice_tokens(s: &Slice) -> TokenStream {
    let n = Literal::usize_unsuffixed(s.len);
    // The f32 arenas by element, the activation arena by byte.
    let e = Literal::usize_unsuffixed(s.offset / 4);
    match (s.space, s.dtype) {
        (Space::Param, DType::F32) if s.offset.is_multiple_of(4) => quote!(Slice::param(#e, #n)),
        (Space::Grad, DType::F32) if s.offset.is_multiple_of(4) => quote!(Slice::grad(#e, #n)),
        (Space::Optim, DType::F32) if s.offset.is_multiple_of(4) => quote!(Slice::optim(#e, #n)),
        (space, dtype) => {
            let o = Literal::usize_unsuffixed(s.offset);
            let d = dtype_tokens(dtype);
            match space {
                Space::Act => quote!(Slice::act(#o, #n, #d)),
                Space::Param => {
                    quote!(Slice { space: dsv3c_runtime::program::Space::Param, offset: #o, len: #n, dtype: #d })
                }
                Space::Grad => {
                    quote!(Slice { space: dsv3c_runtime::program::Space::Grad, offset: #o, len: #n, dtype: #d })
                }
                Space::Optim => {
                    quote!(Slice { space: dsv3c_runtime::program::Space::Optim, offset: #o, len: #n, dtype: #d })
                }
                Space::Weights => {
                    quote!(Slice { space: dsv3c_runtime::program::Space::Weights, offset: #o, len: #n, dtype: #d })
                }
            }
        }
    }
}

/// The layer a launch belongs to, from its note (`layer 7: ...`).
fn layer_of(l: &Launch) -> Option<usize> {
    l.note.strip_prefix("layer ")?.split(':').next()?.parse().ok()
}

fn what(l: &Launch) -> String {
    l.note.split_once(": ").map_or(l.note.clone(), |(_, w)| w.to_string())
}

/// The body of `forward` or `backward`, plus the argument tables its loops read.
fn phase(p: &Program, launches: &[Launch], name: &str) -> (TokenStream, Vec<TokenStream>) {
    // Segments: maximal runs of launches of one layer, or of no layer.
    let mut segs: Vec<(Option<usize>, &[Launch])> = Vec::new();
    let mut start = 0;
    for i in 1..=launches.len() {
        if i == launches.len() || layer_of(&launches[i]) != layer_of(&launches[start]) {
            segs.push((layer_of(&launches[start]), &launches[start..i]));
            start = i;
        }
    }
    let same_kernels =
        |a: &[Launch], b: &[Launch]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.kernel == y.kernel);
    let mut body = Vec::new();
    let mut tables = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let (layer, seg) = segs[i];
        let mut j = i + 1;
        while layer.is_some() && j < segs.len() && segs[j].0.is_some() && same_kernels(seg, segs[j].1) {
            j += 1;
        }
        if j - i >= 2 {
            // A loop over identical layers, its arguments in a table.
            let (first, last) = (layer.unwrap_or(0), segs[j - 1].0.unwrap_or(0));
            let table = format_ident!("{}_LAYERS_{}_{}", name.to_uppercase(), first, last);
            let rows = segs[i..j].iter().map(|(_, s)| {
                let launches = s.iter().map(|l| {
                    let args = l.args.iter().map(slice_tokens);
                    quote!(&[#(#args),*])
                });
                quote!(&[#(#launches),*])
            });
            let n = Literal::usize_unsuffixed(j - i);
            let doc =
                format!(" Arguments of layers {first}, ..., {last} in `{name}`, one row per layer, in launch order.");
            tables.push(quote! {
                #[doc = #doc]
                const #table: [&[&[Slice]]; #n] = [#(#rows),*];
            });
            let calls = seg.iter().enumerate().map(|(c, l)| {
                let k = Literal::usize_unsuffixed(l.kernel);
                let c = Literal::usize_unsuffixed(c);
                let comment = format!(" {} ({})", what(l), p.kernels[l.kernel].op.family());
                quote! {
                    #[doc = #comment]
                    b.launch(&k[#k], args[#c])?;
                }
            });
            let span = if first <= last { format!("{first}..={last}") } else { format!("{first} down to {last}") };
            let doc = format!(" layers {span}: identical kernels, arguments from {table}");
            body.push(quote! {
                #[doc = #doc]
                for args in #table.iter() {
                    #(#calls)*
                }
            });
        } else {
            for l in seg {
                let k = Literal::usize_unsuffixed(l.kernel);
                let args = l.args.iter().map(slice_tokens);
                let comment = format!(" {} ({})", l.note, p.kernels[l.kernel].op.family());
                body.push(quote! {
                    #[doc = #comment]
                    b.launch(&k[#k], &[#(#args),*])?;
                });
            }
        }
        i = j;
    }
    (quote!(#(#body)*), tables)
}

/// Parameters grouped into blocks: runs of `….experts.{e}.proj.weight` for e = 0, 1, … with
/// equal shapes at consecutive offsets become one `{}` row. Returns (name, count, first).
fn param_blocks(p: &Program) -> Vec<(String, usize, &dsv3c_runtime::program::Param)> {
    let pattern = |name: &str| -> Option<(String, usize)> {
        let (head, tail) = name.split_once(".experts.")?;
        let (e, rest) = tail.split_once('.')?;
        Some((format!("{head}.experts.{{}}.{rest}"), e.parse().ok()?))
    };
    let mut out: Vec<(String, usize, &dsv3c_runtime::program::Param)> = Vec::new();
    for x in &p.params {
        if let (Some((pat, e)), Some(last)) = (pattern(&x.name), out.last_mut()) {
            let (name, count, first) = last;
            if *name == pat && e == *count && first.shape == x.shape && first.offset + *count * first.len() == x.offset
            {
                *count += 1;
                continue;
            }
        }
        match pattern(&x.name) {
            Some((pat, 0)) => out.push((pat, 1, x)),
            _ => out.push((x.name.clone(), 1, x)),
        }
    }
    out
}

fn init_tokens(i: Init) -> TokenStream {
    match i {
        Init::Normal { std } => {
            let s = Literal::f32_unsuffixed(std);
            quote!(Init::Normal { std: #s })
        }
        Init::Ones => quote!(Init::Ones),
        Init::Zeros => quote!(Init::Zeros),
        Init::Const(c) => {
            let c = Literal::f32_unsuffixed(c);
            quote!(Init::Const(#c))
        }
    }
}

fn group_tokens(g: ParamGroup) -> TokenStream {
    match g {
        ParamGroup::Decay => quote!(ParamGroup::Decay),
        ParamGroup::NoDecay => quote!(ParamGroup::NoDecay),
        ParamGroup::Embedding => quote!(ParamGroup::Embedding),
        ParamGroup::Frozen => quote!(ParamGroup::Frozen),
    }
}

/// The training graph of `p` (compiled from `spec_text`) as Rust items.
pub fn emit(p: &Program, spec_text: &str) -> TokenStream {
    let lit = Literal::usize_unsuffixed;
    let (batch, seq) = (lit(p.batch), lit(p.seq));
    let (param_len, act_bytes, optim_len) = (lit(p.param_len), lit(p.act_bytes), lit(p.optim_len));
    let weight_bytes = lit(p.weight_bytes);
    let kernels = p.kernels.iter().enumerate().map(|(i, k)| {
        let t = op_tokens(&k.op);
        let dtypes = k.dtypes.iter().map(|d| dtype_tokens(*d));
        let doc = format!(" k{i}: {}", k.op.family());
        quote! {
            #[doc = #doc]
            Kernel::new(#t, vec![#(#dtypes),*])
        }
    });
    let params = param_blocks(p).into_iter().map(|(name, count, x)| {
        let (offset, count) = (Literal::usize_unsuffixed(x.offset), Literal::usize_unsuffixed(count));
        let shape = x.shape.iter().map(|d| Literal::usize_unsuffixed(*d));
        let (init, group) = (init_tokens(x.init), group_tokens(x.group));
        quote!(ParamBlock { name: #name, count: #count, shape: &[#(#shape),*], offset: #offset, init: #init, group: #group })
    });
    let (start, start_tables) = phase(p, &p.start, "start");
    let (fwd, fwd_tables) = phase(p, &p.forward, "forward");
    let (bwd, bwd_tables) = phase(p, &p.backward, "backward");
    let (update, update_tables) = phase(p, &p.update, "update");
    let io = &p.io;
    let tokens = slice_tokens(&io.tokens);
    let loss = slice_tokens(&io.loss);
    let main_loss = slice_tokens(&io.main_loss);
    let mtp = io.mtp_losses.iter().map(slice_tokens);
    let choices = io.expert_choices.iter().map(slice_tokens);
    let scores = io.expert_scores.iter().map(slice_tokens);
    let stats = io.expert_stats.iter().map(slice_tokens);
    let scalars = slice_tokens(&io.scalars);
    let grad_norm = slice_tokens(&io.grad_norm);
    let buffers = p.buffers.iter().map(|b| {
        let (name, o, n, a, z) = (&b.name, lit(b.offset), lit(b.len), lit(b.live.0), lit(b.live.1));
        let d = dtype_tokens(b.dtype);
        quote!(Buffer { name: String::from(#name), offset: #o, len: #n, dtype: #d, live: (#a, #z) })
    });
    let name = &p.name;
    // A per-rank program's place in its job, written out in full paths (a single-device
    // program's is `None`, and its source is what it always was).
    let rank = match &p.rank {
        None => quote!(None),
        Some(r) => {
            // A pipeline stage's other micro-batch slots are launch lists, which `plan.json`
            // lists; the graph's functions run slot 0's.
            let json = dsv3c_runtime::program::Rank { slots: Vec::new(), ..r.clone() }.to_json();
            quote!(Some(dsv3c_runtime::program::Rank::from_json(#json)))
        }
    };
    quote! {
        use dsv3c_runtime::op::*;
        use dsv3c_runtime::DType;
        use dsv3c_runtime::program::{
            Backend, BackendError, Buffer, Graph, Init, Io, Kernel, Param, ParamGroup, Program, Slice,
        };

        /// The spec this graph was compiled from.
        pub const SPEC: &str = #spec_text;
        /// Sequences per batch.
        pub const BATCH: usize = #batch;
        /// Tokens per sequence.
        pub const SEQ: usize = #seq;
        /// f32 elements of the parameter arena (and of the gradient arena, laid out alike).
        pub const PARAM_LEN: usize = #param_len;
        /// Bytes of the activation arena (the static memory plan).
        pub const ACT_BYTES: usize = #act_bytes;
        /// Elements of the optimizer-state arena: the moments (f32, or bf16 as the optimizer keeps them).
        pub const OPTIM_LEN: usize = #optim_len;
        /// Bytes of the weights' compute copy (0: none, the GEMMs read the f32 parameters).
        pub const WEIGHT_BYTES: usize = #weight_bytes;
        /// Token ids `[BATCH, SEQ]` go here before `forward`.
        pub const TOKENS: Slice = #tokens;
        /// The training objective after `forward`.
        pub const LOSS: Slice = #loss;
        /// The next-token cross-entropy after `forward`.
        pub const MAIN_LOSS: Slice = #main_loss;
        /// Each MTP module's cross-entropy.
        pub const MTP_LOSSES: &[Slice] = &[#(#mtp),*];
        /// Each MoE layer's chosen experts and router scores.
        pub const EXPERT_CHOICES: &[Slice] = &[#(#choices),*];
        pub const EXPERT_SCORES: &[Slice] = &[#(#scores),*];
        /// Each MoE layer's routing statistics over the step.
        pub const EXPERT_STATS: &[Slice] = &[#(#stats),*];
        /// The step's scalars (`op::scalars`), written before `start`.
        pub const SCALARS: Slice = #scalars;
        /// The global norm of the accumulated gradients, after `update`.
        pub const GRAD_NORM: Slice = #grad_norm;

        /// `count` consecutive parameters of one shape (the routed experts of one projection;
        /// `{}` in the name is the expert index), or one parameter (`count` 1, no `{}`).
        pub struct ParamBlock {
            pub name: &'static str,
            pub count: usize,
            pub shape: &'static [usize],
            pub offset: usize,
            pub init: Init,
            pub group: ParamGroup,
        }

        /// Every parameter, in registration order (the arena lays them out by optimizer group).
        pub const PARAMS: &[ParamBlock] = &[#(#params),*];

        /// Every parameter with its Hugging Face name.
        pub fn params() -> Vec<Param> {
            let mut out = Vec::new();
            for b in PARAMS {
                let len: usize = b.shape.iter().product();
                for i in 0..b.count {
                    out.push(Param {
                        name: b.name.replacen("{}", &i.to_string(), 1),
                        shape: b.shape.to_vec(),
                        offset: b.offset + i * len,
                        init: b.init,
                        group: b.group,
                    });
                }
            }
            out
        }

        /// The specialized kernels: one per distinct op and argument dtypes, every size a constant.
        pub fn kernels() -> Vec<Kernel> {
            vec![#(#kernels),*]
        }

        #(#start_tables)*
        #(#fwd_tables)*
        #(#bwd_tables)*
        #(#update_tables)*

        /// Once per optimizer step, before the first micro-batch: zeroes the gradients and the
        /// routing statistics.
        pub fn start(b: &mut dyn Backend, k: &[Kernel]) -> Result<(), BackendError> {
            #start
            Ok(())
        }

        /// The forward pass: tokens in `TOKENS`, losses out in `LOSS`, `MAIN_LOSS`, `MTP_LOSSES`.
        pub fn forward(b: &mut dyn Backend, k: &[Kernel]) -> Result<(), BackendError> {
            #fwd
            Ok(())
        }

        /// The backward pass: accumulates d`LOSS`/d parameter into the gradient arena and the
        /// routing statistics into `EXPERT_STATS`.
        pub fn backward(b: &mut dyn Backend, k: &[Kernel]) -> Result<(), BackendError> {
            #bwd
            Ok(())
        }

        /// Once per optimizer step, after the last micro-batch: the gradient norm, the optimizer
        /// and the balancing bias, reading `SCALARS`.
        pub fn update(b: &mut dyn Backend, k: &[Kernel]) -> Result<(), BackendError> {
            #update
            Ok(())
        }

        /// The compiled model: its kernels, run by `forward` and `backward`.
        pub struct Model {
            pub kernels: Vec<Kernel>,
        }

        impl Model {
            pub fn new() -> Model {
                Model { kernels: kernels() }
            }
        }

        impl Default for Model {
            fn default() -> Model {
                Model::new()
            }
        }

        impl Graph for Model {
            fn start(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
                start(b, &self.kernels)
            }
            fn forward(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
                forward(b, &self.kernels)
            }
            fn backward(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
                backward(b, &self.kernels)
            }
            fn update(&self, b: &mut dyn Backend) -> Result<(), BackendError> {
                update(b, &self.kernels)
            }
        }

        /// The graph's metadata as the runtime's `Program` — parameters, memory plan, kernels,
        /// IO — for trainers and checkpoints. Its launch lists are empty: the launches are
        /// `start`, `forward`, `backward` and `update` above.
        pub fn program() -> Program {
            Program {
                name: String::from(#name),
                batch: BATCH,
                seq: SEQ,
                params: params(),
                param_len: PARAM_LEN,
                buffers: vec![#(#buffers),*],
                act_bytes: ACT_BYTES,
                optim_len: OPTIM_LEN,
                weight_bytes: WEIGHT_BYTES,
                kernels: kernels(),
                start: Vec::new(),
                forward: Vec::new(),
                backward: Vec::new(),
                update: Vec::new(),
                io: Io {
                    tokens: TOKENS,
                    loss: LOSS,
                    main_loss: MAIN_LOSS,
                    mtp_losses: MTP_LOSSES.to_vec(),
                    expert_choices: EXPERT_CHOICES.to_vec(),
                    expert_scores: EXPERT_SCORES.to_vec(),
                    scalars: SCALARS,
                    grad_norm: GRAD_NORM,
                    expert_stats: EXPERT_STATS.to_vec(),
                },
                decode: None,
                rank: #rank,
            }
        }
    }
}

/// The writer produced tokens that are not a Rust file (a bug here, reported rather than panicked).
#[derive(Debug, thiserror::Error)]
#[error("internal error: the generated Rust does not parse: {0}")]
pub struct GraphError(pub syn::Error);

/// The module as formatted source, with a header naming what it was compiled from. Comments on
/// statements are plain `//` comments (quote carries them as doc attributes).
pub fn source(p: &Program, spec_text: &str) -> Result<String, GraphError> {
    let header = format!(
        "//! dsv3c training graph of spec `{}` at batch {} x seq {}: {} kernels; {} start, {} forward, {} backward and {} update launches.\n//! Generated by `dsv3c compile`; do not edit.\n\n",
        p.name,
        p.batch,
        p.seq,
        p.kernels.len(),
        p.start.len(),
        p.forward.len(),
        p.backward.len(),
        p.update.len()
    );
    Ok(header + &body(p, spec_text)?)
}

/// The module's items as formatted source, without the file header (what `model!` expands).
pub fn body(p: &Program, spec_text: &str) -> Result<String, GraphError> {
    let file: syn::File = syn::parse2(emit(p, spec_text)).map_err(GraphError)?;
    let body: String = prettyplease::unparse(&file)
        .lines()
        .map(|l| {
            let indent = l.len() - l.trim_start().len();
            match l.trim_start().strip_prefix("/// ") {
                // Inside a function body: a comment on the statement below.
                Some(rest) if indent >= 4 => format!("{}// {rest}\n", &l[..indent]),
                _ => format!("{l}\n"),
            }
        })
        .collect();
    Ok(body)
}
