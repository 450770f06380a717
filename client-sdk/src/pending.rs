//! Requests sent on the current connection and awaiting the broker's reply.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::presence::Answer;

/// What a request awaiting a reply was, and who waits for it.
pub(crate) enum PendingKind {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
    Publish(oneshot::Sender<Result<u64>>),
    Ping(oneshot::Sender<Result<Duration>>, Instant),
    /// A presence request.
    Presence(oneshot::Sender<Result<Answer>>),
    /// A token refresh, with the new token's expiry.
    Refresh(Option<std::time::SystemTime>),
}

impl PendingKind {
    /// The request's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            PendingKind::Subscribe(_) => "subscribe",
            PendingKind::Unsubscribe(_) => "unsubscribe",
            PendingKind::Publish(_) => "publish",
            PendingKind::Ping(..) => "ping",
            PendingKind::Presence(_) => "presence",
            PendingKind::Refresh(_) => "refresh",
        }
    }

    /// Fails the waiting caller, if any.
    pub fn fail(self, err: impl FnOnce() -> Error) {
        match self {
            PendingKind::Publish(tx) => {
                let _ = tx.send(Err(err()));
            }
            PendingKind::Ping(tx, _) => {
                let _ = tx.send(Err(err()));
            }
            PendingKind::Presence(tx) => {
                let _ = tx.send(Err(err()));
            }
            PendingKind::Subscribe(_) | PendingKind::Unsubscribe(_) | PendingKind::Refresh(_) => {}
        }
    }
}

/// Requests sent on the current connection, by request id. Subscribes are
/// not timed here (their callers time out on their own and the registry
/// keeps the pattern); everything else expires after the request timeout so
/// the table stays bounded even if the broker never answers.
#[derive(Default)]
pub(crate) struct Pending {
    map: HashMap<u64, PendingKind>,
    /// (deadline, id) in insertion order, which is deadline order.
    timed: VecDeque<(Instant, u64)>,
}

impl Pending {
    /// Records request `id`, expiring at `deadline` if it has one.
    pub fn insert(&mut self, id: u64, kind: PendingKind, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            self.timed.push_back((deadline, id));
        }
        self.map.insert(id, kind);
    }

    /// Removes and returns request `id`, answered.
    pub fn take(&mut self, id: u64) -> Option<PendingKind> {
        let kind = self.map.remove(&id);
        self.trim();
        kind
    }

    /// Drops finished requests from the front of the deadline queue.
    fn trim(&mut self) {
        while let Some(&(_, id)) = self.timed.front() {
            if self.map.contains_key(&id) {
                break;
            }
            self.timed.pop_front();
        }
    }

    /// The earliest deadline of a request still waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timed.front().map(|(deadline, _)| *deadline)
    }

    /// Fails every request whose deadline has passed.
    pub fn expire(&mut self, now: Instant, after: Duration) {
        while let Some(&(deadline, id)) = self.timed.front() {
            if deadline > now {
                break;
            }
            self.timed.pop_front();
            if let Some(kind) = self.map.remove(&id) {
                let operation = kind.name();
                tracing::debug!("{operation} request {id} got no reply within {after:?}");
                kind.fail(|| Error::Timeout { operation, after });
            }
        }
        self.trim();
    }

    /// Removes every request (the connection is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = PendingKind> + '_ {
        self.timed.clear();
        self.map.drain().map(|(_, kind)| kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_expiry_is_ordered_and_bounded() {
        let mut pending = Pending::default();
        let now = Instant::now();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        pending.insert(1, PendingKind::Publish(tx1), Some(now));
        pending.insert(
            2,
            PendingKind::Publish(tx2),
            Some(now + Duration::from_secs(5)),
        );
        pending.insert(3, PendingKind::Subscribe(Arc::from("a")), None);
        assert_eq!(pending.next_deadline(), Some(now));
        pending.expire(now, Duration::from_secs(1));
        assert!(matches!(rx1.try_recv(), Ok(Err(Error::Timeout { .. }))));
        assert!(rx2.try_recv().is_err());
        assert!(pending.take(2).is_some());
        assert_eq!(pending.next_deadline(), None);
        assert!(pending.take(3).is_some());
        assert!(pending.map.is_empty() && pending.timed.is_empty());
    }
}
