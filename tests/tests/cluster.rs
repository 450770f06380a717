//! Several `tickwire serve --cluster` processes on one real `redis-server`
//! (see docs/cluster.md): a publish on any node reaches subscribers on
//! every node with one sequence number and in order; wildcards across
//! nodes; a node subscribes in Redis only to what its clients need; Redis
//! killed and restarted (publishes refused, readiness failing, then
//! recovery and resubscription). Every wait polls against a deadline.

use std::net::SocketAddr;
use std::process::Stdio;

use tickwire_e2e::pki::TempDir;
use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::{
    RawClient, Received, http, metric, metric_with_label as metric_labelled, poll_until,
    read_banner, tickwire_command,
};
use tickwire_protocol::message::Position;
use tickwire_protocol::{ClientMessage, ErrorCode, SubscribeOptions};
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
    let node = spawn_node(redis, &[]).await;
    wait_ready(node.addr, true).await;
    node
}

/// The topic policies of the resume tests: `hist.>` keeps 100 messages.
const HISTORY_POLICY: &str = "[[topic]]\npattern = \"hist.>\"\nhistory_messages = 100\n";

/// Starts a node on `redis` with the configuration file in `dir`, and
/// waits until it is ready.
async fn node_configured(redis: &RedisServer, dir: &TempDir) -> Node {
    let file = dir.path().join("tickwire.toml");
    let file = file.to_str().expect("a UTF-8 path");
    let node = spawn_node(redis, &["--config", file]).await;
    wait_ready(node.addr, true).await;
    node
}

/// A directory with a configuration file holding `toml`.
fn config_dir(toml: &str) -> TempDir {
    let dir = TempDir::new("cluster");
    std::fs::write(dir.path().join("tickwire.toml"), toml).expect("write the config file");
    dir
}

/// Starts a node on `redis` with `extra` arguments; returns once it
/// listens.
async fn spawn_node(redis: &RedisServer, extra: &[&str]) -> Node {
    let url = redis.url();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "error",
        "--cluster",
        &url,
    ];
    args.extend_from_slice(extra);
    let mut child = tickwire_command(&args)
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
    // The nodes keep serving their clients meanwhile; a resume cannot be
    // checked against Redis, so it is not claimed.
    publisher.subscribe("alerts.y").await;
    let position = Position {
        epoch: first_epoch,
        seq,
    };
    let mut resumer = RawClient::connect(b.addr).await;
    let info = resume(&mut resumer, "alerts.x", &[("alerts.x", position)]).await;
    assert_eq!(info.recovered, Some(false));
    assert_eq!(
        info.missed,
        vec![("alerts.x".to_owned(), position)],
        "node b's own last position"
    );

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
    let a = spawn_node(&redis, &[]).await;
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
    assert_eq!(
        metric_labelled(
            a.addr,
            "tickwire_backplane_refused_total",
            "reason",
            "unavailable"
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
    for url in [
        "redis://:hunter2@127.0.0.1:6379",
        "rediss+sentinel://:hunter2@127.0.0.1:26379/primary",
    ] {
        let output = tickwire_command(&["serve", "--help"])
            .env("TICKWIRE_CLUSTER", url)
            .output()
            .await
            .expect("run tickwire serve --help");
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("TICKWIRE_CLUSTER"), "{help}");
        assert!(!help.contains("hunter2"), "{help}");
    }
}

#[tokio::test]
async fn unsupported_cluster_urls_are_refused_at_start() {
    for (url, says) in [
        (
            "redis+cluster://127.0.0.1:6379",
            "Redis Cluster is not supported",
        ),
        ("http://127.0.0.1:6379", "not supported"),
        ("127.0.0.1:6379", "not a URL"),
        ("redis://127.0.0.1:notaport", "not a Redis URL"),
        (
            "redis+sentinel://127.0.0.1:26379",
            "master's name is missing",
        ),
    ] {
        let output = tickwire_command(&["serve", "--listen", "127.0.0.1:0", "--cluster", url])
            .output()
            .await
            .expect("run tickwire serve");
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
}

/// Subscribes to `pattern` with `since` and returns the reply's info.
async fn resume(
    client: &mut RawClient,
    pattern: &str,
    since: &[(&str, Position)],
) -> tickwire_protocol::message::SubscribedInfo {
    let options = SubscribeOptions::default()
        .since(since.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect());
    client.subscribe_with(pattern, options).await
}

#[tokio::test]
async fn a_client_resumes_on_another_node_without_gap_or_duplicate() {
    let redis = RedisServer::start().await;
    let dir = config_dir(HISTORY_POLICY);
    let (a, b) = (
        node_configured(&redis, &dir).await,
        node_configured(&redis, &dir).await,
    );
    // A client on node a sees messages 1..=10, then goes away.
    let mut client = RawClient::connect(a.addr).await;
    let info = client.subscribe("hist.feed").await;
    assert_eq!(info.seq, Some(0), "a new topic");
    let epoch = info.epoch.expect("an exact subscription has an epoch");
    publish_n(b.addr, "hist.feed", "m", 10).await;
    for seq in 1..=10 {
        assert_eq!(
            next_delivery(&mut client).await,
            ("hist.feed".to_owned(), epoch, seq, format!("m-{}", seq - 1))
        );
    }
    drop(client);

    // Meanwhile 11..=20 are published, then it comes back on node b.
    publish_n(a.addr, "hist.feed", "n", 10).await;
    let mut client = RawClient::connect(b.addr).await;
    let info = resume(
        &mut client,
        "hist.feed",
        &[("hist.feed", Position { epoch, seq: 10 })],
    )
    .await;
    assert_eq!(info.recovered, Some(true), "{info:?}");
    assert_eq!((info.epoch, info.seq), (Some(epoch), Some(20)));
    assert!(info.missed.is_empty());
    let mut publisher = RawClient::connect(a.addr).await;
    assert_eq!(publisher.publish_acked("hist.feed", b"live").await, 21);
    for seq in 11..=21 {
        let (_, e, got, _) = next_delivery(&mut client).await;
        assert_eq!(
            (e, got),
            (epoch, seq),
            "replay then live, no gap, no duplicate"
        );
    }

    // A wildcard resume on node a: the named topic from its position, a
    // topic it has no position for with all its history.
    publish_n(b.addr, "hist.other", "o", 3).await;
    let mut wild = RawClient::connect(a.addr).await;
    let info = resume(
        &mut wild,
        "hist.*",
        &[("hist.feed", Position { epoch, seq: 19 })],
    )
    .await;
    assert_eq!(info.recovered, Some(true), "{info:?}");
    let mut got: Vec<(String, u64)> = Vec::new();
    for _ in 0..5 {
        let (topic, _, seq, _) = next_delivery(&mut wild).await;
        got.push((topic, seq));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("hist.feed", 20),
            ("hist.feed", 21),
            ("hist.other", 1),
            ("hist.other", 2),
            ("hist.other", 3)
        ]
        .map(|(t, s)| (t.to_owned(), s))
    );

    // A position older than the history: recovered false, the current
    // position in `missed`, nothing replayed.
    publish_n(b.addr, "hist.feed", "p", 100).await;
    let mut late = RawClient::connect(a.addr).await;
    let info = resume(
        &mut late,
        "hist.feed",
        &[("hist.feed", Position { epoch, seq: 3 })],
    )
    .await;
    assert_eq!(info.recovered, Some(false));
    assert_eq!(
        info.missed,
        vec![("hist.feed".to_owned(), Position { epoch, seq: 121 })]
    );
    assert_eq!(publisher.publish_acked("hist.feed", b"after").await, 122);
    assert_eq!(next_delivery(&mut late).await.2, 122);

    // Redis lost everything: a new epoch; the old position is not resumed.
    let mut redis_client = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis_client)
        .await
        .expect("FLUSHALL");
    let mut after_loss = RawClient::connect(b.addr).await;
    let info = resume(
        &mut after_loss,
        "hist.feed",
        &[("hist.feed", Position { epoch, seq: 122 })],
    )
    .await;
    assert_eq!(info.recovered, Some(false));
    assert_ne!(info.epoch, Some(epoch));
    assert_eq!(info.seq, Some(0));

    // Redis forgot the scripts too (`SCRIPT FLUSH`): the nodes load theirs
    // again and publish each message once.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis_client)
        .await
        .expect("SCRIPT FLUSH");
    let mut publisher = RawClient::connect(a.addr).await;
    assert_eq!(publisher.publish_acked("hist.feed", b"reloaded").await, 1);
    assert_eq!(publisher.publish_acked("hist.feed", b"again").await, 2);
    let (_, new_epoch, seq, payload) = next_delivery(&mut after_loss).await;
    assert_eq!(
        (Some(new_epoch), seq, payload.as_str()),
        (info.epoch, 1, "reloaded")
    );
    assert_eq!(next_delivery(&mut after_loss).await.2, 2);
}

#[tokio::test]
async fn last_values_are_kept_in_redis_and_served_by_every_node() {
    let redis = RedisServer::start().await;
    let dir = config_dir("[[topic]]\npattern = \"cfg.>\"\nretain = true\n");
    let (a, b) = (
        node_configured(&redis, &dir).await,
        node_configured(&redis, &dir).await,
    );
    // Published on a, with no subscriber anywhere.
    let mut publisher = RawClient::connect(a.addr).await;
    publisher.publish_acked("cfg.alpha", b"a1").await;
    publisher.publish_acked("cfg.alpha", b"a2").await;
    publisher.publish_acked("cfg.beta", b"b1").await;

    let last = SubscribeOptions::default().last(true);
    let mut exact = RawClient::connect(b.addr).await;
    let info = exact.subscribe_with("cfg.alpha", last.clone()).await;
    assert_eq!(info.seq, Some(2));
    let (topic, _, seq, payload) = next_delivery(&mut exact).await;
    assert_eq!(
        (topic.as_str(), seq, payload.as_str()),
        ("cfg.alpha", 2, "a2")
    );

    let mut wildcard = RawClient::connect(b.addr).await;
    wildcard.subscribe_with("cfg.*", last).await;
    let mut got = [
        next_delivery(&mut wildcard).await,
        next_delivery(&mut wildcard).await,
    ];
    got.sort();
    let got: Vec<(&str, u64, &str)> = got
        .iter()
        .map(|(t, _, s, p)| (t.as_str(), *s, p.as_str()))
        .collect();
    assert_eq!(got, [("cfg.alpha", 2, "a2"), ("cfg.beta", 1, "b1")]);
    // Then live messages, on both.
    publisher.publish_acked("cfg.alpha", b"a3").await;
    assert_eq!(next_delivery(&mut exact).await.2, 3);
    assert_eq!(next_delivery(&mut wildcard).await.2, 3);
}

#[tokio::test]
async fn every_message_numbered_after_the_reply_reaches_the_new_subscriber() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut publisher = RawClient::connect(b.addr).await;
    for round in 0..20u64 {
        let topic = format!("window.t{round}");
        publisher.publish_acked(&topic, b"before").await;
        // No waiting for Redis here: the reply itself means subscribed.
        let mut client = RawClient::connect(a.addr).await;
        let info = client.subscribe(&topic).await;
        assert_eq!(info.seq, Some(1), "the reply has the cluster's position");
        assert_eq!(publisher.publish_acked(&topic, b"after").await, 2);
        let (_, epoch, seq, payload) = next_delivery(&mut client).await;
        assert_eq!(
            (Some(epoch), seq, payload.as_str()),
            (info.epoch, 2, "after")
        );
    }
}

#[tokio::test]
async fn a_subscribe_redis_does_not_answer_is_answered_from_the_node_in_time() {
    let redis = RedisServer::start().await;
    let dir = config_dir(HISTORY_POLICY);
    let (a, b) = (
        node_configured(&redis, &dir).await,
        node_configured(&redis, &dir).await,
    );
    let mut subscriber = RawClient::connect(a.addr).await;
    let info = subscriber.subscribe("hist.frozen").await;
    let epoch = info.epoch.expect("an epoch");
    let mut publisher = RawClient::connect(b.addr).await;
    assert_eq!(publisher.publish_acked("hist.frozen", b"one").await, 1);
    assert_eq!(next_delivery(&mut subscriber).await.2, 1);

    // Redis stops answering, connections open: the resume is answered
    // within the read's deadline, from what node a knows, not claimed.
    redis.freeze(true);
    let position = Position { epoch, seq: 1 };
    let mut resumer = RawClient::connect(a.addr).await;
    let started = std::time::Instant::now();
    let info = resume(&mut resumer, "hist.frozen", &[("hist.frozen", position)]).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(info.recovered, Some(false));
    assert_eq!(info.missed, vec![("hist.frozen".to_owned(), position)]);
    let answered = |by| {
        metric_labelled(
            a.addr,
            "tickwire_backplane_subscribes_total",
            "answered",
            by,
        )
    };
    assert_eq!(answered("node").await, 1.0);
    assert_eq!(answered("redis").await, 1.0, "the first subscribe");

    // Redis answers again: the node is ready and resumes are checked.
    redis.freeze(false);
    wait_ready(a.addr, true).await;
    let mut again = RawClient::connect(a.addr).await;
    let info = resume(&mut again, "hist.frozen", &[("hist.frozen", position)]).await;
    assert_eq!(info.recovered, Some(true), "{info:?}");
    assert_eq!(answered("redis").await, 2.0);
    assert_eq!(publisher.publish_acked("hist.frozen", b"two").await, 2);
    assert_eq!(next_delivery(&mut again).await.2, 2);
    assert_eq!(next_delivery(&mut subscriber).await.2, 2);
}
