//! In-process ranks: groups of ranks that are threads of one process, and their shared-memory
//! collectives. Each collective is one exchange: every rank deposits its data (an `Arc` of a
//! copy), the last to arrive opens the round, and each rank computes the result from all the
//! deposits — sums in rank order, so every rank gets the same bits. Deposits alternate between two
//! sets by the round's parity: a rank can be at most one round ahead of another (it cannot finish
//! round `g + 1` before every rank arrived there, after reading round `g`), so a fast rank never
//! overwrites what a slow one is still to read. Point-to-point messages (a pipeline's activations)
//! go through a mailbox per ordered pair of ranks, first in, first out.
//!
//! The groups of one job share its failure: a rank that fails marks the job, and every rank's
//! collective in any group — waiting or next — returns [`CommError::Aborted`] naming it (by world
//! rank) instead of hanging. [`run_ranks`] runs a closure per rank of a data-parallel job on its own
//! thread, [`run_mesh`] one per rank of a mesh with every group of it ([`Comms`]); both stop the
//! whole job when one rank fails, and the job's error is the first rank's own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::mesh::{CommGroup, Mesh, Place};
use super::{shard, Collective, CommError, Comms};

/// How often a waiting rank looks at the job's failure (a rank of another group may have failed).
const POLL: Duration = Duration::from_millis(20);

/// One rank's deposit in a round.
#[derive(Clone)]
enum Deposit {
    F32(Arc<Vec<f32>>),
    F64(Arc<Vec<f64>>),
    /// An all-to-all's values and how many go to each rank.
    Rows(Arc<(Vec<f32>, Vec<usize>)>),
}

impl Deposit {
    fn len(&self) -> usize {
        match self {
            Deposit::F32(v) => v.len(),
            Deposit::F64(v) => v.len(),
            Deposit::Rows(v) => v.0.len(),
        }
    }
}

/// What every group of a job shares: the first rank that failed (world rank), and why.
#[derive(Default)]
struct JobState {
    failed: Mutex<Option<(usize, String)>>,
}

impl JobState {
    fn failure(&self) -> Option<(usize, String)> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn fail(&self, rank: usize, why: &str) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| (rank, why.to_string()));
    }
}

struct State {
    /// Rounds completed.
    round: u64,
    /// Ranks arrived at the current round.
    arrived: Vec<bool>,
    /// Deposits of even and odd rounds, by rank.
    deposits: [Vec<Option<Deposit>>; 2],
    /// Messages sent and not yet received, by (from, to) (group ranks).
    mail: HashMap<(usize, usize), VecDeque<Vec<f32>>>,
}

struct Shared {
    ranks: usize,
    /// Each group rank's world rank (for messages).
    world: Vec<usize>,
    timeout: Duration,
    state: Mutex<State>,
    turn: Condvar,
    job: Arc<JobState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left the state consistent (every write
        // under it is a single assignment); the panic itself aborts the group.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn aborted(&self) -> Option<CommError> {
        self.job.failure().map(|(rank, why)| CommError::Aborted { rank, why })
    }
}

/// A group of in-process ranks.
#[derive(Clone)]
pub struct Group {
    shared: Arc<Shared>,
}

impl Group {
    /// A job of `ranks` ranks (world ranks `0..ranks`) whose collectives wait at most `timeout`
    /// for one another.
    pub fn new(ranks: usize, timeout: Duration) -> Group {
        Group::within(Arc::new(JobState::default()), (0..ranks.max(1)).collect(), timeout)
    }

    /// A group of the job `job` over the world ranks `world` (in group order).
    fn within(job: Arc<JobState>, world: Vec<usize>, timeout: Duration) -> Group {
        let ranks = world.len().max(1);
        let state = State {
            round: 0,
            arrived: vec![false; ranks],
            deposits: [vec![None; ranks], vec![None; ranks]],
            mail: HashMap::new(),
        };
        let shared = Shared { ranks, world, timeout, state: Mutex::new(state), turn: Condvar::new(), job };
        Group { shared: Arc::new(shared) }
    }

    /// Rank `rank`'s end of the group (its rank within the group).
    pub fn member(&self, rank: usize) -> Member {
        Member { rank, shared: self.shared.clone() }
    }

    /// The first rank of the job that failed (world rank), and why.
    pub fn failure(&self) -> Option<(usize, String)> {
        self.shared.job.failure()
    }
}

/// One rank of a [`Group`].
#[derive(Clone)]
pub struct Member {
    rank: usize,
    shared: Arc<Shared>,
}

impl Member {
    /// This rank's world rank.
    fn world(&self) -> usize {
        self.shared.world.get(self.rank).copied().unwrap_or(self.rank)
    }

    /// Waits on the group's condition until `done` holds, the job fails, or the timeout passes
    /// (then the job fails with a timeout naming the ranks `arrived` says came).
    fn wait<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        op: &'static str,
        done: impl Fn(&State) -> bool,
        arrived: impl Fn(&State) -> Vec<usize>,
    ) -> Result<MutexGuard<'a, State>, CommError> {
        let sh = &*self.shared;
        let deadline = Instant::now() + sh.timeout;
        loop {
            if done(&st) {
                return Ok(st);
            }
            if let Some(e) = sh.aborted() {
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                let e = CommError::Timeout {
                    rank: self.world(),
                    op,
                    seconds: sh.timeout.as_secs_f64(),
                    arrived: arrived(&st).into_iter().map(|r| sh.world[r]).collect(),
                    ranks: sh.ranks,
                };
                sh.job.fail(self.world(), &e.to_string());
                sh.turn.notify_all();
                return Err(e);
            }
            st = sh.turn.wait_timeout(st, (deadline - now).min(POLL)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Deposits `mine` for the next round and returns every rank's deposit of it, in rank order.
    fn exchange(&self, op: &'static str, mine: Deposit) -> Result<Vec<Deposit>, CommError> {
        let sh = &*self.shared;
        if let Some(e) = sh.aborted() {
            return Err(e);
        }
        let mut st = sh.lock();
        let round = st.round;
        let parity = (round % 2) as usize;
        st.deposits[parity][self.rank] = Some(mine);
        st.arrived[self.rank] = true;
        if st.arrived.iter().all(|&a| a) {
            st.arrived.iter_mut().for_each(|a| *a = false);
            st.round += 1;
            sh.turn.notify_all();
        } else {
            st = self.wait(st, op, |s| s.round != round, |s| (0..sh.ranks).filter(|&r| s.arrived[r]).collect())?;
        }
        let all: Vec<Deposit> = st.deposits[parity].iter().flatten().cloned().collect();
        drop(st);
        for (other, d) in all.iter().enumerate() {
            if d.len() != all[self.rank].len() && !matches!(op, "all_gather" | "all_to_all") {
                return Err(CommError::Mismatch {
                    rank: self.world(),
                    op,
                    len: all[self.rank].len(),
                    other: sh.world[other],
                    other_len: d.len(),
                });
            }
        }
        Ok(all)
    }
}

impl Collective for Member {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.shared.ranks
    }

    fn all_reduce(&self, x: &mut [f32]) -> Result<(), CommError> {
        if self.shared.ranks == 1 {
            return Ok(());
        }
        let all = self.exchange("all_reduce", Deposit::F32(Arc::new(x.to_vec())))?;
        let parts: Vec<&[f32]> = all
            .iter()
            .map(|d| match d {
                Deposit::F32(v) => &v[..],
                _ => &[][..],
            })
            .collect();
        use rayon::prelude::*;
        x.par_chunks_mut(1 << 14).enumerate().for_each(|(c, out)| {
            let at = c << 14;
            for (i, o) in out.iter_mut().enumerate() {
                let mut s = parts[0][at + i];
                for p in &parts[1..] {
                    s += p[at + i];
                }
                *o = s;
            }
        });
        Ok(())
    }

    fn all_reduce_f64(&self, x: &mut [f64]) -> Result<(), CommError> {
        if self.shared.ranks == 1 {
            return Ok(());
        }
        let all = self.exchange("all_reduce", Deposit::F64(Arc::new(x.to_vec())))?;
        for (i, o) in x.iter_mut().enumerate() {
            *o = all
                .iter()
                .map(|d| match d {
                    Deposit::F64(v) => v[i],
                    Deposit::F32(v) => v[i] as f64,
                    Deposit::Rows(v) => v.0[i] as f64,
                })
                .fold(0.0, |a, b| a + b);
        }
        Ok(())
    }

    fn all_gather(&self, x: &mut [f32]) -> Result<(), CommError> {
        let ranks = self.shared.ranks;
        if ranks == 1 {
            return Ok(());
        }
        let mine = shard(x.len(), ranks, self.rank);
        let all = self.exchange("all_gather", Deposit::F32(Arc::new(x[mine].to_vec())))?;
        for (r, d) in all.iter().enumerate() {
            let range = shard(x.len(), ranks, r);
            match d {
                Deposit::F32(v) if v.len() == range.len() => x[range].copy_from_slice(v),
                d => {
                    return Err(CommError::Mismatch {
                        rank: self.world(),
                        op: "all_gather",
                        len: range.len(),
                        other: self.shared.world[r],
                        other_len: d.len(),
                    })
                }
            }
        }
        Ok(())
    }

    fn all_to_all(&self, send: &[f32], counts: &[usize]) -> Result<(Vec<f32>, Vec<usize>), CommError> {
        let ranks = self.shared.ranks;
        super::check_counts(self.world(), send.len(), counts, ranks)?;
        if ranks == 1 {
            return Ok((send.to_vec(), counts.to_vec()));
        }
        let all = self.exchange("all_to_all", Deposit::Rows(Arc::new((send.to_vec(), counts.to_vec()))))?;
        let (mut got, mut from) = (Vec::new(), Vec::with_capacity(ranks));
        for (r, d) in all.iter().enumerate() {
            let Deposit::Rows(v) = d else {
                return Err(CommError::Mismatch {
                    rank: self.world(),
                    op: "all_to_all",
                    len: send.len(),
                    other: self.shared.world[r],
                    other_len: d.len(),
                });
            };
            let (values, counts) = &**v;
            let at: usize = counts[..self.rank].iter().sum();
            got.extend_from_slice(&values[at..at + counts[self.rank]]);
            from.push(counts[self.rank]);
        }
        Ok((got, from))
    }

    fn send(&self, to: usize, x: &[f32]) -> Result<(), CommError> {
        let sh = &*self.shared;
        if to >= sh.ranks {
            return Err(CommError::Peer { rank: self.world(), peer: to, ranks: sh.ranks });
        }
        if let Some(e) = sh.aborted() {
            return Err(e);
        }
        sh.lock().mail.entry((self.rank, to)).or_default().push_back(x.to_vec());
        sh.turn.notify_all();
        Ok(())
    }

    fn recv(&self, from: usize, x: &mut [f32]) -> Result<(), CommError> {
        let sh = &*self.shared;
        if from >= sh.ranks {
            return Err(CommError::Peer { rank: self.world(), peer: from, ranks: sh.ranks });
        }
        let key = (from, self.rank);
        let st =
            self.wait(sh.lock(), "recv", |s| s.mail.get(&key).is_some_and(|q| !q.is_empty()), |_| vec![self.rank])?;
        let mut st = st;
        let got = st.mail.get_mut(&key).and_then(VecDeque::pop_front).unwrap_or_default();
        drop(st);
        if got.len() != x.len() {
            return Err(CommError::Mismatch {
                rank: self.world(),
                op: "recv",
                len: x.len(),
                other: sh.world[from],
                other_len: got.len(),
            });
        }
        x.copy_from_slice(&got);
        Ok(())
    }

    fn abort(&self, why: &str) {
        self.shared.job.fail(self.world(), why);
        let _guard = self.shared.lock();
        self.shared.turn.notify_all();
    }
}

/// The rank that stopped a job, and its error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rank {rank} of {ranks}: {why}")]
pub struct RankFailure {
    pub rank: usize,
    pub ranks: usize,
    pub why: String,
}

/// Runs `f` for each of `ranks` in-process ranks, each on its own thread with its end of one
/// group, and returns their results in rank order — or the failure of the first rank that
/// failed (an error or a panic), which stopped the others at their next collective.
pub fn run_ranks<T: Send, E: std::fmt::Display>(
    ranks: usize,
    timeout: Duration,
    f: impl Fn(Member) -> Result<T, E> + Sync,
) -> Result<Vec<T>, RankFailure> {
    let group = Group::new(ranks, timeout);
    let job = group.shared.job.clone();
    run_threads(ranks, &job, |r| group.member(r), f)
}

/// Runs `f` for each rank of `mesh`, each on its own thread with every group of its place
/// ([`Comms`]), and returns their results in world-rank order — or the first failure, as
/// [`run_ranks`].
pub fn run_mesh<T: Send, E: std::fmt::Display>(
    mesh: Mesh,
    timeout: Duration,
    f: impl Fn(Comms) -> Result<T, E> + Sync,
) -> Result<Vec<T>, RankFailure> {
    let job = Arc::new(JobState::default());
    // One group per distinct member list of each kind.
    let mut groups: HashMap<(CommGroup, Vec<usize>), Group> = HashMap::new();
    for p in mesh.places() {
        for g in CommGroup::ALL {
            let m = p.members(g);
            groups.entry((g, m.clone())).or_insert_with(|| Group::within(job.clone(), m, timeout));
        }
    }
    let comms = |rank: usize| {
        let place = Place { mesh, rank };
        let ends: [Arc<dyn Collective>; 6] = CommGroup::ALL.map(|g| -> Arc<dyn Collective> {
            match place.index_in(g) {
                Some(i) => Arc::new(groups[&(g, place.members(g))].member(i)),
                None => Arc::new(super::Single),
            }
        });
        Comms::new(place, ends)
    };
    run_threads(mesh.world(), &job, comms, f)
}

/// Runs `f(end(r))` on a thread per rank `r`; a rank's error or panic fails the job.
fn run_threads<C: Send, T: Send, E: std::fmt::Display>(
    ranks: usize,
    job: &Arc<JobState>,
    end: impl Fn(usize) -> C + Sync,
    f: impl Fn(C) -> Result<T, E> + Sync,
) -> Result<Vec<T>, RankFailure> {
    let results: Vec<Option<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|r| {
                let (c, f) = (end(r), &f);
                std::thread::Builder::new().name(format!("rank {r}")).spawn_scoped(s, move || {
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c)));
                    match out {
                        Ok(Ok(v)) => Some(v),
                        Ok(Err(e)) => {
                            job.fail(r, &e.to_string());
                            None
                        }
                        Err(p) => {
                            let msg = p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            job.fail(r, &format!("panicked: {msg}"));
                            None
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(r, h)| match h {
                Ok(h) => h.join().ok().flatten(),
                Err(e) => {
                    job.fail(r, &format!("cannot start its thread: {e}"));
                    None
                }
            })
            .collect()
    });
    if let Some((rank, why)) = job.failure() {
        return Err(RankFailure { rank, ranks, why });
    }
    Ok(results.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(20);

    #[test]
    fn all_reduce_sums_in_rank_order_and_every_rank_gets_the_same_bits() {
        // Values whose f32 sum depends on the order: rank order is the contract.
        let inputs = [vec![1e8f32, 1.0, 0.5], vec![-1e8, 3.0, 0.25], vec![1.0, -4.0, 0.125]];
        let want: Vec<f32> = (0..3).map(|i| (inputs[0][i] + inputs[1][i]) + inputs[2][i]).collect();
        assert_ne!(want[0], inputs[0][0] + (inputs[1][0] + inputs[2][0]), "the test needs order-dependent sums");
        // Many rounds, so that ranks run ahead of one another and both deposit sets are reused.
        let out = run_ranks(3, T, |m| {
            let mut all = Vec::new();
            for _ in 0..200 {
                let mut y = inputs[m.rank()].clone();
                m.all_reduce(&mut y)?;
                all.push(y);
            }
            Ok::<_, CommError>(all)
        })
        .unwrap();
        for y in out.iter().flatten() {
            assert_eq!(y, &want);
        }
    }

    #[test]
    fn all_to_all_delivers_each_ranks_values_in_rank_order() {
        let got = run_ranks(3, T, |m| {
            let (send, counts) = crate::comm::tests::rows_for_all(m.rank(), 3);
            m.all_to_all(&send, &counts)
        })
        .unwrap();
        for (q, g) in got.into_iter().enumerate() {
            assert_eq!(g, crate::comm::tests::rows_from_all(q, 3), "rank {q}");
        }
    }

    #[test]
    fn all_gather_assembles_every_shard() {
        let out = run_ranks(3, T, |m| {
            let mut x = vec![-1.0f32; 10];
            for i in shard(10, 3, m.rank()) {
                x[i] = i as f32;
            }
            m.all_gather(&mut x)?;
            Ok::<_, CommError>(x)
        })
        .unwrap();
        for x in out {
            assert_eq!(x, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_failing_rank_stops_the_job_and_is_named() {
        let err = run_ranks(3, T, |m| -> Result<(), String> {
            if m.rank() == 1 {
                return Err("disk full".to_string());
            }
            let mut x = [1.0f32];
            loop {
                m.all_reduce(&mut x).map_err(|e| e.to_string())?;
            }
        })
        .unwrap_err();
        assert_eq!((err.rank, err.why.as_str()), (1, "disk full"));
    }

    #[test]
    fn a_panicking_rank_is_named_too() {
        let err = run_ranks(2, T, |m| {
            if m.rank() == 0 {
                panic!("boom");
            }
            m.all_reduce(&mut [0.0]).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert_eq!(err.rank, 0);
        assert!(err.why.contains("boom"), "{err}");
    }

    #[test]
    fn a_rank_that_never_arrives_times_the_collective_out() {
        let err = run_ranks(2, Duration::from_millis(200), |m| {
            if m.rank() == 1 {
                // Busy elsewhere, past the timeout, then gone.
                std::thread::sleep(Duration::from_millis(600));
                return Ok(());
            }
            m.all_reduce(&mut [0.0]).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert_eq!(err.rank, 0);
        assert!(err.why.contains("timed out") && err.why.contains("[0]"), "{err}");
    }

    #[test]
    fn ranks_that_disagree_on_a_length_are_told() {
        let err = run_ranks(2, T, |m| {
            let mut x = vec![0.0f32; 2 + m.rank()];
            m.all_reduce(&mut x).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert!(err.why.contains("disagree"), "{err}");
    }

    #[test]
    fn messages_arrive_in_order_between_each_pair() {
        let got = run_ranks(3, T, |m| {
            let next = (m.rank() + 1) % 3;
            let prev = (m.rank() + 2) % 3;
            for i in 0..50 {
                m.send(next, &[m.rank() as f32, i as f32])?;
            }
            let mut seen = Vec::new();
            for _ in 0..50 {
                let mut x = [0.0f32; 2];
                m.recv(prev, &mut x)?;
                seen.push(x);
            }
            Ok::<_, CommError>(seen)
        })
        .unwrap();
        for (r, seen) in got.iter().enumerate() {
            let prev = ((r + 2) % 3) as f32;
            assert_eq!(seen, &(0..50).map(|i| [prev, i as f32]).collect::<Vec<_>>());
        }
        // A message of another length than the receiver expects is named.
        let err = run_ranks(2, T, |m| if m.rank() == 0 { m.send(1, &[1.0, 2.0]) } else { m.recv(0, &mut [0.0; 3]) })
            .unwrap_err();
        assert!(err.why.contains("disagree"), "{err}");
    }

    /// A mesh's groups: sums over the data-parallel ranks of a stage only, the expert group's
    /// all-to-all, messages along the pipeline; a failure in one group stops a rank waiting in
    /// another, naming the world rank that failed.
    #[test]
    fn a_mesh_runs_each_groups_collectives_within_it() {
        let mesh = Mesh { dp: 4, ep: 2, pp: 2 };
        let out = run_mesh(mesh, T, |c| {
            let p = c.place;
            let mut x = [p.rank as f32];
            c.group(CommGroup::Data).all_reduce(&mut x)?;
            let mut y = [1.0f32];
            c.group(CommGroup::ExpertData).all_reduce(&mut y)?;
            let pipe = c.group(CommGroup::Pipeline);
            let mut z = [0.0f32];
            if p.first_stage() {
                pipe.send(1, &[p.rank as f32 * 10.0])?;
            } else {
                pipe.recv(0, &mut z)?;
            }
            Ok::<_, CommError>((x[0], y[0], z[0]))
        })
        .unwrap();
        for (rank, (x, y, z)) in out.into_iter().enumerate() {
            let stage = rank / 4;
            let want: f32 = (0..4).map(|d| (stage * 4 + d) as f32).sum();
            assert_eq!(x, want, "rank {rank}");
            assert_eq!(y, 2.0, "rank {rank}");
            assert_eq!(z, if stage == 1 { (rank - 4) as f32 * 10.0 } else { 0.0 });
        }
        let err = run_mesh(mesh, T, |c| -> Result<(), String> {
            if c.place.rank == 6 {
                return Err("out of memory".into());
            }
            // Rank 1 waits on a message from stage 1 (rank 5), which waits in its data group
            // for rank 6.
            if c.place.rank == 1 {
                let mut x = [0.0];
                return c.group(CommGroup::Pipeline).recv(1, &mut x).map_err(|e| e.to_string());
            }
            let mut x = [0.0f32];
            c.group(CommGroup::Data).all_reduce(&mut x).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert_eq!((err.rank, err.why.as_str()), (6, "out of memory"));
    }
}
