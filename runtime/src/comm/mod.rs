//! Collectives over the ranks of a parallel job: the interface per-rank Programs call (their
//! `AllReduce`, `AllGather`, expert exchanges and pipeline messages, which
//! `cpu::collective` runs over a rank's communicators, for the GPU backend too) and the trainer
//! uses for what the host reduces (losses, routing statistics, the decision to stop, a ZeRO-1
//! checkpoint's moments). A rank of a mesh of data, expert and pipeline parallelism ([`mesh`])
//! holds one communicator per group it belongs to ([`Comms`]). [`Single`] is the job of one rank,
//! where every collective is the identity; [`in_process`] runs ranks as threads of one process
//! with shared-memory collectives and point-to-point mailboxes (the CPU's and the emulator's
//! parallelism, and the tests'); [`tcp`] joins ranks that are processes (a torchrun or SLURM job
//! on CPUs, [`launch`] reading where this process sits) over TCP, for data parallelism. NCCL, for
//! GPUs, is the implementation to come (issue 18's GPU half); it is not built yet.
//!
//! Semantics, the same for every implementation: every rank of a group calls the same
//! collectives in the same order with the same lengths; a sum is taken in rank order 0, 1, …
//! (deterministic, and the same bits on every rank); a rank that fails aborts the group, and the
//! others' collectives return [`CommError::Aborted`] naming it instead of hanging; a collective
//! that waits longer than the group's timeout for the other ranks fails with
//! [`CommError::Timeout`].

pub mod in_process;
pub mod launch;
pub mod mesh;
pub mod tcp;

use std::sync::Arc;

pub use in_process::{run_mesh, run_ranks, Group, Member, RankFailure};
pub use mesh::{CommGroup, Mesh, Place};
pub use tcp::Tcp;

/// Why a collective did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommError {
    #[error("rank {rank} failed: {why}")]
    Aborted { rank: usize, why: String },
    #[error("rank {rank}: {op} waited {seconds:.0} s for the other ranks (only ranks {arrived:?} of {ranks} arrived): the collective timed out (parallel.collective_timeout_s)")]
    Timeout { rank: usize, op: &'static str, seconds: f64, arrived: Vec<usize>, ranks: usize },
    #[error("rank {rank}: all_to_all sends {len} values but its counts {counts:?} (one per rank of {ranks}) add up to {sum}")]
    Counts { rank: usize, len: usize, counts: Vec<usize>, ranks: usize, sum: usize },
    #[error("rank {rank}: {op} of {len} elements, but rank {other} passed {other_len}: the ranks' programs disagree")]
    Mismatch { rank: usize, op: &'static str, len: usize, other: usize, other_len: usize },
    #[error("rank {rank}: a message to or from rank {peer} of a group of {ranks}")]
    Peer { rank: usize, peer: usize, ranks: usize },
    #[error("{0}")]
    Unsupported(String),
}

/// The collectives of one rank of a group.
pub trait Collective: Send + Sync {
    /// This rank, `0..ranks()`.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn ranks(&self) -> usize;
    /// `x = Σ_r x_r` over the ranks, summed in rank order.
    fn all_reduce(&self, x: &mut [f32]) -> Result<(), CommError>;
    /// [`Collective::all_reduce`] in f64 (the host's sums: losses, counts).
    fn all_reduce_f64(&self, x: &mut [f64]) -> Result<(), CommError>;
    /// Each rank's shard ([`shard`] of `x.len()`) sent to every rank: afterwards every shard of
    /// `x` holds its owner's values.
    fn all_gather(&self, x: &mut [f32]) -> Result<(), CommError>;
    /// Personalized exchange (expert parallelism's dispatch and combine): `send` holds, rank after
    /// rank, `counts[q]` values for each rank `q`; returns what every rank sent this one,
    /// concatenated in source-rank order, and how many came from each.
    fn all_to_all(&self, send: &[f32], counts: &[usize]) -> Result<(Vec<f32>, Vec<usize>), CommError>;
    /// Sends `x` to rank `to` of the group (a pipeline's activations); returns without waiting
    /// for the receiver. Messages between two ranks arrive in the order they were sent.
    fn send(&self, to: usize, x: &[f32]) -> Result<(), CommError>;
    /// Receives the next message from rank `from` into `x`, whose length it must have.
    fn recv(&self, from: usize, x: &mut [f32]) -> Result<(), CommError>;
    /// Marks the group failed by this rank, so that every other rank's collectives return
    /// [`CommError::Aborted`] naming it.
    fn abort(&self, why: &str);
}

/// Rank `rank`'s shard of `n` elements split over `ranks`: `[rank·c, min((rank+1)·c, n))` with
/// `c = ⌈n / ranks⌉` (the last shards may be shorter, or empty).
pub fn shard(n: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    let c = n.div_ceil(ranks.max(1));
    (rank * c).min(n)..((rank + 1) * c).min(n)
}

/// Checks that `counts` has one entry per rank and covers `len` values.
pub(crate) fn check_counts(rank: usize, len: usize, counts: &[usize], ranks: usize) -> Result<(), CommError> {
    let sum = counts.iter().try_fold(0usize, |a, &c| a.checked_add(c)).unwrap_or(usize::MAX);
    if counts.len() != ranks || sum != len {
        return Err(CommError::Counts { rank, len, counts: counts.to_vec(), ranks, sum });
    }
    Ok(())
}

/// The job of one rank: every collective leaves its data as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn ranks(&self) -> usize {
        1
    }
    fn all_reduce(&self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_gather(&self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_to_all(&self, send: &[f32], counts: &[usize]) -> Result<(Vec<f32>, Vec<usize>), CommError> {
        check_counts(0, send.len(), counts, 1)?;
        Ok((send.to_vec(), counts.to_vec()))
    }
    fn send(&self, to: usize, _: &[f32]) -> Result<(), CommError> {
        Err(CommError::Peer { rank: 0, peer: to, ranks: 1 })
    }
    fn recv(&self, from: usize, _: &mut [f32]) -> Result<(), CommError> {
        Err(CommError::Peer { rank: 0, peer: from, ranks: 1 })
    }
    fn abort(&self, _: &str) {}
}

/// One rank's communicators: one per group of the mesh it belongs to ([`CommGroup`]); a group it
/// is not a member of (a middle stage's `Ends`) is a job of one.
#[derive(Clone)]
pub struct Comms {
    pub place: Place,
    groups: Arc<[Arc<dyn Collective>; 6]>,
}

impl Comms {
    /// `place`'s communicators, by [`CommGroup::ALL`]'s order.
    pub fn new(place: Place, groups: [Arc<dyn Collective>; 6]) -> Comms {
        Comms { place, groups: Arc::new(groups) }
    }

    /// The job of one rank.
    pub fn single() -> Comms {
        Comms::new(Place::SINGLE, CommGroup::ALL.map(|_| -> Arc<dyn Collective> { Arc::new(Single) }))
    }

    /// A data-parallel job whose world is `world` (every rank one stage, each rank its own expert
    /// shard's only holder when `ep = 1`): the data-parallel group is the world; refused for a
    /// mesh with expert or pipeline parallelism, whose other groups `world` cannot form.
    pub fn data_parallel(world: Arc<dyn Collective>, ep: usize) -> Result<Comms, CommError> {
        let mesh = Mesh { dp: world.ranks(), ep, pp: 1 };
        if ep != 1 {
            return Err(CommError::Unsupported(format!(
                "{mesh}: expert parallelism needs the expert-parallel groups that in-process ranks (--nproc) form; \
                 a job joined over TCP runs data parallelism alone"
            )));
        }
        let place = Place { mesh, rank: world.rank() };
        let groups = CommGroup::ALL.map(|g| -> Arc<dyn Collective> {
            match g {
                CommGroup::World | CommGroup::Data | CommGroup::ExpertData => world.clone(),
                _ => Arc::new(Single),
            }
        });
        Ok(Comms::new(place, groups))
    }

    /// The communicator of `group`.
    pub fn group(&self, group: CommGroup) -> &dyn Collective {
        let i = CommGroup::ALL.iter().position(|&g| g == group).unwrap_or(0);
        &*self.groups[i]
    }

    /// The world group.
    pub fn world(&self) -> &dyn Collective {
        self.group(CommGroup::World)
    }

    /// Marks the job failed by this rank (every group: the job fails as one).
    pub fn abort(&self, why: &str) {
        for g in self.groups.iter() {
            g.abort(why);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// How many values rank `r` sends rank `q` in the all-to-all tests: 0, 1 or 2 (some pairs
    /// exchange nothing).
    fn count(r: usize, q: usize) -> usize {
        (r * 2 + q) % 3
    }

    /// What rank `r` of `ranks` sends in the all-to-all tests: `100r + 10q + i` for rank `q`.
    pub(crate) fn rows_for_all(r: usize, ranks: usize) -> (Vec<f32>, Vec<usize>) {
        let counts: Vec<usize> = (0..ranks).map(|q| count(r, q)).collect();
        let send = (0..ranks).flat_map(|q| (0..count(r, q)).map(move |i| (100 * r + 10 * q + i) as f32)).collect();
        (send, counts)
    }

    /// What rank `q` must receive: each rank's values for it, in rank order.
    pub(crate) fn rows_from_all(q: usize, ranks: usize) -> (Vec<f32>, Vec<usize>) {
        let counts: Vec<usize> = (0..ranks).map(|r| count(r, q)).collect();
        let got = (0..ranks).flat_map(|r| (0..count(r, q)).map(move |i| (100 * r + 10 * q + i) as f32)).collect();
        (got, counts)
    }

    #[test]
    fn counts_that_do_not_cover_the_values_are_refused() {
        let e = Single.all_to_all(&[1.0, 2.0], &[1]).unwrap_err();
        assert!(e.to_string().contains("add up to 1"), "{e}");
    }

    #[test]
    fn shards_cover_the_range_once_in_order() {
        for n in [0usize, 1, 7, 8, 9, 100] {
            for ranks in 1..6 {
                let all: Vec<usize> = (0..ranks).flat_map(|r| shard(n, ranks, r)).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} ranks {ranks}");
            }
        }
    }
}
