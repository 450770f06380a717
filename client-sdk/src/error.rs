//! The SDK's error types.

use std::io;
use std::time::Duration;

use tickwire_protocol::{ErrorCode, TopicError};

/// `Result` with the SDK's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to a tickwire broker.
///
/// Errors are grouped by where they come from:
///
/// * before anything is sent: [`Error::InvalidUrl`], [`Error::Config`],
///   [`Error::InvalidTopic`], [`Error::InvalidPattern`],
///   [`Error::InvalidOptions`], [`Error::Encode`], [`Error::MessageTooLarge`];
/// * while connecting: [`Error::ConnectionRefused`], [`Error::Connect`],
///   [`Error::Tls`], [`Error::Handshake`], [`Error::Timeout`];
/// * from the broker: [`Error::Broker`] (an `ERROR` reply with its
///   [`ErrorCode`], [`ErrorCode::Unknown`] for codes of newer brokers);
/// * from the connection's life: [`Error::NotConnected`],
///   [`Error::OfflineBufferFull`], [`Error::ConnectionLost`], [`Error::NotSent`],
///   [`Error::Closed`], [`Error::Timeout`], [`Error::Disconnected`] (raw
///   [`websocket`](crate::websocket) connections only);
/// * from payloads: [`Error::Decode`].
///
/// ```
/// use tickwire_client::{Error, ErrorCode};
///
/// fn retryable(err: &Error) -> bool {
///     match err {
///         Error::Broker { code, .. } => matches!(code, ErrorCode::Internal | ErrorCode::ShuttingDown),
///         Error::Timeout { .. } | Error::ConnectionLost | Error::NotConnected => true,
///         _ => false,
///     }
/// }
/// assert!(retryable(&Error::ConnectionLost));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL could not be parsed or uses an unsupported feature.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A builder option has a value the client cannot work with.
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// Nothing accepts TCP connections at the broker's address.
    #[error("connection refused: is a broker listening on {addr}? start one with `tickwire serve`")]
    ConnectionRefused {
        /// `host:port` of the broker, as in the URL.
        addr: String,
    },

    /// The TCP connection could not be established (name resolution, network
    /// unreachable, reset, ...).
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// `host:port` of the broker, as in the URL.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// Setting up TLS failed: loading root certificates, or the TLS handshake
    /// itself (for example an untrusted or mismatched server certificate).
    #[error("TLS with {host} failed: {source}")]
    Tls {
        /// The server name that was verified.
        host: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The HTTP upgrade to WebSocket failed or the broker's answer did not
    /// prove it speaks tickwire.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[from] HandshakeError),

    /// The broker answered a request with an `ERROR` reply.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The machine-readable reason; [`ErrorCode::Unknown`] for a code
        /// this client version does not know (the broker is newer).
        code: ErrorCode,
        /// The broker's explanation, for people.
        message: String,
    },

    /// A topic passed to a publish method is not a valid topic name.
    #[error("invalid topic {topic:?}: {source}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// Which rule it breaks.
        #[source]
        source: TopicError,
    },

    /// A pattern passed to a subscribe method is not a valid pattern.
    #[error("invalid pattern {pattern:?}: {source}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Which rule it breaks.
        #[source]
        source: TopicError,
    },

    /// Subscribe options that cannot be used: an invalid `since` position,
    /// or options that conflict with the subscription this client already
    /// holds for the same pattern (see
    /// [`SubscribeOptions`](crate::SubscribeOptions)).
    #[error("invalid subscribe options for {pattern:?}: {reason}")]
    InvalidOptions {
        /// The pattern as given.
        pattern: String,
        /// What is wrong, and what to do instead.
        reason: String,
    },

    /// An operation did not complete within its configured time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out: `"connect"`, `"subscribe"`, `"publish"`, ...
        operation: &'static str,
        /// The configured limit.
        after: Duration,
    },

    /// The client is disconnected and the offline policy is
    /// [`OfflinePolicy::Fail`](crate::OfflinePolicy::Fail), or the operation
    /// (such as [`Client::ping`](crate::Client::ping)) needs a live connection.
    #[error("not connected to the broker")]
    NotConnected,

    /// The client is disconnected and the offline publish buffer is full.
    #[error(
        "not connected to the broker and the offline publish buffer is full \
         ({max_messages} messages / {max_bytes} bytes)"
    )]
    OfflineBufferFull {
        /// The configured message bound.
        max_messages: usize,
        /// The configured byte bound.
        max_bytes: usize,
    },

    /// The connection was lost after the request was sent and before its
    /// reply arrived; the request may or may not have taken effect.
    #[error("connection to the broker was lost before the reply arrived")]
    ConnectionLost,

    /// The connection was lost before the publish was written to it whole,
    /// so the broker never applied it, and the offline policy is
    /// [`OfflinePolicy::Fail`](crate::OfflinePolicy::Fail), so it is not
    /// sent again. (Under `Buffer` it is sent on the next connection.)
    #[error("connection to the broker was lost before the publish was sent; it was not applied")]
    NotSent,

    /// A publish's encoded message is larger than
    /// [`ClientBuilder::max_outgoing_message_size`](crate::ClientBuilder::max_outgoing_message_size),
    /// the largest message the broker accepts; nothing was sent.
    #[error("message of {size} bytes exceeds the broker's limit of {limit} bytes")]
    MessageTooLarge {
        /// The encoded message's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The [`token_provider`](crate::ClientBuilder::token_provider) callback
    /// failed, or gave a token that cannot be sent (not visible ASCII).
    #[error("token provider failed: {0}")]
    TokenProvider(String),

    /// The client was closed (by [`Client::close`](crate::Client::close), or
    /// because reconnecting was disabled or gave up).
    #[error("the client is closed")]
    Closed,

    /// A raw [`WebSocket`](crate::websocket::WebSocket) connection ended
    /// without a close handshake: the stream failed or ended, a deadline
    /// passed, or the server broke a framing rule (the client then closed
    /// with the matching close code).
    #[error("WebSocket connection ended: {0}")]
    Disconnected(crate::Disconnect),

    /// A value could not be serialized as MessagePack.
    #[error("could not encode payload as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),

    /// A payload could not be deserialized into the requested type.
    #[error("could not decode payload from MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

impl Error {
    /// The broker's [`ErrorCode`] if this is an [`Error::Broker`].
    pub fn broker_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why the HTTP upgrade to a tickwire WebSocket connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The broker answered with a status other than `101 Switching
    /// Protocols`. The tickwire broker answers `400` with an explanation for
    /// an unsupported subprotocol and `503` when it is full.
    #[error("broker answered HTTP {status} {reason}{}", body_suffix(.body))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The HTTP reason phrase.
        reason: String,
        /// The response body as text (lossy UTF-8, at most 4 KiB).
        body: String,
    },

    /// `Sec-WebSocket-Accept` is missing or is not the SHA-1 digest of the key
    /// the client sent, so the response does not answer this request.
    #[error("Sec-WebSocket-Accept mismatch: expected {expected:?}, got {got:?}")]
    AcceptMismatch {
        /// The value the client computed.
        expected: String,
        /// The value the broker sent, if any.
        got: Option<String>,
    },

    /// The broker selected a subprotocol other than `tickwire.v1`.
    #[error("broker selected subprotocol {got:?} but this client speaks only {offered:?}")]
    Subprotocol {
        /// What the client offered (`tickwire.v1`).
        offered: String,
        /// What the broker answered.
        got: String,
    },

    /// The `101` response lacks `Upgrade: websocket` or `Connection: upgrade`.
    #[error("response is not a WebSocket upgrade: {0}")]
    NotUpgrade(String),

    /// The broker enabled WebSocket extensions the client did not offer.
    #[error("broker enabled WebSocket extensions that were not offered: {0}")]
    UnexpectedExtensions(String),

    /// The response is not valid HTTP/1.1 or its head is too large.
    #[error("malformed HTTP response: {0}")]
    MalformedResponse(String),

    /// The connection closed before a complete response arrived.
    #[error("connection closed before the handshake completed")]
    UnexpectedEof,
}

/// An `ERROR` reply's content, kept so it can be turned into an [`Error`]
/// more than once (for every local subscription it concerns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The code (known or not).
    pub code: ErrorCode,
    /// The broker's explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: &str) -> Self {
        Refusal {
            code,
            message: message.to_owned(),
        }
    }

    /// The matching [`Error::Broker`].
    pub fn to_error(&self) -> Error {
        Error::Broker {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_message_points_at_the_cli() {
        let err = Error::ConnectionRefused {
            addr: "127.0.0.1:8080".into(),
        };
        assert_eq!(
            err.to_string(),
            "connection refused: is a broker listening on 127.0.0.1:8080? start one with `tickwire serve`"
        );
    }

    #[test]
    fn status_message_includes_body() {
        let err = HandshakeError::Status {
            status: 503,
            reason: "Service Unavailable".into(),
            body: "broker is full".into(),
        };
        assert_eq!(
            err.to_string(),
            "broker answered HTTP 503 Service Unavailable: broker is full"
        );
        let err = HandshakeError::Status {
            status: 404,
            reason: "Not Found".into(),
            body: String::new(),
        };
        assert_eq!(err.to_string(), "broker answered HTTP 404 Not Found");
    }
}
