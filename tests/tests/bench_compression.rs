//! `tickwire bench fanout --compression` against the real binary: with
//! `serve --compression on` every delivery arrives compressed, none is
//! lost, and the report's wire bytes per delivery fall below the plain
//! run's; a broker that declines permessage-deflate fails the run at setup
//! (exit code 3) instead of measuring plain deliveries.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tickwire_e2e::{WAIT, assert_success, output_within, read_banner, signal, tickwire_command};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Subscribers of every run.
const SUBSCRIBERS: u64 = 4;

/// A broker started with `args`.
struct Serve {
    child: Child,
    _lines: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
}

async fn serve(args: &[&str]) -> Serve {
    let mut child = tickwire_command(&["serve", "--listen", "127.0.0.1:0", "--log-level", "error"])
        .args(args)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tickwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (addr, _) = read_banner(&mut lines).await;
    Serve {
        child,
        _lines: lines,
        addr,
    }
}

impl Serve {
    async fn stop(self) {
        signal(&self.child, "-TERM");
        let mut child = self.child;
        let exit = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("exit in time")
            .expect("wait");
        assert!(exit.success(), "{exit:?}");
    }
}

/// Runs `tickwire bench fanout` on `addr` at a fixed rate for one second,
/// 1 KiB payloads (over the broker's default 256 B minimum for
/// compression), plus `args`.
async fn bench(addr: SocketAddr, args: &[&str]) -> Output {
    let url = format!("ws://{addr}/ws");
    let subscribers = SUBSCRIBERS.to_string();
    output_within(
        tickwire_command(&["bench", "fanout", "--url", &url])
            .args(["--subscribers", &subscribers, "--payload", "1KiB"])
            .args(["--rate", "500", "--duration", "1s", "--drain", "5s"])
            .args(["--json", "--quiet"])
            .args(args),
        Duration::from_secs(30),
    )
    .await
}

/// The report of a clean run: every published message arrived at every
/// subscriber, once and in order.
fn clean_report(output: &Output) -> Value {
    let stdout = assert_success(output);
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let published = report["published"].as_u64().expect("published");
    assert!(published > 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["seq_gaps"], 0, "{report}");
    assert_eq!(report["deliveries"], published * SUBSCRIBERS, "{report}");
    report
}

fn per_delivery(report: &Value) -> f64 {
    report["wire_bytes_per_delivery"]
        .as_f64()
        .expect("wire_bytes_per_delivery")
}

#[tokio::test]
async fn compressed_fanout_inflates_every_delivery_with_zero_loss() {
    let broker = serve(&["--compression", "on"]).await;

    let compressed = clean_report(&bench(broker.addr, &["--compression"]).await);
    assert_eq!(compressed["compression"], true, "{compressed}");
    assert_eq!(
        compressed["compressed_deliveries"], compressed["deliveries"],
        "{compressed}"
    );

    let plain = clean_report(&bench(broker.addr, &[]).await);
    assert_eq!(plain["compression"], false, "{plain}");
    assert_eq!(plain["compressed_deliveries"], 0, "{plain}");
    // A plain delivery is the payload plus the MESSAGE envelope and frame
    // header; the compressed one is smaller.
    assert!(per_delivery(&plain) > 1024.0, "{plain}");
    assert!(
        per_delivery(&compressed) < per_delivery(&plain),
        "{compressed} vs {plain}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_broker_without_compression_fails_the_run_at_setup() {
    let broker = serve(&[]).await;
    let output = bench(broker.addr, &["--compression"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("declined permessage-deflate"), "{stderr}");
    assert!(output.stdout.is_empty(), "no report of a plain run");
    broker.stop().await;
}
