//! The byte streams a connection runs on: plain TCP or TLS over TCP.
//!
//! The HTTP layer ([`crate::http`]), the WebSocket reader
//! ([`crate::connection`]) and writer ([`crate::writer`]) are generic over
//! [`Transport`], so each connection is compiled for its own kind of stream
//! and a plain TCP connection pays nothing for TLS: its reader still waits
//! for readability before it takes a read buffer, and its halves are
//! tokio's lock-free owned halves.

use std::future::Future;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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

    /// The verified client certificate's identity, if the client presented
    /// one.
    fn peer_identity(&self) -> Option<PeerIdentity>;
}

impl ReadSide for OwnedReadHalf {
    /// Buffer space is reserved only once the socket is readable, so an idle
    /// connection holds no read buffer while it waits.
    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        loop {
            self.readable().await?;
            buf.reserve(want);
            match self.try_read_buf(buf) {
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

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
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
