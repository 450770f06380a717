//! `tickwire bench fanout` against two `serve --cluster` nodes on one real
//! `redis-server` (docs/benchmarks.md, "Cluster"): subscribers spread
//! round-robin with `--subscriber-url`, the publisher on one node with
//! `--publisher-url`; the JSON report counts every subscriber's deliveries
//! once, per node, with no loss, gap or duplicate. Subscribers and the
//! publisher start together: nothing waits for `PUBSUB` before publishing.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::{assert_success, output_within, tickwire_command};

/// The topic every run publishes on.
const TOPIC: &str = "bench.cluster";

/// Runs `tickwire bench fanout ARGS` at a fixed rate for one second and
/// returns its output.
async fn bench(args: &[&str]) -> Output {
    output_within(
        tickwire_command(&["bench", "fanout", "--topic", TOPIC])
            .args(["--payload", "64", "--rate", "2000", "--duration", "1s"])
            .args(["--drain", "5s", "--json", "--quiet"])
            .args(args),
        Duration::from_secs(30),
    )
    .await
}

/// The JSON report of a run that must have exited 0.
fn report(output: &Output) -> Value {
    let stdout = assert_success(output);
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// Checks a clean run: everything published arrived once, in order, at
/// each of `subscribers` subscribers; returns the messages published.
fn assert_clean(report: &Value, subscribers: u64) -> u64 {
    let published = report["published"].as_u64().expect("published");
    assert!(published > 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["seq_gaps"], 0, "{report}");
    assert_eq!(report["seq_regressions"], 0, "{report}");
    assert_eq!(report["deliveries"], published * subscribers, "{report}");
    published
}

/// (url, subscribers, publishers, deliveries) of each node in the report.
fn shares(report: &Value) -> Vec<(String, u64, u64, u64)> {
    report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["url"].as_str().expect("url").to_owned(),
                n["subscribers"].as_u64().expect("subscribers"),
                n["publishers"].as_u64().expect("publishers"),
                n["deliveries"].as_u64().expect("deliveries"),
            )
        })
        .collect()
}

#[tokio::test]
async fn bench_spreads_subscribers_over_cluster_nodes_and_counts_each_once() {
    let redis = RedisServer::start().await;
    let a = ClusterNode::ready(&redis.url(), &[]).await;
    let b = ClusterNode::ready(&redis.url(), &[]).await;
    // No wait for PUBSUB here: a cluster node answers SUBSCRIBED only once
    // Redis confirmed its SUBSCRIBE (docs/cluster.md), so every message the
    // bench publishes after its setup reaches both nodes.
    let (url_a, url_b) = (format!("ws://{}/ws", a.addr), format!("ws://{}/ws", b.addr));

    // Six subscribers alternating A, B, A, …; the publisher on A.
    let spread = report(
        &bench(&[
            "--subscribers",
            "6",
            "--url",
            &url_a,
            "--subscriber-url",
            &url_a,
            "--subscriber-url",
            &url_b,
        ])
        .await,
    );
    let published = assert_clean(&spread, 6);
    assert_eq!(
        shares(&spread),
        [
            (url_a.clone(), 3, 1, 3 * published),
            (url_b.clone(), 3, 0, 3 * published),
        ]
    );
    assert_eq!(spread["subscriber_urls"], serde_json::json!([url_a, url_b]));
    assert_eq!(spread["publisher_urls"], serde_json::json!([url_a]));

    // Every subscriber on A, the publisher on B: all of it through Redis.
    let across = report(
        &bench(&[
            "--subscribers",
            "4",
            "--url",
            &url_a,
            "--publisher-url",
            &url_b,
        ])
        .await,
    );
    let published = assert_clean(&across, 4);
    assert_eq!(
        shares(&across),
        [(url_a, 4, 0, 4 * published), (url_b, 0, 1, 0)]
    );
}
