//! What a new subscription receives before live messages (`since`, `last`),
//! and how a wildcard replay lines up with live publishes without stopping
//! publishes on other topics.
//!
//! [`ReplayAsk`] works out, for one topic under its lock, the frames a
//! subscription gets before live messages: the history after its `since`
//! position, all history for a topic it has no position for, or the latest
//! kept message for `last`.
//!
//! [`PendingReplay`] is the seam of a wildcard subscribe with `since` or
//! `last`. The subscriber is registered in the pattern trie *first*, carrying
//! a `PendingReplay`; then every matching topic is replayed under its own
//! lock, one at a time. Until the subscribe finishes, live deliveries to that
//! subscriber are *held* in the `PendingReplay` instead of being queued. When
//! a topic is replayed (under its lock, so no publish on it runs meanwhile)
//! the replay stands for everything up to the topic's position at that
//! moment, its *cut*. Finishing queues, in this order and under the
//! `PendingReplay`'s mutex: the `SUBSCRIBED` reply, every replayed frame, and
//! then the held live frames, dropping those at or below their topic's cut
//! (the replay covered them, or chose not to send them). Held frames of
//! topics that were not replayed (created during the walk) are all queued.
//! So per topic the subscriber sees replay then live, without gap or
//! duplicate, and no other topic ever waits for the walk. Held frames count
//! against the connection's queue budget: a subscriber that would overflow
//! its queue with them is closed as a slow consumer (4001).
//!
//! In cluster mode a topic's cut is its position read from Redis, on
//! another connection than the one its messages arrive on: a message
//! numbered before the read may reach the node only after the finish. Such
//! a late live frame, at or below its topic's cut, is dropped as well; the
//! first frame above the cut ends that check for the topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tickwire_protocol::message::Position;
use tickwire_protocol::topic::Topic;

use crate::history::TopicMemory;
use crate::outbound::{FrameOrigin, OutboundQueue, PushOutcome};

/// What a subscription asks to receive before live messages.
#[derive(Debug)]
pub struct ReplayAsk<'a> {
    since: Option<HashMap<&'a str, Position>>,
    last: bool,
}

impl<'a> ReplayAsk<'a> {
    /// The request's `since` positions (by topic) and `last` flag.
    pub fn new(since: Option<&[(Topic<'a>, Position)]>, last: bool) -> Self {
        ReplayAsk {
            since: since.map(|s| s.iter().map(|(t, p)| (t.as_str(), *p)).collect()),
            last,
        }
    }

    /// Whether the subscription asks for anything before live messages.
    pub fn is_empty(&self) -> bool {
        self.since.is_none() && !self.last
    }

    /// Whether the request had `since` (then the reply says `recovered`).
    pub fn has_since(&self) -> bool {
        self.since.is_some()
    }

    /// The topics named in `since`.
    pub fn since_topics(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.since.iter().flat_map(|s| s.keys().copied())
    }

    /// Appends what topic `topic` (at `position`, keeping `memory`) gives
    /// the subscription before live messages to `out`: the history after its
    /// `since` position, all history when `since` names other topics only,
    /// or else, for `last`, the newest kept message. Returns whether a
    /// `since` position for this topic was resumed (`None` when the request
    /// named none for it). The caller holds the topic's lock and has expired
    /// its history.
    pub fn replay(
        &self,
        topic: &str,
        memory: &TopicMemory,
        position: Position,
        out: &mut Vec<Bytes>,
    ) -> Option<bool> {
        let produced_before = out.len();
        let mut resumed = None;
        if let Some(since) = &self.since {
            match since.get(topic) {
                Some(from) => {
                    let ok = from.epoch == position.epoch
                        && memory.frames_after(from.seq, position.seq, out);
                    resumed = Some(ok);
                }
                // A topic the client has no position for is new to it: all
                // of its history is news.
                None => memory.history_frames(out),
            }
        }
        if self.last && resumed != Some(true) && out.len() == produced_before {
            if let Some(latest) = memory.latest() {
                out.push(latest.clone());
            }
        }
        resumed
    }
}

/// A live frame held back while its subscription's replay is in progress.
#[derive(Debug)]
struct Held {
    at: Position,
    frame: Bytes,
    queued_at: Instant,
    /// `None`: a `JOIN`/`LEAVE` event, queued as it is (no cut applies).
    origin: Option<FrameOrigin>,
}

/// The replay of one wildcard subscribe, gathered topic by topic.
#[derive(Debug, Default)]
pub struct ReplayBatch {
    frames: Vec<(Bytes, FrameOrigin)>,
    cuts: HashMap<u64, Position>,
    late_repeats: bool,
}

impl ReplayBatch {
    /// A batch whose cuts were read elsewhere than where live messages come
    /// from (cluster mode: Redis), so live messages at or below a cut may
    /// still arrive after the finish: they are dropped too.
    pub fn with_late_repeats() -> Self {
        ReplayBatch {
            late_repeats: true,
            ..ReplayBatch::default()
        }
    }

    /// Records the replay of topic `topic_id`: `frames` stand for every
    /// message of the topic up to position `cut`.
    pub fn add(
        &mut self,
        topic_id: u64,
        cut: Position,
        frames: &mut Vec<Bytes>,
        origin: FrameOrigin,
    ) {
        self.cuts.insert(topic_id, cut);
        self.frames.extend(frames.drain(..).map(|f| (f, origin)));
    }
}

/// The seam between a wildcard subscription's replay and live publishes
/// (see the module documentation). Shared by the subscribe and every
/// resolved subscriber list that contains the subscription.
#[derive(Debug, Default)]
pub struct PendingReplay {
    done: AtomicBool,
    held: Mutex<HeldFrames>,
    /// From the finish on: the cut of every replayed topic that no live
    /// frame has passed yet. A live frame at or below it (in its epoch) is
    /// a repeat of the replay and dropped (see [`PendingReplay::deliver`]).
    late_cuts: Mutex<HashMap<u64, Position>>,
    /// Whether `late_cuts` holds any, so that a delivery only looks when
    /// there may be something to find.
    any_late_cut: AtomicBool,
}

/// The live frames held so far and their size.
#[derive(Debug, Default)]
struct HeldFrames {
    frames: Vec<Held>,
    bytes: usize,
}

impl PendingReplay {
    /// A replay that has not finished yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Whether the replay finished: deliveries go straight to the queue.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Delivers live message `at` of topic `origin.topic_id` to `queue`:
    /// holds it while the replay is in progress, else queues it. Returns
    /// whether the frame was queued or held. Called under the topic's lock.
    pub fn deliver(
        &self,
        queue: &OutboundQueue,
        at: Position,
        frame: Bytes,
        queued_at: Instant,
        origin: FrameOrigin,
    ) -> bool {
        let item = Held {
            at,
            frame,
            queued_at,
            origin: Some(origin),
        };
        let frame = match self.try_hold(queue, item) {
            Ok(held) => return held,
            Err(item) => item.frame,
        };
        if self.any_late_cut.load(Ordering::Acquire) && self.is_late_repeat(at, origin.topic_id) {
            return false;
        }
        queue.push_delivery(frame, queued_at, origin) == PushOutcome::Queued
    }

    /// Delivers a `JOIN`/`LEAVE` event frame to `queue`: held, in order
    /// with the held live messages, while the replay is in progress (so it
    /// never overtakes the `SUBSCRIBED` reply), else queued. Returns
    /// whether it was queued or held.
    pub fn deliver_event(&self, queue: &OutboundQueue, frame: Bytes, queued_at: Instant) -> bool {
        let item = Held {
            at: Position { epoch: 0, seq: 0 },
            frame,
            queued_at,
            origin: None,
        };
        match self.try_hold(queue, item) {
            Ok(held) => held,
            Err(item) => queue.push_event(item.frame, queued_at) == PushOutcome::Queued,
        }
    }

    /// Holds `item` while the replay is in progress: `Ok(true)` when held,
    /// `Ok(false)` when the held frames outgrew the queue's budget (the
    /// connection is then closed as a slow consumer), `Err(item)` back once
    /// the replay is done.
    fn try_hold(&self, queue: &OutboundQueue, item: Held) -> Result<bool, Held> {
        if self.is_done() {
            return Err(item);
        }
        let mut held = self.held.lock();
        // `done` is set under this mutex, so this answer is final.
        if self.is_done() {
            return Err(item);
        }
        held.bytes += item.frame.len();
        if held.bytes > queue.budget() {
            // They would not fit the queue either: a slow consumer.
            queue.overflow_held();
            return Ok(false);
        }
        held.frames.push(item);
        Ok(true)
    }

    /// Whether live message `at` of topic `topic_id`, arriving after the
    /// finish, is at or below the topic's cut in the same epoch: the replay
    /// already sent it. On one node that cannot happen (the replay and
    /// publishes take the topic's lock), but in cluster mode it can: the
    /// node reads a topic's position from Redis on one connection and
    /// receives its messages on another, so a message numbered before the
    /// read may be received after it. The first frame past the cut (above
    /// it, or of another epoch: the topic restarted) ends the check for the
    /// topic.
    fn is_late_repeat(&self, at: Position, topic_id: u64) -> bool {
        let mut cuts = self.late_cuts.lock();
        let Some(&cut) = cuts.get(&topic_id) else {
            return false;
        };
        if at.epoch == cut.epoch && at.seq <= cut.seq {
            return true;
        }
        cuts.remove(&topic_id);
        if cuts.is_empty() {
            self.any_late_cut.store(false, Ordering::Release);
        }
        false
    }

    /// Ends the replay: runs `reply` (which queues the `SUBSCRIBED` reply),
    /// then queues the replayed frames and the held live frames that are
    /// above their topic's cut, and from then on lets deliveries through
    /// (but late ones at or below a cut, see [`PendingReplay::deliver`]).
    pub fn finish(
        &self,
        queue: &OutboundQueue,
        batch: ReplayBatch,
        now: Instant,
        reply: impl FnOnce(),
    ) {
        let mut held = self.held.lock();
        reply();
        for (frame, origin) in batch.frames {
            queue.push_delivery(frame, now, origin);
        }
        let mut cuts = batch.cuts;
        for h in std::mem::take(&mut *held).frames {
            let Some(origin) = h.origin else {
                queue.push_event(h.frame, h.queued_at);
                continue;
            };
            match cuts.get(&origin.topic_id) {
                Some(cut) if h.at.epoch == cut.epoch && h.at.seq <= cut.seq => {}
                Some(_) => {
                    // Live frames of the topic are past its cut.
                    cuts.remove(&origin.topic_id);
                    queue.push_delivery(h.frame, h.queued_at, origin);
                }
                None => {
                    queue.push_delivery(h.frame, h.queued_at, origin);
                }
            }
        }
        if batch.late_repeats && !cuts.is_empty() {
            *self.late_cuts.lock() = cuts;
            self.any_late_cut.store(true, Ordering::Release);
        }
        self.done.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::outbound::{Outbound, OutboundReceiver, SlowConsumerPolicy};

    fn origin(topic_id: u64) -> FrameOrigin {
        FrameOrigin {
            topic_id,
            policy: SlowConsumerPolicy::Disconnect,
            max_rate: None,
            direct: false,
        }
    }

    /// Position `seq` of epoch 1.
    fn at(seq: u64) -> Position {
        Position { epoch: 1, seq }
    }

    fn frame(topic: u64, seq: u64) -> Bytes {
        Bytes::from(format!("{topic}:{seq}"))
    }

    fn drain(rx: &mut OutboundReceiver) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while let Some(Outbound::Frame(f, _)) = rx.try_recv() {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn held_frames_follow_reply_and_replay_and_skip_what_the_replay_covers() {
        let (queue, mut rx) = OutboundQueue::new(1, 1 << 20, Metrics::new());
        let pending = PendingReplay::new();
        let now = Instant::now();
        // Topic 1: live 5 arrives before its replay (which covers up to 5),
        // live 6 after it. Topic 2 was never replayed (created later).
        assert!(pending.deliver(&queue, at(5), frame(1, 5), now, origin(1)));
        let mut batch = ReplayBatch::default();
        let mut replayed = vec![frame(1, 4), frame(1, 5)];
        batch.add(1, at(5), &mut replayed, origin(1));
        assert!(pending.deliver(&queue, at(6), frame(1, 6), now, origin(1)));
        assert!(pending.deliver(&queue, at(1), frame(2, 1), now, origin(2)));
        assert!(drain(&mut rx).is_empty(), "nothing before the reply");
        pending.finish(&queue, batch, now, || {
            queue.push(Bytes::from_static(b"reply"), now);
        });
        assert!(pending.deliver(&queue, at(7), frame(1, 7), now, origin(1)));
        let expected = vec![
            Bytes::from_static(b"reply"),
            frame(1, 4),
            frame(1, 5),
            frame(1, 6),
            frame(2, 1),
            frame(1, 7),
        ];
        assert_eq!(drain(&mut rx), expected);
        assert!(pending.is_done());
    }

    #[test]
    fn a_live_frame_the_replay_covered_that_arrives_after_the_finish_is_dropped() {
        // Cluster mode: the replay read topic 1 up to seq 5 in Redis, and
        // live 5 reaches the node only after the finish. Topic 2 had no
        // replay.
        let (queue, mut rx) = OutboundQueue::new(1, 1 << 20, Metrics::new());
        let pending = PendingReplay::new();
        let now = Instant::now();
        let mut batch = ReplayBatch::with_late_repeats();
        let mut replayed = vec![frame(1, 4), frame(1, 5)];
        batch.add(1, at(5), &mut replayed, origin(1));
        pending.finish(&queue, batch, now, || {});
        assert!(!pending.deliver(&queue, at(5), frame(1, 5), now, origin(1)));
        assert!(pending.deliver(&queue, at(1), frame(2, 1), now, origin(2)));
        assert!(pending.deliver(&queue, at(6), frame(1, 6), now, origin(1)));
        // Past the cut the check is over: a topic restarted in a new epoch
        // is delivered from seq 1 again.
        assert!(pending.deliver(
            &queue,
            Position { epoch: 2, seq: 1 },
            frame(1, 1),
            now,
            origin(1)
        ));
        // Nor does a cut hide a new epoch that comes first (topic 3).
        let mut batch = ReplayBatch::with_late_repeats();
        batch.add(3, at(9), &mut Vec::new(), origin(3));
        let restarted = PendingReplay::new();
        restarted.finish(&queue, batch, now, || {});
        let new_epoch = Position { epoch: 2, seq: 1 };
        assert!(restarted.deliver(&queue, new_epoch, frame(3, 1), now, origin(3)));
        let expected = vec![
            frame(1, 4),
            frame(1, 5),
            frame(2, 1),
            frame(1, 6),
            frame(1, 1),
            frame(3, 1),
        ];
        assert_eq!(drain(&mut rx), expected);
        // On one node (no late repeats possible) the cut ends at the finish.
        let mut batch = ReplayBatch::default();
        batch.add(4, at(9), &mut Vec::new(), origin(4));
        let local = PendingReplay::new();
        local.finish(&queue, batch, now, || {});
        assert!(!local.any_late_cut.load(Ordering::Acquire));
    }

    #[test]
    fn holding_more_than_the_budget_closes_as_slow_consumer() {
        let (queue, _rx) = OutboundQueue::new(1, 10, Metrics::new());
        let pending = PendingReplay::new();
        let now = Instant::now();
        assert!(pending.deliver(&queue, at(1), Bytes::from_static(b"12345"), now, origin(1)));
        assert!(!pending.deliver(&queue, at(2), Bytes::from_static(b"123456"), now, origin(1)));
        assert!(queue.is_closing());
    }
}
