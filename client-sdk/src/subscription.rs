//! Subscriptions: streams of messages matching a pattern, and their
//! options.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use tickwire_protocol::message::{JoinLeave, Position};

use crate::command::ClientInner;
use crate::delivery::Delivery;
use crate::error::Error;
use crate::event::{EndReason, SubShared, SubscriptionEvent, SubscriptionEvents};
use crate::message::Message;

/// Options for [`Client::subscribe_with`](crate::Client::subscribe_with).
///
/// Marked `#[non_exhaustive]`: build it with [`SubscribeOptions::new`] and
/// the builder methods, so later options do not break your code.
///
/// * [`since`](SubscribeOptions::since): start by replaying what the broker
///   still keeps after these positions (topics with history), then live.
/// * [`last`](SubscribeOptions::last): start with the latest retained
///   message of each matching topic (snapshot), then live.
/// * [`max_rate`](SubscribeOptions::max_rate): at most this many messages
///   per second per topic, always the newest.
/// * [`resume`](SubscribeOptions::resume) (on by default): after a
///   reconnect, continue from the last delivered position of every topic.
/// * [`join_leave`](SubscribeOptions::join_leave): join/leave events of
///   the topics (with presence) it covers.
/// * [`capacity`](SubscribeOptions::capacity): local buffer size.
///
/// `since`, `last`, `max_rate`, `resume` and `join_leave` shape what the
/// broker sends, and the broker keeps one subscription per pattern and
/// connection: a second local subscription to a pattern this client already
/// subscribes to must use the same `max_rate`, `resume` and `join_leave`
/// and neither `since` nor `last`
/// (the broker cannot replay for it alone), or it fails with
/// [`Error::InvalidOptions`].
///
/// ```
/// use tickwire_client::{Position, SubscribeOptions};
///
/// let dashboard = SubscribeOptions::new().last(true).max_rate(4);
/// let backend = SubscribeOptions::new()
///     .since([("sensors.t1".to_owned(), Position { epoch: 9182, seq: 4711 })])
///     .capacity(10_000);
/// let live_only = SubscribeOptions::new().resume(false);
/// # let _ = (dashboard, backend, live_only);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    pub(crate) capacity: Option<usize>,
    pub(crate) since: Option<Vec<(String, Position)>>,
    pub(crate) last: bool,
    pub(crate) max_rate: Option<u32>,
    pub(crate) resume: bool,
    pub(crate) join_leave: Option<JoinLeave>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            capacity: None,
            since: None,
            last: false,
            max_rate: None,
            resume: true,
            join_leave: None,
        }
    }
}

impl SubscribeOptions {
    /// Default options: live messages only, resumed after reconnects.
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

    /// Resume after these positions (topic → [`Position`] of the last message
    /// the application processed): the broker replays every message it
    /// still keeps after each position, then live messages, with no gap and
    /// no duplicate; the outcome arrives as [`SubscriptionEvent::Resumed`] or
    /// [`SubscriptionEvent::RecoveryIncomplete`].
    ///
    /// Positions of topics the pattern does not match are ignored. A
    /// matching topic without a position is new to the application: the
    /// broker replays all it keeps of it, so an empty list asks for every
    /// retained message of the matching topics. At most 65,536 positions
    /// (protocol limit); topics must be valid topic names, or subscribing
    /// fails with [`Error::InvalidOptions`].
    pub fn since(mut self, positions: impl IntoIterator<Item = (String, Position)>) -> Self {
        self.since = Some(positions.into_iter().collect());
        self
    }

    /// Start with a snapshot: the latest retained message of every matching
    /// topic (see [`Client::publish_retained`](crate::Client::publish_retained)),
    /// then live messages without a gap. With [`since`](Self::since), the
    /// snapshot fills in for topics that could not be resumed; after a
    /// reconnect it does the same for topics that could not be recovered.
    pub fn last(mut self, last: bool) -> Self {
        self.last = last;
        self
    }

    /// At most `per_second` messages per second per topic, always the newest
    /// (the broker conflates the others). Sequence numbers then jump by
    /// design, so no [`SubscriptionEvent::Gap`] is reported for this
    /// subscription. Clamped to at least 1.
    pub fn max_rate(mut self, per_second: u32) -> Self {
        self.max_rate = Some(per_second.max(1));
        self
    }

    /// Whether to resume after a reconnect (default `true`): the client
    /// remembers the position of the last message delivered per topic and
    /// renews the broker subscription with `since`, so topics with history
    /// continue without a gap or a duplicate, and anything that cannot be
    /// recovered is reported as [`SubscriptionEvent::RecoveryIncomplete`].
    /// With `false` a renewed subscription starts with live messages only.
    /// docs/client.md, "Resuming after a reconnect", states the exact
    /// guarantees, in particular for wildcard patterns.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Receive join/leave events of the topics the subscription covers
    /// (topics with presence): [`JoinLeave::Clients`] one per client
    /// instance, [`JoinLeave::Users`] one per user (its first entry joins,
    /// its last leaves). They arrive as [`Delivery::Join`] and
    /// [`Delivery::Leave`] in order with the messages: read them with
    /// [`Subscription::recv_delivery`] ([`Subscription::recv`] skips them). An
    /// exact topic without presence is refused with
    /// [`ErrorCode::PresenceDisabled`](crate::ErrorCode::PresenceDisabled).
    pub fn join_leave(mut self, kind: JoinLeave) -> Self {
        self.join_leave = Some(kind);
        self
    }
}

/// A stream of the [`Message`]s whose topic matches a pattern.
///
/// Created by [`Client::subscribe`](crate::Client::subscribe). Read it with
/// [`Subscription::recv`] or as a [`futures_core::Stream`] (for example with
/// `futures::StreamExt::next`); with [`SubscribeOptions::join_leave`], read
/// it with [`Subscription::recv_delivery`] to get the joins and leaves in
/// order with the messages (a [`Delivery`] each). It survives reconnects: the client renews
/// the broker subscription on every new connection and, unless
/// [`SubscribeOptions::resume`] is off, resumes each topic where it left off
/// ([`SubscriptionEvent`] reports how that went).
///
/// **Dropping** the subscription unsubscribes: when the last local
/// subscription for a pattern is dropped the client sends `UNSUBSCRIBE`.
///
/// **Slow readers**: each subscription has a bounded buffer
/// ([`ClientBuilder::subscription_capacity`](crate::ClientBuilder::subscription_capacity)).
/// When it is full, new messages (and join/leave changes) for this
/// subscription are dropped (never blocking the connection or other
/// subscriptions); [`Subscription::dropped`] counts them and the next delivered message reports the gap in
/// [`Message::skipped`].
///
/// **End of stream**: the stream ends (`None`) when the client is closed, or
/// if the broker refuses to renew the subscription after a reconnect;
/// [`Subscription::error`] tells which.
///
/// ```no_run
/// # async fn demo() -> tickwire_client::Result<()> {
/// use tickwire_client::{Client, SubscriptionEvent};
///
/// let client = Client::connect("ws://127.0.0.1:8080").await?;
/// let mut quotes = client.subscribe("stocks.*").await?;
/// while let Some(msg) = quotes.recv().await {
///     while let Some(event) = quotes.next_event() {
///         if let SubscriptionEvent::RecoveryIncomplete { missed } = event {
///             eprintln!("reload state of {missed:?}");
///         }
///     }
///     println!("{} #{}: {} bytes", msg.topic(), msg.seq(), msg.payload().len());
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) pattern: Arc<str>,
    pub(crate) rx: mpsc::Receiver<Delivery>,
    pub(crate) shared: Arc<SubShared>,
    pub(crate) client: Arc<ClientInner>,
}

impl Subscription {
    /// The pattern this subscription was created with.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The next message, or `None` once the stream has ended. Join/leave
    /// changes waiting before it are skipped (read them with
    /// [`Subscription::recv_delivery`]).
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A message if one is buffered right now, without waiting (skipping
    /// join/leave changes, like [`Subscription::recv`]).
    pub fn try_recv(&mut self) -> Option<Message> {
        std::iter::from_fn(|| self.try_recv_delivery()).find_map(Delivery::into_message)
    }

    /// The next [`Delivery`]: a message, or a join/leave change (with
    /// [`SubscribeOptions::join_leave`]), in the order the broker sent
    /// them; `None` once the stream has ended.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn recv_delivery(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// A [`Delivery`] if one is buffered right now, without waiting.
    pub fn try_recv_delivery(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// Polls for the next [`Delivery`], as [`Subscription::recv_delivery`]
    /// does, for code that polls several subscriptions by hand.
    pub fn poll_recv_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.rx.poll_recv(cx)
    }

    /// Polls for the next message, skipping join/leave changes.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Delivery::Message(msg))) => return Poll::Ready(Some(msg)),
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The oldest queued [`SubscriptionEvent`], if any, without waiting.
    pub fn next_event(&self) -> Option<SubscriptionEvent> {
        self.shared.pop_event()
    }

    /// The next [`SubscriptionEvent`], waiting for one; `None` once the
    /// stream has ended and no event is left. Cancel-safe.
    ///
    /// To wait for messages and events at once (`tokio::select!`), take a
    /// [`Subscription::events`] handle: [`Subscription::recv`] borrows the
    /// subscription mutably.
    pub async fn event(&self) -> Option<SubscriptionEvent> {
        self.shared.next_event().await
    }

    /// A handle on this subscription's event queue, to wait for events
    /// while [`Subscription::recv`] waits for messages (see the example on
    /// [`SubscriptionEvents`]). Every handle reads the same queue.
    pub fn events(&self) -> SubscriptionEvents {
        SubscriptionEvents {
            shared: self.shared.clone(),
        }
    }

    /// Events discarded because more than [`EVENT_CAPACITY`](crate::EVENT_CAPACITY) were waiting to
    /// be read.
    pub fn events_dropped(&self) -> u64 {
        self.shared.events_dropped()
    }

    /// Total messages (and join/leave changes) dropped for this
    /// subscription because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Why the stream ended, if it has: [`Error::Closed`] when the client was
    /// closed, [`Error::Broker`] when the broker refused to renew the
    /// subscription after a reconnect. `None` while the subscription is live.
    pub fn error(&self) -> Option<Error> {
        self.shared.end_error()
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.finish(EndReason::Dropped);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_defaults_and_clamping() {
        let o = SubscribeOptions::new();
        assert!(o.resume && !o.last && o.since.is_none() && o.max_rate.is_none());
        let o = SubscribeOptions::new()
            .max_rate(0)
            .capacity(0)
            .resume(false);
        assert_eq!(
            (o.max_rate, o.capacity, o.resume),
            (Some(1), Some(1), false)
        );
    }
}
