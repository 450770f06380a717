//! Read-only views of the registry for the operational endpoints: a sorted,
//! paginated listing of topics (`GET /v1/topics`), one topic's kept
//! messages (`GET /v1/history/{topic}`) and a bounded walk of every
//! topic's sequence number (the busiest-topics sampler).
//!
//! Neither holds more than one topic's mutex at a time, and neither waits
//! for a busy one longer than a publish takes; both cost one pass over the
//! topic map, so they are for operators, not for the hot path.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use tickwire_protocol::message::Position;
use tickwire_protocol::topic::Pattern;

use crate::history::TopicMemory;

use super::{TopicEntry, TopicRegistry};

/// Most topics one listing page may hold.
pub const MAX_PAGE: usize = 1000;

/// One topic of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Subscribers the topic's messages go to: distinct connections (or
    /// sessions) with an exact or wildcard subscription that matches it.
    pub subscribers: usize,
    /// The topic's epoch (see [`crate::registry`]).
    pub epoch: u64,
    /// The sequence number of its latest message (0: none yet).
    pub seq: u64,
}

/// One page of a listing, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPage {
    /// At most the asked number of topics, sorted by name.
    pub topics: Vec<TopicInfo>,
    /// Whether topics after the last one also match: ask again with
    /// `after` set to its name.
    pub more: bool,
}

impl TopicRegistry {
    /// The first `limit` (at most [`MAX_PAGE`]) topics matching `pattern`
    /// whose names sort after `after` (all with `None`), by name.
    ///
    /// One pass over the topic map keeps the `limit + 1` smallest matching
    /// names in a heap (so the work is linear in the number of topics and
    /// the memory bounded by the page), then reads each kept topic's state.
    pub fn list_topics(&self, pattern: &Pattern, after: Option<&str>, limit: usize) -> TopicPage {
        let limit = limit.min(MAX_PAGE);
        let mut smallest: BinaryHeap<Arc<TopicEntry>> = BinaryHeap::with_capacity(limit + 1);
        for entry in self.topics.iter() {
            let name = entry.key();
            if after.is_some_and(|after| &**name <= after) || !pattern.matches(name) {
                continue;
            }
            if smallest.len() <= limit {
                smallest.push(Arc::clone(entry.value()));
            } else if smallest.peek().is_some_and(|largest| *name < largest.name) {
                smallest.pop();
                smallest.push(Arc::clone(entry.value()));
            }
        }
        let mut kept = smallest.into_sorted_vec();
        let more = kept.len() > limit;
        kept.truncate(limit);
        let mut matching = Vec::new();
        let topics = kept
            .iter()
            .filter_map(|entry| {
                let (epoch, seq, mut subscribers) = {
                    let state = entry.state.lock();
                    if state.evicted {
                        return None;
                    }
                    let position = state.position();
                    let exact: Vec<u64> = state.exact.iter().map(|s| s.id()).collect();
                    (position.epoch, position.seq, exact)
                };
                matching.clear();
                self.patterns.read().collect(&entry.name, &mut matching);
                subscribers.extend(matching.iter().map(|s| s.id()));
                subscribers.sort_unstable();
                subscribers.dedup();
                Some(TopicInfo {
                    name: entry.name.to_string(),
                    subscribers: subscribers.len(),
                    epoch,
                    seq,
                })
            })
            .collect();
        TopicPage { topics, more }
    }

    /// Runs `f` on what topic `name` keeps (history older than its policy's
    /// age dropped first) and its position, under its lock and without
    /// creating it; `None` when the registry does not track the topic.
    pub fn read_memory<R>(
        &self,
        name: &str,
        f: impl FnOnce(&TopicMemory, Position) -> R,
    ) -> Option<R> {
        let topic = self.topic(name)?;
        let mut state = topic.state.lock();
        if state.evicted {
            return None;
        }
        let policy = Arc::clone(&state.policy);
        state.memory.expire(Instant::now(), &policy);
        Some(f(&state.memory, state.position()))
    }

    /// Calls `f(name, topic id, latest seq)` for up to `limit` topics, in
    /// the map's (arbitrary but stable while the map does not change)
    /// order. Topics whose mutex is busy at that moment are skipped, so the
    /// walk never waits.
    pub fn for_each_position(&self, limit: usize, mut f: impl FnMut(&str, u64, u64)) {
        for entry in self.topics.iter().take(limit) {
            let Some(state) = entry.state.try_lock() else {
                continue;
            };
            if !state.evicted {
                f(&entry.name, state.id, state.next_seq - 1);
            }
        }
    }
}

impl PartialEq for TopicEntry {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TopicEntry {}

impl PartialOrd for TopicEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicEntry {
    /// By name: the listing's order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}
