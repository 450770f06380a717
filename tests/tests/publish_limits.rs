//! Per-connection publish rate limits: refusals name the publish, a
//! sustained flood is closed with 4005, and other connections (and the same
//! client, once it slows down) carry on.

use std::time::Duration;

use bytes::Bytes;
use tickwire_e2e::{RawClient, Received, TestBroker, WAIT, metric_with_label};
use tickwire_protocol::{ClientMessage, ErrorCode};

async fn publish(client: &mut RawClient, id: Option<u64>, payload: &[u8]) {
    client
        .send(&ClientMessage::Publish {
            id,
            topic: "t",
            payload: Bytes::copy_from_slice(payload),
            retain: false,
        })
        .await;
}

fn assert_rate_limited(received: Received, want_id: Option<u64>) {
    match received {
        Received::Error { id, code, message } => {
            assert_eq!(code, ErrorCode::RateLimited, "{message}");
            assert_eq!(id, want_id);
            assert!(message.contains("--publish-rate"), "{message}");
        }
        other => panic!("expected ERROR rate_limited, got {other:?}"),
    }
}

#[tokio::test]
async fn publishes_over_the_rate_are_refused_then_accepted_again() {
    let broker = TestBroker::start(|c| {
        c.publish_rate = 1;
        c.publish_burst = 3;
        c.max_message_size = 4096;
        c.max_http_body = 4096;
        c.publish_bytes_burst = 4096;
        c.publish_bytes_rate = 4096;
    })
    .await;
    let mut witness = RawClient::connect(broker.addr).await;
    witness.subscribe("t").await;
    let mut client = RawClient::connect(broker.addr).await;
    for seq in 1..=3 {
        assert_eq!(client.publish_acked("t", b"x").await, seq);
    }
    publish(&mut client, Some(99), b"x").await;
    assert_rate_limited(client.recv().await, Some(99));

    // The refused publish was not applied: the witness gets 1..=3, then 4
    // once the client may publish again.
    for seq in 1..=3 {
        assert!(matches!(witness.recv().await, Received::Message { seq: s, .. } if s == seq));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let id = client.next_id();
        publish(&mut client, Some(id), b"x").await;
        match client.recv().await {
            Received::Published { seq, .. } => {
                assert_eq!(seq, 4);
                break;
            }
            other => assert_rate_limited(other, Some(id)),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never accepted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        witness.recv().await,
        Received::Message { seq: 4, .. }
    ));
    drop((witness, client));
    broker.stop().await;
}

#[tokio::test]
async fn a_publish_over_the_byte_rate_is_refused() {
    let broker = TestBroker::start(|c| {
        c.max_message_size = 4096;
        c.max_http_body = 4096;
        c.publish_bytes_burst = 4096;
        c.publish_bytes_rate = 1;
    })
    .await;
    let mut client = RawClient::connect(broker.addr).await;
    assert_eq!(client.publish_acked("t", &[0u8; 3000]).await, 1);
    publish(&mut client, Some(50), &[0u8; 2000]).await;
    assert_rate_limited(client.recv().await, Some(50));
    assert_eq!(client.publish_acked("t", &[0u8; 1000]).await, 2);
    drop(client);
    broker.stop().await;
}

#[tokio::test]
async fn a_sustained_flood_is_closed_with_4005() {
    let broker = TestBroker::start(|c| {
        c.publish_rate = 1;
        c.publish_burst = 1;
        c.publish_flood_refusals = 5;
    })
    .await;
    let mut flooder = RawClient::connect(broker.addr).await;
    for _ in 0..20 {
        publish(&mut flooder, None, b"x").await;
    }
    let mut refusals = 0;
    loop {
        match flooder.recv().await {
            Received::Error { code, id, .. } => {
                assert_eq!((code, id), (ErrorCode::RateLimited, None));
                refusals += 1;
            }
            Received::Close { code, reason } => {
                assert_eq!(code, Some(4005), "{reason}");
                break;
            }
            other => panic!("expected refusals then close 4005, got {other:?}"),
        }
    }
    assert_eq!(refusals, 6, "5 refusals are tolerated, the 6th closes");
    assert_eq!(
        metric_with_label(broker.addr, "tickwire_closes_total", "code", "4005").await,
        1.0
    );
    assert_eq!(
        metric_with_label(
            broker.addr,
            "tickwire_protocol_errors_total",
            "code",
            "rate_limited"
        )
        .await,
        6.0
    );
    // A new connection starts with a full bucket.
    let mut client = RawClient::connect(broker.addr).await;
    client.publish_acked("t", b"calm").await;
    drop((flooder, client));
    broker.stop().await;
}

/// Sends one HTTP publish on a kept-alive connection and reads its answer:
/// the status and the body.
async fn http_publish_on(stream: &mut tokio::net::TcpStream, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /v1/publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let mut buf = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok)
                .unwrap_or(0);
            if rest.len() >= length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return (status, rest.to_owned());
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "connection closed early: {text}");
    }
}

#[tokio::test]
async fn http_publishes_on_one_connection_are_rate_limited_too() {
    let broker = TestBroker::start(|c| {
        c.publish_rate = 1;
        c.publish_burst = 1;
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(broker.addr)
        .await
        .expect("connect");
    let (status, body) = http_publish_on(&mut stream, b"one").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_publish_on(&mut stream, b"two").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("\"rate_limited\""), "{body}");
    // Another connection has its own allowance.
    let (status, body) = tickwire_e2e::http(broker.addr, "POST", "/v1/publish/t", b"x").await;
    assert_eq!(status, 200, "{body}");
    drop(stream);
    broker.stop().await;
}
