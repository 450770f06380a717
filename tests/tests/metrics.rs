//! `/metrics` counts match what the test did.

use tickwire_e2e::{RawClient, Received, TestBroker, http, metric_with_label};

#[tokio::test]
async fn metrics_count_what_happened() {
    let broker = TestBroker::start_default().await;
    let mut a = RawClient::connect(broker.addr).await;
    let mut b = RawClient::connect(broker.addr).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    a.subscribe("m.one").await;
    b.subscribe("m.*").await;
    b.subscribe("m.one").await;

    for _ in 0..10 {
        publisher.publish("m.one", b"0123456789").await;
    }
    publisher.publish_acked("m.two", b"x").await;
    let (status, _) = http(broker.addr, "POST", "/v1/publish/m.two", b"y").await;
    assert_eq!(status, 200);
    for _ in 0..10 {
        assert!(matches!(a.recv().await, Received::Message { .. }));
    }
    for _ in 0..12 {
        assert!(matches!(b.recv().await, Received::Message { .. }));
    }

    // m.one: 10 publishes x 2 connections (b once despite two matches);
    // m.two: 2 publishes x 1 connection.
    assert_eq!(
        broker.metric("tickwire_messages_published_total").await,
        12.0
    );
    assert_eq!(broker.metric("tickwire_deliveries_total").await, 22.0);
    assert_eq!(broker.metric("tickwire_subscriptions").await, 3.0);
    assert_eq!(broker.metric("tickwire_topics").await, 2.0);
    assert_eq!(broker.metric("tickwire_websockets").await, 3.0);
    // Three WebSockets, one HTTP publish, and the /metrics connections.
    assert!(broker.metric("tickwire_connections_accepted_total").await >= 4.0);
    assert!(broker.metric("tickwire_bytes_in_total").await > 10.0 * 10.0);
    assert!(broker.metric("tickwire_bytes_out_total").await > 22.0 * 10.0);
    assert!(
        broker
            .metric("tickwire_publish_to_write_seconds_count")
            .await
            >= 1.0
    );
    assert_eq!(
        metric_with_label(
            broker.addr,
            "tickwire_protocol_errors_total",
            "code",
            "malformed"
        )
        .await,
        0.0
    );

    drop(a);
    broker.wait_metric("tickwire_subscriptions", 2.0).await;
    broker.wait_metric("tickwire_websockets", 2.0).await;
    drop((b, publisher));
    broker.wait_metric("tickwire_subscriptions", 0.0).await;
    broker.stop().await;
}

#[tokio::test]
async fn connection_tasks_are_counted_and_return_to_baseline() {
    use tickwire_protocol::ws::OpCode;
    let broker = TestBroker::start_default().await;
    // The scrape's own connection is the only one: one task.
    broker.wait_metric("tickwire_connection_tasks", 1.0).await;

    // A WebSocket runs two tasks, its reader and its writer; its HTTP task
    // ends with the upgrade.
    let mut closing = RawClient::connect(broker.addr).await;
    let mut dropped = RawClient::connect(broker.addr).await;
    closing.subscribe("tasks").await;
    dropped.subscribe("tasks.*").await;
    broker.wait_metric("tickwire_connection_tasks", 5.0).await;
    // An idle HTTP connection: one task.
    let idle = tokio::net::TcpStream::connect(broker.addr)
        .await
        .expect("connect");
    broker.wait_metric("tickwire_connection_tasks", 6.0).await;

    // Every way out gives its tasks back: a close handshake, a dropped
    // socket, an HTTP connection closed before its first request.
    closing
        .send_frame(OpCode::Close, &1000u16.to_be_bytes())
        .await;
    assert!(matches!(
        closing.recv_close().await,
        Received::Close {
            code: Some(1000),
            ..
        }
    ));
    drop((closing, dropped, idle));
    broker.wait_metric("tickwire_connection_tasks", 1.0).await;
    broker.wait_metric("tickwire_websockets", 0.0).await;
    broker.wait_metric("tickwire_connections", 1.0).await;
    broker.stop().await;
}
