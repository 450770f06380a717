//! The byte streams a connection runs on: plain TCP or TLS over TCP.
//!
//! The HTTP layer ([`crate::http`]), the WebSocket reader
//! ([`crate::connection`]) and writer ([`crate::writer`]) are generic over
//! [`Transport`], so each connection is compiled for its own kind of stream
//! and a plain TCP connection pays nothing for TLS: its reader still waits
//! for readability before it takes a read buffer, and its two halves share
//! the socket without a lock ([`TcpReader`], [`TcpWriter`]), which also lets
//! the outbound queue write to it directly when the connection is idle.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::PeerIdentity;

/// A TLS connection accepted by the broker.
pub type TlsTcpStream = TlsStream<TcpStream>;

/// The read side of a split connection.
pub trait ReadSide: Send + 'static {
    /// Reads what is available into `buf`, reserving at least `want` bytes
    /// of space first; `Ok(0)` at EOF.
    fn fill(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send;
}

/// A stream a connection can run on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half after [`Transport::split`].
    type Reader: ReadSide;
    /// The write half after [`Transport::split`].
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Splits the stream for the WebSocket reader and writer.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// The socket behind `writer`, when the outbound queue may also write
    /// to it directly (plain TCP; see
    /// [`crate::outbound::OutboundQueue::attach_socket`]); `None` for TLS.
    fn shared_socket(_writer: &Self::Writer) -> Option<Arc<TcpStream>> {
        None
    }

    /// The verified client certificate's identity, if the client presented
    /// one.
    fn peer_identity(&self) -> Option<PeerIdentity>;
}

/// The read half of a plain TCP connection. Both halves share the socket
/// (one `Arc`, no lock: reads and writes are independent system calls), so
/// that the outbound queue can write to it too.
#[derive(Debug)]
pub struct TcpReader(Arc<TcpStream>);

/// The write half of a plain TCP connection (see [`TcpReader`]).
#[derive(Debug)]
pub struct TcpWriter(Arc<TcpStream>);

impl ReadSide for TcpReader {
    /// Buffer space is reserved only once the socket is readable, so an idle
    /// connection holds no read buffer while it waits.
    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        loop {
            self.0.readable().await?;
            buf.reserve(want);
            match self.0.try_read_buf(buf) {
                // The readiness was stale: give the space back before
                // waiting again, or an idle connection would hold it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                result => return result,
            }
        }
    }
}

impl TcpWriter {
    /// Runs `write` once the socket is writable, again after every
    /// `WouldBlock` (which clears tokio's readiness, so the next poll waits).
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match write(&self.0) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for TcpWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-closes: the peer reads EOF after what was written, and can still
    /// send its close frame.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(Shutdown::Write))
    }
}

impl Transport for TcpStream {
    type Reader = TcpReader;
    type Writer = TcpWriter;

    fn split(self) -> (TcpReader, TcpWriter) {
        let socket = Arc::new(self);
        (TcpReader(Arc::clone(&socket)), TcpWriter(socket))
    }

    fn shared_socket(writer: &TcpWriter) -> Option<Arc<TcpStream>> {
        Some(Arc::clone(&writer.0))
    }

    fn peer_identity(&self) -> Option<PeerIdentity> {
        None
    }
}

impl ReadSide for ReadHalf<TlsTcpStream> {
    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        buf.reserve(want);
        self.read_buf(buf).await
    }
}

impl Transport for TlsTcpStream {
    type Reader = ReadHalf<TlsTcpStream>;
    type Writer = WriteHalf<TlsTcpStream>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }

    fn peer_identity(&self) -> Option<PeerIdentity> {
        let leaf = self.get_ref().1.peer_certificates()?.first()?;
        PeerIdentity::from_certificate(leaf)
    }
}
