//! Failure modes of cluster mode (docs/cluster.md, "Failure modes"), with
//! real processes on loopback: one real `redis-server`, several `tickwire
//! serve --cluster` processes ([`ClusterNode`]) and a TCP [`Proxy`] that stands
//! for the network or for a plain load balancer.
//!
//! * a silent network partition between one node and Redis;
//! * one node's Redis connections reset;
//! * a node killed with SIGKILL under traffic, its subscribers resuming on
//!   another node;
//! * a rolling restart of every node under live traffic.
//!
//! Every wait is event-based (a reply, a delivery, `/readyz`, a progress
//! counter) and bounded by [`WAIT`] ([`DETECTION`] for the partition); the
//! only sleeps pace the publishers and space a client's reconnects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tickwire_client::{Client, ErrorCode, OfflinePolicy, Subscription, SubscriptionEvent};
use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::proxy::Proxy;
use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::{RawClient, Received, WAIT, http, metric, metric_with_label, poll_until, sdk};
use tickwire_protocol::message::Position;
use tickwire_protocol::{ClientMessage, SubscribeOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest a node may take to notice a silent partition from Redis: a
/// `PING` after 3 s idle, 2 s for its answer, and a wide margin for a
/// loaded machine.
const DETECTION: Duration = Duration::from_secs(15);

/// The Redis at `redis` as a socket address, for the proxy.
fn redis_addr(redis: &RedisServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], redis.port))
}

/// A configuration file giving topics under `feed.` a history large enough
/// for every test here (`[[topic]]`, docs/configuration.md); its path.
fn history_config(test: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cluster-faults-{}-{test}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[topic]]\npattern = \"feed.>\"\nhistory_messages = 10000\nhistory_bytes = \"4MiB\"\n",
    )
    .expect("write the configuration file");
    path
}

/// The next delivery of a raw client: (seq, payload).
async fn next_delivery(client: &mut RawClient) -> (u64, String) {
    match client.recv().await {
        Received::Message { seq, payload, .. } => {
            (seq, String::from_utf8_lossy(&payload).into_owned())
        }
        other => panic!("expected a MESSAGE, got {other:?}"),
    }
}

/// Sends an application `PING` and expects its `PONG`: the node still
/// serves this connection.
async fn expect_pong(client: &mut RawClient) {
    let id = client.next_id();
    client.send(&ClientMessage::Ping { id }).await;
    match client.recv().await {
        Received::Pong(got) if got == id => {}
        other => panic!("expected PONG {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_partitioned_from_redis_fails_readiness_and_refuses_publishes_then_recovers() {
    let redis = RedisServer::start().await;
    // Node a reaches Redis through the proxy (its network), b directly.
    let network = Proxy::start(&[redis_addr(&redis)]).await;
    let a = ClusterNode::ready(&network.redis_url(), &[]).await;
    let b = ClusterNode::ready(&redis.url(), &[]).await;
    assert!(
        network.forwarded() >= 2,
        "a's Redis connections go through the proxy"
    );

    let (topic, channel) = ("part.x", "tickwire:{part.x}:msg");
    let mut on_a = RawClient::connect(a.addr).await;
    on_a.subscribe(topic).await;
    let mut on_b = RawClient::connect(b.addr).await;
    on_b.subscribe(topic).await;
    redis.wait_numsub(channel, 2).await;
    let mut publisher_a = RawClient::connect(a.addr).await;
    let mut publisher_b = RawClient::connect(b.addr).await;
    assert_eq!(publisher_a.publish_acked(topic, b"1").await, 1);
    assert_eq!(publisher_b.publish_acked(topic, b"2").await, 2);
    for subscriber in [&mut on_a, &mut on_b] {
        assert_eq!(next_delivery(subscriber).await.0, 1);
        assert_eq!(next_delivery(subscriber).await.0, 2);
    }

    // The partition: no byte between a and Redis, no reset either. Node a
    // finds out by itself (PING after 3 s idle, 2 s to answer).
    network.blackhole();
    assert_eq!(
        a.wait_ready_within(false, DETECTION).await,
        "cluster backplane unavailable (Redis)\n"
    );
    assert_eq!(metric(a.addr, "tickwire_backplane_up").await, 0.0);
    assert_eq!(metric(a.addr, "tickwire_ready").await, 0.0);
    // Node b is not affected: ready, publishing, delivering.
    assert_eq!(b.wait_ready(true).await, "ready\n");
    assert_eq!(metric(b.addr, "tickwire_backplane_up").await, 1.0);
    assert_eq!(metric(b.addr, "tickwire_ready").await, 1.0);
    assert_eq!(publisher_b.publish_acked(topic, b"3").await, 3);
    assert_eq!(next_delivery(&mut on_b).await, (3, "3".to_owned()));
    // Node a refuses publishes (WebSocket and HTTP) and keeps serving its
    // connections.
    let refusal = publisher_a
        .publish_refused(topic, ErrorCode::Internal)
        .await;
    assert!(refusal.contains("is unavailable"), "{refusal}");
    let (status, body) = http(a.addr, "POST", "/v1/publish/part.x", b"lost").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cluster backplane (Redis)"), "{body}");
    expect_pong(&mut on_a).await;
    let failed = metric_with_label(
        a.addr,
        "tickwire_backplane_publishes_total",
        "result",
        "failed",
    );
    assert_eq!(failed.await, 2.0);
    // Its attempts to reconnect through the partition fail: still not ready.
    assert_eq!(metric(a.addr, "tickwire_backplane_up").await, 0.0);
    a.wait_ready(false).await;

    // The partition heals: a reconnects and subscribes again.
    network.restore();
    a.wait_ready(true).await;
    redis.wait_numsub(channel, 2).await;
    assert!(metric(a.addr, "tickwire_backplane_reconnects_total").await >= 1.0);
    // Delivery across nodes works both ways again. Node a never received
    // seq 3 (published during the partition, no history for this topic):
    // its subscriber sees the jump, never a renumbered message.
    assert_eq!(publisher_b.publish_acked(topic, b"4").await, 4);
    assert_eq!(publisher_a.publish_acked(topic, b"5").await, 5);
    assert_eq!(next_delivery(&mut on_a).await, (4, "4".to_owned()));
    assert_eq!(next_delivery(&mut on_a).await, (5, "5".to_owned()));
    assert_eq!(next_delivery(&mut on_b).await, (4, "4".to_owned()));
    assert_eq!(next_delivery(&mut on_b).await, (5, "5".to_owned()));
}

#[tokio::test]
async fn a_node_whose_redis_connections_are_reset_reconnects_and_resubscribes_at_once() {
    let redis = RedisServer::start().await;
    let network = Proxy::start(&[redis_addr(&redis)]).await;
    let a = ClusterNode::ready(&network.redis_url(), &[]).await;
    let b = ClusterNode::ready(&redis.url(), &[]).await;
    let (topic, channel) = ("reset.x", "tickwire:{reset.x}:msg");
    let mut on_a = RawClient::connect(a.addr).await;
    on_a.subscribe(topic).await;
    redis.wait_numsub(channel, 1).await;
    let mut publisher_b = RawClient::connect(b.addr).await;
    assert_eq!(publisher_b.publish_acked(topic, b"1").await, 1);
    assert_eq!(next_delivery(&mut on_a).await, (1, "1".to_owned()));

    // Every connection between a and Redis is closed; new ones get
    // through. Node a sees the close at once (no PING needed) and makes
    // both connections again.
    network.cut();
    poll_until(
        async || match metric(a.addr, "tickwire_backplane_reconnects_total").await {
            n if n >= 2.0 => Ok(()),
            n => Err(format!("{n} reconnects of a, want both connections")),
        },
    )
    .await;
    a.wait_ready(true).await;
    redis.wait_numsub(channel, 1).await;
    let mut publisher_a = RawClient::connect(a.addr).await;
    assert_eq!(publisher_a.publish_acked(topic, b"2").await, 2);
    assert_eq!(next_delivery(&mut on_a).await, (2, "2".to_owned()));
}

/// One delivery as a subscriber saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    epoch: u64,
    seq: u64,
    payload: String,
}

/// Waits until the counter behind `progress` reaches `at_least`.
async fn wait_progress(progress: &mut watch::Receiver<u64>, at_least: u64, what: &str) {
    tokio::time::timeout(WAIT, progress.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("{what}: not {at_least} within {WAIT:?}"))
        .unwrap_or_else(|_| panic!("{what}: the task ended before {at_least}"));
}

/// A running SDK subscriber: its deliveries until seq `until` (sent
/// later), then its events.
struct SdkSubscriber {
    received: watch::Receiver<u64>,
    task: JoinHandle<(Vec<Delivered>, Vec<SubscriptionEvent>)>,
}

impl SdkSubscriber {
    /// Connects an SDK client to `url`, subscribes to `pattern` (one
    /// topic, or a wildcard that covers only one) and collects its
    /// deliveries until one with seq `until` or beyond.
    async fn start(url: &str, pattern: &str, until: watch::Receiver<u64>) -> Self {
        let client = sdk::client(url).await;
        let sub = client
            .subscribe(pattern)
            .await
            .expect("subscribe through the SDK");
        let (received, progress) = watch::channel(0);
        let task = tokio::spawn(sdk_collect(client, sub, until, received));
        SdkSubscriber {
            received: progress,
            task,
        }
    }
}

async fn sdk_collect(
    _client: Client,
    mut sub: Subscription,
    mut until: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
) -> (Vec<Delivered>, Vec<SubscriptionEvent>) {
    let mut got: Vec<Delivered> = Vec::new();
    while got.last().map_or(0, |d| d.seq) < *until.borrow_and_update() {
        tokio::select! {
            message = sdk::recv(&mut sub) => {
                got.push(Delivered {
                    epoch: message.epoch(),
                    seq: message.seq(),
                    payload: String::from_utf8_lossy(message.payload()).into_owned(),
                });
                progress.send_replace(got.len() as u64);
            }
            // `recv` is cancel-safe: nothing is lost by looking again.
            Ok(()) = until.changed() => {}
        }
    }
    let events = std::iter::from_fn(|| sub.next_event()).collect();
    (got, events)
}

/// Checks that `got` is every seq 1..=`last` exactly once, in order, in one
/// epoch; the failure names the missing, repeated and reordered seqs.
fn assert_gapless(who: &str, got: &[Delivered], last: u64) {
    let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
    if seqs != (1..=last).collect::<Vec<_>>() {
        let missing: Vec<u64> = (1..=last).filter(|s| !seqs.contains(s)).collect();
        let mut repeated: Vec<u64> = seqs
            .iter()
            .enumerate()
            .filter(|(i, s)| seqs[..*i].contains(s))
            .map(|(_, s)| *s)
            .collect();
        repeated.dedup();
        let reordered: Vec<(u64, u64)> = seqs
            .windows(2)
            .filter(|w| w[1] <= w[0])
            .map(|w| (w[0], w[1]))
            .collect();
        panic!(
            "{who}: not seq 1..={last} exactly once in order: missing {missing:?}, \
             repeated {repeated:?}, out of order (after, got) {reordered:?}, \
             {} deliveries",
            seqs.len()
        );
    }
    let epoch = got.first().map(|d| d.epoch);
    assert!(
        got.iter().all(|d| Some(d.epoch) == epoch),
        "{who}: more than one epoch: {got:?}"
    );
}

/// Checks that a resuming SDK subscription was renewed at least once and
/// never reported a loss.
fn assert_resumed(who: &str, events: &[SubscriptionEvent]) {
    assert!(
        events.iter().all(|e| !matches!(
            e,
            SubscriptionEvent::Gap { .. } | SubscriptionEvent::RecoveryIncomplete { .. }
        )),
        "{who}: reported a loss: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SubscriptionEvent::Resumed)),
        "{who}: never resumed on another connection: {events:?}"
    );
}

/// A running raw subscriber of one topic through a load balancer: when
/// its connection ends it connects again and subscribes with `since` its
/// last position, as a client without the SDK does. Nothing here drops a
/// repeat: what it collects is what the nodes sent.
struct RawSubscriber {
    received: watch::Receiver<u64>,
    /// Its deliveries until seq `until` and, for each time it resumed, the
    /// number of deliveries before (so a failure can say where).
    task: JoinHandle<(Vec<Delivered>, Vec<usize>)>,
}

impl RawSubscriber {
    /// Connects through `lb`, subscribes to `topic` and collects its
    /// deliveries until one with seq `until` or beyond.
    async fn start(lb: SocketAddr, topic: &'static str, until: watch::Receiver<u64>) -> Self {
        let mut client = RawClient::connect(lb).await;
        client.subscribe(topic).await;
        let (progress, received) = watch::channel(0);
        let task = tokio::spawn(raw_collect(client, lb, topic, until, progress));
        RawSubscriber { received, task }
    }

    /// Waits for its deliveries and checks them as [`assert_gapless`]
    /// does, and that it resumed at least once.
    async fn assert_gapless(self, last: u64) -> Vec<Delivered> {
        let (got, resumed) = self.task.await.expect("the raw subscriber");
        let who = format!("raw subscriber (resumed after deliveries {resumed:?})");
        assert_gapless(&who, &got, last);
        assert!(!resumed.is_empty(), "the raw subscriber never resumed");
        got
    }
}

async fn raw_collect(
    mut client: RawClient,
    lb: SocketAddr,
    topic: &str,
    mut until: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
) -> (Vec<Delivered>, Vec<usize>) {
    let mut got: Vec<Delivered> = Vec::new();
    let mut resumed = Vec::new();
    while got.last().map_or(0, |d| d.seq) < *until.borrow_and_update() {
        let received = tokio::select! {
            // `recv` is cancel-safe: bytes read stay in the client's buffer.
            received = client.recv() => received,
            Ok(()) = until.changed() => continue,
        };
        match received {
            Received::Message {
                epoch,
                seq,
                payload,
                ..
            } => {
                got.push(Delivered {
                    epoch,
                    seq,
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                });
                progress.send_replace(got.len() as u64);
            }
            Received::Ping => {}
            Received::Eof | Received::Close { .. } => {
                let Some(at) = got.last() else {
                    panic!("raw subscriber: disconnected before its first delivery");
                };
                let since = vec![(
                    topic.to_owned(),
                    Position {
                        epoch: at.epoch,
                        seq: at.seq,
                    },
                )];
                client = reconnect(lb).await;
                let info = client
                    .subscribe_with(topic, SubscribeOptions::default().since(since))
                    .await;
                assert_eq!(
                    info.recovered,
                    Some(true),
                    "raw subscriber: resume after seq {} not recovered: {info:?}",
                    at.seq
                );
                resumed.push(got.len());
            }
            other => panic!("raw subscriber: unexpected {other:?}"),
        }
    }
    (got, resumed)
}

/// A raw client connected through the load balancer at `lb`, retried
/// every 20 ms within [`WAIT`]: a connection may reach a node that is
/// dying (accepted by its kernel, then reset) before the balancer skips it.
async fn reconnect(lb: SocketAddr) -> RawClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match RawClient::try_connect(lb).await {
            Ok(client) => return client,
            Err(why) => assert!(
                tokio::time::Instant::now() < deadline,
                "no connection through the load balancer within {WAIT:?}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `feed-0` … `feed-(n-1)` on `topic` through `client`, one
/// acknowledged publish every `pace`; reports the acknowledged count in
/// `acked`. Before publish `hold_at` it waits until `go` is true, so
/// that an event of the test falls within the stream. Returns (seq,
/// payload) in publish order.
async fn publish_paced(
    mut client: RawClient,
    topic: &str,
    (n, pace): (u64, Duration),
    (hold_at, mut go): (u64, watch::Receiver<bool>),
    acked: watch::Sender<u64>,
) -> Vec<(u64, String)> {
    let mut acks = Vec::new();
    for i in 0..n {
        if i == hold_at {
            tokio::time::timeout(WAIT, go.wait_for(|go| *go))
                .await
                .expect("the go-ahead in time")
                .expect("the test holds the go-ahead");
        }
        let payload = format!("feed-{i}");
        let seq = client.publish_acked(topic, payload.as_bytes()).await;
        acks.push((seq, payload));
        acked.send_replace(i + 1);
        tokio::time::sleep(pace).await;
    }
    acks
}

#[tokio::test]
async fn subscribers_of_a_killed_node_resume_on_another_node_without_loss_or_duplicates() {
    const N: u64 = 300;
    let redis = RedisServer::start().await;
    let config = history_config("kill");
    let args = ["--config", config.to_str().expect("a UTF-8 path")];
    let mut a = ClusterNode::ready(&redis.url(), &args).await;
    let b = ClusterNode::ready(&redis.url(), &args).await;
    let c = ClusterNode::ready(&redis.url(), &args).await;
    let (topic, channel) = ("feed.kill", "tickwire:{feed.kill}:msg");

    // Every subscriber connects through the load balancer while it has
    // only node a; then it balances over all three.
    let lb = Proxy::start(&[a.addr]).await;
    let (_until_tx, until) = watch::channel(N);
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        subscribers.push(SdkSubscriber::start(&lb.ws_url(), topic, until.clone()).await);
    }
    let mut raw = RawSubscriber::start(lb.addr, topic, until.clone()).await;
    redis.wait_numsub(channel, 1).await;
    lb.set_upstreams(&[a.addr, b.addr, c.addr]);

    // The publisher is on node b, at a bounded rate.
    // It stops before the last third until node a is killed.
    let (acked_tx, mut acked) = watch::channel(0);
    let (killed_tx, killed) = watch::channel(false);
    let publisher = RawClient::connect(b.addr).await;
    let publishing = tokio::spawn(publish_paced(
        publisher,
        topic,
        (N, Duration::from_millis(4)),
        (2 * N / 3, killed),
        acked_tx,
    ));

    // Kill node a mid-stream, once its subscribers are receiving.
    wait_progress(&mut acked, N / 3, "acknowledged publishes").await;
    for subscriber in &mut subscribers {
        wait_progress(&mut subscriber.received, N / 4, "SDK subscriber").await;
    }
    wait_progress(&mut raw.received, N / 4, "raw subscriber").await;
    a.kill().await;
    killed_tx.send_replace(true);

    let acks = publishing.await.expect("the publisher");
    let acked_seqs: Vec<u64> = acks.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(acked_seqs, (1..=N).collect::<Vec<_>>());
    for (i, subscriber) in subscribers.into_iter().enumerate() {
        let who = format!("SDK subscriber {i}");
        let (got, events) = subscriber.task.await.expect("an SDK subscriber");
        assert_gapless(&who, &got, N);
        let payloads: Vec<(u64, String)> = got.into_iter().map(|d| (d.seq, d.payload)).collect();
        assert_eq!(payloads, acks, "{who}");
        assert_resumed(&who, &events);
    }
    let got = raw.assert_gapless(N).await;
    let payloads: Vec<(u64, String)> = got.into_iter().map(|d| (d.seq, d.payload)).collect();
    assert_eq!(payloads, acks, "raw subscriber");
}

/// What became of one publish in the rolling restart.
enum Outcome {
    /// Acknowledged with this seq.
    Acked(u64),
    /// Not applied (the client or the node says so): sent again.
    Retry,
    /// May or may not have been applied: never sent again.
    Unconfirmed,
}

fn outcome(result: tickwire_client::Result<u64>) -> Outcome {
    use tickwire_client::Error;
    match result {
        Ok(seq) => Outcome::Acked(seq),
        Err(Error::NotSent | Error::NotConnected | Error::OfflineBufferFull { .. }) => {
            Outcome::Retry
        }
        Err(Error::Broker {
            code: ErrorCode::ShuttingDown,
            ..
        }) => Outcome::Retry,
        Err(Error::Broker {
            code: ErrorCode::Internal,
            message,
        }) if message.contains("is unavailable") || message.contains("is overloaded") => {
            Outcome::Retry
        }
        Err(Error::ConnectionLost | Error::Timeout { .. }) => Outcome::Unconfirmed,
        Err(Error::Broker {
            code: ErrorCode::Internal,
            message,
        }) if message.contains("did not confirm") => Outcome::Unconfirmed,
        Err(e) => panic!("publish failed: {e}"),
    }
}

/// What the continuous publisher did.
#[derive(Debug, Default)]
struct Published {
    /// (seq, payload) of every acknowledged publish, in order.
    acked: Vec<(u64, String)>,
    /// Payloads whose outcome is unknown.
    unconfirmed: Vec<String>,
    /// Publishes sent again after a refusal that said "not applied".
    retries: u64,
}

/// Publishes `roll-0` … on `topic` through `client` (the SDK, through the
/// load balancer), one every `pace`, until `stop`; then `end-…` until one is
/// acknowledged, whose seq is the last of the run.
async fn publish_until(
    client: Client,
    topic: &str,
    pace: Duration,
    mut stop: watch::Receiver<bool>,
    acked: watch::Sender<u64>,
) -> Published {
    let mut published = Published::default();
    let mut i = 0;
    loop {
        let stopping = *stop.borrow_and_update();
        let payload = if stopping {
            format!("end-{i}")
        } else {
            format!("roll-{i}")
        };
        i += 1;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let result = client.publish_bytes_acked(topic, payload.clone()).await;
            match outcome(result) {
                Outcome::Acked(seq) => {
                    published.acked.push((seq, payload));
                    acked.send_replace(published.acked.len() as u64);
                }
                Outcome::Unconfirmed => published.unconfirmed.push(payload),
                Outcome::Retry => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{payload} refused for {WAIT:?}"
                    );
                    published.retries += 1;
                    tokio::time::sleep(pace).await;
                    continue;
                }
            }
            break;
        }
        let last_acked = published.acked.last().map(|(_, p)| p.starts_with("end-"));
        if stopping && last_acked == Some(true) {
            return published;
        }
        tokio::time::sleep(pace).await;
    }
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_loses_nothing_for_resuming_subscribers() {
    let redis = RedisServer::start().await;
    let config = history_config("roll");
    let args = ["--config", config.to_str().expect("a UTF-8 path")];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(ClusterNode::ready(&redis.url(), &args).await);
    }
    let all: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let lb = Proxy::start(&all).await;
    let (topic, channel) = ("feed.roll", "tickwire:{feed.roll}:msg");

    // One subscriber of the topic per node (round robin), one of a
    // wildcard covering it, then the publisher.
    let (until_tx, until) = watch::channel(u64::MAX);
    let mut subscribers = Vec::new();
    for pattern in [topic, topic, topic, "feed.>"] {
        subscribers.push(SdkSubscriber::start(&lb.ws_url(), pattern, until.clone()).await);
    }
    let mut raw = RawSubscriber::start(lb.addr, topic, until.clone()).await;
    redis.wait_numsub(channel, 3).await;
    redis.wait_numpat(1).await;
    let (stop_tx, stop) = watch::channel(false);
    let (acked_tx, mut acked) = watch::channel(0);
    // Without an offline buffer, so that publishes made while it reconnects
    // are refused (`NotConnected`) and sent again by the test's own rule.
    let publishing = tokio::spawn(publish_until(
        sdk::client_with(&lb.ws_url(), OfflinePolicy::Fail).await,
        topic,
        Duration::from_millis(5),
        stop,
        acked_tx,
    ));
    wait_progress(&mut acked, 20, "acknowledged publishes").await;
    for subscriber in &mut subscribers {
        wait_progress(&mut subscriber.received, 10, "a subscriber").await;
    }
    wait_progress(&mut raw.received, 10, "the raw subscriber").await;

    // Each node in turn: out of the load balancer, drained, started again
    // on its port, back in; traffic goes on meanwhile.
    for i in 0..nodes.len() {
        let others: Vec<SocketAddr> = all.iter().copied().filter(|a| *a != all[i]).collect();
        lb.set_upstreams(&others);
        nodes[i].terminate().await;
        nodes[i].restart().await;
        lb.set_upstreams(&all);
        let so_far = *acked.borrow();
        wait_progress(&mut acked, so_far + 20, "publishes after a restart").await;
    }

    stop_tx.send_replace(true);
    let published = publishing.await.expect("the publisher");
    let (last, _) = *published.acked.last().expect("an acknowledged publish");
    until_tx.send_replace(last);
    let mut seen: Option<Vec<Delivered>> = None;
    for (i, subscriber) in subscribers.into_iter().enumerate() {
        let who = format!("subscriber {i}");
        let (got, events) = subscriber.task.await.expect("a subscriber");
        assert_gapless(&who, &got, last);
        assert_resumed(&who, &events);
        match &seen {
            None => seen = Some(got),
            Some(first) => assert_eq!(&got, first, "{who} differs from subscriber 0"),
        }
    }
    let got = seen.expect("subscribers");
    assert_eq!(
        raw.assert_gapless(last).await,
        got,
        "the raw subscriber differs from subscriber 0"
    );
    // Every acknowledged publish is there with its seq; everything else
    // delivered is an unconfirmed publish; no payload twice.
    for (seq, payload) in &published.acked {
        let delivered = got.get(*seq as usize - 1).map(|d| &d.payload);
        assert_eq!(delivered, Some(payload), "acknowledged seq {seq}");
    }
    let mut payloads: Vec<&str> = got.iter().map(|d| d.payload.as_str()).collect();
    for payload in &payloads {
        let acknowledged = published.acked.iter().any(|(_, p)| p == payload);
        assert!(
            acknowledged || published.unconfirmed.iter().any(|p| p == payload),
            "delivered {payload:?}, never published"
        );
    }
    payloads.sort_unstable();
    let before = payloads.len();
    payloads.dedup();
    assert_eq!(payloads.len(), before, "a payload delivered twice");
    eprintln!(
        "rolling restart: {} acknowledged, {} unconfirmed, {} retried publishes",
        published.acked.len(),
        published.unconfirmed.len(),
        published.retries
    );
}
