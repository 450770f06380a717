//! Messages the broker sends to a client, and the encode-once delivery
//! frame.

use bytes::Bytes;

use crate::codes::ErrorCode;
use crate::msgpack::{self, MsgpackError, Reader};
use crate::ws;

use super::options::{Position, read_positions, write_positions};
use super::presence::{PresenceEntry, PresenceInfo};
use super::{DecodeError, MessageType, expect_fields, read_envelope};

/// One delivered message, as the broker sends it to every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The topic it was published on.
    pub topic: &'a str,
    /// The topic's epoch: the sequence below counts within it, and a
    /// different epoch than before means the topic was reset (see
    /// [`Position`]).
    pub epoch: u64,
    /// Per-topic sequence number, starting at 1, increasing by 1 per publish.
    pub seq: u64,
    /// Publish time: microseconds since the Unix epoch, broker clock.
    pub time_us: u64,
    /// The payload, a slice of the received frame.
    pub payload: Bytes,
}

impl Delivery<'_> {
    /// The message's position: the topic's epoch and its sequence number.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// The `info` map of a `SUBSCRIBED` reply. Absent keys are `None`/empty;
/// clients ignore keys they do not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribedInfo {
    /// `epoch`: the topic's epoch (exact-topic subscriptions).
    pub epoch: Option<u64>,
    /// `seq`: the topic's latest sequence number, 0 if nothing was published
    /// in this epoch (exact-topic subscriptions).
    pub seq: Option<u64>,
    /// `recovered`: with `since`, whether every requested position could be
    /// resumed without a gap.
    pub recovered: Option<bool>,
    /// `missed`: topics that could not be resumed, with their current
    /// position, so the application can reload their state.
    pub missed: Vec<(String, Position)>,
    /// `client`: the connection's client id, on an exact-topic subscription
    /// of a topic with presence (the key of its presence entry).
    pub client: Option<String>,
}

impl SubscribedInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        let len = usize::from(self.epoch.is_some())
            + usize::from(self.seq.is_some())
            + usize::from(self.recovered.is_some())
            + usize::from(!self.missed.is_empty())
            + usize::from(self.client.is_some());
        msgpack::write_map_len(out, len);
        if let Some(epoch) = self.epoch {
            msgpack::write_str(out, "epoch");
            msgpack::write_u64(out, epoch);
        }
        if let Some(seq) = self.seq {
            msgpack::write_str(out, "seq");
            msgpack::write_u64(out, seq);
        }
        if let Some(recovered) = self.recovered {
            msgpack::write_str(out, "recovered");
            msgpack::write_bool(out, recovered);
        }
        if !self.missed.is_empty() {
            msgpack::write_str(out, "missed");
            write_positions(
                out,
                self.missed.iter().map(|(t, p)| (t.as_str(), *p)),
                self.missed.len(),
            );
        }
        if let Some(client) = &self.client {
            msgpack::write_str(out, "client");
            msgpack::write_str(out, client);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, MsgpackError> {
        let mut info = SubscribedInfo::default();
        for _ in 0..r.read_map_len()? {
            match r.read_str()? {
                "epoch" => info.epoch = Some(r.read_u64()?),
                "seq" => info.seq = Some(r.read_u64()?),
                "recovered" => info.recovered = Some(r.read_bool()?),
                "missed" => info.missed = read_positions(r, usize::MAX)?,
                "client" => info.client = Some(r.read_str()?.to_owned()),
                _ => r.skip_value()?,
            }
        }
        Ok(info)
    }
}

/// A message the broker sends to a client, borrowing from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// `[11, id, info]`
    Subscribed {
        /// The subscribe request's id.
        id: u64,
        /// Positions and recovery outcome.
        info: SubscribedInfo,
    },
    /// `[12, id]`
    Unsubscribed {
        /// The unsubscribe request's id.
        id: u64,
    },
    /// `[13, id, seq]`
    Published {
        /// The publish request's id.
        id: u64,
        /// The sequence number the message got on its topic.
        seq: u64,
    },
    /// `[14, id]`
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// `[15, id | nil, code, message]`
    Error {
        /// The failed request's id; `None` when the request could not be read
        /// far enough to know it.
        id: Option<u64>,
        /// What went wrong, machine-readable.
        code: ErrorCode,
        /// What went wrong, for people.
        message: &'a str,
    },
    /// `[16, topic, epoch, seq, time, payload]`
    Message(Delivery<'a>),
    /// `[17, id, info]`: `info` is a map; its key `exp`, when present, is
    /// the time (Unix seconds) at which the connection will be closed with
    /// 4003 unless refreshed again.
    Refreshed {
        /// The refresh request's id.
        id: u64,
        /// `exp` of the info map; `None` when nothing expires.
        expires: Option<u64>,
    },
    /// `[18, id, info]`: the answer to `PRESENCE`.
    PresenceInfo {
        /// The presence request's id.
        id: u64,
        /// Counts and, unless only counts were asked for, the entries.
        info: PresenceInfo<'a>,
    },
    /// `[19, topic, entry]`: an entry (or, in a user-level event, a user)
    /// joined `topic`. Not numbered, not kept in history.
    Join {
        /// The topic with presence.
        topic: &'a str,
        /// Who joined; `client` is `None` in user-level events.
        entry: PresenceEntry<'a>,
    },
    /// `[20, topic, entry]`: an entry (or a user) left `topic`.
    Leave {
        /// The topic with presence.
        topic: &'a str,
        /// Who left; `client` is `None` in user-level events.
        entry: PresenceEntry<'a>,
    },
}

impl<'a> ServerMessage<'a> {
    /// Decodes one broker frame. Unknown keys in the `SUBSCRIBED` info map are
    /// skipped, so newer brokers can add information.
    pub fn decode(frame: &'a Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame);
        let (kind, len) = read_envelope(&mut r)?;
        let msg = match MessageType::from_u64(kind) {
            Some(MessageType::Subscribed) => {
                expect_fields(kind, len, &[3], "3")?;
                let id = r.read_u64()?;
                let info = SubscribedInfo::decode(&mut r)?;
                ServerMessage::Subscribed { id, info }
            }
            Some(MessageType::Unsubscribed) => {
                expect_fields(kind, len, &[2], "2")?;
                ServerMessage::Unsubscribed { id: r.read_u64()? }
            }
            Some(MessageType::Published) => {
                expect_fields(kind, len, &[3], "3")?;
                ServerMessage::Published {
                    id: r.read_u64()?,
                    seq: r.read_u64()?,
                }
            }
            Some(MessageType::Pong) => {
                expect_fields(kind, len, &[2], "2")?;
                ServerMessage::Pong { id: r.read_u64()? }
            }
            Some(MessageType::Error) => {
                expect_fields(kind, len, &[4], "4")?;
                let id = if r.read_nil()? {
                    None
                } else {
                    Some(r.read_u64()?)
                };
                let raw = r.read_u64()?;
                let code = u16::try_from(raw)
                    .map(ErrorCode::from_u16)
                    .map_err(|_| DecodeError::ErrorCodeOutOfRange(raw))?;
                ServerMessage::Error {
                    id,
                    code,
                    message: r.read_str()?,
                }
            }
            Some(MessageType::Message) => {
                expect_fields(kind, len, &[6], "6")?;
                let topic = r.read_str()?;
                let epoch = r.read_u64()?;
                let seq = r.read_u64()?;
                let time_us = r.read_u64()?;
                let range = r.read_bin_range()?;
                ServerMessage::Message(Delivery {
                    topic,
                    epoch,
                    seq,
                    time_us,
                    payload: frame.slice(range),
                })
            }
            Some(MessageType::Refreshed) => {
                expect_fields(kind, len, &[3], "3")?;
                let id = r.read_u64()?;
                let mut expires = None;
                for _ in 0..r.read_map_len()? {
                    match r.read_str()? {
                        "exp" => expires = Some(r.read_u64()?),
                        _ => r.skip_value()?,
                    }
                }
                ServerMessage::Refreshed { id, expires }
            }
            Some(MessageType::PresenceInfo) => {
                expect_fields(kind, len, &[3], "3")?;
                let id = r.read_u64()?;
                let info = PresenceInfo::decode(&mut r, frame)?;
                ServerMessage::PresenceInfo { id, info }
            }
            Some(kind_type @ (MessageType::Join | MessageType::Leave)) => {
                expect_fields(kind, len, &[3], "3")?;
                let topic = r.read_str()?;
                let entry = PresenceEntry::decode(&mut r, frame)?;
                if kind_type == MessageType::Join {
                    ServerMessage::Join { topic, entry }
                } else {
                    ServerMessage::Leave { topic, entry }
                }
            }
            _ => return Err(DecodeError::UnknownType(kind)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends this message's MessagePack encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ServerMessage::Subscribed { id, info } => {
                msgpack::write_array_len(out, 3);
                msgpack::write_u64(out, MessageType::Subscribed as u64);
                msgpack::write_u64(out, *id);
                info.encode(out);
            }
            ServerMessage::Unsubscribed { id } => {
                msgpack::write_array_len(out, 2);
                msgpack::write_u64(out, MessageType::Unsubscribed as u64);
                msgpack::write_u64(out, *id);
            }
            ServerMessage::Published { id, seq } => {
                msgpack::write_array_len(out, 3);
                msgpack::write_u64(out, MessageType::Published as u64);
                msgpack::write_u64(out, *id);
                msgpack::write_u64(out, *seq);
            }
            ServerMessage::Pong { id } => {
                msgpack::write_array_len(out, 2);
                msgpack::write_u64(out, MessageType::Pong as u64);
                msgpack::write_u64(out, *id);
            }
            ServerMessage::Error { id, code, message } => {
                msgpack::write_array_len(out, 4);
                msgpack::write_u64(out, MessageType::Error as u64);
                match id {
                    Some(id) => msgpack::write_u64(out, *id),
                    None => msgpack::write_nil(out),
                }
                msgpack::write_u64(out, u64::from(code.as_u16()));
                msgpack::write_str(out, message);
            }
            ServerMessage::Message(d) => {
                write_delivery_body(out, d.topic, d.position(), d.time_us, &d.payload);
            }
            ServerMessage::Refreshed { id, expires } => {
                msgpack::write_array_len(out, 3);
                msgpack::write_u64(out, MessageType::Refreshed as u64);
                msgpack::write_u64(out, *id);
                msgpack::write_map_len(out, usize::from(expires.is_some()));
                if let Some(exp) = expires {
                    msgpack::write_str(out, "exp");
                    msgpack::write_u64(out, *exp);
                }
            }
            ServerMessage::PresenceInfo { id, info } => {
                msgpack::write_array_len(out, 3);
                msgpack::write_u64(out, MessageType::PresenceInfo as u64);
                msgpack::write_u64(out, *id);
                info.encode(out);
            }
            ServerMessage::Join { topic, entry } | ServerMessage::Leave { topic, entry } => {
                let kind = match self {
                    ServerMessage::Join { .. } => MessageType::Join,
                    _ => MessageType::Leave,
                };
                write_presence_event_body(out, kind, topic, entry);
            }
        }
    }

    /// Encodes this message as a complete, unmasked binary WebSocket frame,
    /// ready to be written by the broker.
    pub fn to_frame(&self) -> Bytes {
        let mut body = Vec::with_capacity(64);
        self.encode(&mut body);
        ws::binary_frame(&body)
    }
}

fn write_presence_event_body(
    out: &mut Vec<u8>,
    kind: MessageType,
    topic: &str,
    entry: &PresenceEntry<'_>,
) {
    msgpack::write_array_len(out, 3);
    msgpack::write_u64(out, kind as u64);
    msgpack::write_str(out, topic);
    entry.encode(out);
}

/// Encodes a `JOIN` (`join`: true) or `LEAVE` event as one complete,
/// unmasked binary WebSocket frame in a single allocation of exactly the
/// right size, shared by every subscriber that asked for it (like
/// [`encode_delivery_frame`]).
pub fn encode_presence_event_frame(join: bool, topic: &str, entry: &PresenceEntry<'_>) -> Bytes {
    let kind = if join {
        MessageType::Join
    } else {
        MessageType::Leave
    };
    let body_len = 1 + 1 + msgpack::str_header_len(topic.len()) + topic.len() + entry.encoded_len();
    let mut out = Vec::with_capacity(ws::server_header_len(body_len) + body_len);
    ws::write_server_header(&mut out, ws::OpCode::Binary, body_len);
    write_presence_event_body(&mut out, kind, topic, entry);
    debug_assert_eq!(out.capacity(), out.len());
    Bytes::from(out)
}

fn write_delivery_body(out: &mut Vec<u8>, topic: &str, at: Position, time_us: u64, payload: &[u8]) {
    msgpack::write_array_len(out, 6);
    msgpack::write_u64(out, MessageType::Message as u64);
    msgpack::write_str(out, topic);
    msgpack::write_u64(out, at.epoch);
    msgpack::write_u64(out, at.seq);
    msgpack::write_u64(out, time_us);
    msgpack::write_bin_header(out, payload.len());
    out.extend_from_slice(payload);
}

/// Encodes a `MESSAGE` delivery (`at`: the topic's epoch and the message's
/// sequence number) as one complete, unmasked binary WebSocket frame in a
/// single allocation of exactly the right size.
///
/// This is the broker's hot path: called once per publish, and the returned
/// [`Bytes`] is shared (reference-counted, not copied) by every subscriber.
/// Nothing in it depends on the receiving connection.
pub fn encode_delivery_frame(topic: &str, at: Position, time_us: u64, payload: &[u8]) -> Bytes {
    let body_len = 1
        + 1
        + msgpack::str_header_len(topic.len())
        + topic.len()
        + msgpack::u64_len(at.epoch)
        + msgpack::u64_len(at.seq)
        + msgpack::u64_len(time_us)
        + msgpack::bin_header_len(payload.len())
        + payload.len();
    let mut out = Vec::with_capacity(ws::server_header_len(body_len) + body_len);
    ws::write_server_header(&mut out, ws::OpCode::Binary, body_len);
    write_delivery_body(&mut out, topic, at, time_us, payload);
    debug_assert_eq!(out.capacity(), out.len());
    Bytes::from(out)
}
