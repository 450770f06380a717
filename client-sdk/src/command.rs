//! What client handles and subscriptions share with the connection task:
//! the [`Command`]s they send it, the state they read without asking it, and
//! the encoding of outgoing frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use tickwire_protocol::ClientMessage;
use tickwire_protocol::message::{JoinLeave, Position};
use tickwire_protocol::ws::{self, OpCode};

use crate::config::Config;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::event::SubShared;
use crate::presence::Answer;
use crate::state::ConnectionState;

/// State shared by client handles, subscriptions and the connection task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub url: String,
    pub state_rx: watch::Receiver<ConnectionState>,
    /// Mirrors `ConnectionState::Connected`, readable without a lock.
    pub connected: AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    /// The shared state of a new client, whose state is watched by `state_rx`.
    pub fn new(config: Config, url: String, state_rx: watch::Receiver<ConnectionState>) -> Self {
        let connected = state_rx.borrow().is_connected();
        Shared {
            config,
            url,
            state_rx,
            connected: AtomicBool::new(connected),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh id, unique for the client's lifetime: request ids and local
    /// subscription ids.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// What every [`Client`](crate::Client) clone and every
/// [`Subscription`](crate::Subscription) holds; the
/// connection task runs while one exists.
#[derive(Debug)]
pub(crate) struct ClientInner {
    pub cmd_tx: mpsc::Sender<Command>,
    pub drop_tx: mpsc::UnboundedSender<u64>,
    pub shared: Arc<Shared>,
}

/// Encodes a client message as one masked binary WebSocket frame.
pub(crate) fn encode_frame(msg: &ClientMessage<'_>) -> Bytes {
    let mut body = Vec::with_capacity(64);
    msg.encode(&mut body);
    masked_frame(&body)
}

/// Encodes a client message (a `PUBLISH`) as one masked binary WebSocket
/// frame, refusing a message larger than `limit` bytes: the broker would
/// close the connection for it.
pub(crate) fn encode_bounded_frame(msg: &ClientMessage<'_>, limit: usize) -> Result<Bytes> {
    let mut body = Vec::with_capacity(64);
    msg.encode(&mut body);
    if body.len() > limit {
        return Err(Error::MessageTooLarge {
            size: body.len(),
            limit,
        });
    }
    Ok(masked_frame(&body))
}

fn masked_frame(body: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(body.len() + 14);
    ws::write_client_frame(&mut frame, OpCode::Binary, body, rand::random());
    Bytes::from(frame)
}

/// A request from a client handle to the connection task.
pub(crate) enum Command {
    /// Add a local subscription; reply once the broker has it.
    Subscribe {
        id: u64,
        pattern: Arc<str>,
        /// The application's `since` positions, if any.
        since: Option<Vec<(String, Position)>>,
        options: BrokerOptions,
        tx: mpsc::Sender<Delivery>,
        shared: Arc<SubShared>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Send an encoded `PUBLISH` frame.
    Publish {
        frame: Bytes,
        /// The request id inside the frame, for acknowledged publishes.
        id: Option<u64>,
        reply: PublishReply,
    },
    /// Send a `PRESENCE` request and reply with the answer.
    Presence {
        topic: String,
        counts_only: bool,
        reply: oneshot::Sender<Result<Answer>>,
    },
    /// Send a `PING` message and reply with the round-trip time.
    Ping {
        reply: oneshot::Sender<Result<Duration>>,
    },
    /// Close the connection and stop.
    Close { reply: oneshot::Sender<()> },
}

/// Subscription options that shape what the broker sends; the same for
/// every local subscription sharing a broker subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BrokerOptions {
    /// Ask for the latest retained message of each topic first.
    pub last: bool,
    /// The broker's per-topic rate limit.
    pub max_rate: Option<u32>,
    /// Renew with `since` after a reconnect.
    pub resume: bool,
    /// The join/leave events asked for.
    pub join_leave: Option<JoinLeave>,
}

impl BrokerOptions {
    /// Why a new local subscription with these options and `since` cannot
    /// share the broker subscription of an entry with `self`, if it cannot.
    pub(crate) fn conflict(&self, new: &BrokerOptions, since: bool) -> Option<&'static str> {
        if since || new.last {
            Some(
                "the client already subscribes to this pattern and the broker cannot replay \
                 (`since`) or snapshot (`last`) for a second subscription alone; read both from \
                 one Subscription, or subscribe after dropping the first",
            )
        } else if new.max_rate != self.max_rate {
            Some(
                "the client already subscribes to this pattern with another `max_rate`; \
                 subscriptions of one pattern share one broker subscription",
            )
        } else if new.resume != self.resume {
            Some(
                "the client already subscribes to this pattern with another `resume` setting; \
                 subscriptions of one pattern share one broker subscription",
            )
        } else if new.join_leave != self.join_leave {
            Some(
                "the client already subscribes to this pattern with another `join_leave` \
                 setting; subscriptions of one pattern share one broker subscription",
            )
        } else {
            None
        }
    }
}

/// Who waits for what after a publish.
pub(crate) enum PublishReply {
    /// Nobody: fire-and-forget while connected.
    None,
    /// The caller waits to learn whether the publish was queued or buffered
    /// (sent when the client believed it was offline).
    Accepted(oneshot::Sender<Result<()>>),
    /// The caller waits for the broker's `PUBLISHED` sequence number.
    Acked(oneshot::Sender<Result<u64>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_cannot_share_a_broker_subscription_conflict() {
        let plain = BrokerOptions {
            last: false,
            max_rate: None,
            resume: true,
            join_leave: None,
        };
        assert_eq!(plain.conflict(&plain, false), None);
        let snapshot = BrokerOptions {
            last: true,
            ..plain
        };
        // A snapshot or replay cannot be given to a second subscription...
        assert!(snapshot.conflict(&snapshot, false).is_some());
        assert!(plain.conflict(&plain, true).is_some());
        // ...but a plain one may join a subscription that had one.
        assert_eq!(snapshot.conflict(&plain, false), None);
        let limited = BrokerOptions {
            max_rate: Some(4),
            ..plain
        };
        assert!(plain.conflict(&limited, false).is_some());
        let live_only = BrokerOptions {
            resume: false,
            ..plain
        };
        assert!(plain.conflict(&live_only, false).is_some());
        let joins = BrokerOptions {
            join_leave: Some(JoinLeave::Users),
            ..plain
        };
        assert!(plain.conflict(&joins, false).is_some());
        assert_eq!(joins.conflict(&joins, false), None);
    }

    #[test]
    fn publishes_over_the_limit_are_refused_before_sending() {
        let publish = |payload: &'static [u8]| ClientMessage::Publish {
            id: None,
            topic: "t",
            payload: Bytes::from_static(payload),
            retain: false,
        };
        let mut body = Vec::new();
        publish(&[0; 100]).encode(&mut body);
        assert!(encode_bounded_frame(&publish(&[0; 100]), body.len()).is_ok());
        let err = encode_bounded_frame(&publish(&[0; 100]), body.len() - 1).unwrap_err();
        assert!(matches!(
            err,
            Error::MessageTooLarge { size, limit } if size == body.len() && limit == size - 1
        ));
    }
}
