//! One connection's WebSocket layer: the socket halves, the read buffer and
//! frame decoder, the outgoing bytes, keepalive clocks, and which queued
//! `PUBLISH` frames have not been written whole yet (so that a lost
//! connection hands them back instead of discarding them).
//!
//! Everything below the application messages happens here, for both users
//! of a session: the connection task (`driver`) and the raw
//! [`WebSocket`](crate::websocket::WebSocket) used for conformance testing.
//! [`Session::transfer`] moves bytes in or out, [`Session::receive`]
//! decodes, answers pings and runs the close handshake, and
//! [`Session::finish`] writes the last frames and ends the socket. So the
//! Autobahn client-side suite, which drives `WebSocket`, exercises the
//! framing, ping and close code the client uses with a broker.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

use tickwire_protocol::ws::{
    self, CloseFrame, FrameDecoder, FrameError, Incoming, MessageKind, OpCode, Role,
};

use crate::offline::Buffered;
use crate::transport::{Connection, MaybeTlsStream};

/// Smallest free space offered to a socket read.
const MIN_READ_SPACE: usize = 16 * 1024;
/// Time allowed to write the last frames when a session ends.
const FINAL_FLUSH_GRACE: Duration = Duration::from_secs(1);

/// What [`Session::receive`] hands up once control frames are dealt with.
#[derive(Debug)]
pub(crate) enum Received {
    /// A whole data message; a text message's payload is valid UTF-8.
    Message(MessageKind, Bytes),
    /// The peer's close frame. The answer (echoing its code) is set as the
    /// final close: [`Session::finish`] writes it.
    Closed(CloseFrame),
    /// The peer answered our close frame: the close handshake is complete.
    CloseAnswered,
}

/// What one [`Session::transfer`] step did.
#[derive(Debug)]
pub(crate) enum Transfer {
    /// Bytes were read into the read buffer.
    Read,
    /// The socket accepted this many bytes of the outgoing buffer; the
    /// caller passes them to [`Session::advance`].
    Wrote(usize),
    /// Everything written was flushed.
    Flushed,
    /// The stream ended or failed; why.
    Lost(String),
}

/// A frame in the outgoing buffer: where it ends in the session's byte
/// count, and the publish it carries, if it is one.
struct QueuedFrame {
    end: u64,
    publish: Option<Buffered>,
}

pub(crate) struct Session {
    pub reader: ReadHalf<MaybeTlsStream>,
    pub writer: WriteHalf<MaybeTlsStream>,
    pub rbuf: BytesMut,
    /// Bytes queued and not yet accepted by the socket.
    pub out: BytesMut,
    pub decoder: FrameDecoder,
    pub needs_flush: bool,
    pub last_recv: Instant,
    pub last_sent: Instant,
    pub last_ping: Instant,
    pub last_write_progress: Instant,
    /// Set once the client sent its close frame.
    pub closing_deadline: Option<Instant>,
    /// A close frame to write when the session ends after a lost
    /// connection (answering the broker's close, or reporting its
    /// protocol error).
    pub final_close: Option<Vec<u8>>,
    /// Bytes ever queued on this connection.
    queued: u64,
    /// Bytes the socket accepted.
    written: u64,
    /// Where the last frame written whole ends: `written` is at a frame
    /// boundary when they are equal.
    last_frame_end: u64,
    /// The frames in `out`, oldest first.
    frames: VecDeque<QueuedFrame>,
}

impl Session {
    pub fn new(conn: Connection, max_message_size: usize) -> Self {
        let (reader, writer) = tokio::io::split(conn.stream);
        let now = Instant::now();
        Session {
            reader,
            writer,
            rbuf: conn.leftover,
            out: BytesMut::with_capacity(16 * 1024),
            decoder: match conn.inflate {
                Some(reset) => {
                    FrameDecoder::new(Role::Client, max_message_size).with_inflate(reset)
                }
                None => FrameDecoder::new(Role::Client, max_message_size),
            },
            needs_flush: false,
            last_recv: now,
            last_sent: now,
            last_ping: now,
            last_write_progress: now,
            closing_deadline: None,
            final_close: None,
            queued: 0,
            written: 0,
            last_frame_end: 0,
            frames: VecDeque::new(),
        }
    }

    /// Appends an encoded frame to the outgoing buffer.
    pub fn queue(&mut self, frame: &[u8]) {
        self.append(frame, None);
    }

    /// Appends a `PUBLISH` frame, remembered until the socket accepted all
    /// of it.
    pub fn queue_publish(&mut self, publish: Buffered) {
        let frame = publish.frame.clone();
        self.append(&frame, Some(publish));
    }

    fn append(&mut self, frame: &[u8], publish: Option<Buffered>) {
        let now = Instant::now();
        if self.out.is_empty() {
            self.last_write_progress = now;
        }
        self.out.extend_from_slice(frame);
        self.queued += frame.len() as u64;
        self.frames.push_back(QueuedFrame {
            end: self.queued,
            publish,
        });
        self.last_sent = now;
    }

    /// Appends a masked control frame.
    pub fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        self.queue(&control_frame(opcode, payload));
    }

    /// Sets the close frame written when the session ends after a lost
    /// connection.
    pub fn set_final_close(&mut self, body: &[u8]) {
        self.final_close = Some(control_frame(OpCode::Close, body));
    }

    /// The socket accepted `n` more bytes. Every publish now written whole
    /// is handed to `written` (its reply may come from now on).
    pub fn advance(&mut self, n: usize, mut written: impl FnMut(Buffered)) {
        self.out.advance(n);
        self.written += n as u64;
        self.needs_flush = true;
        self.last_write_progress = Instant::now();
        while self.frames.front().is_some_and(|f| f.end <= self.written) {
            let Some(frame) = self.frames.pop_front() else {
                break;
            };
            self.last_frame_end = frame.end;
            if let Some(publish) = frame.publish {
                written(publish);
            }
        }
    }

    /// Whether the socket accepted a whole number of frames: another frame
    /// written now would be read by the broker as a frame.
    pub fn at_frame_boundary(&self) -> bool {
        self.written == self.last_frame_end
    }

    /// The publishes the socket has not accepted whole, in order: none of
    /// them can have reached the broker complete.
    pub fn take_unwritten(&mut self) -> Vec<Buffered> {
        self.frames.drain(..).filter_map(|f| f.publish).collect()
    }

    /// When the next keepalive ping is due: after `interval` without sending
    /// or without receiving, at most once per `interval`.
    pub fn ping_due(&self, interval: Duration) -> Instant {
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

    /// One I/O step: reads into the read buffer (if `reading`) or writes
    /// some of the outgoing buffer (flushing once it is empty), whichever the
    /// socket is ready for first. Not biased: under a flood of incoming
    /// messages reads are always ready, and writes (pongs, publishes, echoes)
    /// must still get their turn. Cancel-safe. Call [`Session::receive`]
    /// after a read: the read buffer only stays bounded if it is decoded.
    /// Waits forever with nothing to read or write.
    pub async fn transfer(&mut self, reading: bool) -> Transfer {
        if reading {
            self.reserve_read();
        }
        let writing = !self.out.is_empty() || self.needs_flush;
        tokio::select! {
            read = self.reader.read_buf(&mut self.rbuf), if reading => match read {
                Ok(0) => Transfer::Lost("the server closed the TCP connection".into()),
                Ok(_) => {
                    self.last_recv = Instant::now();
                    Transfer::Read
                }
                Err(e) => Transfer::Lost(format!("read failed: {e}")),
            },
            written = write_or_flush(&mut self.writer, &self.out), if writing => match written {
                Ok(Written::Bytes(0)) => Transfer::Lost("socket accepted no bytes".into()),
                Ok(Written::Bytes(n)) => Transfer::Wrote(n),
                Ok(Written::Flushed) => {
                    self.needs_flush = false;
                    Transfer::Flushed
                }
                Err(e) => Transfer::Lost(format!("write failed: {e}")),
            },
            else => std::future::pending().await,
        }
    }

    /// Decodes the read buffer up to the next data message or close frame.
    /// Pings are answered with a pong (until our close frame is queued:
    /// nothing may follow it), pongs are dropped. The peer's close frame is
    /// answered with its own code (set as the final close). A framing
    /// violation sets the close frame reporting its code as the final close
    /// and is returned. `Ok(None)`: more bytes are needed.
    pub fn receive(&mut self) -> Result<Option<Received>, FrameError> {
        loop {
            let item = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(None),
                Err(e) => {
                    let code = e.close_code();
                    self.set_final_close(&ws::close_body(code.as_u16(), code.reason()));
                    return Err(e);
                }
            };
            match item {
                Incoming::Message(kind, payload) => {
                    return Ok(Some(Received::Message(kind, payload)));
                }
                Incoming::Ping(payload) => {
                    if self.closing_deadline.is_none() {
                        self.queue_control(OpCode::Pong, &payload);
                    }
                }
                Incoming::Pong(_) => {}
                Incoming::Close(_) if self.closing_deadline.is_some() => {
                    return Ok(Some(Received::CloseAnswered));
                }
                Incoming::Close(close) => {
                    let body = close
                        .code
                        .map(|code| ws::close_body(code, ""))
                        .unwrap_or_default();
                    self.set_final_close(&body);
                    return Ok(Some(Received::Closed(close)));
                }
            }
        }
    }

    /// Ends the socket, briefly and best effort (at most a second). With
    /// `write_queued`, everything queued is written first and the final
    /// close frame last. Without, only the final close frame is written, and
    /// only if the socket is between frames (the queued frames were handed
    /// back to be sent on another connection).
    pub async fn finish(&mut self, write_queued: bool) {
        let mut last = if write_queued {
            std::mem::take(&mut self.out).to_vec()
        } else {
            Vec::new()
        };
        match self.final_close.take() {
            Some(close) if write_queued || self.at_frame_boundary() => {
                last.extend_from_slice(&close);
            }
            _ => {}
        }
        if last.is_empty() && !write_queued {
            return;
        }
        let flush = async {
            self.writer.write_all(&last).await?;
            self.writer.flush().await?;
            self.writer.shutdown().await
        };
        let _ = tokio::time::timeout(FINAL_FLUSH_GRACE, flush).await;
    }
}

fn control_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 6);
    ws::write_client_frame(&mut frame, opcode, payload, rand::random());
    frame
}

/// What one write step did.
enum Written {
    /// The socket accepted this many bytes.
    Bytes(usize),
    /// Everything written was flushed.
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

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;

    /// A session over a loopback TCP connection, and its peer.
    async fn session() -> (Session, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let conn = Connection {
            stream: MaybeTlsStream::Plain(ours.unwrap()),
            leftover: BytesMut::new(),
            token_expires: None,
            inflate: None,
        };
        (Session::new(conn, 1 << 20), theirs.unwrap().0)
    }

    fn publish(byte: u8, len: usize) -> Buffered {
        Buffered {
            frame: Bytes::from(vec![byte; len]),
            id: None,
            ack: None,
        }
    }

    #[tokio::test]
    async fn publishes_not_written_whole_are_handed_back_in_order() {
        let (mut s, _peer) = session().await;
        s.queue_publish(publish(1, 10));
        s.queue(&[0; 5]);
        s.queue_publish(publish(2, 10));
        s.queue_publish(publish(3, 10));
        let mut written = Vec::new();
        // The first publish and the control frame whole, the second half.
        s.advance(20, |p| written.push(p.frame[0]));
        assert_eq!(written, [1]);
        assert!(!s.at_frame_boundary());
        let unwritten: Vec<u8> = s.take_unwritten().iter().map(|p| p.frame[0]).collect();
        assert_eq!(unwritten, [2, 3]);
    }

    #[tokio::test]
    async fn frame_boundaries_are_tracked() {
        let (mut s, _peer) = session().await;
        assert!(s.at_frame_boundary());
        s.queue_publish(publish(1, 10));
        s.advance(9, |_| {});
        assert!(!s.at_frame_boundary());
        let mut written = 0;
        s.advance(1, |_| written += 1);
        assert_eq!(written, 1);
        assert!(s.at_frame_boundary());
        assert!(s.take_unwritten().is_empty());
    }

    /// The bytes of every frame queued so far, unmasked by a server decoder.
    fn queued_items(s: &Session) -> Vec<Incoming> {
        let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
        let mut buf = s.out.clone();
        std::iter::from_fn(|| decoder.decode(&mut buf).unwrap()).collect()
    }

    #[tokio::test]
    async fn receive_answers_pings_and_the_peers_close() {
        let (mut s, _peer) = session().await;
        s.rbuf
            .extend_from_slice(&ws::server_frame(OpCode::Ping, b"a"));
        s.rbuf
            .extend_from_slice(&ws::server_frame(OpCode::Pong, b"b"));
        s.rbuf.extend_from_slice(&ws::binary_frame(b"m"));
        s.rbuf.extend_from_slice(&ws::server_frame(
            OpCode::Close,
            &ws::close_body(1012, "bye"),
        ));
        assert!(matches!(
            s.receive(),
            Ok(Some(Received::Message(MessageKind::Binary, m))) if &m[..] == b"m"
        ));
        let Ok(Some(Received::Closed(close))) = s.receive() else {
            panic!("expected the close");
        };
        assert_eq!((close.code, close.reason.as_str()), (Some(1012), "bye"));
        assert!(matches!(s.receive(), Ok(None)));
        assert_eq!(queued_items(&s), [Incoming::Pong(Bytes::from_static(b"a"))]);
        // The answer echoes the code, without the reason.
        let answer = decode_close(s.final_close.as_deref().unwrap());
        assert_eq!((answer.code, answer.reason.as_str()), (Some(1012), ""));
    }

    /// The close frame in `frame` (masked, as the client sends it).
    fn decode_close(frame: &[u8]) -> CloseFrame {
        let mut decoder = FrameDecoder::new(Role::Server, 64);
        match decoder.decode(&mut BytesMut::from(frame)) {
            Ok(Some(Incoming::Close(close))) => close,
            other => panic!("not a close frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn after_our_close_pings_are_not_answered_and_a_close_answers_it() {
        let (mut s, _peer) = session().await;
        s.queue_control(OpCode::Close, &ws::close_body(1000, ""));
        s.closing_deadline = Some(Instant::now());
        s.rbuf
            .extend_from_slice(&ws::server_frame(OpCode::Ping, b"a"));
        s.rbuf
            .extend_from_slice(&ws::server_frame(OpCode::Close, &ws::close_body(1000, "")));
        assert!(matches!(s.receive(), Ok(Some(Received::CloseAnswered))));
        assert_eq!(queued_items(&s).len(), 1, "only our close is queued");
        assert!(s.final_close.is_none());
    }

    #[tokio::test]
    async fn a_framing_violation_sets_the_close_with_its_code() {
        let (mut s, _peer) = session().await;
        let mut masked = Vec::new();
        ws::write_client_frame(&mut masked, OpCode::Binary, b"x", [1, 2, 3, 4]);
        s.rbuf.extend_from_slice(&masked);
        assert_eq!(s.receive().unwrap_err(), FrameError::Masked);
        let close = decode_close(s.final_close.as_deref().unwrap());
        assert_eq!(close.code, Some(1002));
    }
}
