//! Connection loss: reconnect, resubscribe, offline publishing, keepalive.

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::{Answer, FakeBroker, Req, answer_upgrade, barrier, connect, fast, wait_state, within};
use tickwire_client::{
    Client, CloseCode, ConnectionState, Disconnect, Error, Keepalive, OfflinePolicy,
};
use tickwire_protocol::ServerMessage;

fn is_reconnecting(s: &ConnectionState) -> bool {
    matches!(s, ConnectionState::Reconnecting { .. })
}

#[tokio::test]
async fn reconnects_and_resubscribes_transparently() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, fast(&broker)).await;
    let mut subs = Vec::new();
    for pattern in ["stocks.*", "news.>"] {
        let (sub, _) = within("subscribe", async {
            tokio::join!(client.subscribe(pattern), conn.expect_subscribe(pattern))
        })
        .await;
        subs.push(sub.unwrap());
    }
    // A second local subscription on one pattern: still one SUBSCRIBE.
    subs.push(
        within("subscribe", client.subscribe("stocks.*"))
            .await
            .unwrap(),
    );
    conn.deliver("stocks.AAPL", 1, b"before").await;
    for i in [0, 2] {
        assert_eq!(within("delivery", subs[i].next()).await.unwrap().seq(), 1);
    }

    drop(conn);
    wait_state(&client, "reconnecting", |s| {
        matches!(
            s,
            ConnectionState::Reconnecting {
                attempt: 1,
                cause: Disconnect::ConnectionLost(_)
            }
        )
    })
    .await;
    assert!(!client.is_connected());

    let mut conn = broker.accept().await;
    let mut renewed = Vec::new();
    for _ in 0..2 {
        match within("resubscribe", conn.recv()).await {
            Req::Subscribe { id, pattern } => {
                conn.send(ServerMessage::Subscribed {
                    id,
                    info: Default::default(),
                })
                .await;
                renewed.push(pattern);
            }
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        }
    }
    renewed.sort();
    assert_eq!(renewed, ["news.>", "stocks.*"]);
    wait_state(&client, "connected", |s| s.is_connected()).await;

    conn.deliver("stocks.AAPL", 2, b"after").await;
    conn.deliver("news.eu.fr", 9, b"news").await;
    for i in [0, 2] {
        let msg = within("delivery after reconnect", subs[i].next())
            .await
            .unwrap();
        assert_eq!((msg.seq(), &msg.payload()[..]), (2, &b"after"[..]));
    }
    assert_eq!(within("news", subs[1].next()).await.unwrap().seq(), 9);
    // No third SUBSCRIBE (the twin shares stocks.*).
    barrier(&client, &mut conn).await;
}

#[tokio::test]
async fn broker_close_frame_is_echoed_and_surfaced() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, fast(&broker)).await;
    conn.send_raw(&tickwire_protocol::ws::server_close_frame(
        CloseCode::SlowConsumer,
    ))
    .await;
    assert_eq!(
        within("close echo", conn.recv()).await,
        Req::Close(Some(4001))
    );
    let mut state = client.state();
    let seen = within("reconnecting", state.wait_for(is_reconnecting))
        .await
        .unwrap()
        .clone();
    match seen {
        ConnectionState::Reconnecting { attempt, cause } => {
            assert_eq!(attempt, 1);
            assert_eq!(cause.close_code(), Some(CloseCode::SlowConsumer));
            assert_eq!(
                cause,
                Disconnect::ClosedByBroker {
                    code: Some(4001),
                    reason: CloseCode::SlowConsumer.reason().into()
                }
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let _conn = broker.accept().await;
    wait_state(&client, "connected", |s| s.is_connected()).await;
}

#[tokio::test]
async fn in_flight_ack_fails_with_connection_lost() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, fast(&broker)).await;
    let (res, ()) = within("publish_acked", async {
        tokio::join!(client.publish_bytes_acked("t", vec![1u8]), async {
            assert!(matches!(conn.recv().await, Req::Publish { .. }));
            drop(conn);
        })
    })
    .await;
    assert!(matches!(res, Err(Error::ConnectionLost)), "{res:?}");
}

#[tokio::test]
async fn offline_fail_policy_refuses_publishes() {
    let broker = FakeBroker::bind().await;
    let (client, conn) = connect(&broker, fast(&broker).offline_policy(OfflinePolicy::Fail)).await;
    drop(conn);
    wait_state(&client, "reconnecting", is_reconnecting).await;
    assert!(matches!(
        client.publish("t", &1).await,
        Err(Error::NotConnected)
    ));
    assert!(matches!(
        client.publish_acked("t", &1).await,
        Err(Error::NotConnected)
    ));
    assert!(matches!(client.ping().await, Err(Error::NotConnected)));

    let mut conn = broker.accept().await;
    wait_state(&client, "connected", |s| s.is_connected()).await;
    client.publish("t", &2).await.unwrap();
    assert!(matches!(conn.recv().await, Req::Publish { id: None, .. }));
}

#[tokio::test]
async fn offline_buffer_is_flushed_in_order_after_resubscribing() {
    let broker = FakeBroker::bind().await;
    let policy = OfflinePolicy::Buffer {
        max_messages: 3,
        max_bytes: 1 << 20,
    };
    let (client, mut conn) = connect(&broker, fast(&broker).offline_policy(policy)).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(client.subscribe("a.*"), conn.expect_subscribe("a.*"))
    })
    .await;
    let _sub = sub.unwrap();

    drop(conn);
    wait_state(&client, "reconnecting", is_reconnecting).await;
    client.publish("a.one", &1).await.expect("buffered");
    client
        .publish_bytes("a.two", vec![2u8])
        .await
        .expect("buffered");
    let acked = client.publish_acked("a.three", &3);
    tokio::pin!(acked);
    // One poll queues it behind the two others.
    assert!(futures::poll!(acked.as_mut()).is_pending());
    let err = client.publish("a.four", &4).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::OfflineBufferFull {
                max_messages: 3,
                ..
            }
        ),
        "{err:?}"
    );

    let mut conn = broker.accept().await;
    let (seq, ()) = within("flush", async {
        tokio::join!(acked, async {
            conn.expect_subscribe("a.*").await;
            let mut topics = Vec::new();
            for _ in 0..3 {
                match conn.recv().await {
                    Req::Publish { id, topic, .. } => {
                        if let Some(id) = id {
                            conn.send(ServerMessage::Published { id, seq: 7 }).await;
                        }
                        topics.push(topic);
                    }
                    other => panic!("expected PUBLISH, got {other:?}"),
                }
            }
            assert_eq!(topics, ["a.one", "a.two", "a.three"]);
        })
    })
    .await;
    assert_eq!(seq.unwrap(), 7);
    barrier(&client, &mut conn).await;
}

#[tokio::test]
async fn subscribe_while_reconnecting_completes_after_reconnect() {
    let broker = FakeBroker::bind().await;
    let (client, conn) = connect(&broker, fast(&broker)).await;
    drop(conn);
    wait_state(&client, "reconnecting", is_reconnecting).await;
    let (sub, mut conn) = within("subscribe", async {
        tokio::join!(client.subscribe("late.*"), async {
            let mut conn = broker.accept().await;
            conn.expect_subscribe("late.*").await;
            conn
        })
    })
    .await;
    let mut sub = sub.unwrap();
    conn.deliver("late.x", 1, b"").await;
    assert_eq!(
        within("delivery", sub.next()).await.unwrap().topic(),
        "late.x"
    );
}

#[tokio::test]
async fn refused_renewal_ends_the_subscription() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, fast(&broker)).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(client.subscribe("gone.*"), conn.expect_subscribe("gone.*"))
    })
    .await;
    let mut sub = sub.unwrap();
    drop(conn);
    let mut conn = broker.accept().await;
    let Req::Subscribe { id, .. } = within("resubscribe", conn.recv()).await else {
        panic!("expected SUBSCRIBE");
    };
    conn.send(ServerMessage::Error {
        id: Some(id),
        code: tickwire_client::ErrorCode::TooManySubscriptions,
        message: "full",
    })
    .await;
    assert!(within("end of stream", sub.next()).await.is_none());
    assert!(matches!(
        sub.error(),
        Some(Error::Broker {
            code: tickwire_client::ErrorCode::TooManySubscriptions,
            ..
        })
    ));
    assert!(client.is_connected());
}

#[tokio::test]
async fn no_reconnect_policy_closes_the_client() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, Client::builder(broker.url()).no_reconnect()).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(client.subscribe("x"), conn.expect_subscribe("x"))
    })
    .await;
    let mut sub = sub.unwrap();
    drop(conn);
    wait_state(&client, "closed", |s| s.is_closed()).await;
    assert!(matches!(
        &*client.state().borrow(),
        ConnectionState::Closed {
            cause: Some(Disconnect::ConnectionLost(_))
        }
    ));
    assert!(within("end of stream", sub.next()).await.is_none());
    assert!(matches!(sub.error(), Some(Error::Closed)));
    assert!(matches!(client.publish("x", &1).await, Err(Error::Closed)));
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let broker = FakeBroker::bind().await;
    let builder = Client::builder(broker.url()).reconnect(
        tickwire_client::ReconnectPolicy::default()
            .with_initial(Duration::from_millis(1))
            .with_max(Duration::from_millis(5))
            .with_max_attempts(Some(2)),
    );
    let (client, conn) = connect(&broker, builder).await;
    // Nothing listens any more: every attempt is refused.
    drop(conn);
    drop(broker);
    wait_state(&client, "closed", |s| s.is_closed()).await;
    match &*client.state().borrow() {
        ConnectionState::Closed {
            cause: Some(Disconnect::ConnectFailed(why)),
        } => assert!(why.contains("connection refused"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn keepalive_pings_when_idle_and_detects_a_dead_broker() {
    let broker = FakeBroker::bind().await;
    let builder = fast(&broker).keepalive(Keepalive::new(
        Duration::from_millis(50),
        Duration::from_millis(300),
    ));
    let (client, mut conn) = connect(&broker, builder).await;
    // The client pings when idle; this fake never answers.
    match within("a keepalive ping", conn.frame()).await {
        Some(tickwire_protocol::ws::Incoming::Ping(_)) => {}
        other => panic!("expected a keepalive ping, got {other:?}"),
    }
    wait_state(&client, "keepalive timeout", |s| {
        matches!(
            s,
            ConnectionState::Reconnecting {
                cause: Disconnect::KeepaliveTimeout,
                ..
            }
        )
    })
    .await;
    let _conn = broker.accept().await;
    wait_state(&client, "connected", |s| s.is_connected()).await;
    drop(conn);
}

#[tokio::test]
async fn retry_initial_connect_waits_for_the_broker() {
    let broker = FakeBroker::bind().await;
    // Accept only after the first attempt has timed out.
    let builder = fast(&broker)
        .connect_timeout(Duration::from_millis(100))
        .retry_initial_connect(true);
    let (client, _conn) = within("connect", async {
        tokio::join!(builder.connect(), async {
            // The first connection attempt is left unanswered until the
            // second one has been served.
            let first = broker.accept_tcp().await;
            let conn = broker.accept().await;
            drop(first);
            conn
        })
    })
    .await;
    let client = client.expect("connect after a retry");
    assert!(client.is_connected());
}

#[tokio::test]
async fn state_reports_each_step_of_a_reconnect() {
    let broker = FakeBroker::bind().await;
    let (client, conn) = connect(&broker, fast(&broker)).await;
    assert!(client.state().borrow().is_connected());
    drop(conn);
    wait_state(&client, "reconnecting after the loss", |s| {
        matches!(
            s,
            ConnectionState::Reconnecting {
                attempt: 1,
                cause: Disconnect::ConnectionLost(_)
            }
        )
    })
    .await;
    // The attempt is under way until the upgrade is answered.
    let tcp = broker.accept_tcp().await;
    wait_state(&client, "connecting", |s| *s == ConnectionState::Connecting).await;
    assert!(!client.is_connected());
    drop(tcp);
    wait_state(&client, "the second attempt", |s| {
        matches!(
            s,
            ConnectionState::Reconnecting {
                attempt: 2,
                cause: Disconnect::ConnectFailed(_)
            }
        )
    })
    .await;
    let tcp = broker.accept_tcp().await;
    wait_state(&client, "connecting again", |s| {
        *s == ConnectionState::Connecting
    })
    .await;
    let (mut conn, _) = answer_upgrade(Box::new(tcp), Answer::Upgrade).await;
    wait_state(&client, "connected", |s| s.is_connected()).await;
    barrier(&client, &mut conn).await;
}

#[tokio::test]
async fn a_later_message_stamped_earlier_is_delivered_after_a_reconnect() {
    const T: u64 = 1_700_000_000_000_000;
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, fast(&broker)).await;
    let (sub, _) = within("subscribe", async {
        tokio::join!(
            client.subscribe("clock.*"),
            conn.expect_subscribe("clock.*")
        )
    })
    .await;
    let mut sub = sub.unwrap();
    conn.deliver_at("clock.a", 1, T, b"first").await;
    assert_eq!(within("delivery", sub.next()).await.unwrap().seq(), 1);

    drop(conn);
    wait_state(&client, "reconnecting", is_reconnecting).await;
    let mut conn = broker.accept().await;
    conn.expect_subscribe("clock.*").await;
    // Another broker node, or a clock stepped back: message 2 is stamped a
    // second before message 1. The replay of message 1 is still a repeat.
    conn.deliver_at("clock.a", 1, T, b"first").await;
    conn.deliver_at("clock.a", 2, T - 1_000_000, b"second")
        .await;
    let msg = within("delivery", sub.next()).await.unwrap();
    assert_eq!((msg.seq(), msg.payload().as_ref()), (2, &b"second"[..]));
    assert!(msg.time() < std::time::UNIX_EPOCH + Duration::from_micros(T));
    barrier(&client, &mut conn).await;
    assert!(sub.try_recv().is_none());
    while let Some(event) = sub.next_event() {
        assert!(
            matches!(event, tickwire_client::SubscriptionEvent::Subscribed { .. }),
            "{event:?}"
        );
    }
}

/// The `client=` value of an upgrade request line.
fn client_param(head: &common::RequestHead) -> String {
    let target = head.request_line.split(' ').nth(1).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("client="))
        .expect("the upgrade carries client=")
        .to_owned()
}

#[tokio::test]
async fn final_close_codes_close_the_client_without_reconnecting() {
    for code in [4007u16, 4500, 4999] {
        let broker = FakeBroker::bind().await;
        let (client, mut conn) = connect(&broker, fast(&broker)).await;
        conn.send_raw(&tickwire_protocol::ws::server_frame(
            tickwire_protocol::ws::OpCode::Close,
            &tickwire_protocol::ws::close_body(code, "disconnected by the server"),
        ))
        .await;
        wait_state(&client, "closed", |s| s.is_closed()).await;
        match &*client.state().borrow() {
            ConnectionState::Closed { cause: Some(cause) } => {
                assert!(cause.is_final(), "{code}");
                assert_eq!(
                    cause,
                    &Disconnect::ClosedByBroker {
                        code: Some(code),
                        reason: "disconnected by the server".into()
                    }
                );
            }
            other => panic!("{code}: unexpected {other:?}"),
        }
        // Closed is final: the connection task is gone, nothing reconnects.
        assert!(matches!(client.ping().await, Err(Error::Closed)));
    }
}

#[tokio::test]
async fn application_codes_below_4500_reconnect_with_the_same_client_id() {
    let broker = FakeBroker::bind().await;
    let (connecting, first) = tokio::join!(
        fast(&broker).client_id("tab-1").connect(),
        broker.accept_with(Answer::Upgrade)
    );
    let client = connecting.expect("client connects");
    let (mut conn, head) = first;
    assert_eq!(client.client_id(), "tab-1");
    assert_eq!(client_param(&head), "tab-1");
    conn.send_raw(&tickwire_protocol::ws::server_frame(
        tickwire_protocol::ws::OpCode::Close,
        &tickwire_protocol::ws::close_body(4100, "moved"),
    ))
    .await;
    let (_conn, head) = within("reconnect", broker.accept_with(Answer::Upgrade)).await;
    assert_eq!(client_param(&head), "tab-1");
    wait_state(&client, "connected", |s| s.is_connected()).await;

    // Without one, an id is generated once per client and kept.
    let other = FakeBroker::bind().await;
    let (connecting, (mut conn, first)) =
        tokio::join!(fast(&other).connect(), other.accept_with(Answer::Upgrade));
    let generated = connecting.expect("client connects");
    assert_eq!(generated.client_id().len(), 22);
    assert_eq!(client_param(&first), generated.client_id());
    conn.send_raw(&tickwire_protocol::ws::server_close_frame(
        CloseCode::SlowConsumer,
    ))
    .await;
    let (_conn, again) = within("reconnect", other.accept_with(Answer::Upgrade)).await;
    assert_eq!(client_param(&again), generated.client_id());
}
