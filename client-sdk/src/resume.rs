//! Per-subscription stream positions: what to ask for when a subscription
//! is renewed (`since`), which deliveries are duplicates, and where a
//! topic's sequence has a gap.
//!
//! One [`Tracker`] belongs to each broker subscription (pattern). It keeps a
//! [`Cursor`] per topic: the sequence number (and broker time) of the last
//! message delivered to the subscription, and the topic's epoch when it is
//! known. Deliveries carry no epoch, so epochs are learnt from the broker's
//! `SUBSCRIBED` replies: for an exact topic the reply names it, and any
//! topic that could not be resumed is listed in `missed` with its current
//! epoch. docs/client.md ("Resuming after a reconnect") states what this
//! guarantees.

use std::collections::HashMap;

use tickwire_protocol::message::{MAX_SINCE_ENTRIES, Position, SubscribedInfo};
use tickwire_protocol::topic::pattern_matches;

use crate::subscription::SubscriptionEvent;

/// Most bytes of `since` positions one `SUBSCRIBE` carries (a quarter of the
/// broker's default max message size). Topics beyond it are left out of the
/// request; their replay is then de-duplicated by broker time.
pub(crate) const RESUME_POSITIONS_MAX_BYTES: usize = 256 * 1024;

/// Encoded size of one `since` entry besides its topic, at most: string
/// header, array header, two `uint 64`.
const POSITION_OVERHEAD: usize = 5 + 1 + 9 + 9;

/// What the subscription has seen of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// The topic's epoch, when known.
    epoch: Option<u64>,
    /// The last sequence number delivered, or the position the broker
    /// reported; 0 means "before the first message".
    seq: u64,
    /// Broker time of the message with sequence number `seq`, when it was
    /// delivered (not merely reported).
    time_us: Option<u64>,
    /// The next message may be at or before `seq`: the broker's snapshot
    /// (`last`) that follows a `SUBSCRIBED` reply. It is delivered if it was
    /// published (broker time) after this floor, the time of the last
    /// message delivered before (0 if none): otherwise it is a repeat.
    snapshot: Option<u64>,
}

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Hand it to the application, after the gap event if there is one.
    Deliver(Option<SubscriptionEvent>),
    /// Already delivered (an overlapping replay): drop it.
    Duplicate,
}

/// The positions of one broker subscription.
#[derive(Debug)]
pub(crate) struct Tracker {
    wildcard: bool,
    /// Report [`SubscriptionEvent::Gap`]s (off with `max_rate`, where the
    /// broker skips messages by design).
    gaps: bool,
    /// For an exact topic: its epoch on the current connection, from the
    /// last `SUBSCRIBED` reply.
    exact_epoch: Option<u64>,
    cursors: HashMap<Box<str>, Cursor>,
}

impl Tracker {
    /// A tracker for `pattern`, starting from the application's `since`
    /// positions (those of topics the pattern matches).
    pub fn new(pattern: &str, gaps: bool, since: Option<&[(String, Position)]>) -> Self {
        let wildcard = tickwire_protocol::topic::is_wildcard(pattern);
        let cursors = since
            .unwrap_or_default()
            .iter()
            .filter(|(topic, _)| pattern_matches(pattern, topic))
            .take(MAX_SINCE_ENTRIES)
            .map(|(topic, p)| {
                let cursor = Cursor {
                    epoch: Some(p.epoch),
                    seq: p.seq,
                    time_us: None,
                    snapshot: None,
                };
                (topic.as_str().into(), cursor)
            })
            .collect();
        Tracker {
            wildcard,
            gaps,
            exact_epoch: None,
            cursors,
        }
    }

    /// The connection was lost: what was learnt about it no longer holds.
    pub fn disconnected(&mut self) {
        self.exact_epoch = None;
    }

    /// The `since` positions for renewing the subscription: every topic
    /// with a known epoch, then topics whose epoch is unknown with epoch 0,
    /// which never matches, so that the broker reports them in `missed`
    /// with their current position instead of replaying anything the
    /// client cannot prove it has not seen. Bounded by the protocol's entry
    /// limit and [`RESUME_POSITIONS_MAX_BYTES`].
    pub fn positions(&self) -> Vec<(String, Position)> {
        let known = self.cursors.iter().filter(|(_, c)| c.epoch.is_some());
        let unknown = self.cursors.iter().filter(|(_, c)| c.epoch.is_none());
        let mut budget = RESUME_POSITIONS_MAX_BYTES;
        let mut out = Vec::new();
        for (topic, cursor) in known.chain(unknown) {
            let cost = topic.len() + POSITION_OVERHEAD;
            if out.len() == MAX_SINCE_ENTRIES || cost > budget {
                break;
            }
            budget -= cost;
            let position = Position {
                epoch: cursor.epoch.unwrap_or(0),
                seq: cursor.seq,
            };
            out.push((topic.to_string(), position));
        }
        out
    }

    /// Takes in a `SUBSCRIBED` reply to a request for `pattern` that did or
    /// did not carry `since` positions; returns the events to report.
    pub fn on_subscribed(
        &mut self,
        pattern: &str,
        info: &SubscribedInfo,
        sent_since: bool,
        last: bool,
    ) -> Vec<SubscriptionEvent> {
        let mut events = vec![SubscriptionEvent::Subscribed {
            epoch: info.epoch,
            seq: info.seq,
        }];
        if !self.wildcard {
            self.exact_epoch = info.epoch;
        }
        if !sent_since {
            // A fresh start: nothing before this reply is replayed.
            self.cursors.clear();
            if let (false, Some(epoch), Some(seq)) = (self.wildcard, info.epoch, info.seq) {
                let baseline = Cursor {
                    epoch: Some(epoch),
                    seq,
                    time_us: None,
                    snapshot: last.then_some(0),
                };
                self.cursors.insert(pattern.into(), baseline);
            }
            return events;
        }
        match info.recovered {
            Some(true) => events.push(SubscriptionEvent::Resumed),
            Some(false) => {
                for (topic, position) in &info.missed {
                    if position.epoch == 0 {
                        // The broker forgot the topic: when it returns, it is
                        // new, and all of it is news.
                        self.cursors.remove(topic.as_str());
                    } else if let Some(cursor) = self.cursors.get_mut(topic.as_str()) {
                        let floor = cursor.time_us.unwrap_or(0);
                        *cursor = Cursor {
                            epoch: Some(position.epoch),
                            seq: position.seq,
                            time_us: None,
                            snapshot: last.then_some(floor),
                        };
                    } else if self.cursors.len() < MAX_SINCE_ENTRIES {
                        let current = Cursor {
                            epoch: Some(position.epoch),
                            seq: position.seq,
                            time_us: None,
                            snapshot: last.then_some(0),
                        };
                        self.cursors.insert(topic.as_str().into(), current);
                    }
                }
                events.push(SubscriptionEvent::RecoveryIncomplete {
                    missed: info.missed.clone(),
                });
            }
            None => {}
        }
        events
    }

    /// Decides about a delivery of `topic`. `exact_held` says whether the
    /// client holds an exact subscription to the topic on this connection,
    /// which keeps the broker from forgetting it, so that its sequence
    /// cannot restart.
    pub fn admit(&mut self, topic: &str, seq: u64, time_us: u64, exact_held: bool) -> Admit {
        let Some(cursor) = self.cursors.get_mut(topic) else {
            if self.cursors.len() < MAX_SINCE_ENTRIES {
                let epoch = if self.wildcard {
                    None
                } else {
                    self.exact_epoch
                };
                let cursor = Cursor {
                    epoch,
                    seq,
                    time_us: Some(time_us),
                    snapshot: None,
                };
                self.cursors.insert(topic.into(), cursor);
            }
            return Admit::Deliver(None);
        };
        if seq > cursor.seq {
            let gap = self.gaps && seq > cursor.seq + 1;
            let expected = cursor.seq + 1;
            cursor.seq = seq;
            cursor.time_us = Some(time_us);
            cursor.snapshot = None;
            return Admit::Deliver(gap.then(|| SubscriptionEvent::Gap {
                topic: topic.to_owned(),
                expected,
                got: seq,
            }));
        }
        if let Some(floor) = cursor.snapshot.take() {
            // The snapshot is at or before the reported position.
            return if time_us > floor {
                if seq == cursor.seq {
                    cursor.time_us = Some(time_us);
                }
                Admit::Deliver(None)
            } else {
                Admit::Duplicate
            };
        }
        // Within one epoch a topic's messages are stamped in sequence order
        // (by the broker's clock); a restarted sequence comes from a topic
        // that was forgotten after idling, so it is stamped later.
        let duplicate = exact_held || cursor.time_us.is_some_and(|t| time_us <= t);
        if duplicate {
            return Admit::Duplicate;
        }
        *cursor = Cursor {
            epoch: None,
            seq,
            time_us: Some(time_us),
            snapshot: None,
        };
        let gap = self.gaps && seq > 1;
        Admit::Deliver(gap.then(|| SubscriptionEvent::Gap {
            topic: topic.to_owned(),
            expected: 1,
            got: seq,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(epoch: Option<u64>, seq: Option<u64>) -> SubscribedInfo {
        let mut info = SubscribedInfo::default();
        info.epoch = epoch;
        info.seq = seq;
        info
    }

    fn missed(missed: Vec<(String, Position)>) -> SubscribedInfo {
        let mut info = SubscribedInfo::default();
        info.recovered = Some(false);
        info.missed = missed;
        info
    }

    fn pos(epoch: u64, seq: u64) -> Position {
        Position { epoch, seq }
    }

    #[test]
    fn exact_subscription_resumes_from_the_last_delivered_message() {
        let mut t = Tracker::new("iot.s1", true, None);
        let events = t.on_subscribed("iot.s1", &info(Some(7), Some(10)), false, false);
        assert_eq!(
            events,
            vec![SubscriptionEvent::Subscribed {
                epoch: Some(7),
                seq: Some(10)
            }]
        );
        // Nothing delivered yet: resume from the position at subscribe time.
        assert_eq!(t.positions(), vec![("iot.s1".to_owned(), pos(7, 10))]);
        assert_eq!(t.admit("iot.s1", 11, 100, true), Admit::Deliver(None));
        assert_eq!(t.admit("iot.s1", 12, 101, true), Admit::Deliver(None));
        assert_eq!(t.positions(), vec![("iot.s1".to_owned(), pos(7, 12))]);
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_reported() {
        let mut t = Tracker::new("a", true, None);
        t.on_subscribed("a", &info(Some(1), Some(0)), false, false);
        assert_eq!(t.admit("a", 1, 10, true), Admit::Deliver(None));
        assert_eq!(t.admit("a", 2, 11, true), Admit::Deliver(None));
        assert_eq!(t.admit("a", 2, 11, true), Admit::Duplicate);
        assert_eq!(t.admit("a", 1, 10, true), Admit::Duplicate);
        assert_eq!(
            t.admit("a", 5, 12, true),
            Admit::Deliver(Some(SubscriptionEvent::Gap {
                topic: "a".into(),
                expected: 3,
                got: 5
            }))
        );
        // Without gap reports (max_rate), the jump is silent.
        let mut t = Tracker::new("a", false, None);
        t.admit("a", 1, 10, true);
        assert_eq!(t.admit("a", 9, 12, true), Admit::Deliver(None));
    }

    #[test]
    fn wildcard_topics_tell_replays_from_restarts_by_time() {
        let mut t = Tracker::new("s.*", true, None);
        t.on_subscribed("s.*", &info(None, None), false, false);
        assert_eq!(t.admit("s.a", 40, 1_000, false), Admit::Deliver(None));
        assert_eq!(t.admit("s.a", 41, 1_001, false), Admit::Deliver(None));
        // An overlapping replay of old messages.
        assert_eq!(t.admit("s.a", 39, 999, false), Admit::Duplicate);
        assert_eq!(t.admit("s.a", 41, 1_001, false), Admit::Duplicate);
        // The topic was forgotten and came back: its sequence restarts.
        assert_eq!(t.admit("s.a", 1, 9_000, false), Admit::Deliver(None));
        assert_eq!(
            t.admit("s.a", 3, 9_001, false),
            Admit::Deliver(Some(SubscriptionEvent::Gap {
                topic: "s.a".into(),
                expected: 2,
                got: 3
            }))
        );
        // While an exact subscription holds the topic it cannot restart.
        assert_eq!(t.admit("s.a", 2, 9_500, true), Admit::Duplicate);
    }

    #[test]
    fn wildcard_epochs_are_learnt_from_missed_positions() {
        let mut t = Tracker::new("s.>", true, None);
        t.on_subscribed("s.>", &info(None, None), false, false);
        t.admit("s.a", 5, 50, false);
        t.admit("s.b", 2, 51, false);
        let mut asked = t.positions();
        asked.sort_by(|a, b| a.0.cmp(&b.0));
        // Unknown epochs are sent as 0, so they come back in `missed`.
        assert_eq!(
            asked,
            vec![("s.a".to_owned(), pos(0, 5)), ("s.b".to_owned(), pos(0, 2))]
        );
        t.disconnected();
        let reply = missed(vec![
            ("s.a".to_owned(), pos(77, 9)),
            ("s.b".to_owned(), pos(0, 0)),
        ]);
        let events = t.on_subscribed("s.>", &reply, true, false);
        assert_eq!(
            events[1],
            SubscriptionEvent::RecoveryIncomplete {
                missed: reply.missed.clone()
            }
        );
        // s.a continues from its current position; s.b is forgotten.
        assert_eq!(t.positions(), vec![("s.a".to_owned(), pos(77, 9))]);
        assert_eq!(t.admit("s.a", 10, 60, false), Admit::Deliver(None));
        assert_eq!(t.positions(), vec![("s.a".to_owned(), pos(77, 10))]);
        // The next resume is recovered.
        let mut ok = SubscribedInfo::default();
        ok.recovered = Some(true);
        assert_eq!(
            t.on_subscribed("s.>", &ok, true, false)[1],
            SubscriptionEvent::Resumed
        );
    }

    #[test]
    fn snapshot_at_or_before_the_position_is_delivered_once() {
        let mut t = Tracker::new("px", true, None);
        t.on_subscribed("px", &info(Some(3), Some(10)), false, true);
        assert_eq!(t.admit("px", 4, 5, true), Admit::Deliver(None));
        assert_eq!(t.admit("px", 4, 5, true), Admit::Duplicate);
        assert_eq!(t.admit("px", 11, 6, true), Admit::Deliver(None));
        // Without `last` the same message would be old news.
        let mut t = Tracker::new("px", true, None);
        t.on_subscribed("px", &info(Some(3), Some(10)), false, false);
        assert_eq!(t.admit("px", 4, 5, true), Admit::Duplicate);
    }

    #[test]
    fn a_renewal_snapshot_that_repeats_the_last_delivery_is_dropped() {
        let mut t = Tracker::new("px.*", true, None);
        t.on_subscribed("px.*", &info(None, None), false, true);
        assert_eq!(t.admit("px.a", 5, 500, false), Admit::Deliver(None));
        // Renewal: px.a's epoch was unknown, so it is missed; nothing new
        // was published, and the snapshot is message 5 again.
        let reply = missed(vec![("px.a".to_owned(), pos(8, 5))]);
        t.on_subscribed("px.*", &reply, true, true);
        assert_eq!(t.admit("px.a", 5, 500, false), Admit::Duplicate);
        assert_eq!(t.admit("px.a", 6, 600, false), Admit::Deliver(None));
        // After a broker restart the snapshot is a new message: delivered.
        let reply = missed(vec![("px.a".to_owned(), pos(9, 2))]);
        t.on_subscribed("px.*", &reply, true, true);
        assert_eq!(t.admit("px.a", 2, 900, false), Admit::Deliver(None));
        assert_eq!(t.positions(), vec![("px.a".to_owned(), pos(9, 2))]);
    }

    #[test]
    fn application_positions_seed_the_tracker() {
        let since = vec![
            ("s.a".to_owned(), pos(5, 100)),
            ("other.x".to_owned(), pos(5, 1)),
        ];
        let t = Tracker::new("s.*", true, Some(&since));
        assert_eq!(t.positions(), vec![("s.a".to_owned(), pos(5, 100))]);
    }

    #[test]
    fn a_renewal_without_since_starts_afresh() {
        let mut t = Tracker::new("s.*", true, None);
        t.admit("s.a", 5, 50, false);
        t.on_subscribed("s.*", &info(None, None), false, false);
        assert!(t.positions().is_empty());
        assert_eq!(t.admit("s.a", 1, 10, false), Admit::Deliver(None));
    }

    #[test]
    fn positions_are_bounded() {
        let mut t = Tracker::new(">", true, None);
        let long = "x".repeat(200);
        for i in 0..2_000u64 {
            t.admit(&format!("{long}.{i}"), 1, i, false);
        }
        let positions = t.positions();
        let bytes: usize = positions
            .iter()
            .map(|(topic, _)| topic.len() + POSITION_OVERHEAD)
            .sum();
        assert!(positions.len() < 2_000);
        assert!(bytes <= RESUME_POSITIONS_MAX_BYTES);
    }
}
