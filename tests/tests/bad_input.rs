//! Hostile and malformed input: each gets the documented error reply or
//! close code, and a second client on the same broker keeps receiving.

use tickwire_e2e::{RawClient, Received, TestBroker, metric_with_label, try_handshake};
use tickwire_protocol::ws::{self, OpCode};
use tickwire_protocol::{ClientMessage, ErrorCode};

const MAX_MESSAGE: usize = 4096;

/// A broker with a small message limit, a subscribed witness and a
/// publisher that proves the witness still receives after each bad input.
struct Fixture {
    broker: TestBroker,
    witness: RawClient,
    publisher: RawClient,
    sent: u64,
}

impl Fixture {
    async fn new() -> Fixture {
        let broker = TestBroker::start(|c| c.max_message_size = MAX_MESSAGE).await;
        let mut witness = RawClient::connect(broker.addr).await;
        witness.subscribe("witness").await;
        let publisher = RawClient::connect(broker.addr).await;
        Fixture {
            broker,
            witness,
            publisher,
            sent: 0,
        }
    }

    async fn witness_still_receives(&mut self) {
        self.sent += 1;
        let seq = self.publisher.publish_acked("witness", b"alive").await;
        assert_eq!(seq, self.sent);
        match self.witness.recv().await {
            Received::Message { seq, .. } => assert_eq!(seq, self.sent),
            other => panic!("witness expected a message, got {other:?}"),
        }
    }

    async fn expect_error(
        &mut self,
        send: impl AsyncFnOnce(&mut RawClient),
        id: Option<u64>,
        code: ErrorCode,
    ) {
        let mut bad = RawClient::connect(self.broker.addr).await;
        send(&mut bad).await;
        match bad.recv().await {
            Received::Error {
                id: got_id,
                code: got,
                message,
            } => {
                assert_eq!((got_id, got), (id, code), "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
        // The connection stays usable after an error reply.
        let ping = bad.next_id();
        bad.send(&ClientMessage::Ping { id: ping }).await;
        assert_eq!(bad.recv().await, Received::Pong(ping));
        self.witness_still_receives().await;
    }

    async fn expect_close(&mut self, send: impl AsyncFnOnce(&mut RawClient), code: u16) {
        let mut bad = RawClient::connect(self.broker.addr).await;
        send(&mut bad).await;
        match bad.recv_close().await {
            Received::Close { code: got, reason } => {
                assert_eq!(got, Some(code), "reason: {reason}")
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
        // The broker closes the TCP connection after its close frame.
        assert_eq!(bad.recv().await, Received::Eof);
        self.witness_still_receives().await;
    }
}

#[tokio::test]
async fn malformed_messages_get_error_replies() {
    let mut f = Fixture::new().await;
    f.expect_error(
        async |c| c.send_frame(OpCode::Binary, b"\xc1 not msgpack").await,
        None,
        ErrorCode::Malformed,
    )
    .await;
    f.expect_error(
        async |c| c.send_frame(OpCode::Binary, b"").await,
        None,
        ErrorCode::Malformed,
    )
    .await;
    f.expect_error(
        async |c| c.send_frame(OpCode::Binary, b"\x92\x63\x01").await,
        None,
        ErrorCode::UnknownMessageType,
    )
    .await;
    f.expect_error(
        async |c| {
            c.send_frame(OpCode::Binary, b"\x94\x01\x07\xa1a\x81\xa5since\x01")
                .await
        },
        Some(7),
        ErrorCode::InvalidOption,
    )
    .await;
    f.expect_error(
        async |c| {
            c.send(&ClientMessage::Publish {
                id: Some(5),
                topic: "a..b",
                payload: bytes::Bytes::new(),
                retain: false,
            })
            .await
        },
        Some(5),
        ErrorCode::InvalidTopic,
    )
    .await;
    f.expect_error(
        async |c| {
            c.send(&ClientMessage::Subscribe {
                id: 6,
                pattern: "a.>.b",
                options: Default::default(),
            })
            .await
        },
        Some(6),
        ErrorCode::InvalidPattern,
    )
    .await;
    let addr = f.broker.addr;
    assert_eq!(
        metric_with_label(addr, "tickwire_protocol_errors_total", "code", "malformed").await,
        2.0
    );
    assert_eq!(
        metric_with_label(
            addr,
            "tickwire_protocol_errors_total",
            "code",
            "invalid_topic"
        )
        .await,
        1.0
    );
    drop((f.witness, f.publisher));
    f.broker.stop().await;
}

#[tokio::test]
async fn framing_violations_close_with_the_documented_code() {
    let mut f = Fixture::new().await;
    // One frame over the message size limit.
    f.expect_close(
        async |c| c.send_frame(OpCode::Binary, &[0; MAX_MESSAGE + 1]).await,
        1009,
    )
    .await;
    // A text frame.
    f.expect_close(
        async |c| c.send_frame(OpCode::Text, b"{\"subscribe\":1}").await,
        1003,
    )
    .await;
    // A text frame that is not UTF-8: 1007 rather than 1003.
    f.expect_close(
        async |c| c.send_frame(OpCode::Text, b"\xc0\xaf").await,
        1007,
    )
    .await;
    // A length in a longer encoding than needed (16 bits for 3 bytes).
    f.expect_close(
        async |c| c.send_raw(&[0x82, 0xfe, 0, 3, 0, 0, 0, 0, 1, 2, 3]).await,
        1002,
    )
    .await;
    // A control frame over 125 bytes.
    f.expect_close(async |c| c.send_frame(OpCode::Ping, &[0; 126]).await, 1002)
        .await;
    // A fragmented message whose total exceeds the limit.
    f.expect_close(
        async |c| {
            let mut out = Vec::new();
            ws::write_client_frame(&mut out, OpCode::Binary, &[0; 1000], [1, 2, 3, 4]);
            out[0] &= 0x7f;
            for _ in 0..4 {
                let mut frame = Vec::new();
                ws::write_client_frame(&mut frame, OpCode::Continuation, &[0; 1000], [1, 2, 3, 4]);
                frame[0] &= 0x7f;
                out.extend(frame);
            }
            c.send_raw(&out).await;
        },
        1009,
    )
    .await;
    // An unmasked client frame.
    f.expect_close(async |c| c.send_raw(&[0x82, 0x02, 0x91, 0x04]).await, 1002)
        .await;
    // Reserved bits set.
    f.expect_close(
        async |c| {
            let mut out = Vec::new();
            ws::write_client_frame(&mut out, OpCode::Binary, b"\x92\x04\x01", [9, 9, 9, 9]);
            out[0] |= 0x40;
            c.send_raw(&out).await;
        },
        1002,
    )
    .await;
    // A reserved opcode.
    f.expect_close(
        async |c| {
            let mut out = Vec::new();
            ws::write_client_frame(&mut out, OpCode::Binary, b"x", [9, 9, 9, 9]);
            out[0] = 0x83;
            c.send_raw(&out).await;
        },
        1002,
    )
    .await;
    // A close frame whose reason is not UTF-8.
    f.expect_close(
        async |c| c.send_frame(OpCode::Close, &[0x03, 0xe8, 0xc3, 0x28]).await,
        1007,
    )
    .await;
    // A continuation with no message started.
    f.expect_close(
        async |c| c.send_frame(OpCode::Continuation, b"x").await,
        1002,
    )
    .await;

    let addr = f.broker.addr;
    assert_eq!(
        metric_with_label(addr, "tickwire_closes_total", "code", "1009").await,
        2.0
    );
    assert_eq!(
        metric_with_label(addr, "tickwire_closes_total", "code", "1002").await,
        6.0
    );
    assert_eq!(
        metric_with_label(addr, "tickwire_closes_total", "code", "1003").await,
        1.0
    );
    assert_eq!(
        metric_with_label(addr, "tickwire_closes_total", "code", "1007").await,
        2.0
    );
    drop((f.witness, f.publisher));
    f.broker.stop().await;
}

#[tokio::test]
async fn a_peer_close_is_echoed() {
    let broker = TestBroker::start_default().await;
    let mut client = RawClient::connect(broker.addr).await;
    client
        .send_frame(OpCode::Close, &ws::close_body(3000, "done"))
        .await;
    assert_eq!(
        client.recv().await,
        Received::Close {
            code: Some(3000),
            reason: String::new()
        }
    );
    assert_eq!(client.recv().await, Received::Eof);
    broker.stop().await;
}

#[tokio::test]
async fn subprotocol_negotiation() {
    let broker = TestBroker::start_default().await;
    let (status, text) =
        try_handshake(broker.addr, "Sec-WebSocket-Protocol: mqtt, stomp\r\n").await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("tickwire.v1"),
        "body names the supported subprotocol: {text}"
    );

    let (status, text) = try_handshake(broker.addr, "").await;
    assert_eq!(status, 101, "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{text}"
    );

    let (status, text) =
        try_handshake(broker.addr, "Sec-WebSocket-Protocol: mqtt, tickwire.v1\r\n").await;
    assert_eq!(status, 101, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-protocol: tickwire.v1"),
        "{text}"
    );
    broker.stop().await;
}
