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
