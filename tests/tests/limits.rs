//! Keepalive, connection limit and per-connection subscription limit.

use std::time::Duration;

use tickwire_e2e::{RawClient, Received, TestBroker, http, try_handshake};
use tickwire_protocol::ws::OpCode;
use tickwire_protocol::{ClientMessage, ErrorCode};

#[tokio::test]
async fn silent_peer_is_pinged_then_closed_and_answering_peer_stays() {
    let broker = TestBroker::start(|c| {
        c.keepalive_interval = Duration::from_millis(150);
        c.keepalive_timeout = Duration::from_millis(150);
    })
    .await;
    let mut silent = RawClient::connect(broker.addr).await;
    let mut alive = RawClient::connect(broker.addr).await;

    assert_eq!(alive.recv().await, Received::Ping);
    alive.send_frame(OpCode::Pong, b"").await;

    assert_eq!(silent.recv().await, Received::Ping);
    match silent.recv().await {
        Received::Close { code, .. } => assert_eq!(code, Some(4002)),
        other => panic!("expected keepalive close, got {other:?}"),
    }
    // The peer that answered is pinged again rather than closed.
    assert_eq!(alive.recv().await, Received::Ping);
    drop((silent, alive));
    broker.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503_but_probes_are_answered() {
    let broker = TestBroker::start(|c| c.max_connections = 2).await;
    let first = RawClient::connect(broker.addr).await;
    let second = RawClient::connect(broker.addr).await;
    let (status, text) = try_handshake(broker.addr, "").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("max_connections"), "{text}");
    // A full broker still answers probes and scrapes (on reserve places),
    // but takes no sessions or publishes on them.
    assert_eq!(http(broker.addr, "GET", "/healthz", b"").await.0, 200);
    assert_eq!(http(broker.addr, "GET", "/readyz", b"").await.0, 200);
    let (status, body) = http(broker.addr, "POST", "/v1/publish/a", b"x").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        broker.metric("tickwire_connections_rejected_total").await,
        2.0
    );
    drop(first);
    // The freed place becomes available once the broker has seen the close;
    // until then every attempt is refused (and counted).
    let mut refused = 2;
    let deadline = tokio::time::Instant::now() + tickwire_e2e::WAIT;
    while try_handshake(broker.addr, "").await.0 == 503 {
        refused += 1;
        assert!(tokio::time::Instant::now() < deadline, "place never freed");
    }
    drop(second);
    assert_eq!(
        broker.metric("tickwire_connections_rejected_total").await,
        f64::from(refused)
    );
    broker.stop().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let broker = TestBroker::start(|c| c.max_subscriptions = 2).await;
    let mut client = RawClient::connect(broker.addr).await;
    client.subscribe("a").await;
    client.subscribe("b.*").await;
    client
        .send(&ClientMessage::Subscribe {
            id: 99,
            pattern: "c",
            options: Default::default(),
        })
        .await;
    match client.recv().await {
        Received::Error { id, code, .. } => {
            assert_eq!((id, code), (Some(99), ErrorCode::TooManySubscriptions))
        }
        other => panic!("expected too_many_subscriptions, got {other:?}"),
    }
    client
        .send(&ClientMessage::Subscribe {
            id: 100,
            pattern: "a",
            options: Default::default(),
        })
        .await;
    match client.recv().await {
        Received::Error { id, code, .. } => {
            assert_eq!((id, code), (Some(100), ErrorCode::AlreadySubscribed))
        }
        other => panic!("expected already_subscribed, got {other:?}"),
    }
    drop(client);
    broker.stop().await;
}
