//! tickwire messages: what travels inside each binary WebSocket frame.
//!
//! Every message is one MessagePack array whose first element is the message
//! type number ([`MessageType`]) and whose other elements are positional
//! fields. docs/protocol.md lists each message with hex examples.
//!
//! Decoding borrows: [`ClientMessage::decode`] takes the frame as [`Bytes`]
//! and hands back the publish payload as a slice of it (no copy), topics and
//! patterns as `&str` into it. Encoding writes the canonical (shortest)
//! MessagePack form.
//!
//! * `client.rs`: what clients send ([`ClientMessage`]);
//! * `server.rs`: what the broker sends ([`ServerMessage`]) and the
//!   encode-once delivery frame ([`encode_delivery_frame`]);
//! * `options.rs`: positions and subscribe options ([`Position`],
//!   [`SubscribeOptions`], [`JoinLeave`]);
//! * `presence.rs`: the presence answer and entries ([`PresenceInfo`],
//!   [`PresenceEntry`]) of `PRESENCE_INFO`, `JOIN` and `LEAVE`.
//!
//! [`Bytes`]: bytes::Bytes

mod client;
mod options;
mod presence;
mod server;

use thiserror::Error;

use crate::codes::ErrorCode;
use crate::msgpack::{MsgpackError, Reader};

pub use client::ClientMessage;
pub use options::{JoinLeave, MAX_SINCE_ENTRIES, Position, SubscribeOptions};
pub use presence::{MAX_PRESENCE_ENTRIES, PresenceEntry, PresenceInfo};
pub use server::{
    Delivery, ServerMessage, SubscribedInfo, encode_delivery_frame, encode_presence_event_frame,
};

/// The first element of every message array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Client → broker: start receiving messages on a topic or pattern.
    Subscribe = 1,
    /// Client → broker: stop a subscription.
    Unsubscribe = 2,
    /// Client → broker: publish a payload on a topic.
    Publish = 3,
    /// Client → broker: application-level liveness check.
    Ping = 4,
    /// Client → broker: replace the connection's token with a newer one.
    Refresh = 5,
    /// Client → broker: authenticate a connection opened without a token.
    Auth = 6,
    /// Client → broker: ask for a topic's presence (entries or counts).
    Presence = 7,
    /// Broker → client: a subscribe succeeded.
    Subscribed = 11,
    /// Broker → client: an unsubscribe succeeded.
    Unsubscribed = 12,
    /// Broker → client: a publish that asked for an acknowledgement was
    /// accepted.
    Published = 13,
    /// Broker → client: answer to `Ping`.
    Pong = 14,
    /// Broker → client: a request failed.
    Error = 15,
    /// Broker → client: a message published on a subscribed topic.
    Message = 16,
    /// Broker → client: a refresh succeeded.
    Refreshed = 17,
    /// Broker → client: answer to `Presence`.
    PresenceInfo = 18,
    /// Broker → client: a presence entry (or a user) joined a topic.
    Join = 19,
    /// Broker → client: a presence entry (or a user) left a topic.
    Leave = 20,
}

impl MessageType {
    /// The type for a wire number, if known.
    pub fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            1 => MessageType::Subscribe,
            2 => MessageType::Unsubscribe,
            3 => MessageType::Publish,
            4 => MessageType::Ping,
            5 => MessageType::Refresh,
            6 => MessageType::Auth,
            7 => MessageType::Presence,
            11 => MessageType::Subscribed,
            12 => MessageType::Unsubscribed,
            13 => MessageType::Published,
            14 => MessageType::Pong,
            15 => MessageType::Error,
            16 => MessageType::Message,
            17 => MessageType::Refreshed,
            18 => MessageType::PresenceInfo,
            19 => MessageType::Join,
            20 => MessageType::Leave,
            _ => return None,
        })
    }
}

/// Why a frame could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not MessagePack of the documented shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] MsgpackError),
    /// The array has the wrong number of fields for its type.
    #[error("message type {kind} takes {expected} fields, got {got}")]
    FieldCount {
        /// The message type number.
        kind: u64,
        /// The accepted field counts, e.g. "3 or 4".
        expected: &'static str,
        /// The array length found.
        got: usize,
    },
    /// A type number this side does not accept.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// An option key that is not supported, or a value of the wrong type.
    #[error("unsupported option {0:?}")]
    InvalidOption(String),
    /// An option key given more than once in one options map.
    #[error("option {0:?} is given more than once; give each option at most once")]
    DuplicateOption(String),
    /// An `ERROR` reply whose code does not fit in 16 bits (codes this
    /// version does not know decode as [`ErrorCode::Unknown`]).
    #[error("error code {0} is out of range (0-65535)")]
    ErrorCodeOutOfRange(u64),
}

impl DecodeError {
    /// The [`ErrorCode`] the broker replies with for this decode failure.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownType(_) => ErrorCode::UnknownMessageType,
            DecodeError::InvalidOption(_) | DecodeError::DuplicateOption(_) => {
                ErrorCode::InvalidOption
            }
            _ => ErrorCode::Malformed,
        }
    }
}

pub(crate) fn expect_fields(
    kind: u64,
    got: usize,
    ok: &[usize],
    expected: &'static str,
) -> Result<(), DecodeError> {
    if ok.contains(&got) {
        Ok(())
    } else {
        Err(DecodeError::FieldCount {
            kind,
            expected,
            got,
        })
    }
}

/// Reads the array header and the type number; returns (type, field count).
pub(crate) fn read_envelope(r: &mut Reader<'_>) -> Result<(u64, usize), DecodeError> {
    let len = r.read_array_len()?;
    if len == 0 {
        return Err(DecodeError::FieldCount {
            kind: 0,
            expected: "at least 1",
            got: 0,
        });
    }
    Ok((r.read_u64()?, len))
}

#[cfg(test)]
mod tests;
