//! What a topic keeps of its past: the history ring and the retained last
//! value, and the broker-wide [`StorageBudget`] they all draw from.
//!
//! Both hold the encoded delivery frames themselves, so a replay re-sends
//! the very bytes that were sent live. The ring is bounded by the topic's
//! policy (count, bytes, age); the retained value is one frame. Every kept
//! frame is also counted against the budget (`max_retained_bytes`), so the
//! memory all topics keep together is bounded whatever clients publish.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};

use crate::config::TopicPolicy;
use crate::metrics::Metrics;

/// The bytes of kept frames (retained values and history entries) over all
/// topics, bounded by `max_retained_bytes`. A frame kept both in a ring and
/// as the retained value shares its memory but is counted twice, so the
/// count is an upper bound.
#[derive(Debug)]
pub struct StorageBudget {
    used: AtomicUsize,
    limit: usize,
    gauge: IntGauge,
    dropped: IntCounter,
}

impl StorageBudget {
    /// A budget of `limit` bytes reporting to `metrics`.
    pub fn new(limit: usize, metrics: &Metrics) -> Self {
        StorageBudget {
            used: AtomicUsize::new(0),
            limit,
            gauge: metrics.retained_bytes.clone(),
            dropped: metrics.retained_dropped.clone(),
        }
    }

    /// An unbounded budget that reports to no metric: for memory rebuilt
    /// for a replay ([`TopicMemory::restored`]), which is not what the
    /// broker keeps.
    pub fn detached() -> Self {
        StorageBudget {
            used: AtomicUsize::new(0),
            limit: usize::MAX,
            gauge: IntGauge::new("detached_bytes", "not registered").expect("valid metric"),
            dropped: IntCounter::new("detached_dropped", "not registered").expect("valid metric"),
        }
    }

    /// Bytes currently counted.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts `n` more bytes if they fit; whether they did.
    fn try_reserve(&self, n: usize) -> bool {
        let reserved = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok();
        if reserved {
            self.gauge.add(n as i64);
        }
        reserved
    }

    /// Stops counting `n` bytes.
    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
        self.gauge.sub(n as i64);
    }
}

/// A client's `retain` could not be kept: the budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFull;

/// A message read back from outside the broker (cluster mode: Redis), for
/// [`TopicMemory::restored`].
#[derive(Debug, Clone)]
pub struct RestoredMessage {
    /// Its sequence number.
    pub seq: u64,
    /// When it was published.
    pub at: Instant,
    /// Its delivery frame.
    pub frame: Bytes,
}

/// A kept message: its sequence number, when it was published, its frame.
#[derive(Debug, Clone)]
struct Kept {
    seq: u64,
    at: Instant,
    frame: Bytes,
}

/// A topic's history ring, bounded by its policy and the budget.
#[derive(Debug, Default)]
struct History {
    entries: VecDeque<Kept>,
    bytes: usize,
}

impl History {
    /// Appends `entry`, first dropping the oldest entries the policy's
    /// bounds require; then, while the budget cannot hold it, drops more of
    /// the oldest. If even an empty ring does not fit in the budget, the
    /// entry is not kept and `false` is returned. An entry larger than the
    /// policy's byte bound is never kept (the ring ends up empty).
    fn push(&mut self, entry: Kept, policy: &TopicPolicy, budget: &StorageBudget) -> bool {
        let n = entry.frame.len();
        while !self.entries.is_empty()
            && (self.entries.len() >= policy.history_messages
                || self.bytes + n > policy.history_bytes)
        {
            self.pop_front(budget);
        }
        if n > policy.history_bytes || policy.history_messages == 0 {
            return true;
        }
        while !budget.try_reserve(n) {
            if self.entries.is_empty() {
                return false;
            }
            self.pop_front(budget);
        }
        self.bytes += n;
        self.entries.push_back(entry);
        true
    }

    fn pop_front(&mut self, budget: &StorageBudget) -> bool {
        let Some(old) = self.entries.pop_front() else {
            return false;
        };
        self.bytes -= old.frame.len();
        budget.release(old.frame.len());
        true
    }

    fn expire(&mut self, now: Instant, policy: &TopicPolicy, budget: &StorageBudget) {
        let Some(age) = policy.history_age else {
            return;
        };
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > age)
        {
            self.pop_front(budget);
        }
    }
}

/// Makes `kept` the value in `retained` if `budget` holds the difference
/// with the current one; whether it did.
fn replace_retained(retained: &mut Option<Kept>, kept: Kept, budget: &StorageBudget) -> bool {
    let old = retained.as_ref().map_or(0, |k| k.frame.len());
    let new = kept.frame.len();
    if new > old && !budget.try_reserve(new - old) {
        return false;
    }
    if old > new {
        budget.release(old - new);
    }
    *retained = Some(kept);
    true
}

/// Everything one topic keeps: its history ring and its retained value.
/// What it holds is counted in the shared [`StorageBudget`] until it is
/// dropped.
#[derive(Debug)]
pub struct TopicMemory {
    history: History,
    retained: Option<Kept>,
    budget: Arc<StorageBudget>,
}

impl TopicMemory {
    /// Empty memory counting against `budget`.
    pub fn new(budget: Arc<StorageBudget>) -> Self {
        TopicMemory {
            history: History::default(),
            retained: None,
            budget,
        }
    }

    /// Keeps the frame of message `seq`, published at `at`, as `policy` (and
    /// `client_retain`, the publisher's request) asks: in the ring if the
    /// policy keeps history, as the retained value if either asks for it.
    ///
    /// A publisher's retain that the budget cannot hold is refused with
    /// [`StorageFull`] and nothing changes. What the policy alone asks for
    /// is kept as far as the budget allows: the topic's oldest history
    /// entries make room first; a message that still does not fit is not
    /// kept (it is delivered live all the same; counted in
    /// `tickwire_retained_dropped_total`), and a retained value it should
    /// have replaced is dropped rather than left stale.
    pub fn record(
        &mut self,
        seq: u64,
        at: Instant,
        frame: &Bytes,
        policy: &TopicPolicy,
        client_retain: bool,
    ) -> Result<(), StorageFull> {
        let kept = || Kept {
            seq,
            at,
            frame: frame.clone(),
        };
        let budget = &*self.budget;
        if client_retain && !policy.retain && !replace_retained(&mut self.retained, kept(), budget)
        {
            return Err(StorageFull);
        }
        if policy.history_messages > 0 {
            self.history.expire(at, policy, budget);
            if !self.history.push(kept(), policy, budget) {
                budget.dropped.inc();
            }
        }
        if policy.retain {
            while !replace_retained(&mut self.retained, kept(), budget) {
                if !self.history.pop_front(budget) {
                    if let Some(stale) = self.retained.take() {
                        budget.release(stale.frame.len());
                    }
                    budget.dropped.inc();
                    break;
                }
            }
        }
        Ok(())
    }

    /// Memory rebuilt from messages kept elsewhere (cluster mode: Redis),
    /// for one replay of a topic whose latest seq is `latest`.
    ///
    /// `history` (oldest first) becomes the ring, bounded by `policy` as a
    /// live ring is, but only the run of consecutive seqs that ends at
    /// `latest`: entries before a gap, or a run that stops short of
    /// `latest`, could not resume anyone without skipping messages, so they
    /// are left out (a resume then reports `recovered: false`). `retained`
    /// is the retained value.
    pub fn restored(
        budget: Arc<StorageBudget>,
        policy: &TopicPolicy,
        latest: u64,
        history: Vec<RestoredMessage>,
        retained: Option<RestoredMessage>,
    ) -> Self {
        let mut memory = TopicMemory::new(budget);
        let ends_at_latest = history.last().is_some_and(|m| m.seq == latest);
        let run_start = history
            .windows(2)
            .rposition(|pair| pair[1].seq != pair[0].seq.wrapping_add(1))
            .map_or(0, |gap| gap + 1);
        if ends_at_latest {
            for m in history.into_iter().skip(run_start) {
                let kept = Kept {
                    seq: m.seq,
                    at: m.at,
                    frame: m.frame,
                };
                memory.history.push(kept, policy, &memory.budget);
            }
        }
        if let Some(m) = retained {
            let kept = Kept {
                seq: m.seq,
                at: m.at,
                frame: m.frame,
            };
            replace_retained(&mut memory.retained, kept, &memory.budget);
        }
        memory
    }

    /// Drops history entries older than the policy's `history_age`.
    pub fn expire(&mut self, now: Instant, policy: &TopicPolicy) {
        self.history.expire(now, policy, &self.budget);
    }

    /// Whether nothing is kept (no history entry, no retained value).
    pub fn is_empty(&self) -> bool {
        self.history.entries.is_empty() && self.retained.is_none()
    }

    /// The newest message kept, if any.
    pub fn latest(&self) -> Option<&Bytes> {
        let newest = match (self.history.entries.back(), &self.retained) {
            (Some(h), Some(r)) if r.seq > h.seq => r,
            (Some(h), _) => h,
            (None, r) => r.as_ref()?,
        };
        Some(&newest.frame)
    }

    /// Appends every history frame to `out`, oldest first.
    pub fn history_frames(&self, out: &mut Vec<Bytes>) {
        out.extend(self.history.entries.iter().map(|e| e.frame.clone()));
    }

    /// Appends the frames after `after` up to `latest` (the topic's latest
    /// seq) to `out` if the ring reaches back that far without a gap, and
    /// returns whether it did. Nothing is appended when it does not.
    pub fn frames_after(&self, after: u64, latest: u64, out: &mut Vec<Bytes>) -> bool {
        if after > latest {
            return false;
        }
        if after == latest {
            return true;
        }
        match self.history.entries.front() {
            Some(oldest) if oldest.seq <= after + 1 => {
                out.extend(
                    self.history
                        .entries
                        .iter()
                        .filter(|e| e.seq > after)
                        .map(|e| e.frame.clone()),
                );
                true
            }
            _ => false,
        }
    }
}

impl Drop for TopicMemory {
    fn drop(&mut self) {
        let kept = self.history.bytes + self.retained.as_ref().map_or(0, |k| k.frame.len());
        self.budget.release(kept);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tickwire_protocol::topic::Pattern;

    use super::*;
    use crate::outbound::SlowConsumerPolicy;

    fn policy(messages: usize, bytes: usize, retain: bool) -> TopicPolicy {
        TopicPolicy {
            pattern: Pattern::everything(),
            history_messages: messages,
            history_bytes: bytes,
            history_age: Some(Duration::from_secs(10)),
            retain,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            client_retain: None,
            presence: false,
        }
    }

    fn empty_memory() -> TopicMemory {
        TopicMemory::new(Arc::new(StorageBudget::new(usize::MAX, &Metrics::new())))
    }

    fn frame(seq: u64) -> Bytes {
        Bytes::from(seq.to_be_bytes().to_vec())
    }

    fn record(memory: &mut TopicMemory, seqs: std::ops::RangeInclusive<u64>, p: &TopicPolicy) {
        let now = Instant::now();
        for seq in seqs {
            memory.record(seq, now, &frame(seq), p, false).unwrap();
        }
    }

    #[test]
    fn the_ring_is_bounded_by_count_and_bytes() {
        let by_count = policy(3, 1 << 20, false);
        let mut memory = empty_memory();
        record(&mut memory, 1..=10, &by_count);
        let mut out = Vec::new();
        memory.history_frames(&mut out);
        assert_eq!(out, vec![frame(8), frame(9), frame(10)]);

        let by_bytes = policy(100, 16, false);
        let mut memory = empty_memory();
        record(&mut memory, 1..=10, &by_bytes);
        let mut out = Vec::new();
        memory.history_frames(&mut out);
        assert_eq!(out, vec![frame(9), frame(10)]);
    }

    #[test]
    fn frames_after_needs_a_ring_without_gap() {
        let p = policy(5, 1 << 20, false);
        let mut memory = empty_memory();
        record(&mut memory, 1..=10, &p);
        let mut out = Vec::new();
        assert!(memory.frames_after(7, 10, &mut out));
        assert_eq!(out, vec![frame(8), frame(9), frame(10)]);
        out.clear();
        assert!(memory.frames_after(5, 10, &mut out), "6..=10 are kept");
        assert_eq!(out.len(), 5);
        out.clear();
        assert!(!memory.frames_after(4, 10, &mut out), "5 is gone");
        assert!(!memory.frames_after(11, 10, &mut out), "ahead of the topic");
        assert!(memory.frames_after(10, 10, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn latest_prefers_the_newer_of_ring_and_retained_value_and_age_expires() {
        let p = policy(0, 0, true);
        let mut memory = empty_memory();
        assert!(memory.is_empty());
        record(&mut memory, 1..=3, &p);
        assert_eq!(memory.latest(), Some(&frame(3)));

        let ring = policy(10, 1 << 20, false);
        let mut memory = empty_memory();
        let start = Instant::now();
        memory.record(1, start, &frame(1), &ring, true).unwrap();
        memory.record(2, start, &frame(2), &ring, false).unwrap();
        assert_eq!(memory.latest(), Some(&frame(2)));
        memory.expire(start + Duration::from_secs(11), &ring);
        assert_eq!(memory.latest(), Some(&frame(1)), "the retained value stays");
        assert!(!memory.is_empty());
    }

    #[test]
    fn the_budget_bounds_what_all_topics_keep() {
        let budget = Arc::new(StorageBudget::new(24, &Metrics::new()));
        let ring = policy(10, 1 << 20, false);
        let plain = policy(0, 0, false);
        let now = Instant::now();

        // A client's retain is refused when it does not fit, changing nothing.
        let mut a = TopicMemory::new(Arc::clone(&budget));
        a.record(1, now, &frame(1), &plain, true).unwrap();
        a.record(2, now, &frame(2), &plain, true).unwrap();
        assert_eq!(budget.used(), 8, "a replaced value is counted once");
        let mut b = TopicMemory::new(Arc::clone(&budget));
        record(&mut b, 1..=2, &ring);
        assert_eq!(budget.used(), 24);
        let mut c = TopicMemory::new(Arc::clone(&budget));
        assert_eq!(c.record(1, now, &frame(1), &plain, true), Err(StorageFull));
        assert!(c.is_empty());

        // History the policy asks for evicts its own topic's oldest first.
        b.record(3, now, &frame(3), &ring, false).unwrap();
        let mut out = Vec::new();
        b.history_frames(&mut out);
        assert_eq!(out, vec![frame(2), frame(3)]);
        assert_eq!(budget.used(), 24);

        // A new topic's first entry that does not fit is not kept.
        record(&mut c, 1..=1, &ring);
        assert!(c.is_empty());

        // Dropping a topic's memory gives its bytes back.
        drop(b);
        assert_eq!(budget.used(), 8);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn restored_memory_keeps_only_the_run_that_reaches_the_latest_seq() {
        let budget = Arc::new(StorageBudget::detached());
        let p = policy(10, 1 << 20, false);
        let restored = |seqs: &[u64], latest: u64| {
            let history = seqs
                .iter()
                .map(|&seq| RestoredMessage {
                    seq,
                    at: Instant::now(),
                    frame: frame(seq),
                })
                .collect();
            TopicMemory::restored(Arc::clone(&budget), &p, latest, history, None)
        };
        let mut out = Vec::new();
        assert!(restored(&[3, 4, 5], 5).frames_after(2, 5, &mut out));
        assert_eq!(out, vec![frame(3), frame(4), frame(5)]);
        out.clear();
        // A gap: only 5..6 can resume anyone.
        let memory = restored(&[2, 3, 5, 6], 6);
        assert!(!memory.frames_after(2, 6, &mut out));
        assert!(memory.frames_after(4, 6, &mut out));
        assert_eq!(out, vec![frame(5), frame(6)]);
        // Stops short of the latest seq: nothing resumes.
        assert!(restored(&[3, 4], 5).is_empty());
        // Bounded by the policy as a live ring is.
        let many: Vec<u64> = (1..=30).collect();
        out.clear();
        restored(&many, 30).history_frames(&mut out);
        assert_eq!(out.len(), 10);
    }
}
