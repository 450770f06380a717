//! Connecting: the upgrade handshake and connection errors.

mod common;

use std::time::Duration;

use common::{Answer, FakeBroker, within};
use tickwire_client::{Client, ConnectionState, Error, HandshakeError};

#[tokio::test]
async fn handshake_succeeds_with_expected_request() {
    let broker = FakeBroker::bind().await;
    let builder = Client::builder(broker.url()).token("s3cret-token");
    let (client, (_conn, head)) = within("connect", async {
        tokio::join!(builder.connect(), broker.accept_with(Answer::Upgrade))
    })
    .await;
    let client = client.expect("connect");
    // The client id goes with every upgrade (generated: 22 characters).
    assert_eq!(client.client_id().len(), 22);
    assert_eq!(
        head.request_line,
        format!("GET /ws?client={} HTTP/1.1", client.client_id())
    );
    assert_eq!(head.header("host"), Some(broker.addr.to_string().as_str()));
    assert_eq!(head.header("upgrade"), Some("websocket"));
    assert_eq!(head.header("connection"), Some("Upgrade"));
    assert_eq!(head.header("sec-websocket-version"), Some("13"));
    assert_eq!(head.header("sec-websocket-protocol"), Some("tickwire.v1"));
    assert_eq!(head.header("authorization"), Some("Bearer s3cret-token"));
    assert!(client.is_connected());
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    assert_eq!(client.url(), broker.url());
}

#[tokio::test]
async fn custom_path_is_requested_and_no_token_means_no_authorization() {
    let broker = FakeBroker::bind().await;
    let url = format!("{}/custom/ws?tenant=a", broker.url());
    let (client, (_conn, head)) = within("connect", async {
        tokio::join!(Client::connect(&url), broker.accept_with(Answer::Upgrade))
    })
    .await;
    let client = client.expect("connect");
    assert_eq!(
        head.request_line,
        format!(
            "GET /custom/ws?tenant=a&client={} HTTP/1.1",
            client.client_id()
        )
    );
    assert_eq!(head.header("authorization"), None);
}

async fn connect_with(answer: Answer) -> Result<Client, Error> {
    let broker = FakeBroker::bind().await;
    let url = broker.url();
    let (client, _) = within("connect", async {
        tokio::join!(Client::connect(&url), broker.accept_with(answer))
    })
    .await;
    client
}

#[tokio::test]
async fn accept_mismatch_is_rejected() {
    let err = connect_with(Answer::BadAccept).await.unwrap_err();
    match err {
        Error::Handshake(HandshakeError::AcceptMismatch { expected, got }) => {
            assert_ne!(Some(expected), got);
        }
        other => panic!("expected AcceptMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_subprotocol_is_rejected() {
    let err = connect_with(Answer::UpgradeWithProtocol(Some("tickwire.v2")))
        .await
        .unwrap_err();
    match err {
        Error::Handshake(HandshakeError::Subprotocol { offered, got }) => {
            assert_eq!(offered, "tickwire.v1");
            assert_eq!(got, "tickwire.v2");
        }
        other => panic!("expected Subprotocol, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_subprotocol_is_accepted() {
    let client = connect_with(Answer::UpgradeWithProtocol(None))
        .await
        .expect("a 101 without a subprotocol is accepted");
    assert!(client.is_connected());
}

#[tokio::test]
async fn non_101_answers_carry_status_and_body() {
    let err = connect_with(Answer::Status(503, "Service Unavailable", "broker is full"))
        .await
        .unwrap_err();
    match &err {
        Error::Handshake(HandshakeError::Status {
            status,
            reason,
            body,
        }) => {
            assert_eq!(*status, 503);
            assert_eq!(reason, "Service Unavailable");
            assert_eq!(body, "broker is full");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.to_string().contains("503"), "{err}");
    assert!(err.to_string().contains("broker is full"), "{err}");

    let err = connect_with(Answer::Status(
        400,
        "Bad Request",
        "unsupported WebSocket subprotocol [\"x\"]; this broker speaks tickwire.v1",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Handshake(HandshakeError::Status { status: 400, body, .. }) if body.contains("tickwire.v1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_refused_reads_like_a_hint() {
    // Find a free port, then make sure nothing listens on it.
    let addr = {
        let broker = FakeBroker::bind().await;
        broker.addr
    };
    let err = within("connect", Client::connect(&format!("ws://{addr}")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ConnectionRefused { addr: a } if a == &addr.to_string()),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "connection refused: is a broker listening on {addr}? start one with `tickwire serve`"
        )
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let broker = FakeBroker::bind().await;
    let builder = Client::builder(broker.url()).connect_timeout(Duration::from_millis(200));
    // The listener's backlog completes the TCP handshake; nobody answers the
    // upgrade request.
    let err = within("connect", builder.connect()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn ipv6_loopback() {
    let Ok(broker) = FakeBroker::bind_addr("[::1]:0").await else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let url = broker.url();
    assert!(url.starts_with("ws://[::1]:"), "{url}");
    let (client, (_conn, head)) = within("connect", async {
        tokio::join!(Client::connect(&url), broker.accept_with(Answer::Upgrade))
    })
    .await;
    client.expect("connect over IPv6");
    assert_eq!(head.header("host"), Some(&url["ws://".len()..]));
}

#[tokio::test]
async fn hostname_resolves() {
    let broker = FakeBroker::bind().await;
    let url = format!("ws://localhost:{}", broker.addr.port());
    let (client, (_conn, head)) = within("connect", async {
        tokio::join!(Client::connect(&url), broker.accept_with(Answer::Upgrade))
    })
    .await;
    client.expect("connect by name");
    assert_eq!(
        head.header("host"),
        Some(format!("localhost:{}", broker.addr.port()).as_str())
    );
}

#[tokio::test]
async fn bad_urls_and_settings_fail_before_connecting() {
    for url in [
        "localhost:8080",
        "http://localhost",
        "ws://[::1",
        "ws://h:0",
    ] {
        let err = Client::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
    }
    let err = Client::builder("ws://127.0.0.1:1")
        .token("has space")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
