//! Every live connection of this node by client id and by user, so that
//! the operator can close them (`POST /v1/disconnect`).
//!
//! A [`crate::session::Session`] (WebSocket, SSE or long-poll) registers
//! itself when it is created ([`Directory::register`]) and is removed when
//! its [`Registration`] is dropped. It is filed only under the keys it has:
//! its user (a token's `sub`) and its client id once that is known outside
//! the broker, i.e. asked for with `client=` or drawn at random and shown in
//! a presence entry ([`Registration::set_client`]). An anonymous connection
//! that never used presence has no key an operator could name, so it costs
//! the directory nothing: no entry, no lock at connect. [`Directory::close_client`] and
//! [`Directory::close_user`] close the matching connections with a
//! [`DisconnectCode`]: a WebSocket gets a close frame with that code and
//! reason, an SSE stream a `close` event, a long poll a `close` answer (as
//! for 4003), and their presence entries leave at once (no grace).
//!
//! In a cluster the HTTP API also broadcasts a [`DisconnectTarget`] to the
//! other nodes, each of which applies it to its own directory.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use thiserror::Error;
use tickwire_protocol::CloseCode;
use tickwire_protocol::codes::APPLICATION_CLOSE_CODES;

use crate::outbound::OutboundQueue;

/// Longest reason of a server disconnect, in bytes: what a close frame can
/// carry besides its code.
pub const MAX_REASON_BYTES: usize = 123;

/// Whose connections a disconnect closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectTarget {
    /// Every connection with this client id.
    Client(String),
    /// Every connection of this user (token `sub`).
    User(String),
}

/// The close code and reason of a server disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectCode {
    /// 4007 or 4100-4999.
    pub code: u16,
    /// At most [`MAX_REASON_BYTES`] bytes.
    pub reason: Arc<str>,
}

/// Why a disconnect code or reason was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DisconnectCodeError {
    /// Not 4007 nor in 4100-4999.
    #[error("close code {0} is not 4007 or in 4100-4999")]
    Code(u16),
    /// A reason over [`MAX_REASON_BYTES`].
    #[error("reason is {0} bytes, more than {MAX_REASON_BYTES}")]
    Reason(usize),
}

impl DisconnectCode {
    /// 4007 with its standard reason, `disconnected by the server`.
    pub fn standard() -> Self {
        let code = CloseCode::DisconnectedByServer;
        DisconnectCode {
            code: code.as_u16(),
            reason: Arc::from(code.reason()),
        }
    }

    /// A checked code (default 4007) and reason (default the code's
    /// standard reason for 4007, empty for application codes).
    pub fn new(code: Option<u16>, reason: Option<&str>) -> Result<Self, DisconnectCodeError> {
        let standard = CloseCode::DisconnectedByServer;
        let code = code.unwrap_or(standard.as_u16());
        if code != standard.as_u16() && !APPLICATION_CLOSE_CODES.contains(&code) {
            return Err(DisconnectCodeError::Code(code));
        }
        let reason = match reason {
            Some(r) if r.len() > MAX_REASON_BYTES => {
                return Err(DisconnectCodeError::Reason(r.len()));
            }
            Some(r) => r,
            None if code == standard.as_u16() => standard.reason(),
            None => "",
        };
        Ok(DisconnectCode {
            code,
            reason: Arc::from(reason),
        })
    }
}

#[derive(Debug, Default)]
struct Index {
    by_client: HashMap<Arc<str>, Vec<Arc<OutboundQueue>>>,
    by_user: HashMap<Arc<str>, Vec<Arc<OutboundQueue>>>,
}

fn remove_queue(map: &mut HashMap<Arc<str>, Vec<Arc<OutboundQueue>>>, key: &str, id: u64) {
    if let Some(queues) = map.get_mut(key) {
        queues.retain(|q| q.id() != id);
        if queues.is_empty() {
            map.remove(key);
        }
    }
}

/// This node's live connections by client id and user.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    index: Arc<Mutex<Index>>,
}

/// A connection's place in the [`Directory`]; dropping it removes the
/// connection.
#[derive(Debug)]
pub struct Registration {
    index: Arc<Mutex<Index>>,
    queue: Arc<OutboundQueue>,
    client: Option<Arc<str>>,
    user: Option<Arc<str>>,
}

impl Registration {
    /// Files the connection under `client`, its client id, once it has one
    /// that can be named (see the module documentation). A connection has
    /// one client id for its lifetime: a second call is ignored.
    pub fn set_client(&mut self, client: Arc<str>) {
        if self.client.is_some() {
            return;
        }
        self.index
            .lock()
            .by_client
            .entry(Arc::clone(&client))
            .or_default()
            .push(Arc::clone(&self.queue));
        self.client = Some(client);
    }

    /// Files the connection under `user` too (a connection that
    /// authenticated with `AUTH` after it opened).
    pub fn set_user(&mut self, user: Option<Arc<str>>) {
        if self.user.is_none() && user.is_none() {
            return;
        }
        let mut index = self.index.lock();
        if let Some(old) = self.user.take() {
            remove_queue(&mut index.by_user, &old, self.queue.id());
        }
        if let Some(user) = &user {
            index
                .by_user
                .entry(Arc::clone(user))
                .or_default()
                .push(Arc::clone(&self.queue));
        }
        self.user = user;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.client.is_none() && self.user.is_none() {
            return;
        }
        let mut index = self.index.lock();
        let id = self.queue.id();
        if let Some(client) = &self.client {
            remove_queue(&mut index.by_client, client, id);
        }
        if let Some(user) = &self.user {
            remove_queue(&mut index.by_user, user, id);
        }
    }
}

impl Directory {
    /// Files the connection of `queue` under `client` and `user`, those of
    /// them it has (none: nothing is filed until
    /// [`Registration::set_client`] or [`Registration::set_user`]).
    pub fn register(
        &self,
        queue: &Arc<OutboundQueue>,
        client: Option<&Arc<str>>,
        user: Option<&Arc<str>>,
    ) -> Registration {
        let mut registration = Registration {
            index: Arc::clone(&self.index),
            queue: Arc::clone(queue),
            client: None,
            user: None,
        };
        if let Some(client) = client {
            registration.set_client(Arc::clone(client));
        }
        registration.set_user(user.cloned());
        registration
    }

    /// Closes every connection of this node with client id `client`;
    /// returns how many it started closing.
    pub fn close_client(&self, client: &str, code: DisconnectCode) -> usize {
        let queues = self.index.lock().by_client.get(client).cloned();
        close_all(queues, &code)
    }

    /// Closes every connection of this node authenticated as `user`;
    /// returns how many it started closing.
    pub fn close_user(&self, user: &str, code: DisconnectCode) -> usize {
        let queues = self.index.lock().by_user.get(user).cloned();
        close_all(queues, &code)
    }

    /// Applies a disconnect to this node: [`Directory::close_client`] or
    /// [`Directory::close_user`].
    pub fn close(&self, target: &DisconnectTarget, code: DisconnectCode) -> usize {
        match target {
            DisconnectTarget::Client(client) => self.close_client(client, code),
            DisconnectTarget::User(user) => self.close_user(user, code),
        }
    }

    /// Live connections filed under a client id (for tests and stats).
    pub fn len(&self) -> usize {
        self.index.lock().by_client.values().map(Vec::len).sum()
    }

    /// Whether no connection is filed, under a client id or a user.
    pub fn is_empty(&self) -> bool {
        let index = self.index.lock();
        index.by_client.is_empty() && index.by_user.is_empty()
    }
}

fn close_all(queues: Option<Vec<Arc<OutboundQueue>>>, code: &DisconnectCode) -> usize {
    queues
        .unwrap_or_default()
        .iter()
        .filter(|queue| queue.disconnect(code.code, &code.reason))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::outbound::Outbound;

    #[test]
    fn codes_and_reasons_are_checked() {
        assert_eq!(
            DisconnectCode::new(None, None),
            Ok(DisconnectCode::standard())
        );
        assert_eq!(DisconnectCode::standard().code, 4007);
        assert_eq!(&*DisconnectCode::new(Some(4100), None).unwrap().reason, "");
        assert!(DisconnectCode::new(Some(4999), Some(&"r".repeat(123))).is_ok());
        for bad in [4000, 4001, 4099, 5000, 1000] {
            assert_eq!(
                DisconnectCode::new(Some(bad), None),
                Err(DisconnectCodeError::Code(bad))
            );
        }
        assert_eq!(
            DisconnectCode::new(None, Some(&"r".repeat(124))),
            Err(DisconnectCodeError::Reason(124))
        );
    }

    #[tokio::test]
    async fn connections_close_by_client_and_by_user_and_leave_when_dropped() {
        let directory = Directory::default();
        let metrics = Metrics::new();
        let (q1, mut rx1) = OutboundQueue::new(1, 1000, metrics.clone());
        let (q2, _rx2) = OutboundQueue::new(2, 1000, metrics.clone());
        let (q3, _rx3) = OutboundQueue::new(3, 1000, metrics.clone());
        let alice: Arc<str> = Arc::from("alice");
        let r1 = directory.register(&q1, Some(&Arc::from("c1")), Some(&alice));
        let r2 = directory.register(&q2, Some(&Arc::from("c2")), Some(&alice));
        let r3 = directory.register(&q3, Some(&Arc::from("c1")), None);
        assert_eq!(directory.len(), 3);
        let code = DisconnectCode::new(Some(4100), Some("moved")).unwrap();
        assert_eq!(directory.close_user("bob", code.clone()), 0);
        assert_eq!(directory.close_client("c1", code.clone()), 2);
        assert!(q1.ended_cleanly() && q3.ended_cleanly() && !q2.ended_cleanly());
        match rx1.recv().await {
            Some(Outbound::Close { code, reason }) => assert_eq!((code, &*reason), (4100, "moved")),
            other => panic!("unexpected {other:?}"),
        }
        // Already closing: not counted again.
        assert_eq!(directory.close_user("alice", code), 1);
        drop((r1, r2, r3));
        assert!(directory.is_empty());
        assert_eq!(directory.close_user("alice", DisconnectCode::standard()), 0);
    }

    #[tokio::test]
    async fn a_connection_is_filed_only_under_the_keys_it_has() {
        let directory = Directory::default();
        let metrics = Metrics::new();
        let (q1, _rx1) = OutboundQueue::new(1, 1000, metrics.clone());
        let (q2, _rx2) = OutboundQueue::new(2, 1000, metrics);
        let mut anonymous = directory.register(&q1, None, None);
        assert!(directory.is_empty(), "no key: nothing filed");
        let code = DisconnectCode::standard();
        assert_eq!(directory.close_client("c1", code.clone()), 0);

        // Its client id became known (shown in a presence entry).
        anonymous.set_client(Arc::from("c1"));
        anonymous.set_client(Arc::from("ignored"));
        assert_eq!(directory.len(), 1);
        assert_eq!(directory.close_client("ignored", code.clone()), 0);

        // A user only: closable by user, not counted under a client id.
        let mut user_only = directory.register(&q2, None, None);
        user_only.set_user(Some(Arc::from("bob")));
        assert_eq!(directory.len(), 1);
        drop(anonymous);
        assert!(!directory.is_empty(), "still filed under its user");
        assert_eq!(directory.close_user("bob", code.clone()), 1);
        assert!(q2.ended_cleanly() && !q1.ended_cleanly());
        drop(user_only);
        assert!(directory.is_empty());
    }
}
