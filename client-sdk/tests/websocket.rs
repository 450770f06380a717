//! The raw `websocket::WebSocket` against the fake server: echoing text and
//! binary, ping answers, both close handshakes, and the failure paths
//! (framing violations with their close codes, size limits, a lost stream).

mod common;

use bytes::Bytes;

use common::{FakeBroker, FakeConn, within};
use tickwire_client::websocket::{Data, WebSocket};
use tickwire_client::{Client, ClientBuilder, Disconnect, Error};
use tickwire_protocol::ws::{self, Incoming, MessageKind, OpCode};

/// A raw WebSocket connected to a fake server that accepted the upgrade.
async fn connected(
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> (WebSocket, FakeConn) {
    let server = FakeBroker::bind().await;
    let url = format!("{}/echo", server.url());
    let (ws, conn) = within("connect", async {
        tokio::join!(
            WebSocket::connect(configure(Client::builder(url))),
            server.accept_with(common::Answer::Upgrade)
        )
    })
    .await;
    let (conn, head) = conn;
    assert_eq!(head.request_line, "GET /echo HTTP/1.1");
    (ws.expect("connects"), conn)
}

fn close_with(code: u16) -> Bytes {
    ws::server_frame(OpCode::Close, &ws::close_body(code, ""))
}

/// The client's next frame, which must be a close; its code.
async fn close_code(conn: &mut FakeConn) -> Option<u16> {
    match conn.frame().await {
        Some(Incoming::Close(close)) => close.code,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn echoes_text_and_binary_answers_pings_and_the_servers_close() {
    let (mut ws, mut conn) = connected(|b| b).await;
    conn.send_raw(&ws::server_frame(OpCode::Ping, b"p")).await;
    conn.send_raw(&ws::server_frame(OpCode::Text, "héllo".as_bytes()))
        .await;
    conn.send_raw(&ws::binary_frame(&[0, 255])).await;
    let text = within("text", ws.recv()).await.unwrap().unwrap();
    assert_eq!(text.as_text(), Some("héllo"));
    ws.send(&text).await.unwrap();
    let binary = within("binary", ws.recv()).await.unwrap().unwrap();
    assert!(!binary.is_text() && binary.as_text().is_none());
    assert_eq!(&binary.payload()[..], &[0, 255]);
    ws.send(&binary).await.unwrap();
    conn.send_raw(&close_with(1012)).await;
    assert!(within("close", ws.recv()).await.unwrap().is_none());
    assert!(matches!(ws.recv().await, Err(Error::Closed)));

    let pong = Incoming::Pong(Bytes::from_static(b"p"));
    assert_eq!(conn.frame().await, Some(pong));
    let echoed = Incoming::Message(MessageKind::Text, Bytes::from("héllo"));
    assert_eq!(conn.frame().await, Some(echoed));
    let echoed = Incoming::Message(MessageKind::Binary, Bytes::from_static(&[0, 255]));
    assert_eq!(conn.frame().await, Some(echoed));
    // The close is answered with the server's code, then the stream ends.
    assert_eq!(close_code(&mut conn).await, Some(1012));
    assert_eq!(conn.frame().await, None);
}

#[tokio::test]
async fn a_masked_server_frame_is_closed_with_1002() {
    let (mut ws, mut conn) = connected(|b| b).await;
    conn.send_raw(&[0x82, 0x81, 1, 2, 3, 4, 0]).await;
    let err = within("error", ws.recv()).await.unwrap_err();
    assert!(
        matches!(err, Error::Disconnected(Disconnect::ProtocolError(_))),
        "{err}"
    );
    assert_eq!(close_code(&mut conn).await, Some(1002));
}

#[tokio::test]
async fn invalid_text_is_closed_with_1007() {
    let (mut ws, mut conn) = connected(|b| b).await;
    conn.send_raw(&ws::server_frame(OpCode::Text, &[b'a', 0xff]))
        .await;
    assert!(matches!(
        within("error", ws.recv()).await,
        Err(Error::Disconnected(Disconnect::ProtocolError(_)))
    ));
    assert_eq!(close_code(&mut conn).await, Some(1007));
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009() {
    let (mut ws, mut conn) = connected(|b| b.max_message_size(10)).await;
    conn.send_raw(&ws::binary_frame(&[0; 11])).await;
    assert!(matches!(
        within("error", ws.recv()).await,
        Err(Error::Disconnected(_))
    ));
    assert_eq!(close_code(&mut conn).await, Some(1009));
}

#[tokio::test]
async fn outgoing_limit_and_the_clients_close() {
    let (mut ws, mut conn) = connected(|b| b.max_outgoing_message_size(4)).await;
    let err = ws.send(&Data::binary(vec![0; 5])).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { size: 5, limit: 4 }),
        "{err}"
    );
    let server = async {
        assert_eq!(close_code(&mut conn).await, Some(1000));
        conn.send_raw(&close_with(1000)).await;
        assert_eq!(conn.frame().await, None);
    };
    let (closed, ()) = within("close handshake", async {
        tokio::join!(ws.close(), server)
    })
    .await;
    closed.unwrap();
}

#[tokio::test]
async fn a_lost_stream_is_reported() {
    let (mut ws, conn) = connected(|b| b).await;
    drop(conn);
    let err = within("error", ws.recv()).await.unwrap_err();
    assert!(
        matches!(err, Error::Disconnected(Disconnect::ConnectionLost(_))),
        "{err}"
    );
}
