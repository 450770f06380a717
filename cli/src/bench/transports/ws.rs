//! The WebSocket subscriber: the upgrade and SUBSCRIBE of
//! `raw_client`, then every frame decoded with
//! the protocol crate and each `MESSAGE`'s payload stamp read.

use bytes::BytesMut;
use tickwire_protocol::ServerMessage;
use tickwire_protocol::ws::{FrameDecoder, Incoming, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::raw_client::{self, Conn, ConnectError};
use super::payload::{now_ns, stamp_of};
use super::tally::{RunShared, Tally, report_progress};
use super::{Setup, with_deadline};

/// Largest message accepted from the broker.
const MAX_MESSAGE: usize = 64 << 20;

/// Opens a WebSocket connection and subscribes it to `topic`.
pub async fn open(setup: &Setup<'_>) -> Result<Conn, ConnectError> {
    let target = setup.target;
    let mut conn =
        raw_client::open(target, setup.source, setup.token, false, setup.timeout).await?;
    with_deadline(setup, raw_client::subscribe(&mut conn, 1, setup.topic)).await?;
    Ok(conn)
}

/// Receives until the run ends or the broker closes; returns the socket.
pub async fn receive(conn: Conn, shared: &RunShared, tally: &mut Tally) -> TcpStream {
    let Conn {
        mut stream,
        leftover,
        ..
    } = conn;
    let mut decoder = FrameDecoder::new(Role::Client, MAX_MESSAGE);
    let mut buf = BytesMut::from(&leftover[..]);
    let mut reported = 0;
    loop {
        let now = now_ns();
        loop {
            let item = match decoder.decode(&mut buf) {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    tally.close(format!("framing error: {e}"));
                    return stream;
                }
            };
            match item {
                Incoming::Message(_, body) => match ServerMessage::decode(&body) {
                    Ok(ServerMessage::Message(d)) => {
                        tally.record(d.seq, stamp_of(&d.payload), now);
                    }
                    Ok(ServerMessage::Error { .. }) => tally.errors += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tally.close(format!("undecodable message: {e}"));
                        return stream;
                    }
                },
                Incoming::Ping(payload) => {
                    if let Err(e) = stream.write_all(&raw_client::pong_frame(&payload)).await {
                        tally.close(format!("write failed: {e}"));
                        return stream;
                    }
                }
                Incoming::Pong(_) => {}
                Incoming::Close(close) => {
                    let _ = stream.write_all(&raw_client::close_frame()).await;
                    tally.close(format!("close {:?} {}", close.code, close.reason));
                    return stream;
                }
            }
        }
        report_progress(shared, tally, &mut reported);
        buf.reserve(64 * 1024);
        tokio::select! {
            biased;
            _ = shared.finish.cancelled() => return stream,
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) => {
                    tally.close("EOF");
                    return stream;
                }
                Ok(_) => {}
                Err(e) => {
                    tally.close(format!("read failed: {e}"));
                    return stream;
                }
            },
        }
    }
}
