//! One WebSocket connection, from its `101` answer to the closed
//! socket.
//!
//! The connection runs in one task: this reader, which decodes frames and
//! hands whole messages to its [`MessageHandler`] (a
//! [`crate::session::Session`] on `/ws`, an [`crate::echo::Echo`] on the
//! echo listener), and the writer ([`crate::writer`]), which drains the
//! outbound queue, are two futures of that task, each polled only when
//! something it waits for happened ([`both`]): a delivery that wakes the
//! writer does not poll the reader's timers and socket, and an idle
//! connection costs one task cell, not two. The reader also keeps the
//! connection alive (pings a quiet peer, closes a dead one) and runs the
//! close handshake: once the connection starts closing, for whatever reason,
//! the reader waits up to `close_timeout` for the peer's close frame or EOF
//! while the writer flushes (the close frame after the queued data, then a
//! half-close), and then the socket is dropped.
//!
//! Producer backpressure: when the handler reports that the messages it just
//! handled backed up a subscriber's queue ([`MessageHandler::backlog`]), the
//! reader stops reading until that queue has drained
//! ([`OutboundQueue::drained`]), so a publisher is slowed down instead of
//! its fast subscribers being cut. Closing, shutdown and expiry still end
//! the pause; keepalive and the message timeout do not run while the reader
//! is paused by the broker itself.

pub mod both;

use std::pin::pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tickwire_protocol::CloseCode;
use tickwire_protocol::deflate::ServerAgreement;
use tickwire_protocol::ws::{self, FrameDecoder, Incoming, OpCode, Role};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::handler::MessageHandler;
use crate::metrics::GaugeHold;
use crate::outbound::{OutboundQueue, OutboundReceiver};
use crate::state::BrokerState;
use crate::stream::{ReadSide, Transport};
use crate::writer::{WriterSettings, write_loop};
use both::Wakers;

/// Smallest free space offered to each socket read.
const MIN_READ_SPACE: usize = 4096;

/// Why the reading phase ended.
enum ReadEnd {
    /// The peer closed the TCP connection or it failed: nothing more to do.
    Gone,
    /// The broker started closing; wait for the peer's side of the handshake.
    Closing,
    /// The peer sent its close frame; ours is the answer.
    PeerClosed,
}

/// A connection's outbound queue and message handler, made before the
/// `101` answer goes out ([`prepare`]): the session is then already filed
/// in the broker's directory when the client sees its upgrade succeed, so
/// a `POST /v1/disconnect` that follows reaches it, even if its reader has
/// not started yet (the close is queued and the reader sees it at once).
///
/// Boxed: it travels through the upgrade task into [`serve`], and every
/// `async` frame it passes through keeps a slot of its size for the whole
/// connection; a pointer keeps those slots small and the handler is stored
/// once, in `serve`.
pub struct Prepared<H>(Box<PreparedParts<H>>);

struct PreparedParts<H> {
    id: u64,
    queue: Arc<OutboundQueue>,
    outbound: OutboundReceiver,
    handler: H,
}

impl<H> Prepared<H> {
    /// The connection id, its queue (sending and receiving side) and its
    /// handler.
    fn into_parts(self) -> (u64, Arc<OutboundQueue>, OutboundReceiver, H) {
        let PreparedParts {
            id,
            queue,
            outbound,
            handler,
        } = *self.0;
        (id, queue, outbound, handler)
    }
}

/// Makes a connection's outbound queue and the handler `new_handler` makes
/// from it, for [`serve`]. Dropping the result (the upgrade failed) undoes
/// it: nothing was subscribed yet.
pub fn prepare<H>(
    state: &BrokerState,
    new_handler: impl FnOnce(Arc<OutboundQueue>) -> H,
) -> Prepared<H> {
    let id = state.next_connection_id();
    let (queue, outbound) =
        OutboundQueue::with_settings(id, state.config.queue_settings(), state.metrics.clone());
    let handler = new_handler(queue.clone());
    Prepared(Box::new(PreparedParts {
        id,
        queue,
        outbound,
        handler,
    }))
}

/// Serves a WebSocket connection on `stream`, whose first bytes (received
/// with the upgrade request) are `early`, handing its messages to the
/// prepared handler, until the connection closes (or the handler's
/// [`MessageHandler::expiry`]). With `deflate` (permessage-deflate was
/// negotiated) compressed messages are accepted and inflated.
pub async fn serve<S, H>(
    state: Arc<BrokerState>,
    stream: S,
    early: Bytes,
    prepared: Prepared<H>,
    deflate: Option<ServerAgreement>,
) where
    S: Transport,
    H: MessageHandler,
{
    let (id, queue, outbound, mut handler) = prepared.into_parts();
    let (reader, writer) = stream.split();
    if let Some(socket) = S::shared_socket(&writer) {
        queue.attach_socket(socket);
    }
    // The writer runs in this task, beside the reader (see [`both`]); the
    // task gauge still counts it, as the reader's partner.
    let writer = state.metrics.count_task(write_loop(
        writer,
        outbound,
        WriterSettings {
            batch_bytes: state.config.write_batch_bytes,
            coalesce: state.config.write_coalesce,
        },
        state.metrics.clone(),
    ));
    let mut writer = pin!(writer);
    let mut writer_done = false;
    let wakers = Wakers::new();
    // Counted until this function returns or its task is dropped.
    let session_gauge = GaugeHold::new(&state.metrics.websockets);
    match handler.peer_identity() {
        Some(peer) => tracing::debug!(connection = id, %peer, "websocket session started"),
        None => tracing::debug!(connection = id, "websocket session started"),
    }
    // `early` is a slice of hyper's read buffer: copy what it holds and let
    // the buffer go, so an idle connection does not keep it alive.
    let buf = BytesMut::from(&early[..]);
    drop(early);
    let mut connection = Connection {
        state: &state,
        queue: &queue,
        socket: reader,
        buf,
        decoder: decoder(state.config.max_message_size, deflate),
    };
    let end = {
        let reading = pin!(connection.read_messages(&mut handler));
        wakers
            .both(reading, writer.as_mut(), &mut writer_done)
            .await
    };
    handler.release(&state);

    let deadline = Instant::now() + state.config.close_timeout;
    match end {
        ReadEnd::Closing => {
            // The peer's side of the handshake, while the writer flushes.
            let peer = pin!(timeout_at(deadline, connection.await_peer_close()));
            let _ = wakers.both(peer, writer.as_mut(), &mut writer_done).await;
        }
        ReadEnd::PeerClosed => {}
        ReadEnd::Gone => {
            // Nothing will read what is queued: the writer is dropped.
            queue.abandon();
            writer_done = true;
        }
    }
    if !writer_done {
        let _ = timeout_at(deadline, writer).await;
    }
    queue.detach_socket();
    drop(session_gauge);
    tracing::debug!(connection = id, "websocket session ended");
}

/// The frame decoder of a connection: with permessage-deflate, it inflates
/// (keeping the client's context unless the client agreed to reset it).
fn decoder(max_message_size: usize, deflate: Option<ServerAgreement>) -> FrameDecoder {
    let decoder = FrameDecoder::new(Role::Server, max_message_size);
    match deflate {
        Some(agreed) => decoder.with_inflate(agreed.client_no_context_takeover),
        None => decoder,
    }
}

/// Whether the `message_timeout` clock runs for an incomplete message.
#[derive(Debug, Default)]
struct MessageTimer {
    armed: bool,
}

impl MessageTimer {
    /// Updates the clock after a read was processed: `pending` says whether
    /// an incomplete frame or message is buffered, `completed` whether one
    /// was completed in that read. Returns whether the clock (re)starts now:
    /// a new message began, so its time counts from this read.
    fn arm(&mut self, pending: bool, completed: bool) -> bool {
        let restart = pending && (!self.armed || completed);
        self.armed = pending;
        restart
    }
}

struct Connection<'a, R> {
    state: &'a Arc<BrokerState>,
    queue: &'a Arc<OutboundQueue>,
    socket: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// Resolves once `queue` (if any) has drained.
async fn drained(queue: &Option<Arc<OutboundQueue>>) {
    if let Some(queue) = queue {
        queue.drained().await;
    }
}

/// The instant at which `at` (wall clock) will be reached; now if it has
/// passed.
fn instant_at(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

impl<R: ReadSide> Connection<'_, R> {
    /// Reads into the buffer; returns the byte count (0 at EOF or on error).
    ///
    /// On plain TCP, buffer space is reserved only once the socket is
    /// readable ([`ReadSide::fill`]), and an empty buffer is released after a
    /// short read, so an idle connection holds no read buffer while it waits.
    async fn fill(&mut self) -> usize {
        let want = self
            .decoder
            .wanted()
            .saturating_sub(self.buf.len())
            .max(MIN_READ_SPACE);
        match self.socket.fill(&mut self.buf, want).await {
            Ok(n) => {
                self.state.metrics.bytes_in.inc_by(n as u64);
                n
            }
            Err(_) => 0,
        }
    }

    /// Whether part of a frame or message has been received and awaits the
    /// rest.
    fn pending(&self) -> bool {
        !self.buf.is_empty() || self.decoder.mid_message()
    }

    /// Releases the read buffer when it is empty and the last read was
    /// short: the peer is not streaming, so idle memory goes back.
    fn release_idle_buffer(&mut self, last_read: usize) {
        if self.buf.is_empty() && last_read < MIN_READ_SPACE / 2 {
            self.buf = BytesMut::new();
        }
    }

    /// Decodes and handles everything buffered, or up to the first message
    /// whose handling backed up a subscriber queue (then set in `paused`;
    /// the rest waits in the buffer until it drained). Returns `None` while
    /// the connection stays open; `completed` is set when a message or
    /// control frame was completed outside a fragmented message.
    fn process(
        &mut self,
        handler: &mut impl MessageHandler,
        completed: &mut bool,
        paused: &mut Option<Arc<OutboundQueue>>,
    ) -> Option<ReadEnd> {
        loop {
            let item = self.decoder.decode(&mut self.buf);
            if matches!(item, Ok(Some(_))) && !self.decoder.mid_message() {
                *completed = true;
            }
            match item {
                Ok(None) => return None,
                Ok(Some(Incoming::Message(kind, payload))) => {
                    handler.on_message(self.state, kind, payload);
                    *paused = handler.backlog();
                }
                Ok(Some(Incoming::Ping(payload))) => {
                    let pong = ws::server_frame(OpCode::Pong, &payload);
                    self.queue.push(pong, std::time::Instant::now());
                }
                Ok(Some(Incoming::Pong(_))) => {}
                Ok(Some(Incoming::Close(close))) => {
                    self.queue.echo_close(close.code);
                    return Some(ReadEnd::PeerClosed);
                }
                Err(violation) => {
                    tracing::debug!(connection = self.queue.id(), %violation, "closing on framing violation");
                    self.queue.close(violation.close_code());
                    return Some(ReadEnd::Closing);
                }
            }
            if self.queue.is_closing() {
                return Some(ReadEnd::Closing);
            }
            if paused.is_some() {
                return None;
            }
        }
    }

    /// The main loop: read, handle, keep alive, until the connection closes.
    async fn read_messages(&mut self, handler: &mut impl MessageHandler) -> ReadEnd {
        let config = &self.state.config;
        let shutdown = self.state.shutdown.clone();
        let shutdown = shutdown.cancelled();
        tokio::pin!(shutdown);
        let closing = self.queue.closing().clone();
        let closing = closing.cancelled();
        tokio::pin!(closing);
        let mut quiet_since = Instant::now();
        let mut pinged = false;
        let keepalive = sleep_until(quiet_since + config.keepalive_interval);
        tokio::pin!(keepalive);
        // Runs while a message is incomplete: from its first byte (the read
        // that brought it) until its last.
        let mut message = MessageTimer::default();
        let message_deadline = sleep_until(quiet_since + config.message_timeout);
        tokio::pin!(message_deadline);
        // The handler's expiry (a token's: close 4003), re-armed when a
        // message (a REFRESH) moves it.
        let mut valid_until = handler.expiry().map(|(at, _)| at);
        let expiry = sleep_until(valid_until.map_or(quiet_since, instant_at));
        tokio::pin!(expiry);

        // The subscriber queue this connection's publishes backed up: no
        // reading (or handling of what is buffered) until it has drained.
        let mut paused = None;
        let mut completed = false;
        if let Some(end) = self.process(handler, &mut completed, &mut paused) {
            return end;
        }
        if message.arm(self.pending(), completed) {
            message_deadline
                .as_mut()
                .reset(Instant::now() + config.message_timeout);
        }
        loop {
            let current = handler.expiry().map(|(at, _)| at);
            if current != valid_until {
                valid_until = current;
                if let Some(at) = valid_until {
                    expiry.as_mut().reset(instant_at(at));
                }
            }
            tokio::select! {
                biased;
                _ = &mut closing => return ReadEnd::Closing,
                _ = &mut shutdown => {
                    self.queue.close(CloseCode::GoingAway);
                    return ReadEnd::Closing;
                }
                _ = &mut expiry, if valid_until.is_some() => {
                    let code = handler.expiry().map_or(CloseCode::TokenExpired, |(_, code)| code);
                    tracing::debug!(connection = self.queue.id(), code = code.as_u16(), "authentication ended; closing");
                    self.queue.close(code);
                    return ReadEnd::Closing;
                }
                _ = drained(&paused), if paused.is_some() => {
                    // Every queue the publishes backed up must have drained.
                    paused = handler.backlog();
                    if paused.is_some() {
                        continue;
                    }
                    // The pause was ours: the peer's quiet time and its
                    // message clock start over.
                    quiet_since = Instant::now();
                    pinged = false;
                    keepalive.as_mut().reset(quiet_since + config.keepalive_interval);
                    if message.armed {
                        message_deadline.as_mut().reset(quiet_since + config.message_timeout);
                    }
                    let mut completed = false;
                    if let Some(end) = self.process(handler, &mut completed, &mut paused) {
                        return end;
                    }
                    if message.arm(self.pending(), completed) {
                        message_deadline.as_mut().reset(quiet_since + config.message_timeout);
                    }
                }
                n = self.fill(), if paused.is_none() => {
                    if n == 0 {
                        return ReadEnd::Gone;
                    }
                    quiet_since = Instant::now();
                    pinged = false;
                    keepalive.as_mut().reset(quiet_since + config.keepalive_interval);
                    let mut completed = false;
                    if let Some(end) = self.process(handler, &mut completed, &mut paused) {
                        return end;
                    }
                    if message.arm(self.pending(), completed) {
                        message_deadline.as_mut().reset(quiet_since + config.message_timeout);
                    }
                    self.release_idle_buffer(n);
                }
                _ = &mut message_deadline, if message.armed && paused.is_none() => {
                    self.queue.close(CloseCode::MessageTimeout);
                    return ReadEnd::Closing;
                }
                _ = &mut keepalive, if paused.is_none() => {
                    if pinged {
                        self.queue.close(CloseCode::KeepaliveTimeout);
                        return ReadEnd::Closing;
                    }
                    pinged = true;
                    self.queue.push(ws::server_frame(OpCode::Ping, b""), std::time::Instant::now());
                    keepalive.as_mut().reset(
                        quiet_since + config.keepalive_interval + config.keepalive_timeout,
                    );
                }
            }
        }
    }

    /// After the broker started closing: discard incoming data until the
    /// peer's close frame, EOF or a violation (the caller bounds it with
    /// `close_timeout`).
    async fn await_peer_close(&mut self) {
        loop {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(Incoming::Close(_))) | Err(_) => return,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
            if self.fill().await == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::BrokerConfig;
    use crate::metrics::Metrics;
    use crate::outbound::OutboundReceiver;

    impl ReadSide for DuplexStream {
        async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
            buf.reserve(want);
            self.read_buf(buf).await
        }
    }

    /// Reports each message, and `backlog` once after the first.
    struct Publisher {
        seen: mpsc::UnboundedSender<Bytes>,
        backlog: Option<Arc<OutboundQueue>>,
        messages: usize,
    }

    impl MessageHandler for Publisher {
        fn on_message(&mut self, _: &Arc<BrokerState>, _: ws::MessageKind, payload: Bytes) {
            self.messages += 1;
            let _ = self.seen.send(payload);
        }

        fn backlog(&mut self) -> Option<Arc<OutboundQueue>> {
            if self.messages == 0 {
                return None;
            }
            self.backlog.take()
        }
    }

    fn message(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ws::write_client_frame(&mut out, OpCode::Binary, body, [1, 2, 3, 4]);
        out
    }

    /// A subscriber queue of budget 1000 holding 600 bytes, its writer busy.
    fn backed_up() -> (Arc<OutboundQueue>, OutboundReceiver) {
        let (queue, rx) = OutboundQueue::new(9, 1000, Metrics::new());
        let now = std::time::Instant::now();
        queue.record_progress(now);
        for _ in 0..6 {
            queue.push(Bytes::from_static(&[0; 100]), now);
        }
        (queue, rx)
    }

    #[tokio::test]
    async fn the_reader_pauses_until_the_backlog_it_caused_has_drained() {
        let state = match BrokerState::new(BrokerConfig::default(), None) {
            Ok(state) => Arc::new(state),
            Err(e) => panic!("state: {e}"),
        };
        let (own, _own_rx) = OutboundQueue::new(1, 1 << 20, Metrics::new());
        let (subscriber, mut subscriber_rx) = backed_up();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let mut handler = Publisher {
            seen: seen_tx,
            backlog: Some(subscriber.clone()),
            messages: 0,
        };
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let reader = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut connection = Connection {
                    state: &state,
                    queue: &own,
                    socket: server,
                    buf: BytesMut::new(),
                    decoder: FrameDecoder::new(Role::Server, 1 << 20),
                };
                connection.read_messages(&mut handler).await;
            })
        };
        assert!(client.write_all(&message(b"one")).await.is_ok());
        assert_eq!(seen.recv().await.as_deref(), Some(&b"one"[..]));
        // On this single-threaded runtime the reader has reached its pause
        // by the time the test runs again; give it every chance to read on.
        assert!(client.write_all(&message(b"two")).await.is_ok());
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(seen.try_recv().is_err(), "paused: nothing read");
        // The subscriber's writer takes 400 bytes: 200 <= 250 left.
        for _ in 0..4 {
            subscriber_rx.try_recv();
        }
        subscriber.record_progress(std::time::Instant::now());
        assert_eq!(seen.recv().await.as_deref(), Some(&b"two"[..]));
        reader.abort();
    }

    use super::MessageTimer;

    #[test]
    fn the_message_clock_runs_from_a_messages_first_read_to_its_last() {
        let mut timer = MessageTimer::default();
        assert!(!timer.arm(false, true), "nothing pending: no clock");
        assert!(timer.arm(true, false), "a frame started: the clock starts");
        assert!(
            !timer.arm(true, false),
            "more of it: the clock keeps running"
        );
        assert!(
            timer.arm(true, true),
            "it completed and the next one started: the clock restarts"
        );
        assert!(!timer.arm(false, true), "all complete: no clock");
        assert!(!timer.armed);
    }
}
