//! The topic registry: who is subscribed to what, and the publish fan-out.
//!
//! Exact topics live in a sharded concurrent map ([`DashMap`]); wildcard
//! patterns in a [`PatternTrie`]. Each topic caches its *resolved* subscriber
//! list (exact subscribers plus every matching pattern, one entry per
//! connection) and re-resolves only when its own subscribers or the set of
//! patterns changed, as NATS' sublist result cache does. A publish therefore
//! costs one map lookup, usually no trie walk, one encode, and one lock-free
//! queue push per subscriber.
//!
//! Locking: the map guard is dropped right after the lookup; the topic's own
//! mutex is held for the whole publish (sequence number, encode, fan-out) so
//! that every subscriber sees one topic's messages in sequence order, and for
//! subscribe and unsubscribe so that a subscription's reply is queued before
//! any message it produces. Nothing is held across an `.await`: the registry
//! is synchronous. Lock order is: map shard, then topic, then pattern trie.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use tickwire_protocol::ErrorCode;
use tickwire_protocol::message::encode_delivery_frame;
use tickwire_protocol::topic::Pattern;

use crate::metrics::Metrics;
use crate::pattern_trie::{PatternTrie, Subscriber};
use crate::queue::PushOutcome;

/// Why the registry refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// The registry already tracks `max_topics` topics.
    #[error(
        "the broker tracks the maximum number of topics ({0}); retry later or raise --max-topics"
    )]
    TooManyTopics(usize),
}

impl RegistryError {
    /// The wire error code for this refusal.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RegistryError::TooManyTopics(_) => ErrorCode::TooManyTopics,
        }
    }
}

/// The outcome of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The sequence number the message got on its topic.
    pub seq: u64,
    /// How many connections it was queued to.
    pub deliveries: usize,
}

/// Limits of the registry.
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    /// Most topics tracked at once.
    pub max_topics: usize,
    /// A topic with no exact subscriber and no publish for this long is
    /// forgotten (its sequence restarts at 1).
    pub topic_idle_ttl: Duration,
}

const STALE: u64 = u64::MAX;

#[derive(Debug)]
struct TopicState {
    next_seq: u64,
    exact: Vec<Subscriber>,
    resolved: Arc<[Subscriber]>,
    resolved_generation: u64,
    last_active: Instant,
    evicted: bool,
}

#[derive(Debug)]
struct Topic {
    state: Mutex<TopicState>,
}

impl Topic {
    fn new(now: Instant) -> Self {
        Topic {
            state: Mutex::new(TopicState {
                next_seq: 1,
                exact: Vec::new(),
                resolved: Arc::from(Vec::new()),
                resolved_generation: STALE,
                last_active: now,
                evicted: false,
            }),
        }
    }
}

/// All topics and subscriptions of one broker.
#[derive(Debug)]
pub struct TopicRegistry {
    topics: DashMap<Box<str>, Arc<Topic>>,
    topic_count: AtomicUsize,
    patterns: RwLock<PatternTrie>,
    pattern_generation: AtomicU64,
    limits: RegistryLimits,
    metrics: Metrics,
}

/// Microseconds since the Unix epoch, by the system clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl TopicRegistry {
    /// An empty registry.
    pub fn new(limits: RegistryLimits, metrics: Metrics) -> Self {
        TopicRegistry {
            topics: DashMap::new(),
            topic_count: AtomicUsize::new(0),
            patterns: RwLock::new(PatternTrie::default()),
            pattern_generation: AtomicU64::new(0),
            limits,
            metrics,
        }
    }

    /// Number of topics tracked.
    pub fn topic_count(&self) -> usize {
        self.topic_count.load(Ordering::Relaxed)
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.get(name).map(|t| Arc::clone(t.value()))
    }

    fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>, RegistryError> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        if self.topic_count.load(Ordering::Relaxed) >= self.limits.max_topics {
            return Err(RegistryError::TooManyTopics(self.limits.max_topics));
        }
        let entry = self.topics.entry(name.into()).or_insert_with(|| {
            self.topic_count.fetch_add(1, Ordering::Relaxed);
            self.metrics.topics.inc();
            Arc::new(Topic::new(Instant::now()))
        });
        Ok(Arc::clone(entry.value()))
    }

    /// Runs `f` on the live state of topic `name`, creating the topic if
    /// needed. Retries when it raced with eviction.
    fn with_topic<R>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut TopicState) -> R,
    ) -> Result<R, RegistryError> {
        loop {
            let topic = self.topic_or_create(name)?;
            let mut state = topic.state.lock();
            if !state.evicted {
                return Ok(f(&mut state));
            }
        }
    }

    /// Publishes `payload` on `topic` (a valid topic name): assigns the next
    /// sequence number, encodes the delivery frame once and queues the same
    /// bytes to every matching connection.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<PublishReceipt, RegistryError> {
        let receipt = self.with_topic(topic, |state| {
            let now = Instant::now();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.last_active = now;
            let frame = encode_delivery_frame(topic, seq, unix_micros(), payload);
            let subscribers = self.resolve(topic, state);
            let mut deliveries = 0;
            for subscriber in subscribers.iter() {
                if subscriber.push(frame.clone(), now) == PushOutcome::Queued {
                    deliveries += 1;
                }
            }
            PublishReceipt { seq, deliveries }
        })?;
        self.metrics.messages_published.inc();
        self.metrics.deliveries.inc_by(receipt.deliveries as u64);
        Ok(receipt)
    }

    /// The topic's subscribers, one per connection, re-resolved if stale.
    fn resolve(&self, topic: &str, state: &mut TopicState) -> Arc<[Subscriber]> {
        if state.resolved_generation == self.pattern_generation.load(Ordering::Acquire) {
            return Arc::clone(&state.resolved);
        }
        let mut all = state.exact.clone();
        let generation = {
            let patterns = self.patterns.read();
            patterns.collect(topic, &mut all);
            self.pattern_generation.load(Ordering::Acquire)
        };
        all.sort_unstable_by_key(|s| s.id());
        all.dedup_by_key(|s| s.id());
        state.resolved = Arc::from(all);
        state.resolved_generation = generation;
        Arc::clone(&state.resolved)
    }

    /// Adds `subscriber` for `pattern` and calls `registered` before any
    /// publish can reach the new subscription, so the caller can queue its
    /// reply ahead of the first message.
    pub fn subscribe(
        &self,
        pattern: &Pattern,
        subscriber: &Subscriber,
        registered: impl FnOnce(),
    ) -> Result<(), RegistryError> {
        let mut registered = Some(registered);
        if pattern.is_wildcard() {
            let mut patterns = self.patterns.write();
            patterns.insert(pattern, Arc::clone(subscriber));
            if let Some(f) = registered.take() {
                f();
            }
            self.pattern_generation.fetch_add(1, Ordering::AcqRel);
        } else {
            self.with_topic(pattern.as_str(), |state| {
                state.exact.push(Arc::clone(subscriber));
                state.resolved_generation = STALE;
                state.last_active = Instant::now();
                if let Some(f) = registered.take() {
                    f();
                }
            })?;
        }
        self.metrics.subscriptions.inc();
        Ok(())
    }

    /// Removes connection `id` from `pattern`; returns whether it was there.
    pub fn unsubscribe(&self, pattern: &Pattern, id: u64) -> bool {
        let removed = if pattern.is_wildcard() {
            let mut patterns = self.patterns.write();
            let removed = patterns.remove(pattern, id);
            if removed {
                self.pattern_generation.fetch_add(1, Ordering::AcqRel);
            }
            removed
        } else {
            self.topic(pattern.as_str()).is_some_and(|topic| {
                let mut state = topic.state.lock();
                let before = state.exact.len();
                state.exact.retain(|s| s.id() != id);
                state.resolved_generation = STALE;
                state.last_active = Instant::now();
                state.exact.len() != before
            })
        };
        if removed {
            self.metrics.subscriptions.dec();
        }
        removed
    }

    /// Forgets topics that have no exact subscriber and saw no publish or
    /// subscription change for the idle TTL. Returns how many were removed.
    pub fn sweep_idle(&self, now: Instant) -> usize {
        let ttl = self.limits.topic_idle_ttl;
        let mut removed = 0;
        self.topics.retain(|_, topic| {
            let Some(mut state) = topic.state.try_lock() else {
                return true;
            };
            let idle =
                state.exact.is_empty() && now.saturating_duration_since(state.last_active) >= ttl;
            if idle {
                state.evicted = true;
                removed += 1;
            }
            !idle
        });
        self.topic_count.fetch_sub(removed, Ordering::Relaxed);
        self.metrics.topics.sub(removed as i64);
        removed
    }

    /// Encodes `frame` once and queues it to one subscriber; used for replies.
    pub fn queue_reply(subscriber: &Subscriber, frame: Bytes) -> PushOutcome {
        subscriber.push(frame, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Outbound, OutboundReceiver, SubscriberQueue};

    fn registry(max_topics: usize) -> TopicRegistry {
        TopicRegistry::new(
            RegistryLimits {
                max_topics,
                topic_idle_ttl: Duration::from_secs(60),
            },
            Metrics::new(),
        )
    }

    fn sub(id: u64) -> (Subscriber, OutboundReceiver) {
        SubscriberQueue::new(id, 1 << 20, Metrics::new())
    }

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    fn drain(rx: &mut OutboundReceiver) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while let Some(Outbound::Frame(f, _)) = rx.try_recv() {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn overlapping_subscriptions_deliver_once() {
        let reg = registry(100);
        let (s, mut rx) = sub(1);
        reg.subscribe(&p("stocks.*"), &s, || {}).unwrap();
        reg.subscribe(&p("stocks.AAPL"), &s, || {}).unwrap();
        reg.subscribe(&p("stocks.>"), &s, || {}).unwrap();
        let receipt = reg.publish("stocks.AAPL", b"x").unwrap();
        assert_eq!(
            receipt,
            PublishReceipt {
                seq: 1,
                deliveries: 1
            }
        );
        assert_eq!(drain(&mut rx).len(), 1);
    }

    #[test]
    fn all_subscribers_share_one_encoded_frame() {
        let reg = registry(100);
        let (a, mut rx_a) = sub(1);
        let (b, mut rx_b) = sub(2);
        reg.subscribe(&p("t"), &a, || {}).unwrap();
        reg.subscribe(&p(">"), &b, || {}).unwrap();
        assert_eq!(reg.publish("t", b"payload").unwrap().deliveries, 2);
        let fa = drain(&mut rx_a);
        let fb = drain(&mut rx_b);
        assert_eq!(
            fa[0].as_ptr(),
            fb[0].as_ptr(),
            "same allocation, not a copy"
        );
    }

    #[test]
    fn sequence_numbers_are_per_topic() {
        let reg = registry(100);
        assert_eq!(reg.publish("a", b"").unwrap().seq, 1);
        assert_eq!(reg.publish("a", b"").unwrap().seq, 2);
        assert_eq!(reg.publish("b", b"").unwrap().seq, 1);
    }

    #[test]
    fn pattern_changes_invalidate_cached_resolution() {
        let reg = registry(100);
        let (s, mut rx) = sub(1);
        assert_eq!(reg.publish("x.y", b"").unwrap().deliveries, 0);
        reg.subscribe(&p("x.*"), &s, || {}).unwrap();
        assert_eq!(reg.publish("x.y", b"").unwrap().deliveries, 1);
        assert!(reg.unsubscribe(&p("x.*"), 1));
        assert_eq!(reg.publish("x.y", b"").unwrap().deliveries, 0);
        assert_eq!(drain(&mut rx).len(), 1);
    }

    #[test]
    fn reply_is_queued_before_the_first_message() {
        let reg = registry(100);
        let (s, mut rx) = sub(1);
        let reply = Bytes::from_static(b"reply");
        reg.subscribe(&p("t"), &s, || {
            TopicRegistry::queue_reply(&s, reply.clone());
        })
        .unwrap();
        reg.publish("t", b"m").unwrap();
        let frames = drain(&mut rx);
        assert_eq!(frames[0], reply);
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn topic_limit_and_idle_eviction() {
        let reg = registry(2);
        reg.publish("a", b"").unwrap();
        reg.publish("b", b"").unwrap();
        assert_eq!(reg.publish("c", b""), Err(RegistryError::TooManyTopics(2)));
        let (s, _rx) = sub(1);
        reg.subscribe(&p("a"), &s, || {}).unwrap();
        let later = Instant::now() + Duration::from_secs(120);
        assert_eq!(reg.sweep_idle(later), 1, "b is idle; a has a subscriber");
        assert_eq!(reg.topic_count(), 1);
        assert_eq!(reg.publish("c", b"").unwrap().seq, 1);
        assert_eq!(reg.publish("b", b""), Err(RegistryError::TooManyTopics(2)));
        assert_eq!(reg.publish("c", b"").unwrap().seq, 2);
    }
}
