//! `tickwire bench transports` (docs/benchmarks.md, "Transports") against a
//! real `tickwire serve`: one short run per transport (WebSocket, SSE,
//! long-poll) at a fixed rate, each delivering everything once and in
//! order, with bytes on the wire and the broker's CPU (`--broker-pid`)
//! reported; and the exit codes of a usage error and of no broker.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tickwire_e2e::{assert_success, output_within, read_banner, tickwire_command};
use tokio::io::AsyncBufReadExt;

/// Subscribers per run.
const SUBSCRIBERS: u64 = 4;

/// Payload bytes per message.
const PAYLOAD: u64 = 64;

/// Runs `tickwire bench transports ARGS` and returns its output.
async fn bench(args: &[&str]) -> Output {
    output_within(
        tickwire_command(&["bench", "transports"]).args(args),
        Duration::from_secs(60),
    )
    .await
}

#[tokio::test]
async fn every_transport_delivers_everything_and_reports_bytes_and_broker_cpu() {
    let mut serve = tickwire_command(&["serve", "--listen", "127.0.0.1:0"])
        .spawn()
        .expect("start tickwire serve");
    let stdout = serve.stdout.take().expect("stdout");
    let (addr, _) = read_banner(&mut tokio::io::BufReader::new(stdout).lines()).await;
    let pid = serve.id().expect("broker pid").to_string();
    let url = format!("ws://{addr}/ws");
    let subscribers = SUBSCRIBERS.to_string();
    let payload = PAYLOAD.to_string();
    let output = bench(&[
        "--url",
        &url,
        "--transports",
        "ws,sse,poll",
        "--subscribers",
        &subscribers,
        "--rates",
        "200",
        "--duration",
        "1s",
        "--drain",
        "10s",
        "--payload-size",
        &payload,
        "--broker-pid",
        &pid,
        "--json",
        "--quiet",
    ])
    .await;
    let stdout = assert_success(&output);
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let transports: Vec<&str> = rows
        .iter()
        .map(|r| r["transport"].as_str().expect("transport"))
        .collect();
    assert_eq!(transports, ["ws", "sse", "poll"], "{stdout}");
    for row in &rows {
        let published = row["published"].as_u64().expect("published");
        assert!(published > 0, "{row}");
        assert_eq!(row["ok"], true, "{row}");
        assert_eq!(row["lost"], 0, "{row}");
        assert_eq!(row["seq_gaps"], 0, "{row}");
        assert_eq!(row["seq_regressions"], 0, "{row}");
        assert_eq!(row["closed"], 0, "{row}");
        assert_eq!(row["unstamped"], 0, "{row}");
        assert_eq!(row["deliveries"], published * SUBSCRIBERS, "{row}");
        assert_eq!(row["latency"]["count"], published * SUBSCRIBERS, "{row}");
        // Every delivery carries at least its payload.
        let per_delivery = row["bytes_per_delivery"].as_f64().expect("bytes");
        assert!(per_delivery > PAYLOAD as f64, "{row}");
        assert!(
            row["broker"]["cpu_us_per_delivery"].as_f64().is_some(),
            "{row}"
        );
    }
    let _ = serve.kill().await;
}

#[tokio::test]
async fn no_broker_is_a_connection_failure_and_bad_flags_a_usage_error() {
    // A port that was just free: nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let url = format!("ws://{addr}/ws");
    let output = bench(&[
        "--url",
        &url,
        "--rates",
        "10",
        "--duration",
        "1s",
        "--quiet",
    ])
    .await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("connection refused"),
        "{output:?}"
    );
    for bad in [
        &["--rates", "0"][..],
        &["--rates", "1", "--duration", "500ms"],
        &["--payload-size", "8"],
        &["--transports", "carrier-pigeon"],
        &["--poll-timeout", "61"],
    ] {
        let output = bench(bad).await;
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
    }
}
