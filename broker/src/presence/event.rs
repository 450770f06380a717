//! The presence types the registry fans out: an entry ([`PresenceEntry`])
//! and a transition of one ([`PresenceEvent`]). Kept apart from the store
//! so that the registry can deliver events without depending on it.

use std::sync::Arc;

use bytes::Bytes;
use tickwire_protocol::message;

/// One presence entry: a client instance present on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The client id.
    pub client: Arc<str>,
    /// The user (token `sub`); `None` when anonymous.
    pub user: Option<Arc<str>>,
    /// The client info (MessagePack); `None` when the token gave none.
    pub info: Option<Bytes>,
}

impl PresenceEntry {
    /// The entry as the wire shows it in `PRESENCE_INFO` and
    /// connection-level events.
    pub fn to_wire(&self) -> message::PresenceEntry<'_> {
        message::PresenceEntry {
            client: Some(&self.client),
            user: self.user.as_deref(),
            info: self.info.clone(),
        }
    }

    /// At most how many bytes the entry takes in a `PRESENCE_INFO` list:
    /// its map with `client`, `user` and `info` (headers counted at their
    /// largest).
    pub fn wire_bytes(&self) -> usize {
        let text = |key: &str, len: usize| 1 + key.len() + 5 + len;
        text("client", self.client.len())
            + self.user.as_ref().map_or(0, |u| text("user", u.len()))
            + self.info.as_ref().map_or(0, |i| text("info", i.len()))
            + 5
    }

    /// The entry's user as a user-level event shows it (`{user, info?}`);
    /// `None` for an anonymous entry, which makes no user events.
    pub fn to_user_wire(&self) -> Option<message::PresenceEntry<'_>> {
        Some(message::PresenceEntry {
            client: None,
            user: Some(self.user.as_deref()?),
            info: self.info.clone(),
        })
    }
}

/// Whether an event is a join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The entry was created (`JOIN`).
    Join,
    /// The entry was removed (`LEAVE`).
    Leave,
}

/// One presence transition of a topic, as
/// [`crate::registry::TopicRegistry::deliver_presence`] fans it out: a connection-level event
/// for subscriptions with `join_leave: clients`, and, when `user_changed`,
/// a user-level event for those with `join_leave: users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Join or leave.
    pub change: PresenceChange,
    /// The entry that joined or left.
    pub entry: PresenceEntry,
    /// Whether this was the user's first entry on the topic (join) or its
    /// last (leave): a user-level event too. Always false when anonymous.
    pub user_changed: bool,
}
