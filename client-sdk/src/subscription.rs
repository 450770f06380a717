//! Subscriptions: streams of messages matching a pattern.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::client::ClientInner;
use crate::error::{Error, Refusal};
use crate::message::Message;

/// Options for [`Client::subscribe_with`](crate::Client::subscribe_with).
///
/// Marked `#[non_exhaustive]`: later versions add options (such as resuming
/// from a sequence number) without breaking code that uses the builder
/// methods.
///
/// ```
/// use tickwire_client::SubscribeOptions;
/// let options = SubscribeOptions::new().capacity(64);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    pub(crate) capacity: Option<usize>,
}

impl SubscribeOptions {
    /// Default options.
    pub fn new() -> Self {
        SubscribeOptions::default()
    }

    /// Messages buffered for this subscription before it drops new ones;
    /// overrides [`ClientBuilder::subscription_capacity`](crate::ClientBuilder::subscription_capacity).
    /// Values are clamped to at least 1.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }
}

/// Why a subscription's stream ended, recorded by the connection task.
#[derive(Debug, Clone)]
pub(crate) enum EndReason {
    /// The client closed.
    Closed,
    /// The broker refused the subscription when it was renewed after a
    /// reconnect.
    Refused(Refusal),
}

/// State shared between a [`Subscription`] and the connection task.
#[derive(Debug, Default)]
pub(crate) struct SubShared {
    pub dropped: AtomicU64,
    pub end: OnceLock<EndReason>,
}

/// A stream of the [`Message`]s whose topic matches a pattern.
///
/// Created by [`Client::subscribe`](crate::Client::subscribe). Read it with
/// [`Subscription::recv`] or as a [`futures_core::Stream`] (for example with
/// `futures::StreamExt::next`). It survives reconnects: the client renews
/// the broker subscription on every new connection.
///
/// **Dropping** the subscription unsubscribes: when the last local
/// subscription for a pattern is dropped the client sends `UNSUBSCRIBE`.
///
/// **Slow readers**: each subscription has a bounded buffer
/// ([`ClientBuilder::subscription_capacity`](crate::ClientBuilder::subscription_capacity)).
/// When it is full, new messages for this subscription are dropped (never
/// blocking the connection or other subscriptions); [`Subscription::dropped`]
/// counts them and the next delivered message reports the gap in
/// [`Message::skipped`].
///
/// **End of stream**: the stream ends (`None`) when the client is closed, or
/// if the broker refuses to renew the subscription after a reconnect;
/// [`Subscription::error`] tells which.
///
/// ```no_run
/// # async fn demo() -> tickwire_client::Result<()> {
/// use futures::StreamExt;
/// use tickwire_client::Client;
///
/// let client = Client::connect("ws://127.0.0.1:8080").await?;
/// let mut quotes = client.subscribe("stocks.*").await?;
/// while let Some(msg) = quotes.next().await {
///     println!("{} #{}: {} bytes", msg.topic(), msg.seq(), msg.payload().len());
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) pattern: Arc<str>,
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) shared: Arc<SubShared>,
    pub(crate) client: Arc<ClientInner>,
}

impl Subscription {
    /// The pattern this subscription was created with.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The next message, or `None` once the stream has ended.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A message if one is buffered right now, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Total messages dropped for this subscription because its buffer was
    /// full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Why the stream ended, if it has: [`Error::Closed`] when the client was
    /// closed, [`Error::Broker`] when the broker refused to renew the
    /// subscription after a reconnect. `None` while the subscription is live.
    pub fn error(&self) -> Option<Error> {
        self.shared.end.get().map(|end| match end {
            EndReason::Closed => Error::Closed,
            EndReason::Refused(refusal) => refusal.to_error(),
        })
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rx.len(), None)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Unbounded by type, bounded in practice: one notice per subscription.
        let _ = self.client.drop_tx.send(self.id);
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .field("buffered", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}
