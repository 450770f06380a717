//! The outbound queue of one WebSocket connection.
//!
//! Publishers on any task push already-encoded frames ([`Bytes`], shared by
//! every subscriber) with [`SubscriberQueue::push`]; the connection's writer
//! task drains them in batches ([`OutboundReceiver`]). Pushing takes no lock:
//! it is an atomic add on the byte counter plus a lock-free channel send.
//!
//! The queue is bounded in bytes. A push that would take it over its budget is
//! refused and, under the default slow-consumer policy, closes the connection
//! with 4001: every other subscriber keeps its rate and the broker's memory
//! for this connection never exceeds the budget. Other policies (drop-oldest,
//! conflation) plug in at [`SubscriberQueue::push`], the one place that
//! decides what happens to a frame that does not fit.
//!
//! [`SubscriberQueue::close`] is the one way a connection starts closing,
//! whatever the reason: it queues the close frame behind the data already
//! queued (or, for a slow consumer, instead of it) and cancels the
//! connection's `closing` token so the reader stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tickwire_protocol::CloseCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// One item in a connection's outbound queue.
#[derive(Debug)]
pub enum Outbound {
    /// A complete WebSocket frame and when it was queued.
    Frame(Bytes, Instant),
    /// Write a close frame with this code and reason, then stop.
    Close {
        /// The close code.
        code: u16,
        /// The reason text.
        reason: &'static str,
    },
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The frame is queued.
    Queued,
    /// The frame did not fit the budget; the connection is being closed as
    /// a slow consumer.
    Overflowed,
    /// The connection is closing; the frame was discarded.
    Closed,
}

const OPEN: u8 = 0;
const CLOSING: u8 = 1;
const OVERFLOWED: u8 = 2;

/// The sending side of a connection's outbound queue, shared (in an [`Arc`])
/// by the topic registry and the connection itself.
#[derive(Debug)]
pub struct SubscriberQueue {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    queued_bytes: AtomicUsize,
    budget: usize,
    state: AtomicU8,
    closing: CancellationToken,
    metrics: Metrics,
}

/// The receiving side, owned by the connection's writer task.
#[derive(Debug)]
pub struct OutboundReceiver {
    rx: mpsc::UnboundedReceiver<Outbound>,
    queue: Arc<SubscriberQueue>,
}

impl SubscriberQueue {
    /// Creates the queue of connection `id`, bounded to `budget` bytes.
    pub fn new(id: u64, budget: usize, metrics: Metrics) -> (Arc<Self>, OutboundReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(SubscriberQueue {
            id,
            tx,
            queued_bytes: AtomicUsize::new(0),
            budget,
            state: AtomicU8::new(OPEN),
            closing: CancellationToken::new(),
            metrics,
        });
        let receiver = OutboundReceiver {
            rx,
            queue: queue.clone(),
        };
        (queue, receiver)
    }

    /// The connection id, unique for the broker's lifetime.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes currently queued and not yet taken by the writer.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Cancelled once the connection starts closing, for any reason.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Whether the connection has started closing.
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Relaxed) != OPEN
    }

    /// Queues a frame if it fits the byte budget; otherwise closes the
    /// connection as a slow consumer.
    pub fn push(&self, frame: Bytes, queued_at: Instant) -> PushOutcome {
        if self.state.load(Ordering::Relaxed) != OPEN {
            return PushOutcome::Closed;
        }
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.budget {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            if self.begin_close(OVERFLOWED, CloseCode::SlowConsumer) {
                return PushOutcome::Overflowed;
            }
            return PushOutcome::Closed;
        }
        match self.tx.send(Outbound::Frame(frame, queued_at)) {
            Ok(()) => PushOutcome::Queued,
            Err(_) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                PushOutcome::Closed
            }
        }
    }

    /// Starts closing the connection with `code`, after the frames already
    /// queued. Later calls (and pushes) are ignored.
    pub fn close(&self, code: CloseCode) {
        self.begin_close(CLOSING, code);
    }

    /// Answers the peer's close frame by echoing its code (1000 when it sent
    /// none), as RFC 6455 asks.
    pub fn echo_close(&self, peer_code: Option<u16>) {
        if self.transition(CLOSING) {
            self.send_close(peer_code.unwrap_or(CloseCode::Normal.as_u16()), "");
        }
    }

    /// Marks the connection closing without a close frame, because the
    /// socket is already unusable.
    pub fn abandon(&self) {
        self.transition(CLOSING);
        self.closing.cancel();
    }

    fn transition(&self, state: u8) -> bool {
        self.state
            .compare_exchange(OPEN, state, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn send_close(&self, code: u16, reason: &'static str) {
        // The receiver may already be gone; then nothing is left to close.
        let _ = self.tx.send(Outbound::Close { code, reason });
        self.closing.cancel();
    }

    fn begin_close(&self, state: u8, code: CloseCode) -> bool {
        if !self.transition(state) {
            return false;
        }
        self.metrics.close(code);
        self.send_close(code.as_u16(), code.reason());
        true
    }
}

impl OutboundReceiver {
    /// The queue this receiver drains.
    pub fn queue(&self) -> &Arc<SubscriberQueue> {
        &self.queue
    }

    /// Waits for the next item; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        self.account(&item);
        item
    }

    /// Takes the next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok();
        self.account(&item);
        item
    }

    fn account(&self, item: &Option<Outbound>) {
        if let Some(Outbound::Frame(frame, _)) = item {
            self.queue
                .queued_bytes
                .fetch_sub(frame.len(), Ordering::Relaxed);
        }
    }

    /// Whether the queue overflowed: queued data is to be discarded and only
    /// the close frame written.
    pub fn overflowed(&self) -> bool {
        self.queue.state.load(Ordering::Relaxed) == OVERFLOWED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[tokio::test]
    async fn frames_within_budget_are_queued_in_order() {
        let (queue, mut rx) = SubscriberQueue::new(1, 100, Metrics::new());
        let now = Instant::now();
        assert_eq!(queue.push(frame(40), now), PushOutcome::Queued);
        assert_eq!(queue.push(frame(60), now), PushOutcome::Queued);
        assert_eq!(queue.queued_bytes(), 100);
        for want in [40, 60] {
            match rx.recv().await {
                Some(Outbound::Frame(f, _)) => assert_eq!(f.len(), want),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(queue.queued_bytes(), 0);
        assert!(!queue.is_closing());
    }

    #[tokio::test]
    async fn overflow_closes_once_as_slow_consumer() {
        let metrics = Metrics::new();
        let (queue, mut rx) = SubscriberQueue::new(1, 100, metrics.clone());
        let now = Instant::now();
        assert_eq!(queue.push(frame(80), now), PushOutcome::Queued);
        assert_eq!(queue.push(frame(30), now), PushOutcome::Overflowed);
        assert_eq!(queue.push(frame(1), now), PushOutcome::Closed);
        assert!(queue.closing().is_cancelled());
        assert!(rx.overflowed());
        assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
        assert!(matches!(rx.recv().await, Some(Outbound::Frame(..))));
        assert!(matches!(
            rx.recv().await,
            Some(Outbound::Close { code: 4001, .. })
        ));
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn close_is_queued_after_data_and_only_once() {
        let (queue, mut rx) = SubscriberQueue::new(1, 100, Metrics::new());
        queue.push(frame(10), Instant::now());
        queue.close(CloseCode::GoingAway);
        queue.close(CloseCode::ProtocolError);
        assert!(matches!(rx.recv().await, Some(Outbound::Frame(..))));
        assert!(matches!(
            rx.recv().await,
            Some(Outbound::Close { code: 1001, .. })
        ));
        assert!(rx.try_recv().is_none());
        assert!(!rx.overflowed());
    }
}
