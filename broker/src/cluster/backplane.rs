//! The backplane handle the broker's state holds when `--cluster` is set:
//! where Redis is ([`Target`]), this node's [`Interest`], the connections'
//! [`Health`] and the [`Publisher`] queue.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tickwire_protocol::topic::Topic;

use crate::cluster::health::Health;
use crate::cluster::interest::Interest;
use crate::cluster::publisher::{Done, PublishJob, Publisher, PublisherTask, publisher};
use crate::cluster::target::{ClusterTlsFiles, Target, TargetError};
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
}

impl Backplane {
    /// A backplane through Redis at the `--cluster` URL `url`, with the
    /// TLS files `tls` (see [`Target::new`]); nothing connects until the
    /// tasks run (see [`crate::cluster::subscriber`]).
    pub fn new(url: &str, tls: &ClusterTlsFiles, metrics: &Metrics) -> Result<Self, TargetError> {
        let (publisher, task) = publisher(metrics);
        Ok(Backplane {
            target: Arc::new(Target::new(url, tls)?),
            interest: Arc::new(Interest::default()),
            health: Arc::new(Health::new(metrics.backplane_up.clone())),
            publisher,
            publisher_task: Mutex::new(Some(task)),
        })
    }

    /// Where Redis is.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The publisher task, the first time it is asked for.
    pub fn take_publisher_task(&self) -> Option<PublisherTask> {
        self.publisher_task.lock().take()
    }

    /// Publishes `payload` on `topic` through Redis; `done` gets the
    /// sequence number Redis gave it, or why it was not published.
    pub fn publish(&self, topic: Topic<'_>, payload: Bytes, retain: bool, done: Done) {
        self.publisher.submit(PublishJob {
            topic: topic.as_str().to_owned(),
            payload,
            retain,
            time_us: unix_micros(),
            done,
        });
    }
}
