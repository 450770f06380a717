//! The index of wildcard subscriptions: a token trie, after NATS' sublist.
//!
//! Each pattern is stored along the path of its tokens: literal tokens are
//! map edges, `*` is one dedicated edge, and a trailing `>` parks the
//! subscriber in the node's `rest` list. Finding the subscribers of a topic
//! walks at most two edges per token (its literal and `*`), so the cost grows
//! with the topic's depth and the number of patterns that actually match, not
//! with the number of unrelated subscriptions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tickwire_protocol::message::{JoinLeave, Position};
use tickwire_protocol::topic::{Pattern, PatternToken};

use crate::outbound::{FrameOrigin, OutboundQueue, PushOutcome};
use crate::replay::PendingReplay;

/// Which presence events a subscription (or, merged, a connection) asks
/// for with `join_leave`: connection-level, user-level, both or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinLeaveKinds {
    /// `join_leave: true` / `"clients"`: one event per entry.
    pub clients: bool,
    /// `join_leave: "users"`: one event per user.
    pub users: bool,
}

impl JoinLeaveKinds {
    /// The kinds one subscribe option asks for.
    pub fn from_option(option: Option<JoinLeave>) -> Self {
        JoinLeaveKinds {
            clients: option == Some(JoinLeave::Clients),
            users: option == Some(JoinLeave::Users),
        }
    }

    /// Both subscriptions' kinds (a connection's overlapping subscriptions
    /// merge per kind).
    pub fn or(self, other: Self) -> Self {
        JoinLeaveKinds {
            clients: self.clients || other.clients,
            users: self.users || other.users,
        }
    }

    /// Whether any event is asked for.
    pub fn any(self) -> bool {
        self.clients || self.users
    }
}

/// A subscription as the registry holds it: the connection's queue and the
/// subscription options that shape delivery.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The connection's outbound queue.
    pub queue: Arc<OutboundQueue>,
    /// The subscription's `max_rate` (messages per second per topic).
    pub max_rate: Option<u32>,
    /// Set while a wildcard subscription's replay is in progress (and kept,
    /// finished, afterwards): live deliveries go through it.
    pub replay: Option<Arc<PendingReplay>>,
    /// The presence events it asks for (`join_leave`).
    pub join_leave: JoinLeaveKinds,
    /// The connection negotiated permessage-deflate: live deliveries get
    /// the shared compressed frame ([`crate::compression::SharedFrame`]).
    pub deflate: bool,
}

impl Subscriber {
    /// A subscriber without a rate limit.
    pub fn unlimited(queue: Arc<OutboundQueue>) -> Self {
        Subscriber {
            queue,
            max_rate: None,
            replay: None,
            join_leave: JoinLeaveKinds::default(),
            deflate: false,
        }
    }

    /// The connection id.
    pub fn id(&self) -> u64 {
        self.queue.id()
    }

    /// Delivers live message `at` of topic `origin.topic_id`; returns
    /// whether it was queued (or held for a replay in progress).
    pub fn deliver(&self, at: Position, frame: Bytes, now: Instant, origin: FrameOrigin) -> bool {
        match &self.replay {
            None => self.queue.push_delivery(frame, now, origin) == PushOutcome::Queued,
            Some(pending) => pending.deliver(&self.queue, at, frame, now, origin),
        }
    }

    /// Delivers a `JOIN`/`LEAVE` event frame: held (in order with the
    /// held messages) while a replay is in progress, else queued beside
    /// the deliveries, never diverted into a lane. Returns whether it was
    /// queued or held.
    pub fn deliver_event(&self, frame: Bytes, now: Instant) -> bool {
        match &self.replay {
            None => self.queue.push_event(frame, now) == PushOutcome::Queued,
            Some(pending) => pending.deliver_event(&self.queue, frame, now),
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    any_one: Option<Box<Node>>,
    /// Subscribers whose pattern ends at this node.
    here: Vec<Subscriber>,
    /// Subscribers whose pattern ends with `>` right after this node.
    rest: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.any_one.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }

    fn collect(&self, tokens: &[&str], out: &mut Vec<Subscriber>) {
        let Some((first, tail)) = tokens.split_first() else {
            out.extend(self.here.iter().cloned());
            return;
        };
        out.extend(self.rest.iter().cloned());
        if let Some(child) = self.literal.get(*first) {
            child.collect(tail, out);
        }
        if let Some(child) = &self.any_one {
            child.collect(tail, out);
        }
    }

    /// Removes subscriber `id` from the path of `tokens`; prunes empty nodes.
    /// Returns whether a subscriber was removed.
    fn remove(&mut self, tokens: &[PatternToken<'_>], id: u64) -> bool {
        let Some((first, tail)) = tokens.split_first() else {
            return remove_id(&mut self.here, id);
        };
        match first {
            PatternToken::Rest => remove_id(&mut self.rest, id),
            PatternToken::AnyOne => {
                let Some(child) = self.any_one.as_mut() else {
                    return false;
                };
                let removed = child.remove(tail, id);
                if child.is_empty() {
                    self.any_one = None;
                }
                removed
            }
            PatternToken::Literal(l) => {
                let Some(child) = self.literal.get_mut(*l) else {
                    return false;
                };
                let removed = child.remove(tail, id);
                if child.is_empty() {
                    self.literal.remove(*l);
                }
                removed
            }
        }
    }
}

fn remove_id(list: &mut Vec<Subscriber>, id: u64) -> bool {
    match list.iter().position(|s| s.id() == id) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Wildcard subscriptions, indexed by token.
#[derive(Debug, Default)]
pub struct PatternTrie {
    root: Node,
    len: usize,
}

impl PatternTrie {
    /// Number of (pattern, subscriber) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no pattern is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `subscriber` under `pattern`. The caller guarantees the same
    /// subscriber is not added twice for one pattern.
    pub fn insert(&mut self, pattern: &Pattern, subscriber: Subscriber) {
        let mut node = &mut self.root;
        for token in pattern.tokens() {
            node = match token {
                PatternToken::Rest => {
                    node.rest.push(subscriber);
                    self.len += 1;
                    return;
                }
                PatternToken::AnyOne => node.any_one.get_or_insert_with(Default::default),
                PatternToken::Literal(l) => node.literal.entry(l.into()).or_default(),
            };
        }
        node.here.push(subscriber);
        self.len += 1;
    }

    /// Removes subscriber `id` from `pattern`; returns whether it was there.
    pub fn remove(&mut self, pattern: &Pattern, id: u64) -> bool {
        let tokens: Vec<PatternToken<'_>> = pattern.tokens().collect();
        let removed = self.root.remove(&tokens, id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every subscriber whose pattern matches `topic` (which must be
    /// a valid topic) to `out`. A subscriber appears once per matching
    /// pattern; the caller deduplicates.
    pub fn collect(&self, topic: &str, out: &mut Vec<Subscriber>) {
        if self.len == 0 {
            return;
        }
        let mut tokens = [""; tickwire_protocol::topic::MAX_TOKENS];
        let mut depth = 0;
        for token in topic.split('.') {
            // A valid topic has at most MAX_TOKENS tokens; ignore extra ones
            // rather than index out of bounds.
            let Some(slot) = tokens.get_mut(depth) else {
                return;
            };
            *slot = token;
            depth += 1;
        }
        self.root.collect(&tokens[..depth], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn sub(id: u64) -> Subscriber {
        Subscriber::unlimited(OutboundQueue::new(id, 1024, Metrics::new()).0)
    }

    fn ids(trie: &PatternTrie, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        trie.collect(topic, &mut out);
        let mut ids: Vec<u64> = out.iter().map(|s| s.id()).collect();
        ids.sort_unstable();
        ids
    }

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[test]
    fn wildcards_match_like_nats() {
        let mut trie = PatternTrie::default();
        trie.insert(&p("stocks.*"), sub(1));
        trie.insert(&p("stocks.>"), sub(2));
        trie.insert(&p("*.AAPL"), sub(3));
        trie.insert(&p(">"), sub(4));
        trie.insert(&p("stocks.*.bid"), sub(5));
        assert_eq!(ids(&trie, "stocks.AAPL"), vec![1, 2, 3, 4]);
        assert_eq!(ids(&trie, "stocks.AAPL.bid"), vec![2, 4, 5]);
        assert_eq!(ids(&trie, "stocks"), vec![4]);
        assert_eq!(ids(&trie, "fx.EURUSD"), vec![4]);
        assert_eq!(trie.len(), 5);
    }

    #[test]
    fn remove_prunes_and_only_removes_the_given_subscriber() {
        let mut trie = PatternTrie::default();
        trie.insert(&p("a.*.c"), sub(1));
        trie.insert(&p("a.*.c"), sub(2));
        assert!(trie.remove(&p("a.*.c"), 1));
        assert!(!trie.remove(&p("a.*.c"), 1));
        assert!(!trie.remove(&p("a.b.c"), 2));
        assert_eq!(ids(&trie, "a.b.c"), vec![2]);
        assert!(trie.remove(&p("a.*.c"), 2));
        assert!(trie.is_empty());
        assert!(trie.root.is_empty());
    }
}
