//! The echo service (`--echo-listen`) through the real binary: every message
//! comes back with its opcode, on the broker's own WebSocket layer (UTF-8
//! checks, size limits, ping/pong, close handshake), and it is off unless
//! asked for.

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::Bytes;
use tickwire_e2e::{RawClient, WAIT, read_banner, signal, tickwire_command, try_handshake_at};
use tickwire_protocol::ws::{self, CloseFrame, Incoming, MessageKind, OpCode};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// `tickwire serve --listen 127.0.0.1:0 ARGS` with `env` and no inherited
/// `TICKWIRE_*` variables, and its standard output as lines.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = tickwire_command(&["serve", "--listen", "127.0.0.1:0", "--log-level", "error"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tickwire serve");
    let stdout = child.stdout.take().expect("stdout");
    (child, BufReader::new(stdout).lines())
}

/// Starts a broker with the echo service; returns it and the echo address,
/// read from the banner's `tickwire echo on ADDR` line.
async fn serve_echo(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, Lines<BufReader<ChildStdout>>, SocketAddr) {
    let (child, mut lines) = serve(args, env);
    let (_, first) = read_banner(&mut lines).await;
    assert!(first.starts_with("tickwire listening on "), "{first}");
    let (echo, line) = read_banner(&mut lines).await;
    assert!(line.starts_with("tickwire echo on "), "{line}");
    (child, lines, echo)
}

/// Waits for `child` to exit successfully.
async fn exits_cleanly(mut child: Child) {
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exit in time")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// Sends SIGTERM and waits for the process to exit successfully.
async fn terminate(child: Child) {
    signal(&child, "-TERM");
    exits_cleanly(child).await;
}

fn fragment(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ws::write_client_frame(&mut out, opcode, payload, [0x0f, 0x1e, 0x2d, 0x3c]);
    if !fin {
        out[0] &= 0x7f;
    }
    out
}

fn close(code: u16) -> Incoming {
    Incoming::Close(CloseFrame {
        code: Some(code),
        reason: String::new(),
    })
}

/// Asserts the next item is a close frame with `code`, whatever its reason.
async fn expect_close(client: &mut RawClient, code: u16) {
    match client.recv_incoming().await {
        Some(Incoming::Close(CloseFrame { code: got, .. })) => assert_eq!(got, Some(code)),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_come_back_with_their_opcode_and_the_ws_rules_apply() {
    let (child, _lines, echo) = serve_echo(&["--echo-listen", "127.0.0.1:0"], &[]).await;

    // Any path; binary stays binary, text stays text, fragments come back
    // as one message.
    let mut client = RawClient::connect_plain(echo, "/any/path?x=1").await;
    client.send_frame(OpCode::Binary, b"\x00\xffbin").await;
    assert_eq!(
        client.recv_incoming().await,
        Some(Incoming::Message(
            MessageKind::Binary,
            Bytes::from_static(b"\x00\xffbin")
        ))
    );
    client.send_frame(OpCode::Text, "κόσμε".as_bytes()).await;
    let mut split = fragment(OpCode::Text, false, b"a\xe2");
    split.extend(fragment(OpCode::Continuation, true, b"\x82\xac"));
    client.send_raw(&split).await;
    for text in ["κόσμε", "a€"] {
        assert_eq!(
            client.recv_incoming().await,
            Some(Incoming::Message(MessageKind::Text, Bytes::from(text)))
        );
    }

    // Ping → pong with the same payload.
    client.send_frame(OpCode::Ping, b"are you there").await;
    assert_eq!(
        client.recv_incoming().await,
        Some(Incoming::Pong(Bytes::from_static(b"are you there")))
    );

    // A close with 1012 (service restart, from the IANA registry) is
    // answered with the same code, then EOF.
    client
        .send_frame(OpCode::Close, &ws::close_body(1012, "restarting"))
        .await;
    assert_eq!(client.recv_incoming().await, Some(close(1012)));
    assert_eq!(client.recv_incoming().await, None);

    // Fragmented text whose second fragment makes it invalid UTF-8: 1007
    // at once, without the final frame.
    let mut client = RawClient::connect_plain(echo, "/").await;
    client
        .send_raw(&fragment(OpCode::Text, false, b"valid \xce"))
        .await;
    client
        .send_raw(&fragment(OpCode::Continuation, false, b"\xff"))
        .await;
    expect_close(&mut client, 1007).await;
    // Gone, rather than left for the broker's close timeout.
    drop(client);

    // A non-minimal length encoding: 1002.
    let mut client = RawClient::connect_plain(echo, "/").await;
    let mut frame = vec![0x82, 0x80 | 126, 0, 3, 1, 2, 3, 4];
    frame.extend_from_slice(b"abc");
    client.send_raw(&frame).await;
    expect_close(&mut client, 1002).await;
    drop(client);

    terminate(child).await;
}

#[tokio::test]
async fn the_size_limit_and_the_drain_apply_to_echo_connections() {
    // Enabled through the environment this time.
    let (child, _lines, echo) = serve_echo(
        &["--max-message-size", "1KiB"],
        &[("TICKWIRE_ECHO_LISTEN", "127.0.0.1:0")],
    )
    .await;
    let mut client = RawClient::connect_plain(echo, "/").await;
    client.send_frame(OpCode::Binary, &[7; 1024]).await;
    assert!(matches!(
        client.recv_incoming().await,
        Some(Incoming::Message(MessageKind::Binary, m)) if m.len() == 1024
    ));
    client.send_frame(OpCode::Binary, &[7; 1025]).await;
    expect_close(&mut client, 1009).await;
    drop(client);

    // SIGTERM closes an open echo connection with 1001.
    let mut idle = RawClient::connect_plain(echo, "/").await;
    signal(&child, "-TERM");
    expect_close(&mut idle, 1001).await;
    idle.send_frame(OpCode::Close, &ws::close_body(1001, ""))
        .await;
    exits_cleanly(child).await;
}

#[tokio::test]
async fn the_echo_service_is_off_by_default() {
    let (child, mut lines) = serve(&[], &[]);
    let (addr, _) = read_banner(&mut lines).await;
    // The main port does not echo: other paths are 404.
    let (status, _) = try_handshake_at(addr, "/", "").await;
    assert_eq!(status, 404);
    terminate(child).await;
    // The banner had no echo line.
    while let Some(line) = lines.next_line().await.expect("read stdout") {
        assert!(!line.contains("echo"), "{line}");
    }
}
