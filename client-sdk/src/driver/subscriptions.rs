//! The connection task's side of subscriptions: sending `SUBSCRIBE` and
//! `UNSUBSCRIBE`, and taking in the broker's confirmations and refusals.

use std::sync::Arc;

use tickwire_protocol::message::SubscribedInfo;
use tickwire_protocol::{ClientMessage, ErrorCode};

use super::Driver;
use crate::command::encode_frame;
use crate::error::Refusal;
use crate::event::{EndReason, SubscriptionEvent};
use crate::pending::PendingKind;
use crate::registry::{BrokerState, Waiter};
use crate::session::Session;

impl Driver {
    pub(super) fn send_subscribe(&mut self, s: &mut Session, pattern: &Arc<str>) {
        if s.closing_deadline.is_some() {
            // Nothing follows our close frame.
            return;
        }
        let Some(entry) = self.registry.entries.get_mut(pattern) else {
            return;
        };
        let options = entry.request_options();
        entry.sent_since = options.since.is_some();
        entry.state = BrokerState::Pending;
        let id = self.shared.next_id();
        s.queue(&encode_frame(&ClientMessage::Subscribe {
            id,
            pattern,
            options,
        }));
        self.pending
            .insert(id, PendingKind::Subscribe(pattern.clone()), None);
    }

    pub(super) fn send_unsubscribe(&mut self, s: &mut Session, pattern: Arc<str>) {
        if s.closing_deadline.is_some() {
            return;
        }
        let id = self.shared.next_id();
        s.queue(&encode_frame(&ClientMessage::Unsubscribe {
            id,
            pattern: &pattern,
        }));
        let deadline = self.request_deadline();
        self.pending
            .insert(id, PendingKind::Unsubscribe(pattern), Some(deadline));
    }

    pub(super) fn on_subscribed(
        &mut self,
        s: &mut Session,
        pattern: &Arc<str>,
        info: &SubscribedInfo,
    ) {
        let Some(entry) = self.registry.entries.get_mut(pattern) else {
            // Every local subscription went away meanwhile.
            self.send_unsubscribe(s, pattern.clone());
            return;
        };
        entry.state = BrokerState::Active;
        entry.confirmed = true;
        entry.info = (info.epoch, info.seq);
        for Waiter { sub, reply } in std::mem::take(&mut entry.waiters) {
            if !sub.tx.is_closed() && reply.send(Ok(())).is_ok() {
                entry.subs.push(sub);
            } else {
                self.registry.owners.remove(&sub.id);
            }
        }
        // Events go out before the replay that follows this reply.
        let events =
            entry
                .tracker
                .on_subscribed(pattern, info, entry.sent_since, entry.options.last);
        for event in &events {
            if let SubscriptionEvent::RecoveryIncomplete { missed } = event {
                tracing::warn!(
                    pattern = &**pattern,
                    topics = missed.len(),
                    "could not resume every topic of the subscription"
                );
            }
            entry.emit(event);
        }
        if entry.is_unused() {
            self.registry.remove(pattern);
            self.send_unsubscribe(s, pattern.clone());
        }
    }

    pub(super) fn on_subscribe_refused(
        &mut self,
        s: &mut Session,
        pattern: &Arc<str>,
        refusal: Refusal,
    ) {
        if refusal.code == ErrorCode::AlreadySubscribed {
            // The broker has it: as good as a confirmation.
            self.on_subscribed(s, pattern, &SubscribedInfo::default());
            return;
        }
        let Some(entry) = self.registry.entries.get_mut(pattern) else {
            return;
        };
        for Waiter { sub, reply } in std::mem::take(&mut entry.waiters) {
            let _ = reply.send(Err(refusal.to_error()));
            self.registry.owners.remove(&sub.id);
        }
        if entry.subs.is_empty() {
            self.registry.remove(pattern);
            return;
        }
        if refusal.code == ErrorCode::ShuttingDown {
            // Renewed on the next connection.
            entry.state = BrokerState::Unsent;
            return;
        }
        tracing::warn!(
            pattern = &**pattern,
            "broker refused to renew the subscription: {}; ending it",
            refusal.to_error()
        );
        if let Some(entry) = self.registry.remove(pattern) {
            for sub in entry.subs {
                sub.shared.finish(EndReason::Refused(refusal.clone()));
            }
        }
    }

    pub(super) fn on_sub_dropped(&mut self, id: u64, s: Option<&mut Session>) {
        let Some(pattern) = self.registry.owners.remove(&id) else {
            return;
        };
        let Some(entry) = self.registry.entries.get_mut(&pattern) else {
            return;
        };
        entry.subs.retain(|sub| sub.id != id);
        entry.waiters.retain(|w| w.sub.id != id);
        // A pending entry is settled when its reply arrives.
        if entry.is_unused() && entry.state != BrokerState::Pending {
            let was_active = entry.state == BrokerState::Active;
            self.registry.remove(&pattern);
            if was_active && let Some(s) = s {
                self.send_unsubscribe(s, pattern);
            }
        }
    }
}
