//! Takes what a fallback session's outbound queue yields, in the order the
//! WebSocket writer ([`crate::writer`]) would write it: plain frames, the
//! frames of slow-consumer lanes at their token's place, rate-limited
//! (`max_rate`) lanes when they are due, and the close last. After an
//! overflow, queued frames are dropped and only the close is left, as on a
//! WebSocket.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::outbound::{Outbound, OutboundReceiver};

/// One thing to send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An encoded WebSocket frame holding a server message.
    Frame(Bytes),
    /// The session is closed with this code and reason; nothing follows.
    Close {
        /// The close code (4001 slow consumer, 4003 token expired, 1001
        /// shutdown, …).
        code: u16,
        /// Its reason text.
        reason: std::borrow::Cow<'static, str>,
    },
}

/// The ordered reader of one outbound queue.
#[derive(Debug)]
pub struct Pump {
    outbound: OutboundReceiver,
    ready: VecDeque<Item>,
    lane: Vec<(Bytes, Instant)>,
    due: Option<Instant>,
}

impl Pump {
    /// Reads `outbound`.
    pub fn new(outbound: OutboundReceiver) -> Self {
        Pump {
            outbound,
            ready: VecDeque::new(),
            lane: Vec::new(),
            due: None,
        }
    }

    /// Moves one queue item to the ready items.
    fn accept(&mut self, item: Outbound) {
        let keep = !self.outbound.overflowed();
        match item {
            Outbound::Frame(frame, _) if keep => self.ready.push_back(Item::Frame(frame)),
            Outbound::Lane(topic_id) if keep => {
                self.outbound.take_lane(topic_id, &mut self.lane);
                let frames = self.lane.drain(..).map(|(frame, _)| Item::Frame(frame));
                self.ready.extend(frames);
            }
            Outbound::Close { code, reason } => self.ready.push_back(Item::Close { code, reason }),
            _ => {}
        }
    }

    /// Releases the rate-limited lanes that are due.
    fn release_due(&mut self) {
        if !self.outbound.queue().has_lanes() {
            self.due = None;
            return;
        }
        self.due = self.outbound.release_due(Instant::now(), &mut self.lane);
        let frames = self.lane.drain(..).map(|(frame, _)| Item::Frame(frame));
        self.ready.extend(frames);
    }

    /// The next item if one is ready now.
    pub fn try_next(&mut self) -> Option<Item> {
        if self.due.is_some_and(|due| due <= Instant::now()) {
            self.release_due();
        }
        loop {
            if self.outbound.overflowed() {
                self.ready.retain(|item| matches!(item, Item::Close { .. }));
            }
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            match self.outbound.try_recv() {
                Some(item) => self.accept(item),
                None => {
                    self.release_due();
                    return self.ready.pop_front();
                }
            }
        }
    }

    /// Waits for the next item; `None` once the queue has ended. Cancel
    /// safe: nothing is lost when the wait is dropped.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            let item = match self.due {
                Some(due) => tokio::select! {
                    item = self.outbound.recv() => item,
                    _ = tokio::time::sleep_until(due.into()) => Some(Outbound::Timer),
                },
                None => self.outbound.recv().await,
            };
            self.accept(item?);
        }
    }
}

#[cfg(test)]
mod tests {
    use tickwire_protocol::CloseCode;

    use super::*;
    use crate::metrics::Metrics;
    use crate::outbound::{FrameOrigin, OutboundQueue, SlowConsumerPolicy};

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    #[tokio::test]
    async fn frames_and_lanes_come_in_order_then_the_close() {
        let (queue, rx) = OutboundQueue::new(1, 100, Metrics::new());
        let mut pump = Pump::new(rx);
        let now = Instant::now();
        let conflate = FrameOrigin {
            topic_id: 1,
            policy: SlowConsumerPolicy::Conflate,
            max_rate: None,
            direct: false,
        };
        for n in 0..8 {
            queue.push_delivery(frame(n), now, conflate);
        }
        queue.close(CloseCode::GoingAway);
        let mut firsts = Vec::new();
        while let Some(item) = pump.next().await {
            match item {
                Item::Frame(f) => firsts.push(f[0]),
                Item::Close { code, .. } => {
                    assert_eq!(code, 1001);
                    break;
                }
            }
        }
        // Five fit half the budget; of the rest only the newest is kept.
        assert_eq!(firsts, [0, 1, 2, 3, 4, 7]);
    }

    #[tokio::test]
    async fn after_an_overflow_only_the_close_is_left() {
        let (queue, rx) = OutboundQueue::new(1, 25, Metrics::new());
        let mut pump = Pump::new(rx);
        let now = Instant::now();
        queue.push(frame(1), now);
        queue.push(frame(2), now);
        queue.push(frame(3), now);
        assert_eq!(
            pump.next().await,
            Some(Item::Close {
                code: 4001,
                reason: CloseCode::SlowConsumer.reason().into()
            })
        );
        assert_eq!(pump.try_next(), None);
    }
}
