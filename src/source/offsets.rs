//! Which offset of a partition may be committed: the one after the last
//! record of the longest prefix of work whose effects are all durable.
//!
//! Batches are read in order but their effects (dead letters, alerts) may
//! be acknowledged out of order; committing past a batch still in flight
//! would lose it on a crash. With state kept downstream, a batch's effects
//! include the user state it changed, which is durable only once a
//! checkpoint after it is: then only checkpoints move the commit position,
//! and a checkpoint is persisted only when everything before it is done
//! ([`CompletionTracker::ready_checkpoint`]). Pure bookkeeping, no Kafka
//! here.

use std::collections::VecDeque;

/// What an entry of the tracker stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A batch of records, handed downstream.
    Batch,
    /// A checkpoint of the state after the batches before it.
    Checkpoint,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    last_offset: i64,
    work: Work,
    done: bool,
}

/// Work of one partition in read order, and the commit position.
#[derive(Debug)]
pub struct CompletionTracker {
    /// Entries not yet behind the commit position.
    pending: VecDeque<Entry>,
    next_seq: u64,
    committable: Option<i64>,
    /// The work whose completion moves the commit position.
    commits_at: Work,
}

impl Default for CompletionTracker {
    fn default() -> Self {
        CompletionTracker::committing_at(Work::Batch)
    }
}

impl CompletionTracker {
    /// A tracker whose commit position moves when a `commits_at` entry
    /// completes (with everything before it).
    pub fn committing_at(commits_at: Work) -> Self {
        CompletionTracker { pending: VecDeque::new(), next_seq: 0, committable: None, commits_at }
    }

    /// Registers a batch ending at `last_offset`; returns its sequence
    /// number for [`CompletionTracker::complete`].
    pub fn start(&mut self, last_offset: i64) -> u64 {
        self.start_work(Work::Batch, last_offset)
    }

    /// Registers a checkpoint of the state after the batches so far, the
    /// last of which ends at `through`.
    pub fn start_checkpoint(&mut self, through: i64) -> u64 {
        self.start_work(Work::Checkpoint, through)
    }

    fn start_work(&mut self, work: Work, last_offset: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Entry { seq, last_offset, work, done: false });
        seq
    }

    /// Marks an entry done. Returns the new commit position (the next
    /// offset to read) if it moved.
    pub fn complete(&mut self, seq: u64) -> Option<i64> {
        if let Some(entry) = self.pending.iter_mut().find(|e| e.seq == seq) {
            entry.done = true;
        }
        let mut moved = None;
        while let Some(entry) = self.pending.front().filter(|e| e.done) {
            if entry.work == self.commits_at {
                moved = Some(entry.last_offset + 1);
            }
            self.pending.pop_front();
        }
        if moved.is_some() {
            self.committable = moved;
        }
        moved
    }

    /// The checkpoint that may be persisted now: the oldest entry not
    /// done, when it is a checkpoint (everything before it is done).
    pub fn ready_checkpoint(&self) -> Option<u64> {
        self.pending.front().filter(|e| e.work == Work::Checkpoint).map(|e| e.seq)
    }

    /// The next offset to read after everything durable so far.
    pub fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Entries started and not yet done.
    pub fn in_flight(&self) -> usize {
        self.pending.iter().filter(|e| !e.done).count()
    }

    /// Batches started and not yet done.
    pub fn batches_in_flight(&self) -> usize {
        self.pending.iter().filter(|e| !e.done && e.work == Work::Batch).count()
    }

    /// Forgets work in flight (after a restart it is done again).
    pub fn abandon_in_flight(&mut self) {
        self.pending.clear();
    }

    /// Forgets work in flight and goes back to `to`: what came after it
    /// is read and done again (an aborted transaction undid it).
    pub fn rewind(&mut self, to: Option<i64>) {
        self.pending.clear();
        self.committable = to;
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

    #[test]
    fn with_state_only_a_durable_checkpoint_moves_the_commit() {
        let mut t = CompletionTracker::committing_at(Work::Checkpoint);
        let a = t.start(9);
        let b = t.start(19);
        let first = t.start_checkpoint(19);
        let c = t.start(29);
        assert_eq!(t.ready_checkpoint(), None, "batches before it are in flight");
        assert_eq!(t.complete(a), None, "a batch alone commits nothing");
        assert_eq!(t.complete(c), None);
        assert_eq!(t.ready_checkpoint(), None);
        assert_eq!(t.complete(b), None, "its state is not durable yet");
        assert_eq!(t.ready_checkpoint(), Some(first), "everything before it is done");
        assert_eq!((t.in_flight(), t.batches_in_flight()), (1, 0));
        assert_eq!(t.complete(first), Some(20));
        assert_eq!(t.committable(), Some(20), "c is done, but no checkpoint holds it");
        let second = t.start_checkpoint(29);
        assert_eq!(t.ready_checkpoint(), Some(second));
        assert_eq!(t.complete(second), Some(30));
    }

    #[test]
    fn a_rewind_undoes_what_was_done_after_its_offset() {
        let mut t = CompletionTracker::committing_at(Work::Checkpoint);
        let batch = t.start(9);
        let checkpoint = t.start_checkpoint(9);
        t.complete(batch);
        assert_eq!(t.complete(checkpoint), Some(10));
        let later = t.start(19);
        t.rewind(Some(5));
        assert_eq!((t.committable(), t.in_flight()), (Some(5), 0));
        assert_eq!(t.complete(later), None, "work from before the rewind moves nothing");
        let again = t.start(9);
        let checkpoint = t.start_checkpoint(9);
        t.complete(again);
        assert_eq!(t.complete(checkpoint), Some(10));
    }
}
