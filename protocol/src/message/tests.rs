//! Round trips, documented bytes and hostile frames.

use bytes::Bytes;

use super::*;
use crate::codes::ErrorCode;
use crate::ws;

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
    round_trip_client(ClientMessage::Refresh {
        id: 5,
        token: "eyJ.eyJ.sig",
    });
    round_trip_client(ClientMessage::Auth {
        id: 6,
        token: "eyJ.eyJ.sig",
    });
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
            client: None,
        },
    });
    round_trip_server(ServerMessage::Unsubscribed { id: 2 });
    round_trip_server(ServerMessage::Published {
        id: 3,
        seq: 1 << 40,
    });
    round_trip_server(ServerMessage::Pong { id: 4 });
    round_trip_server(ServerMessage::Refreshed {
        id: 5,
        expires: Some(1_767_225_600),
    });
    round_trip_server(ServerMessage::Refreshed {
        id: 6,
        expires: None,
    });
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
    // A REFRESH whose token is not a string still names its request.
    assert_eq!(
        ClientMessage::request_id_hint(b"\x93\x05\x0b\x01"),
        Some(11)
    );
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

#[test]
fn an_option_given_twice_is_refused() {
    let cases: &[&[u8]] = &[
        b"\x94\x01\x01\xa1a\x82\xa4last\xc3\xa4last\xc2",
        b"\x95\x03\x01\xa1a\xc4\x02hi\x82\xa6retain\xc3\xa6retain\xc2",
    ];
    for bytes in cases {
        let frame = Bytes::from_static(bytes);
        let err = ClientMessage::decode(&frame).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::InvalidOption, "{bytes:x?}");
        assert!(err.to_string().contains("more than once"), "{err}");
    }
    let once = Bytes::from_static(b"\x95\x03\x01\xa1a\xc4\x02hi\x81\xa6retain\xc3");
    assert!(ClientMessage::decode(&once).is_ok());
}

#[test]
fn presence_messages_round_trip() {
    round_trip_client(ClientMessage::Presence {
        id: 8,
        topic: "room.1",
        counts_only: false,
    });
    round_trip_client(ClientMessage::Presence {
        id: 9,
        topic: "room.1",
        counts_only: true,
    });
    round_trip_client(ClientMessage::Subscribe {
        id: 1,
        pattern: "room.1",
        options: SubscribeOptions::default().join_leave(JoinLeave::Users),
    });
    let alice = PresenceEntry {
        client: Some("c1"),
        user: Some("alice"),
        info: Some(Bytes::from_static(b"\x81\xa4name\xa5Alice")),
    };
    let anonymous = PresenceEntry {
        client: Some("c2"),
        user: None,
        info: None,
    };
    round_trip_server(ServerMessage::PresenceInfo {
        id: 8,
        info: PresenceInfo {
            clients: 2,
            users: 1,
            entries: Some(vec![alice.clone(), anonymous.clone()]),
        },
    });
    round_trip_server(ServerMessage::PresenceInfo {
        id: 9,
        info: PresenceInfo {
            clients: 2,
            users: 1,
            entries: None,
        },
    });
    round_trip_server(ServerMessage::Join {
        topic: "room.1",
        entry: alice.clone(),
    });
    round_trip_server(ServerMessage::Leave {
        topic: "room.1",
        entry: anonymous,
    });
    round_trip_server(ServerMessage::Leave {
        topic: "room.1",
        entry: PresenceEntry {
            client: None,
            user: Some("alice"),
            info: None,
        },
    });
    let info = SubscribedInfo {
        epoch: Some(1),
        seq: Some(0),
        client: Some("c1".into()),
        ..SubscribedInfo::default()
    };
    round_trip_server(ServerMessage::Subscribed { id: 1, info });
}

#[test]
fn presence_event_frame_matches_the_message_encoding() {
    let entries = [
        PresenceEntry {
            client: Some("c1"),
            user: Some("alice"),
            info: Some(Bytes::from_static(b"\x81\xa4name\xa5Alice")),
        },
        PresenceEntry {
            client: Some(&"x".repeat(64)),
            user: None,
            info: Some(Bytes::from(
                vec![0xc4, 200]
                    .into_iter()
                    .chain([7; 200])
                    .collect::<Vec<_>>(),
            )),
        },
    ];
    for entry in entries {
        for join in [true, false] {
            let frame = encode_presence_event_frame(join, "room.1", &entry);
            let header = ws::FrameHeader::parse(&frame, ws::Role::Client)
                .unwrap()
                .unwrap();
            let body = frame.slice(header.header_len..);
            let expected = if join {
                ServerMessage::Join {
                    topic: "room.1",
                    entry: entry.clone(),
                }
            } else {
                ServerMessage::Leave {
                    topic: "room.1",
                    entry: entry.clone(),
                }
            };
            assert_eq!(ServerMessage::decode(&body).unwrap(), expected);
            assert_eq!(body.len(), entry.encoded_len() + 1 + 1 + 1 + "room.1".len());
        }
    }
}

#[test]
fn presence_hex_examples() {
    // These bytes appear in docs/protocol.md; keep both in step.
    let mut out = Vec::new();
    ClientMessage::Presence {
        id: 4,
        topic: "room.1",
        counts_only: true,
    }
    .encode(&mut out);
    assert_eq!(out, b"\x94\x07\x04\xa6room.1\x81\xa6counts\xc3");

    let mut out = Vec::new();
    ServerMessage::Join {
        topic: "room.1",
        entry: PresenceEntry {
            client: Some("c1"),
            user: Some("alice"),
            info: None,
        },
    }
    .encode(&mut out);
    assert_eq!(
        out,
        b"\x93\x13\xa6room.1\x82\xa6client\xa2c1\xa4user\xa5alice"
    );
}

#[test]
fn join_leave_option_values() {
    let decode = |bytes: &'static [u8]| {
        let frame = Bytes::from_static(bytes);
        match ClientMessage::decode(&frame) {
            Ok(ClientMessage::Subscribe { options, .. }) => Ok(options.join_leave),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e.error_code()),
        }
    };
    assert_eq!(
        decode(b"\x94\x01\x01\xa1a\x81\xaajoin_leave\xc3"),
        Ok(Some(JoinLeave::Clients))
    );
    assert_eq!(decode(b"\x94\x01\x01\xa1a\x81\xaajoin_leave\xc2"), Ok(None));
    assert_eq!(
        decode(b"\x94\x01\x01\xa1a\x81\xaajoin_leave\xa7clients"),
        Ok(Some(JoinLeave::Clients))
    );
    assert_eq!(
        decode(b"\x94\x01\x01\xa1a\x81\xaajoin_leave\xa5users"),
        Ok(Some(JoinLeave::Users))
    );
    for bad in [
        &b"\x94\x01\x01\xa1a\x81\xaajoin_leave\xa4user"[..],
        b"\x94\x01\x01\xa1a\x81\xaajoin_leave\x01",
        b"\x94\x01\x01\xa1a\x81\xaajoin_leave\xc0",
        b"\x94\x01\x01\xa1a\x82\xaajoin_leave\xc3\xaajoin_leave\xc2",
    ] {
        let frame = Bytes::copy_from_slice(bad);
        let err = ClientMessage::decode(&frame).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::InvalidOption, "{bad:x?}");
    }
}

#[test]
fn malformed_presence_frames_are_errors() {
    let cases: &[(&[u8], ErrorCode)] = &[
        (b"\x92\x07\x01", ErrorCode::Malformed),
        (b"\x93\x07\x01\x05", ErrorCode::Malformed),
        (b"\x95\x07\x01\xa1a\x80\x80", ErrorCode::Malformed),
        (
            b"\x94\x07\x01\xa1a\x81\xa6counts\x01",
            ErrorCode::InvalidOption,
        ),
        (
            b"\x94\x07\x01\xa1a\x81\xa5limit\x01",
            ErrorCode::InvalidOption,
        ),
        (
            b"\x94\x07\x01\xa1a\x82\xa6counts\xc3\xa6counts\xc3",
            ErrorCode::InvalidOption,
        ),
        (b"\x94\x07\x01\xa1a\x05", ErrorCode::Malformed),
    ];
    for (bytes, code) in cases {
        let frame = Bytes::from_static(bytes);
        let err = ClientMessage::decode(&frame).unwrap_err();
        assert_eq!(err.error_code(), *code, "{bytes:x?}: {err}");
    }
    assert_eq!(
        ClientMessage::request_id_hint(b"\x94\x07\x0c\x05"),
        Some(12)
    );
    let ok = Bytes::from_static(b"\x94\x07\x01\xa1a\xc0");
    assert!(matches!(
        ClientMessage::decode(&ok),
        Ok(ClientMessage::Presence {
            counts_only: false,
            ..
        })
    ));
    // Broker side: wrong shapes, truncations, hostile counts.
    let server_cases: &[&[u8]] = &[
        b"\x92\x13\xa1a",
        b"\x93\x13\xa1a\x05",
        b"\x93\x13\xa1a\x81\xa6client\x05",
        b"\x93\x12\x01\x81\xa7entries\xdd\xff\xff\xff\xff",
        b"\x93\x12\x01\x81\xa7entries\x91\x81\xa4info",
        b"\x93\x14\xa1a\x81\xa4info\xc1",
    ];
    for bytes in server_cases {
        let frame = Bytes::from_static(bytes);
        assert!(ServerMessage::decode(&frame).is_err(), "{bytes:x?}");
    }
    let mut out = Vec::new();
    ServerMessage::PresenceInfo {
        id: 1,
        info: PresenceInfo {
            clients: 1,
            users: 1,
            entries: Some(vec![PresenceEntry {
                client: Some("c"),
                user: Some("u"),
                info: Some(Bytes::from_static(b"\x92\x01\x02")),
            }]),
        },
    }
    .encode(&mut out);
    for cut in 0..out.len() {
        let frame = Bytes::copy_from_slice(&out[..cut]);
        assert!(ServerMessage::decode(&frame).is_err(), "cut at {cut}");
    }
}

#[test]
fn unknown_keys_in_presence_maps_are_skipped() {
    let frame = Bytes::from_static(
        b"\x93\x12\x01\x84\xa7clients\x01\xa5users\x00\xa3new\x91\x01\xa7entries\x91\x82\xa6client\xa1c\xa3new\xc3",
    );
    let ServerMessage::PresenceInfo { info, .. } = ServerMessage::decode(&frame).unwrap() else {
        panic!("not a presence answer");
    };
    assert_eq!((info.clients, info.users), (1, 0));
    let entries = info.entries.unwrap();
    assert_eq!(entries[0].client, Some("c"));
}
