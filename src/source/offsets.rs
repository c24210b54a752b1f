//! Which offset of a partition may be committed: the one after the last
//! record of the longest prefix of batches whose effects are all durable.
//!
//! Batches are read in order but their effects (dead letters, alerts) may
//! be acknowledged out of order; committing past a batch still in flight
//! would lose it on a crash. Pure bookkeeping, no Kafka here.

use std::collections::VecDeque;

/// Batches of one partition in read order, and the commit position.
#[derive(Debug, Default)]
pub struct CompletionTracker {
    /// (sequence number, last offset, done) of each batch not yet behind
    /// the commit position.
    pending: VecDeque<(u64, i64, bool)>,
    next_seq: u64,
    committable: Option<i64>,
}

impl CompletionTracker {
    /// Registers a batch ending at `last_offset`; returns its sequence
    /// number for [`CompletionTracker::complete`].
    pub fn start(&mut self, last_offset: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back((seq, last_offset, false));
        seq
    }

    /// Marks a batch done. Returns the new commit position (the next offset
    /// to read) if it moved.
    pub fn complete(&mut self, seq: u64) -> Option<i64> {
        if let Some(entry) = self.pending.iter_mut().find(|e| e.0 == seq) {
            entry.2 = true;
        }
        let mut moved = None;
        while let Some(&(_, last, true)) = self.pending.front() {
            self.pending.pop_front();
            moved = Some(last + 1);
        }
        if moved.is_some() {
            self.committable = moved;
        }
        moved
    }

    /// The next offset to read after everything durable so far.
    pub fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Batches started and not yet done.
    pub fn in_flight(&self) -> usize {
        self.pending.iter().filter(|e| !e.2).count()
    }

    /// Forgets batches in flight (after a restart they are read again).
    pub fn abandon_in_flight(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_a_done_prefix() {
        let mut t = CompletionTracker::default();
        let a = t.start(9);
        let b = t.start(19);
        let c = t.start(29);
        assert_eq!(t.in_flight(), 3);
        assert_eq!(t.complete(b), None, "b is done but a is not");
        assert_eq!(t.committable(), None);
        assert_eq!(t.complete(a), Some(20), "a and b are done");
        assert_eq!(t.committable(), Some(20));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.complete(c), Some(30));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn abandoned_batches_never_commit() {
        let mut t = CompletionTracker::default();
        let a = t.start(9);
        t.complete(a);
        let b = t.start(19);
        t.abandon_in_flight();
        assert_eq!(t.complete(b), None);
        assert_eq!(t.committable(), Some(10));
    }
}
