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

use bytes::Bytes;
use thiserror::Error;

use crate::codes::ErrorCode;
use crate::msgpack::{self, MsgpackError, Reader};
use crate::ws;

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
}

impl MessageType {
    /// The type for a wire number, if known.
    pub fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            1 => MessageType::Subscribe,
            2 => MessageType::Unsubscribe,
            3 => MessageType::Publish,
            4 => MessageType::Ping,
            11 => MessageType::Subscribed,
            12 => MessageType::Unsubscribed,
            13 => MessageType::Published,
            14 => MessageType::Pong,
            15 => MessageType::Error,
            16 => MessageType::Message,
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
            DecodeError::InvalidOption(_) => ErrorCode::InvalidOption,
            _ => ErrorCode::Malformed,
        }
    }
}

/// A position in one topic's stream: the topic's epoch and a sequence number.
///
/// The epoch changes whenever the topic's history is lost (broker restart,
/// topic forgotten after idling); sequence numbers are only comparable within
/// one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The topic's epoch.
    pub epoch: u64,
    /// A sequence number within that epoch.
    pub seq: u64,
}

/// Most entries a `since` map may hold.
pub const MAX_SINCE_ENTRIES: usize = 65_536;

/// Options of a subscribe request (the map in `[1, id, pattern, options]`).
/// An unknown key, or a value of the wrong type, is refused with
/// [`ErrorCode::InvalidOption`] rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// `since`: resume after these positions (topic → position). `Some` with
    /// an empty list asks for every retained message of the matching topics.
    pub since: Option<Vec<(String, Position)>>,
    /// `last`: deliver the latest retained message of each matching topic
    /// before live messages.
    pub last: bool,
    /// `max_rate`: at most this many messages per second per topic, always
    /// the latest (conflated).
    pub max_rate: Option<u32>,
}

impl SubscribeOptions {
    /// Options with `since` set.
    pub fn since(mut self, positions: Vec<(String, Position)>) -> Self {
        self.since = Some(positions);
        self
    }

    /// Options with `last` set.
    pub fn last(mut self, last: bool) -> Self {
        self.last = last;
        self
    }

    /// Options with `max_rate` set.
    pub fn max_rate(mut self, per_second: u32) -> Self {
        self.max_rate = Some(per_second);
        self
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let len = usize::from(self.since.is_some())
            + usize::from(self.last)
            + usize::from(self.max_rate.is_some());
        msgpack::write_map_len(out, len);
        if let Some(since) = &self.since {
            msgpack::write_str(out, "since");
            write_positions(
                out,
                since.iter().map(|(t, p)| (t.as_str(), *p)),
                since.len(),
            );
        }
        if self.last {
            msgpack::write_str(out, "last");
            msgpack::write_bool(out, true);
        }
        if let Some(rate) = self.max_rate {
            msgpack::write_str(out, "max_rate");
            msgpack::write_u64(out, u64::from(rate));
        }
    }
}

fn write_positions<'t>(
    out: &mut Vec<u8>,
    positions: impl Iterator<Item = (&'t str, Position)>,
    len: usize,
) {
    msgpack::write_map_len(out, len);
    for (topic, p) in positions {
        msgpack::write_str(out, topic);
        msgpack::write_array_len(out, 2);
        msgpack::write_u64(out, p.epoch);
        msgpack::write_u64(out, p.seq);
    }
}

fn read_position(r: &mut Reader<'_>) -> Result<Position, MsgpackError> {
    if r.read_array_len()? != 2 {
        return Err(MsgpackError::UnexpectedType {
            expected: "[epoch, seq]",
            marker: 0x92,
        });
    }
    Ok(Position {
        epoch: r.read_u64()?,
        seq: r.read_u64()?,
    })
}

fn read_positions(
    r: &mut Reader<'_>,
    limit: usize,
) -> Result<Vec<(String, Position)>, MsgpackError> {
    let len = r.read_map_len()?;
    if len > limit {
        return Err(MsgpackError::IntegerOutOfRange);
    }
    let mut positions = Vec::with_capacity(len.min(1024));
    for _ in 0..len {
        let topic = r.read_str()?.to_owned();
        positions.push((topic, read_position(r)?));
    }
    Ok(positions)
}

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
}

fn expect_fields(
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
fn read_envelope(r: &mut Reader<'_>) -> Result<(u64, usize), DecodeError> {
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

fn read_subscribe_options(r: &mut Reader<'_>) -> Result<SubscribeOptions, DecodeError> {
    let mut options = SubscribeOptions::default();
    if r.read_nil()? {
        return Ok(options);
    }
    let pairs = r.read_map_len()?;
    for _ in 0..pairs {
        let key = r.read_str()?;
        let invalid = |_| DecodeError::InvalidOption(key.to_owned());
        match key {
            "since" => options.since = Some(read_positions(r, MAX_SINCE_ENTRIES).map_err(invalid)?),
            "last" => options.last = r.read_bool().map_err(invalid)?,
            "max_rate" => {
                let rate = r.read_u64().map_err(invalid)?;
                let rate = u32::try_from(rate)
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| DecodeError::InvalidOption(key.to_owned()))?;
                options.max_rate = Some(rate);
            }
            _ => return Err(DecodeError::InvalidOption(key.to_owned())),
        }
    }
    Ok(options)
}

fn read_publish_options(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    let mut retain = false;
    if r.read_nil()? {
        return Ok(retain);
    }
    for _ in 0..r.read_map_len()? {
        let key = r.read_str()?;
        match key {
            "retain" => {
                retain = r
                    .read_bool()
                    .map_err(|_| DecodeError::InvalidOption(key.to_owned()))?
            }
            _ => return Err(DecodeError::InvalidOption(key.to_owned())),
        }
    }
    Ok(retain)
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
        }
    }
}

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
}

impl SubscribedInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        let len = usize::from(self.epoch.is_some())
            + usize::from(self.seq.is_some())
            + usize::from(self.recovered.is_some())
            + usize::from(!self.missed.is_empty());
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
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, MsgpackError> {
        let mut info = SubscribedInfo::default();
        for _ in 0..r.read_map_len()? {
            match r.read_str()? {
                "epoch" => info.epoch = Some(r.read_u64()?),
                "seq" => info.seq = Some(r.read_u64()?),
                "recovered" => info.recovered = Some(r.read_bool()?),
                "missed" => info.missed = read_positions(r, usize::MAX)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_client(msg: ClientMessage<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        let frame = Bytes::from(out);
        assert_eq!(ClientMessage::decode(&frame).unwrap(), msg);
    }

    fn round_trip_server(msg: ServerMessage<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        let frame = Bytes::from(out);
        assert_eq!(ServerMessage::decode(&frame).unwrap(), msg);
    }

    #[test]
    fn client_messages_round_trip() {
        round_trip_client(ClientMessage::Subscribe {
            id: 1,
            pattern: "stocks.*",
            options: SubscribeOptions::default(),
        });
        round_trip_client(ClientMessage::Unsubscribe {
            id: 2,
            pattern: "a",
        });
        round_trip_client(ClientMessage::Publish {
            id: Some(300),
            topic: "a.b",
            payload: Bytes::from_static(b"\x01\x02"),
            retain: true,
        });
        round_trip_client(ClientMessage::Publish {
            id: None,
            topic: "a.b",
            payload: Bytes::new(),
            retain: false,
        });
        round_trip_client(ClientMessage::Ping { id: u64::MAX });
    }

    #[test]
    fn server_messages_round_trip() {
        round_trip_server(ServerMessage::Subscribed {
            id: 1,
            info: SubscribedInfo::default(),
        });
        round_trip_server(ServerMessage::Subscribed {
            id: 2,
            info: SubscribedInfo {
                epoch: Some(77),
                seq: Some(1 << 33),
                recovered: Some(false),
                missed: vec![("a.b".into(), Position { epoch: 3, seq: 9 })],
            },
        });
        round_trip_server(ServerMessage::Unsubscribed { id: 2 });
        round_trip_server(ServerMessage::Published {
            id: 3,
            seq: 1 << 40,
        });
        round_trip_server(ServerMessage::Pong { id: 4 });
        round_trip_server(ServerMessage::Error {
            id: None,
            code: ErrorCode::InvalidTopic,
            message: "bad",
        });
        round_trip_server(ServerMessage::Message(Delivery {
            topic: "stocks.AAPL",
            epoch: u64::MAX,
            seq: 7,
            time_us: 1_700_000_000_000_000,
            payload: Bytes::from_static(b"hello"),
        }));
    }

    #[test]
    fn documented_hex_examples() {
        // These bytes appear in docs/protocol.md; keep both in step.
        let mut out = Vec::new();
        ClientMessage::Subscribe {
            id: 1,
            pattern: "stocks.*",
            options: SubscribeOptions::default(),
        }
        .encode(&mut out);
        assert_eq!(out, b"\x94\x01\x01\xa8stocks.*\x80");

        let mut out = Vec::new();
        ClientMessage::Publish {
            id: Some(2),
            topic: "stocks.AAPL",
            payload: Bytes::from_static(b"hi"),
            retain: false,
        }
        .encode(&mut out);
        assert_eq!(out, b"\x94\x03\x02\xabstocks.AAPL\xc4\x02hi");

        let at = Position { epoch: 7, seq: 1 };
        let frame = encode_delivery_frame("stocks.AAPL", at, 0x0006_0000_0000_0000, b"hi");
        assert_eq!(
            &frame[..],
            b"\x82\x1d\x96\x10\xabstocks.AAPL\x07\x01\xcf\x00\x06\x00\x00\x00\x00\x00\x00\xc4\x02hi"
        );
    }

    #[test]
    fn delivery_frame_decodes_as_message() {
        for payload_len in [0usize, 100, 200, 70_000] {
            let payload = vec![9u8; payload_len];
            let at = Position {
                epoch: 1 << 40,
                seq: 42,
            };
            let frame = encode_delivery_frame("a.b", at, 123, &payload);
            let header = ws::FrameHeader::parse(&frame, ws::Role::Client)
                .unwrap()
                .unwrap();
            assert_eq!(header.opcode, ws::OpCode::Binary);
            let body = frame.slice(header.header_len..);
            assert_eq!(body.len() as u64, header.payload_len);
            match ServerMessage::decode(&body).unwrap() {
                ServerMessage::Message(d) => {
                    assert_eq!((d.topic, d.epoch, d.seq), ("a.b", 1 << 40, 42));
                    assert_eq!(d.time_us, 123);
                    assert_eq!(&d.payload[..], &payload[..]);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn publish_payload_is_a_slice_not_a_copy() {
        let mut out = Vec::new();
        ClientMessage::Publish {
            id: None,
            topic: "t",
            payload: Bytes::from_static(b"payload"),
            retain: false,
        }
        .encode(&mut out);
        let frame = Bytes::from(out);
        let ClientMessage::Publish { payload, .. } = ClientMessage::decode(&frame).unwrap() else {
            panic!("not a publish");
        };
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(frame_range.contains(&(payload.as_ptr() as usize)));
    }

    #[test]
    fn malformed_client_frames_are_errors() {
        let cases: &[(&[u8], ErrorCode)] = &[
            (b"", ErrorCode::Malformed),
            (b"hello", ErrorCode::Malformed),
            (b"\x90", ErrorCode::Malformed),
            (b"\x92\x63\x01", ErrorCode::UnknownMessageType),
            (b"\x92\x10\x01", ErrorCode::UnknownMessageType),
            (b"\x93\x01\x01", ErrorCode::Malformed),
            (b"\x93\x01\x01\x05", ErrorCode::Malformed),
            (
                b"\x94\x01\x01\xa1a\x81\xa5since\x01",
                ErrorCode::InvalidOption,
            ),
            (b"\x94\x03\xc0\xa1a\xa2hi", ErrorCode::Malformed),
            (b"\x92\x04\x01\x00", ErrorCode::Malformed),
        ];
        for (bytes, code) in cases {
            let frame = Bytes::from_static(bytes);
            let err = ClientMessage::decode(&frame).unwrap_err();
            assert_eq!(err.error_code(), *code, "{bytes:x?}: {err}");
        }
    }

    #[test]
    fn request_id_is_recovered_from_frames_that_fail_later() {
        assert_eq!(
            ClientMessage::request_id_hint(b"\x94\x01\x07\xa1a\x81\xa5since\x01"),
            Some(7)
        );
        assert_eq!(ClientMessage::request_id_hint(b"\x94\x03\x09\x05"), Some(9));
        assert_eq!(ClientMessage::request_id_hint(b"\x94\x03\xc0\x05"), None);
        assert_eq!(ClientMessage::request_id_hint(b"\x92\x63\x01"), None);
        assert_eq!(ClientMessage::request_id_hint(b"garbage"), None);
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_rejected() {
        let mut out = Vec::new();
        ClientMessage::Publish {
            id: Some(9),
            topic: "x.y",
            payload: Bytes::from_static(&[1; 40]),
            retain: false,
        }
        .encode(&mut out);
        for cut in 0..out.len() {
            let frame = Bytes::copy_from_slice(&out[..cut]);
            assert!(ClientMessage::decode(&frame).is_err(), "cut at {cut}");
        }
    }
}
