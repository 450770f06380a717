//! The topic registry: who is subscribed to what, and the publish fan-out.
//!
//! Exact topics live in a sharded concurrent map ([`DashMap`]); wildcard
//! patterns in a [`PatternTrie`]. Each topic caches its *resolved* subscriber
//! list (exact subscribers plus every matching pattern, one entry per
//! connection) and re-resolves only when its own subscribers or the set of
//! patterns changed, as NATS' sublist result cache does. A publish therefore
//! costs one map lookup, usually no trie walk, one encode, and one queue push
//! per subscriber.
//!
//! Each topic has a position: an *epoch* (random, new whenever the topic's
//! state is created, so it changes when history is lost) and a sequence
//! number. What it keeps of its past (history ring, retained value) is in
//! [`crate::history`]; what a new subscription gets from it before live
//! messages is in [`crate::replay`].
//!
//! Locking: the map guard is dropped right after the lookup; the topic's own
//! mutex is held for the whole publish (sequence number, encode, history,
//! fan-out) so that every subscriber sees one topic's messages in sequence
//! order, and for an exact subscribe so that its reply and replay are queued
//! before any live message. A wildcard subscribe that replays (`since`,
//! `last`) registers first and then replays each matching topic under that
//! topic's own mutex; live deliveries to it are held meanwhile (see
//! [`crate::replay::PendingReplay`]). No lock spans all topics, and nothing
//! is held across an `.await`. Lock order: map shard, topic, pattern trie,
//! pending replay.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use tickwire_protocol::ErrorCode;
use tickwire_protocol::message::{
    Position, SubscribedInfo, encode_delivery_frame, encode_presence_event_frame,
};
use tickwire_protocol::topic::{Pattern, Topic};

use crate::cluster::interest::Interest;
use crate::compression::{CompressionSettings, SharedFrame};
use crate::config::TopicPolicy;
use crate::history::{StorageBudget, StorageFull, TopicMemory};
use crate::metrics::Metrics;
use crate::outbound::{DIRECT_WRITE_AFTER, FrameOrigin, OutboundQueue};
use crate::pattern_trie::{PatternTrie, Subscriber};
use crate::presence::event::{PresenceChange, PresenceEvent};
use crate::replay::{PendingReplay, ReplayAsk, ReplayBatch};

mod listing;

pub use listing::{MAX_PAGE, TopicInfo, TopicPage};

/// Why the registry refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// The registry already tracks `max_topics` topics.
    #[error(
        "the broker tracks the maximum number of topics ({0}); retry later or raise --max-topics"
    )]
    TooManyTopics(usize),
    /// A client's retain would take the kept messages over
    /// `max_retained_bytes`; nothing was published.
    #[error(
        "the broker keeps the maximum of retained and history bytes ({0}); nothing was published; publish without retain, retry later or raise --max-retained-bytes"
    )]
    StorageFull(usize),
}

impl RegistryError {
    /// The wire error code for this refusal.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RegistryError::TooManyTopics(_) => ErrorCode::TooManyTopics,
            RegistryError::StorageFull(_) => ErrorCode::StorageFull,
        }
    }
}

/// The outcome of a publish.
#[derive(Debug, Clone)]
pub struct PublishReceipt {
    /// The sequence number the message got on its topic.
    pub seq: u64,
    /// How many connections it was queued to.
    pub deliveries: usize,
    /// The subscriber queues found backed up during the fan-out: over
    /// their high-water mark while their sockets still drain
    /// ([`OutboundQueue::needs_backpressure`]), so the broker, not the
    /// subscriber, is behind. The publisher should wait for them to drain
    /// before publishing more (producer backpressure) rather than let them
    /// grow until their subscribers are cut as slow consumers. Usually
    /// empty (no allocation).
    pub backlog: Vec<Arc<OutboundQueue>>,
}

/// A subscription registered by [`TopicRegistry::subscribe_held`], whose
/// reply and replay are still to come.
#[derive(Debug)]
pub struct HeldSubscription {
    /// Holds its live deliveries until [`PendingReplay::finish`].
    pub pending: Arc<PendingReplay>,
    /// The subscriber as registered.
    pub subscriber: Subscriber,
    /// The generation of the node's Redis subscriptions that includes it.
    pub generation: u64,
}

/// Limits of the registry.
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    /// Most topics tracked at once.
    pub max_topics: usize,
    /// A topic with no exact subscriber, nothing retained and no activity for
    /// this long is forgotten (its epoch changes when it comes back).
    pub topic_idle_ttl: Duration,
    /// Most bytes of kept messages (retained values and history), all
    /// topics together.
    pub max_retained_bytes: usize,
}

/// A subscribe request as the registry sees it.
#[derive(Debug, Clone)]
pub struct SubscribeRequest<'a> {
    /// The validated pattern (or exact topic).
    pub pattern: &'a Pattern,
    /// Who subscribes.
    pub subscriber: Subscriber,
    /// `since`: resume after these positions.
    pub since: Option<&'a [(Topic<'a>, Position)]>,
    /// `last`: snapshot of each matching topic's latest retained message.
    pub last: bool,
}

const STALE: u64 = u64::MAX;

#[derive(Debug)]
struct TopicState {
    id: u64,
    epoch: u64,
    policy: Arc<TopicPolicy>,
    next_seq: u64,
    exact: Vec<Subscriber>,
    resolved: Arc<[Subscriber]>,
    resolved_generation: u64,
    last_active: Instant,
    evicted: bool,
    memory: TopicMemory,
    /// The backed-up subscriber queues the last fan-out found, for
    /// publishers that learn of them only before their next publish (HTTP,
    /// and every publisher in a cluster); weak, so that they keep no closed
    /// connection alive.
    backlog: Vec<Weak<OutboundQueue>>,
    /// When the last fan-out ended: a topic whose fan-outs are at least
    /// [`DIRECT_WRITE_AFTER`] apart may write to quiet subscribers'
    /// sockets directly (a slow ticker); back-to-back publishes never do,
    /// so a busy topic keeps batching, and a direct fan-out that took long
    /// does not make the next one direct too.
    fanned_out_at: Option<Instant>,
}

impl TopicState {
    /// Drops the cached subscriber list, so that it keeps no connection
    /// that has left alive (its outbound queue); the next publish resolves
    /// again.
    fn forget_resolution(&mut self) {
        self.resolved = Arc::from(Vec::new());
        self.resolved_generation = STALE;
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.next_seq - 1,
        }
    }

    fn origin(&self, subscriber: &Subscriber) -> FrameOrigin {
        FrameOrigin {
            topic_id: self.id,
            policy: self.policy.slow_consumer,
            max_rate: subscriber.max_rate,
            direct: false,
        }
    }

    /// Appends what a new subscription gets from this topic before live
    /// messages to `out`; see [`ReplayAsk::replay`].
    fn replay(
        &mut self,
        topic: &str,
        ask: &ReplayAsk<'_>,
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Option<bool> {
        let policy = Arc::clone(&self.policy);
        self.memory.expire(now, &policy);
        ask.replay(topic, &self.memory, self.position(), out)
    }
}

#[derive(Debug)]
struct TopicEntry {
    name: Box<str>,
    state: Mutex<TopicState>,
}

/// All topics and subscriptions of one broker.
#[derive(Debug)]
pub struct TopicRegistry {
    topics: DashMap<Box<str>, Arc<TopicEntry>>,
    topic_count: AtomicUsize,
    next_topic_id: AtomicU64,
    patterns: RwLock<PatternTrie>,
    pattern_generation: AtomicU64,
    policies: Vec<Arc<TopicPolicy>>,
    fallback_policy: Arc<TopicPolicy>,
    limits: RegistryLimits,
    storage: Arc<StorageBudget>,
    metrics: Metrics,
    interest: Option<Arc<Interest>>,
    compression: CompressionSettings,
}

/// Microseconds since the Unix epoch, by the system clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Merges the replay state of two subscriptions of one connection that both
/// match a topic: the topic is held back only if every matching subscription
/// is one unfinished replay; any other subscription already receives it live.
fn merge_replay(
    kept: Option<Arc<PendingReplay>>,
    later: &Option<Arc<PendingReplay>>,
) -> Option<Arc<PendingReplay>> {
    match (kept, later) {
        (Some(a), Some(b)) if Arc::ptr_eq(&a, b) && !a.is_done() => Some(a),
        _ => None,
    }
}

impl TopicRegistry {
    /// An empty registry applying `policies` (first match wins).
    pub fn new(limits: RegistryLimits, policies: Vec<TopicPolicy>, metrics: Metrics) -> Self {
        TopicRegistry {
            topics: DashMap::new(),
            topic_count: AtomicUsize::new(0),
            next_topic_id: AtomicU64::new(1),
            patterns: RwLock::new(PatternTrie::default()),
            pattern_generation: AtomicU64::new(0),
            policies: policies.into_iter().map(Arc::new).collect(),
            fallback_policy: Arc::new(TopicPolicy::fallback()),
            limits,
            storage: Arc::new(StorageBudget::new(limits.max_retained_bytes, &metrics)),
            metrics,
            interest: None,
            compression: CompressionSettings::default(),
        }
    }

    /// The same registry, also counting its subscriptions in `interest`
    /// (cluster mode: the node's Redis subscriptions follow it).
    pub fn with_interest(mut self, interest: Arc<Interest>) -> Self {
        self.interest = Some(interest);
        self
    }

    /// The same registry, compressing delivery frames for permessage-deflate
    /// subscribers with `settings`.
    pub fn with_compression(mut self, settings: CompressionSettings) -> Self {
        self.compression = settings;
        self
    }

    fn topic(&self, name: &str) -> Option<Arc<TopicEntry>> {
        self.topics.get(name).map(|t| Arc::clone(t.value()))
    }

    fn new_topic(&self, name: &str) -> TopicEntry {
        let policy = self.policy_arc(name);
        TopicEntry {
            name: name.into(),
            state: Mutex::new(TopicState {
                id: self.next_topic_id.fetch_add(1, Ordering::Relaxed),
                epoch: rand::random::<u64>().max(1),
                policy: Arc::clone(policy),
                next_seq: 1,
                exact: Vec::new(),
                resolved: Arc::from(Vec::new()),
                resolved_generation: STALE,
                last_active: Instant::now(),
                evicted: false,
                memory: TopicMemory::new(Arc::clone(&self.storage)),
                backlog: Vec::new(),
                fanned_out_at: None,
            }),
        }
    }

    fn topic_or_create(&self, name: &str) -> Result<Arc<TopicEntry>, RegistryError> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        if self.topic_count.load(Ordering::Relaxed) >= self.limits.max_topics {
            return Err(RegistryError::TooManyTopics(self.limits.max_topics));
        }
        let entry = self.topics.entry(name.into()).or_insert_with(|| {
            self.topic_count.fetch_add(1, Ordering::Relaxed);
            self.metrics.topics.inc();
            Arc::new(self.new_topic(name))
        });
        Ok(Arc::clone(entry.value()))
    }

    /// Runs `f` on the live state of topic `name`, creating the topic if
    /// needed. Retries when it raced with eviction.
    fn with_topic<R>(
        &self,
        name: Topic<'_>,
        mut f: impl FnMut(&mut TopicState) -> R,
    ) -> Result<R, RegistryError> {
        loop {
            let topic = self.topic_or_create(name.as_str())?;
            let mut state = topic.state.lock();
            if !state.evicted {
                return Ok(f(&mut state));
            }
        }
    }

    /// Publishes `payload` on `topic`: assigns the next sequence number,
    /// encodes the delivery frame once, keeps it in history or as the last
    /// value as the topic's policy (or `retain`) asks, and queues the same
    /// bytes to every matching connection.
    ///
    /// `retain` is the publisher's request, already allowed by
    /// [`crate::limits::may_retain`]; if `max_retained_bytes` cannot hold
    /// it, the publish is refused and nothing is published.
    pub fn publish(
        &self,
        topic: Topic<'_>,
        payload: &[u8],
        retain: bool,
    ) -> Result<PublishReceipt, RegistryError> {
        let receipt = self.with_topic(topic, |state| {
            let now = Instant::now();
            let seq = state.next_seq;
            let at = Position {
                epoch: state.epoch,
                seq,
            };
            let frame = encode_delivery_frame(topic.as_str(), at, unix_micros(), payload);
            let policy = Arc::clone(&state.policy);
            if let Err(StorageFull) = state.memory.record(seq, now, &frame, &policy, retain) {
                return Err(RegistryError::StorageFull(self.storage.limit()));
            }
            state.next_seq += 1;
            state.last_active = now;
            let (deliveries, backlog) = self.fan_out(topic.as_str(), state, seq, &frame, now);
            Ok(PublishReceipt {
                seq,
                deliveries,
                backlog,
            })
        })??;
        self.metrics.messages_published.inc();
        self.metrics.deliveries.inc_by(receipt.deliveries as u64);
        Ok(receipt)
    }

    /// Queues `frame` (message `seq`) to every subscriber of `topic`, the
    /// permessage-deflate ones getting its compressed form, made once
    /// ([`SharedFrame`]); returns to how many, and the subscriber queues it
    /// found backed up (also kept in the topic for
    /// [`TopicRegistry::backlog`]). Costs one atomic load per delivery (the
    /// queue's byte count, just written).
    fn fan_out(
        &self,
        topic: &str,
        state: &mut TopicState,
        seq: u64,
        frame: &Bytes,
        now: Instant,
    ) -> (usize, Vec<Arc<OutboundQueue>>) {
        let subscribers = self.resolve(topic, state);
        let shared = SharedFrame::new(frame, self.compression, &self.metrics);
        let mut deliveries = 0;
        let mut backlog = Vec::new();
        let direct = state
            .fanned_out_at
            .is_none_or(|end| now.saturating_duration_since(end) >= DIRECT_WRITE_AFTER);
        for subscriber in subscribers.iter() {
            let origin = FrameOrigin {
                direct,
                ..state.origin(subscriber)
            };
            let at = Position {
                epoch: state.epoch,
                seq,
            };
            let frame = shared.for_subscriber(subscriber.deflate);
            if subscriber.deliver(at, frame, now, origin) {
                deliveries += 1;
                if subscriber.queue.needs_backpressure() {
                    backlog.push(Arc::clone(&subscriber.queue));
                }
            }
        }
        if !(backlog.is_empty() && state.backlog.is_empty()) {
            state.backlog = backlog.iter().map(Arc::downgrade).collect();
        }
        // Only a fan-out that may have written directly reads the clock again.
        state.fanned_out_at = Some(if direct { Instant::now() } else { now });
        (deliveries, backlog)
    }

    /// A subscriber queue of `topic` that its last fan-out found backed
    /// up, if one still is ([`OutboundQueue::needs_backpressure`]): a
    /// publisher that cannot be paused between publishes (an HTTP request,
    /// a publish through the cluster's backplane) waits for it to drain
    /// before publishing. `None` for a topic the registry does not track.
    pub fn backlog(&self, topic: Topic<'_>) -> Option<Arc<OutboundQueue>> {
        let entry = self.topic(topic.as_str())?;
        let state = entry.state.lock();
        state
            .backlog
            .iter()
            .filter_map(Weak::upgrade)
            .find(|queue| queue.needs_backpressure())
    }

    /// Cluster mode: delivers a message that Redis numbered `at` (published
    /// on any node at `time_us`) to this node's subscribers of `topic`.
    /// Returns to how many connections it was queued, with the subscriber
    /// queues found backed up (the caller waits for them before delivering
    /// more); `(0, [])` without queuing anything for a message
    /// already delivered (one that reached this node through both a channel
    /// and a pattern subscription).
    ///
    /// The node keeps nothing of it: in cluster mode a topic's history and
    /// retained value live in Redis (see [`crate::cluster::catch_up`]).
    pub fn deliver_remote(
        &self,
        topic: Topic<'_>,
        at: Position,
        time_us: u64,
        payload: &[u8],
    ) -> Result<(usize, Vec<Arc<OutboundQueue>>), RegistryError> {
        let (deliveries, backlog) = self.with_topic(topic, |state| {
            if at.epoch == state.epoch && at.seq < state.next_seq {
                return (0, Vec::new());
            }
            state.epoch = at.epoch;
            state.next_seq = at.seq.saturating_add(1);
            let now = Instant::now();
            state.last_active = now;
            let frame = encode_delivery_frame(topic.as_str(), at, time_us, payload);
            self.fan_out(topic.as_str(), state, at.seq, &frame, now)
        })?;
        self.metrics.deliveries.inc_by(deliveries as u64);
        Ok((deliveries, backlog))
    }

    /// Delivers a presence transition of `topic` to this node's
    /// subscribers that asked for it (`join_leave`, exact or wildcard):
    /// the connection-level `JOIN`/`LEAVE` to those asking for `clients`,
    /// the user-level one (when `event.user_changed`) to those asking for
    /// `users`. Each frame is encoded once and shared. Returns to how many
    /// connections an event was queued.
    ///
    /// Runs under the topic's mutex, like a publish, so an event takes its
    /// place among the topic's messages in every subscriber's queue. Events
    /// bypass lanes (never conflated, dropped or rate-limited) and are held
    /// behind a held subscription's reply ([`crate::replay::PendingReplay`]).
    /// The single-node store calls it from the session's task; in cluster
    /// mode the node's subscriber task calls it for the events Redis
    /// publishes on the topic's channel. Subscribers without `join_leave`
    /// cost one flag check; publishes are untouched.
    pub fn deliver_presence(&self, topic: Topic<'_>, event: &PresenceEvent) -> usize {
        let join = event.change == PresenceChange::Join;
        let delivered = self.with_topic(topic, |state| {
            let subscribers = self.resolve(topic.as_str(), state);
            let now = Instant::now();
            let mut client_frame = None;
            let mut user_frame = None;
            let mut deliveries = 0;
            for subscriber in subscribers.iter() {
                let kinds = subscriber.join_leave;
                if !kinds.any() {
                    continue;
                }
                if kinds.clients {
                    let frame = client_frame.get_or_insert_with(|| {
                        encode_presence_event_frame(join, topic.as_str(), &event.entry.to_wire())
                    });
                    deliveries += usize::from(subscriber.deliver_event(frame.clone(), now));
                }
                if kinds.users && event.user_changed {
                    let frame = user_frame.get_or_insert_with(|| {
                        event
                            .entry
                            .to_user_wire()
                            .map(|wire| encode_presence_event_frame(join, topic.as_str(), &wire))
                    });
                    if let Some(frame) = frame {
                        deliveries += usize::from(subscriber.deliver_event(frame.clone(), now));
                    }
                }
            }
            deliveries
        });
        delivered.unwrap_or(0)
    }

    /// Cluster mode: registers a subscription whose reply and replay come
    /// later, once Redis has been asked (see [`crate::cluster::catch_up`]).
    /// Live deliveries to it are held in the returned
    /// [`HeldSubscription::pending`] until then.
    pub fn subscribe_held(
        &self,
        pattern: &Pattern,
        subscriber: Subscriber,
    ) -> Result<HeldSubscription, RegistryError> {
        let pending = PendingReplay::new();
        let subscriber = Subscriber {
            replay: Some(Arc::clone(&pending)),
            ..subscriber
        };
        match pattern.as_topic() {
            Some(topic) => self.with_topic(topic, |state| {
                state.exact.push(subscriber.clone());
                state.resolved_generation = STALE;
                state.last_active = Instant::now();
            })?,
            None => self.insert_pattern(pattern, subscriber.clone()),
        }
        let generation = self.count_subscription(pattern);
        Ok(HeldSubscription {
            pending,
            subscriber,
            generation,
        })
    }

    /// Cluster mode: this node's state of topic `topic` for a subscription
    /// of `subscriber` (created if needed): how its frames are tagged for
    /// `subscriber`, and the position this node last saw.
    pub fn local_topic(
        &self,
        topic: Topic<'_>,
        subscriber: &Subscriber,
    ) -> Result<(FrameOrigin, Position), RegistryError> {
        self.with_topic(topic, |state| (state.origin(subscriber), state.position()))
    }

    /// The policy of topic `topic` (the first `[[topic]]` table matching it).
    pub fn policy(&self, topic: &str) -> &TopicPolicy {
        self.policy_arc(topic)
    }

    fn policy_arc(&self, topic: &str) -> &Arc<TopicPolicy> {
        self.policies
            .iter()
            .find(|p| p.pattern.matches(topic))
            .unwrap_or(&self.fallback_policy)
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
        all.sort_unstable_by_key(Subscriber::id);
        // One entry per connection; a rate limit applies only if every
        // matching subscription of that connection has one.
        all.dedup_by(|later, kept| {
            let same = later.id() == kept.id();
            if same {
                kept.max_rate = kept.max_rate.zip(later.max_rate).map(|(a, b)| a.max(b));
                kept.replay = merge_replay(kept.replay.take(), &later.replay);
                kept.join_leave = kept.join_leave.or(later.join_leave);
            }
            same
        });
        state.resolved = Arc::from(all);
        state.resolved_generation = generation;
        Arc::clone(&state.resolved)
    }

    /// Adds a subscription. `registered` receives the reply information and
    /// runs before any message reaches the new subscription; the replay
    /// (`since`, `last`) is queued right after it and before live messages.
    pub fn subscribe(
        &self,
        request: SubscribeRequest<'_>,
        registered: impl FnOnce(SubscribedInfo),
    ) -> Result<(), RegistryError> {
        let ask = ReplayAsk::new(request.since, request.last);
        match request.pattern.as_topic() {
            Some(topic) => self.subscribe_exact(topic, &request, &ask, registered)?,
            None if ask.is_empty() => {
                // Cached resolutions are invalidated before the reply is
                // queued: a publish that resolves after it includes the new
                // subscriber.
                self.insert_pattern(request.pattern, request.subscriber.clone());
                registered(SubscribedInfo::default());
            }
            None => self.subscribe_wildcard_with_replay(&request, &ask, registered),
        }
        self.count_subscription(request.pattern);
        Ok(())
    }

    /// Adds `subscriber` to the pattern trie and invalidates every cached
    /// resolution, so that a publish resolving afterwards includes it.
    fn insert_pattern(&self, pattern: &Pattern, subscriber: Subscriber) {
        let mut patterns = self.patterns.write();
        patterns.insert(pattern, subscriber);
        self.pattern_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a new subscription to `pattern` (and, in cluster mode, in the
    /// node's interest); returns the interest generation that includes it
    /// (0 on a single node).
    fn count_subscription(&self, pattern: &Pattern) -> u64 {
        self.metrics.subscriptions.inc();
        self.interest.as_ref().map_or(0, |i| i.add(pattern))
    }

    /// An exact subscribe: under the topic's mutex, registers, queues the
    /// reply, then the replay.
    fn subscribe_exact(
        &self,
        topic: Topic<'_>,
        request: &SubscribeRequest<'_>,
        ask: &ReplayAsk<'_>,
        registered: impl FnOnce(SubscribedInfo),
    ) -> Result<(), RegistryError> {
        let mut registered = Some(registered);
        self.with_topic(topic, |state| {
            let now = Instant::now();
            state.exact.push(request.subscriber.clone());
            state.resolved_generation = STALE;
            state.last_active = now;
            let mut frames = Vec::new();
            let resumed = state.replay(topic.as_str(), ask, now, &mut frames);
            let mut info = SubscribedInfo::default();
            info.epoch = Some(state.epoch);
            info.seq = Some(state.next_seq - 1);
            info.recovered = ask.has_since().then_some(resumed != Some(false));
            if resumed == Some(false) {
                info.missed
                    .push((topic.as_str().to_owned(), state.position()));
            }
            self.count_resume(info.recovered);
            if let Some(f) = registered.take() {
                f(info);
            }
            let origin = state.origin(&request.subscriber);
            for frame in frames {
                request.subscriber.queue.push_delivery(frame, now, origin);
            }
        })
    }

    /// A wildcard subscribe with `since` or `last`, without stopping anyone:
    /// registers the pattern with a [`PendingReplay`] (live deliveries to it
    /// are held from then on), replays each matching topic under its own
    /// mutex, then queues reply, replay and the held live frames in order.
    fn subscribe_wildcard_with_replay(
        &self,
        request: &SubscribeRequest<'_>,
        ask: &ReplayAsk<'_>,
        registered: impl FnOnce(SubscribedInfo),
    ) {
        let pending = PendingReplay::new();
        let subscriber = Subscriber {
            replay: Some(Arc::clone(&pending)),
            ..request.subscriber.clone()
        };
        self.insert_pattern(request.pattern, subscriber.clone());
        // Topics created from here on resolve with the new subscriber, so
        // all their messages are held; the rest are replayed below.
        let matching: Vec<Arc<TopicEntry>> = self
            .topics
            .iter()
            .filter(|entry| request.pattern.matches(entry.key()))
            .map(|entry| Arc::clone(entry.value()))
            .collect();
        let now = Instant::now();
        let mut batch = ReplayBatch::default();
        let mut info = SubscribedInfo::default();
        let mut frames = Vec::new();
        let mut present = HashSet::new();
        for topic in &matching {
            let mut state = topic.state.lock();
            if state.evicted {
                continue;
            }
            present.insert(&*topic.name);
            if state.replay(&topic.name, ask, now, &mut frames) == Some(false) {
                info.missed.push((topic.name.to_string(), state.position()));
            }
            let origin = state.origin(&subscriber);
            batch.add(state.id, state.position(), &mut frames, origin);
        }
        if ask.has_since() {
            // Positions for topics that no longer exist cannot be resumed.
            for topic in ask.since_topics() {
                if request.pattern.matches(topic) && !present.contains(topic) {
                    info.missed
                        .push((topic.to_owned(), Position { epoch: 0, seq: 0 }));
                }
            }
            info.recovered = Some(info.missed.is_empty());
        }
        self.count_resume(info.recovered);
        pending.finish(&subscriber.queue, batch, now, || registered(info));
    }

    /// Counts a resume (`recovered`: `Some` when the subscribe had `since`).
    pub fn count_resume(&self, recovered: Option<bool>) {
        match recovered {
            Some(true) => self.metrics.resumes.with_label_values(&["recovered"]).inc(),
            Some(false) => self
                .metrics
                .resumes
                .with_label_values(&["incomplete"])
                .inc(),
            None => {}
        }
    }

    /// Removes connection `id` from `pattern`; returns whether it was there.
    pub fn unsubscribe(&self, pattern: &Pattern, id: u64) -> bool {
        let removed = match pattern.as_topic() {
            None => {
                let mut patterns = self.patterns.write();
                let removed = patterns.remove(pattern, id);
                if removed {
                    self.pattern_generation.fetch_add(1, Ordering::AcqRel);
                }
                removed
            }
            Some(topic) => self.topic(topic.as_str()).is_some_and(|topic| {
                let mut state = topic.state.lock();
                let before = state.exact.len();
                state.exact.retain(|s| s.id() != id);
                state.forget_resolution();
                state.last_active = Instant::now();
                state.exact.len() != before
            }),
        };
        if removed {
            if let Some(interest) = &self.interest {
                interest.remove(pattern);
            }
            self.metrics.subscriptions.dec();
        }
        removed
    }

    /// Forgets topics that have no exact subscriber, keep nothing (history
    /// expired, no last value) and saw no activity for the idle TTL. Returns
    /// how many were removed.
    ///
    /// Of the topics it keeps, it drops subscriber lists cached before the
    /// patterns last changed: such a list may still hold connections whose
    /// wildcard subscriptions are gone, and a topic that is not published
    /// again would keep them (their outbound queues) alive until it is
    /// forgotten, or forever if it keeps a retained value.
    pub fn sweep_idle(&self, now: Instant) -> usize {
        let ttl = self.limits.topic_idle_ttl;
        let generation = self.pattern_generation.load(Ordering::Acquire);
        let mut removed = 0;
        self.topics.retain(|_, topic| {
            let Some(mut state) = topic.state.try_lock() else {
                return true;
            };
            if state.resolved_generation != generation && !state.resolved.is_empty() {
                state.forget_resolution();
            }
            let policy = Arc::clone(&state.policy);
            state.memory.expire(now, &policy);
            let idle = state.exact.is_empty()
                && state.memory.is_empty()
                && now.saturating_duration_since(state.last_active) >= ttl;
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
}

#[cfg(test)]
mod tests;
