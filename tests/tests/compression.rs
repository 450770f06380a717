//! permessage-deflate through the real binary (`--compression on`): a
//! published message is compressed once however many subscribers
//! negotiated it, they all inflate it, subscribers without the extension
//! on the same topic get the plain frame, compressed client messages are
//! inflated within `max_message_size` (a bomb is closed with 1009), and an
//! offer the broker cannot honour, or `--compression off`, gives a
//! connection without the extension.

use std::net::SocketAddr;
use std::process::Stdio;

use tickwire_e2e::{
    RawClient, Received, WAIT, metric, next_message, read_banner, signal, tickwire_command,
};
use tickwire_protocol::ClientMessage;
use tickwire_protocol::ws::{Incoming, MessageKind, OpCode};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A broker started with `args` (and the echo service); its main and echo
/// addresses.
struct Serve {
    child: Child,
    _lines: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
    echo: SocketAddr,
}

async fn serve(args: &[&str]) -> Serve {
    let mut child = tickwire_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--echo-listen",
        "127.0.0.1:0",
        "--log-level",
        "error",
    ])
    .args(args)
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start tickwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (addr, _) = read_banner(&mut lines).await;
    let (echo, line) = read_banner(&mut lines).await;
    assert!(line.starts_with("tickwire echo on "), "{line}");
    Serve {
        child,
        _lines: lines,
        addr,
        echo,
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

/// A JSON-like payload of about `n` bytes, as a ticker would publish.
fn ticker_json(n: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{{\"symbol\":\"SYM{}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"volume\":{}}},",
                i % 50,
                100 + i % 7,
                i % 100,
                101 + i % 7,
                (i * 37) % 100,
                1000 + i * 13
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.push(b']');
    out
}

/// A masked binary frame of `payload` as it is, with RSV1 set.
fn rsv1_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    tickwire_protocol::ws::write_client_frame(&mut frame, OpCode::Binary, payload, [1, 2, 3, 4]);
    frame[0] |= 0x40;
    frame
}

/// Waits for the broker's close frame and checks its code.
async fn closes_with(client: &mut RawClient, want: u16) {
    match client.recv_close().await {
        Received::Close { code, .. } => assert_eq!(code, Some(want)),
        other => panic!("expected close {want}, got {other:?}"),
    }
}

async fn deflate_client(addr: SocketAddr) -> RawClient {
    let (client, answer) = RawClient::connect_offering(addr, "/ws", true, OFFER).await;
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    client
}

#[tokio::test]
async fn deflate_subscribers_share_one_compression_and_plain_ones_are_unaffected() {
    let broker = serve(&["--compression", "on", "--compression-min-size", "256"]).await;
    let mut deflating = Vec::new();
    for _ in 0..4 {
        let mut client = deflate_client(broker.addr).await;
        client.subscribe("ticks").await;
        deflating.push(client);
    }
    // Without the extension: its decoder refuses RSV1, so a compressed
    // frame would fail the test.
    let mut plain = RawClient::connect(broker.addr).await;
    plain.subscribe("ticks").await;
    let mut publisher = RawClient::connect(broker.addr).await;

    let messages = 5;
    let payloads: Vec<Vec<u8>> = (0..messages).map(|i| ticker_json(2000 + i)).collect();
    for payload in &payloads {
        publisher.publish("ticks", payload).await;
    }
    // Small messages go plain to everyone.
    publisher.publish("ticks", b"{\"tiny\":1}").await;
    for client in deflating.iter_mut().chain([&mut plain]) {
        for payload in &payloads {
            let (topic, _, body) = next_message(client).await;
            assert_eq!(topic, "ticks");
            assert_eq!(&body, payload);
        }
        assert_eq!(next_message(client).await.2, b"{\"tiny\":1}");
    }
    // One compression per message, shared by the four subscribers.
    let compressed = metric(broker.addr, "tickwire_compression_messages_total").await;
    assert_eq!(compressed, messages as f64);
    let before = metric(broker.addr, "tickwire_compression_bytes_in_total").await;
    let after = metric(broker.addr, "tickwire_compression_bytes_out_total").await;
    assert!(before > 10_000.0, "{before}");
    assert!(after * 3.0 < before, "JSON shrinks: {before} -> {after}");
    drop((deflating, plain, publisher));
    broker.stop().await;
}

#[tokio::test]
async fn compressed_publishes_are_inflated_and_a_bomb_is_closed_with_1009() {
    let broker = serve(&["--compression", "on", "--max-message-size", "64KiB"]).await;
    let mut sub = RawClient::connect(broker.addr).await;
    sub.subscribe("in").await;

    // Two compressed publishes: the client keeps its context (it did not
    // offer client_no_context_takeover); each is inflated.
    let mut publisher = deflate_client(broker.addr).await;
    for n in [3000, 4000] {
        let payload = ticker_json(n);
        let mut body = Vec::new();
        ClientMessage::Publish {
            id: None,
            topic: "in",
            payload: payload.clone().into(),
            retain: false,
        }
        .encode(&mut body);
        publisher.send_compressed(OpCode::Binary, &body).await;
        assert_eq!(next_message(&mut sub).await.2, payload);
    }

    // 1 MiB of zeros compresses to about 1 KiB and inflates past 64 KiB.
    publisher
        .send_compressed(OpCode::Binary, &vec![0; 1 << 20])
        .await;
    closes_with(&mut publisher, 1009).await;

    // Not DEFLATE data: 1007.
    let mut garbage = deflate_client(broker.addr).await;
    garbage.send_raw(&rsv1_frame(&[0xff; 8])).await;
    closes_with(&mut garbage, 1007).await;
    drop((sub, publisher, garbage));
    broker.stop().await;
}

#[tokio::test]
async fn offers_the_broker_cannot_honour_get_no_extension() {
    let broker = serve(&["--compression", "on"]).await;
    // A smaller window for the broker's messages: declined.
    let (mut client, answer) = RawClient::connect_offering(
        broker.addr,
        "/ws",
        true,
        "permessage-deflate; server_max_window_bits=10",
    )
    .await;
    assert_eq!(answer, None);
    client.subscribe("a").await;
    // Declined, then the next offer accepted.
    let (_, answer) = RawClient::connect_offering(
        broker.addr,
        "/ws",
        true,
        "permessage-deflate; server_max_window_bits=9, permessage-deflate; client_no_context_takeover",
    )
    .await;
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // Invalid offers and other extensions: declined.
    for offer in ["permessage-deflate; bogus", "x-webkit-deflate-frame"] {
        let (_, answer) = RawClient::connect_offering(broker.addr, "/ws", true, offer).await;
        assert_eq!(answer, None, "{offer}");
    }
    // A client without the extension must not send RSV1: 1002.
    client.send_raw(&rsv1_frame(b"x")).await;
    closes_with(&mut client, 1002).await;
    drop(client);
    broker.stop().await;

    // Compression off (the default): every offer is declined.
    let broker = serve(&[]).await;
    let (_, answer) = RawClient::connect_offering(broker.addr, "/ws", true, OFFER).await;
    assert_eq!(answer, None);
    let (_, answer) = RawClient::connect_offering(broker.echo, "/", false, OFFER).await;
    assert_eq!(answer, None);
    broker.stop().await;
}

#[tokio::test]
async fn the_echo_service_compresses_its_replies() {
    let broker = serve(&["--compression", "on"]).await;
    let (mut echo, answer) = RawClient::connect_offering(
        broker.echo,
        "/",
        false,
        "permessage-deflate; client_no_context_takeover",
    )
    .await;
    assert!(answer.is_some());
    let text = String::from_utf8(ticker_json(5000)).expect("ASCII");
    echo.send_compressed(OpCode::Text, text.as_bytes()).await;
    echo.send_frame(OpCode::Binary, b"plain").await;
    assert_eq!(
        echo.recv_incoming().await,
        Some(Incoming::Message(MessageKind::Text, text.into()))
    );
    assert_eq!(
        echo.recv_incoming().await,
        Some(Incoming::Message(MessageKind::Binary, "plain".into()))
    );
    drop(echo);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_negotiates_and_inflates_when_asked() {
    let broker = serve(&["--compression", "on"]).await;
    let url = format!("ws://{}/ws", broker.addr);
    let connect = |compression: bool| {
        tickwire_client::Client::builder(&url)
            .compression(compression)
            .connect()
    };
    let deflating = connect(true).await.expect("connect offering deflate");
    let plain = connect(false).await.expect("connect without deflate");
    let mut a = deflating.subscribe("sdk").await.expect("subscribe");
    let mut b = plain.subscribe("sdk").await.expect("subscribe");
    let payload = ticker_json(8000);
    plain
        .publish_bytes_acked("sdk", payload.clone())
        .await
        .expect("publish");
    for sub in [&mut a, &mut b] {
        let msg = tickwire_e2e::sdk::recv(sub).await;
        assert_eq!(&msg.payload()[..], &payload[..]);
    }
    assert_eq!(
        metric(broker.addr, "tickwire_compression_messages_total").await,
        1.0
    );
    drop((a, b));
    deflating.close().await.expect("close");
    plain.close().await.expect("close");
    broker.stop().await;
}
