//! Guarantees docs/protocol.md states in words: the epoch in every delivery,
//! a PING round trip as a flush barrier, the HTTP `retain` parameter and the
//! error id of partly readable frames.

use tickwire_e2e::{RawClient, Received, TestBroker, http};
use tickwire_protocol::message::SubscribeOptions;
use tickwire_protocol::{ClientMessage, ErrorCode};

#[tokio::test]
async fn every_delivery_carries_the_epoch_subscribed_reported() {
    let broker = TestBroker::start_default().await;
    let mut exact = RawClient::connect(broker.addr).await;
    let mut wildcard = RawClient::connect(broker.addr).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let info = exact.subscribe("stocks.AAPL").await;
    let epoch = info.epoch.expect("an exact subscription reports its epoch");
    assert_ne!(epoch, 0, "epoch 0 is never a real epoch");
    wildcard.subscribe("stocks.*").await;

    for want in 1..=3 {
        assert_eq!(publisher.publish_acked("stocks.AAPL", b"x").await, want);
        for client in [&mut exact, &mut wildcard] {
            match client.recv().await {
                Received::Message { epoch: e, seq, .. } => assert_eq!((e, seq), (epoch, want)),
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }
    drop((exact, wildcard, publisher));
    broker.stop().await;
}

#[tokio::test]
async fn a_ping_round_trip_follows_every_acknowledged_publish() {
    const TOPICS: u64 = 5;
    const PER_TOPIC: u64 = 200;
    let broker = TestBroker::start_default().await;
    let mut sub = RawClient::connect(broker.addr).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    sub.subscribe("flush.>").await;
    for seq in 1..=PER_TOPIC {
        for topic in 0..TOPICS {
            let topic = format!("flush.t{topic}");
            assert_eq!(publisher.publish_acked(&topic, b"payload").await, seq);
        }
    }

    let ping = sub.next_id();
    sub.send(&ClientMessage::Ping { id: ping }).await;
    let mut before_pong = 0;
    loop {
        match sub.recv().await {
            Received::Message { .. } => before_pong += 1,
            Received::Pong(id) if id == ping => break,
            other => panic!("expected messages then PONG {ping}, got {other:?}"),
        }
    }
    assert_eq!(before_pong, TOPICS * PER_TOPIC);
    drop((sub, publisher));
    broker.stop().await;
}

#[tokio::test]
async fn http_retain_parameter_accepts_only_documented_values() {
    let broker = TestBroker::start_default().await;
    for (query, retained) in [
        ("retain", true),
        ("retain=true", true),
        ("retain=1", true),
        ("retain=true&retain=0", false),
        ("retain=false", false),
    ] {
        let topic = format!("r.{}", query.replace(['=', '&'], "_"));
        let path = format!("/v1/publish/{topic}?{query}");
        let (status, body) = http(broker.addr, "POST", &path, b"v").await;
        assert_eq!(status, 200, "{query}: {body}");
        let mut sub = RawClient::connect(broker.addr).await;
        let options = SubscribeOptions::default().last(true);
        sub.subscribe_with(&topic, options).await;
        let ping = sub.next_id();
        sub.send(&ClientMessage::Ping { id: ping }).await;
        let got_last = match sub.recv().await {
            Received::Message { payload, .. } => {
                assert_eq!(&payload[..], b"v");
                assert_eq!(sub.recv().await, Received::Pong(ping));
                true
            }
            Received::Pong(id) if id == ping => false,
            other => panic!("{query}: unexpected {other:?}"),
        };
        assert_eq!(got_last, retained, "{query}");
        drop(sub);
    }
    for query in ["retain=yes", "foo=1", "retain=true&x"] {
        let path = format!("/v1/publish/r.refused?{query}");
        let (status, body) = http(broker.addr, "POST", &path, b"v").await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("invalid_option"), "{query}: {body}");
    }
    let mut sub = RawClient::connect(broker.addr).await;
    let info = sub.subscribe("r.refused").await;
    assert_eq!(
        info.seq,
        Some(0),
        "a refused HTTP publish publishes nothing"
    );
    drop(sub);
    broker.stop().await;
}

#[tokio::test]
async fn error_replies_name_the_id_whatever_follows_it() {
    let broker = TestBroker::start_default().await;
    let mut client = RawClient::connect(broker.addr).await;
    // [4, 77] followed by a stray byte, [3, 78] (too short), and a PUBLISH
    // array header announcing 4 elements cut after its id.
    for (frame, id) in [
        (&b"\x92\x04\x4d\xc0"[..], 77),
        (&b"\x92\x03\x4e"[..], 78),
        (&b"\x94\x03\x4f"[..], 79),
    ] {
        client
            .send_frame(tickwire_protocol::ws::OpCode::Binary, frame)
            .await;
        match client.recv().await {
            Received::Error { id: got, code, .. } => {
                assert_eq!((got, code), (Some(id), ErrorCode::Malformed))
            }
            other => panic!("expected ERROR {id}, got {other:?}"),
        }
    }
    drop(client);
    broker.stop().await;
}
