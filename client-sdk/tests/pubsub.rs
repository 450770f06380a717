//! Subscribing, delivering and publishing against the fake broker.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use common::{FakeBroker, Req, barrier, connect, within};
use tickwire_client::{Client, ConnectionState, Error, ErrorCode, SubscribeOptions};
use tickwire_protocol::ServerMessage;
use tickwire_protocol::message::Position;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    price: f64,
}

#[tokio::test]
async fn subscribe_then_message_is_delivered() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;

    let (sub, id) = within("subscribe", async {
        tokio::join!(
            client.subscribe("stocks.*"),
            conn.expect_subscribe("stocks.*")
        )
    })
    .await;
    let mut sub = sub.expect("subscribe");
    assert!(id > 0);
    assert_eq!(sub.pattern(), "stocks.*");

    let quote = Quote {
        symbol: "AAPL".into(),
        price: 189.5,
    };
    let payload = rmp_serde::to_vec_named(&quote).unwrap();
    conn.deliver("stocks.AAPL", 7, &payload).await;

    let msg = within("delivery", sub.next()).await.expect("a message");
    assert_eq!(msg.topic(), "stocks.AAPL");
    assert_eq!(msg.seq(), 7);
    assert_eq!(msg.time_micros(), 1_700_000_000_000_007);
    assert_eq!(
        msg.time(),
        UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_007)
    );
    assert_eq!(&msg.payload()[..], &payload[..]);
    assert_eq!(msg.decode::<Quote>().unwrap(), quote);
    assert_eq!(msg.skipped(), 0);
    assert!(matches!(msg.decode::<u32>(), Err(Error::Decode(_))));
}

#[tokio::test]
async fn overlapping_subscriptions_each_get_the_single_delivery() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;

    let mut subs = Vec::new();
    for pattern in ["stocks.*", "stocks.>", "stocks.AAPL", "news.*"] {
        let (sub, _) = within("subscribe", async {
            tokio::join!(client.subscribe(pattern), conn.expect_subscribe(pattern))
        })
        .await;
        subs.push(sub.expect("subscribe"));
    }
    // The same pattern again: shared locally, nothing sent to the broker.
    let twin = within("second subscribe", client.subscribe("stocks.AAPL"))
        .await
        .expect("second subscribe to the same pattern");
    subs.push(twin);

    conn.deliver("stocks.AAPL", 1, b"x").await;
    // The barrier's PING must be the next request: no second SUBSCRIBE.
    barrier(&client, &mut conn).await;

    for sub in &mut subs[..3] {
        let msg = sub.try_recv().expect("matching subscription got it");
        assert_eq!((msg.topic(), msg.seq()), ("stocks.AAPL", 1));
        assert!(sub.try_recv().is_none(), "delivered once per subscription");
    }
    assert!(subs[3].try_recv().is_none(), "news.* does not match");
    let twin = &mut subs[4];
    assert_eq!(twin.try_recv().expect("twin got it").seq(), 1);
    assert!(twin.try_recv().is_none());
}

#[tokio::test]
async fn dropping_the_last_subscription_unsubscribes() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;

    let (a, _) = within("subscribe", async {
        tokio::join!(client.subscribe("a.>"), conn.expect_subscribe("a.>"))
    })
    .await;
    let a = a.unwrap();
    let b = within("subscribe", client.subscribe("a.>")).await.unwrap();

    drop(a);
    // Another local subscription remains: nothing is sent.
    barrier(&client, &mut conn).await;

    drop(b);
    match within("unsubscribe", conn.recv()).await {
        Req::Unsubscribe { id, pattern } => {
            assert_eq!(pattern, "a.>");
            conn.send(ServerMessage::Unsubscribed { id }).await;
        }
        other => panic!("expected UNSUBSCRIBE, got {other:?}"),
    }
    // A late message for the old pattern is dropped quietly, and subscribing
    // again sends a fresh SUBSCRIBE.
    conn.deliver("a.b", 1, b"late").await;
    let (c, _) = within("resubscribe", async {
        tokio::join!(client.subscribe("a.>"), conn.expect_subscribe("a.>"))
    })
    .await;
    let mut c = c.unwrap();
    conn.deliver("a.b", 2, b"new").await;
    assert_eq!(within("delivery", c.next()).await.unwrap().seq(), 2);
}

#[tokio::test]
async fn publish_acked_returns_the_seq() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    let quote = Quote {
        symbol: "MSFT".into(),
        price: 420.0,
    };
    let (seq, ()) = within("publish_acked", async {
        tokio::join!(client.publish_acked("stocks.MSFT", &quote), async {
            match conn.recv().await {
                Req::Publish {
                    id: Some(id),
                    topic,
                    payload,
                } => {
                    assert_eq!(topic, "stocks.MSFT");
                    assert_eq!(rmp_serde::from_slice::<Quote>(&payload).unwrap(), quote);
                    conn.send(ServerMessage::Published { id, seq: 42 }).await;
                }
                other => panic!("expected an acknowledged PUBLISH, got {other:?}"),
            }
        })
    })
    .await;
    assert_eq!(seq.unwrap(), 42);

    // Fire-and-forget, typed and raw.
    client.publish("stocks.MSFT", &quote).await.unwrap();
    client
        .publish_bytes("raw.bytes", &b"\x00\x01"[..])
        .await
        .unwrap();
    match conn.recv().await {
        Req::Publish {
            id: None,
            topic,
            payload,
        } => {
            assert_eq!(topic, "stocks.MSFT");
            assert_eq!(rmp_serde::from_slice::<Quote>(&payload).unwrap(), quote);
        }
        other => panic!("expected a fire-and-forget PUBLISH, got {other:?}"),
    }
    assert_eq!(
        conn.recv().await,
        Req::Publish {
            id: None,
            topic: "raw.bytes".into(),
            payload: bytes::Bytes::from_static(b"\x00\x01"),
        }
    );

    let (seq, ()) = within("publish_bytes_acked", async {
        tokio::join!(
            client.publish_bytes_acked("raw.bytes", vec![9u8; 3]),
            async {
                let Req::Publish { id: Some(id), .. } = conn.recv().await else {
                    panic!("expected an acknowledged PUBLISH");
                };
                conn.send(ServerMessage::Published { id, seq: 1 << 40 })
                    .await;
            }
        )
    })
    .await;
    assert_eq!(seq.unwrap(), 1 << 40);
}

#[tokio::test]
async fn invalid_topics_and_patterns_fail_locally() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    for topic in ["stocks.*", "", "a..b", "a b"] {
        let err = client
            .publish("x", &1)
            .await
            .map(|_| ())
            .and(client.publish(topic, &1).await);
        assert!(
            matches!(&err, Err(Error::InvalidTopic { topic: t, .. }) if t == topic),
            "{topic:?}: {err:?}"
        );
        let err = client.publish_bytes_acked(topic, vec![]).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTopic { .. }), "{err:?}");
    }
    for pattern in ["a.>.b", "", "a.b*"] {
        let err = client.subscribe(pattern).await.unwrap_err();
        assert!(matches!(err, Error::InvalidPattern { .. }), "{err:?}");
    }
    // Only the valid publishes reached the broker.
    for _ in 0..4 {
        assert!(matches!(conn.recv().await, Req::Publish { topic, .. } if topic == "x"));
    }
    barrier(&client, &mut conn).await;
}

#[tokio::test]
async fn error_replies_surface_as_broker_errors() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;

    let (res, ()) = within("subscribe", async {
        tokio::join!(client.subscribe("stocks.*"), async {
            let Req::Subscribe { id, .. } = conn.recv().await else {
                panic!("expected SUBSCRIBE");
            };
            conn.send(ServerMessage::Error {
                id: Some(id),
                code: ErrorCode::TooManySubscriptions,
                message: "too many subscriptions",
            })
            .await;
        })
    })
    .await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, Error::Broker { code: ErrorCode::TooManySubscriptions, message } if message == "too many subscriptions"),
        "{err:?}"
    );
    assert_eq!(err.broker_code(), Some(ErrorCode::TooManySubscriptions));

    let (res, ()) = within("publish_acked", async {
        tokio::join!(client.publish_bytes_acked("t", vec![0u8; 4]), async {
            let Req::Publish { id: Some(id), .. } = conn.recv().await else {
                panic!("expected PUBLISH");
            };
            conn.send(ServerMessage::Error {
                id: Some(id),
                code: ErrorCode::PayloadTooLarge,
                message: "too large",
            })
            .await;
        })
    })
    .await;
    assert!(matches!(
        res,
        Err(Error::Broker {
            code: ErrorCode::PayloadTooLarge,
            ..
        })
    ));

    // An error code newer than this client.
    let (res, ()) = within("ping", async {
        tokio::join!(client.ping(), async {
            let Req::Ping { id } = conn.recv().await else {
                panic!("expected PING");
            };
            let mut body = Vec::new();
            tickwire_protocol::msgpack::write_array_len(&mut body, 4);
            tickwire_protocol::msgpack::write_u64(&mut body, 15);
            tickwire_protocol::msgpack::write_u64(&mut body, id);
            tickwire_protocol::msgpack::write_u64(&mut body, 77);
            tickwire_protocol::msgpack::write_str(&mut body, "from the future");
            conn.send_raw(&tickwire_protocol::ws::binary_frame(&body))
                .await;
        })
    })
    .await;
    assert!(
        matches!(&res, Err(Error::Broker { code: ErrorCode::Unknown(77), message }) if message == "from the future"),
        "{res:?}"
    );

    // An ERROR without id, garbage and unknown message types are ignored;
    // the connection keeps working.
    conn.send(ServerMessage::Error {
        id: None,
        code: ErrorCode::Malformed,
        message: "could not decode",
    })
    .await;
    conn.send_raw(&tickwire_protocol::ws::binary_frame(b"\x92\x63\x01"))
        .await;
    conn.send_raw(&tickwire_protocol::ws::binary_frame(b"not msgpack"))
        .await;
    barrier(&client, &mut conn).await;
    assert!(client.is_connected());
}

#[tokio::test]
async fn request_timeout_applies() {
    let broker = FakeBroker::bind().await;
    let builder = Client::builder(broker.url()).request_timeout(Duration::from_millis(200));
    let (client, mut conn) = connect(&broker, builder).await;
    let (res, req) = within("subscribe", async {
        tokio::join!(client.subscribe("quiet.*"), conn.recv())
    })
    .await;
    assert!(matches!(req, Req::Subscribe { .. }));
    assert!(
        matches!(
            res,
            Err(Error::Timeout {
                operation: "subscribe",
                ..
            })
        ),
        "{res:?}"
    );
    let (res, req) = within("publish_acked", async {
        tokio::join!(client.publish_bytes_acked("t", vec![]), conn.recv())
    })
    .await;
    assert!(matches!(req, Req::Publish { .. }));
    assert!(matches!(
        res,
        Err(Error::Timeout {
            operation: "publish",
            ..
        })
    ));
}

#[tokio::test]
async fn slow_subscription_drops_and_reports_without_blocking_others() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    let (slow, _) = within("subscribe", async {
        tokio::join!(
            client.subscribe_with("t.*", SubscribeOptions::new().capacity(2)),
            conn.expect_subscribe("t.*")
        )
    })
    .await;
    let mut slow = slow.unwrap();
    let (fast, _) = within("subscribe", async {
        tokio::join!(client.subscribe("t.>"), conn.expect_subscribe("t.>"))
    })
    .await;
    let mut fast = fast.unwrap();

    for seq in 1..=5 {
        conn.deliver("t.x", seq, b"m").await;
    }
    barrier(&client, &mut conn).await;
    assert_eq!(slow.dropped(), 3);
    assert_eq!(slow.try_recv().unwrap().seq(), 1);
    assert_eq!(slow.try_recv().unwrap().seq(), 2);
    assert!(slow.try_recv().is_none());
    for seq in 1..=5 {
        let msg = fast.try_recv().unwrap();
        assert_eq!((msg.seq(), msg.skipped()), (seq, 0));
    }

    conn.deliver("t.x", 6, b"m").await;
    let msg = within("delivery after lag", slow.next()).await.unwrap();
    assert_eq!(msg.seq(), 6);
    assert_eq!(msg.skipped(), 3);
    assert_eq!(slow.dropped(), 3);
    assert!(client.is_connected());
}

#[tokio::test]
async fn broker_pings_are_answered_with_pongs() {
    let broker = FakeBroker::bind().await;
    let (_client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    conn.send_raw(&tickwire_protocol::ws::server_frame(
        tickwire_protocol::ws::OpCode::Ping,
        b"are you there",
    ))
    .await;
    loop {
        match conn.frame().await.expect("connection open") {
            tickwire_protocol::ws::Incoming::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            tickwire_protocol::ws::Incoming::Ping(_) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn fragmented_broker_messages_are_reassembled() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(client.subscribe("f"), conn.expect_subscribe("f"))
    })
    .await;
    let mut sub = sub.unwrap();
    let frame = tickwire_protocol::message::encode_delivery_frame(
        "f",
        Position {
            epoch: common::FAKE_EPOCH,
            seq: 3,
        },
        0,
        b"fragmented payload",
    );
    let body = &frame[2..];
    let (first, second) = body.split_at(5);
    let mut raw = vec![0x02, first.len() as u8];
    raw.extend_from_slice(first);
    raw.extend_from_slice(&[0x89, 0x00]); // interleaved ping
    raw.extend_from_slice(&[0x80, second.len() as u8]);
    raw.extend_from_slice(second);
    conn.send_raw(&raw).await;
    let msg = within("reassembled delivery", sub.next()).await.unwrap();
    assert_eq!(&msg.payload()[..], b"fragmented payload");
}

#[tokio::test]
async fn framing_violations_close_with_their_code_and_reconnect() {
    let cases: [(&str, &[u8], u16); 3] = [
        ("a masked frame", &[0x82, 0x81, 1, 2, 3, 4, 0], 1002),
        // The protocol is binary only.
        ("a text message", &[0x81, 0x02, b'h', b'i'], 1003),
        // Refused at the second fragment, before any final frame.
        (
            "invalid UTF-8 text",
            &[0x01, 0x01, 0xce, 0x00, 0x01, 0xff],
            1007,
        ),
    ];
    for (what, frame, code) in cases {
        let broker = FakeBroker::bind().await;
        let (client, mut conn) = connect(&broker, common::fast(&broker)).await;
        conn.send_raw(frame).await;
        assert_eq!(
            within("close", conn.recv()).await,
            Req::Close(Some(code)),
            "{what}"
        );
        common::wait_state(&client, "reconnecting", |s| {
            matches!(
                s,
                ConnectionState::Reconnecting {
                    cause: tickwire_client::Disconnect::ProtocolError(_),
                    ..
                }
            )
        })
        .await;
        let _conn = broker.accept().await;
        common::wait_state(&client, "connected", |s| s.is_connected()).await;
    }
}

#[tokio::test]
async fn client_close_is_orderly() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(client.subscribe("x"), conn.expect_subscribe("x"))
    })
    .await;
    let mut sub = sub.unwrap();
    client.publish("x", &"last words").await.unwrap();
    let other_handle = client.clone();

    let (closed, ()) = within("close", async {
        tokio::join!(client.close(), async {
            // Everything queued before close() comes first.
            assert!(matches!(conn.recv().await, Req::Publish { topic, .. } if topic == "x"));
            assert_eq!(conn.recv().await, Req::Close(Some(1000)));
            conn.send_raw(&tickwire_protocol::ws::server_frame(
                tickwire_protocol::ws::OpCode::Close,
                &tickwire_protocol::ws::close_body(1000, ""),
            ))
            .await;
            assert_eq!(
                conn.try_recv().await,
                None,
                "client closes the TCP connection"
            );
        })
    })
    .await;
    closed.unwrap();
    assert_eq!(
        *client.state().borrow(),
        ConnectionState::Closed { cause: None }
    );
    assert!(within("end of stream", sub.next()).await.is_none());
    assert!(matches!(sub.error(), Some(Error::Closed)));
    assert!(matches!(
        other_handle.publish("x", &1).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        other_handle.subscribe("y").await,
        Err(Error::Closed)
    ));
    assert!(matches!(other_handle.ping().await, Err(Error::Closed)));
    other_handle.close().await.expect("closing twice is fine");
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(client.subscribe("x"), conn.expect_subscribe("x"))
    })
    .await;
    let sub = sub.unwrap();
    drop(client);
    // The subscription keeps the connection alive...
    conn.deliver("x", 1, b"still here").await;
    let mut sub = sub;
    assert_eq!(within("delivery", sub.next()).await.unwrap().seq(), 1);
    // ...until it goes too: UNSUBSCRIBE, then the close frame.
    drop(sub);
    assert!(matches!(conn.recv().await, Req::Unsubscribe { .. }));
    assert_eq!(conn.recv().await, Req::Close(Some(1000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_deliveries_does_not_starve_requests() {
    use tokio::io::AsyncWriteExt;

    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url())).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(
            client.subscribe_with("flood", SubscribeOptions::new().capacity(16)),
            conn.expect_subscribe("flood")
        )
    })
    .await;
    let sub = sub.unwrap();
    let (mut reader, mut writer) = conn.split();
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = stop.clone();
    // Deliveries as fast as the socket takes them; replies slip in between.
    let flood = tokio::spawn(async move {
        let mut batch = Vec::new();
        for seq in 0..256 {
            batch.extend_from_slice(&tickwire_protocol::message::encode_delivery_frame(
                "flood",
                Position {
                    epoch: common::FAKE_EPOCH,
                    seq,
                },
                0,
                &[7u8; 200],
            ));
        }
        let mut batches = 0u64;
        while !flooding.load(std::sync::atomic::Ordering::Relaxed) && batches < 100_000 {
            while let Ok(reply) = reply_rx.try_recv() {
                writer.write_all(&reply).await.unwrap();
            }
            if writer.write_all(&batch).await.is_err() {
                break;
            }
            batches += 1;
        }
        batches
    });
    for round in 0..3u64 {
        let (seq, ()) = within("publish_acked during a flood", async {
            tokio::join!(client.publish_bytes_acked("out", vec![1u8]), async {
                let frame = reader.message().await;
                match tickwire_protocol::ClientMessage::decode(&frame).unwrap() {
                    tickwire_protocol::ClientMessage::Publish { id: Some(id), .. } => {
                        let reply = ServerMessage::Published { id, seq: round }.to_frame();
                        reply_tx.send(reply).await.unwrap();
                    }
                    other => panic!("expected PUBLISH, got {other:?}"),
                }
            })
        })
        .await;
        assert_eq!(seq.unwrap(), round);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = within("flood end", flood).await.unwrap();
    assert!(batches > 0);
    assert!(
        sub.dropped() > 0,
        "the small subscription buffer overflowed"
    );
}
