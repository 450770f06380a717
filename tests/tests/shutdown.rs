//! SIGTERM on the real binary: readiness drops, clients get their queued
//! messages and then a 1001 close, and the process exits in time.

use std::process::Stdio;
use std::time::Duration;

use tickwire_e2e::{RawClient, Received, http, read_banner, signal, tickwire_binary};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_in_time() {
    let mut child = Command::new(tickwire_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "5s",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start tickwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (addr, _) = read_banner(&mut lines).await;

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::connect(addr).await;
        client.subscribe("news").await;
        clients.push(client);
    }
    let mut publisher = RawClient::connect(addr).await;
    for _ in 0..99 {
        publisher.publish("news", b"headline").await;
    }
    assert_eq!(publisher.publish_acked("news", b"last").await, 100);
    assert_eq!(http(addr, "GET", "/readyz", b"").await.0, 200);

    signal(&child, "-TERM");

    for client in &mut clients {
        for seq in 1..=100 {
            match client.recv().await {
                Received::Message { seq: got, .. } => {
                    assert_eq!(got, seq, "queued messages are flushed first")
                }
                other => panic!("expected message {seq}, got {other:?}"),
            }
        }
        match client.recv().await {
            Received::Close { code, .. } => assert_eq!(code, Some(1001)),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    match publisher.recv().await {
        Received::Close { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // Clients that leave promptly let the broker exit well inside its grace.
    drop(clients);
    drop(publisher);
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("broker exits within its grace period")
        .expect("wait for broker");
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn drain_delay_fails_readiness_while_still_serving() {
    use tickwire_e2e::{TestBroker, try_handshake};
    let broker = TestBroker::start(|c| c.shutdown_delay = Duration::from_secs(2)).await;
    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.subscribe("t").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    assert_eq!(broker.metric("tickwire_ready").await, 1.0);

    broker.begin_shutdown();
    let (status, body) = http(broker.addr, "GET", "/readyz", b"").await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(broker.metric("tickwire_ready").await, 0.0);
    assert_eq!(http(broker.addr, "GET", "/healthz", b"").await.0, 200);
    // New WebSocket sessions are turned away; existing ones keep working.
    let (status, text) = try_handshake(broker.addr, "").await;
    assert_eq!(status, 503, "{text}");
    publisher.publish_acked("t", b"still serving").await;
    assert!(matches!(subscriber.recv().await, Received::Message { .. }));

    // After the delay every session is closed with 1001.
    match subscriber.recv().await {
        Received::Close { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    drop((subscriber, publisher));
    broker.stop().await;
}
