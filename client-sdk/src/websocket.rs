//! A raw WebSocket connection over the SDK's own transport: a
//! conformance-testing aid.
//!
//! [`WebSocket`] exchanges plain WebSocket messages instead of tickwire
//! protocol messages. It exists so that the SDK's WebSocket layer can be
//! proven against a generic WebSocket test server: the repository runs the
//! Autobahn suite's client-side cases through it
//! (`client-sdk/examples/autobahn_client.rs`, `scripts/autobahn_client.py`,
//! docs/conformance.md). It runs the very code a [`Client`](crate::Client)
//! runs for its connection: URL parsing, TCP, TLS and the upgrade handshake
//! with the [`ClientBuilder`]'s settings, the client-role frame decoder with
//! its `max_message_size` limit, ping answers, the close handshake and the
//! close codes sent for framing violations (all in the crate's `session`
//! module, shared with the connection task). It does not reconnect, send
//! keepalive pings, or speak the tickwire protocol; applications talking to
//! a broker want [`Client`](crate::Client).
//!
//! Every I/O step has the builder's
//! [`request_timeout`](ClientBuilder::request_timeout) as its deadline;
//! outgoing messages are limited by
//! [`max_outgoing_message_size`](ClientBuilder::max_outgoing_message_size)
//! and queued up to
//! [`write_buffer_limit`](ClientBuilder::write_buffer_limit) bytes.
//!
//! ```no_run
//! use tickwire_client::Client;
//! use tickwire_client::websocket::WebSocket;
//!
//! # async fn demo() -> tickwire_client::Result<()> {
//! // An echo client: send every message back until the server closes.
//! let mut ws = WebSocket::connect(Client::builder("ws://127.0.0.1:9001/echo")).await?;
//! while let Some(message) = ws.recv().await? {
//!     ws.send(&message).await?;
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use bytes::Bytes;
use tickwire_protocol::CloseCode;
use tickwire_protocol::ws::{self, MessageKind, OpCode};
use tokio::time::Instant;

use crate::config::ClientBuilder;
use crate::error::{Error, Result};
use crate::session::{Received, Session, Transfer};
use crate::state::Disconnect;
use crate::transport::Target;
use crate::url::BrokerUrl;

/// A WebSocket data message: text (valid UTF-8) or binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    kind: MessageKind,
    payload: Bytes,
}

impl Data {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Data {
        Data {
            kind: MessageKind::Text,
            payload: Bytes::from(text.into()),
        }
    }

    /// A binary message.
    pub fn binary(payload: impl Into<Bytes>) -> Data {
        Data {
            kind: MessageKind::Binary,
            payload: payload.into(),
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.kind == MessageKind::Text
    }

    /// The text of a text message; `None` for a binary message.
    pub fn as_text(&self) -> Option<&str> {
        if self.is_text() {
            std::str::from_utf8(&self.payload).ok()
        } else {
            None
        }
    }

    /// The payload bytes (UTF-8 for a text message).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

/// One WebSocket connection, driven by its caller: [`WebSocket::recv`] reads
/// (and writes what is queued meanwhile), [`WebSocket::send`] queues.
///
/// See the [module documentation](self).
pub struct WebSocket {
    session: Session,
    step_timeout: Duration,
    max_outgoing: usize,
    write_limit: usize,
    /// Set once the connection ended: every later call fails with
    /// [`Error::Closed`].
    ended: bool,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("queued", &self.session.out.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Connects to the builder's URL with its settings (timeouts, TLS,
    /// token, size limits). The URL's path and query are sent as they are;
    /// an empty path means `/ws`. The upgrade request offers the
    /// `tickwire.v1` subprotocol, which a server may ignore.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`]: [`Error::InvalidUrl`],
    /// [`Error::Config`], then the connection error.
    pub async fn connect(builder: ClientBuilder) -> Result<WebSocket> {
        let ClientBuilder { url, config } = builder;
        config.validate()?;
        let target = Target::new(BrokerUrl::parse(&url)?, &config)?;
        let conn = target.connect().await?;
        Ok(WebSocket {
            session: Session::new(conn, config.max_message_size),
            step_timeout: config.request_timeout,
            max_outgoing: config.max_outgoing_message_size,
            write_limit: config.write_buffer_limit,
            ended: false,
        })
    }

    /// Receives the next message, answering pings and writing queued
    /// messages meanwhile. `Ok(None)` once the server closed the connection
    /// and its close frame was answered (after the queued messages).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the connection ended without a close
    /// handshake (after a framing violation, the close frame with the
    /// matching code was sent), [`Error::Timeout`] when an I/O step passed
    /// its deadline, [`Error::Closed`] after the connection ended.
    pub async fn recv(&mut self) -> Result<Option<Data>> {
        self.check_open()?;
        loop {
            match self.session.receive() {
                Ok(Some(Received::Message(kind, payload))) => {
                    return Ok(Some(Data { kind, payload }));
                }
                Ok(Some(Received::Closed(_) | Received::CloseAnswered)) => {
                    self.end().await;
                    return Ok(None);
                }
                Ok(None) => self.step(true).await?,
                Err(e) => {
                    tracing::debug!(
                        "server sent an invalid frame ({e}); closing with {}",
                        e.close_code().as_u16()
                    );
                    return Err(self.fail(Disconnect::ProtocolError(e.to_string())).await);
                }
            }
        }
    }

    /// Queues `message` as one masked frame. It is written by the following
    /// calls; when more than the write buffer limit is queued, this waits
    /// until the socket accepted enough.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] over the outgoing size limit (nothing is
    /// queued), otherwise as [`WebSocket::recv`].
    pub async fn send(&mut self, message: &Data) -> Result<()> {
        self.check_open()?;
        let size = message.payload.len();
        if size > self.max_outgoing {
            return Err(Error::MessageTooLarge {
                size,
                limit: self.max_outgoing,
            });
        }
        let mut frame = Vec::with_capacity(size + 14);
        ws::write_client_frame(
            &mut frame,
            message.kind.opcode(),
            &message.payload,
            rand::random(),
        );
        self.session.queue(&frame);
        while self.session.out.len() > self.write_limit {
            self.step(false).await?;
        }
        Ok(())
    }

    /// Closes the connection: queues a close frame with code 1000, waits
    /// (up to the request timeout) for the server's answer while discarding
    /// messages, then ends the socket.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv`]; closing a connection that already ended is
    /// [`Error::Closed`].
    pub async fn close(mut self) -> Result<()> {
        self.check_open()?;
        let normal = CloseCode::Normal;
        self.session
            .queue_control(OpCode::Close, &ws::close_body(normal.as_u16(), "closing"));
        let deadline = Instant::now() + self.step_timeout;
        self.session.closing_deadline = Some(deadline);
        let answered = tokio::time::timeout_at(deadline, async {
            while self.recv().await?.is_some() {}
            Ok::<(), Error>(())
        })
        .await;
        match answered {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!("the server did not answer the close frame in time");
                self.end().await;
                Ok(())
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.ended {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// One I/O step (reading too, if `reading`) under the step deadline.
    async fn step(&mut self, reading: bool) -> Result<()> {
        let step = tokio::time::timeout(self.step_timeout, self.session.transfer(reading)).await;
        match step {
            Ok(Transfer::Read | Transfer::Flushed) => Ok(()),
            Ok(Transfer::Wrote(n)) => {
                self.session.advance(n, |_| {});
                Ok(())
            }
            Ok(Transfer::Lost(why)) => Err(self.fail(Disconnect::ConnectionLost(why)).await),
            Err(_) => {
                self.end().await;
                Err(Error::Timeout {
                    operation: "WebSocket read or write",
                    after: self.step_timeout,
                })
            }
        }
    }

    /// Ends the connection for `cause`, returning its error.
    async fn fail(&mut self, cause: Disconnect) -> Error {
        self.end().await;
        Error::Disconnected(cause)
    }

    /// Writes what is queued and the final close frame, if any, and ends
    /// the socket.
    async fn end(&mut self) {
        self.ended = true;
        self.session.finish(true).await;
    }
}
