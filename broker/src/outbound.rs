//! The outbound queue of one WebSocket connection: everything the broker
//! sends to it (replies, pongs, pings, deliveries and the close frame).
//!
//! Publishers on any task push already-encoded frames ([`Bytes`], shared by
//! every subscriber) with [`OutboundQueue::push`]; the connection's writer
//! drains them in batches ([`OutboundReceiver`]). The queue is a list
//! of segments (NATS-style): a push is an atomic add on the byte counter
//! plus an append under a short critical section (a mutex held for one
//! `VecDeque::push_back` of a 32-byte [`Item`]; the queuing time, the close
//! frame and rate-limit re-plans are kept once per list), and only the push
//! that finds the list empty wakes the writer. The writer takes the whole list in one swap
//! ([`OutboundReceiver::take_all`], the two lists trade their capacity, so
//! the steady state allocates nothing) and writes the frames with vectored
//! writes, without copying them ([`crate::writer`]). Queued bytes count
//! until they are written, so a frame the writer holds still counts against
//! the budget.
//!
//! The queue is bounded in bytes, and [`OutboundQueue::push`] is the one
//! place that decides what happens to a frame that does not fit, according
//! to its topic's slow-consumer policy ([`SlowConsumerPolicy`]):
//!
//! * `disconnect`: over the budget, the connection is closed with 4001.
//! * `drop-oldest` and `conflate`: once the list holds half the budget,
//!   the topic's frames are diverted into a per-topic *lane* (a small queue
//!   beside the list; a token in the list marks its place). A
//!   drop-oldest lane sheds its oldest frames to stay within the other half
//!   of the budget; a conflate lane keeps only the newest frame. While a lane
//!   is non-empty all of its topic's frames go through it, so per-topic order
//!   holds. Only when the lanes alone exceed their half is the connection
//!   closed.
//! * A subscription with `max_rate` sends every frame of its topics through
//!   a rate-limited lane that releases at most that many frames per second,
//!   always the newest.
//!
//! Lanes are behind a mutex, taken only by connections that have at least
//! one active lane; every other connection stays on the common path (no lanes mutex).
//!
//! A subscriber is a *slow consumer* when its own socket does not drain:
//! bytes over the high-water mark (half the budget) and no write progress
//! for `slow_consumer_timeout` ([`crate::progress`]). Such a connection is
//! closed with 4001 on its next disconnect-policy push, whatever the budget
//! still allows; the budget itself stays the hard memory bound. A queue over
//! its high-water mark whose socket *is* draining only asks for producer
//! backpressure ([`OutboundQueue::needs_backpressure`],
//! [`OutboundQueue::drained`]): the broker is behind, not the subscriber.
//!
//! [`OutboundQueue::close`] is the one way a connection starts closing,
//! whatever the reason: it queues the close frame behind the data already
//! queued (or, for a slow consumer, instead of it) and cancels the
//! connection's `closing` token so the reader stops. The state machine
//! behind it is [`crate::closing::CloseState`].

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use parking_lot::Mutex;
use tickwire_protocol::CloseCode;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::closing::{CloseKind, CloseState};
use crate::metrics::Metrics;
use crate::progress::{DEFAULT_SLOW_CONSUMER_TIMEOUT, WriteProgress};

/// How a connection's outbound queue is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// The byte budget (`outbound_queue_bytes`).
    pub budget: usize,
    /// How long bytes over the high-water mark may sit with no write
    /// progress before the connection is a slow consumer
    /// (`slow_consumer_timeout`).
    pub slow_consumer_timeout: Duration,
    /// Whether the queue may hold publishers back
    /// ([`OutboundQueue::needs_backpressure`]): yes for a WebSocket, whose
    /// writer drains it; no for an SSE or long-poll session, drained only
    /// as its client asks, which its budget and its topics' slow-consumer
    /// policies bound as before.
    pub backpressure: bool,
}

impl QueueSettings {
    /// `budget` bytes and the default slow-consumer timeout.
    pub fn with_budget(budget: usize) -> Self {
        QueueSettings {
            budget,
            slow_consumer_timeout: DEFAULT_SLOW_CONSUMER_TIMEOUT,
            backpressure: true,
        }
    }
}

/// What a subscriber's queue does with a frame of this topic that does not
/// fit its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the connection with 4001 (the default).
    #[default]
    Disconnect,
    /// Drop the oldest queued messages of the topic; the client sees a gap
    /// in sequence numbers.
    DropOldest,
    /// Keep only the newest queued message of the topic.
    Conflate,
}

/// Where a frame comes from, for lane decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameOrigin {
    /// The topic's id (unique for the broker's lifetime).
    pub topic_id: u64,
    /// The topic's slow-consumer policy.
    pub policy: SlowConsumerPolicy,
    /// The subscription's `max_rate`, messages per second.
    pub max_rate: Option<u32>,
    /// The publish may be written straight to a quiet connection's socket
    /// ([`DIRECT_WRITE_AFTER`]): its topic's fan-outs are far enough apart
    /// (the fan-out decides, [`crate::registry`]).
    pub direct: bool,
}

/// One item in a connection's outbound queue.
#[derive(Debug)]
pub enum Outbound {
    /// A complete WebSocket frame and when it was queued.
    Frame(Bytes, Instant),
    /// The frames waiting in this topic's lane are next.
    Lane(u64),
    /// A rate-limited lane became due earlier than the writer planned.
    Timer,
    /// Write a close frame with this code and reason, then stop.
    Close {
        /// The close code.
        code: u16,
        /// The reason text (an operator's, for a server disconnect).
        reason: Cow<'static, str>,
    },
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The frame is queued (possibly in a lane, possibly replacing an older
    /// frame of its topic).
    Queued,
    /// The frame did not fit the budget; the connection is being closed as
    /// a slow consumer.
    Overflowed,
    /// The connection is closing; the frame was discarded.
    Closed,
}

#[derive(Debug, Default)]
struct Lane {
    frames: VecDeque<(Bytes, Instant)>,
    token_queued: bool,
    rate: Option<u32>,
    next_release: Option<Instant>,
}

impl Lane {
    fn interval(&self) -> Option<Duration> {
        self.rate.map(|r| Duration::from_secs(1) / r)
    }
}

#[derive(Debug, Default)]
struct Lanes {
    by_topic: HashMap<u64, Lane>,
    bytes: usize,
    due: BinaryHeap<Reverse<(Instant, u64)>>,
}

/// One entry of the segment list: a frame or a lane's place, 32 bytes (a
/// [`Bytes`], the lane id fitting beside its niche). What an entry does not
/// need to carry lives once per list (`List`): when the oldest frame was
/// queued, the close frame, a rate-limit re-plan.
#[derive(Debug)]
pub enum Item {
    /// A complete WebSocket frame.
    Frame(Bytes),
    /// The frames waiting in this topic's lane are next.
    Lane(u64),
}

/// The close frame a connection ends with.
#[derive(Debug)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The reason text (an operator's, for a server disconnect).
    pub reason: Cow<'static, str>,
}

/// The segment list behind the queue's mutex.
#[derive(Debug, Default)]
struct List {
    items: VecDeque<Item>,
    /// When the oldest frame of `items` was queued: set by the push that
    /// finds the list empty (one clock value per list, not per frame).
    oldest: Option<Instant>,
    /// A rate-limited lane became due earlier than the writer planned.
    retime: bool,
    /// The close frame, once queued (boxed: rare, and out of the way).
    close: Option<Box<CloseFrame>>,
    /// How many of `items` precede the close frame; later ones were pushed
    /// in a race with it and are never written.
    close_after: usize,
    /// The connection's socket, for direct writes (plain TCP only; see
    /// [`OutboundQueue::attach_socket`]).
    socket: Option<Arc<TcpStream>>,
    /// Since when the writer has had nothing to do (it found the list empty
    /// and waits for a wake-up), or when the last direct write went out;
    /// `None` while the writer is busy.
    quiet_since: Option<Instant>,
    /// The first item is the rest of a frame a direct write began: it must
    /// be finished before anything else, even a close frame.
    started: bool,
}

impl Item {
    /// The bytes it counts in the queue (a lane's place counts none).
    fn len(&self) -> usize {
        match self {
            Item::Frame(frame) => frame.len(),
            Item::Lane(_) => 0,
        }
    }
}

impl List {
    /// Whether nothing at all is queued (the writer may be waiting).
    fn is_idle(&self) -> bool {
        self.items.is_empty() && !self.retime && self.close.is_none()
    }

    /// Appends `item` queued at `queued_at`; returns whether the list was
    /// idle before (then the writer must be woken).
    fn append(&mut self, item: Item, queued_at: Instant) -> bool {
        if self.items.is_empty() {
            self.oldest = Some(queued_at);
        }
        let was_idle = self.is_idle();
        self.items.push_back(item);
        was_idle
    }

    /// Writes `frame` to the socket right away, in the pushing task, when
    /// the connection has been quiet for [`DIRECT_WRITE_AFTER`]: nothing
    /// queued, the writer waiting with nothing half-written, and no write
    /// in that time. Returns how many bytes went out (possibly only part of
    /// the frame); `None` if it did not write (busy, TLS, a full socket
    /// buffer or a failed socket: the writer then takes the frame, and sees
    /// the failure). Called under the list's lock, so nothing can be queued
    /// or taken meanwhile: order holds.
    fn write_now(&mut self, frame: &[u8], now: Instant) -> Option<usize> {
        let quiet = self.quiet_since?;
        if !self.is_idle() || now.saturating_duration_since(quiet) < DIRECT_WRITE_AFTER {
            return None;
        }
        let written = self.socket.as_ref()?.try_write(frame).ok()?;
        self.quiet_since = Some(now);
        self.started = written < frame.len();
        Some(written)
    }
}

/// What the writer took from the queue besides its items
/// ([`OutboundReceiver::take_all`]).
#[derive(Debug, Default)]
pub struct Taken {
    /// When the oldest taken frame was queued.
    pub oldest: Option<Instant>,
    /// The rate-limited lanes need planning again.
    pub retime: bool,
    /// The close frame, after the first `.1` taken items (the rest raced
    /// with it: never written).
    pub close: Option<(Box<CloseFrame>, usize)>,
    /// The first taken item is the rest of a frame a direct write began.
    pub started: bool,
}

/// A connection quiet for at least this long (nothing queued, no write) has
/// its next frame written by the pushing task itself, with no wake-up of
/// the connection's task: the low-rate case (a dashboard gets a message
/// every few tens of milliseconds), where a wake-up and a poll per message
/// cost more than the write. A busier connection never qualifies, so
/// under load frames still gather into vectored writes.
pub const DIRECT_WRITE_AFTER: Duration = Duration::from_millis(2);

/// A list that grew past this many items in a burst is released once the
/// load is light again, so an idle connection keeps only a small one.
pub const IDLE_ITEMS_KEEP: usize = 16;

/// The sending side of a connection's outbound queue, shared (in an [`Arc`])
/// by the topic registry and the connection itself.
#[derive(Debug)]
pub struct OutboundQueue {
    id: u64,
    /// The queued items, in order; allocated on the first push.
    list: Mutex<List>,
    /// Wakes the writer when a push finds `items` empty (a stored permit
    /// if the writer is busy).
    wake: Notify,
    queued_bytes: AtomicUsize,
    budget: usize,
    close_state: CloseState,
    active_lanes: AtomicUsize,
    lanes: Mutex<Lanes>,
    urgent: Notify,
    /// When the writer last moved bytes (idle while it waits for data).
    progress: WriteProgress,
    slow_consumer_timeout: Duration,
    /// Whether it may hold publishers back ([`QueueSettings::backpressure`]).
    backpressure: bool,
    /// Wakes [`OutboundQueue::drained`] waiters after writes, only while
    /// `drain_waiters` says there are some.
    drain: Notify,
    drain_waiters: AtomicUsize,
    metrics: Metrics,
    /// Set when the connection ends in a way that releases its presence at
    /// once (a client close 1000, a server disconnect) instead of after
    /// `presence_grace`.
    clean_end: AtomicBool,
}

/// The receiving side, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    queue: Arc<OutboundQueue>,
}

impl OutboundQueue {
    /// Creates the queue of connection `id`, bounded to `budget` bytes,
    /// with the default slow-consumer timeout.
    pub fn new(id: u64, budget: usize, metrics: Metrics) -> (Arc<Self>, OutboundReceiver) {
        Self::with_settings(id, QueueSettings::with_budget(budget), metrics)
    }

    /// Creates the queue of connection `id` bounded by `settings`.
    pub fn with_settings(
        id: u64,
        settings: QueueSettings,
        metrics: Metrics,
    ) -> (Arc<Self>, OutboundReceiver) {
        let queue = Arc::new(OutboundQueue {
            id,
            list: Mutex::new(List::default()),
            wake: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            budget: settings.budget,
            close_state: CloseState::new(),
            active_lanes: AtomicUsize::new(0),
            lanes: Mutex::new(Lanes::default()),
            urgent: Notify::new(),
            progress: WriteProgress::new(),
            slow_consumer_timeout: settings.slow_consumer_timeout,
            backpressure: settings.backpressure,
            drain: Notify::new(),
            drain_waiters: AtomicUsize::new(0),
            metrics,
            clean_end: AtomicBool::new(false),
        });
        let receiver = OutboundReceiver {
            queue: queue.clone(),
        };
        (queue, receiver)
    }

    /// The connection id, unique for the broker's lifetime.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes currently queued (list and lanes, including what the writer
    /// took but has not written yet).
    pub fn queued_bytes(&self) -> usize {
        let lanes = if self.has_lanes() {
            self.lanes.lock().bytes
        } else {
            0
        };
        self.queued_bytes.load(Ordering::Relaxed) + lanes
    }

    /// The byte budget (`outbound_queue_bytes`).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Closes the connection as a slow consumer (4001, queued data
    /// discarded) because frames meant for it outgrew its budget before
    /// they could be queued (held during a replay).
    pub fn overflow_held(&self) -> PushOutcome {
        self.overflow()
    }

    /// How long bytes have been queued with no write progress at `now`:
    /// `None` when nothing is queued or the writer is waiting for data.
    pub fn stalled_for(&self, now: Instant) -> Option<Duration> {
        let since = self.progress.since(now)?;
        (self.queued_bytes() > 0).then_some(since)
    }

    /// Whether the socket has not drained for `slow_consumer_timeout`.
    fn stalled(&self, now: Instant) -> bool {
        self.stalled_for(now)
            .is_some_and(|d| d >= self.slow_consumer_timeout)
    }

    /// The high-water mark: half the budget.
    fn high_water(&self) -> usize {
        self.budget / 2
    }

    /// Whether producers should slow down for this subscriber: more than
    /// half its budget is queued while its socket is draining (the broker is
    /// behind, not the subscriber). A stalled socket does not count: that
    /// subscriber is a slow consumer and its topic's policy handles it.
    pub fn needs_backpressure(&self) -> bool {
        self.backpressure
            && self.queued_bytes() > self.high_water()
            && !self.is_closing()
            && !self.stalled(Instant::now())
    }

    /// Resolves once the queue has drained to a quarter of its budget, the
    /// connection starts closing, or the queue no longer needs backpressure
    /// because its socket stalled past `slow_consumer_timeout`. Cancel safe.
    pub async fn drained(&self) {
        let low = self.budget / 4;
        let _waiting = DrainWaiter::new(&self.drain_waiters);
        loop {
            let notified = self.drain.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_below(low) || self.is_closing() {
                return;
            }
            let now = Instant::now();
            let waited = self.stalled_for(now).unwrap_or_default();
            let Some(left) = self.slow_consumer_timeout.checked_sub(waited) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = self.closing().cancelled() => return,
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Whether at most `low` bytes are queued and no drop-oldest or
    /// conflate lane is open: a delivery queued now joins the socket's
    /// queue, so a producer resuming now costs a reading subscriber nothing
    /// (a lane still open would replace or drop its next frames).
    fn is_below(&self, low: usize) -> bool {
        self.queued_bytes() <= low
            && (!self.has_lanes()
                || self
                    .lanes
                    .lock()
                    .by_topic
                    .values()
                    .all(|l| l.rate.is_some()))
    }

    /// The writer starts on queued data, or finished a write, at `now`.
    /// Wakes [`OutboundQueue::drained`] waiters, if any.
    pub fn record_progress(&self, now: Instant) {
        self.progress.record(now);
        if self.drain_waiters.load(Ordering::Acquire) > 0 {
            self.drain.notify_waiters();
        }
    }

    /// The writer waits for data: the stall clock stops.
    pub fn record_idle(&self) {
        self.progress.set_idle();
    }

    /// Whether any topic of this connection currently uses a lane.
    pub fn has_lanes(&self) -> bool {
        self.active_lanes.load(Ordering::Acquire) > 0
    }

    /// Cancelled once the connection starts closing, for any reason.
    pub fn closing(&self) -> &CancellationToken {
        self.close_state.token()
    }

    /// Whether the connection has started closing.
    pub fn is_closing(&self) -> bool {
        !self.close_state.is_open()
    }

    /// Queues a control frame or reply (never diverted, never dropped except
    /// by overflow). Replies are urgent: they cut a coalescing pause short.
    pub fn push(&self, frame: Bytes, queued_at: Instant) -> PushOutcome {
        let outcome = self.push_direct(frame, queued_at, self.budget, true);
        self.urgent.notify_one();
        outcome
    }

    /// Queues a `JOIN`/`LEAVE` event: in order with the deliveries queued
    /// on the common path, within the byte budget (over it the
    /// connection is closed as a slow consumer), never diverted into a
    /// lane, so never conflated, dropped or rate-limited.
    pub fn push_event(&self, frame: Bytes, queued_at: Instant) -> PushOutcome {
        self.push_direct(frame, queued_at, self.budget, false)
    }

    /// Whether the connection ended in a way that releases its presence
    /// entries at once: the client's close frame with 1000, or a server
    /// disconnect ([`OutboundQueue::disconnect`]).
    pub fn ended_cleanly(&self) -> bool {
        self.clean_end.load(Ordering::Acquire)
    }

    /// Resolves when a reply or control frame was queued since the last call.
    pub async fn urgent(&self) {
        self.urgent.notified().await;
    }

    /// Queues a delivery of a topic, applying its slow-consumer policy and
    /// the subscription's rate limit.
    pub fn push_delivery(
        &self,
        frame: Bytes,
        queued_at: Instant,
        origin: FrameOrigin,
    ) -> PushOutcome {
        if origin.max_rate.is_none() && self.active_lanes.load(Ordering::Acquire) == 0 {
            let half = self.budget / 2;
            match origin.policy {
                SlowConsumerPolicy::Disconnect => {
                    return self.push_direct(frame, queued_at, self.budget, origin.direct);
                }
                // Lane policies divert once the list holds half the budget.
                _ if self.queued_bytes.load(Ordering::Relaxed) + frame.len() <= half => {
                    return self.push_direct(frame, queued_at, half, origin.direct);
                }
                _ => {}
            }
        }
        self.push_slow(frame, queued_at, origin)
    }

    /// The common path: an append within `limit` bytes, else overflow.
    fn push_direct(
        &self,
        frame: Bytes,
        queued_at: Instant,
        limit: usize,
        direct: bool,
    ) -> PushOutcome {
        if !self.close_state.is_open() {
            return PushOutcome::Closed;
        }
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // Over the high-water mark (rare), a socket that has not drained for
        // the slow-consumer timeout is cut before the budget is full.
        if before + len > limit
            || (before + len > self.high_water() && self.stalled(Instant::now()))
        {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return self.overflow();
        }
        self.enqueue_frame(frame, queued_at, direct);
        PushOutcome::Queued
    }

    /// Appends a frame, or writes it straight to a quiet connection's socket
    /// ([`List::write_now`]) if `direct` allows; the push that finds the
    /// list empty wakes the writer.
    fn enqueue_frame(&self, mut frame: Bytes, queued_at: Instant, direct: bool) {
        let was_idle = {
            let mut list = self.list.lock();
            if direct && list.quiet_since.is_some() && !self.has_lanes() {
                if let Some(written) = list.write_now(&frame, queued_at) {
                    self.queued_bytes.fetch_sub(written, Ordering::Relaxed);
                    self.metrics.bytes_out.inc_by(written as u64);
                    if written == frame.len() {
                        return;
                    }
                    frame.advance(written);
                }
            }
            list.append(Item::Frame(frame), queued_at)
        };
        if was_idle {
            self.wake.notify_one();
        }
    }

    /// Lets pushes write to the connection's `socket` directly while the
    /// connection is quiet ([`DIRECT_WRITE_AFTER`]).
    pub fn attach_socket(&self, socket: Arc<TcpStream>) {
        self.list.lock().socket = Some(socket);
    }

    /// Ends direct writes: the connection is over, and the queue (which
    /// topics may still hold for a moment) must not keep its socket open.
    pub fn detach_socket(&self) {
        let mut list = self.list.lock();
        list.socket = None;
        list.quiet_since = None;
    }

    /// Appends `item`; the push that finds the list empty wakes the writer.
    fn enqueue(&self, item: Item, queued_at: Instant) {
        let was_idle = self.list.lock().append(item, queued_at);
        if was_idle {
            self.wake.notify_one();
        }
    }

    /// Changes the list under its lock; wakes the writer if it was idle.
    fn mark(&self, change: impl FnOnce(&mut List)) {
        let was_idle = {
            let mut list = self.list.lock();
            let was_idle = list.is_idle();
            change(&mut list);
            was_idle
        };
        if was_idle {
            self.wake.notify_one();
        }
    }

    fn overflow(&self) -> PushOutcome {
        if self.begin_close(CloseKind::Overflow, CloseCode::SlowConsumer) {
            PushOutcome::Overflowed
        } else {
            PushOutcome::Closed
        }
    }

    /// The lane path, under the lanes mutex.
    fn push_slow(&self, frame: Bytes, queued_at: Instant, origin: FrameOrigin) -> PushOutcome {
        if !self.close_state.is_open() {
            return PushOutcome::Closed;
        }
        let mut guard = self.lanes.lock();
        let lane_budget = self.budget / 2;
        let len = frame.len();
        let now = Instant::now();
        let lanes = &mut *guard;
        let lane = match lanes.by_topic.entry(origin.topic_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let over = self.queued_bytes.load(Ordering::Relaxed) + len > lane_budget;
                let disconnect = origin.policy == SlowConsumerPolicy::Disconnect;
                if origin.max_rate.is_none() && (disconnect || !over) {
                    // Channel and lanes together stay within the budget.
                    return self.push_direct(
                        frame,
                        queued_at,
                        self.budget.saturating_sub(lanes.bytes),
                        false,
                    );
                }
                self.active_lanes.fetch_add(1, Ordering::AcqRel);
                v.insert(Lane {
                    rate: origin.max_rate,
                    ..Lane::default()
                })
            }
        };
        lane.rate = origin.max_rate;

        // A rate-limited lane that is idle and due sends straight through.
        if let Some(interval) = lane.interval() {
            let due = lane.next_release.is_none_or(|t| t <= now);
            if due && lane.frames.is_empty() && !lane.token_queued {
                lane.next_release = Some(now + interval);
                lanes.due.push(Reverse((now + interval, origin.topic_id)));
                let limit = self.budget.saturating_sub(lanes.bytes);
                return self.push_direct(frame, queued_at, limit, false);
            }
        }

        let was_empty = lane.frames.is_empty();
        let conflate = lane.rate.is_some() || origin.policy == SlowConsumerPolicy::Conflate;
        if conflate {
            for (old, _) in lane.frames.drain(..) {
                lanes.bytes -= old.len();
                self.metrics.conflated.inc();
            }
        }
        lane.frames.push_back((frame, queued_at));
        lanes.bytes += len;
        if origin.policy == SlowConsumerPolicy::DropOldest {
            while lanes.bytes > lane_budget && lane.frames.len() > 1 {
                if let Some((old, _)) = lane.frames.pop_front() {
                    lanes.bytes -= old.len();
                    self.metrics.dropped.inc();
                }
            }
        }
        if lanes.bytes > lane_budget {
            return self.overflow();
        }
        if lane.rate.is_some() {
            // The writer releases it when due; plan that once per fill.
            if let (true, Some(release)) = (was_empty, lane.next_release) {
                let earliest = lanes.due.peek().map(|Reverse((t, _))| *t);
                lanes.due.push(Reverse((release, origin.topic_id)));
                if earliest.is_none_or(|t| release < t) {
                    self.mark(|list| list.retime = true);
                }
            }
        } else if !lane.token_queued {
            lane.token_queued = true;
            self.enqueue(Item::Lane(origin.topic_id), queued_at);
        }
        PushOutcome::Queued
    }

    /// Starts closing the connection with `code`, after the frames already
    /// queued. Later calls (and pushes) are ignored.
    pub fn close(&self, code: CloseCode) {
        self.begin_close(CloseKind::Graceful, code);
    }

    /// Answers the peer's close frame by echoing its code (1000 when it sent
    /// none), as RFC 6455 asks.
    pub fn echo_close(&self, peer_code: Option<u16>) {
        if peer_code == Some(CloseCode::Normal.as_u16()) {
            self.clean_end.store(true, Ordering::Release);
        }
        if self.close_state.begin(CloseKind::Graceful) {
            self.send_close(
                peer_code.unwrap_or(CloseCode::Normal.as_u16()),
                Cow::Borrowed(""),
            );
        }
    }

    /// Closes the connection on the operator's request (a server
    /// disconnect) with `code` (4007 or 4100-4999) and `reason`, after the
    /// frames already queued; its presence entries leave at once. Returns
    /// whether this call started the close.
    pub fn disconnect(&self, code: u16, reason: &str) -> bool {
        self.clean_end.store(true, Ordering::Release);
        if !self.close_state.begin(CloseKind::Graceful) {
            return false;
        }
        self.metrics.close_disconnect(code);
        self.send_close(code, Cow::Owned(reason.to_owned()));
        true
    }

    /// Marks the connection closing without a close frame, because the
    /// socket is already unusable.
    pub fn abandon(&self) {
        self.close_state.begin(CloseKind::Graceful);
        self.close_state.cancel();
    }

    fn send_close(&self, code: u16, reason: Cow<'static, str>) {
        let close = Box::new(CloseFrame { code, reason });
        self.mark(|list| {
            list.close_after = list.items.len();
            list.close = Some(close);
        });
        self.close_state.cancel();
    }

    fn begin_close(&self, kind: CloseKind, code: CloseCode) -> bool {
        if !self.close_state.begin(kind) {
            return false;
        }
        self.metrics.close(code);
        self.send_close(code.as_u16(), Cow::Borrowed(code.reason()));
        true
    }
}

/// Counts one [`OutboundQueue::drained`] waiter while it lives.
struct DrainWaiter<'a>(&'a AtomicUsize);

impl<'a> DrainWaiter<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        DrainWaiter(count)
    }
}

impl Drop for DrainWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OutboundReceiver {
    /// The queue this receiver drains.
    pub fn queue(&self) -> &Arc<OutboundQueue> {
        &self.queue
    }

    /// Waits for the next item, one at a time (the fallback transports;
    /// the WebSocket writer takes the whole list with
    /// [`OutboundReceiver::take_all`]). A taken frame no longer counts as
    /// queued. Always `Some`: the queue ends with its close item. Cancel
    /// safe.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            self.queue.wake.notified().await;
        }
    }

    /// Takes the next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut list = self.queue.list.lock();
        if list.retime {
            list.retime = false;
            return Some(Outbound::Timer);
        }
        if list.close.is_some() && list.close_after == 0 {
            // The items left raced with the close: never sent.
            let raced: usize = list.items.drain(..).map(|item| item.len()).sum();
            self.written(raced);
            let close = list.close.take()?;
            let CloseFrame { code, reason } = *close;
            return Some(Outbound::Close { code, reason });
        }
        let item = list.items.pop_front()?;
        list.close_after = list.close_after.saturating_sub(1);
        let queued_at = list.oldest.unwrap_or_else(Instant::now);
        if list.items.is_empty() {
            list.oldest = None;
        }
        drop(list);
        Some(match item {
            Item::Frame(frame) => {
                self.written(frame.len());
                Outbound::Frame(frame, queued_at)
            }
            Item::Lane(topic_id) => Outbound::Lane(topic_id),
        })
    }

    /// Moves every queued item into `out` (which must be empty; its
    /// capacity becomes the queue's) and returns what comes with them. The
    /// frames still count as queued until [`OutboundReceiver::written`] says
    /// they left.
    pub fn take_all(&mut self, out: &mut VecDeque<Item>) -> Taken {
        debug_assert!(out.is_empty());
        let mut list = self.queue.list.lock();
        std::mem::swap(&mut list.items, out);
        // A light load (a short list) gives back what a burst grew.
        if out.len() <= IDLE_ITEMS_KEEP && list.items.capacity() > IDLE_ITEMS_KEEP {
            list.items = VecDeque::new();
        }
        let close_after = std::mem::take(&mut list.close_after);
        let taken = Taken {
            oldest: list.oldest.take(),
            retime: std::mem::take(&mut list.retime),
            close: list.close.take().map(|close| (close, close_after)),
            started: std::mem::take(&mut list.started),
        };
        // Found nothing: the writer is about to wait, and the connection's
        // quiet time starts (direct writes need a socket to write to).
        let waits = out.is_empty() && !taken.retime && taken.close.is_none();
        list.quiet_since = (waits && list.socket.is_some()).then(Instant::now);
        taken
    }

    /// Waits until a push finds the list empty (possibly already happened:
    /// a stored wake-up). Cancel safe.
    pub async fn wait(&self) {
        self.queue.wake.notified().await;
    }

    /// `n` queued bytes were written (or dropped) by the writer.
    pub fn written(&self, n: usize) {
        self.queue.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    /// `n` bytes taken out of a lane are now held by the writer: they count
    /// as queued until written.
    pub fn holding(&self, n: usize) {
        self.queue.queued_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the queue overflowed: queued data is to be discarded and only
    /// the close frame written.
    pub fn overflowed(&self) -> bool {
        self.queue.close_state.overflowed()
    }

    /// Takes the frames waiting in `topic_id`'s lane, in order.
    pub fn take_lane(&self, topic_id: u64, out: &mut Vec<(Bytes, Instant)>) {
        let mut lanes = self.queue.lanes.lock();
        let lanes = &mut *lanes;
        let Some(lane) = lanes.by_topic.get_mut(&topic_id) else {
            return;
        };
        lane.token_queued = false;
        for item in lane.frames.drain(..) {
            lanes.bytes -= item.0.len();
            out.push(item);
        }
        if lane.rate.is_none() {
            lanes.by_topic.remove(&topic_id);
            self.queue.active_lanes.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Releases the rate-limited lanes that are due at `now` into `out` and
    /// returns when the next one is due.
    pub fn release_due(&self, now: Instant, out: &mut Vec<(Bytes, Instant)>) -> Option<Instant> {
        let mut lanes = self.queue.lanes.lock();
        let lanes = &mut *lanes;
        while let Some(Reverse((at, topic_id))) = lanes.due.peek().copied() {
            if at > now {
                return Some(at);
            }
            lanes.due.pop();
            let Some(lane) = lanes.by_topic.get_mut(&topic_id) else {
                continue;
            };
            if lane.next_release.is_some_and(|t| t > now) {
                continue;
            }
            match (lane.frames.pop_back(), lane.interval()) {
                (Some(item), Some(interval)) => {
                    lanes.bytes -= item.0.len();
                    out.push(item);
                    let next = now + interval;
                    lane.next_release = Some(next);
                    lanes.due.push(Reverse((next, topic_id)));
                }
                _ => {
                    // Idle past its release time: the lane is no longer needed.
                    lanes.by_topic.remove(&topic_id);
                    self.queue.active_lanes.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    fn origin(topic_id: u64, policy: SlowConsumerPolicy, max_rate: Option<u32>) -> FrameOrigin {
        FrameOrigin {
            topic_id,
            policy,
            max_rate,
            direct: false,
        }
    }

    #[tokio::test]
    async fn frames_within_budget_are_queued_in_order() {
        let (queue, mut rx) = OutboundQueue::new(1, 100, Metrics::new());
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
        let (queue, mut rx) = OutboundQueue::new(1, 100, metrics.clone());
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
        let (queue, mut rx) = OutboundQueue::new(1, 100, Metrics::new());
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

    #[test]
    fn a_list_item_takes_32_bytes() {
        assert_eq!(std::mem::size_of::<Item>(), 32);
    }

    #[test]
    fn items_raced_behind_the_close_are_never_taken_and_stop_counting() {
        let (queue, mut rx) = OutboundQueue::new(1, 100, Metrics::new());
        let now = Instant::now();
        queue.push(frame(10), now);
        queue.close(CloseCode::GoingAway);
        // A push that saw the connection open just before the close.
        queue.queued_bytes.fetch_add(20, Ordering::Relaxed);
        queue.enqueue(Item::Frame(frame(20)), now);
        let mut taken = VecDeque::new();
        let extra = rx.take_all(&mut taken);
        assert_eq!(taken.len(), 2);
        assert_eq!(extra.oldest, Some(now));
        let Some((close, before)) = extra.close else {
            panic!("the close came with the list");
        };
        assert_eq!((close.code, before), (1001, 1));

        // The fallbacks' one-at-a-time reading drops them too.
        let (queue, mut rx) = OutboundQueue::new(2, 100, Metrics::new());
        queue.push(frame(10), now);
        queue.close(CloseCode::GoingAway);
        queue.queued_bytes.fetch_add(20, Ordering::Relaxed);
        queue.enqueue(Item::Frame(frame(20)), now);
        assert!(matches!(rx.try_recv(), Some(Outbound::Frame(f, _)) if f.len() == 10));
        assert!(matches!(
            rx.try_recv(),
            Some(Outbound::Close { code: 1001, .. })
        ));
        assert_eq!(queue.queued_bytes(), 0);
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn conflate_keeps_the_newest_frame_per_topic_once_half_full() {
        let metrics = Metrics::new();
        let (queue, mut rx) = OutboundQueue::new(1, 1000, metrics.clone());
        let now = Instant::now();
        let c = |t| origin(t, SlowConsumerPolicy::Conflate, None);
        // Up to half the budget goes straight to the list.
        for _ in 0..5 {
            assert_eq!(
                queue.push_delivery(frame(100), now, c(1)),
                PushOutcome::Queued
            );
        }
        // Then each topic keeps only its newest frame.
        for len in [101, 102, 103] {
            assert_eq!(
                queue.push_delivery(frame(len), now, c(1)),
                PushOutcome::Queued
            );
        }
        assert_eq!(
            queue.push_delivery(frame(50), now, c(2)),
            PushOutcome::Queued
        );
        assert_eq!(metrics.conflated.get(), 2);
        let mut direct = 0;
        let mut lanes = Vec::new();
        while let Some(item) = rx.try_recv() {
            match item {
                Outbound::Frame(..) => direct += 1,
                Outbound::Lane(topic) => rx.take_lane(topic, &mut lanes),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(direct, 5);
        let lens: Vec<usize> = lanes.iter().map(|(f, _)| f.len()).collect();
        assert_eq!(lens, vec![103, 50]);
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn drop_oldest_sheds_old_frames_of_the_topic() {
        let metrics = Metrics::new();
        let (queue, mut rx) = OutboundQueue::new(1, 1000, metrics.clone());
        let now = Instant::now();
        let d = origin(7, SlowConsumerPolicy::DropOldest, None);
        for _ in 0..5 {
            queue.push_delivery(frame(100), now, d);
        }
        for _ in 0..8 {
            assert_eq!(queue.push_delivery(frame(100), now, d), PushOutcome::Queued);
        }
        // The lane holds at most half the budget: 5 frames, 3 dropped.
        assert_eq!(metrics.dropped.get(), 3);
        assert_eq!(queue.queued_bytes(), 1000);
        let mut lanes = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Outbound::Lane(topic) = item {
                rx.take_lane(topic, &mut lanes);
            }
        }
        assert_eq!(lanes.len(), 5);
    }

    #[test]
    fn disconnect_topics_never_take_a_lane_even_beside_active_lanes() {
        let metrics = Metrics::new();
        let (queue, _rx) = OutboundQueue::new(1, 1000, metrics.clone());
        let now = Instant::now();
        for _ in 0..6 {
            queue.push_delivery(
                frame(100),
                now,
                origin(1, SlowConsumerPolicy::Conflate, None),
            );
        }
        assert!(queue.has_lanes());
        // A disconnect-policy topic still fills the whole budget, then closes.
        let d = origin(2, SlowConsumerPolicy::Disconnect, None);
        for _ in 0..4 {
            assert_eq!(queue.push_delivery(frame(100), now, d), PushOutcome::Queued);
        }
        assert_eq!(
            queue.push_delivery(frame(100), now, d),
            PushOutcome::Overflowed
        );
        assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
    }

    fn settings(budget: usize, timeout_ms: u64) -> QueueSettings {
        QueueSettings {
            budget,
            slow_consumer_timeout: Duration::from_millis(timeout_ms),
            backpressure: true,
        }
    }

    fn disconnect() -> FrameOrigin {
        origin(1, SlowConsumerPolicy::Disconnect, None)
    }

    #[test]
    fn the_stall_clock_runs_only_while_bytes_wait_for_a_busy_writer() {
        let (queue, _rx) = OutboundQueue::with_settings(1, settings(1000, 2000), Metrics::new());
        let now = Instant::now();
        assert_eq!(queue.stalled_for(now), None, "nothing queued");
        queue.push(frame(10), now);
        assert_eq!(queue.stalled_for(now), None, "the writer is idle");
        queue.record_progress(now);
        let later = now + Duration::from_millis(700);
        let stalled = queue.stalled_for(later).expect("bytes and a busy writer");
        assert!(stalled >= Duration::from_millis(699));
        queue.record_idle();
        assert_eq!(queue.stalled_for(later), None);
    }

    #[test]
    fn a_draining_queue_over_its_high_water_mark_asks_for_backpressure() {
        let (queue, mut rx) =
            OutboundQueue::with_settings(1, settings(1000, 60_000), Metrics::new());
        let now = Instant::now();
        queue.record_progress(now);
        for _ in 0..5 {
            queue.push_delivery(frame(100), now, disconnect());
        }
        assert!(!queue.needs_backpressure(), "exactly half is not over it");
        queue.push_delivery(frame(100), now, disconnect());
        assert!(queue.needs_backpressure());
        rx.try_recv();
        assert!(!queue.needs_backpressure());
        queue.close(CloseCode::GoingAway);
        queue.push(frame(1), now);
        assert!(!queue.needs_backpressure(), "a closing queue never does");
    }

    #[test]
    fn a_stalled_socket_over_the_high_water_mark_is_a_slow_consumer() {
        let metrics = Metrics::new();
        // A zero timeout: any busy writer with bytes queued counts as stalled.
        let (queue, rx) = OutboundQueue::with_settings(1, settings(1000, 0), metrics.clone());
        let now = Instant::now();
        queue.record_progress(now);
        for _ in 0..5 {
            assert_eq!(
                queue.push_delivery(frame(100), now, disconnect()),
                PushOutcome::Queued
            );
        }
        assert!(!queue.needs_backpressure(), "stalled: no backpressure");
        assert_eq!(
            queue.push_delivery(frame(100), now, disconnect()),
            PushOutcome::Overflowed,
            "over the high-water mark with no progress: cut within budget"
        );
        assert!(rx.overflowed());
        assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
    }

    #[test]
    fn an_idle_writer_is_never_blamed_only_the_budget_binds() {
        let (queue, _rx) = OutboundQueue::with_settings(1, settings(1000, 0), Metrics::new());
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                queue.push_delivery(frame(100), now, disconnect()),
                PushOutcome::Queued
            );
        }
        assert_eq!(
            queue.push_delivery(frame(1), now, disconnect()),
            PushOutcome::Overflowed
        );
    }

    #[test]
    fn lane_policies_keep_their_lanes_when_stalled() {
        let metrics = Metrics::new();
        let (queue, _rx) = OutboundQueue::with_settings(1, settings(1000, 0), metrics.clone());
        let now = Instant::now();
        queue.record_progress(now);
        let c = origin(2, SlowConsumerPolicy::Conflate, None);
        for _ in 0..10 {
            assert_eq!(queue.push_delivery(frame(100), now, c), PushOutcome::Queued);
        }
        assert!(!queue.is_closing());
        assert_eq!(metrics.conflated.get(), 4);
    }

    /// A queue of budget 1000 holding 600 bytes, its writer busy.
    fn backed_up(timeout_ms: u64) -> (Arc<OutboundQueue>, OutboundReceiver) {
        let (queue, rx) =
            OutboundQueue::with_settings(1, settings(1000, timeout_ms), Metrics::new());
        let now = Instant::now();
        queue.record_progress(now);
        for _ in 0..6 {
            queue.push(frame(100), now);
        }
        (queue, rx)
    }

    #[tokio::test]
    async fn drained_resolves_at_a_quarter_of_the_budget() {
        use futures::FutureExt;
        let (queue, mut rx) = backed_up(60_000);
        let drained = queue.drained();
        tokio::pin!(drained);
        assert!(drained.as_mut().now_or_never().is_none());
        for _ in 0..3 {
            rx.try_recv();
        }
        queue.record_progress(Instant::now());
        assert!(drained.as_mut().now_or_never().is_none(), "300 > 250");
        rx.try_recv();
        queue.record_progress(Instant::now());
        assert!(drained.now_or_never().is_some());
    }

    #[tokio::test]
    async fn drained_resolves_on_close_and_on_a_stall() {
        use futures::FutureExt;
        let (queue, _rx) = backed_up(60_000);
        let drained = queue.drained();
        tokio::pin!(drained);
        assert!(drained.as_mut().now_or_never().is_none());
        queue.close(CloseCode::GoingAway);
        assert!(drained.now_or_never().is_some());

        let (stalled, _rx) = backed_up(0);
        assert!(stalled.drained().now_or_never().is_some());
    }

    #[test]
    fn max_rate_sends_the_first_then_the_newest_when_due() {
        let metrics = Metrics::new();
        let (queue, mut rx) = OutboundQueue::new(1, 10_000, metrics.clone());
        let now = Instant::now();
        let r = origin(3, SlowConsumerPolicy::Disconnect, Some(4));
        assert_eq!(queue.push_delivery(frame(10), now, r), PushOutcome::Queued);
        for len in 11..20 {
            assert_eq!(queue.push_delivery(frame(len), now, r), PushOutcome::Queued);
        }
        assert!(matches!(rx.try_recv(), Some(Outbound::Frame(f, _)) if f.len() == 10));
        let mut out = Vec::new();
        let next = rx.release_due(now, &mut out).expect("a release is planned");
        assert!(out.is_empty());
        assert!(next > now);
        rx.release_due(next, &mut out);
        let lens: Vec<usize> = out.iter().map(|(f, _)| f.len()).collect();
        assert_eq!(lens, vec![19]);
        assert_eq!(metrics.conflated.get(), 8);
    }

    /// A loopback TCP pair: the broker's side and the client's side.
    async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Arc::new(server), client)
    }

    #[tokio::test]
    async fn a_quiet_connection_is_written_by_the_pusher_a_busy_one_queues() {
        use tokio::io::AsyncReadExt;
        let metrics = Metrics::new();
        let (queue, mut rx) = OutboundQueue::new(1, 10_000, metrics.clone());
        let (server, mut client) = socket_pair().await;
        queue.attach_socket(server);
        let mut taken = VecDeque::new();
        let quiet = Instant::now() + DIRECT_WRITE_AFTER;

        // The writer has not looked yet (it may be busy): the frame queues.
        assert_eq!(queue.push(frame(3), quiet), PushOutcome::Queued);
        rx.take_all(&mut taken);
        assert_eq!(taken.len(), 1);
        rx.written(3);
        taken.clear();

        // The writer found nothing and waits: a push after the quiet time
        // writes straight to the socket, and nothing is queued.
        assert!(rx.take_all(&mut taken).close.is_none() && taken.is_empty());
        let later = Instant::now() + DIRECT_WRITE_AFTER;
        assert_eq!(
            queue.push(Bytes::from_static(b"abc"), later),
            PushOutcome::Queued
        );
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(metrics.bytes_out.get(), 3);
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");
        // The next one, right after a write, is the writer's again.
        assert_eq!(queue.push(frame(4), later), PushOutcome::Queued);
        let taken_with = rx.take_all(&mut taken);
        assert_eq!(taken.len(), 1);
        assert!(!taken_with.started);
        taken.clear();
        rx.written(4);

        // After detaching (the connection ended) nothing is written directly.
        rx.take_all(&mut taken);
        queue.detach_socket();
        let much_later = Instant::now() + DIRECT_WRITE_AFTER * 2;
        assert_eq!(queue.push(frame(5), much_later), PushOutcome::Queued);
        assert_eq!(queue.queued_bytes(), 5);
    }

    #[tokio::test]
    async fn a_direct_write_the_socket_cannot_take_whole_leaves_the_rest_started() {
        let (queue, mut rx) = OutboundQueue::new(1, 64 << 20, Metrics::new());
        let (server, _client) = socket_pair().await;
        queue.attach_socket(server);
        let mut taken = VecDeque::new();
        rx.take_all(&mut taken);
        // Far more than the socket buffers hold, and the client never reads.
        let big = frame(32 << 20);
        let later = Instant::now() + DIRECT_WRITE_AFTER;
        assert_eq!(queue.push(big, later), PushOutcome::Queued);
        let rest = queue.queued_bytes();
        assert!(rest > 0 && rest < 32 << 20, "part written, {rest} left");
        let with = rx.take_all(&mut taken);
        assert!(with.started, "the rest of a begun frame is marked");
        assert!(matches!(&taken.front(), Some(Item::Frame(f)) if f.len() == rest));
    }
}
