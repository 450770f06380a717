//! The subscription registry: one entry per distinct pattern (one broker
//! subscription) with the local subscriptions sharing it, their resume
//! [`Tracker`], and the routing of deliveries to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use tickwire_protocol::SubscribeOptions;
use tickwire_protocol::message::{Delivery, JoinLeave, Position, PresenceEntry};
use tickwire_protocol::topic::pattern_matches;

use crate::command::BrokerOptions;
use crate::error::{Error, Result};
use crate::event::{SubShared, SubscriptionEvent};
use crate::message::Message;
use crate::presence::PresenceChange;
use crate::resume::{Admit, Tracker};

/// One local subscription.
pub(crate) struct LocalSub {
    pub id: u64,
    pub tx: mpsc::Sender<Message>,
    pub shared: Arc<SubShared>,
    /// Messages dropped since the last one delivered.
    pub skipped: u64,
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
    pub fn deliver(&mut self, delivery: Delivery<'_>) {
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

    /// Queues a `JOIN` (`join`) or `LEAVE` of `topic` as an event of every
    /// local subscription whose pattern matches and that asked for its
    /// kind: an entry with a client id is connection-level
    /// ([`JoinLeave::Clients`]), one without user-level ([`JoinLeave::Users`]).
    pub fn deliver_presence(&mut self, join: bool, topic: &str, entry: &PresenceEntry<'_>) {
        let kind = if entry.client.is_some() {
            JoinLeave::Clients
        } else {
            JoinLeave::Users
        };
        let change = PresenceChange::new(topic, entry);
        let event = if join {
            SubscriptionEvent::Join(change)
        } else {
            SubscriptionEvent::Leave(change)
        };
        let wanted = |entry: &&Entry| entry.options.join_leave == Some(kind);
        let exact = self.entries.get(topic).filter(|e| !e.wildcard);
        let wild = self
            .wildcards
            .iter()
            .filter(|p| pattern_matches(p, topic))
            .filter_map(|p| self.entries.get(p));
        for entry in exact.into_iter().chain(wild).filter(wanted) {
            entry.emit(&event);
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
        let mut copy = msg.clone();
        copy.skipped = sub.skipped;
        match sub.tx.try_send(copy) {
            Ok(()) => sub.skipped = 0,
            Err(TrySendError::Full(_)) => {
                if sub.skipped == 0 {
                    tracing::warn!(
                        pattern,
                        "subscription buffer is full: dropping messages until the application catches up"
                    );
                }
                sub.skipped += 1;
                sub.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Dropped by the application; its notice is on the way.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A registry with one confirmed local subscription to `pattern`.
    fn subscribed(pattern: &str) -> (Registry, mpsc::Receiver<Message>) {
        let mut registry = Registry::default();
        let (tx, rx) = mpsc::channel(16);
        let (reply, _) = oneshot::channel();
        let sub = LocalSub {
            id: 1,
            tx,
            shared: Arc::new(SubShared::default()),
            skipped: 0,
        };
        let options = BrokerOptions {
            last: false,
            max_rate: None,
            resume: true,
            join_leave: None,
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

    fn delivery(topic: &str, epoch: u64, seq: u64, time_us: u64) -> Delivery<'_> {
        Delivery {
            topic,
            epoch,
            seq,
            time_us,
            payload: Bytes::new(),
        }
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
        let seqs: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_reset_topic_is_delivered_even_with_an_older_time() {
        let (mut registry, mut rx) = subscribed("s.a");
        registry.deliver(delivery("s.a", 1, 7, 5_000));
        registry.deliver(delivery("s.a", 2, 1, 4_000));
        let got: Vec<(u64, u64)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| (m.epoch, m.seq))
            .collect();
        assert_eq!(got, [(1, 7), (2, 1)]);
    }
}
