//! The cluster backplane over TLS (`--cluster rediss://…`): real
//! `redis-server` processes speaking only TLS, with certificates from a CA
//! made in each test (docs/cluster.md, "Setting it up"). Nodes trusting
//! that CA (`--cluster-ca-file`) work as over plain TCP; a node that does
//! not trust it, or lacks the client certificate Redis asks for, is not
//! ready, refuses publishes and logs why. Every wait polls against a
//! deadline.

use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::pki::{TempDir, TestCa};
use tickwire_e2e::redis::{RedisServer, RedisTls};
use tickwire_e2e::{RawClient, Received, http, metric_with_label, tickwire_command};

/// A TLS Redis whose certificate `ca` issued; with `client_auth`, it asks
/// for client certificates from `ca` too.
async fn tls_redis(dir: &TempDir, ca: &TestCa, client_auth: bool) -> RedisServer {
    RedisServer::start_tls(RedisTls {
        server: ca.server_cert(dir.path(), "redis"),
        ca: ca.ca_file().to_owned(),
        client: client_auth.then(|| ca.issue(dir.path(), "helper", "helper", &["helper"])),
    })
    .await
}

fn path(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Expects the node at `node` to refuse a publish: not ready, 503 over
/// HTTP, counted as `unavailable`.
async fn expect_refusing(node: &ClusterNode) {
    assert_eq!(
        node.wait_ready(false).await,
        "cluster backplane unavailable (Redis)\n"
    );
    let (status, body) = http(node.addr, "POST", "/v1/publish/t.x", b"lost").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cluster backplane (Redis)"), "{body}");
    let refused = metric_with_label(
        node.addr,
        "tickwire_backplane_refused_total",
        "reason",
        "unavailable",
    )
    .await;
    assert!(refused >= 1.0, "refused{{unavailable}}: {refused}");
}

#[tokio::test]
async fn nodes_trusting_the_redis_ca_publish_and_subscribe_across_nodes_over_tls() {
    let dir = TempDir::new("cluster-tls");
    let ca = TestCa::new(dir.path(), "redis-ca");
    let redis = tls_redis(&dir, &ca, false).await;
    assert!(redis.url().starts_with("rediss://"));
    let args = ["--cluster-ca-file", path(ca.ca_file())];
    let a = ClusterNode::ready(&redis.url(), &args).await;
    let b = ClusterNode::ready(&redis.url(), &args).await;

    let mut subscriber = RawClient::connect(b.addr).await;
    subscriber.subscribe("secure.>").await;
    redis.wait_numpat(1).await;
    let mut publisher = RawClient::connect(a.addr).await;
    for (i, payload) in ["one", "two", "three"].iter().enumerate() {
        let seq = publisher
            .publish_acked("secure.x", payload.as_bytes())
            .await;
        assert_eq!(seq, i as u64 + 1);
    }
    for (i, want) in ["one", "two", "three"].iter().enumerate() {
        match subscriber.recv().await {
            Received::Message {
                topic,
                seq,
                payload,
                ..
            } => assert_eq!(
                (topic.as_str(), seq, payload.as_ref()),
                ("secure.x", i as u64 + 1, want.as_bytes())
            ),
            other => panic!("expected a MESSAGE, got {other:?}"),
        }
    }
    // Each acknowledged publish was one timed round trip to Redis.
    let timed = metric_with_label(
        a.addr,
        "tickwire_backplane_redis_seconds_count",
        "op",
        "publish",
    )
    .await;
    assert!((1.0..=3.0).contains(&timed), "publish round trips: {timed}");
}

#[tokio::test]
async fn a_node_that_does_not_trust_the_redis_certificate_is_not_ready_and_says_why() {
    let dir = TempDir::new("cluster-tls-ca");
    let ca = TestCa::new(dir.path(), "redis-ca");
    let other = TestCa::new(dir.path(), "other-ca");
    let redis = tls_redis(&dir, &ca, false).await;

    // The system's roots do not hold the test CA; nor does another CA.
    let mut system_roots = ClusterNode::spawn(&redis.url(), &[]).await;
    let mut wrong_ca =
        ClusterNode::spawn(&redis.url(), &["--cluster-ca-file", path(other.ca_file())]).await;
    for node in [&mut system_roots, &mut wrong_ca] {
        let line = node
            .wait_log(&["cannot connect to Redis", "certificate"])
            .await;
        assert!(line.contains("UnknownIssuer"), "{line}");
        assert!(line.contains("give it with --cluster-ca-file"), "{line}");
        expect_refusing(node).await;
    }
}

#[tokio::test]
async fn with_mutual_tls_a_node_presents_its_certificate_and_one_without_is_refused() {
    let dir = TempDir::new("cluster-mtls");
    let ca = TestCa::new(dir.path(), "redis-ca");
    let redis = tls_redis(&dir, &ca, true).await;
    let node_cert = ca.issue(dir.path(), "node", "tickwire-node", &["tickwire-node"]);
    let a = ClusterNode::ready(
        &redis.url(),
        &[
            "--cluster-ca-file",
            path(ca.ca_file()),
            "--cluster-cert-file",
            path(&node_cert.cert),
            "--cluster-key-file",
            path(&node_cert.key),
        ],
    )
    .await;
    let mut client = RawClient::connect(a.addr).await;
    assert_eq!(client.publish_acked("mtls.x", b"hello").await, 1);

    let mut anonymous =
        ClusterNode::spawn(&redis.url(), &["--cluster-ca-file", path(ca.ca_file())]).await;
    anonymous
        .wait_log(&["cannot connect to Redis", "give --cluster-cert-file"])
        .await;
    expect_refusing(&anonymous).await;
}

#[tokio::test]
async fn bad_cluster_tls_settings_stop_the_broker_at_start_with_exit_code_2() {
    let dir = TempDir::new("cluster-tls-start");
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write a file");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--cluster",
                "rediss://127.0.0.1:1",
                "--cluster-ca-file",
                path(&missing),
            ],
            "cannot read --cluster-ca-file",
        ),
        (
            &[
                "--cluster",
                "rediss://127.0.0.1:1",
                "--cluster-ca-file",
                path(&not_pem),
            ],
            "invalid --cluster-ca-file",
        ),
        (
            &[
                "--cluster",
                "redis://127.0.0.1:1",
                "--cluster-ca-file",
                path(&not_pem),
            ],
            "write --cluster rediss://",
        ),
        (
            &[
                "--cluster",
                "rediss://127.0.0.1:1",
                "--cluster-cert-file",
                path(&not_pem),
            ],
            "--cluster-cert-file and --cluster-key-file go together",
        ),
        (
            &["--cluster", "rediss://127.0.0.1:1/#insecure"],
            "give --cluster-ca-file",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let output = tickwire_command(&all)
            .output()
            .await
            .expect("run tickwire serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
