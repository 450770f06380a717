//! Smoke test of `tickwire bench fanout`: an in-process broker on an
//! ephemeral port, the real binary as the load generator for about 2 s,
//! and its JSON report checked for zero loss and non-zero deliveries.

use std::process::Stdio;
use std::time::Duration;

use tickwire_broker::{Broker, BrokerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_with_zero_loss() {
    // The load tool publishes as fast as it can from one connection: lift
    // the per-connection publish rate so the run measures the broker.
    let config = BrokerConfig {
        publish_rate: u32::MAX,
        publish_burst: u32::MAX,
        ..BrokerConfig::local_ephemeral()
    };
    let broker = Broker::bind(config).await.expect("bind 127.0.0.1:0");
    let addr = broker.local_addr().expect("local addr");
    let shutdown = broker.shutdown_handle();
    let server = tokio::spawn(broker.run());

    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["bench", "fanout", "--subscribers", "4", "--payload", "64"])
        .args(["--duration", "2s", "--drain", "2s", "--json", "--quiet"])
        .arg("--url")
        .arg(format!("ws://{addr}/ws"))
        .env_remove("TICKWIRE_URL")
        .env_remove("TICKWIRE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tickwire bench");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("bench finishes in time")
        .expect("bench output");
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

    shutdown.shutdown();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("broker stops in time")
        .expect("broker task");
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
