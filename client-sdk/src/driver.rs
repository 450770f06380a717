//! The connection task: one per client. It owns the socket ([`Session`]),
//! the subscription [`Registry`], the table of requests awaiting replies
//! ([`Pending`]) and the [`Offline`] buffer, so none of them needs a lock.
//!
//! A session is a single `select!` loop over: bytes from the socket, writing
//! queued frames, commands from client handles (only while the outgoing
//! buffer is under its limit: that is the backpressure), notices of dropped
//! subscriptions, and one housekeeping timer (keepalive, request expiry,
//! close deadline). Reading never waits on anything else, so pings are
//! answered and deliveries routed even while writes are stalled.
//!
//! The loop and the handling of frames and commands live here;
//! `subscriptions` handles the broker's side of subscriptions,
//! `disconnected` what happens between connections, and `refresh` the
//! token refresh before the connection's token expires.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use tickwire_protocol::ws::{self, MessageKind, OpCode};
use tickwire_protocol::{ClientMessage, CloseCode, ServerMessage};

use crate::command::{Command, PublishReply, Shared, encode_frame};
use crate::config::OfflinePolicy;
use crate::error::{Error, Refusal};
use crate::offline::{Buffered, Offline};
use crate::pending::{Pending, PendingKind};
use crate::presence::Answer;
use crate::registry::{Entry, LocalSub, NewSub, Registry, Waiter};
use crate::session::{Received, Session, Transfer};
use crate::state::{ConnectionState, Disconnect};
use crate::transport::{Connection, Target};

mod disconnected;
mod refresh;
mod subscriptions;

/// A token being fetched from the token provider.
type TokenFetch =
    std::pin::Pin<Box<dyn std::future::Future<Output = crate::error::Result<String>> + Send>>;

/// A connection that lasted this long resets the reconnect attempt counter.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Wake-up period when no deadline is pending.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The client is closing: stop for good.
    Shutdown,
    /// The connection was lost: reconnect if the policy allows.
    Lost(Disconnect),
}

/// The connection task's state.
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
    /// When to fetch a new token for the current connection.
    refresh_at: Option<Instant>,
    /// The new token being fetched.
    refreshing: Option<TokenFetch>,
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
            refresh_at: None,
            refreshing: None,
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
                End::Lost(cause) if cause.is_final() => {
                    // Disconnected by the server (4007) or for good by the
                    // application (4500-4999): reconnecting would undo it.
                    tracing::warn!(url = %self.shared.url, "{cause}; not reconnecting");
                    self.connection_lost();
                    self.final_cause = Some(cause);
                    break;
                }
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
        self.refresh_at = conn.token_expires.map(refresh::refresh_at);
        self.refreshing = None;
        let mut s = Session::new(conn, self.shared.config.max_message_size);
        self.on_connected(&mut s);
        let sleep = tokio::time::sleep_until(self.next_deadline(&s));
        tokio::pin!(sleep);
        let write_limit = self.shared.config.write_buffer_limit;
        let end = loop {
            if let Some(end) = self.process_input(&mut s) {
                break end;
            }
            // Whatever the last turn did (a command, a reply such as
            // REFRESHED) may have brought a deadline forward.
            let next = self.next_deadline(&s);
            if next < sleep.deadline() {
                sleep.as_mut().reset(next);
            }
            tokio::select! {
                step = s.transfer(true) => match step {
                    Transfer::Read | Transfer::Flushed => {}
                    Transfer::Wrote(n) => {
                        let deadline = self.request_deadline();
                        let pending = &mut self.pending;
                        s.advance(n, |publish| {
                            if let (Some(id), Some(ack)) = (publish.id, publish.ack) {
                                pending.insert(id, PendingKind::Publish(ack), Some(deadline));
                            }
                        });
                    }
                    Transfer::Lost(why) => break self.lost_stream(why),
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
                token = refresh::fetched(&mut self.refreshing), if self.refreshing.is_some() => {
                    self.on_token_fetched(&mut s, token);
                }
                () = &mut sleep => {
                    if let Some(end) = self.housekeeping(&mut s) {
                        break end;
                    }
                    sleep.as_mut().reset(self.next_deadline(&s));
                    continue;
                }
            }
        };
        if matches!(end, End::Lost(_)) {
            self.requeue_unwritten(&mut s);
        }
        s.finish(matches!(end, End::Shutdown)).await;
        end
    }

    /// The connection was lost: publishes it did not write whole go back to
    /// the front of the offline buffer, in order, to be sent whole on the
    /// next connection (the broker cannot have applied them). Under
    /// [`OfflinePolicy::Fail`] they fail instead.
    fn requeue_unwritten(&mut self, s: &mut Session) {
        let unwritten = s.take_unwritten();
        if unwritten.is_empty() {
            return;
        }
        match self.shared.config.offline {
            OfflinePolicy::Buffer { .. } => {
                tracing::info!(
                    count = unwritten.len(),
                    "the connection was lost before these publishes were written; sending them after reconnecting"
                );
                self.offline.push_front_all(unwritten.into_iter());
            }
            OfflinePolicy::Fail => {
                tracing::warn!(
                    count = unwritten.len(),
                    "the connection was lost before these publishes were written; they are not sent (offline policy: fail)"
                );
                for publish in unwritten {
                    if let Some(ack) = publish.ack {
                        let _ = ack.send(Err(Error::NotSent));
                    }
                }
            }
        }
    }

    /// The end of a session whose stream failed or ended.
    fn lost_stream(&self, why: String) -> End {
        if self.shutting_down {
            End::Shutdown
        } else {
            End::Lost(Disconnect::ConnectionLost(why))
        }
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
            s.queue_publish(item);
            flushed += 1;
        }
        if flushed > 0 {
            tracing::info!("sent {flushed} publishes buffered while disconnected");
        }
        self.shared.connected.store(true, Ordering::Release);
        self.set_state(ConnectionState::Connected);
    }

    /// Decodes and handles every complete message in the read buffer (the
    /// session answers pings and the close handshake itself).
    fn process_input(&mut self, s: &mut Session) -> Option<End> {
        loop {
            match s.receive() {
                Ok(Some(Received::Message(MessageKind::Binary, frame))) => self.on_frame(s, &frame),
                // The broker never sends text: the protocol is binary only.
                Ok(Some(Received::Message(MessageKind::Text, _))) => {
                    return Some(protocol_error(
                        s,
                        CloseCode::UnsupportedData,
                        "text message from the broker",
                    ));
                }
                Ok(Some(Received::CloseAnswered)) => return Some(End::Shutdown),
                Ok(Some(Received::Closed(_))) if self.shutting_down => {
                    return Some(End::Shutdown);
                }
                Ok(Some(Received::Closed(close))) => {
                    return Some(End::Lost(Disconnect::ClosedByBroker {
                        code: close.code,
                        reason: close.reason,
                    }));
                }
                Ok(None) => return None,
                Err(e) => return Some(protocol_error(s, e.close_code(), &e.to_string())),
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
            ServerMessage::PresenceInfo { id, info } => match self.pending.take(id) {
                Some(PendingKind::Presence(tx)) => {
                    let _ = tx.send(Ok(Answer::new(&info)));
                }
                other => self.unexpected_reply(id, other, "PRESENCE_INFO"),
            },
            ServerMessage::Join { topic, entry } => {
                self.registry.deliver_presence(true, topic, &entry);
            }
            ServerMessage::Leave { topic, entry } => {
                self.registry.deliver_presence(false, topic, &entry);
            }
            ServerMessage::Refreshed { id, .. } => match self.pending.take(id) {
                Some(PendingKind::Refresh(expires)) => self.on_refreshed(expires),
                other => self.unexpected_reply(id, other, "REFRESHED"),
            },
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
            Some(PendingKind::Refresh(_)) => tracing::warn!(
                "token refresh refused ({}); the broker closes the connection when the current token expires",
                refusal.to_error()
            ),
            Some(kind) => kind.fail(|| refusal.to_error()),
            None => tracing::warn!(
                "broker reported an error for unknown request {id}: {}",
                refusal.to_error()
            ),
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
                        full: false,
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
            Command::Presence {
                topic,
                counts_only,
                reply,
            } => match s {
                Some(s) => {
                    let id = self.shared.next_id();
                    s.queue(&encode_frame(&ClientMessage::Presence {
                        id,
                        topic: &topic,
                        counts_only,
                    }));
                    let deadline = self.request_deadline();
                    self.pending
                        .insert(id, PendingKind::Presence(reply), Some(deadline));
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
            let ack = match reply {
                PublishReply::None => None,
                PublishReply::Accepted(tx) => {
                    let _ = tx.send(Ok(()));
                    None
                }
                PublishReply::Acked(tx) => Some(tx),
            };
            // Its acknowledgement is awaited once the frame is written.
            s.queue_publish(Buffered { frame, id, ack });
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
        if let Some(at) = self.refresh_at {
            next = next.min(at);
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
        if s.closing_deadline.is_none() {
            self.maybe_start_refresh(now);
        }
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
}

/// Ends the connection on a protocol violation by the broker: the close
/// frame with `code` is queued as the final frame.
fn protocol_error(s: &mut Session, code: CloseCode, what: &str) -> End {
    tracing::warn!(
        "broker sent an invalid frame ({what}); closing with {}",
        code.as_u16()
    );
    s.set_final_close(&ws::close_body(code.as_u16(), code.reason()));
    End::Lost(Disconnect::ProtocolError(what.to_owned()))
}
