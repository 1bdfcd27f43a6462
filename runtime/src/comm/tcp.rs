//! Ranks in separate processes — a job launched by torchrun or SLURM on CPUs — joined over TCP.
//! Rank 0 is the hub: it listens on the master's port, every other rank connects to it, and each
//! collective is a star: every rank sends its data to the hub, which reduces in rank order (its own
//! first: the same sums, bit for bit, as the in-process ranks) or assembles the shards, and sends the
//! result back. The same semantics as every [`Collective`]: a rank that fails sends its error to the
//! hub, which passes it to every other rank; a rank that vanishes (its connection closes) fails the
//! job naming it; a wait longer than the timeout fails with [`CommError::Timeout`].
//!
//! A frame is `[tag u8][rank u32][n u64][n payload units]`, little-endian: f32 or f64 values for
//! the collectives, UTF-8 bytes for an abort's message.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{shard, Collective, CommError};

const HELLO: u8 = 0;
const REDUCE_F32: u8 = 1;
const REDUCE_F64: u8 = 2;
const GATHER: u8 = 3;
const ALL_TO_ALL: u8 = 4;
const RESULT: u8 = 8;
const ABORT: u8 = 9;

/// Why the ranks could not meet.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("rank 0 cannot listen on port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("rank {rank}: no connection to rank 0 at {addr} within {seconds:.0} s ({last})")]
    Connect { rank: usize, addr: String, seconds: f64, last: String },
    #[error("rank 0: only ranks {joined:?} of {ranks} joined within {seconds:.0} s")]
    Join { joined: Vec<usize>, ranks: usize, seconds: f64 },
    #[error("rank 0: a process said it is rank {rank} of {world}, but this job has {ranks} ranks (or that rank joined twice)")]
    Stranger { rank: usize, world: usize, ranks: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

enum Links {
    /// Rank 0: a stream to each other rank, by rank (index 0 unused).
    Hub(Vec<Option<TcpStream>>),
    /// Every other rank: its stream to rank 0.
    Spoke(TcpStream),
}

/// One rank of a job whose ranks are processes joined over TCP.
pub struct Tcp {
    rank: usize,
    ranks: usize,
    timeout: Duration,
    links: Mutex<Links>,
    /// The first failure this rank learned of, which every later collective returns.
    failed: Mutex<Option<(usize, String)>>,
}

fn frame(tag: u8, rank: usize, n: usize, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(13 + payload.len());
    f.push(tag);
    f.extend_from_slice(&(rank as u32).to_le_bytes());
    f.extend_from_slice(&(n as u64).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one frame's header and payload (`unit` bytes per element; an abort's are bytes).
fn read_frame(s: &mut TcpStream, unit: usize) -> std::io::Result<(u8, usize, Vec<u8>)> {
    let mut head = [0u8; 13];
    s.read_exact(&mut head)?;
    let tag = head[0];
    let rank = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let n = u64::from_le_bytes(head[5..13].try_into().unwrap_or([0; 8])) as usize;
    let bytes = if tag == ABORT { n } else { n.saturating_mul(unit) };
    if bytes > 1 << 36 {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("a frame of {bytes} bytes")));
    }
    let mut payload = vec![0u8; bytes];
    s.read_exact(&mut payload)?;
    Ok((tag, rank, payload))
}

impl Tcp {
    /// Joins the job as `rank` of `ranks`: rank 0 listens on `port` and waits for the others,
    /// which connect to `addr:port` (retrying until rank 0 is up), each within `timeout`.
    pub fn connect(rank: usize, ranks: usize, addr: &str, port: u16, timeout: Duration) -> Result<Tcp, ConnectError> {
        let deadline = Instant::now() + timeout;
        let links = if rank == 0 {
            let listener =
                TcpListener::bind(("0.0.0.0", port)).map_err(|source| ConnectError::Listen { port, source })?;
            listener.set_nonblocking(true)?;
            let mut peers: Vec<Option<TcpStream>> = (0..ranks).map(|_| None).collect();
            while peers.iter().skip(1).any(Option::is_none) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)?;
                        s.set_read_timeout(Some(timeout))?;
                        let (_, r, world) = read_frame(&mut s, 1)?;
                        let world = world.len();
                        if r == 0 || r >= ranks || world != ranks || peers[r].is_some() {
                            return Err(ConnectError::Stranger { rank: r, world, ranks });
                        }
                        s.set_nodelay(true)?;
                        peers[r] = Some(s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            let joined = (0..ranks).filter(|&r| r == 0 || peers[r].is_some()).collect();
                            return Err(ConnectError::Join { joined, ranks, seconds: timeout.as_secs_f64() });
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Links::Hub(peers)
        } else {
            let target = format!("{addr}:{port}");
            let mut s = loop {
                match TcpStream::connect(&target) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        return Err(ConnectError::Connect {
                            rank,
                            addr: target,
                            seconds: timeout.as_secs_f64(),
                            last: e.to_string(),
                        })
                    }
                }
            };
            s.set_nodelay(true)?;
            // The hello's payload is `ranks` bytes: the world this process believes in.
            s.write_all(&frame(HELLO, rank, ranks, &vec![0u8; ranks]))?;
            // A rank waits for the hub's answer as long as the hub waits for the slowest rank, and
            // a little more, so that the hub's word (a timeout naming the missing rank) comes first.
            s.set_read_timeout(Some(timeout + Duration::from_secs(5)))?;
            Links::Spoke(s)
        };
        Ok(Tcp { rank, ranks, timeout, links: Mutex::new(links), failed: Mutex::new(None) })
    }

    fn fail(&self, rank: usize, why: String) -> CommError {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let (rank, why) = f.get_or_insert((rank, why)).clone();
        CommError::Aborted { rank, why }
    }

    /// One collective: `mine` (`n` values of `unit` bytes) to the hub, the result back.
    /// `combine` is the hub's work over every rank's payload, in rank order: one result for every
    /// rank, or one per rank.
    // The hub's loops index the streams by rank and give up the lock mid-loop (to tell the other
    // ranks of a failure): an iterator over the streams would hold it.
    #[allow(clippy::needless_range_loop)]
    fn exchange(
        &self,
        op: &'static str,
        tag: u8,
        unit: usize,
        mine: Vec<u8>,
        combine: impl Fn(&[Vec<u8>]) -> Result<Vec<Vec<u8>>, CommError>,
    ) -> Result<Vec<u8>, CommError> {
        if let Some((rank, why)) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(CommError::Aborted { rank, why });
        }
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *links {
            Links::Hub(peers) => {
                let mut all = vec![mine];
                for r in 1..self.ranks {
                    let Some(s) = peers[r].as_mut() else { return Err(self.fail(r, "not connected".into())) };
                    let got = read_frame(s, unit);
                    let (t, from, payload) = match got {
                        Ok(x) => x,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                            let e = CommError::Timeout {
                                rank: 0,
                                op,
                                seconds: self.timeout.as_secs_f64(),
                                arrived: (0..r).collect(),
                                ranks: self.ranks,
                            };
                            let why = e.to_string();
                            drop(links);
                            self.abort(&why);
                            return Err(e);
                        }
                        Err(e) => {
                            let why = format!(
                                "its connection to rank 0 was lost ({e}): the process exited or its host is gone"
                            );
                            drop(links);
                            self.broadcast_abort(r, &why);
                            return Err(self.fail(r, why));
                        }
                    };
                    if t == ABORT {
                        let why = String::from_utf8_lossy(&payload).into_owned();
                        drop(links);
                        self.broadcast_abort(from, &why);
                        return Err(self.fail(from, why));
                    }
                    if t != tag || payload.len() != all[0].len() && !matches!(tag, GATHER | ALL_TO_ALL) {
                        let e = CommError::Mismatch {
                            rank: 0,
                            op,
                            len: all[0].len() / unit,
                            other: r,
                            other_len: payload.len() / unit,
                        };
                        drop(links);
                        self.abort(&e.to_string());
                        return Err(e);
                    }
                    all.push(payload);
                }
                let mut out = match combine(&all) {
                    Ok(out) => out,
                    Err(e) => {
                        drop(links);
                        self.abort(&e.to_string());
                        return Err(e);
                    }
                };
                for r in 1..self.ranks {
                    let o = &out[if out.len() == 1 { 0 } else { r }];
                    let reply = frame(RESULT, 0, o.len() / unit, o);
                    if let Some(s) = peers[r].as_mut() {
                        if let Err(e) = s.write_all(&reply) {
                            let why = format!("its connection to rank 0 was lost ({e})");
                            drop(links);
                            self.broadcast_abort(r, &why);
                            return Err(self.fail(r, why));
                        }
                    }
                }
                Ok(out.swap_remove(0))
            }
            Links::Spoke(s) => {
                let n = mine.len() / unit;
                let sent = s.write_all(&frame(tag, self.rank, n, &mine));
                let got = sent.and_then(|()| read_frame(s, unit));
                match got {
                    Ok((RESULT, _, payload)) => Ok(payload),
                    Ok((ABORT, from, payload)) => Err(self.fail(from, String::from_utf8_lossy(&payload).into_owned())),
                    Ok((t, _, _)) => Err(self.fail(0, format!("sent an unexpected frame (tag {t})"))),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        Err(CommError::Timeout {
                            rank: self.rank,
                            op,
                            seconds: self.timeout.as_secs_f64(),
                            arrived: vec![self.rank],
                            ranks: self.ranks,
                        })
                    }
                    Err(e) => Err(self.fail(
                        0,
                        format!("the connection to it was lost ({e}): the process exited or its host is gone"),
                    )),
                }
            }
        }
    }

    /// The hub tells every rank but `except` that `rank` failed.
    fn broadcast_abort(&self, rank: usize, why: &str) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Links::Hub(peers) = &mut *links {
            let f = frame(ABORT, rank, why.len(), why.as_bytes());
            for (r, s) in peers.iter_mut().enumerate() {
                if let (Some(s), true) = (s, r != rank) {
                    let _ = s.write_all(&f);
                }
            }
        }
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Collective for Tcp {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.ranks
    }

    fn all_reduce(&self, x: &mut [f32]) -> Result<(), CommError> {
        if self.ranks == 1 {
            return Ok(());
        }
        let out = self.exchange("all_reduce", REDUCE_F32, 4, f32_bytes(x), |all| {
            let parts: Vec<Vec<f32>> = all.iter().map(|b| f32s(b)).collect();
            let mut sum = parts[0].clone();
            for p in &parts[1..] {
                for (s, v) in sum.iter_mut().zip(p) {
                    *s += v;
                }
            }
            Ok(vec![f32_bytes(&sum)])
        })?;
        x.copy_from_slice(&f32s(&out));
        Ok(())
    }

    fn all_reduce_f64(&self, x: &mut [f64]) -> Result<(), CommError> {
        if self.ranks == 1 {
            return Ok(());
        }
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = self.exchange("all_reduce", REDUCE_F64, 8, bytes, |all| {
            let mut sum = vec![0.0f64; all[0].len() / 8];
            for b in all {
                for (s, c) in sum.iter_mut().zip(b.chunks_exact(8)) {
                    *s += f64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                }
            }
            Ok(vec![sum.iter().flat_map(|v| v.to_le_bytes()).collect()])
        })?;
        for (o, c) in x.iter_mut().zip(out.chunks_exact(8)) {
            *o = f64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        }
        Ok(())
    }

    fn all_gather(&self, x: &mut [f32]) -> Result<(), CommError> {
        if self.ranks == 1 {
            return Ok(());
        }
        let (n, ranks) = (x.len(), self.ranks);
        let mine = f32_bytes(&x[shard(n, ranks, self.rank)]);
        let out = self.exchange("all_gather", GATHER, 4, mine, |all| {
            let mut full = Vec::with_capacity(n * 4);
            for (r, b) in all.iter().enumerate() {
                let want = shard(n, ranks, r).len();
                if b.len() != want * 4 {
                    return Err(CommError::Mismatch {
                        rank: 0,
                        op: "all_gather",
                        len: want,
                        other: r,
                        other_len: b.len() / 4,
                    });
                }
                full.extend_from_slice(b);
            }
            Ok(vec![full])
        })?;
        x.copy_from_slice(&f32s(&out));
        Ok(())
    }

    fn all_to_all(&self, send: &[f32], counts: &[usize]) -> Result<(Vec<f32>, Vec<usize>), CommError> {
        let ranks = self.ranks;
        super::check_counts(self.rank, send.len(), counts, ranks)?;
        if ranks == 1 {
            return Ok((send.to_vec(), counts.to_vec()));
        }
        // The payload: the counts (u64 each), then the values.
        let mut mine: Vec<u8> = counts.iter().flat_map(|&c| (c as u64).to_le_bytes()).collect();
        mine.extend(f32_bytes(send));
        let out = self.exchange("all_to_all", ALL_TO_ALL, 1, mine, |all| {
            let parts: Vec<(Vec<usize>, Vec<f32>)> = all
                .iter()
                .map(|b| {
                    let head = (8 * ranks).min(b.len());
                    let counts =
                        b[..head].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize);
                    (counts.collect(), f32s(&b[head..]))
                })
                .collect();
            for (r, (c, v)) in parts.iter().enumerate() {
                super::check_counts(r, v.len(), c, ranks)?;
            }
            // For each destination: the counts it gets from each source, then those values in
            // source order.
            Ok((0..ranks)
                .map(|q| {
                    let mut reply: Vec<u8> = parts.iter().flat_map(|(c, _)| (c[q] as u64).to_le_bytes()).collect();
                    for (c, v) in &parts {
                        let at: usize = c[..q].iter().sum();
                        reply.extend(f32_bytes(&v[at..at + c[q]]));
                    }
                    reply
                })
                .collect())
        })?;
        let head = (8 * ranks).min(out.len());
        let got =
            out[..head].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize).collect();
        Ok((f32s(&out[head..]), got))
    }

    fn send(&self, _: usize, _: &[f32]) -> Result<(), CommError> {
        Err(CommError::Unsupported(
            "point-to-point messages (pipeline parallelism) between processes joined over TCP are not built: run the pipeline's ranks in-process (--nproc)".into(),
        ))
    }

    fn recv(&self, from: usize, _: &mut [f32]) -> Result<(), CommError> {
        self.send(from, &[])
    }

    fn abort(&self, why: &str) {
        let first = {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            let first = f.is_none();
            f.get_or_insert((self.rank, why.to_string()));
            first
        };
        if !first {
            return;
        }
        if self.rank == 0 {
            self.broadcast_abort(0, why);
        } else if let Ok(mut links) = self.links.try_lock() {
            if let Links::Spoke(s) = &mut *links {
                let _ = s.write_all(&frame(ABORT, self.rank, why.len(), why.as_bytes()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranks as threads, each joined over loopback TCP as a process would be.
    fn job<T: Send>(ranks: usize, port: u16, f: impl Fn(Tcp) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..ranks)
                .map(|r| {
                    let f = &f;
                    s.spawn(move || f(Tcp::connect(r, ranks, "127.0.0.1", port, Duration::from_secs(20)).unwrap()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn port() -> u16 {
        // A free port the OS picks, released for the hub to take.
        TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn the_same_sums_as_in_process_ranks() {
        let inputs = [vec![1e8f32, 1.0, 0.5], vec![-1e8, 3.0, 0.25], vec![1.0, -4.0, 0.125]];
        let want = crate::comm::run_ranks(3, Duration::from_secs(20), |m| {
            let mut x = inputs[m.rank()].clone();
            m.all_reduce(&mut x).map(|()| x)
        })
        .unwrap();
        let got = job(3, port(), |t| {
            let mut x = inputs[t.rank()].clone();
            t.all_reduce(&mut x).unwrap();
            let mut y = vec![-1.0f32; 7];
            for i in shard(7, 3, t.rank()) {
                y[i] = i as f32;
            }
            t.all_gather(&mut y).unwrap();
            let mut z = [t.rank() as f64 + 0.5];
            t.all_reduce_f64(&mut z).unwrap();
            let (send, counts) = crate::comm::tests::rows_for_all(t.rank(), 3);
            (x, y, z[0], t.all_to_all(&send, &counts).unwrap())
        });
        for (r, (x, y, z, rows)) in got.into_iter().enumerate() {
            assert_eq!(rows, crate::comm::tests::rows_from_all(r, 3));
            assert_eq!(x, want[0]);
            assert_eq!(y, (0..7).map(|i| i as f32).collect::<Vec<_>>());
            assert_eq!(z, 4.5);
        }
    }

    #[test]
    fn a_failing_rank_is_named_to_the_others() {
        let got = job(3, port(), |t| {
            if t.rank() == 2 {
                t.abort("disk full");
                return String::new();
            }
            let mut x = [1.0f32];
            t.all_reduce(&mut x).unwrap_err().to_string()
        });
        assert_eq!(got[0], "rank 2 failed: disk full");
        assert_eq!(got[1], "rank 2 failed: disk full");
    }

    #[test]
    fn a_vanished_rank_is_named_too() {
        let got = job(2, port(), |t| {
            if t.rank() == 1 {
                drop(t);
                return String::new();
            }
            t.all_reduce(&mut [1.0f32]).unwrap_err().to_string()
        });
        assert!(got[0].starts_with("rank 1 failed: its connection to rank 0 was lost"), "{}", got[0]);
    }
}
