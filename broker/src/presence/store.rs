//! Where presence entries live and who emits their events: the
//! [`PresenceStore`].
//!
//! [`super::PresenceHub`] counts this node's holds and calls the store on
//! the transitions: [`PresenceStore::join`] when a key's local holds go
//! 0 → 1, [`PresenceStore::leave`] when they go 1 → 0 (after the grace
//! period, if any). The store keeps the entries and the per-user counts and
//! emits the `JOIN`/`LEAVE` events ([`PresenceEvent`]) through
//! [`TopicRegistry::deliver_presence`].
//!
//! * [`PresenceStore::Local`] (one node): everything in memory; `join` and
//!   `leave` run synchronously, so an event is queued to every subscriber
//!   before the session's next request is handled ("A joins, then A
//!   publishes" is seen in that order).
//! * [`PresenceStore::Cluster`] ([`crate::cluster::presence`]) keeps
//!   entries in Redis: its `join` and
//!   `leave` must not block (they enqueue a script into the node's ordered
//!   publisher pipeline, behind this node's earlier publishes), and each
//!   node's subscriber task hands the events Redis publishes on the topic's
//!   channel to `deliver_presence`, like messages. Its `snapshot` reads
//!   Redis, which is why [`PresenceStore::snapshot`] is `async`.
//!
//! `join` and `leave` are called with the hub's lock held, in the order of
//! the transitions; they must not block or call back into the hub.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tickwire_protocol::message;
use tickwire_protocol::topic::Topic;

use super::PresenceError;
use super::event::{PresenceChange, PresenceEntry, PresenceEvent};
use super::identity::PresenceKey;
use crate::cluster::presence::ClusterPresence;
use crate::metrics::Metrics;
use crate::registry::TopicRegistry;

/// A topic's presence at one moment: counts and, unless only counts were
/// asked for, the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSnapshot {
    /// Entries on the topic.
    pub clients: u64,
    /// Distinct users of those entries.
    pub users: u64,
    /// Every entry (in no particular order); `None` for counts only.
    pub entries: Option<Vec<PresenceEntry>>,
}

/// Bytes a `PRESENCE_INFO` frame takes besides its entries, at most: the
/// WebSocket header, the envelope, the request id and the counts.
const ANSWER_OVERHEAD: usize = 128;

impl PresenceSnapshot {
    /// Keeps only as many entries as fit in a `PRESENCE_INFO` frame of at
    /// most `max_bytes` (the broker's max message size), so that answering
    /// a large topic never sends a frame a client may refuse, nor one that
    /// alone overflows the asker's queue budget (close 4001). `clients` and
    /// `users` keep counting every entry: fewer entries than `clients` say
    /// the list was cut. Which entries stay is unspecified (entries are in
    /// no particular order).
    pub fn fit_entries(&mut self, max_bytes: usize) {
        let Some(entries) = &mut self.entries else {
            return;
        };
        let mut total = ANSWER_OVERHEAD;
        let keep = entries
            .iter()
            .take_while(|entry| {
                total = total.saturating_add(entry.wire_bytes());
                total <= max_bytes
            })
            .count();
        entries.truncate(keep);
    }

    /// The snapshot as the `PRESENCE_INFO` info map.
    pub fn to_wire(&self) -> message::PresenceInfo<'_> {
        message::PresenceInfo {
            clients: self.clients,
            users: self.users,
            entries: self
                .entries
                .as_ref()
                .map(|entries| entries.iter().map(PresenceEntry::to_wire).collect()),
        }
    }
}

/// Where entries live: this node's memory, or (cluster mode) Redis. See the
/// module documentation for the seam.
#[derive(Debug)]
pub enum PresenceStore {
    /// One node: entries in memory (boxed: much larger than the cluster
    /// arm's handle).
    Local(Box<LocalPresence>),
    /// A cluster node: entries in Redis, events through the topics'
    /// channels (docs/cluster.md, "Presence").
    Cluster(Arc<ClusterPresence>),
}

impl PresenceStore {
    /// A key's first local hold on `topic`: creates its entry and emits
    /// `JOIN`. Called under the hub's lock; must not block.
    pub fn join(
        &self,
        registry: &TopicRegistry,
        topic: Topic<'_>,
        key: &PresenceKey,
        entry: &PresenceEntry,
    ) {
        match self {
            PresenceStore::Local(local) => local.join(registry, topic, key, entry),
            PresenceStore::Cluster(cluster) => cluster.join(topic, key, entry),
        }
    }

    /// A key's last local hold on `topic` ended: removes its entry and
    /// emits `LEAVE`. Called under the hub's lock; must not block.
    pub fn leave(&self, registry: &TopicRegistry, topic: Topic<'_>, key: &PresenceKey) {
        match self {
            PresenceStore::Local(local) => local.leave(registry, topic, key),
            PresenceStore::Cluster(cluster) => cluster.leave(topic, key),
        }
    }

    /// The presence of `topic` (entries unless `counts_only`).
    pub async fn snapshot(
        &self,
        topic: Topic<'_>,
        counts_only: bool,
    ) -> Result<PresenceSnapshot, PresenceError> {
        match self {
            PresenceStore::Local(local) => Ok(local.snapshot(topic, counts_only)),
            PresenceStore::Cluster(cluster) => cluster.snapshot(topic, counts_only).await,
        }
    }
}

/// One topic's entries and per-user entry counts.
#[derive(Debug, Default)]
struct TopicEntries {
    entries: HashMap<PresenceKey, PresenceEntry>,
    users: HashMap<Arc<str>, usize>,
}

/// The single-node store: every topic's entries in memory.
#[derive(Debug)]
pub struct LocalPresence {
    topics: Mutex<HashMap<Box<str>, TopicEntries>>,
    metrics: Metrics,
}

impl LocalPresence {
    /// An empty store counting its events in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        LocalPresence {
            topics: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn join(
        &self,
        registry: &TopicRegistry,
        topic: Topic<'_>,
        key: &PresenceKey,
        entry: &PresenceEntry,
    ) {
        let user_changed = {
            let mut topics = self.topics.lock();
            let entries = topics.entry(topic.as_str().into()).or_default();
            if entries.entries.insert(key.clone(), entry.clone()).is_some() {
                return;
            }
            entry.user.as_ref().is_some_and(|user| {
                let count = entries.users.entry(Arc::clone(user)).or_default();
                *count += 1;
                *count == 1
            })
        };
        self.metrics.presence_joins.inc();
        let event = PresenceEvent {
            change: PresenceChange::Join,
            entry: entry.clone(),
            user_changed,
        };
        registry.deliver_presence(topic, &event);
    }

    fn leave(&self, registry: &TopicRegistry, topic: Topic<'_>, key: &PresenceKey) {
        let (entry, user_changed) = {
            let mut topics = self.topics.lock();
            let Some(entries) = topics.get_mut(topic.as_str()) else {
                return;
            };
            let Some(entry) = entries.entries.remove(key) else {
                return;
            };
            let user_changed = entry.user.as_ref().is_some_and(|user| {
                let last = entries.users.get_mut(user).is_some_and(|count| {
                    *count -= 1;
                    *count == 0
                });
                if last {
                    entries.users.remove(user);
                }
                last
            });
            if entries.entries.is_empty() {
                topics.remove(topic.as_str());
            }
            (entry, user_changed)
        };
        self.metrics.presence_leaves.inc();
        let event = PresenceEvent {
            change: PresenceChange::Leave,
            entry,
            user_changed,
        };
        registry.deliver_presence(topic, &event);
    }

    fn snapshot(&self, topic: Topic<'_>, counts_only: bool) -> PresenceSnapshot {
        let topics = self.topics.lock();
        let Some(entries) = topics.get(topic.as_str()) else {
            return PresenceSnapshot {
                entries: (!counts_only).then(Vec::new),
                ..PresenceSnapshot::default()
            };
        };
        PresenceSnapshot {
            clients: entries.entries.len() as u64,
            users: entries.users.len() as u64,
            entries: (!counts_only).then(|| entries.entries.values().cloned().collect()),
        }
    }
}
