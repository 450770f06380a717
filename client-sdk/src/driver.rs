//! The connection task: one per client. It owns the socket, the
//! subscription registry, the table of requests awaiting replies and the
//! offline buffer, so none of them needs a lock.
//!
//! A session is a single `select!` loop over: bytes from the socket, writing
//! queued frames, commands from client handles (only while the outgoing
//! buffer is under its limit: that is the backpressure), notices of dropped
//! subscriptions, and one housekeeping timer (keepalive, request expiry,
//! close deadline). Reading never waits on anything else, so pings are
//! answered and deliveries routed even while writes are stalled.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use tickwire_protocol::message::{Delivery, Position, SubscribedInfo};
use tickwire_protocol::topic::pattern_matches;
use tickwire_protocol::ws::{self, FrameDecoder, Incoming, OpCode, Role};
use tickwire_protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage, SubscribeOptions};

use crate::client::{Shared, encode_frame};
use crate::config::OfflinePolicy;
use crate::error::{Error, Refusal, Result};
use crate::message::Message;
use crate::resume::{Admit, Tracker};
use crate::state::{ConnectionState, Disconnect};
use crate::subscription::{EndReason, SubShared, SubscriptionEvent};
use crate::transport::{Connection, MaybeTlsStream, Target};

/// A connection that lasted this long resets the reconnect attempt counter.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Time allowed to write a final close frame when a session ends.
const FINAL_FLUSH_GRACE: Duration = Duration::from_secs(1);
/// Smallest free space offered to a socket read.
const MIN_READ_SPACE: usize = 16 * 1024;
/// Wake-up period when no deadline is pending.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// A request from a client handle to the connection task.
pub(crate) enum Command {
    /// Add a local subscription; reply once the broker has it.
    Subscribe {
        id: u64,
        pattern: Arc<str>,
        /// The application's `since` positions, if any.
        since: Option<Vec<(String, Position)>>,
        options: BrokerOptions,
        tx: mpsc::Sender<Message>,
        shared: Arc<SubShared>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Send an encoded `PUBLISH` frame.
    Publish {
        frame: Bytes,
        /// The request id inside the frame, for acknowledged publishes.
        id: Option<u64>,
        reply: PublishReply,
    },
    /// Send a `PING` message and reply with the round-trip time.
    Ping {
        reply: oneshot::Sender<Result<Duration>>,
    },
    /// Close the connection and stop.
    Close { reply: oneshot::Sender<()> },
}

/// Subscription options that shape what the broker sends; the same for
/// every local subscription sharing a broker subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BrokerOptions {
    /// Ask for the latest retained message of each topic first.
    pub last: bool,
    /// The broker's per-topic rate limit.
    pub max_rate: Option<u32>,
    /// Renew with `since` after a reconnect.
    pub resume: bool,
}

impl BrokerOptions {
    /// Why a new local subscription with these options and `since` cannot
    /// share the broker subscription of an entry with `self`, if it cannot.
    fn conflict(&self, new: &BrokerOptions, since: bool) -> Option<&'static str> {
        if since || new.last {
            Some(
                "the client already subscribes to this pattern and the broker cannot replay \
                 (`since`) or snapshot (`last`) for a second subscription alone; read both from \
                 one Subscription, or subscribe after dropping the first",
            )
        } else if new.max_rate != self.max_rate {
            Some(
                "the client already subscribes to this pattern with another `max_rate`; \
                 subscriptions of one pattern share one broker subscription",
            )
        } else if new.resume != self.resume {
            Some(
                "the client already subscribes to this pattern with another `resume` setting; \
                 subscriptions of one pattern share one broker subscription",
            )
        } else {
            None
        }
    }
}

/// Who waits for what after a publish.
pub(crate) enum PublishReply {
    /// Nobody: fire-and-forget while connected.
    None,
    /// The caller waits to learn whether the publish was queued or buffered
    /// (sent when the client believed it was offline).
    Accepted(oneshot::Sender<Result<()>>),
    /// The caller waits for the broker's `PUBLISHED` sequence number.
    Acked(oneshot::Sender<Result<u64>>),
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The client is closing: stop for good.
    Shutdown,
    /// The connection was lost: reconnect if the policy allows.
    Lost(Disconnect),
}

// ---------------------------------------------------------------------------
// Requests awaiting replies

enum PendingKind {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
    Publish(oneshot::Sender<Result<u64>>),
    Ping(oneshot::Sender<Result<Duration>>, Instant),
}

impl PendingKind {
    fn name(&self) -> &'static str {
        match self {
            PendingKind::Subscribe(_) => "subscribe",
            PendingKind::Unsubscribe(_) => "unsubscribe",
            PendingKind::Publish(_) => "publish",
            PendingKind::Ping(..) => "ping",
        }
    }

    /// Fails the waiting caller, if any.
    fn fail(self, err: impl FnOnce() -> Error) {
        match self {
            PendingKind::Publish(tx) => {
                let _ = tx.send(Err(err()));
            }
            PendingKind::Ping(tx, _) => {
                let _ = tx.send(Err(err()));
            }
            PendingKind::Subscribe(_) | PendingKind::Unsubscribe(_) => {}
        }
    }
}

/// Requests sent on the current connection, by request id. Subscribes are
/// not timed here (their callers time out on their own and the registry
/// keeps the pattern); everything else expires after the request timeout so
/// the table stays bounded even if the broker never answers.
#[derive(Default)]
struct Pending {
    map: HashMap<u64, PendingKind>,
    /// (deadline, id) in insertion order, which is deadline order.
    timed: VecDeque<(Instant, u64)>,
}

impl Pending {
    fn insert(&mut self, id: u64, kind: PendingKind, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            self.timed.push_back((deadline, id));
        }
        self.map.insert(id, kind);
    }

    fn take(&mut self, id: u64) -> Option<PendingKind> {
        let kind = self.map.remove(&id);
        self.trim();
        kind
    }

    /// Drops finished requests from the front of the deadline queue.
    fn trim(&mut self) {
        while let Some(&(_, id)) = self.timed.front() {
            if self.map.contains_key(&id) {
                break;
            }
            self.timed.pop_front();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timed.front().map(|(deadline, _)| *deadline)
    }

    /// Fails every request whose deadline has passed.
    fn expire(&mut self, now: Instant, after: Duration) {
        while let Some(&(deadline, id)) = self.timed.front() {
            if deadline > now {
                break;
            }
            self.timed.pop_front();
            if let Some(kind) = self.map.remove(&id) {
                let operation = kind.name();
                tracing::debug!("{operation} request {id} got no reply within {after:?}");
                kind.fail(|| Error::Timeout { operation, after });
            }
        }
        self.trim();
    }

    fn drain(&mut self) -> impl Iterator<Item = PendingKind> + '_ {
        self.timed.clear();
        self.map.drain().map(|(_, kind)| kind)
    }
}

// ---------------------------------------------------------------------------
// Subscription registry

/// One local subscription.
struct LocalSub {
    id: u64,
    tx: mpsc::Sender<Message>,
    shared: Arc<SubShared>,
    /// Messages dropped since the last one delivered.
    skipped: u64,
}

/// A local subscription waiting for the broker's confirmation.
struct Waiter {
    sub: LocalSub,
    reply: oneshot::Sender<Result<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerState {
    /// Not sent on the current connection (or there is none).
    Unsent,
    /// `SUBSCRIBE` sent, reply awaited.
    Pending,
    /// The broker confirmed it.
    Active,
}

/// Everything about one distinct pattern: one broker subscription shared by
/// any number of local ones.
struct Entry {
    wildcard: bool,
    state: BrokerState,
    subs: Vec<LocalSub>,
    waiters: Vec<Waiter>,
    options: BrokerOptions,
    /// The application gave `since` positions (used until confirmed).
    initial_since: bool,
    /// The broker confirmed the subscription at least once.
    confirmed: bool,
    /// The request in flight carries `since`.
    sent_since: bool,
    /// `epoch` and `seq` of the latest `SUBSCRIBED` reply.
    info: (Option<u64>, Option<u64>),
    tracker: Tracker,
}

impl Entry {
    fn is_unused(&self) -> bool {
        self.subs.is_empty() && self.waiters.is_empty()
    }

    /// Queues `event` for every local subscription.
    fn emit(&self, event: &SubscriptionEvent) {
        for sub in &self.subs {
            sub.shared.push_event(event.clone());
        }
    }

    /// The options of the next `SUBSCRIBE` for this entry.
    fn request_options(&self) -> SubscribeOptions {
        let since = if self.confirmed {
            self.options.resume.then(|| self.tracker.positions())
        } else {
            self.initial_since.then(|| self.tracker.positions())
        };
        let mut options = SubscribeOptions::default().last(self.options.last);
        options.since = since;
        options.max_rate = self.options.max_rate;
        options
    }
}

/// A local subscription request, as the registry takes it.
struct NewSub {
    waiter: Waiter,
    since: Option<Vec<(String, Position)>>,
    options: BrokerOptions,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<Arc<str>, Entry>,
    /// Keys of `entries` with wildcards, scanned for every delivery; literal
    /// patterns are found by a lookup of the topic.
    wildcards: Vec<Arc<str>>,
    /// Local subscription id → its pattern.
    owners: HashMap<u64, Arc<str>>,
}

impl Registry {
    /// Adds a waiter. Returns whether a `SUBSCRIBE` must be sent (new
    /// pattern). Refuses (answering the waiter) options that conflict with
    /// the pattern's existing broker subscription.
    fn add(&mut self, pattern: Arc<str>, new: NewSub) -> bool {
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

    fn remove(&mut self, pattern: &str) -> Option<Entry> {
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
    fn prune(&mut self) {
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
    fn deliver(&mut self, delivery: Delivery<'_>) {
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
        // An exact subscription keeps the broker from forgetting the topic,
        // so its sequence cannot restart while the client holds one.
        let exact_held = entries
            .get(delivery.topic)
            .is_some_and(|e| !e.wildcard && e.state != BrokerState::Unsent);
        if let Some(entry) = entries.get_mut(delivery.topic)
            && !entry.wildcard
        {
            deliver_to(delivery.topic, entry, &msg, exact_held);
        }
        for pattern in wildcards.iter() {
            if pattern_matches(pattern, delivery.topic)
                && let Some(entry) = entries.get_mut(pattern)
            {
                deliver_to(pattern, entry, &msg, exact_held);
            }
        }
    }
}

fn deliver_to(pattern: &str, entry: &mut Entry, msg: &Message, exact_held: bool) {
    if entry.subs.is_empty() {
        return;
    }
    match entry
        .tracker
        .admit(&msg.topic, msg.seq, msg.time_us, exact_held)
    {
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

// ---------------------------------------------------------------------------
// Offline buffer

struct Buffered {
    frame: Bytes,
    id: Option<u64>,
    ack: Option<oneshot::Sender<Result<u64>>>,
}

impl Buffered {
    /// An acknowledged publish whose caller gave up (timed out or was
    /// cancelled): never sent.
    fn abandoned(&self) -> bool {
        self.ack.as_ref().is_some_and(|ack| ack.is_closed())
    }
}

#[derive(Default)]
struct Offline {
    queue: VecDeque<Buffered>,
    bytes: usize,
}

impl Offline {
    fn fits(&self, len: usize, max_messages: usize, max_bytes: usize) -> bool {
        self.queue.len() < max_messages && self.bytes.saturating_add(len) <= max_bytes
    }

    fn push(&mut self, item: Buffered) {
        self.bytes += item.frame.len();
        self.queue.push_back(item);
    }

    fn pop(&mut self) -> Option<Buffered> {
        let item = self.queue.pop_front()?;
        self.bytes -= item.frame.len();
        Some(item)
    }

    fn drop_abandoned(&mut self) {
        self.queue.retain(|b| !b.abandoned());
        self.bytes = self.queue.iter().map(|b| b.frame.len()).sum();
    }
}

// ---------------------------------------------------------------------------
// One connection's I/O state

struct Session {
    reader: ReadHalf<MaybeTlsStream>,
    writer: WriteHalf<MaybeTlsStream>,
    rbuf: BytesMut,
    out: BytesMut,
    decoder: FrameDecoder,
    needs_flush: bool,
    last_recv: Instant,
    last_sent: Instant,
    last_ping: Instant,
    last_write_progress: Instant,
    /// Set once the client sent its close frame.
    closing_deadline: Option<Instant>,
    /// Write what is queued (a close frame) before dropping the socket.
    flush_on_end: bool,
}

impl Session {
    fn new(conn: Connection, max_message_size: usize) -> Self {
        let (reader, writer) = tokio::io::split(conn.stream);
        let now = Instant::now();
        Session {
            reader,
            writer,
            rbuf: conn.leftover,
            out: BytesMut::with_capacity(16 * 1024),
            decoder: FrameDecoder::new(Role::Client, max_message_size),
            needs_flush: false,
            last_recv: now,
            last_sent: now,
            last_ping: now,
            last_write_progress: now,
            closing_deadline: None,
            flush_on_end: false,
        }
    }

    /// Appends an encoded frame to the outgoing buffer.
    fn queue(&mut self, frame: &[u8]) {
        let now = Instant::now();
        if self.out.is_empty() {
            self.last_write_progress = now;
        }
        self.out.extend_from_slice(frame);
        self.last_sent = now;
    }

    /// Appends a masked control frame.
    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 6);
        ws::write_client_frame(&mut frame, opcode, payload, rand::random());
        self.queue(&frame);
    }

    /// When the next keepalive ping is due: after `interval` without sending
    /// or without receiving, at most once per `interval`.
    fn ping_due(&self, interval: Duration) -> Instant {
        self.last_recv.min(self.last_sent).max(self.last_ping) + interval
    }

    /// Makes room for the next read: at least what the decoder needs to make
    /// progress.
    fn reserve_read(&mut self) {
        let wanted = self.decoder.wanted().max(self.rbuf.len() + 1);
        let spare = (wanted - self.rbuf.len()).max(MIN_READ_SPACE);
        if self.rbuf.capacity() - self.rbuf.len() < spare {
            self.rbuf.reserve(spare);
        }
    }
}

enum Written {
    Bytes(usize),
    Flushed,
}

/// Writes some of `out`, or flushes when it is empty. Cancel-safe.
async fn write_or_flush<W: AsyncWrite + Unpin>(writer: &mut W, out: &[u8]) -> io::Result<Written> {
    if out.is_empty() {
        writer.flush().await?;
        Ok(Written::Flushed)
    } else {
        Ok(Written::Bytes(writer.write(out).await?))
    }
}

// ---------------------------------------------------------------------------
// The task

pub(crate) struct Driver {
    shared: Arc<Shared>,
    target: Arc<Target>,
    state_tx: watch::Sender<ConnectionState>,
    cmd_rx: mpsc::Receiver<Command>,
    drop_rx: mpsc::UnboundedReceiver<u64>,
    drop_open: bool,
    registry: Registry,
    pending: Pending,
    offline: Offline,
    close_replies: Vec<oneshot::Sender<()>>,
    /// Set once closing started: nothing reconnects after that.
    shutting_down: bool,
    /// Why the client closed, when it was not the application's doing.
    final_cause: Option<Disconnect>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        target: Arc<Target>,
        state_tx: watch::Sender<ConnectionState>,
        cmd_rx: mpsc::Receiver<Command>,
        drop_rx: mpsc::UnboundedReceiver<u64>,
    ) -> Self {
        Driver {
            shared,
            target,
            state_tx,
            cmd_rx,
            drop_rx,
            drop_open: true,
            registry: Registry::default(),
            pending: Pending::default(),
            offline: Offline::default(),
            close_replies: Vec::new(),
            shutting_down: false,
            final_cause: None,
        }
    }

    /// Runs sessions and reconnects until the client closes.
    pub(crate) async fn run(mut self, first: Connection) {
        let mut next = Some(first);
        let mut attempt = 0u32;
        while let Some(conn) = next.take() {
            let started = Instant::now();
            let end = self.session(conn).await;
            match end {
                End::Shutdown => break,
                End::Lost(_) if self.shutting_down => break,
                End::Lost(cause) => {
                    tracing::warn!(url = %self.shared.url, "{cause}");
                    self.connection_lost();
                    if started.elapsed() >= STABLE_AFTER {
                        attempt = 0;
                    }
                    next = self.reconnect(&mut attempt, cause).await;
                }
            }
        }
        self.shutdown();
    }

    fn set_state(&self, state: ConnectionState) {
        self.state_tx.send_if_modified(|current| {
            if *current == state {
                false
            } else {
                *current = state;
                true
            }
        });
    }

    fn request_deadline(&self) -> Instant {
        Instant::now() + self.shared.config.request_timeout
    }

    // -- sessions ----------------------------------------------------------

    async fn session(&mut self, conn: Connection) -> End {
        let mut s = Session::new(conn, self.shared.config.max_message_size);
        self.on_connected(&mut s);
        let sleep = tokio::time::sleep_until(self.next_deadline(&s));
        tokio::pin!(sleep);
        let write_limit = self.shared.config.write_buffer_limit;
        let end = loop {
            if let Some(end) = self.process_input(&mut s) {
                break end;
            }
            s.reserve_read();
            // Not biased: under a flood of deliveries reads are always
            // ready, and writes (pongs, publishes) must still get their turn.
            tokio::select! {
                read = s.reader.read_buf(&mut s.rbuf) => match read {
                    Ok(0) => break self.lost_stream("broker closed the TCP connection".into()),
                    Ok(_) => s.last_recv = Instant::now(),
                    Err(e) => break self.lost_stream(format!("read failed: {e}")),
                },
                written = write_or_flush(&mut s.writer, &s.out), if !s.out.is_empty() || s.needs_flush => match written {
                    Ok(Written::Bytes(0)) => break self.lost_stream("socket accepted no bytes".into()),
                    Ok(Written::Bytes(n)) => {
                        s.out.advance(n);
                        s.needs_flush = true;
                        s.last_write_progress = Instant::now();
                    }
                    Ok(Written::Flushed) => s.needs_flush = false,
                    Err(e) => break self.lost_stream(format!("write failed: {e}")),
                },
                id = self.drop_rx.recv(), if self.drop_open => match id {
                    Some(id) => self.on_sub_dropped(id, Some(&mut s)),
                    None => self.drop_open = false,
                },
                cmd = self.cmd_rx.recv(), if s.closing_deadline.is_none() && s.out.len() < write_limit => {
                    // Subscriptions dropped before this command was sent are
                    // forgotten first, so the broker sees requests in the
                    // order the application made them.
                    self.drain_drop_notices(Some(&mut s));
                    // With a session, commands never end it directly.
                    let _ = self.on_command(cmd, Some(&mut s));
                }
                () = &mut sleep => {
                    if let Some(end) = self.housekeeping(&mut s) {
                        break end;
                    }
                    sleep.as_mut().reset(self.next_deadline(&s));
                    continue;
                }
            }
            let next = self.next_deadline(&s);
            if next < sleep.deadline() {
                sleep.as_mut().reset(next);
            }
        };
        Self::finish_session(s, &end).await;
        end
    }

    /// The end of a session whose stream failed or ended.
    fn lost_stream(&self, why: String) -> End {
        if self.shutting_down {
            End::Shutdown
        } else {
            End::Lost(Disconnect::ConnectionLost(why))
        }
    }

    /// Writes a final close frame (if one is queued) and shuts the socket
    /// down, briefly and best effort.
    async fn finish_session(mut s: Session, end: &End) {
        if !s.flush_on_end && !matches!(end, End::Shutdown) {
            return;
        }
        let flush = async {
            if !s.out.is_empty() {
                s.writer.write_all(&s.out).await?;
            }
            s.writer.flush().await?;
            s.writer.shutdown().await
        };
        let _ = tokio::time::timeout(FINAL_FLUSH_GRACE, flush).await;
    }

    /// A new connection is up: renew subscriptions, send what was buffered.
    fn on_connected(&mut self, s: &mut Session) {
        let patterns: Vec<Arc<str>> = self.registry.entries.keys().cloned().collect();
        for pattern in patterns {
            let unused = self
                .registry
                .entries
                .get(&pattern)
                .is_none_or(Entry::is_unused);
            if unused {
                self.registry.remove(&pattern);
            } else {
                self.send_subscribe(s, &pattern);
            }
        }
        let mut flushed = 0usize;
        while let Some(item) = self.offline.pop() {
            if item.abandoned() {
                continue;
            }
            s.queue(&item.frame);
            flushed += 1;
            if let (Some(id), Some(ack)) = (item.id, item.ack) {
                let deadline = self.request_deadline();
                self.pending
                    .insert(id, PendingKind::Publish(ack), Some(deadline));
            }
        }
        if flushed > 0 {
            tracing::info!("sent {flushed} publishes buffered while disconnected");
        }
        self.shared.connected.store(true, Ordering::Release);
        self.set_state(ConnectionState::Connected);
    }

    /// Decodes and handles every complete frame in the read buffer.
    fn process_input(&mut self, s: &mut Session) -> Option<End> {
        loop {
            match s.decoder.decode(&mut s.rbuf) {
                Ok(Some(item)) => {
                    if let Some(end) = self.on_incoming(s, item) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    let code = e.close_code();
                    tracing::warn!(
                        "broker sent an invalid frame ({e}); closing with {}",
                        code.as_u16()
                    );
                    s.queue_control(OpCode::Close, &ws::close_body(code.as_u16(), code.reason()));
                    s.flush_on_end = true;
                    return Some(End::Lost(Disconnect::ProtocolError(e.to_string())));
                }
            }
        }
    }

    fn on_incoming(&mut self, s: &mut Session, item: Incoming) -> Option<End> {
        match item {
            Incoming::Message(frame) => {
                self.on_frame(s, &frame);
                None
            }
            Incoming::Ping(payload) => {
                if s.closing_deadline.is_none() {
                    s.queue_control(OpCode::Pong, &payload);
                }
                None
            }
            Incoming::Pong(_) => None,
            Incoming::Close(close) => {
                s.flush_on_end = true;
                if s.closing_deadline.is_some() {
                    // The broker answered our close.
                    return Some(End::Shutdown);
                }
                let body = close
                    .code
                    .map(|code| ws::close_body(code, ""))
                    .unwrap_or_default();
                s.queue_control(OpCode::Close, &body);
                if self.shutting_down {
                    return Some(End::Shutdown);
                }
                Some(End::Lost(Disconnect::ClosedByBroker {
                    code: close.code,
                    reason: close.reason,
                }))
            }
        }
    }

    fn on_frame(&mut self, s: &mut Session, frame: &Bytes) {
        match ServerMessage::decode(frame) {
            Ok(msg) => self.on_message(s, msg),
            Err(e) => tracing::warn!("ignoring a message the client cannot decode: {e}"),
        }
    }

    fn on_message(&mut self, s: &mut Session, msg: ServerMessage<'_>) {
        match msg {
            ServerMessage::Message(delivery) => self.registry.deliver(delivery),
            ServerMessage::Subscribed { id, info } => match self.pending.take(id) {
                Some(PendingKind::Subscribe(pattern)) => self.on_subscribed(s, &pattern, &info),
                other => self.unexpected_reply(id, other, "SUBSCRIBED"),
            },
            ServerMessage::Unsubscribed { id } => match self.pending.take(id) {
                Some(PendingKind::Unsubscribe(_)) => {}
                other => self.unexpected_reply(id, other, "UNSUBSCRIBED"),
            },
            ServerMessage::Published { id, seq } => match self.pending.take(id) {
                Some(PendingKind::Publish(tx)) => {
                    let _ = tx.send(Ok(seq));
                }
                other => self.unexpected_reply(id, other, "PUBLISHED"),
            },
            ServerMessage::Pong { id } => match self.pending.take(id) {
                Some(PendingKind::Ping(tx, sent)) => {
                    let _ = tx.send(Ok(sent.elapsed()));
                }
                other => self.unexpected_reply(id, other, "PONG"),
            },
            ServerMessage::Error {
                id: Some(id),
                code,
                message,
            } => self.on_request_failed(s, id, Refusal::new(code, message)),
            ServerMessage::Error {
                id: None,
                code,
                message,
            } => tracing::warn!("broker reported an error: {code}: {message}"),
        }
    }

    /// A reply whose id is unknown or belongs to another kind of request: a
    /// broker bug. The request (if any) stays pending and expires normally.
    fn unexpected_reply(&mut self, id: u64, found: Option<PendingKind>, reply: &str) {
        match found {
            Some(kind) => {
                tracing::warn!("broker answered {} request {id} with {reply}", kind.name());
                let deadline = match kind {
                    PendingKind::Subscribe(_) => None,
                    _ => Some(self.request_deadline()),
                };
                self.pending.insert(id, kind, deadline);
            }
            None => tracing::debug!("ignoring {reply} for unknown request {id}"),
        }
    }

    fn on_request_failed(&mut self, s: &mut Session, id: u64, refusal: Refusal) {
        match self.pending.take(id) {
            Some(PendingKind::Subscribe(pattern)) => {
                self.on_subscribe_refused(s, &pattern, refusal)
            }
            Some(PendingKind::Unsubscribe(pattern)) => tracing::debug!(
                pattern = &*pattern,
                "unsubscribe refused: {}",
                refusal.to_error()
            ),
            Some(kind) => kind.fail(|| refusal.to_error()),
            None => tracing::warn!(
                "broker reported an error for unknown request {id}: {}",
                refusal.to_error()
            ),
        }
    }

    // -- subscriptions -----------------------------------------------------

    fn send_subscribe(&mut self, s: &mut Session, pattern: &Arc<str>) {
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

    fn send_unsubscribe(&mut self, s: &mut Session, pattern: Arc<str>) {
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

    fn on_subscribed(&mut self, s: &mut Session, pattern: &Arc<str>, info: &SubscribedInfo) {
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

    fn on_subscribe_refused(&mut self, s: &mut Session, pattern: &Arc<str>, refusal: Refusal) {
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

    fn on_sub_dropped(&mut self, id: u64, s: Option<&mut Session>) {
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

    // -- commands ----------------------------------------------------------

    /// Handles a command; `s` is the session, if connected. `Break` means
    /// stop now (only without a session).
    fn on_command(&mut self, cmd: Option<Command>, s: Option<&mut Session>) -> ControlFlow<()> {
        let Some(cmd) = cmd else {
            // Every handle and subscription is gone.
            return self.start_closing(s);
        };
        match cmd {
            Command::Subscribe {
                id,
                pattern,
                since,
                options,
                tx,
                shared,
                reply,
            } => {
                if tx.is_closed() {
                    // The caller already gave up.
                    return ControlFlow::Continue(());
                }
                let waiter = Waiter {
                    sub: LocalSub {
                        id,
                        tx,
                        shared,
                        skipped: 0,
                    },
                    reply,
                };
                let new = NewSub {
                    waiter,
                    since,
                    options,
                };
                if self.registry.add(pattern.clone(), new)
                    && let Some(s) = s
                {
                    self.send_subscribe(s, &pattern);
                }
            }
            Command::Publish { frame, id, reply } => self.on_publish(frame, id, reply, s),
            Command::Ping { reply } => match s {
                Some(s) => {
                    let id = self.shared.next_id();
                    s.queue(&encode_frame(&ClientMessage::Ping { id }));
                    let deadline = self.request_deadline();
                    self.pending.insert(
                        id,
                        PendingKind::Ping(reply, Instant::now()),
                        Some(deadline),
                    );
                }
                None => {
                    let _ = reply.send(Err(Error::NotConnected));
                }
            },
            Command::Close { reply } => {
                self.close_replies.push(reply);
                return self.start_closing(s);
            }
        }
        ControlFlow::Continue(())
    }

    fn start_closing(&mut self, s: Option<&mut Session>) -> ControlFlow<()> {
        self.shutting_down = true;
        let Some(s) = s else {
            return ControlFlow::Break(());
        };
        if s.closing_deadline.is_none() {
            tracing::debug!("closing the connection");
            s.queue_control(
                OpCode::Close,
                &ws::close_body(CloseCode::Normal.as_u16(), "client closing"),
            );
            s.closing_deadline = Some(self.request_deadline());
        }
        ControlFlow::Continue(())
    }

    fn on_publish(
        &mut self,
        frame: Bytes,
        id: Option<u64>,
        reply: PublishReply,
        s: Option<&mut Session>,
    ) {
        if let Some(s) = s {
            s.queue(&frame);
            match (reply, id) {
                (PublishReply::None, _) => {}
                (PublishReply::Accepted(tx), _) => {
                    let _ = tx.send(Ok(()));
                }
                (PublishReply::Acked(tx), Some(id)) => {
                    let deadline = self.request_deadline();
                    self.pending
                        .insert(id, PendingKind::Publish(tx), Some(deadline));
                }
                (PublishReply::Acked(tx), None) => {
                    let _ = tx.send(Ok(0));
                }
            }
            return;
        }
        match self.shared.config.offline {
            OfflinePolicy::Fail => match reply {
                PublishReply::None => {
                    tracing::debug!("dropping a publish made as the connection was lost");
                }
                PublishReply::Accepted(tx) => {
                    let _ = tx.send(Err(Error::NotConnected));
                }
                PublishReply::Acked(tx) => {
                    let _ = tx.send(Err(Error::NotConnected));
                }
            },
            OfflinePolicy::Buffer {
                max_messages,
                max_bytes,
            } => {
                if !self.offline.fits(frame.len(), max_messages, max_bytes) {
                    self.offline.drop_abandoned();
                }
                if !self.offline.fits(frame.len(), max_messages, max_bytes) {
                    let full = || Error::OfflineBufferFull {
                        max_messages,
                        max_bytes,
                    };
                    match reply {
                        PublishReply::None => tracing::warn!(
                            "offline buffer full; dropping a publish made as the connection was lost"
                        ),
                        PublishReply::Accepted(tx) => {
                            let _ = tx.send(Err(full()));
                        }
                        PublishReply::Acked(tx) => {
                            let _ = tx.send(Err(full()));
                        }
                    }
                    return;
                }
                let ack = match reply {
                    PublishReply::None => None,
                    PublishReply::Accepted(tx) => {
                        let _ = tx.send(Ok(()));
                        None
                    }
                    PublishReply::Acked(tx) => Some(tx),
                };
                self.offline.push(Buffered { frame, id, ack });
            }
        }
    }

    // -- timers ------------------------------------------------------------

    fn next_deadline(&self, s: &Session) -> Instant {
        let mut next = Instant::now() + IDLE_WAKE;
        if let Some(deadline) = self.pending.next_deadline() {
            next = next.min(deadline);
        }
        if let Some(deadline) = s.closing_deadline {
            next = next.min(deadline);
        }
        if let Some(ka) = self.shared.config.keepalive {
            next = next.min(s.last_recv + ka.timeout);
            if s.closing_deadline.is_none() {
                next = next.min(s.ping_due(ka.interval));
            }
            if !s.out.is_empty() {
                next = next.min(s.last_write_progress + ka.timeout);
            }
        }
        next
    }

    fn housekeeping(&mut self, s: &mut Session) -> Option<End> {
        let now = Instant::now();
        self.pending.expire(now, self.shared.config.request_timeout);
        if let Some(deadline) = s.closing_deadline
            && now >= deadline
        {
            tracing::debug!("broker did not answer the close frame in time");
            return Some(End::Shutdown);
        }
        if let Some(ka) = self.shared.config.keepalive {
            if now.duration_since(s.last_recv) >= ka.timeout {
                return Some(End::Lost(Disconnect::KeepaliveTimeout));
            }
            if !s.out.is_empty() && now.duration_since(s.last_write_progress) >= ka.timeout {
                return Some(End::Lost(Disconnect::KeepaliveTimeout));
            }
            if s.closing_deadline.is_none() && now >= s.ping_due(ka.interval) {
                s.queue_control(OpCode::Ping, b"");
                s.last_ping = now;
            }
        }
        None
    }

    // -- disconnected ------------------------------------------------------

    fn connection_lost(&mut self) {
        self.shared.connected.store(false, Ordering::Release);
        for kind in self.pending.drain() {
            kind.fail(|| Error::ConnectionLost);
        }
        for entry in self.registry.entries.values_mut() {
            entry.state = BrokerState::Unsent;
            entry.tracker.disconnected();
        }
        self.registry.prune();
    }

    /// Waits and reconnects per the policy, serving commands meanwhile.
    /// `None` means stop: the client is closing or the policy gave up.
    async fn reconnect(&mut self, attempt: &mut u32, mut cause: Disconnect) -> Option<Connection> {
        let policy = self.shared.config.reconnect.clone();
        loop {
            if policy.max_attempts.is_some_and(|max| *attempt >= max) {
                if policy.is_enabled() {
                    tracing::warn!("giving up after {attempt} reconnect attempts");
                }
                self.final_cause = Some(cause);
                return None;
            }
            *attempt += 1;
            self.set_state(ConnectionState::Reconnecting {
                attempt: *attempt,
                cause: cause.clone(),
            });
            let delay = policy.delay(*attempt);
            tracing::info!("reconnecting in {delay:?} (attempt {attempt})");
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    flow = self.serve_offline() => if flow.is_break() {
                        return None;
                    },
                }
            }
            let target = self.target.clone();
            let connect = async move { target.connect().await };
            tokio::pin!(connect);
            let result = loop {
                tokio::select! {
                    result = &mut connect => break result,
                    flow = self.serve_offline() => if flow.is_break() {
                        return None;
                    },
                }
            };
            match result {
                Ok(conn) => {
                    tracing::info!(url = %self.shared.url, "reconnected");
                    return Some(conn);
                }
                Err(e) => {
                    tracing::warn!("reconnect attempt {attempt} failed: {e}");
                    cause = Disconnect::ConnectFailed(e.to_string());
                }
            }
        }
    }

    /// Serves one command or drop notice while disconnected. Cancel-safe.
    async fn serve_offline(&mut self) -> ControlFlow<()> {
        tokio::select! {
            id = self.drop_rx.recv(), if self.drop_open => {
                match id {
                    Some(id) => self.on_sub_dropped(id, None),
                    None => self.drop_open = false,
                }
                ControlFlow::Continue(())
            }
            cmd = self.cmd_rx.recv() => {
                self.drain_drop_notices(None);
                self.on_command(cmd, None)
            }
        }
    }

    /// Handles every drop notice already sent.
    fn drain_drop_notices(&mut self, mut s: Option<&mut Session>) {
        while let Ok(id) = self.drop_rx.try_recv() {
            self.on_sub_dropped(id, s.as_deref_mut());
        }
    }

    /// Fails everything still waiting and marks the client closed.
    fn shutdown(&mut self) {
        self.shared.connected.store(false, Ordering::Release);
        for kind in self.pending.drain() {
            kind.fail(|| Error::Closed);
        }
        while let Some(item) = self.offline.pop() {
            if let Some(ack) = item.ack {
                let _ = ack.send(Err(Error::Closed));
            }
        }
        for (_, entry) in self.registry.entries.drain() {
            for waiter in entry.waiters {
                let _ = waiter.reply.send(Err(Error::Closed));
            }
            for sub in entry.subs {
                sub.shared.finish(EndReason::Closed);
            }
        }
        self.registry = Registry::default();
        let cause = self.final_cause.take();
        match &cause {
            Some(cause) => tracing::warn!(url = %self.shared.url, "client closed: {cause}"),
            None => tracing::info!(url = %self.shared.url, "client closed"),
        }
        self.set_state(ConnectionState::Closed { cause });
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Command::Publish { reply, .. } => match reply {
                    PublishReply::None => {}
                    PublishReply::Accepted(tx) => {
                        let _ = tx.send(Err(Error::Closed));
                    }
                    PublishReply::Acked(tx) => {
                        let _ = tx.send(Err(Error::Closed));
                    }
                },
                Command::Ping { reply } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Command::Close { reply } => self.close_replies.push(reply),
            }
        }
        for reply in self.close_replies.drain(..) {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_expiry_is_ordered_and_bounded() {
        let mut pending = Pending::default();
        let now = Instant::now();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        pending.insert(1, PendingKind::Publish(tx1), Some(now));
        pending.insert(
            2,
            PendingKind::Publish(tx2),
            Some(now + Duration::from_secs(5)),
        );
        pending.insert(3, PendingKind::Subscribe(Arc::from("a")), None);
        assert_eq!(pending.next_deadline(), Some(now));
        pending.expire(now, Duration::from_secs(1));
        assert!(matches!(rx1.try_recv(), Ok(Err(Error::Timeout { .. }))));
        assert!(rx2.try_recv().is_err());
        assert!(pending.take(2).is_some());
        assert_eq!(pending.next_deadline(), None);
        assert!(pending.take(3).is_some());
        assert!(pending.map.is_empty() && pending.timed.is_empty());
    }

    #[test]
    fn options_that_cannot_share_a_broker_subscription_conflict() {
        let plain = BrokerOptions {
            last: false,
            max_rate: None,
            resume: true,
        };
        assert_eq!(plain.conflict(&plain, false), None);
        let snapshot = BrokerOptions {
            last: true,
            ..plain
        };
        // A snapshot or replay cannot be given to a second subscription...
        assert!(snapshot.conflict(&snapshot, false).is_some());
        assert!(plain.conflict(&plain, true).is_some());
        // ...but a plain one may join a subscription that had one.
        assert_eq!(snapshot.conflict(&plain, false), None);
        let limited = BrokerOptions {
            max_rate: Some(4),
            ..plain
        };
        assert!(plain.conflict(&limited, false).is_some());
        let live_only = BrokerOptions {
            resume: false,
            ..plain
        };
        assert!(plain.conflict(&live_only, false).is_some());
    }

    #[test]
    fn offline_buffer_bounds() {
        let mut offline = Offline::default();
        assert!(offline.fits(10, 2, 20));
        offline.push(Buffered {
            frame: Bytes::from_static(&[0; 10]),
            id: None,
            ack: None,
        });
        assert!(offline.fits(10, 2, 20));
        assert!(!offline.fits(11, 2, 20));
        let (tx, rx) = oneshot::channel();
        offline.push(Buffered {
            frame: Bytes::from_static(&[0; 10]),
            id: Some(1),
            ack: Some(tx),
        });
        assert!(!offline.fits(1, 2, 100));
        drop(rx);
        offline.drop_abandoned();
        assert_eq!(offline.queue.len(), 1);
        assert_eq!(offline.bytes, 10);
        assert!(offline.pop().is_some());
        assert_eq!(offline.bytes, 0);
    }
}
