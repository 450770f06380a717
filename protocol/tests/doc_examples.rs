//! Keeps docs/protocol.md and the reference implementation in step.
//!
//! Every hex example in the document is produced here by the crate's real
//! encoder (or fed to its real decoder), compared with the bytes written in
//! this file, and looked up verbatim in the document. The topic tables, the
//! error code table and the close code table are checked the same way. If
//! one of these tests fails, either the code changed the wire format (update
//! the document, and think about compatibility) or the document is wrong.

use bytes::{Bytes, BytesMut};
use tickwire_protocol::message::{Delivery, Position, encode_delivery_frame};
use tickwire_protocol::topic::{
    MAX_TOKENS, MAX_TOPIC_LEN, pattern_matches, validate_pattern, validate_topic,
};
use tickwire_protocol::ws::{self, FrameDecoder, Incoming, MessageKind, OpCode, Role};
use tickwire_protocol::{
    ClientMessage, CloseCode, ErrorCode, SUBPROTOCOL, ServerMessage, SubscribeOptions,
    WEBSOCKET_PATH,
};

const DOC: &str = include_str!("../../docs/protocol.md");

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect()
}

/// `bytes` must be exactly `expected`, and `expected` must be in the doc.
fn check(what: &str, bytes: &[u8], expected: &str) {
    assert_eq!(hex(bytes), expected, "{what}: code and test disagree");
    assert!(
        DOC.contains(expected),
        "{what}: docs/protocol.md lacks the bytes\n{expected}"
    );
}

/// `expected` must be in the doc; returns its bytes, to feed a decoder.
fn doc_bytes(what: &str, expected: &str) -> Bytes {
    assert!(
        DOC.contains(expected),
        "{what}: docs/protocol.md lacks the bytes\n{expected}"
    );
    Bytes::from(unhex(expected))
}

fn client(msg: &ClientMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

fn server(msg: &ServerMessage<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

const SUBSCRIBE: &str = "94 01 01 a8 73 74 6f 63 6b 73 2e 2a 80";
const PUBLISH_ACK: &str = "94 03 02 ab 73 74 6f 63 6b 73 2e 41 41 50 4c c4 02 68 69";
const MESSAGE: &str = "96 10 ab 73 74 6f 63 6b 73 2e 41 41 50 4c cf 8a 3f 0c 2e 5b 7d 19 46 01 cf 00 06 0a 24 18 1e 40 00 c4 02 68 69";
const EPOCH: u64 = 0x8a3f_0c2e_5b7d_1946;
const AT: Position = Position {
    epoch: EPOCH,
    seq: 1,
};
const TIME_US: u64 = 1_700_000_000_000_000;

#[test]
fn constants_are_documented() {
    assert_eq!(SUBPROTOCOL, "tickwire.v1");
    assert_eq!(WEBSOCKET_PATH, "/ws");
    assert!(DOC.contains("`tickwire.v1`"));
    assert!(DOC.contains("**`GET /ws`**"));
    assert_eq!(MAX_TOPIC_LEN, 255);
    assert_eq!(MAX_TOKENS, 16);
    assert!(DOC.contains("**255 bytes** (`MAX_TOPIC_LEN`)"));
    assert!(DOC.contains("**16 tokens** (`MAX_TOKENS`)"));
    assert_eq!(ws::MAX_CONTROL_PAYLOAD, 125);
}

#[test]
fn client_message_examples() {
    let hi = Bytes::from_static(b"hi");
    check(
        "SUBSCRIBE",
        &client(&ClientMessage::Subscribe {
            id: 1,
            pattern: "stocks.*",
            options: SubscribeOptions::default(),
        }),
        SUBSCRIBE,
    );
    check(
        "UNSUBSCRIBE",
        &client(&ClientMessage::Unsubscribe {
            id: 3,
            pattern: "stocks.*",
        }),
        "93 02 03 a8 73 74 6f 63 6b 73 2e 2a",
    );
    check(
        "PUBLISH with id",
        &client(&ClientMessage::Publish {
            id: Some(2),
            topic: "stocks.AAPL",
            payload: hi.clone(),
            retain: false,
        }),
        PUBLISH_ACK,
    );
    check(
        "PUBLISH fire-and-forget",
        &client(&ClientMessage::Publish {
            id: None,
            topic: "stocks.AAPL",
            payload: hi,
            retain: false,
        }),
        "94 03 c0 ab 73 74 6f 63 6b 73 2e 41 41 50 4c c4 02 68 69",
    );
    check("PING", &client(&ClientMessage::Ping { id: 4 }), "92 04 04");
    check(
        "PING 300",
        &client(&ClientMessage::Ping { id: 300 }),
        "92 04 cd 01 2c",
    );
    check(
        "REFRESH",
        &client(&ClientMessage::Refresh {
            id: 7,
            token: "abc.def.ghi",
        }),
        "93 05 07 ab 61 62 63 2e 64 65 66 2e 67 68 69",
    );
    check(
        "AUTH",
        &client(&ClientMessage::Auth {
            id: 8,
            token: "abc.def.ghi",
        }),
        "93 06 08 ab 61 62 63 2e 64 65 66 2e 67 68 69",
    );
}

#[test]
fn server_message_examples() {
    check(
        "SUBSCRIBED",
        &server(&ServerMessage::Subscribed {
            id: 1,
            info: Default::default(),
        }),
        "93 0b 01 80",
    );
    check(
        "UNSUBSCRIBED",
        &server(&ServerMessage::Unsubscribed { id: 3 }),
        "92 0c 03",
    );
    check(
        "PUBLISHED",
        &server(&ServerMessage::Published { id: 2, seq: 1 }),
        "93 0d 02 01",
    );
    check(
        "PUBLISHED seq 70000",
        &server(&ServerMessage::Published { id: 2, seq: 70_000 }),
        "93 0d 02 ce 00 01 11 70",
    );
    check("PONG", &server(&ServerMessage::Pong { id: 4 }), "92 0e 04");
    check(
        "REFRESHED",
        &server(&ServerMessage::Refreshed {
            id: 7,
            expires: Some(1_767_225_600),
        }),
        "93 11 07 81 a3 65 78 70 ce 69 55 b9 00",
    );
    check(
        "ERROR with id",
        &server(&ServerMessage::Error {
            id: Some(5),
            code: ErrorCode::InvalidTopic,
            message: "bad topic",
        }),
        "94 0f 05 03 a9 62 61 64 20 74 6f 70 69 63",
    );
    check(
        "ERROR without id",
        &server(&ServerMessage::Error {
            id: None,
            code: ErrorCode::Malformed,
            message: "malformed",
        }),
        "94 0f c0 01 a9 6d 61 6c 66 6f 72 6d 65 64",
    );
    check(
        "MESSAGE",
        &server(&ServerMessage::Message(Delivery {
            topic: "stocks.AAPL",
            epoch: EPOCH,
            seq: 1,
            time_us: TIME_US,
            payload: Bytes::from_static(b"hi"),
        })),
        MESSAGE,
    );
}

#[test]
fn broker_messages_decode_as_documented() {
    let cases: [(&str, ServerMessage<'static>); 4] = [
        (
            "93 0b 01 80",
            ServerMessage::Subscribed {
                id: 1,
                info: Default::default(),
            },
        ),
        ("93 0d 02 01", ServerMessage::Published { id: 2, seq: 1 }),
        (
            "94 0f c0 01 a9 6d 61 6c 66 6f 72 6d 65 64",
            ServerMessage::Error {
                id: None,
                code: ErrorCode::Malformed,
                message: "malformed",
            },
        ),
        (
            MESSAGE,
            ServerMessage::Message(Delivery {
                topic: "stocks.AAPL",
                epoch: EPOCH,
                seq: 1,
                time_us: TIME_US,
                payload: Bytes::from_static(b"hi"),
            }),
        ),
    ];
    for (text, want) in cases {
        let frame = doc_bytes(text, text);
        assert_eq!(ServerMessage::decode(&frame).unwrap(), want, "{text}");
    }
}

#[test]
fn accepted_client_variants() {
    let sub = ClientMessage::Subscribe {
        id: 1,
        pattern: "stocks.*",
        options: SubscribeOptions::default(),
    };
    for text in [
        SUBSCRIBE,
        "93 01 01 a8 73 74 6f 63 6b 73 2e 2a",
        "94 01 01 a8 73 74 6f 63 6b 73 2e 2a c0",
    ] {
        let frame = doc_bytes("SUBSCRIBE variant", text);
        assert_eq!(ClientMessage::decode(&frame).unwrap(), sub, "{text}");
    }
    for text in [
        "92 04 04",
        "92 04 d0 04",
        "92 04 cf 00 00 00 00 00 00 00 04",
    ] {
        let frame = doc_bytes("PING variant", text);
        assert_eq!(
            ClientMessage::decode(&frame).unwrap(),
            ClientMessage::Ping { id: 4 },
            "{text}"
        );
    }
    let frame = doc_bytes("PUBLISH", PUBLISH_ACK);
    assert_eq!(
        ClientMessage::decode(&frame).unwrap(),
        ClientMessage::Publish {
            id: Some(2),
            topic: "stocks.AAPL",
            payload: Bytes::from_static(b"hi"),
            retain: false,
        }
    );
}

#[test]
fn refused_client_examples() {
    let cases = [
        (
            "94 01 01 a8 73 74 6f 63 6b 73 2e 2a 81 a5 73 69 6e 63 65 01",
            ErrorCode::InvalidOption,
        ),
        (
            "94 03 c0 ab 73 74 6f 63 6b 73 2e 41 41 50 4c a2 68 69",
            ErrorCode::Malformed,
        ),
        ("92 04 ff", ErrorCode::Malformed),
        ("92 04 04 00", ErrorCode::Malformed),
        ("92 63 01", ErrorCode::UnknownMessageType),
    ];
    for (text, code) in cases {
        let frame = doc_bytes("refused example", text);
        let err = ClientMessage::decode(&frame).unwrap_err();
        assert_eq!(err.error_code(), code, "{text}: {err}");
    }
    // Rules stated in prose: an empty message and an empty array are
    // malformed, and broker message types sent to the broker are unknown.
    for (bytes, code) in [
        (&b""[..], ErrorCode::Malformed),
        (&b"\x90"[..], ErrorCode::Malformed),
        (&b"\x92\x0e\x04"[..], ErrorCode::UnknownMessageType),
        // A non-string option key.
        (&b"\x94\x01\x01\xa1a\x81\x01\x01"[..], ErrorCode::Malformed),
    ] {
        let frame = Bytes::copy_from_slice(bytes);
        assert_eq!(
            ClientMessage::decode(&frame).unwrap_err().error_code(),
            code,
            "{bytes:x?}"
        );
    }
}

#[test]
fn frame_examples() {
    // The client PUBLISH frame, masked with 37 fa 21 3d.
    let body = unhex(PUBLISH_ACK);
    let mut frame = Vec::new();
    ws::write_client_frame(&mut frame, OpCode::Binary, &body, [0x37, 0xfa, 0x21, 0x3d]);
    check(
        "client PUBLISH frame",
        &frame,
        "82 93 37 fa 21 3d a3 f9 23 96 44 8e 4e 5e 5c 89 0f 7c 76 aa 6d f9 35 92 48",
    );
    // The broker unmasks it back into the PUBLISH.
    let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
    let mut buf = BytesMut::from(&frame[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Incoming::Message(MessageKind::Binary, Bytes::from(body)))
    );

    // The broker MESSAGE frame: the encode-once path and the generic path
    // produce the same bytes.
    let expected = "82 25 96 10 ab 73 74 6f 63 6b 73 2e 41 41 50 4c cf 8a 3f 0c 2e 5b 7d 19 46 01 cf 00 06 0a 24 18 1e 40 00 c4 02 68 69";
    let delivery = encode_delivery_frame("stocks.AAPL", AT, TIME_US, b"hi");
    check("broker MESSAGE frame", &delivery, expected);
    let generic = ServerMessage::Message(Delivery {
        topic: "stocks.AAPL",
        epoch: EPOCH,
        seq: 1,
        time_us: TIME_US,
        payload: Bytes::from_static(b"hi"),
    })
    .to_frame();
    assert_eq!(generic, delivery);
    let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
    let mut buf = BytesMut::from(&delivery[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Incoming::Message(
            MessageKind::Binary,
            Bytes::from(unhex(MESSAGE))
        ))
    );

    // A 200-byte payload: 235-byte message, 16-bit extended length.
    let big = encode_delivery_frame("stocks.AAPL", AT, TIME_US, &[0; 200]);
    check("extended length header", &big[..4], "82 7e 00 eb");
    assert_eq!(big.len(), 4 + 235);
    assert_eq!(&big[4 + 2 + 12 + 9 + 1 + 9..][..2], &[0xc4, 0xc8]);
}

#[test]
fn close_frame_examples() {
    check(
        "close 1001",
        &ws::server_close_frame(CloseCode::GoingAway),
        "88 16 03 e9 62 72 6f 6b 65 72 20 73 68 75 74 74 69 6e 67 20 64 6f 77 6e",
    );
    check(
        "close 4001",
        &ws::server_close_frame(CloseCode::SlowConsumer),
        "88 2b 0f a1 73 6c 6f 77 20 63 6f 6e 73 75 6d 65 72 3a 20 6f 75 74 62 6f 75 6e 64 20 71 75 65 75 65 20 6f 76 65 72 20 62 75 64 67 65 74",
    );
    // The broker's keepalive ping has an empty payload.
    check(
        "keepalive ping",
        &ws::server_frame(OpCode::Ping, b""),
        "89 00",
    );
    // Reasons are cut to 123 bytes.
    assert_eq!(ws::close_body(1000, &"x".repeat(300)).len(), 125);
}

#[test]
fn documented_size_arithmetic() {
    // "a 20-byte topic and an id below 128: overhead 29 bytes".
    let topic = "a".repeat(20);
    let payload = vec![0u8; 1_048_547];
    let out = client(&ClientMessage::Publish {
        id: Some(127),
        topic: &topic,
        payload: Bytes::from(payload),
        retain: false,
    });
    assert_eq!(out.len(), 1_048_576);
    // "The overhead is never more than 273 bytes".
    let topic = "a".repeat(255);
    let out = client(&ClientMessage::Publish {
        id: Some(u64::MAX),
        topic: &topic,
        payload: Bytes::from(vec![0u8; 70_000]),
        retain: false,
    });
    assert_eq!(out.len() - 70_000, 273);
    // "A MESSAGE adds at most 291 bytes to its payload".
    let most = Position {
        epoch: u64::MAX,
        seq: u64::MAX,
    };
    let frame = encode_delivery_frame(&topic, most, u64::MAX, &[0; 70_000]);
    assert_eq!(frame.len() - 10 - 70_000, 291);
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[test]
fn topic_validity_table() {
    let rows = [
        "stocks.AAPL",
        "sensors.eu-west.t_1042",
        "a:b@c~d",
        "stocks.*",
        "stocks.>",
        ">",
        "*.*.bid",
        "a.>.c",
        "a.b*",
        "a..b",
        ".a",
        "a b",
        "stocks/AAPL",
        "café",
        "",
    ];
    for s in rows {
        let topic_ok = validate_topic(s).is_ok();
        let pattern_ok = validate_pattern(s).is_ok();
        let cell = if s.is_empty() {
            "(empty string)".to_owned()
        } else {
            format!("`{s}`")
        };
        let row = format!("| {cell} | {} | {} |", yes_no(topic_ok), yes_no(pattern_ok));
        assert!(
            DOC.contains(&row),
            "validity table row missing or wrong: {row}"
        );
    }
}

#[test]
fn matching_table() {
    let rows = [
        ("stocks.*", "stocks.AAPL"),
        ("stocks.*", "stocks"),
        ("stocks.*", "stocks.AAPL.bid"),
        ("stocks.>", "stocks.AAPL"),
        ("stocks.>", "stocks.AAPL.bid"),
        ("stocks.>", "stocks"),
        ("stocks.*.bid", "stocks.AAPL.bid"),
        ("stocks.*.bid", "stocks.AAPL.ask"),
        ("*.b", "a.b"),
        ("*.b", "a.c"),
        (">", "a"),
        (">", "a.b.c"),
        ("*", "a.b"),
        ("a.b", "a.b"),
        ("a.b", "a.b.c"),
        ("a.b.c", "a.b"),
        ("stocks.aapl", "stocks.AAPL"),
    ];
    for (p, t) in rows {
        let row = format!("| `{p}` | `{t}` | {} |", yes_no(pattern_matches(p, t)));
        assert!(
            DOC.contains(&row),
            "matching table row missing or wrong: {row}"
        );
    }
}

#[test]
fn error_code_table() {
    for code in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.as_u16(), code.name());
        assert!(DOC.contains(&row), "error code row missing: {row}");
    }
}

#[test]
fn close_code_table() {
    for code in CloseCode::ALL {
        let start = format!("| {} |", code.as_u16());
        let reason = format!("`{}`", code.reason());
        assert!(
            DOC.lines()
                .any(|l| l.starts_with(&start) && l.contains(&reason)),
            "close code row for {} missing or without reason {reason}",
            code.as_u16()
        );
    }
}

#[test]
fn delivery_semantics_examples() {
    use tickwire_protocol::message::{Position, SubscribedInfo};
    check(
        "SUBSCRIBE with since",
        &client(&ClientMessage::Subscribe {
            id: 2,
            pattern: "iot.s1",
            options: SubscribeOptions::default()
                .since(vec![("iot.s1".into(), Position { epoch: 9, seq: 11 })]),
        }),
        "94 01 02 a6 69 6f 74 2e 73 31 81 a5 73 69 6e 63 65 81 a6 69 6f 74 2e 73 31 92 09 0b",
    );
    check(
        "SUBSCRIBE with last and max_rate",
        &client(&ClientMessage::Subscribe {
            id: 3,
            pattern: "stocks.*",
            options: SubscribeOptions::default().last(true).max_rate(4),
        }),
        "94 01 03 a8 73 74 6f 63 6b 73 2e 2a 82 a4 6c 61 73 74 c3 a8 6d 61 78 5f 72 61 74 65 04",
    );
    check(
        "PUBLISH with retain",
        &client(&ClientMessage::Publish {
            id: Some(4),
            topic: "stocks.AAPL",
            payload: Bytes::from_static(b"hi"),
            retain: true,
        }),
        "95 03 04 ab 73 74 6f 63 6b 73 2e 41 41 50 4c c4 02 68 69 81 a6 72 65 74 61 69 6e c3",
    );
    let mut info = SubscribedInfo::default();
    info.epoch = Some(9);
    info.seq = Some(11);
    info.recovered = Some(true);
    check(
        "SUBSCRIBED with position",
        &server(&ServerMessage::Subscribed { id: 2, info }),
        "93 0b 02 83 a5 65 70 6f 63 68 09 a3 73 65 71 0b a9 72 65 63 6f 76 65 72 65 64 c3",
    );
    let mut info = SubscribedInfo::default();
    info.epoch = Some(9);
    info.seq = Some(40);
    info.recovered = Some(false);
    info.missed = vec![("iot.s1".into(), Position { epoch: 9, seq: 40 })];
    check(
        "SUBSCRIBED not recovered",
        &server(&ServerMessage::Subscribed { id: 2, info }),
        "93 0b 02 84 a5 65 70 6f 63 68 09 a3 73 65 71 28 a9 72 65 63 6f 76 65 72 65 64 c2 a6 6d 69 73 73 65 64 81 a6 69 6f 74 2e 73 31 92 09 28",
    );
}

#[test]
fn presence_examples() {
    use tickwire_protocol::message::{JoinLeave, PresenceEntry, PresenceInfo, SubscribedInfo};

    check(
        "PRESENCE",
        &client(&ClientMessage::Presence {
            id: 5,
            topic: "room.1",
            counts_only: false,
        }),
        "93 07 05 a6 72 6f 6f 6d 2e 31",
    );
    check(
        "PRESENCE counts",
        &client(&ClientMessage::Presence {
            id: 4,
            topic: "room.1",
            counts_only: true,
        }),
        "94 07 04 a6 72 6f 6f 6d 2e 31 81 a6 63 6f 75 6e 74 73 c3",
    );
    check(
        "SUBSCRIBE join_leave",
        &client(&ClientMessage::Subscribe {
            id: 6,
            pattern: "room.1",
            options: SubscribeOptions::default().join_leave(JoinLeave::Clients),
        }),
        "94 01 06 a6 72 6f 6f 6d 2e 31 81 aa 6a 6f 69 6e 5f 6c 65 61 76 65 a7 63 6c 69 65 6e 74 73",
    );
    let mut info = SubscribedInfo::default();
    info.epoch = Some(9);
    info.seq = Some(0);
    info.client = Some("c1".to_owned());
    check(
        "SUBSCRIBED client",
        &server(&ServerMessage::Subscribed { id: 6, info }),
        "93 0b 06 83 a5 65 70 6f 63 68 09 a3 73 65 71 00 a6 63 6c 69 65 6e 74 a2 63 31",
    );
    let alice = PresenceEntry {
        client: Some("c1"),
        user: Some("alice"),
        info: None,
    };
    check(
        "PRESENCE_INFO",
        &server(&ServerMessage::PresenceInfo {
            id: 5,
            info: PresenceInfo {
                clients: 1,
                users: 1,
                entries: Some(vec![alice.clone()]),
            },
        }),
        "93 12 05 83 a7 63 6c 69 65 6e 74 73 01 a5 75 73 65 72 73 01 a7 65 6e 74 72 69 65 73 91 82 a6 63 6c 69 65 6e 74 a2 63 31 a4 75 73 65 72 a5 61 6c 69 63 65",
    );
    check(
        "PRESENCE_INFO counts",
        &server(&ServerMessage::PresenceInfo {
            id: 4,
            info: PresenceInfo {
                clients: 2,
                users: 1,
                entries: None,
            },
        }),
        "93 12 04 82 a7 63 6c 69 65 6e 74 73 02 a5 75 73 65 72 73 01",
    );
    check(
        "JOIN",
        &server(&ServerMessage::Join {
            topic: "room.1",
            entry: alice,
        }),
        "93 13 a6 72 6f 6f 6d 2e 31 82 a6 63 6c 69 65 6e 74 a2 63 31 a4 75 73 65 72 a5 61 6c 69 63 65",
    );
    let leave = doc_bytes(
        "LEAVE user",
        "93 14 a6 72 6f 6f 6d 2e 31 81 a4 75 73 65 72 a5 61 6c 69 63 65",
    );
    assert_eq!(
        ServerMessage::decode(&leave).expect("decodes"),
        ServerMessage::Leave {
            topic: "room.1",
            entry: PresenceEntry {
                client: None,
                user: Some("alice"),
                info: None,
            },
        }
    );
}
