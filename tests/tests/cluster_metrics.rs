//! The backplane's degraded-mode metrics on real `redis-server` and
//! `tickwire serve --cluster` processes (docs/cluster.md, "Metrics"):
//! publishes refused by reason (`tickwire_backplane_refused_total`),
//! messages received from Redis and not delivered by reason
//! (`tickwire_backplane_dropped_total`), and Redis round trips
//! (`tickwire_backplane_redis_seconds`). Every wait polls against a
//! deadline.

use std::net::SocketAddr;

use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::{RawClient, Received, http, metric_with_label, poll_until};

/// Waits until `name{label="value"}` of the node at `addr` is `want`.
async fn wait_labelled(addr: SocketAddr, name: &str, label: &str, value: &str, want: f64) {
    poll_until(
        async || match metric_with_label(addr, name, label, value).await {
            got if got == want => Ok(()),
            got => Err(format!("{name}{{{label}={value:?}}}: {got}, want {want}")),
        },
    )
    .await
}

/// Publishes over HTTP on the node at `addr`; the status and body.
async fn publish(addr: SocketAddr, topic: &str, payload: &[u8]) -> (u16, String) {
    http(addr, "POST", &format!("/v1/publish/{topic}"), payload).await
}

#[tokio::test]
async fn refusals_are_counted_by_reason_and_publishes_and_pings_are_timed() {
    let mut redis = RedisServer::start().await;
    let a = ClusterNode::ready(&redis.url(), &[]).await;
    let refused = async |reason: &str| {
        metric_with_label(a.addr, "tickwire_backplane_refused_total", "reason", reason).await
    };
    assert_eq!(publish(a.addr, "m.x", b"ok").await.0, 200);
    assert_eq!(
        metric_with_label(
            a.addr,
            "tickwire_backplane_redis_seconds_count",
            "op",
            "publish"
        )
        .await,
        1.0
    );
    // An idle connection is checked with PING, timed too.
    poll_until(async || {
        match metric_with_label(
            a.addr,
            "tickwire_backplane_redis_seconds_count",
            "op",
            "ping",
        )
        .await
        {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("ping round trips: {n}")),
        }
    })
    .await;

    // Redis holds writes (scripts too) for longer than the node waits:
    // the publish is not confirmed (it may still happen afterwards).
    let mut admin = redis.connection().await;
    let _: () = ::redis::cmd("CLIENT")
        .arg(&["PAUSE", "2500", "WRITE"])
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let (status, body) = publish(a.addr, "m.x", b"held").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("did not confirm"), "{body}");
    assert_eq!(refused("unconfirmed").await, 1.0);
    a.wait_ready(true).await;

    // Redis gone: refused at once as unavailable.
    redis.kill();
    a.wait_ready(false).await;
    for _ in 0..3 {
        assert_eq!(publish(a.addr, "m.x", b"lost").await.0, 503);
    }
    assert_eq!(refused("unavailable").await, 3.0);
    assert_eq!(
        (refused("busy").await, refused("refused").await),
        (0.0, 0.0)
    );
}

#[tokio::test]
async fn messages_from_redis_that_cannot_be_delivered_are_counted_by_reason() {
    let redis = RedisServer::start().await;
    let a = ClusterNode::ready(&redis.url(), &["--max-topics", "1"]).await;
    let b = ClusterNode::ready(&redis.url(), &[]).await;
    let mut subscriber = RawClient::connect(a.addr).await;
    subscriber.subscribe("reg.>").await;
    redis.wait_numpat(1).await;

    // Something else publishes on tickwire's channel: not a tickwire
    // message, dropped.
    let mut other = redis.connection().await;
    let _: u64 = ::redis::cmd("PUBLISH")
        .arg(&["tickwire:{reg.x}:msg", "not tickwire"])
        .query_async(&mut other)
        .await
        .expect("PUBLISH");
    wait_labelled(
        a.addr,
        "tickwire_backplane_dropped_total",
        "reason",
        "malformed",
        1.0,
    )
    .await;

    // Node a may track one topic: the second topic's message is refused
    // by its registry, counted, and the first still flows.
    assert_eq!(publish(b.addr, "reg.a", b"first").await.0, 200);
    assert_eq!(publish(b.addr, "reg.b", b"second").await.0, 200);
    assert_eq!(publish(b.addr, "reg.a", b"third").await.0, 200);
    for want in ["first", "third"] {
        match subscriber.recv().await {
            Received::Message { topic, payload, .. } => {
                assert_eq!(
                    (topic.as_str(), payload.as_ref()),
                    ("reg.a", want.as_bytes())
                )
            }
            other => panic!("expected a MESSAGE, got {other:?}"),
        }
    }
    wait_labelled(
        a.addr,
        "tickwire_backplane_dropped_total",
        "reason",
        "registry",
        1.0,
    )
    .await;
    assert_eq!(
        metric_with_label(
            a.addr,
            "tickwire_backplane_dropped_total",
            "reason",
            "malformed"
        )
        .await,
        1.0
    );
}
