//! The backplane handle the broker's state holds when `--cluster` is set:
//! the Redis client, this node's [`Interest`], the connections'
//! [`Health`] and the [`Publisher`] queue.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::Client;
use tickwire_protocol::topic::Topic;

use crate::cluster::health::Health;
use crate::cluster::interest::Interest;
use crate::cluster::publisher::{Done, PublishJob, Publisher, PublisherTask, publisher};
use crate::cluster::url::{ClusterUrlError, client};
use crate::metrics::Metrics;
use crate::registry::unix_micros;

/// This node's link to the other nodes through Redis.
#[derive(Debug)]
pub struct Backplane {
    client: Client,
    /// The channels and patterns this node needs.
    pub interest: Arc<Interest>,
    /// Whether Redis is reachable.
    pub health: Arc<Health>,
    publisher: Publisher,
    publisher_task: Mutex<Option<PublisherTask>>,
}

impl Backplane {
    /// A backplane through Redis at `url` (checked by [`client`]); nothing
    /// connects until the tasks run (see [`crate::cluster::subscriber`]).
    pub fn new(url: &str, metrics: &Metrics) -> Result<Self, ClusterUrlError> {
        let (publisher, task) = publisher();
        Ok(Backplane {
            client: client(url)?,
            interest: Arc::new(Interest::default()),
            health: Arc::new(Health::new(metrics.backplane_up.clone())),
            publisher,
            publisher_task: Mutex::new(Some(task)),
        })
    }

    /// The Redis client.
    pub fn client(&self) -> &Client {
        &self.client
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
