//! The CPU backend's collective ops, run through the rank's communicators ([`Comms`]): sums and
//! gathers over a group, expert parallelism's count and row exchanges, and the pipeline's
//! messages. Arguments arrive decoded to f32 (integers exactly: every count and offset is below
//! 2^24, which the compiler checks), and outputs are encoded back by the caller.

use crate::comm::{CommGroup, Comms};
use crate::op::{Direction, Exchange, Op, Peer};

use super::Args;

/// Runs the collective `op` on this rank. A job of one rank (`comms` none) runs only collectives
/// over one rank, which leave the data as it is.
pub(crate) fn run(op: &Op, a: &Args, comms: Option<&Comms>) -> Result<(), String> {
    let Some(c) = comms else {
        return match op {
            Op::AllReduce { ranks: 1, .. } | Op::AllGather { ranks: 1, .. } => Ok(()),
            _ => {
                Err(format!("{}: a collective, but this backend has no communicator (a job of one rank)", op.family()))
            }
        };
    };
    let group = |g: CommGroup, ranks: usize| {
        let comm = c.group(g);
        if comm.ranks() == ranks {
            Ok(comm)
        } else {
            Err(format!(
                "{}: a collective over {ranks} ranks of the {} group, but rank {}'s group has {}",
                op.family(),
                g.name(),
                c.place.rank,
                comm.ranks()
            ))
        }
    };
    let failed = |e: crate::comm::CommError| format!("{}: {e}", op.family());
    match *op {
        Op::AllReduce { ranks, group: g, .. } => group(g, ranks)?.all_reduce(a.w(0)).map_err(failed),
        Op::AllGather { ranks, group: g, .. } => group(g, ranks)?.all_gather(a.w(0)).map_err(failed),
        Op::ExpertCounts(x) => {
            let comm = group(CommGroup::Expert, x.ranks)?;
            let el = x.local();
            let offsets = a.r(0);
            // To each rank, the rows of each of its experts.
            let send: Vec<f32> = (0..x.experts).map(|e| (offsets[e + 1] - offsets[e]).max(0.0)).collect();
            let (recv, _) = comm.all_to_all(&send, &vec![el; x.ranks]).map_err(failed)?;
            a.w(1).copy_from_slice(&recv);
            let (local, dropped) = kept(&x, &recv);
            let out = a.w(2);
            for (o, v) in out.iter_mut().zip(&local) {
                *o = *v as f32;
            }
            a.w(3)[0] += dropped as f32;
            Ok(())
        }
        Op::ExpertExchange { exchange: x, d, dir } => {
            let comm = group(CommGroup::Expert, x.ranks)?;
            let (offsets, recv) = (a.r(0), a.r(1));
            let el = x.local();
            let count = |v: f32| v.max(0.0) as usize;
            let recv: Vec<usize> = recv.iter().map(|&v| count(v)).collect();
            let (local, _) = kept(&x, &recv.iter().map(|&v| v as f32).collect::<Vec<_>>());
            // Where row `j` from source `s` for local expert `e` lies in `y`, if it was kept.
            let slot = |s: usize, e: usize, j: usize| {
                let before: usize = (0..s).map(|s2| recv[s2 * el + e]).sum();
                (before + j < x.capacity).then(|| local[e] + before + j)
            };
            match dir {
                Direction::Dispatch => {
                    let xs = a.r(2);
                    let counts: Vec<usize> =
                        (0..x.ranks).map(|q| (count(offsets[(q + 1) * el]) - count(offsets[q * el])) * d).collect();
                    let (got, _) = comm.all_to_all(&xs[..counts.iter().sum::<usize>()], &counts).map_err(failed)?;
                    let y = a.w(3);
                    y.fill(0.0);
                    let mut at = 0;
                    for s in 0..x.ranks {
                        for e in 0..el {
                            for j in 0..recv[s * el + e] {
                                if let Some(r) = slot(s, e, j) {
                                    y[r * d..(r + 1) * d].copy_from_slice(&got[at..at + d]);
                                }
                                at += d;
                            }
                        }
                    }
                    Ok(())
                }
                Direction::Return => {
                    let y = a.r(2);
                    let (mut send, mut counts) = (Vec::new(), Vec::with_capacity(x.ranks));
                    for s in 0..x.ranks {
                        let start = send.len();
                        for e in 0..el {
                            for j in 0..recv[s * el + e] {
                                match slot(s, e, j) {
                                    Some(r) => send.extend_from_slice(&y[r * d..(r + 1) * d]),
                                    None => send.resize(send.len() + d, 0.0),
                                }
                            }
                        }
                        counts.push(send.len() - start);
                    }
                    let (got, _) = comm.all_to_all(&send, &counts).map_err(failed)?;
                    let out = a.w(3);
                    if got.len() > out.len() {
                        return Err(format!(
                            "expert_return: {} values came back for {} rows of {d}",
                            got.len(),
                            x.rows
                        ));
                    }
                    out[..got.len()].copy_from_slice(&got);
                    out[got.len()..].fill(0.0);
                    Ok(())
                }
            }
        }
        Op::Send { peer, .. } => {
            let (comm, to) = neighbour(c, peer)?;
            comm.send(to, a.r(0)).map_err(failed)
        }
        Op::Recv { peer, .. } => {
            let (comm, from) = neighbour(c, peer)?;
            comm.recv(from, a.w(0)).map_err(failed)
        }
        _ => Err(format!("{} is not a collective", op.family())),
    }
}

/// Runs the collective `op` over arguments in their own host buffers (decoded to f32): how a
/// device backend without a collective library of its own (the emulator; a GPU before NCCL)
/// stages a collective through the host.
pub fn run_on_host(op: &Op, args: &mut [Vec<f32>], comms: Option<&Comms>) -> Result<(), String> {
    if args.len() != op.arity() {
        return Err(format!("{} takes {} arguments, not {}", op.family(), op.arity(), args.len()));
    }
    let a = Args { ptrs: args.iter_mut().map(|v| (v.as_mut_ptr(), v.len())).collect() };
    run(op, &a, comms)
}

/// The pipeline group and the index of the stage `peer` names in it.
fn neighbour(c: &Comms, peer: Peer) -> Result<(&dyn crate::comm::Collective, usize), String> {
    let stage = c.place.stage();
    let at = match peer {
        Peer::Prev => stage.checked_sub(1),
        Peer::Next => Some(stage + 1).filter(|&s| s < c.place.mesh.pp),
    };
    let at = at.ok_or_else(|| format!("stage {stage} of {} has no {peer:?} stage", c.place.mesh.pp))?;
    Ok((c.group(CommGroup::Pipeline), at))
}

/// The kept rows' offsets per local expert (`[E_l + 1]`), and the rows dropped past capacity,
/// from the counts each rank sends each local expert (`recv[s·E_l + e]`).
fn kept(x: &Exchange, recv: &[f32]) -> (Vec<usize>, usize) {
    let el = x.local();
    let (mut local, mut dropped) = (vec![0usize; el + 1], 0);
    for e in 0..el {
        let total: usize = (0..x.ranks).map(|s| recv[s * el + e].max(0.0) as usize).sum();
        let keep = total.min(x.capacity);
        dropped += total - keep;
        local[e + 1] = local[e] + keep;
    }
    (local, dropped)
}
