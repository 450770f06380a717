//! Subscribe, publish and unsubscribe round trips over real sockets.

use std::collections::HashMap;

use tickwire_e2e::{RawClient, Received, TestBroker, http};
use tickwire_protocol::{ClientMessage, ErrorCode};

fn message(topic: &str, seq: u64, payload: &[u8]) -> (String, u64, Vec<u8>) {
    (topic.to_owned(), seq, payload.to_vec())
}

async fn recv_message(client: &mut RawClient) -> (String, u64, Vec<u8>) {
    match client.recv().await {
        Received::Message {
            topic,
            seq,
            payload,
            ..
        } => (topic, seq, payload.to_vec()),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_round_trip() {
    let broker = TestBroker::start_default().await;
    let mut sub = RawClient::connect(broker.addr).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    sub.subscribe("stocks.AAPL").await;

    assert_eq!(publisher.publish_acked("stocks.AAPL", b"189.5").await, 1);
    assert_eq!(
        recv_message(&mut sub).await,
        message("stocks.AAPL", 1, b"189.5")
    );

    let id = sub.next_id();
    sub.send(&ClientMessage::Unsubscribe {
        id,
        pattern: "stocks.AAPL",
    })
    .await;
    assert_eq!(sub.recv().await, Received::Unsubscribed(id));

    assert_eq!(publisher.publish_acked("stocks.AAPL", b"190").await, 2);
    // Nothing more arrives for the unsubscribed topic: a ping round trip on
    // the same connection proves the queue is empty.
    let ping = sub.next_id();
    sub.send(&ClientMessage::Ping { id: ping }).await;
    assert_eq!(sub.recv().await, Received::Pong(ping));

    let again = sub.next_id();
    sub.send(&ClientMessage::Unsubscribe {
        id: again,
        pattern: "stocks.AAPL",
    })
    .await;
    match sub.recv().await {
        Received::Error { id, code, .. } => {
            assert_eq!(id, Some(again));
            assert_eq!(code, ErrorCode::NotSubscribed);
        }
        other => panic!("expected NOT_SUBSCRIBED, got {other:?}"),
    }
    drop((sub, publisher));
    broker.stop().await;
}

#[tokio::test]
async fn wildcards_match_and_overlaps_deliver_once() {
    let broker = TestBroker::start_default().await;
    let mut star = RawClient::connect(broker.addr).await;
    let mut rest = RawClient::connect(broker.addr).await;
    let mut overlap = RawClient::connect(broker.addr).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    star.subscribe("stocks.*").await;
    rest.subscribe("stocks.>").await;
    overlap.subscribe("stocks.*").await;
    overlap.subscribe("stocks.AAPL").await;
    overlap.subscribe("stocks.>").await;

    publisher.publish_acked("stocks.AAPL", b"a").await;
    publisher.publish_acked("stocks.AAPL.bid", b"b").await;
    publisher.publish_acked("stocks", b"c").await;
    publisher.publish_acked("fx.EURUSD", b"d").await;
    // A marker every subscriber matches ends each stream deterministically.
    publisher.publish_acked("stocks.END", b"end").await;

    assert_eq!(
        recv_message(&mut star).await,
        message("stocks.AAPL", 1, b"a")
    );
    assert_eq!(
        recv_message(&mut star).await,
        message("stocks.END", 1, b"end")
    );

    assert_eq!(
        recv_message(&mut rest).await,
        message("stocks.AAPL", 1, b"a")
    );
    assert_eq!(
        recv_message(&mut rest).await,
        message("stocks.AAPL.bid", 1, b"b")
    );
    assert_eq!(
        recv_message(&mut rest).await,
        message("stocks.END", 1, b"end")
    );

    // Three matching subscriptions, one delivery each.
    assert_eq!(
        recv_message(&mut overlap).await,
        message("stocks.AAPL", 1, b"a")
    );
    assert_eq!(
        recv_message(&mut overlap).await,
        message("stocks.AAPL.bid", 1, b"b")
    );
    assert_eq!(
        recv_message(&mut overlap).await,
        message("stocks.END", 1, b"end")
    );
    drop((star, rest, overlap, publisher));
    broker.stop().await;
}

#[tokio::test]
async fn fan_out_to_200_subscribers_preserves_order_without_loss() {
    const SUBSCRIBERS: usize = 200;
    const PER_PUBLISHER: u32 = 250;
    let broker = TestBroker::start_default().await;
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let mut client = RawClient::connect(broker.addr).await;
        client.subscribe("feed.ticks").await;
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for publisher_id in 0u8..2 {
        let addr = broker.addr;
        publishers.push(tokio::spawn(async move {
            let mut client = RawClient::connect(addr).await;
            for n in 0..PER_PUBLISHER {
                let mut payload = vec![publisher_id];
                payload.extend_from_slice(&n.to_be_bytes());
                client.publish("feed.ticks", &payload).await;
            }
            // The acked marker proves every earlier publish was processed.
            client.publish_acked("feed.done", b"").await;
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let total = 2 * PER_PUBLISHER as u64;
    let mut readers = Vec::new();
    for mut client in subscribers {
        readers.push(tokio::spawn(async move {
            let mut next = HashMap::from([(0u8, 0u32), (1u8, 0u32)]);
            for expected_seq in 1..=total {
                let (topic, seq, payload) = recv_message(&mut client).await;
                assert_eq!(topic, "feed.ticks");
                assert_eq!(seq, expected_seq, "sequence numbers are contiguous");
                let n = u32::from_be_bytes(payload[1..5].try_into().expect("4 bytes"));
                let want = next.get_mut(&payload[0]).expect("known publisher");
                assert_eq!(n, *want, "per-publisher order");
                *want += 1;
            }
        }));
    }
    for r in readers {
        r.await.expect("subscriber received everything in order");
    }
    assert_eq!(
        broker.metric("tickwire_deliveries_total").await,
        (total as usize * SUBSCRIBERS) as f64
    );
    broker.stop().await;
}

#[tokio::test]
async fn http_publish_reaches_websocket_subscribers() {
    let broker = TestBroker::start_default().await;
    let mut a = RawClient::connect(broker.addr).await;
    let mut b = RawClient::connect(broker.addr).await;
    a.subscribe("sensors.t1").await;
    b.subscribe("sensors.*").await;

    let (status, body) = http(broker.addr, "POST", "/v1/publish/sensors.t1", b"21.5C").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(json["seq"], 1);
    assert_eq!(json["deliveries"], 2);
    assert_eq!(json["topic"], "sensors.t1");
    assert_eq!(
        recv_message(&mut a).await,
        message("sensors.t1", 1, b"21.5C")
    );
    assert_eq!(
        recv_message(&mut b).await,
        message("sensors.t1", 1, b"21.5C")
    );

    let (status, body) = http(broker.addr, "POST", "/v1/publish/sensors.*", b"x").await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid_topic"), "{body}");
    drop((a, b));
    broker.stop().await;
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let broker = TestBroker::start_default().await;
    assert_eq!(http(broker.addr, "GET", "/healthz", b"").await.0, 200);
    assert_eq!(http(broker.addr, "GET", "/readyz", b"").await.0, 200);
    assert_eq!(http(broker.addr, "GET", "/nope", b"").await.0, 404);
    assert_eq!(http(broker.addr, "GET", "/v1/publish/a", b"").await.0, 405);
    broker.stop().await;
}

#[tokio::test]
async fn write_coalescing_delivers_everything_and_never_delays_replies() {
    const WINDOW: std::time::Duration = std::time::Duration::from_millis(200);
    const MESSAGES: u64 = 20;
    let broker = TestBroker::start(|c| c.write_coalesce = WINDOW).await;
    let mut sub = RawClient::connect(broker.addr).await;
    sub.subscribe("co.t").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let started = std::time::Instant::now();
    for n in 1..=MESSAGES {
        assert_eq!(publisher.publish_acked("co.t", &n.to_be_bytes()).await, n);
    }
    // Each acknowledgement would wait out a window if replies were coalesced.
    let elapsed = started.elapsed();
    assert!(
        elapsed < WINDOW * (MESSAGES as u32) / 2,
        "{MESSAGES} acknowledged publishes took {elapsed:?}"
    );
    for n in 1..=MESSAGES {
        assert_eq!(
            recv_message(&mut sub).await,
            message("co.t", n, &n.to_be_bytes())
        );
    }
    drop((sub, publisher));
    broker.stop().await;
}
