//! Connection state, as observed through [`Client::state`](crate::Client::state).

use std::fmt;

use tickwire_protocol::CloseCode;

/// Where the client's connection to the broker stands.
///
/// Observe it with [`Client::state`](crate::Client::state), which returns a
/// [`tokio::sync::watch::Receiver`]:
///
/// ```no_run
/// # async fn demo() -> tickwire_client::Result<()> {
/// use tickwire_client::{Client, ConnectionState};
///
/// let client = Client::connect("ws://127.0.0.1:8080").await?;
/// let mut state = client.state();
/// tokio::spawn(async move {
///     while state.changed().await.is_ok() {
///         match &*state.borrow_and_update() {
///             ConnectionState::Reconnecting { attempt, cause } => {
///                 eprintln!("connection lost ({cause}), reconnect attempt {attempt}")
///             }
///             ConnectionState::Connected => eprintln!("connected"),
///             ConnectionState::Closed { .. } => break,
///             _ => {}
///         }
///     }
/// });
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A reconnect attempt is under way: name resolution, TCP, TLS and the
    /// WebSocket handshake. It follows [`ConnectionState::Reconnecting`]
    /// once its backoff delay has passed, and ends in `Connected` or in
    /// `Reconnecting` for the next attempt. (A `Client` starts `Connected`:
    /// [`ClientBuilder::connect`](crate::ClientBuilder::connect) returns once
    /// connected.)
    Connecting,
    /// The WebSocket session is up; requests go straight to the broker.
    Connected,
    /// The connection (or the last attempt) ended and the client waits out
    /// the backoff delay before reconnect attempt number `attempt`
    /// (starting at 1), then goes to [`ConnectionState::Connecting`].
    Reconnecting {
        /// The attempt in progress or about to start, counting from 1.
        attempt: u32,
        /// Why the previous connection or attempt ended.
        cause: Disconnect,
    },
    /// The client is closed for good: [`Client::close`](crate::Client::close)
    /// was called, every handle was dropped, or reconnecting was disabled or
    /// gave up.
    Closed {
        /// Why the last connection ended, when the client was not closed by
        /// the application.
        cause: Option<Disconnect>,
    },
}

impl ConnectionState {
    /// Whether this is [`ConnectionState::Connected`].
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }

    /// Whether this is [`ConnectionState::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, ConnectionState::Closed { .. })
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionState::Connecting => f.write_str("connecting"),
            ConnectionState::Connected => f.write_str("connected"),
            ConnectionState::Reconnecting { attempt, cause } => {
                write!(f, "reconnecting (attempt {attempt}; {cause})")
            }
            ConnectionState::Closed { cause: None } => f.write_str("closed"),
            ConnectionState::Closed { cause: Some(cause) } => write!(f, "closed ({cause})"),
        }
    }
}

/// Why a connection (or a connection attempt) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The broker sent a WebSocket close frame. Well-known codes:
    /// `1001` broker shutting down, `4001` slow consumer (this client did not
    /// read fast enough), `4002` keepalive timeout; see
    /// [`Disconnect::close_code`].
    ClosedByBroker {
        /// The close code, if the frame had one.
        code: Option<u16>,
        /// The close reason text (may be empty).
        reason: String,
    },
    /// Nothing was received from the broker within the keepalive timeout, or
    /// outgoing data made no progress for that long.
    KeepaliveTimeout,
    /// The TCP connection ended or failed without a close frame.
    ConnectionLost(String),
    /// The broker broke WebSocket framing rules; the client closed the
    /// connection with the matching close code.
    ProtocolError(String),
    /// A reconnect attempt failed (the text is the [`Error`](crate::Error)'s
    /// message).
    ConnectFailed(String),
}

impl Disconnect {
    /// Whether the client stays away after this: the broker closed with
    /// 4007 (disconnected by the server, e.g. `POST /v1/disconnect`) or with
    /// an application code 4500-4999. The client then does not reconnect
    /// and becomes [`ConnectionState::Closed`] with this cause; after any
    /// other cause (including 4100-4499) it reconnects per its policy.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Disconnect::ClosedByBroker { code: Some(code), .. }
                if tickwire_protocol::codes::is_final_disconnect(*code)
        )
    }

    /// The close code as a known [`CloseCode`], for
    /// [`Disconnect::ClosedByBroker`] with a code this version knows.
    pub fn close_code(&self) -> Option<CloseCode> {
        let Disconnect::ClosedByBroker {
            code: Some(code), ..
        } = self
        else {
            return None;
        };
        CloseCode::from_u16(*code)
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::ClosedByBroker { code: None, .. } => {
                f.write_str("broker closed the connection")
            }
            Disconnect::ClosedByBroker {
                code: Some(code),
                reason,
            } if reason.is_empty() => {
                write!(f, "broker closed the connection with code {code}")
            }
            Disconnect::ClosedByBroker {
                code: Some(code),
                reason,
            } => write!(f, "broker closed the connection with code {code}: {reason}"),
            Disconnect::KeepaliveTimeout => f.write_str("keepalive timeout"),
            Disconnect::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Disconnect::ProtocolError(why) => write!(f, "protocol error: {why}"),
            Disconnect::ConnectFailed(why) => write!(f, "connect failed: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_back() {
        let d = Disconnect::ClosedByBroker {
            code: Some(4001),
            reason: "slow consumer".into(),
        };
        assert_eq!(d.close_code(), Some(CloseCode::SlowConsumer));
        assert_eq!(
            d.to_string(),
            "broker closed the connection with code 4001: slow consumer"
        );
        let d = Disconnect::ClosedByBroker {
            code: Some(4999),
            reason: String::new(),
        };
        assert_eq!(d.close_code(), None);
        assert_eq!(Disconnect::KeepaliveTimeout.close_code(), None);
    }

    #[test]
    fn only_4007_and_4500_to_4999_are_final() {
        let closed = |code| Disconnect::ClosedByBroker {
            code: Some(code),
            reason: String::new(),
        };
        for code in [4007, 4500, 4750, 4999] {
            assert!(closed(code).is_final(), "{code}");
        }
        for code in [1000, 1001, 4001, 4003, 4100, 4499, 5000] {
            assert!(!closed(code).is_final(), "{code}");
        }
        let no_code = Disconnect::ClosedByBroker {
            code: None,
            reason: String::new(),
        };
        assert!(!no_code.is_final());
        assert!(!Disconnect::KeepaliveTimeout.is_final());
    }
}
