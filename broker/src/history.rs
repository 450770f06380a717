//! What a topic keeps of its past: the history ring and the retained last
//! value.
//!
//! Both hold the encoded delivery frames themselves, so a replay re-sends
//! the very bytes that were sent live. The ring is bounded by the topic's
//! policy (count, bytes, age); the retained value is one frame.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::config::TopicPolicy;

/// A kept message: its sequence number, when it was published, its frame.
#[derive(Debug, Clone)]
struct Kept {
    seq: u64,
    at: Instant,
    frame: Bytes,
}

/// A topic's history ring, bounded by its policy.
#[derive(Debug, Default)]
struct History {
    entries: VecDeque<Kept>,
    bytes: usize,
}

impl History {
    fn push(&mut self, entry: Kept, policy: &TopicPolicy) {
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
        while self.entries.len() > policy.history_messages || self.bytes > policy.history_bytes {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.bytes -= old.frame.len();
        }
    }

    fn expire(&mut self, now: Instant, policy: &TopicPolicy) {
        let Some(age) = policy.history_age else {
            return;
        };
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > age)
        {
            self.pop_front();
        }
    }
}

/// Everything one topic keeps: its history ring and its retained value.
#[derive(Debug, Default)]
pub struct TopicMemory {
    history: History,
    retained: Option<Kept>,
}

impl TopicMemory {
    /// Keeps the frame of message `seq`, published at `at`, as `policy` (and
    /// `retain`, the publisher's request) asks: in the ring if the policy
    /// keeps history, as the retained value if either asks for it.
    pub fn record(
        &mut self,
        seq: u64,
        at: Instant,
        frame: &Bytes,
        policy: &TopicPolicy,
        retain: bool,
    ) {
        let kept = || Kept {
            seq,
            at,
            frame: frame.clone(),
        };
        if policy.history_messages > 0 {
            self.history.expire(at, policy);
            self.history.push(kept(), policy);
        }
        if retain || policy.retain {
            self.retained = Some(kept());
        }
    }

    /// Drops history entries older than the policy's `history_age`.
    pub fn expire(&mut self, now: Instant, policy: &TopicPolicy) {
        self.history.expire(now, policy);
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
        }
    }

    fn frame(seq: u64) -> Bytes {
        Bytes::from(seq.to_be_bytes().to_vec())
    }

    fn record(memory: &mut TopicMemory, seqs: std::ops::RangeInclusive<u64>, p: &TopicPolicy) {
        let now = Instant::now();
        for seq in seqs {
            memory.record(seq, now, &frame(seq), p, false);
        }
    }

    #[test]
    fn the_ring_is_bounded_by_count_and_bytes() {
        let by_count = policy(3, 1 << 20, false);
        let mut memory = TopicMemory::default();
        record(&mut memory, 1..=10, &by_count);
        let mut out = Vec::new();
        memory.history_frames(&mut out);
        assert_eq!(out, vec![frame(8), frame(9), frame(10)]);

        let by_bytes = policy(100, 16, false);
        let mut memory = TopicMemory::default();
        record(&mut memory, 1..=10, &by_bytes);
        let mut out = Vec::new();
        memory.history_frames(&mut out);
        assert_eq!(out, vec![frame(9), frame(10)]);
    }

    #[test]
    fn frames_after_needs_a_ring_without_gap() {
        let p = policy(5, 1 << 20, false);
        let mut memory = TopicMemory::default();
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
        let mut memory = TopicMemory::default();
        assert!(memory.is_empty());
        record(&mut memory, 1..=3, &p);
        assert_eq!(memory.latest(), Some(&frame(3)));

        let ring = policy(10, 1 << 20, false);
        let mut memory = TopicMemory::default();
        let start = Instant::now();
        memory.record(1, start, &frame(1), &ring, true);
        memory.record(2, start, &frame(2), &ring, false);
        assert_eq!(memory.latest(), Some(&frame(2)));
        memory.expire(start + Duration::from_secs(11), &ring);
        assert_eq!(memory.latest(), Some(&frame(1)), "the retained value stays");
        assert!(!memory.is_empty());
    }
}
