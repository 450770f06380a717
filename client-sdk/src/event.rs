//! Subscription events and the state a [`Subscription`](crate::Subscription)
//! shares with the connection task: its event queue, drop counter and why
//! its stream ended.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

use tickwire_protocol::message::Position;

use crate::error::{Error, Refusal};

/// Events kept per subscription before the oldest is discarded; see
/// [`Subscription::events_dropped`](crate::Subscription::events_dropped).
pub const EVENT_CAPACITY: usize = 256;
/// Something that happened to a subscription, besides messages: its
/// confirmation and renewals, how resuming went, and gaps in a topic's
/// sequence.
///
/// Read them with [`Subscription::next_event`](crate::Subscription::next_event) or [`Subscription::event`](crate::Subscription::event).
/// An event is queued before any message that follows it is handed to the
/// subscription, so checking [`Subscription::next_event`](crate::Subscription::next_event) after each message
/// sees every event that precedes that message. At most
/// [`EVENT_CAPACITY`] events are kept; when the application does not read
/// them, the oldest are discarded ([`Subscription::events_dropped`](crate::Subscription::events_dropped)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// The broker confirmed the subscription, or renewed it on a new
    /// connection. For an exact topic (no wildcard) it carries the topic's
    /// epoch and latest sequence number at that moment.
    Subscribed {
        /// The topic's epoch (exact topics only).
        epoch: Option<u64>,
        /// The topic's latest sequence number, 0 if nothing was published in
        /// this epoch (exact topics only).
        seq: Option<u64>,
    },
    /// Every position the subscription asked to resume from (after a
    /// reconnect, or the [`SubscribeOptions::since`](crate::SubscribeOptions::since) positions) was
    /// recovered: the messages that follow continue each topic without a
    /// gap and without a duplicate.
    Resumed,
    /// Some topics could not be resumed (the broker restarted or forgot the
    /// topic, the topic keeps no history, or its history no longer reaches
    /// back; see docs/client.md). Each is listed with its *current* position; nothing
    /// before that position will be delivered, so reload those topics' state
    /// from your source of truth. Epoch 0 means the broker no longer tracks
    /// the topic. Topics not listed were resumed.
    RecoveryIncomplete {
        /// Each topic that was not resumed, with its current position.
        missed: Vec<(String, Position)>,
    },
    /// A delivered message's sequence number skipped ahead: messages
    /// `expected..got` of this topic were not delivered (for example, the
    /// topic's slow-consumer policy is `drop-oldest`, or the topic was reset
    /// and the message is in a new epoch, in which case `expected` is 1). The message with
    /// sequence number `got` is delivered right after this event.
    Gap {
        /// The topic.
        topic: String,
        /// The sequence number that should have come next.
        expected: u64,
        /// The sequence number that came.
        got: u64,
    },
}

/// Why a subscription's stream ended, recorded by the connection task.
#[derive(Debug, Clone)]
pub(crate) enum EndReason {
    /// The client closed.
    Closed,
    /// The broker refused the subscription when it was renewed after a
    /// reconnect.
    Refused(Refusal),
    /// The application dropped the subscription (ends its event handles).
    Dropped,
}

/// State shared between a [`Subscription`](crate::Subscription) and the connection task.
#[derive(Debug, Default)]
pub(crate) struct SubShared {
    pub dropped: AtomicU64,
    end: OnceLock<EndReason>,
    events: Mutex<VecDeque<SubscriptionEvent>>,
    events_dropped: AtomicU64,
    event_ready: Notify,
}

impl SubShared {
    fn events(&self) -> MutexGuard<'_, VecDeque<SubscriptionEvent>> {
        // The queue stays consistent whatever panicked while holding it.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event, discarding the oldest when the queue is full.
    pub fn push_event(&self, event: SubscriptionEvent) {
        {
            let mut events = self.events();
            if events.len() >= EVENT_CAPACITY {
                events.pop_front();
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
            events.push_back(event);
        }
        self.event_ready.notify_one();
    }

    /// The oldest queued event, if any.
    pub fn pop_event(&self) -> Option<SubscriptionEvent> {
        self.events().pop_front()
    }

    /// Waits for an event; `None` once the subscription ended and the
    /// queue is empty. Cancel-safe.
    pub async fn next_event(&self) -> Option<SubscriptionEvent> {
        loop {
            if let Some(event) = self.pop_event() {
                return Some(event);
            }
            if self.end.get().is_some() {
                return None;
            }
            // A notification sent since the check above is stored, so
            // nothing is missed between the check and the wait.
            self.event_ready.notified().await;
        }
    }

    /// Records why the stream ended (the first reason wins) and wakes an
    /// [`Subscription::event`](crate::Subscription::event) waiter.
    pub fn finish(&self, reason: EndReason) {
        let _ = self.end.set(reason);
        self.event_ready.notify_one();
    }

    /// Events discarded because the queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    /// The error that ended the stream, if it ended.
    pub fn end_error(&self) -> Option<Error> {
        self.end.get().map(|end| match end {
            EndReason::Closed | EndReason::Dropped => Error::Closed,
            EndReason::Refused(refusal) => refusal.to_error(),
        })
    }
}

/// A handle on a [`Subscription`](crate::Subscription)'s [`SubscriptionEvent`]s, from
/// [`Subscription::events`](crate::Subscription::events): it lets a task wait for events and messages at
/// once. Cheap to clone; all clones read the same queue (each event is
/// returned once).
///
/// ```no_run
/// # async fn demo() -> tickwire_client::Result<()> {
/// use tickwire_client::{Client, SubscriptionEvent};
///
/// let client = Client::connect("ws://127.0.0.1:8080").await?;
/// let mut readings = client.subscribe("sensors.>").await?;
/// let events = readings.events();
/// loop {
///     tokio::select! {
///         Some(msg) = readings.recv() => println!("{} #{}", msg.topic(), msg.seq()),
///         Some(event) = events.recv() => {
///             if let SubscriptionEvent::RecoveryIncomplete { missed } = event {
///                 eprintln!("reload the state of {missed:?}");
///             }
///         }
///         else => break,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SubscriptionEvents {
    pub(crate) shared: Arc<SubShared>,
}

impl SubscriptionEvents {
    /// The next event, waiting for one; `None` once the subscription has
    /// ended (client closed, renewal refused, or the [`Subscription`](crate::Subscription)
    /// dropped) and no event is left. Cancel-safe.
    pub async fn recv(&self) -> Option<SubscriptionEvent> {
        self.shared.next_event().await
    }

    /// The oldest queued event, if any, without waiting.
    pub fn try_recv(&self) -> Option<SubscriptionEvent> {
        self.shared.pop_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_queue_is_bounded_and_drops_the_oldest() {
        let shared = SubShared::default();
        for seq in 0..EVENT_CAPACITY as u64 + 3 {
            shared.push_event(SubscriptionEvent::Gap {
                topic: "t".into(),
                expected: seq,
                got: seq + 2,
            });
        }
        assert_eq!(shared.events_dropped.load(Ordering::Relaxed), 3);
        assert!(matches!(
            shared.pop_event(),
            Some(SubscriptionEvent::Gap { expected: 3, .. })
        ));
    }
}
