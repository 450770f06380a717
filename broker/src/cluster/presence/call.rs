//! One run of the join or leave script for a node, as the publisher task
//! sends it ([`crate::cluster::publisher::PresenceJob`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::presence::scripts::{
    JOIN_BODY, LEAVE_BODY, NODES_KEY, holds_key, lease_key, source,
};

/// One run of the join or leave script for this node.
#[derive(Debug, Clone)]
pub struct PresenceCall {
    /// The node.
    pub node: Arc<NodeKeys>,
    /// The topic.
    pub topic: Arc<str>,
    /// The entry key.
    pub key: Arc<str>,
    /// `Some(info)`: a join with this client info (empty: none); `None`: a
    /// leave.
    pub join: Option<Bytes>,
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
        let node = &self.node;
        pipe.cmd("EVALSHA").arg(sha);
        match &self.join {
            Some(info) => pipe
                .arg(3)
                .arg(&node.holds)
                .arg(&node.lease)
                .arg(NODES_KEY)
                .arg(self.topic.as_ref())
                .arg(self.key.as_ref())
                .arg(info.as_ref())
                .arg(&node.id)
                .arg(node.ttl_ms),
            None => pipe
                .arg(1)
                .arg(&node.holds)
                .arg(self.topic.as_ref())
                .arg(self.key.as_ref()),
        };
    }
}

/// A node's id and the names and lease its scripts need.
#[derive(Debug)]
pub struct NodeKeys {
    /// The node id.
    pub id: String,
    /// Its hold set.
    pub holds: String,
    /// Its lease key.
    pub lease: String,
    /// Its lease's time to live, in ms.
    pub ttl_ms: u64,
}

impl NodeKeys {
    /// The names of node `id`, whose lease lives `ttl_ms`.
    pub fn new(id: String, ttl_ms: u64) -> Self {
        NodeKeys {
            holds: holds_key(&id),
            lease: lease_key(&id),
            ttl_ms,
            id,
        }
    }
}
