//! Per-source-address connection limits. The limited clients connect from
//! other loopback addresses (127.0.0.2, 127.0.0.3), so the test's own
//! metric scrapes from 127.0.0.1 are never refused.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tickwire_e2e::{TestBroker, WAIT, metric_with_label};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(from), 0))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// `GET /healthz` from `from`: the status and the whole response.
async fn healthz_from(from: [u8; 4], to: SocketAddr) -> (u16, String) {
    let mut stream = connect_from(from, to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

async fn refused(broker: &TestBroker, reason: &str) -> f64 {
    metric_with_label(
        broker.addr,
        "tickwire_connections_rejected_per_ip_total",
        "reason",
        reason,
    )
    .await
}

#[tokio::test]
async fn an_address_over_max_connections_per_ip_gets_429_until_one_closes() {
    const LIMITED: [u8; 4] = [127, 0, 0, 2];
    let broker = TestBroker::start(|c| c.max_connections_per_ip = 2).await;
    let first = connect_from(LIMITED, broker.addr).await;
    let _second = connect_from(LIMITED, broker.addr).await;
    let (status, text) = healthz_from(LIMITED, broker.addr).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("max_connections_per_ip"), "{text}");
    assert_eq!(refused(&broker, "max_connections_per_ip").await, 1.0);

    // One closes (the scrape's own connection is the third): a place frees.
    drop(first);
    broker.wait_metric("tickwire_connections", 2.0).await;
    let (status, text) = healthz_from(LIMITED, broker.addr).await;
    assert_eq!(status, 200, "{text}");
    broker.stop().await;
}

#[tokio::test]
async fn an_address_opening_connections_too_fast_gets_429_then_gets_in_again() {
    const LIMITED: [u8; 4] = [127, 0, 0, 3];
    let broker = TestBroker::start(|c| {
        c.connection_rate_per_ip = 1;
        c.connection_burst_per_ip = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(healthz_from(LIMITED, broker.addr).await.0, 200);
    }
    let (status, text) = healthz_from(LIMITED, broker.addr).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("connection_rate_per_ip"), "{text}");
    assert_eq!(refused(&broker, "connection_rate_per_ip").await, 1.0);

    // The bucket refills at 1 per second.
    let deadline = tokio::time::Instant::now() + WAIT;
    while healthz_from(LIMITED, broker.addr).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never let in again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.stop().await;
}
