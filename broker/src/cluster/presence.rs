//! Cluster presence: the entries of every node in Redis, under node
//! leases, and the events every node receives on the topics' channels
//! (docs/cluster.md, "Presence").
//!
//! When this node's first local hold of an entry begins (holds 0 -> 1,
//! after the grace of a previous release if any), [`ClusterPresence::join`]
//! sends the join script through the publisher's ordered pipeline; when its
//! last ends, [`ClusterPresence::leave`] sends the leave script. Redis
//! counts the nodes holding each entry: the JOIN is published by the node
//! whose hold created the entry, the LEAVE by the one whose release removed
//! it, both on the topic's channel from inside the script, so every
//! subscribed node receives them in order with the topic's messages
//! ([`crate::cluster::subscriber`] hands them to the registry).
//!
//! The node keeps what it holds (and releases Redis has not confirmed), so
//! that when Redis lost them (it was unreachable when a script was sent,
//! it restarted empty, or the node's lease expired and a reaper released
//! its holds) the node sends them again ([`ClusterPresence::resync`]);
//! the scripts are idempotent per node. Meanwhile presence is best effort:
//! subscribes succeed, and the failures are counted.
//!
//! * [`scripts`]: the Lua scripts and key names; [`call`]: one run of
//!   the join or leave script; [`event`]: the event
//!   format on a topic's channel; [`control`]: the control channel
//!   (cluster-wide disconnects); [`lease`]: the lease and reaper task.

pub mod call;
pub mod control;
pub mod event;
pub mod lease;
pub mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tickwire_protocol::topic::Topic;
use tokio_util::sync::CancellationToken;

use crate::cluster::health::Health;
use crate::cluster::interest::Interest;
use crate::cluster::presence::call::{NodeKeys, PresenceCall};
use crate::cluster::presence::event::{ChannelEvent, EventKind};
use crate::cluster::presence::scripts::{
    JOIN_MADE_LEASE, JOIN_PUBLISHED, entries_key, entry_key, split_entry_key, users_key,
};
use crate::cluster::publisher::{
    PresenceJob, PublishError, Publisher, REDIS_TIMEOUT, SharedConnection,
};
use crate::metrics::Metrics;
use crate::presence::{
    PresenceChange, PresenceEntry, PresenceError, PresenceEvent, PresenceKey, PresenceSnapshot,
};

/// A hold of this node: topic and entry key.
type Hold = (Arc<str>, Arc<str>);

/// What this node holds, as it told (or will tell) Redis.
#[derive(Debug, Default)]
struct Holds {
    /// Entries held, with their client info (empty: none).
    held: HashMap<Hold, Bytes>,
    /// Released entries whose leave Redis has not confirmed, each with the
    /// number of its latest release.
    unreleased: HashMap<Hold, u64>,
    /// Numbers releases.
    releases: u64,
}

/// What the scripts' callbacks update.
#[derive(Debug)]
struct Shared {
    holds: Mutex<Holds>,
    /// A join or leave failed since the last resync.
    stale: AtomicBool,
    metrics: Metrics,
}

impl Shared {
    /// Takes the outcome of the script run for `hold` (`release`: the
    /// number of the release a leave was sent for).
    fn outcome(&self, hold: &Hold, release: Option<u64>, result: Result<u64, PublishError>) {
        match result {
            Ok(answer) => {
                let published = answer & JOIN_PUBLISHED != 0;
                if answer & JOIN_MADE_LEASE != 0 {
                    // The node had no lease: a reaper may have released
                    // its other holds; the next lease round sends them
                    // again.
                    self.stale.store(true, Ordering::Release);
                }
                if let Some(number) = release {
                    let mut holds = self.holds.lock();
                    if holds.unreleased.get(hold) == Some(&number) {
                        holds.unreleased.remove(hold);
                    }
                }
                match (published, release) {
                    (false, _) => {}
                    (true, None) => self.metrics.presence_joins.inc(),
                    (true, Some(_)) => self.metrics.presence_leaves.inc(),
                }
            }
            Err(e) => {
                tracing::debug!(topic = %hold.0, error = %e, "cluster presence: a join or leave did not reach Redis; sent again later");
                self.stale.store(true, Ordering::Release);
                self.metrics.presence_backplane_failures.inc();
            }
        }
    }
}

/// This node's presence in Redis.
#[derive(Debug)]
pub struct ClusterPresence {
    node: Arc<NodeKeys>,
    ttl: Duration,
    grace: Duration,
    max_entries: usize,
    publisher: Publisher,
    connection: Arc<SharedConnection>,
    interest: Arc<Interest>,
    health: Arc<Health>,
    shared: Arc<Shared>,
    /// Cancelled when the node retires (the lease task stops).
    retiring: CancellationToken,
}

/// How a node's presence is set up ([`ClusterPresence::new`]).
#[derive(Debug, Clone)]
pub struct PresenceSettings {
    /// `presence_lease_ttl`.
    pub lease_ttl: Duration,
    /// `presence_grace`: how long a node shutting down keeps its lease.
    pub grace: Duration,
    /// `max_presence_per_topic`: the most entries a presence read returns.
    pub max_per_topic: usize,
}

/// The most entries a presence read asks for per `HSCAN` round trip.
const SCAN_COUNT: usize = 1000;

impl ClusterPresence {
    /// This node's presence with a new random node id, set up as
    /// `settings` say: scripts sent through `publisher` (joins after
    /// `interest` is confirmed), reads on `connection`, Redis connections
    /// lost as `health` counts them, counted in `metrics`.
    pub fn new(
        settings: &PresenceSettings,
        publisher: Publisher,
        connection: Arc<SharedConnection>,
        interest: Arc<Interest>,
        health: Arc<Health>,
        metrics: Metrics,
    ) -> Self {
        let id = format!("{:032x}", rand::random::<u128>());
        let ttl_ms = u64::try_from(settings.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let node = NodeKeys::new(id, ttl_ms);
        ClusterPresence {
            node: Arc::new(node),
            ttl: settings.lease_ttl,
            grace: settings.grace,
            max_entries: settings.max_per_topic,
            publisher,
            connection,
            interest,
            health,
            shared: Arc::new(Shared {
                holds: Mutex::default(),
                stale: AtomicBool::new(false),
                metrics,
            }),
            retiring: CancellationToken::new(),
        }
    }

    /// This node's id (random per process start).
    pub fn node(&self) -> &str {
        &self.node.id
    }

    /// The lease's time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a node shutting down keeps its lease for its clients to
    /// reconnect elsewhere (the presence grace).
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Cancelled when the node retires ([`lease::retire_node`]).
    pub fn retiring(&self) -> &CancellationToken {
        &self.retiring
    }

    /// How many times the node lost its Redis subscriber connection (a
    /// restarted Redis, a Sentinel failover to a replica that may miss the
    /// last writes): the lease task sends the holds again after each.
    pub fn connection_losses(&self) -> u64 {
        self.health.losses()
    }

    /// The metrics presence counts in.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The publisher's connection to Redis, if it has one now.
    pub fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection.get()
    }

    /// This node now holds `key`'s entry (`entry`) on `topic`: sends the
    /// join script (in order with this node's publishes, once Redis has
    /// confirmed the node's subscriptions as they are now).
    pub fn join(&self, topic: Topic<'_>, key: &PresenceKey, entry: &PresenceEntry) {
        let hold = hold_of(topic, key);
        let info = entry.info.clone().unwrap_or_default();
        let mut holds = self.shared.holds.lock();
        holds.unreleased.remove(&hold);
        holds.held.insert(hold.clone(), info.clone());
        self.publisher
            .submit_presence(self.job(hold, Some(info), None));
    }

    /// This node no longer holds `key`'s entry on `topic`: sends the leave
    /// script.
    pub fn leave(&self, topic: Topic<'_>, key: &PresenceKey) {
        let hold = hold_of(topic, key);
        let mut holds = self.shared.holds.lock();
        if holds.held.remove(&hold).is_none() {
            return;
        }
        holds.releases += 1;
        let number = holds.releases;
        holds.unreleased.insert(hold.clone(), number);
        self.publisher
            .submit_presence(self.job(hold, None, Some(number)));
    }

    /// The job running the join (`Some(info)`) or leave (release number
    /// `release`) script for `hold`.
    fn job(&self, hold: Hold, join: Option<Bytes>, release: Option<u64>) -> PresenceJob {
        let shared = Arc::clone(&self.shared);
        let done_hold = hold.clone();
        let after = if join.is_some() {
            self.interest.generation()
        } else {
            0
        };
        PresenceJob {
            after,
            call: PresenceCall {
                node: Arc::clone(&self.node),
                topic: hold.0,
                key: hold.1,
                join,
            },
            done: Box::new(move |result| shared.outcome(&done_hold, release, result)),
        }
    }

    /// Whether a join or leave failed since the last resync.
    pub fn is_stale(&self) -> bool {
        self.shared.stale.load(Ordering::Acquire)
    }

    /// Sends again the join of every entry this node holds and the leave
    /// of every release Redis has not confirmed, through the publisher's
    /// queue (waiting for room in it). Each is decided while the holds are
    /// locked, so it is queued in order with the joins and leaves of
    /// sessions running meanwhile.
    pub async fn resync(&self) {
        self.shared.stale.store(false, Ordering::Release);
        let all: Vec<Hold> = {
            let holds = self.shared.holds.lock();
            holds
                .held
                .keys()
                .chain(holds.unreleased.keys())
                .cloned()
                .collect()
        };
        for hold in all {
            let Some(permit) = self.publisher.reserve().await else {
                return;
            };
            let holds = self.shared.holds.lock();
            if let Some(info) = holds.held.get(&hold) {
                permit.send(self.job(hold, Some(info.clone()), None));
            } else if let Some(&number) = holds.unreleased.get(&hold) {
                permit.send(self.job(hold, None, Some(number)));
            }
        }
    }

    /// Entries this node holds now.
    pub fn held(&self) -> usize {
        self.shared.holds.lock().held.len()
    }

    /// Topic `topic`'s presence in Redis: its counts, and unless
    /// `counts_only` up to `max_presence_per_topic` entries.
    pub async fn snapshot(
        &self,
        topic: Topic<'_>,
        counts_only: bool,
    ) -> Result<PresenceSnapshot, PresenceError> {
        let unavailable = |why: String| {
            PresenceError::Unavailable(format!("the cluster backplane (Redis) {why}"))
        };
        let mut connection = self
            .connection()
            .ok_or_else(|| unavailable("is unreachable".to_owned()))?;
        let read = read_presence(
            &mut connection,
            topic.as_str(),
            counts_only,
            self.max_entries,
        );
        match tokio::time::timeout(REDIS_TIMEOUT, read).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(e)) => Err(unavailable(format!("refused the read: {e}"))),
            Err(_) => Err(unavailable("did not answer in time".to_owned())),
        }
    }
}

/// The hold of `key` on `topic`.
fn hold_of(topic: Topic<'_>, key: &PresenceKey) -> Hold {
    let key = entry_key(&key.client, key.user.as_deref());
    (Arc::from(topic.as_str()), Arc::from(key))
}

/// The presence event `event` read from a topic's channel, as the registry
/// delivers it.
pub fn to_event(event: &ChannelEvent<'_>) -> PresenceEvent {
    PresenceEvent {
        change: match event.kind {
            EventKind::Join => PresenceChange::Join,
            EventKind::Leave => PresenceChange::Leave,
        },
        entry: PresenceEntry {
            client: Arc::from(event.client),
            user: event.user.map(Arc::from),
            info: event.info.map(Bytes::copy_from_slice),
        },
        user_changed: event.user_level && event.user.is_some(),
    }
}

/// Reads topic `topic`'s presence on `connection` (see
/// [`ClusterPresence::snapshot`]).
pub async fn read_presence(
    connection: &mut MultiplexedConnection,
    topic: &str,
    counts_only: bool,
    max_entries: usize,
) -> redis::RedisResult<PresenceSnapshot> {
    let pres = entries_key(topic);
    let (clients, users): (u64, u64) = redis::pipe()
        .cmd("HLEN")
        .arg(&pres)
        .cmd("HLEN")
        .arg(users_key(topic))
        .query_async(connection)
        .await?;
    if counts_only {
        return Ok(PresenceSnapshot {
            clients,
            users,
            entries: None,
        });
    }
    let mut entries = Vec::new();
    // `HSCAN` may return a field twice (while Redis rehashes the hash).
    let mut keys = HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, pairs): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
            .arg(&pres)
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT.min(max_entries.max(1)))
            .query_async(connection)
            .await?;
        for (key, info) in pairs {
            if entries.len() >= max_entries {
                break;
            }
            if !keys.insert(key.clone()) {
                continue;
            }
            let (client, user) = split_entry_key(&key);
            entries.push(PresenceEntry {
                client: Arc::from(client),
                user: user.map(Arc::from),
                info: (!info.is_empty()).then(|| Bytes::from(info)),
            });
        }
        cursor = next;
        if cursor == 0 || entries.len() >= max_entries {
            break;
        }
    }
    if cursor == 0 && entries.len() < max_entries {
        // The whole hash was read: count what was read, so the counts
        // agree with the list even when an entry came or went between
        // the `HLEN`s and the scan.
        return Ok(counted(entries));
    }
    Ok(PresenceSnapshot {
        clients,
        users,
        entries: Some(entries),
    })
}

/// A snapshot of exactly `entries`: their number and their distinct users.
fn counted(entries: Vec<PresenceEntry>) -> PresenceSnapshot {
    let users: HashSet<&str> = entries.iter().filter_map(|e| e.user.as_deref()).collect();
    PresenceSnapshot {
        clients: entries.len() as u64,
        users: users.len() as u64,
        entries: Some(entries),
    }
}
