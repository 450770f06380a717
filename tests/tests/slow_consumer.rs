//! A subscriber that stops reading is disconnected as a slow consumer
//! (close 4001) while a fast subscriber on the same topic receives
//! everything.

use tickwire_e2e::{RawClient, Received, TestBroker};

const PAYLOAD: usize = 1024;
const BATCH: u64 = 100;
const MAX_MESSAGES: u64 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_is_disconnected_and_fast_reader_gets_everything() {
    let broker = TestBroker::start(|c| {
        c.outbound_queue_bytes = 512 * 1024;
        c.max_message_size = 64 * 1024;
        c.max_http_body = 64 * 1024;
        c.close_timeout = std::time::Duration::from_secs(10);
    })
    .await;
    let mut stalled = RawClient::connect(broker.addr).await;
    stalled.subscribe("ticks").await;
    let mut fast = RawClient::connect(broker.addr).await;
    fast.subscribe("ticks").await;
    let (published_tx, published_rx) = tokio::sync::oneshot::channel::<u64>();
    let fast_reader = tokio::spawn(async move {
        let mut received = 0u64;
        let mut published_rx = published_rx;
        let mut total = None;
        loop {
            if total == Some(received) {
                return received;
            }
            tokio::select! {
                n = &mut published_rx, if total.is_none() => total = Some(n.expect("publisher reports its count")),
                item = fast.recv() => match item {
                    Received::Message { seq, .. } => {
                        received += 1;
                        assert_eq!(seq, received, "fast subscriber sees every message in order");
                    }
                    other => panic!("fast subscriber got {other:?}"),
                },
            }
        }
    });

    // Publish until the broker reports the stalled reader as a slow consumer.
    let mut publisher = RawClient::connect(broker.addr).await;
    let payload = vec![7u8; PAYLOAD];
    let mut published = 0u64;
    while broker
        .metric("tickwire_slow_consumer_disconnects_total")
        .await
        == 0.0
    {
        assert!(
            published < MAX_MESSAGES,
            "no slow-consumer disconnect after {published} messages"
        );
        for _ in 0..BATCH - 1 {
            publisher.publish("ticks", &payload).await;
        }
        publisher.publish_acked("ticks", &payload).await;
        published += BATCH;
    }
    // A few more publishes after the disconnect still reach the fast reader.
    for _ in 0..BATCH {
        publisher.publish("ticks", &payload).await;
    }
    assert_eq!(
        publisher.publish_acked("ticks", &payload).await,
        published + BATCH + 1
    );
    published += BATCH + 1;
    published_tx.send(published).expect("reader waiting");
    assert_eq!(fast_reader.await.expect("fast reader"), published);

    // The stalled reader, reading again, finds an in-order prefix and then
    // the 4001 close frame.
    let mut seen = 0u64;
    loop {
        match stalled.recv().await {
            Received::Message { seq, .. } => {
                seen += 1;
                assert_eq!(seq, seen);
            }
            Received::Close { code, reason } => {
                assert_eq!(code, Some(4001), "{reason}");
                assert!(reason.contains("slow consumer"), "{reason}");
                break;
            }
            other => panic!("stalled reader got {other:?}"),
        }
    }
    assert!(
        seen < published,
        "the slow consumer was cut off before the end"
    );
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        1.0
    );
    drop((stalled, publisher));
    broker.stop().await;
}
