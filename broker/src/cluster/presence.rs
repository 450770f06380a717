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
//! * [`scripts`]: the Lua scripts and key names; [`event`]: the event
//!   format on a topic's channel; [`control`]: the control channel
//!   (cluster-wide disconnects); [`lease`]: the lease and reaper task.

pub mod control;
pub mod event;
pub mod lease;
pub mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use thiserror::Error;

use crate::cluster::presence::scripts::{
    JOIN_BODY, LEAVE_BODY, entries_key, entry_key, holds_key, source, split_entry_key, users_key,
};
use crate::cluster::publisher::{
    PresenceJob, PublishError, Publisher, REDIS_TIMEOUT, SharedConnection,
};

/// One run of the join or leave script for this node.
#[derive(Debug, Clone)]
pub struct PresenceCall {
    /// The node's hold set.
    holds: String,
    /// The topic.
    topic: Arc<str>,
    /// The entry key.
    key: Arc<str>,
    /// `Some(info)`: a join with this client info (empty: none); `None`: a
    /// leave.
    join: Option<Bytes>,
}

impl PresenceCall {
    /// The join script's source.
    pub fn join_source() -> String {
        source(JOIN_BODY)
    }

    /// The leave script's source.
    pub fn leave_source() -> String {
        source(LEAVE_BODY)
    }

    /// Whether it is a join.
    pub fn is_join(&self) -> bool {
        self.join.is_some()
    }

    /// The bytes it counts in the publisher's queue.
    pub fn bytes(&self) -> usize {
        self.join.as_ref().map_or(0, Bytes::len) + self.key.len() + self.topic.len()
    }

    /// Adds it to `pipe`: `EVALSHA` of its script, whose hash is `sha`.
    pub fn add_to(&self, pipe: &mut redis::Pipeline, sha: &str) {
        pipe.cmd("EVALSHA")
            .arg(sha)
            .arg(1)
            .arg(&self.holds)
            .arg(self.topic.as_ref())
            .arg(self.key.as_ref());
        if let Some(info) = &self.join {
            pipe.arg(info.as_ref());
        }
    }
}

/// An entry as Redis keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The client id.
    pub client: Arc<str>,
    /// The user id, if any.
    pub user: Option<Arc<str>>,
    /// The client info (MessagePack), if any.
    pub info: Option<Bytes>,
}

/// A topic's presence as Redis keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPresence {
    /// Entries (clients).
    pub clients: u64,
    /// Distinct users.
    pub users: u64,
    /// Up to the asked number of entries, when asked.
    pub entries: Option<Vec<StoredEntry>>,
}

/// Why Redis could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PresenceReadError {
    /// No connection to Redis.
    #[error("the cluster backplane (Redis) is unavailable; presence cannot be read")]
    Unavailable,
    /// Redis did not answer in time, or refused.
    #[error("the cluster backplane (Redis) did not answer the presence read: {0}")]
    Failed(String),
}

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

/// Counts of what presence did on this node (the broker's metrics).
pub trait PresenceCounters: Send + Sync + std::fmt::Debug {
    /// This node's script published a JOIN.
    fn joined(&self);
    /// This node's scripts published `n` LEAVEs.
    fn left(&self, n: u64);
    /// A join or leave did not reach Redis (it will be sent again).
    fn failed(&self);
    /// This node reaped a dead node (`nodes`: 1) or its entries (`entries`).
    fn reaped(&self, nodes: u64, entries: u64);
}

/// What the scripts' callbacks update.
#[derive(Debug)]
struct Shared {
    holds: Mutex<Holds>,
    /// A join or leave failed since the last resync.
    stale: AtomicBool,
    counters: Arc<dyn PresenceCounters>,
}

impl Shared {
    /// Takes the outcome of the script run for `hold` (`release`: the
    /// number of the release a leave was sent for).
    fn outcome(&self, hold: &Hold, release: Option<u64>, result: Result<bool, PublishError>) {
        match result {
            Ok(published) => {
                if let Some(number) = release {
                    let mut holds = self.holds.lock();
                    if holds.unreleased.get(hold) == Some(&number) {
                        holds.unreleased.remove(hold);
                    }
                }
                match (published, release) {
                    (false, _) => {}
                    (true, None) => self.counters.joined(),
                    (true, Some(_)) => self.counters.left(1),
                }
            }
            Err(e) => {
                tracing::debug!(topic = %hold.0, error = %e, "cluster presence: a join or leave did not reach Redis; sent again later");
                self.stale.store(true, Ordering::Release);
                self.counters.failed();
            }
        }
    }
}

/// This node's presence in Redis.
#[derive(Debug)]
pub struct ClusterPresence {
    node: String,
    holds_key: String,
    ttl: Duration,
    grace: Duration,
    publisher: Publisher,
    connection: Arc<SharedConnection>,
    shared: Arc<Shared>,
}

/// The most entries a presence read asks for per `HSCAN` round trip.
const SCAN_COUNT: usize = 1000;

impl ClusterPresence {
    /// This node's presence with a new random node id: leases of `ttl`,
    /// a shutdown leaving `grace` for its clients to reconnect elsewhere,
    /// scripts sent through `publisher`, reads on `connection`.
    pub fn new(
        ttl: Duration,
        grace: Duration,
        publisher: Publisher,
        connection: Arc<SharedConnection>,
        counters: Arc<dyn PresenceCounters>,
    ) -> Self {
        let node = format!("{:032x}", rand::random::<u128>());
        ClusterPresence {
            holds_key: holds_key(&node),
            node,
            ttl,
            grace,
            publisher,
            connection,
            shared: Arc::new(Shared {
                holds: Mutex::default(),
                stale: AtomicBool::new(false),
                counters,
            }),
        }
    }

    /// This node's id (random per process start).
    pub fn node(&self) -> &str {
        &self.node
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

    /// The counters presence counts in.
    pub fn counters(&self) -> &Arc<dyn PresenceCounters> {
        &self.shared.counters
    }

    /// The publisher's connection to Redis, if it has one now.
    pub fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection.get()
    }

    /// This node now holds the entry of `client` (and `user`, with client
    /// info `info`) on `topic`: sends the join script (in order with this
    /// node's publishes).
    pub fn join(&self, topic: &str, client: &str, user: Option<&str>, info: Option<&Bytes>) {
        let hold: Hold = (Arc::from(topic), Arc::from(entry_key(client, user)));
        let info = info.cloned().unwrap_or_default();
        let mut holds = self.shared.holds.lock();
        holds.unreleased.remove(&hold);
        holds.held.insert(hold.clone(), info.clone());
        self.publisher
            .submit_presence(self.job(hold, Some(info), None));
    }

    /// This node no longer holds the entry of `client` (and `user`) on
    /// `topic`: sends the leave script.
    pub fn leave(&self, topic: &str, client: &str, user: Option<&str>) {
        let hold: Hold = (Arc::from(topic), Arc::from(entry_key(client, user)));
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
        PresenceJob {
            call: PresenceCall {
                holds: self.holds_key.clone(),
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

    /// Reads topic `topic`'s presence in Redis: its counts, and unless
    /// `counts_only` up to `max_entries` entries.
    pub async fn read(
        &self,
        topic: &str,
        counts_only: bool,
        max_entries: usize,
    ) -> Result<StoredPresence, PresenceReadError> {
        let mut connection = self.connection().ok_or(PresenceReadError::Unavailable)?;
        let read = read_presence(&mut connection, topic, counts_only, max_entries);
        match tokio::time::timeout(REDIS_TIMEOUT, read).await {
            Ok(Ok(presence)) => Ok(presence),
            Ok(Err(e)) => Err(PresenceReadError::Failed(e.to_string())),
            Err(_) => Err(PresenceReadError::Failed("timed out".to_owned())),
        }
    }
}

/// Reads topic `topic`'s presence on `connection` (see
/// [`ClusterPresence::read`]).
pub async fn read_presence(
    connection: &mut MultiplexedConnection,
    topic: &str,
    counts_only: bool,
    max_entries: usize,
) -> redis::RedisResult<StoredPresence> {
    let pres = entries_key(topic);
    let (clients, users): (u64, u64) = redis::pipe()
        .cmd("HLEN")
        .arg(&pres)
        .cmd("HLEN")
        .arg(users_key(topic))
        .query_async(connection)
        .await?;
    if counts_only {
        return Ok(StoredPresence {
            clients,
            users,
            entries: None,
        });
    }
    let mut entries = Vec::new();
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
            let (client, user) = split_entry_key(&key);
            entries.push(StoredEntry {
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
    Ok(StoredPresence {
        clients,
        users,
        entries: Some(entries),
    })
}
