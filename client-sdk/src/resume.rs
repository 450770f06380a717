//! Per-subscription stream positions: what to ask for when a subscription
//! is renewed (`since`), which deliveries are duplicates, and where a
//! topic's sequence has a gap or restarted.
//!
//! One [`Tracker`] belongs to each broker subscription (pattern). It keeps a
//! [`Cursor`] per topic: the position ([`Position`]: epoch and sequence
//! number) of the last message delivered to the subscription, or the
//! position the broker reported. Every delivery carries its topic's epoch,
//! so positions are exact for every topic seen, through a wildcard too, and
//! nothing here depends on clocks: within one epoch a sequence number is
//! delivered at most once, and another epoch means the topic was reset.
//! docs/client.md ("Resuming after a reconnect") states what this
//! guarantees.

use std::collections::HashMap;

use tickwire_protocol::message::{MAX_SINCE_ENTRIES, Position, SubscribedInfo};
use tickwire_protocol::topic::pattern_matches;

use crate::event::SubscriptionEvent;

/// Most bytes of `since` positions one `SUBSCRIBE` carries (a quarter of the
/// broker's default max message size). Topics beyond it are left out of the
/// request; the broker then sends them live only, and their messages are
/// de-duplicated by position.
pub(crate) const RESUME_POSITIONS_MAX_BYTES: usize = 256 * 1024;

/// Encoded size of one `since` entry besides its topic, at most: string
/// header, array header, two `uint 64`.
const POSITION_OVERHEAD: usize = 5 + 1 + 9 + 9;

/// What the subscription has seen of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// The last message delivered, or the position the broker reported;
    /// `seq` 0 means "before the first message of the epoch".
    at: Position,
    /// The next message may be at or before `at`: the broker's snapshot
    /// (`last`) that follows a `SUBSCRIBED` reply. It is delivered if its
    /// sequence number is above this floor (the last one delivered in this
    /// epoch, 0 if none): otherwise it is a repeat.
    snapshot_floor: Option<u64>,
}

impl Cursor {
    fn at(at: Position) -> Self {
        Cursor {
            at,
            snapshot_floor: None,
        }
    }
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
            .map(|(topic, p)| (topic.as_str().into(), Cursor::at(*p)))
            .collect();
        Tracker {
            wildcard,
            gaps,
            cursors,
        }
    }

    /// The `since` positions for renewing the subscription: the exact
    /// position of every topic seen, bounded by the protocol's entry limit
    /// and [`RESUME_POSITIONS_MAX_BYTES`].
    pub fn positions(&self) -> Vec<(String, Position)> {
        let mut budget = RESUME_POSITIONS_MAX_BYTES;
        let mut out = Vec::new();
        for (topic, cursor) in &self.cursors {
            let cost = topic.len() + POSITION_OVERHEAD;
            if out.len() == MAX_SINCE_ENTRIES || cost > budget {
                break;
            }
            budget -= cost;
            out.push((topic.to_string(), cursor.at));
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
        if !sent_since {
            // A fresh start: nothing before this reply is replayed.
            self.cursors.clear();
            if let (false, Some(epoch), Some(seq)) = (self.wildcard, info.epoch, info.seq) {
                let baseline = Cursor {
                    at: Position { epoch, seq },
                    snapshot_floor: last.then_some(0),
                };
                self.cursors.insert(pattern.into(), baseline);
            }
            return events;
        }
        match info.recovered {
            Some(true) => events.push(SubscriptionEvent::Resumed),
            Some(false) => {
                for (topic, position) in &info.missed {
                    self.on_missed(topic, *position, last);
                }
                events.push(SubscriptionEvent::RecoveryIncomplete {
                    missed: info.missed.clone(),
                });
            }
            None => {}
        }
        events
    }

    /// The broker could not resume `topic`, which is now at `now`.
    fn on_missed(&mut self, topic: &str, now: Position, last: bool) {
        if now.epoch == 0 {
            // The broker forgot the topic: when it returns, it is new, and
            // all of it is news.
            self.cursors.remove(topic);
            return;
        }
        let floor = match self.cursors.get(topic) {
            Some(cursor) if cursor.at.epoch == now.epoch => cursor.at.seq,
            Some(_) => 0,
            None if self.cursors.len() < MAX_SINCE_ENTRIES => 0,
            None => return,
        };
        let cursor = Cursor {
            at: now,
            snapshot_floor: last.then_some(floor),
        };
        self.cursors.insert(topic.into(), cursor);
    }

    /// Decides about a delivery of `topic` at position `at`.
    pub fn admit(&mut self, topic: &str, at: Position) -> Admit {
        let Some(cursor) = self.cursors.get_mut(topic) else {
            if self.cursors.len() < MAX_SINCE_ENTRIES {
                self.cursors.insert(topic.into(), Cursor::at(at));
            }
            return Admit::Deliver(None);
        };
        if at.epoch != cursor.at.epoch {
            // The topic was reset (forgotten and recreated, or the broker
            // restarted): its sequence starts again in the new epoch.
            *cursor = Cursor::at(at);
            let gap = self.gaps && at.seq > 1;
            return Admit::Deliver(gap.then(|| SubscriptionEvent::Gap {
                topic: topic.to_owned(),
                expected: 1,
                got: at.seq,
            }));
        }
        if at.seq > cursor.at.seq {
            let expected = cursor.at.seq + 1;
            let gap = self.gaps && at.seq > expected;
            *cursor = Cursor::at(at);
            return Admit::Deliver(gap.then(|| SubscriptionEvent::Gap {
                topic: topic.to_owned(),
                expected,
                got: at.seq,
            }));
        }
        match cursor.snapshot_floor.take() {
            // The snapshot, at or before the reported position, and newer
            // than anything delivered.
            Some(floor) if at.seq > floor => Admit::Deliver(None),
            _ => Admit::Duplicate,
        }
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

    fn resumed() -> SubscribedInfo {
        let mut info = SubscribedInfo::default();
        info.recovered = Some(true);
        info
    }

    fn pos(epoch: u64, seq: u64) -> Position {
        Position { epoch, seq }
    }

    fn sorted(mut positions: Vec<(String, Position)>) -> Vec<(String, Position)> {
        positions.sort_by(|a, b| a.0.cmp(&b.0));
        positions
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
        assert_eq!(t.admit("iot.s1", pos(7, 11)), Admit::Deliver(None));
        assert_eq!(t.admit("iot.s1", pos(7, 12)), Admit::Deliver(None));
        assert_eq!(t.positions(), vec![("iot.s1".to_owned(), pos(7, 12))]);
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_reported() {
        let mut t = Tracker::new("a", true, None);
        t.on_subscribed("a", &info(Some(1), Some(0)), false, false);
        assert_eq!(t.admit("a", pos(1, 1)), Admit::Deliver(None));
        assert_eq!(t.admit("a", pos(1, 2)), Admit::Deliver(None));
        assert_eq!(t.admit("a", pos(1, 2)), Admit::Duplicate);
        assert_eq!(t.admit("a", pos(1, 1)), Admit::Duplicate);
        assert_eq!(
            t.admit("a", pos(1, 5)),
            Admit::Deliver(Some(SubscriptionEvent::Gap {
                topic: "a".into(),
                expected: 3,
                got: 5
            }))
        );
        // Without gap reports (max_rate), the jump is silent.
        let mut t = Tracker::new("a", false, None);
        t.admit("a", pos(1, 1));
        assert_eq!(t.admit("a", pos(1, 9)), Admit::Deliver(None));
    }

    #[test]
    fn the_same_epoch_repeats_and_another_epoch_resets() {
        let mut t = Tracker::new("s.*", true, None);
        t.on_subscribed("s.*", &info(None, None), false, false);
        assert_eq!(t.admit("s.a", pos(4, 40)), Admit::Deliver(None));
        assert_eq!(t.admit("s.a", pos(4, 41)), Admit::Deliver(None));
        // An overlapping replay of old messages of the same epoch.
        assert_eq!(t.admit("s.a", pos(4, 39)), Admit::Duplicate);
        assert_eq!(t.admit("s.a", pos(4, 41)), Admit::Duplicate);
        // The topic was reset: a lower sequence number in a new epoch is
        // news, and so is everything after it.
        assert_eq!(t.admit("s.a", pos(5, 1)), Admit::Deliver(None));
        assert_eq!(t.admit("s.a", pos(5, 2)), Admit::Deliver(None));
        assert_eq!(t.admit("s.a", pos(5, 2)), Admit::Duplicate);
        // Reset again, starting after the first message: reported.
        assert_eq!(
            t.admit("s.a", pos(6, 3)),
            Admit::Deliver(Some(SubscriptionEvent::Gap {
                topic: "s.a".into(),
                expected: 1,
                got: 3
            }))
        );
        assert_eq!(t.positions(), vec![("s.a".to_owned(), pos(6, 3))]);
    }

    #[test]
    fn wildcard_topics_resume_with_the_epochs_their_deliveries_carry() {
        let mut t = Tracker::new("s.>", true, None);
        t.on_subscribed("s.>", &info(None, None), false, false);
        t.admit("s.a", pos(77, 5));
        t.admit("s.b", pos(78, 2));
        // The very first renewal asks for exact positions...
        assert_eq!(
            sorted(t.positions()),
            vec![
                ("s.a".to_owned(), pos(77, 5)),
                ("s.b".to_owned(), pos(78, 2))
            ]
        );
        // ...so the broker resumes every topic.
        assert_eq!(
            t.on_subscribed("s.>", &resumed(), true, false),
            vec![
                SubscriptionEvent::Subscribed {
                    epoch: None,
                    seq: None
                },
                SubscriptionEvent::Resumed
            ]
        );
        assert_eq!(t.admit("s.a", pos(77, 6)), Admit::Deliver(None));
        assert_eq!(t.admit("s.b", pos(78, 3)), Admit::Deliver(None));
    }

    #[test]
    fn missed_topics_continue_from_their_current_position() {
        let mut t = Tracker::new("s.>", true, None);
        t.on_subscribed("s.>", &info(None, None), false, false);
        t.admit("s.a", pos(77, 5));
        t.admit("s.b", pos(78, 2));
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
        assert_eq!(t.admit("s.a", pos(77, 10)), Admit::Deliver(None));
        assert_eq!(t.admit("s.b", pos(90, 1)), Admit::Deliver(None));
    }

    #[test]
    fn snapshot_at_or_before_the_position_is_delivered_once() {
        let mut t = Tracker::new("px", true, None);
        t.on_subscribed("px", &info(Some(3), Some(10)), false, true);
        assert_eq!(t.admit("px", pos(3, 4)), Admit::Deliver(None));
        assert_eq!(t.admit("px", pos(3, 4)), Admit::Duplicate);
        assert_eq!(t.admit("px", pos(3, 11)), Admit::Deliver(None));
        // Without `last` the same message would be old news.
        let mut t = Tracker::new("px", true, None);
        t.on_subscribed("px", &info(Some(3), Some(10)), false, false);
        assert_eq!(t.admit("px", pos(3, 4)), Admit::Duplicate);
    }

    #[test]
    fn a_renewal_snapshot_that_repeats_the_last_delivery_is_dropped() {
        let mut t = Tracker::new("px.*", true, None);
        t.on_subscribed("px.*", &info(None, None), false, true);
        assert_eq!(t.admit("px.a", pos(8, 5)), Admit::Deliver(None));
        // The history does not reach back: px.a is missed at its current
        // position, and the snapshot is message 5 again.
        let reply = missed(vec![("px.a".to_owned(), pos(8, 5))]);
        t.on_subscribed("px.*", &reply, true, true);
        assert_eq!(t.admit("px.a", pos(8, 5)), Admit::Duplicate);
        assert_eq!(t.admit("px.a", pos(8, 6)), Admit::Deliver(None));
        // After a broker restart the snapshot is a new message: delivered.
        let reply = missed(vec![("px.a".to_owned(), pos(9, 2))]);
        t.on_subscribed("px.*", &reply, true, true);
        assert_eq!(t.admit("px.a", pos(9, 2)), Admit::Deliver(None));
        assert_eq!(t.positions(), vec![("px.a".to_owned(), pos(9, 2))]);
        // A resumed renewal's snapshot at the cursor is a repeat.
        t.on_subscribed("px.*", &resumed(), true, true);
        assert_eq!(t.admit("px.a", pos(9, 2)), Admit::Duplicate);
    }

    #[test]
    fn application_positions_seed_the_tracker() {
        let since = vec![
            ("s.a".to_owned(), pos(5, 100)),
            ("other.x".to_owned(), pos(5, 1)),
        ];
        let mut t = Tracker::new("s.*", true, Some(&since));
        assert_eq!(t.positions(), vec![("s.a".to_owned(), pos(5, 100))]);
        assert_eq!(t.admit("s.a", pos(5, 100)), Admit::Duplicate);
        assert_eq!(t.admit("s.a", pos(5, 101)), Admit::Deliver(None));
    }

    #[test]
    fn a_renewal_without_since_starts_afresh() {
        let mut t = Tracker::new("s.*", true, None);
        t.admit("s.a", pos(1, 5));
        t.on_subscribed("s.*", &info(None, None), false, false);
        assert!(t.positions().is_empty());
        assert_eq!(t.admit("s.a", pos(1, 1)), Admit::Deliver(None));
    }

    #[test]
    fn positions_are_bounded() {
        let mut t = Tracker::new(">", true, None);
        let long = "x".repeat(200);
        for i in 0..2_000u64 {
            t.admit(&format!("{long}.{i}"), pos(1, 1));
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
