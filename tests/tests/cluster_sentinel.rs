//! The cluster backplane through Redis Sentinel
//! (`--cluster redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER`): real
//! `redis-server` processes (a master, a replica) and a real Sentinel
//! (docs/cluster.md, "Setting it up"). Nodes ask the Sentinels for the
//! master at every connection: they work through it, and after the master
//! dies and Sentinel promotes the replica they reconnect to the new master
//! by themselves. Every wait polls against a deadline.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::pki::{TempDir, TestCa};
use tickwire_e2e::redis::{RedisServer, RedisTls};
use tickwire_e2e::{RawClient, Received, poll_until};
use tokio::time::Instant;

/// Longest a Sentinel takes to convert a demoted master that is still up
/// into a replica (about 10 s in Redis 7.0).
const CONVERSION: Duration = Duration::from_secs(30);

/// A master, its replica (linked), and a Sentinel that knows both.
struct Deployment {
    _dir: TempDir,
    master: RedisServer,
    replica: RedisServer,
    sentinel: RedisServer,
}

async fn query<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    args: &[&str],
) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(connection)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn deployment() -> Deployment {
    let dir = TempDir::new("cluster-sentinel");
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let mut on_replica = replica.connection().await;
    poll_until(async || {
        let info: String = query(&mut on_replica, &["INFO", "replication"]).await;
        match info.contains("master_link_status:up") {
            true => Ok(()),
            false => Err(format!("replica not linked: {info}")),
        }
    })
    .await;
    let sentinel = RedisServer::start_sentinel(dir.path(), "primary", &master).await;
    let mut on_sentinel = sentinel.connection().await;
    poll_until(async || {
        let replicas: Vec<redis::Value> =
            query(&mut on_sentinel, &["SENTINEL", "REPLICAS", "primary"]).await;
        match replicas.len() {
            1 => Ok(()),
            n => Err(format!("the Sentinel knows {n} replicas")),
        }
    })
    .await;
    Deployment {
        _dir: dir,
        master,
        replica,
        sentinel,
    }
}

/// The next delivery's (topic, payload).
async fn next_message(client: &mut RawClient) -> (String, String) {
    match client.recv().await {
        Received::Message { topic, payload, .. } => {
            (topic, String::from_utf8_lossy(&payload).into_owned())
        }
        other => panic!("expected a MESSAGE, got {other:?}"),
    }
}

#[tokio::test]
async fn nodes_find_the_master_through_sentinel_and_follow_a_failover() {
    let mut d = deployment().await;
    // A Sentinel that is down is skipped: the next one answers.
    let url = format!(
        "redis+sentinel://127.0.0.1:1,127.0.0.1:{}/primary",
        d.sentinel.port
    );
    let a = ClusterNode::ready(&url, &[]).await;
    let b = ClusterNode::ready(&url, &[]).await;
    let channel = "tickwire:{fo.x}:msg";
    let mut subscriber = RawClient::connect(b.addr).await;
    subscriber.subscribe("fo.x").await;
    d.master.wait_numsub(channel, 1).await;
    assert_eq!(d.replica.numsub(channel).await, 0, "nothing on the replica");
    let mut publisher = RawClient::connect(a.addr).await;
    assert_eq!(publisher.publish_acked("fo.x", b"before").await, 1);
    assert_eq!(next_message(&mut subscriber).await.1, "before");

    // The master dies; Sentinel promotes the replica; the nodes, which
    // ask the Sentinel at every reconnection, move to it.
    d.master.kill();
    let mut on_sentinel = d.sentinel.connection().await;
    let promoted = d.replica.port.to_string();
    poll_until(async || {
        let addr: Vec<String> = query(
            &mut on_sentinel,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "primary"],
        )
        .await;
        match addr.get(1) {
            Some(port) if *port == promoted => Ok(()),
            other => Err(format!("the master is at {other:?}, not yet {promoted}")),
        }
    })
    .await;
    a.wait_ready(true).await;
    b.wait_ready(true).await;
    d.replica.wait_numsub(channel, 1).await;
    publisher.publish_acked("fo.x", b"after").await;
    assert_eq!(
        next_message(&mut subscriber).await,
        ("fo.x".to_owned(), "after".to_owned())
    );
}

#[tokio::test]
async fn an_unknown_master_name_leaves_the_node_not_ready_and_says_why() {
    let d = deployment().await;
    let url = format!("redis+sentinel://127.0.0.1:{}/nosuch", d.sentinel.port);
    let mut node = ClusterNode::spawn(&url, &[]).await;
    let line = node
        .wait_log(&["cannot connect to Redis", "Sentinel found no master"])
        .await;
    assert!(line.contains("not found"), "{line}");
    assert_eq!(
        node.wait_ready(false).await,
        "cluster backplane unavailable (Redis)\n"
    );
}

#[tokio::test]
async fn a_manual_failover_moves_the_nodes_to_the_promoted_replica() {
    let d = deployment().await;
    let url = format!("redis+sentinel://127.0.0.1:{}/primary", d.sentinel.port);
    let a = ClusterNode::ready(&url, &[]).await;
    let channel = "tickwire:{mf.x}:msg";
    let mut subscriber = RawClient::connect(a.addr).await;
    subscriber.subscribe("mf.x").await;
    d.master.wait_numsub(channel, 1).await;
    let mut publisher = RawClient::connect(a.addr).await;
    assert_eq!(publisher.publish_acked("mf.x", b"before").await, 1);
    assert_eq!(next_message(&mut subscriber).await.1, "before");

    // Both servers stay up: Sentinel promotes the replica at once, and
    // converts the old master into a replica (closing its clients) only
    // about 10 s later (Redis 7.0): until then the node stays on the old
    // master, which is still a master (docs/cluster.md, "Redis Sentinel").
    let mut on_sentinel = d.sentinel.connection().await;
    let _: String = query(&mut on_sentinel, &["SENTINEL", "FAILOVER", "primary"]).await;
    let deadline = Instant::now() + CONVERSION;
    loop {
        // A new connection each time: the conversion closes the old ones.
        let mut on_old = d.master.connection().await;
        let role: Vec<redis::Value> = query(&mut on_old, &["ROLE"]).await;
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"slave") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converted within {CONVERSION:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.replica.wait_numsub(channel, 1).await;
    a.wait_ready(true).await;
    let seq = publisher.publish_acked("mf.x", b"after").await;
    assert_eq!(seq, 2, "the position was replicated");
    assert_eq!(next_message(&mut subscriber).await.1, "after");
    assert_eq!(d.master.numsub(channel).await, 0);
}

#[tokio::test]
async fn over_tls_the_node_asks_the_sentinel_and_reaches_the_master_trusting_the_ca_file() {
    let dir = TempDir::new("cluster-sentinel-tls");
    let ca = TestCa::new(dir.path(), "redis-ca");
    let master = RedisServer::start_tls(RedisTls {
        server: ca.server_cert(dir.path(), "redis"),
        ca: ca.ca_file().to_owned(),
        client: None,
    })
    .await;
    let sentinel = RedisServer::start_sentinel(dir.path(), "primary", &master).await;
    let url = format!("rediss+sentinel://127.0.0.1:{}/primary", sentinel.port);
    let ca_file = ca.ca_file().to_str().expect("a UTF-8 temporary path");
    let node = ClusterNode::ready(&url, &["--cluster-ca-file", ca_file]).await;
    let mut subscriber = RawClient::connect(node.addr).await;
    subscriber.subscribe("tls.x").await;
    master.wait_numsub("tickwire:{tls.x}:msg", 1).await;
    let mut publisher = RawClient::connect(node.addr).await;
    assert_eq!(publisher.publish_acked("tls.x", b"sealed").await, 1);
    assert_eq!(
        next_message(&mut subscriber).await,
        ("tls.x".to_owned(), "sealed".to_owned())
    );
}
