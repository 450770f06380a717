//! Messages a client sends to the broker.

use bytes::Bytes;

use crate::msgpack::{self, Reader};

use super::options::{
    SubscribeOptions, read_presence_options, read_publish_options, read_subscribe_options,
};
use super::{DecodeError, MessageType, expect_fields, read_envelope};

/// A message a client sends to the broker, borrowing from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `[1, id, pattern, options?]`
    Subscribe {
        /// Request id echoed in the reply.
        id: u64,
        /// Topic or wildcard pattern (not yet validated).
        pattern: &'a str,
        /// Options; empty in version 1.
        options: SubscribeOptions,
    },
    /// `[2, id, pattern]`
    Unsubscribe {
        /// Request id echoed in the reply.
        id: u64,
        /// The pattern exactly as subscribed.
        pattern: &'a str,
    },
    /// `[3, id | nil, topic, payload, options?]`
    Publish {
        /// `Some` asks for a `PUBLISHED` acknowledgement with this id.
        id: Option<u64>,
        /// Topic (not yet validated).
        topic: &'a str,
        /// The payload, a slice of the received frame.
        payload: Bytes,
        /// Option `retain`: keep this message as the topic's last value.
        retain: bool,
    },
    /// `[4, id]`
    Ping {
        /// Request id echoed in the `PONG`.
        id: u64,
    },
    /// `[5, id, token]`
    Refresh {
        /// Request id echoed in the reply.
        id: u64,
        /// The new bearer token (a JWT), replacing the connection's.
        token: &'a str,
    },
    /// `[6, id, token]`
    Auth {
        /// Request id echoed in the reply.
        id: u64,
        /// The bearer token (a JWT) authenticating the connection.
        token: &'a str,
    },
    /// `[7, id, topic, options?]`
    Presence {
        /// Request id echoed in the `PRESENCE_INFO` reply.
        id: u64,
        /// Topic (not yet validated; a pattern is refused).
        topic: &'a str,
        /// Option `counts`: only the counts, no entries.
        counts_only: bool,
    },
}

impl<'a> ClientMessage<'a> {
    /// Decodes one client frame. `frame` must be the whole binary message.
    pub fn decode(frame: &'a Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame);
        let (kind, len) = read_envelope(&mut r)?;
        let msg = match MessageType::from_u64(kind) {
            Some(MessageType::Subscribe) => {
                expect_fields(kind, len, &[3, 4], "3 or 4")?;
                let id = r.read_u64()?;
                let pattern = r.read_str()?;
                let options = if len == 4 {
                    read_subscribe_options(&mut r)?
                } else {
                    SubscribeOptions::default()
                };
                ClientMessage::Subscribe {
                    id,
                    pattern,
                    options,
                }
            }
            Some(MessageType::Unsubscribe) => {
                expect_fields(kind, len, &[3], "3")?;
                ClientMessage::Unsubscribe {
                    id: r.read_u64()?,
                    pattern: r.read_str()?,
                }
            }
            Some(MessageType::Publish) => {
                expect_fields(kind, len, &[4, 5], "4 or 5")?;
                let id = if r.read_nil()? {
                    None
                } else {
                    Some(r.read_u64()?)
                };
                let topic = r.read_str()?;
                let range = r.read_bin_range()?;
                let retain = if len == 5 {
                    read_publish_options(&mut r)?
                } else {
                    false
                };
                ClientMessage::Publish {
                    id,
                    topic,
                    payload: frame.slice(range),
                    retain,
                }
            }
            Some(MessageType::Ping) => {
                expect_fields(kind, len, &[2], "2")?;
                ClientMessage::Ping { id: r.read_u64()? }
            }
            Some(MessageType::Refresh) => {
                expect_fields(kind, len, &[3], "3")?;
                ClientMessage::Refresh {
                    id: r.read_u64()?,
                    token: r.read_str()?,
                }
            }
            Some(MessageType::Auth) => {
                expect_fields(kind, len, &[3], "3")?;
                ClientMessage::Auth {
                    id: r.read_u64()?,
                    token: r.read_str()?,
                }
            }
            Some(MessageType::Presence) => {
                expect_fields(kind, len, &[3, 4], "3 or 4")?;
                let id = r.read_u64()?;
                let topic = r.read_str()?;
                let counts_only = if len == 4 {
                    read_presence_options(&mut r)?
                } else {
                    false
                };
                ClientMessage::Presence {
                    id,
                    topic,
                    counts_only,
                }
            }
            _ => return Err(DecodeError::UnknownType(kind)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// The request id of a frame that failed to decode, when the envelope is
    /// readable that far, so the error reply can still name the request.
    pub fn request_id_hint(frame: &[u8]) -> Option<u64> {
        let mut r = Reader::new(frame);
        let (kind, len) = read_envelope(&mut r).ok()?;
        match MessageType::from_u64(kind)? {
            MessageType::Subscribe
            | MessageType::Unsubscribe
            | MessageType::Publish
            | MessageType::Ping
            | MessageType::Refresh
            | MessageType::Auth
            | MessageType::Presence
                if len >= 2 =>
            {
                r.read_u64().ok()
            }
            _ => None,
        }
    }

    /// Appends this message's MessagePack encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::Subscribe {
                id,
                pattern,
                options,
            } => {
                msgpack::write_array_len(out, 4);
                msgpack::write_u64(out, MessageType::Subscribe as u64);
                msgpack::write_u64(out, *id);
                msgpack::write_str(out, pattern);
                options.encode(out);
            }
            ClientMessage::Unsubscribe { id, pattern } => {
                msgpack::write_array_len(out, 3);
                msgpack::write_u64(out, MessageType::Unsubscribe as u64);
                msgpack::write_u64(out, *id);
                msgpack::write_str(out, pattern);
            }
            ClientMessage::Publish {
                id,
                topic,
                payload,
                retain,
            } => {
                msgpack::write_array_len(out, if *retain { 5 } else { 4 });
                msgpack::write_u64(out, MessageType::Publish as u64);
                match id {
                    Some(id) => msgpack::write_u64(out, *id),
                    None => msgpack::write_nil(out),
                }
                msgpack::write_str(out, topic);
                msgpack::write_bin_header(out, payload.len());
                out.extend_from_slice(payload);
                if *retain {
                    msgpack::write_map_len(out, 1);
                    msgpack::write_str(out, "retain");
                    msgpack::write_bool(out, true);
                }
            }
            ClientMessage::Ping { id } => {
                msgpack::write_array_len(out, 2);
                msgpack::write_u64(out, MessageType::Ping as u64);
                msgpack::write_u64(out, *id);
            }
            ClientMessage::Refresh { id, token } | ClientMessage::Auth { id, token } => {
                let kind = match self {
                    ClientMessage::Auth { .. } => MessageType::Auth,
                    _ => MessageType::Refresh,
                };
                msgpack::write_array_len(out, 3);
                msgpack::write_u64(out, kind as u64);
                msgpack::write_u64(out, *id);
                msgpack::write_str(out, token);
            }
            ClientMessage::Presence {
                id,
                topic,
                counts_only,
            } => {
                msgpack::write_array_len(out, if *counts_only { 4 } else { 3 });
                msgpack::write_u64(out, MessageType::Presence as u64);
                msgpack::write_u64(out, *id);
                msgpack::write_str(out, topic);
                if *counts_only {
                    msgpack::write_map_len(out, 1);
                    msgpack::write_str(out, "counts");
                    msgpack::write_bool(out, true);
                }
            }
        }
    }
}
