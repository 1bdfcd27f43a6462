//! In-process ranks: a [`Group`] of ranks that are threads of one process, and their shared-memory
//! collectives. Each collective is one exchange: every rank deposits its data (an `Arc` of a
//! copy), the last to arrive opens the round, and each rank computes the result from all the
//! deposits — sums in rank order, so every rank gets the same bits. Deposits alternate between two
//! sets by the round's parity: a rank can be at most one round ahead of another (it cannot finish
//! round `g + 1` before every rank arrived there, after reading round `g`), so a fast rank never
//! overwrites what a slow one is still to read.
//!
//! [`run_ranks`] runs a closure per rank on its own thread and stops the whole job when one fails:
//! its error (or panic) aborts the group, the other ranks' next collective returns
//! [`CommError::Aborted`] naming it, and the job's error is the first rank's own.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{shard, Collective, CommError};

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

struct State {
    /// Rounds completed.
    round: u64,
    /// Ranks arrived at the current round.
    arrived: Vec<bool>,
    /// Deposits of even and odd rounds, by rank.
    deposits: [Vec<Option<Deposit>>; 2],
    /// The first rank that failed, and why.
    failed: Option<(usize, String)>,
}

struct Shared {
    ranks: usize,
    timeout: Duration,
    state: Mutex<State>,
    turn: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left the state consistent (every write
        // under it is a single assignment); the panic itself aborts the group.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A group of in-process ranks.
#[derive(Clone)]
pub struct Group {
    shared: Arc<Shared>,
}

impl Group {
    /// A group of `ranks` ranks whose collectives wait at most `timeout` for one another.
    pub fn new(ranks: usize, timeout: Duration) -> Group {
        let ranks = ranks.max(1);
        let state = State {
            round: 0,
            arrived: vec![false; ranks],
            deposits: [vec![None; ranks], vec![None; ranks]],
            failed: None,
        };
        Group { shared: Arc::new(Shared { ranks, timeout, state: Mutex::new(state), turn: Condvar::new() }) }
    }

    /// Rank `rank`'s end of the group.
    pub fn member(&self, rank: usize) -> Member {
        Member { rank, shared: self.shared.clone() }
    }

    /// The first rank that failed, and why.
    pub fn failure(&self) -> Option<(usize, String)> {
        self.shared.lock().failed.clone()
    }
}

/// One rank of a [`Group`].
#[derive(Clone)]
pub struct Member {
    rank: usize,
    shared: Arc<Shared>,
}

impl Member {
    /// Deposits `mine` for the next round and returns every rank's deposit of it, in rank order.
    fn exchange(&self, op: &'static str, mine: Deposit) -> Result<Vec<Deposit>, CommError> {
        let sh = &*self.shared;
        let mut st = sh.lock();
        if let Some((rank, why)) = &st.failed {
            return Err(CommError::Aborted { rank: *rank, why: why.clone() });
        }
        let round = st.round;
        let parity = (round % 2) as usize;
        st.deposits[parity][self.rank] = Some(mine);
        st.arrived[self.rank] = true;
        if st.arrived.iter().all(|&a| a) {
            st.arrived.iter_mut().for_each(|a| *a = false);
            st.round += 1;
            sh.turn.notify_all();
        } else {
            let deadline = Instant::now() + sh.timeout;
            while st.round == round && st.failed.is_none() {
                let now = Instant::now();
                if now >= deadline {
                    let arrived: Vec<usize> = (0..sh.ranks).filter(|&r| st.arrived[r]).collect();
                    let e = CommError::Timeout {
                        rank: self.rank,
                        op,
                        seconds: sh.timeout.as_secs_f64(),
                        arrived,
                        ranks: sh.ranks,
                    };
                    st.failed.get_or_insert((self.rank, e.to_string()));
                    sh.turn.notify_all();
                    return Err(e);
                }
                st = sh.turn.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            if st.round == round {
                let (rank, why) = st.failed.clone().unwrap_or_default();
                return Err(CommError::Aborted { rank, why });
            }
        }
        let all: Vec<Deposit> = st.deposits[parity].iter().flatten().cloned().collect();
        drop(st);
        for (other, d) in all.iter().enumerate() {
            if d.len() != all[self.rank].len() && !matches!(op, "all_gather" | "all_to_all") {
                return Err(CommError::Mismatch {
                    rank: self.rank,
                    op,
                    len: all[self.rank].len(),
                    other,
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
                        rank: self.rank,
                        op: "all_gather",
                        len: range.len(),
                        other: r,
                        other_len: d.len(),
                    })
                }
            }
        }
        Ok(())
    }

    fn all_to_all(&self, send: &[f32], counts: &[usize]) -> Result<(Vec<f32>, Vec<usize>), CommError> {
        let ranks = self.shared.ranks;
        super::check_counts(self.rank, send.len(), counts, ranks)?;
        if ranks == 1 {
            return Ok((send.to_vec(), counts.to_vec()));
        }
        let all = self.exchange("all_to_all", Deposit::Rows(Arc::new((send.to_vec(), counts.to_vec()))))?;
        let (mut got, mut from) = (Vec::new(), Vec::with_capacity(ranks));
        for (r, d) in all.iter().enumerate() {
            let Deposit::Rows(v) = d else {
                return Err(CommError::Mismatch {
                    rank: self.rank,
                    op: "all_to_all",
                    len: send.len(),
                    other: r,
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

    fn abort(&self, why: &str) {
        let mut st = self.shared.lock();
        st.failed.get_or_insert_with(|| (self.rank, why.to_string()));
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
    let results: Vec<Option<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|r| {
                let (m, f) = (group.member(r), &f);
                std::thread::Builder::new().name(format!("rank {r}")).spawn_scoped(s, move || {
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(m.clone())));
                    match out {
                        Ok(Ok(v)) => Some(v),
                        Ok(Err(e)) => {
                            m.abort(&e.to_string());
                            None
                        }
                        Err(p) => {
                            let msg = p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            m.abort(&format!("panicked: {msg}"));
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
                    group.member(r).abort(&format!("cannot start its thread: {e}"));
                    None
                }
            })
            .collect()
    });
    if let Some((rank, why)) = group.failure() {
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
}
