//! One connection's I/O state: the socket halves, the read buffer and frame
//! decoder, the outgoing bytes, keepalive clocks, and which queued
//! `PUBLISH` frames have not been written whole yet (so that a lost
//! connection hands them back instead of discarding them).

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

use tickwire_protocol::ws::{self, FrameDecoder, OpCode, Role};

use crate::offline::Buffered;
use crate::transport::{Connection, MaybeTlsStream};

/// Smallest free space offered to a socket read.
const MIN_READ_SPACE: usize = 16 * 1024;

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
            decoder: FrameDecoder::new(Role::Client, max_message_size),
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
    pub fn reserve_read(&mut self) {
        let wanted = self.decoder.wanted().max(self.rbuf.len() + 1);
        let spare = (wanted - self.rbuf.len()).max(MIN_READ_SPACE);
        if self.rbuf.capacity() - self.rbuf.len() < spare {
            self.rbuf.reserve(spare);
        }
    }
}

fn control_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 6);
    ws::write_client_frame(&mut frame, opcode, payload, rand::random());
    frame
}

/// What one write step did.
pub(crate) enum Written {
    /// The socket accepted this many bytes.
    Bytes(usize),
    /// Everything written was flushed.
    Flushed,
}

/// Writes some of `out`, or flushes when it is empty. Cancel-safe.
pub(crate) async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &[u8],
) -> io::Result<Written> {
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
}
