//! The packed sequence loader: the token stream cut into windows of `seq` tokens (documents
//! packed back to back), a split into training and validation windows, a deterministic shuffle
//! per epoch from the seed, sharding across data-parallel ranks, and a position that a
//! checkpoint saves and a resumed run restores.

use serde::{Deserialize, Serialize};

use crate::init::SplitMix64;

/// Where the loader is: the epoch and the next window of that epoch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub cursor: u64,
}

pub struct Loader {
    tokens: std::sync::Arc<Vec<u32>>,
    seq: usize,
    micro: usize,
    rank: usize,
    world: usize,
    seed: u64,
    /// Micro-batches per optimizer step: an epoch ends at a step boundary.
    accumulation: usize,
    windows: Vec<usize>,
    order: Vec<usize>,
    pub position: Position,
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("the corpus has {tokens} tokens: too few for {needed} windows of {seq} tokens (micro-batch {micro} × {world} ranks × the step's micro-batches)")]
    TooSmall { tokens: usize, seq: usize, micro: usize, world: usize, needed: usize },
}

impl Loader {
    /// A loader over `windows` (indices of `seq`-token windows of `tokens`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: std::sync::Arc<Vec<u32>>,
        windows: Vec<usize>,
        seq: usize,
        micro: usize,
        rank: usize,
        world: usize,
        seed: u64,
        position: Position,
    ) -> Result<Loader, LoaderError> {
        if windows.len() < micro * world {
            return Err(LoaderError::TooSmall { tokens: tokens.len(), seq, micro, world, needed: micro * world });
        }
        let mut l =
            Loader { tokens, seq, micro, rank, world, seed, accumulation: 1, windows, order: Vec::new(), position };
        l.shuffle();
        Ok(l)
    }

    /// Ends epochs at optimizer-step boundaries, a step being `accumulation` micro-batches of
    /// every rank: a new epoch starts when the next step's windows (`micro × world ×
    /// accumulation`) do not fit in what is left of this one. The position (windows of the
    /// epoch consumed by all ranks) is then the same for any layout with the same global batch —
    /// a checkpoint resumes under another.
    pub fn with_accumulation(mut self, accumulation: usize) -> Result<Loader, LoaderError> {
        self.accumulation = accumulation.max(1);
        let needed = self.micro * self.world * self.accumulation;
        if self.windows.len() < needed {
            return Err(LoaderError::TooSmall {
                tokens: self.tokens.len(),
                seq: self.seq,
                micro: self.micro,
                world: self.world,
                needed,
            });
        }
        Ok(self)
    }

    fn shuffle(&mut self) {
        let mut rng = SplitMix64::new(self.seed ^ self.position.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.order = self.windows.clone();
        for i in (1..self.order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            self.order.swap(i, j);
        }
    }

    /// Moves to `position` (a step's start, to run it again).
    pub fn seek(&mut self, position: Position) {
        let reshuffle = position.epoch != self.position.epoch;
        self.position = position;
        if reshuffle {
            self.shuffle();
        }
    }

    /// The next micro-batch of this rank: `micro × seq` token ids.
    pub fn next_batch(&mut self) -> Vec<u32> {
        let step = self.micro * self.world;
        let group = step * self.accumulation;
        let cursor = self.position.cursor as usize;
        // (A position from elsewhere than a step boundary wraps when its micro-batch does not fit.)
        if (cursor.is_multiple_of(group) && cursor + group > self.order.len()) || cursor + step > self.order.len() {
            self.position = Position { epoch: self.position.epoch + 1, cursor: 0 };
            self.shuffle();
        }
        let start = self.position.cursor as usize + self.rank * self.micro;
        let mut out = Vec::with_capacity(self.micro * self.seq);
        for &w in &self.order[start..start + self.micro] {
            out.extend_from_slice(&self.tokens[w * self.seq..(w + 1) * self.seq]);
        }
        self.position.cursor += step as u64;
        out
    }

    /// Every window in order (for validation), in micro-batches; a partial last batch is dropped.
    pub fn batches_in_order(&self) -> Vec<Vec<u32>> {
        self.windows
            .chunks_exact(self.micro)
            .map(|ws| ws.iter().flat_map(|&w| self.tokens[w * self.seq..(w + 1) * self.seq].iter().copied()).collect())
            .collect()
    }
}

/// Splits the windows of a stream into (train, validation), the last `fraction` for validation.
pub fn split(tokens: usize, seq: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let n = tokens / seq.max(1);
    let val = ((n as f64 * fraction).round() as usize).min(n);
    ((0..n - val).collect(), (n - val..n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_from_a_position_continues_the_same_stream() {
        let tokens = std::sync::Arc::new((0..1000u32).collect::<Vec<_>>());
        let (train, _) = split(1000, 10, 0.1);
        let mut a = Loader::new(tokens.clone(), train.clone(), 10, 3, 0, 1, 7, Position::default()).unwrap();
        let first: Vec<Vec<u32>> = (0..50).map(|_| a.next_batch()).collect();
        let mut b = Loader::new(tokens.clone(), train.clone(), 10, 3, 0, 1, 7, Position::default()).unwrap();
        for _ in 0..20 {
            b.next_batch();
        }
        let mut c = Loader::new(tokens, train, 10, 3, 0, 1, 7, b.position).unwrap();
        let rest: Vec<Vec<u32>> = (0..30).map(|_| c.next_batch()).collect();
        assert_eq!(&first[20..], &rest[..]);
        // Epochs wrap: 90 windows / 3 per batch = 30 batches per epoch, then a new order.
        assert_eq!(a.position.epoch, 1);
    }

    #[test]
    fn ranks_see_disjoint_windows() {
        let tokens = std::sync::Arc::new((0..400u32).collect::<Vec<_>>());
        let (train, _) = split(400, 4, 0.0);
        let mut seen = std::collections::HashSet::new();
        for rank in 0..2 {
            let mut l = Loader::new(tokens.clone(), train.clone(), 4, 5, rank, 2, 1, Position::default()).unwrap();
            for _ in 0..10 {
                for w in l.next_batch().chunks(4) {
                    assert!(seen.insert(w[0]), "window starting at {} seen twice", w[0]);
                }
            }
        }
        assert_eq!(seen.len(), 100);
    }
}
