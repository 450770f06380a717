//! Numbers that travel on the wire: error codes in `ERROR` replies and
//! WebSocket close codes.
//!
//! Both tables are part of the contract in docs/protocol.md; a number, once
//! published, never changes meaning.

use std::fmt;

/// The `code` field of an `ERROR` reply.
///
/// An error reply never closes the connection by itself: the client may
/// correct the request and carry on.
///
/// A code this version does not know decodes as [`ErrorCode::Unknown`], so
/// a client keeps working against a newer broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame is not one MessagePack message of the documented shape
    /// (not MessagePack, wrong field types, missing fields, trailing bytes).
    Malformed,
    /// The message type number is not one this broker knows.
    UnknownMessageType,
    /// The topic of a publish is not a valid topic name.
    InvalidTopic,
    /// The pattern of a subscribe or unsubscribe is not a valid pattern.
    InvalidPattern,
    /// An option key this broker does not support, or an option value of the
    /// wrong type.
    InvalidOption,
    /// The connection already holds the maximum number of subscriptions.
    TooManySubscriptions,
    /// The connection is already subscribed to exactly this pattern.
    AlreadySubscribed,
    /// Unsubscribe for a pattern the connection is not subscribed to.
    NotSubscribed,
    /// The broker tracks the maximum number of topics and this publish or
    /// subscribe would create another.
    TooManyTopics,
    /// The payload is larger than the broker accepts.
    PayloadTooLarge,
    /// The broker is shutting down and takes no new work.
    ShuttingDown,
    /// Something failed inside the broker; the request may be retried.
    Internal,
    /// The connection's grants do not allow this subscribe or publish. The
    /// reply is the same whether or not the topic exists.
    Forbidden,
    /// The request needs credentials the connection does not have (an HTTP
    /// publish without a valid token gets this name in its 401 body).
    Unauthorized,
    /// The connection publishes faster than its `publish_rate` /
    /// `publish_bytes_rate` allow; this publish was not applied. Slow down
    /// and retry.
    RateLimited,
    /// Keeping this message (a requested `retain`) would exceed the broker's
    /// `max_retained_bytes`; nothing was published.
    StorageFull,
    /// A `SUBSCRIBE` would create a presence entry beyond
    /// `max_presence_per_topic` or the broker's `max_presence_entries`;
    /// nothing was subscribed.
    PresenceFull,
    /// `PRESENCE`, or `join_leave` on an exact topic, for a topic without
    /// presence (`presence = true` in its `[[topic]]` table).
    PresenceDisabled,
    /// A code this version does not know (from a newer broker); treat it as
    /// a refusal of the request.
    Unknown(u16),
}

impl ErrorCode {
    /// Every code this version knows, in numeric order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Malformed,
        ErrorCode::UnknownMessageType,
        ErrorCode::InvalidTopic,
        ErrorCode::InvalidPattern,
        ErrorCode::InvalidOption,
        ErrorCode::TooManySubscriptions,
        ErrorCode::AlreadySubscribed,
        ErrorCode::NotSubscribed,
        ErrorCode::TooManyTopics,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
        ErrorCode::StorageFull,
        ErrorCode::PresenceFull,
        ErrorCode::PresenceDisabled,
    ];

    /// The number sent on the wire.
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::UnknownMessageType => 2,
            ErrorCode::InvalidTopic => 3,
            ErrorCode::InvalidPattern => 4,
            ErrorCode::InvalidOption => 5,
            ErrorCode::TooManySubscriptions => 6,
            ErrorCode::AlreadySubscribed => 7,
            ErrorCode::NotSubscribed => 8,
            ErrorCode::TooManyTopics => 9,
            ErrorCode::PayloadTooLarge => 10,
            ErrorCode::ShuttingDown => 11,
            ErrorCode::Internal => 12,
            ErrorCode::Forbidden => 13,
            ErrorCode::Unauthorized => 14,
            ErrorCode::RateLimited => 15,
            ErrorCode::StorageFull => 16,
            ErrorCode::PresenceFull => 17,
            ErrorCode::PresenceDisabled => 18,
            ErrorCode::Unknown(n) => n,
        }
    }

    /// The code for a wire number: a known one, or [`ErrorCode::Unknown`].
    pub fn from_u16(n: u16) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.as_u16() == n)
            .unwrap_or(ErrorCode::Unknown(n))
    }

    /// A short snake_case name, used in logs, metrics labels and HTTP bodies.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::InvalidPattern => "invalid_pattern",
            ErrorCode::InvalidOption => "invalid_option",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::TooManyTopics => "too_many_topics",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::PresenceFull => "presence_full",
            ErrorCode::PresenceDisabled => "presence_disabled",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// WebSocket close codes the broker sends, with the situations they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// Orderly close requested by either side.
    Normal = 1000,
    /// The broker is shutting down (or the client is leaving).
    GoingAway = 1001,
    /// The peer broke RFC 6455 framing rules: reserved bits or opcodes,
    /// unmasked client frame, control frame over 125 bytes or fragmented,
    /// bad continuation, malformed close frame.
    ProtocolError = 1002,
    /// A text message: tickwire speaks binary messages only.
    UnsupportedData = 1003,
    /// A text message or a close frame's reason that is not valid UTF-8.
    InvalidPayload = 1007,
    /// A message (one frame, or fragments together) over the size limit.
    MessageTooBig = 1009,
    /// The broker failed internally.
    InternalError = 1011,
    /// The connection's outbound queue exceeded its byte budget.
    SlowConsumer = 4001,
    /// Nothing was received from the peer within the keepalive timeout.
    KeepaliveTimeout = 4002,
    /// The token the connection authenticated with expired.
    TokenExpired = 4003,
    /// The connection did not authenticate in time.
    AuthenticationRequired = 4004,
    /// The connection kept publishing over its rate limit (a sustained
    /// flood of refused publishes).
    PublishFlood = 4005,
    /// A message was started but not completed within `message_timeout`.
    MessageTimeout = 4006,
    /// The server closed the connection on request of its operator (the
    /// HTTP disconnect API); clients should not reconnect on their own.
    /// Operators may also choose a code of their own in 4100-4999
    /// ([`APPLICATION_CLOSE_CODES`]).
    DisconnectedByServer = 4007,
}

/// The close codes an operator may choose for a server-side disconnect
/// besides [`CloseCode::DisconnectedByServer`]: 4100-4499 ask clients to
/// reconnect, 4500-4999 ask them not to.
pub const APPLICATION_CLOSE_CODES: std::ops::RangeInclusive<u16> = 4100..=4999;

/// Whether a client that was closed with `code` by a server-side disconnect
/// should stay away: 4007 and 4500-4999 (4100-4499 invite a reconnect).
pub const fn is_final_disconnect(code: u16) -> bool {
    matches!(code, 4007 | 4500..=4999)
}

impl CloseCode {
    /// The number sent on the wire.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// Every code the broker sends, in numeric order.
    pub const ALL: [CloseCode; 14] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::SlowConsumer,
        CloseCode::KeepaliveTimeout,
        CloseCode::TokenExpired,
        CloseCode::AuthenticationRequired,
        CloseCode::PublishFlood,
        CloseCode::MessageTimeout,
        CloseCode::DisconnectedByServer,
    ];

    /// The code for a wire number, if it is one of [`CloseCode::ALL`].
    pub fn from_u16(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_u16() == n)
    }

    /// The reason text the broker sends with this code.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "broker shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::UnsupportedData => "text frames are not supported; send binary MessagePack",
            CloseCode::InvalidPayload => "invalid UTF-8 in a text message or close reason",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::SlowConsumer => "slow consumer: outbound queue over budget",
            CloseCode::KeepaliveTimeout => "keepalive timeout",
            CloseCode::TokenExpired => "token expired",
            CloseCode::AuthenticationRequired => "authentication required",
            CloseCode::PublishFlood => "publish flood: rate limit exceeded for too long",
            CloseCode::MessageTimeout => "message not completed within message_timeout",
            CloseCode::DisconnectedByServer => "disconnected by the server",
        }
    }
}

/// Whether a peer may send `code` in a close frame: the codes RFC 6455
/// section 7.4 defines for the wire plus those its IANA registry added since
/// (1012 service restart, 1013 try again later, 1014 bad gateway), and the
/// 3000-4999 ranges for libraries and applications. 1004 (reserved), 1005,
/// 1006 and 1015 (never sent on the wire) and everything else are refused.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_are_unique() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), code);
        }
        let mut numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::Unknown(0));
        assert_eq!(ErrorCode::from_u16(4242).as_u16(), 4242);
        assert_eq!(ErrorCode::Unknown(99).to_string(), "unknown (99)");
    }

    #[test]
    fn close_codes_round_trip() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(CloseCode::from_u16(1005), None);
        assert_eq!(
            CloseCode::from_u16(4007),
            Some(CloseCode::DisconnectedByServer)
        );
        assert!(APPLICATION_CLOSE_CODES.contains(&4100));
        assert!(!APPLICATION_CLOSE_CODES.contains(&4007));
        for (code, is_final) in [
            (4007, true),
            (4100, false),
            (4499, false),
            (4500, true),
            (4999, true),
            (4001, false),
        ] {
            assert_eq!(is_final_disconnect(code), is_final, "{code}");
        }
    }

    #[test]
    fn close_code_validity() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4001, 4999,
        ] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }
}
