//! Cluster mode: how a new subscription starts, so that a client resumes
//! on any node without gap or duplicate.
//!
//! In cluster mode a topic's position, history and retained value live in
//! Redis, not on the node. A subscribe therefore goes in three steps:
//!
//! 1. The session registers the subscription *held*
//!    ([`crate::registry::TopicRegistry::subscribe_held`]): from then on its
//!    live messages are held back, not queued.
//! 2. This module waits until Redis has confirmed the node's subscription
//!    to the topic's channel (or the wildcard's pattern): every message
//!    Redis numbers after that reaches this node. Then it reads the topic
//!    from Redis in one atomic step ([`crate::cluster::read`]): position,
//!    the history a `since` needs, the retained value and newest entry a
//!    `last` needs. For a wildcard with `since` or `last`, the topics are
//!    found with `SCAN`.
//! 3. It works out the reply and the replay exactly as a single node does
//!    (the same [`ReplayAsk`], on memory rebuilt from what Redis returned),
//!    and finishes the held subscription: the `SUBSCRIBED` reply, the
//!    replay, then the held live messages above the position read (the
//!    replay covered the others).
//!
//! So the reply's position is the cluster's, a resume works on whatever
//! node the client reaches, and the first live message follows the reply
//! and replay without gap or duplicate.
//!
//! A wildcard replay scans Redis' keys; at most
//! [`crate::cluster::backplane::WILDCARD_SCANS`] run at once on a node.
//!
//! When Redis cannot be asked (the node has no connection, Redis did not
//! answer within [`REDIS_TIMEOUT`], or a wildcard replay waited that long
//! for its turn), the subscription is answered from what
//! the node knows: its own last position of the topic, no replay, and
//! `recovered: false` for every `since` position (it could not be checked).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tickwire_protocol::message::{Position, SubscribedInfo, encode_delivery_frame};
use tickwire_protocol::topic::{Pattern, Topic};

use crate::cluster::backplane::Backplane;
use crate::cluster::publisher::REDIS_TIMEOUT;
use crate::cluster::read::{
    ReadError, StoredMessage, TopicRead, TopicRecord, read_topics, scan_topics,
};
use crate::config::TopicPolicy;
use crate::history::{RestoredMessage, StorageBudget, TopicMemory};
use crate::registry::{HeldSubscription, unix_micros};
use crate::replay::{ReplayAsk, ReplayBatch};
use crate::state::BrokerState;

/// Receives the `SUBSCRIBED` reply's information (and queues the reply).
pub type Reply = Box<dyn FnOnce(SubscribedInfo) + Send>;

/// What a subscribe asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The validated pattern (or exact topic).
    pub pattern: Pattern,
    /// `since`: resume after these positions (topics already validated).
    pub since: Option<Vec<(String, Position)>>,
    /// `last`: the latest kept message of each matching topic.
    pub last: bool,
}

/// Finishes `held` in the background: asks Redis, then queues the reply
/// (through `reply`), the replay and the held live messages.
pub fn start(state: &Arc<BrokerState>, held: HeldSubscription, ask: Ask, reply: Reply) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let Some(backplane) = state.backplane.as_ref() else {
            return;
        };
        let records = if backplane.health.is_up() {
            match fetch(&state, backplane, &held, &ask).await {
                Ok(records) => Some(records),
                Err(e) => {
                    tracing::warn!(pattern = %ask.pattern, error = %e, "cluster: a subscription could not be read in Redis; answered from this node");
                    None
                }
            }
        } else {
            None
        };
        let answered = if records.is_some() { "redis" } else { "node" };
        state
            .metrics
            .backplane_subscribes
            .with_label_values(&[answered])
            .inc();
        finish(&state, backplane, held, &ask, records, reply);
    });
}

/// Waits for Redis to confirm the subscription, then reads what the reply
/// and replay need.
async fn fetch(
    state: &BrokerState,
    backplane: &Backplane,
    held: &HeldSubscription,
    ask: &Ask,
) -> Result<Vec<TopicRecord>, ReadError> {
    tokio::time::timeout(REDIS_TIMEOUT, backplane.interest.confirmed(held.generation))
        .await
        .map_err(|_| ReadError::TimedOut)?;
    let mut connection = backplane.connection().ok_or(ReadError::Unavailable)?;
    let since = |topic: &str| {
        ask.since
            .as_ref()
            .map(|since| since.iter().find(|(t, _)| t == topic).map(|(_, p)| *p))
    };
    let read = |topic: String, create: bool| {
        let policy = state.registry.policy(&topic);
        // A topic named in `since` resumes after its position; another
        // topic of a `since` request gets all its history.
        let after = match since(&topic) {
            _ if policy.history_messages == 0 => None,
            None => None,
            Some(None) => Some(0),
            Some(Some(position)) => Some(position.seq),
        };
        TopicRead {
            count: policy.history_messages,
            topic,
            create,
            after,
            newest: ask.last,
        }
    };
    // Held until the reads are done.
    let mut scan_permit = None;
    let reads = match ask.pattern.as_topic() {
        Some(topic) => vec![read(topic.as_str().to_owned(), true)],
        None if ask.since.is_none() && !ask.last => Vec::new(),
        None => {
            let permit = tokio::time::timeout(REDIS_TIMEOUT, backplane.wildcard_scans.acquire());
            let permit = permit.await.map_err(|_| ReadError::Busy)?;
            scan_permit = Some(permit.map_err(|_| ReadError::Busy)?);
            let started = Instant::now();
            let scanned = scan_topics(&mut connection, &ask.pattern).await;
            observe(state, "scan", started);
            let (mut topics, cut_short) = scanned?;
            if cut_short {
                tracing::warn!(pattern = %ask.pattern, "cluster: a wildcard replay covers only the first topics found in Redis");
            }
            for (topic, _) in ask.since.iter().flatten() {
                if ask.pattern.matches(topic) && !topics.contains(topic) {
                    topics.push(topic.clone());
                }
            }
            topics.into_iter().map(|t| read(t, false)).collect()
        }
    };
    let started = Instant::now();
    let records = read_topics(&mut connection, &reads).await;
    if !reads.is_empty() {
        observe(state, "read", started);
    }
    let records = records?;
    drop(scan_permit);
    Ok(records.into_iter().flatten().collect())
}

/// Counts a Redis round trip of `op` begun at `started`.
fn observe(state: &BrokerState, op: &str, started: Instant) {
    state
        .metrics
        .backplane_redis_seconds
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
}

/// Queues the reply, the replay and the held live messages. `records` is
/// what Redis keeps of the topics (`None`: Redis could not be asked).
fn finish(
    state: &BrokerState,
    backplane: &Backplane,
    held: HeldSubscription,
    ask: &Ask,
    records: Option<Vec<TopicRecord>>,
    reply: Reply,
) {
    let since: Option<Vec<(Topic<'_>, Position)>> = ask.since.as_ref().map(|since| {
        since
            .iter()
            .filter_map(|(t, p)| Some((Topic::new(t).ok()?, *p)))
            .collect()
    });
    let replay_ask = ReplayAsk::new(since.as_deref(), ask.last);
    let registry = &state.registry;
    let now = Instant::now();
    let mut info = SubscribedInfo::default();
    let mut batch = ReplayBatch::with_late_repeats();
    let mut frames = Vec::new();
    let verified = records.is_some();
    let records = records.unwrap_or_default();
    let exact = ask.pattern.as_topic();
    for record in &records {
        let Ok(topic) = Topic::new(&record.topic) else {
            continue;
        };
        let Ok((origin, _)) = registry.local_topic(topic, &held.subscriber) else {
            // This node tracks the maximum number of topics: no replay.
            info.missed.push((record.topic.clone(), record.position));
            continue;
        };
        let policy = registry.policy(&record.topic);
        let memory = restore(&backplane.replay_budget, record, policy, now);
        if replay_ask.replay(&record.topic, &memory, record.position, &mut frames) == Some(false) {
            info.missed.push((record.topic.clone(), record.position));
        }
        batch.add(origin.topic_id, record.position, &mut frames, origin);
        if exact.is_some() {
            info.epoch = Some(record.position.epoch);
            info.seq = Some(record.position.seq);
        }
    }
    match exact {
        Some(topic) if !verified => {
            // Answered from this node: its last position, nothing replayed.
            if let Ok((origin, position)) = registry.local_topic(topic, &held.subscriber) {
                info.epoch = Some(position.epoch);
                info.seq = Some(position.seq);
                if replay_ask.has_since() {
                    info.missed.push((topic.as_str().to_owned(), position));
                }
                batch.add(origin.topic_id, position, &mut frames, origin);
            }
        }
        _ => {
            // `since` positions of topics Redis does not have (or that
            // could not be checked) cannot be resumed.
            for (topic, _) in ask.since.iter().flatten() {
                let listed = info.missed.iter().any(|(t, _)| t == topic)
                    || records.iter().any(|r| &r.topic == topic);
                if ask.pattern.matches(topic) && !listed {
                    info.missed
                        .push((topic.clone(), Position { epoch: 0, seq: 0 }));
                }
            }
        }
    }
    if replay_ask.has_since() {
        info.recovered = Some(info.missed.is_empty());
    }
    registry.count_resume(info.recovered);
    let queue = Arc::clone(&held.subscriber.queue);
    held.pending.finish(&queue, batch, now, || reply(info));
}

/// The memory a single node would keep for `record`'s topic under
/// `policy`: its history (without entries older than the policy's age) and
/// as its last value the newer of its retained value and newest entry.
/// Also what `GET /v1/history/{topic}` reads in a cluster.
pub fn restore(
    budget: &Arc<StorageBudget>,
    record: &TopicRecord,
    policy: &TopicPolicy,
    now: Instant,
) -> TopicMemory {
    let unix_now = unix_micros();
    let at = |time_us: u64| {
        let age = Duration::from_micros(unix_now.saturating_sub(time_us));
        (now.checked_sub(age).unwrap_or(now), age)
    };
    let young = |m: &&StoredMessage| policy.history_age.is_none_or(|max| at(m.time_us).1 <= max);
    let frame = |m: &StoredMessage| {
        let position = Position {
            epoch: record.position.epoch,
            seq: m.seq,
        };
        RestoredMessage {
            seq: m.seq,
            at: at(m.time_us).0,
            frame: encode_delivery_frame(&record.topic, position, m.time_us, &m.payload),
        }
    };
    let history = record.history.iter().filter(young).map(frame).collect();
    let newest = record.newest.as_ref().filter(young);
    let last = match (&record.retained, newest) {
        (Some(r), Some(n)) if n.seq > r.seq => Some(n),
        (Some(r), _) => Some(r),
        (None, n) => n,
    };
    TopicMemory::restored(
        Arc::clone(budget),
        policy,
        record.position.seq,
        history,
        last.map(frame),
    )
}
