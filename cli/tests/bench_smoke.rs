//! Smoke tests of `tickwire bench fanout`: in-process brokers on ephemeral
//! ports, the real binary as the load generator for a second or two, and
//! its JSON report checked: zero loss and non-zero deliveries against one
//! broker; loss counted on the right broker when subscribers are spread
//! over two brokers that do not share messages. (Spreading over the nodes
//! of a real cluster: tests/tests/cluster_bench.rs.)

use std::process::{Output, Stdio};
use std::time::Duration;

use tickwire_broker::{Broker, BrokerConfig, ShutdownHandle};
use tokio::task::JoinHandle;

/// An in-process broker on 127.0.0.1:0.
struct TestBroker {
    url: String,
    shutdown: ShutdownHandle,
    server: JoinHandle<()>,
}

impl TestBroker {
    async fn start() -> TestBroker {
        // The load tool publishes as fast as it can from one connection:
        // lift the per-connection publish rate so the run measures the
        // broker.
        let config = BrokerConfig {
            publish_rate: u32::MAX,
            publish_burst: u32::MAX,
            ..BrokerConfig::local_ephemeral()
        };
        let broker = Broker::bind(config).await.expect("bind 127.0.0.1:0");
        let addr = broker.local_addr().expect("local addr");
        let shutdown = broker.shutdown_handle();
        let server = tokio::spawn(broker.run());
        TestBroker {
            url: format!("ws://{addr}/ws"),
            shutdown,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.shutdown();
        tokio::time::timeout(Duration::from_secs(15), self.server)
            .await
            .expect("broker stops in time")
            .expect("broker task");
    }
}

/// Runs `tickwire bench fanout ARGS --json --quiet` to the end.
async fn bench_fanout(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["bench", "fanout"])
        .args(args)
        .args(["--json", "--quiet"])
        .env_remove("TICKWIRE_URL")
        .env_remove("TICKWIRE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tickwire bench");
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("bench finishes in time")
        .expect("bench output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_with_zero_loss() {
    let broker = TestBroker::start().await;
    let output = bench_fanout(&[
        "--subscribers",
        "4",
        "--payload",
        "64",
        "--duration",
        "2s",
        "--drain",
        "2s",
        "--url",
        &broker.url,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "bench failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["bench"], "fanout");
    assert_eq!(report["subscribers"], 4);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["slow_consumer_closes"], 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let deliveries = report["deliveries"].as_u64().expect("deliveries");
    assert!(deliveries > 0, "{report}");
    assert_eq!(
        deliveries,
        report["published"].as_u64().expect("published") * 4,
        "{report}"
    );
    assert!(report["latency"]["count"].as_u64().expect("count") > 0);
    assert_eq!(report["seq_regressions"], 0, "{report}");
    assert_eq!(report["nodes"][0]["url"], broker.url.as_str(), "{report}");
    assert_eq!(report["nodes"][0]["deliveries"], deliveries, "{report}");

    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_spread_over_brokers_that_share_nothing_are_counted_lost_on_theirs() {
    // Two independent brokers: subscribers alternate between them and the
    // publisher is on the first, so the second's subscribers get nothing.
    let (first, second) = (TestBroker::start().await, TestBroker::start().await);
    let output = bench_fanout(&[
        "--subscribers",
        "4",
        "--rate",
        "500",
        "--duration",
        "500ms",
        "--drain",
        "2s",
        "--url",
        &first.url,
        "--subscriber-url",
        &first.url,
        "--subscriber-url",
        &second.url,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let published = report["published"].as_u64().expect("published");
    assert!(published > 0, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["lost"], 2 * published, "{report}");
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{report}");
    assert_eq!(nodes[0]["url"], first.url.as_str());
    assert_eq!(nodes[0]["subscribers"], 2);
    assert_eq!(nodes[0]["publishers"], 1);
    assert_eq!(nodes[0]["deliveries"], 2 * published, "{report}");
    assert_eq!(nodes[1]["url"], second.url.as_str());
    assert_eq!(nodes[1]["subscribers"], 2);
    assert_eq!(nodes[1]["publishers"], 0);
    assert_eq!(nodes[1]["deliveries"], 0, "{report}");

    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_bad_subscriber_or_publisher_url_is_a_usage_error() {
    for flag in ["--subscriber-url", "--publisher-url"] {
        let output = bench_fanout(&[flag, "http://127.0.0.1:1/ws"]).await;
        assert_eq!(output.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not a WebSocket URL"), "{flag}: {stderr}");
    }
}

#[tokio::test]
async fn refused_connection_exits_3_with_a_hint() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["bench", "fanout", "--subscribers", "1", "--duration", "1s"])
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{port}/ws"))
        .env_remove("TICKWIRE_TOKEN")
        .output()
        .await
        .expect("run tickwire bench");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains("tickwire serve"), "{stderr}");
}

#[tokio::test]
async fn payload_under_8_bytes_is_a_usage_error() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["bench", "fanout", "--payload", "4"])
        .output()
        .await
        .expect("run tickwire bench");
    assert_eq!(output.status.code(), Some(2));
}
