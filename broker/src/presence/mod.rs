//! Presence: who is subscribed to a topic with presence, and the
//! `JOIN`/`LEAVE` events when that changes.
//!
//! A *presence entry* is one client instance subscribed (exact topic) to a
//! topic whose policy has `presence = true`. Its key is `(user, client)`
//! ([`PresenceKey`]): several connections with the same key (a reconnect
//! overlapping the old connection, two tabs with the same client id) are one
//! entry, counted by *holds*.
//!
//! * [`event`]: entries and their transitions, as the registry fans them
//!   out;
//! * [`identity`]: the connection's [`Identity`] (client id, user, info),
//!   built at connect;
//! * [`info`]: the token's client info converted to MessagePack;
//! * [`holds`]: this node's holds per (topic, key), with grace periods;
//! * [`store`]: where entries live and who emits their events
//!   ([`PresenceStore`]: `Local` on one node, Redis in a cluster).
//!
//! [`PresenceHub`] ties them together: a session calls
//! [`PresenceHub::hold`] before it subscribes (the bounds are checked
//! there, so a refused subscribe subscribes nothing), then
//! [`PresenceHub::announce`] once its `SUBSCRIBED` reply is queued (the
//! store's join: `JOIN` to every subscriber asking for events, the new one
//! included, after its reply). When a hold ends, [`PresenceHub::release`]
//! (UNSUBSCRIBE, a client close 1000, a server disconnect) or
//! `crate::presence_session` (any other end, after `presence_grace`) gives it back; the last hold of a
//! key calls the store's leave.

pub mod event;
pub mod holds;
pub mod identity;
pub mod info;
pub mod store;

use std::time::Duration;

use thiserror::Error;
use tickwire_protocol::ErrorCode;
use tickwire_protocol::topic::Topic;

use crate::metrics::Metrics;
use crate::registry::TopicRegistry;

pub use event::{PresenceChange, PresenceEntry, PresenceEvent};
pub use holds::{GraceTicket, HoldLimits};
pub use identity::{ClientIdError, Identity, PresenceKey, parse_client_id, random_client_id};
pub use store::{LocalPresence, PresenceSnapshot, PresenceStore};

use holds::Holds;

/// Why a presence operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PresenceError {
    /// The topic already has `max_presence_per_topic` entries.
    #[error(
        "topic {topic} has the maximum of {limit} presence entries (max_presence_per_topic); nothing was subscribed"
    )]
    TopicFull {
        /// The topic.
        topic: String,
        /// `max_presence_per_topic`.
        limit: usize,
    },
    /// The node already holds `max_presence_entries` entries.
    #[error(
        "the broker holds the maximum of {0} presence entries (max_presence_entries); nothing was subscribed"
    )]
    NodeFull(usize),
    /// The topic has no presence (its policy does not set `presence`).
    #[error("topic {0} has no presence (presence = true in its [[topic]] table)")]
    Disabled(String),
    /// The store could not answer (cluster mode: Redis).
    #[error("presence is unavailable: {0}")]
    Unavailable(String),
}

impl PresenceError {
    /// The wire error code for this refusal.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            PresenceError::TopicFull { .. } | PresenceError::NodeFull(_) => ErrorCode::PresenceFull,
            PresenceError::Disabled(_) => ErrorCode::PresenceDisabled,
            PresenceError::Unavailable(_) => ErrorCode::Internal,
        }
    }
}

/// This node's presence: its holds and the store behind them.
#[derive(Debug)]
pub struct PresenceHub {
    holds: parking_lot::Mutex<Holds>,
    store: PresenceStore,
    grace: Duration,
    metrics: Metrics,
}

impl PresenceHub {
    /// A hub with no holds, bounded by `limits`, keeping entries in
    /// `store`; connections that end without a clean close stay present
    /// for `grace`.
    pub fn new(
        limits: HoldLimits,
        grace: Duration,
        store: PresenceStore,
        metrics: Metrics,
    ) -> Self {
        PresenceHub {
            holds: parking_lot::Mutex::new(Holds::new(limits)),
            store,
            grace,
            metrics,
        }
    }

    /// The single-node hub of `metrics`' broker.
    pub fn local(limits: HoldLimits, grace: Duration, metrics: Metrics) -> Self {
        let store = PresenceStore::Local(Box::new(LocalPresence::new(metrics.clone())));
        PresenceHub::new(limits, grace, store, metrics)
    }

    /// The store (the cluster arm needs it for its own tasks).
    pub fn store(&self) -> &PresenceStore {
        &self.store
    }

    /// `presence_grace`.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Adds a hold of `identity` on `topic`, within the bounds. A hold of a
    /// key that is in its grace period takes the grace holds over (the
    /// entry never went away). Returns whether this created the entry on
    /// this node; its store join comes with [`PresenceHub::announce`].
    pub fn hold(&self, topic: Topic<'_>, identity: &Identity) -> Result<bool, PresenceError> {
        let mut holds = self.holds.lock();
        let created = holds.hold(topic.as_str(), identity)?;
        self.metrics.presence_entries.set(holds.entries() as i64);
        Ok(created)
    }

    /// Calls the store's join for `identity`'s entry on `topic` if that
    /// has not happened yet (it sends `JOIN`). The session calls it right
    /// after its `SUBSCRIBED` reply is queued.
    pub fn announce(&self, registry: &TopicRegistry, topic: Topic<'_>, identity: &Identity) {
        let mut holds = self.holds.lock();
        if holds.announce(topic.as_str(), &identity.key()) {
            self.store
                .join(registry, topic, &identity.key(), &identity.entry());
        }
    }

    /// Ends a hold at once; the last one removes the entry (`LEAVE`).
    pub fn release(&self, registry: &TopicRegistry, topic: Topic<'_>, identity: &Identity) {
        let key = identity.key();
        let mut holds = self.holds.lock();
        let outcome = holds.release(topic.as_str(), &key);
        self.apply(registry, topic, &key, outcome);
        self.metrics.presence_entries.set(holds.entries() as i64);
    }

    /// Turns a hold into a grace hold; the returned ticket ends it with
    /// [`PresenceHub::expire`] once the grace period is over, unless the
    /// key is held again before.
    pub fn defer(&self, topic: Topic<'_>, identity: &Identity) -> Option<GraceTicket> {
        self.holds.lock().defer(topic.as_str(), &identity.key())
    }

    /// Ends a grace hold whose period is over.
    pub fn expire(&self, registry: &TopicRegistry, ticket: &GraceTicket) {
        let mut holds = self.holds.lock();
        let outcome = holds.expire(ticket);
        if let Ok(topic) = Topic::new(&ticket.topic) {
            self.apply(registry, topic, &ticket.key, outcome);
        }
        self.metrics.presence_entries.set(holds.entries() as i64);
    }

    /// Calls the store for a release's outcome (under the holds lock).
    fn apply(
        &self,
        registry: &TopicRegistry,
        topic: Topic<'_>,
        key: &PresenceKey,
        outcome: holds::Released,
    ) {
        match outcome {
            holds::Released::Left => self.store.leave(registry, topic, key),
            holds::Released::Announce(entry) => self.store.join(registry, topic, key, &entry),
            holds::Released::Nothing => {}
        }
    }

    /// The presence of `topic` (entries unless `counts_only`), from the
    /// store: this node's memory, or Redis in a cluster. The session
    /// answers `PRESENCE` with it from a spawned task; the HTTP API calls
    /// it too.
    pub async fn snapshot(
        &self,
        topic: Topic<'_>,
        counts_only: bool,
    ) -> Result<PresenceSnapshot, PresenceError> {
        self.store.snapshot(topic, counts_only).await
    }
}

#[cfg(test)]
mod tests;
