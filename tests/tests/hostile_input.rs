//! Hostile input found by an outside test: slow HTTP bodies, trickled
//! WebSocket messages, invalid handshake headers, repeated options. Each
//! gets a bounded, documented answer and frees what it held.

use std::net::SocketAddr;
use std::time::Duration;

use tickwire_e2e::{RawClient, Received, TestBroker, WAIT, read_until_closed};
use tickwire_protocol::ws::OpCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// Sends `request` (a whole HTTP request head, `Connection: close` added by
/// the caller) and returns the response text once the broker closes.
async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    read_until_closed(&mut stream).await
}

#[tokio::test]
async fn a_slow_http_body_gets_408_and_frees_its_connection() {
    let broker = TestBroker::start(|c| {
        c.http_body_timeout = Duration::from_millis(200);
        c.max_connections = 2;
    })
    .await;
    let heads = [
        "POST /v1/publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
        "POST /v1/publish/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ];
    let mut slow = Vec::new();
    for head in heads {
        let mut stream = TcpStream::connect(broker.addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("send");
        slow.push(stream);
    }
    // Both places are held by slow bodies; each is answered 408 and closed.
    for stream in &mut slow {
        let response = read_until_closed(stream).await;
        assert_eq!(status(&response), 408, "{response}");
        assert!(response.contains("\"request_timeout\""), "{response}");
        assert!(response.contains("--http-body-timeout"), "{response}");
    }
    // Only the scrape's own connection is left, and a new client gets in.
    broker.wait_metric("tickwire_connections", 1.0).await;
    broker
        .wait_metric("tickwire_http_body_timeouts_total", 2.0)
        .await;
    let mut client = RawClient::connect(broker.addr).await;
    client.publish_acked("t", b"in").await;
    drop(client);
    broker.stop().await;
}

async fn handshakes_refused(broker: &TestBroker, reason: &str) -> f64 {
    tickwire_e2e::metric_with_label(
        broker.addr,
        "tickwire_handshakes_refused_total",
        "reason",
        reason,
    )
    .await
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(key: Option<&str>, version: Option<&str>) -> String {
    let mut request =
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n"
            .to_owned();
    if let Some(key) = key {
        request.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    if let Some(version) = version {
        request.push_str(&format!("Sec-WebSocket-Version: {version}\r\n"));
    }
    request + "\r\n"
}

#[tokio::test]
async fn the_websocket_key_must_be_sixteen_bytes_of_base64() {
    let broker = TestBroker::start_default().await;
    for key in [
        None,
        Some("not base64!"),
        Some("c2hvcnQ="),
        Some("dGhpcyBpcyBzZXZlbnRlZW4gYnl0ZXM="),
    ] {
        let response = raw_request(broker.addr, &upgrade_request(key, Some("13"))).await;
        assert_eq!(status(&response), 400, "key {key:?}: {response}");
        assert!(response.contains("Sec-WebSocket-Key"), "{response}");
    }
    assert_eq!(handshakes_refused(&broker, "key").await, 4.0);
    let mut stream = TcpStream::connect(broker.addr).await.expect("connect");
    let request = upgrade_request(Some(KEY), Some("13"));
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 101");
    drop(stream);
    broker.stop().await;
}

#[tokio::test]
async fn a_wrong_websocket_version_gets_426_naming_version_13() {
    let broker = TestBroker::start_default().await;
    for version in [None, Some("8"), Some("14")] {
        let response = raw_request(broker.addr, &upgrade_request(Some(KEY), version)).await;
        assert_eq!(status(&response), 426, "version {version:?}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("sec-websocket-version: 13\r\n"),
            "{response}"
        );
    }
    assert_eq!(handshakes_refused(&broker, "version").await, 3.0);
    broker.stop().await;
}

#[tokio::test]
async fn an_option_given_twice_is_refused_as_invalid_option() {
    let broker = TestBroker::start_default().await;
    let mut client = RawClient::connect(broker.addr).await;
    // [1, 7, "a", {"last": true, "last": false}]
    client
        .send_frame(
            OpCode::Binary,
            b"\x94\x01\x07\xa1a\x82\xa4last\xc3\xa4last\xc2",
        )
        .await;
    match client.recv().await {
        Received::Error { id, code, message } => {
            assert_eq!(id, Some(7));
            assert_eq!(code, tickwire_protocol::ErrorCode::InvalidOption);
            assert!(message.contains("more than once"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    // [3, 8, "a", b"hi", {"retain": false, "retain": false}]
    client
        .send_frame(
            OpCode::Binary,
            b"\x95\x03\x08\xa1a\xc4\x02hi\x82\xa6retain\xc2\xa6retain\xc2",
        )
        .await;
    match client.recv().await {
        Received::Error { id, code, .. } => {
            assert_eq!(id, Some(8));
            assert_eq!(code, tickwire_protocol::ErrorCode::InvalidOption);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(client.publish_acked("a", b"fine").await, 1);
    drop(client);
    broker.stop().await;
}

/// A masked binary frame without FIN: the first fragment of a message.
fn first_fragment(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [1, 2, 3, 4];
    let mut masked = payload.to_vec();
    tickwire_protocol::ws::apply_mask(&mut masked, key);
    let mut frame = vec![0x02, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend_from_slice(&masked);
    frame
}

#[tokio::test]
async fn a_message_not_completed_in_time_closes_with_4006() {
    let broker = TestBroker::start(|c| c.message_timeout = Duration::from_millis(300)).await;
    let mut witness = RawClient::connect(broker.addr).await;
    witness.subscribe("alive").await;

    // Trickled: two bytes of a frame header, then one byte at a time while
    // each read still counts as activity for keepalive.
    let mut trickler = RawClient::connect(broker.addr).await;
    trickler.send_raw(&[0x82, 0x80 | 20]).await;
    let closing = tokio::spawn(async move {
        for byte in [1u8, 2, 3, 4, 5, 6, 7, 8] {
            trickler.send_raw(&[byte]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        trickler
    });
    let mut trickler = closing.await.expect("trickler");
    assert_eq!(
        trickler.recv_close().await,
        Received::Close {
            code: Some(4006),
            reason: "message not completed within message_timeout".to_owned()
        }
    );

    // Fragmented: the first fragment arrives whole, pings keep the
    // connection busy, the last fragment never comes.
    let mut fragmenter = RawClient::connect(broker.addr).await;
    fragmenter.send_raw(&first_fragment(b"\x94\x01\x01")).await;
    fragmenter.send_frame(OpCode::Ping, b"1").await;
    assert_eq!(fragmenter.recv().await, Received::Pong(0));
    assert!(matches!(
        fragmenter.recv_close().await,
        Received::Close {
            code: Some(4006),
            ..
        }
    ));
    assert_eq!(
        tickwire_e2e::metric_with_label(broker.addr, "tickwire_closes_total", "code", "4006").await,
        2.0
    );

    // Everyone else carries on.
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_acked("alive", b"yes").await;
    assert!(matches!(witness.recv().await, Received::Message { .. }));
    drop((witness, publisher, trickler, fragmenter));
    broker.stop().await;
}

#[tokio::test]
async fn only_allowed_origins_may_upgrade_and_clients_without_origin_always_may() {
    let broker = TestBroker::start(|c| {
        c.allowed_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let (status, text) =
        tickwire_e2e::try_handshake(broker.addr, "Origin: https://evil.example\r\n").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("allowed_origins"), "{text}");
    let (status, text) =
        tickwire_e2e::try_handshake(broker.addr, "Origin: https://App.Example.com\r\n").await;
    assert_eq!(status, 101, "{text}");
    let (status, text) = tickwire_e2e::try_handshake(broker.addr, "").await;
    assert_eq!(status, 101, "{text}");
    assert_eq!(handshakes_refused(&broker, "origin").await, 1.0);
    broker.stop().await;
}
