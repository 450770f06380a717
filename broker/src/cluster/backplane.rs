//! The backplane handle the broker's state holds when `--cluster` is set:
//! where Redis is ([`Target`]), this node's [`Interest`], the connections'
//! [`Health`], the [`Publisher`] queue and the publisher's connection,
//! which reads share, and this node's [`ClusterPresence`].

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use thiserror::Error;
use tickwire_protocol::topic::Topic;
use tokio::sync::Semaphore;

use crate::cluster::health::Health;
use crate::cluster::interest::Interest;
use crate::cluster::presence::control::{
    CONTROL_CHANNEL, ControlDisconnect, ControlTarget, encode_disconnect,
};
use crate::cluster::presence::{ClusterPresence, PresenceSettings};
use crate::cluster::publisher::{
    Done, PublishJob, Publisher, PublisherTask, REDIS_TIMEOUT, SharedConnection, publisher,
};
use crate::cluster::target::{ClusterTlsFiles, Target, TargetError};
use crate::config::TopicPolicy;
use crate::directory::{DisconnectCode, DisconnectTarget};
use crate::history::StorageBudget;
use crate::metrics::Metrics;
use crate::registry::unix_micros;

/// This node's link to the other nodes through Redis.
#[derive(Debug)]
pub struct Backplane {
    target: Arc<Target>,
    /// The channels and patterns this node needs.
    pub interest: Arc<Interest>,
    /// Whether Redis is reachable.
    pub health: Arc<Health>,
    publisher: Publisher,
    publisher_task: Mutex<Option<PublisherTask>>,
    connection: Arc<SharedConnection>,
    /// What memory rebuilt from Redis for a replay counts against: not
    /// the broker's own `max_retained_bytes`.
    pub replay_budget: Arc<StorageBudget>,
    /// Wildcard replays (a `SCAN` of Redis' keys each) running at once on
    /// this node, at most [`WILDCARD_SCANS`].
    pub wildcard_scans: Semaphore,
    presence: Arc<ClusterPresence>,
}

/// Why a cluster-wide disconnect was not published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BroadcastError {
    /// No connection to Redis.
    #[error("the cluster backplane (Redis) is unavailable; other nodes were not told")]
    Unavailable,
    /// Redis refused the `PUBLISH` or did not answer in time.
    #[error(
        "the cluster backplane (Redis) did not take the disconnect ({0}); other nodes may not have been told"
    )]
    Failed(String),
}

/// Most wildcard replays (`since` or `last` on a wildcard) that read Redis
/// at once on one node; the next wait for one to finish.
pub const WILDCARD_SCANS: usize = 4;

impl Backplane {
    /// A backplane through Redis at the `--cluster` URL `url`, with the
    /// TLS files `tls` (see [`Target::new`]); nothing connects until the
    /// tasks run (see [`crate::cluster::subscriber`]).
    /// `presence` sets up this node's presence in Redis.
    pub fn new(
        url: &str,
        tls: &ClusterTlsFiles,
        presence: &PresenceSettings,
        metrics: &Metrics,
    ) -> Result<Self, TargetError> {
        let interest = Arc::new(Interest::default());
        let (publisher, task, connection) = publisher(metrics, Arc::clone(&interest));
        let health = Arc::new(Health::new(metrics.backplane_up.clone()));
        let presence = Arc::new(ClusterPresence::new(
            presence,
            publisher.clone(),
            Arc::clone(&connection),
            Arc::clone(&interest),
            Arc::clone(&health),
            metrics.clone(),
        ));
        Ok(Backplane {
            presence,
            target: Arc::new(Target::new(url, tls)?),
            interest,
            health,
            publisher,
            publisher_task: Mutex::new(Some(task)),
            connection,
            replay_budget: Arc::new(StorageBudget::detached()),
            wildcard_scans: Semaphore::new(WILDCARD_SCANS),
        })
    }

    /// This node's presence in Redis.
    pub fn presence(&self) -> &Arc<ClusterPresence> {
        &self.presence
    }

    /// Publishes a disconnect of `target` with `code` on the control
    /// channel: every node connected to Redis, this one included, closes
    /// its matching connections. Returns how many nodes received it.
    pub async fn broadcast_disconnect(
        &self,
        target: &DisconnectTarget,
        code: &DisconnectCode,
    ) -> Result<usize, BroadcastError> {
        let mut connection = self.connection().ok_or(BroadcastError::Unavailable)?;
        let target = match target {
            DisconnectTarget::Client(client) => ControlTarget::Client(client),
            DisconnectTarget::User(user) => ControlTarget::User(user),
        };
        let message = encode_disconnect(&ControlDisconnect {
            target,
            code: code.code,
            reason: &code.reason,
        });
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(CONTROL_CHANNEL).arg(message);
        let publish = publish.query_async::<usize>(&mut connection);
        match tokio::time::timeout(REDIS_TIMEOUT, publish).await {
            Ok(Ok(nodes)) => Ok(nodes),
            Ok(Err(e)) => Err(BroadcastError::Failed(e.to_string())),
            Err(_) => Err(BroadcastError::Failed("no answer in time".to_owned())),
        }
    }

    /// Where Redis is.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The publisher's connection to Redis, if it has one now.
    pub fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.connection.get()
    }

    /// The publisher task, the first time it is asked for.
    pub fn take_publisher_task(&self) -> Option<PublisherTask> {
        self.publisher_task.lock().take()
    }

    /// Publishes `payload` on `topic` (whose policy is `policy`) through
    /// Redis, which keeps it as the policy (or the publisher's `retain`)
    /// asks; `done` gets the sequence number Redis gave it, or why it was
    /// not published.
    pub fn publish(
        &self,
        topic: Topic<'_>,
        payload: Bytes,
        retain: bool,
        policy: &TopicPolicy,
        done: Done,
    ) {
        self.publisher.submit(PublishJob {
            topic: topic.as_str().to_owned(),
            payload,
            retain: retain || policy.retain,
            history: policy.history_messages,
            time_us: unix_micros(),
            done,
        });
    }
}
