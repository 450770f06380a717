//! Fuzz target `server_message`: the decoder of broker messages that the
//! client SDK uses (`tickwire_protocol::ServerMessage::decode`).
//!
//! Every input is used twice:
//!
//! * **As a frame.** When it decodes, encoding the value and decoding that
//!   again gives the same value, and encoding is canonical; nothing decoded
//!   is longer than the frame.
//! * **As a message.** `arbitrary` reads a message from the same bytes;
//!   `decode(encode(x)) == x`, also after the trip through a WebSocket
//!   frame (`to_frame`, decoded as a client does). For a delivery, the
//!   broker's encode-once frame (`encode_delivery_frame`) is byte for byte
//!   the frame of the same `MESSAGE`.
#![no_main]

mod common;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tickwire_protocol::message::{
    Position, PresenceEntry, PresenceInfo, SubscribedInfo, encode_delivery_frame,
    encode_presence_event_frame,
};
use tickwire_protocol::ws::{FrameDecoder, Incoming, MessageKind, Role};
use tickwire_protocol::{Delivery, ErrorCode, ServerMessage};

use common::{encoded, positions};

fuzz_target!(|data: &[u8]| {
    frame(data);
    if let Ok(spec) = Spec::arbitrary(&mut Unstructured::new(data)) {
        round_trip(&spec);
    }
});

fn encode(msg: &ServerMessage<'_>) -> Bytes {
    encoded(|out| msg.encode(out))
}

/// The longest text or payload a decoded message holds.
fn longest_field(msg: &ServerMessage<'_>) -> usize {
    match msg {
        ServerMessage::Subscribed { info, .. } => {
            info.missed.iter().map(|(t, _)| t.len()).max().unwrap_or(0)
        }
        ServerMessage::Error { message, .. } => message.len(),
        ServerMessage::Message(d) => d.topic.len() + d.payload.len(),
        ServerMessage::Join { topic, entry } | ServerMessage::Leave { topic, entry } => {
            topic.len() + entry_len(entry)
        }
        ServerMessage::PresenceInfo { info, .. } => info
            .entries
            .iter()
            .flatten()
            .map(entry_len)
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

fn entry_len(entry: &PresenceEntry<'_>) -> usize {
    entry.client.map_or(0, str::len)
        + entry.user.map_or(0, str::len)
        + entry.info.as_ref().map_or(0, |i| i.len())
}

/// An entry map from owned parts; `info` is a MessagePack uint.
fn entry<'a>(
    client: &'a Option<String>,
    user: &'a Option<String>,
    info: Option<u64>,
) -> PresenceEntry<'a> {
    PresenceEntry {
        client: client.as_deref(),
        user: user.as_deref(),
        info: info.map(|n| encoded(|out| tickwire_protocol::msgpack::write_u64(out, n))),
    }
}

fn frame(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let Ok(msg) = ServerMessage::decode(&frame) else {
        return;
    };
    assert!(longest_field(&msg) <= frame.len());
    if let ServerMessage::Subscribed { info, .. } = &msg {
        // Each missed entry takes at least 5 bytes (fixstr, array, 2 ints).
        assert!(info.missed.len() * 5 <= frame.len());
    }
    let encoded = encode(&msg);
    let again = ServerMessage::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, msg);
    assert_eq!(encode(&again), encoded, "encoding is not canonical");
}

/// A broker message with owned fields, as `arbitrary` reads it.
#[derive(Arbitrary, Debug)]
enum Spec {
    Subscribed {
        id: u64,
        epoch: Option<u64>,
        seq: Option<u64>,
        recovered: Option<bool>,
        missed: Vec<(String, u64, u64)>,
        client: Option<String>,
    },
    Unsubscribed {
        id: u64,
    },
    Published {
        id: u64,
        seq: u64,
    },
    Pong {
        id: u64,
    },
    Error {
        id: Option<u64>,
        code: u16,
        message: String,
    },
    Message {
        topic: String,
        epoch: u64,
        seq: u64,
        time_us: u64,
        payload: Vec<u8>,
    },
    Refreshed {
        id: u64,
        expires: Option<u64>,
    },
    PresenceInfo {
        id: u64,
        clients: u64,
        users: u64,
        entries: Option<Vec<(Option<String>, Option<String>, Option<u64>)>>,
    },
    Event {
        join: bool,
        topic: String,
        client: Option<String>,
        user: Option<String>,
        info: Option<u64>,
    },
}

fn round_trip(spec: &Spec) {
    let msg = match spec {
        Spec::Subscribed {
            id,
            epoch,
            seq,
            recovered,
            missed,
            client,
        } => {
            let mut info = SubscribedInfo::default();
            info.epoch = *epoch;
            info.seq = *seq;
            info.recovered = *recovered;
            info.missed = positions(missed);
            info.client = client.clone();
            ServerMessage::Subscribed { id: *id, info }
        }
        Spec::Unsubscribed { id } => ServerMessage::Unsubscribed { id: *id },
        Spec::Published { id, seq } => ServerMessage::Published { id: *id, seq: *seq },
        Spec::Pong { id } => ServerMessage::Pong { id: *id },
        Spec::Error { id, code, message } => ServerMessage::Error {
            id: *id,
            code: ErrorCode::from_u16(*code),
            message,
        },
        Spec::Message {
            topic,
            epoch,
            seq,
            time_us,
            payload,
        } => {
            let at = Position {
                epoch: *epoch,
                seq: *seq,
            };
            let body = Bytes::copy_from_slice(payload);
            assert_eq!(
                encode_delivery_frame(topic, at, *time_us, payload),
                ServerMessage::Message(Delivery {
                    topic,
                    epoch: *epoch,
                    seq: *seq,
                    time_us: *time_us,
                    payload: body.clone(),
                })
                .to_frame(),
                "the encode-once delivery frame differs from MESSAGE's frame"
            );
            ServerMessage::Message(Delivery {
                topic,
                epoch: *epoch,
                seq: *seq,
                time_us: *time_us,
                payload: body,
            })
        }
        Spec::Refreshed { id, expires } => ServerMessage::Refreshed {
            id: *id,
            expires: *expires,
        },
        Spec::PresenceInfo {
            id,
            clients,
            users,
            entries,
        } => ServerMessage::PresenceInfo {
            id: *id,
            info: PresenceInfo {
                clients: *clients,
                users: *users,
                entries: entries.as_ref().map(|entries| {
                    entries
                        .iter()
                        .map(|(client, user, info)| entry(client, user, *info))
                        .collect()
                }),
            },
        },
        Spec::Event {
            join,
            topic,
            client,
            user,
            info,
        } => {
            let entry = entry(client, user, *info);
            let msg = if *join {
                ServerMessage::Join {
                    topic,
                    entry: entry.clone(),
                }
            } else {
                ServerMessage::Leave {
                    topic,
                    entry: entry.clone(),
                }
            };
            assert_eq!(
                encode_presence_event_frame(*join, topic, &entry),
                msg.to_frame(),
                "the encode-once event frame differs from JOIN/LEAVE's frame"
            );
            msg
        }
    };
    let encoded = encode(&msg);
    assert_eq!(ServerMessage::decode(&encoded).as_ref(), Ok(&msg));

    // The trip a client sees: one unmasked binary frame, decoded as a client.
    let mut buf = BytesMut::from(&msg.to_frame()[..]);
    let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
    let Ok(Some(Incoming::Message(MessageKind::Binary, body))) = decoder.decode(&mut buf) else {
        panic!("to_frame did not decode as one message");
    };
    assert!(buf.is_empty());
    assert_eq!(body, encoded);
}
