//! Several `tickwire serve --cluster` processes on one real `redis-server`
//! (see docs/cluster.md): a publish on any node reaches subscribers on
//! every node with one sequence number and in order; wildcards across
//! nodes; a node subscribes in Redis only to what its clients need; Redis
//! killed and restarted (publishes refused, readiness failing, then
//! recovery and resubscription). Every wait polls against a deadline.

use std::net::SocketAddr;
use std::process::Stdio;

use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::{
    RawClient, Received, http, metric, metric_with_label as metric_labelled, poll_until,
    read_banner, tickwire_command,
};
use tickwire_protocol::{ClientMessage, ErrorCode};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// One `tickwire serve --cluster` process.
struct Node {
    addr: SocketAddr,
    _child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
}

/// Starts a node on `redis` and waits until it is ready.
async fn node(redis: &RedisServer) -> Node {
    let node = spawn_node(redis).await;
    wait_ready(node.addr, true).await;
    node
}

/// Starts a node on `redis`; returns once it listens.
async fn spawn_node(redis: &RedisServer) -> Node {
    let url = redis.url();
    let mut child = tickwire_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "error",
        "--cluster",
        &url,
    ])
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start tickwire serve --cluster");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (addr, _) = read_banner(&mut stdout).await;
    Node {
        addr,
        _child: child,
        _stdout: stdout,
    }
}

/// Waits until `/readyz` answers 200 (`ready`) or 503 (not ready);
/// returns its body.
async fn wait_ready(addr: SocketAddr, ready: bool) -> String {
    let want = if ready { 200 } else { 503 };
    poll_until(async || match http(addr, "GET", "/readyz", b"").await {
        (status, body) if status == want => Ok(body),
        (status, body) => Err(format!("/readyz of {addr}: {status} {body:?}, want {want}")),
    })
    .await
}

/// Waits until metric `name` of the node at `addr` is `want`.
async fn wait_metric(addr: SocketAddr, name: &str, want: f64) {
    poll_until(async || match metric(addr, name).await {
        got if got == want => Ok(()),
        got => Err(format!("{name} of {addr}: {got}, want {want}")),
    })
    .await
}

/// A delivery as a subscriber sees it: topic, epoch, seq, payload.
type Delivery = (String, u64, u64, String);

async fn next_delivery(client: &mut RawClient) -> Delivery {
    match client.recv().await {
        Received::Message {
            topic,
            epoch,
            seq,
            payload,
            ..
        } => (
            topic,
            epoch,
            seq,
            String::from_utf8_lossy(&payload).into_owned(),
        ),
        other => panic!("expected a MESSAGE, got {other:?}"),
    }
}

/// Publishes `TAG-0` … `TAG-(n-1)` on `topic` through the node at `addr`,
/// each acknowledged; returns (seq, payload) in publish order.
async fn publish_n(addr: SocketAddr, topic: &str, tag: &str, n: usize) -> Vec<(u64, String)> {
    let mut client = RawClient::connect(addr).await;
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let payload = format!("{tag}-{i}");
        let seq = client.publish_acked(topic, payload.as_bytes()).await;
        acks.push((seq, payload));
    }
    acks
}

/// Publishes on `topic` through `client` and expects the refusal `internal`
/// whose text contains `says`.
async fn expect_refused(client: &mut RawClient, topic: &str, says: &str) {
    let message = client.publish_refused(topic, ErrorCode::Internal).await;
    assert!(message.contains(says), "{message}");
}

async fn unsubscribe(client: &mut RawClient, pattern: &str) {
    let id = client.next_id();
    client
        .send(&ClientMessage::Unsubscribe { id, pattern })
        .await;
    match client.recv().await {
        Received::Unsubscribed(got) if got == id => {}
        other => panic!("expected UNSUBSCRIBED {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_publish_on_any_node_reaches_every_node_with_one_seq_in_order() {
    let redis = RedisServer::start().await;
    let (a, b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    let mut exact = RawClient::connect(b.addr).await;
    exact.subscribe("orders.eu").await;
    let mut wildcard = RawClient::connect(c.addr).await;
    wildcard.subscribe("orders.*").await;
    redis.wait_numsub("tickwire:{orders.eu}:msg", 1).await;
    redis.wait_numpat(1).await;

    // Two publishers on two nodes, on one topic at the same time.
    const EACH: usize = 25;
    let from_a = tokio::spawn(publish_n(a.addr, "orders.eu", "a", EACH));
    let from_c = tokio::spawn(publish_n(c.addr, "orders.eu", "c", EACH));
    let mut acks = from_a.await.expect("publisher on a");
    acks.extend(from_c.await.expect("publisher on c"));

    let mut on_b = Vec::new();
    let mut on_c = Vec::new();
    for _ in 0..2 * EACH {
        on_b.push(next_delivery(&mut exact).await);
        on_c.push(next_delivery(&mut wildcard).await);
    }
    // The same messages, with the same epoch and seq, in the same order on
    // both nodes.
    assert_eq!(on_b, on_c);
    let epoch = on_b[0].1;
    assert!(
        on_b.iter()
            .all(|(topic, e, _, _)| topic == "orders.eu" && *e == epoch)
    );
    let seqs: Vec<u64> = on_b.iter().map(|d| d.2).collect();
    assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>());
    // Each acknowledgement names the seq its message was delivered with.
    acks.sort();
    let delivered: Vec<(u64, String)> = on_b.iter().map(|d| (d.2, d.3.clone())).collect();
    assert_eq!(acks, delivered);
    // Each publisher's messages in the order it published them.
    for tag in ["a-", "c-"] {
        let order: Vec<&str> = on_b
            .iter()
            .map(|d| d.3.as_str())
            .filter(|p| p.starts_with(tag))
            .collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("{tag}{i}")).collect();
        assert_eq!(order, want);
    }

    // Another topic under the wildcard: only the wildcard subscriber gets
    // it. `orders.eu.x` is covered by the Redis glob but not by `orders.*`:
    // filtered out on node c.
    let mut publisher = RawClient::connect(b.addr).await;
    assert_eq!(publisher.publish_acked("orders.us", b"us-1").await, 1);
    assert_eq!(publisher.publish_acked("orders.eu.x", b"deep").await, 1);
    assert_eq!(publisher.publish_acked("orders.us", b"us-2").await, 2);
    assert_eq!(publisher.publish_acked("orders.eu", b"last").await, 51);
    let got: Vec<(String, u64, String)> = [
        next_delivery(&mut wildcard).await,
        next_delivery(&mut wildcard).await,
        next_delivery(&mut wildcard).await,
    ]
    .into_iter()
    .map(|(topic, _, seq, payload)| (topic, seq, payload))
    .collect();
    assert_eq!(
        got,
        [
            ("orders.us".to_owned(), 1, "us-1".to_owned()),
            ("orders.us".to_owned(), 2, "us-2".to_owned()),
            ("orders.eu".to_owned(), 51, "last".to_owned()),
        ]
    );
    let (topic, _, seq, _) = next_delivery(&mut exact).await;
    assert_eq!((topic.as_str(), seq), ("orders.eu", 51));
}

#[tokio::test]
async fn a_node_subscribes_in_redis_only_while_it_has_local_subscribers() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let channel = "tickwire:{rates.usd}:msg";
    assert!(redis.channels().await.is_empty());
    assert_eq!(redis.numpat().await, 0);

    // Two local subscribers of one topic: one Redis subscription.
    let mut first = RawClient::connect(a.addr).await;
    first.subscribe("rates.usd").await;
    let mut second = RawClient::connect(a.addr).await;
    second.subscribe("rates.usd").await;
    redis.wait_numsub(channel, 1).await;
    wait_metric(a.addr, "tickwire_backplane_channels", 1.0).await;
    assert_eq!(redis.channels().await, vec![channel.to_owned()]);

    let mut publisher = RawClient::connect(b.addr).await;
    let seq = publisher.publish_acked("rates.usd", b"1.08").await;
    assert_eq!(next_delivery(&mut first).await.2, seq);
    assert_eq!(next_delivery(&mut second).await.2, seq);
    // Node b has no subscriber: Redis sent it nothing.
    assert_eq!(
        metric(a.addr, "tickwire_backplane_received_total").await,
        1.0
    );
    assert_eq!(
        metric(b.addr, "tickwire_backplane_received_total").await,
        0.0
    );
    assert_eq!(metric(b.addr, "tickwire_backplane_channels").await, 0.0);

    // The subscription stays while one local subscriber is left, and goes
    // with the last (here: its connection closing).
    unsubscribe(&mut first, "rates.usd").await;
    let seq = publisher.publish_acked("rates.usd", b"1.09").await;
    assert_eq!(next_delivery(&mut second).await.2, seq);
    assert_eq!(redis.numsub(channel).await, 1);
    drop(second);
    redis.wait_numsub(channel, 0).await;
    wait_metric(a.addr, "tickwire_backplane_channels", 0.0).await;

    // A wildcard subscription is one pattern subscription in Redis.
    let mut wildcard = RawClient::connect(a.addr).await;
    wildcard.subscribe("rates.>").await;
    redis.wait_numpat(1).await;
    assert!(redis.channels().await.is_empty());
    let seq = publisher.publish_acked("rates.eur.spot", b"0.92").await;
    let (topic, _, got, _) = next_delivery(&mut wildcard).await;
    assert_eq!((topic.as_str(), got), ("rates.eur.spot", seq));
    unsubscribe(&mut wildcard, "rates.>").await;
    redis.wait_numpat(0).await;
}

#[tokio::test]
async fn while_redis_is_down_publishes_are_refused_and_readiness_fails_then_both_recover() {
    let mut redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let channel = "tickwire:{alerts.x}:msg";
    let mut subscriber = RawClient::connect(b.addr).await;
    subscriber.subscribe("alerts.x").await;
    redis.wait_numsub(channel, 1).await;
    let mut publisher = RawClient::connect(a.addr).await;
    assert_eq!(publisher.publish_acked("alerts.x", b"before").await, 1);
    let (_, first_epoch, seq, _) = next_delivery(&mut subscriber).await;
    assert_eq!(seq, 1);

    redis.kill();
    for node in [&a, &b] {
        let body = wait_ready(node.addr, false).await;
        assert_eq!(body, "cluster backplane unavailable (Redis)\n");
        assert_eq!(metric(node.addr, "tickwire_backplane_up").await, 0.0);
    }
    // Refused, not silently accepted: over WebSocket and HTTP.
    expect_refused(&mut publisher, "alerts.x", "cluster backplane (Redis)").await;
    let (status, body) = http(a.addr, "POST", "/v1/publish/alerts.x", b"lost").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cluster backplane (Redis)"), "{body}");
    // The nodes keep serving their clients meanwhile.
    publisher.subscribe("alerts.y").await;

    // Redis comes back empty: the nodes reconnect and subscribe again.
    redis.restart().await;
    wait_ready(a.addr, true).await;
    wait_ready(b.addr, true).await;
    redis.wait_numsub(channel, 1).await;
    redis.wait_numsub("tickwire:{alerts.y}:msg", 1).await;
    assert!(metric(b.addr, "tickwire_backplane_reconnects_total").await >= 1.0);
    // Redis lost the topic's position: a new epoch, seq from 1.
    assert_eq!(publisher.publish_acked("alerts.x", b"after").await, 1);
    let (_, epoch, seq, payload) = next_delivery(&mut subscriber).await;
    assert_eq!((seq, payload.as_str()), (1, "after"));
    assert_ne!(epoch, first_epoch);
}

#[tokio::test]
async fn a_node_started_without_redis_serves_refuses_publishes_and_joins_when_redis_comes() {
    let mut redis = RedisServer::start().await;
    redis.kill();
    let a = spawn_node(&redis).await;
    assert_eq!(
        wait_ready(a.addr, false).await,
        "cluster backplane unavailable (Redis)\n"
    );
    let mut subscriber = RawClient::connect(a.addr).await;
    subscriber.subscribe("boot.x").await;
    let mut publisher = RawClient::connect(a.addr).await;
    expect_refused(
        &mut publisher,
        "boot.x",
        "is unavailable; the message was not published",
    )
    .await;
    assert_eq!(
        metric_labelled(
            a.addr,
            "tickwire_backplane_publishes_total",
            "result",
            "failed"
        )
        .await,
        1.0
    );

    redis.restart().await;
    wait_ready(a.addr, true).await;
    redis.wait_numsub("tickwire:{boot.x}:msg", 1).await;
    assert_eq!(publisher.publish_acked("boot.x", b"up").await, 1);
    let (_, _, seq, payload) = next_delivery(&mut subscriber).await;
    assert_eq!((seq, payload.as_str()), (1, "up"));
}

#[tokio::test]
async fn help_does_not_show_the_cluster_urls_password() {
    let output = tickwire_command(&["serve", "--help"])
        .env("TICKWIRE_CLUSTER", "redis://:hunter2@127.0.0.1:6379")
        .output()
        .await
        .expect("run tickwire serve --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("TICKWIRE_CLUSTER"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}

#[tokio::test]
async fn unsupported_cluster_urls_are_refused_at_start() {
    for (url, says) in [
        ("rediss://127.0.0.1:6379", "not supported"),
        ("127.0.0.1:6379", "not supported"),
        ("redis://127.0.0.1:notaport", "not a Redis URL"),
    ] {
        let output = tickwire_command(&["serve", "--listen", "127.0.0.1:0", "--cluster", url])
            .output()
            .await
            .expect("run tickwire serve");
        assert!(!output.status.success(), "{url} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
}
