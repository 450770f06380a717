//! # tickwire-protocol
//!
//! The tickwire wire format, with no I/O: everything a broker or a client
//! needs to agree on, and nothing about sockets.
//!
//! * [`handshake`]: the client's WebSocket opening handshake (request,
//!   response checks, the accept key), sans I/O.
//! * [`ws`]: WebSocket framing (RFC 6455) with tickwire's strict rules.
//! * [`deflate`]: permessage-deflate (RFC 7692): negotiation, compression
//!   of a message, bounded inflation.
//! * [`utf8`]: the streaming UTF-8 check of text messages.
//! * [`message`]: the MessagePack messages inside each binary frame, and
//!   [`message::encode_delivery_frame`], the encode-once delivery frame.
//! * [`topic`]: topic names, wildcard patterns (`*`, `>`) and matching.
//! * [`codes`]: error codes and close codes.
//! * [`msgpack`]: the strict MessagePack reader and canonical writer they use.
//!
//! docs/protocol.md in the repository is the normative description; this
//! crate is its reference implementation.

pub mod codes;
pub mod deflate;
pub mod handshake;
pub mod message;
pub mod msgpack;
pub mod topic;
pub mod utf8;
pub mod ws;

pub use codes::{CloseCode, ErrorCode};
pub use message::{ClientMessage, DecodeError, Delivery, ServerMessage, SubscribeOptions};
pub use topic::{Pattern, TopicError};

/// The WebSocket subprotocol name of this protocol version, offered by
/// clients in `Sec-WebSocket-Protocol` and echoed by the broker.
pub const SUBPROTOCOL: &str = "tickwire.v1";

/// The HTTP path on which the broker accepts WebSocket upgrades.
pub const WEBSOCKET_PATH: &str = "/ws";
