//! Retained values and history are bounded: clients may retain only where a
//! policy allows it, and everything kept counts against
//! `max_retained_bytes`.

use std::time::Duration;

use bytes::Bytes;
use tickwire_broker::config::TopicPolicy;
use tickwire_e2e::{RawClient, Received, TestBroker, http};
use tickwire_protocol::topic::Pattern;
use tickwire_protocol::{ClientMessage, ErrorCode};

async fn publish_retained(client: &mut RawClient, topic: &str, payload: &[u8]) -> Received {
    let id = client.next_id();
    client
        .send(&ClientMessage::Publish {
            id: Some(id),
            topic,
            payload: Bytes::copy_from_slice(payload),
            retain: true,
        })
        .await;
    client.recv().await
}

#[tokio::test]
async fn clients_retain_only_where_a_policy_allows_it() {
    let broker = TestBroker::start(|c| {
        c.client_retain_patterns = vec![Pattern::new("px.*").unwrap()];
        c.topic_policies = vec![
            TopicPolicy {
                client_retain: Some(false),
                ..TopicPolicy {
                    pattern: Pattern::new("px.secret").unwrap(),
                    ..TopicPolicy::fallback()
                }
            },
            TopicPolicy {
                client_retain: Some(true),
                ..TopicPolicy {
                    pattern: Pattern::new("cfg.>").unwrap(),
                    ..TopicPolicy::fallback()
                }
            },
        ];
    })
    .await;
    let mut client = RawClient::connect(broker.addr).await;
    for topic in ["other", "px.secret"] {
        match publish_retained(&mut client, topic, b"v").await {
            Received::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::InvalidOption);
                assert!(message.contains("--client-retain-patterns"), "{message}");
            }
            other => panic!("{topic}: expected ERROR, got {other:?}"),
        }
    }
    let (status, body) = http(broker.addr, "POST", "/v1/publish/other?retain=true", b"v").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"invalid_option\""), "{body}");
    // Nothing was published or kept.
    let info = client.subscribe("other").await;
    assert_eq!(info.seq, Some(0));

    assert!(matches!(
        publish_retained(&mut client, "px.a", b"1").await,
        Received::Published { .. }
    ));
    assert!(matches!(
        publish_retained(&mut client, "cfg.a.b", b"2").await,
        Received::Published { .. }
    ));
    let (status, body) = http(broker.addr, "POST", "/v1/publish/px.b?retain", b"3").await;
    assert_eq!(status, 200, "{body}");
    drop(client);
    broker.stop().await;
}

#[tokio::test]
async fn retained_and_history_bytes_are_bounded_and_given_back() {
    const PAYLOAD: usize = 1000;
    let broker = TestBroker::start(|c| {
        c.max_retained_bytes = 4 * PAYLOAD + 512;
        c.topic_idle_ttl = Duration::from_millis(100);
        c.topic_policies = vec![TopicPolicy {
            history_messages: 100,
            history_bytes: 1 << 20,
            history_age: Some(Duration::from_secs(1)),
            ..TopicPolicy {
                pattern: Pattern::new("hist.>").unwrap(),
                ..TopicPolicy::fallback()
            }
        }];
    })
    .await;
    let payload = vec![7u8; PAYLOAD];
    let mut client = RawClient::connect(broker.addr).await;
    client.publish_retained("r.1", &payload).await;
    client.publish_retained("r.2", &payload).await;
    let retained = broker.metric("tickwire_retained_bytes").await;
    assert!(retained >= 2.0 * PAYLOAD as f64, "{retained}");
    client.publish_acked("hist.a", &payload).await;
    client.publish_acked("hist.a", &payload).await;
    assert!(broker.metric("tickwire_retained_bytes").await > retained);

    // A third retained value does not fit: refused, nothing published.
    match publish_retained(&mut client, "r.3", &payload).await {
        Received::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::StorageFull);
            assert!(message.contains("--max-retained-bytes"), "{message}");
        }
        other => panic!("expected ERROR storage_full, got {other:?}"),
    }
    let (status, body) = http(broker.addr, "POST", "/v1/publish/r.4?retain", &payload).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("\"storage_full\""), "{body}");
    assert_eq!(client.subscribe("r.3").await.seq, Some(0));
    // Replacing a retained value with one of the same size still fits.
    client.publish_retained("r.1", &payload).await;

    // History a policy asks for evicts its own topic's oldest entries; a
    // new topic's first entry that cannot fit is dropped from history but
    // still delivered live.
    client.publish_acked("hist.a", &payload).await;
    let mut watcher = RawClient::connect(broker.addr).await;
    watcher.subscribe("hist.b").await;
    client.publish_acked("hist.b", &payload).await;
    assert!(matches!(
        watcher.recv().await,
        Received::Message { seq: 1, .. }
    ));
    broker
        .wait_metric("tickwire_retained_dropped_total", 1.0)
        .await;

    // Expired history gives its bytes back, and retains fit again.
    broker
        .wait_metric("tickwire_retained_bytes", retained)
        .await;
    watcher.publish_retained("r.3", &payload).await;
    drop((client, watcher));
    broker.stop().await;
}
