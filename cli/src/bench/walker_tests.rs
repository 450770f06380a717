//! Tests of [`super::walker`], kept apart so that the criterion benchmark
//! that includes walker.rs compiles without them.

use super::walker::*;
use tickwire_protocol::deflate::compress;
use tickwire_protocol::message::{Position, encode_delivery_frame};
use tickwire_protocol::ws::{OpCode, compressed_server_frame, server_frame};
use tickwire_protocol::{ErrorCode, ServerMessage};

/// Position `seq` in a 64-bit epoch, the size real epochs have.
fn at(seq: u64) -> Position {
    Position {
        epoch: u64::MAX - 1,
        seq,
    }
}

fn payload(sent: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0xab; len];
    p[..8].copy_from_slice(&sent.to_le_bytes());
    p
}

#[test]
fn walks_messages_of_every_size_class() {
    let mut buf = Vec::new();
    let long = "x".repeat(40);
    let sizes = [
        ("t", 8usize),
        ("a.b", 128),
        (long.as_str(), 300),
        ("y", 70_000),
    ];
    for (seq, (topic, len)) in (1u64..).zip(sizes) {
        buf.extend_from_slice(&encode_delivery_frame(
            topic,
            at(seq),
            1 << 40,
            &payload(seq * 10, len),
        ));
    }
    let mut w = Walker::new();
    let mut sent = Vec::new();
    let walked = w.walk(&buf, |s| sent.push(s)).unwrap();
    assert_eq!(walked.consumed, buf.len());
    assert_eq!(sent, vec![10, 20, 30, 40]);
    assert_eq!((w.messages, w.seq_gaps, w.malformed), (4, 0, 0));
}

#[test]
fn partial_frames_report_what_they_need() {
    let frame = encode_delivery_frame("t", at(5), 1, &payload(1, 300));
    let mut w = Walker::new();
    for cut in 0..frame.len() {
        let walked = w.walk(&frame[..cut], |_| {}).unwrap();
        assert_eq!(walked.consumed, 0);
        if cut >= 4 {
            assert_eq!(walked.need, frame.len());
        }
    }
    assert_eq!(w.messages, 0);
}

#[test]
fn counts_gaps_errors_and_stops_at_control_frames() {
    let mut buf = Vec::new();
    buf.extend_from_slice(&encode_delivery_frame("t", at(1), 1, &payload(1, 8)));
    buf.extend_from_slice(&encode_delivery_frame("t", at(4), 1, &payload(1, 8)));
    buf.extend_from_slice(
        &ServerMessage::Error {
            id: None,
            code: ErrorCode::InvalidTopic,
            message: "x",
        }
        .to_frame(),
    );
    buf.extend_from_slice(
        &ServerMessage::Subscribed {
            id: 1,
            info: Default::default(),
        }
        .to_frame(),
    );
    buf.extend_from_slice(&server_frame(OpCode::Ping, b"hi"));
    let ping_end = buf.len();
    buf.extend_from_slice(&server_frame(OpCode::Close, &[0x0f, 0xa1]));
    let mut w = Walker::new();
    let walked = w.walk(&buf, |_| {}).unwrap();
    assert_eq!(walked.consumed, ping_end);
    assert_eq!(walked.control, Some(Control::Ping(b"hi".to_vec())));
    assert_eq!((w.messages, w.seq_gaps, w.errors, w.other), (2, 2, 1, 1));
    let walked = w.walk(&buf[ping_end..], |_| {}).unwrap();
    assert_eq!(walked.control, Some(Control::Close(4001)));
}

#[test]
fn refuses_masked_frames() {
    assert!(w_err(&[0x82, 0x81, 1, 2, 3, 4, 0]));
    assert!(w_err(&[0xc2, 0x00]));
}

fn w_err(buf: &[u8]) -> bool {
    Walker::new().walk(buf, |_| {}).is_err()
}

#[test]
fn compressed_messages_stop_the_walk_only_with_deflate() {
    let plain = encode_delivery_frame("t", at(1), 1, &payload(7, 600));
    // A 600-byte payload takes a 4-byte frame header.
    let body = encode_delivery_frame("t", at(2), 1, &payload(8, 600))[4..].to_vec();
    let packed = compress(&body, 1);
    let compressed = compressed_server_frame(OpCode::Binary, &packed);
    let mut buf = plain.to_vec();
    buf.extend_from_slice(&compressed);
    buf.extend_from_slice(&encode_delivery_frame("t", at(3), 1, &payload(9, 8)));

    // Without permessage-deflate agreed, RSV1 is a protocol error.
    assert!(Walker::new().walk(&buf, |_| {}).is_err());

    let mut w = Walker::with_deflate(true);
    let mut sent = Vec::new();
    let walked = w.walk(&buf, |s| sent.push(s)).unwrap();
    assert_eq!(walked.consumed, plain.len() + compressed.len());
    let Some(Control::Compressed(range)) = walked.control else {
        panic!("no compressed control: {walked:?}");
    };
    assert_eq!(&buf[range], &packed[..]);
    assert_eq!((w.messages, w.compressed), (1, 1));

    // The caller walks the inflated body, then the rest of the buffer.
    w.binary(&body, |s| sent.push(s));
    let walked = w.walk(&buf[walked.consumed..], |s| sent.push(s)).unwrap();
    assert_eq!(walked.control, None);
    assert_eq!(sent, vec![7, 8, 9]);
    assert_eq!((w.messages, w.seq_gaps, w.seq_regressions), (3, 0, 0));
}

#[test]
fn deflate_allows_rsv1_only_on_whole_binary_messages() {
    let mut w = Walker::with_deflate(true);
    // A compressed text frame, a compressed fragment and RSV2 stay errors.
    for b0 in [0xc1u8, 0x42, 0xa2] {
        assert!(w.walk(&[b0, 0x00], |_| {}).is_err(), "{b0:#04x}");
    }
}
