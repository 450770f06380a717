//! The subscription registry: one entry per distinct pattern (one broker
//! subscription) with the local subscriptions sharing it, their resume
//! [`Tracker`], and the routing of deliveries to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use tickwire_protocol::SubscribeOptions;
use tickwire_protocol::message::{Delivery as WireDelivery, JoinLeave, Position, PresenceEntry};
use tickwire_protocol::topic::pattern_matches;

use crate::command::BrokerOptions;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::event::{SubShared, SubscriptionEvent};
use crate::message::Message;
use crate::presence::PresenceChange;
use crate::resume::{Admit, Tracker};

/// One local subscription.
pub(crate) struct LocalSub {
    pub id: u64,
    pub tx: mpsc::Sender<Delivery>,
    pub shared: Arc<SubShared>,
    /// Messages dropped since the last one delivered.
    pub skipped: u64,
    /// The last item offered was dropped (the buffer is full): warn once
    /// per run of drops.
    pub full: bool,
}

impl LocalSub {
    /// Hands `item` to the subscription's buffer without waiting; when it
    /// is full, drops `item` and counts it in
    /// [`Subscription::dropped`](crate::Subscription::dropped). Returns
    /// whether `item` was queued.
    fn offer(&mut self, pattern: &str, item: Delivery) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => {
                self.full = false;
                true
            }
            Err(TrySendError::Full(_)) => {
                if !self.full {
                    tracing::warn!(
                        pattern,
                        "subscription buffer is full: dropping deliveries until the application catches up"
                    );
                }
                self.full = true;
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            // Dropped by the application; its notice is on the way.
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Offers a copy of `msg`, reporting the messages dropped before it.
    fn offer_message(&mut self, pattern: &str, msg: &Message) {
        let mut copy = msg.clone();
        copy.skipped = self.skipped;
        if self.offer(pattern, Delivery::Message(copy)) {
            self.skipped = 0;
        } else if !self.tx.is_closed() {
            self.skipped += 1;
        }
    }
}

/// A local subscription waiting for the broker's confirmation.
pub(crate) struct Waiter {
    pub sub: LocalSub,
    pub reply: oneshot::Sender<Result<()>>,
}

/// Where a pattern's broker subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerState {
    /// Not sent on the current connection (or there is none).
    Unsent,
    /// `SUBSCRIBE` sent, reply awaited.
    Pending,
    /// The broker confirmed it.
    Active,
}

/// Everything about one distinct pattern: one broker subscription shared by
/// any number of local ones.
pub(crate) struct Entry {
    pub wildcard: bool,
    pub state: BrokerState,
    pub subs: Vec<LocalSub>,
    pub waiters: Vec<Waiter>,
    pub options: BrokerOptions,
    /// The application gave `since` positions (used until confirmed).
    pub initial_since: bool,
    /// The broker confirmed the subscription at least once.
    pub confirmed: bool,
    /// The request in flight carries `since`.
    pub sent_since: bool,
    /// `epoch` and `seq` of the latest `SUBSCRIBED` reply.
    pub info: (Option<u64>, Option<u64>),
    pub tracker: Tracker,
}

impl Entry {
    /// No local subscription uses or waits for it.
    pub fn is_unused(&self) -> bool {
        self.subs.is_empty() && self.waiters.is_empty()
    }

    /// Queues `event` for every local subscription.
    pub fn emit(&self, event: &SubscriptionEvent) {
        for sub in &self.subs {
            sub.shared.push_event(event.clone());
        }
    }

    /// The options of the next `SUBSCRIBE` for this entry.
    pub fn request_options(&self) -> SubscribeOptions {
        let since = if self.confirmed {
            self.options.resume.then(|| self.tracker.positions())
        } else {
            self.initial_since.then(|| self.tracker.positions())
        };
        let mut options = SubscribeOptions::default().last(self.options.last);
        options.since = since;
        options.max_rate = self.options.max_rate;
        options.join_leave = self.options.join_leave;
        options
    }
}

/// A local subscription request, as the registry takes it.
pub(crate) struct NewSub {
    pub waiter: Waiter,
    pub since: Option<Vec<(String, Position)>>,
    pub options: BrokerOptions,
}

/// Every pattern the client subscribes to, with its local subscriptions.
#[derive(Default)]
pub(crate) struct Registry {
    pub entries: HashMap<Arc<str>, Entry>,
    /// Keys of `entries` with wildcards, scanned for every delivery; literal
    /// patterns are found by a lookup of the topic.
    wildcards: Vec<Arc<str>>,
    /// Local subscription id → its pattern.
    pub owners: HashMap<u64, Arc<str>>,
}

impl Registry {
    /// Adds a waiter. Returns whether a `SUBSCRIBE` must be sent (new
    /// pattern). Refuses (answering the waiter) options that conflict with
    /// the pattern's existing broker subscription.
    pub fn add(&mut self, pattern: Arc<str>, new: NewSub) -> bool {
        let NewSub {
            waiter,
            since,
            options,
        } = new;
        if let Some(entry) = self.entries.get(&pattern)
            && let Some(reason) = entry.options.conflict(&options, since.is_some())
        {
            let _ = waiter.reply.send(Err(Error::InvalidOptions {
                pattern: pattern.to_string(),
                reason: reason.to_owned(),
            }));
            return false;
        }
        match self.entries.get_mut(&pattern) {
            Some(entry) if entry.state == BrokerState::Active => {
                let Waiter { sub, reply } = waiter;
                if reply.send(Ok(())).is_ok() {
                    let (epoch, seq) = entry.info;
                    sub.shared
                        .push_event(SubscriptionEvent::Subscribed { epoch, seq });
                    self.owners.insert(sub.id, pattern);
                    entry.subs.push(sub);
                }
                false
            }
            Some(entry) => {
                self.owners.insert(waiter.sub.id, pattern);
                entry.waiters.push(waiter);
                false
            }
            None => {
                let wildcard = tickwire_protocol::topic::is_wildcard(&pattern);
                if wildcard {
                    self.wildcards.push(pattern.clone());
                }
                self.owners.insert(waiter.sub.id, pattern.clone());
                let tracker = Tracker::new(&pattern, options.max_rate.is_none(), since.as_deref());
                self.entries.insert(
                    pattern,
                    Entry {
                        wildcard,
                        state: BrokerState::Unsent,
                        subs: Vec::new(),
                        waiters: vec![waiter],
                        options,
                        initial_since: since.is_some(),
                        confirmed: false,
                        sent_since: false,
                        info: (None, None),
                        tracker,
                    },
                );
                true
            }
        }
    }

    /// Forgets `pattern` and its local subscriptions.
    pub fn remove(&mut self, pattern: &str) -> Option<Entry> {
        let entry = self.entries.remove(pattern)?;
        if entry.wildcard {
            self.wildcards.retain(|p| &**p != pattern);
        }
        for sub in &entry.subs {
            self.owners.remove(&sub.id);
        }
        for waiter in &entry.waiters {
            self.owners.remove(&waiter.sub.id);
        }
        Some(entry)
    }

    /// Removes entries nobody uses any more (outside of a connection, where
    /// no `UNSUBSCRIBE` is needed).
    pub fn prune(&mut self) {
        let unused: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.is_unused())
            .map(|(p, _)| p.clone())
            .collect();
        for pattern in unused {
            self.remove(&pattern);
        }
    }

    /// Hands a delivery to every local subscription whose pattern matches.
    pub fn deliver(&mut self, delivery: WireDelivery<'_>) {
        let at = delivery.position();
        let msg = Message {
            topic: Arc::from(delivery.topic),
            epoch: delivery.epoch,
            seq: delivery.seq,
            time_us: delivery.time_us,
            payload: delivery.payload,
            skipped: 0,
        };
        let Registry {
            entries, wildcards, ..
        } = self;
        if let Some(entry) = entries.get_mut(delivery.topic)
            && !entry.wildcard
        {
            deliver_to(delivery.topic, entry, &msg, at);
        }
        for pattern in wildcards.iter() {
            if pattern_matches(pattern, delivery.topic)
                && let Some(entry) = entries.get_mut(pattern)
            {
                deliver_to(pattern, entry, &msg, at);
            }
        }
    }

    /// Hands a `JOIN` (`join`) or `LEAVE` of `topic` to every local
    /// subscription whose pattern matches and that asked for its kind, in
    /// the same buffer as the messages (so in order with them): an entry
    /// with a client id is connection-level ([`JoinLeave::Clients`]), one
    /// without user-level ([`JoinLeave::Users`]).
    pub fn deliver_presence(&mut self, join: bool, topic: &str, entry: &PresenceEntry<'_>) {
        let kind = if entry.client.is_some() {
            JoinLeave::Clients
        } else {
            JoinLeave::Users
        };
        let change = PresenceChange::new(topic, entry);
        let item = || {
            if join {
                Delivery::Join(change.clone())
            } else {
                Delivery::Leave(change.clone())
            }
        };
        let Registry {
            entries, wildcards, ..
        } = self;
        let offer = |pattern: &str, entry: &mut Entry| {
            if entry.options.join_leave == Some(kind) {
                for sub in &mut entry.subs {
                    sub.offer(pattern, item());
                }
            }
        };
        if let Some(entry) = entries.get_mut(topic)
            && !entry.wildcard
        {
            offer(topic, entry);
        }
        for pattern in wildcards.iter() {
            if pattern_matches(pattern, topic)
                && let Some(entry) = entries.get_mut(pattern)
            {
                offer(pattern, entry);
            }
        }
    }

    /// The connection was lost: every broker subscription must be renewed.
    pub fn disconnected(&mut self) {
        for entry in self.entries.values_mut() {
            entry.state = BrokerState::Unsent;
        }
        self.prune();
    }
}

fn deliver_to(pattern: &str, entry: &mut Entry, msg: &Message, at: Position) {
    if entry.subs.is_empty() {
        return;
    }
    match entry.tracker.admit(&msg.topic, at) {
        Admit::Duplicate => {
            tracing::trace!(
                pattern,
                topic = &*msg.topic,
                seq = msg.seq,
                "dropping a message this subscription already delivered"
            );
            return;
        }
        Admit::Deliver(Some(gap)) => entry.emit(&gap),
        Admit::Deliver(None) => {}
    }
    for sub in &mut entry.subs {
        sub.offer_message(pattern, msg);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A registry with one confirmed local subscription to `pattern`.
    fn subscribed(pattern: &str) -> (Registry, mpsc::Receiver<Delivery>) {
        subscribed_with(pattern, None, 16)
    }

    /// A registry with one confirmed local subscription to `pattern` with
    /// these join/leave events and buffer capacity.
    fn subscribed_with(
        pattern: &str,
        join_leave: Option<JoinLeave>,
        capacity: usize,
    ) -> (Registry, mpsc::Receiver<Delivery>) {
        let mut registry = Registry::default();
        let (tx, rx) = mpsc::channel(capacity);
        let (reply, _) = oneshot::channel();
        let sub = LocalSub {
            id: 1,
            tx,
            shared: Arc::new(SubShared::default()),
            skipped: 0,
            full: false,
        };
        let options = BrokerOptions {
            last: false,
            max_rate: None,
            resume: true,
            join_leave,
        };
        let new = NewSub {
            waiter: Waiter { sub, reply },
            since: None,
            options,
        };
        assert!(registry.add(Arc::from(pattern), new));
        let entry = registry.entries.get_mut(pattern).unwrap();
        let Waiter { sub, .. } = entry.waiters.pop().unwrap();
        entry.subs.push(sub);
        entry.state = BrokerState::Active;
        (registry, rx)
    }

    fn delivery(topic: &str, epoch: u64, seq: u64, time_us: u64) -> WireDelivery<'_> {
        WireDelivery {
            topic,
            epoch,
            seq,
            time_us,
            payload: Bytes::new(),
        }
    }

    /// The messages buffered in `rx` (there must be nothing else).
    fn messages(rx: &mut mpsc::Receiver<Delivery>) -> Vec<Message> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|d| d.into_message().expect("only messages"))
            .collect()
    }

    fn guest() -> PresenceEntry<'static> {
        PresenceEntry {
            client: Some("guest"),
            ..PresenceEntry::default()
        }
    }

    #[test]
    fn joins_and_leaves_share_the_message_buffer_in_order() {
        for pattern in ["room.1", "room.*"] {
            let (mut registry, mut rx) = subscribed_with(pattern, Some(JoinLeave::Clients), 16);
            registry.deliver_presence(true, "room.1", &guest());
            registry.deliver(delivery("room.1", 1, 1, 0));
            registry.deliver_presence(false, "room.1", &guest());
            // Another kind (user-level) and another topic are not wanted.
            registry.deliver_presence(true, "room.1", &PresenceEntry::default());
            registry.deliver_presence(true, "lobby", &guest());
            let got: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|d| match d {
                    Delivery::Join(c) if c.client.as_deref() == Some("guest") => "join",
                    Delivery::Message(m) if m.seq == 1 => "message",
                    Delivery::Leave(c) if c.client.as_deref() == Some("guest") => "leave",
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(got, ["join", "message", "leave"], "{pattern}");
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_joins_and_leaves_like_messages() {
        let (mut registry, mut rx) = subscribed_with("room.1", Some(JoinLeave::Clients), 1);
        registry.deliver(delivery("room.1", 1, 1, 0));
        registry.deliver_presence(true, "room.1", &guest());
        registry.deliver(delivery("room.1", 1, 2, 0));
        let shared = registry.entries["room.1"].subs[0].shared.clone();
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 2);
        assert!(matches!(rx.try_recv(), Ok(Delivery::Message(m)) if m.seq == 1));
        registry.deliver_presence(false, "room.1", &guest());
        registry.deliver(delivery("room.1", 1, 3, 0));
        assert!(matches!(rx.try_recv(), Ok(Delivery::Leave(_))));
        registry.deliver(delivery("room.1", 1, 4, 0));
        // `skipped` counts the messages dropped before this one (#2 and
        // #3), not the join.
        let msg = rx.try_recv().ok().and_then(Delivery::into_message);
        assert_eq!(msg.map(|m| (m.seq, m.skipped)), Some((4, 2)));
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_clock_going_backwards_never_drops_a_message() {
        let (mut registry, mut rx) = subscribed("s.>");
        registry.deliver(delivery("s.a", 1, 1, 5_000));
        // The broker's clock stepped back (or another node with a slower
        // clock answers after a reconnect): later messages, earlier times.
        registry.deliver(delivery("s.a", 1, 2, 1_000));
        registry.deliver(delivery("s.a", 1, 3, 10));
        // A replay of what was delivered is still dropped, whatever its time.
        registry.deliver(delivery("s.a", 1, 3, 99_999));
        let seqs: Vec<u64> = messages(&mut rx).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_reset_topic_is_delivered_even_with_an_older_time() {
        let (mut registry, mut rx) = subscribed("s.a");
        registry.deliver(delivery("s.a", 1, 7, 5_000));
        registry.deliver(delivery("s.a", 2, 1, 4_000));
        let got: Vec<(u64, u64)> = messages(&mut rx).iter().map(|m| (m.epoch, m.seq)).collect();
        assert_eq!(got, [(1, 7), (2, 1)]);
    }
}
