//! The static memory plan: parameters at the offsets `Builder::lay_out_params` gave them (by
//! optimizer group), every activation tensor given a fixed arena offset from its liveness over the
//! step's schedule (start, forward, backward, update), so that tensors whose lifetimes do not
//! overlap share space. Tensors the host reads or writes, and the step's statistics, live
//! throughout. Forward and backward repeat per micro-batch between start and update; a tensor
//! live across them is live across every repetition, so the linear schedule is exact.

use dsv3c_runtime::program::{Buffer, Io, Launch, Param, Program, ProgramError, Slice, Space};

use crate::builder::{Arg, Builder, Tid};
use crate::model::Outputs;
use crate::step::StepIo;

/// Arena offsets are rounded up to this many f32s (64 bytes), for vector loads.
const ALIGN: usize = 16;

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

/// Turns a built graph into a Program with a static memory plan.
pub fn plan(
    b: Builder,
    out: &Outputs,
    step: &StepIo,
    name: &str,
    batch: usize,
    seq: usize,
) -> Result<Program, ProgramError> {
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

    // Liveness over the whole schedule.
    let steps: Vec<_> = b.start.iter().chain(&b.forward).chain(&b.backward).chain(&b.update).collect();
    let end = steps.len().saturating_sub(1);
    let mut first = vec![usize::MAX; b.tensors.len()];
    let mut last = vec![0usize; b.tensors.len()];
    for (i, s) in steps.iter().enumerate() {
        for a in &s.args {
            if let Arg::T(t) = *a {
                first[t] = first[t].min(i);
                last[t] = last[t].max(i);
            }
        }
    }
    // Inputs are written before the first launch; outputs are read after the last.
    let io: Vec<Tid> = [out.tokens, out.loss, out.main_loss]
        .into_iter()
        .chain(out.mtp_losses.iter().copied())
        .chain(out.expert_choices.iter().copied())
        .chain(out.expert_scores.iter().copied())
        .chain(out.expert_stats.iter().map(|s| s.0))
        .chain([step.scalars, step.grad_norm])
        .collect();
    for &t in &io {
        first[t] = 0;
        last[t] = end;
    }
    let used: Vec<Tid> = (0..b.tensors.len()).filter(|&t| first[t] != usize::MAX).collect();
    let lives: Vec<(usize, usize, usize)> = used.iter().map(|&t| (first[t], last[t], b.tensors[t].len)).collect();
    let (offsets, act_len) = place(&lives);
    let mut at = vec![usize::MAX; b.tensors.len()];
    let mut buffers = Vec::with_capacity(used.len());
    for (j, &t) in used.iter().enumerate() {
        at[t] = offsets[j];
        buffers.push(Buffer {
            name: b.tensors[t].name.clone(),
            offset: offsets[j],
            len: b.tensors[t].len,
            live: (first[t], last[t]),
        });
    }

    let slice = |a: &Arg| -> Slice {
        match *a {
            Arg::T(t) => Slice { space: Space::Act, offset: at[t], len: b.tensors[t].len },
            Arg::P { param, off, len } => Slice { space: Space::Param, offset: params[param].offset + off, len },
            Arg::G { param, off, len } => Slice { space: Space::Grad, offset: params[param].offset + off, len },
            Arg::Raw(s) => s,
        }
    };
    let lower = |steps: &[crate::builder::Step]| -> Vec<Launch> {
        steps
            .iter()
            .map(|s| Launch { kernel: s.kernel, args: s.args.iter().map(slice).collect(), note: s.note.clone() })
            .collect()
    };
    let t = |t: Tid| Slice { space: Space::Act, offset: at[t], len: b.tensors[t].len };
    let program = Program {
        name: name.to_string(),
        batch,
        seq,
        param_len,
        act_len,
        optim_len: step.optim_len,
        start: lower(&b.start),
        forward: lower(&b.forward),
        backward: lower(&b.backward),
        update: lower(&b.update),
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
        params,
        buffers,
        kernels: b.kernels,
    };
    program.check()?;
    Ok(program)
}

/// The plan as pretty JSON text: arenas, buffers with offsets and live ranges, and every launch
/// with its op and slices (`plan.json` of `dsv3c compile`).
pub fn to_json(p: &Program) -> String {
    use serde_json::json;
    let launches = |ls: &[Launch]| -> Vec<serde_json::Value> {
        ls.iter()
            .map(|l| {
                let args: Vec<serde_json::Value> =
                    l.args.iter().map(|s| json!([format!("{:?}", s.space).to_lowercase(), s.offset, s.len])).collect();
                json!({ "kernel": l.kernel, "op": p.kernels[l.kernel].op.family(), "note": l.note, "args": args })
            })
            .collect()
    };
    let v = json!({
        "name": p.name, "batch": p.batch, "seq": p.seq,
        "param_floats": p.param_len, "optimizer_floats": p.optim_len,
        "arena_floats": p.act_len, "arena_bytes": p.act_len * 4,
        "kernels": p.kernels.len(),
        "buffers": p.buffers.iter().map(|b| json!({ "name": b.name, "offset": b.offset, "len": b.len, "live": [b.live.0, b.live.1] })).collect::<Vec<_>>(),
        "start": launches(&p.start),
        "forward": launches(&p.forward),
        "backward": launches(&p.backward),
        "update": launches(&p.update),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
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
