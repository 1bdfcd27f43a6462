//! The static memory plan: parameters at the offsets `Builder::lay_out_params` gave them (by
//! optimizer group), every activation tensor given a storage dtype from how its launches use it
//! (`storage`) and a fixed byte offset from its liveness over the step's schedule (start,
//! forward, backward, update), so that tensors whose lifetimes do not overlap share space. Tensors the host reads or writes, and the step's statistics, live
//! throughout. Forward and backward repeat per micro-batch between start and update; a tensor
//! live across them is live across every repetition, so the linear schedule is exact.

use std::collections::HashMap;

use dsv3c_runtime::program::{Buffer, Io, Kernel, Launch, Param, Program, ProgramError, Slice, Slot, Space};
use dsv3c_runtime::signature::{ArgSig, Kind, Role};
use dsv3c_runtime::DType;

use crate::builder::{Arg, Builder, Step, Tid, WeightsCopy};
use crate::model::Outputs;
use crate::step::StepIo;

/// Arena offsets are rounded up to this many bytes, for vector loads.
const ALIGN: usize = 64;

/// The storage dtype of every tensor, from what each argument it is passed as asks for
/// (`ArgSig::storage`: i32 integers, e4m3 FP8 operands, f32 for statistics, router, losses, FP8
/// scales and accumulators, the compute dtype otherwise): the first of i32, e4m3, f32 that any use
/// asks for, else the compute dtype. A tensor passed as two of integer, e4m3 and real is a compiler
/// bug that `Program::check` reports.
pub fn storage(b: &Builder, steps: &[&Step]) -> Vec<DType> {
    let act = b.precision.activations();
    let rank = |d: DType| [DType::I32, DType::E4m3, DType::F32].iter().position(|&x| x == d).unwrap_or(3);
    let mut dtypes = vec![act; b.tensors.len()];
    for s in steps {
        for (a, arg) in b.ops[s.kernel].signature().iter().zip(&s.args) {
            if let Some(t) = arg.tensor() {
                let d = a.storage(act);
                if rank(d) < rank(dtypes[t]) {
                    dtypes[t] = d;
                }
            }
        }
    }
    dtypes
}

/// First-fit placement of intervals `(first, last, len)`; returns offsets and the arena size.
pub fn place(lives: &[(usize, usize, usize)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by_key(|&i| (lives[i].0, std::cmp::Reverse(lives[i].2), i));
    let mut offsets = vec![0; lives.len()];
    // Placed and still live: (offset, end, last use).
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut size = 0;
    for i in order {
        let (first, last, len) = lives[i];
        live.retain(|&(_, _, l)| l >= first);
        live.sort_unstable();
        let need = len.div_ceil(ALIGN) * ALIGN;
        let mut at = 0;
        for &(off, end, _) in &live {
            if off >= at + need {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        live.push((at, at + need, last));
        size = size.max(at + need);
    }
    (offsets, size)
}

/// A built graph laid out: parameters at their offsets, every used tensor at its arena offset in
/// its storage dtype, the kernels, and the given launch lists lowered to slices.
pub(crate) struct Laid {
    pub params: Vec<Param>,
    pub param_len: usize,
    pub buffers: Vec<Buffer>,
    pub act_bytes: usize,
    pub kernels: Vec<Kernel>,
    pub lists: Vec<Vec<Launch>>,
    /// Each tensor's slice (an unused tensor: empty at 0).
    pub slices: Vec<Slice>,
}

/// Lays out `lists` (in schedule order): liveness over them, `io` live throughout (inputs are
/// written before the first launch, outputs read after the last), and `pinned` — live throughout
/// too — placed first, in order, from the arena's start, so that their offsets depend on their
/// sizes alone. With `interleaved`, the lists run in an order the schedule does not fix (a
/// pipeline's micro-batch slots under 1F1B): a tensor one list hands to another is live
/// throughout, and only a list's own temporaries share space.
pub(crate) fn lay_out(b: &Builder, lists: &[&[Step]], io: &[Tid], pinned: &[Tid], interleaved: bool) -> Laid {
    let params: Vec<Param> = b
        .params
        .iter()
        .zip(&b.param_offsets)
        .map(|(p, &offset)| Param {
            name: p.name.clone(),
            shape: p.shape.clone(),
            offset,
            init: p.init,
            group: p.group,
        })
        .collect();
    let param_len = params.iter().map(|p| p.offset + p.len()).max().unwrap_or(0);

    let steps: Vec<&Step> = lists.iter().flat_map(|l| l.iter()).collect();
    let end = steps.len().saturating_sub(1);
    let mut first = vec![usize::MAX; b.tensors.len()];
    let mut last = vec![0usize; b.tensors.len()];
    for (i, s) in steps.iter().enumerate() {
        for a in &s.args {
            if let Some(t) = a.tensor() {
                first[t] = first[t].min(i);
                last[t] = last[t].max(i);
            }
        }
    }
    for &t in io.iter().chain(pinned) {
        first[t] = 0;
        last[t] = end;
    }
    if interleaved {
        let mut list_of = vec![usize::MAX; b.tensors.len()];
        let mut across = vec![false; b.tensors.len()];
        for (l, list) in lists.iter().enumerate() {
            for s in list.iter() {
                for t in s.args.iter().filter_map(Arg::tensor) {
                    across[t] |= list_of[t] != usize::MAX && list_of[t] != l;
                    list_of[t] = l;
                }
            }
        }
        for t in (0..b.tensors.len()).filter(|&t| across[t]) {
            first[t] = 0;
            last[t] = end;
        }
    }
    let mut dtypes = storage(b, &steps);
    for (&t, &d) in &b.pinned {
        dtypes[t] = d;
    }
    let bytes = |t: Tid| b.tensors[t].len * dtypes[t].size();
    let mut at = vec![usize::MAX; b.tensors.len()];
    let mut base = 0;
    for &t in pinned {
        at[t] = base;
        base += bytes(t).div_ceil(ALIGN) * ALIGN;
    }
    let rest: Vec<Tid> = (0..b.tensors.len()).filter(|&t| first[t] != usize::MAX && at[t] == usize::MAX).collect();
    let lives: Vec<(usize, usize, usize)> = rest.iter().map(|&t| (first[t], last[t], bytes(t))).collect();
    let (offsets, rest_bytes) = place(&lives);
    for (j, &t) in rest.iter().enumerate() {
        at[t] = base + offsets[j];
    }
    let act_bytes = base + rest_bytes;
    let buffers: Vec<Buffer> = pinned
        .iter()
        .chain(&rest)
        .map(|&t| Buffer {
            name: b.tensors[t].name.clone(),
            offset: at[t],
            len: b.tensors[t].len,
            dtype: dtypes[t],
            live: (first[t], last[t]),
        })
        .collect();
    let slices: Vec<Slice> = (0..b.tensors.len())
        .map(|x| {
            if at[x] == usize::MAX {
                Slice::act(0, 0, dtypes[x])
            } else {
                Slice::act(at[x], b.tensors[x].len, dtypes[x])
            }
        })
        .collect();

    // A real-valued read of a weight matrix goes to its compute copy, when there is one.
    let slice = |a: &Arg, sig: &ArgSig| -> Slice {
        match *a {
            Arg::T(x) => slices[x],
            Arg::Part { t, off, len } => {
                let whole = slices[t];
                Slice { offset: whole.offset + off * whole.dtype.size(), len, ..whole }
            }
            Arg::P { param, off, len } => {
                let at = params[param].offset + off;
                match b.weights_copy {
                    Some(WeightsCopy { from, slice: c })
                        if at >= from
                            && at + len <= from + c.len
                            && sig.kind == Kind::Float
                            && sig.role == Role::In =>
                    {
                        Slice { offset: c.offset + (at - from) * c.dtype.size(), len, ..c }
                    }
                    _ => Slice::param(at, len),
                }
            }
            Arg::G { param, off, len } => Slice::grad(params[param].offset + off, len),
            Arg::Fp8 { param, count, scales } => {
                // Consecutive weights' copies are consecutive (`step::lay_out_weights`).
                let part = |p: usize| {
                    let c = b.fp8_copies[&p];
                    if scales {
                        c.scales
                    } else {
                        c.q
                    }
                };
                let first = part(param);
                Slice { len: (param..param + count).map(|p| part(p).len).sum(), ..first }
            }
            Arg::Raw(s) => s,
        }
    };
    let lower = |s: &Step| -> Vec<Slice> {
        s.args.iter().zip(b.ops[s.kernel].signature().iter()).map(|(a, sig)| slice(a, sig)).collect()
    };
    // One kernel per op and argument dtypes: each op's variants in schedule order, the ops in
    // the order they were first emitted (an f32 program numbers its kernels as its ops).
    let lowered: Vec<Vec<(usize, Vec<Slice>, String)>> =
        lists.iter().map(|list| list.iter().map(|s| (s.kernel, lower(s), s.note.clone())).collect()).collect();
    let mut variants: Vec<Vec<Vec<DType>>> = vec![Vec::new(); b.ops.len()];
    for (op, args, _) in lowered.iter().flatten() {
        let d: Vec<DType> = args.iter().map(|s| s.dtype).collect();
        if !variants[*op].contains(&d) {
            variants[*op].push(d);
        }
    }
    let mut kernels = Vec::new();
    let mut index: HashMap<(usize, Vec<DType>), usize> = HashMap::new();
    for (op, vs) in variants.into_iter().enumerate() {
        for d in vs {
            index.insert((op, d.clone()), kernels.len());
            kernels.push(Kernel::new(b.ops[op].clone(), d));
        }
    }
    let lists = lowered
        .into_iter()
        .map(|list| {
            list.into_iter()
                .map(|(op, args, note)| {
                    let kernel = index[&(op, args.iter().map(|s| s.dtype).collect::<Vec<_>>())];
                    Launch { kernel, args, note }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Laid { params, param_len, buffers, act_bytes, kernels, lists, slices }
}

/// Turns a built graph into a Program with a static memory plan: `outs` are the graph's builds,
/// one per micro-batch slot of a pipeline stage (their lists in `b.slots`), or the one build of
/// `b.forward` and `b.backward`.
pub fn plan(
    b: Builder,
    outs: &[Outputs],
    step: &StepIo,
    name: &str,
    batch: usize,
    seq: usize,
) -> Result<Program, ProgramError> {
    let out = &outs[0];
    let io: Vec<Tid> = outs
        .iter()
        .flat_map(|o| {
            [o.tokens, o.loss, o.main_loss]
                .into_iter()
                .chain(o.mtp_losses.iter().copied())
                .chain(o.expert_choices.iter().copied())
                .chain(o.expert_scores.iter().copied())
                .chain(o.expert_stats.iter().map(|s| s.0))
                .chain(o.expert_dropped.iter().copied())
        })
        .chain([step.scalars, step.grad_norm])
        .collect();
    let slotted = !b.slots.is_empty();
    let lists: Vec<&[Step]> = if slotted {
        std::iter::once(&b.start[..])
            .chain(b.slots.iter().map(|s| &s.0[..]))
            .chain(b.slots.iter().map(|s| &s.1[..]))
            .chain([&b.update[..]])
            .collect()
    } else {
        vec![&b.start, &b.forward, &b.backward, &b.update]
    };
    let laid = lay_out(&b, &lists, &io, &[], slotted);
    let t = |x: Tid| laid.slices[x];
    let mut lists = laid.lists.into_iter();
    let mut next = || lists.next().unwrap_or_default();
    let start = next();
    let k = b.slots.len();
    let (forward, backward, update, slots) = if slotted {
        let fw: Vec<Vec<Launch>> = (0..k).map(|_| next()).collect();
        let bw: Vec<Vec<Launch>> = (0..k).map(|_| next()).collect();
        let slots: Vec<Slot> = fw
            .into_iter()
            .zip(bw)
            .zip(outs)
            .map(|((forward, backward), o)| Slot {
                forward,
                backward,
                tokens: o.reads_tokens.then(|| t(o.tokens)),
                loss: t(o.loss),
            })
            .collect();
        let update = next();
        (slots[0].forward.clone(), slots[0].backward.clone(), update, slots)
    } else {
        let (f, bw, u) = (next(), next(), next());
        (f, bw, u, Vec::new())
    };
    let rank = step.rank.clone().map(|mut r| {
        r.expert_dropped = out.expert_dropped.iter().map(|&x| t(x)).collect();
        r.slots = slots;
        r
    });
    let mut program = Program {
        name: name.to_string(),
        batch,
        seq,
        param_len: laid.param_len,
        act_bytes: laid.act_bytes,
        optim_len: step.optim_len,
        weight_bytes: step.weight_bytes,
        start,
        forward,
        backward,
        update,
        io: Io {
            tokens: t(out.tokens),
            loss: t(out.loss),
            main_loss: t(out.main_loss),
            mtp_losses: out.mtp_losses.iter().map(|&x| t(x)).collect(),
            expert_choices: out.expert_choices.iter().map(|&x| t(x)).collect(),
            expert_scores: out.expert_scores.iter().map(|&x| t(x)).collect(),
            scalars: t(step.scalars),
            grad_norm: t(step.grad_norm),
            expert_stats: out.expert_stats.iter().map(|s| t(s.0)).collect(),
        },
        params: laid.params,
        buffers: laid.buffers,
        kernels: laid.kernels,
        decode: None,
        rank,
    };
    place_masters(&mut program)?;
    program.check()?;
    Ok(program)
}

/// A ZeRO-1 rank holding sharded masters (`Masters`): every launch's parameter slice, written in
/// the parameters' layout, moved to where the rank's arena holds it. Only `start` (the gather)
/// and `update` (the optimizer over the rank's shards) may touch the matrices' masters; a launch
/// touching elements the rank does not hold is a compiler bug, reported.
fn place_masters(p: &mut Program) -> Result<(), ProgramError> {
    let Some(m) = p.masters().cloned() else { return Ok(()) };
    let place = |phase: &'static str, list: &mut [Launch]| -> Result<(), ProgramError> {
        for (index, l) in list.iter_mut().enumerate() {
            for s in l.args.iter_mut().filter(|s| s.space == Space::Param) {
                let at = m.find(s.offset / 4, s.len).ok_or_else(|| ProgramError::Unheld {
                    phase,
                    index,
                    note: l.note.clone(),
                    slice: *s,
                })?;
                s.offset = at * 4;
            }
        }
        Ok(())
    };
    place("start", &mut p.start)?;
    place("forward", &mut p.forward)?;
    place("backward", &mut p.backward)?;
    place("update", &mut p.update)?;
    if let Some(r) = p.rank.as_mut() {
        for s in &mut r.slots {
            place("forward", &mut s.forward)?;
            place("backward", &mut s.backward)?;
        }
    }
    Ok(())
}

/// The plan as pretty JSON text: arenas, buffers with offsets and live ranges, and every launch
/// with its op and slices (`plan.json` of `dsv3c compile`).
pub fn to_json(p: &Program) -> String {
    use serde_json::json;
    let launches = |ls: &[Launch]| -> Vec<serde_json::Value> {
        ls.iter()
            .map(|l| {
                let args: Vec<serde_json::Value> = l
                    .args
                    .iter()
                    .map(|s| json!([format!("{:?}", s.space).to_lowercase(), s.offset, s.len, s.dtype.name()]))
                    .collect();
                json!({ "kernel": l.kernel, "op": p.kernels[l.kernel].op.family(), "note": l.note, "args": args })
            })
            .collect()
    };
    let v = json!({
        "name": p.name, "batch": p.batch, "seq": p.seq,
        "param_floats": p.param_len, "optimizer_floats": p.optim_len,
        "arena_bytes": p.act_bytes,
        "weight_bytes": p.weight_bytes,
        "arena_bytes_by_dtype": by_dtype(p),
        "kernels": p.kernels.len(),
        "buffers": p.buffers.iter().map(|b| json!({ "name": b.name, "dtype": b.dtype.name(), "offset": b.offset, "len": b.len, "live": [b.live.0, b.live.1] })).collect::<Vec<_>>(),
        "start": launches(&p.start),
        "forward": launches(&p.forward),
        "backward": launches(&p.backward),
        "update": launches(&p.update),
    });
    let mut v = v;
    if p.slots().len() > 1 {
        let slots: Vec<serde_json::Value> = p
            .slots()
            .iter()
            .map(|s| json!({ "forward": launches(&s.forward), "backward": launches(&s.backward) }))
            .collect();
        v["slots"] = serde_json::Value::Array(slots);
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Bytes of the activation buffers of each dtype (before sharing by liveness), by dtype name.
fn by_dtype(p: &Program) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for d in [DType::F32, DType::Bf16, DType::I32, DType::E4m3] {
        let n: usize = p.buffers.iter().filter(|b| b.dtype == d).map(|b| b.len * d.size()).sum();
        if n > 0 {
            m.insert(d.name().into(), n.into());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_that_overlap_in_time_never_overlap_in_space() {
        let lives = [(0, 3, 10), (1, 2, 20), (3, 5, 16), (4, 6, 5), (6, 7, 40), (0, 7, 1)];
        let (off, size) = place(&lives);
        for i in 0..lives.len() {
            for j in 0..i {
                let time = lives[i].0 <= lives[j].1 && lives[j].0 <= lives[i].1;
                let space = off[i] < off[j] + lives[j].2 && off[j] < off[i] + lives[i].2;
                assert!(!(time && space), "{i} and {j} collide");
            }
            assert!(off[i] + lives[i].2 <= size);
            assert_eq!(off[i] % ALIGN, 0);
        }
        // Dead tensors are reused: less than the sum of all sizes.
        assert!(size < lives.iter().map(|l| l.2.div_ceil(ALIGN) * ALIGN).sum());
    }
}
